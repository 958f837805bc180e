//! The first messages of the roles' runs and the parts they are made of (the plan excerpt,
//! the assertions, the handoffs as workers and reviewers read them, course corrections), in
//! one place beside the prompt templates of `prompts/`.

use super::*;

/// The planning run's first message: the backlog item's text.
pub(super) fn planning(source: &Source) -> String {
    format!("Plan this backlog item:\n\n{}", source.text.trim())
}

/// The test author's first message: the plan and the `acceptance` assertions to cover
/// (`needed`: id → behaviour), with the milestone and features each belongs to.
pub(super) fn test_author(projection: &Projection, needed: &BTreeMap<String, String>) -> String {
    let plan = projection.plan.as_ref().map(missions_core::store::render_plan_markdown).unwrap_or_default();
    let mut out =
        format!("Write the acceptance tests of this plan.\n\n{}\n\nThe acceptance assertions to cover:", plan.trim());
    for (id, behaviour) in needed {
        let assertion = projection.contract.assertions.iter().find(|a| &a.id == id);
        let claimed_by: Vec<String> = projection
            .plan
            .iter()
            .flat_map(|p| p.features())
            .filter(|f| f.assertions.contains(id))
            .map(|f| format!("{} ({})", f.id, f.title))
            .collect();
        out.push_str(&format!(
            "\n- {id} (milestone {}): {}\n  Behaviour: {}\n  Made true by: {}",
            assertion.map(|a| a.milestone.as_str()).unwrap_or_default(),
            assertion.map(|a| a.description.trim()).unwrap_or_default(),
            behaviour.trim(),
            if claimed_by.is_empty() { "(no feature)".to_owned() } else { claimed_by.join(", ") }
        ));
    }
    out.push_str("\n\nWrite each test's files with write_acceptance_test, then call submit_acceptance_tests.");
    out
}

/// A worker's first message: its feature's id, title and description, and the behaviour each
/// of its acceptance assertions pins down (the test itself stays hidden, SPEC §2 rule 9).
pub(super) fn worker(projection: &Projection, feature: &Feature) -> String {
    let behaviours: Vec<String> = projection
        .contract
        .assertions
        .iter()
        .filter(|a| feature.assertions.contains(&a.id))
        .filter_map(|a| match &a.check {
            Check::Acceptance { behaviour, .. } => Some(format!("- {}: {}", a.id, behaviour.trim())),
            _ => None,
        })
        .collect();
    let hidden = if behaviours.is_empty() {
        String::new()
    } else {
        format!(
            "\n\nAcceptance tests written before the work check this behaviour; you cannot see them, so make the \
             behaviour true, not a test pass:\n{}",
            behaviours.join("\n")
        )
    };
    format!(
        "Feature {}: {}\n\n{}{hidden}\n\nImplement this feature, then call submit_handoff.",
        feature.id,
        feature.title,
        feature.description.trim()
    )
}

/// What a review agent is shown of a feature's code.
pub(super) enum ReviewDiff {
    /// The first review: the feature's whole diff.
    First(String),
    /// A later review: the diff since the last one.
    SinceLastReview(String),
}

/// A review agent's first message: the feature, the assertions it judges, the worker's
/// handoff, the feature's diff, and (reviewing again) its open findings on the feature.
pub(super) fn review(
    projection: &Projection,
    milestone: &Milestone,
    feature: &Feature,
    asked: &[String],
    handoff_text: &str,
    diff: ReviewDiff,
    open: &[&Finding],
) -> String {
    let code = match diff {
        ReviewDiff::First(diff) => format!("The feature's diff:\n```diff\n{diff}\n```"),
        ReviewDiff::SinceLastReview(diff) => format!(
            "This feature was reviewed before.\n\n{}\n\nThe diff since your last review:\n```diff\n{diff}\n```",
            shown_findings(open)
        ),
    };
    format!(
        "Review feature {} ({}) of milestone {}.\n\nAssertions to judge: {}\n{}\n\nThe feature:\n{}\n\nThe worker's handoff:\n{}\n\n{code}",
        feature.id,
        feature.title,
        milestone.id,
        if asked.is_empty() { "none (report findings only)".into() } else { asked.join(", ") },
        assertions_text(projection, asked),
        feature.description.trim(),
        clip(handoff_text, 8_000),
    )
}

