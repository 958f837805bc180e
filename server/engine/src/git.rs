//! Git, by its command line: the mission branch, one commit per feature and per milestone,
//! changed line ranges for handoffs, resets for restarts and rollbacks.
//!
//! Every call disables hooks (`core.hooksPath=/dev/null`) and signing prompts: the engine runs
//! git outside any sandbox, and a repository's hooks are code the user did not ask Missions to
//! run. `.missions/` is kept out of commits through `.git/info/exclude`, never the user's
//! `.gitignore`. Missions never pushes.

use std::path::{Path, PathBuf};
use std::process::Command;

use missions_core::layout;
use missions_core::mission::FileChange;

/// git, resolved once to an absolute path before any agent command has run, so a program an
/// agent plants earlier in `PATH` is never what the engine runs as git.
fn git_program() -> &'static Path {
    static PROGRAM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PROGRAM.get_or_init(|| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join("git"))
            .find(|candidate| candidate.is_file())
            .unwrap_or_else(|| PathBuf::from("git"))
    })
}

/// Resolves git's path now (the engine calls this when it starts).
pub fn resolve_program() {
    let _ = git_program();
}

/// How many times a lock file's staleness is tried before it counts as possibly live.
const PROOF_TRIES: usize = 5;

static GIT_NANOS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static GIT_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many git commands this process has run and the time they took, for measuring the
/// engine's own overhead apart from git's.
pub fn git_stats() -> (u64, std::time::Duration) {
    (
        GIT_CALLS.load(std::sync::atomic::Ordering::Relaxed),
        std::time::Duration::from_nanos(GIT_NANOS.load(std::sync::atomic::Ordering::Relaxed)),
    )
}

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run git: {0}")]
    Spawn(String),
    #[error("`git {args}` failed: {stderr}")]
    Failed { args: String, stderr: String },
    #[error("the mission's log could not be made durable before a change to the repository: {0}")]
    Unrecorded(String),
}

/// What must be durable before the repository changes (the mission's log): a commit or a
/// moved branch that the log does not lead up to would be a change a resume cannot explain.
#[derive(Clone)]
pub struct Barrier(std::sync::Arc<dyn Fn() -> Result<(), String> + Send + Sync>);

impl Barrier {
    pub fn new(wait: impl Fn() -> Result<(), String> + Send + Sync + 'static) -> Barrier {
        Barrier(std::sync::Arc::new(wait))
    }
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Barrier")
    }
}

/// Whether git subcommand `args` (after any `-c` options) only reads the repository, or
/// writes objects that nothing refers to yet: everything else moves a ref, the index or the
/// tree, and waits for the [`Barrier`].
fn leaves_refs_alone(args: &[&str]) -> bool {
    let mut rest = args.iter();
    let subcommand = loop {
        match rest.next() {
            Some(&"-c") => {
                rest.next();
            }
            Some(arg) => break *arg,
            None => return true,
        }
    };
    match subcommand {
        "rev-parse" | "diff" | "status" | "ls-files" | "log" | "show" | "cat-file" | "commit-tree" | "merge-base"
        | "rev-list" | "for-each-ref" | "show-ref" => true,
        // `git config NAME` reads; with a value it writes.
        "config" => rest.len() == 1,
        _ => false,
    }
}

/// One commit of a range: its id, subject and trailers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub id: String,
    pub subject: String,
    pub trailers: Vec<(String, String)>,
}

