//! Issue "nothing lost": the user's work survives every crash, and no crash, lock or refused
//! command strands a mission. Each test breaks one promise of SPEC §1, §3 and §8 on purpose.

mod common;

use std::time::Duration;

use common::editor::Editor;
use common::project::*;
use missions_tests::script::{ScriptRole, ScriptedModel, Turn};
use serde_json::{Value, json};

const USER_EDIT: &str = "def shout(text):\n    \"\"\"Upper-case text, loudly.\"\"\"\n    return text.upper() + '!'\n";
const USER_NOTES: &str = "my notes, never committed anywhere\n";

/// Starts the slugify mission in `dir`, kills the driver with SIGKILL once `point` holds, and
/// returns the mission id.
async fn kill_at(dir: &std::path::Path, point: impl Fn(&Value) -> bool) -> String {
    let mut command = missions_command(dir, &["run", "--text", "Add slugify", "--approve", "--accept"]);
    command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut driver = tokio::process::Command::from(command).spawn().unwrap();
    let id = wait_for_event(dir, point).await;
    driver.start_kill().unwrap();
    driver.wait().await.unwrap();
    id
}

/// Makes the user's edits of a dead mission's workspace: a tracked file the mission never
/// touches, and a new untracked file.
fn user_edits(dir: &std::path::Path) {
    std::fs::write(dir.join("textkit/core.py"), USER_EDIT).unwrap();
    std::fs::write(dir.join("notes.txt"), USER_NOTES).unwrap();
}

fn assert_user_work_intact(dir: &std::path::Path, context: &str) {
    assert_eq!(std::fs::read_to_string(dir.join("textkit/core.py")).unwrap(), USER_EDIT, "{context}");
    assert_eq!(std::fs::read_to_string(dir.join("notes.txt")).unwrap(), USER_NOTES, "{context}");
}

#[tokio::test]
async fn a_resume_after_a_crash_never_destroys_the_users_edits() {
    let model = ScriptedModel::start(
        slugify_script(Story { buggy_first: true, ..Story::default() }),
        Duration::from_millis(30),
    )
    .await;
    type Point = (&'static str, fn(&Value) -> bool);
    let points: [Point; 4] = [
        ("mid-feature", |e| e["type"] == "run_started" && e["feature"] == "F1"),
        ("validating", |e| e["type"] == "assertion_checked"),
        ("at the boundary", |e| {
            e["type"] == "run_started" && e["run_id"].as_str().is_some_and(|r| r.starts_with("boundary"))
        }),
        ("mid-correction", |e| e["type"] == "run_started" && e["feature"] == "F1-fix1"),
    ];
    for (name, point) in points {
        let dir = project_for(&model, "");
        let id = kill_at(dir.path(), point).await;
        user_edits(dir.path());

        let output = missions_async(dir.path(), &["resume", &id]).await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{name}: a resume over the user's edits is refused: {}",
            stderr(&output)
        );
        let said = stderr(&output);
        assert!(said.contains("textkit/core.py") && said.contains("notes.txt"), "{name}: names the files: {said}");
        assert_user_work_intact(dir.path(), name);

        // Once the user has moved their work aside, the mission goes on and completes.
        git(dir.path(), &["stash", "push", "-u", "-q", "--", "textkit/core.py", "notes.txt"]);
        let output = missions_async(dir.path(), &["resume", &id, "--accept"]).await;
        assert_eq!(output.status.code(), Some(0), "{name}: {}", stderr(&output));
        git(dir.path(), &["stash", "pop", "-q"]);
        assert_user_work_intact(dir.path(), name);
    }
}

