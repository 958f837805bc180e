//! The documents the editor has open: their unsaved text, and the handoff ranges that follow
//! the user's edits.
//!
//! A worker never overwrites a file with unsaved changes in the editor ([`Documents`] is the
//! engine's `WriteGuard`). Hovers show the handoff of the feature that changed a line; as the
//! user edits an open document, the recorded line ranges are shifted by each edit's line
//! delta, so the hover stays on the code the feature wrote.

use std::collections::HashMap;
use std::sync::Mutex;

use missions_core::sync::lock;
use missions_tools::WriteGuard;
use ropey::Rope;

/// A range of lines a feature changed: `(mission, feature, first line, last line)`, 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedRange {
    pub mission: String,
    pub feature: String,
    pub first: u32,
    pub last: u32,
}

#[derive(Debug)]
pub struct Document {
    pub text: Rope,
    pub version: i32,
    /// Changed since it was opened or last saved.
    pub dirty: bool,
    /// Handoff ranges as shifted by the edits made since the document was opened; `None`
    /// until the first hover asks for them.
    pub ranges: Option<Vec<TrackedRange>>,
}

/// Open documents by workspace-relative path.
#[derive(Debug, Default)]
pub struct Documents {
    open: Mutex<HashMap<String, Document>>,
}

/// One edit: the replaced line span (0-based, inclusive) and the new text; `None` replaces the
/// whole document.
pub struct Edit<'a> {
    pub span: Option<(u32, u32, u32, u32)>,
    pub text: &'a str,
}

fn char_index(text: &Rope, line: u32, character: u32) -> usize {
    let line = (line as usize).min(text.len_lines().saturating_sub(1));
    let start = text.line_to_char(line);
    let line_len = text.line(line).len_chars();
    // LSP positions count UTF-16 units; for the BMP that is characters, which is what
    // ropey counts. Astral characters are rare enough in code to accept the approximation.
    start + (character as usize).min(line_len)
}

/// Shifts `ranges` for an edit replacing the text from line `start` to line `end`, column
/// `end_character` (0-based), by text holding `new_lines` line breaks. A range that begins
/// where the edit ends (at column 0 of its line) lies after the edit and moves as a whole; a
/// range the edit reaches into grows or shrinks with it.
pub fn shift(ranges: &mut [TrackedRange], start: u32, end: u32, end_character: u32, new_lines: u32) {
    let delta = i64::from(new_lines) - i64::from(end - start);
    // Ranges are 1-based. The edit touches lines `start + 1 ..`; the first line wholly after
    // it is `end + 1` when it ends at column 0, else `end + 2`.
    let first_touched = start + 1;
    let first_after = if end_character == 0 { end + 1 } else { end + 2 };
    for range in ranges.iter_mut() {
        if range.last < first_touched {
            continue;
        }
        let moved = |line: u32| (i64::from(line) + delta).max(1) as u32;
        if range.first >= first_after {
            range.first = moved(range.first);
            range.last = moved(range.last);
        } else {
            range.last = moved(range.last).max(range.first);
        }
    }
}

/// The length of each line of `text` in UTF-16 code units (what LSP positions count),
/// without its line break.
pub fn utf16_line_lengths(text: &str) -> Vec<u32> {
    text.split('\n').map(|line| line.strip_suffix('\r').unwrap_or(line).encode_utf16().count() as u32).collect()
}

impl Documents {
    pub fn open(&self, path: &str, text: &str, version: i32) {
        lock(&self.open)
            .insert(path.to_owned(), Document { text: Rope::from_str(text), version, dirty: false, ranges: None });
    }

    pub fn close(&self, path: &str) {
        lock(&self.open).remove(path);
    }

    pub fn saved(&self, path: &str) {
        if let Some(document) = lock(&self.open).get_mut(path) {
            document.dirty = false;
        }
    }