impl CommitInfo {
    pub fn trailer(&self, key: &str) -> Option<&str> {
        self.trailers.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Git {
    root: PathBuf,
    /// `-c user.*` arguments for repositories without an identity, looked up once.
    identity: std::sync::Arc<std::sync::OnceLock<Vec<String>>>,
    /// The repository opened in-process for reading refs, once; `None` when gix cannot
    /// open it (the command line answers then).
    reader: std::sync::Arc<std::sync::OnceLock<Option<gix::ThreadSafeRepository>>>,
    /// Whole diffs between two commits, kept for the next question about the same pair.
    diffs: std::sync::Arc<std::sync::Mutex<DiffMemo>>,
    /// Waited for before any command that changes refs, the index or the tree.
    barrier: Option<Barrier>,
}

/// Diffs between two commits (which never change), oldest first, within a size bound.
#[derive(Debug, Default)]
struct DiffMemo {
    entries: std::collections::VecDeque<((String, String), std::sync::Arc<String>)>,
    bytes: usize,
}

/// How much diff text is kept in memory.
const DIFF_MEMO_BYTES: usize = 16 * 1024 * 1024;

/// Whether `name` is a full object id (and so names the same commit forever).
fn is_object_id(name: &str) -> bool {
    matches!(name.len(), 40 | 64) && name.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Git {
    pub fn new(root: &Path) -> Git {
        Git {
            root: root.to_owned(),
            identity: Default::default(),
            reader: Default::default(),
            diffs: Default::default(),
            barrier: None,
        }
    }

    /// This repository, with every change to its refs, index or tree made only once `barrier`
    /// returned.
    pub fn with_barrier(mut self, barrier: Barrier) -> Git {
        self.barrier = Some(barrier);
        self
    }

    /// The working tree this runs in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Points the checked-out branch at `to` (only if it is at `from`), leaving the index and
    /// the tree alone.
    pub fn move_branch(&self, to: &str, from: &str) -> Result<(), GitError> {
        self.run(&["update-ref", "HEAD", to, from]).map(drop)
    }

    fn command(&self) -> Command {
        let mut command = Command::new(git_program());
        command
            .arg("-C")
            .arg(&self.root)
            // Nothing a repository's configuration names runs on the engine's behalf: no
            // hooks, no file-system monitor, no signing program, no external diff. Nor does
            // git's housekeeping: a commit would start `git maintenance` (a process, and at
            // times a repack) after every feature; the user's own git does it in its time.
            .args([
                "-c",
                "core.hooksPath=/dev/null",
                "-c",
                "core.fsmonitor=false",
                "-c",
                "commit.gpgsign=false",
                "-c",
                "core.quotepath=false",
                "-c",
                "maintenance.auto=false",
                "-c",
                "gc.auto=0",
            ])
            .env("GIT_TERMINAL_PROMPT", "0")
            // A read (`status`) never takes the index's lock to refresh it on the side: the
            // user's own git, run meanwhile, would find the lock taken and fail, and each
            // such refresh rewrites the whole index.
            .env("GIT_OPTIONAL_LOCKS", "0");
        command
    }

    fn run(&self, args: &[&str]) -> Result<String, GitError> {
        if let Some(Barrier(wait)) = &self.barrier
            && !leaves_refs_alone(args)
        {
            wait().map_err(GitError::Unrecorded)?;
        }
        let started = std::time::Instant::now();
        let output = self.command().args(args).output().map_err(|e| GitError::Spawn(e.to_string()));
        GIT_NANOS.fetch_add(started.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        GIT_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let output = output?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(GitError::Failed {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }

    pub fn is_repository(&self) -> bool {
        self.run(&["rev-parse", "--is-inside-work-tree"]).is_ok_and(|out| out.trim() == "true")
    }

    /// The commit `HEAD` points at. The engine asks after every step, and a git process per
    /// question was a large part of its cost, so it is read in-process (gix reads `HEAD` and
    /// the ref afresh on every call); the command line answers when gix cannot (a repository
    /// format it does not read, an unborn branch).
    pub fn head(&self) -> Result<String, GitError> {
        if let Some(id) = self.read_head() {
            return Ok(id);
        }
        Ok(self.run(&["rev-parse", "HEAD"])?.trim().to_owned())
    }

    fn read_head(&self) -> Option<String> {
        // git's environment can point it at another repository than the one found from the
        // root; the command line, which follows it, answers then.
        if ["GIT_DIR", "GIT_WORK_TREE", "GIT_COMMON_DIR", "GIT_INDEX_FILE"]
            .iter()
            .any(|v| std::env::var_os(v).is_some())
        {
            return None;
        }
        let reader = self.reader.get_or_init(|| gix::discover(&self.root).ok().map(gix::Repository::into_sync));
        let repository = reader.as_ref()?.to_thread_local();
        let id = repository.head_id().ok()?.detach();
        Some(id.to_string())
    }

    /// The commit a ref or branch name points at.
    pub fn resolve(&self, name: &str) -> Result<String, GitError> {
        Ok(self.run(&["rev-parse", "--verify", "--quiet", &format!("{name}^{{commit}}")])?.trim().to_owned())
    }

    pub fn current_branch(&self) -> Result<String, GitError> {
        Ok(self.run(&["rev-parse", "--abbrev-ref", "HEAD"])?.trim().to_owned())
    }

    /// Files with changes that are not committed (staged, unstaged or untracked), outside
    /// `.missions/`.
    pub fn dirty_files(&self) -> Result<Vec<String>, GitError> {
        let out = self.run(&["status", "--porcelain=v1", "-z", "--untracked-files=all"])?;
        let mut files = Vec::new();
        let mut entries = out.split('\0').filter(|e| !e.is_empty());
        while let Some(entry) = entries.next() {
            let (status, path) = entry.split_at(entry.len().min(3));
            // A rename lists its source as the next entry; skip it.
            if status.starts_with('R') || status.starts_with('C') {
                entries.next();
            }
            if !layout::is_inside(path) {
                files.push(path.to_owned());
            }
        }
        Ok(files)
    }

    /// Keeps `.missions/` out of git without touching the user's `.gitignore`.
    pub fn exclude_missions_dir(&self) -> Result<(), GitError> {
        let info = self.run(&["rev-parse", "--git-path", "info/exclude"])?;
        let path = self.root.join(info.trim());
        let existing = std::fs::read_to_string(&path).unwrap_or_default();
        let missions = format!("/{}/", layout::DIR);
        let aside = format!("{}*", layout::ASIDE_PREFIX);
        let missing: Vec<&str> = [missions.as_str(), aside.as_str()]
            .into_iter()
            .filter(|pattern| !existing.lines().any(|line| line.trim() == *pattern || line.trim() == &pattern[1..]))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| GitError::Spawn(e.to_string()))?;
        }
        let separator = if existing.is_empty() || existing.ends_with('\n') { "" } else { "\n" };
        let added: String = missing.iter().map(|pattern| format!("{pattern}\n")).collect();
        std::fs::write(&path, format!("{existing}{separator}{added}")).map_err(|e| GitError::Spawn(e.to_string()))
    }

    pub fn create_branch(&self, name: &str, start: &str) -> Result<(), GitError> {
        self.run(&["checkout", "-q", "-b", name, start]).map(drop)
    }

    pub fn checkout(&self, branch: &str) -> Result<(), GitError> {
        self.run(&["checkout", "-q", branch]).map(drop)
    }

    fn identity_args(&self) -> Vec<String> {
        self.identity
            .get_or_init(|| {
                let configured = self.run(&["config", "user.email"]).is_ok_and(|v| !v.trim().is_empty());
                if configured {
                    Vec::new()
                } else {
                    ["-c", "user.name=Missions", "-c", "user.email=missions@localhost"]
                        .iter()
                        .map(|s| s.to_string())
                        .collect()
                }
            })
            .clone()
    }

    /// Commits everything in the working tree with `subject` and the trailers, and returns the
    /// new commit.
    pub fn commit(&self, subject: &str, trailers: &[(&str, &str)]) -> Result<String, GitError> {
        // `.missions/` is excluded through info/exclude, so it is never staged.
        self.run(&["add", "-A"])?;
        let trailer_block = trailer_block(trailers);
        let identity = self.identity_args();
        let mut args: Vec<&str> = identity.iter().map(String::as_str).collect();
        args.extend(["commit", "-q", "--allow-empty", "--no-verify", "-m", subject, "-m", trailer_block.trim_end()]);
        self.run(&args)?;
        self.head()
    }

    /// Makes an empty commit on the branch with `subject` and the trailers, whatever the tree
    /// and the index hold, and returns it. It is made from `HEAD`'s own tree, so nothing anyone
    /// staged can slip into it.
    pub fn commit_empty(&self, subject: &str, trailers: &[(&str, &str)]) -> Result<String, GitError> {
        let trailer_block = trailer_block(trailers);
        let head = self.head()?;
        let tree = format!("{head}^{{tree}}");
        let identity = self.identity_args();
        let mut args: Vec<&str> = identity.iter().map(String::as_str).collect();
        args.extend(["commit-tree", tree.as_str(), "-p", head.as_str(), "-m", subject, "-m", trailer_block.trim_end()]);
        let commit = self.run(&args)?.trim().to_owned();
        self.move_branch(&commit, &head)?;
        Ok(commit)
    }

    /// The line ranges each file has in `commit` that changed since `base`.
    pub fn changed_ranges(&self, base: &str, commit: &str) -> Result<Vec<FileChange>, GitError> {
        Ok(parse_ranges(&self.whole_diff(base, commit)?))
    }

    /// The whole diff from `base` to `commit`, a renamed file shown as a deletion and an
    /// addition (all of its lines are the feature's). A feature's diff is asked for when it
    /// is committed (its changed ranges) and again when it is reviewed, so the diff between
    /// two commit ids is kept in memory and git runs once.
    fn whole_diff(&self, base: &str, commit: &str) -> Result<std::sync::Arc<String>, GitError> {
        let key = (base.to_owned(), commit.to_owned());
        let memorable = is_object_id(base) && is_object_id(commit);
        if memorable {
            let memo = missions_core::sync::lock(&self.diffs);
            if let Some((_, diff)) = memo.entries.iter().find(|(k, _)| *k == key) {
                return Ok(diff.clone());
            }
        }
        let diff = std::sync::Arc::new(self.run(&[
            "diff",
            "--no-color",
            "--no-ext-diff",
            "--no-renames",
            "--src-prefix=a/",
            "--dst-prefix=b/",
            base,
            commit,
        ])?);
        if memorable && diff.len() <= DIFF_MEMO_BYTES {
            let mut memo = missions_core::sync::lock(&self.diffs);
            memo.bytes += diff.len();
            memo.entries.push_back((key, diff.clone()));
            while memo.bytes > DIFF_MEMO_BYTES {
                let Some((_, dropped)) = memo.entries.pop_front() else { break };
                memo.bytes -= dropped.len();
            }
        }
        Ok(diff)
    }

    /// The diff from `base` to `commit`, of `paths` only when there are any (literal paths,
    /// never patterns), cut to `max_bytes`.
    pub fn diff(&self, base: &str, commit: &str, paths: &[String], max_bytes: usize) -> Result<String, GitError> {
        let diff = if paths.is_empty() {
            self.whole_diff(base, commit)?.as_str().to_owned()
        } else {
            let literal: Vec<String> = paths.iter().map(|p| format!(":(literal){p}")).collect();
            let mut args = vec!["diff", "--no-color", "--no-ext-diff", "--no-renames", base, commit, "--"];
            args.extend(literal.iter().map(String::as_str));
            self.run(&args)?
        };
        if diff.len() <= max_bytes {
            return Ok(diff);
        }
        let mut cut = max_bytes;
        while !diff.is_char_boundary(cut) {
            cut -= 1;
        }
        Ok(format!(
            "{}\n[... diff cut: {} more bytes; read the files for the rest ...]\n",
            &diff[..cut],
            diff.len() - cut
        ))
    }

    /// Records the working tree's uncommitted changes (tracked and untracked) as a commit on
    /// top of `HEAD`, saved under `name`, without touching the index or the tree. Returns
    /// `None` when there is nothing to save.
    pub fn snapshot(&self, name: &str, message: &str) -> Result<Option<String>, GitError> {
        if self.dirty_files()?.is_empty() {
            return Ok(None);
        }
        let commit = self.commit_beside(None, &[message])?;
        self.update_ref(name, &commit)?;
        Ok(Some(commit))
    }

    /// A commit on top of `HEAD` holding the working tree's state of `paths` (every changed
    /// path when `None`), made through a temporary index so that neither the real index nor
    /// the tree is touched. Paths are literal, never patterns.
    fn commit_beside(&self, paths: Option<&[String]>, message: &[&str]) -> Result<String, GitError> {
        let index = tempfile::NamedTempFile::new().map_err(|e| GitError::Spawn(e.to_string()))?;
        let index_path = index.path().to_owned();
        let with_index = |args: &[&str]| -> Result<String, GitError> {
            let output = self
                .command()
                .env("GIT_INDEX_FILE", &index_path)
                .env("GIT_LITERAL_PATHSPECS", "1")
                .args(args)
                .output()
                .map_err(|e| GitError::Spawn(e.to_string()))?;
            if output.status.success() {
                Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
            } else {
                Err(GitError::Failed {
                    args: args.join(" "),
                    stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                })
            }
        };
        with_index(&["read-tree", "HEAD"])?;
        let mut add: Vec<&str> = vec!["add", "-A"];
        if let Some(paths) = paths {
            add.push("--");
            add.extend(paths.iter().map(String::as_str));
        }
        with_index(&add)?;
        let tree = with_index(&["write-tree"])?;
        let head = self.head()?;
        let identity = self.identity_args();
        let mut args: Vec<&str> = identity.iter().map(String::as_str).collect();
        args.extend(["commit-tree", tree.as_str(), "-p", head.as_str()]);
        for part in message {
            args.extend(["-m", part]);
        }
        Ok(self.run(&args)?.trim().to_owned())
    }

    /// Commits exactly `paths` (changed, added or deleted, mode changes and symlinks included)
    /// as they are in the working tree onto the checked-out branch, leaving the tree and every
    /// other change as they are, and returns the new commit.
    pub fn commit_paths(&self, subject: &str, trailers: &[(&str, &str)], paths: &[String]) -> Result<String, GitError> {
        let trailer_block = trailer_block(trailers);
        let head = self.head()?;
        let commit = self.commit_beside(Some(paths), &[subject, trailer_block.trim_end()])?;
        // Through HEAD, so the checked-out branch moves; only if nothing moved it meanwhile.
        self.run(&["update-ref", "HEAD", &commit, &head])?;
        // The index follows HEAD (the tree is untouched), so the committed paths do not look
        // changed afterwards.
        self.run(&["reset", "-q"])?;
        Ok(commit)
    }

    /// Puts the working tree back to `commit`, dropping every change and untracked file that
    /// is not ignored (`.missions/` is ignored, so it stays). Callers save what the tree holds
    /// first ([`Git::snapshot`]) unless it is known to be theirs.
    /// The ignored files in the tree (build outputs, caches), workspace-relative; `reset_hard`
    /// leaves them.
    pub fn ignored_files(&self) -> Result<std::collections::BTreeSet<String>, GitError> {
        let out = self.run(&["ls-files", "--others", "--ignored", "--exclude-standard", "-z"])?;
        Ok(out.split('\0').filter(|p| !p.is_empty() && !layout::is_inside(p)).map(str::to_owned).collect())
    }

    pub fn reset_hard(&self, commit: &str) -> Result<(), GitError> {
        self.run(&["reset", "-q", "--hard", commit])?;
        self.run(&["clean", "-q", "-fd"]).map(drop)
    }

    pub fn update_ref(&self, name: &str, commit: &str) -> Result<(), GitError> {
        self.run(&["update-ref", name, commit]).map(drop)
    }

    /// Creates ref `name` at `commit` unless it exists already (then it is left alone).
    pub fn create_ref(&self, name: &str, commit: &str) -> Result<(), GitError> {
        if self.ref_exists(name) {
            return Ok(());
        }
        self.run(&["update-ref", name, commit, ""]).map(drop)
    }

    /// Whether `name` exists as a ref.
    pub fn ref_exists(&self, name: &str) -> bool {
        self.run(&["rev-parse", "--verify", "--quiet", name]).is_ok()
    }

    /// Whether `ancestor` is `descendant` or one of its ancestors.
    pub fn is_ancestor(&self, ancestor: &str, descendant: &str) -> Result<bool, GitError> {
        match self.command().args(["merge-base", "--is-ancestor", ancestor, descendant]).output() {
            Ok(output) => match output.status.code() {
                Some(0) => Ok(true),
                Some(1) => Ok(false),
                _ => Err(GitError::Failed {
                    args: format!("merge-base --is-ancestor {ancestor} {descendant}"),
                    stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                }),
            },
            Err(error) => Err(GitError::Spawn(error.to_string())),
        }
    }

    /// The commits after `base` up to `head`, oldest first, with their subjects and trailers.
    pub fn commits_since(&self, base: &str, head: &str) -> Result<Vec<CommitInfo>, GitError> {
        let range = format!("{base}..{head}");
        let out = self.run(&["log", "--reverse", "--format=%H%x1f%s%x1f%(trailers:only,unfold)%x1e", &range])?;
        Ok(out
            .split('\x1e')
            .filter_map(|entry| {
                let mut parts = entry.trim_start_matches('\n').splitn(3, '\x1f');
                let id = parts.next()?.trim().to_owned();
                if id.is_empty() {
                    return None;
                }
                let subject = parts.next().unwrap_or_default().to_owned();
                let trailers = parts
                    .next()
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|line| line.split_once(": "))
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .collect();
                Some(CommitInfo { id, subject, trailers })
            })
            .collect())
    }

    /// The refs under `prefix` (e.g. `refs/missions/<id>/saved/`).
    pub fn refs_under(&self, prefix: &str) -> Result<Vec<String>, GitError> {
        Ok(self.run(&["for-each-ref", "--format=%(refname)", prefix])?.lines().map(str::to_owned).collect())
    }

    /// The repository's git directory.
    pub fn git_dir(&self) -> Result<PathBuf, GitError> {
        let dir = PathBuf::from(self.run(&["rev-parse", "--git-dir"])?.trim());
        Ok(if dir.is_absolute() { dir } else { self.root.join(dir) })
    }

    /// The lock files git leaves behind when it dies mid-write (`index.lock`, `HEAD.lock`,
    /// a branch's ref lock), each with whether it is provably stale: no process has it open
    /// and no git process works in this repository. A lock that is not provably stale may
    /// belong to the user's own git and is never touched.
    pub fn lock_files(&self) -> Result<Vec<(PathBuf, bool)>, GitError> {
        let git_dir = self.git_dir()?;
        let mut candidates = vec![git_dir.join("index.lock"), git_dir.join("HEAD.lock")];
        let heads = git_dir.join("refs").join("heads");
        let walker = ignore::WalkBuilder::new(&heads).standard_filters(false).build();
        candidates.extend(
            walker
                .filter_map(Result::ok)
                .map(|entry| entry.into_path())
                .filter(|path| path.extension().is_some_and(|e| e == "lock")),
        );
        candidates.retain(|path| path.is_file());
        Ok(candidates
            .into_iter()
            .map(|path| {
                // One look at `/proc` proves nothing when a process starts or exits while it is
                // read (the proof is conservative), which on a busy machine is common; each look
                // is a whole proof, so a few are as safe as one.
                let stale = (0..PROOF_TRIES).any(|_| crate::procs::nobody_holds(&path, &self.root, &git_dir));
                (path, stale)
            })
            .collect())
    }

    /// Removes the provably stale locks (see [`Git::lock_files`]) and returns them; a lock
    /// that may be live is left in place and returned in the second list.
    pub fn remove_stale_locks(&self) -> Result<(Vec<PathBuf>, Vec<PathBuf>), GitError> {
        let mut removed = Vec::new();
        let mut live = Vec::new();
        for (path, stale) in self.lock_files()? {
            if stale && std::fs::remove_file(&path).is_ok() {
                removed.push(path);
            } else {
                live.push(path);
            }
        }
        Ok((removed, live))
    }

    /// The trailers of `commit`, as `Key: value` lines.
    pub fn trailers(&self, commit: &str) -> Result<String, GitError> {
        self.run(&["log", "-1", "--format=%(trailers:only,unfold)", commit])
    }

    pub fn subject(&self, commit: &str) -> Result<String, GitError> {
        Ok(self.run(&["log", "-1", "--format=%s", commit])?.trim().to_owned())
    }
}

/// Git trailers, one `Key: value` line each.
fn trailer_block(trailers: &[(&str, &str)]) -> String {
    trailers.iter().map(|(k, v)| format!("{k}: {v}\n")).collect()
}

/// The path of a `+++ ` header as git writes it: C-quoted when it holds a quote, a backslash
/// or a control character, and followed by a tab when it holds a space. `None` for
/// `/dev/null`.
fn diff_path(header: &str) -> Option<String> {
    let header = header.strip_suffix('\t').unwrap_or(header);
    if header == "/dev/null" {
        return None;
    }
    let Some(quoted) = header.strip_prefix('"').and_then(|h| h.strip_suffix('"')) else {
        return Some(header.to_owned());
    };
    let mut bytes = Vec::new();
    let mut chars = quoted.bytes().peekable();
    while let Some(byte) = chars.next() {
        if byte != b'\\' {
            bytes.push(byte);
            continue;
        }
        match chars.next()? {
            b'n' => bytes.push(b'\n'),
            b't' => bytes.push(b'\t'),
            b'r' => bytes.push(b'\r'),
            b'a' => bytes.push(7),
            b'b' => bytes.push(8),
            b'f' => bytes.push(12),
            b'v' => bytes.push(11),
            digit @ b'0'..=b'7' => {
                let mut value = u32::from(digit - b'0');
                for _ in 0..2 {
                    let next = chars.next_if(|b| (b'0'..=b'7').contains(b))?;
                    value = value * 8 + u32::from(next - b'0');
                }
                bytes.push(u8::try_from(value).ok()?);
            }
            other => bytes.push(other),
        }
    }
    String::from_utf8(bytes).ok()
}

/// Parses a unified diff (with any amount of context) into the changed line ranges of the
/// new side, by file.
pub fn parse_ranges(diff: &str) -> Vec<FileChange> {
    let mut changes: Vec<FileChange> = Vec::new();
    let mut current: Option<usize> = None;
    // Inside a hunk: the next line's number on the new side, and how many lines of each side
    // the hunk still holds (a body line is never taken for a header, whatever it starts with).
    let mut new_line = 0u32;
    let (mut old_left, mut new_left) = (0u32, 0u32);
    for line in diff.lines() {
        if old_left > 0 || new_left > 0 {
            match line.as_bytes().first() {
                Some(b'+') => {
                    if let Some(index) = current {
                        let ranges = &mut changes[index].ranges;
                        match ranges.last_mut() {
                            Some(last) if last[1] + 1 == new_line => last[1] = new_line,
                            _ => ranges.push([new_line, new_line]),
                        }
                    }
                    new_line += 1;
                    new_left = new_left.saturating_sub(1);
                }
                Some(b'-') => old_left = old_left.saturating_sub(1),
                Some(b'\\') => {}
                _ => {
                    new_line += 1;
                    new_left = new_left.saturating_sub(1);
                    old_left = old_left.saturating_sub(1);
                }
            }
            continue;
        }
        if line.starts_with("diff --git ") {
            current = None;
        } else if let Some(path) = line.strip_prefix("+++ ") {
            current = diff_path(path).and_then(|path| path.strip_prefix("b/").map(str::to_owned)).map(|path| {
                changes.push(FileChange { path, ranges: Vec::new() });
                changes.len() - 1
            });
        } else if let Some(hunk) = line.strip_prefix("@@ ") {
            // `@@ -a,b +c,d @@`: a count left out is 1.
            let side = |sign: char| {
                let part = hunk.split(' ').find(|part| part.starts_with(sign))?;
                let mut numbers = part[1..].split(',');
                let start: u32 = numbers.next()?.parse().ok()?;
                let count: u32 = numbers.next().map_or(Some(1), |n| n.parse().ok())?;
                Some((start, count))
            };
            if let (Some((_, old_count)), Some((start, new_count))) = (side('-'), side('+')) {
                (old_left, new_left, new_line) = (old_count, new_count, start);
            }
        }
    }
    changes.retain(|c| !c.ranges.is_empty());
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repository() -> (tempfile::TempDir, Git) {
        let dir = tempfile::tempdir().unwrap();
        let git = Git::new(dir.path());
        git.run(&["init", "-q", "-b", "main"]).unwrap();
        std::fs::write(dir.path().join("a.txt"), "one\ntwo\nthree\n").unwrap();
        git.commit("initial", &[]).unwrap();
        (dir, git)
    }

    #[test]
    fn a_change_to_the_repository_waits_for_the_barrier_and_a_read_does_not() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let (dir, git) = repository();
        let waited = Arc::new(AtomicUsize::new(0));
        let refuse = Arc::new(AtomicBool::new(false));
        let git = git.with_barrier(Barrier::new({
            let (waited, refuse) = (waited.clone(), refuse.clone());
            move || {
                waited.fetch_add(1, Ordering::SeqCst);
                if refuse.load(Ordering::SeqCst) { Err("the disk is full".into()) } else { Ok(()) }
            }
        }));
        let head = git.head().unwrap();
        git.dirty_files().unwrap();
        git.changed_ranges(&head, &head).unwrap();
        let _ = git.run(&["config", "user.email"]);
        assert_eq!(waited.load(Ordering::SeqCst), 0, "reads never wait");
        git.run(&["config", "missions.test", "1"]).unwrap();
        assert_eq!(waited.load(Ordering::SeqCst), 1, "a setting written waits");
        std::fs::write(dir.path().join("b.txt"), "b\n").unwrap();
        git.commit("F1", &[]).unwrap();
        assert!(waited.load(Ordering::SeqCst) >= 1, "a commit waits");
        // A log that cannot be made durable stops the change: nothing moves.
        refuse.store(true, Ordering::SeqCst);
        let before = git.head().unwrap();
        std::fs::write(dir.path().join("c.txt"), "c\n").unwrap();
        assert!(matches!(git.commit("F2", &[]), Err(GitError::Unrecorded(_))));
        assert!(matches!(git.reset_hard(&head), Err(GitError::Unrecorded(_))));
        assert_eq!(git.head().unwrap(), before);
        assert!(dir.path().join("c.txt").exists());
    }

    #[test]
    fn a_read_never_rewrites_the_index_the_users_git_may_be_taking() {
        use std::os::unix::fs::MetadataExt as _;
        let (dir, git) = repository();
        // The file's time moves and its content does not: a status that refreshed the index
        // on the side would write it again (a new file, under the lock the user's git takes).
        let file = std::fs::File::options().write(true).open(dir.path().join("a.txt")).unwrap();
        file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5)).unwrap();
        let index = dir.path().join(".git/index");
        let before = std::fs::metadata(&index).unwrap();
        assert!(git.dirty_files().unwrap().is_empty());
        let after = std::fs::metadata(&index).unwrap();
        assert_eq!(
            (after.ino(), after.mtime_nsec(), after.mtime()),
            (before.ino(), before.mtime_nsec(), before.mtime())
        );
    }

