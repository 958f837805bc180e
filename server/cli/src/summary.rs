//! The Mission Control summary: milestones, features, assertions, findings, commits and
//! budget by role, as text for a terminal.

use std::fmt::Write as _;
use std::path::Path;

use missions_core::mission::{AssertionStatus, Check, FindingStatus, WorkStatus};
use missions_core::store::Projection;

/// A status as people read it: its name with spaces (`awaiting acceptance`).
fn status_word(value: &impl std::fmt::Display) -> String {
    value.to_string().replace('_', " ")
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(8)]
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn mission_control(workspace: &Path, projection: &Projection) -> String {
    let mut out = String::new();
    let Some(mission) = &projection.mission else { return out };
    let _ = writeln!(out, "\n══ Mission Control ══ {} · {}", mission.id, status_word(&mission.state));
    let _ = writeln!(out, "{}", mission.title);
    let _ = writeln!(out, "workspace {} · branch {}", workspace.display(), mission.branch);
    if let Some(detail) = &mission.detail {
        let _ = writeln!(out, "{detail}");
    }

    if let Some(plan) = &projection.plan {
        let _ = writeln!(out, "\nMilestones");
        for milestone in &plan.milestones {
            let rounds = projection.correction_rounds.get(&milestone.id).copied().unwrap_or(0);
            let rounds = match rounds {
                0 => String::new(),
                1 => " · 1 correction round".into(),
                n => format!(" · {n} correction rounds"),
            };
            let _ =
                writeln!(out, "  {} {} — {}{rounds}", milestone.id, milestone.title, status_word(&milestone.status));
            for feature in &milestone.features {
                let commit =
                    projection.handoffs.get(&feature.id).and_then(|h| h.commit.as_deref()).map(short).unwrap_or("");
                let mark = if feature.status == WorkStatus::Done { "✓" } else { "·" };
                let _ = writeln!(out, "    {mark} {:<10} {:<36} {commit}", feature.id, feature.title);
            }
        }
        let _ = writeln!(out, "\nAssertions");
        for assertion in &projection.contract.assertions {
            let kind = match assertion.check {
                Check::Command { .. } => "command",
                Check::Review { .. } => "review",
                Check::UserTest { .. } => "user test",
                Check::Acceptance { .. } => "acceptance",
            };
            let mark = match assertion.status {
                AssertionStatus::Passing => "✓",
                AssertionStatus::Failing => "✗",
                AssertionStatus::Pending => "?",
                AssertionStatus::Waived => "~",
            };
            let _ = writeln!(
                out,
                "  {mark} {:<4} {:<8} {:<11}{}",
                assertion.id,
                status_word(&assertion.status),
                kind,
                assertion.description.trim()
            );
        }
    }

    let _ = writeln!(out, "\nFindings");
    if projection.findings.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for finding in &projection.findings {
        let place = match (&finding.path, finding.line) {
            (Some(p), Some(l)) => format!(" {p}:{l}"),
            (Some(p), None) => format!(" {p}"),
            _ => String::new(),
        };
        let mark = match finding.status {
            FindingStatus::Open => "●",
            FindingStatus::Fixed => "✓",
            FindingStatus::Dismissed => "–",
        };
        let message: String = finding.message.chars().take(110).collect();
        let _ = writeln!(
            out,
            "  {mark} {} [{} · {}]{place} {message}",
            finding.id,
            status_word(&finding.status),
            status_word(&finding.validator)
        );
    }

    let log = std::process::Command::new("git")
        .arg("-C")
        .arg(workspace)
        .args(["log", "--format=%h %s", &format!("{}..{}", mission.base_commit, mission.branch)])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let _ = writeln!(out, "\nCommits on {}", mission.branch);
    for line in log.lines() {
        let _ = writeln!(out, "  {line}");
    }

    let budget = &mission.budget;
    let cost = if budget.usd_unknown && budget.used_usd == 0.0 {
        "cost unknown (no price for these models)".to_owned()
    } else if budget.usd_unknown {
        format!("at least ${:.2}", budget.used_usd)
    } else {
        format!("${:.2}", budget.used_usd)
    };
    let cap = budget.max_tokens.map(|m| format!(" of {}", thousands(m))).unwrap_or_default();
    let _ = writeln!(out, "\nBudget: {} tokens{cap} · {cost}", thousands(budget.used_tokens));
    for (role, spend) in &budget.by_role {
        let _ = writeln!(out, "  {:<13} {:>10} tokens", role.as_str().replace('_', " "), thousands(spend.tokens));
    }
    out
}
