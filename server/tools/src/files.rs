//! The file tools: `read_file`, `list_files`, `write_file`, `edit_file`.
//!
//! Reads are size-limited and numbered so models can cite lines; listings honour `.gitignore`;
//! writes go through the confinement and are atomic (a reader never sees half a file).

use std::io::Write;
use std::path::Path;

use globset::{GlobBuilder, GlobMatcher};

use crate::paths::Confinement;

/// Files larger than this are not read at all; a model can page through a smaller one.
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// The most text one `read_file` returns.
const MAX_READ_BYTES: usize = 200 * 1024;
const DEFAULT_LINE_LIMIT: usize = 2_000;
const MAX_LINE_CHARS: usize = 2_000;
const MAX_LISTED: usize = 2_000;

/// Reads lines `offset..offset+limit` (1-based) of a file, numbered.
pub fn read_file(
    confinement: &Confinement,
    path: &str,
    offset: Option<u64>,
    limit: Option<u64>,
) -> Result<String, String> {
    let resolved = confinement.resolve_read(path).map_err(|e| e.0)?;
    let metadata = std::fs::metadata(&resolved).map_err(|e| format!("`{path}`: {e}"))?;
    if metadata.is_dir() {
        return Err(format!("`{path}` is a directory; use list_files to see what it holds"));
    }
    if metadata.len() > MAX_FILE_BYTES {
        return Err(format!(
            "`{path}` is {} bytes, more than the {MAX_FILE_BYTES} bytes read_file reads; use search to find what you need in it",
            metadata.len()
        ));
    }
    let bytes = std::fs::read(&resolved).map_err(|e| format!("`{path}`: {e}"))?;
    if bytes[..bytes.len().min(8192)].contains(&0) {
        return Err(format!("`{path}` is a binary file ({} bytes)", bytes.len()));
    }
    let text = String::from_utf8_lossy(&bytes);
    let total_lines = text.lines().count();
    let start = offset.unwrap_or(1).max(1) as usize;
    let limit = limit.map(|l| l as usize).unwrap_or(DEFAULT_LINE_LIMIT).max(1);
    if total_lines == 0 {
        return Ok(format!("`{path}` is empty"));
    }
    if start > total_lines {
        return Err(format!("`{path}` has {total_lines} lines; offset {start} is past the end"));
    }
    let mut out = String::new();
    let mut last = start - 1;
    for (index, line) in text.lines().enumerate().skip(start - 1).take(limit) {
        let shown: String = if line.chars().count() > MAX_LINE_CHARS {
            let cut: String = line.chars().take(MAX_LINE_CHARS).collect();
            format!("{cut} [line cut at {MAX_LINE_CHARS} characters]")
        } else {
            line.to_owned()
        };
        let numbered = format!("{:>6}\t{shown}\n", index + 1);
        if out.len() + numbered.len() > MAX_READ_BYTES {
            break;
        }
        out.push_str(&numbered);
        last = index + 1;
    }
    if start > 1 || last < total_lines {
        out.push_str(&format!("(lines {start}-{last} of {total_lines}; use offset and limit to read more)\n"));
    }
    Ok(out)
}

fn glob_matcher(glob: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(glob)
        .literal_separator(false)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("invalid glob `{glob}`: {e}"))
}

/// Whether a workspace-relative path matches a glob, by its whole path or its file name.
pub fn glob_matches(matcher: &GlobMatcher, relative: &str) -> bool {
    matcher.is_match(relative) || Path::new(relative).file_name().is_some_and(|name| matcher.is_match(name))
}

/// Lists files under `path`, honouring `.gitignore`, optionally filtered by a glob.
pub fn list_files(confinement: &Confinement, path: Option<&str>, glob: Option<&str>) -> Result<String, String> {
    let base = confinement.resolve_read(path.unwrap_or(".")).map_err(|e| e.0)?;
    let matcher = glob.map(glob_matcher).transpose()?;
    let mut files = Vec::new();
    let mut more = 0usize;
    let walker = ignore::WalkBuilder::new(&base)
        .hidden(false)
        .require_git(false)
        .filter_entry(confinement.walk_filter())
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();
    for entry in walker.filter_map(Result::ok) {
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let relative = confinement.relative(entry.path());
        if matcher.as_ref().is_some_and(|m| !glob_matches(m, &relative)) {
            continue;
        }
        if files.len() < MAX_LISTED {
            files.push(relative);
        } else {
            more += 1;
        }
    }
    if files.is_empty() {
        return Ok("no files".into());
    }
    let mut out = files.join("\n");
    out.push('\n');
    if more > 0 {
        out.push_str(&format!("({more} more files not listed; narrow the path or glob)\n"));
    }
    Ok(out)
}

/// Writes `content` to `path` atomically, creating directories as needed; whether a file
/// was there.
pub fn write_file(resolved: &Path, content: &str) -> Result<bool, String> {
    let aside = write_aside(resolved, content)?;
    let existed = aside.existed;
    aside.land(None)?;
    Ok(existed)
}

/// A file's new content, written beside it under a name git ignores, to take its place with
/// [`Aside::land`]; removed if it never does.
#[derive(Debug)]
pub struct Aside {
    temp: tempfile::NamedTempFile,
    target: std::path::PathBuf,
    existed: bool,
}

