//! What the server knows of the workspace's missions, kept in memory and brought up to date
//! from the logs' new events, never re-read and re-folded per request.
//!
//! Each mission's log is followed ([`LogFollower`]): a sync costs a directory listing and a
//! `stat` per mission when nothing changed, and folds only what was appended when something
//! did, whichever process appended it. A changed projection becomes a new [`MissionView`]
//! (shared as an `Arc`, so a request holds a consistent view without copying it): the status
//! snapshot plus the indexes requests need (handoff ranges by file, feature titles, the line of
//! each assertion in `contract.md`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use missions_core::mission::{Finding, FindingStatus, Handoff};
use missions_core::status::StatusSnapshot;
use missions_core::store::follow::{Followed, LogFollower};
use missions_core::store::{self, Projection};

use crate::documents::TrackedRange;

/// How long a mission's "nothing drives it" may be believed without looking again: a driver
/// can die without appending anything, so this is re-checked even when the log is unchanged.
const DRIVER_RECHECK: Duration = Duration::from_secs(1);

/// One mission as requests see it.
#[derive(Debug)]
pub struct MissionView {
    /// The status snapshot without its findings, which are in `findings` (see [`Self::status`]).
    pub snapshot: StatusSnapshot,
    /// The open findings, shared with the view before when no finding changed since: a
    /// mission with thousands of findings recording other events does not copy them each time.
    pub findings: Arc<Vec<Finding>>,
    pub findings_revision: u64,
    pub handoffs: BTreeMap<String, Handoff>,
    /// Feature titles by id.
    pub feature_titles: HashMap<String, String>,
    /// The line ranges features changed, by workspace-relative path, in plan order.
    pub ranges: HashMap<String, Vec<TrackedRange>>,
    /// The 0-based line of `### <assertion>` in the mission's `contract.md`, by assertion.
    pub contract_lines: HashMap<String, u32>,
}

impl MissionView {
    /// The view of a folded log; `None` for a log without a mission.
    pub fn new(projection: &Projection, interrupted: bool) -> Option<MissionView> {
        MissionView::after(None, projection, interrupted)
    }

    /// The view of a folded log, reusing `before`'s findings when they did not change.
    fn after(before: Option<&MissionView>, projection: &Projection, interrupted: bool) -> Option<MissionView> {
        let mission = projection.mission.clone()?;
        let findings = match before.filter(|b| b.findings_revision == projection.findings_revision) {
            Some(before) => before.findings.clone(),
            None => Arc::new(projection.findings.iter().filter(|f| f.status == FindingStatus::Open).cloned().collect()),
        };
        let snapshot = StatusSnapshot {
            mission,
            plan: projection.plan.clone(),
            contract: projection.contract.clone(),
            findings: Vec::new(),
            active_run: projection.active_run.clone(),
            interrupted,
        };
        let features: Vec<_> = projection.plan.as_ref().map(|p| p.features().collect()).unwrap_or_default();
        let feature_titles = features.iter().map(|f| (f.id.clone(), f.title.clone())).collect();
        let mut ranges: HashMap<String, Vec<TrackedRange>> = HashMap::new();
        for feature in &features {
            let Some(handoff) = projection.handoffs.get(&feature.id) else { continue };
            for change in &handoff.files_changed {
                let tracked = change.ranges.iter().map(|[first, last]| TrackedRange {
                    mission: snapshot.mission.id.clone(),
                    feature: feature.id.clone(),
                    first: *first,
                    last: *last,
                });
                ranges.entry(change.path.clone()).or_default().extend(tracked);
            }
        }
        // The contract as `contract.md` shows it, rendered from the same projection the
        // driver renders the file from, so no request reads the file.
        let contract_md = store::render_contract_markdown(&projection.contract, Some(&projection.acceptance_tests));
        // Headings only: a line quoted in a fenced block (an acceptance test's file) may look
        // like one.
        let mut contract_lines = HashMap::new();
        let mut fence: Option<&str> = None;
        for (index, line) in contract_md.lines().enumerate() {
            let marker = ["```", "~~~~"].into_iter().find(|m| line.starts_with(m));
            match (fence, marker) {
                (None, Some(opened)) => fence = Some(opened),
                (Some(open), Some(closing)) if open == closing => fence = None,
                (None, None) => {
                    if let Some(id) = line.strip_prefix("### ").and_then(|rest| rest.split(' ').next()) {
                        contract_lines.entry(id.to_owned()).or_insert(index as u32);
                    }
                }
                _ => {}
            }
        }
        Some(MissionView {
            snapshot,
            findings,
            findings_revision: projection.findings_revision,
            handoffs: projection.handoffs.clone(),
            feature_titles,
            ranges,
            contract_lines,
        })
    }

    pub fn id(&self) -> &str {
        &self.snapshot.mission.id
    }

    /// The whole status snapshot (SPEC §8), findings included.
    pub fn status(&self) -> StatusSnapshot {
        StatusSnapshot { findings: self.findings.as_ref().clone(), ..self.snapshot.clone() }
    }
}

