//! The tools Missions offers to models (SPEC §5), with exactly those names and fields.
//!
//! A [`ToolBox`] serves one agent run: it knows the run's [`ToolSet`] (which tools its role
//! may use), confines every path to the workspace ([`paths::Confinement`]), runs commands in
//! process groups without the configured keys ([`command`]), tracks the processes a
//! user-testing run starts ([`process::Processes`]) and records every command it ran, so the
//! engine can check a worker's handoff against what really happened.
//!
//! Invariant: a tool call never fails the run. Bad input, a refused path, a failing command —
//! each comes back as a [`ToolOutput`] with `is_error` set and a message that says why.
//!
//! The terminal tools (`submit_plan`, `submit_handoff`, `decide_milestone`, `report_findings`)
//! belong to the engine, which checks their content; they are not here.

pub mod command;
pub mod files;
pub mod map_cache;
pub mod output;
pub mod paths;
pub mod process;
pub mod rank;
pub mod repo_map;
pub mod sandbox;
pub mod search;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use missions_core::mission::ObservedCommand;
use missions_core::model::ToolSpec;
use missions_core::sync::lock;
use serde::Deserialize;
use serde_json::{Value, json};

pub use command::{CommandEnvironment, Sandbox};
pub use paths::Confinement;

/// Which tools a run may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolSet {
    /// The orchestrator at a boundary: read-only tools.
    ReadOnly,
    /// The orchestrator planning: read-only tools and commands (their changes are reverted).
    Planner,
    /// A worker: read-only tools, file writes, commands.
    Worker,
    /// A review agent: read-only tools and commands.
    Reviewer,
    /// The user-testing agent: read-only tools, commands, processes and loopback HTTP.
    UserTester,
}

impl ToolSet {
    /// Every tool set, for checks that must cover them all.
    pub const ALL: [ToolSet; 5] =
        [ToolSet::ReadOnly, ToolSet::Planner, ToolSet::Worker, ToolSet::Reviewer, ToolSet::UserTester];

    pub fn names(self) -> &'static [&'static str] {
        const READ: [&str; 4] = ["read_file", "list_files", "search", "repo_map"];
        match self {
            ToolSet::ReadOnly => &READ,
            ToolSet::Worker => {
                &["read_file", "list_files", "search", "repo_map", "write_file", "edit_file", "run_command"]
            }
            ToolSet::Reviewer | ToolSet::Planner => &["read_file", "list_files", "search", "repo_map", "run_command"],
            ToolSet::UserTester => &[
                "read_file",
                "list_files",
                "search",
                "repo_map",
                "run_command",
                "start_process",
                "stop_process",
                "http_request",
            ],
        }
    }
}

/// Decides whether a file may be written now; the language server refuses files with unsaved
/// changes in the editor (SPEC §8).
pub trait WriteGuard: Send + Sync {
    /// `Err` with a message naming why, e.g. "src/a.py has unsaved changes in the editor".
    fn check(&self, relative_path: &str) -> Result<(), String>;
}

/// Waits until the record of a write is durable ([`WorkRecorder::before_write`]).
pub type RecordedAhead = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// Hears what a run does to the working tree, so that a resume after a crash can tell the
/// mission's unfinished work from the user's: nothing is reset that the mission cannot prove
/// is its own.
pub trait WorkRecorder: Send + Sync {
    /// Called before a file tool writes `content` to `relative_path`. An `Err` refuses the
    /// write: a change that could not be recorded must not happen. `Ok` holds what to wait
    /// for before the file takes its place: the record may still be on its way to the disk
    /// while the file is written aside, and the file is put in place only once the record is
    /// durable (when the wait returns `Ok`).
    fn before_write(&self, relative_path: &str, content: &[u8]) -> Result<RecordedAhead, String>;
    /// Called before each command the run starts.
    fn before_command(&self);
    /// Called after each command the run started has ended (or was killed): what changed
    /// since [`WorkRecorder::before_command`] is the command's.
    fn after_command(&self);
}

