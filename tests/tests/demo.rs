//! `missions demo`: the whole mission offline on the bundled project, with the recorded model;
//! and `--prepare`, which lays the project out for an editor.

mod common;

use std::path::Path;
use std::time::Duration;

use common::project::*;
use missions_tests::missions_bin;
use missions_tests::script::ScriptedModel;

fn demo(args: &[&str], home: &Path) -> std::process::Output {
    std::process::Command::new(missions_bin())
        .args(args)
        .env("MISSIONS_HOME", home)
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .env_remove("MISSIONS_CONFIG")
        .output()
        .expect("run missions demo")
}

#[test]
fn the_demo_runs_offline_and_shows_an_acceptance_test_and_the_corrective_round() {
    let home = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let output = demo(&["demo"], home.path());
    let summary = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{summary}\n{}", stderr(&output));
    assert!(started.elapsed() < Duration::from_secs(60), "it takes seconds");
    for expected in [
        "Mission Control",
        "completed",
        "M1 slugify() — accepted · 1 correction round",
        "✓ F1-fix1",
        "M2 slug command — accepted",
        "✓ A1   passing  acceptance",
        "✓ A4   passing  user test",
        // The acceptance test, written before the code, caught what the worker's own test
        // missed; the corrective round fixed it.
        "[fixed · acceptance]",
        "A1: the acceptance test written before the work fails (exit 1)",
        "test author",
        // The review's warning stays open for the user to fix or dismiss: an editor shows it.
        "[open · review] textkit/slug.py:5 A2: The docstring's example",
        "milestone M2: slug command",
        "F1-fix1: lower-case the slug",
        "Budget:",
        "worker",
    ] {
        assert!(summary.contains(expected), "the summary lacks {expected:?}:\n{summary}");
    }
}

#[test]
fn demo_prepare_lays_out_a_project_a_mission_can_be_started_on() {
    let home = tempfile::tempdir().unwrap();
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("demo");
    let output = demo(&["demo", "--prepare", dir.to_str().unwrap()], home.path());
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(dir.join("BACKLOG.md").exists() && dir.join(".missions/config.toml").exists());
    assert!(git(&dir, &["status", "--porcelain"]).trim().is_empty(), "a clean tree, ready for a mission");
    // Preparing over existing work is refused.
    assert_eq!(demo(&["demo", "--prepare", dir.to_str().unwrap()], home.path()).status.code(), Some(2));

    let backlog = missions(&dir, &["backlog", "--json"]);
    let items: serde_json::Value = serde_json::from_slice(&backlog.stdout).unwrap();
    assert_eq!(items[0]["id"], "BACKLOG.md:3");
    let output = missions(&dir, &["run", "--item", "BACKLOG.md:3", "--approve", "--accept"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

/// Records the demo's tape: the demo project, driven by the scripted model, with every
/// exchange recorded. Run after changing the demo's story:
/// `cargo test -p missions-tests --test demo -- --ignored regenerate`.
#[tokio::test]
#[ignore = "rewrites server/cli/demo/tape.jsonl"]
async fn regenerate_the_demo_tape() {
    let model = ScriptedModel::start(
        slugify_script(Story { buggy_first: true, acceptance: true, review_note: true, ..Story::default() }),
        Duration::ZERO,
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("demo");
    assert_eq!(demo(&["demo", "--prepare", dir.to_str().unwrap()], home.path()).status.code(), Some(0));
    let config = model
        .config_toml("[mission]\nmax_correction_rounds = 3\n")
        .replace("max_retries = 0", "max_retries = 0\nrecord = \".missions/recorded.jsonl\"")
        .replace("script/planner-model", "script/planner")
        .replace("script/worker-model", "script/worker")
        .replace("script/reviewer-model", "script/reviewer")
        .replace("script/tester-model", "script/user-tester");
    std::fs::write(dir.join(".missions/config.toml"), config).unwrap();
    let output = missions_async(&dir, &["run", "--item", "BACKLOG.md:3", "--approve", "--accept"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    // Keep only the responses (with their keys), with a fixed timestamp, so the tape is small
    // and the same story always records the same bytes.
    let recorded = std::fs::read_to_string(dir.join(".missions/recorded.jsonl")).unwrap();
    let mut tape = String::new();
    for line in recorded.lines() {
        let mut entry: serde_json::Value = serde_json::from_str(line).unwrap();
        if entry["type"] != "response" {
            continue;
        }
        entry["ts"] = "2026-11-21T00:00:00Z".into();
        entry["provider"] = "demo".into();
        entry["response"]["request_id"] = serde_json::Value::Null;
        tape.push_str(&entry.to_string());
        tape.push('\n');
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/cli/demo/tape.jsonl");
    std::fs::write(&target, tape).unwrap();
}
