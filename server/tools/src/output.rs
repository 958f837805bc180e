//! Output that is kept whole up to a cap, and as head and tail beyond it.

use std::collections::VecDeque;

/// Collects bytes, keeping the first `half` and the last `half` once more than `2 * half`
/// arrive, and counting what was cut between them.
#[derive(Debug)]
pub struct CappedOutput {
    half: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: usize,
}

impl CappedOutput {
    pub fn new(limit: usize) -> CappedOutput {
        CappedOutput { half: limit / 2, head: Vec::new(), tail: VecDeque::new(), total: 0 }
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len();
        if self.head.len() < self.half {
            let take = (self.half - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        if bytes.len() >= self.half {
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - self.half..]);
        } else {
            let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.half);
            self.tail.drain(..overflow);
            self.tail.extend(bytes);
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// The kept text, with a marker saying how many bytes were cut, if any, and without
    /// terminal escape sequences (colours mean nothing to a model, an evidence field or an
    /// editor, and cost tokens).
    pub fn render(&self) -> String {
        let kept = self.head.len() + self.tail.len();
        let head = String::from_utf8_lossy(&self.head);
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        let tail = String::from_utf8_lossy(&tail);
        let text = if kept >= self.total {
            format!("{head}{tail}")
        } else {
            format!("{head}\n[... {} bytes cut ...]\n{tail}", self.total - kept)
        };
        strip_ansi(&text)
    }
}

/// `text` without ANSI escape sequences: CSI (`ESC [ … final`), OSC (`ESC ] … BEL` or
/// `ESC \\`), and the two-character escapes.
pub fn strip_ansi(text: &str) -> String {
    if !text.contains('\u{1b}') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                // Parameters and intermediates, then one final byte in @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\u{7}' {
                        break;
                    }
                    if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                        chars.next();
                        break;
                    }
                }
            }
            // A two-character escape (ESC 7, ESC =, …): both go.
            Some(_) | None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{CappedOutput, strip_ansi};

    #[test]
    fn escape_sequences_are_removed() {
        assert_eq!(strip_ansi("\u{1b}[1m\u{1b}[31mFAILED\u{1b}[0m test_x"), "FAILED test_x");
        assert_eq!(strip_ansi("a\u{1b}]8;;http://x\u{7}link\u{1b}]8;;\u{1b}\\b"), "alinkb");
        assert_eq!(strip_ansi("é plain ✓"), "é plain ✓");
        let mut output = CappedOutput::new(100);
        output.push(b"\x1b[32m5 passed\x1b[0m");
        assert_eq!(output.render(), "5 passed");
    }

    #[test]
    fn small_output_is_whole_and_large_output_keeps_head_and_tail() {
        let mut small = CappedOutput::new(10);
        small.push(b"abc");
        small.push(b"def");
        assert_eq!(small.render(), "abcdef");

        let mut large = CappedOutput::new(10);
        for chunk in [b"0123".as_slice(), b"456789", b"abcdefghij", b"XYZ"] {
            large.push(chunk);
        }
        assert_eq!(large.total(), 23);
        assert_eq!(large.render(), "01234\n[... 13 bytes cut ...]\nijXYZ");
    }
}
