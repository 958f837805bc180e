//! Following a mission's log as it grows, for readers that keep a projection in memory (the
//! language server): each byte is read and folded once.
//!
//! A [`LogFollower`] remembers how far it has read and the hash of the last line it folded.
//! [`LogFollower::poll`] costs one `stat` when nothing was appended; new complete lines are
//! verified against the chain like a full read and folded onto the projection. A file that
//! shrank, was replaced, or whose new lines do not follow the chain is read again from the
//! start, so the follower never shows a projection the log does not hold. A torn last line is
//! left for the next poll, when its writer has finished it (or cut it off).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::log::{GENESIS, parse_after, read_log};
use super::{Projection, StoreError};

/// How a poll changed the follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Followed {
    /// Nothing new was appended.
    Unchanged,
    /// New events were folded onto the projection.
    Grew,
    /// The log was read again from its start (it was replaced or rewritten).
    Reread,
}

/// A reader's position in one mission's log and the projection of what it has read.
#[derive(Debug)]
pub struct LogFollower {
    path: PathBuf,
    /// Bytes of complete lines folded so far.
    offset: u64,
    records: u64,
    last_hash: String,
    /// The file's identity (device, inode), so a log replaced by another is read afresh.
    identity: (u64, u64),
    projection: Projection,
}

fn identity(metadata: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (metadata.dev(), metadata.ino())
}

impl LogFollower {
    /// Reads and folds the whole log of mission `dir`, verified as [`super::load_projection`]
    /// does.
    pub fn open(dir: &Path) -> Result<LogFollower, StoreError> {
        let path = dir.join("events.jsonl");
        let mut follower = LogFollower {
            path,
            offset: 0,
            records: 0,
            last_hash: GENESIS.to_owned(),
            identity: (0, 0),
            projection: Projection::default(),
        };
        follower.reread()?;
        Ok(follower)
    }

    pub fn projection(&self) -> &Projection {
        &self.projection
    }

    /// Folds whatever was appended since the last poll.
    pub fn poll(&mut self) -> Result<Followed, StoreError> {
        let io = |source| StoreError::Io { path: self.path.clone(), source };
        let metadata = std::fs::metadata(&self.path).map_err(io)?;
        if identity(&metadata) != self.identity || metadata.len() < self.offset {
            self.reread()?;
            return Ok(Followed::Reread);
        }
        if metadata.len() == self.offset {
            return Ok(Followed::Unchanged);
        }
        let mut file = std::fs::File::open(&self.path).map_err(io)?;
        file.seek(SeekFrom::Start(self.offset)).map_err(io)?;
        let mut bytes = Vec::with_capacity((metadata.len() - self.offset) as usize);
        file.take(metadata.len() - self.offset).read_to_end(&mut bytes).map_err(io)?;
        match parse_after(&self.path, &bytes, self.records, &self.last_hash) {
            Ok(contents) if contents.records.is_empty() => Ok(Followed::Unchanged),
            Ok(contents) => {
                for record in &contents.records {
                    self.projection.apply(record);
                }
                self.records += contents.records.len() as u64;
                self.offset += contents.valid_len;
                self.last_hash = contents.last_hash;
                Ok(Followed::Grew)
            }
            // What follows does not continue what was read: the file was rewritten in place.
            // A full read decides whether it is a different valid log or a corrupt one.
            Err(_) => {
                self.reread()?;
                Ok(Followed::Reread)
            }
        }
    }