/// Whether the mission in `dir` is mid-way with no live process driving it.
fn interrupted(dir: &Path, projection: &Projection) -> bool {
    projection.mission.as_ref().is_some_and(|mission| missions_core::status::interrupted(dir, mission))
}

struct Tracked {
    follower: LogFollower,
    dir: std::path::PathBuf,
    view: Arc<MissionView>,
    driver_checked: Instant,
}

/// Every readable mission of one workspace, oldest first.
#[derive(Default)]
pub struct Views {
    missions: BTreeMap<String, Tracked>,
}

impl Views {
    /// Brings every mission up to date with its log; returns the ids whose view changed
    /// (appeared, grew, was re-read, disappeared, or was found to have lost its driver).
    pub fn sync(&mut self, workspace: &Path) -> Vec<String> {
        let mut changed = Vec::new();
        let ids = store::list_missions(workspace).unwrap_or_default();
        let removed: Vec<String> = self.missions.keys().filter(|id| !ids.contains(id)).cloned().collect();
        for id in removed {
            self.missions.remove(&id);
            changed.push(id);
        }
        for id in ids {
            let Ok(dir) = store::mission_dir(workspace, &id) else { continue };
            match self.missions.get_mut(&id) {
                Some(followed) => {
                    // A log read afresh is another history: nothing of the view before is reused.
                    let (grew, reread) = match followed.follower.poll() {
                        Ok(Followed::Unchanged) => (false, false),
                        Ok(Followed::Grew) => (true, false),
                        Ok(Followed::Reread) => (true, true),
                        Err(error) => {
                            tracing::warn!("mission {id} cannot be read: {error}");
                            self.missions.remove(&id);
                            changed.push(id);
                            continue;
                        }
                    };
                    let recheck = followed.driver_checked.elapsed() >= DRIVER_RECHECK;
                    if !grew && !recheck {
                        continue;
                    }
                    let projection = followed.follower.projection();
                    let now_interrupted = interrupted(&followed.dir, projection);
                    followed.driver_checked = Instant::now();
                    if !grew && now_interrupted == followed.view.snapshot.interrupted {
                        continue;
                    }
                    let before = (!reread).then_some(followed.view.as_ref());
                    if let Some(view) = MissionView::after(before, projection, now_interrupted) {
                        followed.view = Arc::new(view);
                        changed.push(id);
                    }
                }
                None => match LogFollower::open(&dir) {
                    Ok(follower) => {
                        let projection = follower.projection();
                        let Some(view) = MissionView::new(projection, interrupted(&dir, projection)) else {
                            continue;
                        };
                        self.missions.insert(
                            id.clone(),
                            Tracked { follower, dir, view: Arc::new(view), driver_checked: Instant::now() },
                        );
                        changed.push(id);
                    }
                    Err(error) => tracing::debug!("mission {id} not shown: {error}"),
                },
            }
        }
        changed
    }

    /// Every mission's view, oldest first.
    pub fn all(&self) -> Vec<Arc<MissionView>> {
        self.missions.values().map(|f| f.view.clone()).collect()
    }

    pub fn get(&self, id: &str) -> Option<Arc<MissionView>> {
        self.missions.get(id).map(|f| f.view.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use missions_core::mission::{Severity, Source, SourceKind, Validator};
    use missions_core::store::{Event, Record};

    fn apply(projection: &mut Projection, event: Event) {
        let seq = projection.events + 1;
        projection.apply(&Record { seq, ts: "2026-11-28T08:00:00Z".into(), prev: String::new(), event });
    }

    #[test]
    fn a_view_keeps_its_findings_until_a_finding_changes() {
        let mut projection = Projection::default();
        apply(
            &mut projection,
            Event::MissionCreated {
                id: "m1".into(),
                title: "t".into(),
                source: Source { kind: SourceKind::Text, item_id: None, text: "t".into() },
                branch: "missions/m1".into(),
                base_commit: "0".into(),
                auto_accept: false,
                max_tokens: None,
                max_usd: None,
            },
        );
        let finding = |id: &str| Event::FindingRecorded {
            finding: missions_core::mission::FindingDraft::new("M1", Validator::Review, Severity::Warning, "m")
                .into_finding(id.into()),
        };
        apply(&mut projection, finding("finding-1"));
        let first = MissionView::new(&projection, false).unwrap();
        apply(&mut projection, Event::CourseCorrectionNoted { note: "n".into() });
        let second = MissionView::after(Some(&first), &projection, false).unwrap();
        assert!(Arc::ptr_eq(&first.findings, &second.findings), "nothing about findings changed");
        apply(&mut projection, finding("finding-2"));
        let third = MissionView::after(Some(&second), &projection, false).unwrap();
        assert_eq!(third.findings.len(), 2);
        assert_eq!(third.status().findings.len(), 2, "the status carries the findings");
        apply(
            &mut projection,
            Event::FindingStatusChanged { finding: "finding-1".into(), status: FindingStatus::Dismissed, reason: None },
        );
        let fourth = MissionView::after(Some(&third), &projection, false).unwrap();
        assert_eq!(fourth.findings.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), ["finding-2"]);
    }
}
