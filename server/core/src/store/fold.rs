//! The fold: events in, projections out.
//!
//! [`Projection::apply`] is the only place that turns events into the state users see in
//! `mission.json`, `plan.json`, `contract.json`, `handoffs/` and `findings.json`. It is
//! deliberately forgiving (an event about an unknown feature changes nothing) because legality
//! is the engine's job before it records; the fold only has to be deterministic, so that
//! replaying a log always rebuilds the same files.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::events::{AssertionDraft, Event, FeatureDraft, Record};
use crate::mission::{
    Assertion, AssertionStatus, Budget, Check, Contract, Cursor, Feature, Finding, Handoff, Milestone, Mission,
    MissionState, Plan, RoleSpend, WorkStatus,
};

/// Everything a mission's log says, folded.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Projection {
    pub mission: Option<Mission>,
    pub plan: Option<Plan>,
    pub contract: Contract,
    pub handoffs: BTreeMap<String, Handoff>,
    pub findings: Vec<Finding>,
    /// Course-correction notes, in the order the user gave them.
    pub course_corrections: Vec<String>,
    /// The commit each started milestone began at.
    pub milestone_bases: BTreeMap<String, String>,
    /// The commit each started feature began at.
    pub feature_bases: BTreeMap<String, String>,
    /// Correction rounds the orchestrator has started, per milestone.
    pub correction_rounds: BTreeMap<String, u32>,
    /// The boundary commit of each validated milestone.
    pub milestone_commits: BTreeMap<String, String>,
    /// How many rollbacks the mission has had (numbers the saved refs).
    pub rollbacks: u32,
    /// The last rollback: (saved ref, from commit, to commit), so a driver can finish one that
    /// a crash interrupted.
    pub last_rollback: Option<(String, String, String)>,
    /// The agent run in progress, if one started and has not finished.
    pub active_run: Option<crate::mission::ActiveRun>,
    /// How many events were folded.
    pub events: u64,
    /// The last commit the log records on the mission branch: where `HEAD` must be (or one
    /// feature commit past it, when a crash fell between a feature's commit and its handoff).
    pub head: Option<String>,
    /// What the unfinished step (a feature's worker, a validation) has done to the working
    /// tree so far: every content each path it changed has had (`None`: deleted). A path whose
    /// content is not among these is not the mission's to reset.
    pub unfinished_work: BTreeMap<String, BTreeSet<Option<String>>>,
    /// The mission was paused because the user's changes met the mission's (SPEC §8); on
    /// resume the user's changes are committed as theirs instead of being refused.
    pub conflict_pause: bool,
    /// A milestone whose boundary decision was "complete" but whose boundary commit is not
    /// recorded yet: a resume carries the decision out instead of validating again.
    pub decided_complete: Option<String>,
    /// The contract's command checks tried on the base commit when the plan was accepted.
    pub dry_run: Vec<super::events::DryRunResult>,
    /// The project's checks on the base commit, once recorded.
    pub baseline: Option<Vec<super::events::BaselineCheck>>,
    /// A milestone the user rejected, waiting for its boundary run to decide the correction.
    pub boundary_pending: Option<String>,
    /// The user's rejections of each milestone, their feedback in order.
    pub rejections: BTreeMap<String, Vec<String>>,
    /// How many assertions the contract held when the plan was approved: the ones its digest
    /// covers. Assertions are only appended, so they are the contract's first this many.
    pub approved_assertions: usize,
    /// Counts the events that changed `findings`, so a reader that keeps a copy of them knows
    /// when its copy is still current.
    pub findings_revision: u64,
    /// The evidence of each assertion's latest check.
    pub assertion_evidence: BTreeMap<String, String>,
    /// When each assertion was last checked: the number of events folded when its check was
    /// recorded, so a validation knows which verdicts are its own.
    pub assertion_checked_at: BTreeMap<String, u64>,
    /// The test author's tests, by assertion.
    pub acceptance_tests: BTreeMap<String, super::events::AcceptanceTest>,
    /// The commit each feature's code was last reviewed at (SPEC §5: a feature whose files did
    /// not change since is not reviewed again). A feature that starts again loses it.
    pub reviewed: BTreeMap<String, String>,
    /// The project's checks in each milestone's latest validation: (command, exit code,
    /// findings).
    pub check_runs: BTreeMap<String, Vec<(String, Option<i32>, u32)>>,
}

