//! The `missions` binary end to end: `doctor` against loopback providers, `status` from the
//! event log alone, and the language server over a real stdio transport.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::editor::Editor;
use missions_core::mission::{Source, SourceKind};
use missions_core::store::{Event, MissionStore};
use missions_tests::{MockServer, Reply, closed_port, missions_bin};
use serde_json::{Value, json};

/// Runs `missions` with an isolated home (no user config) and no provider keys.
fn missions(workspace: &Path, args: &[&str]) -> Output {
    Command::new(missions_bin())
        .args(args)
        .arg("--workspace")
        .arg(workspace)
        .env("MISSIONS_HOME", workspace.join(".test-home"))
        .env_remove("MISSIONS_CONFIG")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .output()
        .expect("run missions")
}

/// `missions lsp --stdio` with an isolated home, as an editor starts it.
fn lsp_command(workspace: &Path) -> Command {
    let mut command = Command::new(missions_bin());
    command.args(["lsp", "--stdio"]).env("MISSIONS_HOME", workspace.join(".test-home"));
    command
}

fn git_workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let status = Command::new("git").arg("-C").arg(dir.path()).args(args).output().unwrap().status;
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "--allow-empty", "-m", "init"]);
    dir
}

fn configure_mock(workspace: &Path, base_url: &str) {
    std::fs::create_dir_all(workspace.join(".missions")).unwrap();
    std::fs::write(
        workspace.join(".missions/config.toml"),
        format!(
            "[providers.mock]\nkind = \"openai\"\nbase_url = \"{base_url}\"\nmax_retries = 0\n\n\
             [roles]\norchestrator = \"mock/m\"\nworker = \"mock/m\"\nreviewer = \"mock/m\"\nuser_tester = \"mock/m\"\n"
        ),
    )
    .unwrap();
    // The config lives in an ignored directory so the tree stays clean.
    std::fs::write(workspace.join(".git/info/exclude"), ".missions/\n.test-home/\n").unwrap();
}

