//! Turning the output of the project's own check commands into findings with file and line.
//!
//! Recognised: cargo/rustc JSON messages (`--message-format=json`) and their human form
//! (`--> src/lib.rs:4:5`), pytest (`tests/test_x.py:12: AssertionError`, `FAILED path::test - msg`),
//! tsc (`src/a.ts(3,5): error TS2322: …`), eslint's stylish format, go vet / go test
//! (`./x.go:12:3: msg`, `x_test.go:15: msg`), and a generic `path:line[:col]: message`. A
//! location is only taken when the path names a file that exists in the workspace, so URLs and
//! timestamps are not mistaken for places.

use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use missions_core::mission::Severity;
use regex::Regex;

/// One problem found in a check's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckProblem {
    pub path: String,
    pub line: u32,
    pub end_line: Option<u32>,
    pub severity: Severity,
    pub message: String,
    /// The part of the output about this problem (its own block, not the whole output), for
    /// the finding's evidence.
    pub excerpt: String,
}

/// The message of a Python traceback frame: the same for every frame, so it says nothing about
/// which problem it is.
pub const TRACEBACK_FRAME: &str = "raised here (see the check's output)";

/// How much of a check's output one problem's excerpt may take.
const EXCERPT_LINES: usize = 40;

/// The block of `lines` that begins at `start`: up to the next blank line, or the start of the
/// next problem, at most [`EXCERPT_LINES`].
fn block(lines: &[&str], start: usize, next_start: Option<usize>) -> String {
    let end = next_start.unwrap_or(lines.len()).min(start + EXCERPT_LINES).min(lines.len());
    let mut taken = Vec::new();
    for (offset, line) in lines[start..end].iter().enumerate() {
        if offset > 0 && line.trim().is_empty() {
            break;
        }
        taken.push(*line);
    }
    taken.join("\n")
}

/// The last source line number a rustc block shows in its gutter (` 12 |`), for a span that
/// covers several lines.
fn gutter_end(excerpt: &str) -> Option<u32> {
    static GUTTER: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"^\s*(\d+)\s*\|").ok());
    excerpt.lines().filter_map(|l| regex(&GUTTER)?.captures(l)?[1].parse::<u32>().ok()).max()
}

static RUST_ARROW: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"^\s*--> ([^:\s]+):(\d+):(\d+)").ok());
static RUST_HEAD: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"^(error|warning)(\[\w+\])?: (.+)$").ok());
static TSC: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^(.+?)\((\d+),(\d+)\): (error|warning) (TS\d+: .+)$").ok());
static PYTEST_FAILED: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^FAILED ([^:\s]+)::(\S+)(?: - (.*))?$").ok());
static ESLINT_ROW: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^\s+(\d+):(\d+)\s+(error|warning)\s+(.+?)(?:\s{2,}(\S+))?$").ok());
static GENERIC: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^\s*(?:File )?\.?/?([\w./\-]+\.\w+):(\d+)(?::(\d+))?:?\s*(.*)$").ok());
static PY_TRACE: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r#"^\s*File "([^"]+)", line (\d+)"#).ok());

fn regex(r: &LazyLock<Option<Regex>>) -> Option<&Regex> {
    r.as_ref()
}

/// Makes `path` workspace-relative if it names a file in the workspace.
fn existing(workspace: &Path, path: &str) -> Option<String> {
    let trimmed = path.trim().trim_start_matches("./");
    let candidate = Path::new(trimmed);
    let relative = if candidate.is_absolute() {
        candidate.strip_prefix(workspace).ok()?.to_path_buf()
    } else {
        candidate.to_path_buf()
    };
    workspace.join(&relative).is_file().then(|| relative.to_string_lossy().into_owned())
}

fn problem(path: String, line: &str, severity: Severity, message: &str) -> Option<CheckProblem> {
    let line: u32 = line.parse().ok().filter(|l| *l > 0)?;
    Some(CheckProblem {
        path,
        line,
        end_line: None,
        severity,
        message: message.trim().to_owned(),
        excerpt: String::new(),
    })
}

