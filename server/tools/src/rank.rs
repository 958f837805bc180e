//! Which files of a repository map matter most: a personalised PageRank over the graph of
//! references between files, as the best repository maps rank (a file whose definitions many
//! other files use is central), tilted toward the run's purpose (its words, the files it names)
//! and away from tests, benches, examples and vendored code unless the purpose is about them.

use std::collections::{HashMap, HashSet};

/// What the ranking knows of one file.
#[derive(Debug, Clone)]
pub struct FileFacts<'a> {
    /// Workspace-relative, with `/` separators.
    pub path: String,
    /// The names it defines.
    pub defines: Vec<String>,
    /// The identifiers it uses, with how often.
    pub mentions: &'a HashMap<String, u32>,
}

/// What the run is for, as the ranking uses it.
#[derive(Debug, Clone, Default)]
pub struct Purpose {
    /// The words of its text (see `repo_map::words`).
    pub words: HashSet<String>,
    /// Workspace files its text names.
    pub named: HashSet<String>,
}

const DAMPING: f64 = 0.85;
const ITERATIONS: usize = 40;

/// The folders whose files are support rather than the code itself.
const SUPPORT_DIRS: [&str; 9] =
    ["test", "tests", "bench", "benches", "example", "examples", "vendor", "third_party", "node_modules"];

/// Whether `path` is a test, bench, example or vendored file.
pub fn is_support(path: &str) -> bool {
    let mut parts = path.split('/');
    let file = parts.next_back().unwrap_or_default();
    parts.any(|dir| SUPPORT_DIRS.contains(&dir))
        || file.starts_with("test_")
        || file.ends_with("_test.go")
        || file.ends_with("_test.py")
        || file.contains(".test.")
        || file.contains(".spec.")
}

/// How much an identifier counts as a link: long, specific names (`parse_request`,
/// `SessionBuilder`) much more than short ones, private ones and names many files define
/// (`new`, `run`) much less.
fn name_weight(name: &str, definers: usize, purpose: &Purpose) -> f64 {
    let mut weight = 1.0;
    let specific = name.len() >= 8 && (name.contains('_') || name.chars().any(char::is_uppercase));
    if specific {
        weight *= 10.0;
    }
    if name.starts_with('_') {
        weight *= 0.1;
    }
    if definers > 5 {
        weight *= 0.1;
    }
    if purpose.words.contains(&name.to_lowercase()) {
        weight *= 10.0;
    }
    weight
}

/// A score per file (same order as `files`): higher is more worth showing.
pub fn rank(files: &[FileFacts], purpose: &Purpose, words_of: impl Fn(&str) -> HashSet<String>) -> Vec<f64> {
    let n = files.len();
    if n == 0 {
        return Vec::new();
    }
    let mut definers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (index, file) in files.iter().enumerate() {
        for name in &file.defines {
            let list = definers.entry(name.as_str()).or_default();
            if list.last() != Some(&index) {
                list.push(index);
            }
        }
    }
    // Edges from a file to the files defining what it uses.
    let mut edges: Vec<HashMap<usize, f64>> = vec![HashMap::new(); n];
    for (from, file) in files.iter().enumerate() {
        for (name, count) in file.mentions {
            let Some(targets) = definers.get(name.as_str()) else { continue };
            let weight = name_weight(name, targets.len(), purpose) * f64::from(*count).sqrt() / targets.len() as f64;
            for &to in targets.iter().filter(|&&to| to != from) {
                *edges[from].entry(to).or_insert(0.0) += weight;
            }
        }
    }
    // Where a random reader starts and jumps back to: every file a little, the files the
    // purpose is about much more (with a purpose, the rest barely: in a large repository their
    // sum would drown it).
    let base = if purpose.words.is_empty() && purpose.named.is_empty() { 1.0 } else { 0.02 };
    let personal: Vec<f64> = files
        .iter()
        .map(|file| {
            let path_hits = words_of(&file.path).intersection(&purpose.words).count() as f64;
            let name_hits = file.defines.iter().filter(|d| purpose.words.contains(&d.to_lowercase())).count() as f64;
            let named = if purpose.named.contains(&file.path) { 100.0 } else { 0.0 };
            base + 10.0 * path_hits + 5.0 * name_hits + named
        })
        .collect();
    let total: f64 = personal.iter().sum();
    let personal: Vec<f64> = personal.iter().map(|p| p / total).collect();
    let out_weight: Vec<f64> = edges.iter().map(|e| e.values().sum()).collect();
    let mut rank = personal.clone();
    for _ in 0..ITERATIONS {
        let mut next: Vec<f64> = personal.iter().map(|p| (1.0 - DAMPING) * p).collect();
        let mut dangling = 0.0;
        for (from, targets) in edges.iter().enumerate() {
            if out_weight[from] <= 0.0 {
                dangling += rank[from];
                continue;
            }
            for (&to, weight) in targets {
                next[to] += DAMPING * rank[from] * weight / out_weight[from];
            }
        }
        for (value, p) in next.iter_mut().zip(&personal) {
            *value += DAMPING * dangling * p;
        }
        rank = next;
    }
    // Support files count for less unless the purpose is about them.
    let about_support = purpose.words.iter().any(|w| {
        ["test", "tests", "bench", "benches", "benchmark", "example", "examples", "vendor"].contains(&w.as_str())
    });
    files
        .iter()
        .zip(rank)
        .map(|(file, score)| {
            if is_support(&file.path) && !about_support && !purpose.named.contains(&file.path) {
                score * 0.1
            } else {
                score
            }
        })
        .collect()
}