/// The result of one tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    pub content: String,
    pub is_error: bool,
    /// Set when a write was refused because the editor holds unsaved changes to the file:
    /// the mission must pause with reason `conflict`.
    pub conflict: Option<String>,
}

impl ToolOutput {
    fn ok(content: String) -> ToolOutput {
        ToolOutput { content, is_error: false, conflict: None }
    }

    fn error(content: impl Into<String>) -> ToolOutput {
        ToolOutput { content: content.into(), is_error: true, conflict: None }
    }
}

/// Settings of a tool box beyond the workspace and tool set.
#[derive(Clone)]
pub struct ToolSettings {
    pub environment: CommandEnvironment,
    /// `run_command`'s default timeout (SPEC §5: 120 s).
    pub default_timeout: Duration,
    /// The cap on `timeout_s` (config `mission.max_command_timeout_s`).
    pub max_timeout: Duration,
    /// What the run is about, for ranking `repo_map`.
    pub focus: String,
    /// `repo_map`'s token budget.
    pub map_tokens: usize,
    pub write_guard: Option<Arc<dyn WriteGuard>>,
    pub work_recorder: Option<Arc<dyn WorkRecorder>>,
    /// Directories the run may not see (see [`Confinement::hiding`]).
    pub hidden: Vec<std::path::PathBuf>,
    /// Workspace-relative paths the run may not write, each with the reason it is told.
    pub reserved: std::collections::BTreeMap<String, String>,
}

pub struct ToolBox {
    confinement: Confinement,
    set: ToolSet,
    settings: ToolSettings,
    observed: Arc<Mutex<Vec<ObservedCommand>>>,
    processes: process::Processes,
    /// Writes answered before they took their place, in the order they were written: each
    /// lands as soon as its record is durable, and is waited for before the run looks at the
    /// tree again ([`ToolBox::settle`]).
    landing: Mutex<Vec<Landing>>,
}

/// A write told to the model as done, landing in the background.
struct Landing {
    relative: String,
    /// Says how the landing went, once it is over.
    landed: std::sync::mpsc::Receiver<Result<(), String>>,
}

#[derive(Deserialize)]
struct ReadFileInput {
    path: String,
    offset: Option<u64>,
    limit: Option<u64>,
}

#[derive(Deserialize)]
struct ListFilesInput {
    path: Option<String>,
    glob: Option<String>,
}

#[derive(Deserialize)]
struct SearchInput {
    pattern: String,
    path: Option<String>,
    glob: Option<String>,
}

#[derive(Deserialize)]
struct RepoMapInput {
    path: Option<String>,
}

#[derive(Deserialize)]
struct WriteFileInput {
    path: String,
    content: String,
}

#[derive(Deserialize)]
struct EditFileInput {
    path: String,
    old: String,
    new: String,
}

#[derive(Deserialize)]
struct RunCommandInput {
    command: String,
    timeout_s: Option<f64>,
}

#[derive(Deserialize)]
struct StartProcessInput {
    name: String,
    command: String,
    ready_pattern: Option<String>,
    ready_url: Option<String>,
}

#[derive(Deserialize)]
struct StopProcessInput {
    name: String,
}

#[derive(Deserialize)]
struct HttpRequestInput {
    method: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
}

fn parse<T: for<'de> Deserialize<'de>>(tool: &str, input: &Value) -> Result<T, ToolOutput> {
    serde_json::from_value(input.clone()).map_err(|error| {
        let why = mistyped_field(tool, input).unwrap_or_else(|| error.to_string());
        ToolOutput::error(format!("invalid input for {tool}: {why}"))
    })
}

