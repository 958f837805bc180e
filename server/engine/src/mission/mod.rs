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
//! made; control commands from other processes arrive through the mission's inbox.

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

mod progress;
pub(crate) mod rules;
mod shared;
mod validation;
mod worktree;

pub use worktree::{EditorBuffers, EditorFile};

use missions_core::layout::inbox_dir;
pub use missions_core::model::{Models, RoleModel};
use missions_core::sync::lock;
pub use progress::{CheckKind, Decided, Progress, Step};
use shared::{RunScope, Shared};
use shared::{wait_for_ack, write_inbox};

/// How long a front door waits for a live driver's verdict on a queued command. A driver takes
/// pause, cancel and corrections between model turns and the rest between steps; a command not
/// taken by then stays queued and applies when the driver next looks.
pub const DRIVER_ACK_LIMIT: Duration = Duration::from_secs(10);

/// What [`Mission::control`] did with a front door's commands.
pub enum Control {
    /// No other process drove the mission: it was opened here (with the warnings from reading its
    /// log) and the commands applied, up to the first that failed.
    Opened { mission: Box<Mission>, warnings: Vec<String>, applied: Result<(), EngineError> },
    /// Process `holder` drives the mission: the commands went through its inbox. One verdict per
    /// command sent: `Some(Ok)` applied, `Some(Err)` refused (the last one sent), `None` the
    /// driver did not answer in time and the command waits in the inbox.
    Queued { holder: String, verdicts: Vec<Option<Result<(), String>>> },
}

/// Turn limits and sizes of agent runs.
#[derive(Debug, Clone)]
pub struct Limits {
    pub planning_turns: u32,
    pub boundary_turns: u32,
    pub worker_turns: u32,
    pub reviewer_turns: u32,
    pub user_tester_turns: u32,
    pub context_tokens: usize,
    pub review_concurrency: usize,
    pub map_tokens: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            planning_turns: 60,
            boundary_turns: 40,
            worker_turns: 150,
            reviewer_turns: 60,
            user_tester_turns: 80,
            context_tokens: 150_000,
            review_concurrency: 4,
            map_tokens: 2_048,
        }
    }
}

/// How the front end wants the engine to behave.
#[derive(Clone)]
pub struct Options {
    pub env: Arc<dyn Environment>,
    pub progress: Arc<dyn Fn(&Progress) + Send + Sync>,
    /// The sandbox launcher for commands agents and validators run (see
    /// `missions_tools::sandbox`); `None` runs them unconfined.
    pub sandbox: Option<Sandbox>,
    /// The editor's guard against overwriting unsaved buffers.
    pub write_guard: Option<Arc<dyn WriteGuard>>,
    pub limits: Limits,
}

impl Options {
    /// The options both front doors use: the process environment, the sandbox the
    /// configuration asks for, the default limits, and the front end's progress display and
    /// guard of unsaved buffers.
    pub fn for_config(
        loaded: &LoadedConfig,
        progress: Arc<dyn Fn(&Progress) + Send + Sync>,
        write_guard: Option<Arc<dyn WriteGuard>>,
    ) -> Options {
        Options {
            env: Arc::new(missions_core::config::ProcessEnvironment) as Arc<dyn Environment>,
            progress,
            sandbox: missions_tools::sandbox::launcher(&loaded.config.mission),
            write_guard,
            limits: Limits::default(),
        }
    }
}

/// What a front end asks of a mission. Also the format of inbox files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    Approve,
    Accept {
        #[serde(default)]
        milestone: Option<String>,
    },
    Reject {
        milestone: String,
        feedback: String,
    },
    Rollback {
        milestone: String,
    },
    Pause {
        /// Why, for the record; "paused by the user" when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    Resume,
    Cancel,
    CourseCorrect {
        note: String,
    },
    DismissFinding {
        finding: String,
        #[serde(default)]
        reason: Option<String>,
    },
    FixFinding {
        finding: String,
    },
    Waive {
        assertion: String,
        reason: String,
    },
    SetAutoAccept {
        auto_accept: bool,
    },
}

impl Command {
    /// Whether the mission is driven on after this command (the gates and `resume`); such a
    /// command is refused, with nothing recorded, when the tree is not ready to be driven.
    pub fn drives_on(&self) -> bool {
        matches!(
            self,
            Command::Approve
                | Command::Accept { .. }
                | Command::Reject { .. }
                | Command::Resume
                | Command::FixFinding { .. }
        )
    }
}

/// How a worker's run ended, for the handoff recorded.
enum HandedOff {
    /// The worker submitted its account.
    Claimed(HandoffClaim),
    /// The run ended without one, for this reason.
    GaveUp(String),
}

/// Where driving stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    AwaitingApproval,
    AwaitingAcceptance { milestone: String },
    Paused { reason: PauseReason, detail: Option<String> },
    Failed { detail: Option<String> },
    Cancelled,
}

impl Outcome {
    /// SPEC §6: 0 completed, 3 waiting at a gate, 1 failed, cancelled or paused.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Completed => 0,
            Outcome::AwaitingApproval | Outcome::AwaitingAcceptance { .. } => 3,
            Outcome::Paused { .. } | Outcome::Failed { .. } | Outcome::Cancelled => 1,
        }
    }

    pub fn from_mission(mission: &MissionRecord, current_milestone: Option<String>) -> Option<Outcome> {
        match mission.state {
            MissionState::Completed => Some(Outcome::Completed),
            MissionState::AwaitingApproval => Some(Outcome::AwaitingApproval),
            MissionState::AwaitingAcceptance => {
                Some(Outcome::AwaitingAcceptance { milestone: current_milestone.unwrap_or_default() })
            }
            MissionState::Paused => Some(Outcome::Paused {
                reason: mission.pause_reason.unwrap_or(PauseReason::User),
                detail: mission.detail.clone(),
            }),
            MissionState::Failed => Some(Outcome::Failed { detail: mission.detail.clone() }),
            MissionState::Cancelled => Some(Outcome::Cancelled),
            MissionState::Planning | MissionState::Running | MissionState::Validating => None,
        }
    }
}

/// Errors a front end branches on: usage errors (exit 2) versus failures.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Prompt(#[from] PromptError),
    #[error("{path} is not a git repository: run `git init` and commit, then start the mission")]
    NotARepository { path: PathBuf },
    #[error("the repository has no commits yet: commit once, then start the mission")]
    NoCommits,
    #[error("the working tree has changes that are not committed: {}. Commit or stash them first", .files.join(", "))]
    DirtyTree { files: Vec<String> },
    #[error(
        "the working tree has changes the mission did not make: {}. They are left as they are; move them aside \
         (`git stash -u`) or commit them on a branch of your own, then resume",
        .files.join(", ")
    )]
    ForeignChanges { files: Vec<String> },
    #[error("another mission is being driven in this workspace ({holder}); one writer at a time")]
    WorkspaceBusy { holder: String },
    #[error("{0}")]
    Refused(String),
    #[error("no model is configured for the {0} role")]
    MissingModel(Role),
    #[error("{0}")]
    Io(String),
}

