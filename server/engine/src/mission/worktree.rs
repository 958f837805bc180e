//! The working tree is shared with the user: what the mission may reset, what it must leave
//! alone, and what it commits on the user's behalf.
//!
//! The rule (SPEC §1, §3, §8): the engine never destroys what it cannot prove is its own
//! unfinished work. Proof comes from the log: before a worker's file tool writes, and after
//! every command a run started, the content of each path the step changed is recorded
//! ([`Event::WorkRecorded`]). At a resume, a changed path whose content is one the mission
//! recorded is the mission's; any other change is the user's. The user's changes are refused
//! (exit 2, naming the files), or, when the mission was paused for a conflict with them and the
//! user resumed, committed as theirs. Before any reset the whole tree is saved under
//! `refs/missions/<id>/saved/<n>`, and commits a reset moves the branch off are kept under
//! `refs/missions/<id>/dropped/<n>`.
//!
//! Editors list the files with unsaved changes in `.missions/editors/<pid>.json`; every driver
//! refuses a worker's write to them ([`EditorBuffers`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use missions_core::store::{self, Event, Projection, StoreError, WorkFile};
use missions_tools::{WorkRecorder, WriteGuard};
use sha2::{Digest, Sha256};

use super::Step;
use super::rules;
use super::shared::Shared;
use super::{EngineError, Mission};

/// Cache directories that tools create as they run; they are never anyone's work.
const CACHE_DIRS: &[&str] =
    &["__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".tox", "node_modules", "target", ".cache"];

pub(super) fn is_cache_path(path: &str) -> bool {
    path.split('/').any(|part| CACHE_DIRS.contains(&part))
}

/// What a workspace path holds, as a digest: the SHA-256 of a file's content (streamed, so a
/// huge file costs no memory), of a symlink's target text (never followed), or a marker for
/// anything else; `None` when nothing is there.
pub(super) fn digest(workspace: &Path, relative: &str) -> Option<String> {
    let path = workspace.join(relative);
    let metadata = std::fs::symlink_metadata(&path).ok()?;
    if metadata.file_type().is_symlink() {
        let target = std::fs::read_link(&path).ok()?;
        return Some(format!("link:{}", missions_core::sha256_hex(target.as_os_str().as_encoded_bytes())));
    }
    if !metadata.is_file() {
        return Some("not-a-file".to_owned());
    }
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(&path).ok()?;
    std::io::copy(&mut file, &mut hasher).ok()?;
    let executable = {
        use std::os::unix::fs::PermissionsExt;
        metadata.permissions().mode() & 0o111 != 0
    };
    // A mode change is a change too.
    Some(format!("{}{}", hex::encode(hasher.finalize()), if executable { "+x" } else { "" }))
}

/// The changed paths of `dirty` that the unfinished step did not make: their content is none of
/// those the step recorded. Tool caches are nobody's work and never count.
pub(super) fn foreign_changes(
    dirty: &[String],
    recorded: &BTreeMap<String, BTreeSet<Option<String>>>,
    content_of: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    dirty
        .iter()
        .filter(|path| !is_cache_path(path))
        .filter(|path| recorded.get(path.as_str()).is_none_or(|contents| !contents.contains(&content_of(path))))
        .cloned()
        .collect()
}

/// Records what one run does to the tree, for [`foreign_changes`].
pub(super) struct WorkLog {
    pub(super) shared: Arc<Shared>,
    pub(super) workspace: PathBuf,
    /// The changed paths and their digests just before the command under way started.
    pub(super) before: std::sync::Mutex<Option<BTreeMap<String, Option<String>>>>,
}

impl WorkLog {
    /// The tree's changed paths (tool caches aside) with their digests.
    fn changed_now(&self) -> Option<BTreeMap<String, Option<String>>> {
        match self.shared.git.dirty_files() {
            Ok(dirty) => Some(
                dirty
                    .into_iter()
                    .filter(|path| !is_cache_path(path))
                    .map(|path| {
                        let digest = digest(&self.workspace, &path);
                        (path, digest)
                    })
                    .collect(),
            ),
            Err(error) => {
                tracing::warn!("cannot see what a command changes: {error}");
                None
            }
        }
    }
}

impl WorkRecorder for WorkLog {
    fn before_write(&self, relative_path: &str, content: &[u8]) -> Result<missions_tools::RecordedAhead, String> {
        let file = WorkFile { path: relative_path.to_owned(), sha256: Some(missions_core::sha256_hex(content)) };
        let ahead = self.shared.append_ahead(Event::WorkRecorded { files: vec![file] }).map_err(|e| e.to_string())?;
        Ok(Box::new(move || ahead.wait().map_err(|e| e.to_string())))
    }

    fn before_command(&self) {
        *missions_core::sync::lock(&self.before) = self.changed_now();
    }

    fn after_command(&self) {
        let Some(before) = missions_core::sync::lock(&self.before).take() else { return };
        let Some(after) = self.changed_now() else { return };
        // Only what changed while the command ran is the command's: a file the user saved
        // before it started stays the user's.
        let files: Vec<WorkFile> = after
            .into_iter()
            .filter(|(path, digest)| before.get(path) != Some(digest))
            .map(|(path, sha256)| WorkFile { path, sha256 })
            .collect();
        if files.is_empty() {
            return;
        }
        if let Err(error) = self.shared.append(Event::WorkRecorded { files }) {
            tracing::error!("cannot record what a command changed: {error}");
        }
    }
}

/// The editors' lists of files with unsaved changes, `.missions/editors/<pid>.json`, written by
/// each language server (SPEC §4, §8). A list whose process is gone is ignored.
pub struct EditorBuffers {
    dir: PathBuf,
}

/// One editor's list, as its language server writes it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct EditorFile {
    pub pid: u32,
    /// Workspace-relative paths (with `/`) that have unsaved changes in that editor.
    pub paths: Vec<String>,
}

