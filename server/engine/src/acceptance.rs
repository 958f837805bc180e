//! Acceptance tests (SPEC §2 rule 9): the test author's run ends with
//! [`SubmitAcceptanceTests`], which keeps the files it writes out of the tree and accepts them
//! only when each test fails on the base commit; [`run_with_files`] places a test's files in
//! the workspace only while its command runs, for that check and at every validation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use missions_core::layout;
use missions_core::model::ToolSpec;
use missions_core::store::{AcceptanceTest, AcceptanceTestFile};
use missions_tools::command::CommandResult;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::agent::Terminal;
use crate::terminals::Trial;

/// How much of a test's output on the base commit is kept for the plan gate and for the test
/// author's answer.
const KEPT_OUTPUT: usize = 4_000;

/// Places `test`'s files in `workspace`, runs its command as a check (`environment`,
/// `timeout`, `recorder` as for any check), then removes the files, the folders made for them,
/// and the ignored files the run made that are named after a test file (a compiled test such
/// as `__pycache__/test_x.cpython-311.pyc`), whatever the command did: none of it may stay
/// where a worker could read it. Other new ignored files are left alone: the user may have
/// made them meanwhile. A path that exists in the tree is refused: a test never replaces the
/// project's files.
pub(crate) async fn run_with_files(
    workspace: &Path,
    test: &AcceptanceTest,
    environment: &missions_tools::CommandEnvironment,
    timeout: std::time::Duration,
    recorder: &std::sync::Arc<dyn missions_tools::WorkRecorder>,
) -> Result<CommandResult, String> {
    let git = crate::git::Git::new(workspace);
    let ignored_before = git.ignored_files().map_err(|e| e.to_string())?;
    let mut placed = Placed::default();
    for file in &test.files {
        placed.put(workspace, &file.path, &file.content)?;
    }
    let result = crate::checks::run_check(environment, &test.command, timeout, recorder).await;
    drop(placed);
    if let Ok(ignored_after) = git.ignored_files() {
        let stems: Vec<String> = test
            .files
            .iter()
            .filter_map(|f| Path::new(&f.path).file_stem().map(|s| s.to_string_lossy().into_owned()))
            .filter(|stem| stem.len() >= 4)
            .collect();
        let made: Vec<PathBuf> = ignored_after
            .difference(&ignored_before)
            .filter(|relative| {
                let name = relative.rsplit('/').next().unwrap_or(relative);
                stems.iter().any(|stem| name.contains(stem.as_str()))
            })
            .map(|relative| workspace.join(relative))
            .collect();
        remove_with_empty_folders(workspace, &made);
    }
    Ok(result)
}

/// Removes `files` and then each folder that held one, up to `workspace`, while it is empty.
fn remove_with_empty_folders(workspace: &Path, files: &[PathBuf]) {
    for file in files {
        let _ = std::fs::remove_file(file);
    }
    for file in files {
        for folder in file.ancestors().skip(1).take_while(|dir| *dir != workspace && dir.starts_with(workspace)) {
            if std::fs::remove_dir(folder).is_err() {
                break;
            }
        }
    }
}

