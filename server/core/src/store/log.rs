//! `events.jsonl`: the append-only, hash-chained, fsync'd source of truth.
//!
//! Reading ([`read_log`]) checks every complete line: valid JSON, the expected `seq`, and a
//! `prev` equal to the SHA-256 of the line before. A last line without its newline is what a
//! crash in the middle of an append leaves; it is dropped with a warning, because the append
//! was never acknowledged. Anything wrong before the last line is corruption and an error:
//! it is never "fixed" silently, since the log is the only record of the mission.
//!
//! Writing ([`EventLog`]) holds an exclusive lock on `events.lock` for as long as it lives, so
//! only one process writes a mission at a time; a second one gets an error naming the holder.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::StoreError;
use super::events::{Event, Record, Urgency};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub fn line_hash(line: &[u8]) -> String {
    crate::sha256_hex(line)
}

/// A verified log as read from disk.
#[derive(Debug)]
pub struct LogContents {
    pub records: Vec<Record>,
    /// Hash of the last complete line (the `prev` of the next record).
    pub last_hash: String,
    /// Byte length of the complete lines; anything after it is a torn tail.
    pub valid_len: u64,
    pub warnings: Vec<String>,
}

/// Parses and verifies a log's bytes.
pub fn parse_log(path: &Path, bytes: &[u8]) -> Result<LogContents, StoreError> {
    parse_after(path, bytes, 0, GENESIS)
}

/// Parses and verifies bytes that follow `records_before` complete records whose last line
/// hashes to `prev_hash` (the whole log: 0 and [`GENESIS`]). `valid_len` in the result counts
/// from the start of `bytes`. A reader that follows a growing log parses only what is new.
pub fn parse_after(path: &Path, bytes: &[u8], records_before: u64, prev_hash: &str) -> Result<LogContents, StoreError> {
    let mut records = Vec::new();
    let mut last_hash = prev_hash.to_owned();
    let mut offset = 0usize;
    let mut warnings = Vec::new();
    let mut line_no = records_before as usize;
    while offset < bytes.len() {
        line_no += 1;
        let rest = &bytes[offset..];
        let Some(newline) = rest.iter().position(|b| *b == b'\n') else {
            warnings.push(format!(
                "{}: dropped an incomplete last line ({} bytes at byte {offset}), left by an interrupted write",
                path.display(),
                rest.len()
            ));
            break;
        };
        let line = &rest[..newline];
        let corrupt = |message: String| StoreError::Corrupt { path: path.to_owned(), line: line_no, message };
        let record: Record =
            serde_json::from_slice(line).map_err(|error| corrupt(format!("not a valid event: {error}")))?;
        let expected_seq = records_before + records.len() as u64 + 1;
        if record.seq != expected_seq {
            return Err(corrupt(format!("sequence number {} where {expected_seq} was expected", record.seq)));
        }
        if record.prev != last_hash {
            return Err(corrupt(
                "hash chain broken: this event does not follow the one before it (the log was edited or lines were lost)"
                    .to_owned(),
            ));
        }
        last_hash = line_hash(line);
        records.push(record);
        offset += newline + 1;
    }
    Ok(LogContents { records, last_hash, valid_len: offset as u64, warnings })
}

/// Reads and verifies a log without locking it (for `status` and other readers).
pub fn read_log(path: &Path) -> Result<LogContents, StoreError> {
    // The projection first: a driver may append while this reads, and a log read after
    // `mission.json` holds at least every event that file shows.
    let shown = projection_time(path);
    let bytes = std::fs::read(path).map_err(|source| StoreError::Io { path: path.to_owned(), source })?;
    let contents = parse_log(path, &bytes)?;
    check_against_projection(path, &contents, shown)?;
    Ok(contents)
}

/// When `mission.json` beside the log `path` says the mission was last updated, as it says it.
fn projection_time(path: &Path) -> Option<String> {
    let projection = path.parent()?.join("mission.json");
    let bytes = super::read_bounded(&projection, 16 * 1024 * 1024).ok()?;
    let value = serde_json::from_slice::<serde_json::Value>(&bytes).ok()?;
    value["updated_at"].as_str().map(str::to_owned)
}