    #[test]
    fn ranges_are_read_from_hunk_bodies_whatever_the_lines_hold() {
        let diff = "diff --git a/a.rs b/a.rs\n--- a/a.rs\n+++ b/a.rs\n@@ -1,4 +1,6 @@ fn main() {\n one\n-two\n++++ not a header\n+@@ nor this\n three\n+four\n four-old\n\\ No newline at end of file\n@@ -20,2 +22,0 @@\n-gone\n-gone\ndiff --git a/old.rs b/old.rs\ndeleted file mode 100644\n--- a/old.rs\n+++ /dev/null\n@@ -1 +0,0 @@\n-x\ndiff --git a/new.rs b/new.rs\nnew file mode 100644\n--- /dev/null\n+++ b/new.rs\n@@ -0,0 +1,2 @@\n+a\n+b\n";
        assert_eq!(
            parse_ranges(diff),
            vec![
                FileChange { path: "a.rs".into(), ranges: vec![[2, 3], [5, 5]] },
                FileChange { path: "new.rs".into(), ranges: vec![[1, 2]] }
            ]
        );
    }

    #[test]
    fn ranges_name_files_whatever_their_names_hold_and_whatever_the_users_diff_settings() {
        let (dir, git) = repository();
        // A user's setting that drops the a/ b/ prefixes must not drop the ranges.
        git.run(&["config", "diff.noprefix", "true"]).unwrap();
        let base = git.head().unwrap();
        for name in ["my file.rs", "q\"t.rs", "tab\there.rs", "naïve.rs"] {
            std::fs::write(dir.path().join(name), "one\n").unwrap();
        }
        let commit = git.commit("F1", &[]).unwrap();
        let mut paths: Vec<String> = git.changed_ranges(&base, &commit).unwrap().into_iter().map(|c| c.path).collect();
        paths.sort();
        assert_eq!(paths, vec!["my file.rs", "naïve.rs", "q\"t.rs", "tab\there.rs"]);
    }

