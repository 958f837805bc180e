//! What the repository map learned of each file (its definitions and the identifiers it
//! uses), kept between runs so an unchanged file is never parsed twice.
//!
//! One cache file per workspace, `$XDG_CACHE_HOME/missions/repo-map/<digest of the root>.json`
//! (`~/.cache/...` without `XDG_CACHE_HOME`), holds an entry per source file keyed by its
//! workspace-relative path and checked against the file's size and modification time; when
//! those differ, the file is read and its content hash decides (a checkout that touched a file
//! without changing it costs a read, not a parse). The cache is only ever a shortcut: one that
//! is missing, unreadable, from another version or not writable is ignored, and the map is
//! the same with or without it. Within one process the loaded cache is also kept in memory, so
//! a mission building a map per run reads the file once. The cache of a workspace not mapped
//! for a month (moved, deleted, a temporary one) is removed by the first save of a process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// Part of every cache's format: bumped whenever what is cached changes shape. The caller adds
/// what the facts are computed with (its queries), and entries of any other format are never
/// used.
const FORMAT: &str = concat!("repo-map-1/", env!("CARGO_PKG_VERSION"));

/// How close to the moment an entry was made a file's modification time must be for the
/// time to prove nothing (a file rewritten at the same size within the file system's clock
/// tick keeps its time: git's "racily clean" case); such a file is hashed again.
const RACY_NANOS: u128 = 2_000_000_000;

/// How long the cache of a workspace nobody maps is kept.
const UNUSED_FOR: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// One definition in a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    /// 1-based line of the definition's first line.
    pub line: usize,
    /// How many definitions enclose this one.
    pub depth: usize,
    pub name: String,
    pub signature: String,
}

/// What one file holds, as the map uses it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Facts {
    pub definitions: Vec<Definition>,
    pub mentions: HashMap<String, u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    size: u64,
    /// Nanoseconds since the epoch.
    modified: u128,
    /// When the entry was made, in nanoseconds since the epoch.
    recorded: u128,
    /// SHA-256 of the content, hex.
    sha256: String,
    facts: Arc<Facts>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    format: String,
    files: HashMap<String, Entry>,
}

/// A file's entry, new or refreshed, for [`MapCache::record`].
#[derive(Debug)]
pub struct Learned {
    relative: String,
    entry: Entry,
    /// Whether the file was parsed (rather than found unchanged by its hash).
    parsed: bool,
}

/// The cache of one workspace, for one map.
#[derive(Debug)]
pub struct MapCache {
    path: Option<PathBuf>,
    stored: Stored,
    /// Files parsed, and files found unchanged by their hash, since the cache was opened.
    parsed: usize,
    rehashed: usize,
}

/// Caches loaded in this process, by cache file.
static LOADED: Mutex<Option<HashMap<PathBuf, Stored>>> = Mutex::new(None);

/// The user's cache directory for Missions, if the environment names one.
pub fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|home| PathBuf::from(home).join(".cache"))
        })?;
    Some(base.join("missions"))
}

fn modified_nanos(metadata: &std::fs::Metadata) -> u128 {
    metadata.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos())
}

impl MapCache {
    /// The cache of the workspace at `root` under `dir` (no cache at all with `None`), for facts
    /// computed as `computed_with` says (say, a digest of the queries).
    pub fn open(dir: Option<&Path>, root: &Path, computed_with: &str) -> MapCache {
        let format = format!("{FORMAT}/{computed_with}");
        let Some(dir) = dir else { return MapCache { path: None, stored: Stored::default(), parsed: 0, rehashed: 0 } };
        let root = root.canonicalize().unwrap_or_else(|_| root.to_owned());
        let name = missions_core::sha256_hex(root.to_string_lossy().as_bytes());
        let path = dir.join("repo-map").join(format!("{}.json", &name[..32]));
        let in_memory = LOADED.lock().ok().and_then(|mut loaded| loaded.get_or_insert_with(HashMap::new).remove(&path));
        let stored = in_memory
            .or_else(|| {
                let bytes = std::fs::read(&path).ok()?;
                let stored = serde_json::from_slice::<Stored>(&bytes).ok()?;
                // A cache that is read is in use, whether or not it changes ([`prune`]).
                let _ = set_modified(&path, std::time::SystemTime::now());
                Some(stored)
            })
            .filter(|stored| stored.format == format)
            .unwrap_or_else(|| Stored { format, files: HashMap::new() });
        MapCache { path: Some(path), stored, parsed: 0, rehashed: 0 }
    }

