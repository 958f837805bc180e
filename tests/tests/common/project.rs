//! A throwaway Python project in a git repository, and the scripted mission that adds a
//! `slugify` function (milestone M1) and a command line for it (milestone M2).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use missions_tests::missions_bin;
use missions_tests::script::{Call, Script, ScriptRole, ScriptedModel, Turn};
use serde_json::{Value, json};

pub const KEY: &str = "sk-ant-test-secret-0123456789";

pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .output()
        .expect("git");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A git repository holding a small Python package with a passing test suite.
pub fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        (".gitignore", "__pycache__/\n"),
        ("textkit/__init__.py", ""),
        ("textkit/core.py", "def shout(text):\n    \"\"\"Upper-case text.\"\"\"\n    return text.upper()\n"),
        ("tests/__init__.py", ""),
        (
            "tests/test_core.py",
            "import unittest\nfrom textkit.core import shout\n\n\nclass TestShout(unittest.TestCase):\n    def test_shout(self):\n        self.assertEqual(shout('hi'), 'HI')\n",
        ),
        ("BACKLOG.md", "# Backlog\n\n- [ ] Add slugify\n  A slugify(text) function and a `slug` command.\n"),
    ];
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-q", "-m", "initial"]);
    dir
}

/// Writes the workspace config (kept out of git by .git/info/exclude).
pub fn configure(dir: &Path, toml: &str) {
    std::fs::create_dir_all(dir.join(".missions")).unwrap();
    std::fs::write(dir.join(".missions/config.toml"), toml).unwrap();
    let exclude = dir.join(".git/info/exclude");
    let existing = std::fs::read_to_string(&exclude).unwrap_or_default();
    if !existing.contains("/.missions/") {
        std::fs::write(&exclude, format!("{existing}/.missions/\n")).unwrap();
    }
}

/// A fresh [`project`] configured to use `model` for every role, with `extra` TOML appended.
pub fn project_for(model: &ScriptedModel, extra: &str) -> tempfile::TempDir {
    let dir = project();
    configure(dir.path(), &model.config_toml(extra));
    dir
}

/// Runs the `missions` binary in `dir` with an isolated home and the test key.
pub fn missions(dir: &Path, args: &[&str]) -> Output {
    missions_command(dir, args).output().expect("run missions")
}

pub fn missions_command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(missions_bin());
    command
        .args(args)
        .arg("--workspace")
        .arg(dir)
        .env("MISSIONS_HOME", dir.join(".missions/test-home"))
        .env("MISSIONS_TEST_KEY", KEY)
        .env("ANTHROPIC_API_KEY", KEY)
        .env_remove("MISSIONS_CONFIG")
        .env_remove("OPENAI_API_KEY")
        // Python writes its bytecode caches as on a user's machine, whatever this one's
        // settings, so tests see what commands really leave.
        .env_remove("PYTHONDONTWRITEBYTECODE")
        .env_remove("PYTHONPYCACHEPREFIX");
    command
}

pub async fn missions_async(dir: &Path, args: &[&str]) -> Output {
    let dir = dir.to_owned();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        missions(&dir, &args)
    })
    .await
    .unwrap()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The id of the only mission in the workspace.
