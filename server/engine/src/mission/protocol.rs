//! The engine's protocol with its front doors: the commands they send ([`Command`]), what a
//! drive ends in ([`Outcome`]), what they configure ([`Options`], [`Limits`]), what
//! [`Mission::control`] did ([`Control`]), and the errors they branch on ([`EngineError`]).

use missions_core::store::Record;

use super::*;

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

/// Told of each event a mission recorded, with the mission's id.
pub type Subscriber = Arc<dyn Fn(&str, &Record) + Send + Sync>;

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
    /// Told of every event once it is in the log (a group's when the group ends; durable
    /// soon after, see [`Event::urgency`]), with its mission's id: a front end that keeps its
    /// own view of missions (the language server) learns of a change the moment it is
    /// recorded.
    pub appended: Option<Subscriber>,
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
            appended: None,
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
    /// An assertion of the user's own (SPEC §2 rule 1: the contract only grows). Added to a
    /// milestone that waits for acceptance, it sends the milestone back to validation.
    AddAssertion {
        assertion: missions_core::store::AssertionDraft,
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
                | Command::AddAssertion { .. }
        )
    }
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
