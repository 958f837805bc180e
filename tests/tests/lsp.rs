//! The language server end to end over stdio, as an editor without a plugin uses it (SPEC §8):
//! commands, gates answered through `window/showMessageRequest`, `$/progress`,
//! `missions/didChange`, diagnostics that appear and clear, hovers that follow edits, code
//! actions, and a worker refusing to overwrite an unsaved buffer.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::project::*;
use missions_tests::script::ScriptedModel;
use serde_json::{Value, json};

/// An LSP client that answers the server's requests as an editor would and records the rest.
struct Editor {
    child: Child,
    stdin: ChildStdin,
    incoming: Receiver<Value>,
    next_id: i64,
    /// Notifications and server requests seen, in order.
    seen: Vec<Value>,
    /// The title chosen for a `window/showMessageRequest` whose message contains the key.
    answers: Vec<(&'static str, &'static str)>,
}

impl Editor {
    fn start(workspace: &Path) -> Editor {
        let mut child = missions_command(workspace, &["lsp", "--stdio"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
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

    fn send(&mut self, message: &Value) {
        let body = message.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        self.stdin.flush().unwrap();
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// Takes the next message, answering server requests on the way.
    fn next(&mut self, deadline: Instant) -> Option<Value> {
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

    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Some(message) = self.next(deadline) {
            if message.get("id") == Some(&json!(id)) && message.get("method").is_none() {
                return message;
            }
        }
        panic!("no response to {method}");
    }

    fn command(&mut self, command: &str, argument: Value) -> Value {
        self.request("workspace/executeCommand", json!({"command": command, "arguments": [argument]}))
    }

    /// Waits for a notification or request matching `pred`.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
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

    fn initialize(&mut self, workspace: &Path) {
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

    fn stop(mut self) {
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

fn uri(dir: &Path, path: &str) -> String {
    format!("file://{}", dir.join(path).display())
}

fn is(method: &'static str) -> impl Fn(&Value) -> bool {
    move |m: &Value| m["method"] == method
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mission_driven_from_a_plain_lsp_client() {
    let model =
        ScriptedModel::start(slugify_script(Story { buggy_first: true, never_fixed: false }), Duration::ZERO).await;
    let dir = project();
    configure(dir.path(), &model.config_toml(""));
    let dir_path = dir.path().canonicalize().unwrap();
    tokio::task::spawn_blocking(move || {
        let dir = dir_path.as_path();
        let mut editor = Editor::start(dir);
        editor.answers = vec![("ready for your approval", "Approve"), ("waits for your acceptance", "Accept")];
        editor.initialize(dir);

        let backlog = editor.command("missions.backlog", json!({}));
        assert_eq!(backlog["result"][0]["id"], "BACKLOG.md:3", "{backlog}");
        let started = editor.command("missions.start", json!({"itemId": "BACKLOG.md:3"}));
        let id = started["result"]["missionId"].as_str().expect("a mission id").to_owned();

        // Gates are asked and answered through window/showMessageRequest.
        editor.wait_for("the plan gate", |m| m["method"] == "window/showMessageRequest" && m["params"]["message"].as_str().unwrap_or("").contains("approval"));
        // The failing assertion shows as a diagnostic linked to the contract, then clears.
        let failing = editor.wait_for("A1's diagnostic", |m| {
            m["method"] == "textDocument/publishDiagnostics" && m["params"]["diagnostics"].as_array().is_some_and(|d| d.iter().any(|d| d["code"] == "A1"))
        });
        let diagnostic = failing["params"]["diagnostics"].as_array().unwrap().iter().find(|d| d["code"] == "A1").unwrap().clone();
        assert_eq!(failing["params"]["uri"], uri(dir, "tests/test_slug.py"));
        assert_eq!(diagnostic["source"], "missions");
        assert!(diagnostic["message"].as_str().unwrap().starts_with("A1: "), "{diagnostic}");
        assert_eq!(diagnostic["data"]["missionId"], id.as_str());
        assert!(diagnostic["relatedInformation"][0]["location"]["uri"].as_str().unwrap().ends_with("contract.md"));
        let test_uri = uri(dir, "tests/test_slug.py");
        editor.wait_for("the cleared diagnostics", move |m| {
            m["method"] == "textDocument/publishDiagnostics" && m["params"]["uri"] == test_uri.as_str() && m["params"]["diagnostics"] == json!([])
        });
        editor.wait_for("completion", |m| m["method"] == "window/showMessage" && m["params"]["message"].as_str().unwrap_or("").contains("is complete"));

        // Progress, and the status snapshot for Mission Control views.
        let progress: Vec<&Value> = editor.seen.iter().filter(|m| m["method"] == "$/progress").collect();
        assert!(progress.iter().any(|m| m["params"]["value"]["message"].as_str().unwrap_or("").contains("M1 · F1 · worker · ")), "{progress:?}");
        let changes: Vec<&Value> = editor.seen.iter().filter(|m| m["method"] == "missions/didChange").collect();
        assert!(changes.iter().any(|m| m["params"]["state"] == "completed"), "a final snapshot");
        assert!(editor.seen.iter().any(is("window/workDoneProgress/create")));

        // Hovers show the handoff of the feature that changed the line, latest first, and
        // follow the user's edits.
        let slug = std::fs::read_to_string(dir.join("textkit/slug.py")).unwrap();
        editor.notify("textDocument/didOpen", json!({"textDocument": {"uri": uri(dir, "textkit/slug.py"), "languageId": "python", "version": 1, "text": slug}}));
        let hover = editor.request("textDocument/hover", json!({"textDocument": {"uri": uri(dir, "textkit/slug.py")}, "position": {"line": 5, "character": 4}}));
        let text = hover["result"]["contents"]["value"].as_str().unwrap_or_default().to_owned();
        let (fix, first) = (text.find("feature **F1-fix1**").expect("the fix"), text.find("feature **F1**").expect("F1"));
        assert!(fix < first, "the feature that changed the line last comes first:\n{text}");
        assert!(text.contains("python3 -m unittest tests.test_slug"), "{text}");
        editor.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": uri(dir, "textkit/slug.py"), "version": 2},
                   "contentChanges": [{"range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 0}}, "text": "# a\n# b\n"}]}),
        );
        let moved = editor.request("textDocument/hover", json!({"textDocument": {"uri": uri(dir, "textkit/slug.py")}, "position": {"line": 7, "character": 0}}));
        assert!(moved["result"]["contents"]["value"].as_str().unwrap_or("").contains("F1-fix1"), "{moved}");
        let above = editor.request("textDocument/hover", json!({"textDocument": {"uri": uri(dir, "textkit/slug.py")}, "position": {"line": 0, "character": 0}}));
        assert_eq!(above["result"], Value::Null, "the inserted lines belong to no feature");

        // Code actions on a Missions diagnostic.
        let actions = editor.request(
            "textDocument/codeAction",
            json!({"textDocument": {"uri": uri(dir, "tests/test_slug.py")}, "range": diagnostic["range"], "context": {"diagnostics": [diagnostic]}}),
        );
        let titles: Vec<&str> = actions["result"].as_array().unwrap().iter().filter_map(|a| a["title"].as_str()).collect();
        assert_eq!(titles, ["Missions: fix this finding", "Missions: dismiss finding"]);

        let status = editor.command("missions.status", json!({"missionId": id}));
        assert_eq!(status["result"]["state"], "completed");
        let bad = editor.command("missions.rejectMilestone", json!({"missionId": id, "milestoneId": "M1"}));
        assert!(bad["error"]["message"].as_str().unwrap().contains("needs `feedback`"), "{bad}");
        editor.stop();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_never_overwrites_an_unsaved_buffer() {
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::ZERO).await;
    let dir = project();
    configure(dir.path(), &model.config_toml(""));
    let dir_path = dir.path().canonicalize().unwrap();
    tokio::task::spawn_blocking(move || {
        let dir = dir_path.as_path();
        let mut editor = Editor::start(dir);
        editor.answers = vec![("ready for your approval", "Approve"), ("waits for your acceptance", "Accept")];
        editor.initialize(dir);
        // The user is drafting textkit/slug.py and has not saved it.
        let file = uri(dir, "textkit/slug.py");
        editor.notify("textDocument/didOpen", json!({"textDocument": {"uri": file, "languageId": "python", "version": 1, "text": ""}}));
        editor.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": file, "version": 2}, "contentChanges": [{"text": "def my_draft():\n    pass\n"}]}),
        );
        let id = editor.command("missions.start", json!({"text": "Add slugify"}))["result"]["missionId"].as_str().unwrap().to_owned();
        let warning = editor.wait_for("the conflict", |m| m["method"] == "window/showMessage" && m["params"]["type"] == 2);
        let message = warning["params"]["message"].as_str().unwrap();
        assert!(message.contains("paused (conflict)") && message.contains("textkit/slug.py"), "{message}");
        assert!(!dir.join("textkit/slug.py").exists(), "nothing was written over the draft");
        let snapshot = editor.command("missions.status", json!({"missionId": id}));
        assert_eq!(snapshot["result"]["pause_reason"], "conflict");

        // Saved (here: discarded), the mission can resume and finish.
        editor.notify("textDocument/didClose", json!({"textDocument": {"uri": file}}));
        let resumed = editor.command("missions.resume", json!({"missionId": id}));
        assert_eq!(resumed["result"], json!({}), "{resumed}");
        editor.wait_for("completion", |m| m["method"] == "window/showMessage" && m["params"]["message"].as_str().unwrap_or("").contains("is complete"));
        editor.stop();
    })
    .await
    .unwrap();
}
