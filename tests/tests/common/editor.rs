//! An LSP client over a language server's stdio that answers the server's requests as an
//! editor would (gates through `window/showMessageRequest`) and records the rest.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::project::missions_command;

/// An LSP client that answers the server's requests as an editor would and records the rest.
pub struct Editor {
    pub child: Child,
    stdin: ChildStdin,
    incoming: Receiver<Value>,
    next_id: i64,
    /// Notifications and server requests seen, in order.
    pub seen: Vec<Value>,
    /// The title chosen for a `window/showMessageRequest` whose message contains the key.
    pub answers: Vec<(&'static str, &'static str)>,
}

impl Editor {
    /// Starts `missions lsp --stdio` for `workspace`, as the tests' projects configure it.
    pub fn start(workspace: &Path) -> Editor {
        Editor::spawn(missions_command(workspace, &["lsp", "--stdio"]))
    }

    /// Starts a language server with `command`, talking to it over its stdio.
    pub fn spawn(mut command: Command) -> Editor {
        let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, incoming) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(value) = line.strip_prefix("Content-Length: ") {
                        length = value.parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                if sender.send(serde_json::from_slice(&body).unwrap()).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take().unwrap();
        Editor { child, stdin, incoming, next_id: 1, seen: Vec::new(), answers: Vec::new() }
    }

    pub fn send(&mut self, message: &Value) {
        let body = message.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        self.stdin.flush().unwrap();
    }

    /// Writes `bytes` to the server as they are, framed or not.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stdin.write_all(bytes).unwrap();
        self.stdin.flush().unwrap();
    }

    pub fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// Takes the next message, answering server requests on the way.
    pub fn next(&mut self, deadline: Instant) -> Option<Value> {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = match self.incoming.recv_timeout(left) {
            Ok(message) => message,
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
        };
        if let (Some(id), Some(method)) = (message.get("id").cloned(), message["method"].as_str()) {
            let result = match method {
                "window/showMessageRequest" => {
                    let text = message["params"]["message"].as_str().unwrap_or_default();
                    match self.answers.iter().find(|(key, _)| text.contains(key)) {
                        Some((_, title)) => json!({"title": title}),
                        None => Value::Null,
                    }
                }
                "window/showDocument" => json!({"success": true}),
                _ => Value::Null,
            };
            self.send(&json!({"jsonrpc": "2.0", "id": id, "result": result}));
        }
        if message.get("method").is_some() {
            self.seen.push(message.clone());
        }
        Some(message)
    }

    pub fn request(&mut self, method: &str, params: Value) -> Value {
        self.try_request(method, params, Duration::from_secs(60)).unwrap_or_else(|| panic!("no response to {method}"))
    }

    /// Sends a request and waits up to `limit` for its response.
    pub fn try_request(&mut self, method: &str, params: Value, limit: Duration) -> Option<Value> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let deadline = Instant::now() + limit;
        while let Some(message) = self.next(deadline) {
            if message.get("id") == Some(&json!(id)) && message.get("method").is_none() {
                return Some(message);
            }
        }
        None
    }

    pub fn command(&mut self, command: &str, argument: Value) -> Value {
        self.request("workspace/executeCommand", json!({"command": command, "arguments": [argument]}))
    }

    /// Waits for a notification or request matching `pred`.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(found) = self.seen.iter().find(|m| pred(m)) {
            return found.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        while let Some(message) = self.next(deadline) {
            if pred(&message) {
                return message;
            }
        }
        panic!("never saw {what}; seen: {:#?}", self.seen.iter().map(|m| m["method"].clone()).collect::<Vec<_>>());
    }

    /// Waits for a `window/showMessageRequest` whose message contains `text` (a gate's
    /// question, an offer to resume).
    pub fn wait_for_prompt(&mut self, what: &str, text: &str) -> Value {
        self.wait_for(what, |m| {
            m["method"] == "window/showMessageRequest" && m["params"]["message"].as_str().unwrap_or("").contains(text)
        })
    }

    pub fn initialize(&mut self, workspace: &Path) {
        let root = format!("file://{}", workspace.display());
        let capabilities = json!({
            "window": {"workDoneProgress": true, "showDocument": {"support": true}},
            "textDocument": {"publishDiagnostics": {"relatedInformation": true}}
        });
        let response =
            self.request("initialize", json!({"processId": null, "rootUri": root, "capabilities": capabilities}));
        assert_eq!(response["result"]["serverInfo"]["name"], "missions");
        self.notify("initialized", json!({}));
    }

    pub fn stop(mut self) {
        self.request("shutdown", Value::Null);
        self.notify("exit", Value::Null);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success());
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!("the server did not exit");
    }
}

/// Runs `body` with an editor started on `dir` and initialized, off the async runtime (the
/// editor blocks on the server's messages); `answers` are its choices at prompts, set before
/// `initialize` since a restarted server asks right away.
pub async fn with_editor(
    dir: &Path,
    answers: Vec<(&'static str, &'static str)>,
    body: impl FnOnce(Editor, &Path) + Send + 'static,
) {
    let dir = dir.canonicalize().unwrap();
    tokio::task::spawn_blocking(move || {
        let mut editor = Editor::start(&dir);
        editor.answers = answers;
        editor.initialize(&dir);
        body(editor, &dir);
    })
    .await
    .unwrap();
}