/// cargo's `--message-format=json` lines.
fn cargo_json(workspace: &Path, output: &str, out: &mut Vec<CheckProblem>) {
    for line in output.lines().filter(|l| l.starts_with('{')) {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if value.get("reason").and_then(|r| r.as_str()) != Some("compiler-message") {
            continue;
        }
        let Some(message) = value.get("message") else { continue };
        let severity = match message.get("level").and_then(|l| l.as_str()) {
            Some("error") => Severity::Error,
            Some("warning") => Severity::Warning,
            _ => continue,
        };
        let text = message.get("message").and_then(|m| m.as_str()).unwrap_or_default();
        let spans = message.get("spans").and_then(|s| s.as_array());
        let primary =
            spans.and_then(|spans| spans.iter().find(|s| s.get("is_primary").and_then(|p| p.as_bool()) == Some(true)));
        let Some(span) = primary else { continue };
        let Some(path) = span.get("file_name").and_then(|f| f.as_str()).and_then(|f| existing(workspace, f)) else {
            continue;
        };
        let start = span.get("line_start").and_then(|l| l.as_u64()).unwrap_or(0) as u32;
        let end = span.get("line_end").and_then(|l| l.as_u64()).map(|l| l as u32);
        if start > 0 {
            let rendered = message.get("rendered").and_then(|r| r.as_str()).unwrap_or(text);
            out.push(CheckProblem {
                path,
                line: start,
                end_line: end.filter(|e| *e > start),
                severity,
                message: text.to_owned(),
                excerpt: rendered.trim_end().to_owned(),
            });
        }
    }
}

/// Every problem with a location that `output` reports.
pub fn parse_output(workspace: &Path, output: &str) -> Vec<CheckProblem> {
    let mut out = Vec::new();
    cargo_json(workspace, output, &mut out);
    let from_json = out.len();
    let lines: Vec<&str> = output.lines().collect();
    // Where each problem's block of output begins, to cut its excerpt from.
    let mut starts: Vec<usize> = Vec::new();
    let mut eslint_file: Option<String> = None;
    let mut rust_head: Option<(Severity, String, usize)> = None;
    for (index, line) in lines.iter().enumerate() {
        let found = out.len();
        let start = rust_head.as_ref().map(|(_, _, at)| *at).unwrap_or(index);
        parse_line(workspace, &lines, line, &mut eslint_file, &mut rust_head, index, &mut out);
        starts.extend(std::iter::repeat_n(start, out.len() - found));
    }
    // Each excerpt runs to the next problem's block at most.
    let mut block_starts: Vec<usize> = starts.clone();
    block_starts.sort_unstable();
    block_starts.dedup();
    for (problem, start) in out[from_json..].iter_mut().zip(&starts) {
        let next = block_starts.iter().copied().find(|s| s > start);
        problem.excerpt = block(&lines, *start, next);
        if problem.end_line.is_none() {
            problem.end_line = gutter_end(&problem.excerpt).filter(|end| *end > problem.line);
        }
    }
    out.dedup();
    out
}

