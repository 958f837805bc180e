//! The domain types of a mission, in the shapes SPEC §4 fixes for the files on disk.
//!
//! A [`Mission`] is the `mission.json` projection; a [`Plan`] holds [`Milestone`]s which hold
//! [`Feature`]s; the [`Contract`] holds [`Assertion`]s, each with a [`Check`]; workers leave a
//! [`Handoff`] per feature and validators leave [`Finding`]s. All of them are derived from the
//! event log (see `store`), never edited in place.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The lifecycle states of SPEC §2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissionState {
    Planning,
    AwaitingApproval,
    Running,
    Validating,
    AwaitingAcceptance,
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl MissionState {
    /// A terminal state is never left again: no command moves a mission out of it.
    pub fn is_terminal(self) -> bool {
        match self {
            MissionState::Completed | MissionState::Failed | MissionState::Cancelled => true,
            MissionState::Planning
            | MissionState::AwaitingApproval
            | MissionState::Running
            | MissionState::Validating
            | MissionState::AwaitingAcceptance
            | MissionState::Paused => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MissionState::Planning => "planning",
            MissionState::AwaitingApproval => "awaiting_approval",
            MissionState::Running => "running",
            MissionState::Validating => "validating",
            MissionState::AwaitingAcceptance => "awaiting_acceptance",
            MissionState::Paused => "paused",
            MissionState::Completed => "completed",
            MissionState::Failed => "failed",
            MissionState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for MissionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a mission is paused (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    User,
    Budget,
    Provider,
    Conflict,
    Blocked,
}

/// The three model roles plus the two validator agents, each routed to its own model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Orchestrator,
    Worker,
    Reviewer,
    UserTester,
    /// Writes the acceptance tests behind the contract's `acceptance` assertions, before any
    /// code (SPEC §1).
    TestAuthor,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Orchestrator, Role::Worker, Role::Reviewer, Role::UserTester, Role::TestAuthor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Orchestrator => "orchestrator",
            Role::Worker => "worker",
            Role::Reviewer => "reviewer",
            Role::UserTester => "user_tester",
            Role::TestAuthor => "test_author",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a mission came from: a backlog item or free text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub kind: SourceKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Backlog,
    Text,
}

/// Where the mission currently is: which milestone, feature and role is active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub milestone: Option<String>,
    pub feature: Option<String>,
    pub role: Option<Role>,
}

/// Tokens and dollars spent by one role.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoleSpend {
    pub tokens: u64,
    pub usd: f64,
}

/// The budget block of `mission.json`. `used_tokens` counts every token the providers
/// reported: input including cache reads and writes, plus output. `usd_unknown` is set as
/// soon as one call was made to a model without a known price, so a partial dollar figure is
/// never mistaken for the whole.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub used_tokens: u64,
    pub used_usd: f64,
    pub max_tokens: Option<u64>,
    pub max_usd: Option<f64>,
    #[serde(default)]
    pub usd_unknown: bool,
    pub by_role: BTreeMap<Role, RoleSpend>,
}

/// The agent run in progress, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveRun {
    pub run_id: String,
    pub role: Role,
    pub milestone: Option<String>,
    pub feature: Option<String>,
    pub started_at: String,
    /// The model the run talks to, once it has made a call (from the log's usage records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The tool the run called last, with its main argument (`run_command cargo test`). Tool
    /// calls are not events, so only a front door that drives the run knows it; it is absent
    /// elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
}

/// The `mission.json` projection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mission {
    pub id: String,
    pub title: String,
    pub source: Source,
    pub state: MissionState,
    pub pause_reason: Option<PauseReason>,
    /// A human sentence saying why the mission paused or failed, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub branch: String,
    pub base_commit: String,
    pub contract_sha256: Option<String>,
    pub auto_accept: bool,
    pub current: Option<Cursor>,
    pub budget: Budget,
    pub created_at: String,
    pub updated_at: String,
}

/// Status of a milestone or a feature in `plan.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkStatus {
    Pending,
    InProgress,
    Done,
    Validating,
    Validated,
    Accepted,
}

impl WorkStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkStatus::Pending => "pending",
            WorkStatus::InProgress => "in_progress",
            WorkStatus::Done => "done",
            WorkStatus::Validating => "validating",
            WorkStatus::Validated => "validated",
            WorkStatus::Accepted => "accepted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feature {
    pub id: String,
    pub title: String,
    pub description: String,
    pub assertions: Vec<String>,
    pub status: WorkStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Milestone {
    pub id: String,
    pub title: String,
    pub status: WorkStatus,
    pub features: Vec<Feature>,
}

