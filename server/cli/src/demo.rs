//! `missions demo`: a whole mission, offline, on a bundled example project.
//!
//! The example (a small Python package with a backlog) is laid out in a fresh directory and
//! committed to a new git repository; the mission is driven by the `replay` provider playing a
//! recorded tape, so no model is called and no key is needed. The story includes a failed
//! validation and its corrective round. What runs for real: git, the engine, every tool, and
//! the validators' commands (`python3 -m unittest`). `--prepare DIR` lays out the same project,
//! configured with the replay model, so the mission can be started from an editor.

use std::path::{Path, PathBuf};

use missions_engine::backlog;
use missions_engine::mission::{Command, Mission};

use crate::Outcome as Exit;
use crate::missions::{build_models, load_config, options, report};
use crate::summary;

/// The example project, file by file.
const PROJECT: &[(&str, &str)] = &[
    (".gitignore", include_str!("../demo/project/gitignore")),
    ("AGENTS.md", include_str!("../demo/project/AGENTS.md")),
    ("BACKLOG.md", include_str!("../demo/project/BACKLOG.md")),
    ("README.md", include_str!("../demo/project/README.md")),
    ("textkit/__init__.py", include_str!("../demo/project/textkit/__init__.py")),
    ("textkit/core.py", include_str!("../demo/project/textkit/core.py")),
    ("tests/__init__.py", include_str!("../demo/project/tests/__init__.py")),
    ("tests/test_core.py", include_str!("../demo/project/tests/test_core.py")),
];

/// The recorded model of the demo mission.
const TAPE: &str = include_str!("../demo/tape.jsonl");

/// The backlog item the demo mission is started from.
pub const DEMO_ITEM: &str = "BACKLOG.md:3";

const CONFIG: &str = r#"# The demo's models: every role plays back the recorded tape (no network, no key).
[providers.demo]
kind = "replay"
transcript = ".missions/demo-tape.jsonl"

[roles]
orchestrator = "demo/planner"
worker = "demo/worker"
reviewer = "demo/reviewer"
user_tester = "demo/user-tester"

[mission]
max_correction_rounds = 3
"#;

fn git(dir: &Path, args: &[&str]) -> Result<(), String> {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Missions demo",
            "-c",
            "user.email=demo@missions.invalid",
            "-c",
            "core.hooksPath=/dev/null",
        ])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("git {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// Lays out the example project in `dir` (which must be empty or missing), configured with the
/// replay model, as a git repository with one commit.
pub fn prepare(dir: &Path) -> Result<(), String> {
    if dir.exists() && std::fs::read_dir(dir).map_err(|e| e.to_string())?.next().is_some() {
        return Err(format!("{} is not empty; give a new or empty directory", dir.display()));
    }
    for (path, text) in PROJECT {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&target, text).map_err(|e| format!("{}: {e}", target.display()))?;
    }
    let missions = dir.join(".missions");
    std::fs::create_dir_all(&missions).map_err(|e| e.to_string())?;
    std::fs::write(missions.join("config.toml"), CONFIG).map_err(|e| e.to_string())?;
    std::fs::write(missions.join("demo-tape.jsonl"), TAPE).map_err(|e| e.to_string())?;
    git(dir, &["init", "-q", "-b", "main"])?;
    let exclude = dir.join(".git/info/exclude");
    std::fs::write(&exclude, "/.missions/\n").map_err(|e| format!("{}: {e}", exclude.display()))?;
    git(dir, &["add", "-A"])?;
    git(dir, &["commit", "-q", "-m", "textkit: initial"])
}

pub fn run_prepare(dir: &Path) -> Exit {
    match prepare(dir) {
        Ok(()) => {
            println!(
                "The demo project is ready in {}. Open it in your editor and start the backlog item {DEMO_ITEM}, or run:\n  missions run --workspace {} --item {DEMO_ITEM}",
                dir.display(),
                dir.display()
            );
            Exit::Success
        }
        Err(message) => Exit::Usage(message),
    }
}

fn demo_dir() -> PathBuf {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    std::env::temp_dir().join(format!("missions-demo-{stamp}-{:04x}", fastrand_u16()))
}

fn fastrand_u16() -> u16 {
    (std::process::id() as u16)
        ^ (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0)
            as u16)
}

pub async fn run() -> Exit {
    let dir = demo_dir();
    if let Err(message) = prepare(&dir) {
        eprintln!("missions: cannot lay out the demo project: {message}");
        return Exit::Failure;
    }
    let workspace = match dir.canonicalize() {
        Ok(path) => path,
        Err(error) => {
            eprintln!("missions: {error}");
            return Exit::Failure;
        }
    };
    eprintln!("Demo project laid out in {}; running its mission offline with the recorded model.", workspace.display());
    let loaded = match load_config(&workspace) {
        Ok(loaded) => loaded,
        Err(exit) => return exit,
    };
    let items = backlog::list(&workspace, &loaded.config.backlog);
    let Some(item) = items.iter().find(|i| i.id == DEMO_ITEM) else {
        eprintln!("missions: the demo backlog has no item {DEMO_ITEM}");
        return Exit::Failure;
    };
    let source = backlog::item_source(item);
    let models = match build_models(&loaded, &workspace) {
        Ok(models) => models,
        Err(exit) => return exit,
    };
    let options = options(&loaded);
    let mut mission = match Mission::start(&workspace, loaded, models, source, true, options) {
        Ok(mission) => mission,
        Err(error) => {
            eprintln!("missions: {error}");
            return Exit::Failure;
        }
    };
    let id = mission.id().to_owned();
    let mut outcome = match mission.drive().await {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("missions: {error}");
            return Exit::Failure;
        }
    };
    if outcome == missions_engine::mission::Outcome::AwaitingApproval {
        eprintln!("The plan is approved for the demo (normally you review it first).");
        if let Err(error) = mission.apply(Command::Approve) {
            eprintln!("missions: {error}");
            return Exit::Failure;
        }
        outcome = match mission.drive().await {
            Ok(outcome) => outcome,
            Err(error) => {
                eprintln!("missions: {error}");
                return Exit::Failure;
            }
        };
    }
    print!("{}", summary::mission_control(&workspace, &mission.projection()));
    if let missions_engine::mission::Outcome::Paused { reason: missions_core::mission::PauseReason::Provider, .. } =
        &outcome
    {
        eprintln!(
            "The demo went off its recording: this build of Missions asked the recorded model something the \
             recording has no answer for (its prompts or steps changed since the tape was made). Nothing is wrong \
             with your setup; the demo's tape needs recording again for this build."
        );
    }
    report(&workspace, &id, &outcome)
}