fn feature_from(draft: &FeatureDraft) -> Feature {
    Feature {
        id: draft.id.clone(),
        title: draft.title.clone(),
        description: draft.description.clone(),
        assertions: draft.assertions.clone(),
        status: WorkStatus::Pending,
    }
}

fn assertion_from(draft: &AssertionDraft) -> Assertion {
    Assertion {
        id: draft.id.clone(),
        milestone: draft.milestone.clone(),
        description: draft.description.clone(),
        check: draft.check.clone(),
        status: AssertionStatus::Pending,
    }
}

impl Projection {
    fn milestone_mut(&mut self, id: &str) -> Option<&mut Milestone> {
        self.plan.as_mut().and_then(|p| p.milestones.iter_mut().find(|m| m.id == id))
    }

    /// A rollback to the start of `milestone` undoes it and every milestone after it: their
    /// features are pending again and their assertions unverified.
    fn reopen_from(&mut self, milestone: &str) {
        let Some(plan) = self.plan.as_mut() else { return };
        let Some(start) = plan.milestones.iter().position(|m| m.id == milestone) else { return };
        let reopened: Vec<String> = plan.milestones[start..].iter().map(|m| m.id.clone()).collect();
        for m in &mut plan.milestones[start..] {
            m.status = WorkStatus::Pending;
            for f in &mut m.features {
                f.status = WorkStatus::Pending;
                self.feature_bases.remove(&f.id);
            }
        }
        for assertion in self.contract.assertions.iter_mut().filter(|a| reopened.contains(&a.milestone)) {
            if assertion.status != AssertionStatus::Waived {
                assertion.status = AssertionStatus::Pending;
            }
        }
        for id in &reopened {
            self.milestone_bases.remove(id);
            self.milestone_commits.remove(id);
            self.correction_rounds.remove(id);
        }
    }

    /// Adds corrective features to `milestone`. Ids are unique by the engine's checks; a
    /// duplicate would make the first feature's status stand for both, so it is never added.
    fn add_features(&mut self, milestone: &str, features: &[FeatureDraft]) {
        let known: Vec<String> = self
            .plan
            .iter()
            .flat_map(|p| p.milestones.iter())
            .flat_map(|m| m.features.iter().map(|f| f.id.clone()))
            .collect();
        if let Some(m) = self.milestone_mut(milestone) {
            m.features.extend(features.iter().filter(|f| !known.contains(&f.id)).map(feature_from));
        }
    }

    /// A milestone with new work: in progress again, its old boundary commit history, and the
    /// mission running.
    fn reopen_milestone(&mut self, milestone: &str) {
        if let Some(m) = self.milestone_mut(milestone) {
            m.status = WorkStatus::InProgress;
        }
        self.milestone_commits.remove(milestone);
        self.decided_complete = None;
        self.boundary_pending = None;
        if let Some(mission) = &mut self.mission
            && !mission.state.is_terminal()
        {
            mission.state = MissionState::Running;
            mission.pause_reason = None;
            mission.detail = None;
        }
    }

