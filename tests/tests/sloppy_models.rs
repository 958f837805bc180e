//! Real models are sloppy (SPEC §2 rules 7 and 10, §5): extra verdicts, repeated failing calls,
//! a refused terminal call sent again and again, text-only turns, unknown tools, missing
//! fields, tool calls cut off by the output limit, a budget cap that leaves less than a role's
//! maximum output. Each is contained, and a mission with them still completes when the work
//! can be done.

mod common;

use std::time::Duration;

use common::project::*;
use missions_tests::script::{ScriptRole, ScriptedModel, Turn};
use serde_json::{Value, json};

/// Identical failing calls a run may make before it ends: the guard's limit, the call that
/// ends it, and one of slack.
const MOST_IDENTICAL_FAILURES: usize = 3 + 2;

#[tokio::test]
async fn an_extra_verdict_never_voids_a_report_and_its_finding_is_recorded() {
    let script = with(|call| match call.role {
        ScriptRole::Reviewer => {
            let mut verdicts: Vec<Value> = asked(call)
                .iter()
                .map(|a| json!({"assertion": a, "pass": true, "evidence": "read the code"}))
                .collect();
            verdicts.push(json!({"assertion": "AS-3", "pass": false, "evidence": "not mine to judge"}));
            Some(Turn::call(
                "report_findings",
                json!({"verdicts": verdicts, "findings": [
                    {"severity": "warning", "path": "textkit/slug.py", "line": 5, "message": "the regex is compiled on every call"}
                ]}),
            ))
        }
        _ => None,
    });
    let model = ScriptedModel::start(script, Duration::ZERO).await;
    let (dir, _) = run_slugify(&model, "", &["--approve", "--accept"], 0).await;
    let reviewer_calls = model.calls().iter().filter(|(c, _)| c.role == ScriptRole::Reviewer).count();
    assert_eq!(reviewer_calls, 2, "one report per feature, accepted the first time");
    let id = mission_id(dir.path());
    let findings = read_json(&dir.path().join(".missions").join(&id).join("findings.json"));
    assert!(
        findings.as_array().unwrap().iter().any(|f| f["message"]
            .as_str()
            .unwrap_or("")
            .contains("compiled on every call")
            && f["path"] == "textkit/slug.py"
            && f["line"] == 5),
        "{findings}"
    );
}

#[tokio::test]
async fn a_worker_repeating_a_failing_call_is_stopped_by_the_loop_guard() {
    let script = with(|call| match (call.role, call.first_line.starts_with("Feature F1:")) {
        (ScriptRole::Worker, true) => Some(Turn::call("read_file", json!({"path": "does/not/exist.py"}))),
        _ => None,
    });
    let model = ScriptedModel::start(script, Duration::ZERO).await;
    let dir = project_for(&model, "[mission]\nmax_correction_rounds = 0\n");
    let output = missions_async(dir.path(), &["run", "--text", "Add slugify", "--approve"]).await;
    assert_ne!(output.status.code(), Some(0), "{}", stderr(&output));
    let calls = model.calls();
    let f1: Vec<_> =
        calls.iter().filter(|(c, _)| c.role == ScriptRole::Worker && c.first_line.starts_with("Feature F1:")).collect();
    assert!(f1.len() <= MOST_IDENTICAL_FAILURES, "{} worker turns on the same failing call", f1.len());
    // The pointed reply came once, before the run ended.
    let warned =
        f1.iter().filter(|(c, _)| c.results.iter().any(|(text, _)| text.contains("do something different"))).count();
    assert_eq!(warned, 1);
    let id = mission_id(dir.path());
    let findings = read_json(&dir.path().join(".missions").join(&id).join("findings.json"));
    assert!(
        findings
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["message"].as_str().unwrap_or("").contains("ended without a handoff")),
        "{findings}"
    );
}