impl EngineError {
    /// Whether the error is the user's to fix by changing what they asked (exit 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            EngineError::NotARepository { .. }
                | EngineError::NoCommits
                | EngineError::DirtyTree { .. }
                | EngineError::ForeignChanges { .. }
                | EngineError::WorkspaceBusy { .. }
                | EngineError::Refused(_)
                | EngineError::Store(StoreError::NotFound { .. })
        )
    }
}

/// Stops the projection flusher when a drive ends.
struct Flusher(tokio::task::JoinHandle<()>);

impl Drop for Flusher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

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

/// A worker's handoff as a reviewer reads it: each claimed command once, with the exit code
/// the engine observed beside it and any mismatch marked, then the commands run but not
/// claimed.
fn handoff_for_review(handoff: &Handoff) -> String {
    let mut out = format!("Summary: {}\n", handoff.claim.summary.trim());
    let list = |title: &str, items: Vec<String>, out: &mut String| {
        if !items.is_empty() {
            out.push_str(&format!("{title}:\n"));
            for item in items {
                out.push_str(&format!("- {item}\n"));
            }
        }
    };
    list("Completed", handoff.claim.completed.clone(), &mut out);
    list("Skipped", handoff.claim.skipped.iter().map(|s| format!("{} ({})", s.item, s.reason)).collect(), &mut out);
    list(
        "Issues",
        handoff
            .claim
            .issues
            .iter()
            .map(|i| {
                let place = match (&i.path, i.line) {
                    (Some(p), Some(l)) => format!(" at {p}:{l}"),
                    (Some(p), None) => format!(" in {p}"),
                    _ => String::new(),
                };
                format!("[{}] {}{place}", i.severity, i.description.trim())
            })
            .collect(),
        &mut out,
    );
    out.push_str(&format!(
        "Procedures followed: {}{}\n",
        if handoff.claim.procedures_followed { "yes" } else { "no" },
        if handoff.claim.procedure_notes.trim().is_empty() {
            String::new()
        } else {
            format!(" ({})", handoff.claim.procedure_notes.trim())
        }
    ));
    let exit = |code: Option<i32>| code.map_or("killed".to_owned(), |c| format!("exit {c}"));
    let observed = &handoff.observed_commands;
    let matches: Vec<ClaimMatch> = handoff
        .claim
        .commands
        .iter()
        .map(|c| crate::terminals::match_claim(&c.command, c.exit_code, observed))
        .collect();
    let claimed: Vec<String> = handoff
        .claim
        .commands
        .iter()
        .zip(&matches)
        .map(|(claim, matched)| {
            let (run, abbreviated) = match matched {
                ClaimMatch::Exact(run) => (Some(&observed[*run]), false),
                ClaimMatch::Abbreviated(run) => (Some(&observed[*run]), true),
                ClaimMatch::Unmatched => (None, false),
            };
            let shown = if abbreviated {
                format!("`{}` (abbreviates `{}`)", claim.command, observed_first_line(run))
            } else {
                format!("`{}`", claim.command)
            };
            match run {
                None => format!("{shown}: claimed exit {}, never run (mismatch)", claim.exit_code),
                Some(run) if run.exit_code != Some(claim.exit_code) => {
                    format!("{shown}: claimed exit {}, observed {} (mismatch)", claim.exit_code, exit(run.exit_code))
                }
                Some(run) => format!("{shown}: {} (as claimed)", exit(run.exit_code)),
            }
        })
        .collect();
    list("Commands the worker claims, with what the engine observed", claimed, &mut out);
    let matched: Vec<String> = matches
        .iter()
        .filter_map(|m| match m {
            ClaimMatch::Exact(run) | ClaimMatch::Abbreviated(run) => {
                Some(crate::terminals::normalise_command(&observed[*run].command))
            }
            ClaimMatch::Unmatched => None,
        })
        .collect();
    let unclaimed: Vec<String> = observed
        .iter()
        .filter(|o| !matched.contains(&crate::terminals::normalise_command(&o.command)))
        .map(|o| format!("`{}`: {}", o.command, exit(o.exit_code)))
        .collect();
    list("Commands run but not claimed", unclaimed, &mut out);
    let files: Vec<String> = handoff
        .files_changed
        .iter()
        .map(|f| {
            let ranges: Vec<String> =
                f.ranges.iter().map(|[a, b]| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
            format!("{} (lines {})", f.path, ranges.join(", "))
        })
        .collect();
    list("Files changed", files, &mut out);
    out
}

/// The first line of an observed command, marked when there is more.
fn observed_first_line(run: Option<&ObservedCommand>) -> String {
    let command = run.map(|r| r.command.trim()).unwrap_or_default();
    match command.split_once('\n') {
        Some((first, _)) => format!("{} …", first.trim_end().trim_end_matches('\\').trim_end()),
        None => command.to_owned(),
    }
}

/// A model's sentence as a clause for joining: trimmed, without its closing full stop, so
/// joined lists never read ".;" or "..".
fn clause(text: &str) -> &str {
    text.trim().trim_end_matches(['.', ';']).trim_end()
}

fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}\n[… {} more bytes]", &text[..cut], text.len() - cut)
}

fn take_workspace_lock(workspace: &Path) -> Result<std::fs::File, EngineError> {
    let root = store::missions_root(workspace);
    std::fs::create_dir_all(&root).map_err(|e| EngineError::Io(format!("{}: {e}", root.display())))?;
    store::log::acquire_lock(&root.join("workspace.lock")).map_err(|error| match error {
        StoreError::Locked { holder, .. } => EngineError::WorkspaceBusy { holder },
        other => EngineError::Store(other),
    })
}

impl Mission {
    fn assemble(
        workspace: &Path,
        config: LoadedConfig,
        models: Models,
        options: Options,
        store: MissionStore,
        workspace_lock: Option<std::fs::File>,
    ) -> Result<Mission, EngineError> {
        let tmp = tempfile::Builder::new()
            .prefix("missions-tmp-")
            .tempdir()
            .map_err(|e| EngineError::Io(format!("cannot make a temporary directory: {e}")))?;
        let mission_id = store.projection().mission.as_ref().map(|m| m.id.clone()).unwrap_or_default();
        let provider_names = models.by_role.iter().map(|(role, m)| (*role, m.provider.name().to_owned())).collect();
        let shared = Shared {
            inbox: inbox_dir(workspace, &mission_id),
            mission_id,
            store: Mutex::new(store),
            git: Git::new(workspace),
            prices: PriceTable::with_overrides(&config.config.prices),
            progress: options.progress.clone(),
            provider_names,
            stop: Mutex::new(None),
            reserved: Mutex::new((0, 0.0)),
            min_output_tokens: config.config.budget.min_output_tokens(),
        };
        Ok(Mission {
            workspace: workspace.to_owned(),
            config,
            models,
            options,
            shared: Arc::new(shared),
            workspace_lock,
            tmp,
        })
    }