    fn reread(&mut self) -> Result<(), StoreError> {
        let metadata =
            std::fs::metadata(&self.path).map_err(|source| StoreError::Io { path: self.path.clone(), source })?;
        let contents = read_log(&self.path)?;
        let projection = Projection::from_records(&contents.records);
        if projection.mission.is_none() {
            return Err(StoreError::Empty { path: self.path.clone() });
        }
        self.projection = projection;
        self.records = contents.records.len() as u64;
        self.offset = contents.valid_len;
        self.last_hash = contents.last_hash;
        self.identity = identity(&metadata);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mission::{MissionState, Source, SourceKind};
    use crate::store::{Event, MissionStore};

    fn created(id: &str) -> Event {
        Event::MissionCreated {
            id: id.into(),
            title: "t".into(),
            source: Source { kind: SourceKind::Text, item_id: None, text: "t".into() },
            branch: format!("missions/{id}"),
            base_commit: "0".repeat(40),
            auto_accept: false,
            max_tokens: None,
            max_usd: None,
        }
    }

    fn note(text: &str) -> Event {
        Event::CourseCorrectionNoted { note: text.into() }
    }

    #[test]
    fn a_follower_folds_each_appended_event_once_and_matches_a_full_read() {
        let workspace = tempfile::tempdir().unwrap();
        let mut store = MissionStore::create(workspace.path(), created("m1")).unwrap();
        let dir = store.dir().to_owned();
        let mut follower = LogFollower::open(&dir).unwrap();
        assert_eq!(follower.poll().unwrap(), Followed::Unchanged);
        store.append(note("first")).unwrap();
        store.append(Event::StateChanged { state: MissionState::Paused, pause_reason: None, detail: None }).unwrap();
        assert_eq!(follower.poll().unwrap(), Followed::Grew);
        assert_eq!(follower.poll().unwrap(), Followed::Unchanged);
        let (full, _) = crate::store::load_projection(&dir).unwrap();
        assert_eq!(follower.projection(), &full);
        assert_eq!(follower.projection().events, 3);
    }

    #[test]
    fn a_torn_last_line_waits_for_its_writer() {
        let workspace = tempfile::tempdir().unwrap();
        let mut store = MissionStore::create(workspace.path(), created("m1")).unwrap();
        let dir = store.dir().to_owned();
        let mut follower = LogFollower::open(&dir).unwrap();
        store.append(note("whole")).unwrap();
        drop(store);
        let log = dir.join("events.jsonl");
        let whole = std::fs::read(&log).unwrap();
        // Half of the last line is on disk, as while its writer is still writing it.
        let last_start = whole[..whole.len() - 1].iter().rposition(|b| *b == b'\n').unwrap() + 1;
        let half = last_start + (whole.len() - last_start) / 2;
        std::fs::write(&log, &whole[..half]).unwrap();
        assert_eq!(follower.poll().unwrap(), Followed::Unchanged, "half a line is not an event yet");
        assert_eq!(follower.projection().events, 1);
        // The rest arrives by appending, as the writer finishes the line.
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        std::io::Write::write_all(&mut file, &whole[half..]).unwrap();
        assert_eq!(follower.poll().unwrap(), Followed::Grew);
        assert_eq!(follower.projection().events, 2);
        // A log cut back to fewer bytes than were read (a log restored from a backup, its
        // projection files with it) is read again.
        std::fs::remove_file(dir.join("mission.json")).unwrap();
        std::fs::write(&log, &whole[..last_start]).unwrap();
        assert_eq!(follower.poll().unwrap(), Followed::Reread);
        assert_eq!(follower.projection().events, 1);
    }

    #[test]
    fn a_log_replaced_by_another_is_read_afresh_and_a_corrupt_one_is_an_error() {
        let workspace = tempfile::tempdir().unwrap();
        let mut store = MissionStore::create(workspace.path(), created("m1")).unwrap();
        store.append(note("a")).unwrap();
        let dir = store.dir().to_owned();
        drop(store);
        let mut follower = LogFollower::open(&dir).unwrap();
        // Another mission's log of the same length moved into place.
        let other = tempfile::tempdir().unwrap();
        let mut replacement = MissionStore::create(other.path(), created("m1")).unwrap();
        replacement.append(note("b")).unwrap();
        replacement.append(note("c")).unwrap();
        let replacement_log = replacement.dir().join("events.jsonl");
        drop(replacement);
        std::fs::copy(&replacement_log, dir.join("events.new")).unwrap();
        std::fs::rename(dir.join("events.new"), dir.join("events.jsonl")).unwrap();
        assert_eq!(follower.poll().unwrap(), Followed::Reread);
        assert_eq!(follower.projection().events, 3);
        // An appended line that does not follow the chain: a full read, which says corrupt.
        let bytes = std::fs::read(dir.join("events.jsonl")).unwrap();
        let first_line_end = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
        let first_line = bytes[..first_line_end].to_vec();
        let mut file = std::fs::OpenOptions::new().append(true).open(dir.join("events.jsonl")).unwrap();
        std::io::Write::write_all(&mut file, &first_line).unwrap();
        assert!(matches!(follower.poll(), Err(StoreError::Corrupt { .. })));
    }
}
