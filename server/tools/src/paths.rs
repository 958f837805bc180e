//! Confinement of model-supplied paths to the workspace.
//!
//! Every path a model names goes through a [`Confinement`]: it must be relative, may not climb
//! out with `..`, and must still be inside the workspace once symlinks are resolved (a link
//! pointing out is refused, not followed). Writes are also refused under `.git/` (anywhere, so
//! a submodule's hooks are covered too) and the top-level `.missions/`, whatever the path's
//! spelling. This is the first layer; the operating-system sandbox of commands is the second.

use std::path::{Component, Path, PathBuf};

/// Whether `path` lies under none of the directories `hidden`.
fn outside(hidden: &[PathBuf], path: &Path) -> bool {
    !hidden.iter().any(|dir| path.starts_with(dir))
}

/// Why a path was refused; the message is shown to the model as the tool result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PathRefused(pub String);

#[derive(Debug, Clone)]
pub struct Confinement {
    root: PathBuf,
    /// Directories this run may not see at all: reads are refused and listings, searches and
    /// maps skip them (a worker's view of `.missions/`, where the acceptance tests are).
    hidden: std::sync::Arc<Vec<PathBuf>>,
}

impl Confinement {
    /// Confines to `root`, which must exist.
    pub fn new(root: &Path) -> std::io::Result<Confinement> {
        Ok(Confinement { root: root.canonicalize()?, hidden: Default::default() })
    }

    /// The same confinement, with `dirs` (absolute, or relative to the root) hidden.
    pub fn hiding(mut self, dirs: &[PathBuf]) -> Confinement {
        let hidden = dirs
            .iter()
            .map(|dir| {
                let dir = self.root.join(dir);
                dir.canonicalize().unwrap_or(dir)
            })
            .collect();
        self.hidden = std::sync::Arc::new(hidden);
        self
    }

    /// Whether `path` (absolute, resolved) is outside every hidden directory.
    pub fn visible(&self, path: &Path) -> bool {
        outside(&self.hidden, path)
    }

    /// The filter of every walk over the workspace: never into `.git`, nor into a hidden
    /// directory.
    pub fn walk_filter(&self) -> impl Fn(&ignore::DirEntry) -> bool + Send + Sync + 'static {
        let hidden = self.hidden.clone();
        move |entry| entry.file_name() != ".git" && outside(&hidden, entry.path())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `abs` as a workspace-relative path with `/` separators, for messages and results.
    pub fn relative(&self, abs: &Path) -> String {
        abs.strip_prefix(&self.root).unwrap_or(abs).to_string_lossy().replace('\\', "/")
    }

    /// The workspace path `path` names, by its spelling alone (no file system access).
    fn lexical(&self, path: &str) -> Result<PathBuf, PathRefused> {
        if path.contains('\0') {
            return Err(PathRefused("the path contains a NUL byte".into()));
        }
        let trimmed = path.trim();
        let candidate = Path::new(if trimmed.is_empty() { "." } else { trimmed });
        let mut out = self.root.clone();
        let mut depth = 0usize;
        for component in candidate.components() {
            match component {
                Component::Normal(part) => {
                    out.push(part);
                    depth += 1;
                }
                Component::CurDir => {}
                Component::ParentDir if depth > 0 => {
                    out.pop();
                    depth -= 1;
                }
                Component::ParentDir => {
                    return Err(PathRefused(format!(
                        "`{path}` climbs out of the workspace; paths must stay inside it"
                    )));
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(PathRefused(format!(
                        "`{path}` is absolute; give a path relative to the workspace root"
                    )));
                }
            }
        }
        Ok(out)
    }

    fn inside(&self, resolved: &Path, original: &str) -> Result<(), PathRefused> {
        if resolved.starts_with(&self.root) {
            Ok(())
        } else {
            Err(PathRefused(format!("`{original}` leads outside the workspace through a symbolic link")))
        }
    }

    /// Resolves a path to read: it must exist and stay inside the workspace.
    pub fn resolve_read(&self, path: &str) -> Result<PathBuf, PathRefused> {
        let lexical = self.lexical(path)?;
        let resolved =
            lexical.canonicalize().map_err(|error| PathRefused(format!("`{path}`: {}", describe_io(&error))))?;
        self.inside(&resolved, path)?;
        if !self.visible(&resolved) {
            return Err(PathRefused(format!(
                "`{path}` is hidden from this run: .missions/ holds the mission's own records and its acceptance tests, which workers do not read"
            )));
        }
        Ok(resolved)
    }

