//! The terminal tools that end runs, and the engine's checks of what they carry (SPEC §5).
//!
//! These checks are rules enforced by code, never left to a prompt: a plan whose assertions are
//! not all claimed, a "complete" decision while an assertion fails, a verdict on an assertion
//! the run was not asked about — each is refused with the reasons, as the tool result, so the
//! model can correct itself.

use std::collections::{BTreeMap, BTreeSet};

use missions_core::mission::{AssertionStatus, Check, HandoffClaim, ObservedCommand, Severity};
use missions_core::model::ToolSpec;
use missions_core::store::{AssertionDraft, DryRunResult, FeatureDraft, MilestoneDraft, PlanDraft};
use missions_core::sync::lock;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::agent::Terminal;

/// Ids become file names and commit trailers: letters, digits, `-`, `_`, `.`, at most 64.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Adds to `reasons` what is wrong with assertion `id`'s check (an empty one, an acceptance
/// check that names its own files).
pub(crate) fn check_check(check: &Check, id: &str, reasons: &mut Vec<String>) {
    let empty = match check {
        Check::Command { command, .. } => command.trim().is_empty(),
        Check::Review { rubric } => rubric.trim().is_empty(),
        Check::UserTest { steps } => steps.trim().is_empty(),
        Check::Acceptance { behaviour, files, command } => {
            if !files.is_empty() || command.is_some() {
                reasons.push(format!(
                    "assertion {id}: an acceptance check states only its `behaviour`; the test author writes its files and command"
                ));
            }
            behaviour.trim().is_empty()
        }
    };
    if empty {
        reasons.push(format!("assertion {id}: its check is empty"));
    }
}

fn assertion_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "milestone": {"type": "string"},
            "description": {"type": "string"},
            "check": {
                "type": "object",
                "description": "{\"kind\":\"command\",\"command\":\"...\",\"expect_exit\":0} | {\"kind\":\"review\",\"rubric\":\"...\"} | {\"kind\":\"user_test\",\"steps\":\"...\"} | {\"kind\":\"acceptance\",\"behaviour\":\"...\"} (planning only: a test author writes its test before any code)",
                "properties": {
                    "kind": {"type": "string", "enum": ["command", "review", "user_test", "acceptance"]},
                    "command": {"type": "string"},
                    "expect_exit": {"type": "integer"},
                    "rubric": {"type": "string"},
                    "steps": {"type": "string"},
                    "behaviour": {"type": "string"}
                },
                "required": ["kind"]
            }
        },
        "required": ["id", "milestone", "description", "check"]
    })
}

fn feature_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "title": {"type": "string"},
            "description": {"type": "string"},
            "assertions": {"type": "array", "items": {"type": "string"}}
        },
        "required": ["id", "title", "description", "assertions"]
    })
}

/// `submit_plan`. With a [`DryRun`], every `command` check of an acceptable plan is run once
/// on the base commit first (SPEC §5): a first submission whose checks already pass is answered
/// with their list and not accepted; submitting the same checks again confirms them as
/// regression guards.
#[derive(Default)]
pub struct SubmitPlan {
    pub dry_run: Option<DryRun>,
}

/// How commands are tried on the base commit before any work: the plan's checks, the
/// acceptance tests.
pub struct Trial {
    pub environment: missions_tools::CommandEnvironment,
    pub timeout: std::time::Duration,
    pub recorder: std::sync::Arc<dyn missions_tools::WorkRecorder>,
    /// Puts the tree back to the base commit after the commands ran (what they left is the
    /// mission's, recorded by `recorder`); an `Err` says why it could not.
    pub revert: std::sync::Arc<dyn Fn() -> Result<(), String> + Send + Sync>,
}

/// How the plan's command checks are tried on the base commit.
pub struct DryRun {
    pub trial: Trial,
    /// The already-passing checks of the last refused submission, as (assertion, command).
    pub refused: Option<BTreeSet<(String, String)>>,
}

#[derive(Deserialize)]
struct PlanInput {
    title: String,
    summary: String,
    milestones: Vec<MilestoneDraft>,
    contract: Vec<AssertionDraft>,
}

