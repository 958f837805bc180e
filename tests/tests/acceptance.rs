//! Acceptance tests written before the code, by someone else (SPEC §1 test author, §2 rule 9,
//! §4 `acceptance` checks, §5 test-author tools): the test author writes them from the plan
//! alone; each must fail on the base commit; workers never see them; validation runs them and
//! a failure becomes an `acceptance` finding whose evidence is the output, not the test.

mod common;

use std::time::Duration;

use common::project::*;
use missions_tests::script::{Call, ScriptRole, ScriptedModel, Turn};
use serde_json::{Value, json};

/// The acceptance story (the planner writes an acceptance assertion, the test author its test,
/// the worker a slugify that forgets to lower-case with a test of its own that passes anyway),
/// with `worker` and `test_author` replacing those roles' turns when they answer.
fn story(
    test_author: impl Fn(&Call) -> Option<Turn> + Send + Sync + 'static,
    worker: impl Fn(&Call) -> Option<Turn> + Send + Sync + 'static,
) -> missions_tests::script::Script {
    with_story(Story { buggy_first: true, acceptance: true, ..Story::default() }, move |call| match call.role {
        ScriptRole::TestAuthor => test_author(call),
        ScriptRole::Worker if call.first_line.starts_with("Feature F1:") => worker(call),
        _ => None,
    })
}

/// The first call the model was asked that `wanted` picks.
fn first_call(model: &ScriptedModel, wanted: impl Fn(&Call) -> bool) -> Option<Call> {
    model.calls().into_iter().map(|(call, _)| call).find(|call| wanted(call))
}

fn mission_dir(dir: &std::path::Path, id: &str) -> std::path::PathBuf {
    dir.join(".missions").join(id)
}

#[tokio::test]
async fn a_hidden_acceptance_test_catches_what_the_workers_own_tests_missed() {
    let model = ScriptedModel::start(story(|_| None, |_| None), Duration::ZERO).await;
    let (dir, id) = run_slugify(&model, "", &["--approve", "--accept"], 0).await;
    let dir = dir.path();
    let missions = mission_dir(dir, &id);

    // The test author worked from the plan and the contract, before any code.
    let author: Vec<Call> =
        model.calls().into_iter().map(|(c, _)| c).filter(|c| c.role == ScriptRole::TestAuthor).collect();
    assert!(!author.is_empty(), "the test author ran");
    assert!(author[0].first_message.contains(BEHAVIOUR) && author[0].first_message.contains("A1"));

    // Its test is kept in the mission's folder, recorded in the contract, and shown at the gate
    // with what it printed on the base commit.
    let kept = std::fs::read_to_string(missions.join("acceptance/A1").join(ACCEPTANCE_PATH)).unwrap();
    assert_eq!(kept, ACCEPTANCE_TEST);
    let contract = read_json(&missions.join("contract.json"));
    let a1 = contract["assertions"].as_array().unwrap().iter().find(|a| a["id"] == "A1").unwrap().clone();
    assert_eq!(a1["check"]["kind"], "acceptance");
    assert_eq!(a1["check"]["command"], ACCEPTANCE_COMMAND);
    assert_eq!(a1["check"]["files"][0]["path"], ACCEPTANCE_PATH);
    assert_eq!(a1["status"], "passing", "{a1}");
    let contract_md = std::fs::read_to_string(missions.join("contract.md")).unwrap();
    assert!(contract_md.contains("class AcceptanceSlug"), "the gate shows the test:\n{contract_md}");
    assert!(contract_md.contains("fails on the base commit"), "{contract_md}");

    // The worker's own test passed; the acceptance test did not, and said why without
    // showing its code.
    let findings = read_json(&missions.join("findings.json"));
    let caught: Vec<&Value> = findings.as_array().unwrap().iter().filter(|f| f["validator"] == "acceptance").collect();
    assert_eq!(caught.len(), 1, "{findings:#}");
    assert_eq!(caught[0]["assertion"], "A1");
    assert_eq!(caught[0]["status"], "fixed", "fixed by the corrective round");
    let evidence = caught[0]["evidence"].as_str().unwrap();
    assert!(evidence.contains("hello-world"), "{evidence}");
    assert!(!evidence.contains("class AcceptanceSlug"), "the evidence is the output, not the test: {evidence}");

    // Workers were told the behaviour, never the test.
    for call in model.calls().into_iter().map(|(c, _)| c).filter(|c| c.role == ScriptRole::Worker) {
        assert!(!call.system.contains("AcceptanceSlug") && !call.first_message.contains("AcceptanceSlug"));
    }
    let fixer = first_call(&model, |c| c.role == ScriptRole::Worker && c.first_line.starts_with("Feature F1-fix1"))
        .expect("a corrective worker");
    assert!(fixer.system.contains(BEHAVIOUR), "the worker's assertions carry the behaviour");
    let first = first_call(&model, |c| c.role == ScriptRole::Worker && c.first_line.starts_with("Feature F1:"))
        .expect("F1's worker");
    assert!(first.first_message.contains(BEHAVIOUR), "its first message too: {}", first.first_message);

    // The test was never committed nor left in the tree, not even compiled by its runs.
    assert!(!dir.join(ACCEPTANCE_PATH).exists());
    let touched = git(dir, &["log", "--all", "--format=%H", "--", ACCEPTANCE_PATH]);
    assert!(touched.trim().is_empty(), "commits touching the acceptance test: {touched}");
    let left: Vec<String> = walk(dir).into_iter().filter(|p| p.contains("test_acceptance_slug")).collect();
    assert!(left.is_empty(), "left in the tree: {left:?}");
}

