//! Issue "nothing lost": the user's work survives every crash, and no crash, lock or refused
//! command strands a mission. Each test breaks one promise of SPEC §1, §3 and §8 on purpose.

mod common;

use std::time::Duration;

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
        slugify_script(Story { buggy_first: true, never_fixed: false }),
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

#[tokio::test]
async fn a_file_saved_during_a_conflict_pause_stays_and_is_committed_as_the_users() {
    // An editor (another process) holds unsaved changes to textkit/core.py; the CLI drives.
    let script = with(|call| match (call.role, call.first_line.starts_with("Feature F1:"), call.turn) {
        (ScriptRole::Worker, true, 0) => Some(Turn::calls(vec![
            ("write_file", json!({"path": "textkit/slug.py", "content": SLUG_GOOD})),
            ("write_file", json!({"path": "tests/test_slug.py", "content": SLUG_TEST})),
            ("edit_file", json!({"path": "textkit/core.py", "old": "Upper-case text.", "new": "Upper-case the text."})),
        ])),
        _ => None,
    });
    let model = ScriptedModel::start(script, Duration::ZERO).await;
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
    let dir = project_for(&model, "");
    let output = missions_async(dir.path(), &["run", "--text", "Add slugify", "--approve"]).await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let id = mission_id(dir.path());
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
