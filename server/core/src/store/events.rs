//! The closed set of facts a mission records. Every projection is a fold of these.
//!
//! An [`Event`] says what happened, never what to do; the engine decides, then records. Each
//! line of `events.jsonl` is a [`Record`]: the event plus its sequence number, timestamp and
//! the SHA-256 of the previous line, which chains the log so truncation and tampering show.

use serde::{Deserialize, Serialize};

use crate::mission::{
    AssertionStatus, Check, Finding, FindingStatus, Handoff, MissionState, PauseReason, Role, Source, WorkStatus,
};
use crate::model::Usage;

/// A feature as the orchestrator submits it (no status yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureDraft {
    pub id: String,
    pub title: String,
    pub description: String,
    pub assertions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MilestoneDraft {
    pub id: String,
    pub title: String,
    pub features: Vec<FeatureDraft>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanDraft {
    pub title: String,
    pub summary: String,
    pub milestones: Vec<MilestoneDraft>,
}

/// An assertion as submitted: what `submit_plan` and `decide_milestone` carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertionDraft {
    pub id: String,
    pub milestone: String,
    pub description: String,
    pub check: Check,
}

/// Who added features or assertions to a plan already approved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Author {
    /// The orchestrator, at a milestone boundary (a correction round).
    Orchestrator,
    /// The user (a rejection, a "fix this finding", an assertion of their own).
    User,
}

/// The orchestrator's decision at a milestone boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoundaryDecision {
    Complete,
    Correct,
}