#[tokio::test]
async fn an_acceptance_test_that_passes_before_the_work_is_sent_back() {
    let trivial =
        "import unittest\n\n\nclass AcceptanceSlug(unittest.TestCase):\n    def test_nothing(self):\n        pass\n";
    let author = move |call: &Call| {
        Some(match call.turn {
            // A draft tried with run_command first: what the author's commands leave is
            // dropped, never saved where a worker could read it in git.
            0 => Turn::calls(vec![
                (
                    "run_command",
                    json!({"command": "printf 'class AcceptanceSlugDraft: pass\\n' > tests/draft_acceptance.py"}),
                ),
                ("write_acceptance_test", json!({"assertion": "A1", "path": ACCEPTANCE_PATH, "content": trivial})),
            ]),
            1 => submit_the_acceptance_test(),
            2 => write_the_acceptance_test(),
            _ => submit_the_acceptance_test(),
        })
    };
    let model = ScriptedModel::start(story(author, |_| None), Duration::ZERO).await;
    let (dir, id) = run_slugify(&model, "", &[], 3).await;
    let refused =
        first_call(&model, |c| c.role == ScriptRole::TestAuthor && c.turn == 2).expect("the test author was answered");
    let (text, is_error) = refused.results[0].clone();
    assert!(is_error, "{text}");
    assert!(text.contains("A1") && text.contains("passes on the base commit"), "{text}");
    assert!(text.contains("OK"), "with the test's output: {text}");
    let status = read_json(&mission_dir(dir.path(), &id).join("mission.json"));
    assert_eq!(status["state"], "awaiting_approval");
    let kept =
        std::fs::read_to_string(mission_dir(dir.path(), &id).join("acceptance/A1").join(ACCEPTANCE_PATH)).unwrap();
    assert_eq!(kept, ACCEPTANCE_TEST, "the test kept is the one that fails before the work");
    assert!(!dir.path().join(ACCEPTANCE_PATH).exists(), "not left in the tree");
    assert!(!dir.path().join("tests/draft_acceptance.py").exists(), "the author's draft is gone");
    let history = git(dir.path(), &["log", "--all", "-p"]);
    assert!(!history.contains("AcceptanceSlug"), "a draft or a test reached git:\n{history}");
}

/// Every file under `dir` but `.git` and `.missions`, relative.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).unwrap().filter_map(Result::ok) {
            let path = entry.path();
            let name = entry.file_name();
            if name == ".git" || name == ".missions" {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    found
}

