//! SPEC §2's rules, each a named pure function over the mission's projection (or the facts it
//! needs). The engine asks these what a rule allows and records what they decide; nothing here
//! touches the disk, git, a clock or a model, so every rule is unit-tested in milliseconds.
//!
//! Where the other rules live: one writer (rule 2) is the log's lock
//! (`missions_core::store::log::acquire_lock`); the sandbox (rule 5) is `missions_tools`'
//! confinement and `sandbox`; the inbox (rule 8) is `Mission::control` and
//! `Shared::process_inbox`; no run loops (rule 10) is `agent::LoopGuard` and
//! `terminals::ReportFindings`.

use missions_core::mission::{
    AssertionStatus, Check, ClaimedCommand, FindingStatus, Milestone, MissionState, ObservedCommand, PauseReason,
    Severity, Validator, WorkStatus,
};
use missions_core::store::{self, Author, Event, FeatureDraft, Projection};

use super::Command;
use crate::terminals::{ClaimMatch, match_claim};

/// Why a command was refused, in a sentence for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn refuse<T>(reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(reason.into()))
}

/// What a user's command comes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Ruling {
    /// Record these events, in order.
    Record(Vec<Event>),
    /// The mission already is as asked: nothing to record.
    Nothing,
    /// Take the branch back to `base`, where `milestone` started. The caller records it and
    /// moves the branch, since only it can see the working tree and git.
    RollBack { milestone: String, base: String },
}

/// The milestone the mission is working on: the first one not accepted.
pub fn current_milestone(projection: &Projection) -> Option<&Milestone> {
    projection.plan.as_ref()?.milestones.iter().find(|m| m.status != WorkStatus::Accepted)
}

/// Whether `milestone` is the plan's last.
pub fn is_last_milestone(projection: &Projection, milestone: &str) -> bool {
    projection.plan.as_ref().and_then(|p| p.milestones.last()).is_some_and(|m| m.id == milestone)
}

/// The state a paused mission goes back to.
pub fn resume_state(projection: &Projection) -> MissionState {
    let Some(mission) = &projection.mission else { return MissionState::Planning };
    // A plan whose acceptance tests are not all written goes back to its test author.
    if projection.plan.is_none()
        || (mission.contract_sha256.is_none() && !missing_acceptance_tests(projection).is_empty())
    {
        return MissionState::Planning;
    }
    if mission.contract_sha256.is_none() {
        return MissionState::AwaitingApproval;
    }
    match current_milestone(projection) {
        Some(m) if m.status == WorkStatus::Validated => MissionState::AwaitingAcceptance,
        // A rejected milestone goes straight back to its boundary run.
        Some(m) if projection.boundary_pending.as_deref() == Some(m.id.as_str()) => MissionState::Validating,
        _ => MissionState::Running,
    }
}

/// The `acceptance` assertions whose tests the test author has not recorded yet (SPEC §2 rule
/// 9): a plan with any of them cannot be approved, since approving it approves the tests.
pub fn missing_acceptance_tests(projection: &Projection) -> Vec<String> {
    projection
        .contract
        .assertions
        .iter()
        .filter(|a| matches!(a.check, Check::Acceptance { .. }) && !projection.acceptance_tests.contains_key(&a.id))
        .map(|a| a.id.clone())
        .collect()
}

/// A feature id not yet used in the plan: `base`, else `base-2`, `base-3`, …
pub fn unused_feature_id(projection: &Projection, base: &str) -> String {
    let used = |id: &str| projection.plan.iter().flat_map(|p| p.features()).any(|f| f.id == id);
    if !used(base) {
        return base.to_owned();
    }
    (2..).map(|n| format!("{base}-{n}")).find(|id| !used(id)).unwrap_or_else(|| base.to_owned())
}

