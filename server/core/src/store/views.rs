//! Making the log durable and writing the projection files (the views of a mission's log),
//! off the engine's path.
//!
//! A view is replaced whole (written aside, renamed into place), so a reader never sees half
//! of one. Syncing the log, rendering a view (JSON, Markdown) and replacing its file cost far
//! more than appending an event (on ext4 the rename starts the new file's write-back), and the
//! views are only a picture of the log, rebuilt from it whenever the store is opened. So a
//! thread of their own takes the records the store appended, makes the log durable up to them
//! (`fdatasync`), and only then folds them into a projection of its own and renders and writes
//! the views they changed: a view never shows an event a power cut could still take back
//! (`read_log` takes a `mission.json` ahead of the log for lost events). The engine goes on
//! meanwhile. The views themselves are not fsync'd: the log is. While updates come quickly
//! the views are rewritten at most every [`RENDER_EVERY`] (the log is still synced for each
//! update); a barrier, which whoever tells a person the mission's state waits for, writes
//! them at once.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::log::Durability;
use super::render::{self, Views};
use super::{Projection, Record, StoreError};

enum Job {
    /// The views to keep, sent first.
    Adopt(Box<ViewState>),
    /// Make the log durable up to this many bytes, then fold these records (all within them);
    /// every view the records folded so far changed is rewritten now, or within
    /// [`RENDER_EVERY`] of the last rewrite.
    Update(Vec<Record>, u64),
    /// Answered once every job sent before it is done and every view is written.
    Barrier(mpsc::Sender<()>),
}

/// What the views are made from and what was last written of them.
#[derive(Debug)]
struct ViewState {
    dir: PathBuf,
    log: Arc<Durability>,
    projection: Projection,
    /// The views that events folded since the last render can have changed; `None` when
    /// all are up to date.
    stale: Option<Views>,
    /// What was last written to each view file (its SHA-256), so an unchanged view is not
    /// written again.
    digests: HashMap<PathBuf, [u8; 32]>,
    /// Shared with the [`ViewWriter`]: whether an update is due.
    due: Arc<AtomicBool>,
}

impl ViewState {
    /// Makes the log durable up to `len` bytes, then folds `records` and writes the views.
    fn update(&mut self, records: &[Record], len: u64) -> Result<(), StoreError> {
        self.take(records, len)?;
        self.render()
    }

    /// Makes the log durable up to `len` bytes, then folds `records`: the views they change
    /// are stale until the next [`ViewState::render`]. Nothing is folded when the sync fails:
    /// the log refuses appends from then on, and the views are rebuilt from it when it is
    /// opened again.
    fn take(&mut self, records: &[Record], len: u64) -> Result<(), StoreError> {
        self.log.sync_to(len)?;
        for record in records {
            self.projection.apply(record);
            self.stale.get_or_insert_with(Views::default).add(&record.event);
        }
        Ok(())
    }

    /// Renders the stale views and writes those whose content changed. A file that cannot be
    /// written is forgotten, and every view is rendered again the next time. Returns the first
    /// failure.
    fn render(&mut self) -> Result<(), StoreError> {
        let Some(views) = self.stale.take() else { return Ok(()) };
        let files = match render::projection_files(&self.dir, &self.projection, &views) {
            Ok(files) => files,
            Err(error) => {
                self.stale = Some(views);
                self.due.store(true, Ordering::Release);
                return Err(error);
            }
        };
        let mut first_failure = Ok(());
        for (path, bytes) in files {
            let digest: [u8; 32] = Sha256::digest(&bytes).into();
            if self.digests.get(&path) == Some(&digest) && path.exists() {
                continue;
            }
            match write_aside(&path, &bytes, false) {
                Ok(()) => {
                    self.digests.insert(path, digest);
                }
                Err(error) => {
                    self.digests.remove(&path);
                    self.stale = Some(Views::all());
                    self.due.store(true, Ordering::Release);
                    if first_failure.is_ok() {
                        first_failure = Err(error);
                    }
                }
            }
        }
        first_failure
    }
}