    /// Starts a new mission on a clean working tree: creates and checks out
    /// `missions/<id>` from `HEAD`.
    pub fn start(
        workspace: &Path,
        config: LoadedConfig,
        models: Models,
        source: Source,
        auto_accept: bool,
        options: Options,
    ) -> Result<Mission, EngineError> {
        let git = Git::new(workspace);
        if !git.is_repository() {
            return Err(EngineError::NotARepository { path: workspace.to_owned() });
        }
        let base = git.head().map_err(|_| EngineError::NoCommits)?;
        let workspace_lock = take_workspace_lock(workspace)?;
        let dirty = git.dirty_files()?;
        if !dirty.is_empty() {
            return Err(EngineError::DirtyTree { files: dirty });
        }
        git.exclude_missions_dir()?;
        let title: String = source
            .text
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("mission")
            .trim()
            .trim_start_matches('#')
            .trim()
            .chars()
            .take(100)
            .collect();
        let id = missions_core::ids::new_mission_id(&title);
        let branch = format!("missions/{id}");
        git.create_branch(&branch, &base)?;
        let created = Event::MissionCreated {
            id,
            title,
            source,
            branch,
            base_commit: base,
            auto_accept: auto_accept || config.config.mission.auto_accept,
            max_tokens: config.config.budget.max_tokens,
            max_usd: config.config.budget.max_usd,
        };
        let store = MissionStore::create(workspace, created)?;
        Mission::assemble(workspace, config, models, options, store, Some(workspace_lock))
    }

    /// Opens mission `id` for commands and driving. Fails with `StoreError::Locked` when another
    /// process is driving it (send commands through its inbox instead).
    pub fn open(
        workspace: &Path,
        id: &str,
        config: LoadedConfig,
        models: Models,
        options: Options,
    ) -> Result<(Mission, Vec<String>), EngineError> {
        let dir = store::mission_dir(workspace, id)?;
        let (store, warnings) = MissionStore::open(&dir)?;
        let mission = Mission::assemble(workspace, config, models, options, store, None)?;
        // Finishing an interrupted rollback writes the tree, which only the workspace's writer
        // may do; a busy workspace leaves it to its driver.
        if let Ok(lock) = take_workspace_lock(workspace) {
            mission.finish_interrupted_rollback()?;
            drop(lock);
        }
        // Caps edited in the configuration take effect when the mission is next opened, so a
        // mission paused for budget can be resumed after raising them.
        let record = mission.shared.mission()?;
        let budget = &mission.config.config.budget;
        if !record.state.is_terminal()
            && (record.budget.max_tokens != budget.max_tokens || record.budget.max_usd != budget.max_usd)
        {
            mission.shared.append(Event::BudgetSet { max_tokens: budget.max_tokens, max_usd: budget.max_usd })?;
        }
        Ok((mission, warnings))
    }

    /// Applies `commands`, in order, to mission `id` from a front door (CLI or language server).
    /// When another process drives the mission they go through its inbox (SPEC §2 rule 8), each
    /// waiting up to [`DRIVER_ACK_LIMIT`] for the driver's verdict, and a refused command stops the rest.
    /// Otherwise the mission is opened here and returned, ready to be driven on once `applied`
    /// says every command held.
    ///
    /// `resume` of a mission a crash left mid-way (neither paused nor finished) is not applied:
    /// driving it on is the resume. A finished mission still refuses it.
    pub fn control(
        workspace: &Path,
        id: &str,
        config: LoadedConfig,
        models: Models,
        options: Options,
        commands: Vec<Command>,
    ) -> Result<Control, EngineError> {
        let (mission, warnings) = match Mission::open(workspace, id, config, models, options) {
            Ok(opened) => opened,
            Err(EngineError::Store(StoreError::Locked { holder, .. })) => {
                let inbox = inbox_dir(workspace, id);
                let mut verdicts = Vec::with_capacity(commands.len());
                for command in &commands {
                    let verdict = wait_for_ack(&write_inbox(&inbox, command)?, DRIVER_ACK_LIMIT);
                    let refused = matches!(verdict, Some(Err(_)));
                    verdicts.push(verdict);
                    if refused {
                        break;
                    }
                }
                return Ok(Control::Queued { holder, verdicts });
            }
            Err(error) => return Err(error),
        };
        // A command that drives on is checked against the tree before anything is recorded:
        // a refused command changes nothing.
        if commands.iter().any(Command::drives_on)
            && let Err(error) = mission.ready_to_drive()
        {
            return Ok(Control::Opened { mission: Box::new(mission), warnings, applied: Err(error) });
        }
        let applied = commands.into_iter().try_for_each(|command| {
            let state = mission.projection().mission.map(|m| m.state);
            let mid_way = state != Some(MissionState::Paused) && !state.is_some_and(|s| s.is_terminal());
            if command == Command::Resume && mid_way { Ok(()) } else { mission.apply(command) }
        });
        Ok(Control::Opened { mission: Box::new(mission), warnings, applied })
    }

    /// Queues `command` for the process driving mission `id` and waits up to `limit` for its
    /// verdict. A command no driver took in time is withdrawn (`None`), so it cannot surprise
    /// a later driver.
    pub fn ask_driver(workspace: &Path, id: &str, command: &Command, limit: Duration) -> Option<Result<(), String>> {
        let queued = write_inbox(&inbox_dir(workspace, id), command).ok()?;
        let verdict = wait_for_ack(&queued, limit);
        if verdict.is_none() && std::fs::remove_file(&queued).is_err() {
            // Taken between the wait and the withdrawal: its verdict is on its way.
            return wait_for_ack(&queued, Duration::from_secs(1));
        }
        verdict
    }

    pub fn id(&self) -> &str {
        &self.shared.mission_id
    }

    pub fn projection(&self) -> Projection {
        self.shared.projection()
    }

    pub fn apply(&self, command: Command) -> Result<(), EngineError> {
        let result = self.shared.apply(command);
        lock(&self.shared.store).flush();
        result
    }

    /// Where the mission stands, if it is not mid-way (a gate or an end).
    pub fn outcome(&self) -> Result<Option<Outcome>, EngineError> {
        let projection = self.shared.projection();
        let mission = self.shared.mission()?;
        Ok(Outcome::from_mission(&mission, rules::current_milestone(&projection).cloned().map(|m| m.id)))
    }