/// What the user's `command` records, or why it is refused: the gates (SPEC §2, §3), waivers
/// only by the user (rule 1), and the user's control commands. The side effects that need the
/// working tree (a rollback's reset, a backlog tick, stopping a run in flight) are the
/// caller's.
pub fn decide(projection: &Projection, command: &Command) -> Result<Ruling, Refusal> {
    let Some(mission) = &projection.mission else { return refuse("the mission log has no mission") };
    let state = mission.state;
    let not_now = |what: &str| refuse(format!("cannot {what}: the mission is {state}"));
    let record = |events: Vec<Event>| Ok(Ruling::Record(events));
    match command {
        Command::Approve => {
            if state != MissionState::AwaitingApproval {
                return not_now("approve the plan");
            }
            let missing = missing_acceptance_tests(projection);
            if !missing.is_empty() {
                return refuse(format!(
                    "the acceptance tests of {} are not written yet; resume the mission so the test author finishes them",
                    missing.join(", ")
                ));
            }
            // One event: the fold moves the mission on to running with it (rule 1: the digest
            // locks the contract).
            record(vec![Event::PlanApproved {
                contract_sha256: store::contract_digest(&projection.contract.assertions),
            }])
        }
        Command::Accept { milestone } => {
            if state != MissionState::AwaitingAcceptance {
                return not_now("accept a milestone");
            }
            let Some(current) = current_milestone(projection).filter(|m| m.status == WorkStatus::Validated) else {
                return refuse("no milestone is waiting for acceptance");
            };
            if let Some(asked) = milestone.as_ref().filter(|m| **m != current.id) {
                return refuse(format!("milestone {asked} is not the one waiting; {} is", current.id));
            }
            record(vec![Event::MilestoneAccepted { milestone: current.id.clone() }])
        }
        Command::Reject { milestone, feedback } => {
            let waiting = current_milestone(projection).is_some_and(|m| m.id == *milestone);
            if state != MissionState::AwaitingAcceptance || !waiting {
                return refuse(format!("milestone {milestone} is not waiting for acceptance"));
            }
            if feedback.trim().is_empty() {
                return refuse("a rejection needs feedback saying what to change");
            }
            // The milestone goes back to its boundary run, which reads the feedback and decides
            // the corrective features and the assertions they claim, as for any correction.
            record(vec![Event::MilestoneRejected {
                milestone: milestone.clone(),
                feedback: feedback.clone(),
                correction: None,
                to_boundary: true,
            }])
        }
        Command::Rollback { milestone } => {
            if matches!(state, MissionState::Completed | MissionState::Cancelled) {
                return not_now("roll back");
            }
            let Some(base) = projection.milestone_bases.get(milestone) else {
                return refuse(format!("milestone {milestone} has not started, so there is nothing to roll back"));
            };
            Ok(Ruling::RollBack { milestone: milestone.clone(), base: base.clone() })
        }
        Command::Pause { note } => {
            if state.is_terminal() || state == MissionState::Paused {
                return not_now("pause");
            }
            let detail = note.clone().unwrap_or_else(|| "paused by the user".into());
            record(vec![Event::StateChanged {
                state: MissionState::Paused,
                pause_reason: Some(PauseReason::User),
                detail: Some(detail),
            }])
        }
        Command::Resume => {
            if state != MissionState::Paused {
                return not_now("resume");
            }
            record(vec![Event::StateChanged { state: resume_state(projection), pause_reason: None, detail: None }])
        }
        Command::Cancel => {
            if state.is_terminal() {
                return not_now("cancel");
            }
            record(vec![Event::StateChanged {
                state: MissionState::Cancelled,
                pause_reason: None,
                detail: Some("cancelled by the user".into()),
            }])
        }
        Command::CourseCorrect { note } => {
            if note.trim().is_empty() {
                return refuse("the course-correction note is empty");
            }
            record(vec![Event::CourseCorrectionNoted { note: note.clone() }])
        }
        Command::DismissFinding { finding, reason } => {
            if !projection.findings.iter().any(|f| f.id == *finding && f.status == FindingStatus::Open) {
                return refuse(format!("no open finding {finding}"));
            }
            record(vec![Event::FindingStatusChanged {
                finding: finding.clone(),
                status: FindingStatus::Dismissed,
                reason: reason.clone(),
            }])
        }
        Command::FixFinding { finding } => fix_finding(projection, finding),
        Command::Waive { assertion, reason } => {
            let Some(found) = projection.contract.assertions.iter().find(|a| a.id == *assertion) else {
                return refuse(format!("no assertion {assertion}"));
            };
            if reason.trim().is_empty() {
                return refuse("waiving an assertion needs a reason");
            }
            if found.status == AssertionStatus::Waived {
                return Ok(Ruling::Nothing);
            }
            record(vec![Event::AssertionWaived { assertion: assertion.clone(), reason: reason.clone() }])
        }
        Command::AddAssertion { assertion } => add_assertion(projection, assertion),
        Command::SetAutoAccept { auto_accept } => {
            if mission.auto_accept == *auto_accept {
                return Ok(Ruling::Nothing);
            }
            record(vec![Event::AutoAcceptSet { auto_accept: *auto_accept }])
        }
    }
}