pub fn mission_id(dir: &Path) -> String {
    let mut ids: Vec<String> = std::fs::read_dir(dir.join(".missions"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().join("events.jsonl").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids.remove(0)
}

pub fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

pub fn plan() -> Value {
    json!({
        "title": "Slugify", "summary": "Add slugify() and a `slug` command.",
        "milestones": [
            {"id": "M1", "title": "slugify()", "features": [
                {"id": "F1", "title": "slugify function", "description": "Add textkit/slug.py with slugify(text) and its tests.", "assertions": ["A1", "A2"]}
            ]},
            {"id": "M2", "title": "slug command", "features": [
                {"id": "F2", "title": "slug command", "description": "Add `python3 -m textkit slug TEXT`.", "assertions": ["A3", "A4"]}
            ]}
        ],
        "contract": [
            {"id": "A1", "milestone": "M1", "description": "slugify's tests pass", "check": {"kind": "command", "command": "python3 -m unittest tests.test_slug", "expect_exit": 0}},
            {"id": "A2", "milestone": "M1", "description": "slugify is documented", "check": {"kind": "review", "rubric": "slugify has a docstring with an example"}},
            {"id": "A3", "milestone": "M2", "description": "the command's tests pass", "check": {"kind": "command", "command": "python3 -m unittest tests.test_cli", "expect_exit": 0}},
            {"id": "A4", "milestone": "M2", "description": "a user can slug text", "check": {"kind": "user_test", "steps": "run `python3 -m textkit slug 'Hello World'`; it prints hello-world"}}
        ]
    })
}

pub const SLUG_GOOD: &str = "import re\n\n\ndef slugify(text):\n    \"\"\"Make a URL slug: slugify('Hello World') == 'hello-world'.\"\"\"\n    return re.sub(r'[^a-z0-9]+', '-', text.lower()).strip('-')\n";
pub const SLUG_BUGGY: &str = "import re\n\n\ndef slugify(text):\n    \"\"\"Make a URL slug: slugify('Hello World') == 'hello-world'.\"\"\"\n    return re.sub(r'[^A-Za-z0-9]+', '-', text).strip('-')\n";
pub const SLUG_TEST: &str = "import unittest\nfrom textkit.slug import slugify\n\n\nclass TestSlug(unittest.TestCase):\n    def test_words(self):\n        self.assertEqual(slugify('Hello World'), 'hello-world')\n\n    def test_punctuation(self):\n        self.assertEqual(slugify('  a, b!  '), 'a-b')\n";
pub const CLI_MAIN: &str = "import sys\nfrom textkit.slug import slugify\n\nif __name__ == '__main__':\n    if len(sys.argv) == 3 and sys.argv[1] == 'slug':\n        print(slugify(sys.argv[2]))\n    else:\n        print('usage: python3 -m textkit slug TEXT', file=sys.stderr)\n        sys.exit(2)\n";
pub const CLI_TEST: &str = "import subprocess\nimport sys\nimport unittest\n\n\nclass TestCli(unittest.TestCase):\n    def test_slug(self):\n        out = subprocess.run([sys.executable, '-m', 'textkit', 'slug', 'Hello World'], capture_output=True, text=True)\n        self.assertEqual(out.stdout.strip(), 'hello-world')\n";

/// The assertion ids a reviewer or user tester is asked to judge.
pub fn asked(call: &Call) -> Vec<String> {
    let line = call.first_message.lines().find(|l| l.starts_with("Assertions to judge: ")).unwrap_or_default();
    let list = line.trim_start_matches("Assertions to judge: ");
    if list.starts_with("none") { Vec::new() } else { list.split(", ").map(str::to_owned).collect() }
}

pub fn pass_all(call: &Call) -> Turn {
    pass_all_noting(call, json!([]))
}

/// Passes every assertion asked, reporting `findings` beside the verdicts.
pub fn pass_all_noting(call: &Call, findings: Value) -> Turn {
    let verdicts: Vec<Value> = asked(call)
        .iter()
        .map(|a| json!({"assertion": a, "pass": true, "evidence": "read the code and ran it"}))
        .collect();
    Turn::call("report_findings", json!({"verdicts": verdicts, "findings": findings}))
}

/// The F1 worker's turn that writes a correct slugify and its tests.
pub fn write_slugify() -> Turn {
    Turn::calls(vec![
        ("write_file", json!({"path": "textkit/slug.py", "content": SLUG_GOOD})),
        ("write_file", json!({"path": "tests/test_slug.py", "content": SLUG_TEST})),
    ])
}

pub fn handoff(summary: &str, commands: Value) -> Turn {
    Turn::call(
        "submit_handoff",
        json!({"summary": summary, "completed": [summary], "skipped": [], "commands": commands, "issues": [],
               "procedures_followed": true, "procedure_notes": ""}),
    )
}

/// How the scripted mission should go.
#[derive(Clone, Copy, Default)]
pub struct Story {
    /// F1 first writes a slugify that forgets to lower-case; the boundary corrects it.
    pub buggy_first: bool,
    /// The corrective worker never really fixes the bug.
    pub never_fixed: bool,
    /// A1 is an acceptance assertion: the test author writes [`ACCEPTANCE_TEST`] before the
    /// work, and F1's worker tests its code with [`WEAK_TEST`], which passes on the buggy
    /// slugify, so only the hidden test catches the bug.
    pub acceptance: bool,
    /// The corrective feature's review leaves a warning on A2 (the docstring's example) that no
    /// one fixes, so a finding is still open when the milestone waits for acceptance.
    pub review_note: bool,
}

/// The behaviour of A1 as an acceptance assertion.
pub const BEHAVIOUR: &str = "slugify lower-cases what it slugs: slugify('Hello World') == 'hello-world'";
pub const ACCEPTANCE_PATH: &str = "tests/test_acceptance_slug.py";
pub const ACCEPTANCE_COMMAND: &str = "python3 -m unittest tests.test_acceptance_slug";
pub const ACCEPTANCE_TEST: &str = "import unittest\nfrom textkit.slug import slugify\n\n\nclass AcceptanceSlug(unittest.TestCase):\n    def test_lower_case(self):\n        self.assertEqual(slugify('Hello World'), 'hello-world')\n";
/// F1's own test in the acceptance story: it checks punctuation only, so it passes on the
/// buggy slugify.
pub const WEAK_TEST: &str = "import unittest\nfrom textkit.slug import slugify\n\n\nclass TestSlug(unittest.TestCase):\n    def test_punctuation(self):\n        self.assertEqual(slugify('a, b!'), 'a-b')\n";

/// The slugify plan with A1 an acceptance assertion.
pub fn acceptance_plan() -> Value {
    let mut plan = plan();
    plan["contract"][0] = json!({"id": "A1", "milestone": "M1", "description": "slugify lower-cases",
                                 "check": {"kind": "acceptance", "behaviour": BEHAVIOUR}});
    plan
}

pub fn write_the_acceptance_test() -> Turn {
    Turn::call("write_acceptance_test", json!({"assertion": "A1", "path": ACCEPTANCE_PATH, "content": ACCEPTANCE_TEST}))
}

pub fn submit_the_acceptance_test() -> Turn {
    Turn::call(
        "submit_acceptance_tests",
        json!({"tests": [{"assertion": "A1", "command": ACCEPTANCE_COMMAND, "notes": "pins the lower-casing"}]}),
    )
}

/// The warning F1-fix1's review leaves when the story has a review note.
pub const REVIEW_NOTE: &str = "The docstring's example has no punctuation; show one such as slugify('a, b!') == 'a-b'.";

/// The scripted model for the slugify mission.
pub fn slugify_script(story: Story) -> Script {
    Arc::new(move |call: &Call| match call.role {
        ScriptRole::Planner => match call.turn {
            0 => Turn::call("list_files", json!({})),
            _ => Turn::call("submit_plan", if story.acceptance { acceptance_plan() } else { plan() }),
        },
        ScriptRole::Worker if call.first_line.starts_with("Feature F1:") => {
            let slug = if story.buggy_first { SLUG_BUGGY } else { SLUG_GOOD };
            // The worker's own test fails on its buggy code, unless it is the weak one.
            let (test, test_exit) = match (story.acceptance, story.buggy_first) {
                (true, _) => (WEAK_TEST, 0),
                (false, true) => (SLUG_TEST, 1),
                (false, false) => (SLUG_TEST, 0),
            };
            match call.turn {
                0 => Turn::calls(vec![
                    ("write_file", json!({"path": "textkit/slug.py", "content": slug})),
                    ("write_file", json!({"path": "tests/test_slug.py", "content": test})),
                ]),
                1 => Turn::call("run_command", json!({"command": "python3 -m unittest tests.test_slug"})),
                _ => handoff(
                    "Added slugify and its tests.",
                    json!([{"command": "python3 -m unittest tests.test_slug", "exit_code": test_exit}]),
                ),
            }
        }
        ScriptRole::Worker if call.first_line.starts_with("Feature F1-fix") => {
            let (old, new) = if story.never_fixed {
                ("strip('-')", "strip('-')  # still wrong")
            } else {
                ("text).strip", "text.lower()).strip")
            };
            match call.turn {
                0 => Turn::call("edit_file", json!({"path": "textkit/slug.py", "old": old, "new": new})),
                1 => Turn::call("run_command", json!({"command": "python3 -m unittest tests.test_slug"})),
                _ => {
                    let exit = if story.never_fixed { 1 } else { 0 };
                    handoff(
                        "Lower-cased the text before slugging.",
                        json!([{"command": "python3 -m unittest tests.test_slug", "exit_code": exit}]),
                    )
                }
            }
        }
        ScriptRole::Worker if call.first_line.starts_with("Feature F2:") => match call.turn {
            0 => Turn::calls(vec![
                ("write_file", json!({"path": "textkit/__main__.py", "content": CLI_MAIN})),
                ("write_file", json!({"path": "tests/test_cli.py", "content": CLI_TEST})),
            ]),
            1 => Turn::call("run_command", json!({"command": "python3 -m unittest tests.test_cli"})),
            _ => handoff(
                "Added the slug command.",
                json!([{"command": "python3 -m unittest tests.test_cli", "exit_code": 0}]),
            ),
        },
        ScriptRole::Worker => handoff("Nothing to do.", json!([])),
        ScriptRole::Reviewer if story.review_note && call.first_line.starts_with("Review feature F1-fix1 ") => {
            let note = json!({"severity": "warning", "path": "textkit/slug.py", "line": 5, "assertion": "A2", "message": REVIEW_NOTE});
            pass_all_noting(call, json!([note]))
        }
        ScriptRole::Reviewer => pass_all(call),
        ScriptRole::TestAuthor => match call.turn {
            0 => write_the_acceptance_test(),
            _ => submit_the_acceptance_test(),
        },
        ScriptRole::UserTester => match call.turn {
            0 => Turn::call("run_command", json!({"command": "python3 -m textkit slug 'Hello World'"})),
            _ => {
                let printed = call.results.first().map(|(text, _)| text.contains("hello-world")).unwrap_or(false);
                let verdicts: Vec<Value> = asked(call).iter().map(|a| json!({"assertion": a, "pass": printed, "evidence": "ran python3 -m textkit slug 'Hello World'"})).collect();
                Turn::call("report_findings", json!({"verdicts": verdicts, "findings": []}))
            }
        },
        ScriptRole::Boundary => {
            let round_one = call.first_line.contains("(round 1 of");
            let milestone = call.first_line.split_whitespace().nth(1).unwrap_or("M1").to_owned();
            let fix_needed = story.buggy_first && milestone == "M1";
            if fix_needed && (round_one || story.never_fixed) {
                match call.turn {
                    // First try to complete anyway: the engine must refuse.
                    0 if round_one => {
                        Turn::call("decide_milestone", json!({"decision": "complete", "notes": "looks done"}))
                    }
                    _ => {
                        let n =
                            call.first_line.split("(round ").nth(1).and_then(|r| r.split(' ').next()).unwrap_or("1");
                        Turn::call(
                            "decide_milestone",
                            json!({"decision": "correct", "notes": "A1 fails: slugify keeps upper case",
                                   "corrections": [{"id": format!("F1-fix{n}"), "title": "lower-case the slug", "description": "slugify must lower-case; see A1's evidence", "assertions": ["A1"]}]}),
                        )
                    }
                }
            } else {
                Turn::call("decide_milestone", json!({"decision": "complete", "notes": "every assertion passes"}))
            }
        }
    })
}

/// The slugify story with one role's answers replaced.
pub fn with(override_fn: impl Fn(&Call) -> Option<Turn> + Send + Sync + 'static) -> Script {
    with_story(Story::default(), override_fn)
}

/// The slugify mission told as `story`, with the answers `override_fn` gives replaced.
pub fn with_story(story: Story, override_fn: impl Fn(&Call) -> Option<Turn> + Send + Sync + 'static) -> Script {
    let base = slugify_script(story);
    Arc::new(move |call: &Call| override_fn(call).unwrap_or_else(|| base(call)))
}

pub fn events(dir: &std::path::Path, id: &str) -> Vec<Value> {
    std::fs::read_to_string(dir.join(".missions").join(id).join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits until the mission's log holds an event matching `pred`.
pub async fn wait_for_event(dir: &std::path::Path, pred: impl Fn(&Value) -> bool) -> String {
    let started = Instant::now();
    loop {
        let ids: Vec<String> = std::fs::read_dir(dir.join(".missions"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.path().join("events.jsonl").exists())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if let [id] = ids.as_slice()
            && events(dir, id).iter().any(&pred)
        {
            return id.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the event never came");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Runs the slugify mission (`run --text "Add slugify"` with `flags`) in a fresh project for
/// `model` configured with `extra`, expects exit code `exit`, and returns the project and the
/// mission id.
pub async fn run_slugify(model: &ScriptedModel, extra: &str, flags: &[&str], exit: i32) -> (tempfile::TempDir, String) {
    let dir = project_for(model, extra);
    let mut args = vec!["run", "--text", "Add slugify"];
    args.extend_from_slice(flags);
    let output = missions_async(dir.path(), &args).await;
    assert_eq!(output.status.code(), Some(exit), "{}", stderr(&output));
    let id = mission_id(dir.path());
    (dir, id)
}