/// Where the views are kept: on the store's thread until the first update in the background
/// starts a thread of their own (or for good, when none can be started), then on that thread.
#[derive(Debug)]
enum Place {
    Here(Box<ViewState>),
    Thread {
        jobs: mpsc::Sender<Job>,
        handle: std::thread::JoinHandle<()>,
    },
    /// The thread is gone (it panicked); the views wait for the store to be opened again.
    Lost,
}

#[derive(Debug)]
pub(super) struct ViewWriter {
    place: Place,
    /// The log, synced on the caller's thread once the view thread is lost.
    log: Arc<Durability>,
    /// Whether an update is due: an event was appended, or a file could not be written, since
    /// the last update was asked for. An update that is not due would only wake the thread.
    due: Arc<AtomicBool>,
    /// The records appended since the last update was asked for, sent with it (so the thread
    /// is woken once per update rather than once per event).
    appended: Vec<Record>,
}

impl ViewWriter {
    /// The views of `projection` in `dir`, all of them to be written once `log` is durable.
    pub(super) fn new(dir: &Path, projection: Projection, log: Arc<Durability>) -> ViewWriter {
        let due = Arc::new(AtomicBool::new(true));
        let views = ViewState {
            dir: dir.to_owned(),
            log: log.clone(),
            projection,
            stale: Some(Views::all()),
            digests: HashMap::new(),
            due: due.clone(),
        };
        ViewWriter { place: Place::Here(Box::new(views)), log, due, appended: Vec::new() }
    }

    /// Takes an event the log holds (not yet durably, perhaps), for the next update.
    pub(super) fn appended(&mut self, record: &Record) {
        self.due.store(true, Ordering::Release);
        if !matches!(self.place, Place::Lost) {
            self.appended.push(record.clone());
        }
    }

    /// Makes the log durable up to `len` bytes and writes the views on this thread; for
    /// opening, before the thread starts.
    pub(super) fn update_now(&mut self, len: u64) -> Result<(), StoreError> {
        match &mut self.place {
            Place::Here(views) => {
                self.due.store(false, Ordering::Release);
                views.update(&std::mem::take(&mut self.appended), len)
            }
            Place::Thread { .. } | Place::Lost => {
                self.update_later(len);
                self.wait();
                Ok(())
            }
        }
    }

    /// Has the log made durable up to `len` bytes (every record taken so far) and the views
    /// written, in the background (the thread starts on first use); when no thread can be
    /// started, now.
    pub(super) fn update_later(&mut self, len: u64) {
        if !self.due.swap(false, Ordering::AcqRel) {
            return;
        }
        let appended = std::mem::take(&mut self.appended);
        if let Place::Here(views) = &mut self.place {
            let (jobs, receiver) = mpsc::channel::<Job>();
            let spawned = std::thread::Builder::new().name("missions-views".into()).spawn(move || work(&receiver));
            match spawned {
                Ok(handle) => {
                    let Place::Here(views) = std::mem::replace(&mut self.place, Place::Thread { jobs, handle }) else {
                        return;
                    };
                    self.send(Job::Adopt(views));
                }
                Err(error) => {
                    tracing::warn!("cannot start the view writer ({error}); views are written in line");
                    if let Err(error) = views.update(&appended, len) {
                        tracing::warn!("a view is stale: {error}");
                    }
                    return;
                }
            }
        }
        self.send(Job::Update(appended, len));
        // Without the thread the log is still synced, here; the views wait for the mission to
        // be opened again.
        if matches!(self.place, Place::Lost)
            && let Err(error) = self.log.sync_to(len)
        {
            tracing::warn!("the log is not durable: {error}");
        }
    }

    fn send(&mut self, job: Job) {
        if let Place::Thread { jobs, .. } = &self.place
            && jobs.send(job).is_err()
        {
            tracing::warn!("the view writer stopped; the views are rewritten when the mission is opened");
            self.place = Place::Lost;
        }
    }

    /// Returns once every job sent is done.
    pub(super) fn wait(&mut self) {
        let Place::Thread { jobs, .. } = &self.place else { return };
        let (done, finished) = mpsc::channel();
        if jobs.send(Job::Barrier(done)).is_ok() {
            let _ = finished.recv();
        }
    }