/// Whether process `pid` is alive.
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    if pid <= 0 {
        return false;
    }
    // Signal 0 checks existence; EPERM means it exists but belongs to someone else.
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(errno) => errno == nix::errno::Errno::EPERM,
    }
}

impl EditorBuffers {
    pub fn new(workspace: &Path) -> EditorBuffers {
        EditorBuffers { dir: missions_core::layout::editors_dir(workspace) }
    }

    /// Every path some live editor holds unsaved, with the editor's pid.
    pub fn unsaved(&self) -> Vec<(u32, String)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut unsaved = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let Ok(text) = store::read_bounded(&path, EDITOR_FILE_LIMIT) else { continue };
            let Ok(file) = serde_json::from_slice::<EditorFile>(&text) else { continue };
            if process_alive(file.pid) {
                unsaved.extend(file.paths.into_iter().map(|p| (file.pid, p)));
            }
        }
        unsaved
    }
}

/// An editor's list is a list of paths; anything larger is not one.
const EDITOR_FILE_LIMIT: u64 = 4 * 1024 * 1024;

impl WriteGuard for EditorBuffers {
    fn check(&self, relative_path: &str) -> Result<(), String> {
        match self.unsaved().into_iter().find(|(_, path)| path == relative_path) {
            Some((pid, _)) => Err(format!(
                "{relative_path} has unsaved changes in an editor (process {pid}); it was not written. \
                 The mission pauses until the user saves or discards them"
            )),
            None => Ok(()),
        }
    }
}

/// Both guards: the driving process's own (a language server's open documents) and every
/// editor's list on disk.
pub(super) struct Guards(pub(super) Vec<Arc<dyn WriteGuard>>);

impl WriteGuard for Guards {
    fn check(&self, relative_path: &str) -> Result<(), String> {
        self.0.iter().try_for_each(|guard| guard.check(relative_path))
    }
}

impl Mission {
    /// Refuses to go on over changes that are not the mission's, unless the mission was paused
    /// for a conflict with them (then the step commits them as the user's).
    pub(super) fn check_tree(&self, projection: &Projection) -> Result<(), EngineError> {
        let mission = self.shared.mission()?;
        let git = &self.shared.git;
        if git.current_branch()? != mission.branch {
            let dirty = git.dirty_files()?;
            if !dirty.is_empty() {
                return Err(EngineError::DirtyTree { files: dirty });
            }
            return Ok(());
        }
        let foreign = self.shared.foreign_changes(projection)?;
        if !foreign.is_empty() && !projection.conflict_pause {
            return Err(EngineError::ForeignChanges { files: foreign });
        }
        Ok(())
    }