/// The user's own assertion: on a milestone that is not accepted yet, with a new id and a
/// check the engine or a validator can judge now (an acceptance test is written before any
/// work, at planning). A milestone that waits for acceptance is validated again with it.
fn add_assertion(projection: &Projection, draft: &store::AssertionDraft) -> Result<Ruling, Refusal> {
    let state = projection.mission.as_ref().map(|m| m.state);
    let Some(plan) = projection.plan.as_ref().filter(|_| state.is_some_and(|s| !s.is_terminal())) else {
        return refuse("assertions are added to a mission with a plan that has not ended");
    };
    let Some(milestone) = plan.milestone(&draft.milestone) else {
        return refuse(format!("no milestone {} in the plan", draft.milestone));
    };
    if milestone.status == WorkStatus::Accepted {
        return refuse(format!("milestone {} is already accepted; add the assertion to a later one", milestone.id));
    }
    let used = projection.contract.assertions.iter().map(|a| &a.id).chain(plan.milestones.iter().map(|m| &m.id));
    if !crate::terminals::valid_id(&draft.id) || used.chain(plan.features().map(|f| &f.id)).any(|id| *id == draft.id) {
        return refuse(format!("assertion id `{}` is not valid or already used", draft.id));
    }
    if matches!(draft.check, Check::Acceptance { .. }) {
        return refuse(
            "an acceptance test is written before any code, at planning; add a command, review or user-test check",
        );
    }
    let mut reasons = Vec::new();
    crate::terminals::check_check(&draft.check, &draft.id, &mut reasons);
    if draft.description.trim().is_empty() {
        reasons.push(format!("assertion {}: its description is empty", draft.id));
    }
    if !reasons.is_empty() {
        return refuse(reasons.join("; "));
    }
    let mut events = vec![Event::AssertionsAdded { assertions: vec![draft.clone()], by: Author::User }];
    if matches!(milestone.status, WorkStatus::Validated | WorkStatus::Validating) {
        events.push(Event::MilestoneStatusChanged { milestone: milestone.id.clone(), status: WorkStatus::InProgress });
    }
    if state == Some(MissionState::AwaitingAcceptance) {
        events.push(Event::StateChanged { state: MissionState::Running, pause_reason: None, detail: None });
    }
    Ok(Ruling::Record(events))
}