    /// Does what is queued and stops the thread.
    pub(super) fn finish(&mut self) {
        if let Place::Thread { jobs, handle } = std::mem::replace(&mut self.place, Place::Lost) {
            drop(jobs);
            if handle.join().is_err() {
                tracing::warn!("the view writer panicked; the views are rewritten when the mission is opened");
            }
        }
    }
}

/// How often at most the thread rewrites the views while updates keep coming. The log is
/// synced for every update at once; the views, a picture for people, follow within this
/// time. Each rewrite replaces a file (a new inode, the old one freed), and a mission whose
/// model answers quickly would otherwise replace `mission.json` and `plan.md` after every
/// event: hundreds of files a minute, which on ext4 slows every file created after them,
/// git's included. Whoever must see the views current (a gate, a command applied) waits for
/// them with a barrier, which writes them at once.
pub(super) const RENDER_EVERY: Duration = Duration::from_millis(250);

/// When the thread last rendered the views, and whether it put a render off since.
#[derive(Debug, Default)]
struct Pacing {
    rendered: Option<Instant>,
    put_off: bool,
}

impl Pacing {
    /// Renders the stale views now.
    fn render(&mut self, views: &mut ViewState) {
        if views.stale.is_some() {
            if let Err(error) = views.render() {
                tracing::warn!("a view is stale: {error}");
            }
            self.rendered = Some(Instant::now());
        }
        self.put_off = false;
    }

    /// Renders the stale views unless the last render was less than [`RENDER_EVERY`] ago, in
    /// which case the render is put off until [`Pacing::due_in`].
    fn render_or_put_off(&mut self, views: &mut ViewState) {
        if self.rendered.is_none_or(|at| at.elapsed() >= RENDER_EVERY) {
            self.render(views);
        } else {
            self.put_off = true;
        }
    }

    /// How long until a render put off is due; `None` when none is (a view that failed to be
    /// written waits for the next update, as it always did, rather than a timer).
    fn due_in(&self) -> Option<Duration> {
        self.put_off.then(|| self.rendered.map_or(Duration::ZERO, |at| RENDER_EVERY.saturating_sub(at.elapsed())))
    }
}

fn work(jobs: &mpsc::Receiver<Job>) {
    let mut kept: Option<Box<ViewState>> = None;
    let mut next = None;
    let mut pacing = Pacing::default();
    loop {
        let received = match (next.take(), pacing.due_in()) {
            (Some(job), _) => Ok(job),
            (None, Some(due_in)) => jobs.recv_timeout(due_in),
            (None, None) => jobs.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        let job = match received {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(views) = kept.as_mut() {
                    pacing.render(views);
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        match (job, kept.as_mut()) {
            (Job::Adopt(views), _) => kept = Some(views),
            (Job::Update(mut records, mut len), Some(views)) => {
                // Updates that queued up while this thread was busy are made as one: one sync,
                // and each view written once.
                while let Ok(job) = jobs.try_recv() {
                    match job {
                        Job::Update(more, more_len) => {
                            records.extend(more);
                            len = len.max(more_len);
                        }
                        other => {
                            next = Some(other);
                            break;
                        }
                    }
                }
                match views.take(&records, len) {
                    Ok(()) => pacing.render_or_put_off(views),
                    Err(error) => tracing::warn!("a view is stale: {error}"),
                }
            }
            (Job::Update(..), None) => {}
            (Job::Barrier(done), views) => {
                if let Some(views) = views {
                    pacing.render(views);
                }
                let _ = done.send(());
            }
        }
    }
    // The store is closing: what it appended last is shown.
    if let Some(views) = kept.as_mut() {
        pacing.render(views);
    }
}

/// Writes `bytes` to `path` so that a reader sees either the old file or the whole new one:
/// a temporary file in the same directory, renamed over the target. With `durable`, the file
/// is fsync'd before the rename.
pub(super) fn write_aside(path: &Path, bytes: &[u8], durable: bool) -> Result<(), StoreError> {
    let io = |source| StoreError::Io { path: path.to_owned(), source };
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io)?;
    let mut temp = tempfile::NamedTempFile::new_in(parent).map_err(io)?;
    temp.write_all(bytes).map_err(io)?;
    if durable {
        temp.as_file().sync_all().map_err(io)?;
    }
    temp.persist(path).map_err(|error| io(error.error))?;
    Ok(())
}
