//! The stdio transport: a guard in front of `tower-lsp-server`'s own framing.
//!
//! `tower-lsp-server` stops serving on the first frame it cannot decode (invalid JSON or UTF-8,
//! a bad header, an id it cannot hold, a batch), buffers a declared `Content-Length` without
//! bound, stalls on `Content-Length: 0`, never answers requests to `$/` methods it does not
//! implement, and cannot tell an `exit` after `shutdown` from one without it. One bad frame
//! would end the server and abandon the mission it drives. So every frame from the client goes
//! through [`FrameReader`] first: frames the server can decode are passed on re-framed, the
//! rest are answered here with the JSON-RPC error the specification asks for (-32700 parse
//! error, -32600 invalid request, -32601 method not found) and skipped, and the reader finds
//! the next frame by its header. The server's own output and these answers are merged into
//! stdout whole frame by whole frame.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame accepted; a larger declared length is answered with an error and skipped.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;
/// The longest header block; real ones are a few dozen bytes.
const MAX_HEADER: usize = 8 * 1024;
const HEADER_NAME: &[u8] = b"content-length:";

/// What one frame from the client turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A message the server can decode, to be passed on.
    Message { body: Vec<u8>, method: Option<String>, is_request: bool },
    /// Answered here: this response goes back to the client, nothing reaches the server.
    Answer(Value),
}

/// JSON-RPC error codes of the specification.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;

fn error_response(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

/// The id of a message if it is one a response can carry (an integer within i64, or a
/// string), else `null`.
fn usable_id(value: &Value) -> Value {
    match value.get("id") {
        Some(Value::Number(n)) if n.is_i64() => Value::Number(n.clone()),
        Some(Value::String(s)) => Value::String(s.clone()),
        _ => Value::Null,
    }
}

/// Decides what a complete body is.
pub fn classify(body: &[u8]) -> Frame {
    if body.is_empty() {
        return Frame::Answer(error_response(Value::Null, PARSE_ERROR, "an empty message is not JSON"));
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(error) => return Frame::Answer(error_response(Value::Null, PARSE_ERROR, format!("not JSON: {error}"))),
    };
    let Some(object) = value.as_object() else {
        let what = if value.is_array() { "a batch (LSP has no batches)" } else { "not a JSON object" };
        return Frame::Answer(error_response(Value::Null, INVALID_REQUEST, format!("invalid message: {what}")));
    };
    let id = usable_id(&value);
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Frame::Answer(error_response(id, INVALID_REQUEST, "invalid message: \"jsonrpc\" must be \"2.0\""));
    }
    let decodes = serde_json::from_slice::<tower_lsp_server::jsonrpc::Request>(body).is_ok()
        || serde_json::from_slice::<tower_lsp_server::jsonrpc::Response>(body).is_ok();
    if !decodes {
        let why = match object.get("id") {
            Some(raw) if id.is_null() && !raw.is_null() => {
                "the id must be an integer (within 64-bit signed range) or a string"
            }
            _ => "it is neither a request, a notification nor a response",
        };
        return Frame::Answer(error_response(id, INVALID_REQUEST, format!("invalid message: {why}")));
    }
    let method = object.get("method").and_then(Value::as_str).map(str::to_owned);
    let is_request = method.is_some() && object.get("id").is_some_and(|id| !id.is_null());
    if is_request && method.as_deref().is_some_and(|m| m.starts_with("$/")) {
        // The specification: a `$/` request the server does not implement is answered with
        // MethodNotFound (notifications may be ignored).
        let method = method.unwrap_or_default();
        return Frame::Answer(error_response(id, METHOD_NOT_FOUND, format!("method not found: {method}")));
    }
    Frame::Message { body: body.to_vec(), method, is_request }
}

/// Finds `Content-Length:` (any case) in `bytes` at or after `from`.
fn find_header(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(HEADER_NAME.len() - 1))
        .find(|&i| bytes[i..i + HEADER_NAME.len()].eq_ignore_ascii_case(HEADER_NAME))
}