    /// Resolves a path to write: every existing part of it must stay inside the workspace,
    /// and it may not lie under `.git/` or `.missions/`.
    pub fn resolve_write(&self, path: &str) -> Result<PathBuf, PathRefused> {
        let lexical = self.lexical(path)?;
        // Walk up to the deepest part that exists and resolve it; the rest is created.
        let mut existing = lexical.as_path();
        let mut missing: Vec<&std::ffi::OsStr> = Vec::new();
        while std::fs::symlink_metadata(existing).is_err() {
            let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
                break;
            };
            missing.push(name);
            existing = parent;
        }
        let mut resolved =
            existing.canonicalize().map_err(|error| PathRefused(format!("`{path}`: {}", describe_io(&error))))?;
        self.inside(&resolved, path)?;
        for name in missing.iter().rev() {
            resolved.push(name);
        }
        let relative = resolved.strip_prefix(&self.root).unwrap_or(&resolved);
        // In any letter case: on a case-insensitive file system `.Git` is `.git`.
        let mut components = relative.components().map(|c| c.as_os_str().to_string_lossy().to_lowercase());
        let first = components.next();
        let protected = first.as_deref() == Some(missions_core::layout::DIR)
            || first.as_deref() == Some(".git")
            || components.any(|c| c == ".git");
        if protected {
            return Err(PathRefused(format!(
                "`{path}` is under .git/ or .missions/, which belong to git and to Missions; workers may not write there"
            )));
        }
        if resolved == self.root {
            return Err(PathRefused("the workspace root itself is not a file".into()));
        }
        Ok(resolved)
    }
}

fn describe_io(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> (tempfile::TempDir, Confinement) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::create_dir_all(dir.path().join(".git/hooks")).unwrap();
        std::fs::create_dir_all(dir.path().join(".missions")).unwrap();
        std::fs::write(dir.path().join("src/lib.rs"), "x").unwrap();
        let confinement = Confinement::new(dir.path()).unwrap();
        (dir, confinement)
    }

    #[test]
    fn relative_paths_inside_resolve() {
        let (_dir, c) = workspace();
        assert!(c.resolve_read("src/lib.rs").unwrap().ends_with("src/lib.rs"));
        assert!(c.resolve_read("./src/../src/lib.rs").is_ok());
        assert!(c.resolve_write("src/new/deep/file.rs").unwrap().ends_with("src/new/deep/file.rs"));
        assert_eq!(c.relative(&c.resolve_read("src/lib.rs").unwrap()), "src/lib.rs");
    }

    #[test]
    fn escapes_are_refused() {
        let (_dir, c) = workspace();
        for bad in ["../x", "src/../../x", "/etc/passwd", "a\0b"] {
            assert!(c.resolve_read(bad).is_err(), "{bad}");
            assert!(c.resolve_write(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn symlinks_out_are_refused_for_reading_and_writing() {
        let (dir, c) = workspace();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("file-link")).unwrap();
        assert!(c.resolve_read("link/secret").unwrap_err().0.contains("symbolic link"));
        assert!(c.resolve_read("file-link").is_err());
        assert!(c.resolve_write("link/new-file").is_err());
        assert!(c.resolve_write("file-link").is_err());
        // A link that stays inside is fine.
        std::os::unix::fs::symlink(dir.path().join("src"), dir.path().join("src-link")).unwrap();
        assert!(c.resolve_write("src-link/ok.rs").is_ok());
    }

    #[test]
    fn git_and_missions_are_not_writable_however_spelled() {
        let (dir, c) = workspace();
        std::fs::create_dir_all(dir.path().join("vendor/sub/.git")).unwrap();
        std::os::unix::fs::symlink(dir.path().join(".git"), dir.path().join("innocent")).unwrap();
        for bad in [
            ".git/hooks/pre-commit",
            "./.git/config",
            "src/../.git/HEAD",
            ".missions/x/events.jsonl",
            "vendor/sub/.git/hooks/x",
            "innocent/hooks/post-checkout",
        ] {
            let error = c.resolve_write(bad).unwrap_err();
            assert!(error.0.contains(".git/ or .missions/"), "{bad}: {error}");
        }
        assert!(c.resolve_read(".git/hooks").is_ok(), "reading is allowed");
    }
}