/// The engine's checks of a plan; every reason at once, so one resubmission can fix them all.
pub fn check_plan(plan: &PlanDraft, contract: &[AssertionDraft]) -> Vec<String> {
    let mut reasons = Vec::new();
    if plan.milestones.is_empty() {
        reasons.push("the plan has no milestones".into());
    }
    if contract.is_empty() {
        reasons.push("the contract has no assertions; every milestone needs at least one".into());
    }
    let mut seen = BTreeSet::new();
    for id in plan
        .milestones
        .iter()
        .map(|m| &m.id)
        .chain(plan.milestones.iter().flat_map(|m| m.features.iter().map(|f| &f.id)))
        .chain(contract.iter().map(|a| &a.id))
    {
        if !valid_id(id) {
            reasons
                .push(format!("id `{id}` is not valid: use letters, digits, '-', '_' or '.', at most 64 characters"));
        }
        if !seen.insert(id.clone()) {
            reasons.push(format!(
                "id `{id}` is used more than once; ids must be unique across milestones, features and assertions"
            ));
        }
    }
    let assertion_milestone: BTreeMap<&str, &str> =
        contract.iter().map(|a| (a.id.as_str(), a.milestone.as_str())).collect();
    for milestone in &plan.milestones {
        if milestone.features.is_empty() {
            reasons.push(format!("milestone {} has no features", milestone.id));
        }
        if !contract.iter().any(|a| a.milestone == milestone.id) {
            reasons.push(format!("milestone {} has no assertions: say how its completion is checked", milestone.id));
        }
        for feature in &milestone.features {
            for claimed in &feature.assertions {
                match assertion_milestone.get(claimed.as_str()) {
                    None => reasons.push(format!(
                        "feature {} claims assertion {claimed}, which is not in the contract",
                        feature.id
                    )),
                    Some(m) if *m != milestone.id => reasons.push(format!(
                        "feature {} (milestone {}) claims assertion {claimed}, which belongs to milestone {m}",
                        feature.id, milestone.id
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    for assertion in contract {
        let Some(milestone) = plan.milestones.iter().find(|m| m.id == assertion.milestone) else {
            reasons.push(format!(
                "assertion {} belongs to milestone {}, which is not in the plan",
                assertion.id, assertion.milestone
            ));
            continue;
        };
        if !milestone.features.iter().any(|f| f.assertions.contains(&assertion.id)) {
            reasons.push(format!(
                "assertion {} is claimed by no feature of milestone {}; the feature that makes it true must list it",
                assertion.id, milestone.id
            ));
        }
        check_check(&assertion.check, &assertion.id, &mut reasons);
    }
    reasons
}

impl Terminal for SubmitPlan {
    type Output = (PlanDraft, Vec<AssertionDraft>, Vec<DryRunResult>);

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "submit_plan".into(),
            description: "Submit the whole plan and validation contract. The engine checks it; a rejected plan comes back with the reasons.".into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "title": {"type": "string"},
                    "summary": {"type": "string"},
                    "milestones": {"type": "array", "items": {
                        "type": "object",
                        "properties": {"id": {"type": "string"}, "title": {"type": "string"}, "features": {"type": "array", "items": feature_schema()}},
                        "required": ["id", "title", "features"]
                    }},
                    "contract": {"type": "array", "items": assertion_schema()}
                },
                "required": ["title", "summary", "milestones", "contract"]
            }),
        }
    }

    async fn accept(&mut self, input: &Value) -> Result<Self::Output, String> {
        let input: PlanInput = serde_json::from_value(input.clone())
            .map_err(|e| format!("the plan does not have the required shape: {e}"))?;
        let plan = PlanDraft { title: input.title, summary: input.summary, milestones: input.milestones };
        let reasons = check_plan(&plan, &input.contract);
        if !reasons.is_empty() {
            return Err(format!("The plan was not accepted:\n- {}", reasons.join("\n- ")));
        }
        let Some(dry_run) = &mut self.dry_run else { return Ok((plan, input.contract, Vec::new())) };
        let mut results = Vec::new();
        let mut evidence = Vec::new();
        for assertion in &input.contract {
            let Check::Command { command, expect_exit } = &assertion.check else { continue };
            let trial = &dry_run.trial;
            let result = crate::checks::run_check(&trial.environment, command, trial.timeout, &trial.recorder).await;
            let passed = !result.timed_out && result.exit_code == Some(*expect_exit);
            if passed {
                let tail: String = result
                    .output
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                evidence.push(format!("- {} `{command}` ({}):\n{tail}", assertion.id, result.outcome()));
            }
            results.push(DryRunResult {
                assertion: assertion.id.clone(),
                command: command.clone(),
                exit_code: result.exit_code,
                passed,
            });
        }
        // Every check runs on the base commit: what one left behind never decides the next, nor
        // the next submission's.
        (dry_run.trial.revert)()?;
        let passing: BTreeSet<(String, String)> =
            results.iter().filter(|r| r.passed).map(|r| (r.assertion.clone(), r.command.clone())).collect();
        // Checks already reported and submitted again are confirmed as regression guards.
        let confirmed = dry_run.refused.as_ref().is_some_and(|refused| passing.is_subset(refused));
        if !passing.is_empty() && !confirmed {
            dry_run.refused = Some(passing);
            return Err(format!(
                "These checks already pass on the base commit, before any work:\n{}\nA check meant to prove new work \
                 that already passes verifies nothing: make it fail until the work is done (a test filter that matches \
                 nothing passes; name a test that must exist). If a check is meant to guard against regressions, submit \
                 the same checks again to confirm it.",
                evidence.join("\n")
            ));
        }
        Ok((plan, input.contract, results))
    }
}

/// `submit_handoff`. With the run's observed commands, a handoff claiming a command the
/// worker never ran is sent back once with the list, so the worker can correct it before the
/// run ends (SPEC §2 rule 6); sent again unchanged, it is accepted and the engine records the
/// mismatch.
pub struct SubmitHandoff {
    observed: std::sync::Arc<std::sync::Mutex<Vec<ObservedCommand>>>,
    warned: bool,
}

impl SubmitHandoff {
    pub fn checking(observed: std::sync::Arc<std::sync::Mutex<Vec<ObservedCommand>>>) -> SubmitHandoff {
        SubmitHandoff { observed, warned: false }
    }
}

/// How a claimed command matched the commands the engine observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimMatch {
    /// The same command (whitespace and line continuations aside); the index of the run.
    Exact(usize),
    /// An unambiguous abbreviation of one observed command: its first line, or a unique
    /// prefix (a trailing `...` or `…` aside).
    Abbreviated(usize),
    /// Nothing observed matches.
    Unmatched,
}