/// Whether `bytes` holds, at or after `from`, the start of a whole header block
/// (`Content-Length: <digits>\r\n`). No valid JSON text contains one (outside a string it is
/// not JSON, and inside a string a raw line break is not allowed), so a body that does was cut
/// short or declared too long, and the next frame begins there.
fn embedded_header(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(start) = find_header(bytes, at) {
        let rest = &bytes[start + HEADER_NAME.len()..];
        let value_start = rest.iter().position(|b| *b != b' ' && *b != b'\t').unwrap_or(rest.len());
        let digits = rest[value_start..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits > 0 && rest[value_start + digits..].starts_with(b"\r\n") {
            return Some(start);
        }
        at = start + 1;
    }
    None
}

/// What parsing the buffered input found.
#[derive(Debug, PartialEq)]
enum Parsed {
    /// Not enough bytes yet; the body bytes already searched for an embedded header (so the
    /// next parse does not search them again).
    NeedMore { scanned: usize },
    /// `consumed` bytes made one frame (or one skipped stretch of garbage).
    Frame { consumed: usize, frame: Frame },
}

/// Whether `bytes` begins with a header line's name (`Name:`), the start of a header block.
fn starts_with_header_name(bytes: &[u8]) -> bool {
    let name = bytes.iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'-').count();
    name > 0 && name < 64 && bytes.get(name) == Some(&b':')
}

/// Whether `line` is a well-formed header line: a name of letters, digits and dashes, a
/// colon, and a value of printable ASCII.
fn is_header_line(line: &[u8]) -> bool {
    starts_with_header_name(line)
        && line.iter().skip_while(|b| **b != b':').skip(1).all(|b| (b' '..=b'~').contains(b) || *b == b'\t')
}

/// The end of the header block at the front of `buffer` (the index of its blank line) and the
/// length of that blank line's terminator: `\r\n\r\n`, or `\n\n` from clients that send bare
/// line feeds.
fn header_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let crlf = buffer.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Parses the front of `buffer`. `eof` says no more bytes will come; `scanned` is how much of
/// the pending body an earlier parse already searched for an embedded header.
fn parse(buffer: &[u8], eof: bool, scanned: usize) -> Parsed {
    if buffer.is_empty() {
        return Parsed::NeedMore { scanned: 0 };
    }
    let garbage = |consumed: usize, why: &str| Parsed::Frame {
        consumed,
        frame: Frame::Answer(error_response(Value::Null, PARSE_ERROR, format!("malformed frame skipped: {why}"))),
    };
    // Bytes before the first header are garbage (a cut-short body, a stray line). A header
    // block may begin with any header (`Content-Type` before `Content-Length` is legal).
    if !starts_with_header_name(buffer) {
        match find_header(buffer, 0) {
            Some(0) => {}
            Some(start) => return garbage(start, "bytes outside any frame"),
            None if eof || buffer.len() > MAX_HEADER => return garbage(buffer.len(), "bytes outside any frame"),
            None => {
                // Keep what could be the beginning of a header split across reads.
                let cut = buffer.len().saturating_sub(HEADER_NAME.len() - 1);
                return if cut > 0 { garbage(cut, "bytes outside any frame") } else { Parsed::NeedMore { scanned: 0 } };
            }
        }
    }
    let Some((header_end, terminator)) = header_end(buffer) else {
        if buffer.len() > MAX_HEADER || eof {
            return garbage(find_header(buffer, 1).unwrap_or(buffer.len()), "a header block that never ends");
        }
        return Parsed::NeedMore { scanned: 0 };
    };
    let header = &buffer[..header_end];
    let body_start = header_end + terminator;
    // A header block that cannot be trusted is skipped: up to a `Content-Length` inside its
    // first line (stray bytes glued to the next frame's header), else whole; whatever body
    // follows it is then skipped as bytes outside any frame, up to the next header.
    let first_line_end = buffer.iter().position(|b| *b == b'\n').unwrap_or(header_end);
    let skip_header =
        |why: &str| garbage(find_header(buffer, 1).filter(|at| *at < first_line_end).unwrap_or(body_start), why);
    let mut length: Option<usize> = None;
    for line in header.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() >= HEADER_NAME.len() && line[..HEADER_NAME.len()].eq_ignore_ascii_case(HEADER_NAME) {
            if length.is_some() {
                return skip_header("Content-Length is given twice");
            }
            let value = std::str::from_utf8(&line[HEADER_NAME.len()..]).unwrap_or("").trim();
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return skip_header("Content-Length is not a non-negative integer");
            }
            match value.parse::<usize>() {
                Ok(n) if n <= MAX_FRAME => length = Some(n),
                _ => return skip_header("Content-Length is larger than the 64 MiB limit"),
            }
        } else if !is_header_line(line) {
            // Not a header at all: the "block" is garbage, and the next frame may begin inside
            // what looked like it.
            return garbage(find_header(buffer, 1).unwrap_or(body_start), "a line that is not a header");
        }
    }
    let Some(length) = length else { return skip_header("no Content-Length") };
    let available = &buffer[body_start..];
    // A frame whose declared length runs into the next frame's header is broken: answer it and
    // start again at that header, instead of waiting for bytes that are not coming.
    let window = &available[..available.len().min(length)];
    // Only bytes not searched before, with a margin for a header split across reads.
    let from = scanned.saturating_sub(HEADER_NAME.len() + 32).min(window.len());
    if let Some(next) = embedded_header(window, from) {
        return garbage(body_start + next, "its Content-Length runs past the end of its body");
    }
    if available.len() < length {
        return if eof {
            garbage(buffer.len(), "the input ended inside a frame")
        } else {
            Parsed::NeedMore { scanned: window.len() }
        };
    }
    Parsed::Frame { consumed: body_start + length, frame: classify(&available[..length]) }
}