    #[test]
    fn a_features_diff_is_read_once_for_its_ranges_and_its_review() {
        let (dir, git) = repository();
        let base = git.head().unwrap();
        std::fs::write(dir.path().join("a.txt"), "one\nTWO\nthree\n").unwrap();
        let commit = git.commit("F1", &[]).unwrap();
        let ranges = git.changed_ranges(&base, &commit).unwrap();
        assert_eq!(ranges, vec![FileChange { path: "a.txt".into(), ranges: vec![[2, 2]] }]);
        // Other tests run git meanwhile, so the count is of many reads: fewer processes than
        // reads means the reads ran none.
        let (before, _) = git_stats();
        for _ in 0..100 {
            let diff = git.diff(&base, &commit, &[], 60_000).unwrap();
            assert!(diff.contains("+TWO"), "{diff}");
        }
        assert!(git_stats().0 - before < 100, "the diff was read again");
        // Names that can move (a branch) are never remembered.
        assert!(!is_object_id("main") && is_object_id(&commit));
    }

    #[test]
    fn head_is_read_in_process_and_always_agrees_with_git() {
        let dir = tempfile::tempdir().unwrap();
        let git = Git::new(dir.path());
        git.run(&["init", "-q", "-b", "main"]).unwrap();
        assert!(git.head().is_err(), "an unborn branch has no head");
        std::fs::write(dir.path().join("a.txt"), "one\n").unwrap();
        git.commit("initial", &[]).unwrap();
        let agrees = |why: &str| {
            assert_eq!(git.head().unwrap(), git.run(&["rev-parse", "HEAD"]).unwrap().trim(), "{why}");
            // Other tests run git meanwhile, so the count is of many reads: fewer processes
            // than reads means the reads ran none.
            let (before, _) = git_stats();
            for _ in 0..200 {
                git.head().unwrap();
            }
            let (after, _) = git_stats();
            assert!(after - before < 200, "{why}: head() ran git");
        };
        agrees("after a commit");
        std::fs::write(dir.path().join("a.txt"), "two\n").unwrap();
        let second = git.commit("second", &[]).unwrap();
        agrees("after another commit");
        git.run(&["checkout", "-q", "-b", "side"]).unwrap();
        std::fs::write(dir.path().join("a.txt"), "three\n").unwrap();
        git.commit("on side", &[]).unwrap();
        agrees("on another branch");
        git.run(&["pack-refs", "--all"]).unwrap();
        agrees("with packed refs");
        git.run(&["checkout", "-q", &second]).unwrap();
        agrees("detached");
        assert_eq!(git.head().unwrap(), second);
        git.reset_hard("main").unwrap();
        agrees("after a reset");
    }