    /// Folds a whole log.
    /// The findings, about to change.
    fn bump_findings(&mut self) -> &mut Vec<crate::mission::Finding> {
        self.findings_revision += 1;
        &mut self.findings
    }

    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a Record>) -> Projection {
        let mut projection = Projection::default();
        for record in records {
            projection.apply(record);
        }
        projection
    }

    pub fn apply(&mut self, record: &Record) {
        self.events += 1;
        let ts = &record.ts;
        match &record.event {
            Event::MissionCreated { id, title, source, branch, base_commit, auto_accept, max_tokens, max_usd } => {
                self.mission = Some(Mission {
                    id: id.clone(),
                    title: title.clone(),
                    source: source.clone(),
                    state: MissionState::Planning,
                    pause_reason: None,
                    detail: None,
                    branch: branch.clone(),
                    base_commit: base_commit.clone(),
                    contract_sha256: None,
                    auto_accept: *auto_accept,
                    current: None,
                    budget: Budget { max_tokens: *max_tokens, max_usd: *max_usd, ..Budget::default() },
                    created_at: ts.clone(),
                    updated_at: ts.clone(),
                });
                self.head = Some(base_commit.clone());
            }
            Event::PlanSubmitted { plan, contract } => {
                self.plan = Some(Plan {
                    title: plan.title.clone(),
                    summary: plan.summary.clone(),
                    milestones: plan
                        .milestones
                        .iter()
                        .map(|m| Milestone {
                            id: m.id.clone(),
                            title: m.title.clone(),
                            status: WorkStatus::Pending,
                            features: m.features.iter().map(feature_from).collect(),
                        })
                        .collect(),
                });
                self.contract = Contract { sha256: None, assertions: contract.iter().map(assertion_from).collect() };
            }
            Event::PlanApproved { contract_sha256 } => {
                self.contract.sha256 = Some(contract_sha256.clone());
                self.approved_assertions = self.contract.assertions.len();
                if let Some(mission) = &mut self.mission {
                    mission.contract_sha256 = Some(contract_sha256.clone());
                    // Approval is one event: the mission runs from the moment it is recorded.
                    if mission.state == MissionState::AwaitingApproval {
                        mission.state = MissionState::Running;
                        mission.pause_reason = None;
                        mission.detail = None;
                    }
                }
            }
            Event::StateChanged { state, pause_reason, detail } => {
                if *state == MissionState::Paused {
                    self.conflict_pause |= *pause_reason == Some(crate::mission::PauseReason::Conflict);
                    // A decision the engine refused to carry out (assertions still failing)
                    // is not carried out on resume either: the milestone is validated again.
                    self.decided_complete = None;
                }
                if let Some(mission) = &mut self.mission {
                    mission.state = *state;
                    mission.pause_reason = *pause_reason;
                    mission.detail = detail.clone();
                }
            }
            Event::CursorMoved { milestone, feature, role } => {
                if let Some(mission) = &mut self.mission {
                    mission.current = if milestone.is_none() && feature.is_none() && role.is_none() {
                        None
                    } else {
                        Some(Cursor { milestone: milestone.clone(), feature: feature.clone(), role: *role })
                    };
                }
            }
            Event::MilestoneStatusChanged { milestone, status } => {
                if let Some(m) = self.milestone_mut(milestone) {
                    m.status = *status;
                }
                // Validation starts from the last feature's commit, on a clean tree, and its
                // checks are run anew.
                if *status == WorkStatus::Validating {
                    self.unfinished_work.clear();
                    self.check_runs.remove(milestone);
                }
                // Reopened work (a rejection, a fix) makes the old boundary commit history,
                // not the milestone's.
                if matches!(status, WorkStatus::Pending | WorkStatus::InProgress) {
                    self.milestone_commits.remove(milestone);
                    self.decided_complete = None;
                    self.boundary_pending = None;
                }
            }
            Event::FeatureStatusChanged { feature, status } => {
                if let Some(f) = self.plan.as_mut().and_then(|p| p.feature_mut(feature)) {
                    f.status = *status;
                }
            }
            Event::FeaturesAdded { milestone, features, by } => {
                self.add_features(milestone, features);
                if *by == Some(super::events::Author::Orchestrator) {
                    *self.correction_rounds.entry(milestone.clone()).or_insert(0) += 1;
                }
            }
            Event::MilestoneStarted { milestone, base_commit } => {
                self.milestone_bases.insert(milestone.clone(), base_commit.clone());
                self.head = Some(base_commit.clone());
                if let Some(m) = self.milestone_mut(milestone) {
                    m.status = WorkStatus::InProgress;
                }
            }
            Event::FeatureStarted { milestone: _, feature, base_commit, run_id: _ } => {
                self.feature_bases.insert(feature.clone(), base_commit.clone());
                self.reviewed.remove(feature);
                self.head = Some(base_commit.clone());
                self.unfinished_work.clear();
                self.conflict_pause = false;
                if let Some(f) = self.plan.as_mut().and_then(|p| p.feature_mut(feature)) {
                    f.status = WorkStatus::InProgress;
                }
            }
            Event::RunStarted { run_id, role, milestone, feature } => {
                self.active_run = Some(crate::mission::ActiveRun {
                    run_id: run_id.clone(),
                    role: *role,
                    milestone: milestone.clone(),
                    feature: feature.clone(),
                    started_at: ts.clone(),
                    model: None,
                    tool: None,
                });
            }
            Event::RunFinished { run_id, .. } => {
                if self.active_run.as_ref().is_some_and(|run| &run.run_id == run_id) {
                    self.active_run = None;
                }
            }
            Event::DecisionRecorded { milestone, decision, corrections, new_assertions, .. } => {
                self.contract.assertions.extend(new_assertions.iter().map(assertion_from));
                if *decision == super::events::BoundaryDecision::Complete {
                    self.decided_complete = Some(milestone.clone());
                } else if !corrections.is_empty() {
                    self.add_features(milestone, corrections);
                    *self.correction_rounds.entry(milestone.clone()).or_insert(0) += 1;
                    self.reopen_milestone(milestone);
                }
            }
            Event::MilestoneRejected { milestone, correction, feedback, to_boundary } => {
                self.rejections.entry(milestone.clone()).or_default().push(feedback.clone());
                if *to_boundary {
                    // A rejection starts a new round (the boundary numbers rounds with the
                    // rejections, and each rejection allows one more).
                    self.boundary_pending = Some(milestone.clone());
                    self.milestone_commits.remove(milestone);
                    self.decided_complete = None;
                    if let Some(m) = self.milestone_mut(milestone) {
                        m.status = WorkStatus::Validating;
                    }
                    if let Some(mission) = &mut self.mission
                        && !mission.state.is_terminal()
                    {
                        mission.state = MissionState::Validating;
                        mission.pause_reason = None;
                        mission.detail = None;
                    }
                }
                if let Some(correction) = correction {
                    self.add_features(milestone, std::slice::from_ref(correction));
                    self.reopen_milestone(milestone);
                }
            }
            Event::MilestoneCommitted { milestone, commit } => {
                self.milestone_commits.insert(milestone.clone(), commit.clone());
                self.head = Some(commit.clone());
                self.decided_complete = None;
                self.boundary_pending = None;
                if let Some(m) = self.milestone_mut(milestone) {
                    m.status = WorkStatus::Validated;
                }
            }
            Event::MilestoneAccepted { milestone } => {
                if let Some(m) = self.milestone_mut(milestone) {
                    m.status = WorkStatus::Accepted;
                }
                // An acceptance is one event: the mission moves on (or completes) the moment
                // it is recorded, so no crash can strand it at the gate it just passed.
                let last = self.plan.as_ref().and_then(|p| p.milestones.last()).is_some_and(|m| &m.id == milestone);
                if let Some(mission) = &mut self.mission
                    && mission.state == MissionState::AwaitingAcceptance
                {
                    mission.state = if last { MissionState::Completed } else { MissionState::Running };
                    mission.pause_reason = None;
                    mission.detail = None;
                }
            }
            Event::MilestoneRolledBack { milestone, from_commit, to_commit, saved_ref } => {
                self.rollbacks += 1;
                self.last_rollback = Some((saved_ref.clone(), from_commit.clone(), to_commit.clone()));
                self.head = Some(to_commit.clone());
                self.unfinished_work.clear();
                self.conflict_pause = false;
                self.reopen_from(milestone);
            }
            Event::HandoffRecorded { handoff } => {
                self.handoffs.insert(handoff.feature.clone(), handoff.clone());
                if let Some(commit) = &handoff.commit {
                    self.head = Some(commit.clone());
                }
                self.unfinished_work.clear();
            }
            Event::AssertionsAdded { assertions, .. } => {
                self.contract.assertions.extend(assertions.iter().map(assertion_from));
            }
            Event::AssertionChecked { assertion, status, evidence } => {
                self.assertion_evidence.insert(assertion.clone(), evidence.clone());
                self.assertion_checked_at.insert(assertion.clone(), self.events);
                // A waiver is the user's and outlasts any verdict.
                if let Some(a) = self.contract.assertions.iter_mut().find(|a| &a.id == assertion)
                    && a.status != AssertionStatus::Waived
                {
                    a.status = *status;
                }
            }
            Event::AssertionWaived { assertion, .. } => {
                if let Some(a) = self.contract.assertions.iter_mut().find(|a| &a.id == assertion) {
                    a.status = AssertionStatus::Waived;
                }
            }
            Event::FindingRecorded { finding } => match self.bump_findings().iter_mut().find(|f| f.id == finding.id) {
                Some(existing) => *existing = finding.clone(),
                None => self.findings.push(finding.clone()),
            },
            Event::FindingStatusChanged { finding, status, .. } => {
                if let Some(f) = self.bump_findings().iter_mut().find(|f| &f.id == finding) {
                    f.status = *status;
                }
            }
            Event::UsageRecorded { role, run_id, model, usage, cost_usd, .. } => {
                if let Some(run) = self.active_run.as_mut().filter(|run| &run.run_id == run_id) {
                    run.model = Some(model.clone());
                }
                if let Some(mission) = &mut self.mission {
                    let budget = &mut mission.budget;
                    let tokens = usage.total();
                    budget.used_tokens += tokens;
                    let spend = budget.by_role.entry(*role).or_insert_with(RoleSpend::default);
                    spend.tokens += tokens;
                    match cost_usd {
                        Some(usd) => {
                            budget.used_usd += usd;
                            spend.usd += usd;
                        }
                        None => budget.usd_unknown = true,
                    }
                }
            }
            Event::BudgetSet { max_tokens, max_usd } => {
                if let Some(mission) = &mut self.mission {
                    mission.budget.max_tokens = *max_tokens;
                    mission.budget.max_usd = *max_usd;
                }
            }
            Event::AutoAcceptSet { auto_accept } => {
                if let Some(mission) = &mut self.mission {
                    mission.auto_accept = *auto_accept;
                }
            }
            Event::CourseCorrectionNoted { note } => self.course_corrections.push(note.clone()),
            Event::AcceptanceTestsRecorded { tests } => {
                for test in tests {
                    if let Some(assertion) = self.contract.assertions.iter_mut().find(|a| a.id == test.assertion)
                        && let Check::Acceptance { files, command, .. } = &mut assertion.check
                    {
                        *files = test
                            .files
                            .iter()
                            .map(|f| crate::mission::AcceptanceFile { path: f.path.clone(), sha256: f.sha256() })
                            .collect();
                        *command = Some(test.command.clone());
                    }
                    self.acceptance_tests.insert(test.assertion.clone(), test.clone());
                }
            }
            Event::FeatureReviewed { feature, commit } => {
                self.reviewed.insert(feature.clone(), commit.clone());
            }
            Event::WorkRecorded { files } => {
                for file in files {
                    self.unfinished_work.entry(file.path.clone()).or_default().insert(file.sha256.clone());
                }
            }
            Event::BacklogItemTicked { commit } => self.head = Some(commit.clone()),
            Event::BaselineRecorded { checks } => self.baseline = Some(checks.clone()),
            Event::DryRunRecorded { results } => self.dry_run = results.clone(),
            Event::ProjectCheckRan { milestone, command, exit_code, findings } => {
                self.check_runs.entry(milestone.clone()).or_default().push((command.clone(), *exit_code, *findings));
            }
            Event::UserChangesCommitted { commit, .. } => {
                self.head = Some(commit.clone());
                self.conflict_pause = false;
                // The user's commit is the new ground of the unfinished feature: a restart
                // begins there, so it is never reset away.
                let in_progress: Vec<String> = self
                    .plan
                    .iter()
                    .flat_map(|p| p.features())
                    .filter(|f| f.status == WorkStatus::InProgress)
                    .map(|f| f.id.clone())
                    .collect();
                for feature in in_progress {
                    self.feature_bases.insert(feature, commit.clone());
                }
            }
        }
        if let Some(mission) = &mut self.mission {
            mission.updated_at = ts.clone();
        }
    }
}