/// Writes `content` beside `resolved` (creating directories as needed), to take its place
/// later.
pub fn write_aside(resolved: &Path, content: &str) -> Result<Aside, String> {
    let existed = resolved.exists();
    let parent = resolved.parent().ok_or("the path has no parent directory")?;
    std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let mut temp = tempfile::Builder::new()
        .prefix(missions_core::layout::ASIDE_PREFIX)
        .tempfile_in(parent)
        .map_err(|e| format!("cannot write: {e}"))?;
    temp.write_all(content.as_bytes()).map_err(|e| format!("cannot write: {e}"))?;
    if existed && let Ok(metadata) = std::fs::metadata(resolved) {
        // Keep an executable script executable.
        let _ = std::fs::set_permissions(temp.path(), metadata.permissions());
    }
    Ok(Aside { temp, target: resolved.to_owned(), existed })
}

impl Aside {
    /// Whether a file was in the target's place when the content was written aside.
    pub fn existed(&self) -> bool {
        self.existed
    }

    /// Puts the content in the target's place, once `recorded` (the wait for the write's
    /// record to be durable) returned `Ok`; when it fails, never, and the content written
    /// aside is removed.
    pub fn land(self, recorded: Option<crate::RecordedAhead>) -> Result<(), String> {
        if let Some(recorded) = recorded {
            recorded()?;
        }
        self.temp.persist(&self.target).map_err(|e| format!("cannot write: {}", e.error))?;
        Ok(())
    }
}

/// Replaces the one occurrence of `old` with `new` in the text of a file.
pub fn edit_text(path: &str, text: &str, old: &str, new: &str) -> Result<String, String> {
    if old.is_empty() {
        return Err("`old` is empty; give the exact text to replace (use write_file to create a file)".into());
    }
    match text.matches(old).count() {
        0 => Err(format!(
            "`old` was not found in `{path}`; read the file and copy the text exactly, including whitespace"
        )),
        1 => Ok(text.replacen(old, new, 1)),
        n => Err(format!(
            "`old` matches {n} places in `{path}`; include more surrounding lines so it matches exactly one"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_takes_its_place_only_once_its_record_is_durable_and_never_if_it_fails() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.py");
        std::fs::write(&target, "old\n").unwrap();
        let seen = target.clone();
        let waited: crate::RecordedAhead = Box::new(move || {
            assert_eq!(std::fs::read_to_string(&seen).unwrap(), "old\n", "in place before its record");
            Ok(())
        });
        let aside = write_aside(&target, "new\n").unwrap();
        assert!(aside.existed());
        aside.land(Some(waited)).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new\n");
        let failed: crate::RecordedAhead = Box::new(|| Err("the disk is full".into()));
        let error = write_aside(&target, "newer\n").unwrap().land(Some(failed)).unwrap_err();
        assert!(error.contains("the disk is full"), "{error}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new\n");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("a.py")], "nothing written aside is left");
    }

    fn workspace() -> (tempfile::TempDir, Confinement) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/a.py"), "one\ntwo\nthree\n").unwrap();
        std::fs::write(dir.path().join("src/b.rs"), "fn b() {}\n").unwrap();
        std::fs::write(dir.path().join(".gitignore"), "target/\n").unwrap();
        std::fs::create_dir_all(dir.path().join("target")).unwrap();
        std::fs::write(dir.path().join("target/junk.py"), "x").unwrap();
        let c = Confinement::new(dir.path()).unwrap();
        (dir, c)
    }

    #[test]
    fn reads_are_numbered_and_paged() {
        let (_dir, c) = workspace();
        assert_eq!(read_file(&c, "src/a.py", None, None).unwrap(), "     1\tone\n     2\ttwo\n     3\tthree\n");
        assert_eq!(
            read_file(&c, "src/a.py", Some(2), Some(1)).unwrap(),
            "     2\ttwo\n(lines 2-2 of 3; use offset and limit to read more)\n"
        );
        assert!(read_file(&c, "src/a.py", Some(9), None).unwrap_err().contains("past the end"));
        assert!(read_file(&c, "src", None, None).unwrap_err().contains("directory"));
        assert!(read_file(&c, "nope.txt", None, None).unwrap_err().contains("no such file"));
    }

    #[test]
    fn listings_honour_gitignore_and_globs() {
        let (_dir, c) = workspace();
        assert_eq!(list_files(&c, None, None).unwrap(), ".gitignore\nsrc/a.py\nsrc/b.rs\n");
        assert_eq!(list_files(&c, Some("src"), Some("*.py")).unwrap(), "src/a.py\n");
        assert!(list_files(&c, None, Some("[")).unwrap_err().contains("invalid glob"));
    }

    #[test]
    fn edits_need_exactly_one_match() {
        assert_eq!(edit_text("f", "a b a", "b", "c").unwrap(), "a c a");
        assert!(edit_text("f", "a b a", "a", "c").unwrap_err().contains("2 places"));
        assert!(edit_text("f", "a b a", "z", "c").unwrap_err().contains("not found"));
        assert!(edit_text("f", "a", "", "c").is_err());
    }
}