    /// The facts of the file at `absolute` (`relative` in the workspace), from the cache when
    /// the file is unchanged, else computed by `study` from its text, with the entry to
    /// [`MapCache::record`] then. `None` when the file cannot be read as text. Takes `&self`,
    /// so the files of one map are studied on several threads at once.
    pub fn facts(
        &self,
        absolute: &Path,
        relative: &str,
        metadata: &std::fs::Metadata,
        study: impl FnOnce(&str) -> Facts,
    ) -> Option<(Arc<Facts>, Option<Learned>)> {
        let modified = modified_nanos(metadata);
        let known = self.stored.files.get(relative);
        if let Some(entry) = known
            && entry.size == metadata.len()
            && entry.modified == modified
            && modified != 0
            && modified + RACY_NANOS < entry.recorded
        {
            return Some((entry.facts.clone(), None));
        }
        let bytes = std::fs::read(absolute).ok()?;
        let sha256 = missions_core::sha256_hex(&bytes);
        let (facts, parsed) = match known {
            Some(entry) if entry.sha256 == sha256 => (entry.facts.clone(), false),
            _ => (Arc::new(study(&String::from_utf8(bytes).ok()?)), true),
        };
        let recorded = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let entry = Entry { size: metadata.len(), modified, recorded, sha256, facts: facts.clone() };
        Some((facts, Some(Learned { relative: relative.to_owned(), entry, parsed })))
    }

    /// Remembers what [`MapCache::facts`] learned.
    pub fn record(&mut self, learned: Learned) {
        if learned.parsed {
            self.parsed += 1;
        } else {
            self.rehashed += 1;
        }
        self.stored.files.insert(learned.relative, learned.entry);
    }

    /// Forgets the files not in `present` (deleted or no longer mapped), keeps the cache in
    /// memory for the next map of this process, and writes it back (whole, renamed into
    /// place; a failure only costs the next process a parse) when that saves the next process
    /// more than it costs now: writing costs in proportion to every file, so a map that
    /// parsed one file of hundreds (a mission's worker wrote it) leaves that parse to the next
    /// process rather than rewriting the whole cache after every feature.
    /// `whole` says the map covered the whole workspace (a map of one folder forgets nothing
    /// outside it).
    pub fn save(mut self, present: &std::collections::HashSet<String>, whole: bool) {
        let Some(path) = self.path.take() else { return };
        if let Some(dir) = path.parent() {
            prune_unused(dir);
        }
        if whole {
            self.stored.files.retain(|relative, _| present.contains(relative));
        }
        let work = self.parsed * 8 + self.rehashed;
        if work > 0
            && (work >= self.stored.files.len() || self.parsed >= 64)
            && let Err(error) = write(&path, &self.stored)
        {
            tracing::debug!("the repository map's cache was not written to {}: {error}", path.display());
        }
        if let Ok(mut loaded) = LOADED.lock() {
            loaded.get_or_insert_with(HashMap::new).insert(path, std::mem::take(&mut self.stored));
        }
    }
}

/// Removes the cache files in `dir` not written nor read for [`UNUSED_FOR`] (by modification
/// time: a cache in use is rewritten as its workspace changes, and touched when read) and
/// temporary files a killed writer left for a day. Once per process, at its first save.
fn prune_unused(dir: &Path) {
    static PRUNED: std::sync::Once = std::sync::Once::new();
    PRUNED.call_once(|| prune(dir, std::time::SystemTime::now()));
}