/// The `plan.json` projection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub title: String,
    pub summary: String,
    pub milestones: Vec<Milestone>,
}

impl Plan {
    /// Every feature of every milestone, in plan order.
    pub fn features(&self) -> impl Iterator<Item = &Feature> {
        self.milestones.iter().flat_map(|m| m.features.iter())
    }

    pub fn milestone(&self, id: &str) -> Option<&Milestone> {
        self.milestones.iter().find(|m| m.id == id)
    }

    pub fn feature_mut(&mut self, id: &str) -> Option<&mut Feature> {
        self.milestones.iter_mut().flat_map(|m| m.features.iter_mut()).find(|f| f.id == id)
    }
}

/// How an assertion is checked (SPEC §4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Check {
    Command {
        command: String,
        #[serde(default)]
        expect_exit: i32,
    },
    Review {
        rubric: String,
    },
    UserTest {
        steps: String,
    },
    /// Judged by running the tests the test author wrote for it before any code (SPEC §2 rule
    /// 9). The planner writes only `behaviour`; `files` and `command` are filled in when the
    /// test author's tests are recorded.
    Acceptance {
        behaviour: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        files: Vec<AcceptanceFile>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command: Option<String>,
    },
}

/// One file of an acceptance test: where it sits in the workspace while the test runs, and
/// the SHA-256 of its content (kept under `.missions/<id>/acceptance/<assertion>/`), so the
/// contract's digest covers the tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptanceFile {
    pub path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssertionStatus {
    Pending,
    Passing,
    Failing,
    Waived,
}

impl AssertionStatus {
    /// Whether the assertion lets its milestone pass (SPEC §2 rule 3): it passes, or the user
    /// waived it. Pending (unverified) and failing assertions hold nothing.
    pub fn holds(self) -> bool {
        matches!(self, AssertionStatus::Passing | AssertionStatus::Waived)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assertion {
    pub id: String,
    pub milestone: String,
    pub description: String,
    pub check: Check,
    pub status: AssertionStatus,
}

/// The `contract.json` projection. `sha256` is null until the plan is approved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contract {
    pub sha256: Option<String>,
    pub assertions: Vec<Assertion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedItem {
    pub item: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedCommand {
    pub command: String,
    pub exit_code: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedCommand {
    pub command: String,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffIssue {
    pub severity: Severity,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChange {
    pub path: String,
    /// 1-based inclusive line ranges in the file as committed.
    pub ranges: Vec<[u32; 2]>,
}

/// The worker's own account of a feature, as `submit_handoff` carries it (SPEC §5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffClaim {
    pub summary: String,
    pub completed: Vec<String>,
    pub skipped: Vec<SkippedItem>,
    pub commands: Vec<ClaimedCommand>,
    pub issues: Vec<HandoffIssue>,
    pub procedures_followed: bool,
    pub procedure_notes: String,
}

/// `handoffs/<feature-id>.json`: the worker's own account plus what the engine observed. The
/// claim's fields sit beside the others in the file (SPEC §4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    pub feature: String,
    pub model: String,
    #[serde(flatten)]
    pub claim: HandoffClaim,
    pub files_changed: Vec<FileChange>,
    pub commit: Option<String>,
    pub observed_commands: Vec<ObservedCommand>,
}

/// Which validator produced a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Validator {
    Command,
    /// An acceptance test the test author wrote before the work.
    Acceptance,
    ProjectCheck,
    Review,
    UserTest,
    HandoffMismatch,
    Engine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingStatus {
    Open,
    Fixed,
    Dismissed,
}

impl FindingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingStatus::Open => "open",
            FindingStatus::Fixed => "fixed",
            FindingStatus::Dismissed => "dismissed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub id: String,
    pub milestone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assertion: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    pub validator: Validator,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_line: Option<u32>,
    pub message: String,
    pub evidence: String,
    pub status: FindingStatus,
}

impl PauseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PauseReason::User => "user",
            PauseReason::Budget => "budget",
            PauseReason::Provider => "provider",
            PauseReason::Conflict => "conflict",
            PauseReason::Blocked => "blocked",
        }
    }
}

impl AssertionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AssertionStatus::Pending => "pending",
            AssertionStatus::Passing => "passing",
            AssertionStatus::Failing => "failing",
            AssertionStatus::Waived => "waived",
        }
    }
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

