//! The mission driver: the state machine of SPEC §2 and the git of SPEC §3.
//!
//! A [`Mission`] is opened (or started) by a front end, which then sends it [`Command`]s
//! (approve, accept, reject, rollback, pause, resume, cancel, …) and calls [`Mission::drive`],
//! which advances the mission step by step — planning, one feature at a time, validation, the
//! boundary decision — until it reaches a gate, pauses, fails or completes. Every step's result
//! is an event in the store before anything else happens, so a driver killed at any moment
//! resumes from the last durable event: a feature cut off mid-run restarts from its base
//! commit, a validation cut off runs again.
//!
//! Rules enforced here, in code: one writer per workspace (a lock held while driving); the
//! contract is locked at approval and only ever grows; a milestone completes only when all its
//! assertions pass; corrective rounds are bounded; budget caps stop calls before they are
//! made; control commands from other processes arrive through the mission's inbox. Each rule
//! is a pure function in [`rules`].
//!
//! The parts, by idea: `protocol` (what front doors send and get back), `lifecycle` (start,
//! open, control, drive, plan), `features` (a worker's run and its handoff), `validation`,
//! `boundary`, `runs` (one agent run: tools, sandbox, transcript), `messages` (the roles'
//! first messages), `progress`; what every run shares is `shared`, with `commands`, `inbox`
//! and `budget` built on it; `worktree` guards the user's working tree. The submodules share
//! the vocabulary imported here (`use super::*`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use missions_core::config::{Environment, LoadedConfig};
use missions_core::mission::{
    AssertionStatus, Check, Feature, Finding, FindingDraft, FindingStatus, Handoff, HandoffClaim, Milestone,
    Mission as MissionRecord, MissionState, ObservedCommand, PauseReason, Role, Severity, Source, Validator,
    WorkStatus,
};
use missions_core::pricing::PriceTable;
use missions_core::store::{self, BoundaryDecision, Event, MissionStore, Projection, RunOutcome, StoreError};
use missions_core::transcript::TranscriptWriter;
use missions_tools::{CommandEnvironment, Sandbox, ToolBox, ToolSet, ToolSettings, WriteGuard};
use serde::{Deserialize, Serialize};

use crate::agent::{AgentConfig, RunEnd, Stop, Terminal, run_agent};
use crate::git::{Git, GitError};
use crate::prompts::{self, PromptError, Template};
use crate::terminals::{ClaimMatch, DecideMilestone, Decision, SubmitHandoff, SubmitPlan};

mod boundary;
mod budget;
mod commands;
mod features;
mod inbox;
mod lifecycle;
mod messages;
mod progress;
mod protocol;
pub(crate) mod rules;
mod runs;
mod shared;
mod validation;
mod worktree;

pub use worktree::{EditorBuffers, EditorFile};

use budget::RunScope;
use inbox::{wait_for_ack, write_inbox};
use messages::{clause, clip, handoff_for_review};
use missions_core::layout::inbox_dir;
pub use missions_core::model::{Models, RoleModel};
use missions_core::sync::lock;
pub use progress::{CheckKind, Decided, Progress, Step};
pub use protocol::{Command, Control, EngineError, Limits, Options, Outcome, Subscriber};
use shared::Shared;

/// How long a front door waits for a live driver's verdict on a queued command. A driver takes
/// pause, cancel and corrections between model turns and the rest between steps; a command not
/// taken by then stays queued and applies when the driver next looks.
pub const DRIVER_ACK_LIMIT: Duration = Duration::from_secs(10);

/// What one agent run is for.
struct RunRequest {
    role: Role,
    /// Names the run's transcript, e.g. `worker-F2`.
    label: String,
    system: String,
    first_message: String,
    max_turns: u32,
    milestone: Option<String>,
    feature: Option<String>,
}

/// A mission opened for driving and commands.
pub struct Mission {
    workspace: PathBuf,
    config: LoadedConfig,
    models: Models,
    options: Options,
    shared: Arc<Shared>,
    workspace_lock: Option<std::fs::File>,
    /// The private temporary directory (`TMPDIR`) of the commands this driver's runs start;
    /// removed when the driver goes.
    tmp: tempfile::TempDir,
}

fn take_workspace_lock(workspace: &Path) -> Result<std::fs::File, EngineError> {
    let root = store::missions_root(workspace);
    std::fs::create_dir_all(&root).map_err(|e| EngineError::Io(format!("{}: {e}", root.display())))?;
    store::log::acquire_lock(&root.join("workspace.lock")).map_err(|error| match error {
        StoreError::Locked { holder, .. } => EngineError::WorkspaceBusy { holder },
        other => EngineError::Store(other),
    })
}