/// A log that ends before the events its projection shows (`shown`, its `updated_at`, read
/// before the log) has lost whole events, not only a torn last line: `mission.json` is written
/// only after the events it shows are durable, so its `updated_at` is never later than the
/// log's last event. Such a log is corrupt, and left untouched for the user to restore.
fn check_against_projection(path: &Path, contents: &LogContents, shown: Option<String>) -> Result<(), StoreError> {
    let Some(last) = contents.records.last() else { return Ok(()) };
    let Some(shown_text) = shown else { return Ok(()) };
    let parse = |text: &str| time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok();
    let (Some(shown), Some(logged)) = (parse(&shown_text), parse(&last.ts)) else {
        return Ok(());
    };
    if shown > logged {
        return Err(StoreError::Corrupt {
            path: path.to_owned(),
            line: contents.records.len() + 1,
            message: format!(
                "the log ends with event {} ({}), but mission.json shows the mission as of {}: whole events were \
                 lost, not only a torn last line",
                last.seq, last.ts, shown_text
            ),
        });
    }
    Ok(())
}

/// The writer's handle on a mission's log. Holds the lock until dropped.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    file: File,
    _lock: File,
    /// Bytes of complete lines in the file; a failed append is cut back to this.
    len: u64,
    next_seq: u64,
    last_hash: String,
    /// Set when a failed append could not be cut back off: the file's tail is unknown, so no
    /// further append may land after it until the log is reopened (and verified).
    poisoned: Option<String>,
    /// How much of the file is durable, shared with whoever syncs it from another thread.
    durability: Arc<Durability>,
}

/// How much of a log must be and is durable (`fdatasync`'d), for the thread that
/// writes it and the threads that make it durable in the background or wait for it before
/// an effect the log must precede (a commit). Any thread may sync; a failed sync is kept, and
/// the log refuses every append after it.
#[derive(Debug)]
pub struct Durability {
    /// A second handle on the log file, to sync it from any thread.
    file: File,
    path: PathBuf,
    /// Bytes up to the end of the last event that is more than progress: what an effect the
    /// log must precede waits for ([`Durability::sync_needed`]).
    needed: AtomicU64,
    /// Bytes known to be durable.
    synced: AtomicU64,
    /// Held while a sync is under way, so syncs never overlap: of concurrent `fsync`s on one
    /// file, the kernel reports a write-back error to one only, and another must not take the
    /// lines it dropped for durable.
    syncing: Mutex<()>,
    /// Why a sync failed, once one did; from then on nothing counts as durable.
    failure: Mutex<Option<String>>,
}

impl Durability {
    /// The durability of `file`, whose first `written` bytes are complete lines and whose
    /// first `synced` are durable.
    fn new(file: &File, path: &Path, written: u64, synced: u64) -> Result<Durability, StoreError> {
        let file = file.try_clone().map_err(|source| StoreError::Io { path: path.to_owned(), source })?;
        Ok(Durability {
            file,
            path: path.to_owned(),
            needed: written.into(),
            synced: synced.into(),
            syncing: Mutex::new(()),
            failure: Mutex::new(None),
        })
    }

    /// Makes the first `len` bytes of the log durable, unless they are already.
    pub fn sync_to(&self, len: u64) -> Result<(), StoreError> {
        let durable = || self.synced.load(Ordering::Acquire) >= len;
        if self.failure().is_none() && durable() {
            return Ok(());
        }
        let _syncing = crate::sync::lock(&self.syncing);
        // Checked again under the lock: a sync that ended meanwhile may have failed, or
        // covered these bytes.
        if let Some(reason) = self.failure() {
            return Err(StoreError::Poisoned { path: self.path.clone(), reason });
        }
        if durable() {
            return Ok(());
        }
        match self.file.sync_data() {
            Ok(()) => {
                self.synced.fetch_max(len, Ordering::AcqRel);
                Ok(())
            }
            Err(source) => {
                // A failed sync may have dropped lines from the page cache: what the file
                // holds is unknown until it is reopened and verified.
                let reason = format!("a sync failed ({source}); the log is verified again when reopened");
                *crate::sync::lock(&self.failure) = Some(reason);
                Err(StoreError::Io { path: self.path.clone(), source })
            }
        }
    }

