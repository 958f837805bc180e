//! Rendering a projection to its files: JSON for tools, Markdown for people.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{Projection, StoreError};
use crate::mission::{Check, Contract, Plan, WorkStatus};

fn json(value: &impl serde::Serialize) -> Result<Vec<u8>, StoreError> {
    let mut bytes =
        serde_json::to_vec_pretty(value).map_err(|error| StoreError::Encode { message: error.to_string() })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// A file name for an id: ids are checked by the engine, but a file name is built from them
/// here, so anything that could climb out of `handoffs/` is replaced anyway.
fn file_stem(id: &str) -> String {
    let stem: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    if stem.starts_with('.') { format!("_{stem}") } else { stem }
}

/// Which projection files to render: `mission.json` always, the rest (plan, contract,
/// acceptance tests, findings) when `rest`, and the handoffs of the features named (all of
/// them when `all_handoffs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Views {
    pub rest: bool,
    pub all_handoffs: bool,
    pub handoffs: std::collections::BTreeSet<String>,
}

impl Views {
    /// Every file.
    pub fn all() -> Views {
        Views { rest: true, all_handoffs: true, handoffs: Default::default() }
    }

    /// Adds the files `event` can change. Most events change the plan, the contract or the
    /// findings, and anything not known to leave them alone counts as changing them; the
    /// events that come with every model turn change `mission.json` alone.
    pub fn add(&mut self, event: &super::Event) {
        use super::Event;
        match event {
            Event::RunStarted { .. }
            | Event::RunFinished { .. }
            | Event::UsageRecorded { .. }
            | Event::CursorMoved { .. }
            | Event::StateChanged { .. }
            | Event::BudgetSet { .. }
            | Event::AutoAcceptSet { .. }
            | Event::FeatureReviewed { .. }
            | Event::WorkRecorded { .. } => {}
            // A handoff changes its own file and nothing else's.
            Event::HandoffRecorded { handoff } => {
                self.handoffs.insert(handoff.feature.clone());
            }
            _ => self.rest = true,
        }
    }

    fn handoff(&self, feature: &str) -> bool {
        self.all_handoffs || self.handoffs.contains(feature)
    }
}

/// The projection files of a mission that `views` selects, with their bytes.
pub fn projection_files(
    dir: &Path,
    projection: &Projection,
    views: &Views,
) -> Result<Vec<(PathBuf, Vec<u8>)>, StoreError> {
    let mut files = Vec::new();
    if let Some(mission) = &projection.mission {
        files.push((dir.join("mission.json"), json(mission)?));
    }
    if views.rest {
        if let Some(plan) = &projection.plan {
            files.push((dir.join("plan.json"), json(plan)?));
            let tried = dry_run_markdown(&projection.dry_run);
            let mut markdown = plan_markdown(plan);
            markdown.push_str(&tried);
            if let Some(baseline) = &projection.baseline {
                markdown.push_str(&baseline_markdown(baseline));
            }
            files.push((dir.join("plan.md"), markdown.into_bytes()));
            files.push((dir.join("contract.json"), json(&projection.contract)?));
            let contract = contract_markdown(&projection.contract, Some(&projection.acceptance_tests)) + &tried;
            files.push((dir.join("contract.md"), contract.into_bytes()));
        }
        // The acceptance tests, kept where workers never look (SPEC §4): written from the log
        // like every projection, at the path each will have in the workspace.
        for test in projection.acceptance_tests.values() {
            let folder = dir.join(crate::layout::ACCEPTANCE).join(&test.assertion);
            for file in &test.files {
                if let Some(relative) = crate::layout::plain_relative(&file.path) {
                    files.push((folder.join(relative), file.content.clone().into_bytes()));
                }
            }
        }
        files.push((dir.join("findings.json"), json(&projection.findings)?));
    }
    for (feature, handoff) in projection.handoffs.iter().filter(|(feature, _)| views.handoff(feature)) {
        files.push((dir.join("handoffs").join(format!("{}.json", file_stem(feature))), json(handoff)?));
    }
    Ok(files)
}

/// The contract's command checks as tried on the base commit: which guard against
/// regressions (they already pass) and which prove the new work (they fail before it).
pub fn dry_run_markdown(results: &[super::events::DryRunResult]) -> String {
    if results.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n## The command checks, tried on the base commit before any work\n\n");
    for result in results {
        let exit = crate::mission::exit_text(result.exit_code);
        let meaning = if result.passed {
            "already passes: guards against regressions"
        } else {
            "fails before the work: proves the new work"
        };
        let _ = writeln!(out, "- {} `{}`: {exit}, {meaning}", result.assertion, result.command);
    }
    out
}