/// Parses one line of a check's output, adding the problem it reports, if any, to `out`.
fn parse_line(
    workspace: &Path,
    lines: &[&str],
    line: &str,
    eslint_file: &mut Option<String>,
    rust_head: &mut Option<(Severity, String, usize)>,
    index: usize,
    out: &mut Vec<CheckProblem>,
) {
    if line.starts_with('{') {
        return;
    }
    if let Some(caps) = regex(&RUST_HEAD).and_then(|r| r.captures(line)) {
        let severity = if &caps[1] == "error" { Severity::Error } else { Severity::Warning };
        *rust_head = Some((severity, caps[3].to_owned(), index));
        return;
    }
    if let Some(caps) = regex(&RUST_ARROW).and_then(|r| r.captures(line)) {
        if let (Some((severity, message, _)), Some(path)) = (rust_head.take(), existing(workspace, &caps[1])) {
            out.extend(problem(path, &caps[2], severity, &message));
        }
        return;
    }
    if let Some(caps) = regex(&TSC).and_then(|r| r.captures(line)) {
        if let Some(path) = existing(workspace, &caps[1]) {
            let severity = if &caps[4] == "error" { Severity::Error } else { Severity::Warning };
            out.extend(problem(path, &caps[2], severity, &caps[5]));
        }
        return;
    }
    if let Some(caps) = regex(&PYTEST_FAILED).and_then(|r| r.captures(line)) {
        if let Some(path) = existing(workspace, &caps[1]) {
            // pytest's summary line has no line number; the test's own `def` has one.
            let test = caps[2].split('[').next().unwrap_or_default().rsplit("::").next().unwrap_or_default().to_owned();
            let line_number = std::fs::read_to_string(workspace.join(&path))
                .ok()
                .and_then(|text| text.lines().position(|l| l.trim_start().starts_with(&format!("def {test}("))))
                .map(|index| (index + 1).to_string())
                .unwrap_or_else(|| "1".into());
            let message =
                format!("{} failed{}", &caps[2], caps.get(3).map(|m| format!(": {}", m.as_str())).unwrap_or_default());
            out.extend(problem(path, &line_number, Severity::Error, &message));
        }
        return;
    }
    if let Some(caps) = regex(&PY_TRACE).and_then(|r| r.captures(line)) {
        // Python tracebacks: the innermost frame in the workspace is the interesting one;
        // each frame is kept, the last one wins by coming last.
        if let Some(path) = existing(workspace, &caps[1]) {
            // The exception the traceback ends with names the problem; a frame without one
            // says nothing specific.
            let raised = lines
                .iter()
                .skip(index + 1)
                .take(40)
                .find(|l| !l.starts_with(char::is_whitespace) && !l.starts_with("Traceback") && l.contains(':'))
                .filter(|l| {
                    l.split(':').next().is_some_and(|kind| kind.ends_with("Error") || kind.ends_with("Exception"))
                });
            let message =
                raised.map_or(TRACEBACK_FRAME.to_owned(), |exception| format!("raised here: {}", exception.trim()));
            out.extend(problem(path, &caps[2], Severity::Error, &message));
        }
        return;
    }
    // eslint's stylish format: a file header, then indented `line:col  level  message  rule` rows.
    if !line.starts_with(char::is_whitespace)
        && let Some(path) = existing(workspace, line)
    {
        *eslint_file = Some(path);
        return;
    }
    if let (Some(path), Some(caps)) = (&*eslint_file, regex(&ESLINT_ROW).and_then(|r| r.captures(line))) {
        let severity = if &caps[3] == "error" { Severity::Error } else { Severity::Warning };
        let rule = caps.get(5).map(|m| format!(" ({})", m.as_str())).unwrap_or_default();
        out.extend(problem(path.clone(), &caps[1], severity, &format!("{}{rule}", &caps[4])));
        return;
    }
    if let Some(caps) = regex(&GENERIC).and_then(|r| r.captures(line))
        && let Some(path) = existing(workspace, &caps[1])
    {
        let message = caps[4].trim();
        let message = if message.is_empty() { "reported here" } else { message };
        let severity =
            if message.to_ascii_lowercase().starts_with("warning") { Severity::Warning } else { Severity::Error };
        out.extend(problem(path, &caps[2], severity, message));
    }
}