    #[test]
    fn commits_carry_trailers_and_ranges_follow_the_new_side() {
        let (dir, git) = repository();
        let base = git.head().unwrap();
        std::fs::write(dir.path().join("a.txt"), "one\nTWO\nthree\nfour\nfive\n").unwrap();
        std::fs::write(dir.path().join("b.txt"), "new\n").unwrap();
        std::fs::create_dir_all(dir.path().join(".missions")).unwrap();
        std::fs::write(dir.path().join(".missions/x"), "never committed").unwrap();
        // A file a crash left written aside is nobody's work.
        std::fs::write(dir.path().join(format!("{}x1y2", layout::ASIDE_PREFIX)), "half").unwrap();
        git.exclude_missions_dir().unwrap();
        assert_eq!(git.dirty_files().unwrap(), vec!["a.txt", "b.txt"]);
        let commit = git.commit("F1: change things", &[("Mission-Id", "m1"), ("Feature-Id", "F1")]).unwrap();
        assert_eq!(git.subject(&commit).unwrap(), "F1: change things");
        assert_eq!(git.trailers(&commit).unwrap().trim(), "Mission-Id: m1\nFeature-Id: F1");
        assert_eq!(
            git.changed_ranges(&base, &commit).unwrap(),
            vec![
                FileChange { path: "a.txt".into(), ranges: vec![[2, 2], [4, 5]] },
                FileChange { path: "b.txt".into(), ranges: vec![[1, 1]] }
            ]
        );
        assert!(git.dirty_files().unwrap().is_empty(), ".missions/ is excluded, not committed");
        let empty = git.commit_empty("milestone M1: done", &[("Mission-Id", "m1"), ("Milestone-Id", "M1")]).unwrap();
        assert_ne!(empty, commit);
        assert!(git.changed_ranges(&commit, &empty).unwrap().is_empty());
    }

