//! What a mission reports while it runs, as data: where it is (milestone, feature, role, run)
//! and the step it took ([`Step`]). Front ends render it; `Display` gives the one-line form
//! both front doors show (`M1 · F2 · worker · run_command cargo test`), and nothing needs to
//! read English back: whether a report says how something ended is [`Step::is_outcome`].

use std::fmt;

use missions_core::mission::{PauseReason, Role, Validator};

/// One progress report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub mission: String,
    pub milestone: Option<String>,
    pub feature: Option<String>,
    pub role: Option<Role>,
    /// The agent run the step belongs to, if any.
    pub run: Option<String>,
    pub step: Step,
}

/// Which check a check step is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// A project check run on the base commit before any work.
    Baseline,
    /// The command check of an assertion.
    Assertion { id: String, expect_exit: i32 },
    /// One of the project's own checks, during validation.
    Project,
}

/// The boundary's decision, as progress shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    Complete { notes: String },
    Correct { round: u32, features: Vec<String> },
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// An agent run began with this model.
    RunStarted { model: String },
    /// An agent called a tool; `detail` is its main argument (a command, a path).
    ToolCalled { tool: String, detail: String },
    /// A check began.
    CheckStarted { check: CheckKind, command: String },
    /// A check ended: `result` says how (`exit 0`, `timed out`), `passed` whether it did what
    /// was expected (assertions only), `problems` the file:line problems found in its output.
    CheckFinished { check: CheckKind, command: String, result: String, passed: bool, problems: usize },
    /// A validator reported its verdicts (assertion, passes) and findings.
    Reported { validator: Validator, verdicts: Vec<(String, bool)>, findings: usize },
    /// Verdicts on assertions the validator was not asked to judge were ignored.
    VerdictsIgnored { assertions: Vec<String> },
    /// The plan was submitted; it waits for approval.
    PlanSubmitted,
    /// A feature cut off by a crash starts again from its base commit.
    FeatureRestarted,
    /// A feature's work was committed.
    FeatureCommitted { commit: String },
    /// The orchestrator decided at a milestone boundary.
    Decided(Decided),
    /// The milestone validated; it waits for acceptance.
    MilestoneValidated,
    /// The user accepted the milestone; the last one completes the mission.
    MilestoneAccepted { mission_complete: bool },
    /// The mission paused.
    Paused { reason: PauseReason, detail: String },
    /// The working tree's uncommitted changes were saved at a ref before a reset.
    TreeSaved { at: String, why: String },
    /// A commit the branch moved off was kept at a ref.
    CommitKept { commit: String, at: String, target: String },
    /// The user's changes made during a conflict pause were committed as theirs.
    UserChangesCommitted { files: Vec<String>, commit: String, subject: String },
    /// Commands a dead driver left running were stopped.
    OrphansStopped { count: usize },
    /// A git lock left by a git process that died was removed.
    StaleLockRemoved { path: String },
    /// What the sandbox confines.
    Sandbox { summary: String },
}

impl Step {
    /// Whether the step says how something ended (a check's result, a verdict, a decision, a
    /// commit, a pause) rather than a step under way; front ends keep such lines on screen.
    pub fn is_outcome(&self) -> bool {
        matches!(
            self,
            Step::CheckFinished { .. }
                | Step::Reported { .. }
                | Step::FeatureCommitted { .. }
                | Step::Decided(_)
                | Step::MilestoneValidated
                | Step::MilestoneAccepted { .. }
                | Step::Paused { .. }
        )
    }
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(8)]
}