/// The user-testing agent's first message: the milestone, the assertions it judges, and its
/// open findings from earlier validations.
pub(super) fn user_test(projection: &Projection, milestone: &Milestone, asked: &[String], open: &[&Finding]) -> String {
    let mut message = format!(
        "User-test milestone {} ({}).\n\nAssertions to judge: {}\n{}",
        milestone.id,
        milestone.title,
        asked.join(", "),
        assertions_text(projection, asked)
    );
    if !open.is_empty() {
        message.push_str("\n\n");
        message.push_str(&shown_findings(open));
    }
    message
}

/// A validator's own open findings as its later run is shown them: only the validator can say
/// one is fixed, by listing it in `resolved` (silence is not a fix).
fn shown_findings(open: &[&Finding]) -> String {
    if open.is_empty() {
        return "You have no open findings from earlier validations.".into();
    }
    let mut text = "Your open findings from earlier validations (list in `resolved` the ids of those the code now \
                    fixes; a finding you do not list stays open, so repeat none of them as new findings):"
        .to_owned();
    for finding in open {
        let place = match (&finding.path, finding.line) {
            (Some(path), Some(line)) => format!(", {path}:{line}"),
            (Some(path), None) => format!(", {path}"),
            _ => String::new(),
        };
        let first_line = finding.message.lines().next().unwrap_or_default();
        text.push_str(&format!("\n- {} ({}{place}): {first_line}", finding.id, finding.severity.as_str()));
    }
    text
}

/// The boundary run's first message: the milestone and its round (and the user's feedback
/// when it was rejected), every assertion with its status and evidence, the project's checks,
/// the open findings (the mission's apart from those that were there before it), the
/// handoffs and the user's course corrections.
pub(super) fn boundary(
    projection: &Projection,
    milestone: &Milestone,
    rejections: &[String],
    rounds: rules::Round,
) -> String {
    let assertion_lines: Vec<String> = projection
        .contract
        .assertions
        .iter()
        .filter(|a| a.milestone == milestone.id)
        .map(|a| {
            let evidence = projection
                .assertion_evidence
                .get(&a.id)
                .filter(|e| !e.trim().is_empty())
                .map(|e| format!("\n  evidence: {}", clip(e, 1_500).replace('\n', "\n  ")))
                .unwrap_or_default();
            format!("- {} [{}]: {}{evidence}", a.id, a.status, a.description.trim())
        })
        .collect();
    let check_lines: Vec<String> = projection
        .check_runs
        .get(&milestone.id)
        .into_iter()
        .flatten()
        .map(|(command, exit_code, findings)| {
            let exit = missions_core::mission::exit_text(*exit_code);
            format!("- `{command}`: {exit}, {findings} finding(s)")
        })
        .collect();
    let open: Vec<&Finding> =
        projection.findings.iter().filter(|f| f.milestone == milestone.id && f.status == FindingStatus::Open).collect();
    let (before, now): (Vec<&Finding>, Vec<&Finding>) =
        open.into_iter().partition(|f| f.message.starts_with(validation::PRE_EXISTING));
    let line_of = |f: &&Finding| {
        let place = f.place();
        let evidence = if f.evidence.is_empty() {
            String::new()
        } else {
            format!("\n  evidence: {}", clip(&f.evidence, 1_500).replace('\n', "\n  "))
        };
        format!("- {} [{} {}]{place}: {}{evidence}", f.id, f.validator, f.severity, f.message)
    };
    let finding_lines: Vec<String> = now.iter().map(line_of).collect();
    let before_lines: Vec<String> = before.iter().map(line_of).collect();
    // The user's feedback is the first thing the boundary reads.
    let feedback = if rejections.is_empty() {
        String::new()
    } else {
        format!(
            "\n\nThe user rejected this milestone with this feedback (latest last):\n{}",
            rejections.iter().map(|f| format!("- {}", f.trim().replace('\n', "\n  "))).collect::<Vec<_>>().join("\n")
        )
    };
    let first = format!(
        "Milestone {} boundary (round {} of at most {}): {}{feedback}\n\nAssertions:\n{}\n\nThe project's own checks:\n{}\n\nOpen findings:\n{}{}\n\nHandoffs:\n{}\n\nCourse corrections from the user:\n{}",
        milestone.id,
        rounds.used + 1,
        rounds.bound,
        milestone.title,
        assertion_lines.join("\n"),
        if check_lines.is_empty() { "(none configured)".into() } else { check_lines.join("\n") },
        if finding_lines.is_empty() { "(none)".into() } else { finding_lines.join("\n") },
        if before_lines.is_empty() {
            String::new()
        } else {
            format!(
                "\n\nPre-existing findings (already reported on the base commit; they never count against the \
                 milestone, fix them only if you choose):\n{}",
                before_lines.join("\n")
            )
        },
        handoff_summaries(projection, ""),
        course_corrections(projection)
    );
    first
}

