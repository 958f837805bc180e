//! Each rule of SPEC §2 broken on purpose, and seen refused: hostile tool calls, a lying
//! worker, a budget cap, a validator that edits the tree, two writers, control from another
//! process; and the git gates of SPEC §3 (dirty tree, reject, rollback).

mod common;

use std::time::{Duration, Instant};

use common::project::*;
use missions_tests::script::{ScriptRole, ScriptedModel, Turn};
use serde_json::{Value, json};

#[tokio::test]
async fn a_worker_that_claims_a_command_it_never_ran_gets_a_handoff_mismatch() {
    let script = with(|call| match (call.role, call.first_line.starts_with("Feature F1:"), call.turn) {
        // Writes the files but never runs the tests, then claims it did, and claims a wrong
        // exit code for a command it did run.
        (ScriptRole::Worker, true, 0) => Some(Turn::calls(vec![
            ("write_file", json!({"path": "textkit/slug.py", "content": SLUG_GOOD})),
            ("write_file", json!({"path": "tests/test_slug.py", "content": SLUG_TEST})),
            ("run_command", json!({"command": "python3 -c 'import sys; sys.exit(4)'"})),
        ])),
        (ScriptRole::Worker, true, _) => Some(handoff(
            "Added slugify; all tests pass.",
            json!([{"command": "python3 -m unittest tests.test_slug", "exit_code": 0}, {"command": "python3 -c 'import sys; sys.exit(4)'", "exit_code": 0}]),
        )),
        _ => None,
    });
    let model = ScriptedModel::start(script, Duration::ZERO).await;
    let (dir, _) = run_slugify(&model, "", &["--approve", "--accept"], 0).await;
    let id = mission_id(dir.path());
    let findings = read_json(&dir.path().join(".missions").join(&id).join("findings.json"));
    let mismatches: Vec<&Value> =
        findings.as_array().unwrap().iter().filter(|f| f["validator"] == "handoff-mismatch").collect();
    assert_eq!(mismatches.len(), 2, "{findings}");
    assert!(
        mismatches[0]["message"]
            .as_str()
            .unwrap()
            .contains("`python3 -m unittest tests.test_slug` (exit 0), which the worker never ran")
    );
    assert!(mismatches[1]["message"].as_str().unwrap().contains("exited 0, but it exited 4"), "{}", mismatches[1]);
    assert_eq!(mismatches[0]["feature"], "F1");
    assert_eq!(mismatches[0]["status"], "open");
}

