//! Test support for Missions: a loopback HTTP server that speaks exactly the bytes a test
//! scripts, builders for the two providers' SSE streams, and a handle on the built `missions`
//! binary.
//!
//! The server is written on raw TCP rather than an HTTP framework so that a test decides every
//! byte: where a stream is split (inside a UTF-8 sequence if it likes), how long the server
//! pauses between pieces, and whether the connection is cut mid-body. Nothing here touches
//! any address but 127.0.0.1.

// This crate is test code: a failed set-up should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod script;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// One piece of a scripted response body.
#[derive(Debug, Clone)]
pub enum Piece {
    Bytes(Vec<u8>),
    Pause(Duration),
}

/// How the response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Close the connection after the body: a normal end for a body without a length.
    Close,
    /// Announce a longer body than is sent, then close: the client sees a broken connection.
    Abort,
}

/// A scripted response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub pieces: Vec<Piece>,
    pub end: End,
    /// Wait this long before sending anything (first-byte timeouts).
    pub delay: Duration,
}

impl Reply {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            pieces: vec![Piece::Bytes(body.into())],
            end: End::Close,
            delay: Duration::ZERO,
        }
    }

    pub fn json(status: u16, body: &Value) -> Reply {
        Reply::new(status, "application/json", body.to_string())
    }

    pub fn sse(body: impl Into<Vec<u8>>) -> Reply {
        Reply::new(200, "text/event-stream", body)
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn body_bytes(&self) -> Vec<u8> {
        self.pieces
            .iter()
            .flat_map(|p| match p {
                Piece::Bytes(b) => b.clone(),
                Piece::Pause(_) => Vec::new(),
            })
            .collect()
    }

    /// Sends the body in pieces of `size` bytes (the last may be shorter).
    pub fn split_every(mut self, size: usize) -> Reply {
        let body = self.body_bytes();
        self.pieces = body.chunks(size.max(1)).map(|c| Piece::Bytes(c.to_vec())).collect();
        self
    }

    /// Sends the body in pieces with a pause between each (a slow drip).
    pub fn drip(mut self, size: usize, pause: Duration) -> Reply {
        let body = self.body_bytes();
        self.pieces = body.chunks(size.max(1)).flat_map(|c| [Piece::Bytes(c.to_vec()), Piece::Pause(pause)]).collect();
        self
    }

    /// Keeps only the first `bytes` bytes of the body, then ends as `end` says.
    pub fn cut_at(mut self, bytes: usize, end: End) -> Reply {
        let mut body = self.body_bytes();
        body.truncate(bytes);
        self.pieces = vec![Piece::Bytes(body)];
        self.end = end;
        self
    }

    /// Pauses `pause` after the first `bytes` bytes, then sends the rest.
    pub fn stall_after(mut self, bytes: usize, pause: Duration) -> Reply {
        let body = self.body_bytes();
        let (head, tail) = body.split_at(bytes.min(body.len()));
        self.pieces = vec![Piece::Bytes(head.to_vec()), Piece::Pause(pause), Piece::Bytes(tail.to_vec())];
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// Computes a reply from a request, for servers that act like a model rather than a tape.
pub type Responder = Arc<dyn Fn(&RecordedRequest) -> Reply + Send + Sync>;

#[derive(Default)]
struct Shared {
    replies: VecDeque<Reply>,
    requests: Vec<RecordedRequest>,
    responder: Option<Responder>,
}

/// A scripted HTTP/1.1 server on 127.0.0.1. Each request takes the next reply in order; a
/// request with no reply left gets a 500 that says so, which fails the test visibly.
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl MockServer {
    pub async fn start(replies: Vec<Reply>) -> MockServer {
        MockServer::serve(Shared { replies: replies.into(), requests: Vec::new(), responder: None }).await
    }

    /// A server that computes each reply from its request.
    pub async fn start_with(responder: Responder) -> MockServer {
        MockServer::serve(Shared { replies: VecDeque::new(), requests: Vec::new(), responder: Some(responder) }).await
    }

    async fn serve(shared: Shared) -> MockServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Mutex::new(shared));
        let state = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, state).await;
                });
            }
        });
        MockServer { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().unwrap().requests.clone()
    }

    pub fn push(&self, reply: Reply) {
        self.shared.lock().unwrap().replies.push_back(reply);
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<RecordedRequest>> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize =
        headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = buffer[header_end + 4..].to_vec();
    while body.len() < length {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..read]);
    }
    Ok(Some(RecordedRequest { method, path, headers, body }))
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<Shared>>) -> std::io::Result<()> {
    let Some(request) = read_request(&mut stream).await? else {
        return Ok(());
    };
    let reply = {
        let mut shared = state.lock().unwrap();
        let reply = match &shared.responder {
            Some(responder) => Some(responder(&request)),
            None => shared.replies.pop_front(),
        };
        shared.requests.push(request);
        reply
    };
    let reply = reply.unwrap_or_else(|| Reply::new(500, "text/plain", "the test scripted no reply for this request"));
    tokio::time::sleep(reply.delay).await;
    let body_len: usize = reply.body_bytes().len();
    let mut head = format!("HTTP/1.1 {} Scripted\r\nconnection: close\r\n", reply.status);
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if reply.end == End::Abort {
        head.push_str(&format!("content-length: {}\r\n", body_len + 1000));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await?;
    for piece in &reply.pieces {
        match piece {
            Piece::Bytes(bytes) => {
                stream.write_all(bytes).await?;
                stream.flush().await?;
            }
            Piece::Pause(pause) => tokio::time::sleep(*pause).await,
        }
    }
    stream.shutdown().await?;
    Ok(())
}

/// Anthropic SSE: `event: <type>` then `data: <json>` per event.
pub fn anthropic_sse(events: &[Value]) -> String {
    events
        .iter()
        .map(|event| format!("event: {}\ndata: {}\n\n", event["type"].as_str().unwrap_or("unknown"), event))
        .collect()
}

/// OpenAI SSE: `data: <json>` per chunk, then `data: [DONE]`.
pub fn openai_sse(chunks: &[Value]) -> String {
    let mut out: String = chunks.iter().map(|chunk| format!("data: {chunk}\n\n")).collect();
    out.push_str("data: [DONE]\n\n");
    out
}

/// The `missions` binary, built once per test process from this workspace.
pub fn missions_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test executable path");
            // target/<profile>/deps/<test> -> target/<profile>/missions
            let profile_dir = exe.parent().and_then(|p| p.parent()).expect("target dir").to_owned();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut command = std::process::Command::new(cargo);
            command.args(["build", "--quiet", "-p", "missions-cli", "--bin", "missions"]);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                command.arg("--release");
            }
            let status = command.status().expect("run cargo build");
            assert!(status.success(), "building the missions binary failed");
            profile_dir.join("missions")
        })
        .clone()
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}
