//! The durable mission store: `.missions/<mission-id>/` (SPEC §4).
//!
//! `events.jsonl` ([`log`]) is the source of truth. Everything else in the directory is a
//! projection ([`fold::Projection`]) written atomically after each append, and can be rebuilt
//! from the log alone: [`load_projection`] never trusts the projection files. A
//! [`MissionStore`] is the single writer of one mission: it holds the log's lock for its whole
//! life.

pub mod events;
pub mod fold;
pub mod follow;
pub mod log;
mod render;
mod views;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use events::{
    AcceptanceTest, AcceptanceTestFile, AssertionDraft, Author, BaselineCheck, BoundaryDecision, DryRunResult, Event,
    FeatureDraft, MilestoneDraft, PlanDraft, Record, RunOutcome, Urgency, WorkFile,
};
pub use fold::Projection;
pub use log::Durability;
pub use render::{clip_tail, contract_markdown as render_contract_markdown, plan_markdown as render_plan_markdown};

/// Errors of the store. Callers branch on `Locked` (tell the user who holds the mission),
/// `NotFound` (unknown mission id: exit 2) and `Corrupt` (stop; never overwrite).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("mission {dir} is being driven by another process: {holder}")]
    Locked { dir: PathBuf, holder: String },
    #[error("no mission `{id}` in {root}")]
    NotFound { id: String, root: PathBuf },
    #[error(
        "{path} line {line} is corrupt: {message}. The log is the mission's source of truth, so it is left \
         untouched; restore it from a backup or move the mission directory aside"
    )]
    Corrupt { path: PathBuf, line: usize, message: String },
    #[error("cannot encode an event: {message}")]
    Encode { message: String },
    #[error("{path} holds no mission_created event")]
    Empty { path: PathBuf },
    #[error("{path} refuses further appends: {reason}. Reopen the mission to verify and repair the log")]
    Poisoned { path: PathBuf, reason: String },
    #[error("{path} is larger than {limit} bytes, more than such a file can hold; it was not read")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{path} is not a regular file (a device, a pipe or a directory); it was not read")]
    NotAFile { path: PathBuf },
}

/// Reads a whole regular file of at most `limit` bytes. Files Missions reads come with the
/// repository (configuration, backlogs) or from earlier runs (transcripts), so a symlink to
/// `/dev/zero` or a huge file is an error naming the file, never an unbounded read.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, StoreError> {
    use std::io::Read;
    let io = |source| StoreError::Io { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(StoreError::NotAFile { path: path.to_owned() });
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(StoreError::TooLarge { path: path.to_owned(), limit });
    }
    Ok(bytes)
}

/// `<workspace>/.missions` (see [`crate::layout`]).
pub fn missions_root(workspace: &Path) -> PathBuf {
    crate::layout::root(workspace)
}

/// The ids of the missions in a workspace, oldest first (ids sort by creation date).
pub fn list_missions(workspace: &Path) -> Result<Vec<String>, StoreError> {
    let root = missions_root(workspace);
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(StoreError::Io { path: root, source }),
    };
    let mut ids: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join("events.jsonl").is_file())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    ids.sort();
    Ok(ids)
}

/// The directory of mission `id`, which must exist.
pub fn mission_dir(workspace: &Path, id: &str) -> Result<PathBuf, StoreError> {
    let root = missions_root(workspace);
    let valid_id = !id.is_empty() && !id.contains(['/', '\\']) && id != "." && id != "..";
    let dir = root.join(id);
    if valid_id && dir.join("events.jsonl").is_file() {
        Ok(dir)
    } else {
        Err(StoreError::NotFound { id: id.to_owned(), root })
    }
}

/// Folds a mission's log without locking it or reading any projection file. Returns the
/// projection and the warnings from reading (a dropped torn line).
pub fn load_projection(dir: &Path) -> Result<(Projection, Vec<String>), StoreError> {
    let path = dir.join("events.jsonl");
    let contents = log::read_log(&path)?;
    let projection = Projection::from_records(&contents.records);
    if projection.mission.is_none() {
        return Err(StoreError::Empty { path });
    }
    Ok((projection, contents.warnings))
}

