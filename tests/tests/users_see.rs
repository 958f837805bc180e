//! What users see (SPEC §6): progress that reports every outcome on one line, the open
//! findings in `status`, and findings dismissed or fixed from the command line.

mod common;

use std::time::Duration;

use common::project::*;
use missions_tests::script::{ScriptRole, ScriptedModel, Turn};
use serde_json::{Value, json};

/// The slugify story whose reviewers also report a warning on `textkit/slug.py:5`.
fn with_a_review_warning() -> missions_tests::script::Script {
    with(|call| match call.role {
        ScriptRole::Reviewer => {
            let verdicts: Vec<Value> =
                asked(call).iter().map(|a| json!({"assertion": a, "pass": true, "evidence": "read it"})).collect();
            Some(Turn::call(
                "report_findings",
                json!({"verdicts": verdicts, "findings": [
                    {"severity": "warning", "path": "textkit/slug.py", "line": 5, "message": "the regex is compiled on every call\nsecond line"}
                ]}),
            ))
        }
        _ => None,
    })
}

fn open_findings(dir: &std::path::Path, id: &str) -> Vec<Value> {
    let findings = read_json(&dir.join(".missions").join(id).join("findings.json"));
    findings.as_array().unwrap().iter().filter(|f| f["status"] == "open").cloned().collect()
}

#[tokio::test]
async fn progress_reports_every_outcome_on_one_line() {
    let model =
        ScriptedModel::start(slugify_script(Story { buggy_first: true, ..Story::default() }), Duration::ZERO).await;
    let dir = project_for(&model, "[mission]\nchecks = [\"python3 -m unittest\"]\n");
    let output =
        missions_async(dir.path(), &["run", "--text", "Add slugify\nwith a second line", "--approve", "--accept"])
            .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let said = stderr(&output);
    for expected in [
        "A1 failing",
        "A1 passing",
        "project check `python3 -m unittest`: exit",
        "review: A2 passing",
        "decided: correct",
        "decided: complete",
    ] {
        assert!(said.contains(expected), "no `{expected}` in:\n{said}");
    }
    assert!(
        said.lines().all(|l| l.starts_with('[') || l.starts_with("mission ") || l.starts_with("warning")),
        "{said}"
    );
    assert!(!said.contains("Warning") && !said.contains("Error"), "severities print lower case: {said}");
}