#[tokio::test]
async fn a_reset_saves_the_whole_tree_under_a_numbered_ref_and_says_so() {
    // Killed after the worker wrote its files: the resume restarts F1 from its base, and the
    // worker's unfinished files (the mission's own) are saved before they go.
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::from_millis(30)).await;
    let dir = project_for(&model, "");
    // The second file is recorded after the first was written.
    let id =
        kill_at(dir.path(), |e| e["type"] == "work_recorded" && e["files"][0]["path"] == "tests/test_slug.py").await;
    assert!(dir.path().join("textkit/slug.py").exists(), "the worker's file is in the tree");
    let output = missions_async(dir.path(), &["resume", &id, "--accept"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let saved = format!("refs/missions/{id}/saved/1");
    assert!(stderr(&output).contains(&saved), "the resume says where it saved the tree: {}", stderr(&output));
    assert!(git(dir.path(), &["show", &format!("{saved}:textkit/slug.py")]).contains("def slugify"));
}

/// The slugify story whose F1 worker also edits `textkit/core.py`.
fn edits_core_py() -> missions_tests::script::Script {
    with(|call| match (call.role, call.first_line.starts_with("Feature F1:"), call.turn) {
        (ScriptRole::Worker, true, 0) => Some(Turn::calls(vec![
            ("write_file", json!({"path": "textkit/slug.py", "content": SLUG_GOOD})),
            ("write_file", json!({"path": "tests/test_slug.py", "content": SLUG_TEST})),
            ("edit_file", json!({"path": "textkit/core.py", "old": "Upper-case text.", "new": "Upper-case the text."})),
        ])),
        _ => None,
    })
}

#[tokio::test]
async fn a_language_server_lists_unsaved_buffers_and_a_cli_driver_respects_them() {
    let model = ScriptedModel::start(edits_core_py(), Duration::ZERO).await;
    let dir = project_for(&model, "");
    let mut editor = Editor::start(dir.path());
    editor.initialize(dir.path());
    let uri = format!("file://{}", dir.path().join("textkit/core.py").display());
    let text = std::fs::read_to_string(dir.path().join("textkit/core.py")).unwrap();
    editor.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text}}),
    );
    editor.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"text": "# typing, not saved\n"}]}),
    );
    // The list appears once the change is processed; a request round trip orders it.
    editor.request("missions/ping", json!({}));
    let listed = dir.path().join(".missions/editors").join(format!("{}.json", editor.child.id()));
    let list = read_json(&listed);
    assert_eq!(list["paths"], json!(["textkit/core.py"]), "{list}");

    let output = missions_async(dir.path(), &["run", "--text", "Add slugify", "--approve"]).await;
    assert_eq!(output.status.code(), Some(1), "paused for the conflict: {}", stderr(&output));
    assert!(stderr(&output).contains("textkit/core.py has unsaved changes"), "{}", stderr(&output));
    assert_eq!(std::fs::read_to_string(dir.path().join("textkit/core.py")).unwrap(), text, "not written over");

    editor.notify("textDocument/didSave", json!({"textDocument": {"uri": uri}}));
    editor.request("missions/ping", json!({}));
    assert_eq!(read_json(&listed)["paths"], json!([]));
    editor.stop();
    assert!(!listed.exists(), "the list goes with the editor");
}

#[tokio::test]
async fn a_file_saved_during_a_conflict_pause_stays_and_is_committed_as_the_users() {
    // An editor (another process) holds unsaved changes to textkit/core.py; the CLI drives.
    let model = ScriptedModel::start(edits_core_py(), Duration::ZERO).await;
    let dir = project_for(&model, "");
    let editor = std::process::Command::new("sleep").arg("600").spawn().unwrap();
    let editors = dir.path().join(".missions/editors");
    std::fs::create_dir_all(&editors).unwrap();
    std::fs::write(
        editors.join(format!("{}.json", editor.id())),
        json!({"pid": editor.id(), "paths": ["textkit/core.py"]}).to_string(),
    )
    .unwrap();
    let output = missions_async(dir.path(), &["run", "--text", "Add slugify", "--approve"]).await;
    assert_eq!(output.status.code(), Some(1), "paused for the conflict: {}", stderr(&output));
    let id = mission_id(dir.path());
    let mission = read_json(&dir.path().join(".missions").join(&id).join("mission.json"));
    assert_eq!(mission["pause_reason"], "conflict", "{mission}");
    assert!(stderr(&output).contains("textkit/core.py"), "{}", stderr(&output));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("textkit/core.py")).unwrap(),
        "def shout(text):\n    \"\"\"Upper-case text.\"\"\"\n    return text.upper()\n",
        "the worker never wrote over the unsaved buffer"
    );

    // The user saves the buffer and closes the editor, then resumes.
    std::fs::write(dir.path().join("textkit/core.py"), USER_EDIT).unwrap();
    let mut editor = editor;
    editor.kill().unwrap();
    editor.wait().unwrap();
    let output = missions_async(dir.path(), &["resume", &id, "--accept"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let subjects = git(dir.path(), &["log", "--format=%s", &format!("main..missions/{id}")]);
    assert!(subjects.lines().any(|s| s == "user: textkit/core.py"), "{subjects}");
    let user_commit = git(dir.path(), &["log", "--format=%H", "--grep=^user: ", &format!("missions/{id}")]);
    let trailers = git(dir.path(), &["log", "-1", "--format=%(trailers:only,unfold)", user_commit.trim()]);
    assert!(trailers.contains(&format!("Mission-Id: {id}")), "{trailers}");
    let core = std::fs::read_to_string(dir.path().join("textkit/core.py")).unwrap();
    assert!(core.contains("loudly"), "the user's saved text stays: {core}");
}

#[tokio::test]
async fn refused_gate_commands_change_nothing() {
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::ZERO).await;
    let (dir, id) = run_slugify(&model, "", &["--approve"], 3).await;
    std::fs::write(dir.path().join("notes.txt"), USER_NOTES).unwrap();
    let before = events(dir.path(), &id).len();
    for args in [
        vec!["accept", id.as_str(), "M1"],
        vec!["reject", id.as_str(), "M1", "--feedback", "shorter docstrings"],
        vec!["resume", id.as_str()],
    ] {
        let output = missions_async(dir.path(), &args).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", stderr(&output));
        assert!(stderr(&output).contains("notes.txt"), "{args:?}: {}", stderr(&output));
        assert_eq!(events(dir.path(), &id).len(), before, "{args:?} recorded something although it was refused");
    }
    std::fs::remove_file(dir.path().join("notes.txt")).unwrap();
    let output = missions_async(dir.path(), &["accept", &id, "M1"]).await;
    assert_eq!(output.status.code(), Some(3), "the same accept now goes through: {}", stderr(&output));
}

