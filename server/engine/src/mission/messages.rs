//! The first messages of the roles' runs and the parts they are made of (the plan excerpt,
//! the assertions, the handoffs as workers and reviewers read them, course corrections), in
//! one place beside the prompt templates of `prompts/`.

use super::*;

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
    let exit = |code: Option<i32>| code.map_or("killed".to_owned(), |c| format!("exit {c}"));
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

impl Mission {
    pub(super) fn assertions_text(&self, projection: &Projection, ids: &[String]) -> String {
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
                };
                format!("- {}: {}\n  Check: {check}", a.id, a.description.trim())
            })
            .collect();
        if lines.is_empty() { "(none)".into() } else { lines.join("\n") }
    }

    pub(super) fn handoff_summaries(&self, projection: &Projection, except: &str) -> String {
        let Some(plan) = &projection.plan else { return "(none yet)".into() };
        let mut lines = Vec::new();
        for feature in plan.features().filter(|f| f.id != except) {
            let Some(handoff) = projection.handoffs.get(&feature.id) else { continue };
            let mut line = format!("- {} ({}): {}", feature.id, feature.title, handoff.claim.summary.trim());
            if !handoff.claim.skipped.is_empty() {
                let items: Vec<String> = handoff
                    .claim
                    .skipped
                    .iter()
                    .map(|s| format!("{} ({})", clause(&s.item), clause(&s.reason)))
                    .collect();
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
}