/// A command line with whitespace and line continuations normalised.
pub fn normalise_command(command: &str) -> String {
    command.replace("\\\n", " ").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Matches one claimed command against the observed ones (SPEC §2 rule 6). Among exact
/// matches, the run whose exit code agrees with the claim is preferred.
pub fn match_claim(claim: &str, exit_code: i32, observed: &[ObservedCommand]) -> ClaimMatch {
    let wanted = normalise_command(claim);
    let exact: Vec<usize> =
        observed.iter().enumerate().filter(|(_, o)| normalise_command(&o.command) == wanted).map(|(i, _)| i).collect();
    if let Some(best) =
        exact.iter().copied().find(|i| observed[*i].exit_code == Some(exit_code)).or(exact.last().copied())
    {
        return ClaimMatch::Exact(best);
    }
    // An abbreviation says so: it ends with `...`, `…` or a line continuation, and stops at a
    // word boundary of the command it stands for. A single-line claim may also be the first
    // line of a longer command.
    let trimmed = claim.trim_end();
    let marked = ["...", "…", "\\"].iter().find_map(|mark| trimmed.strip_suffix(mark));
    let single_line = !claim.trim().contains('\n');
    let candidates: Vec<usize> = observed
        .iter()
        .enumerate()
        .filter(|(_, o)| {
            let full = normalise_command(&o.command);
            let prefix = marked.map(normalise_command).filter(|stem| !stem.is_empty()).is_some_and(|stem| {
                full.strip_prefix(stem.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
            });
            let first_line = single_line
                && o.command.trim().contains('\n')
                && o.command.lines().next().map(|l| normalise_command(l.trim_end().trim_end_matches('\\')))
                    == Some(normalise_command(trimmed));
            prefix || first_line
        })
        .map(|(i, _)| i)
        .collect();
    let distinct: std::collections::BTreeSet<String> =
        candidates.iter().map(|i| normalise_command(&observed[*i].command)).collect();
    match (distinct.len(), candidates.last()) {
        (1, Some(last)) => {
            let agreeing = candidates.iter().copied().find(|i| observed[*i].exit_code == Some(exit_code));
            ClaimMatch::Abbreviated(agreeing.unwrap_or(*last))
        }
        _ => ClaimMatch::Unmatched,
    }
}

impl Terminal for SubmitHandoff {
    type Output = HandoffClaim;

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "submit_handoff".into(),
            description: "End your feature with a structured handoff. Every command you list must be one you ran, with the exit code it returned.".into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "summary": {"type": "string"},
                    "completed": {"type": "array", "items": {"type": "string"}},
                    "skipped": {"type": "array", "items": {"type": "object", "properties": {"item": {"type": "string"}, "reason": {"type": "string"}}, "required": ["item", "reason"]}},
                    "commands": {"type": "array", "items": {"type": "object", "properties": {"command": {"type": "string"}, "exit_code": {"type": "integer"}}, "required": ["command", "exit_code"]}},
                    "issues": {"type": "array", "items": {"type": "object", "properties": {
                        "severity": {"type": "string", "enum": ["error", "warning", "info"]},
                        "description": {"type": "string"}, "path": {"type": "string"}, "line": {"type": "integer"}
                    }, "required": ["severity", "description"]}},
                    "procedures_followed": {"type": "boolean"},
                    "procedure_notes": {"type": "string"}
                },
                "required": ["summary", "completed", "skipped", "commands", "issues", "procedures_followed", "procedure_notes"]
            }),
        }
    }

    async fn accept(&mut self, input: &Value) -> Result<HandoffClaim, String> {
        let handoff: HandoffClaim = serde_json::from_value(input.clone())
            .map_err(|e| format!("the handoff does not have the required shape: {e}"))?;
        if handoff.summary.trim().is_empty() {
            return Err("the handoff's summary is empty".into());
        }
        if !self.warned {
            let observed = lock(&self.observed).clone();
            let unmatched: Vec<String> = handoff
                .commands
                .iter()
                .filter(|c| match_claim(&c.command, c.exit_code, &observed) == ClaimMatch::Unmatched)
                .map(|c| format!("`{}`", c.command))
                .collect();
            if !unmatched.is_empty() {
                self.warned = true;
                return Err(format!(
                    "The handoff claims commands this run never ran: {}. List only commands you ran, exactly as you \
                     ran them, with the exit codes they returned, then submit again.",
                    unmatched.join(", ")
                ));
            }
        }
        Ok(handoff)
    }
}