    /// Takes the workspace's writer lock, checks out the mission's branch, finishes a
    /// rollback a crash interrupted, and refuses a tree holding changes that are not the
    /// mission's: driving may reset the tree, and the user's work is never the engine's to
    /// touch.
    fn prepare_to_drive(&mut self) -> Result<(), EngineError> {
        crate::git::resolve_program();
        if self.workspace_lock.is_none() {
            self.workspace_lock = Some(take_workspace_lock(&self.workspace)?);
        }
        // Commands a dead driver started may still be running (and writing into the tree);
        // they die before anything else happens.
        let killed = missions_tools::command::kill_recorded(&self.process_registry());
        if !killed.is_empty() {
            self.shared.progress(None, None, None, Step::OrphansStopped { count: killed.len() });
        }
        let mission = self.shared.mission()?;
        let git = &self.shared.git;
        // A git killed mid-write (with a driver killed with it) leaves its lock behind, and
        // every later git command would fail; before anything else runs, such a lock is
        // removed when it is provably stale, and a live one stops the drive.
        let (removed, live) = git.remove_stale_locks()?;
        for lock in removed {
            let removed = Step::StaleLockRemoved { path: lock.display().to_string() };
            self.shared.progress(None, None, None, removed);
        }
        if let Some(lock) = live.first() {
            return Err(EngineError::Refused(format!(
                "{} is held by a running git process; let it finish (or end it), then resume",
                lock.display()
            )));
        }
        if git.current_branch()? != mission.branch {
            let dirty = git.dirty_files()?;
            if !dirty.is_empty() {
                return Err(EngineError::DirtyTree { files: dirty });
            }
            git.checkout(&mission.branch)?;
        }
        self.finish_interrupted_rollback()?;
        self.ready_to_drive()?;
        if let Some(launcher) = &self.options.sandbox {
            match missions_tools::sandbox::probe(launcher, &self.workspace) {
                Some(report) => self.shared.progress(None, None, None, Step::Sandbox { summary: report.summary() }),
                None => tracing::warn!("the sandbox launcher did not report; commands may run unconfined"),
            }
        }
        Ok(())
    }

    /// A rollback whose event was recorded but whose effects a crash cut short is finished
    /// (its saved ref created, the branch reset) and the mission paused, as the rollback
    /// itself would have left it.
    fn finish_interrupted_rollback(&self) -> Result<(), EngineError> {
        let projection = self.shared.projection();
        let Some((saved, from, to)) = &projection.last_rollback else { return Ok(()) };
        if self.shared.git.ref_exists(saved) {
            return Ok(());
        }
        self.shared.finish_rollback(saved, from, to)?;
        if self.shared.mission()?.state != MissionState::Paused {
            self.shared.pause(
                PauseReason::User,
                format!("finished a rollback that was interrupted; the dropped commits are kept at {saved}"),
            )?;
        }
        Ok(())
    }

    /// Where the mission stands if it needs no driving (a gate, a pause, an end).
    fn settled(&self) -> Result<Option<Outcome>, EngineError> {
        let mission = self.shared.mission()?;
        if mission.state == MissionState::AwaitingAcceptance && mission.auto_accept {
            return Ok(None);
        }
        self.outcome()
    }

