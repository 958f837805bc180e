//! A byte-level Server-Sent Events decoder (the WHATWG event-stream format).
//!
//! Bytes arrive in arbitrary network chunks, so the decoder buffers bytes, not strings: a
//! chunk may end inside a line, inside a CRLF pair, or inside a multi-byte UTF-8 sequence.
//! Lines end in LF, CRLF or CR; lines starting with `:` are comments (OpenRouter's keep-alives);
//! several `data:` lines of one event are joined with `\n`; a blank line dispatches the event.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if the event had one.
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    /// The previous chunk ended in CR, so a leading LF in the next chunk belongs to it.
    after_cr: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
}

impl SseDecoder {
    pub fn new() -> SseDecoder {
        SseDecoder::default()
    }

    /// Feeds a chunk of bytes; complete events are pushed onto `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) {
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        while let Some(end) = bytes.iter().position(|b| *b == b'\n' || *b == b'\r') {
            let line_end_is_cr = bytes[end] == b'\r';
            if self.line.is_empty() {
                self.process_line(&bytes[..end], out);
            } else {
                self.line.extend_from_slice(&bytes[..end]);
                let line = std::mem::take(&mut self.line);
                self.process_line(&line, out);
            }
            bytes = &bytes[end + 1..];
            if line_end_is_cr {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.line.extend_from_slice(bytes);
    }

    /// Ends the stream. An event not yet terminated by a blank line is dispatched too: some
    /// servers close the connection right after the last `data:` line.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, out);
        }
        self.dispatch(out);
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&String::from_utf8_lossy(value));
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            // `id` and `retry` matter for reconnecting EventSource clients; a model response
            // is never resumed, so they are ignored like unknown fields.
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if self.has_data {
            out.push(SseEvent { event: self.event.take(), data: std::mem::take(&mut self.data) });
        }
        self.event = None;
        self.data.clear();
        self.has_data = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(bytes: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::new();
        let mut out = Vec::new();
        for chunk in bytes.chunks(piece.max(1)) {
            decoder.feed(chunk, &mut out);
        }
        decoder.finish(&mut out);
        out
    }

    #[test]
    fn every_split_gives_the_same_events() {
        let stream = "event: a\ndata: {\"t\":\"héllo ✓\"}\n\n: keep-alive\r\nevent: b\r\ndata: x\r\ndata:\r\ndata:  y\r\n\r\ndata: cr\r\rdata: last\n\n";
        let expected = vec![
            SseEvent { event: Some("a".into()), data: "{\"t\":\"héllo ✓\"}".into() },
            SseEvent { event: Some("b".into()), data: "x\n\n y".into() },
            SseEvent { event: None, data: "cr".into() },
            SseEvent { event: None, data: "last".into() },
        ];
        for piece in 1..stream.len() {
            assert_eq!(decode_in_pieces(stream.as_bytes(), piece), expected, "piece size {piece}");
        }
    }

    #[test]
    fn unicode_line_separator_inside_json_is_not_a_line_break() {
        let events = decode_in_pieces("data: {\"t\":\"a\u{2028}b\"}\n\n".as_bytes(), 3);
        assert_eq!(events, vec![SseEvent { event: None, data: "{\"t\":\"a\u{2028}b\"}".into() }]);
    }

    #[test]
    fn an_unterminated_last_event_is_dispatched_at_the_end() {
        assert_eq!(decode_in_pieces(b"data: [DONE]", 4), vec![SseEvent { event: None, data: "[DONE]".into() }]);
        assert_eq!(decode_in_pieces(b"event: only-a-name\n\n", 4), vec![]);
    }
}
