//! The status snapshot: one schema for `missions status --json`, the `missions.status` LSP
//! command and the `missions/didChange` notification (SPEC §6, §8).
//!
//! A snapshot is the `mission.json` projection with the plan, the contract (assertion
//! statuses), the open findings and the active run beside it. It is always built from the
//! event log, never from projection files.

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::mission::ActiveRun;
use crate::mission::{Contract, Finding, FindingStatus, Mission, Plan};
use crate::store::{self, Projection, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    #[serde(flatten)]
    pub mission: Mission,
    pub plan: Option<Plan>,
    pub contract: Contract,
    /// Open findings only; fixed and dismissed ones are in `findings.json`.
    pub findings: Vec<Finding>,
    pub active_run: Option<ActiveRun>,
    /// The mission is mid-way (planning, running or validating) but no live process drives
    /// it: its driver died or its editor closed. `missions resume ID` continues it.
    #[serde(default)]
    pub interrupted: bool,
}

impl StatusSnapshot {
    /// The snapshot of a folded log; `None` for a log without a mission.
    pub fn from_projection(projection: &Projection) -> Option<StatusSnapshot> {
        let mission = projection.mission.clone()?;
        Some(StatusSnapshot {
            mission,
            plan: projection.plan.clone(),
            contract: projection.contract.clone(),
            findings: projection.findings.iter().filter(|f| f.status == FindingStatus::Open).cloned().collect(),
            active_run: projection.active_run.clone(),
            interrupted: false,
        })
    }

    /// The state as people read it: `interrupted` for a mission no live process drives.
    pub fn state_label(&self) -> String {
        if self.interrupted { "interrupted".to_owned() } else { self.mission.state.to_string() }
    }
}

/// Whether mission `dir` is mid-way with nothing driving it.
pub fn interrupted(dir: &Path, mission: &Mission) -> bool {
    use crate::mission::MissionState;
    matches!(mission.state, MissionState::Planning | MissionState::Running | MissionState::Validating)
        && !store::log::lock_is_held(&dir.join("events.lock"))
}

/// The snapshot of mission `id` in `workspace`, with warnings from reading its log.
pub fn mission_snapshot(workspace: &Path, id: &str) -> Result<(StatusSnapshot, Vec<String>), StoreError> {
    let dir = store::mission_dir(workspace, id)?;
    let (projection, warnings) = store::load_projection(&dir)?;
    let mut snapshot = StatusSnapshot::from_projection(&projection)
        .ok_or_else(|| StoreError::Empty { path: dir.join("events.jsonl") })?;
    snapshot.interrupted = interrupted(&dir, &snapshot.mission);
    // Projection files someone deleted are written again from the log, unless a driver holds
    // the mission (it writes them itself).
    let missing = !dir.join("mission.json").is_file() || !dir.join("findings.json").is_file();
    if missing && !store::log::lock_is_held(&dir.join("events.lock")) {
        match store::MissionStore::open(&dir) {
            Ok(store) => drop(store),
            Err(error) => tracing::debug!("projections of {} not rewritten: {error}", dir.display()),
        }
    }
    Ok((snapshot, warnings))
}

/// What `status` knows about a whole workspace.
#[derive(Debug, Default)]
pub struct WorkspaceStatus {
    /// Every readable mission, oldest first.
    pub snapshots: Vec<StatusSnapshot>,
    /// Warnings from reading the logs (a dropped torn line).
    pub warnings: Vec<String>,
    /// Missions whose log cannot be read, with why. One broken mission must not hide the
    /// others, so these are reported beside them rather than failing the whole listing.
    pub unreadable: Vec<(String, StoreError)>,
}

/// Snapshots of every mission in `workspace`. Fails only when `.missions/` itself cannot be
/// listed.
pub fn workspace_snapshots(workspace: &Path) -> Result<WorkspaceStatus, StoreError> {
    let mut status = WorkspaceStatus::default();
    for id in store::list_missions(workspace)? {
        match mission_snapshot(workspace, &id) {
            Ok((snapshot, warnings)) => {
                status.snapshots.push(snapshot);
                status.warnings.extend(warnings);
            }
            Err(error) => status.unreadable.push((id, error)),
        }
    }
    Ok(status)
}