/// The identifiers of a source text with how often each appears (a cheap scan: names in
/// comments and strings count too, as they do for the files a reader would open).
pub fn mentions(source: &str) -> HashMap<String, u32> {
    let mut found: HashMap<String, u32> = HashMap::new();
    let bytes = source.as_bytes();
    let mut start = None;
    for (index, &byte) in bytes.iter().chain(std::iter::once(&b' ')).enumerate() {
        let part = byte.is_ascii_alphanumeric() || byte == b'_';
        match (start, part) {
            (None, true) if !byte.is_ascii_digit() => start = Some(index),
            (Some(from), false) => {
                if index - from >= 3 {
                    *found.entry(source[from..index].to_owned()).or_insert(0) += 1;
                }
                start = None;
            }
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, defines: &[&str], source: &str) -> FileFacts<'static> {
        FileFacts {
            path: path.into(),
            defines: defines.iter().map(|d| (*d).to_owned()).collect(),
            // Each test's few facts live as long as the test process.
            mentions: Box::leak(Box::new(mentions(source))),
        }
    }

    fn words(text: &str) -> HashSet<String> {
        text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
    }

    #[test]
    fn what_many_files_use_ranks_above_what_uses_them_and_support_files_come_last() {
        let files = vec![
            file("benches/bench_session.py", &["bench_send"], "Session SessionBuilder send_request Session"),
            file("src/api.py", &["get", "post"], "Session send_request Session"),
            file("src/sessions.py", &["Session", "send_request"], "Response parse_headers"),
            file("src/models.py", &["Response", "parse_headers"], ""),
            file("src/util.py", &["helper_function"], ""),
            file("tests/test_sessions.py", &["test_send"], "Session send_request Response Session Session"),
            // A helper every test uses: central among the tests, still support.
            file("tests/conftest.py", &["session_fixture"], ""),
            file("tests/test_a.py", &["test_a"], "session_fixture session_fixture"),
            file("tests/test_b.py", &["test_b"], "session_fixture session_fixture"),
            file("tests/test_c.py", &["test_c"], "session_fixture session_fixture"),
        ];
        let scores = rank(&files, &Purpose::default(), words);
        let order = |path: &str| files.iter().position(|f| f.path == path).unwrap();
        let score = |path: &str| scores[order(path)];
        assert!(score("src/sessions.py") > score("src/api.py"), "{scores:?}");
        assert!(score("src/models.py") > score("src/util.py"), "{scores:?}");
        for support in ["tests/test_sessions.py", "benches/bench_session.py", "tests/conftest.py"] {
            for core in ["src/sessions.py", "src/models.py", "src/api.py"] {
                assert!(score(core) > score(support), "{core} above {support}: {scores:?}");
            }
        }
        // A purpose about tests lifts them; one that names a file puts it first.
        let about_tests = Purpose { words: words("fix the flaky tests"), ..Purpose::default() };
        let lifted = rank(&files, &about_tests, words);
        assert!(lifted[order("tests/test_sessions.py")] > scores[order("tests/test_sessions.py")]);
        let named = Purpose { named: HashSet::from(["src/util.py".to_owned()]), ..Purpose::default() };
        let by_name = rank(&files, &named, words);
        let top = (0..files.len()).max_by(|a, b| by_name[*a].total_cmp(&by_name[*b])).unwrap();
        assert_eq!(files[top].path, "src/util.py");
    }

    #[test]
    fn support_files_are_recognised() {
        for path in ["tests/a.rs", "pkg/slug_test.go", "test_x.py", "src/a.test.ts", "benches/b.rs", "vendor/x/y.go"] {
            assert!(is_support(path), "{path}");
        }
        for path in ["src/lib.rs", "textkit/slug.py", "attest.py", "src/testing_utils.rs"] {
            assert!(!is_support(path), "{path}");
        }
    }

    #[test]
    fn identifiers_are_counted() {
        let found = mentions("let s = Session::new(); s.send_request(x1); // Session 42 ab");
        assert_eq!(found["Session"], 2);
        assert_eq!(found["send_request"], 1);
        assert!(!found.contains_key("42") && !found.contains_key("ab") && !found.contains_key("x1"));
    }
}
