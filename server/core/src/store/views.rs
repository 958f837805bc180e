//! Rendering and writing the projection files (the views of a mission's log) off the engine's
//! path.
//!
//! A view is replaced whole (written aside, renamed into place), so a reader never sees half
//! of one. Rendering a view (JSON, Markdown) and replacing its file cost far more than
//! appending an event (on ext4 the rename starts the new file's write-back), and the views are
//! only a picture of the log, rebuilt from it whenever the store is opened; so a thread of
//! their own keeps a projection of its own, folded from the same records as the store's, and
//! renders and writes the views when the store says the events they would show are durable,
//! while the engine goes on. Nothing is fsync'd here: the log is.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use sha2::{Digest, Sha256};

use super::render::{self, Views};
use super::{Projection, Record, StoreError};

enum Job {
    /// The views to keep, sent first.
    Adopt(Box<ViewState>),
    /// Fold these events, which the log holds durably, then render and write every view that
    /// events folded so far changed.
    Render(Vec<Record>),
    /// Answered once every job sent before it is done.
    Barrier(mpsc::Sender<()>),
}

/// What the views are made from and what was last written of them.
#[derive(Debug)]
struct ViewState {
    dir: PathBuf,
    projection: Projection,
    /// The views that events folded since the last render can have changed; `None` when
    /// all are up to date.
    stale: Option<Views>,
    /// What was last written to each view file (its SHA-256), so an unchanged view is not
    /// written again.
    digests: HashMap<PathBuf, [u8; 32]>,
    /// Shared with the [`ViewWriter`]: whether a render is due.
    due: Arc<AtomicBool>,
}

impl ViewState {
    fn fold(&mut self, record: &Record) {
        self.projection.apply(record);
        self.stale.get_or_insert_with(Views::default).add(&record.event);
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

/// Where the views are kept: on the store's thread until the first render in the background
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
    /// Whether a render is due: an event was folded, or a file could not be written, since the
    /// last render was asked for. A render that is not due would only wake the thread.
    due: Arc<AtomicBool>,
    /// The events folded since the last render, for the thread: sent with the render, so the
    /// thread is woken once per render rather than once per event.
    folded: Vec<Record>,
}

impl ViewWriter {
    /// The views of `projection` in `dir`, all of them to be written.
    pub(super) fn new(dir: &Path, projection: Projection) -> ViewWriter {
        let due = Arc::new(AtomicBool::new(true));
        let views = ViewState {
            dir: dir.to_owned(),
            projection,
            stale: Some(Views::all()),
            digests: HashMap::new(),
            due: due.clone(),
        };
        ViewWriter { place: Place::Here(Box::new(views)), due, folded: Vec::new() }
    }

    /// Folds an event the log holds (not yet durably, perhaps: it is shown only after the
    /// next [`ViewWriter::render_later`]).
    pub(super) fn fold(&mut self, record: &Record) {
        self.due.store(true, Ordering::Release);
        match &mut self.place {
            Place::Here(views) => views.fold(record),
            Place::Thread { .. } => self.folded.push(record.clone()),
            Place::Lost => {}
        }
    }

    /// Renders and writes the stale views on this thread; for opening, before the thread
    /// starts.
    pub(super) fn render_now(&mut self) -> Result<(), StoreError> {
        match &mut self.place {
            Place::Here(views) => {
                self.due.store(false, Ordering::Release);
                views.render()
            }
            Place::Thread { .. } | Place::Lost => {
                self.render_later();
                self.wait();
                Ok(())
            }
        }
    }

    /// Has the stale views rendered and written in the background (the thread starts on first
    /// use); when no thread can be started they are rendered and written now.
    pub(super) fn render_later(&mut self) {
        if !self.due.swap(false, Ordering::AcqRel) {
            return;
        }
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
                    if let Err(error) = views.render() {
                        tracing::warn!("a view is stale: {error}");
                    }
                    return;
                }
            }
        }
        let folded = std::mem::take(&mut self.folded);
        self.send(Job::Render(folded));
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

    /// Writes what is queued and stops the thread.
    pub(super) fn finish(&mut self) {
        if let Place::Thread { jobs, handle } = std::mem::replace(&mut self.place, Place::Lost) {
            drop(jobs);
            if handle.join().is_err() {
                tracing::warn!("the view writer panicked; the views are rewritten when the mission is opened");
            }
        }
    }
}

fn work(jobs: &mpsc::Receiver<Job>) {
    let mut kept: Option<Box<ViewState>> = None;
    while let Ok(job) = jobs.recv() {
        match (job, kept.as_mut()) {
            (Job::Adopt(views), _) => kept = Some(views),
            (Job::Render(records), Some(views)) => {
                for record in &records {
                    views.fold(record);
                }
                if let Err(error) = views.render() {
                    tracing::warn!("a view is stale: {error}");
                }
            }
            (Job::Render(_), None) => {}
            (Job::Barrier(done), _) => {
                let _ = done.send(());
            }
        }
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