#[tokio::test]
async fn an_orchestrator_repeating_a_refused_complete_is_stopped() {
    // F1 never fixes the bug; the boundary insists on "complete" forever.
    let base = slugify_script(Story { buggy_first: true, ..Story::default() });
    let script: missions_tests::script::Script =
        std::sync::Arc::new(move |call: &missions_tests::script::Call| match call.role {
            ScriptRole::Boundary => {
                Turn::call("decide_milestone", json!({"decision": "complete", "notes": "looks done"}))
            }
            _ => base(call),
        });
    let model = ScriptedModel::start(script, Duration::ZERO).await;
    let dir = project_for(&model, "");
    let output = missions_async(dir.path(), &["run", "--text", "Add slugify", "--approve"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let boundary_turns = model.calls().iter().filter(|(c, _)| c.role == ScriptRole::Boundary).count();
    assert!(boundary_turns <= 4, "{boundary_turns} boundary turns on a refused `complete`");
    let id = mission_id(dir.path());
    let mission = read_json(&dir.path().join(".missions").join(&id).join("mission.json"));
    assert_eq!(mission["pause_reason"], "blocked", "{mission}");
    assert!(mission["detail"].as_str().unwrap_or("").contains("A1"), "{mission}");
}

#[tokio::test]
async fn text_only_turns_unknown_tools_bad_fields_and_cut_off_calls_are_survived() {
    let script = with(|call| match (call.role, call.first_line.starts_with("Feature F1:"), call.turn) {
        (ScriptRole::Worker, true, 0) => Some(Turn::text("Let me think about slugs first.")),
        (ScriptRole::Worker, true, 1) => Some(Turn::call("bogus_tool", json!({"x": 1}))),
        (ScriptRole::Worker, true, 2) => Some(Turn::call("write_file", json!({"path": "textkit/slug.py"}))),
        (ScriptRole::Worker, true, 3) => Some(Turn::call("write_file", json!({"path": 7, "content": "x"}))),
        (ScriptRole::Worker, true, 4) => {
            Some(Turn::cut_off("write_file", json!({"path": "textkit/slug.py", "content": SLUG_GOOD})))
        }
        (ScriptRole::Worker, true, 5) => Some(write_slugify()),
        (ScriptRole::Worker, true, _) => Some(handoff("Added slugify.", json!([]))),
        _ => None,
    });
    let model = ScriptedModel::start(script, Duration::ZERO).await;
    let (_dir, _) = run_slugify(&model, "", &["--approve", "--accept"], 0).await;
    let calls = model.calls();
    let result_of_turn = |turn: usize| -> String {
        calls
            .iter()
            .find(|(c, _)| c.role == ScriptRole::Worker && c.first_line.starts_with("Feature F1:") && c.turn == turn)
            .map(|(c, _)| c.results.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    };
    assert!(
        result_of_turn(2).contains("available: read_file"),
        "the unknown tool's result names the tools: {:?}",
        result_of_turn(2)
    );
    assert!(result_of_turn(3).contains("content"), "the missing field is named: {}", result_of_turn(3));
    assert!(result_of_turn(4).contains("path"), "the mistyped field is named: {}", result_of_turn(4));
    let cut = calls
        .iter()
        .find(|(c, _)| c.role == ScriptRole::Worker && c.first_line.starts_with("Feature F1:") && c.turn == 5)
        .map(|(c, _)| c.first_message.clone());
    assert!(cut.is_some(), "the run went on after the cut-off call");
}

#[tokio::test]
async fn a_small_token_cap_clamps_the_call_instead_of_refusing_it() {
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::ZERO).await;
    // Room for the planner's first call (its prompt and at least `min_output_tokens`), far
    // below the role's maximum output.
    let dir = project_for(&model, "[budget]\nmax_tokens = 4000\n");
    let output = missions_async(dir.path(), &["run", "--text", "Add slugify", "--approve"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let calls = model.calls();
    assert!(!calls.is_empty(), "a call was made although the role's maximum output is larger than the cap");
    let (first, _) = &calls[0];
    let granted = first.max_tokens.unwrap_or(u64::MAX);
    assert!((1024..4000).contains(&granted), "max_tokens clamped to what the cap leaves: {granted}");
    let id = mission_id(dir.path());
    let mission = read_json(&dir.path().join(".missions").join(&id).join("mission.json"));
    assert_eq!(mission["pause_reason"], "budget", "{mission}");
    assert!(mission["budget"]["used_tokens"].as_u64().unwrap() <= 4000, "{mission}");
}

#[tokio::test]
async fn command_output_reaches_models_without_colour() {
    let script = with(|call| match (call.role, call.first_line.starts_with("Feature F1:"), call.turn) {
        (ScriptRole::Worker, true, 0) => Some(Turn::call(
            "run_command",
            json!({"command": "printf '\\033[31mred\\033[0m NO_COLOR=%s TERM=%s CLICOLOR=%s' \"$NO_COLOR\" \"$TERM\" \"$CLICOLOR\""}),
        )),
        (ScriptRole::Worker, true, 1) => Some(write_slugify()),
        (ScriptRole::Worker, true, _) => Some(handoff("Added slugify.", json!([]))),
        _ => None,
    });
    let model = ScriptedModel::start(script, Duration::ZERO).await;
    let (_dir, _) = run_slugify(&model, "", &["--approve", "--accept"], 0).await;
    let calls = model.calls();
    let result = calls
        .iter()
        .find(|(c, _)| c.role == ScriptRole::Worker && c.turn == 1)
        .map(|(c, _)| c.results[0].0.clone())
        .unwrap();
    assert!(result.contains("red NO_COLOR=1 TERM=dumb CLICOLOR=0"), "{result:?}");
    assert!(!result.contains('\u{1b}'), "{result:?}");
}

#[tokio::test]
async fn the_boundary_sees_the_checks_and_the_evidence_and_reviewers_see_commands_once() {
    let model =
        ScriptedModel::start(slugify_script(Story { buggy_first: true, ..Story::default() }), Duration::ZERO).await;
    let dir = project_for(&model, "[mission]\nchecks = [\"python3 -m unittest\"]\n");
    let output = missions_async(dir.path(), &["run", "--text", "Add slugify", "--approve", "--accept"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let calls = model.calls();
    let boundary = &calls.iter().find(|(c, _)| c.role == ScriptRole::Boundary).unwrap().0.first_message;
    assert!(boundary.contains("The project's own checks:\n- `python3 -m unittest`: exit 1, "), "{boundary}");
    assert!(boundary.contains("- A1 [failing]: slugify's tests pass\n  evidence: exit code 1"), "{boundary}");
    let review = &calls.iter().find(|(c, _)| c.role == ScriptRole::Reviewer).unwrap().0.first_message;
    assert_eq!(review.matches("python3 -m unittest tests.test_slug").count(), 1, "each command once: {review}");
    assert!(review.contains("`python3 -m unittest tests.test_slug`: exit 1 (as claimed)"), "{review}");
}