fn passing(passed: bool) -> &'static str {
    if passed { "passing" } else { "failing" }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::RunStarted { model } => write!(f, "started ({model})"),
            Step::ToolCalled { tool, detail } => write!(f, "{}", format!("{tool} {detail}").trim_end()),
            Step::CheckStarted { check: CheckKind::Baseline, command } => write!(f, "baseline: {command}"),
            Step::CheckStarted { check: CheckKind::Assertion { id, .. }, command } => {
                write!(f, "checking {id}: {command}")
            }
            Step::CheckStarted { check: CheckKind::Project, command } => write!(f, "project check: {command}"),
            Step::CheckFinished { check: CheckKind::Baseline, command, result, problems, .. } => {
                write!(f, "baseline `{command}`: {result}, {problems} problem(s) before any work")
            }
            Step::CheckFinished { check: CheckKind::Assertion { id, expect_exit }, result, passed, .. } => {
                write!(f, "{id} {} ({result}, expected exit {expect_exit})", passing(*passed))
            }
            Step::CheckFinished { check: CheckKind::Project, command, result, problems, .. } => {
                write!(f, "project check `{command}`: {result}, {problems} finding(s)")
            }
            Step::Reported { validator, verdicts, findings } => {
                let verdicts: Vec<String> =
                    verdicts.iter().map(|(assertion, pass)| format!("{assertion} {}", passing(*pass))).collect();
                let verdicts = if verdicts.is_empty() { String::new() } else { format!("{}; ", verdicts.join(", ")) };
                write!(f, "{validator}: {verdicts}{findings} finding(s)")
            }
            Step::VerdictsIgnored { assertions } => {
                write!(f, "ignored verdicts on {} (not asked to judge them)", assertions.join(", "))
            }
            Step::PlanSubmitted => f.write_str("plan submitted; waiting for approval"),
            Step::FeatureRestarted => f.write_str("restarting from its base commit"),
            Step::FeatureCommitted { commit } => write!(f, "committed {}", short(commit)),
            Step::Decided(Decided::Complete { notes }) => write!(f, "decided: complete ({notes})"),
            Step::Decided(Decided::Correct { round, features }) => {
                write!(f, "decided: correct, round {round} with {} feature(s): {}", features.len(), features.join(", "))
            }
            Step::MilestoneValidated => f.write_str("validated; waiting for acceptance"),
            Step::MilestoneAccepted { mission_complete: true } => f.write_str("accepted; the mission is complete"),
            Step::MilestoneAccepted { mission_complete: false } => f.write_str("accepted"),
            Step::Paused { reason, detail } => write!(f, "paused ({reason}): {detail}"),
            Step::TreeSaved { at, why } => write!(f, "saved the working tree's uncommitted changes at {at} ({why})"),
            Step::CommitKept { commit, at, target } => {
                write!(f, "kept commit {} at {at} before moving the branch back to {}", short(commit), short(target))
            }
            Step::UserChangesCommitted { files, commit, subject } => {
                write!(f, "committed your changes to {} as {} ({subject})", files.join(", "), short(commit))
            }
            Step::OrphansStopped { count } => {
                write!(f, "stopped {count} command(s) left running by a driver that died")
            }
            Step::StaleLockRemoved { path } => write!(f, "removed {path}, a lock left by a git process that died"),
            Step::Sandbox { summary } => write!(f, "sandbox: {summary}"),
        }
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = self.role.map(|r| r.as_str().replace('_', "-"));
        let step = self.step.to_string();
        let parts: Vec<&str> =
            [self.milestone.as_deref(), self.feature.as_deref(), role.as_deref(), Some(step.as_str())]
                .into_iter()
                .flatten()
                .filter(|p| !p.is_empty())
                .collect();
        f.write_str(&parts.join(" · "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(step: Step, line: &str, outcome: bool) {
        assert_eq!(step.to_string(), line);
        assert_eq!(step.is_outcome(), outcome, "{line}");
    }

    #[test]
    fn each_step_reads_as_one_line_and_says_whether_it_is_an_outcome() {
        check(
            Step::ToolCalled { tool: "run_command".into(), detail: "pytest -q".into() },
            "run_command pytest -q",
            false,
        );
        check(Step::ToolCalled { tool: "list_files".into(), detail: String::new() }, "list_files", false);
        let assertion = CheckKind::Assertion { id: "A1".into(), expect_exit: 0 };
        check(
            Step::CheckStarted { check: assertion.clone(), command: "pytest -q".into() },
            "checking A1: pytest -q",
            false,
        );
        check(
            Step::CheckFinished {
                check: assertion,
                command: "pytest -q".into(),
                result: "exit 1".into(),
                passed: false,
                problems: 2,
            },
            "A1 failing (exit 1, expected exit 0)",
            true,
        );
        check(
            Step::Reported { validator: Validator::Review, verdicts: vec![("A2".into(), true)], findings: 3 },
            "review: A2 passing; 3 finding(s)",
            true,
        );
        check(
            Step::Decided(Decided::Correct { round: 2, features: vec!["F1-fix".into()] }),
            "decided: correct, round 2 with 1 feature(s): F1-fix",
            true,
        );
        check(Step::FeatureCommitted { commit: "0123456789abcdef".into() }, "committed 01234567", true);
        check(Step::Paused { reason: PauseReason::Budget, detail: "cap".into() }, "paused (budget): cap", true);
    }

    #[test]
    fn a_report_names_where_the_mission_is() {
        let progress = Progress {
            mission: "m1".into(),
            milestone: Some("M1".into()),
            feature: Some("F2".into()),
            role: Some(Role::UserTester),
            run: Some("r1".into()),
            step: Step::ToolCalled { tool: "run_command".into(), detail: "cargo test".into() },
        };
        assert_eq!(progress.to_string(), "M1 · F2 · user-tester · run_command cargo test");
    }
}
