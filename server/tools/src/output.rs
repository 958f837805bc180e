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

    /// The kept text, with a marker saying how many bytes were cut, if any.
    pub fn render(&self) -> String {
        let kept = self.head.len() + self.tail.len();
        let head = String::from_utf8_lossy(&self.head);
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        let tail = String::from_utf8_lossy(&tail);
        if kept >= self.total {
            format!("{head}{tail}")
        } else {
            format!("{head}\n[... {} bytes cut ...]\n{tail}", self.total - kept)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CappedOutput;

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
