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
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use missions_core::config::{Environment, LoadedConfig};
use missions_core::mission::{
    Assertion, AssertionStatus, Check, Feature, Finding, FindingStatus, Handoff, Milestone, Mission as MissionRecord,
    MissionState, ObservedCommand, PauseReason, Role, Severity, Source, Validator, WorkStatus,
};
use missions_core::model::{ModelProvider, Usage};
use missions_core::pricing::PriceTable;
use missions_core::store::{self, Event, FeatureDraft, MissionStore, Projection, StoreError};
use missions_core::transcript::TranscriptWriter;
use missions_tools::{CommandEnvironment, Sandbox, ToolBox, ToolSet, ToolSettings, WriteGuard};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::{AgentConfig, RunEnd, RunHooks, Stop, Terminal, run_agent};
use crate::git::{Git, GitError};
use crate::prompts::{self, PromptError, Template};
use crate::terminals::{
    DecideMilestone, Decision, FindingsReport, HandoffInput, ReportFindings, SubmitHandoff, SubmitPlan,
};

/// The model that serves one role.
#[derive(Clone)]
pub struct RoleModel {
    pub provider: Arc<dyn ModelProvider>,
    pub model: String,
    pub max_output_tokens: u32,
}

/// Each role's model.
#[derive(Clone, Default)]
pub struct Models {
    pub by_role: BTreeMap<Role, RoleModel>,
}

/// Where a mission is, for progress displays: `M1 · F2 · worker · run_command cargo test`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub mission: String,
    pub milestone: Option<String>,
    pub feature: Option<String>,
    pub role: Option<Role>,
    pub message: String,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = self.role.map(|r| r.as_str().replace('_', "-"));
        let parts: Vec<&str> =
            [self.milestone.as_deref(), self.feature.as_deref(), role.as_deref(), Some(self.message.as_str())]
                .into_iter()
                .flatten()
                .filter(|p| !p.is_empty())
                .collect();
        f.write_str(&parts.join(" · "))
    }
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
    Pause,
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
                | EngineError::WorkspaceBusy { .. }
                | EngineError::Refused(_)
                | EngineError::Store(StoreError::NotFound { .. })
        )
    }
}

/// Everything runs share: the store and the channel for control commands.
struct Shared {
    mission_id: String,
    store: Mutex<MissionStore>,
    inbox: PathBuf,
    git: Git,
    prices: PriceTable,
    progress: Arc<dyn Fn(&Progress) + Send + Sync>,
    provider_names: BTreeMap<Role, String>,
    /// A pause or cancel applied from the inbox while a run was going on.
    stop: Mutex<Option<Stop>>,
    /// Tokens and dollars of model calls in flight, reserved against the budget caps so that
    /// runs calling in parallel cannot pass a cap together.
    reserved: Mutex<(u64, f64)>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn append(&self, event: Event) -> Result<(), EngineError> {
        lock(&self.store).append(event)?;
        Ok(())
    }

    fn projection(&self) -> Projection {
        lock(&self.store).projection().clone()
    }

    fn mission(&self) -> Result<MissionRecord, EngineError> {
        self.projection().mission.ok_or_else(|| EngineError::Io("the mission log has no mission".into()))
    }

    fn progress(&self, milestone: Option<&str>, feature: Option<&str>, role: Option<Role>, message: impl Into<String>) {
        (self.progress)(&Progress {
            mission: self.mission_id.clone(),
            milestone: milestone.map(str::to_owned),
            feature: feature.map(str::to_owned),
            role,
            message: message.into(),
        });
    }

    /// Saves whatever uncommitted changes the tree holds under
    /// `refs/missions/<id>/saved/<time>` before the engine resets it, so nothing in the tree is
    /// ever lost to a reset. Returns the ref, if there was anything to save.
    fn save_tree(&self, why: &str) -> Result<Option<String>, EngineError> {
        let stamp =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        let name = format!("refs/missions/{}/saved/{stamp}", self.mission_id);
        match self.git.snapshot(&name, why)? {
            Some(_) => {
                self.progress(
                    None,
                    None,
                    None,
                    format!("saved the working tree's uncommitted changes at {name} ({why})"),
                );
                Ok(Some(name))
            }
            None => Ok(None),
        }
    }

    fn feature_in_progress(projection: &Projection) -> bool {
        projection
            .plan
            .iter()
            .flat_map(|p| p.milestones.iter())
            .flat_map(|m| m.features.iter())
            .any(|f| f.status == WorkStatus::InProgress)
    }

    /// A feature id not yet used in the plan: `base`, else `base-2`, `base-3`, …
    fn unused_feature_id(projection: &Projection, base: &str) -> String {
        let used: BTreeSet<String> = projection
            .plan
            .iter()
            .flat_map(|p| p.milestones.iter())
            .flat_map(|m| m.features.iter())
            .map(|f| f.id.clone())
            .collect();
        if !used.contains(base) {
            return base.to_owned();
        }
        (2..).map(|n| format!("{base}-{n}")).find(|id| !used.contains(id)).unwrap_or_else(|| base.to_owned())
    }

    fn set_state(
        &self,
        state: MissionState,
        pause_reason: Option<PauseReason>,
        detail: Option<String>,
    ) -> Result<(), EngineError> {
        self.append(Event::StateChanged { state, pause_reason, detail })
    }

    fn pause(&self, reason: PauseReason, detail: String) -> Result<(), EngineError> {
        self.progress(
            None,
            None,
            None,
            format!(
                "paused ({}): {detail}",
                serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
            ),
        );
        self.set_state(MissionState::Paused, Some(reason), Some(detail))
    }

    /// The milestone the mission is working on: the first one not accepted.
    fn current_milestone(projection: &Projection) -> Option<Milestone> {
        projection.plan.as_ref()?.milestones.iter().find(|m| m.status != WorkStatus::Accepted).cloned()
    }

    fn next_finding_id(projection: &Projection) -> String {
        format!("finding-{}", projection.findings.len() + 1)
    }

    fn record_finding(&self, mut finding: Finding) -> Result<String, EngineError> {
        let projection = self.projection();
        finding.id = Shared::next_finding_id(&projection);
        let id = finding.id.clone();
        self.append(Event::FindingRecorded { finding })?;
        Ok(id)
    }