/// "Fix this finding": a corrective feature for the finding's milestone, which has work again.
fn fix_finding(projection: &Projection, finding: &str) -> Result<Ruling, Refusal> {
    let Some(found) = projection.findings.iter().find(|f| f.id == finding && f.status == FindingStatus::Open) else {
        return refuse(format!("no open finding {finding}"));
    };
    let state = projection.mission.as_ref().map(|m| m.state);
    let milestone_status = projection.plan.as_ref().and_then(|p| p.milestone(&found.milestone)).map(|m| m.status);
    if milestone_status.is_none_or(|s| s == WorkStatus::Accepted) || state.is_none_or(MissionState::is_terminal) {
        return refuse(format!(
            "milestone {} is already accepted; its findings can only be dismissed",
            found.milestone
        ));
    }
    let feature_id = format!("fix-{finding}");
    if projection.plan.iter().flat_map(|p| p.features()).any(|f| f.id == feature_id && f.status != WorkStatus::Done) {
        return refuse(format!("{finding} is already being fixed by feature {feature_id}"));
    }
    let place = match (&found.path, found.line) {
        (Some(path), Some(line)) => format!(" at {path}:{line}"),
        (Some(path), None) => format!(" in {path}"),
        _ => String::new(),
    };
    let mut events = vec![Event::FeaturesAdded {
        milestone: found.milestone.clone(),
        features: vec![FeatureDraft {
            id: unused_feature_id(projection, &feature_id),
            title: format!("Fix {finding}"),
            description: format!(
                "The user asked for this finding to be fixed{place}:\n\n{}\n\nEvidence:\n{}",
                found.message, found.evidence
            ),
            assertions: found.assertion.clone().into_iter().collect(),
        }],
        by: Some(Author::User),
    }];
    // The milestone has work again: it is validated anew once the fix is done.
    if matches!(milestone_status, Some(WorkStatus::Validated | WorkStatus::Validating)) {
        events
            .push(Event::MilestoneStatusChanged { milestone: found.milestone.clone(), status: WorkStatus::InProgress });
    }
    if state == Some(MissionState::AwaitingAcceptance) {
        events.push(Event::StateChanged { state: MissionState::Running, pause_reason: None, detail: None });
    }
    Ok(Ruling::Record(events))
}

/// Rule 1: the contract approved is the contract still held. The assertions that existed at
/// approval still hash to the digest recorded then, and no later assertion reuses one of their
/// ids (which would shadow it). Assertions are only ever appended, so the approved ones are the
/// first `approved_assertions`.
pub fn contract_intact(projection: &Projection) -> Result<(), String> {
    let Some(locked) = &projection.contract.sha256 else { return Ok(()) };
    let assertions = &projection.contract.assertions;
    let approved = projection.approved_assertions.min(assertions.len());
    let digest = store::contract_digest(&assertions[..approved]);
    if digest != *locked {
        return Err(format!(
            "the contract's approved assertions no longer match the digest recorded at approval ({locked}, now {digest})"
        ));
    }
    if let Some(shadow) = assertions[approved..].iter().find(|a| assertions[..approved].iter().any(|b| b.id == a.id)) {
        return Err(format!("assertion {} was added again after approval, shadowing the approved one", shadow.id));
    }
    Ok(())
}

/// Rule 3: the assertions of `milestone` that do not hold (neither pass nor are waived), each
/// with its status; the milestone passes only when there are none.
pub fn unmet_assertions(projection: &Projection, milestone: &str) -> Vec<(String, AssertionStatus)> {
    projection
        .contract
        .assertions
        .iter()
        .filter(|a| a.milestone == milestone && !a.status.holds())
        .map(|a| (a.id.clone(), a.status))
        .collect()
}

/// Rule 4: where a milestone is in its correction rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Rounds already used (the next is `used + 1`).
    pub used: u32,
    /// Rounds allowed.
    pub bound: u32,
}

impl Round {
    /// No round is left: the mission pauses `blocked` instead of correcting again.
    pub fn exhausted(self) -> bool {
        self.used >= self.bound
    }
}

/// Rule 4: the correction round of `milestone`. A user's rejection starts a new round and
/// allows one more, so rounds and their bound count rejections with the orchestrator's
/// corrections.
pub fn correction_round(projection: &Projection, milestone: &str, max_correction_rounds: u32) -> Round {
    let rejections = projection.rejections.get(milestone).map_or(0, |r| r.len() as u32);
    let corrections = projection.correction_rounds.get(milestone).copied().unwrap_or(0);
    Round { used: corrections + rejections, bound: max_correction_rounds + rejections }
}

/// A finding the handoff check raises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffFinding {
    pub validator: Validator,
    pub severity: Severity,
    pub message: String,
}

