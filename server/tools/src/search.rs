//! `search`: a regular expression over the workspace, honouring `.gitignore`, built from the
//! crates ripgrep is made of (`ignore` for the parallel, ignore-aware walk; `grep-searcher`
//! and `grep-regex` for the search itself).

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use grep_regex::RegexMatcherBuilder;
use grep_searcher::sinks::Lossy;
use grep_searcher::{BinaryDetection, SearcherBuilder};
use ignore::WalkState;
use missions_core::sync::into_inner;

use crate::files::glob_matches;
use crate::paths::Confinement;

/// The most matches one search returns; a model should narrow a search that hits more.
pub const MAX_MATCHES: usize = 500;
const MAX_LINE_CHARS: usize = 300;

/// One matching line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Match {
    pub path: String,
    pub line: u64,
    pub text: String,
}

/// Searches `base` (a directory or file) for `pattern`, returning at most `max` matches,
/// sorted by path and line, and whether more were found.
pub fn search_matches(
    confinement: &Confinement,
    base: &Path,
    pattern: &str,
    glob: Option<&str>,
    max: usize,
) -> Result<(Vec<Match>, bool), String> {
    let matcher = RegexMatcherBuilder::new()
        .line_terminator(Some(b'\n'))
        .build(pattern)
        .map_err(|e| format!("invalid regular expression: {e}"))?;
    let glob = glob
        .map(|g| {
            globset::GlobBuilder::new(g)
                .literal_separator(false)
                .build()
                .map(|g| g.compile_matcher())
                .map_err(|e| format!("invalid glob `{g}`: {e}"))
        })
        .transpose()?;
    let found = Mutex::new(Vec::new());
    let count = AtomicUsize::new(0);
    let overflow = AtomicUsize::new(0);
    let walker =
        ignore::WalkBuilder::new(base).require_git(false).filter_entry(confinement.walk_filter()).build_parallel();
    walker.run(|| {
        let matcher = matcher.clone();
        let mut searcher = SearcherBuilder::new().binary_detection(BinaryDetection::quit(0)).line_number(true).build();
        let found = &found;
        let count = &count;
        let overflow = &overflow;
        let glob = glob.clone();
        Box::new(move |entry| {
            let Ok(entry) = entry else {
                return WalkState::Continue;
            };
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                return WalkState::Continue;
            }
            let relative = confinement.relative(entry.path());
            if glob.as_ref().is_some_and(|g| !glob_matches(g, &relative)) {
                return WalkState::Continue;
            }
            let mut local = Vec::new();
            let result = searcher.search_path(
                &matcher,
                entry.path(),
                Lossy(|line, text| {
                    if count.fetch_add(1, Ordering::Relaxed) >= max {
                        overflow.fetch_add(1, Ordering::Relaxed);
                        return Ok(false);
                    }
                    let text = text.trim_end_matches(['\n', '\r']);
                    let text = if text.chars().count() > MAX_LINE_CHARS {
                        format!("{}…", text.chars().take(MAX_LINE_CHARS).collect::<String>())
                    } else {
                        text.to_owned()
                    };
                    local.push(Match { path: relative.clone(), line, text });
                    Ok(true)
                }),
            );
            if result.is_ok()
                && !local.is_empty()
                && let Ok(mut all) = found.lock()
            {
                all.extend(local);
            }
            if overflow.load(Ordering::Relaxed) > 0 { WalkState::Quit } else { WalkState::Continue }
        })
    });
    let mut matches = into_inner(found);
    matches.sort();
    matches.truncate(max);
    Ok((matches, overflow.load(Ordering::Relaxed) > 0))
}

/// The `search` tool: `path:line:text` lines.
pub fn search(
    confinement: &Confinement,
    pattern: &str,
    path: Option<&str>,
    glob: Option<&str>,
) -> Result<String, String> {
    let base = confinement.resolve_read(path.unwrap_or(".")).map_err(|e| e.0)?;
    let (matches, more) = search_matches(confinement, &base, pattern, glob, MAX_MATCHES)?;
    if matches.is_empty() {
        return Ok("no matches".into());
    }
    let mut out = String::new();
    for m in &matches {
        out.push_str(&format!("{}:{}:{}\n", m.path, m.line, m.text));
    }
    if more {
        out.push_str(&format!("(stopped at {MAX_MATCHES} matches; narrow the pattern, path or glob)\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_matches_honours_gitignore_and_globs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::create_dir_all(dir.path().join("build")).unwrap();
        std::fs::write(dir.path().join(".gitignore"), "build/\n").unwrap();
        std::fs::write(dir.path().join("src/a.py"), "def slugify(s):\n    return s\n").unwrap();
        std::fs::write(dir.path().join("src/b.rs"), "fn slugify() {}\n").unwrap();
        std::fs::write(dir.path().join("build/out.py"), "def slugify(): pass\n").unwrap();
        std::fs::write(dir.path().join("src/bin.dat"), b"slugify\0\0\0").unwrap();
        let c = Confinement::new(dir.path()).unwrap();
        assert_eq!(
            search(&c, r"slug\w+\(", None, None).unwrap(),
            "src/a.py:1:def slugify(s):\nsrc/b.rs:1:fn slugify() {}\n"
        );
        assert_eq!(search(&c, "slugify", None, Some("*.rs")).unwrap(), "src/b.rs:1:fn slugify() {}\n");
        assert_eq!(search(&c, "nothing-here", None, None).unwrap(), "no matches");
        assert!(search(&c, "(", None, None).unwrap_err().contains("invalid regular expression"));
        assert!(search(&c, "x", Some("../"), None).is_err());
    }

    #[test]
    fn stops_at_the_cap_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("many.txt"), "hit\n".repeat(MAX_MATCHES + 50)).unwrap();
        let c = Confinement::new(dir.path()).unwrap();
        let out = search(&c, "hit", None, None).unwrap();
        assert_eq!(out.lines().count(), MAX_MATCHES + 1);
        assert!(out.ends_with("narrow the pattern, path or glob)\n"));
    }
}