    /// Applies one command to the mission's state.
    fn apply(&self, command: Command) -> Result<(), EngineError> {
        let projection = self.projection();
        let mission = projection.mission.clone().ok_or_else(|| EngineError::Io("no mission".into()))?;
        let state = mission.state;
        let refused = |what: &str| Err(EngineError::Refused(format!("cannot {what}: the mission is {state}")));
        match command {
            Command::Approve => {
                if state != MissionState::AwaitingApproval {
                    return refused("approve the plan");
                }
                let digest = store::contract_digest(&projection.contract.assertions);
                self.append(Event::PlanApproved { contract_sha256: digest })?;
                self.set_state(MissionState::Running, None, None)
            }
            Command::Accept { milestone } => {
                let current = Shared::current_milestone(&projection);
                if state != MissionState::AwaitingAcceptance {
                    return refused("accept a milestone");
                }
                let Some(current) = current.filter(|m| m.status == WorkStatus::Validated) else {
                    return Err(EngineError::Refused("no milestone is waiting for acceptance".into()));
                };
                if let Some(asked) = milestone.filter(|m| *m != current.id) {
                    return Err(EngineError::Refused(format!(
                        "milestone {asked} is not the one waiting; {} is",
                        current.id
                    )));
                }
                self.append(Event::MilestoneAccepted { milestone: current.id.clone() })?;
                let last =
                    projection.plan.as_ref().and_then(|p| p.milestones.last()).is_some_and(|m| m.id == current.id);
                if last {
                    self.progress(Some(&current.id), None, None, "accepted; the mission is complete");
                    self.set_state(MissionState::Completed, None, None)
                } else {
                    self.progress(Some(&current.id), None, None, "accepted");
                    self.set_state(MissionState::Running, None, None)
                }
            }
            Command::Reject { milestone, feedback } => {
                let current = Shared::current_milestone(&projection);
                if state != MissionState::AwaitingAcceptance || current.as_ref().is_none_or(|m| m.id != milestone) {
                    return Err(EngineError::Refused(format!("milestone {milestone} is not waiting for acceptance")));
                }
                if feedback.trim().is_empty() {
                    return Err(EngineError::Refused("a rejection needs feedback saying what to change".into()));
                }
                let milestone_assertions: Vec<String> = projection
                    .contract
                    .assertions
                    .iter()
                    .filter(|a| a.milestone == milestone)
                    .map(|a| a.id.clone())
                    .collect();
                let number = projection
                    .plan
                    .iter()
                    .flat_map(|p| p.milestones.iter())
                    .filter(|m| m.id == milestone)
                    .flat_map(|m| m.features.iter())
                    .filter(|f| f.id.starts_with(&format!("{milestone}-R")))
                    .count()
                    + 1;
                let feature_id = Shared::unused_feature_id(&projection, &format!("{milestone}-R{number}"));
                self.append(Event::MilestoneRejected { milestone: milestone.clone(), feedback: feedback.clone() })?;
                self.append(Event::FeaturesAdded {
                    milestone: milestone.clone(),
                    features: vec![FeatureDraft {
                        id: feature_id,
                        title: "Address the user's feedback".into(),
                        description: format!(
                            "The user reviewed milestone {milestone} and rejected it with this feedback:\n\n{feedback}"
                        ),
                        assertions: milestone_assertions,
                    }],
                    by: Some("user".into()),
                })?;
                self.append(Event::MilestoneStatusChanged { milestone, status: WorkStatus::InProgress })?;
                self.set_state(MissionState::Running, None, None)
            }
            Command::Rollback { milestone } => self.rollback(&projection, &milestone),
            Command::Pause => {
                if state.is_terminal() || state == MissionState::Paused {
                    return refused("pause");
                }
                *lock(&self.stop) = Some(Stop::Paused);
                self.pause(PauseReason::User, "paused by the user".into())
            }
            Command::Resume => {
                if state != MissionState::Paused {
                    return refused("resume");
                }
                let next = Shared::resume_state(&projection);
                self.set_state(next, None, None)
            }
            Command::Cancel => {
                if state.is_terminal() {
                    return refused("cancel");
                }
                *lock(&self.stop) = Some(Stop::Cancelled);
                self.set_state(MissionState::Cancelled, None, Some("cancelled by the user".into()))
            }
            Command::CourseCorrect { note } => {
                if note.trim().is_empty() {
                    return Err(EngineError::Refused("the course-correction note is empty".into()));
                }
                self.append(Event::CourseCorrectionNoted { note })
            }
            Command::DismissFinding { finding, reason } => {
                if !projection.findings.iter().any(|f| f.id == finding && f.status == FindingStatus::Open) {
                    return Err(EngineError::Refused(format!("no open finding {finding}")));
                }
                self.append(Event::FindingStatusChanged { finding, status: FindingStatus::Dismissed, reason })
            }
            Command::FixFinding { finding } => {
                let Some(found) =
                    projection.findings.iter().find(|f| f.id == finding && f.status == FindingStatus::Open).cloned()
                else {
                    return Err(EngineError::Refused(format!("no open finding {finding}")));
                };
                let milestone_status =
                    projection.plan.as_ref().and_then(|p| p.milestone(&found.milestone)).map(|m| m.status);
                if milestone_status == Some(WorkStatus::Accepted) || milestone_status.is_none() || state.is_terminal() {
                    return Err(EngineError::Refused(format!(
                        "milestone {} is already accepted; its findings can only be dismissed",
                        found.milestone
                    )));
                }
                let feature_id = format!("fix-{finding}");
                let already = projection
                    .plan
                    .iter()
                    .flat_map(|p| p.milestones.iter())
                    .flat_map(|m| m.features.iter())
                    .any(|f| f.id == feature_id && f.status != WorkStatus::Done);
                if already {
                    return Err(EngineError::Refused(format!(
                        "{finding} is already being fixed by feature {feature_id}"
                    )));
                }
                let feature_id = Shared::unused_feature_id(&projection, &feature_id);
                let place = match (&found.path, found.line) {
                    (Some(path), Some(line)) => format!(" at {path}:{line}"),
                    (Some(path), None) => format!(" in {path}"),
                    _ => String::new(),
                };
                self.append(Event::FeaturesAdded {
                    milestone: found.milestone.clone(),
                    features: vec![FeatureDraft {
                        id: feature_id,
                        title: format!("Fix {finding}"),
                        description: format!(
                            "The user asked for this finding to be fixed{place}:\n\n{}\n\nEvidence:\n{}",
                            found.message, found.evidence
                        ),
                        assertions: found.assertion.clone().into_iter().collect(),
                    }],
                    by: Some("user".into()),
                })?;
                // The milestone has work again: it is validated anew once the fix is done.
                if matches!(milestone_status, Some(WorkStatus::Validated | WorkStatus::Validating)) {
                    self.append(Event::MilestoneStatusChanged {
                        milestone: found.milestone.clone(),
                        status: WorkStatus::InProgress,
                    })?;
                }
                if state == MissionState::AwaitingAcceptance {
                    self.set_state(MissionState::Running, None, None)?;
                }
                Ok(())
            }
            Command::Waive { assertion, reason } => {
                let Some(found) = projection.contract.assertions.iter().find(|a| a.id == assertion) else {
                    return Err(EngineError::Refused(format!("no assertion {assertion}")));
                };
                if reason.trim().is_empty() {
                    return Err(EngineError::Refused("waiving an assertion needs a reason".into()));
                }
                if found.status == AssertionStatus::Waived {
                    return Ok(());
                }
                self.append(Event::AssertionWaived { assertion, reason })
            }
            Command::SetAutoAccept { auto_accept } => {
                if mission.auto_accept == auto_accept {
                    return Ok(());
                }
                self.append(Event::AutoAcceptSet { auto_accept })
            }
        }
    }