#[tokio::test]
async fn workers_cannot_see_the_acceptance_tests_and_reviewers_can() {
    let snoop = |call: &Call| match call.turn {
        0 => Some(Turn::calls(vec![
            ("list_files", json!({"path": ".missions"})),
            ("search", json!({"pattern": "AcceptanceSlug"})),
            ("read_file", json!({"path": ACCEPTANCE_PATH})),
            ("write_file", json!({"path": ACCEPTANCE_PATH, "content": "import unittest\n"})),
            ("edit_file", json!({"path": ".missions/config.toml", "old": "[", "new": "["})),
            ("repo_map", json!({"path": ".missions"})),
            (
                "run_command",
                json!({"command": "cat .missions/*/acceptance/A1/tests/*.py; find . -name 'test_acceptance*'; ls -R .missions; grep -r AcceptanceSlug . 2>/dev/null"}),
            ),
        ])),
        // Then the work, as in the story.
        1 => Some(Turn::calls(vec![
            ("write_file", json!({"path": "textkit/slug.py", "content": SLUG_BUGGY})),
            ("write_file", json!({"path": "tests/test_slug.py", "content": WEAK_TEST})),
        ])),
        _ => Some(handoff("Added slugify.", json!([]))),
    };
    let reviewer_reads = "cat .missions/*/acceptance/A1/tests/test_acceptance_slug.py";
    let base = story(|_| None, snoop);
    let script: missions_tests::script::Script = std::sync::Arc::new(move |call: &Call| {
        if call.role == ScriptRole::Reviewer && call.first_line.starts_with("Review feature F1 ") && call.turn == 0 {
            return Turn::call("run_command", json!({"command": reviewer_reads}));
        }
        base(call)
    });
    let model = ScriptedModel::start(script, Duration::ZERO).await;
    let (_dir, _id) = run_slugify(&model, "", &["--approve", "--accept"], 0).await;
    let snooped =
        first_call(&model, |c| c.role == ScriptRole::Worker && c.first_line.starts_with("Feature F1:") && c.turn == 1)
            .expect("the worker's tools answered");
    assert_eq!(snooped.results.len(), 7);
    for (i, (text, _)) in snooped.results.iter().enumerate() {
        assert!(!text.contains("AcceptanceSlug"), "tool call {i} showed the acceptance test:\n{text}");
    }
    let (write, refused) = &snooped.results[3];
    assert!(*refused && write.contains("acceptance"), "writing at the test's path is refused: {write}");
    let (listed, listing_refused) = &snooped.results[0];
    assert!(*listing_refused && listed.contains("hidden"), ".missions/ is hidden from workers: {listed}");
    let reviewed = first_call(&model, |c| {
        c.role == ScriptRole::Reviewer && c.first_line.starts_with("Review feature F1 ") && c.turn == 1
    })
    .expect("the reviewer's command answered");
    assert!(reviewed.results[0].0.contains("class AcceptanceSlug"), "{}", reviewed.results[0].0);
}

#[tokio::test]
async fn a_wrong_acceptance_test_is_the_users_to_waive() {
    let model = ScriptedModel::start(story(|_| None, |_| None), Duration::ZERO).await;
    let (dir, id) = run_slugify(&model, "", &[], 3).await;
    let output = missions_async(dir.path(), &["waive", &id, "A1", "--reason", "it pins the wrong casing"]).await;
    // Applied; the mission still waits at its plan gate (exit 3, SPEC §6).
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let contract = read_json(&mission_dir(dir.path(), &id).join("contract.json"));
    let a1 = contract["assertions"].as_array().unwrap().iter().find(|a| a["id"] == "A1").unwrap().clone();
    assert_eq!(a1["status"], "waived", "{a1}");
    let waived = events(dir.path(), &id).into_iter().find(|e| e["type"] == "assertion_waived").expect("recorded");
    assert_eq!(waived["reason"], "it pins the wrong casing");
    let refused = missions_async(dir.path(), &["waive", &id, "A1", "--reason", " "]).await;
    assert_eq!(refused.status.code(), Some(2), "a waiver needs a reason: {}", stderr(&refused));
}

#[tokio::test]
async fn the_user_adds_an_assertion_and_the_waiting_milestone_is_validated_again() {
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::ZERO).await;
    let (dir, id) = run_slugify(&model, "", &["--approve"], 3).await;
    let add = |args: &[&str]| {
        let mut all = vec!["add-assertion", id.as_str()];
        all.extend_from_slice(args);
        all.iter().map(|s| s.to_string()).collect::<Vec<String>>()
    };
    let run = |args: Vec<String>| {
        let dir = dir.path().to_owned();
        async move { missions_async(&dir, &args.iter().map(String::as_str).collect::<Vec<_>>()).await }
    };
    // Refused, with nothing recorded: an id in use, a milestone not in the plan.
    let clash = run(add(&["A1", "--milestone", "M1", "--description", "d", "--command", "true"])).await;
    assert_eq!(clash.status.code(), Some(2), "an id in use: {}", stderr(&clash));
    let nowhere = run(add(&["A9", "--milestone", "M7", "--description", "d", "--command", "true"])).await;
    assert_eq!(nowhere.status.code(), Some(2), "{}", stderr(&nowhere));
    // Added to M1, which waits: M1 is validated again with it, and waits again.
    let output = run(add(&[
        "A9",
        "--milestone",
        "M1",
        "--description",
        "the core still shouts",
        "--command",
        "python3 -m unittest tests.test_core",
    ]))
    .await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let events = events(dir.path(), &id);
    let added = events.iter().position(|e| e["type"] == "assertions_added" && e["by"] == "user").expect("recorded");
    assert!(
        events[added..]
            .iter()
            .any(|e| e["type"] == "assertion_checked" && e["assertion"] == "A9" && e["status"] == "passing"),
        "A9 was checked"
    );
    let mission = read_json(&mission_dir(dir.path(), &id).join("mission.json"));
    assert_eq!(mission["state"], "awaiting_acceptance", "{mission}");
}
