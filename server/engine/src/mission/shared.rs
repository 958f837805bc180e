//! What every run of a mission shares: the store, the git handle, progress, and the small
//! steps every part takes through them (append, pause, record a finding, save and revert the
//! tree). Commands, the inbox and the run hooks that build on this are in `commands`, `inbox`
//! and `budget`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use missions_core::mission::{FindingDraft, Mission as MissionRecord, MissionState, PauseReason, Role};
use missions_core::pricing::PriceTable;
use missions_core::store::{Event, MissionStore, Projection};
use missions_core::sync::lock;

use crate::agent::Stop;
use crate::git::Git;

use super::{EngineError, Progress, Step};

/// What [`Shared::revert_to`] took back: the files changed beyond build caches, and the ref
/// they were saved at.
#[derive(Debug, Default)]
pub(super) struct Reverted {
    pub(super) files: Vec<String>,
    pub(super) saved: Option<String>,
}

/// Everything runs share: the store and the channel for control commands.
pub(super) struct Shared {
    pub(super) mission_id: String,
    pub(super) store: Mutex<MissionStore>,
    pub(super) inbox: PathBuf,
    pub(super) git: Git,
    pub(super) prices: PriceTable,
    pub(super) progress: Arc<dyn Fn(&Progress) + Send + Sync>,
    pub(super) appended: Option<super::Subscriber>,
    pub(super) provider_names: BTreeMap<Role, String>,
    /// A pause or cancel applied from the inbox while a run was going on.
    pub(super) stop: Mutex<Option<Stop>>,
    /// Tokens and dollars of model calls in flight, reserved against the budget caps so that
    /// runs calling in parallel cannot pass a cap together.
    pub(super) reserved: Mutex<(u64, f64)>,
    /// The least output a call may be granted before the mission pauses for budget.
    pub(super) min_output_tokens: u32,
    /// While events are recorded [`Shared::together`], the records the subscriber hears of
    /// once the group ends.
    pub(super) held: Mutex<Option<Vec<missions_core::store::Record>>>,
}

/// A group of appends [`Shared::together`] makes durable as one; ended (its sync asked for,
/// its records heard of) when dropped, so a panic inside cannot leave the store grouping.
struct Group<'a> {
    shared: &'a Shared,
}

impl Drop for Group<'_> {
    fn drop(&mut self) {
        lock(&self.shared.store).end_group();
        let records = lock(&self.shared.held).take().unwrap_or_default();
        for record in records {
            self.shared.tell(record);
        }
    }
}

impl Shared {
    /// Records `event` (durably as [`Event::urgency`] says), then tells the front end's
    /// subscriber.
    pub(super) fn append(&self, event: Event) -> Result<(), EngineError> {
        let record = lock(&self.store).append(event)?;
        self.tell(record);
        Ok(())
    }

    /// Records `event`, written ahead of an effect, with what the effect must wait for
    /// ([`MissionStore::append_ahead`]), then tells the front end's subscriber.
    pub(super) fn append_ahead(&self, event: Event) -> Result<missions_core::store::Ahead, EngineError> {
        let (record, ahead) = lock(&self.store).append_ahead(event)?;
        self.tell(record);
        Ok(ahead)
    }

    /// Tells the front end's subscriber of `record`, or holds it for the end of the group.
    fn tell(&self, record: missions_core::store::Record) {
        let record = match &mut *lock(&self.held) {
            Some(held) => {
                held.push(record);
                return;
            }
            None => record,
        };
        if let Some(appended) = &self.appended {
            appended(&self.mission_id, &record);
        }
    }

    /// Runs `record`, whose events (a handoff and the feature's new status; a report's
    /// verdicts and findings) are made durable together by one sync after its end (in the
    /// background) rather than one each, and heard of by the subscriber at its end. Events
    /// recorded before a failure (or a panic) are kept, and made durable all the same. Callers
    /// record one group at a time (the engine's steps that do are sequential); a group within
    /// a group is part of it.
    pub(super) fn together<T>(&self, record: impl FnOnce() -> Result<T, EngineError>) -> Result<T, EngineError> {
        {
            let mut held = lock(&self.held);
            if held.is_some() {
                drop(held);
                return record();
            }
            *held = Some(Vec::new());
        }
        lock(&self.store).begin_group();
        let group = Group { shared: self };
        let result = record();
        drop(group);
        result
    }

    /// The projection as it stands; cheap to take (see [`MissionStore::snapshot`]).
    pub(super) fn projection(&self) -> Arc<Projection> {
        lock(&self.store).snapshot()
    }

    /// Reads the projection in place, for a part of it, without taking a snapshot (which
    /// would make the next append copy the projection while the snapshot is held).
    pub(super) fn read<T>(&self, part: impl FnOnce(&Projection) -> T) -> T {
        part(lock(&self.store).projection())
    }

