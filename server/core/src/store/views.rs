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

/// What was last written to each view file (its SHA-256), so an unchanged view is not
/// written again. Shared with the writer thread, which forgets a file it failed to write so
/// the next flush tries again.
type Written = Arc<Mutex<HashMap<PathBuf, [u8; 32]>>>;

#[derive(Debug, Default)]
pub(super) struct ViewWriter {
    written: Written,
    /// Set when a file could not be written, so the next flush renders every view again.
    failed: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<(mpsc::Sender<Job>, std::thread::JoinHandle<()>)>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Write(files) => write!(f, "Write({} files)", files.len()),
            Job::Barrier(_) => write!(f, "Barrier"),
        }
    }
}

fn written_map(written: &Written) -> std::sync::MutexGuard<'_, HashMap<PathBuf, [u8; 32]>> {
    written.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ViewWriter {
    /// The files of `files` whose content differs from what was last written.
    fn changed(&self, files: Vec<(PathBuf, Vec<u8>)>) -> Vec<(PathBuf, Vec<u8>)> {
        let mut written = written_map(&self.written);
        files
            .into_iter()
            .filter(|(path, bytes)| {
                let digest: [u8; 32] = Sha256::digest(bytes).into();
                let unchanged = written.get(path) == Some(&digest) && path.exists();
                if !unchanged {
                    written.insert(path.clone(), digest);
                }
                !unchanged
            })
            .collect()
    }

    /// Writes the changed files of `files` now, on this thread, after anything queued.
    pub(super) fn write_now(&mut self, files: Vec<(PathBuf, Vec<u8>)>) -> Result<(), StoreError> {
        self.wait();
        for (path, bytes) in self.changed(files) {
            if let Err(error) = replace_file(&path, &bytes) {
                forget(&self.written, &self.failed, &path);
                return Err(error);
            }
        }
        Ok(())
    }

    /// Queues the changed files of `files` for the writer thread (started on first use); when
    /// no thread can be started they are written now.
    pub(super) fn write_later(&mut self, files: Vec<(PathBuf, Vec<u8>)>) {
        let changed = self.changed(files);
        if changed.is_empty() {
            return;
        }
        if self.thread.is_none() {
            let (sender, receiver) = mpsc::channel::<Job>();
            let (written, failed) = (self.written.clone(), self.failed.clone());
            let spawned = std::thread::Builder::new()
                .name("missions-views".into())
                .spawn(move || write_jobs(&receiver, &written, &failed));
            match spawned {
                Ok(handle) => self.thread = Some((sender, handle)),
                Err(error) => tracing::warn!("cannot start the view writer ({error}); views are written in line"),
            }
        }
        let unsent = match &self.thread {
            Some((sender, _)) => sender.send(Job::Write(changed)).err().map(|error| match error.0 {
                Job::Write(files) => files,
                Job::Barrier(_) => Vec::new(),
            }),
            None => Some(changed),
        };
        for (path, bytes) in unsent.unwrap_or_default() {
            if let Err(error) = replace_file(&path, &bytes) {
                forget(&self.written, &self.failed, &path);
                tracing::warn!("a view is stale: {error}");
            }
        }
    }

    /// Whether a file failed to be written since the last call.
    pub(super) fn take_failure(&self) -> bool {
        self.failed.swap(false, std::sync::atomic::Ordering::AcqRel)
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

/// A file that could not be written is forgotten, and the failure noted, so the next flush
/// writes it again.
fn forget(written: &Written, failed: &std::sync::atomic::AtomicBool, path: &Path) {
    written_map(written).remove(path);
    failed.store(true, std::sync::atomic::Ordering::Release);
}

fn write_jobs(jobs: &mpsc::Receiver<Job>, written: &Written, failed: &std::sync::atomic::AtomicBool) {
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Write(files) => {
                for (path, bytes) in files {
                    if let Err(error) = replace_file(&path, &bytes) {
                        forget(written, failed, &path);
                        tracing::warn!("a view is stale: {error}");
                    }
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

fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_aside(path, bytes, false)
}