/// Names the field whose value has the wrong JSON type, from the tool's schema: serde's own
/// message ("invalid type: integer `7`, expected a string") does not say which field it is.
fn mistyped_field(tool: &str, input: &Value) -> Option<String> {
    let Some(object) = input.as_object() else {
        return Some("the input must be a JSON object of the tool's fields".into());
    };
    let spec = tool_spec(tool)?;
    let properties = spec.input_schema["properties"].as_object()?.clone();
    properties.iter().find_map(|(field, schema)| {
        let value = object.get(field)?;
        let expected = schema["type"].as_str()?;
        let fits = match expected {
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "object" => value.is_object(),
            "array" => value.is_array(),
            _ => true,
        };
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        };
        (!fits).then(|| format!("`{field}` must be of type {expected}, not {actual}"))
    })
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

/// The JSON schema of every tool this crate serves, by name. Built once per process: every
/// run asks for its tools' schemas.
pub fn tool_spec(name: &str) -> Option<ToolSpec> {
    static SPECS: std::sync::OnceLock<BTreeMap<&'static str, ToolSpec>> = std::sync::OnceLock::new();
    SPECS
        .get_or_init(|| {
            ToolSet::ALL
                .iter()
                .flat_map(|set| set.names().iter())
                .filter_map(|name| Some((*name, build_tool_spec(name)?)))
                .collect()
        })
        .get(name)
        .cloned()
}

fn build_tool_spec(name: &str) -> Option<ToolSpec> {
    let (description, properties, required): (&str, Value, Vec<&str>) = match name {
        "read_file" => (
            "Read a text file of the workspace. Lines come numbered. Use offset (1-based line) and limit (lines) to page through long files.",
            json!({"path": string("Path relative to the workspace root."), "offset": {"type": "integer", "minimum": 1}, "limit": {"type": "integer", "minimum": 1}}),
            vec!["path"],
        ),
        "list_files" => (
            "List the files under a directory of the workspace, honouring .gitignore, optionally filtered by a glob such as `**/*.py`.",
            json!({"path": string("Directory relative to the workspace root; the root if omitted."), "glob": string("Glob matched against the relative path or file name.")}),
            vec![],
        ),
        "search" => (
            "Search the workspace with a regular expression (Rust regex syntax), honouring .gitignore. Returns path:line:text lines.",
            json!({"pattern": string("Regular expression."), "path": string("Directory or file to search; the root if omitted."), "glob": string("Only search files matching this glob.")}),
            vec!["pattern"],
        ),
        "repo_map" => (
            "Outline the definitions (functions, types, classes) of the repository or of a directory, ranked toward the task.",
            json!({"path": string("Directory to map; the whole workspace if omitted.")}),
            vec![],
        ),
        "write_file" => (
            "Create or replace a file with the given content. Directories are created as needed. Not allowed under .git/ or .missions/.",
            json!({"path": string("Path relative to the workspace root."), "content": string("The whole new content of the file.")}),
            vec!["path", "content"],
        ),
        "edit_file" => (
            "Replace one exact occurrence of `old` with `new` in a file. `old` must match exactly one place, whitespace included.",
            json!({"path": string("Path relative to the workspace root."), "old": string("Exact text to replace."), "new": string("Replacement text.")}),
            vec!["path", "old", "new"],
        ),
        "run_command" => (
            "Run a shell command (sh -c) in the workspace root. Returns the exit code and the output (at most 64 KiB: head and tail). On timeout the command and everything it started are killed.",
            json!({"command": string("The shell command."), "timeout_s": {"type": "number", "description": "Seconds before the command is killed (default 120).", "minimum": 1}}),
            vec!["command"],
        ),
        "start_process" => (
            "Start a long-running process (a server, the program under test) under a name, and wait until it is ready: its output matches ready_pattern, or ready_url answers.",
            json!({"name": string("A name to refer to the process by."), "command": string("Shell command that starts it."), "ready_pattern": string("Regular expression its output matches once it is ready."), "ready_url": string("Loopback URL that answers once it is ready.")}),
            vec!["name", "command"],
        ),
        "stop_process" => (
            "Stop a process started with start_process and return its output.",
            json!({"name": string("The process's name.")}),
            vec!["name"],
        ),
        "http_request" => (
            "Send one HTTP request to a loopback address (127.0.0.1, localhost, [::1]) and return status, headers and body.",
            json!({"method": string("GET, POST, …"), "url": string("Loopback URL."), "headers": {"type": "object", "additionalProperties": {"type": "string"}}, "body": string("Request body.")}),
            vec!["method", "url"],
        ),
        _ => return None,
    };
    Some(ToolSpec {
        name: name.to_owned(),
        description: description.to_owned(),
        input_schema: json!({"type": "object", "properties": properties, "required": required}),
    })
}