    /// Refuses a branch whose history the log does not explain: `HEAD` must be the last commit
    /// the log records, or one commit of the unfinished feature past it (a crash between its
    /// commit and its handoff). Commits of this mission that the log does not know mean the
    /// log lost events; commits of someone else are the user's, never the engine's to drop.
    pub(super) fn check_history(&self, projection: &Projection) -> Result<(), EngineError> {
        let Some(known) = &projection.head else { return Ok(()) };
        let git = &self.shared.git;
        let head = git.resolve(&format!("refs/heads/{}", self.shared.mission()?.branch))?;
        if &head == known {
            return Ok(());
        }
        if !git.is_ancestor(known, &head)? {
            return Err(EngineError::Refused(format!(
                "the mission branch was moved: {} is not a descendant of {}, the last commit the mission recorded. \
                 Put the branch back (`git reset --keep {}` keeps your changes), then resume",
                short(&head),
                short(known),
                short(known)
            )));
        }
        let commits = git.commits_since(known, &head)?;
        let id = self.shared.mission_id.as_str();
        let theirs: Vec<&crate::git::CommitInfo> =
            commits.iter().filter(|c| c.trailer("Mission-Id") != Some(id)).collect();
        if !theirs.is_empty() {
            return Err(EngineError::Refused(format!(
                "the mission branch has commits the mission did not make ({}); the mission never rewrites them. \
                 Move them to a branch of their own, then resume",
                theirs.iter().map(|c| format!("{} {}", short(&c.id), c.subject)).collect::<Vec<_>>().join("; ")
            )));
        }
        let in_progress: Vec<&str> = projection
            .plan
            .iter()
            .flat_map(|p| p.features())
            .filter(|f| f.status == missions_core::mission::WorkStatus::InProgress)
            .map(|f| f.id.as_str())
            .collect();
        let current = rules::current_milestone(projection).cloned().map(|m| m.id);
        let mut unexplained = Vec::new();
        for (index, commit) in commits.iter().enumerate() {
            let last = index + 1 == commits.len();
            // A crash fell between a commit the engine made and the event recording it: the
            // commit is the fact, so the event is recorded now.
            if let Some(files) = commit.subject.strip_prefix("user: ") {
                let files = files.split(", ").map(str::to_owned).collect();
                self.shared.append(Event::UserChangesCommitted { commit: commit.id.clone(), files })?;
            } else if last && commit.subject.starts_with("backlog: tick ") {
                self.shared.append(Event::BacklogItemTicked { commit: commit.id.clone() })?;
            } else if last
                && commit.trailer("Milestone-Id").is_some()
                && commit.trailer("Milestone-Id") == current.as_deref()
            {
                let milestone = current.clone().unwrap_or_default();
                self.shared.append(Event::MilestoneCommitted { milestone, commit: commit.id.clone() })?;
            } else if last && commit.trailer("Feature-Id").is_some_and(|f| in_progress.contains(&f)) {
                // The unfinished feature's own commit: its restart keeps it under a ref.
            } else {
                unexplained.push(commit);
            }
        }
        if !unexplained.is_empty() {
            return Err(EngineError::Store(StoreError::Corrupt {
                path: missions_core::layout::mission_file(&self.workspace, id, "events.jsonl"),
                line: projection.events as usize + 1,
                message: format!(
                    "the log has lost events: the mission branch holds {} commit(s) of this mission that the log does \
                     not record ({}). Nothing was reset",
                    unexplained.len(),
                    unexplained
                        .iter()
                        .map(|c| format!("{} {}", short(&c.id), c.subject))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            }));
        }
        Ok(())
    }

    /// Makes the tree the mission's again before a step starts over at `target`: commits the
    /// user's changes as theirs when the mission was paused for a conflict with them (refuses
    /// them otherwise), saves everything the tree holds, keeps any commits the branch is moved
    /// off, and resets. Returns the commit the step starts from.
    pub(super) fn take_back_tree(
        &self,
        projection: &Projection,
        target: &str,
        why: &str,
    ) -> Result<String, EngineError> {
        let git = &self.shared.git;
        let foreign = self.shared.foreign_changes(projection)?;
        if !foreign.is_empty() && !projection.conflict_pause {
            return Err(EngineError::ForeignChanges { files: foreign });
        }
        // Everything the tree holds is saved before anything moves.
        self.shared.save_tree(why)?;
        let head = git.head()?;
        if head != target {
            let kept = self.shared.next_ref("dropped")?;
            git.create_ref(&kept, &head)?;
            git.move_branch(target, &head)?;
            let step = Step::CommitKept { commit: head.clone(), at: kept.clone(), target: target.to_owned() };
            self.shared.progress(None, None, None, step);
        }
        let mut start = target.to_owned();
        if !foreign.is_empty() {
            // The user's changes become a commit of theirs, made beside the tree (nothing is
            // reset before they are committed), and the step starts from it.
            let subject = format!("user: {}", foreign.join(", "));
            let commit = git.commit_paths(&subject, &[("Mission-Id", &self.shared.mission_id)], &foreign)?;
            self.shared.append(Event::UserChangesCommitted { commit: commit.clone(), files: foreign.clone() })?;
            let step =
                Step::UserChangesCommitted { files: foreign.clone(), commit: commit.clone(), subject: subject.clone() };
            self.shared.progress(None, None, None, step);
            start = commit;
        }
        git.reset_hard(&start)?;
        Ok(start)
    }

    /// A recorder for one run's changes to the tree.
    pub(super) fn work_log(&self) -> Arc<dyn WorkRecorder> {
        Arc::new(WorkLog {
            shared: self.shared.clone(),
            workspace: self.workspace.clone(),
            before: std::sync::Mutex::new(None),
        })
    }

    /// Whether the mission may be worked on in the tree as it is (see [`Mission::check_tree`]),
    /// for front doors to ask before they record a command that drives on.
    pub fn ready_to_drive(&self) -> Result<(), EngineError> {
        if self.shared.mission()?.state.is_terminal() {
            return Ok(());
        }
        // The history first: it may record commits a crash left unrecorded, which the tree
        // check then knows about.
        self.check_history(&self.shared.projection())?;
        self.check_tree(&self.shared.projection())
    }
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(8)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(entries: &[(&str, &[Option<&str>])]) -> BTreeMap<String, BTreeSet<Option<String>>> {
        entries
            .iter()
            .map(|(path, contents)| (path.to_string(), contents.iter().map(|c| c.map(str::to_owned)).collect()))
            .collect()
    }

    fn check(
        dirty: &[&str],
        recorded: BTreeMap<String, BTreeSet<Option<String>>>,
        now: &[(&str, Option<&str>)],
        expected: &[&str],
    ) {
        let dirty: Vec<String> = dirty.iter().map(|s| s.to_string()).collect();
        let now: BTreeMap<&str, Option<&str>> = now.iter().cloned().collect();
        let foreign = foreign_changes(&dirty, &recorded, |path| now.get(path).cloned().flatten().map(str::to_owned));
        assert_eq!(foreign, expected);
    }

    #[test]
    fn a_path_is_the_missions_only_while_it_holds_content_the_mission_recorded() {
        // Written by the worker and untouched since.
        check(&["a.py"], recorded(&[("a.py", &[Some("h1")])]), &[("a.py", Some("h1"))], &[]);
        // Written by the worker twice; the crash fell between recording and writing the second.
        check(&["a.py"], recorded(&[("a.py", &[Some("h1"), Some("h2")])]), &[("a.py", Some("h1"))], &[]);
        // Edited by the user after the worker wrote it.
        check(&["a.py"], recorded(&[("a.py", &[Some("h1")])]), &[("a.py", Some("user"))], &["a.py"]);
        // Never touched by the mission: the user's.
        check(
            &["core.py", "notes.txt"],
            recorded(&[]),
            &[("core.py", Some("x")), ("notes.txt", Some("y"))],
            &["core.py", "notes.txt"],
        );
        // Deleted by a command the mission ran, and recorded so.
        check(&["old.py"], recorded(&[("old.py", &[None])]), &[("old.py", None)], &[]);
        // Tool caches are nobody's work.
        check(&["pkg/__pycache__/a.pyc"], recorded(&[]), &[], &[]);
    }
}