/// Test output without the lines that quote the test's own source (a Python traceback shows
/// the failing line): a finding tells the corrective worker what failed, never how it is
/// tested.
pub(crate) fn without_test_source(output: &str, test: &AcceptanceTest) -> String {
    let source: std::collections::BTreeSet<&str> =
        test.files.iter().flat_map(|f| f.content.lines()).map(str::trim).filter(|line| line.len() >= 8).collect();
    output
        .lines()
        .map(|line| if source.contains(line.trim()) { "    [a line of the acceptance test]" } else { line })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Files placed for one run, and the folders made for them; dropped, it takes them away, so a
/// run cut short (a cancelled task) leaves nothing behind either.
#[derive(Default)]
struct Placed {
    files: Vec<PathBuf>,
    folders: Vec<PathBuf>,
}

impl Placed {
    fn put(&mut self, workspace: &Path, path: &str, content: &str) -> Result<(), String> {
        let target = where_it_goes(workspace, path)?;
        if target.symlink_metadata().is_ok() {
            return Err(format!("{path} already exists in the workspace; an acceptance test never replaces a file"));
        }
        // The folders that do not exist yet, outermost first, so they go again afterwards.
        let mut missing: Vec<PathBuf> =
            target.ancestors().skip(1).take_while(|dir| dir.symlink_metadata().is_err()).map(Path::to_owned).collect();
        missing.reverse();
        for folder in missing {
            std::fs::create_dir(&folder).map_err(|e| format!("cannot make {}: {e}", folder.display()))?;
            self.folders.push(folder);
        }
        std::fs::write(&target, content).map_err(|e| format!("cannot place {path}: {e}"))?;
        self.files.push(target);
        Ok(())
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
        // Innermost first; a folder the command filled stays for the ignored-file sweep.
        for folder in self.folders.iter().rev() {
            let _ = std::fs::remove_dir(folder);
        }
    }
}

/// The place of workspace-relative `path`, if it is one an acceptance test may use: plain
/// names only, and a place a write may go (`Confinement::resolve_write`: inside the workspace
/// through whatever links its folders are, never under `.git` or `.missions`).
fn where_it_goes(workspace: &Path, path: &str) -> Result<PathBuf, String> {
    layout::plain_relative(path)
        .ok_or_else(|| format!("`{path}` is not a plain relative path inside the workspace"))?;
    let confinement =
        missions_tools::Confinement::new(workspace).map_err(|e| format!("{}: {e}", workspace.display()))?;
    confinement.resolve_write(path).map_err(|refused| refused.0)
}

/// `path` with its plain names joined by `/`, as the tools name workspace files.
fn normalised(path: &str) -> Option<String> {
    let relative = layout::plain_relative(path)?;
    Some(relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"))
}

#[derive(Deserialize)]
struct WriteInput {
    assertion: String,
    path: String,
    content: String,
}

#[derive(Deserialize)]
struct SubmitInput {
    tests: Vec<SubmittedTest>,
}

#[derive(Deserialize)]
struct SubmittedTest {
    assertion: String,
    command: String,
    #[serde(default)]
    notes: String,
}

/// `submit_acceptance_tests`, with `write_acceptance_test` beside it, for the `acceptance`
/// assertions of a plan (SPEC §5). The files written are held here, never in the tree; the
/// run ends when every assertion has files and a command that fails on the base commit.
pub(crate) struct SubmitAcceptanceTests {
    workspace: PathBuf,
    /// The assertions to cover: id → behaviour.
    assertions: BTreeMap<String, String>,
    /// The files written so far: assertion → path → content.
    files: BTreeMap<String, BTreeMap<String, String>>,
    trial: Trial,
}

impl SubmitAcceptanceTests {
    pub(crate) fn new(workspace: PathBuf, assertions: BTreeMap<String, String>, trial: Trial) -> SubmitAcceptanceTests {
        SubmitAcceptanceTests { workspace, assertions, files: BTreeMap::new(), trial }
    }

    fn write(&mut self, input: &Value) -> Result<String, String> {
        let input: WriteInput = serde_json::from_value(input.clone())
            .map_err(|e| format!("write_acceptance_test needs `assertion`, `path` and `content`: {e}"))?;
        if !self.assertions.contains_key(&input.assertion) {
            return Err(format!(
                "{} is not an acceptance assertion of this plan; write tests for: {}",
                input.assertion,
                self.assertions.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        let Some(path) = normalised(&input.path) else {
            return Err(format!("`{}` is not a plain relative path inside the workspace", input.path));
        };
        let input = WriteInput { path, ..input };
        let target = where_it_goes(&self.workspace, &input.path)?;
        if target.symlink_metadata().is_ok() {
            return Err(format!(
                "{} already exists in the workspace; an acceptance test goes at a new path, never over a file",
                input.path
            ));
        }
        if input.content.trim().is_empty() {
            return Err("the file is empty".into());
        }
        let taken = self
            .files
            .iter()
            .any(|(assertion, files)| *assertion != input.assertion && files.contains_key(&input.path));
        if taken {
            return Err(format!("{} is already a file of another assertion's test", input.path));
        }
        self.files.entry(input.assertion.clone()).or_default().insert(input.path.clone(), input.content);
        Ok(format!(
            "Kept {} for {}. It is placed in the workspace only while its test runs; workers never see it.",
            input.path, input.assertion
        ))
    }
}

impl Terminal for SubmitAcceptanceTests {
    type Output = Vec<AcceptanceTest>;

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "submit_acceptance_tests".into(),
            description: "Submit the acceptance tests: for every acceptance assertion, the command that runs its \
                          files (from the workspace root; exit 0 passes). Each must fail on the base commit."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {"tests": {"type": "array", "items": {"type": "object", "properties": {
                    "assertion": {"type": "string"}, "command": {"type": "string"}, "notes": {"type": "string"}
                }, "required": ["assertion", "command"]}}},
                "required": ["tests"]
            }),
        }
    }

    fn side_specs(&self) -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "write_acceptance_test".into(),
            description: "Write one file of an assertion's acceptance test. `path` is where it sits in the workspace \
                          while the test runs (a new path, never an existing file); the file is kept apart until then."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {"assertion": {"type": "string"}, "path": {"type": "string"}, "content": {"type": "string"}},
                "required": ["assertion", "path", "content"]
            }),
        }]
    }

    fn side_call(&mut self, name: &str, input: &Value) -> Option<Result<String, String>> {
        (name == "write_acceptance_test").then(|| self.write(input))
    }

    async fn accept(&mut self, input: &Value) -> Result<Vec<AcceptanceTest>, String> {
        let input: SubmitInput = serde_json::from_value(input.clone())
            .map_err(|e| format!("the submission does not have the required shape: {e}"))?;
        let mut reasons = Vec::new();
        let mut submitted: BTreeMap<&str, &SubmittedTest> = BTreeMap::new();
        for test in &input.tests {
            if !self.assertions.contains_key(&test.assertion) {
                reasons.push(format!("{} is not an acceptance assertion of this plan", test.assertion));
            } else if test.command.trim().is_empty() {
                reasons.push(format!("{}: the command is empty", test.assertion));
            } else {
                submitted.insert(&test.assertion, test);
            }
        }
        for assertion in self.assertions.keys() {
            if !submitted.contains_key(assertion.as_str()) {
                reasons.push(format!("{assertion} has no test: submit a command for it"));
            } else if self.files.get(assertion).is_none_or(BTreeMap::is_empty) {
                reasons.push(format!("{assertion} has no files: write them with write_acceptance_test first"));
            }
        }
        if !reasons.is_empty() {
            return Err(format!("The tests were not accepted:\n- {}", reasons.join("\n- ")));
        }
        // Each test on the base commit, where it must fail: a test that passes before the work
        // verifies nothing. What the author's own commands left goes first.
        (self.trial.revert)()?;
        let mut tests = Vec::new();
        for (assertion, submitted) in submitted {
            let mut test = AcceptanceTest {
                assertion: assertion.to_owned(),
                command: submitted.command.clone(),
                notes: submitted.notes.clone(),
                files: self.files[assertion]
                    .iter()
                    .map(|(path, content)| AcceptanceTestFile { path: path.clone(), content: content.clone() })
                    .collect(),
                base_exit: None,
                base_output: String::new(),
            };
            let trial = &self.trial;
            let result =
                run_with_files(&self.workspace, &test, &trial.environment, trial.timeout, &trial.recorder).await;
            (trial.revert)()?;
            let result = result.map_err(|problem| format!("The tests were not accepted:\n- {assertion}: {problem}"))?;
            let output = tail(&result.output, KEPT_OUTPUT);
            if result.timed_out || result.exit_code == Some(0) {
                let why = if result.timed_out {
                    "times out on the base commit: a test must end, and fail, before the work exists"
                } else {
                    "passes on the base commit, before any work, so it verifies nothing: make it fail until the \
                     behaviour exists"
                };
                reasons.push(format!("{assertion}: `{}` {why}. Its output:\n{output}", test.command));
                continue;
            }
            test.base_exit = result.exit_code;
            test.base_output = output;
            tests.push(test);
        }
        if !reasons.is_empty() {
            return Err(format!("The tests were not accepted:\n- {}", reasons.join("\n- ")));
        }
        Ok(tests)
    }
}