impl Validator {
    pub fn as_str(self) -> &'static str {
        match self {
            Validator::Command => "command",
            Validator::Acceptance => "acceptance",
            Validator::ProjectCheck => "project-check",
            Validator::Review => "review",
            Validator::UserTest => "user-test",
            Validator::HandoffMismatch => "handoff-mismatch",
            Validator::Engine => "engine",
        }
    }
}

/// The lower-case names of SPEC §4, the same as their JSON, for messages.
macro_rules! display_as_str {
    ($($kind:ty),*) => {$(
        impl std::fmt::Display for $kind {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(PauseReason, AssertionStatus, Severity, Validator, WorkStatus, FindingStatus);

/// A finding as a validator or the engine raises it, before the store numbers it; it is
/// recorded open. Build one with [`FindingDraft::new`] and set the optional parts with struct
/// update syntax: `FindingDraft { path: Some(p), ..FindingDraft::new(…) }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingDraft {
    pub milestone: String,
    pub assertion: Option<String>,
    pub feature: Option<String>,
    pub validator: Validator,
    pub severity: Severity,
    pub path: Option<String>,
    pub line: Option<u32>,
    pub end_line: Option<u32>,
    pub message: String,
    pub evidence: String,
}

impl FindingDraft {
    /// A finding about `milestone` with no assertion, feature, place or evidence.
    pub fn new(milestone: &str, validator: Validator, severity: Severity, message: impl Into<String>) -> FindingDraft {
        FindingDraft {
            milestone: milestone.to_owned(),
            assertion: None,
            feature: None,
            validator,
            severity,
            path: None,
            line: None,
            end_line: None,
            message: message.into(),
            evidence: String::new(),
        }
    }

    /// The open finding `id` this draft becomes.
    pub fn into_finding(self, id: String) -> Finding {
        Finding {
            id,
            milestone: self.milestone,
            assertion: self.assertion,
            feature: self.feature,
            validator: self.validator,
            severity: self.severity,
            path: self.path,
            line: self.line,
            end_line: self.end_line,
            message: self.message,
            evidence: self.evidence,
            status: FindingStatus::Open,
        }
    }
}

/// How a recorded command ended, as every report says it: `exit N`, or, without an exit code,
/// `killed or not started` (a signal, a timeout or a command that never ran: the record does
/// not tell them apart).
pub fn exit_text(exit_code: Option<i32>) -> String {
    exit_code.map_or_else(|| "killed or not started".to_owned(), |code| format!("exit {code}"))
}

impl Finding {
    /// The finding on one line, as gates and status lists show it: id, severity, validator,
    /// path:line and the first line of its message.
    pub fn one_line(&self) -> String {
        let first_line = self.message.lines().next().unwrap_or_default();
        format!("{} {} {}{}: {first_line}", self.id, self.severity, self.validator, self.place())
    }

    /// Where the finding is, as ` path:line` (or ` path`), empty when it has no path.
    pub fn place(&self) -> String {
        match (&self.path, self.line) {
            (Some(path), Some(line)) => format!(" {path}:{line}"),
            (Some(path), None) => format!(" {path}"),
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod names_tests {
    use super::*;

    /// `as_str` is the JSON name: messages and files never disagree.
    #[test]
    fn every_name_is_its_json() {
        fn check<T: Serialize + std::fmt::Display>(values: &[T]) {
            for value in values {
                assert_eq!(serde_json::to_value(value).unwrap(), serde_json::Value::String(value.to_string()));
            }
        }
        check(&[
            PauseReason::User,
            PauseReason::Budget,
            PauseReason::Provider,
            PauseReason::Conflict,
            PauseReason::Blocked,
        ]);
        check(&[AssertionStatus::Pending, AssertionStatus::Passing, AssertionStatus::Failing, AssertionStatus::Waived]);
        check(&[Severity::Error, Severity::Warning, Severity::Info]);
        check(&[
            WorkStatus::Pending,
            WorkStatus::InProgress,
            WorkStatus::Done,
            WorkStatus::Validating,
            WorkStatus::Validated,
            WorkStatus::Accepted,
        ]);
        check(&[FindingStatus::Open, FindingStatus::Fixed, FindingStatus::Dismissed]);
        check(&[
            Validator::Command,
            Validator::ProjectCheck,
            Validator::Review,
            Validator::UserTest,
            Validator::HandoffMismatch,
            Validator::Engine,
        ]);
    }
}
