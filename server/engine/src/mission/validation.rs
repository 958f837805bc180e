//! Milestone validation: the contract's command checks and the project's checks, run by the
//! engine; review agents in parallel; the user-testing agent; reverting what validators leave
//! in the tree; and deciding which earlier findings are fixed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::StreamExt;
use missions_core::mission::{
    Assertion, AssertionStatus, Check, Feature, Finding, FindingDraft, FindingStatus, Milestone, MissionState, Role,
    Severity, Validator, WorkStatus,
};
use missions_core::store::{Event, Projection};
use missions_tools::ToolSet;

use crate::agent::RunEnd;
use crate::prompts::{self, Template};
use crate::terminals::{FindingsReport, ReportFindings};

use super::rules;
use super::{CheckKind, Step};
use super::{EngineError, Mission, RunRequest, clip};

/// How the finding about a validator that changed the tree ends: a fact about one run, fixed
/// when a later validation runs without it happening again.
const TREE_REVERTED: &str = "; validators must not, and the changes were reverted";

/// A feature's review: `None` when its files did not change since its last one.
type ReviewResult = Result<(Feature, Vec<String>, Option<RunEnd<FindingsReport>>), EngineError>;

/// The words every finding that was already there before the mission begins with.
pub(super) const PRE_EXISTING: &str = "pre-existing (";

/// The problems each check reported on the base commit, as counts per (check, path, message),
/// consumed one by one as later problems match them: a problem reported once before the
/// mission excuses one problem after it, never every problem of the same kind. Messages that
/// say nothing specific (a Python traceback frame) never match.
pub(super) struct Baseline(BTreeMap<(String, String, String), usize>);

impl Baseline {
    pub(super) fn new(checks: Option<&[missions_core::store::BaselineCheck]>) -> Baseline {
        let mut counts = BTreeMap::new();
        for check in checks.into_iter().flatten() {
            for (path, _, message) in &check.problems {
                if message == crate::checks::TRACEBACK_FRAME {
                    continue;
                }
                *counts.entry((check.command.clone(), path.clone(), message.clone())).or_insert(0) += 1;
            }
        }
        Baseline(counts)
    }

    /// Whether `problem` of `check` was already there; takes it out of the baseline if so.
    pub(super) fn take(&mut self, check: &str, problem: &crate::checks::CheckProblem) -> bool {
        let key = (check.to_owned(), problem.path.clone(), problem.message.clone());
        match self.0.get_mut(&key) {
            Some(count) if *count > 0 => {
                *count -= 1;
                true
            }
            _ => false,
        }
    }
}

impl Mission {
    /// Runs the project's checks once on the base commit, before any work, and records what
    /// they report (SPEC §5, issue "fair baseline"): what was already broken is not the
    /// mission's.
    pub(super) async fn record_baseline(&self) -> Result<(), EngineError> {
        let checks_configured = self.config.config.mission.checks.clone();
        let tmp = self.run_tmp()?;
        let environment = self.command_environment(None, tmp);
        let timeout = Duration::from_secs(self.config.config.mission.max_command_timeout_s.max(1));
        let recorder = self.work_log();
        let head = self.shared.git.head()?;
        let mut checks = Vec::new();
        for check in checks_configured {
            let started = Step::CheckStarted { check: CheckKind::Baseline, command: check.clone() };
            self.shared.progress(None, None, None, started);
            let result = crate::checks::run_check(&environment, &check, timeout, &recorder).await;
            let problems = crate::checks::parse_output(&self.workspace, &result.output);
            let finished = Step::CheckFinished {
                check: CheckKind::Baseline,
                command: check.clone(),
                result: result.outcome(),
                passed: result.exit_code == Some(0),
                problems: problems.len(),
            };
            self.shared.progress(None, None, None, finished);
            checks.push(missions_core::store::BaselineCheck {
                command: check.clone(),
                exit_code: result.exit_code,
                problems: problems.into_iter().map(|p| (p.path, p.line, p.message)).collect(),
            });
            // The base commit belongs to no milestone: what a baseline check leaves is put back
            // (and saved), not reported.
            self.shared.revert_to(&head, &format!("changes left by the baseline run of `{check}`"))?;
        }
        self.shared.append(Event::BaselineRecorded { checks })
    }