    pub(super) fn mission(&self) -> Result<MissionRecord, EngineError> {
        self.read(|projection| projection.mission.clone())
            .ok_or_else(|| EngineError::Io("the mission log has no mission".into()))
    }

    /// Reports `step` at a place in the mission, outside any agent run.
    pub(super) fn progress(&self, milestone: Option<&str>, feature: Option<&str>, role: Option<Role>, step: Step) {
        (self.progress)(&Progress {
            mission: self.mission_id.clone(),
            milestone: milestone.map(str::to_owned),
            feature: feature.map(str::to_owned),
            role,
            run: None,
            step,
        });
    }

    /// The next free ref `refs/missions/<id>/<kind>/<n>`, numbered from 1.
    pub(super) fn next_ref(&self, kind: &str) -> Result<String, EngineError> {
        let prefix = format!("refs/missions/{}/{kind}/", self.mission_id);
        let taken = self.git.refs_under(&prefix)?;
        let highest = taken.iter().filter_map(|r| r.strip_prefix(&prefix)?.parse::<u64>().ok()).max().unwrap_or(0);
        Ok(format!("{prefix}{}", highest + 1))
    }

    /// Saves whatever uncommitted changes the tree holds (untracked files included, ignored
    /// ones never) under `refs/missions/<id>/saved/<n>` before the engine resets it, so nothing
    /// in the tree is ever lost to a reset, and says so. Returns the ref, if there was anything
    /// to save.
    pub(super) fn save_tree(&self, why: &str) -> Result<Option<String>, EngineError> {
        let name = self.next_ref("saved")?;
        match self.git.snapshot(&name, why)? {
            Some(_) => {
                self.progress(None, None, None, Step::TreeSaved { at: name.clone(), why: why.to_owned() });
                Ok(Some(name))
            }
            None => Ok(None),
        }
    }

    /// Puts the tree back to `head` when it holds only the mission's own recorded changes;
    /// refuses when anything else changed. Whatever changed is saved first (`why` says where
    /// it came from); returns the files changed beyond build caches and where the tree was
    /// saved.
    pub(super) fn revert_to(&self, head: &str, why: &str) -> Result<Reverted, EngineError> {
        self.reset_own_work(head, Some(why))
    }

    /// Like [`Shared::revert_to`], but what is reverted is not saved: for what the test author's
    /// commands leave, which may hold drafts of the acceptance tests. Saved, they would be in
    /// git's objects, which workers' commands can read. Only the mission's own recorded changes
    /// are ever dropped this way: anything else is refused as in `revert_to`.
    pub(super) fn discard_to(&self, head: &str) -> Result<Reverted, EngineError> {
        self.reset_own_work(head, None)
    }

    fn reset_own_work(&self, head: &str, save_as: Option<&str>) -> Result<Reverted, EngineError> {
        let dirty = self.git.dirty_files()?;
        if dirty.is_empty() {
            return Ok(Reverted::default());
        }
        let foreign = self.foreign_changes(&self.projection())?;
        if !foreign.is_empty() {
            return Err(EngineError::ForeignChanges { files: foreign });
        }
        let files: Vec<String> = dirty.into_iter().filter(|p| !super::worktree::is_cache_path(p)).collect();
        let saved = match save_as {
            Some(why) => self.save_tree(why)?,
            None => None,
        };
        self.git.reset_hard(head)?;
        Ok(Reverted { files, saved })
    }

    /// The tree's changes that are not the unfinished step's own work (see
    /// `worktree::foreign_changes`).
    pub(super) fn foreign_changes(&self, projection: &Projection) -> Result<Vec<String>, EngineError> {
        let dirty = self.git.dirty_files()?;
        let root = self.git.root().to_owned();
        Ok(super::worktree::foreign_changes(&dirty, &projection.unfinished_work, |path| {
            super::worktree::digest(&root, path)
        }))
    }

    pub(super) fn set_state(
        &self,
        state: MissionState,
        pause_reason: Option<PauseReason>,
        detail: Option<String>,
    ) -> Result<(), EngineError> {
        self.append(Event::StateChanged { state, pause_reason, detail })
    }

    pub(super) fn pause(&self, reason: PauseReason, detail: String) -> Result<(), EngineError> {
        self.progress(None, None, None, Step::Paused { reason, detail: detail.clone() });
        self.set_state(MissionState::Paused, Some(reason), Some(detail))
    }

    pub(super) fn next_finding_id(projection: &Projection) -> String {
        format!("finding-{}", projection.findings.len() + 1)
    }

    /// Records `draft` as the next open finding; returns its id.
    pub(super) fn record_finding(&self, draft: FindingDraft) -> Result<String, EngineError> {
        let id = self.read(Shared::next_finding_id);
        self.append(Event::FindingRecorded { finding: draft.into_finding(id.clone()) })?;
        Ok(id)
    }
}