#[cfg(test)]
mod tests {
    use super::{clause, handoff_for_review};
    use missions_core::mission::{ClaimedCommand, Handoff, HandoffClaim, ObservedCommand};

    #[test]
    fn a_reviewer_sees_each_claimed_command_once_with_what_was_observed() {
        let claim = |command: &str, exit_code| ClaimedCommand { command: command.into(), exit_code };
        let ran = |command: &str, exit_code| ObservedCommand { command: command.into(), exit_code, duration_ms: 5 };
        let handoff = Handoff {
            feature: "F1".into(),
            model: "m".into(),
            claim: HandoffClaim {
                summary: "Added slugify.".into(),
                completed: vec!["slugify".into()],
                skipped: Vec::new(),
                commands: vec![claim("pytest -q", 0), claim("ruff check", 0), claim("mypy .", 0)],
                issues: Vec::new(),
                procedures_followed: true,
                procedure_notes: String::new(),
            },
            files_changed: Vec::new(),
            commit: None,
            observed_commands: vec![ran("pytest  -q", Some(0)), ran("ruff check", Some(1)), ran("ls", Some(0))],
        };
        let text = handoff_for_review(&handoff);
        assert!(text.contains("- `pytest -q`: exit 0 (as claimed)"), "{text}");
        assert!(text.contains("- `ruff check`: claimed exit 0, observed exit 1 (mismatch)"), "{text}");
        assert!(text.contains("- `mypy .`: claimed exit 0, never run (mismatch)"), "{text}");
        assert!(text.contains("Commands run but not claimed:\n- `ls`: exit 0"), "{text}");
        assert_eq!(text.matches("pytest").count(), 1, "each command once: {text}");
    }

    #[test]
    fn joined_clauses_never_double_their_stops() {
        let joined: Vec<&str> = ["Tests pass.", " left a TODO; ", "none"].into_iter().map(clause).collect();
        assert_eq!(format!("{}.", joined.join("; ")), "Tests pass; left a TODO; none.");
    }
}

#[cfg(test)]
mod subscriber_tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use missions_core::config::{Layer, LayerSource, LoadedConfig};
    use missions_core::mission::{Source, SourceKind};
    use missions_core::store::Record;

    use super::{Command, Limits, Mission, Models, Options};

    fn git(dir: &std::path::Path, args: &[&str]) {
        let status = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t.invalid"])
            .args(args)
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }

    #[test]
    fn subscribers_are_told_of_each_durable_event_with_its_mission() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("README.md"), "x\n").unwrap();
        git(dir.path(), &["init", "-q", "-b", "main"]);
        git(dir.path(), &["add", "-A"]);
        git(dir.path(), &["commit", "-q", "-m", "init"]);
        let loaded = LoadedConfig::from_layers(
            vec![Layer::defaults().unwrap()],
            vec![LayerSource { origin: "defaults".into(), loaded: true }],
            Vec::new(),
        )
        .unwrap();
        let told: Arc<Mutex<Vec<(String, u64, String)>>> = Arc::default();
        let sink = told.clone();
        let options = Options {
            env: Arc::new(BTreeMap::<String, String>::new()),
            progress: Arc::new(|_| {}),
            sandbox: None,
            write_guard: None,
            limits: Limits::default(),
            appended: Some(Arc::new(move |mission: &str, record: &Record| {
                let kind = serde_json::to_value(&record.event).unwrap()["type"].as_str().unwrap_or_default().to_owned();
                sink.lock().unwrap().push((mission.to_owned(), record.seq, kind));
            })),
        };
        let source = Source { kind: SourceKind::Text, item_id: None, text: "Do a thing".into() };
        let mission = Mission::start(dir.path(), loaded, Models::default(), source, false, options).unwrap();
        let before = told.lock().unwrap().len();
        mission.apply(Command::CourseCorrect { note: "smaller steps".into() }).unwrap();
        let told = told.lock().unwrap();
        let last = told.last().unwrap();
        assert_eq!(told.len(), before + 1, "one event, one notice: {told:?}");
        assert_eq!((last.0.as_str(), last.2.as_str()), (mission.id(), "course_correction_noted"));
        assert_eq!(last.1, mission.projection().events, "told after it is in the log, with its sequence number");
    }
}