    /// Reverts whatever a validator left in the tree, recording it unless it is only caches.
    pub(super) fn revert_validator_changes(
        &self,
        milestone: &str,
        head: &str,
        validator: Validator,
        who: &str,
    ) -> Result<(), EngineError> {
        // What the user saved while validation ran is theirs, never a validator's to revert:
        // `revert_to` refuses it.
        let reverted = self.shared.revert_to(head, &format!("changes left by {who}"))?;
        if reverted.files.is_empty() {
            return Ok(());
        }
        let files = reverted.files.join(", ");
        self.shared.record_finding(FindingDraft {
            path: reverted.files.first().cloned(),
            evidence: format!(
                "files: {files}{}",
                reverted.saved.map(|r| format!("; the changes are kept at {r}")).unwrap_or_default()
            ),
            ..FindingDraft::new(
                milestone,
                validator,
                Severity::Warning,
                format!("{who} changed the working tree ({files}){TREE_REVERTED}"),
            )
        })?;
        Ok(())
    }

    pub(super) async fn validate(&mut self, projection: &Projection) -> Result<(), EngineError> {
        let Some(milestone) = rules::current_milestone(projection).cloned() else {
            return self.shared.set_state(MissionState::Running, None, None);
        };
        // Recovery: a crash after the milestone commit, or after corrective features were
        // added, left the state behind the plan.
        if milestone.status == WorkStatus::Validated {
            return self.shared.set_state(MissionState::AwaitingAcceptance, None, None);
        }
        // A "complete" decision recorded before a crash is carried out, not made again.
        if projection.decided_complete.as_deref() == Some(milestone.id.as_str()) {
            return self.complete_milestone(&milestone);
        }
        // A rejected milestone was validated already: its boundary run decides what the
        // feedback needs.
        if projection.boundary_pending.as_deref() == Some(milestone.id.as_str()) {
            return self.boundary(&milestone).await;
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
        // What an interrupted validation left goes, saved first; the user's changes are never
        // the engine's to drop.
        if !git.dirty_files()?.is_empty() {
            self.take_back_tree(projection, &head, "found in the tree when validation began")?;
        }
        let findings_before = projection.findings.len();
        let events_before = projection.events;
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
        let recorder = self.work_log();

        // The contract's command checks, run by the engine itself.
        for assertion in &assertions {
            let Check::Command { command, expect_exit } = &assertion.check else { continue };
            let kind = CheckKind::Assertion { id: assertion.id.clone(), expect_exit: *expect_exit };
            let started = Step::CheckStarted { check: kind.clone(), command: command.clone() };
            self.shared.progress(Some(&milestone.id), None, None, started);
            let result = crate::checks::run_check(&environment, command, timeout, &recorder).await;
            let passed = !result.timed_out && result.exit_code == Some(*expect_exit);
            let finished = Step::CheckFinished {
                check: kind,
                command: command.clone(),
                result: result.outcome(),
                passed,
                problems: 0,
            };
            self.shared.progress(Some(&milestone.id), None, None, finished);
            let outcome = result.outcome();
            let message = format!(
                "{}: `{command}` {outcome} (expected {expect_exit}): {}",
                assertion.id,
                assertion.description.trim()
            );
            let failure = FindingDraft::new(&milestone.id, Validator::Command, Severity::Error, message);
            let problems = || crate::checks::parse_output(&self.workspace, &result.output);
            self.record_verdict(&assertion.id, passed, clip(&result.describe(timeout), 8_000), problems, failure)?;
            self.revert_validator_changes(
                &milestone.id,
                &head,
                Validator::Command,
                &format!("the check of {}", assertion.id),
            )?;
        }

        // The acceptance tests, placed in the tree only while each runs (SPEC §2 rule 9). A
        // failure's evidence is the test's output, so a corrective worker learns what failed,
        // never the test's code.
        for assertion in &assertions {
            let Check::Acceptance { .. } = &assertion.check else { continue };
            let Some(test) = projection.acceptance_tests.get(&assertion.id) else {
                self.unverified(
                    &milestone.id,
                    None,
                    std::slice::from_ref(&assertion.id),
                    "no acceptance test was recorded for it",
                )?;
                continue;
            };
            let kind = CheckKind::Assertion { id: assertion.id.clone(), expect_exit: 0 };
            let started = Step::CheckStarted { check: kind.clone(), command: test.command.clone() };
            self.shared.progress(Some(&milestone.id), None, None, started);
            let result =
                crate::acceptance::run_with_files(&self.workspace, test, &environment, timeout, &recorder).await;
            self.revert_validator_changes(
                &milestone.id,
                &head,
                Validator::Acceptance,
                &format!("the acceptance test of {}", assertion.id),
            )?;
            let (passed, outcome, evidence) = match &result {
                Ok(result) => (
                    !result.timed_out && result.exit_code == Some(0),
                    result.outcome(),
                    clip(&crate::acceptance::without_test_source(&result.describe(timeout), test), 8_000),
                ),
                Err(problem) => (false, "could not run".to_owned(), problem.clone()),
            };
            // A place in the project's code, never in the test itself.
            let problems = || match &result {
                Ok(result) => crate::checks::parse_output(&self.workspace, &result.output)
                    .into_iter()
                    .filter(|p| !test.files.iter().any(|f| f.path == p.path))
                    .collect(),
                Err(_) => Vec::new(),
            };
            let finished = Step::CheckFinished {
                check: kind,
                command: test.command.clone(),
                result: outcome.clone(),
                passed,
                problems: 0,
            };
            self.shared.progress(Some(&milestone.id), None, None, finished);
            let message = format!(
                "{}: the acceptance test written before the work fails ({outcome}): {}",
                assertion.id,
                assertion.description.trim()
            );
            let failure = FindingDraft::new(&milestone.id, Validator::Acceptance, Severity::Error, message);
            self.record_verdict(&assertion.id, passed, evidence, problems, failure)?;
        }

        // The project's own checks, parsed into file:line findings.
        let mut excused = Baseline::new(projection.baseline.as_deref());
        for check in self.config.config.mission.checks.clone() {
            let started = Step::CheckStarted { check: CheckKind::Project, command: check.clone() };
            self.shared.progress(Some(&milestone.id), None, None, started);
            let result = crate::checks::run_check(&environment, &check, timeout, &recorder).await;
            let problems = crate::checks::parse_output(&self.workspace, &result.output);
            let finished = Step::CheckFinished {
                check: CheckKind::Project,
                command: check.clone(),
                result: result.outcome(),
                passed: result.exit_code == Some(0),
                problems: problems.len(),
            };
            self.shared.progress(Some(&milestone.id), None, None, finished);
            self.shared.append(Event::ProjectCheckRan {
                milestone: milestone.id.clone(),
                command: check.clone(),
                exit_code: result.exit_code,
                findings: problems.len() as u32,
            })?;
            let evidence = clip(&result.describe(timeout), 4_000);
            let baseline = projection.baseline.as_deref();
            for problem in &problems {
                // What was broken before the mission is reported apart and never counts against
                // it.
                let before = excused.take(&check, problem);
                self.shared.record_finding(FindingDraft {
                    path: Some(problem.path.clone()),
                    line: Some(problem.line),
                    end_line: problem.end_line,
                    ..FindingDraft::new(
                        &milestone.id,
                        Validator::ProjectCheck,
                        if before { Severity::Info } else { problem.severity },
                        if before {
                            format!(
                                "{PRE_EXISTING}already reported on the base commit): `{check}`: {}",
                                problem.message
                            )
                        } else {
                            format!("`{check}`: {}", problem.message)
                        },
                    )
                })?;
            }
            if result.exit_code != Some(0) && problems.is_empty() {
                // Only a check that ran and failed before (not one that timed out or never
                // started) excuses a failure now.
                let failed_before = baseline.into_iter().flatten().any(|b| {
                    b.command == check && matches!(b.exit_code, Some(code) if code != 0) && b.problems.is_empty()
                }) && result.exit_code.is_some();
                self.shared.record_finding(FindingDraft {
                    evidence,
                    ..FindingDraft::new(
                        &milestone.id,
                        Validator::ProjectCheck,
                        if failed_before { Severity::Info } else { Severity::Error },
                        if failed_before {
                            format!(
                                "{PRE_EXISTING}it failed on the base commit too): `{check}` failed ({})",
                                result.outcome()
                            )
                        } else {
                            format!("`{check}` failed ({})", result.outcome())
                        },
                    )
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
        let head_ref = head.as_str();
        let reports: Vec<ReviewResult> = futures_util::stream::iter(reviews)
            .map(|(feature, asked)| async move {
                let end = this.review(projection, milestone_ref, &feature, &asked, head_ref).await?;
                Ok((feature, asked, end))
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut stop = None;
        for report in reports {
            let (feature, asked, end) = report?;
            // A feature whose files did not change since its last review keeps that review.
            let Some(end) = end else { continue };
            match end {
                RunEnd::Finished(report) => self.shared.together(|| {
                    self.record_report(&milestone.id, Some(&feature.id), Validator::Review, report)?;
                    self.shared.append(Event::FeatureReviewed { feature: feature.id.clone(), commit: head.clone() })
                })?,
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

        self.mark_fixed(&milestone.id, findings_before, events_before)?;
        self.boundary(&milestone).await
    }

    /// Reviews `feature` at commit `head`: the first time with its whole diff; again only when
    /// its files changed since its last review, with the diff since then and its open findings
    /// (SPEC §5). `None`: nothing changed, so the last review stands.
    pub(super) async fn review(
        &self,
        projection: &Projection,
        milestone: &Milestone,
        feature: &Feature,
        asked: &[String],
        head: &str,
    ) -> Result<Option<RunEnd<FindingsReport>>, EngineError> {
        let handoff = projection.handoffs.get(&feature.id);
        let handoff_text = handoff.map(super::handoff_for_review).unwrap_or_else(|| "(no handoff)".into());
        let git = &self.shared.git;
        let (diff, open) = match projection.reviewed.get(&feature.id) {
            Some(reviewed_at) => {
                let paths: Vec<String> =
                    handoff.iter().flat_map(|h| h.files_changed.iter().map(|c| c.path.clone())).collect();
                let since = if paths.is_empty() { String::new() } else { git.diff(reviewed_at, head, &paths, 60_000)? };
                // A verdict that does not hold is judged again even on unchanged code: the
                // assertion may be this feature's to judge only now (a correction claimed
                // another), and a failing verdict must never be stuck.
                let verdicts_hold = asked
                    .iter()
                    .all(|id| projection.contract.assertions.iter().any(|a| &a.id == id && a.status.holds()));
                if since.trim().is_empty() && verdicts_hold {
                    return Ok(None);
                }
                let since =
                    if since.trim().is_empty() { "(no change since your last review)".to_owned() } else { since };
                (
                    super::messages::ReviewDiff::SinceLastReview(since),
                    validator_findings(projection, &milestone.id, Validator::Review, Some(&feature.id)),
                )
            }
            None => {
                let diff = match (projection.feature_bases.get(&feature.id), handoff.and_then(|h| h.commit.clone())) {
                    (Some(base), Some(commit)) => git.diff(base, &commit, &[], 60_000)?,
                    _ => "(no commit recorded for this feature)".into(),
                };
                (super::messages::ReviewDiff::First(diff), Vec::new())
            }
        };
        let first = super::messages::review(projection, milestone, feature, asked, &handoff_text, diff, &open);
        let shown = open.iter().map(|f| f.id.clone()).collect();
        let end = self.judge(Role::Reviewer, first, asked, shown, milestone, Some(feature)).await?;
        Ok(Some(end))
    }

    /// Runs a validator agent (a reviewer of `feature`, or the user tester of `milestone`)
    /// asked to judge `asked`, shown its open findings `shown`.
    pub(super) async fn judge(
        &self,
        role: Role,
        first_message: String,
        asked: &[String],
        shown: Vec<String>,
        milestone: &Milestone,
        feature: Option<&Feature>,
    ) -> Result<RunEnd<FindingsReport>, EngineError> {
        // What the run's tools rank first: the feature it reviews, or the milestone it tests.
        let focus = feature.map(|f| f.description.as_str()).unwrap_or(milestone.title.as_str());
        let (template, set, max_turns) = match role {
            Role::UserTester => (Template::UserTester, ToolSet::UserTester, self.options.limits.user_tester_turns),
            Role::Reviewer | Role::Orchestrator | Role::Worker | Role::TestAuthor => {
                (Template::Reviewer, ToolSet::Reviewer, self.options.limits.reviewer_turns)
            }
        };
        let values = BTreeMap::from([("project_instructions", prompts::project_instructions(&self.workspace))]);
        let system = prompts::render(template, &self.workspace, &values)?;
        let tools = self.toolbox(set, focus, self.run_tmp()?)?;
        let mut terminal = ReportFindings::new(asked.to_vec(), shown);
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
        let end = self.run(request, &tools, &mut terminal).await?;
        let validator = if role == Role::UserTester { Validator::UserTest } else { Validator::Review };
        if !terminal.ignored.is_empty() {
            self.shared.progress(
                Some(&milestone.id),
                feature.map(|f| f.id.as_str()),
                Some(role),
                Step::VerdictsIgnored { assertions: terminal.ignored.clone() },
            );
        }
        // Findings are always recorded (SPEC §2 rule 10): a run that never managed an
        // acceptable report still leaves what it found.
        if matches!(end, RunEnd::GaveUp(_)) && !terminal.last_findings.is_empty() {
            let findings = std::mem::take(&mut terminal.last_findings);
            let report = FindingsReport { verdicts: Vec::new(), findings, resolved: Vec::new() };
            self.record_report(&milestone.id, feature.map(|f| f.id.as_str()), validator, report)?;
        }
        Ok(end)
    }

    pub(super) async fn user_test(
        &self,
        projection: &Projection,
        milestone: &Milestone,
        asked: &[String],
    ) -> Result<RunEnd<FindingsReport>, EngineError> {
        let open = validator_findings(projection, &milestone.id, Validator::UserTest, None);
        let first = super::messages::user_test(projection, milestone, asked, &open);
        let shown = open.iter().map(|f| f.id.clone()).collect();
        self.judge(Role::UserTester, first, asked, shown, milestone, None).await
    }

    pub(super) fn record_report(
        &self,
        milestone: &str,
        feature: Option<&str>,
        validator: Validator,
        report: FindingsReport,
    ) -> Result<(), EngineError> {
        let verdicts = report.verdicts.iter().map(|v| (v.assertion.clone(), v.pass)).collect();
        let reported = Step::Reported { validator, verdicts, findings: report.findings.len() };
        self.shared.progress(Some(milestone), feature, None, reported);
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
                    self.shared.record_finding(FindingDraft {
                        assertion: Some(verdict.assertion.clone()),
                        feature: feature.map(str::to_owned),
                        evidence: verdict.evidence.clone(),
                        ..FindingDraft::new(
                            milestone,
                            validator,
                            Severity::Error,
                            format!("{} does not hold", verdict.assertion),
                        )
                    })?;
                }
            }
        }
        // Only the validator that reported a finding, shown it again, fixes it by saying so.
        for id in &report.resolved {
            let by = match feature {
                Some(feature) => format!("confirmed fixed by the reviewer of {feature}"),
                None => "confirmed fixed by the user-testing agent".to_owned(),
            };
            self.shared.append(Event::FindingStatusChanged {
                finding: id.clone(),
                status: FindingStatus::Fixed,
                reason: Some(by),
            })?;
        }
        for reported in report.findings {
            let message = match &reported.assertion {
                Some(a) if !reported.message.starts_with(a.as_str()) => format!("{a}: {}", reported.message),
                _ => reported.message.clone(),
            };
            self.shared.record_finding(FindingDraft {
                assertion: reported.assertion,
                feature: feature.map(str::to_owned),
                path: reported.path,
                line: reported.line,
                end_line: reported.end_line,
                ..FindingDraft::new(milestone, validator, reported.severity, message)
            })?;
        }
        Ok(())
    }

    /// Records the verdict on `assertion` of a check the engine ran itself; a failure is also
    /// `failure`, with the evidence, placed at the last error of the check's output `problems`
    /// (parsed only then).
    fn record_verdict(
        &self,
        assertion: &str,
        passed: bool,
        evidence: String,
        problems: impl FnOnce() -> Vec<crate::checks::CheckProblem>,
        failure: FindingDraft,
    ) -> Result<(), EngineError> {
        self.shared.append(Event::AssertionChecked {
            assertion: assertion.to_owned(),
            status: if passed { AssertionStatus::Passing } else { AssertionStatus::Failing },
            evidence: evidence.clone(),
        })?;
        if !passed {
            let problems = problems();
            let place = problems.iter().rev().find(|p| p.severity == Severity::Error).or(problems.last());
            self.shared.record_finding(FindingDraft {
                assertion: Some(assertion.to_owned()),
                path: place.map(|p| p.path.clone()),
                line: place.map(|p| p.line),
                end_line: place.and_then(|p| p.end_line),
                evidence,
                ..failure
            })?;
        }
        Ok(())
    }

    pub(super) fn unverified(
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
        self.shared.record_finding(FindingDraft {
            assertion: assertions.first().cloned(),
            feature: feature.map(str::to_owned),
            evidence: reason.to_owned(),
            ..FindingDraft::new(
                milestone,
                Validator::Engine,
                Severity::Warning,
                format!("not verified ({}): {reason}", assertions.join(", ")),
            )
        })?;
        Ok(())
    }

    /// Settles the open findings of earlier validations of `milestone` (SPEC §4): one tied to
    /// an assertion is fixed when this validation checked the assertion and it passed; one of a
    /// project check when the check no longer reports it. A review or user-test finding with no
    /// assertion is fixed only by its validator listing it as resolved ([`Self::record_report`]),
    /// never by silence; handoff mismatches are facts about a past run and stay until dismissed.
    pub(super) fn mark_fixed(
        &self,
        milestone: &str,
        findings_before: usize,
        events_before: u64,
    ) -> Result<(), EngineError> {
        let projection = self.shared.projection();
        let key = |f: &Finding| (f.validator, f.assertion.clone(), f.path.clone(), f.message.clone());
        let current: BTreeSet<_> = projection.findings[findings_before..].iter().map(key).collect();
        let passed_now = |assertion: &str| {
            projection.assertion_checked_at.get(assertion).is_some_and(|at| *at > events_before)
                && projection.contract.assertions.iter().any(|a| a.id == assertion && a.status.holds())
        };
        for finding in &projection.findings[..findings_before] {
            if finding.milestone != milestone || finding.status != FindingStatus::Open {
                continue;
            }
            let fixed = match (&finding.assertion, finding.validator) {
                (_, Validator::HandoffMismatch) => false,
                (Some(assertion), _) => passed_now(assertion),
                (None, Validator::ProjectCheck | Validator::Command) => !current.contains(&key(finding)),
                (None, _) if finding.message.ends_with(TREE_REVERTED) => !current.contains(&key(finding)),
                (None, _) => false,
            };
            if fixed {
                let reason = match &finding.assertion {
                    Some(assertion) => format!("{assertion} passed in the next validation"),
                    None => "the check no longer reports it".to_owned(),
                };
                self.shared.append(Event::FindingStatusChanged {
                    finding: finding.id.clone(),
                    status: FindingStatus::Fixed,
                    reason: Some(reason),
                })?;
            }
        }
        Ok(())
    }
}

/// The open findings of `validator` on `milestone` (on `feature` when given) that have no
/// assertion: the ones only that validator can declare fixed, so its next run is shown them.
fn validator_findings<'a>(
    projection: &'a Projection,
    milestone: &str,
    validator: Validator,
    feature: Option<&str>,
) -> Vec<&'a Finding> {
    projection
        .findings
        .iter()
        .filter(|f| {
            f.status == FindingStatus::Open
                && f.milestone == milestone
                && f.validator == validator
                && f.assertion.is_none()
                && (feature.is_none() || f.feature.as_deref() == feature)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::Baseline;
    use crate::checks::{CheckProblem, TRACEBACK_FRAME};
    use missions_core::mission::Severity;
    use missions_core::store::BaselineCheck;

    fn problem(path: &str, message: &str) -> CheckProblem {
        CheckProblem {
            path: path.into(),
            line: 1,
            end_line: None,
            severity: Severity::Warning,
            message: message.into(),
            excerpt: String::new(),
        }
    }

    #[test]
    fn a_problem_from_before_the_mission_excuses_one_problem_not_every_one_like_it() {
        let before = vec![BaselineCheck {
            command: "ruff check".into(),
            exit_code: Some(1),
            problems: vec![
                ("a.py".into(), 3, "D103 Missing docstring".into()),
                ("a.py".into(), 9, TRACEBACK_FRAME.into()),
            ],
        }];
        let mut baseline = Baseline::new(Some(&before));
        assert!(baseline.take("ruff check", &problem("a.py", "D103 Missing docstring")), "the old one, moved");
        assert!(!baseline.take("ruff check", &problem("a.py", "D103 Missing docstring")), "a new one of the same kind");
        assert!(!baseline.take("ruff check", &problem("a.py", TRACEBACK_FRAME)), "a frame says nothing specific");
        assert!(!baseline.take("mypy .", &problem("a.py", "D103 Missing docstring")), "another check");
    }
}