    /// The state a paused mission goes back to.
    fn resume_state(projection: &Projection) -> MissionState {
        let Some(mission) = &projection.mission else { return MissionState::Planning };
        if projection.plan.is_none() {
            return MissionState::Planning;
        }
        if mission.contract_sha256.is_none() {
            return MissionState::AwaitingApproval;
        }
        match Shared::current_milestone(projection) {
            Some(m) if m.status == WorkStatus::Validated => MissionState::AwaitingAcceptance,
            _ => MissionState::Running,
        }
    }

    fn rollback(&self, projection: &Projection, milestone: &str) -> Result<(), EngineError> {
        let mission = projection.mission.as_ref().ok_or_else(|| EngineError::Io("no mission".into()))?;
        if matches!(mission.state, MissionState::Completed | MissionState::Cancelled) {
            return Err(EngineError::Refused(format!("cannot roll back: the mission is {}", mission.state)));
        }
        let Some(base) = projection.milestone_bases.get(milestone).cloned() else {
            return Err(EngineError::Refused(format!(
                "milestone {milestone} has not started, so there is nothing to roll back"
            )));
        };
        let dirty = self.git.dirty_files()?;
        if !dirty.is_empty() {
            // An unfinished feature's changes are the mission's own; anything else is the
            // user's, and a rollback never throws that away.
            if !Shared::feature_in_progress(projection) {
                return Err(EngineError::DirtyTree { files: dirty });
            }
            self.save_tree("an unfinished feature's changes, set aside by a rollback")?;
        }
        let branch = self.git.current_branch()?;
        if branch != mission.branch {
            return Err(EngineError::Refused(format!(
                "the mission's branch {} is not checked out (on {branch})",
                mission.branch
            )));
        }
        let head = self.git.head()?;
        let saved = format!("refs/missions/{}/rolled-back/{}", mission.id, projection.rollbacks + 1);
        // The fact first, then its effects, which `finish_rollback` can redo: a crash between
        // the two is completed on the next drive instead of leaving the log and the branch at
        // odds.
        self.append(Event::MilestoneRolledBack {
            milestone: milestone.to_owned(),
            from_commit: head.clone(),
            to_commit: base.clone(),
            saved_ref: saved.clone(),
        })?;
        self.finish_rollback(&saved, &head, &base)?;
        self.pause(
            PauseReason::User,
            format!(
                "rolled back to the start of {milestone}; the dropped commits are kept at {saved}. Resume to rebuild it"
            ),
        )
    }

    /// The effects of a recorded rollback; harmless to repeat.
    fn finish_rollback(&self, saved: &str, from: &str, to: &str) -> Result<(), EngineError> {
        self.git.create_ref(saved, from)?;
        let head = self.git.head()?;
        if head == from {
            self.save_tree("changes found while finishing a rollback")?;
            self.git.reset_hard(to)?;
        }
        Ok(())
    }

    /// Applies pause, cancel and course corrections that arrived while a run is going on;
    /// other commands stay in the inbox for the next step.
    fn poll_control(&self) -> Option<Stop> {
        if let Some(stop) = lock(&self.stop).clone() {
            return Some(stop);
        }
        self.process_inbox(|command| {
            matches!(
                command,
                Command::Pause
                    | Command::Cancel
                    | Command::CourseCorrect { .. }
                    | Command::DismissFinding { .. }
                    | Command::Waive { .. }
            )
        });
        lock(&self.stop).clone()
    }

    /// Applies the inbox's commands that `now` accepts, oldest first; each applied command
    /// file is replaced by a `.done` file recording whether it took effect, which the process
    /// that queued it waits for.
    fn process_inbox(&self, now: impl Fn(&Command) -> bool) {
        let Ok(entries) = std::fs::read_dir(&self.inbox) else { return };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for file in files {
            let command = match std::fs::read_to_string(&file).map(|text| serde_json::from_str::<Command>(&text)) {
                Ok(Ok(command)) => command,
                Ok(Err(error)) => {
                    acknowledge(&file, Err(format!("not a command: {error}")));
                    continue;
                }
                Err(_) => continue,
            };
            if !now(&command) {
                continue;
            }
            let result = self.apply(command).map_err(|error| error.to_string());
            if let Err(error) = &result {
                tracing::warn!("inbox command not applied: {error}");
            }
            acknowledge(&file, result);
        }
    }
}

/// Replaces an inbox command file by its `.done` acknowledgement.
fn acknowledge(file: &Path, result: Result<(), String>) {
    let done = file.with_extension("done");
    let body = match result {
        Ok(()) => serde_json::json!({"ok": true}),
        Err(error) => serde_json::json!({"ok": false, "error": error}),
    };
    if store::write_atomically(&done, body.to_string().as_bytes()).is_ok() {
        let _ = std::fs::remove_file(file);
    }
}

/// Queues `command` for the process driving the mission.
pub fn write_inbox(inbox: &Path, command: &Command) -> Result<PathBuf, EngineError> {
    std::fs::create_dir_all(inbox).map_err(|e| EngineError::Io(format!("{}: {e}", inbox.display())))?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let name = format!("{nanos:024}-{:04x}.json", fastrand::u16(..));
    let path = inbox.join(name);
    let text = serde_json::to_string(command).map_err(|e| EngineError::Io(e.to_string()))?;
    store::write_atomically(&path, text.as_bytes())?;
    Ok(path)
}