/// How an agent run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// The run called its terminal tool.
    Finished,
    /// The run ended without it (turn limit, loop guard, a model that stopped).
    GaveUp,
    /// The mission stopped it (pause, cancel, budget, provider).
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    MissionCreated {
        id: String,
        title: String,
        source: Source,
        branch: String,
        base_commit: String,
        auto_accept: bool,
        max_tokens: Option<u64>,
        max_usd: Option<f64>,
    },
    PlanSubmitted {
        plan: PlanDraft,
        contract: Vec<AssertionDraft>,
    },
    /// The user approved the plan; the contract is locked with this digest.
    PlanApproved {
        contract_sha256: String,
    },
    StateChanged {
        state: MissionState,
        #[serde(default)]
        pause_reason: Option<PauseReason>,
        #[serde(default)]
        detail: Option<String>,
    },
    /// Where the mission's attention is now; `None` fields clear.
    CursorMoved {
        milestone: Option<String>,
        feature: Option<String>,
        role: Option<Role>,
    },
    MilestoneStatusChanged {
        milestone: String,
        status: WorkStatus,
    },
    FeatureStatusChanged {
        feature: String,
        status: WorkStatus,
    },
    /// Corrective features for a milestone: from the orchestrator at a boundary (a
    /// correction round), or from the user (a rejection, a "fix this finding").
    FeaturesAdded {
        milestone: String,
        features: Vec<FeatureDraft>,
        #[serde(default)]
        by: Option<Author>,
    },
    /// Work on a milestone began at this commit (the point a rollback returns to).
    MilestoneStarted {
        milestone: String,
        base_commit: String,
    },
    /// A worker run began a feature from this commit; a run cut off restarts from it.
    FeatureStarted {
        milestone: String,
        feature: String,
        base_commit: String,
        run_id: String,
    },
    /// An agent run began.
    RunStarted {
        run_id: String,
        role: Role,
        #[serde(default)]
        milestone: Option<String>,
        #[serde(default)]
        feature: Option<String>,
    },
    /// An agent run ended, with a sentence saying why.
    RunFinished {
        run_id: String,
        outcome: RunOutcome,
        detail: String,
    },
    /// The orchestrator's decision at a milestone boundary. A correction carries its
    /// corrective features and any new assertions, so that one decision is one event: a crash
    /// can never leave half of it applied.
    DecisionRecorded {
        milestone: String,
        decision: BoundaryDecision,
        notes: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        corrections: Vec<FeatureDraft>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        new_assertions: Vec<AssertionDraft>,
    },
    /// The milestone validated and its boundary commit was made.
    MilestoneCommitted {
        milestone: String,
        commit: String,
    },
    MilestoneAccepted {
        milestone: String,
    },
    /// The user rejected the milestone; `correction` is the corrective feature the feedback
    /// became (absent in logs written before it was part of this event).
    MilestoneRejected {
        milestone: String,
        feedback: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        correction: Option<FeatureDraft>,
        /// The milestone goes back to its boundary run, which reads the feedback and decides
        /// the corrective features and the assertions they claim (SPEC §3).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        to_boundary: bool,
    },
    /// The branch went back to the milestone's base; the dropped commits are kept at `saved_ref`.
    MilestoneRolledBack {
        milestone: String,
        from_commit: String,
        to_commit: String,
        saved_ref: String,
    },
    HandoffRecorded {
        handoff: Handoff,
    },
    AssertionsAdded {
        assertions: Vec<AssertionDraft>,
        by: Author,
    },
    AssertionChecked {
        assertion: String,
        status: AssertionStatus,
        evidence: String,
    },
    /// Only the user can waive an assertion; the reason is kept.
    AssertionWaived {
        assertion: String,
        reason: String,
    },
    FindingRecorded {
        finding: Finding,
    },
    FindingStatusChanged {
        finding: String,
        status: FindingStatus,
        #[serde(default)]
        reason: Option<String>,
    },
    UsageRecorded {
        role: Role,
        run_id: String,
        provider: String,
        model: String,
        usage: Usage,
        cost_usd: Option<f64>,
    },
    AutoAcceptSet {
        auto_accept: bool,
    },
    /// The budget caps changed (the configuration was edited before a resume).
    BudgetSet {
        max_tokens: Option<u64>,
        max_usd: Option<f64>,
    },
    CourseCorrectionNoted {
        note: String,
    },
    /// The test author's tests for the contract's `acceptance` assertions, each shown to fail
    /// on the base commit, recorded before the plan gate (SPEC §2 rule 9). Approving the plan
    /// approves them; their contents' digests are part of the contract's.
    AcceptanceTestsRecorded {
        tests: Vec<AcceptanceTest>,
    },
    /// A review agent's report on a feature was recorded, with the commit it reviewed: in a
    /// later validation the feature is reviewed again only if its files changed since then.
    FeatureReviewed {
        feature: String,
        commit: String,
    },
    /// Recorded before a worker's file tool writes, and after each command a run started: the
    /// content each changed path has now (`sha256` absent: the path was deleted). A resume
    /// resets only what it can prove is the mission's own unfinished work this way.
    WorkRecorded {
        files: Vec<WorkFile>,
    },
    /// The contract's command checks, each run once on the base commit before the plan was
    /// accepted (SPEC §5): one that passed already guards against regressions, one that
    /// failed proves the new work.
    DryRunRecorded {
        results: Vec<DryRunResult>,
    },
    /// The project's own checks, run once on the base commit before any work: what was
    /// already broken is not the mission's (its later findings are marked pre-existing).
    BaselineRecorded {
        checks: Vec<BaselineCheck>,
    },
    /// The Markdown backlog item the mission came from was ticked by this commit, the last of
    /// a completed mission's branch.
    BacklogItemTicked {
        commit: String,
    },
    /// One of the project's own checks ran during a milestone's validation.
    ProjectCheckRan {
        milestone: String,
        command: String,
        #[serde(default)]
        exit_code: Option<i32>,
        findings: u32,
    },
    /// Changes the user made in the working tree while the mission was paused for a conflict,
    /// committed as the user's change (SPEC §8) before the mission went on.
    UserChangesCommitted {
        commit: String,
        files: Vec<String>,
    },
}

/// The acceptance test of one assertion, as its author wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptanceTest {
    pub assertion: String,
    /// Run in the workspace root with the files in place; exit 0 passes.
    pub command: String,
    #[serde(default)]
    pub notes: String,
    pub files: Vec<AcceptanceTestFile>,
    /// What the command did on the base commit, before any work: it must have failed.
    #[serde(default)]
    pub base_exit: Option<i32>,
    #[serde(default)]
    pub base_output: String,
}

/// One file of an acceptance test: its place in the workspace while the test runs, and its
/// content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptanceTestFile {
    pub path: String,
    pub content: String,
}

impl AcceptanceTestFile {
    /// The SHA-256 of the content, as the contract records it.
    pub fn sha256(&self) -> String {
        crate::sha256_hex(self.content.as_bytes())
    }
}

/// One command check tried on the base commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRunResult {
    pub assertion: String,
    pub command: String,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Whether it already passed (exited as its check expects).
    pub passed: bool,
}