    /// Makes every event written so far durable but a tail of progress reports (a run
    /// started, a call's usage): losing that tail to a power cut after an effect is as if the
    /// effect came first.
    pub fn sync_needed(&self) -> Result<(), StoreError> {
        self.sync_to(self.needed.load(Ordering::Acquire))
    }

    fn failure(&self) -> Option<String> {
        crate::sync::lock(&self.failure).clone()
    }

    /// Bytes known to be durable.
    #[cfg(test)]
    pub(crate) fn synced_len(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }
}

/// Who holds a mission's lock: written into the lock file so a refused process can say who.
fn holder_description() -> String {
    let command: Vec<String> = std::env::args().collect();
    format!("pid {} ({}) since {}", std::process::id(), command.join(" "), crate::now_rfc3339())
}

/// Takes an exclusive lock on the file `path` (created if missing) for as long as the returned
/// file lives, writing who holds it into the file. A lock another process (or another open of
/// the file) holds is `StoreError::Locked` naming that holder.
pub fn acquire_lock(path: &Path) -> Result<File, StoreError> {
    let path = path.to_owned();
    let io = |source| StoreError::Io { path: path.clone(), source };
    let mut lock = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
    match lock.try_lock() {
        Ok(()) => {
            lock.set_len(0).map_err(io)?;
            lock.write_all(holder_description().as_bytes()).map_err(io)?;
            Ok(lock)
        }
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            // The holder wrote its description after locking; an empty read means it is
            // between the two steps, which is still a live holder.
            let _ = lock.read_to_string(&mut holder);
            let holder = if holder.trim().is_empty() { "another process".to_owned() } else { holder };
            Err(StoreError::Locked { dir: path.parent().unwrap_or(&path).to_owned(), holder: holder.trim().to_owned() })
        }
        Err(TryLockError::Error(source)) => Err(io(source)),
    }
}

