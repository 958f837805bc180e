//! The language server end to end over stdio, as an editor without a plugin uses it (SPEC §8):
//! commands, gates answered through `window/showMessageRequest`, `$/progress`,
//! `missions/didChange`, diagnostics that appear and clear, hovers that follow edits, code
//! actions, and a worker refusing to overwrite an unsaved buffer.

mod common;

use std::path::Path;
use std::time::Duration;

use common::editor::with_editor;
use common::project::*;
use missions_tests::script::ScriptedModel;
use serde_json::{Value, json};

fn uri(dir: &Path, path: &str) -> String {
    format!("file://{}", dir.join(path).display())
}

fn is(method: &'static str) -> impl Fn(&Value) -> bool {
    move |m: &Value| m["method"] == method
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mission_driven_from_a_plain_lsp_client() {
    let model =
        ScriptedModel::start(slugify_script(Story { buggy_first: true, ..Story::default() }), Duration::ZERO).await;
    let dir = project_for(&model, "");
    with_editor(dir.path(), vec![("ready for your approval", "Approve"), ("waits for your acceptance", "Accept")], move |mut editor, dir| {

        let backlog = editor.command("missions.backlog", json!({}));
        assert_eq!(backlog["result"][0]["id"], "BACKLOG.md:3", "{backlog}");
        let started = editor.command("missions.start", json!({"itemId": "BACKLOG.md:3"}));
        let id = started["result"]["missionId"].as_str().expect("a mission id").to_owned();

        // Gates are asked and answered through window/showMessageRequest.
        editor.wait_for_prompt("the plan gate", "approval");
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
        // Every drive (after each gate) has a progress token of its own.
        let tokens: Vec<String> = editor.seen.iter().filter(|m| m["method"] == "window/workDoneProgress/create").map(|m| m["params"]["token"].to_string()).collect();
        let distinct: std::collections::BTreeSet<&String> = tokens.iter().collect();
        assert!(tokens.len() > 1 && distinct.len() == tokens.len(), "{tokens:?}");

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
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_never_overwrites_an_unsaved_buffer() {
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::ZERO).await;
    let dir = project_for(&model, "");
    with_editor(dir.path(), vec![("ready for your approval", "Approve"), ("waits for your acceptance", "Accept")], move |mut editor, dir| {
        // The user is drafting textkit/slug.py and has not saved it.
        let file = uri(dir, "textkit/slug.py");
        editor.notify("textDocument/didOpen", json!({"textDocument": {"uri": file, "languageId": "python", "version": 1, "text": ""}}));
        editor.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": file, "version": 2}, "contentChanges": [{"text": "def my_draft():\n    pass\n"}]}),
        );
        let id = editor.command("missions.start", json!({"text": "Add slugify"}))["result"]["missionId"].as_str().unwrap().to_owned();
        let warning = editor.wait_for("the conflict", |m| m["method"] == "window/showMessageRequest" && m["params"]["type"] == 2);
        let message = warning["params"]["message"].as_str().unwrap();
        assert!(message.contains("paused (conflict)") && message.contains("textkit/slug.py"), "{message}");
        assert_eq!(warning["params"]["actions"][0]["title"], "Resume", "the pause offers the way on: {warning}");
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
    .await;
}

/// Mission Control shows what runs now: while the planner waits on the model, the snapshot in
/// `missions/didChange` names the active run's model (from the log) and the tool it called last
/// (which only the driving server knows), and the CLI's snapshot of the same log has the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_snapshot_names_the_active_runs_model_and_last_tool() {
    // Each answer takes long enough for a refresh to fall between two calls.
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::from_millis(700)).await;
    let dir = project_for(&model, "");
    with_editor(dir.path(), Vec::new(), move |mut editor, _dir| {
        editor.command("missions.start", json!({"itemId": "BACKLOG.md:3"}));
        editor.wait_for_prompt("the plan gate", "approval");
        let runs: Vec<Value> = editor
            .seen
            .iter()
            .filter(|m| m["method"] == "missions/didChange")
            .map(|m| m["params"]["active_run"].clone())
            .filter(|run| !run.is_null())
            .collect();
        assert!(
            runs.iter().any(|run| run["role"] == "orchestrator"
                && run["model"] == "planner-model"
                && run["tool"].as_str().is_some_and(|t| t.starts_with("list_files"))),
            "{runs:#?}"
        );
        editor.stop();
    })
    .await;
}