/// What the client did that decides the exit status (LSP: 0 only after `shutdown` then `exit`).
#[derive(Debug, Default)]
pub struct Session {
    pub shutdown: AtomicBool,
    pub exit: AtomicBool,
}

impl Session {
    /// The process's exit status once serving ended.
    pub fn exit_status(&self) -> u8 {
        if self.shutdown.load(Ordering::SeqCst) && self.exit.load(Ordering::SeqCst) { 0 } else { 1 }
    }
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

/// Reads the client's input, passes decodable frames to `server`, and sends answers for the
/// rest to `answers`. Returns when the input ends or after `exit`.
pub async fn read_client<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut input: R,
    mut server: W,
    answers: tokio::sync::mpsc::Sender<Vec<u8>>,
    session: Arc<Session>,
) {
    let mut buffer: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut eof = false;
    let mut scanned = 0;
    loop {
        match parse(&buffer, eof, scanned) {
            Parsed::NeedMore { .. } if eof => break,
            Parsed::NeedMore { scanned: searched } => {
                scanned = searched;
                match input.read(&mut chunk).await {
                    Ok(0) => eof = true,
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => eof = true,
                }
            }
            Parsed::Frame { consumed, frame } => {
                buffer.drain(..consumed);
                scanned = 0;
                match frame {
                    Frame::Answer(response) => {
                        tracing::warn!("answered a malformed frame: {response}");
                        // Bounded: a client that floods garbage and reads nothing is slowed
                        // down, not given unbounded memory.
                        if answers.send(framed(response.to_string().as_bytes())).await.is_err() {
                            break;
                        }
                    }
                    Frame::Message { body, method, is_request } => {
                        if is_request && method.as_deref() == Some("shutdown") {
                            session.shutdown.store(true, Ordering::SeqCst);
                        }
                        let exit = method.as_deref() == Some("exit");
                        if exit {
                            session.exit.store(true, Ordering::SeqCst);
                        }
                        if server.write_all(&framed(&body)).await.is_err() || server.flush().await.is_err() {
                            break;
                        }
                        if exit {
                            break;
                        }
                    }
                }
            }
        }
    }
    let _ = server.shutdown().await;
}