/// Runs a check command for the engine (validation, the baseline, the plan's dry run). A
/// command that cannot even start is a failed check whose evidence says why, never an error
/// that would leave the mission validating forever.
pub async fn run_check(
    environment: &missions_tools::CommandEnvironment,
    command: &str,
    timeout: Duration,
    recorder: &std::sync::Arc<dyn missions_tools::WorkRecorder>,
) -> missions_tools::command::CommandResult {
    // What the check changes is recorded as the mission's, like any command a run starts.
    recorder.before_command();
    let result = missions_tools::command::run_command(environment, command, timeout).await;
    recorder.after_command();
    match result {
        Ok(result) => result,
        Err(error) => missions_tools::command::CommandResult {
            exit_code: None,
            timed_out: false,
            output: format!("the command could not be started: {error}"),
            duration: Duration::ZERO,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for file in
            ["src/lib.rs", "src/a.ts", "tests/test_slug.py", "pkg/x.go", "pkg/x_test.go", "web/app.js", "slug.py"]
        {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "line\n\ndef test_empty():\n    pass\n").unwrap();
        }
        dir
    }

    fn check(output: &str) -> Vec<(String, u32, Severity, String)> {
        let dir = workspace();
        parse_output(dir.path(), output).into_iter().map(|p| (p.path, p.line, p.severity, p.message)).collect()
    }

    #[test]
    fn rustc_human_and_json() {
        assert_eq!(
            check(
                "error[E0308]: mismatched types\n  --> src/lib.rs:4:5\n   |\nwarning: unused variable: `x`\n --> src/lib.rs:9:9\n"
            ),
            vec![
                ("src/lib.rs".into(), 4, Severity::Error, "mismatched types".into()),
                ("src/lib.rs".into(), 9, Severity::Warning, "unused variable: `x`".into())
            ]
        );
        let json = r#"{"reason":"compiler-message","message":{"level":"error","message":"cannot find value `y`","spans":[{"file_name":"src/lib.rs","line_start":7,"line_end":7,"is_primary":true}]}}"#;
        assert_eq!(check(json), vec![("src/lib.rs".into(), 7, Severity::Error, "cannot find value `y`".into())]);
    }

    #[test]
    fn python_typescript_eslint_go_and_generic() {
        assert_eq!(
            check("FAILED tests/test_slug.py::test_empty - AssertionError: '' != 'x'"),
            vec![(
                "tests/test_slug.py".into(),
                3,
                Severity::Error,
                "test_empty failed: AssertionError: '' != 'x'".into()
            )]
        );
        assert_eq!(
            check("  File \"slug.py\", line 2, in slugify"),
            vec![("slug.py".into(), 2, Severity::Error, "raised here (see the check's output)".into())]
        );
        assert_eq!(
            check("src/a.ts(3,5): error TS2322: Type 'number' is not assignable to type 'string'."),
            vec![(
                "src/a.ts".into(),
                3,
                Severity::Error,
                "TS2322: Type 'number' is not assignable to type 'string'.".into()
            )]
        );
        assert_eq!(
            check(
                "web/app.js\n  3:5  error  'x' is defined but never used  no-unused-vars\n  8:1  warning  Unexpected console statement  no-console\n"
            ),
            vec![
                ("web/app.js".into(), 3, Severity::Error, "'x' is defined but never used (no-unused-vars)".into()),
                ("web/app.js".into(), 8, Severity::Warning, "Unexpected console statement (no-console)".into())
            ]
        );
        assert_eq!(
            check(
                "./pkg/x.go:12:3: unreachable code\n    x_test.go:15: got 1, want 2\n    pkg/x_test.go:15: got 1, want 2"
            ),
            vec![
                ("pkg/x.go".into(), 12, Severity::Error, "unreachable code".into()),
                ("pkg/x_test.go".into(), 15, Severity::Error, "got 1, want 2".into())
            ]
        );
    }

    #[test]
    fn places_that_are_not_workspace_files_are_ignored() {
        assert!(check("see https://example.com:443/x for help\n12:30:01: started\nnope.py:3: error").is_empty());
    }

    #[test]
    fn each_problem_carries_its_own_part_of_the_output_and_its_span() {
        let dir = workspace();
        let output = "warning: unused variable: `x`\n --> src/lib.rs:1:5\n  |\n1 | let x = 1;\n  |     ^\n\nerror: this loop never ends\n --> src/lib.rs:3:1\n  |\n3 | / loop {\n4 | |     pass\n  | |_^\n\nerror: could not compile `x`\n";
        let problems = parse_output(dir.path(), output);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].excerpt.contains("unused variable") && !problems[0].excerpt.contains("never ends"));
        assert!(problems[1].excerpt.contains("never ends") && !problems[1].excerpt.contains("unused variable"));
        assert_eq!((problems[1].line, problems[1].end_line), (3, Some(4)), "a multi-line span keeps its end");
        assert_eq!(problems[0].end_line, None);
    }
}