/// One verdict on an assertion.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Verdict {
    pub assertion: String,
    pub pass: bool,
    pub evidence: String,
}

/// One finding a validator reports.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReportedFinding {
    pub severity: Severity,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub line: Option<u32>,
    #[serde(default)]
    pub end_line: Option<u32>,
    pub message: String,
    #[serde(default)]
    pub assertion: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FindingsReport {
    pub verdicts: Vec<Verdict>,
    pub findings: Vec<ReportedFinding>,
    /// Open findings the validator was shown and confirms fixed (SPEC §5).
    #[serde(default)]
    pub resolved: Vec<String>,
}

/// `report_findings`, for a run asked to judge `assertions` and shown the open findings
/// `shown` (its own from earlier validations, which only it can mark resolved).
pub struct ReportFindings {
    pub assertions: Vec<String>,
    pub shown: Vec<String>,
    /// The findings of the last report that could be read, accepted or not: a validator's
    /// findings are recorded even when its run never manages an acceptable report.
    pub last_findings: Vec<ReportedFinding>,
    /// Verdicts of the accepted report that were ignored (assertions not asked for or unknown).
    pub ignored: Vec<String>,
    /// Ids in the accepted report's `resolved` that were ignored: findings the run was not
    /// shown, which are not its to fix.
    pub ignored_resolved: Vec<String>,
}

impl ReportFindings {
    pub fn new(assertions: Vec<String>, shown: Vec<String>) -> ReportFindings {
        ReportFindings {
            assertions,
            shown,
            last_findings: Vec::new(),
            ignored: Vec::new(),
            ignored_resolved: Vec::new(),
        }
    }
}