#[tokio::test]
async fn doctor_reports_a_loopback_provider_reachable() {
    let server = MockServer::start(vec![Reply::json(200, &json!({"object": "list", "data": [{"id": "m"}]}))]).await;
    let workspace = git_workspace();
    configure_mock(workspace.path(), &format!("{}/v1", server.url()));
    let output = tokio::task::spawn_blocking({
        let path = workspace.path().to_owned();
        move || missions(&path, &["doctor"])
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("reachable: GET") && stdout.contains("/v1/models: HTTP 200"), "{stdout}");
    assert!(stdout.contains("key ANTHROPIC_API_KEY: missing"), "keys are shown only as present or missing: {stdout}");
    assert!(stdout.contains("not used by any role"), "{stdout}");
    assert_eq!(server.requests()[0].path, "/v1/models");
}

#[test]
fn doctor_reports_a_closed_port_unreachable_with_the_reason() {
    let workspace = git_workspace();
    configure_mock(workspace.path(), &format!("http://127.0.0.1:{}/v1", closed_port()));
    let output = missions(workspace.path(), &["doctor"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("unreachable") && stdout.to_lowercase().contains("refused"), "{stdout}");
}

#[test]
fn doctor_names_a_missing_key_and_a_malformed_file() {
    let workspace = git_workspace();
    std::fs::create_dir_all(workspace.path().join(".missions")).unwrap();
    std::fs::write(workspace.path().join(".git/info/exclude"), ".missions/\n.test-home/\n").unwrap();
    let output = missions(workspace.path(), &["doctor"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout.contains("ANTHROPIC_API_KEY") && stdout.contains("not set"), "{stdout}");

    std::fs::write(workspace.path().join(".missions/config.toml"), "[budget]\nmax_usd = \"lots\"\n").unwrap();
    let output = missions(workspace.path(), &["doctor"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout.contains(".missions/config.toml") && stdout.contains("line 2"), "{stdout}");
}

fn seed_mission(workspace: &Path) -> std::path::PathBuf {
    let created = Event::MissionCreated {
        id: "20261121-add-slugify-3f2a".into(),
        title: "Add slugify".into(),
        source: Source { kind: SourceKind::Backlog, item_id: Some("BACKLOG.md:3".into()), text: "Add slugify".into() },
        branch: "missions/20261121-add-slugify-3f2a".into(),
        base_commit: "0123456789abcdef".into(),
        auto_accept: false,
        max_tokens: Some(1000),
        max_usd: Some(5.0),
    };
    let mut store = MissionStore::create(workspace, created).unwrap();
    store
        .append(Event::StateChanged {
            state: missions_core::mission::MissionState::Paused,
            pause_reason: Some(missions_core::mission::PauseReason::User),
            detail: None,
        })
        .unwrap();
    store.dir().to_owned()
}

#[test]
fn status_is_folded_from_the_log_even_without_projections() {
    let workspace = tempfile::tempdir().unwrap();
    let dir = seed_mission(workspace.path());
    for name in ["mission.json", "findings.json"] {
        std::fs::remove_file(dir.join(name)).unwrap();
    }
    let output = missions(workspace.path(), &["status", "20261121-add-slugify-3f2a", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let snapshot: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(snapshot["id"], "20261121-add-slugify-3f2a");
    assert_eq!(snapshot["state"], "paused");
    assert_eq!(snapshot["pause_reason"], "user");
    assert_eq!(snapshot["source"], json!({"kind": "backlog", "item_id": "BACKLOG.md:3", "text": "Add slugify"}));
    assert_eq!(snapshot["budget"]["max_usd"], 5.0);
    for key in [
        "plan",
        "contract",
        "findings",
        "active_run",
        "contract_sha256",
        "branch",
        "base_commit",
        "created_at",
        "updated_at",
    ] {
        assert!(snapshot.get(key).is_some(), "snapshot lacks {key}: {snapshot}");
    }

    let output = missions(workspace.path(), &["status", "--json"]);
    let list: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1));

    let output = missions(workspace.path(), &["status"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("paused (user)") && text.contains("Add slugify"), "{text}");

    let output = missions(workspace.path(), &["status", "no-such-mission"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no mission `no-such-mission`"));
}

#[test]
fn status_reads_a_mission_while_another_process_holds_its_lock() {
    let workspace = tempfile::tempdir().unwrap();
    let dir = seed_mission(workspace.path());
    // This test process holds the writer lock (writers are refused: see the store tests);
    // a reader in another process is not a writer and still works.
    let (_held, _) = MissionStore::open(&dir).unwrap();
    let output = missions(workspace.path(), &["status", "--json"]);
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn the_language_server_initializes_serves_status_and_survives_bad_requests() {
    let workspace = tempfile::tempdir().unwrap();
    seed_mission(workspace.path());
    // Started bare, without `--workspace`: the server finds the workspace from `rootUri`.
    let mut client = Editor::spawn(lsp_command(workspace.path()));
    let root = format!("file://{}", workspace.path().display());
    let response = client.request("initialize", json!({"processId": null, "rootUri": root, "capabilities": {}}));
    assert_eq!(response["result"]["serverInfo"]["name"], "missions");
    let commands = response["result"]["capabilities"]["executeCommandProvider"]["commands"].as_array().unwrap().clone();
    // Every command of SPEC §8, and `missions.openPlan`, which the "open plan" action runs.
    assert_eq!(commands.len(), 14, "{commands:?}");
    assert!(commands.contains(&json!("missions.openPlan")));
    assert!(commands.contains(&json!("missions.status")) && commands.contains(&json!("missions.courseCorrect")));
    client.send(&json!({"jsonrpc": "2.0", "method": "initialized", "params": {}}));

    let response = client.request("workspace/executeCommand", json!({"command": "missions.status", "arguments": [{}]}));
    assert_eq!(response["result"][0]["id"], "20261121-add-slugify-3f2a", "{response}");
    let response = client.request(
        "workspace/executeCommand",
        json!({"command": "missions.status", "arguments": [{"missionId": "20261121-add-slugify-3f2a"}]}),
    );
    assert_eq!(response["result"]["state"], "paused", "the snapshot is the CLI's snake_case one: {response}");

    // Bad requests get errors that say what is wrong, and the server keeps running.
    let response = client
        .request("workspace/executeCommand", json!({"command": "missions.status", "arguments": [{"missionId": 7}]}));
    assert_eq!(response["error"]["code"], -32602);
    assert!(response["error"]["message"].as_str().unwrap().contains("`missionId` must be a string"));
    let response = client.request(
        "workspace/executeCommand",
        json!({"command": "missions.status", "arguments": [{"missionId": "nope"}]}),
    );
    assert!(response["error"]["message"].as_str().unwrap().contains("no mission `nope`"));
    let response = client.request("workspace/executeCommand", json!({"command": "missions.launch", "arguments": []}));
    assert!(response["error"]["message"].as_str().unwrap().contains("unknown command"));
    let response = client.request(
        "workspace/executeCommand",
        json!({"command": "missions.acceptMilestone", "arguments": [{"missionId": "x"}]}),
    );
    assert!(response["error"]["message"].as_str().unwrap().contains("needs `milestoneId`"), "{response}");
    let response =
        client.request("workspace/executeCommand", json!({"command": "missions.status", "arguments": [1, 2]}));
    assert!(response["error"]["message"].as_str().unwrap().contains("one JSON object argument"));

    let response = client.request("shutdown", Value::Null);
    assert_eq!(response["result"], Value::Null);
    client.send(&json!({"jsonrpc": "2.0", "method": "exit"}));
    let status = client.child.wait().unwrap();
    assert!(status.success());
}
