//! Identifiers: mission ids that are short, unique and sortable, and run ids for transcripts.

/// Makes a mission id such as `20261121-add-slugify-3f2a`: the UTC date first so ids sort by
/// creation day, a slug of the title so a person can tell missions apart in `ls`, and four hex
/// digits of randomness so two missions with the same title on the same day do not collide.
pub fn new_mission_id(title: &str) -> String {
    let date = time::OffsetDateTime::now_utc().date();
    let stamp = format!("{:04}{:02}{:02}", date.year(), u8::from(date.month()), date.day());
    format!("{stamp}-{}-{:04x}", slug(title, 24), fastrand::u16(..))
}

/// Makes a run id for one agent run: the role, then a sortable time and randomness.
pub fn new_run_id(label: &str) -> String {
    let now = time::OffsetDateTime::now_utc();
    format!("{}-{}-{:04x}", slug(label, 24), now.unix_timestamp_nanos() / 1_000_000, fastrand::u16(..))
}

/// Lower-case ASCII words joined by `-`, cut at a word boundary to at most `max_len` bytes.
/// Falls back to `mission` when the text has no ASCII letters or digits at all.
pub fn slug(text: &str, max_len: usize) -> String {
    let mut out = String::new();
    for word in text.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()) {
        let extra = if out.is_empty() { word.len() } else { word.len() + 1 };
        if out.len() + extra > max_len {
            if out.is_empty() {
                out.push_str(&word[..max_len.min(word.len())].to_ascii_lowercase());
            }
            break;
        }
        if !out.is_empty() {
            out.push('-');
        }
        out.push_str(&word.to_ascii_lowercase());
    }
    if out.is_empty() { "mission".to_owned() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_keeps_words_and_cuts_at_a_boundary() {
        assert_eq!(slug("Add slugify() to utils!", 24), "add-slugify-to-utils");
        assert_eq!(slug("Add a very long title that goes on and on", 16), "add-a-very-long");
        assert_eq!(slug("ünïcode only ✓", 24), "n-code-only");
        assert_eq!(slug("✓✓✓", 24), "mission");
        assert_eq!(slug("supercalifragilistic", 5), "super");
    }

    #[test]
    fn mission_ids_are_dated_and_distinct() {
        let a = new_mission_id("Add slugify");
        let b = new_mission_id("Add slugify");
        assert!(a.len() == "20261121-add-slugify-3f2a".len(), "{a}");
        assert!(a[..8].chars().all(|c| c.is_ascii_digit()), "{a}");
        assert!(a.contains("-add-slugify-"), "{a}");
        // Two ids with the same title differ unless the 16-bit random suffix collides
        // (1 in 65536); retrying once makes a flaky failure practically impossible.
        assert!(a != b || new_mission_id("Add slugify") != a);
    }
}