    #[test]
    fn reset_drops_changes_and_untracked_files_but_keeps_missions() {
        let (dir, git) = repository();
        git.exclude_missions_dir().unwrap();
        let base = git.head().unwrap();
        std::fs::write(dir.path().join("a.txt"), "changed").unwrap();
        std::fs::write(dir.path().join("junk.txt"), "junk").unwrap();
        std::fs::create_dir_all(dir.path().join(".missions")).unwrap();
        std::fs::write(dir.path().join(".missions/keep"), "k").unwrap();
        git.reset_hard(&base).unwrap();
        assert!(git.dirty_files().unwrap().is_empty());
        assert!(!dir.path().join("junk.txt").exists());
        assert!(dir.path().join(".missions/keep").exists());
    }

    #[test]
    fn a_snapshot_saves_changes_and_untracked_files_without_touching_the_tree() {
        let (dir, git) = repository();
        git.exclude_missions_dir().unwrap();
        assert_eq!(git.snapshot("refs/missions/m/saved/1", "nothing").unwrap(), None);
        std::fs::write(dir.path().join("a.txt"), "user edit\n").unwrap();
        std::fs::write(dir.path().join("new.txt"), "untracked\n").unwrap();
        let saved = git.snapshot("refs/missions/m/saved/1", "saved before a reset").unwrap().unwrap();
        assert_eq!(git.dirty_files().unwrap(), vec!["a.txt", "new.txt"], "the tree is untouched");
        git.reset_hard(&git.head().unwrap()).unwrap();
        assert_eq!(git.run(&["show", "refs/missions/m/saved/1:a.txt"]).unwrap(), "user edit\n");
        assert_eq!(git.run(&["show", &format!("{saved}:new.txt")]).unwrap(), "untracked\n");
        git.create_ref("refs/missions/m/saved/1", &git.head().unwrap()).unwrap();
        assert_eq!(
            git.run(&["rev-parse", "refs/missions/m/saved/1"]).unwrap().trim(),
            saved,
            "create_ref never overwrites"
        );
    }

    #[test]
    fn hooks_never_run() {
        let (dir, git) = repository();
        let marker = dir.path().join("hook-ran");
        let hook = dir.path().join(".git/hooks/pre-commit");
        std::fs::write(&hook, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("a.txt"), "x").unwrap();
        git.commit("c", &[]).unwrap();
        assert!(!marker.exists());
    }
}