/// What the project's own checks said on the base commit, before any work.
pub fn baseline_markdown(baseline: &[super::events::BaselineCheck]) -> String {
    let mut out = String::from("\n## Before the mission: the project's checks on the base commit\n\n");
    if baseline.is_empty() {
        out.push_str("No project checks are configured (`[mission] checks`).\n");
    }
    for check in baseline {
        let exit = crate::mission::exit_text(check.exit_code);
        let _ = writeln!(out, "- `{}`: {exit}, {} problem(s) already there", check.command, check.problems.len());
        for (path, line, message) in &check.problems {
            let _ = writeln!(out, "  - {path}:{line}: {}", message.lines().next().unwrap_or_default());
        }
    }
    out.push_str("\nFindings that match these are marked pre-existing and never count against the mission.\n");
    out
}

/// A work status as people read it: its name with spaces (`in progress`).
fn work_status(status: WorkStatus) -> String {
    status.as_str().replace('_', " ")
}

pub fn plan_markdown(plan: &Plan) -> String {
    let mut out = format!("# {}\n\n{}\n", plan.title, plan.summary.trim());
    for milestone in &plan.milestones {
        let _ = write!(out, "\n## {}: {} ({})\n\n", milestone.id, milestone.title, work_status(milestone.status));
        for feature in &milestone.features {
            let mark = if matches!(feature.status, WorkStatus::Pending | WorkStatus::InProgress) { ' ' } else { 'x' };
            let _ = writeln!(out, "- [{mark}] **{}**: {} ({})", feature.id, feature.title, work_status(feature.status));
            for line in feature.description.trim().lines() {
                let _ = writeln!(out, "  {line}");
            }
            if !feature.assertions.is_empty() {
                let _ = writeln!(out, "  Assertions: {}", feature.assertions.join(", "));
            }
        }
    }
    out
}

/// `contract.md`. Each assertion starts with a `### <id>` heading, which is what editors
/// link to from a diagnostic.
///
/// `acceptance` holds the acceptance tests to show with their assertions; `None` leaves their
/// files out (for a reader who must not pass them on to a worker).
pub fn contract_markdown(
    contract: &Contract,
    acceptance: Option<&std::collections::BTreeMap<String, super::events::AcceptanceTest>>,
) -> String {
    let mut out = String::from("# Validation contract\n\n");
    match &contract.sha256 {
        Some(sha) => {
            let _ = writeln!(
                out,
                "Locked at approval; SHA-256 `{sha}`. Assertions may be added, never removed or weakened."
            );
        }
        None => out.push_str("Not locked yet: it is locked when the plan is approved.\n"),
    }
    let mut milestone = None;
    for assertion in &contract.assertions {
        if milestone != Some(&assertion.milestone) {
            let _ = write!(out, "\n## {}\n", assertion.milestone);
            milestone = Some(&assertion.milestone);
        }
        let status = assertion.status.as_str();
        let _ = write!(out, "\n### {} ({status})\n\n{}\n\n", assertion.id, assertion.description.trim());
        match &assertion.check {
            Check::Command { command, expect_exit } => {
                let _ = writeln!(out, "Check: run `{command}`, expect exit {expect_exit}.");
            }
            Check::Review { rubric } => {
                let _ = writeln!(out, "Check: review against: {}", rubric.trim());
            }
            Check::UserTest { steps } => {
                let _ = writeln!(out, "Check: user test: {}", steps.trim());
            }
            Check::Acceptance { behaviour, .. } => {
                let _ = writeln!(out, "Check: acceptance test of this behaviour: {}", behaviour.trim());
                match acceptance.map(|tests| tests.get(&assertion.id)) {
                    Some(Some(test)) => out.push_str(&acceptance_markdown(test)),
                    Some(None) => out.push_str("\nIts test is written by the test author before the plan gate.\n"),
                    None => {}
                }
            }
        }
    }
    out
}

/// An acceptance test as the plan gate shows it: the command, what it printed on the base
/// commit (where it must fail), and each file.
fn acceptance_markdown(test: &super::events::AcceptanceTest) -> String {
    let mut out = format!("\nWritten before the work by the test author: run `{}`, expect exit 0.", test.command);
    if !test.notes.trim().is_empty() {
        let _ = write!(out, " {}", test.notes.trim());
    }
    let exit = test.base_exit.map_or_else(|| "no exit code".to_owned(), |code| format!("exit {code}"));
    let _ = write!(
        out,
        "\n\nIt fails on the base commit ({exit}):\n\n```text\n{}\n```\n",
        clip_tail(&test.base_output, 2_000)
    );
    for file in &test.files {
        let fence = if file.content.contains("```") { "~~~~" } else { "```" };
        let _ = write!(out, "\n`{}`:\n\n{fence}\n{}\n{fence}\n", file.path, file.content.trim_end());
    }
    out
}

/// The end of `text` (trailing whitespace aside), at most `max` bytes and cut at a character,
/// where a test's verdict is.
pub fn clip_tail(text: &str, max: usize) -> &str {
    let text = text.trim_end();
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}