#[tokio::test]
async fn commands_a_dead_driver_started_are_killed_before_the_mission_goes_on() {
    let marker = format!("orphan-marker-{}", std::process::id());
    let command = format!("(while :; do sleep 0.05; done) & sleep 30; echo {marker}");
    let script = with(move |call| match (call.role, call.first_line.starts_with("Feature F1:"), call.turn) {
        (ScriptRole::Worker, true, 0) => Some(Turn::call("run_command", json!({"command": command, "timeout_s": 3}))),
        (ScriptRole::Worker, true, 1) => Some(write_slugify()),
        (ScriptRole::Worker, true, _) => Some(handoff("Added slugify.", json!([]))),
        _ => None,
    });
    let model = ScriptedModel::start(script, Duration::ZERO).await;
    let dir = project_for(&model, "");
    let alive = |marker: &str| -> usize {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                std::fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
            })
            .count()
    };
    let mut command = missions_command(dir.path(), &["run", "--text", "Add slugify", "--approve", "--accept"]);
    command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut driver = tokio::process::Command::from(command).spawn().unwrap();
    let started = std::time::Instant::now();
    while alive(&marker) == 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "the command never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    driver.start_kill().unwrap();
    driver.wait().await.unwrap();
    let id = mission_id(dir.path());
    let output = missions_async(dir.path(), &["resume", &id, "--accept"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stderr(&output).contains("left running by a driver that died"), "{}", stderr(&output));
    assert_eq!(alive(&marker), 0, "a command of the dead driver outlived the resume");
}

#[tokio::test]
async fn a_stale_git_lock_is_reported_by_doctor_and_removed_before_driving() {
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::ZERO).await;
    let (dir, id) = run_slugify(&model, "", &["--approve"], 3).await;
    let lock = dir.path().join(".git/index.lock");
    std::fs::write(&lock, "").unwrap();
    let output = missions_async(dir.path(), &["doctor"]).await;
    assert_eq!(output.status.code(), Some(1), "doctor finds something to fix");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("index.lock") && said.contains("died"), "{said}");
    let output = missions_async(dir.path(), &["accept", &id, "M1"]).await;
    assert_eq!(output.status.code(), Some(3), "drives on to the next gate: {}", stderr(&output));
    assert!(!lock.exists());
    assert!(stderr(&output).contains("index.lock"), "says what it removed: {}", stderr(&output));
}

#[tokio::test]
async fn an_acceptance_recorded_just_before_a_crash_is_carried_through() {
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::ZERO).await;
    let (dir, id) = run_slugify(&model, "", &["--approve"], 3).await;
    // The crash: the acceptance is durable, nothing after it is.
    let mission_dir = dir.path().join(".missions").join(&id);
    let (mut store, _) = missions_core::store::MissionStore::open(&mission_dir).unwrap();
    store.append(missions_core::store::Event::MilestoneAccepted { milestone: "M1".into() }).unwrap();
    drop(store);
    let output = missions_async(dir.path(), &["status", &id, "--json"]).await;
    let status: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["state"], "running", "{status}");
    let output = missions_async(dir.path(), &["resume", &id]).await;
    assert_eq!(output.status.code(), Some(3), "on to M2's gate: {}", stderr(&output));
    let status: Value =
        serde_json::from_slice(&missions_async(dir.path(), &["status", &id, "--json"]).await.stdout).unwrap();
    assert_eq!(status["state"], "awaiting_acceptance");
    assert_eq!(status["plan"]["milestones"][1]["status"], "validated", "{status}");
}