impl Terminal for ReportFindings {
    type Output = FindingsReport;

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "report_findings".into(),
            description: "End the review with a verdict on every assertion you were asked to judge, and your findings."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "verdicts": {"type": "array", "items": {"type": "object", "properties": {
                        "assertion": {"type": "string"}, "pass": {"type": "boolean"}, "evidence": {"type": "string"}
                    }, "required": ["assertion", "pass", "evidence"]}},
                    "findings": {"type": "array", "items": {"type": "object", "properties": {
                        "severity": {"type": "string", "enum": ["error", "warning", "info"]},
                        "path": {"type": "string"}, "line": {"type": "integer"}, "end_line": {"type": "integer"},
                        "message": {"type": "string"}, "assertion": {"type": "string"}
                    }, "required": ["severity", "message"]}},
                    "resolved": {"type": "array", "items": {"type": "string"},
                        "description": "Ids of the open findings you were shown that the code now fixes. A finding you do not list stays open."}
                },
                "required": ["verdicts", "findings"]
            }),
        }
    }

    async fn accept(&mut self, input: &Value) -> Result<FindingsReport, String> {
        let mut report: FindingsReport = serde_json::from_value(input.clone())
            .map_err(|e| format!("the report does not have the required shape: {e}"))?;
        self.last_findings = report.findings.clone();
        // SPEC §2 rule 10: a verdict on an assertion the run was not asked to judge (or one
        // that does not exist) is a harmless extra; it is dropped, never a reason to refuse.
        let (asked, ignored): (Vec<Verdict>, Vec<Verdict>) =
            report.verdicts.into_iter().partition(|v| self.assertions.contains(&v.assertion));
        report.verdicts = asked;
        self.ignored = ignored.into_iter().map(|v| v.assertion).collect();
        // Likewise an id in `resolved` the run was not shown: dropped, never a refusal.
        let (resolved, ignored_resolved): (Vec<String>, Vec<String>) =
            std::mem::take(&mut report.resolved).into_iter().partition(|id| self.shown.contains(id));
        report.resolved = resolved;
        self.ignored_resolved = ignored_resolved;
        let mut reasons = Vec::new();
        let missing: Vec<&str> = self
            .assertions
            .iter()
            .filter(|asked| !report.verdicts.iter().any(|v| &v.assertion == *asked))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            reasons.push(format!("a verdict is missing for: {}", missing.join(", ")));
        }
        for verdict in report.verdicts.iter().filter(|v| v.evidence.trim().is_empty()) {
            reasons.push(format!("the verdict on {} has no evidence", verdict.assertion));
        }
        if reasons.is_empty() {
            return Ok(report);
        }
        let mut message = format!("The report was not accepted:\n- {}", reasons.join("\n- "));
        if !self.ignored.is_empty() {
            message.push_str(&format!(
                "\nVerdicts on {} were ignored: you were asked to judge only {}.",
                self.ignored.join(", "),
                if self.assertions.is_empty() {
                    "no assertion (report findings only)".to_owned()
                } else {
                    self.assertions.join(", ")
                }
            ));
        }
        Err(message)
    }
}

/// The orchestrator's decision at a boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Complete { notes: String, new_assertions: Vec<AssertionDraft> },
    Correct { notes: String, corrections: Vec<FeatureDraft>, new_assertions: Vec<AssertionDraft> },
}

#[derive(Deserialize)]
struct DecisionInput {
    decision: String,
    notes: String,
    #[serde(default)]
    corrections: Vec<FeatureDraft>,
    #[serde(default)]
    new_assertions: Vec<AssertionDraft>,
}

/// `decide_milestone` for one milestone, knowing its assertions' statuses and the ids in use.
pub struct DecideMilestone {
    /// The user rejected the milestone: the decision must be a correction (SPEC §3).
    pub rejected: bool,
    pub milestone: String,
    /// Milestones that exist (new assertions may go to this or a later one).
    pub milestones: Vec<String>,
    pub statuses: BTreeMap<String, AssertionStatus>,
    pub used_ids: BTreeSet<String>,
}