/// The single writer of one mission.
#[derive(Debug)]
pub struct MissionStore {
    dir: PathBuf,
    log: log::EventLog,
    /// Shared with the snapshots readers took ([`MissionStore::snapshot`]); an append copies
    /// it only while one of them is still held.
    projection: Arc<Projection>,
    /// Makes the log durable in the background, then writes the projection files.
    views: views::ViewWriter,
    /// While set, no append but one written ahead of an effect asks for a sync: a group of
    /// events is made durable together once [`MissionStore::end_group`] ends it.
    grouping: bool,
}

impl MissionStore {
    /// Creates `<workspace>/.missions/<id>/` with its first event, which must be
    /// `MissionCreated`.
    pub fn create(workspace: &Path, created: Event) -> Result<MissionStore, StoreError> {
        let Event::MissionCreated { id, .. } = &created else {
            return Err(StoreError::Encode { message: "a mission log must start with mission_created".to_owned() });
        };
        let dir = crate::layout::mission_dir(workspace, id);
        let (log, record) = log::EventLog::create(&dir, created)?;
        let mut projection = Projection::default();
        projection.apply(&record);
        let mut store = MissionStore {
            views: views::ViewWriter::new(&dir, projection.clone(), log.durability()),
            dir,
            log,
            projection: Arc::new(projection),
            grouping: false,
        };
        store.flush()?;
        Ok(store)
    }

    /// Opens mission `dir` for writing: takes the lock, verifies the log, drops a torn tail,
    /// and rewrites every projection from the log.
    pub fn open(dir: &Path) -> Result<(MissionStore, Vec<String>), StoreError> {
        let (log, contents) = log::EventLog::open(dir)?;
        let projection = Arc::new(Projection::from_records(&contents.records));
        if projection.mission.is_none() {
            return Err(StoreError::Empty { path: log.path().to_owned() });
        }
        let mut store = MissionStore {
            dir: dir.to_owned(),
            views: views::ViewWriter::new(dir, Projection::clone(&projection), log.durability()),
            log,
            projection,
            grouping: false,
        };
        let len = store.log.written_len();
        store.views.update_now(len)?;
        Ok((store, contents.warnings))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn projection(&self) -> &Projection {
        &self.projection
    }

    /// The projection as it stands, to keep while events are appended: taking one is cheap,
    /// and the store copies the projection only when it next changes while a snapshot is
    /// held.
    pub fn snapshot(&self) -> Arc<Projection> {
        self.projection.clone()
    }

    /// How much of the log is durable, for a thread that must wait for it (the engine, before
    /// it writes to the repository).
    pub fn durability(&self) -> Arc<Durability> {
        self.log.durability()
    }

    /// Records an event and folds it. An `Err` means the event was *not* recorded; once the
    /// log holds it this returns `Ok`. The event is durable when this returns if it is written
    /// ahead of an effect on the tree ([`Urgency::WriteAhead`]); otherwise it is made durable
    /// in the background at once ([`Urgency::Soon`], or at a group's end) or with the next
    /// sync ([`Urgency::Progress`]), and the projection files that show it are written after.
    /// A projection that cannot be written is logged and written again later: projections are
    /// rebuilt from the log anyway.
    pub fn append(&mut self, event: Event) -> Result<Record, StoreError> {
        let urgency = event.urgency();
        let record = self.record(event, urgency)?;
        if urgency == Urgency::Soon {
            self.refresh_views();
        }
        Ok(record)
    }

    /// Writes `event` to the log as `urgency` says, folds it, and hands it to the views.
    fn record(&mut self, event: Event, urgency: Urgency) -> Result<Record, StoreError> {
        let record = self.log.append_with(event, urgency)?;
        Arc::make_mut(&mut self.projection).apply(&record);
        self.views.appended(&record);
        Ok(record)
    }

    /// Records an event written ahead of an effect ([`Urgency::WriteAhead`]) without waiting
    /// for it to be durable: it is synced in the background at once, and the effect waits
    /// for the returned [`Ahead`] first, so the effect's own preparation (a file written
    /// aside) and the sync go on together. Within a group it is synced here.
    #[must_use = "the effect must wait for the event to be durable"]
    pub fn append_ahead(&mut self, event: Event) -> Result<(Record, Ahead), StoreError> {
        let urgency = if self.grouping { Urgency::WriteAhead } else { Urgency::Soon };
        let record = self.record(event, urgency)?;
        self.refresh_views();
        Ok((record, Ahead { log: self.log.durability(), len: self.log.written_len() }))
    }

    /// Has every event recorded so far made durable at once and the projection files that
    /// show them written soon after (paced while events come quickly), in the background;
    /// within a group, only once it ends.
    pub fn refresh_views(&mut self) {
        if !self.grouping {
            self.views.update_later(self.log.written_len());
        }
    }

    /// Makes every event recorded so far durable before it returns (an `Err` says it could
    /// not), and brings the projection files up to date with them (within a group, with
    /// those before it), returning once they are written. For the moments someone is told
    /// the mission's state: a gate reached, a command applied.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        let synced = self.log.sync();
        self.refresh_views();
        self.views.wait();
        synced
    }