/// Rule 6: a handoff's claims checked against the commands the engine saw the worker run. A
/// claim never run, or run with another exit code, is a `handoff-mismatch` error; a claim
/// that abbreviates a command it ran is matched, with an `info` note.
pub fn check_handoff(feature: &str, claimed: &[ClaimedCommand], observed: &[ObservedCommand]) -> Vec<HandoffFinding> {
    let exit = missions_core::mission::exit_text;
    let mut findings = Vec::new();
    for claim in claimed {
        let mismatch = |message: String| HandoffFinding {
            validator: Validator::HandoffMismatch,
            severity: Severity::Error,
            message,
        };
        let finding = match match_claim(&claim.command, claim.exit_code, observed) {
            ClaimMatch::Unmatched => mismatch(format!(
                "{feature}'s handoff claims `{}` (exit {}), which the worker never ran",
                claim.command, claim.exit_code
            )),
            ClaimMatch::Exact(run) | ClaimMatch::Abbreviated(run)
                if observed[run].exit_code != Some(claim.exit_code) =>
            {
                mismatch(format!(
                    "{feature}'s handoff claims `{}` exited {}, but it exited {}",
                    claim.command,
                    claim.exit_code,
                    observed[run].exit_code.map_or("by a signal".to_owned(), |c| c.to_string())
                ))
            }
            ClaimMatch::Abbreviated(run) => HandoffFinding {
                validator: Validator::Engine,
                severity: Severity::Info,
                message: format!(
                    "{feature}'s handoff abbreviates a command it ran: `{}` stands for `{}` ({})",
                    claim.command.lines().next().unwrap_or_default(),
                    observed[run].command.lines().next().unwrap_or_default(),
                    exit(observed[run].exit_code)
                ),
            },
            ClaimMatch::Exact(_) => continue,
        };
        findings.push(finding);
    }
    findings
}

/// Rule 7: how much output a model call may be granted within the budget caps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetAsk {
    pub max_tokens: Option<u64>,
    pub used_tokens: u64,
    pub max_usd: Option<f64>,
    pub used_usd: f64,
    /// Tokens and dollars reserved by calls in flight.
    pub reserved_tokens: u64,
    pub reserved_usd: f64,
    /// The call's estimated input.
    pub input_tokens: u64,
    /// The role's configured maximum output.
    pub max_output_tokens: u32,
    /// The least output worth a call.
    pub min_output_tokens: u32,
    /// The dollar cost of the input, and of a million output tokens; `None` when the model's
    /// price is unknown (then only the token cap holds).
    pub input_usd: Option<f64>,
    pub usd_per_million_output: Option<f64>,
}

/// Rule 7: the output tokens a call is granted — its configured maximum clamped to what the
/// caps leave after the tokens (and money) used, reserved by calls in flight, and the call's
/// input — or why the mission must pause for budget: not even `min_output_tokens` fit.
pub fn grant_output(ask: &BudgetAsk) -> Result<u32, String> {
    let mut granted = u64::from(ask.max_output_tokens);
    let mut limited_by = None;
    if let Some(max) = ask.max_tokens {
        let left = max.saturating_sub(ask.used_tokens + ask.reserved_tokens + ask.input_tokens);
        if left < granted {
            granted = left;
            let in_flight = if ask.reserved_tokens > 0 {
                format!(", {} in calls under way", ask.reserved_tokens)
            } else {
                String::new()
            };
            limited_by = Some(format!(
                "the cap of {max} tokens leaves {left} for its output ({} used{in_flight}, about {} of input)",
                ask.used_tokens, ask.input_tokens
            ));
        }
    }
    if let (Some(max), Some(input_usd), Some(per_million)) = (ask.max_usd, ask.input_usd, ask.usd_per_million_output) {
        let left_usd = max - ask.used_usd - ask.reserved_usd - input_usd;
        let affordable = if left_usd <= 0.0 {
            0
        } else if per_million <= 0.0 {
            u64::MAX
        } else {
            (left_usd / per_million * 1_000_000.0).floor() as u64
        };
        if affordable < granted {
            granted = affordable;
            limited_by = Some(format!(
                "the cap of ${max:.2} leaves room for {affordable} output tokens (${:.2} used, about ${input_usd:.4} of input)",
                ask.used_usd
            ));
        }
    }
    let least = ask.min_output_tokens.min(ask.max_output_tokens).max(1);
    if granted < u64::from(least) {
        return Err(format!("needs room for at least {least} output tokens, but {}", limited_by.unwrap_or_default()));
    }
    Ok(u32::try_from(granted).unwrap_or(ask.max_output_tokens))
}

#[cfg(test)]
mod tests;
