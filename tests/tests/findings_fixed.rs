//! When a finding is fixed (SPEC §4, §5): a review finding with no assertion only when its
//! reviewer, shown it in a later validation, lists it as `resolved`, never because the review
//! stayed silent about it; and a feature whose code did not change since its last review is not
//! reviewed again, while a changed one is shown its open findings and the diff since then.

mod common;

use std::time::Duration;

use common::project::*;
use missions_tests::script::{Call, ScriptRole, ScriptedModel, Turn};
use serde_json::{Value, json};

/// The note F1's first review leaves: no assertion, so only its reviewer can fix it.
const NOTE: &str = "slugify has no type hints";

/// The id of the open finding the reviewer is shown with `text`, from its first message.
fn shown_finding(call: &Call, text: &str) -> Option<String> {
    let line = call.first_message.lines().find(|l| l.contains(text) && l.trim_start().starts_with("- finding-"))?;
    line.trim_start().trim_start_matches("- ").split([' ', ':']).next().map(str::to_owned)
}

/// F1's reviewer notes [`NOTE`] once; shown it again after the corrective round, it lists it
/// as resolved when `resolves`, else says nothing about it.
async fn mission_with_a_review_note(resolves: bool) -> (tempfile::TempDir, String, ScriptedModel) {
    let script = with_story(Story { buggy_first: true, ..Story::default() }, move |call| {
        if call.role != ScriptRole::Reviewer || !call.first_line.starts_with("Review feature F1 ") {
            return None;
        }
        let verdicts: Vec<Value> =
            asked(call).iter().map(|a| json!({"assertion": a, "pass": true, "evidence": "read it"})).collect();
        Some(match shown_finding(call, NOTE) {
            None => Turn::call(
                "report_findings",
                json!({"verdicts": verdicts, "findings": [{"severity": "warning", "path": "textkit/slug.py", "line": 4, "message": NOTE}]}),
            ),
            Some(id) => {
                let resolved: Vec<String> = if resolves { vec![id] } else { Vec::new() };
                Turn::call("report_findings", json!({"verdicts": verdicts, "findings": [], "resolved": resolved}))
            }
        })
    });
    let model = ScriptedModel::start(script, Duration::ZERO).await;
    let (dir, id) = run_slugify(&model, "", &["--approve", "--accept"], 0).await;
    (dir, id, model)
}

fn the_note(dir: &std::path::Path, id: &str) -> Value {
    let findings = read_json(&dir.join(".missions").join(id).join("findings.json"));
    let notes: Vec<Value> =
        findings.as_array().unwrap().iter().filter(|f| f["message"].as_str() == Some(NOTE)).cloned().collect();
    assert_eq!(notes.len(), 1, "one finding for the note: {findings:#}");
    notes[0].clone()
}

fn reviews_of(model: &ScriptedModel, feature: &str) -> Vec<Call> {
    let prefix = format!("Review feature {feature} ");
    model
        .calls()
        .into_iter()
        .map(|(call, _)| call)
        .filter(|c| c.turn == 0 && c.first_line.starts_with(&prefix))
        .collect()
}

#[tokio::test]
async fn a_review_finding_stays_open_when_the_re_review_is_silent_about_it() {
    let (dir, id, model) = mission_with_a_review_note(false).await;
    let note = the_note(dir.path(), &id);
    assert_eq!(note["status"], "open", "silence is not a fix: {note}");
    // The corrective round changed F1's code, so F1 was reviewed again, shown its open finding
    // and the diff since its last review.
    let reviews = reviews_of(&model, "F1");
    assert_eq!(reviews.len(), 2, "F1 reviewed once per validation of M1");
    let again = &reviews[1].first_message;
    assert!(again.contains(NOTE) && again.contains(note["id"].as_str().unwrap()), "{again}");
    assert!(again.contains("since your last review"), "{again}");
    assert!(
        again.contains("+    return re.sub(r'[^A-Za-z0-9]+', '-', text.lower()).strip('-')"),
        "the fix's diff: {again}"
    );
    assert!(!reviews[0].first_message.contains(NOTE), "the first review is shown no finding of its own");
}

#[tokio::test]
async fn a_review_finding_its_reviewer_lists_as_resolved_is_fixed() {
    let (dir, id, _model) = mission_with_a_review_note(true).await;
    let note = the_note(dir.path(), &id);
    assert_eq!(note["status"], "fixed", "{note}");
    let events = events(dir.path(), &id);
    let fixed = events
        .iter()
        .find(|e| e["type"] == "finding_status_changed" && e["finding"] == note["id"])
        .expect("the fix is recorded");
    assert!(fixed["reason"].as_str().unwrap_or_default().contains("reviewer of F1"), "{fixed}");
}

#[tokio::test]
async fn a_feature_whose_code_did_not_change_is_not_reviewed_again() {
    // M1 gets a second feature, F1b (the docs, claiming A2), that the correction of F1 never
    // touches.
    let script = with_story(Story { buggy_first: true, ..Story::default() }, |call| match call.role {
        ScriptRole::Planner if call.turn > 0 => {
            let mut plan = plan();
            plan["milestones"][0]["features"][0]["assertions"] = json!(["A1"]);
            plan["milestones"][0]["features"].as_array_mut().unwrap().push(json!(
                {"id": "F1b", "title": "slugify docs", "description": "Document slugify in docs/slug.md.", "assertions": ["A2"]}
            ));
            Some(Turn::call("submit_plan", plan))
        }
        ScriptRole::Worker if call.first_line.starts_with("Feature F1b:") => Some(match call.turn {
            0 => Turn::call(
                "write_file",
                json!({"path": "docs/slug.md", "content": "# slugify\n\nslugify('Hello World') == 'hello-world'\n"}),
            ),
            _ => handoff("Documented slugify.", json!([])),
        }),
        _ => None,
    });
    let model = ScriptedModel::start(script, Duration::ZERO).await;
    let (dir, id) = run_slugify(&model, "", &["--approve", "--accept"], 0).await;
    assert_eq!(reviews_of(&model, "F1").len(), 2, "F1's code changed in the correction: reviewed again");
    assert_eq!(reviews_of(&model, "F1b").len(), 1, "F1b's did not: its review stands");
    // A2, judged by F1b's one review, still holds.
    let contract = read_json(&dir.path().join(".missions").join(&id).join("contract.json"));
    let a2 = contract["assertions"].as_array().unwrap().iter().find(|a| a["id"] == "A2").unwrap().clone();
    assert_eq!(a2["status"], "passing", "{a2}");
}