#[tokio::test]
async fn status_lists_open_findings_and_the_cli_dismisses_and_fixes_them() {
    let model = ScriptedModel::start(with_a_review_warning(), Duration::ZERO).await;
    let (dir, id) = run_slugify(&model, "", &["--approve"], 3).await;
    let finding = open_findings(dir.path(), &id)[0]["id"].as_str().unwrap().to_owned();
    let status = missions_async(dir.path(), &["status", &id]).await;
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(
        shown.contains(&format!("{finding} warning review textkit/slug.py:5: the regex is compiled on every call\n")),
        "{shown}"
    );

    // Fix: a corrective feature of M1, driven to the gate again.
    let output = missions_async(dir.path(), &["fix", &id, &finding]).await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let plan = read_json(&dir.path().join(".missions").join(&id).join("plan.json"));
    let features: Vec<&str> =
        plan["milestones"][0]["features"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert!(features.contains(&format!("fix-{finding}").as_str()), "{features:?}");

    // Dismiss: recorded with the reason, gone from the open findings.
    let open = open_findings(dir.path(), &id);
    let again = open.last().unwrap()["id"].as_str().unwrap().to_owned();
    let output = missions_async(dir.path(), &["dismiss", &id, &again, "--reason", "compiled once by re's cache"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(open_findings(dir.path(), &id).iter().all(|f| f["id"] != again.as_str()));
    assert!(
        events(dir.path(), &id)
            .iter()
            .any(|e| e["type"] == "finding_status_changed" && e["reason"] == "compiled once by re's cache")
    );
    let output = missions_async(dir.path(), &["dismiss", &id, "finding-999"]).await;
    assert_eq!(output.status.code(), Some(2), "an unknown finding is a usage error");
}

#[tokio::test]
async fn a_completed_backlog_item_is_ticked_and_left_out_unless_all() {
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::ZERO).await;
    let dir = project_for(&model, "");
    let output = missions_async(dir.path(), &["run", "--item", "BACKLOG.md:3", "--approve", "--accept"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let id = mission_id(dir.path());
    let last = git(dir.path(), &["log", "-1", "--format=%s%n%(trailers:only,unfold)", &format!("missions/{id}")]);
    assert!(last.starts_with("backlog: tick Add slugify\n") && last.contains(&format!("Mission-Id: {id}")), "{last}");
    assert!(std::fs::read_to_string(dir.path().join("BACKLOG.md")).unwrap().contains("- [x] Add slugify"));
    assert!(git(dir.path(), &["status", "--porcelain"]).trim().is_empty(), "the tick leaves a clean tree");

    git(dir.path(), &["checkout", "-q", "main"]);
    let listed = missions_async(dir.path(), &["backlog", "--json"]).await;
    let items: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(items.as_array().unwrap().iter().all(|i| i["id"] != "BACKLOG.md:3"), "{items}");
    let listed = missions_async(dir.path(), &["backlog", "--json", "--all"]).await;
    let items: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let item = items.as_array().unwrap().iter().find(|i| i["id"] == "BACKLOG.md:3").cloned().unwrap();
    assert_eq!(item["mission"], json!({"id": id, "state": "completed"}), "{item}");
}

#[tokio::test]
async fn projections_are_current_within_a_second_of_a_decision() {
    // Slow model turns: after the boundary's decision nothing else is recorded for a while.
    let model = ScriptedModel::start(
        slugify_script(Story { buggy_first: true, ..Story::default() }),
        Duration::from_millis(700),
    )
    .await;
    let dir = project_for(&model, "");
    let mut command = missions_command(dir.path(), &["run", "--text", "Add slugify", "--approve", "--accept"]);
    command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut driver = tokio::process::Command::from(command).spawn().unwrap();
    let id = wait_for_event(dir.path(), |e| e["type"] == "decision_recorded" && e["decision"] == "correct").await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let plan = read_json(&dir.path().join(".missions").join(&id).join("plan.json"));
    driver.start_kill().unwrap();
    driver.wait().await.unwrap();
    let features: Vec<&str> =
        plan["milestones"][0]["features"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert!(features.contains(&"F1-fix1"), "plan.json lags the log: {features:?}");
}

#[tokio::test]
async fn a_rejection_starts_a_new_round_the_boundary_reads_and_the_gate_lists_findings() {
    let warned = with_a_review_warning();
    let script: missions_tests::script::Script = std::sync::Arc::new(move |call: &missions_tests::script::Call| {
        if call.role == ScriptRole::Boundary && call.first_line.contains("(round 2 of") {
            return Turn::call(
                "decide_milestone",
                json!({"decision": "correct", "notes": "the user asks for emoji",
                       "corrections": [{"id": "M1-E1", "title": "handle emoji", "description": "The user's feedback: also handle emoji", "assertions": ["A1"]}]}),
            );
        }
        warned(call)
    });
    let model = ScriptedModel::start(script, Duration::ZERO).await;
    let dir = project_for(&model, "");
    let output = missions_async(dir.path(), &["run", "--text", "Add slugify", "--approve"]).await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("warning review textkit/slug.py:5: the regex is compiled on every call"),
        "the gate lists the open findings: {}",
        stderr(&output)
    );
    let id = mission_id(dir.path());
    let output = missions_async(dir.path(), &["reject", &id, "M1", "--feedback", "also handle emoji"]).await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let calls = model.calls();
    let boundary = &calls
        .iter()
        .find(|(c, _)| c.role == ScriptRole::Boundary && c.first_message.contains("rejected this milestone"))
        .unwrap()
        .0
        .first_message;
    assert!(boundary.contains("(round 2 of") && boundary.contains("- also handle emoji"), "{boundary}");
    let subjects = git(dir.path(), &["log", "--format=%s", &format!("main..missions/{id}")]);
    assert!(subjects.lines().any(|s| s == "milestone M1: slugify() (after rejection 1)"), "{subjects}");
}

#[tokio::test]
async fn an_abbreviated_claim_is_matched_and_an_unrun_one_is_sent_back_first() {
    let long = "python3 -m unittest tests.test_slug \\\n  && python3 -c 'import textkit.slug'";
    let script = with(move |call| match (call.role, call.first_line.starts_with("Feature F1:"), call.turn) {
        (ScriptRole::Worker, true, 0) => Some(write_slugify()),
        (ScriptRole::Worker, true, 1) => Some(Turn::call("run_command", json!({"command": long}))),
        (ScriptRole::Worker, true, 2) => Some(handoff(
            "Added slugify.",
            json!([{"command": "python3 -m unittest tests.test_slug \\", "exit_code": 0},
                   {"command": "flake8 textkit", "exit_code": 0}]),
        )),
        (ScriptRole::Worker, true, _) => Some(handoff(
            "Added slugify.",
            json!([{"command": "python3 -m unittest tests.test_slug \\", "exit_code": 0}]),
        )),
        _ => None,
    });
    let model = ScriptedModel::start(script, Duration::ZERO).await;
    let (dir, _) = run_slugify(&model, "", &["--approve", "--accept"], 0).await;
    let calls = model.calls();
    let sent_back = calls
        .iter()
        .find(|(c, _)| c.role == ScriptRole::Worker && c.first_line.starts_with("Feature F1:") && c.turn == 3)
        .map(|(c, _)| c.results.iter().map(|(t, _)| t.clone()).collect::<String>())
        .unwrap_or_default();
    assert!(sent_back.contains("never ran: `flake8 textkit`"), "{sent_back}");
    let id = mission_id(dir.path());
    let findings = read_json(&dir.path().join(".missions").join(&id).join("findings.json"));
    let findings = findings.as_array().unwrap();
    assert!(findings.iter().all(|f| f["validator"] != "handoff-mismatch"), "{findings:?}");
    assert!(
        findings.iter().any(|f| f["severity"] == "info" && f["message"].as_str().unwrap_or("").contains("abbreviates")),
        "{findings:?}"
    );
    assert!(findings.iter().all(|f| !f["evidence"].as_str().unwrap_or("").contains("Some(")), "{findings:?}");
}

#[tokio::test]
async fn what_was_broken_before_the_mission_is_not_the_missions() {
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::ZERO).await;
    let dir = project_for(&model, "[mission]\nchecks = [\"python3 -m unittest tests.test_legacy\"]\n");
    // A test that already fails before any mission, in a file the mission never touches.
    std::fs::write(
        dir.path().join("tests/test_legacy.py"),
        "import unittest\n\n\nclass TestLegacy(unittest.TestCase):\n    def test_old_bug(self):\n        raise ValueError('broken since 2019')\n",
    )
    .unwrap();
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-q", "-m", "legacy test"]);
    let output = missions_async(dir.path(), &["run", "--text", "Add slugify", "--approve"]).await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let id = mission_id(dir.path());
    let plan_md = std::fs::read_to_string(dir.path().join(".missions").join(&id).join("plan.md")).unwrap();
    assert!(plan_md.contains("Before the mission") && plan_md.contains("tests/test_legacy.py:"), "{plan_md}");
    let findings = open_findings(dir.path(), &id);
    let legacy: Vec<&Value> = findings.iter().filter(|f| f["path"] == "tests/test_legacy.py").collect();
    assert!(!legacy.is_empty(), "{findings:?}");
    assert!(
        legacy
            .iter()
            .all(|f| f["severity"] == "info" && f["message"].as_str().unwrap_or("").starts_with("pre-existing")),
        "{legacy:?}"
    );
    let calls = model.calls();
    let boundary = &calls.iter().find(|(c, _)| c.role == ScriptRole::Boundary).unwrap().0.first_message;
    assert!(boundary.contains("Pre-existing findings (already reported on the base commit"), "seen apart: {boundary}");
}

#[tokio::test]
async fn a_check_that_already_passes_is_sent_back_once_then_kept_as_a_regression_guard() {
    let script = with(|call| match (call.role, call.turn) {
        (ScriptRole::Planner, 1 | 2) => {
            let mut plan = plan();
            // A1 now runs the existing, passing tests: it proves nothing new.
            plan["contract"][0]["check"]["command"] = json!("python3 -m unittest tests.test_core");
            Some(Turn::call("submit_plan", plan))
        }
        _ => None,
    });
    let model = ScriptedModel::start(script, Duration::ZERO).await;
    let dir = project_for(&model, "");
    let output = missions_async(dir.path(), &["run", "--text", "Add slugify"]).await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let calls = model.calls();
    let answer = calls
        .iter()
        .find(|(c, _)| c.role == ScriptRole::Planner && c.turn == 2)
        .map(|(c, _)| c.results.iter().map(|(t, _)| t.clone()).collect::<String>())
        .unwrap_or_default();
    assert!(answer.contains("already pass on the base commit") && answer.contains("A1"), "{answer}");
    let id = mission_id(dir.path());
    let contract = std::fs::read_to_string(dir.path().join(".missions").join(&id).join("contract.md")).unwrap();
    assert!(
        contract
            .contains("A1 `python3 -m unittest tests.test_core`: exit 0, already passes: guards against regressions"),
        "{contract}"
    );
    assert!(
        contract
            .contains("A3 `python3 -m unittest tests.test_cli`: exit 1, fails before the work: proves the new work"),
        "{contract}"
    );
    assert!(git(dir.path(), &["status", "--porcelain"]).trim().is_empty(), "the dry run left nothing behind");
}

#[tokio::test]
async fn the_planner_may_try_the_projects_commands_and_their_changes_are_reverted() {
    let script = with(|call| match (call.role, call.turn) {
        (ScriptRole::Planner, 0) => Some(Turn::call(
            "run_command",
            json!({"command": "echo planned > scratch.txt && python3 -m unittest 2>&1 | tail -1"}),
        )),
        _ => None,
    });
    let model = ScriptedModel::start(script, Duration::ZERO).await;
    let (dir, _id) = run_slugify(&model, "", &[], 3).await;
    let calls = model.calls();
    let result = calls
        .iter()
        .find(|(c, _)| c.role == ScriptRole::Planner && c.turn == 1)
        .map(|(c, _)| c.results.iter().map(|(t, _)| t.clone()).collect::<String>())
        .unwrap_or_default();
    assert!(result.contains("exit code 0") && result.contains("OK"), "the planner saw the test run: {result}");
    assert!(!dir.path().join("scratch.txt").exists(), "the planner's changes are reverted");
    assert!(git(dir.path(), &["status", "--porcelain"]).trim().is_empty());
}
