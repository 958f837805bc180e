//! Whole missions end to end: the real `missions` binary, a scripted model on a loopback
//! server, throwaway git repositories. Each test states the rule of SPEC §2–§3 it breaks or
//! exercises.

mod common;

use std::time::Duration;

use common::project::*;
use missions_tests::script::{ScriptRole, ScriptedModel};
use serde_json::Value;

#[tokio::test]
async fn a_two_milestone_mission_completes_with_commits_handoffs_and_states() {
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::ZERO).await;
    let dir = project_for(&model, "");
    let output =
        missions_async(dir.path(), &["run", "--text", "Add slugify and a slug command", "--approve", "--accept"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let id = mission_id(dir.path());
    let mission_dir = dir.path().join(".missions").join(&id);

    let mission = read_json(&mission_dir.join("mission.json"));
    assert_eq!(mission["state"], "completed");
    assert_eq!(mission["branch"], format!("missions/{id}"));
    assert_eq!(mission["auto_accept"], true);
    assert_eq!(mission["contract_sha256"].as_str().map(str::len), Some(64));
    assert!(mission["budget"]["used_tokens"].as_u64().unwrap() > 0);
    for role in ["orchestrator", "worker", "reviewer", "user_tester"] {
        assert!(mission["budget"]["by_role"][role]["tokens"].as_u64().unwrap() > 0, "{role}: {mission}");
    }

    // One commit per feature and per milestone, with the trailers of SPEC §3.
    let log = git(dir.path(), &["log", "--format=%s%n%(trailers:only,unfold)---", &format!("main..missions/{id}")]);
    let entries: Vec<&str> = log.split("---\n").filter(|e| !e.trim().is_empty()).collect();
    let subjects: Vec<&str> = entries.iter().map(|e| e.lines().next().unwrap()).collect();
    assert_eq!(
        subjects,
        ["milestone M2: slug command", "F2: slug command", "milestone M1: slugify()", "F1: slugify function"]
    );
    assert!(
        entries[1].contains(&format!("Mission-Id: {id}")) && entries[1].contains("Feature-Id: F2"),
        "{}",
        entries[1]
    );
    assert!(entries[0].contains("Milestone-Id: M2"), "{}", entries[0]);
    assert_eq!(git(dir.path(), &["rev-parse", "--abbrev-ref", "HEAD"]).trim(), format!("missions/{id}"));
    assert!(git(dir.path(), &["status", "--porcelain"]).trim().is_empty());

    // The handoff records the worker's account, the engine's observations and the ranges.
    let handoff = read_json(&mission_dir.join("handoffs/F1.json"));
    assert_eq!(handoff["model"], "worker-model");
    assert_eq!(handoff["commands"][0]["exit_code"], 0);
    assert_eq!(handoff["observed_commands"][0]["command"], "python3 -m unittest tests.test_slug");
    assert_eq!(handoff["observed_commands"][0]["exit_code"], 0);
    let files: Vec<&str> =
        handoff["files_changed"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(files, ["tests/test_slug.py", "textkit/slug.py"]);
    assert_eq!(handoff["files_changed"][1]["ranges"], serde_json::json!([[1, 6]]));

    let contract = read_json(&mission_dir.join("contract.json"));
    let statuses: Vec<&str> =
        contract["assertions"].as_array().unwrap().iter().map(|a| a["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["passing", "passing", "passing", "passing"]);
    assert_eq!(read_json(&mission_dir.join("findings.json")), serde_json::json!([]));
    let plan = read_json(&mission_dir.join("plan.json"));
    assert!(plan["milestones"].as_array().unwrap().iter().all(|m| m["status"] == "accepted"));
    assert!(std::fs::read_to_string(mission_dir.join("plan.md")).unwrap().contains("## M1: slugify()"));
    let transcripts = std::fs::read_dir(mission_dir.join("transcripts")).unwrap().count();
    assert!(transcripts >= 7, "planning, 2 workers, 2 reviewers, a user tester, 2 boundaries: {transcripts}");
    for entry in std::fs::read_dir(mission_dir.join("transcripts")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!text.contains(KEY), "a transcript holds the key");
    }

    // status --json is the snapshot of the same state.
    let status = missions_async(dir.path(), &["status", &id, "--json"]).await;
    let snapshot: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(snapshot["state"], "completed");
    assert_eq!(snapshot["plan"]["milestones"][1]["features"][0]["id"], "F2");
    assert_eq!(snapshot["active_run"], Value::Null);

    // The user tester really ran the program, and every role used its own model.
    let calls = model.calls();
    assert!(
        calls
            .iter()
            .any(|(c, _)| c.role == ScriptRole::UserTester && c.results.iter().any(|(r, _)| r.contains("hello-world")))
    );
}

#[tokio::test]
async fn gates_stop_the_run_until_the_user_approves_and_accepts() {
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::ZERO).await;
    let dir = project_for(&model, "");
    let output = missions_async(dir.path(), &["run", "--item", "BACKLOG.md:3"]).await;
    assert_eq!(output.status.code(), Some(3), "stops at the plan gate: {}", stderr(&output));
    let id = mission_id(dir.path());
    let mission = read_json(&dir.path().join(".missions").join(&id).join("mission.json"));
    assert_eq!(mission["state"], "awaiting_approval");
    assert_eq!(mission["source"]["kind"], "backlog");
    assert_eq!(mission["source"]["item_id"], "BACKLOG.md:3");
    assert_eq!(mission["contract_sha256"], Value::Null);

    let output = missions_async(dir.path(), &["approve", &id]).await;
    assert_eq!(output.status.code(), Some(3), "stops at M1's gate: {}", stderr(&output));
    let snapshot: Value =
        serde_json::from_slice(&missions_async(dir.path(), &["status", &id, "--json"]).await.stdout).unwrap();
    assert_eq!(snapshot["state"], "awaiting_acceptance");
    assert_eq!(snapshot["plan"]["milestones"][0]["status"], "validated");

    // Accepting the wrong milestone is a usage error; the right one drives on to M2's gate.
    assert_eq!(missions_async(dir.path(), &["accept", &id, "M2"]).await.status.code(), Some(2));
    let output = missions_async(dir.path(), &["accept", &id, "M1"]).await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let output = missions_async(dir.path(), &["accept", &id]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let snapshot: Value =
        serde_json::from_slice(&missions_async(dir.path(), &["status", &id, "--json"]).await.stdout).unwrap();
    assert_eq!(snapshot["state"], "completed");
}

#[tokio::test]
async fn a_failed_validation_becomes_a_corrective_round_and_complete_is_refused_until_it_passes() {
    let model =
        ScriptedModel::start(slugify_script(Story { buggy_first: true, ..Story::default() }), Duration::ZERO).await;
    let dir = project_for(&model, "");
    let output = missions_async(dir.path(), &["run", "--text", "Add slugify", "--approve", "--accept"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let id = mission_id(dir.path());
    let mission_dir = dir.path().join(".missions").join(&id);

    // SPEC §2 rule 3: the orchestrator's "complete" was refused while A1 failed.
    let calls = model.calls();
    let refusal = calls
        .iter()
        .find(|(c, _)| c.role == ScriptRole::Boundary && c.turn == 1)
        .map(|(c, _)| c.results.clone())
        .expect("a second boundary turn");
    assert!(refusal[0].1, "the refusal is an error result");
    assert!(refusal[0].0.contains("A1 (failing)"), "{}", refusal[0].0);

    let plan = read_json(&mission_dir.join("plan.json"));
    let features: Vec<&str> =
        plan["milestones"][0]["features"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(features, ["F1", "F1-fix1"]);
    let findings = read_json(&mission_dir.join("findings.json"));
    let a1 = findings
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["assertion"] == "A1" && f["validator"] == "command")
        .expect("A1's finding");
    assert_eq!(a1["status"], "fixed", "the next validation no longer reproduced it");
    assert_eq!(a1["path"], "tests/test_slug.py", "located from the unittest output: {a1}");
    assert!(a1["message"].as_str().unwrap().starts_with("A1: "));
    let subjects = git(dir.path(), &["log", "--format=%s", &format!("main..missions/{id}")]);
    assert!(subjects.contains("F1-fix1: lower-case the slug"), "{subjects}");
    let contract = read_json(&mission_dir.join("contract.json"));
    assert!(contract["assertions"].as_array().unwrap().iter().all(|a| a["status"] == "passing"));
}

#[tokio::test]
async fn corrective_rounds_are_bounded_then_the_mission_pauses_blocked() {
    let model = ScriptedModel::start(
        slugify_script(Story { buggy_first: true, never_fixed: true, ..Story::default() }),
        Duration::ZERO,
    )
    .await;
    let dir = project_for(&model, "[mission]\nmax_correction_rounds = 2\n");
    let output = missions_async(dir.path(), &["run", "--text", "Add slugify", "--approve", "--accept"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let id = mission_id(dir.path());
    let mission = read_json(&dir.path().join(".missions").join(&id).join("mission.json"));
    assert_eq!(mission["state"], "paused");
    assert_eq!(mission["pause_reason"], "blocked");
    let detail = mission["detail"].as_str().unwrap();
    assert!(detail.contains("after 2 correction rounds") && detail.contains("A1"), "{detail}");
    let plan = read_json(&dir.path().join(".missions").join(&id).join("plan.json"));
    let features: Vec<&str> =
        plan["milestones"][0]["features"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(features, ["F1", "F1-fix1", "F1-fix2"], "exactly two corrective rounds ran");
    // It never reports success it did not verify: M1 has no milestone commit.
    let subjects = git(dir.path(), &["log", "--format=%s", &format!("main..missions/{id}")]);
    assert!(!subjects.contains("milestone M1"), "{subjects}");
}