#[tokio::test]
async fn a_project_check_too_long_for_an_argument_still_runs() {
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::ZERO).await;
    let long_check = format!(": '{}'", "x".repeat(200 * 1024));
    let dir = project_for(&model, &format!("[mission]\nchecks = [\"{long_check}\"]\n"));
    let output = missions_async(dir.path(), &["run", "--text", "Add slugify", "--approve"]).await;
    assert_eq!(output.status.code(), Some(3), "validated and waiting, not stuck: {}", stderr(&output));
}

#[tokio::test]
async fn a_mission_nothing_drives_is_shown_as_interrupted() {
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::from_millis(30)).await;
    let dir = project_for(&model, "");
    let id = kill_at(dir.path(), |e| e["type"] == "run_started" && e["feature"] == "F1").await;
    let output = missions_async(dir.path(), &["status", &id]).await;
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("interrupted") && said.contains(&format!("missions resume {id}")), "{said}");
    let status: Value =
        serde_json::from_slice(&missions_async(dir.path(), &["status", &id, "--json"]).await.stdout).unwrap();
    assert_eq!(status["interrupted"], true);
    let doctor = missions_async(dir.path(), &["doctor"]).await;
    assert!(String::from_utf8_lossy(&doctor.stdout).contains("interrupted"));
    // Deleted projections come back with the next status.
    std::fs::remove_file(dir.path().join(".missions").join(&id).join("mission.json")).unwrap();
    missions_async(dir.path(), &["status"]).await;
    assert!(dir.path().join(".missions").join(&id).join("mission.json").exists());
}

#[tokio::test]
async fn a_log_that_lost_events_never_resets_the_branch() {
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::ZERO).await;
    let (dir, id) = run_slugify(&model, "", &["--approve", "--accept"], 0).await;
    let branch = format!("missions/{id}");
    let head = git(dir.path(), &["rev-parse", &branch]);
    let log = dir.path().join(".missions").join(&id).join("events.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    // Cut back to just after F1 started: M1's commits and its acceptance are "lost".
    let lines: Vec<&str> = text.lines().collect();
    let keep = lines.iter().position(|l| l.contains("\"feature_started\"")).unwrap() + 1;
    for projection_survives in [true, false] {
        std::fs::write(&log, lines[..keep].join("\n") + "\n").unwrap();
        let mission_json = dir.path().join(".missions").join(&id).join("mission.json");
        if !projection_survives {
            let _ = std::fs::remove_file(&mission_json);
        }
        let output = missions_async(dir.path(), &["resume", &id]).await;
        assert_ne!(output.status.code(), Some(0), "{}", stderr(&output));
        assert!(stderr(&output).contains("lost"), "{projection_survives}: {}", stderr(&output));
        assert_eq!(git(dir.path(), &["rev-parse", &branch]), head, "the branch is where it was");
    }
}

#[tokio::test]
async fn configuration_and_workspace_mistakes_are_clear_errors() {
    let dir = project();
    std::fs::create_dir_all(dir.path().join(".missions")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join(".missions/config.toml")).unwrap();
    let output = missions_async(dir.path(), &["status"]).await;
    assert!(output.status.code().is_some(), "not killed for memory");
    let output = missions_async(dir.path(), &["backlog"]).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("config.toml") && stderr(&output).contains("not a regular file"),
        "{}",
        stderr(&output)
    );

    let output = std::process::Command::new(missions_tests::missions_bin())
        .args(["status", "--workspace", "/etc/passwd"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

#[tokio::test]
async fn a_users_commit_the_engine_made_but_did_not_record_is_recognised() {
    // A crash between committing the user's changes and recording it leaves a `user:` commit
    // of this mission that the log does not know: it is recorded, not called lost events.
    let model = ScriptedModel::start(slugify_script(Story::default()), Duration::ZERO).await;
    let (dir, id) = run_slugify(&model, "", &["--approve"], 3).await;
    std::fs::write(dir.path().join("notes.txt"), USER_NOTES).unwrap();
    git(dir.path(), &["add", "notes.txt"]);
    git(dir.path(), &["commit", "-q", "-m", "user: notes.txt", "-m", &format!("Mission-Id: {id}")]);
    let output = missions_async(dir.path(), &["accept", &id, "M1"]).await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(events(dir.path(), &id).iter().any(|e| e["type"] == "user_changes_committed"));
    assert_eq!(std::fs::read_to_string(dir.path().join("notes.txt")).unwrap(), USER_NOTES);
}