/// Copies the server's frames and the guard's answers to `output`, each frame whole.
pub async fn write_client<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut server: R,
    mut answers: tokio::sync::mpsc::Receiver<Vec<u8>>,
    mut output: W,
) {
    let mut buffer: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let (mut server_open, mut answers_open) = (true, true);
    loop {
        // Whole frames of the server's output go out as they complete.
        while let Some(end) = whole_frame(&buffer) {
            let frame: Vec<u8> = buffer.drain(..end).collect();
            if !send(&mut output, &frame).await {
                return;
            }
        }
        if !server_open && !answers_open {
            return;
        }
        tokio::select! {
            read = server.read(&mut chunk), if server_open => match read {
                Ok(0) | Err(_) => server_open = false,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            },
            answer = answers.recv(), if answers_open => match answer {
                Some(frame) => {
                    if !send(&mut output, &frame).await {
                        return;
                    }
                }
                None => answers_open = false,
            },
        }
    }
}

/// Writes one whole frame and flushes it; `false` when the client's side is gone.
async fn send<W: AsyncWrite + Unpin>(output: &mut W, frame: &[u8]) -> bool {
    output.write_all(frame).await.is_ok() && output.flush().await.is_ok()
}

/// The length of the first whole frame of the server's (well-formed) output, if it is all
/// there.
fn whole_frame(buffer: &[u8]) -> Option<usize> {
    let header_end = buffer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let header = std::str::from_utf8(&buffer[..header_end]).ok()?;
    let length: usize = header
        .lines()
        .find_map(|line| line.split_once(':').filter(|(name, _)| name.eq_ignore_ascii_case("content-length")))
        .and_then(|(_, value)| value.trim().parse().ok())?;
    let end = header_end + 4 + length;
    (buffer.len() >= end).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8]) -> Vec<Frame> {
        let mut buffer = input.to_vec();
        let mut out = Vec::new();
        loop {
            match parse(&buffer, true, 0) {
                Parsed::NeedMore { .. } => return out,
                Parsed::Frame { consumed, frame } => {
                    assert!(consumed > 0, "no progress on {:?}", String::from_utf8_lossy(&buffer));
                    buffer.drain(..consumed);
                    out.push(frame);
                }
            }
        }
    }

    fn answer_code(frame: &Frame) -> Option<i64> {
        match frame {
            Frame::Answer(v) => v["error"]["code"].as_i64(),
            Frame::Message { .. } => None,
        }
    }

    const GOOD: &[u8] = b"Content-Length: 39\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x/y\"}";

    fn check(input: &[u8], expected: &[Option<i64>]) {
        let got: Vec<Option<i64>> = frames(input).iter().map(answer_code).collect();
        assert_eq!(got, expected, "{}", String::from_utf8_lossy(input));
    }

    #[test]
    fn a_good_frame_passes_and_each_bad_one_is_answered_then_skipped() {
        check(GOOD, &[None]);
        let bad_bodies: [(&[u8], i64); 9] = [
            (b"{not json", PARSE_ERROR),
            (b"{\"jsonrpc\":\"2.0\",\"method\":\"\xff\xfe\"}", PARSE_ERROR),
            (b"{\"id\":1,\"method\":\"x\"}", INVALID_REQUEST),
            (b"{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"x\"}", INVALID_REQUEST),
            (b"{\"jsonrpc\":\"2.0\",\"id\":9223372036854775808,\"method\":\"x\"}", INVALID_REQUEST),
            (b"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\"}]", INVALID_REQUEST),
            (b"42", INVALID_REQUEST),
            (b"{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"$/unknown\"}", METHOD_NOT_FOUND),
            (b"", PARSE_ERROR),
        ];
        for (body, code) in bad_bodies {
            let mut input = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
            input.extend_from_slice(body);
            input.extend_from_slice(GOOD);
            check(&input, &[Some(code), None]);
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let mut input = format!("Content-Length: {}\r\n\r\n{deep}", deep.len()).into_bytes();
        input.extend_from_slice(GOOD);
        check(&input, &[Some(PARSE_ERROR), None]);
    }

    #[test]
    fn bad_headers_are_answered_and_the_next_frame_is_found() {
        for header in [
            "Content-Length: -5\r\n\r\n",
            "Content-Length: abc\r\n\r\n",
            "Content-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "Content-Type: text/plain\r\n\r\n",
            "Content-Length: 99999999999999999999999\r\n\r\n",
            "Content-Length: 70000000\r\n\r\n",
            "garbage without a colon\r\n\r\n",
            // A stray byte glued to the next frame's header.
            "Q",
        ] {
            let mut input = header.as_bytes().to_vec();
            input.extend_from_slice(GOOD);
            let got = frames(&input);
            assert_eq!(got.last().map(answer_code), Some(None), "{header:?}: {got:?}");
            assert!(got.len() >= 2 && got[..got.len() - 1].iter().all(|f| answer_code(f).is_some()), "{header:?}");
        }
    }

    #[test]
    fn a_length_that_runs_into_the_next_frame_does_not_swallow_it() {
        // Declared far longer than the body, with the next frame right behind it.
        let mut input = b"Content-Length: 5000\r\n\r\n{\"jsonrpc\":\"2.0\"}".to_vec();
        input.extend_from_slice(GOOD);
        match parse(&input, false, 0) {
            Parsed::Frame { frame, .. } => assert_eq!(answer_code(&frame), Some(PARSE_ERROR)),
            other => panic!("waited instead of recovering: {other:?}"),
        }
        let got = frames(&input);
        assert_eq!(got.last().map(answer_code), Some(None));
        // Declared too short: the rest of the body is garbage before the next header.
        let mut input = b"Content-Length: 5\r\n\r\n{\"jsonrpc\":\"2.0\",\"method\":\"x\"}".to_vec();
        input.extend_from_slice(GOOD);
        let got = frames(&input);
        assert_eq!(got.last().map(answer_code), Some(None), "{got:?}");
    }

    #[test]
    fn bare_line_feeds_and_a_content_type_first_are_understood() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"x/y"}"#;
        let mut lf = format!("Content-Length: {}\n\n", body.len()).into_bytes();
        lf.extend_from_slice(body);
        lf.extend_from_slice(GOOD);
        check(&lf, &[None, None]);
        let mut typed = format!(
            "Content-Type: application/vscode-jsonrpc; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        typed.extend_from_slice(body);
        check(&typed, &[None]);
    }

    #[test]
    fn a_large_body_arriving_in_pieces_is_searched_once() {
        let body = format!("{{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"params\":\"{}\"}}", "a".repeat(1_000_000));
        let input = format!("Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes();
        let mut scanned = 0;
        let mut fed = 0;
        let mut parses = 0;
        loop {
            fed = (fed + 65_536).min(input.len());
            parses += 1;
            match parse(&input[..fed], false, scanned) {
                Parsed::NeedMore { scanned: searched } => {
                    assert!(searched >= scanned);
                    scanned = searched;
                }
                Parsed::Frame { frame, .. } => {
                    assert_eq!(answer_code(&frame), None);
                    break;
                }
            }
        }
        assert!(parses <= 17, "{parses}");
    }

    #[test]
    fn an_empty_frame_does_not_hold_up_the_next() {
        let mut input = b"Content-Length: 0\r\n\r\n".to_vec();
        input.extend_from_slice(GOOD);
        let mut buffer = input.clone();
        let mut seen = Vec::new();
        while let Parsed::Frame { consumed, frame } = parse(&buffer, false, 0) {
            buffer.drain(..consumed);
            seen.push(answer_code(&frame));
        }
        assert_eq!(seen, vec![Some(PARSE_ERROR), None], "the good frame is parsed without more input");
    }

    #[test]
    fn the_exit_status_is_zero_only_after_shutdown_then_exit() {
        let session = Session::default();
        session.exit.store(true, Ordering::SeqCst);
        assert_eq!(session.exit_status(), 1);
        session.shutdown.store(true, Ordering::SeqCst);
        assert_eq!(session.exit_status(), 0);
    }
}