/// Whether a live process holds the lock file `path` (taken with [`acquire_lock`]), found
/// without taking it: on Linux from `/proc/locks`, else from the holder's pid written in the
/// file. A crashed driver's lock is released by the kernel, so `false` for a mission that is
/// mid-way means nothing drives it.
pub fn lock_is_held(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(metadata) = std::fs::metadata(path) else { return false };
    if let Ok(locks) = std::fs::read_to_string("/proc/locks") {
        // Lines look like `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`.
        let inode = metadata.ino().to_string();
        return locks.lines().any(|line| {
            line.split_whitespace().nth(5).and_then(|device_inode| device_inode.rsplit(':').next()) == Some(&inode)
        });
    }
    let holder = std::fs::read_to_string(path).unwrap_or_default();
    holder
        .strip_prefix("pid ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| Path::new("/proc").join(pid.to_string()).exists())
}

impl EventLog {
    /// Creates a new log in `dir` (which must not hold one yet) holding `first` as its first
    /// event, and locks it. The file appears whole, with its first line, or not at all (it is
    /// written aside and renamed into place), so no reader ever sees an empty mission; the
    /// file and the directories leading to it are fsync'd before this returns.
    pub fn create(dir: &Path, first: Event) -> Result<(EventLog, Record), StoreError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock = acquire_lock(&dir.join("events.lock"))?;
        let path = dir.join("events.jsonl");
        let record = Record { seq: 1, ts: crate::now_rfc3339(), prev: GENESIS.to_owned(), event: first };
        let mut line =
            serde_json::to_vec(&record).map_err(|error| StoreError::Encode { message: error.to_string() })?;
        let hash = line_hash(&line);
        line.push(b'\n');
        let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
        temp.write_all(&line).map_err(io(&path))?;
        temp.as_file().sync_all().map_err(io(&path))?;
        temp.persist_noclobber(&path).map_err(|error| StoreError::Io { path: path.clone(), source: error.error })?;
        // The new directory entries must be durable too, or a crash can lose a mission whose
        // creation was already reported.
        for directory in [Some(dir), dir.parent(), dir.parent().and_then(Path::parent)].into_iter().flatten() {
            sync_dir(directory)?;
        }
        let file = OpenOptions::new().append(true).open(&path).map_err(io(&path))?;
        let len = line.len() as u64;
        let durability = Arc::new(Durability::new(&file, &path, len, len)?);
        let log = EventLog { path, file, _lock: lock, len, next_seq: 2, last_hash: hash, poisoned: None, durability };
        Ok((log, record))
    }

    /// Opens an existing log for writing: locks it, verifies it, and cuts off a torn tail so
    /// the next append starts on a fresh line. Returns the verified contents as well.
    pub fn open(dir: &Path) -> Result<(EventLog, LogContents), StoreError> {
        let lock = acquire_lock(&dir.join("events.lock"))?;
        let path = dir.join("events.jsonl");
        let contents = read_log(&path)?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|source| StoreError::Io { path: path.clone(), source })?;
        let io = |source| StoreError::Io { path: path.clone(), source };
        if file.metadata().map_err(io)?.len() != contents.valid_len {
            file.set_len(contents.valid_len).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        // A writer that died may have left lines that were never synced: none counts as
        // durable, so they are made durable before anything (a view) shows them.
        let durability = Arc::new(Durability::new(&file, &path, contents.valid_len, 0)?);
        let log = EventLog {
            path: path.clone(),
            file,
            _lock: lock,
            len: contents.valid_len,
            next_seq: contents.records.len() as u64 + 1,
            last_hash: contents.last_hash.clone(),
            poisoned: None,
            durability,
        };
        Ok((log, contents))
    }

    /// Appends one event. The line is written at once, so every reader and a later process
    /// see it even if this one dies the next instant. An event written ahead of an effect on
    /// the user's tree ([`Event::urgency`]) is also made durable (`fdatasync`) before this
    /// returns, and with it every line written before it; the others are made durable by the
    /// next sync (in the background, by the store), and a power cut before it loses at most
    /// that tail, which leaves the log as a crash just before it would have.
    pub fn append(&mut self, event: Event) -> Result<Record, StoreError> {
        let urgency = event.urgency();
        self.append_with(event, urgency)
    }

    /// Appends one event, made durable before this returns only when `urgency` says it is
    /// written ahead of an effect; otherwise it is by the next durable append or sync.
    pub fn append_with(&mut self, event: Event, urgency: Urgency) -> Result<Record, StoreError> {
        if let Some(reason) = self.poisoned.clone().or_else(|| self.durability.failure()) {
            self.poisoned = Some(reason.clone());
            return Err(StoreError::Poisoned { path: self.path.clone(), reason });
        }
        let record = Record { seq: self.next_seq, ts: crate::now_rfc3339(), prev: self.last_hash.clone(), event };
        let mut line =
            serde_json::to_vec(&record).map_err(|error| StoreError::Encode { message: error.to_string() })?;
        let hash = line_hash(&line);
        line.push(b'\n');
        if let Err(source) = self.file.write_all(&line) {
            // Cut a partly written line back off, so the log stays a sequence of whole events
            // and the next append does not glue onto garbage.
            if let Err(cut) = self.file.set_len(self.len) {
                self.poisoned = Some(format!("a failed append ({source}) could not be cut back off ({cut})"));
            }
            return Err(StoreError::Io { path: self.path.clone(), source });
        }
        let written = self.len + line.len() as u64;
        if urgency == Urgency::WriteAhead
            && let Err(error) = self.durability.sync_to(written)
        {
            // What the file holds is unknown until it is reopened and verified; the line is
            // cut off in case it can be.
            let _ = self.file.set_len(self.len);
            self.poisoned = self.durability.failure();
            return Err(error);
        }
        if urgency != Urgency::Progress {
            self.durability.needed.store(written, Ordering::Release);
        }
        self.len = written;
        self.next_seq += 1;
        self.last_hash = hash;
        Ok(record)
    }

    /// Makes every line written so far durable.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if let Some(reason) = &self.poisoned {
            return Err(StoreError::Poisoned { path: self.path.clone(), reason: reason.clone() });
        }
        self.durability.sync_to(self.len)
    }

    /// How much of the log is durable, for the threads that sync it.
    pub fn durability(&self) -> Arc<Durability> {
        self.durability.clone()
    }

    /// Bytes of complete lines written.
    pub fn written_len(&self) -> u64 {
        self.len
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Makes a directory's entries durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::Io { path: dir.to_owned(), source })
}
