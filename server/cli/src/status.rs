//! `missions status [ID] [--json]`: always folded from the event log, so it works with every
//! projection file deleted, and while another process drives the mission.

use std::path::Path;

use missions_core::status::{StatusSnapshot, WorkspaceStatus, mission_snapshot, workspace_snapshots};
use missions_core::store::StoreError;

use crate::Outcome;

pub fn run(workspace: &Path, id: Option<&str>, json: bool) -> Outcome {
    let result = match id {
        Some(id) => mission_snapshot(workspace, id).map(|(snapshot, warnings)| WorkspaceStatus {
            snapshots: vec![snapshot],
            warnings,
            unreadable: Vec::new(),
        }),
        None => workspace_snapshots(workspace),
    };
    let WorkspaceStatus { snapshots, warnings, unreadable } = match result {
        Ok(found) => found,
        Err(error @ StoreError::NotFound { .. }) => return Outcome::Usage(error.to_string()),
        Err(error) => {
            eprintln!("missions: {error}");
            return Outcome::Failure;
        }
    };
    for (id, error) in &unreadable {
        eprintln!("missions: mission {id} cannot be read: {error}");
    }
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    if json {
        // One mission prints one snapshot; the list form prints a list.
        let encoded = match (id, snapshots.first()) {
            (Some(_), Some(snapshot)) => serde_json::to_string_pretty(snapshot),
            _ => serde_json::to_string_pretty(&snapshots),
        };
        match encoded {
            Ok(text) => println!("{text}"),
            Err(error) => {
                eprintln!("missions: cannot encode the status: {error}");
                return Outcome::Failure;
            }
        }
        return if unreadable.is_empty() { Outcome::Success } else { Outcome::Failure };
    }
    if snapshots.is_empty() && unreadable.is_empty() {
        println!("No missions in {}.", workspace.display());
    }
    for snapshot in &snapshots {
        print!("{}", describe(snapshot));
    }
    if unreadable.is_empty() { Outcome::Success } else { Outcome::Failure }
}

fn describe(snapshot: &StatusSnapshot) -> String {
    let mission = &snapshot.mission;
    let mut state = snapshot.state_label();
    if let Some(reason) = mission.pause_reason {
        state = format!("{state} ({})", reason.as_str().to_owned());
    }
    let budget = &mission.budget;
    let usd =
        if budget.usd_unknown { format!("≥ ${:.2}", budget.used_usd) } else { format!("${:.2}", budget.used_usd) };
    let limits = match (budget.max_usd, budget.max_tokens) {
        (Some(usd), Some(tokens)) => format!(" of ${usd:.2} / {tokens} tokens"),
        (Some(usd), None) => format!(" of ${usd:.2}"),
        (None, Some(tokens)) => format!(" of {tokens} tokens"),
        (None, None) => String::new(),
    };
    let passing = snapshot
        .contract
        .assertions
        .iter()
        .filter(|a| a.status == missions_core::mission::AssertionStatus::Passing)
        .count();
    let mut out = format!(
        "{}  {}\n  {}\n  budget: {} tokens, {usd}{limits}\n  assertions: {passing}/{} passing; open findings: {}\n",
        mission.id,
        state,
        mission.title,
        budget.used_tokens,
        snapshot.contract.assertions.len(),
        snapshot.findings.len()
    );
    if let Some(detail) = &mission.detail {
        out.push_str(&format!("  {detail}\n"));
    }
    // SPEC §6: a mission's status lists its open findings.
    for finding in &snapshot.findings {
        out.push_str(&format!("  {}\n", finding.one_line()));
    }
    if snapshot.interrupted {
        out.push_str(&format!(
            "  no process is driving it (its driver stopped mid-way); `missions resume {}` continues it\n",
            mission.id
        ));
    }
    out
}