/// A worker's handoff as a reviewer reads it: each claimed command once, with the exit code
/// the engine observed beside it and any mismatch marked, then the commands run but not
/// claimed.
pub(super) fn handoff_for_review(handoff: &Handoff) -> String {
    let mut out = format!("Summary: {}\n", handoff.claim.summary.trim());
    let list = |title: &str, items: Vec<String>, out: &mut String| {
        if !items.is_empty() {
            out.push_str(&format!("{title}:\n"));
            for item in items {
                out.push_str(&format!("- {item}\n"));
            }
        }
    };
    list("Completed", handoff.claim.completed.clone(), &mut out);
    list("Skipped", handoff.claim.skipped.iter().map(|s| format!("{} ({})", s.item, s.reason)).collect(), &mut out);
    list(
        "Issues",
        handoff
            .claim
            .issues
            .iter()
            .map(|i| {
                let place = match (&i.path, i.line) {
                    (Some(p), Some(l)) => format!(" at {p}:{l}"),
                    (Some(p), None) => format!(" in {p}"),
                    _ => String::new(),
                };
                format!("[{}] {}{place}", i.severity, i.description.trim())
            })
            .collect(),
        &mut out,
    );
    out.push_str(&format!(
        "Procedures followed: {}{}\n",
        if handoff.claim.procedures_followed { "yes" } else { "no" },
        if handoff.claim.procedure_notes.trim().is_empty() {
            String::new()
        } else {
            format!(" ({})", handoff.claim.procedure_notes.trim())
        }
    ));
    let exit = missions_core::mission::exit_text;
    let observed = &handoff.observed_commands;
    let matches: Vec<ClaimMatch> = handoff
        .claim
        .commands
        .iter()
        .map(|c| crate::terminals::match_claim(&c.command, c.exit_code, observed))
        .collect();
    let claimed: Vec<String> = handoff
        .claim
        .commands
        .iter()
        .zip(&matches)
        .map(|(claim, matched)| {
            let (run, abbreviated) = match matched {
                ClaimMatch::Exact(run) => (Some(&observed[*run]), false),
                ClaimMatch::Abbreviated(run) => (Some(&observed[*run]), true),
                ClaimMatch::Unmatched => (None, false),
            };
            let shown = if abbreviated {
                format!("`{}` (abbreviates `{}`)", claim.command, observed_first_line(run))
            } else {
                format!("`{}`", claim.command)
            };
            match run {
                None => format!("{shown}: claimed exit {}, never run (mismatch)", claim.exit_code),
                Some(run) if run.exit_code != Some(claim.exit_code) => {
                    format!("{shown}: claimed exit {}, observed {} (mismatch)", claim.exit_code, exit(run.exit_code))
                }
                Some(run) => format!("{shown}: {} (as claimed)", exit(run.exit_code)),
            }
        })
        .collect();
    list("Commands the worker claims, with what the engine observed", claimed, &mut out);
    let matched: Vec<String> = matches
        .iter()
        .filter_map(|m| match m {
            ClaimMatch::Exact(run) | ClaimMatch::Abbreviated(run) => {
                Some(crate::terminals::normalise_command(&observed[*run].command))
            }
            ClaimMatch::Unmatched => None,
        })
        .collect();
    let unclaimed: Vec<String> = observed
        .iter()
        .filter(|o| !matched.contains(&crate::terminals::normalise_command(&o.command)))
        .map(|o| format!("`{}`: {}", o.command, exit(o.exit_code)))
        .collect();
    list("Commands run but not claimed", unclaimed, &mut out);
    let files: Vec<String> = handoff
        .files_changed
        .iter()
        .map(|f| {
            let ranges: Vec<String> =
                f.ranges.iter().map(|[a, b]| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
            format!("{} (lines {})", f.path, ranges.join(", "))
        })
        .collect();
    list("Files changed", files, &mut out);
    out
}

/// The first line of an observed command, marked when there is more.
pub(super) fn observed_first_line(run: Option<&ObservedCommand>) -> String {
    let command = run.map(|r| r.command.trim()).unwrap_or_default();
    match command.split_once('\n') {
        Some((first, _)) => format!("{} …", first.trim_end().trim_end_matches('\\').trim_end()),
        None => command.to_owned(),
    }
}

/// A model's sentence as a clause for joining: trimmed, without its closing full stop, so
/// joined lists never read ".;" or "..".
pub(super) fn clause(text: &str) -> &str {
    text.trim().trim_end_matches(['.', ';']).trim_end()
}

pub(super) fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}\n[… {} more bytes]", &text[..cut], text.len() - cut)
}

