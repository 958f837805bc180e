//! Writing the projection files (the views of a mission's log) off the engine's path.
//!
//! A view is replaced whole (written aside, renamed into place), so a reader never sees half
//! of one. Replacing a file costs far more than appending an event (on ext4 the rename starts
//! the new file's write-back), and the views are only a picture of the log, rebuilt from it
//! whenever the store is opened; so the engine renders them and a thread of their own writes
//! them while the engine goes on. Nothing is fsync'd here: the log is.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::StoreError;

enum Job {
    Write(Vec<(PathBuf, Vec<u8>)>),
    /// Answered once every job sent before it is done.
    Barrier(mpsc::Sender<()>),
}

/// What the store and the writer thread share: what was last written to each view file (its
/// SHA-256), so an unchanged view is not written again, and whether a write failed (the file
/// is then forgotten, and the next flush renders every view again).
#[derive(Debug, Default)]
struct Written {
    digests: Mutex<HashMap<PathBuf, [u8; 32]>>,
    failed: std::sync::atomic::AtomicBool,
}

impl Written {
    fn digests(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, [u8; 32]>> {
        self.digests.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The files of `files` whose content differs from what was last written (taken as
    /// written from now on).
    fn changed(&self, files: Vec<(PathBuf, Vec<u8>)>) -> Vec<(PathBuf, Vec<u8>)> {
        let mut digests = self.digests();
        files
            .into_iter()
            .filter(|(path, bytes)| {
                let digest: [u8; 32] = Sha256::digest(bytes).into();
                let unchanged = digests.get(path) == Some(&digest) && path.exists();
                if !unchanged {
                    digests.insert(path.clone(), digest);
                }
                !unchanged
            })
            .collect()
    }

    /// Writes `files`; one that cannot be written is forgotten and the failure noted, so the
    /// next flush writes it again. Returns the first failure.
    fn write(&self, files: Vec<(PathBuf, Vec<u8>)>) -> Result<(), StoreError> {
        let mut first_failure = Ok(());
        for (path, bytes) in files {
            if let Err(error) = write_aside(&path, &bytes, false) {
                self.digests().remove(&path);
                self.failed.store(true, std::sync::atomic::Ordering::Release);
                if first_failure.is_ok() {
                    first_failure = Err(error);
                }
            }
        }
        first_failure
    }
}

#[derive(Debug, Default)]
pub(super) struct ViewWriter {
    written: Arc<Written>,
    thread: Option<(mpsc::Sender<Job>, std::thread::JoinHandle<()>)>,
}

impl ViewWriter {
    /// Writes the changed files of `files` now, on this thread, after anything queued.
    pub(super) fn write_now(&mut self, files: Vec<(PathBuf, Vec<u8>)>) -> Result<(), StoreError> {
        self.wait();
        self.written.write(self.written.changed(files))
    }

    /// Queues the changed files of `files` for the writer thread (started on first use); when
    /// no thread can be started they are written now.
    pub(super) fn write_later(&mut self, files: Vec<(PathBuf, Vec<u8>)>) {
        let changed = self.written.changed(files);
        if changed.is_empty() {
            return;
        }
        if self.thread.is_none() {
            let (sender, receiver) = mpsc::channel::<Job>();
            let written = self.written.clone();
            let spawned = std::thread::Builder::new()
                .name("missions-views".into())
                .spawn(move || write_jobs(&receiver, &written));
            match spawned {
                Ok(handle) => self.thread = Some((sender, handle)),
                Err(error) => tracing::warn!("cannot start the view writer ({error}); views are written in line"),
            }
        }
        let unsent = match &self.thread {
            Some((sender, _)) => match sender.send(Job::Write(changed)) {
                Ok(()) => return,
                Err(mpsc::SendError(Job::Write(files))) => files,
                Err(mpsc::SendError(Job::Barrier(_))) => return,
            },
            None => changed,
        };
        if let Err(error) = self.written.write(unsent) {
            tracing::warn!("a view is stale: {error}");
        }
    }

    /// Whether a file failed to be written since the last call.
    pub(super) fn take_failure(&self) -> bool {
        self.written.failed.swap(false, std::sync::atomic::Ordering::AcqRel)
    }

    /// Returns once every queued file is written (or failed to be).
    pub(super) fn wait(&mut self) {
        let Some((sender, _)) = &self.thread else { return };
        let (done, finished) = mpsc::channel();
        if sender.send(Job::Barrier(done)).is_ok() {
            let _ = finished.recv();
        }
    }

    /// Writes what is queued and stops the thread.
    pub(super) fn finish(&mut self) {
        if let Some((sender, handle)) = self.thread.take() {
            drop(sender);
            if handle.join().is_err() {
                tracing::warn!("the view writer panicked; the views are rewritten when the mission is opened");
            }
        }
    }
}

fn write_jobs(jobs: &mpsc::Receiver<Job>, written: &Written) {
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Write(files) => {
                if let Err(error) = written.write(files) {
                    tracing::warn!("a view is stale: {error}");
                }
            }
            Job::Barrier(done) => {
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