/// The last `max` bytes of `text`, where a test run's verdict is.
fn tail(text: &str, max: usize) -> String {
    let text = text.trim_end();
    let kept = missions_core::store::clip_tail(text, max);
    match text.len() - kept.len() {
        0 => kept.to_owned(),
        cut => format!("[… {cut} bytes before]\n{kept}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_file_goes_only_where_a_project_keeps_files() {
        let dir = tempfile::tempdir().unwrap();
        let workspace = dir.path().canonicalize().unwrap();
        assert_eq!(where_it_goes(&workspace, "tests/test_a.py").unwrap(), workspace.join("tests/test_a.py"));
        for bad in ["../a.py", "/etc/x", ".git/hooks/pre-commit", ".Git/config", ".missions/m/x.py", ""] {
            assert!(where_it_goes(&workspace, bad).is_err(), "{bad}");
        }
        // Never out of the workspace through a linked folder.
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), workspace.join("linked")).unwrap();
        assert!(where_it_goes(&workspace, "linked/test_a.py").unwrap_err().contains("symbolic link"));
        assert!(where_it_goes(&workspace, "linked/deeper/test_a.py").is_err());
        assert_eq!(normalised("tests//x.py").as_deref(), Some("tests/x.py"));
    }

    #[test]
    fn output_lines_that_quote_the_test_are_left_out() {
        let test = AcceptanceTest {
            assertion: "A1".into(),
            command: "python3 -m unittest t".into(),
            notes: String::new(),
            files: vec![AcceptanceTestFile {
                path: "t.py".into(),
                content: "def test():\n    assert slugify('A') == 'a'\n".into(),
            }],
            base_exit: None,
            base_output: String::new(),
        };
        let output = "  File \"t.py\", line 2, in test\n    assert slugify('A') == 'a'\nAssertionError: 'A' != 'a'";
        let shown = without_test_source(output, &test);
        assert!(!shown.contains("assert slugify"), "{shown}");
        assert!(shown.contains("AssertionError: 'A' != 'a'"), "what failed stays: {shown}");
    }

    #[test]
    fn placed_files_and_their_new_folders_go_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tests")).unwrap();
        let mut placed = Placed::default();
        placed.put(dir.path(), "tests/deep/er/test_a.py", "x").unwrap();
        assert!(dir.path().join("tests/deep/er/test_a.py").exists());
        assert!(placed.put(dir.path(), "tests/deep/er/test_a.py", "y").is_err(), "never over a file");
        drop(placed);
        assert!(!dir.path().join("tests/deep").exists(), "the folders it made go too");
        assert!(dir.path().join("tests").exists(), "the project's folders stay");
    }
}