pub(super) fn assertions_text(projection: &Projection, ids: &[String]) -> String {
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
                // The behaviour only: the test itself is hidden from workers (SPEC §2 rule 9).
                Check::Acceptance { behaviour, .. } => {
                    format!("an acceptance test written before the work, which you cannot see, checks: {behaviour}")
                }
            };
            format!("- {}: {}\n  Check: {check}", a.id, a.description.trim())
        })
        .collect();
    if lines.is_empty() { "(none)".into() } else { lines.join("\n") }
}

pub(super) fn handoff_summaries(projection: &Projection, except: &str) -> String {
    let Some(plan) = &projection.plan else { return "(none yet)".into() };
    let mut lines = Vec::new();
    for feature in plan.features().filter(|f| f.id != except) {
        let Some(handoff) = projection.handoffs.get(&feature.id) else { continue };
        let mut line = format!("- {} ({}): {}", feature.id, feature.title, handoff.claim.summary.trim());
        if !handoff.claim.skipped.is_empty() {
            let items: Vec<String> =
                handoff.claim.skipped.iter().map(|s| format!("{} ({})", clause(&s.item), clause(&s.reason))).collect();
            line.push_str(&format!(" Skipped: {}.", items.join("; ")));
        }
        if !handoff.claim.issues.is_empty() {
            let items: Vec<&str> = handoff.claim.issues.iter().map(|i| clause(&i.description)).collect();
            line.push_str(&format!(" Issues: {}.", items.join("; ")));
        }
        lines.push(line);
    }
    if lines.is_empty() { "(none yet)".into() } else { lines.join("\n") }
}

pub(super) fn plan_excerpt(projection: &Projection, current: &str) -> String {
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

pub(super) fn course_corrections(projection: &Projection) -> String {
    if projection.course_corrections.is_empty() {
        "(none)".into()
    } else {
        projection.course_corrections.iter().map(|n| format!("- {n}")).collect::<Vec<_>>().join("\n")
    }
}