/// Sets the modification time of the file at `path`, which [`prune`] reads as its last use.
fn set_modified(path: &Path, time: std::time::SystemTime) -> std::io::Result<()> {
    std::fs::File::options().write(true).open(path)?.set_modified(time)
}

fn prune(dir: &Path, now: std::time::SystemTime) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let kept_for = if name.ends_with(".json") && !name.starts_with('.') {
            UNUSED_FOR
        } else if name.starts_with(".tmp") {
            std::time::Duration::from_secs(24 * 3600)
        } else {
            continue;
        };
        let idle = entry
            .metadata()
            .ok()
            .filter(std::fs::Metadata::is_file)
            .and_then(|m| m.modified().ok())
            .and_then(|modified| now.duration_since(modified).ok());
        if idle.is_some_and(|idle| idle > kept_for) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn write(path: &Path, stored: &Stored) -> std::io::Result<()> {
    use std::io::Write as _;
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let mut temp = tempfile::NamedTempFile::new_in(parent)?;
    serde_json::to_writer(std::io::BufWriter::new(temp.as_file_mut()), stored)?;
    temp.as_file_mut().flush()?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Drops what this process keeps in memory, so the next map reads the cache file (for tests
/// and benchmarks that measure a fresh process).
pub fn forget_loaded() {
    if let Ok(mut loaded) = LOADED.lock() {
        *loaded = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Studies `file` through a cache under `dir` (read from disk, not memory), counting the
    /// parses in `parses`, and saves the cache.
    fn look(dir: &Path, root: &Path, file: &str, parses: &Cell<usize>) -> Arc<Facts> {
        forget_loaded();
        let mut cache = MapCache::open(Some(dir), root, "test");
        let absolute = root.join(file);
        let metadata = std::fs::metadata(&absolute).unwrap();
        let (facts, learned) = cache
            .facts(&absolute, file, &metadata, |source| {
                parses.set(parses.get() + 1);
                Facts { definitions: Vec::new(), mentions: HashMap::from([(source.trim().to_owned(), 1)]) }
            })
            .unwrap();
        if let Some(learned) = learned {
            cache.record(learned);
        }
        cache.save(&std::collections::HashSet::from([file.to_owned()]), true);
        facts
    }

    #[test]
    fn caches_of_workspaces_nobody_maps_are_removed_and_no_others() {
        let dir = tempfile::tempdir().unwrap();
        let now = std::time::SystemTime::now();
        let days_ago = |days: u64| now - std::time::Duration::from_secs(days * 24 * 3600);
        let file = |name: &str, age_days: u64| {
            let path = dir.path().join(name);
            std::fs::write(&path, "{}").unwrap();
            set_modified(&path, days_ago(age_days)).unwrap();
            path
        };
        let old_cache = file("0123.json", 40);
        let recent_cache = file("4567.json", 3);
        let old_temp = file(".tmpAbc123", 2);
        let recent_temp = file(".tmpXyz789", 0);
        let other = file("notes.txt", 400);
        prune(dir.path(), now);
        let kept: Vec<bool> =
            [&old_cache, &recent_cache, &old_temp, &recent_temp, &other].iter().map(|p| p.exists()).collect();
        assert_eq!(kept, vec![false, true, false, true, true]);
        // A cache that is read counts as used.
        let workspace = tempfile::tempdir().unwrap();
        std::fs::write(workspace.path().join("a.py"), "x").unwrap();
        look(dir.path(), workspace.path(), "a.py", &Cell::new(0));
        let cache_file = std::fs::read_dir(dir.path().join("repo-map")).unwrap().next().unwrap().unwrap().path();
        set_modified(&cache_file, days_ago(40)).unwrap();
        forget_loaded();
        MapCache::open(Some(dir.path()), workspace.path(), "test");
        prune(&dir.path().join("repo-map"), now + std::time::Duration::from_secs(60));
        assert!(cache_file.exists(), "a cache read a minute ago was removed");
    }

    /// A workspace holding `a.py` with `content`, and an empty cache directory.
    fn workspace_with_a_py(content: &str) -> (tempfile::TempDir, tempfile::TempDir) {
        let workspace = tempfile::tempdir().unwrap();
        std::fs::write(workspace.path().join("a.py"), content).unwrap();
        (workspace, tempfile::tempdir().unwrap())
    }

    #[test]
    fn a_file_is_parsed_once_until_its_content_changes() {
        let (workspace, cache_dir) = workspace_with_a_py("first");
        let root = workspace.path();
        let parses = Cell::new(0);
        assert!(look(cache_dir.path(), root, "a.py", &parses).mentions.contains_key("first"));
        assert!(look(cache_dir.path(), root, "a.py", &parses).mentions.contains_key("first"));
        assert_eq!(parses.get(), 1, "the second look is served by the cache file");
        // Touched but unchanged (a checkout): read and hashed, not parsed.
        set_modified(&root.join("a.py"), std::time::SystemTime::now() + std::time::Duration::from_secs(5)).unwrap();
        look(cache_dir.path(), root, "a.py", &parses);
        assert_eq!(parses.get(), 1);
        // Changed, even at the same size and time: the hash sees it once the time differs;
        // here the size and time both change.
        std::fs::write(root.join("a.py"), "second one").unwrap();
        assert!(look(cache_dir.path(), root, "a.py", &parses).mentions.contains_key("second one"));
        assert_eq!(parses.get(), 2);
        // The cache lives in the directory it was given, one file per workspace.
        let stored: Vec<_> = std::fs::read_dir(cache_dir.path().join("repo-map")).unwrap().collect();
        assert_eq!(stored.len(), 1);
    }

    #[test]
    fn a_file_rewritten_at_the_same_size_and_time_is_not_taken_for_unchanged() {
        let (workspace, cache_dir) = workspace_with_a_py("aaaa");
        let root = workspace.path();
        let time = std::fs::metadata(root.join("a.py")).unwrap().modified().unwrap();
        let parses = Cell::new(0);
        look(cache_dir.path(), root, "a.py", &parses);
        // Within the same clock tick: same size, same modification time, new content.
        std::fs::write(root.join("a.py"), "bbbb").unwrap();
        set_modified(&root.join("a.py"), time).unwrap();
        assert!(look(cache_dir.path(), root, "a.py", &parses).mentions.contains_key("bbbb"));
        assert_eq!(parses.get(), 2);
    }

    #[test]
    fn a_cache_that_is_damaged_or_from_another_version_is_ignored() {
        let (workspace, cache_dir) = workspace_with_a_py("first");
        let root = workspace.path();
        let parses = Cell::new(0);
        look(cache_dir.path(), root, "a.py", &parses);
        let stored = std::fs::read_dir(cache_dir.path().join("repo-map")).unwrap().next().unwrap().unwrap().path();
        let text = std::fs::read_to_string(&stored).unwrap();
        std::fs::write(&stored, text.replace(FORMAT, "repo-map-0/0.0.0")).unwrap();
        look(cache_dir.path(), root, "a.py", &parses);
        assert_eq!(parses.get(), 2, "another version's entries are not used");
        std::fs::write(&stored, "{ not json").unwrap();
        assert!(look(cache_dir.path(), root, "a.py", &parses).mentions.contains_key("first"));
        assert_eq!(parses.get(), 3);
        // Without a cache directory nothing is kept.
        forget_loaded();
        let cache = MapCache::open(None, root, "test");
        let metadata = std::fs::metadata(root.join("a.py")).unwrap();
        assert!(cache.facts(&root.join("a.py"), "a.py", &metadata, |_| Facts::default()).is_some());
        cache.save(&Default::default(), true);
    }
}