    /// Starts a group of appends that are made durable together, by one sync when
    /// [`MissionStore::end_group`] ends it, rather than one each. Whoever groups tells nobody
    /// of the group's events before it ended (see the engine's `Shared::together`).
    pub fn begin_group(&mut self) {
        self.grouping = true;
    }

    /// Ends a group: its events are made durable (in the background), then the views that
    /// show them are written.
    pub fn end_group(&mut self) {
        self.grouping = false;
        self.refresh_views();
    }

    /// Ends any group, makes every event recorded so far durable before it returns, and
    /// brings the projection files up to date.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.grouping = false;
        self.flush()
    }
}

/// What an effect written ahead of waits for ([`MissionStore::append_ahead`]).
#[derive(Debug)]
#[must_use = "the effect must wait for the event to be durable"]
pub struct Ahead {
    log: Arc<Durability>,
    len: u64,
}

impl Ahead {
    /// Returns once the event is durable; an `Err` says it could not be made so, and the
    /// effect must not happen.
    pub fn wait(self) -> Result<(), StoreError> {
        self.log.sync_to(self.len)
    }
}

impl Drop for MissionStore {
    fn drop(&mut self) {
        if let Err(error) = self.sync() {
            tracing::warn!("the log of {} may not be durable: {error}", self.dir.display());
        }
        self.views.finish();
    }
}

/// Writes `bytes` to `path` so that a reader sees either the old file or the whole new one,
/// and a crash never brings back the old one once this returned: a temporary file in the
/// same directory, fsync'd, renamed over the target, and the directory fsync'd.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    views::write_aside(path, bytes, true)?;
    let parent = path.parent().unwrap_or(Path::new("."));
    // The rename is only durable once the directory entry is; without this a crash can bring
    // back the old file even though the new one was acknowledged.
    log::sync_dir(parent)
}

/// The digest that locks a contract: SHA-256 over the canonical JSON of its assertions
/// (id, milestone, description, check), in id order, so the same contract always gives the
/// same digest whatever order it was written in.
pub fn contract_digest(assertions: &[crate::mission::Assertion]) -> String {
    let mut drafts: Vec<AssertionDraft> = assertions
        .iter()
        .map(|a| AssertionDraft {
            id: a.id.clone(),
            milestone: a.milestone.clone(),
            description: a.description.clone(),
            check: a.check.clone(),
        })
        .collect();
    drafts.sort_by(|a, b| a.id.cmp(&b.id));
    let canonical = serde_json::to_vec(&drafts).unwrap_or_default();
    crate::sha256_hex(&canonical)
}

#[cfg(test)]
mod tests;