/// Waits up to `limit` for the driver to apply the queued command at `queued`: `Some(Ok)` it
/// took effect, `Some(Err)` it was refused (with why), `None` no driver picked it up.
pub fn wait_for_ack(queued: &Path, limit: Duration) -> Option<Result<(), String>> {
    let done = queued.with_extension("done");
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if let Ok(text) = std::fs::read_to_string(&done) {
            let _ = std::fs::remove_file(&done);
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Some(if value["ok"].as_bool() == Some(true) {
                Ok(())
            } else {
                Err(value["error"].as_str().unwrap_or("refused").to_owned())
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The inbox directory of a mission.
pub fn inbox_dir(workspace: &Path, id: &str) -> PathBuf {
    store::missions_root(workspace).join(id).join("inbox")
}

/// One run's view of the shared state, implementing the agent loop's hooks.
struct RunScope<'a> {
    shared: &'a Shared,
    milestone: Option<String>,
    feature: Option<String>,
    /// What this run's call in flight reserved against the caps.
    reservation: Mutex<(u64, f64)>,
}

impl RunHooks for RunScope<'_> {
    fn before_call(&self, role: Role, model: &str, input_tokens: u64, output_tokens: u64) -> Result<(), Stop> {
        let projection = self.shared.projection();
        let Some(mission) = projection.mission else { return Ok(()) };
        let budget = mission.budget;
        let estimate = input_tokens + output_tokens;
        let estimate_usage = Usage { input: input_tokens, output: output_tokens, ..Usage::default() };
        // A model without a known price cannot be estimated in dollars; the token cap still
        // holds for it.
        let estimate_usd = self.shared.prices.cost(model, model, &estimate_usage).unwrap_or(0.0);
        let mut reserved = lock(&self.shared.reserved);
        if let Some(max) = budget.max_tokens
            && budget.used_tokens + reserved.0 + estimate > max
        {
            return Err(Stop::Budget(format!(
                "the next {role} call (about {estimate} tokens) would take the mission past its cap of {max} tokens ({} used{})",
                budget.used_tokens,
                if reserved.0 > 0 { format!(", {} in calls under way", reserved.0) } else { String::new() }
            )));
        }
        if let Some(max) = budget.max_usd
            && budget.used_usd + reserved.1 + estimate_usd > max
        {
            return Err(Stop::Budget(format!(
                "the next {role} call (about ${estimate_usd:.2}) would take the mission past its cap of ${max:.2} (${:.2} used)",
                budget.used_usd
            )));
        }
        reserved.0 += estimate;
        reserved.1 += estimate_usd;
        *lock(&self.reservation) = (estimate, estimate_usd);
        Ok(())
    }

    fn after_call(&self, role: Role, run_id: &str, model: &str, usage: &Usage, cost_usd: Option<f64>) {
        let (tokens, usd) = std::mem::take(&mut *lock(&self.reservation));
        {
            let mut reserved = lock(&self.shared.reserved);
            reserved.0 = reserved.0.saturating_sub(tokens);
            reserved.1 = (reserved.1 - usd).max(0.0);
        }
        if usage.total() == 0 && cost_usd.is_none() {
            return;
        }
        let event = Event::UsageRecorded {
            role,
            run_id: run_id.to_owned(),
            provider: self.shared.provider_names.get(&role).cloned().unwrap_or_default(),
            model: model.to_owned(),
            usage: *usage,
            cost_usd,
        };
        if let Err(error) = self.shared.append(event) {
            tracing::error!("cannot record usage: {error}");
        }
    }

    fn on_tool(&self, role: Role, name: &str, input: &Value) {
        let detail = ["command", "path", "pattern", "url", "name"]
            .iter()
            .find_map(|key| input.get(*key).and_then(Value::as_str))
            .unwrap_or_default();
        let detail: String = detail.chars().take(80).collect();
        self.shared.progress(
            self.milestone.as_deref(),
            self.feature.as_deref(),
            Some(role),
            format!("{name} {detail}").trim_end().to_owned(),
        );
    }

    fn interrupted(&self) -> Option<Stop> {
        self.shared.poll_control()
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

/// The outcome of one feature's review.
type ReviewResult = Result<(Feature, Vec<String>, RunEnd<FindingsReport>), EngineError>;

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

/// Cache directories that tools create as they run; a validator leaving them is not a change.
const CACHE_DIRS: &[&str] =
    &["__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".tox", "node_modules", "target", ".cache"];

fn is_cache_path(path: &str) -> bool {
    path.split('/').any(|part| CACHE_DIRS.contains(&part))
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
        Ok(Outcome::from_mission(&mission, Shared::current_milestone(&projection).map(|m| m.id)))
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
        let projection = self.shared.projection();
        let mission = self.shared.mission()?;
        let git = &self.shared.git;
        if git.current_branch()? != mission.branch {
            let dirty = git.dirty_files()?;
            if !dirty.is_empty() {
                return Err(EngineError::DirtyTree { files: dirty });
            }
            git.checkout(&mission.branch)?;
        }
        self.finish_interrupted_rollback()?;
        let dirty = git.dirty_files()?;
        let ours = Shared::feature_in_progress(&projection) || mission.state == MissionState::Validating;
        if !dirty.is_empty() && !ours {
            return Err(EngineError::DirtyTree { files: dirty });
        }
        if let Some(launcher) = &self.options.sandbox {
            match missions_tools::sandbox::probe(launcher, &self.workspace) {
                Some(report) => self.shared.progress(None, None, None, format!("sandbox: {}", report.summary())),
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
                    let current = Shared::current_milestone(&projection).map(|m| m.id);
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
        }
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
                ToolSet::Worker => self.options.write_guard.clone(),
                ToolSet::ReadOnly | ToolSet::Reviewer | ToolSet::UserTester => None,
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
            format!("started ({})", model.model),
        );
        let transcript_path = store::missions_root(&self.workspace)
            .join(&self.shared.mission_id)
            .join("transcripts")
            .join(format!("{run_id}.jsonl"));
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
        };
        let hooks = RunScope {
            shared: &self.shared,
            milestone: milestone.clone(),
            feature: feature.clone(),
            reservation: Mutex::new((0, 0.0)),
        };
        let end = run_agent(&config, tools, terminal, &hooks, Some(&transcript)).await;
        tools.finish();
        let (outcome, detail) = match &end {
            RunEnd::Finished(_) => ("finished", "the run called its terminal tool".to_owned()),
            RunEnd::GaveUp(reason) => ("gave_up", reason.clone()),
            RunEnd::Stopped(stop) => ("stopped", format!("{stop:?}")),
        };
        self.shared.append(Event::RunFinished { run_id, outcome: outcome.into(), detail })?;
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
        let values = BTreeMap::from([
            ("project_instructions", prompts::project_instructions(&self.workspace)),
            ("checks", self.checks_text()),
            ("repo_map", self.repo_map(&mission.source.text)),
        ]);
        let system = prompts::render(Template::OrchestratorPlan, &self.workspace, &values)?;
        let first = format!("Plan this backlog item:\n\n{}", mission.source.text.trim());
        let tmp = self.run_tmp()?;
        let tools = self.toolbox(ToolSet::ReadOnly, &mission.source.text, tmp)?;
        let mut terminal = SubmitPlan;
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
        match self.run(request, &tools, &mut terminal).await? {
            RunEnd::Finished((plan, contract)) => {
                self.shared.append(Event::PlanSubmitted { plan, contract })?;
                self.shared.progress(None, None, Some(Role::Orchestrator), "plan submitted; waiting for approval");
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
        let Some(milestone) = Shared::current_milestone(projection) else {
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
        for feature in plan.milestones.iter().flat_map(|m| m.features.iter()).filter(|f| f.id != except) {
            let Some(handoff) = projection.handoffs.get(&feature.id) else { continue };
            let mut line = format!("- {} ({}): {}", feature.id, feature.title, handoff.summary.trim());
            if !handoff.skipped.is_empty() {
                line.push_str(&format!(
                    " Skipped: {}.",
                    handoff.skipped.iter().map(|s| format!("{} ({})", s.item, s.reason)).collect::<Vec<_>>().join("; ")
                ));
            }
            if !handoff.issues.is_empty() {
                line.push_str(&format!(
                    " Issues: {}.",
                    handoff.issues.iter().map(|i| i.description.clone()).collect::<Vec<_>>().join("; ")
                ));
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
                self.shared.progress(Some(&milestone.id), Some(&feature.id), None, "restarting from its base commit");
                self.shared.save_tree(&format!("{} was cut off; its unfinished changes", feature.id))?;
                git.reset_hard(base)?;
                base.clone()
            }
            _ => {
                let dirty: Vec<String> = git.dirty_files()?;
                if !dirty.is_empty() {
                    // Left by something outside the mission since the last step; never
                    // silently fold someone's edits into a feature.
                    return self.shared.pause(
                        PauseReason::Conflict,
                        format!("the working tree changed outside the mission: {}", dirty.join(", ")),
                    );
                }
                git.head()?
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
        let end = self.run(request, &tools, &mut SubmitHandoff).await?;
        let observed = tools.observed_commands();
        match end {
            RunEnd::Finished(handoff) => self.finish_feature(milestone, feature, &base, handoff, observed, true),
            RunEnd::GaveUp(reason) => {
                let handoff = HandoffInput {
                    summary: format!("The worker did not hand off: {reason}."),
                    completed: Vec::new(),
                    skipped: vec![missions_core::mission::SkippedItem {
                        item: feature.title.clone(),
                        reason: reason.clone(),
                    }],
                    commands: Vec::new(),
                    issues: Vec::new(),
                    procedures_followed: false,
                    procedure_notes: "no handoff was submitted".into(),
                };
                self.finish_feature(milestone, feature, &base, handoff, observed, false)
            }
            RunEnd::Stopped(stop) => self.stopped(stop),
        }
    }

    fn finish_feature(
        &self,
        milestone: &Milestone,
        feature: &Feature,
        base: &str,
        handoff: HandoffInput,
        observed: Vec<ObservedCommand>,
        handed_off: bool,
    ) -> Result<(), EngineError> {
        let git = &self.shared.git;
        let subject = format!("{}: {}", feature.id, feature.title);
        let commit =
            git.commit(&subject, &[("Mission-Id", &self.shared.mission_id), ("Feature-Id", &feature.id)], true)?;
        let files_changed = git.changed_ranges(base, &commit)?;
        let model = self.models.by_role.get(&Role::Worker).map(|m| m.model.clone()).unwrap_or_default();
        let record = Handoff {
            feature: feature.id.clone(),
            model,
            summary: handoff.summary.clone(),
            completed: handoff.completed.clone(),
            skipped: handoff.skipped.clone(),
            commands: handoff.commands.clone(),
            issues: handoff.issues.clone(),
            procedures_followed: handoff.procedures_followed,
            procedure_notes: handoff.procedure_notes.clone(),
            files_changed,
            commit: Some(commit.clone()),
            observed_commands: observed.clone(),
        };
        self.shared.append(Event::HandoffRecorded { handoff: record })?;
        // SPEC §2 rule 6: a claimed command that was never run, or whose exit code differs
        // from the one observed, is a finding.
        let normalise = |c: &str| c.split_whitespace().collect::<Vec<_>>().join(" ");
        for claimed in &handoff.commands {
            let runs: Vec<&ObservedCommand> =
                observed.iter().filter(|o| normalise(&o.command) == normalise(&claimed.command)).collect();
            let message = if runs.is_empty() {
                Some(format!(
                    "{}'s handoff claims `{}` (exit {}), which the worker never ran",
                    feature.id, claimed.command, claimed.exit_code
                ))
            } else if !runs.iter().any(|o| o.exit_code == Some(claimed.exit_code)) {
                let seen: Vec<String> =
                    runs.iter().map(|o| o.exit_code.map_or("killed".to_owned(), |c| c.to_string())).collect();
                Some(format!(
                    "{}'s handoff claims `{}` exited {}, but it exited {}",
                    feature.id,
                    claimed.command,
                    claimed.exit_code,
                    seen.join(", ")
                ))
            } else {
                None
            };
            if let Some(message) = message {
                self.shared.record_finding(Finding {
                    id: String::new(),
                    milestone: milestone.id.clone(),
                    assertion: None,
                    feature: Some(feature.id.clone()),
                    validator: Validator::HandoffMismatch,
                    severity: Severity::Error,
                    path: None,
                    line: None,
                    end_line: None,
                    message,
                    evidence: format!(
                        "observed commands: {}",
                        if observed.is_empty() {
                            "none".into()
                        } else {
                            observed
                                .iter()
                                .map(|o| format!("`{}` → {:?}", o.command, o.exit_code))
                                .collect::<Vec<_>>()
                                .join("; ")
                        }
                    ),
                    status: FindingStatus::Open,
                })?;
            }
        }
        if !handed_off {
            self.shared.record_finding(Finding {
                id: String::new(),
                milestone: milestone.id.clone(),
                assertion: None,
                feature: Some(feature.id.clone()),
                validator: Validator::Engine,
                severity: Severity::Warning,
                path: None,
                line: None,
                end_line: None,
                message: format!("the worker for {} ended without a handoff", feature.id),
                evidence: handoff.summary.clone(),
                status: FindingStatus::Open,
            })?;
        }
        self.shared.append(Event::FeatureStatusChanged { feature: feature.id.clone(), status: WorkStatus::Done })?;
        self.shared.append(Event::CursorMoved { milestone: Some(milestone.id.clone()), feature: None, role: None })?;
        self.shared.progress(
            Some(&milestone.id),
            Some(&feature.id),
            Some(Role::Worker),
            format!("committed {}", &commit[..commit.len().min(8)]),
        );
        Ok(())
    }

    /// Reverts whatever a validator left in the tree, recording it unless it is only caches.
    fn revert_validator_changes(
        &self,
        milestone: &str,
        head: &str,
        validator: Validator,
        who: &str,
    ) -> Result<(), EngineError> {
        let git = &self.shared.git;
        let dirty = git.dirty_files()?;
        if dirty.is_empty() {
            return Ok(());
        }
        let changed: Vec<&String> = dirty.iter().filter(|p| !is_cache_path(p)).collect();
        let saved = if changed.is_empty() { None } else { self.shared.save_tree(&format!("changes left by {who}"))? };
        git.reset_hard(head)?;
        if changed.is_empty() {
            return Ok(());
        }
        self.shared.record_finding(Finding {
            id: String::new(),
            milestone: milestone.to_owned(),
            assertion: None,
            feature: None,
            validator,
            severity: Severity::Warning,
            path: changed.first().map(|p| (*p).clone()),
            line: None,
            end_line: None,
            message: format!(
                "{who} changed the working tree ({}); validators must not, and the changes were reverted",
                changed.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
            ),
            evidence: format!(
                "files: {}{}",
                changed.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", "),
                saved.map(|r| format!("; the changes are kept at {r}")).unwrap_or_default()
            ),
            status: FindingStatus::Open,
        })?;
        Ok(())
    }

    async fn validate(&mut self, projection: &Projection) -> Result<(), EngineError> {
        let Some(milestone) = Shared::current_milestone(projection) else {
            return self.shared.set_state(MissionState::Running, None, None);
        };
        // Recovery: a crash after the milestone commit, or after corrective features were
        // added, left the state behind the plan.
        if milestone.status == WorkStatus::Validated {
            return self.shared.set_state(MissionState::AwaitingAcceptance, None, None);
        }
        if milestone.features.iter().any(|f| f.status != WorkStatus::Done) {
            self.shared.append(Event::MilestoneStatusChanged {
                milestone: milestone.id.clone(),
                status: WorkStatus::InProgress,
            })?;
            return self.shared.set_state(MissionState::Running, None, None);
        }
        let git = self.shared.git.clone();
        let head = git.head()?;
        // Anything left from an interrupted validation goes, saved first.
        if !git.dirty_files()?.is_empty() {
            self.shared.save_tree("found in the tree when validation began")?;
            git.reset_hard(&head)?;
        }
        let findings_before = projection.findings.len();
        let assertions: Vec<Assertion> = projection
            .contract
            .assertions
            .iter()
            .filter(|a| a.milestone == milestone.id && a.status != AssertionStatus::Waived)
            .cloned()
            .collect();
        let tmp = self.run_tmp()?;
        let environment = self.command_environment(None, tmp);
        let timeout = Duration::from_secs(self.config.config.mission.max_command_timeout_s.max(1));

        // The contract's command checks, run by the engine itself.
        for assertion in &assertions {
            let Check::Command { command, expect_exit } = &assertion.check else { continue };
            self.shared.progress(Some(&milestone.id), None, None, format!("checking {}: {command}", assertion.id));
            let result =
                missions_tools::command::run_command(&environment, command, timeout).await.map_err(EngineError::Io)?;
            let passed = !result.timed_out && result.exit_code == Some(*expect_exit);
            let evidence = clip(&result.describe(timeout), 8_000);
            self.shared.append(Event::AssertionChecked {
                assertion: assertion.id.clone(),
                status: if passed { AssertionStatus::Passing } else { AssertionStatus::Failing },
                evidence: evidence.clone(),
            })?;
            if !passed {
                let problems = crate::checks::parse_output(&self.workspace, &result.output);
                let place = problems.iter().rev().find(|p| p.severity == Severity::Error).or(problems.last());
                let outcome = if result.timed_out {
                    "timed out".to_owned()
                } else {
                    format!("exited {}", result.exit_code.map_or("by a signal".into(), |c| c.to_string()))
                };
                self.shared.record_finding(Finding {
                    id: String::new(),
                    milestone: milestone.id.clone(),
                    assertion: Some(assertion.id.clone()),
                    feature: None,
                    validator: Validator::Command,
                    severity: Severity::Error,
                    path: place.map(|p| p.path.clone()),
                    line: place.map(|p| p.line),
                    end_line: place.and_then(|p| p.end_line),
                    message: format!(
                        "{}: `{command}` {outcome} (expected {expect_exit}): {}",
                        assertion.id,
                        assertion.description.trim()
                    ),
                    evidence,
                    status: FindingStatus::Open,
                })?;
            }
            self.revert_validator_changes(
                &milestone.id,
                &head,
                Validator::Command,
                &format!("the check of {}", assertion.id),
            )?;
        }

        // The project's own checks, parsed into file:line findings.
        for check in self.config.config.mission.checks.clone() {
            self.shared.progress(Some(&milestone.id), None, None, format!("project check: {check}"));
            let result =
                missions_tools::command::run_command(&environment, &check, timeout).await.map_err(EngineError::Io)?;
            let problems = crate::checks::parse_output(&self.workspace, &result.output);
            let evidence = clip(&result.describe(timeout), 4_000);
            for problem in &problems {
                self.shared.record_finding(Finding {
                    id: String::new(),
                    milestone: milestone.id.clone(),
                    assertion: None,
                    feature: None,
                    validator: Validator::ProjectCheck,
                    severity: problem.severity,
                    path: Some(problem.path.clone()),
                    line: Some(problem.line),
                    end_line: problem.end_line,
                    message: format!("`{check}`: {}", problem.message),
                    evidence: evidence.clone(),
                    status: FindingStatus::Open,
                })?;
            }
            if result.exit_code != Some(0) && problems.is_empty() {
                self.shared.record_finding(Finding {
                    id: String::new(),
                    milestone: milestone.id.clone(),
                    assertion: None,
                    feature: None,
                    validator: Validator::ProjectCheck,
                    severity: Severity::Error,
                    path: None,
                    line: None,
                    end_line: None,
                    message: format!(
                        "`{check}` failed ({})",
                        result.exit_code.map_or("killed".into(), |c| format!("exit {c}"))
                    ),
                    evidence,
                    status: FindingStatus::Open,
                })?;
            }
            self.revert_validator_changes(&milestone.id, &head, Validator::ProjectCheck, &format!("`{check}`"))?;
        }

        // One review agent per feature, in parallel. Each review assertion is judged by the
        // reviewer of the last feature that claims it (the most recent work on it).
        let mut judged_by: BTreeMap<String, String> = BTreeMap::new();
        for feature in &milestone.features {
            for id in &feature.assertions {
                if assertions.iter().any(|a| &a.id == id && matches!(a.check, Check::Review { .. })) {
                    judged_by.insert(id.clone(), feature.id.clone());
                }
            }
        }
        // A review assertion no feature claims (one the orchestrator added for this milestone
        // earlier) is judged with the milestone's last feature, so it never stays unverified.
        if let Some(last) = milestone.features.last() {
            for assertion in assertions.iter().filter(|a| matches!(a.check, Check::Review { .. })) {
                judged_by.entry(assertion.id.clone()).or_insert_with(|| last.id.clone());
            }
        }
        let reviews: Vec<(Feature, Vec<String>)> = milestone
            .features
            .iter()
            .map(|f| (f.clone(), judged_by.iter().filter(|(_, by)| **by == f.id).map(|(a, _)| a.clone()).collect()))
            .collect();
        let concurrency = self.options.limits.review_concurrency.max(1);
        let this = &*self;
        let milestone_ref = &milestone;
        let reports: Vec<ReviewResult> = futures_util::stream::iter(reviews)
            .map(|(feature, asked)| async move {
                let end = this.review(projection, milestone_ref, &feature, &asked).await?;
                Ok((feature, asked, end))
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut stop = None;
        for report in reports {
            let (feature, asked, end) = report?;
            match end {
                RunEnd::Finished(report) => {
                    self.record_report(&milestone.id, Some(&feature.id), Validator::Review, report)?
                }
                RunEnd::GaveUp(reason) => self.unverified(
                    &milestone.id,
                    Some(&feature.id),
                    &asked,
                    &format!("the reviewer of {} gave up: {reason}", feature.id),
                )?,
                RunEnd::Stopped(s) => stop = Some(s),
            }
        }
        self.revert_validator_changes(&milestone.id, &head, Validator::Review, "a review agent")?;
        if let Some(stop) = stop {
            return self.stopped(stop);
        }

        // The user-testing agent, for the user-test assertions.
        let user_tests: Vec<String> =
            assertions.iter().filter(|a| matches!(a.check, Check::UserTest { .. })).map(|a| a.id.clone()).collect();
        if !user_tests.is_empty() {
            let end = self.user_test(projection, &milestone, &user_tests).await?;
            self.revert_validator_changes(&milestone.id, &head, Validator::UserTest, "the user-testing agent")?;
            match end {
                RunEnd::Finished(report) => self.record_report(&milestone.id, None, Validator::UserTest, report)?,
                RunEnd::GaveUp(reason) => self.unverified(
                    &milestone.id,
                    None,
                    &user_tests,
                    &format!("the user-testing agent gave up: {reason}"),
                )?,
                RunEnd::Stopped(stop) => return self.stopped(stop),
            }
        }

        self.mark_fixed(&milestone.id, findings_before)?;
        self.boundary(&milestone).await
    }

    async fn review(
        &self,
        projection: &Projection,
        milestone: &Milestone,
        feature: &Feature,
        asked: &[String],
    ) -> Result<RunEnd<FindingsReport>, EngineError> {
        let handoff = projection.handoffs.get(&feature.id);
        let diff = match (projection.feature_bases.get(&feature.id), handoff.and_then(|h| h.commit.clone())) {
            (Some(base), Some(commit)) => self.shared.git.diff(base, &commit, 60_000)?,
            _ => "(no commit recorded for this feature)".into(),
        };
        let handoff_text = handoff
            .map(|h| serde_json::to_string_pretty(h).unwrap_or_default())
            .unwrap_or_else(|| "(no handoff)".into());
        let first = format!(
            "Review feature {} ({}) of milestone {}.\n\nAssertions to judge: {}\n{}\n\nThe feature:\n{}\n\nThe worker's handoff:\n{}\n\nThe feature's diff:\n```diff\n{}\n```",
            feature.id,
            feature.title,
            milestone.id,
            if asked.is_empty() { "none (report findings only)".into() } else { asked.join(", ") },
            self.assertions_text(projection, asked),
            feature.description.trim(),
            clip(&handoff_text, 8_000),
            diff
        );
        self.judge(Role::Reviewer, first, asked, &feature.description, milestone, Some(feature)).await
    }

    /// Runs a validator agent (a reviewer, or the user tester) asked to judge `asked`.
    async fn judge(
        &self,
        role: Role,
        first_message: String,
        asked: &[String],
        focus: &str,
        milestone: &Milestone,
        feature: Option<&Feature>,
    ) -> Result<RunEnd<FindingsReport>, EngineError> {
        let (template, set, max_turns) = match role {
            Role::UserTester => (Template::UserTester, ToolSet::UserTester, self.options.limits.user_tester_turns),
            Role::Reviewer | Role::Orchestrator | Role::Worker => {
                (Template::Reviewer, ToolSet::Reviewer, self.options.limits.reviewer_turns)
            }
        };
        let values = BTreeMap::from([("project_instructions", prompts::project_instructions(&self.workspace))]);
        let system = prompts::render(template, &self.workspace, &values)?;
        let tools = self.toolbox(set, focus, self.run_tmp()?)?;
        let mut terminal = ReportFindings { assertions: asked.to_vec() };
        let label = match feature {
            Some(feature) => format!("review-{}", feature.id),
            None => format!("user-test-{}", milestone.id),
        };
        let request = RunRequest {
            role,
            label,
            system,
            first_message,
            max_turns,
            milestone: Some(milestone.id.clone()),
            feature: feature.map(|f| f.id.clone()),
        };
        self.run(request, &tools, &mut terminal).await
    }

    async fn user_test(
        &self,
        projection: &Projection,
        milestone: &Milestone,
        asked: &[String],
    ) -> Result<RunEnd<FindingsReport>, EngineError> {
        let first = format!(
            "User-test milestone {} ({}).\n\nAssertions to judge: {}\n{}",
            milestone.id,
            milestone.title,
            asked.join(", "),
            self.assertions_text(projection, asked)
        );
        self.judge(Role::UserTester, first, asked, &milestone.title, milestone, None).await
    }

    fn record_report(
        &self,
        milestone: &str,
        feature: Option<&str>,
        validator: Validator,
        report: FindingsReport,
    ) -> Result<(), EngineError> {
        for verdict in &report.verdicts {
            self.shared.append(Event::AssertionChecked {
                assertion: verdict.assertion.clone(),
                status: if verdict.pass { AssertionStatus::Passing } else { AssertionStatus::Failing },
                evidence: verdict.evidence.clone(),
            })?;
            if !verdict.pass {
                // A failing verdict is a finding even when the agent reported no separate one,
                // so every failing assertion has something to act on.
                let described =
                    report.findings.iter().any(|f| f.assertion.as_deref() == Some(verdict.assertion.as_str()));
                if !described {
                    self.shared.record_finding(Finding {
                        id: String::new(),
                        milestone: milestone.to_owned(),
                        assertion: Some(verdict.assertion.clone()),
                        feature: feature.map(str::to_owned),
                        validator,
                        severity: Severity::Error,
                        path: None,
                        line: None,
                        end_line: None,
                        message: format!("{} does not hold", verdict.assertion),
                        evidence: verdict.evidence.clone(),
                        status: FindingStatus::Open,
                    })?;
                }
            }
        }
        for reported in report.findings {
            let message = match &reported.assertion {
                Some(a) if !reported.message.starts_with(a.as_str()) => format!("{a}: {}", reported.message),
                _ => reported.message.clone(),
            };
            self.shared.record_finding(Finding {
                id: String::new(),
                milestone: milestone.to_owned(),
                assertion: reported.assertion,
                feature: feature.map(str::to_owned),
                validator,
                severity: reported.severity,
                path: reported.path,
                line: reported.line,
                end_line: reported.end_line,
                message,
                evidence: String::new(),
                status: FindingStatus::Open,
            })?;
        }
        Ok(())
    }

    fn unverified(
        &self,
        milestone: &str,
        feature: Option<&str>,
        assertions: &[String],
        reason: &str,
    ) -> Result<(), EngineError> {
        for id in assertions {
            self.shared.append(Event::AssertionChecked {
                assertion: id.clone(),
                status: AssertionStatus::Pending,
                evidence: reason.to_owned(),
            })?;
        }
        self.shared.record_finding(Finding {
            id: String::new(),
            milestone: milestone.to_owned(),
            assertion: assertions.first().cloned(),
            feature: feature.map(str::to_owned),
            validator: Validator::Engine,
            severity: Severity::Warning,
            path: None,
            line: None,
            end_line: None,
            message: format!("not verified ({}): {reason}", assertions.join(", ")),
            evidence: reason.to_owned(),
            status: FindingStatus::Open,
        })?;
        Ok(())
    }

    /// Findings of earlier validations of `milestone` that this one did not reproduce.
    fn mark_fixed(&self, milestone: &str, findings_before: usize) -> Result<(), EngineError> {
        let projection = self.shared.projection();
        let key = |f: &Finding| (f.validator, f.assertion.clone(), f.path.clone(), f.message.clone());
        let current: BTreeSet<_> = projection.findings[findings_before..].iter().map(key).collect();
        let passing: BTreeSet<&str> = projection
            .contract
            .assertions
            .iter()
            .filter(|a| matches!(a.status, AssertionStatus::Passing | AssertionStatus::Waived))
            .map(|a| a.id.as_str())
            .collect();
        for finding in &projection.findings[..findings_before] {
            // Engine findings about an assertion ("not verified") are fixed once it passes;
            // handoff mismatches are facts about a past run and stay until dismissed.
            let revalidated = matches!(
                finding.validator,
                Validator::Command | Validator::ProjectCheck | Validator::Review | Validator::UserTest
            ) || (finding.validator == Validator::Engine && finding.assertion.is_some());
            if finding.milestone != milestone || finding.status != FindingStatus::Open || !revalidated {
                continue;
            }
            let assertion_passes = finding.assertion.as_deref().is_some_and(|a| passing.contains(a));
            if assertion_passes || !current.contains(&key(finding)) {
                self.shared.append(Event::FindingStatusChanged {
                    finding: finding.id.clone(),
                    status: FindingStatus::Fixed,
                    reason: Some("not reproduced by the next validation".into()),
                })?;
            }
        }
        Ok(())
    }

    async fn boundary(&mut self, milestone: &Milestone) -> Result<(), EngineError> {
        let projection = self.shared.projection();
        let round = projection.correction_rounds.get(&milestone.id).copied().unwrap_or(0);
        let max_rounds = self.config.config.mission.max_correction_rounds;
        let statuses: BTreeMap<String, AssertionStatus> = projection
            .contract
            .assertions
            .iter()
            .filter(|a| a.milestone == milestone.id)
            .map(|a| (a.id.clone(), a.status))
            .collect();
        let failing: Vec<String> = statuses
            .iter()
            .filter(|(_, s)| !matches!(s, AssertionStatus::Passing | AssertionStatus::Waived))
            .map(|(id, _)| id.clone())
            .collect();
        let plan = projection.plan.clone();
        let mut used_ids: BTreeSet<String> = projection.contract.assertions.iter().map(|a| a.id.clone()).collect();
        for m in plan.iter().flat_map(|p| p.milestones.iter()) {
            used_ids.insert(m.id.clone());
            used_ids.extend(m.features.iter().map(|f| f.id.clone()));
        }
        let mut terminal = DecideMilestone {
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
                format!(
                    "- {} [{}]: {}",
                    a.id,
                    serde_json::to_value(a.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                    a.description.trim()
                )
            })
            .collect();
        let finding_lines: Vec<String> = projection
            .findings
            .iter()
            .filter(|f| f.milestone == milestone.id && f.status == FindingStatus::Open)
            .map(|f| {
                let place = match (&f.path, f.line) {
                    (Some(p), Some(l)) => format!(" {p}:{l}"),
                    (Some(p), None) => format!(" {p}"),
                    _ => String::new(),
                };
                let evidence = if f.evidence.is_empty() {
                    String::new()
                } else {
                    format!("\n  evidence: {}", clip(&f.evidence, 1_500).replace('\n', "\n  "))
                };
                format!(
                    "- {} [{} {:?}]{place}: {}{evidence}",
                    f.id,
                    serde_json::to_value(f.validator)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    f.severity,
                    f.message
                )
            })
            .collect();
        let first = format!(
            "Milestone {} boundary (round {} of at most {max_rounds}): {}\n\nAssertions:\n{}\n\nOpen findings:\n{}\n\nHandoffs:\n{}\n\nCourse corrections from the user:\n{}",
            milestone.id,
            round + 1,
            milestone.title,
            assertion_lines.join("\n"),
            if finding_lines.is_empty() { "(none)".into() } else { finding_lines.join("\n") },
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
                self.shared.append(Event::DecisionRecorded {
                    milestone: milestone.id.clone(),
                    decision: "complete".into(),
                    notes,
                })?;
                if !new_assertions.is_empty() {
                    self.shared
                        .append(Event::AssertionsAdded { assertions: new_assertions, by: "orchestrator".into() })?;
                }
                self.complete_milestone(milestone)
            }
            RunEnd::Finished(Decision::Correct { notes, corrections, new_assertions }) => {
                self.shared.append(Event::DecisionRecorded {
                    milestone: milestone.id.clone(),
                    decision: "correct".into(),
                    notes,
                })?;
                // Past the bound nothing of the decision is applied: the user takes over.
                if round >= max_rounds {
                    return self.blocked(milestone, &failing, max_rounds);
                }
                if !new_assertions.is_empty() {
                    self.shared
                        .append(Event::AssertionsAdded { assertions: new_assertions, by: "orchestrator".into() })?;
                }
                self.shared.progress(
                    Some(&milestone.id),
                    None,
                    Some(Role::Orchestrator),
                    format!("correction round {}: {} feature(s)", round + 1, corrections.len()),
                );
                self.shared.append(Event::FeaturesAdded {
                    milestone: milestone.id.clone(),
                    features: corrections,
                    by: Some("orchestrator".into()),
                })?;
                self.shared.append(Event::MilestoneStatusChanged {
                    milestone: milestone.id.clone(),
                    status: WorkStatus::InProgress,
                })?;
                self.shared.set_state(MissionState::Running, None, None)
            }
            RunEnd::GaveUp(reason) if failing.is_empty() => {
                // Every assertion is verified; the decision adds nothing the engine has not
                // already checked, so a silent orchestrator does not hold the mission up.
                self.shared.append(Event::DecisionRecorded {
                    milestone: milestone.id.clone(),
                    decision: "complete".into(),
                    notes: format!("the orchestrator did not decide ({reason}); every assertion passes"),
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
        let open: Vec<&Assertion> = projection
            .contract
            .assertions
            .iter()
            .filter(|a| {
                a.milestone == milestone.id && !matches!(a.status, AssertionStatus::Passing | AssertionStatus::Waived)
            })
            .collect();
        if !open.is_empty() {
            let ids: Vec<String> = open.iter().map(|a| a.id.clone()).collect();
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
        let subject = format!("milestone {}: {}", milestone.id, milestone.title);
        let commit = self.shared.git.commit(
            &subject,
            &[("Mission-Id", &self.shared.mission_id), ("Milestone-Id", &milestone.id)],
            false,
        )?;
        self.shared.append(Event::MilestoneCommitted { milestone: milestone.id.clone(), commit })?;
        self.shared.progress(Some(&milestone.id), None, None, "validated; waiting for acceptance");
        self.shared.set_state(MissionState::AwaitingAcceptance, None, None)
    }
}