#[tokio::test]
async fn hostile_tool_calls_are_refused_and_reported_to_the_model() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "top secret").unwrap();
    let outside_path = outside.path().to_owned();
    let script = with(move |call| match (call.role, call.first_line.starts_with("Feature F1:"), call.turn) {
        (ScriptRole::Worker, true, 0) => Some(Turn::calls(vec![
            ("read_file", json!({"path": "../../etc/passwd"})),
            ("read_file", json!({"path": "escape/secret.txt"})),
            ("write_file", json!({"path": ".git/hooks/pre-commit", "content": "#!/bin/sh\necho pwned\n"})),
            ("write_file", json!({"path": ".missions/evil.json", "content": "{}"})),
            ("write_file", json!({"path": "escape/planted.txt", "content": "x"})),
            ("run_command", json!({"command": "echo key=[$MISSIONS_TEST_KEY] other=[$ANTHROPIC_API_KEY]"})),
            ("run_command", json!({"command": format!("cat {}/secret.txt; echo {}", outside_path.display(), KEY)})),
            ("run_command", json!({"command": "sleep 60", "timeout_s": 1})),
            ("run_command", json!({"command": "yes flood | head -c 3000000; echo END"})),
            ("no_such_tool", json!({})),
            ("read_file", json!({"wrong": "shape"})),
        ])),
        (ScriptRole::Worker, true, 1) => Some(write_slugify()),
        (ScriptRole::Worker, true, _) => Some(handoff("Added slugify.", json!([]))),
        _ => None,
    });
    let model = ScriptedModel::start(script, Duration::ZERO).await;
    let dir = project();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("escape")).unwrap();
    git(dir.path(), &["add", "escape"]);
    git(dir.path(), &["commit", "-q", "-m", "a link out"]);
    configure(dir.path(), &model.config_toml(""));
    let started = Instant::now();
    let output = missions_async(dir.path(), &["run", "--text", "Add slugify", "--approve", "--accept"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(started.elapsed() < Duration::from_secs(40), "the endless command was cut off");

    let calls = model.calls();
    let (_, _) =
        calls.iter().find(|(c, _)| c.role == ScriptRole::Worker && c.turn == 1).expect("the worker's second turn");
    let results: Vec<(String, bool)> =
        calls.iter().find(|(c, _)| c.role == ScriptRole::Worker && c.turn == 1).unwrap().0.results.clone();
    assert_eq!(results.len(), 11);
    let expect = |index: usize, is_error: bool, needle: &str| {
        let (text, error) = &results[index];
        assert_eq!(*error, is_error, "result {index}: {text}");
        assert!(text.contains(needle), "result {index} lacks {needle:?}: {}", &text[..text.len().min(400)]);
    };
    expect(0, true, "climbs out of the workspace");
    expect(1, true, "outside the workspace through a symbolic link");
    expect(2, true, "under .git/ or .missions/");
    expect(3, true, "under .git/ or .missions/");
    expect(4, true, "outside the workspace through a symbolic link");
    expect(5, false, "key=[] other=[]");
    expect(6, false, "[REDACTED:");
    expect(7, false, "timed out after 1 s");
    expect(8, false, "bytes cut");
    expect(8, false, "END");
    expect(9, true, "is not a tool of this run");
    expect(10, true, "invalid input for read_file");
    assert!(!results[6].0.contains(KEY));
    assert!(results[8].0.len() < 70_000);

    assert!(!dir.path().join(".git/hooks/pre-commit").exists());
    assert!(!dir.path().join(".missions/evil.json").exists());
    assert!(!outside.path().join("planted.txt").exists());
    let id = mission_id(dir.path());
    for entry in std::fs::read_dir(dir.path().join(".missions").join(&id).join("transcripts")).unwrap() {
        assert!(!std::fs::read_to_string(entry.unwrap().path()).unwrap().contains(KEY));
    }
}

#[tokio::test]
async fn a_budget_cap_pauses_before_the_call_that_would_pass_it_and_raising_it_resumes() {
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::ZERO).await;
    let dir = project();
    let config = |cap: u64| {
        model
            .config_toml(&format!("[budget]\nmax_tokens = {cap}\n"))
            .replace("max_retries = 0", "max_retries = 0\nmax_output_tokens = 1000")
    };
    configure(dir.path(), &config(9_000));
    let output = missions_async(dir.path(), &["run", "--text", "Add slugify", "--approve", "--accept"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let id = mission_id(dir.path());
    let mission = read_json(&dir.path().join(".missions").join(&id).join("mission.json"));
    assert_eq!(mission["state"], "paused");
    assert_eq!(mission["pause_reason"], "budget");
    let used = mission["budget"]["used_tokens"].as_u64().unwrap();
    assert!(used > 0 && used <= 9_000, "the providers' total stays within the cap: {used}");
    assert!(mission["detail"].as_str().unwrap().contains("cap of 9000 tokens"), "{mission}");

    configure(dir.path(), &config(10_000_000));
    let output = missions_async(dir.path(), &["resume", &id, "--accept"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let mission = read_json(&dir.path().join(".missions").join(&id).join("mission.json"));
    assert_eq!(mission["state"], "completed");
    assert_eq!(mission["budget"]["max_tokens"], 10_000_000);
}

#[tokio::test]
async fn a_validator_that_edits_the_tree_is_reverted_and_reported() {
    let script = with(|call| match (call.role, call.turn) {
        (ScriptRole::Reviewer, 0) if call.first_line.starts_with("Review feature F1 ") => Some(Turn::call(
            "run_command",
            json!({"command": "echo '# reviewer was here' >> textkit/core.py && touch stray.txt"}),
        )),
        _ => None,
    });
    let model = ScriptedModel::start(script, Duration::ZERO).await;
    let (dir, _) = run_slugify(&model, "", &["--approve", "--accept"], 0).await;
    let id = mission_id(dir.path());
    let findings = read_json(&dir.path().join(".missions").join(&id).join("findings.json"));
    let changed = findings
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["message"].as_str().unwrap_or("").contains("changed the working tree"))
        .expect("a finding");
    assert_eq!(changed["validator"], "review");
    assert!(
        changed["message"].as_str().unwrap().contains("textkit/core.py")
            && changed["message"].as_str().unwrap().contains("stray.txt")
    );
    assert!(!std::fs::read_to_string(dir.path().join("textkit/core.py")).unwrap().contains("reviewer was here"));
    assert!(!dir.path().join("stray.txt").exists());
    assert!(
        !git(dir.path(), &["log", "-p", &format!("main..missions/{id}")]).contains("reviewer was here"),
        "never committed"
    );
}

#[tokio::test]
async fn one_writer_per_workspace_and_control_from_another_process_through_the_inbox() {
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::from_millis(150)).await;
    let dir = project_for(&model, "");
    let mut driver = missions_command(dir.path(), &["run", "--text", "Add slugify", "--approve", "--accept"]);
    driver.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    let driver = tokio::process::Command::from(driver).spawn().unwrap();
    let id = wait_for_event(dir.path(), |e| e["type"] == "feature_started").await;

    // SPEC §2 rule 2: a second mission in the same workspace is refused while one is driven.
    let second = missions_async(dir.path(), &["run", "--text", "Something else"]).await;
    assert_eq!(second.status.code(), Some(2), "{}", stderr(&second));
    assert!(stderr(&second).contains("another mission is being driven in this workspace"), "{}", stderr(&second));

    // SPEC §2 rule 8: pause from another process reaches the live driver within seconds.
    let asked = Instant::now();
    let pause = missions_async(dir.path(), &["pause", &id]).await;
    assert_eq!(pause.status.code(), Some(0), "{}", stderr(&pause));
    assert!(stderr(&pause).contains("it applied the command"), "the driver acknowledged it: {}", stderr(&pause));
    let output = driver.wait_with_output().await.unwrap();
    assert!(asked.elapsed() < Duration::from_secs(10));
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stderr));
    let mission = read_json(&dir.path().join(".missions").join(&id).join("mission.json"));
    assert_eq!((mission["state"].as_str(), mission["pause_reason"].as_str()), (Some("paused"), Some("user")));

    // With no live driver, control applies directly; resume rebuilds and finishes.
    let output = missions_async(dir.path(), &["resume", &id]).await;
    assert_eq!(output.status.code(), Some(0), "auto-accept was recorded by run --accept: {}", stderr(&output));
    let subjects = git(dir.path(), &["log", "--format=%s", &format!("main..missions/{id}")]);
    assert_eq!(
        subjects.lines().filter(|s| s.starts_with("F1:")).count(),
        1,
        "the interrupted feature was not committed twice: {subjects}"
    );
}