/// One project check's result on the base commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineCheck {
    pub command: String,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The problems it reported: (path, line, message).
    pub problems: Vec<(String, u32, String)>,
}

/// One path of a [`Event::WorkRecorded`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkFile {
    pub path: String,
    #[serde(default)]
    pub sha256: Option<String>,
}

/// When the log makes an event durable ([`Event::urgency`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// Before the append returns, or, through `MissionStore::append_ahead`, before the effect
    /// it precedes (which waits for it).
    WriteAhead,
    /// At once, in the background; the views that show it are written after.
    Soon,
    /// With the next sync of any kind.
    Progress,
}

impl Event {
    /// When the log makes this event durable. Losing an event to a power cut (with what
    /// follows it) leaves the log as a crash just before it would have, which a resume handles,
    /// so long as no effect outside the log went ahead of it: a worker's write to the tree
    /// waits for the event that records it ([`Urgency::WriteAhead`]), and a write to the
    /// repository waits for the whole log (the engine's git barrier). A process crash never
    /// loses an event: its line is written at once.
    pub fn urgency(&self) -> Urgency {
        match self {
            // The proof that a change to the tree is the mission's (SPEC §8): written before
            // the change, or the resume would take the mission's own work for the user's.
            Event::WorkRecorded { .. } => Urgency::WriteAhead,
            // Progress: the spend a lost `usage_recorded` reported is bounded by the calls
            // since the last sync, and the rest is redone or re-reported.
            Event::RunStarted { .. }
            | Event::RunFinished { .. }
            | Event::UsageRecorded { .. }
            | Event::CursorMoved { .. }
            | Event::FeatureStarted { .. }
            | Event::FeatureReviewed { .. } => Urgency::Progress,
            _ => Urgency::Soon,
        }
    }

    /// The `type` tag, for logs and messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::MissionCreated { .. } => "mission_created",
            Event::PlanSubmitted { .. } => "plan_submitted",
            Event::PlanApproved { .. } => "plan_approved",
            Event::StateChanged { .. } => "state_changed",
            Event::CursorMoved { .. } => "cursor_moved",
            Event::MilestoneStatusChanged { .. } => "milestone_status_changed",
            Event::FeatureStatusChanged { .. } => "feature_status_changed",
            Event::FeaturesAdded { .. } => "features_added",
            Event::MilestoneStarted { .. } => "milestone_started",
            Event::FeatureStarted { .. } => "feature_started",
            Event::RunStarted { .. } => "run_started",
            Event::RunFinished { .. } => "run_finished",
            Event::DecisionRecorded { .. } => "decision_recorded",
            Event::MilestoneCommitted { .. } => "milestone_committed",
            Event::MilestoneAccepted { .. } => "milestone_accepted",
            Event::MilestoneRejected { .. } => "milestone_rejected",
            Event::MilestoneRolledBack { .. } => "milestone_rolled_back",
            Event::HandoffRecorded { .. } => "handoff_recorded",
            Event::AssertionsAdded { .. } => "assertions_added",
            Event::AssertionChecked { .. } => "assertion_checked",
            Event::AssertionWaived { .. } => "assertion_waived",
            Event::FindingRecorded { .. } => "finding_recorded",
            Event::FindingStatusChanged { .. } => "finding_status_changed",
            Event::UsageRecorded { .. } => "usage_recorded",
            Event::AutoAcceptSet { .. } => "auto_accept_set",
            Event::BudgetSet { .. } => "budget_set",
            Event::CourseCorrectionNoted { .. } => "course_correction_noted",
            Event::FeatureReviewed { .. } => "feature_reviewed",
            Event::AcceptanceTestsRecorded { .. } => "acceptance_tests_recorded",
            Event::WorkRecorded { .. } => "work_recorded",
            Event::UserChangesCommitted { .. } => "user_changes_committed",
            Event::ProjectCheckRan { .. } => "project_check_ran",
            Event::BacklogItemTicked { .. } => "backlog_item_ticked",
            Event::BaselineRecorded { .. } => "baseline_recorded",
            Event::DryRunRecorded { .. } => "dry_run_recorded",
        }
    }
}

/// One line of `events.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub ts: String,
    /// Hex SHA-256 of the previous line's bytes (without its newline); 64 zeros for the first.
    pub prev: String,
    #[serde(flatten)]
    pub event: Event,
}