impl ToolBox {
    pub fn new(root: &Path, set: ToolSet, settings: ToolSettings) -> std::io::Result<ToolBox> {
        Ok(ToolBox {
            confinement: Confinement::new(root)?.hiding(&settings.hidden),
            set,
            settings,
            observed: Arc::new(Mutex::new(Vec::new())),
            processes: process::Processes::default(),
            landing: Mutex::new(Vec::new()),
        })
    }

    pub fn confinement(&self) -> &Confinement {
        &self.confinement
    }

    /// The specs of the tools this run may use.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.set.names().iter().filter_map(|name| tool_spec(name)).collect()
    }

    /// The live list of the commands this run ran, for a terminal tool that checks claims
    /// against it while the run goes on.
    pub fn observed_handle(&self) -> Arc<Mutex<Vec<ObservedCommand>>> {
        self.observed.clone()
    }

    /// Every command this run ran, with its observed exit code and duration.
    pub fn observed_commands(&self) -> Vec<ObservedCommand> {
        lock(&self.observed).clone()
    }

    /// Ends the run's processes and puts its last writes in place.
    pub fn finish(&self) {
        self.processes.stop_all();
        if let Err(failure) = self.settle() {
            tracing::error!("{failure}");
        }
    }

    /// Waits until every write answered so far has landed. A write is answered as soon as its
    /// content is written aside, and lands on a pooled thread once its record is durable
    /// (within a sync, as it did when the run waited for it), so the sync goes on while the
    /// model reads the answer; whatever looks at the tree next (any call, the run's end)
    /// settles first. `Err` names the writes that never took their place, their records
    /// having failed.
    pub fn settle(&self) -> Result<(), String> {
        let landing = std::mem::take(&mut *lock(&self.landing));
        let failed: Vec<String> = landing
            .into_iter()
            .filter_map(|Landing { relative, landed }| {
                let outcome = landed.recv().unwrap_or_else(|_| Err("its landing was cut off".to_owned()));
                outcome.err().map(|reason| format!("{relative} ({reason})"))
            })
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(format!("files reported written were not, as their record failed: {}", failed.join(", ")))
        }
    }

    /// Runs one tool call. Never panics and never fails the run: every problem is a result.
    pub async fn call(&self, name: &str, input: &Value) -> ToolOutput {
        if let Err(failure) = self.settle() {
            return ToolOutput::error(format!("{failure}; `{name}` was not run"));
        }
        if !self.set.names().contains(&name) {
            return ToolOutput::error(format!(
                "`{name}` is not a tool of this run; available: {}",
                self.set.names().join(", ")
            ));
        }
        let output = match self.dispatch(name, input).await {
            Ok(output) | Err(output) => output,
        };
        // Whatever a tool read or ran, a configured key never reaches the model.
        ToolOutput { content: self.settings.environment.redactor.redact(&output.content), ..output }
    }

    async fn dispatch(&self, name: &str, input: &Value) -> Result<ToolOutput, ToolOutput> {
        let c = &self.confinement;
        let result = match name {
            "read_file" => {
                let i: ReadFileInput = parse(name, input)?;
                files::read_file(c, &i.path, i.offset, i.limit)
            }
            "list_files" => {
                let i: ListFilesInput = parse(name, input)?;
                files::list_files(c, i.path.as_deref(), i.glob.as_deref())
            }
            "search" => {
                let i: SearchInput = parse(name, input)?;
                search::search(c, &i.pattern, i.path.as_deref(), i.glob.as_deref())
            }
            "repo_map" => {
                let i: RepoMapInput = parse(name, input)?;
                repo_map::repo_map(c, i.path.as_deref(), &self.settings.focus, self.settings.map_tokens)
            }
            "write_file" => {
                let i: WriteFileInput = parse(name, input)?;
                return Ok(self.write(&i.path, |_| Ok(i.content.clone())));
            }
            "edit_file" => {
                let i: EditFileInput = parse(name, input)?;
                return Ok(self.write(&i.path, |resolved| {
                    let text = std::fs::read_to_string(resolved).map_err(|e| format!("`{}`: {e}", i.path))?;
                    files::edit_text(&i.path, &text, &i.old, &i.new)
                }));
            }
            "run_command" => {
                let i: RunCommandInput = parse(name, input)?;
                return Ok(self.run(&i.command, i.timeout_s).await);
            }
            "start_process" => {
                let i: StartProcessInput = parse(name, input)?;
                self.processes
                    .start(
                        &self.settings.environment,
                        &i.name,
                        &i.command,
                        i.ready_pattern.as_deref(),
                        i.ready_url.as_deref(),
                    )
                    .await
            }
            "stop_process" => {
                let i: StopProcessInput = parse(name, input)?;
                self.processes.stop(&self.settings.environment, &i.name).await
            }
            "http_request" => {
                let i: HttpRequestInput = parse(name, input)?;
                process::http_request(&i.method, &i.url, &i.headers, i.body.as_deref()).await
            }
            other => Err(format!("unknown tool `{other}`")),
        };
        Ok(match result {
            Ok(text) => ToolOutput::ok(text),
            Err(text) => ToolOutput::error(text),
        })
    }

    /// Writes a file through the confinement and the editor guard; `content` computes the new
    /// text from the resolved path (an edit reads the old text first).
    fn write(&self, path: &str, content: impl FnOnce(&Path) -> Result<String, String>) -> ToolOutput {
        let resolved = match self.confinement.resolve_write(path) {
            Ok(resolved) => resolved,
            Err(refused) => return ToolOutput::error(refused.0),
        };
        let relative = self.confinement.relative(&resolved);
        if let Some(reason) = self.settings.reserved.get(&relative) {
            return ToolOutput::error(reason.clone());
        }
        if let Some(guard) = &self.settings.write_guard
            && let Err(reason) = guard.check(&relative)
        {
            return ToolOutput { content: reason, is_error: true, conflict: Some(relative) };
        }
        let text = match content(&resolved) {
            Ok(text) => text,
            Err(message) => return ToolOutput::error(message),
        };
        let written = match &self.settings.work_recorder {
            Some(recorder) => recorder.before_write(&relative, text.as_bytes()).and_then(|recorded| {
                let aside = files::write_aside(&resolved, &text)?;
                let existed = aside.existed();
                self.land_once_recorded(relative.clone(), aside, recorded);
                Ok(existed)
            }),
            None => files::write_file(&resolved, &text),
        };
        match written {
            Ok(existed) => ToolOutput::ok(format!(
                "{} {relative} ({} bytes, {} lines)",
                if existed { "updated" } else { "created" },
                text.len(),
                text.lines().count()
            )),
            Err(message) => ToolOutput::error(format!("{relative} was not written: {message}")),
        }
    }

    /// Puts `aside` in its place as soon as `recorded` says its record is durable: on a pooled
    /// thread when a runtime has one (the run goes on meanwhile), here otherwise.
    fn land_once_recorded(&self, relative: String, aside: files::Aside, recorded: RecordedAhead) {
        let (report, landed) = std::sync::mpsc::channel();
        let land = move || {
            let _ = report.send(aside.land(Some(recorded)));
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(land)),
            Err(_) => land(),
        }
        lock(&self.landing).push(Landing { relative, landed });
    }

    async fn run(&self, script: &str, timeout_s: Option<f64>) -> ToolOutput {
        let requested = timeout_s
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(self.settings.default_timeout);
        let timeout = requested.min(self.settings.max_timeout);
        let started = Instant::now();
        if let Some(recorder) = &self.settings.work_recorder {
            recorder.before_command();
        }
        let result = command::run_command(&self.settings.environment, script, timeout).await;
        if let Some(recorder) = &self.settings.work_recorder {
            recorder.after_command();
        }
        match result {
            Ok(result) => {
                lock(&self.observed).push(ObservedCommand {
                    command: script.to_owned(),
                    exit_code: result.exit_code,
                    duration_ms: started.elapsed().as_millis() as u64,
                });
                // A command that ran and failed is a result, not a tool error: its exit code and
                // output are what the model needs.
                ToolOutput::ok(result.describe(timeout))
            }
            Err(message) => ToolOutput::error(message),
        }
    }
}