    pub fn change(&self, path: &str, version: i32, edits: &[Edit<'_>]) {
        let mut open = lock(&self.open);
        let Some(document) = open.get_mut(path) else { return };
        document.version = version;
        document.dirty = true;
        for edit in edits {
            match edit.span {
                Some((start_line, start_char, end_line, end_char)) => {
                    let from = char_index(&document.text, start_line, start_char);
                    let to = char_index(&document.text, end_line, end_char).max(from);
                    document.text.remove(from..to);
                    document.text.insert(from, edit.text);
                    if let Some(ranges) = &mut document.ranges {
                        shift(ranges, start_line, end_line, end_char, edit.text.matches('\n').count() as u32);
                    }
                }
                None => {
                    document.text = Rope::from_str(edit.text);
                    // A whole new text has no line correspondence; the recorded ranges are
                    // the best there is.
                }
            }
        }
    }

    /// The ranges of `path` that cover `line` (1-based), later features first. `recorded` gives
    /// the ranges from the handoffs, used the first time a document is asked.
    pub fn ranges_at(&self, path: &str, line: u32, recorded: impl FnOnce() -> Vec<TrackedRange>) -> Vec<TrackedRange> {
        let mut open = lock(&self.open);
        let ranges = match open.get_mut(path) {
            Some(document) => document.ranges.get_or_insert_with(recorded).clone(),
            None => recorded(),
        };
        ranges.into_iter().rev().filter(|r| r.first <= line && line <= r.last).collect()
    }

    /// Forgets tracked ranges (new handoffs were recorded).
    pub fn reset_ranges(&self) {
        for document in lock(&self.open).values_mut() {
            document.ranges = None;
        }
    }

    /// The UTF-16 line lengths of an open document, as the editor sees it.
    pub fn line_lengths(&self, path: &str) -> Option<Vec<u32>> {
        let open = lock(&self.open);
        let document = open.get(path)?;
        Some(utf16_line_lengths(&document.text.to_string()))
    }

    /// The paths with unsaved changes, sorted.
    pub fn unsaved(&self) -> Vec<String> {
        let mut paths: Vec<String> =
            lock(&self.open).iter().filter(|(_, d)| d.dirty).map(|(path, _)| path.clone()).collect();
        paths.sort();
        paths
    }

    pub fn version(&self, path: &str) -> Option<i32> {
        lock(&self.open).get(path).map(|d| d.version)
    }
}

impl WriteGuard for Documents {
    fn check(&self, relative_path: &str) -> Result<(), String> {
        match lock(&self.open).get(relative_path) {
            Some(document) if document.dirty => Err(format!(
                "{relative_path} has unsaved changes in the editor; the write was refused so they are not lost"
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(first: u32, last: u32) -> TrackedRange {
        TrackedRange { mission: "m".into(), feature: "F1".into(), first, last }
    }

    #[test]
    fn ranges_follow_lines_inserted_and_deleted_above_and_inside() {
        let mut ranges = vec![range(5, 8), range(20, 21), range(1, 2), range(3, 4)];
        // Two lines inserted at the start of line 3 (0-based 2): from it on everything moves
        // down by two.
        shift(&mut ranges, 2, 2, 0, 2);
        assert_eq!(ranges, vec![range(7, 10), range(22, 23), range(1, 2), range(5, 6)]);
        // Lines 8..=9 (1-based) joined into one: the first range shrinks by one, later ones move.
        shift(&mut ranges, 7, 8, 3, 0);
        assert_eq!(ranges, vec![range(7, 9), range(21, 22), range(1, 2), range(5, 6)]);
    }

    #[test]
    fn unsaved_documents_refuse_writes_until_saved() {
        let documents = Documents::default();
        documents.open("src/a.py", "x = 1\n", 1);
        assert!(documents.check("src/a.py").is_ok());
        documents.change("src/a.py", 2, &[Edit { span: Some((0, 4, 0, 5)), text: "2" }]);
        let refused = documents.check("src/a.py").unwrap_err();
        assert!(refused.contains("unsaved changes"), "{refused}");
        assert!(documents.check("src/b.py").is_ok());
        documents.saved("src/a.py");
        assert!(documents.check("src/a.py").is_ok());
    }

    #[test]
    fn hover_ranges_are_tracked_through_edits_of_the_open_document() {
        let documents = Documents::default();
        documents.open("a.py", "one\ntwo\nthree\n", 1);
        let recorded = || vec![range(2, 3)];
        assert_eq!(documents.ranges_at("a.py", 2, recorded).len(), 1);
        documents.change("a.py", 2, &[Edit { span: Some((0, 0, 0, 0)), text: "zero\n" }]);
        assert!(documents.ranges_at("a.py", 2, Vec::new).is_empty());
        assert_eq!(documents.ranges_at("a.py", 3, Vec::new), vec![range(3, 4)]);
    }
}