impl Terminal for DecideMilestone {
    type Output = Decision;

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "decide_milestone".into(),
            description: "Decide the milestone: \"complete\" (refused while any of its assertions fails or is unverified) or \"correct\" with corrective features.".into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "decision": {"type": "string", "enum": ["complete", "correct"]},
                    "notes": {"type": "string"},
                    "corrections": {"type": "array", "items": feature_schema()},
                    "new_assertions": {"type": "array", "items": assertion_schema()}
                },
                "required": ["decision", "notes"]
            }),
        }
    }

    async fn accept(&mut self, input: &Value) -> Result<Decision, String> {
        let input: DecisionInput = serde_json::from_value(input.clone())
            .map_err(|e| format!("the decision does not have the required shape: {e}"))?;
        let mut reasons = Vec::new();
        let mut ids = self.used_ids.clone();
        for assertion in &input.new_assertions {
            if !valid_id(&assertion.id) || !ids.insert(assertion.id.clone()) {
                reasons.push(format!("new assertion id `{}` is invalid or already used", assertion.id));
            }
            if !self.milestones.contains(&assertion.milestone) {
                reasons.push(format!(
                    "new assertion {} names milestone {}, which is not in the plan",
                    assertion.id, assertion.milestone
                ));
            }
            check_check(&assertion.check, &assertion.id, &mut reasons);
            if matches!(assertion.check, Check::Acceptance { .. }) {
                // Its test would have to be written, and shown to fail, before the work.
                reasons.push(format!(
                    "new assertion {}: acceptance checks are written before any code, at planning; add a command, review or user_test check",
                    assertion.id
                ));
            }
        }
        let mut statuses = self.statuses.clone();
        for assertion in input.new_assertions.iter().filter(|a| a.milestone == self.milestone) {
            statuses.insert(assertion.id.clone(), AssertionStatus::Pending);
        }
        match input.decision.as_str() {
            "complete" => {
                let open: Vec<String> = statuses
                    .iter()
                    .filter(|(_, s)| !s.holds())
                    .map(|(id, s)| {
                        format!("{id} ({})", if *s == AssertionStatus::Failing { "failing" } else { "unverified" })
                    })
                    .collect();
                if !open.is_empty() {
                    reasons.push(format!(
                        "milestone {} cannot be completed while these assertions do not pass: {}. Decide \"correct\" with features that fix them",
                        self.milestone,
                        open.join(", ")
                    ));
                }
                if self.rejected {
                    reasons.push(format!(
                        "the user rejected milestone {}: decide \"correct\" with features that address their feedback",
                        self.milestone
                    ));
                }
                if reasons.is_empty() {
                    return Ok(Decision::Complete { notes: input.notes, new_assertions: input.new_assertions });
                }
            }
            "correct" => {
                if input.corrections.is_empty() {
                    reasons.push("\"correct\" needs at least one corrective feature".into());
                }
                let known: BTreeSet<&String> = statuses.keys().collect();
                for feature in &input.corrections {
                    if !valid_id(&feature.id) || !ids.insert(feature.id.clone()) {
                        reasons.push(format!("corrective feature id `{}` is invalid or already used", feature.id));
                    }
                    for claimed in &feature.assertions {
                        if !known.contains(claimed) {
                            reasons.push(format!(
                                "corrective feature {} claims {claimed}, which is not an assertion of milestone {}",
                                feature.id, self.milestone
                            ));
                        }
                    }
                }
                for assertion in input.new_assertions.iter().filter(|a| a.milestone == self.milestone) {
                    if !input.corrections.iter().any(|f| f.assertions.contains(&assertion.id)) {
                        reasons.push(format!(
                            "new assertion {} must be claimed by one of the corrective features",
                            assertion.id
                        ));
                    }
                }
                if reasons.is_empty() {
                    return Ok(Decision::Correct {
                        notes: input.notes,
                        corrections: input.corrections,
                        new_assertions: input.new_assertions,
                    });
                }
            }
            other => reasons.push(format!("decision must be \"complete\" or \"correct\", not \"{other}\"")),
        }
        Err(format!("The decision was not accepted:\n- {}", reasons.join("\n- ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Terminals that run no command settle at once.
    trait AcceptNow: Terminal {
        fn accept_now(&mut self, input: &Value) -> Result<Self::Output, String> {
            futures_util::FutureExt::now_or_never(self.accept(input)).expect("settles at once")
        }
    }
    impl<T: Terminal> AcceptNow for T {}

    fn plan_input() -> Value {
        json!({
            "title": "Slugify", "summary": "Add slugify.",
            "milestones": [{"id": "M1", "title": "Core", "features": [
                {"id": "F1", "title": "slugify()", "description": "Write it.", "assertions": ["A1"]},
                {"id": "F2", "title": "docs", "description": "Document it.", "assertions": ["A2"]}
            ]}],
            "contract": [
                {"id": "A1", "milestone": "M1", "description": "tests pass", "check": {"kind": "command", "command": "python3 -m unittest", "expect_exit": 0}},
                {"id": "A2", "milestone": "M1", "description": "documented", "check": {"kind": "review", "rubric": "README explains slugify"}}
            ]
        })
    }

    #[test]
    fn a_good_plan_is_accepted() {
        let (plan, contract, _) = SubmitPlan::default().accept_now(&plan_input()).unwrap();
        assert_eq!(plan.milestones[0].features.len(), 2);
        assert_eq!(contract.len(), 2);
    }

    #[test]
    fn a_bad_plan_is_refused_with_every_reason() {
        let mut input = plan_input();
        input["milestones"][0]["features"][1]["assertions"] = json!([]);
        input["milestones"][0]["features"][1]["id"] = json!("F1");
        input["contract"].as_array_mut().unwrap().push(
            json!({"id": "A3", "milestone": "M9", "description": "x", "check": {"kind": "command", "command": " "}}),
        );
        let error = SubmitPlan::default().accept_now(&input).unwrap_err();
        assert!(error.contains("id `F1` is used more than once"), "{error}");
        assert!(error.contains("assertion A2 is claimed by no feature of milestone M1"), "{error}");
        assert!(error.contains("assertion A3 belongs to milestone M9, which is not in the plan"), "{error}");
        let error = SubmitPlan::default().accept_now(&json!({"title": "x"})).unwrap_err();
        assert!(error.contains("required shape"), "{error}");
    }

    fn decide(statuses: &[(&str, AssertionStatus)]) -> DecideMilestone {
        DecideMilestone {
            rejected: false,
            milestone: "M1".into(),
            milestones: vec!["M1".into(), "M2".into()],
            statuses: statuses.iter().map(|(id, s)| (id.to_string(), *s)).collect(),
            used_ids: ["M1", "M2", "F1", "A1", "A2"].iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn complete_is_refused_while_an_assertion_fails_or_is_unverified() {
        let mut terminal = decide(&[("A1", AssertionStatus::Passing), ("A2", AssertionStatus::Failing)]);
        let error = terminal.accept_now(&json!({"decision": "complete", "notes": "looks good"})).unwrap_err();
        assert!(error.contains("A2 (failing)"), "{error}");
        let mut terminal = decide(&[("A1", AssertionStatus::Passing), ("A2", AssertionStatus::Pending)]);
        assert!(
            terminal.accept_now(&json!({"decision": "complete", "notes": ""})).unwrap_err().contains("A2 (unverified)")
        );
        let mut terminal = decide(&[("A1", AssertionStatus::Passing), ("A2", AssertionStatus::Waived)]);
        assert!(matches!(
            terminal.accept_now(&json!({"decision": "complete", "notes": ""})),
            Ok(Decision::Complete { .. })
        ));
        // An assertion added now is unverified, so the same call cannot also complete.
        let added = json!({"decision": "complete", "notes": "", "new_assertions": [{"id": "A3", "milestone": "M1", "description": "d", "check": {"kind": "command", "command": "true"}}]});
        assert!(terminal.accept_now(&added).unwrap_err().contains("A3 (unverified)"));
    }

    #[test]
    fn corrections_must_be_real_features_that_claim_real_assertions() {
        let mut terminal = decide(&[("A1", AssertionStatus::Failing)]);
        let error = terminal.accept_now(&json!({"decision": "correct", "notes": "", "corrections": []})).unwrap_err();
        assert!(error.contains("at least one corrective feature"));
        let bad = json!({"decision": "correct", "notes": "", "corrections": [{"id": "F1", "title": "t", "description": "d", "assertions": ["A9"]}]});
        let error = terminal.accept_now(&bad).unwrap_err();
        assert!(error.contains("`F1` is invalid or already used") && error.contains("claims A9"), "{error}");
        let good = json!({"decision": "correct", "notes": "n", "corrections": [{"id": "F1-fix1", "title": "t", "description": "d", "assertions": ["A1"]}]});
        assert!(
            matches!(terminal.accept_now(&good), Ok(Decision::Correct { corrections, .. }) if corrections.len() == 1)
        );
    }

    #[test]
    fn reports_must_judge_exactly_the_assertions_asked() {
        let mut terminal = ReportFindings::new(vec!["A1".into(), "A2".into()], Vec::new());
        let error = terminal.accept_now(&json!({"verdicts": [{"assertion": "A1", "pass": true, "evidence": "ran it"}, {"assertion": "A7", "pass": true, "evidence": "x"}], "findings": []}))
            .unwrap_err();
        assert!(
            error.contains("a verdict is missing for: A2") && error.contains("Verdicts on A7 were ignored"),
            "{error}"
        );
        // An extra verdict never voids a report: it is dropped, and the findings stand.
        let mut only_findings = ReportFindings::new(Vec::new(), Vec::new());
        let report = only_findings
            .accept_now(&json!({"verdicts": [{"assertion": "AS-3", "pass": false, "evidence": "x"}],
                            "findings": [{"severity": "warning", "path": "a.py", "line": 3, "message": "m"}]}))
            .unwrap();
        assert!(report.verdicts.is_empty());
        assert_eq!(report.findings.len(), 1);
        assert_eq!(only_findings.ignored, vec!["AS-3"]);
        let ok = json!({"verdicts": [{"assertion": "A1", "pass": true, "evidence": "e"}, {"assertion": "A2", "pass": false, "evidence": "e"}],
                        "findings": [{"severity": "error", "path": "a.py", "line": 3, "message": "m", "assertion": "A2"}]});
        assert_eq!(terminal.accept_now(&ok).unwrap().findings[0].line, Some(3));
    }

    #[test]
    fn a_report_resolves_only_the_findings_its_run_was_shown() {
        let mut terminal = ReportFindings::new(Vec::new(), vec!["finding-2".into()]);
        let report = terminal
            .accept_now(&json!({"verdicts": [], "findings": [], "resolved": ["finding-2", "finding-9"]}))
            .unwrap();
        assert_eq!(report.resolved, vec!["finding-2"]);
        assert_eq!(terminal.ignored_resolved, vec!["finding-9"]);
        // `resolved` may be left out: nothing is resolved.
        let silent = terminal.accept_now(&json!({"verdicts": [], "findings": []})).unwrap();
        assert!(silent.resolved.is_empty());
    }

    #[test]
    fn claims_match_observed_commands_honestly() {
        let ran = |command: &str, exit_code: i32| ObservedCommand {
            command: command.into(),
            exit_code: Some(exit_code),
            duration_ms: 1,
        };
        let long = "cargo test --all \\\n  --features x && \\\n  cargo clippy -- -D warnings";
        let observed = vec![
            ran("pytest -q tests/a.py", 1),
            ran("pytest -q tests/a.py", 0),
            ran(long, 0),
            ran("ls -la", 0),
            ran("pytest -x tests/b.py", 0),
        ];
        let check = |claim: &str, exit: i32, expected: ClaimMatch| {
            assert_eq!(match_claim(claim, exit, &observed), expected, "{claim}");
        };
        // The same command, whitespace aside; the run whose exit code agrees is preferred.
        check("pytest  -q   tests/a.py", 0, ClaimMatch::Exact(1));
        check("pytest -q tests/a.py", 1, ClaimMatch::Exact(0));
        // Line continuations are whitespace.
        check("cargo test --all --features x && cargo clippy -- -D warnings", 0, ClaimMatch::Exact(2));
        // A shortened form that says so: a marked prefix at a word boundary, or the first line.
        check("cargo test --all \\", 0, ClaimMatch::Abbreviated(2));
        check("cargo test --all ...", 0, ClaimMatch::Abbreviated(2));
        check("cargo test --all", 0, ClaimMatch::Abbreviated(2));
        // Ambiguous, unmarked, mid-word or unknown: not matched.
        check("pytest ...", 0, ClaimMatch::Unmatched);
        check("pytest", 0, ClaimMatch::Unmatched);
        check("cargo te...", 0, ClaimMatch::Unmatched);
        check("make test", 0, ClaimMatch::Unmatched);
    }

    #[test]
    fn a_handoff_claiming_an_unrun_command_is_sent_back_once() {
        let observed = std::sync::Arc::new(std::sync::Mutex::new(vec![ObservedCommand {
            command: "pytest -q".into(),
            exit_code: Some(0),
            duration_ms: 1,
        }]));
        let mut terminal = SubmitHandoff::checking(observed);
        let handoff = json!({"summary": "done", "completed": [], "skipped": [], "issues": [],
                             "commands": [{"command": "pytest -q", "exit_code": 0}, {"command": "mypy .", "exit_code": 0}],
                             "procedures_followed": true, "procedure_notes": ""});
        let error = terminal.accept_now(&handoff).unwrap_err();
        assert!(error.contains("`mypy .`") && !error.contains("`pytest -q`"), "{error}");
        assert!(terminal.accept_now(&handoff).is_ok(), "sent again, it is accepted (the mismatch is recorded)");
    }
}