impl Drop for ToolBox {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Condvar;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Records nothing; a write's wait for its record returns once the gate is open, saying
    /// the record is durable, or that it failed.
    #[derive(Default)]
    struct Records {
        fail: AtomicBool,
        gate: Arc<(Mutex<bool>, Condvar)>,
    }

    impl Records {
        fn open_gate(&self) {
            *lock(&self.gate.0) = true;
            self.gate.1.notify_all();
        }
    }

    impl WorkRecorder for Records {
        fn before_write(&self, _: &str, _: &[u8]) -> Result<RecordedAhead, String> {
            let (fail, gate) = (self.fail.load(Ordering::SeqCst), self.gate.clone());
            Ok(Box::new(move || {
                let mut open = lock(&gate.0);
                while !*open {
                    open = gate.1.wait(open).unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                if fail { Err("the disk is full".into()) } else { Ok(()) }
            }))
        }
        fn before_command(&self) {}
        fn after_command(&self) {}
    }

    fn worker_tools(root: &Path, records: Arc<Records>) -> ToolBox {
        let settings = ToolSettings {
            environment: CommandEnvironment {
                root: root.to_owned(),
                secret_env: Vec::new(),
                redactor: missions_core::secrets::Redactor::new(Vec::<(String, String)>::new()),
                sandbox: None,
                tmp: None,
                registry: None,
            },
            default_timeout: Duration::from_secs(10),
            max_timeout: Duration::from_secs(10),
            focus: String::new(),
            map_tokens: 1024,
            write_guard: None,
            work_recorder: Some(records),
            hidden: Vec::new(),
            reserved: BTreeMap::new(),
        };
        ToolBox::new(root, ToolSet::Worker, settings).unwrap()
    }