    /// Drives the mission until it reaches a gate, pauses, fails or completes.
    pub async fn drive(&mut self) -> Result<Outcome, EngineError> {
        // A mission at a gate or at its end is only told about, never touched.
        self.shared.process_inbox(|_| true);
        if let Some(outcome) = self.settled()? {
            lock(&self.shared.store).flush();
            return Ok(outcome);
        }
        self.prepare_to_drive()?;
        *lock(&self.shared.stop) = None;
        // Projection files are throttled while events come fast; this keeps them within a
        // second of the log when events stop coming (a long model call, a long command).
        let _flusher = Flusher(tokio::spawn({
            let shared = self.shared.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                loop {
                    tick.tick().await;
                    lock(&shared.store).flush_if_due();
                }
            }
        }));
        loop {
            self.shared.process_inbox(|_| true);
            *lock(&self.shared.stop) = None;
            lock(&self.shared.store).flush_if_due();
            let projection = self.shared.projection();
            let mission = self.shared.mission()?;
            match mission.state {
                MissionState::Planning => self.plan().await?,
                MissionState::Running => self.step(&projection).await?,
                MissionState::Validating => self.validate(&projection).await?,
                MissionState::AwaitingAcceptance if mission.auto_accept => {
                    self.shared.apply(Command::Accept { milestone: None })?
                }
                MissionState::AwaitingApproval
                | MissionState::AwaitingAcceptance
                | MissionState::Paused
                | MissionState::Completed
                | MissionState::Failed
                | MissionState::Cancelled => {
                    let current = rules::current_milestone(&projection).cloned().map(|m| m.id);
                    if let Some(outcome) = Outcome::from_mission(&mission, current) {
                        lock(&self.shared.store).flush();
                        return Ok(outcome);
                    }
                }
            }
        }
    }

    /// The environment of commands run for `set` (`None`: the engine's own checks). The
    /// user tester's processes serve on loopback and are reached from outside their sandbox,
    /// so its commands keep the network namespace; everything else follows the configuration.
    fn command_environment(&self, set: Option<ToolSet>, tmp: &Path) -> CommandEnvironment {
        let allow_network = self.config.config.mission.allow_network || set == Some(ToolSet::UserTester);
        CommandEnvironment {
            root: self.workspace.clone(),
            secret_env: self.config.secret_env_vars(),
            redactor: self.config.redactor(self.options.env.as_ref()),
            sandbox: self.options.sandbox.clone().map(|sandbox| Sandbox { allow_network, ..sandbox }),
            tmp: Some(tmp.to_owned()),
            registry: Some(self.process_registry()),
        }
    }

    /// Where the commands run in this workspace are recorded while they run: one registry for
    /// the workspace, so commands a dead driver of any mission left are stopped by the next
    /// driver of any mission.
    fn process_registry(&self) -> PathBuf {
        missions_core::layout::processes_dir(&self.workspace)
    }

    /// The private temporary directory of the commands runs start.
    fn run_tmp(&self) -> Result<&Path, EngineError> {
        Ok(self.tmp.path())
    }

    fn toolbox(&self, set: ToolSet, focus: &str, tmp: &Path) -> Result<ToolBox, EngineError> {
        let settings = ToolSettings {
            environment: self.command_environment(Some(set), tmp),
            default_timeout: Duration::from_secs(120),
            max_timeout: Duration::from_secs(self.config.config.mission.max_command_timeout_s.max(1)),
            focus: focus.to_owned(),
            map_tokens: self.options.limits.map_tokens,
            write_guard: match set {
                ToolSet::Worker => {
                    let editors: Arc<dyn WriteGuard> = Arc::new(EditorBuffers::new(&self.workspace));
                    let guards = std::iter::once(editors).chain(self.options.write_guard.clone()).collect();
                    Some(Arc::new(worktree::Guards(guards)) as Arc<dyn WriteGuard>)
                }
                ToolSet::ReadOnly | ToolSet::Planner | ToolSet::Reviewer | ToolSet::UserTester => None,
            },
            work_recorder: match set {
                ToolSet::ReadOnly => None,
                ToolSet::Worker | ToolSet::Planner | ToolSet::Reviewer | ToolSet::UserTester => Some(self.work_log()),
            },
        };
        ToolBox::new(&self.workspace, set, settings)
            .map_err(|e| EngineError::Io(format!("{}: {e}", self.workspace.display())))
    }

    fn repo_map(&self, focus: &str) -> String {
        match missions_tools::Confinement::new(&self.workspace) {
            Ok(c) => missions_tools::repo_map::repo_map(&c, None, focus, self.options.limits.map_tokens)
                .unwrap_or_else(|e| e),
            Err(e) => e.to_string(),
        }
    }

    fn checks_text(&self) -> String {
        let checks = &self.config.config.mission.checks;
        if checks.is_empty() {
            "(none configured)".into()
        } else {
            checks.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
        }
    }

    /// Runs one agent with the role's model, recording its start, end and transcript.
    async fn run<T: Terminal>(
        &self,
        request: RunRequest,
        tools: &ToolBox,
        terminal: &mut T,
    ) -> Result<RunEnd<T::Output>, EngineError> {
        let RunRequest { role, label, system, first_message, max_turns, milestone, feature } = request;
        let model = self.models.by_role.get(&role).cloned().ok_or(EngineError::MissingModel(role))?;
        let run_id = missions_core::ids::new_run_id(&label);
        self.shared.append(Event::RunStarted {
            run_id: run_id.clone(),
            role,
            milestone: milestone.clone(),
            feature: feature.clone(),
        })?;
        self.shared.progress(
            milestone.as_deref(),
            feature.as_deref(),
            Some(role),
            Step::RunStarted { model: model.model.clone() },
        );
        let transcript_path = missions_core::layout::transcript(&self.workspace, &self.shared.mission_id, &run_id);
        let transcript = TranscriptWriter::create(&transcript_path, self.config.redactor(self.options.env.as_ref()))
            .map_err(|e| EngineError::Io(e.to_string()))?;
        let config = AgentConfig {
            role,
            run_id: run_id.clone(),
            provider: model.provider.clone(),
            model: model.model.clone(),
            system,
            first_message,
            max_turns,
            context_tokens: self.options.limits.context_tokens,
            max_output_tokens: model.max_output_tokens,
            max_repeated_failures: self.config.config.mission.max_repeated_failures,
            max_repeated_refusals: self.config.config.mission.max_repeated_refusals,
        };
        let hooks = RunScope {
            shared: &self.shared,
            milestone: milestone.clone(),
            feature: feature.clone(),
            run_id: run_id.clone(),
            reservation: Mutex::new((0, 0.0)),
        };
        let end = run_agent(&config, tools, terminal, &hooks, Some(&transcript)).await;
        tools.finish();
        let (outcome, detail) = match &end {
            RunEnd::Finished(_) => (RunOutcome::Finished, "the run called its terminal tool".to_owned()),
            RunEnd::GaveUp(reason) => (RunOutcome::GaveUp, reason.clone()),
            RunEnd::Stopped(stop) => (RunOutcome::Stopped, stop.to_string()),
        };
        self.shared.append(Event::RunFinished { run_id, outcome, detail })?;
        Ok(end)
    }

    /// Turns a stop into the mission's state.
    fn stopped(&self, stop: Stop) -> Result<(), EngineError> {
        match stop {
            Stop::Budget(detail) => self.shared.pause(PauseReason::Budget, detail),
            Stop::Conflict(path) => self.shared.pause(
                PauseReason::Conflict,
                format!("{path} has unsaved changes in the editor; save or discard them, then resume"),
            ),
            Stop::Provider(detail) => self.shared.pause(PauseReason::Provider, detail),
            // Already recorded by the command that asked for it.
            Stop::Paused | Stop::Cancelled => Ok(()),
        }
    }

    async fn plan(&mut self) -> Result<(), EngineError> {
        let mission = self.shared.mission()?;
        if self.shared.projection().baseline.is_none() {
            self.record_baseline().await?;
        }
        let values = BTreeMap::from([
            ("project_instructions", prompts::project_instructions(&self.workspace)),
            ("checks", self.checks_text()),
            ("repo_map", self.repo_map(&mission.source.text)),
        ]);
        let system = prompts::render(Template::OrchestratorPlan, &self.workspace, &values)?;
        let first = format!("Plan this backlog item:\n\n{}", mission.source.text.trim());
        let tmp = self.run_tmp()?;
        // The planner may try the project's commands (SPEC §5); what they leave is reverted.
        let tools = self.toolbox(ToolSet::Planner, &mission.source.text, tmp)?;
        let head = self.shared.git.head()?;
        let mut terminal = SubmitPlan {
            dry_run: Some(crate::terminals::DryRun {
                environment: self.command_environment(None, tmp),
                timeout: Duration::from_secs(self.config.config.mission.max_command_timeout_s.max(1)),
                recorder: self.work_log(),
                refused: None,
                revert: {
                    let shared = self.shared.clone();
                    let head = head.clone();
                    Arc::new(move || shared.revert_to(&head, "left by the plan's dry run").map_err(|e| e.to_string()))
                },
            }),
        };
        let limit = self.options.limits.planning_turns;
        let request = RunRequest {
            role: Role::Orchestrator,
            label: "plan".into(),
            system,
            first_message: first,
            max_turns: limit,
            milestone: None,
            feature: None,
        };
        let end = self.run(request, &tools, &mut terminal).await?;
        // What the planner's commands and the dry run left in the tree goes, saved first.
        self.shared.revert_to(&head, "left by the planning run's commands")?;
        match end {
            RunEnd::Finished((plan, contract, tried)) => {
                self.shared.append(Event::PlanSubmitted { plan, contract })?;
                self.shared.append(Event::DryRunRecorded { results: tried })?;
                self.shared.progress(None, None, Some(Role::Orchestrator), Step::PlanSubmitted);
                self.shared.set_state(MissionState::AwaitingApproval, None, None)
            }
            RunEnd::GaveUp(reason) => {
                self.shared.set_state(MissionState::Failed, None, Some(format!("planning failed: {reason}")))
            }
            RunEnd::Stopped(stop) => self.stopped(stop),
        }
    }

    /// One step of a running milestone: the next feature, or on to validation.
    async fn step(&mut self, projection: &Projection) -> Result<(), EngineError> {
        let Some(milestone) = rules::current_milestone(projection).cloned() else {
            return self.shared.set_state(MissionState::Completed, None, None);
        };
        if !projection.milestone_bases.contains_key(&milestone.id) {
            let head = self.shared.git.head()?;
            self.shared.append(Event::MilestoneStarted { milestone: milestone.id.clone(), base_commit: head })?;
        }
        match milestone.features.iter().find(|f| f.status != WorkStatus::Done).cloned() {
            Some(feature) => self.work(projection, &milestone, &feature).await,
            None => {
                self.shared.append(Event::MilestoneStatusChanged {
                    milestone: milestone.id.clone(),
                    status: WorkStatus::Validating,
                })?;
                self.shared.set_state(MissionState::Validating, None, None)
            }
        }
    }

    fn assertions_text(&self, projection: &Projection, ids: &[String]) -> String {
        let lines: Vec<String> = projection
            .contract
            .assertions
            .iter()
            .filter(|a| ids.contains(&a.id))
            .map(|a| {
                let check = match &a.check {
                    Check::Command { command, expect_exit } => format!("run `{command}`, expect exit {expect_exit}"),
                    Check::Review { rubric } => format!("review: {rubric}"),
                    Check::UserTest { steps } => format!("user test: {steps}"),
                };
                format!("- {}: {}\n  Check: {check}", a.id, a.description.trim())
            })
            .collect();
        if lines.is_empty() { "(none)".into() } else { lines.join("\n") }
    }

    fn handoff_summaries(&self, projection: &Projection, except: &str) -> String {
        let Some(plan) = &projection.plan else { return "(none yet)".into() };
        let mut lines = Vec::new();
        for feature in plan.features().filter(|f| f.id != except) {
            let Some(handoff) = projection.handoffs.get(&feature.id) else { continue };
            let mut line = format!("- {} ({}): {}", feature.id, feature.title, handoff.claim.summary.trim());
            if !handoff.claim.skipped.is_empty() {
                let items: Vec<String> = handoff
                    .claim
                    .skipped
                    .iter()
                    .map(|s| format!("{} ({})", clause(&s.item), clause(&s.reason)))
                    .collect();
                line.push_str(&format!(" Skipped: {}.", items.join("; ")));
            }
            if !handoff.claim.issues.is_empty() {
                let items: Vec<&str> = handoff.claim.issues.iter().map(|i| clause(&i.description)).collect();
                line.push_str(&format!(" Issues: {}.", items.join("; ")));
            }
            lines.push(line);
        }
        if lines.is_empty() { "(none yet)".into() } else { lines.join("\n") }
    }

    fn plan_excerpt(projection: &Projection, current: &str) -> String {
        let Some(plan) = &projection.plan else { return String::new() };
        let mut out = format!("Plan: {}\n{}\n", plan.title, plan.summary.trim());
        for milestone in &plan.milestones {
            out.push_str(&format!("\n{}: {}\n", milestone.id, milestone.title));
            for feature in &milestone.features {
                let marker = if feature.id == current {
                    "  ← your feature".to_owned()
                } else {
                    match feature.status {
                        WorkStatus::Done => "  (done)".into(),
                        _ => String::new(),
                    }
                };
                out.push_str(&format!("- {} {}{marker}\n", feature.id, feature.title));
            }
        }
        out
    }

    fn course_corrections(projection: &Projection) -> String {
        if projection.course_corrections.is_empty() {
            "(none)".into()
        } else {
            projection.course_corrections.iter().map(|n| format!("- {n}")).collect::<Vec<_>>().join("\n")
        }
    }

    async fn work(
        &mut self,
        projection: &Projection,
        milestone: &Milestone,
        feature: &Feature,
    ) -> Result<(), EngineError> {
        let git = self.shared.git.clone();
        // A feature already in progress was cut off (a crash, a pause): start it over from
        // its base commit with a fresh context.
        let base = match projection.feature_bases.get(&feature.id) {
            Some(base) if feature.status == WorkStatus::InProgress => {
                self.shared.progress(Some(&milestone.id), Some(&feature.id), None, Step::FeatureRestarted);
                self.take_back_tree(projection, base, &format!("{} was cut off; the tree as it was", feature.id))?
            }
            _ => {
                let dirty: Vec<String> = git.dirty_files()?;
                if !dirty.is_empty() && !projection.conflict_pause {
                    // Left by something outside the mission since the last step; never
                    // silently fold someone's edits into a feature.
                    return self.shared.pause(
                        PauseReason::Conflict,
                        format!(
                            "the working tree changed outside the mission: {}. Resume commits these changes as yours \
                             before the mission goes on",
                            dirty.join(", ")
                        ),
                    );
                }
                let head = git.head()?;
                if dirty.is_empty() {
                    head
                } else {
                    self.take_back_tree(projection, &head, "your changes, committed as yours")?
                }
            }
        };
        let run_label = format!("worker-{}", feature.id);
        let focus = format!("{} {}", feature.title, feature.description);
        let values = BTreeMap::from([
            ("feature", format!("{}: {}\n\n{}", feature.id, feature.title, feature.description.trim())),
            ("assertions", self.assertions_text(projection, &feature.assertions)),
            ("checks", self.checks_text()),
            ("plan_excerpt", Mission::plan_excerpt(projection, &feature.id)),
            ("earlier_handoffs", self.handoff_summaries(projection, &feature.id)),
            ("course_corrections", Mission::course_corrections(projection)),
            ("project_instructions", prompts::project_instructions(&self.workspace)),
            ("repo_map", self.repo_map(&focus)),
        ]);
        let system = prompts::render(Template::Worker, &self.workspace, &values)?;
        let first = format!(
            "Feature {}: {}\n\n{}\n\nImplement this feature, then call submit_handoff.",
            feature.id,
            feature.title,
            feature.description.trim()
        );
        let tmp = self.run_tmp()?;
        let tools = self.toolbox(ToolSet::Worker, &focus, tmp)?;
        self.shared.append(Event::FeatureStarted {
            milestone: milestone.id.clone(),
            feature: feature.id.clone(),
            base_commit: base.clone(),
            run_id: run_label.clone(),
        })?;
        self.shared.append(Event::CursorMoved {
            milestone: Some(milestone.id.clone()),
            feature: Some(feature.id.clone()),
            role: Some(Role::Worker),
        })?;
        let request = RunRequest {
            role: Role::Worker,
            label: run_label,
            system,
            first_message: first,
            max_turns: self.options.limits.worker_turns,
            milestone: Some(milestone.id.clone()),
            feature: Some(feature.id.clone()),
        };
        let mut terminal = SubmitHandoff::checking(tools.observed_handle());
        let end = self.run(request, &tools, &mut terminal).await?;
        let observed = tools.observed_commands();
        match end {
            RunEnd::Finished(claim) => {
                self.finish_feature(milestone, feature, &base, HandedOff::Claimed(claim), observed)
            }
            RunEnd::GaveUp(reason) => {
                self.finish_feature(milestone, feature, &base, HandedOff::GaveUp(reason), observed)
            }
            RunEnd::Stopped(stop) => self.stopped(stop),
        }
    }

    /// Commits a feature's work and records its handoff, checked against the commands the run
    /// was seen to run; a worker that gave up gets a handoff saying so, and a finding.
    fn finish_feature(
        &self,
        milestone: &Milestone,
        feature: &Feature,
        base: &str,
        handed_off: HandedOff,
        observed: Vec<ObservedCommand>,
    ) -> Result<(), EngineError> {
        let git = &self.shared.git;
        let subject = format!("{}: {}", feature.id, feature.title);
        let commit = git.commit(&subject, &[("Mission-Id", &self.shared.mission_id), ("Feature-Id", &feature.id)])?;
        let files_changed = git.changed_ranges(base, &commit)?;
        let model = self.models.by_role.get(&Role::Worker).map(|m| m.model.clone()).unwrap_or_default();
        let (claim, gave_up) = match handed_off {
            HandedOff::Claimed(claim) => (claim, None),
            HandedOff::GaveUp(reason) => {
                let claim = HandoffClaim {
                    summary: format!("The worker did not hand off: {reason}."),
                    completed: Vec::new(),
                    skipped: vec![missions_core::mission::SkippedItem { item: feature.title.clone(), reason }],
                    commands: Vec::new(),
                    issues: Vec::new(),
                    procedures_followed: false,
                    procedure_notes: "no handoff was submitted".into(),
                };
                let summary = claim.summary.clone();
                (claim, Some(summary))
            }
        };
        let claimed_commands = claim.commands.clone();
        let record = Handoff {
            feature: feature.id.clone(),
            model,
            claim,
            files_changed,
            commit: Some(commit.clone()),
            observed_commands: observed.clone(),
        };
        self.shared.append(Event::HandoffRecorded { handoff: record })?;
        // SPEC §2 rule 6.
        let observed_list = if observed.is_empty() {
            "none".to_owned()
        } else {
            let exit = |code: Option<i32>| code.map_or("killed".to_owned(), |c| format!("exit {c}"));
            observed.iter().map(|o| format!("`{}` → {}", o.command, exit(o.exit_code))).collect::<Vec<_>>().join("; ")
        };
        for found in rules::check_handoff(&feature.id, &claimed_commands, &observed) {
            self.shared.record_finding(FindingDraft {
                feature: Some(feature.id.clone()),
                evidence: format!("observed commands: {observed_list}"),
                ..FindingDraft::new(&milestone.id, found.validator, found.severity, found.message)
            })?;
        }
        if let Some(summary) = gave_up {
            self.shared.record_finding(FindingDraft {
                feature: Some(feature.id.clone()),
                evidence: summary,
                ..FindingDraft::new(
                    &milestone.id,
                    Validator::Engine,
                    Severity::Warning,
                    format!("the worker for {} ended without a handoff", feature.id),
                )
            })?;
        }
        self.shared.append(Event::FeatureStatusChanged { feature: feature.id.clone(), status: WorkStatus::Done })?;
        self.shared.append(Event::CursorMoved { milestone: Some(milestone.id.clone()), feature: None, role: None })?;
        let committed = Step::FeatureCommitted { commit: commit.clone() };
        self.shared.progress(Some(&milestone.id), Some(&feature.id), Some(Role::Worker), committed);
        Ok(())
    }

    async fn boundary(&mut self, milestone: &Milestone) -> Result<(), EngineError> {
        let projection = self.shared.projection();
        // A rejection starts a new round and allows one more: rounds and their bound count the
        // user's rejections with the orchestrator's corrections.
        let rejections = projection.rejections.get(&milestone.id).cloned().unwrap_or_default();
        let rounds =
            rules::correction_round(&projection, &milestone.id, self.config.config.mission.max_correction_rounds);
        let (round, max_rounds) = (rounds.used, rounds.bound);
        let rejected = projection.boundary_pending.as_deref() == Some(milestone.id.as_str());
        let statuses: BTreeMap<String, AssertionStatus> = projection
            .contract
            .assertions
            .iter()
            .filter(|a| a.milestone == milestone.id)
            .map(|a| (a.id.clone(), a.status))
            .collect();
        let failing: Vec<String> = statuses.iter().filter(|(_, s)| !s.holds()).map(|(id, _)| id.clone()).collect();
        let plan = projection.plan.clone();
        let mut used_ids: BTreeSet<String> = projection.contract.assertions.iter().map(|a| a.id.clone()).collect();
        for m in plan.iter().flat_map(|p| p.milestones.iter()) {
            used_ids.insert(m.id.clone());
            used_ids.extend(m.features.iter().map(|f| f.id.clone()));
        }
        let mut terminal = DecideMilestone {
            rejected,
            milestone: milestone.id.clone(),
            milestones: plan.iter().flat_map(|p| p.milestones.iter().map(|m| m.id.clone())).collect(),
            statuses: statuses.clone(),
            used_ids,
        };
        let assertion_lines: Vec<String> = projection
            .contract
            .assertions
            .iter()
            .filter(|a| a.milestone == milestone.id)
            .map(|a| {
                let evidence = projection
                    .assertion_evidence
                    .get(&a.id)
                    .filter(|e| !e.trim().is_empty())
                    .map(|e| format!("\n  evidence: {}", clip(e, 1_500).replace('\n', "\n  ")))
                    .unwrap_or_default();
                format!("- {} [{}]: {}{evidence}", a.id, a.status, a.description.trim())
            })
            .collect();
        let check_lines: Vec<String> = projection
            .check_runs
            .get(&milestone.id)
            .into_iter()
            .flatten()
            .map(|(command, exit_code, findings)| {
                let exit = exit_code.map_or("killed or not started".to_owned(), |c| format!("exit {c}"));
                format!("- `{command}`: {exit}, {findings} finding(s)")
            })
            .collect();
        let open: Vec<&Finding> = projection
            .findings
            .iter()
            .filter(|f| f.milestone == milestone.id && f.status == FindingStatus::Open)
            .collect();
        let (before, now): (Vec<&Finding>, Vec<&Finding>) =
            open.into_iter().partition(|f| f.message.starts_with(validation::PRE_EXISTING));
        let line_of = |f: &&Finding| {
            let place = f.place();
            let evidence = if f.evidence.is_empty() {
                String::new()
            } else {
                format!("\n  evidence: {}", clip(&f.evidence, 1_500).replace('\n', "\n  "))
            };
            format!("- {} [{} {}]{place}: {}{evidence}", f.id, f.validator, f.severity, f.message)
        };
        let finding_lines: Vec<String> = now.iter().map(line_of).collect();
        let before_lines: Vec<String> = before.iter().map(line_of).collect();
        // The user's feedback is the first thing the boundary reads.
        let feedback = if rejections.is_empty() {
            String::new()
        } else {
            format!(
                "\n\nThe user rejected this milestone with this feedback (latest last):\n{}",
                rejections
                    .iter()
                    .map(|f| format!("- {}", f.trim().replace('\n', "\n  ")))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        };
        let first = format!(
            "Milestone {} boundary (round {} of at most {max_rounds}): {}{feedback}\n\nAssertions:\n{}\n\nThe project's own checks:\n{}\n\nOpen findings:\n{}{}\n\nHandoffs:\n{}\n\nCourse corrections from the user:\n{}",
            milestone.id,
            round + 1,
            milestone.title,
            assertion_lines.join("\n"),
            if check_lines.is_empty() { "(none configured)".into() } else { check_lines.join("\n") },
            if finding_lines.is_empty() { "(none)".into() } else { finding_lines.join("\n") },
            if before_lines.is_empty() {
                String::new()
            } else {
                format!(
                    "\n\nPre-existing findings (already reported on the base commit; they never count against the \
                     milestone, fix them only if you choose):\n{}",
                    before_lines.join("\n")
                )
            },
            self.handoff_summaries(&projection, ""),
            Mission::course_corrections(&projection)
        );
        let values = BTreeMap::from([
            ("round", (round + 1).to_string()),
            ("max_correction_rounds", max_rounds.to_string()),
            ("plan", plan.as_ref().map(missions_core::store::render_plan_markdown).unwrap_or_default()),
            ("contract", missions_core::store::render_contract_markdown(&projection.contract)),
            ("project_instructions", prompts::project_instructions(&self.workspace)),
        ]);
        let system = prompts::render(Template::OrchestratorBoundary, &self.workspace, &values)?;
        let tmp = self.run_tmp()?;
        let tools = self.toolbox(ToolSet::ReadOnly, &milestone.title, tmp)?;
        let request = RunRequest {
            role: Role::Orchestrator,
            label: format!("boundary-{}", milestone.id),
            system,
            first_message: first,
            max_turns: self.options.limits.boundary_turns,
            milestone: Some(milestone.id.clone()),
            feature: None,
        };
        let end = self.run(request, &tools, &mut terminal).await?;
        match end {
            RunEnd::Finished(Decision::Complete { notes, new_assertions }) => {
                let decided = Decided::Complete { notes: clause(notes.lines().next().unwrap_or_default()).to_owned() };
                self.shared.progress(Some(&milestone.id), None, Some(Role::Orchestrator), Step::Decided(decided));
                self.shared.append(Event::DecisionRecorded {
                    milestone: milestone.id.clone(),
                    decision: BoundaryDecision::Complete,
                    notes,
                    corrections: Vec::new(),
                    new_assertions,
                })?;
                self.complete_milestone(milestone)
            }
            RunEnd::Finished(Decision::Correct { notes, corrections, new_assertions }) => {
                // Past the bound nothing of the decision is applied: the user takes over.
                if rounds.exhausted() {
                    self.shared.append(Event::DecisionRecorded {
                        milestone: milestone.id.clone(),
                        decision: BoundaryDecision::Correct,
                        notes,
                        corrections: Vec::new(),
                        new_assertions: Vec::new(),
                    })?;
                    return self.blocked(milestone, &failing, max_rounds);
                }
                let decided =
                    Decided::Correct { round: round + 1, features: corrections.iter().map(|c| c.id.clone()).collect() };
                self.shared.progress(Some(&milestone.id), None, Some(Role::Orchestrator), Step::Decided(decided));
                // One event: the fold adds the features and assertions and reopens the
                // milestone, so a crash never leaves half a decision applied.
                self.shared.append(Event::DecisionRecorded {
                    milestone: milestone.id.clone(),
                    decision: BoundaryDecision::Correct,
                    notes,
                    corrections,
                    new_assertions,
                })
            }
            RunEnd::GaveUp(reason) if rejected => self.shared.pause(
                PauseReason::Blocked,
                format!(
                    "the orchestrator did not decide how to address your rejection of milestone {} ({reason}); \
                     resume to ask it again, or accept the milestone as it is",
                    milestone.id
                ),
            ),
            RunEnd::GaveUp(reason) if failing.is_empty() => {
                // Every assertion is verified; the decision adds nothing the engine has not
                // already checked, so a silent orchestrator does not hold the mission up.
                self.shared.append(Event::DecisionRecorded {
                    milestone: milestone.id.clone(),
                    decision: BoundaryDecision::Complete,
                    notes: format!("the orchestrator did not decide ({reason}); every assertion passes"),
                    corrections: Vec::new(),
                    new_assertions: Vec::new(),
                })?;
                self.complete_milestone(milestone)
            }
            RunEnd::GaveUp(reason) => self.shared.pause(
                PauseReason::Blocked,
                format!(
                    "the orchestrator did not decide milestone {} ({reason}); failing: {}",
                    milestone.id,
                    failing.join(", ")
                ),
            ),
            RunEnd::Stopped(stop) => self.stopped(stop),
        }
    }

    fn blocked(&self, milestone: &Milestone, failing: &[String], max_rounds: u32) -> Result<(), EngineError> {
        self.shared.pause(
            PauseReason::Blocked,
            format!(
                "milestone {} still fails after {max_rounds} correction rounds; failing assertions: {}. Fix them or waive them, then resume",
                milestone.id,
                failing.join(", ")
            ),
        )
    }

    fn complete_milestone(&self, milestone: &Milestone) -> Result<(), EngineError> {
        // SPEC §2 rule 3, checked again here whatever the decision said.
        let projection = self.shared.projection();
        // SPEC §2 rule 1: what is committed was validated against the contract approved.
        if let Err(broken) = rules::contract_intact(&projection) {
            return self.shared.pause(PauseReason::Blocked, broken);
        }
        let open = rules::unmet_assertions(&projection, &milestone.id);
        if !open.is_empty() {
            let ids: Vec<String> = open.into_iter().map(|(id, _)| id).collect();
            return self.shared.pause(
                PauseReason::Blocked,
                format!("milestone {} has assertions that do not pass: {}", milestone.id, ids.join(", ")),
            );
        }
        // Work added while the milestone was being validated (a "fix this finding") comes first.
        let current = projection.plan.as_ref().and_then(|p| p.milestone(&milestone.id)).cloned();
        if current.is_some_and(|m| m.features.iter().any(|f| f.status != WorkStatus::Done)) {
            self.shared.append(Event::MilestoneStatusChanged {
                milestone: milestone.id.clone(),
                status: WorkStatus::InProgress,
            })?;
            return self.shared.set_state(MissionState::Running, None, None);
        }
        // A milestone validated again after a rejection says so, so the branch never holds
        // two identical boundary commits.
        let subject = match projection.rejections.get(&milestone.id).map(Vec::len) {
            Some(n) if n > 0 => format!("milestone {}: {} (after rejection {n})", milestone.id, milestone.title),
            _ => format!("milestone {}: {}", milestone.id, milestone.title),
        };
        let commit = self
            .shared
            .git
            .commit_empty(&subject, &[("Mission-Id", &self.shared.mission_id), ("Milestone-Id", &milestone.id)])?;
        self.shared.append(Event::MilestoneCommitted { milestone: milestone.id.clone(), commit })?;
        self.shared.progress(Some(&milestone.id), None, None, Step::MilestoneValidated);
        self.shared.set_state(MissionState::AwaitingAcceptance, None, None)
    }
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