#[tokio::test]
async fn a_dirty_tree_refuses_to_start_and_names_the_files() {
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::ZERO).await;
    let dir = project_for(&model, "");
    std::fs::write(dir.path().join("textkit/core.py"), "changed").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let output = missions_async(dir.path(), &["run", "--text", "Add slugify"]).await;
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("textkit/core.py") && text.contains("notes.txt"), "{text}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("textkit/core.py")).unwrap(),
        "changed",
        "the user's work is untouched"
    );
    assert!(model.calls().is_empty());
    assert_eq!(missions_async(dir.path(), &["status", "nope"]).await.status.code(), Some(2));
    assert_eq!(missions_async(dir.path(), &["approve", "nope"]).await.status.code(), Some(2));
}

#[tokio::test]
async fn reject_adds_a_corrective_feature_and_rollback_keeps_the_dropped_commits() {
    // The boundary reads the user's feedback and decides the correction and what it claims.
    let script = with(|call| match call.role {
        ScriptRole::Boundary
            if call.first_line.contains("(round 2 of") && call.first_message.contains("Also strip leading dashes") =>
        {
            Some(Turn::call(
                "decide_milestone",
                json!({"decision": "correct", "notes": "the user wants leading dashes stripped",
                       "corrections": [{"id": "M1-R1", "title": "strip leading dashes", "description": "The user's feedback: Also strip leading dashes", "assertions": ["A1"]}]}),
            ))
        }
        _ => None,
    });
    let model = ScriptedModel::start(script, Duration::ZERO).await;
    let dir = project_for(&model, "");
    assert_eq!(missions_async(dir.path(), &["run", "--text", "Add slugify", "--approve"]).await.status.code(), Some(3));
    let id = mission_id(dir.path());
    let mission_dir = dir.path().join(".missions").join(&id);
    let base = read_json(&mission_dir.join("mission.json"))["base_commit"].as_str().unwrap().to_owned();

    let output = missions_async(dir.path(), &["reject", &id, "M1", "--feedback", "Also strip leading dashes"]).await;
    assert_eq!(output.status.code(), Some(3), "back at M1's gate after the correction: {}", stderr(&output));
    let plan = read_json(&mission_dir.join("plan.json"));
    let feature = &plan["milestones"][0]["features"][1];
    assert_eq!(feature["id"], "M1-R1");
    assert!(feature["description"].as_str().unwrap().contains("Also strip leading dashes"));
    assert_eq!(feature["assertions"], json!(["A1"]), "it claims what the boundary decided, not every assertion");
    let subjects = git(dir.path(), &["log", "--format=%s", &format!("main..missions/{id}")]);
    assert_eq!(subjects.matches("milestone M1").count(), 2, "history is not rewritten: {subjects}");

    // Rollback refuses foreign changes, then moves the branch back and keeps the commits.
    let head = git(dir.path(), &["rev-parse", "HEAD"]).trim().to_owned();
    std::fs::write(dir.path().join("textkit/core.py"), "user edit").unwrap();
    assert_eq!(missions_async(dir.path(), &["rollback", &id, "M1"]).await.status.code(), Some(2));
    git(dir.path(), &["checkout", "--", "textkit/core.py"]);
    let output = missions_async(dir.path(), &["rollback", &id, "M1"]).await;
    assert_eq!(output.status.code(), Some(1), "paused: {}", stderr(&output));
    assert_eq!(git(dir.path(), &["rev-parse", "HEAD"]).trim(), base);
    assert_eq!(git(dir.path(), &["rev-parse", &format!("refs/missions/{id}/rolled-back/1")]).trim(), head);
    let mission = read_json(&mission_dir.join("mission.json"));
    assert_eq!((mission["state"].as_str(), mission["pause_reason"].as_str()), (Some("paused"), Some("user")));
    let plan = read_json(&mission_dir.join("plan.json"));
    assert!(plan["milestones"][0]["features"].as_array().unwrap().iter().all(|f| f["status"] == "pending"));

    let output = missions_async(dir.path(), &["resume", &id, "--accept"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

/// The commit subjects of the mission branch and the statuses a finished mission ends with.
fn final_state(dir: &std::path::Path, id: &str) -> (Vec<String>, Value, Value) {
    let subjects: Vec<String> =
        git(dir, &["log", "--format=%s", &format!("main..missions/{id}")]).lines().map(str::to_owned).collect();
    let mission_dir = dir.join(".missions").join(id);
    let plan = read_json(&mission_dir.join("plan.json"));
    let contract = read_json(&mission_dir.join("contract.json"));
    let statuses = |v: &Value, key: &str| -> Value {
        v[key]
            .as_array()
            .map(|a| a.iter().map(|x| json!([x["id"], x["status"]])).collect::<Vec<_>>().into())
            .unwrap_or(Value::Null)
    };
    (subjects, statuses(&plan, "milestones"), statuses(&contract, "assertions"))
}

#[tokio::test]
async fn kill_dash_nine_at_any_point_then_resume_reaches_the_same_final_state() {
    // The uninterrupted mission, for comparison.
    let model = ScriptedModel::start(
        slugify_script(Story { buggy_first: true, ..Story::default() }),
        Duration::from_millis(40),
    )
    .await;
    let reference = project();
    configure(reference.path(), &model.config_toml(""));
    let output = missions_async(reference.path(), &["run", "--text", "Add slugify", "--approve", "--accept"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let expected = final_state(reference.path(), &mission_id(reference.path()));

    type Point = (&'static str, fn(&Value) -> bool);
    let points: [Point; 5] = [
        ("planning", |e| e["type"] == "run_started" && e["role"] == "orchestrator"),
        ("mid-feature", |e| e["type"] == "feature_started" && e["feature"] == "F1"),
        ("validating", |e| e["type"] == "assertion_checked"),
        ("at the boundary", |e| {
            e["type"] == "run_started" && e["run_id"].as_str().is_some_and(|r| r.starts_with("boundary"))
        }),
        ("mid-correction", |e| e["type"] == "feature_started" && e["feature"] == "F1-fix1"),
    ];
    for (name, point) in points {
        let dir = project();
        configure(dir.path(), &model.config_toml(""));
        let mut command = missions_command(dir.path(), &["run", "--text", "Add slugify", "--approve", "--accept"]);
        command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        let mut driver = tokio::process::Command::from(command).spawn().unwrap();
        let id = wait_for_event(dir.path(), point).await;
        driver.start_kill().unwrap(); // SIGKILL
        driver.wait().await.unwrap();
        let events_at_kill = events(dir.path(), &id).len();

        let mut output = missions_async(dir.path(), &["resume", &id]).await;
        if output.status.code() == Some(3)
            && read_json(&dir.path().join(".missions").join(&id).join("mission.json"))["state"] == "awaiting_approval"
        {
            // `--approve` is a choice for one run (only auto-accept is recorded, SPEC §6), so
            // a mission killed while planning waits at the plan gate like any other.
            output = missions_async(dir.path(), &["approve", &id]).await;
        }
        assert_eq!(output.status.code(), Some(0), "{name}: {}", stderr(&output));
        assert_eq!(final_state(dir.path(), &id), expected, "{name}");
        let all = events(dir.path(), &id);
        assert!(all.len() > events_at_kill, "{name}");
        // Nothing recorded was lost or duplicated: the chain is whole and every feature has
        // one handoff and one commit.
        assert_eq!(all.iter().filter(|e| e["type"] == "plan_submitted").count(), 1, "{name}");
        assert!(git(dir.path(), &["status", "--porcelain"]).trim().is_empty(), "{name}");
    }
}

#[tokio::test]
async fn commands_agents_run_are_confined_by_the_operating_system() {
    // A listener in the host's network namespace: a confined command must not reach it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = with(move |call| match (call.role, call.first_line.starts_with("Feature F1:"), call.turn) {
        (ScriptRole::Worker, true, 0) => Some(Turn::calls(vec![
            ("run_command", json!({"command": "touch ../escaped-by-command.txt && echo ESCAPED"})),
            ("run_command", json!({"command": "echo '[alias]' >> .git/config && echo GIT-WRITTEN"})),
            ("run_command", json!({"command": "echo '{}' > .missions/planted.json && echo MISSIONS-WRITTEN"})),
            (
                "run_command",
                json!({"command": format!("python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2); print('HOST-REACHED')\"")}),
            ),
            (
                "run_command",
                json!({"command": "python3 -c \"import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); socket.create_connection(s.getsockname()); print('LOOPBACK-OK')\""}),
            ),
            (
                "run_command",
                json!({"command": "python3 -c \"import tempfile; f=tempfile.NamedTemporaryFile(); print('TMP-OK')\""}),
            ),
        ])),
        (ScriptRole::Worker, true, 1) => Some(write_slugify()),
        (ScriptRole::Worker, true, _) => Some(handoff("Added slugify.", json!([]))),
        _ => None,
    });
    let model = ScriptedModel::start(script, Duration::ZERO).await;
    let (dir, _) = run_slugify(&model, "", &["--approve", "--accept"], 0).await;
    let calls = model.calls();
    let results = &calls.iter().find(|(c, _)| c.role == ScriptRole::Worker && c.turn == 1).unwrap().0.results;
    let outputs: Vec<&str> = results.iter().map(|(text, _)| text.as_str()).collect();
    assert!(!outputs[0].contains("ESCAPED") && !outputs[0].starts_with("exit code 0"), "{}", outputs[0]);
    assert!(!outputs[1].contains("GIT-WRITTEN") && outputs[1].contains("Read-only file system"), "{}", outputs[1]);
    assert!(!outputs[2].contains("MISSIONS-WRITTEN"), "{}", outputs[2]);
    assert!(!outputs[3].contains("HOST-REACHED"), "{}", outputs[3]);
    assert!(outputs[4].contains("LOOPBACK-OK"), "a command's own loopback works: {}", outputs[4]);
    assert!(outputs[5].contains("TMP-OK"), "a private temporary directory is writable: {}", outputs[5]);
    assert!(listener.accept().is_err(), "nothing connected to the host listener");
    assert!(!dir.path().parent().unwrap().join("escaped-by-command.txt").exists());
    assert!(!std::fs::read_to_string(dir.path().join(".git/config")).unwrap().contains("[alias]"));
    assert!(!dir.path().join(".missions/planted.json").exists());
}

#[tokio::test]
async fn the_contract_only_grows_after_approval() {
    // At the boundary the orchestrator tries to replace A1 with a check that cannot fail,
    // then adds a new assertion for the next milestone, which is allowed.
    let script = with(|call| match (call.role, call.first_line.starts_with("Milestone M1 "), call.turn) {
        (ScriptRole::Boundary, true, 0) => Some(Turn::call(
            "decide_milestone",
            json!({"decision": "complete", "notes": "A1 is too strict",
                   "new_assertions": [{"id": "A1", "milestone": "M1", "description": "always true", "check": {"kind": "command", "command": "true"}}]}),
        )),
        (ScriptRole::Boundary, true, _) => Some(Turn::call(
            "decide_milestone",
            json!({"decision": "complete", "notes": "fine",
                   "new_assertions": [{"id": "A5", "milestone": "M2", "description": "the command rejects no argument", "check": {"kind": "command", "command": "python3 -m textkit; test $? -eq 2", "expect_exit": 0}}]}),
        )),
        _ => None,
    });
    let model = ScriptedModel::start(script, Duration::ZERO).await;
    let (dir, _) = run_slugify(&model, "", &["--approve", "--accept"], 0).await;
    let calls = model.calls();
    let refusal = &calls.iter().find(|(c, _)| c.role == ScriptRole::Boundary && c.turn == 1).unwrap().0.results[0];
    assert!(refusal.1 && refusal.0.contains("`A1` is invalid or already used"), "{}", refusal.0);
    let id = mission_id(dir.path());
    let mission_dir = dir.path().join(".missions").join(&id);
    let contract = read_json(&mission_dir.join("contract.json"));
    let a1 = contract["assertions"].as_array().unwrap().iter().find(|a| a["id"] == "A1").unwrap();
    assert_eq!(a1["check"]["command"], "python3 -m unittest tests.test_slug", "A1 was not weakened");
    let ids: Vec<&str> = contract["assertions"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["A1", "A2", "A3", "A4", "A5"], "the new assertion was added");
    // The added assertion was checked before M2 could complete.
    assert_eq!(contract["assertions"][4]["status"], "passing");
    // The lock recorded at approval is the digest of the contract as approved.
    let sha = read_json(&mission_dir.join("mission.json"))["contract_sha256"].as_str().unwrap().to_owned();
    let approved = events(dir.path(), &id).into_iter().find(|e| e["type"] == "plan_approved").unwrap();
    assert_eq!(approved["contract_sha256"], sha.as_str());
}

#[tokio::test]
async fn course_corrections_reach_the_next_worker_and_boundary() {
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::from_millis(100)).await;
    let dir = project_for(&model, "");
    let mut driver = missions_command(dir.path(), &["run", "--text", "Add slugify", "--approve", "--accept"]);
    driver.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let driver = tokio::process::Command::from(driver).spawn().unwrap();
    let id = wait_for_event(dir.path(), |e| e["type"] == "feature_started" && e["feature"] == "F1").await;
    // What the language server's missions.courseCorrect sends: a command in the inbox.
    let inbox = dir.path().join(".missions").join(&id).join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(
        inbox.join("0001-note.json"),
        r#"{"command": "course_correct", "note": "Prefer unicodedata for accents."}"#,
    )
    .unwrap();
    let output = driver.wait_with_output().await.unwrap();
    assert_eq!(output.status.code(), Some(0));
    let calls = model.calls();
    let f2 = calls.iter().find(|(c, _)| c.first_line.starts_with("Feature F2:")).unwrap();
    assert!(f2.0.system.contains("Prefer unicodedata for accents."), "the next worker got the note");
    let boundary = calls.iter().find(|(c, _)| c.role == ScriptRole::Boundary).unwrap();
    assert!(boundary.0.first_message.contains("Prefer unicodedata for accents."), "the boundary run got the note");
    let corrections = events(dir.path(), &id).into_iter().filter(|e| e["type"] == "course_correction_noted").count();
    assert_eq!(corrections, 1);
}

#[tokio::test]
async fn uncommitted_user_work_is_never_reset_away() {
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::ZERO).await;
    let dir = project_for(&model, "");
    assert_eq!(missions_async(dir.path(), &["run", "--text", "Add slugify", "--approve"]).await.status.code(), Some(3));
    let id = mission_id(dir.path());
    // While the mission waits at M1's gate the user edits a file and adds one.
    std::fs::write(dir.path().join("textkit/core.py"), "# my own fix\n").unwrap();
    std::fs::write(dir.path().join("mine.txt"), "notes").unwrap();
    // Accepting drives on, and driving may reset the tree: it refuses, naming the files.
    let output = missions_async(dir.path(), &["accept", &id]).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("textkit/core.py") && stderr(&output).contains("mine.txt"), "{}", stderr(&output));
    assert_eq!(std::fs::read_to_string(dir.path().join("textkit/core.py")).unwrap(), "# my own fix\n");
    assert!(dir.path().join("mine.txt").exists());
    // Status of a mission at a gate never touches the tree either.
    assert_eq!(missions_async(dir.path(), &["status", &id]).await.status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(dir.path().join("textkit/core.py")).unwrap(), "# my own fix\n");
}

#[tokio::test]
async fn what_a_validator_left_behind_is_saved_before_it_is_reverted() {
    let script = with(|call| match (call.role, call.turn) {
        (ScriptRole::Reviewer, 0) => {
            Some(Turn::call("run_command", json!({"command": "echo 'keep me' > reviewer-notes.txt"})))
        }
        _ => None,
    });
    let model = ScriptedModel::start(script, Duration::ZERO).await;
    let (dir, _) = run_slugify(&model, "", &["--approve", "--accept"], 0).await;
    let id = mission_id(dir.path());
    let refs = git(dir.path(), &["for-each-ref", "--format=%(refname)", &format!("refs/missions/{id}/saved/")]);
    let saved = refs.lines().next().expect("a saved ref");
    assert_eq!(git(dir.path(), &["show", &format!("{saved}:reviewer-notes.txt")]), "keep me\n");
    let findings = read_json(&dir.path().join(".missions").join(&id).join("findings.json"));
    assert!(findings.to_string().contains(saved), "the finding says where the changes are kept: {findings}");
}

#[tokio::test]
async fn a_rollback_cut_short_after_its_event_is_finished_on_the_next_open() {
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::ZERO).await;
    let dir = project_for(&model, "");
    assert_eq!(missions_async(dir.path(), &["run", "--text", "Add slugify", "--approve"]).await.status.code(), Some(3));
    let id = mission_id(dir.path());
    let mission_dir = dir.path().join(".missions").join(&id);
    let head = git(dir.path(), &["rev-parse", "HEAD"]).trim().to_owned();
    let base = read_json(&mission_dir.join("mission.json"))["base_commit"].as_str().unwrap().to_owned();
    // The crash: the event is in the log, none of its effects happened.
    {
        let (mut store, _) = missions_core::store::MissionStore::open(&mission_dir).unwrap();
        store
            .append(missions_core::store::Event::MilestoneRolledBack {
                milestone: "M1".into(),
                from_commit: head.clone(),
                to_commit: base.clone(),
                saved_ref: format!("refs/missions/{id}/rolled-back/1"),
            })
            .unwrap();
    }
    let output = missions_async(dir.path(), &["status", &id]).await;
    assert_eq!(output.status.code(), Some(0));
    let output = missions_async(dir.path(), &["pause", &id]).await;
    assert_eq!(output.status.code(), Some(2), "already paused by the finished rollback: {}", stderr(&output));
    assert_eq!(git(dir.path(), &["rev-parse", "HEAD"]).trim(), base);
    assert_eq!(git(dir.path(), &["rev-parse", &format!("refs/missions/{id}/rolled-back/1")]).trim(), head);
    let mission = read_json(&mission_dir.join("mission.json"));
    assert_eq!((mission["state"].as_str(), mission["pause_reason"].as_str()), (Some("paused"), Some("user")));
    let output = missions_async(dir.path(), &["resume", &id, "--accept"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[tokio::test]
async fn the_projects_own_checks_become_file_and_line_findings() {
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::ZERO).await;
    // The second check reports its problem only once slugify exists, so it is the mission's
    // (a problem already there on the base commit would be pre-existing).
    let check = r#"checks = ["python3 -m unittest -q", "test ! -f textkit/slug.py || echo 'textkit/core.py:2: warning: shout() shouts'"]"#;
    let dir = project_for(&model, &format!("[mission]\n{check}\n"));
    let output = missions_async(dir.path(), &["run", "--text", "Add slugify", "--approve", "--accept"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let id = mission_id(dir.path());
    let findings = read_json(&dir.path().join(".missions").join(&id).join("findings.json"));
    let found = findings
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["validator"] == "project-check")
        .expect("a project-check finding");
    assert_eq!((found["path"].as_str(), found["line"].as_u64()), (Some("textkit/core.py"), Some(2)));
    assert_eq!(found["severity"], "warning");
    assert!(found["message"].as_str().unwrap().contains("shout() shouts"));
}

#[tokio::test]
async fn cancel_ends_a_mission_for_good() {
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::ZERO).await;
    let dir = project_for(&model, "");
    assert_eq!(missions_async(dir.path(), &["run", "--text", "Add slugify"]).await.status.code(), Some(3));
    let id = mission_id(dir.path());
    let output = missions_async(dir.path(), &["cancel", &id]).await;
    assert_eq!(output.status.code(), Some(1), "cancelled exits 1: {}", stderr(&output));
    assert_eq!(read_json(&dir.path().join(".missions").join(&id).join("mission.json"))["state"], "cancelled");
    for args in [vec!["resume", id.as_str()], vec!["approve", id.as_str()], vec!["cancel", id.as_str()]] {
        assert_eq!(missions_async(dir.path(), &args).await.status.code(), Some(2), "{args:?}");
    }
}

#[tokio::test]
async fn map_prints_the_ranked_repository_map() {
    let dir = project();
    std::fs::write(dir.path().join("textkit/slug.py"), SLUG_GOOD).unwrap();
    let output = missions_async(dir.path(), &["map", "--focus", "slugify a title", "--tokens", "45"]).await;
    assert_eq!(output.status.code(), Some(0));
    let map = String::from_utf8_lossy(&output.stdout);
    assert!(map.starts_with("textkit/slug.py:\n    4│def slugify(text):"), "{map}");
    assert!(map.contains("files shown; the rest"), "{map}");
    assert_eq!(missions_async(dir.path(), &["map", "../"]).await.status.code(), Some(2));
}