    #[tokio::test]
    async fn a_write_is_answered_at_once_and_lands_once_recorded_before_anything_looks_at_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let records = Arc::new(Records::default());
        let tools = worker_tools(dir.path(), records.clone());
        let target = dir.path().join("a.py");
        let written = tools.call("write_file", &json!({"path": "a.py", "content": "one\n"})).await;
        assert!(!written.is_error, "{}", written.content);
        // Answered while its record is still on its way: not in place until it is durable.
        assert!(!target.exists());
        // Once it is, the write lands with no further call (within a sync of the answer, not
        // at the model's next turn: the user may save the file meanwhile).
        records.open_gate();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !target.exists() {
            assert!(Instant::now() < deadline, "the write never landed by itself");
            std::thread::sleep(Duration::from_millis(2));
        }
        // The next call finds it in place (an edit reads what the write wrote), and the run's
        // end waits for the last write.
        let edited = tools.call("edit_file", &json!({"path": "a.py", "old": "one", "new": "two"})).await;
        assert!(!edited.is_error, "{}", edited.content);
        tools.finish();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "two\n");
        // A write whose record fails never takes its place, leaves nothing beside it, and the
        // next call says so instead of running.
        records.fail.store(true, Ordering::SeqCst);
        tools.call("write_file", &json!({"path": "a.py", "content": "three\n"})).await;
        let next = tools.call("read_file", &json!({"path": "a.py"})).await;
        assert!(next.is_error && next.content.contains("a.py (the disk is full)"), "{}", next.content);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "two\n");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["a.py".to_owned()]);
    }
}
