//! `run_command`: `sh -c COMMAND` in the workspace, in a process group of its own.
//!
//! The timeout kills the whole group, so a command that forks (a test runner, a dev server
//! started with `&`) cannot outlive it; the group is killed after a normal exit too, for the
//! same reason. Output (stdout and stderr, interleaved as they arrive) is kept whole up to a
//! cap and as head and tail beyond it. The environment has no configured API key in it, and
//! the output is redacted before a model sees it.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use missions_core::secrets::Redactor;
use missions_core::sync::lock;
use tokio::io::AsyncReadExt;

use crate::output::CappedOutput;

/// The most output a command result carries (SPEC §5: 64 KiB, head and tail).
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// What every command started by the tools needs to know.
#[derive(Debug, Clone)]
pub struct CommandEnvironment {
    pub root: PathBuf,
    /// Names of variables that hold secrets; they are removed from the command's environment.
    pub secret_env: Vec<String>,
    pub redactor: Redactor,
    /// How to run commands sandboxed; `None` runs `sh` directly (the file tools' confinement
    /// still holds, but commands are not confined).
    pub sandbox: Option<Sandbox>,
    /// The run's private temporary directory (`TMPDIR` of its commands, writable in the
    /// sandbox); `None` leaves `TMPDIR` alone.
    pub tmp: Option<PathBuf>,
    /// Where each started process group is recorded until it is killed, so that a driver
    /// that died cannot leave commands running: the next driver kills what is recorded
    /// ([`kill_recorded`]) before anything else runs. `None` records nothing.
    pub registry: Option<PathBuf>,
}

/// Scripts longer than this go to `sh` as a file, not as an argument: the kernel refuses a
/// single argument longer than 128 KiB ("Argument list too long").
const SCRIPT_ARGUMENT_LIMIT: usize = 64 * 1024;

/// What keeps a started command accounted for: its record in the registry and its script
/// file, both removed when this is dropped (after the group was killed).
#[derive(Debug, Default)]
pub struct Registration {
    record: Option<PathBuf>,
    _script: Option<tempfile::TempPath>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            let _ = std::fs::remove_file(record);
        }
    }
}

/// The environment variable that tags every process a command starts (children inherit it),
/// so the processes of a dead driver's commands are found by tag, never by a process or
/// group number that may since belong to someone else.
const PROCESS_TAG: &str = "MISSIONS_PROCESS_TAG";

/// The processes (by pid) whose environment carries `tag`.
fn tagged_processes(tag: &str) -> Vec<i32> {
    let needle = format!("{PROCESS_TAG}={tag}");
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|environ| environ.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
        })
        .collect()
}

/// Kills every process of the commands recorded in `registry` by a driver that is gone, and
/// forgets them; returns how many commands had processes left.
pub fn kill_recorded(registry: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(registry) else { return Vec::new() };
    let mut killed = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let tag = std::fs::read_to_string(&path).unwrap_or_default().trim().to_owned();
        if !tag.is_empty() {
            let pids = tagged_processes(&tag);
            for pid in &pids {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL);
            }
            if !pids.is_empty() {
                killed.push(tag);
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    killed
}

/// Starts `script` as [`shell_command`] builds it, after `configure` (pipes), tagged and
/// recorded in the environment's registry (before it starts, so no moment is unrecorded).
pub fn spawn(
    environment: &CommandEnvironment,
    script: &str,
    configure: impl FnOnce(&mut tokio::process::Command),
) -> Result<(tokio::process::Child, Registration), String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let (mut command, script_file) = shell_command(environment, script)?;
    configure(&mut command);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    let tag = format!("{}-{nanos}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    command.env(PROCESS_TAG, &tag);
    let mut registration = Registration { record: None, _script: script_file };
    if let Some(registry) = &environment.registry {
        let record = registry.join(&tag);
        match std::fs::create_dir_all(registry).and_then(|()| std::fs::write(&record, &tag)) {
            Ok(()) => registration.record = Some(record),
            Err(error) => tracing::warn!("cannot record a command in {}: {error}", registry.display()),
        }
    }
    let child = command.spawn().map_err(|e| format!("cannot start `sh`: {e}"))?;
    Ok((child, registration))
}

/// A launcher that confines a command before running it (see [`crate::sandbox`]): called as
/// `PROGRAM ARGS… --root ROOT [--allow-network] [--writable PATH]… [--hide DIR]… -- sh -c COMMAND`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub allow_network: bool,
    pub writable: Vec<PathBuf>,
    /// Directories the command must not see at all (a worker's view of `.missions/`).
    pub hidden: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResult {
    /// `None` when the command was killed (timeout or signal).
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub output: String,
    pub duration: Duration,
}

impl CommandResult {
    /// How the command ended, in a few words: `exit 3`, `timed out`, `killed by a signal`, or
    /// `could not start` (a result made for a command that never ran has no duration).
    pub fn outcome(&self) -> String {
        match (self.timed_out, self.exit_code) {
            (true, _) => "timed out".to_owned(),
            (false, Some(code)) => format!("exit {code}"),
            (false, None) if self.duration.is_zero() => "could not start".to_owned(),
            (false, None) => "killed by a signal".to_owned(),
        }
    }

    /// The text a model gets back.
    pub fn describe(&self, timeout: Duration) -> String {
        let seconds = self.duration.as_secs_f64();
        let head = if self.timed_out {
            format!(
                "timed out after {} s; the command and every process it started were killed. Output so far:",
                timeout.as_secs()
            )
        } else {
            match self.exit_code {
                Some(code) => format!("exit code {code} ({seconds:.1} s)"),
                None if self.duration.is_zero() => "the command could not start".to_owned(),
                None => format!("killed by a signal ({seconds:.1} s)"),
            }
        };
        if self.output.is_empty() { format!("{head}\n(no output)") } else { format!("{head}\n{}", self.output) }
    }
}

/// Kills every process in group `pgid`; a group that is already gone is fine.
pub fn kill_group(pgid: Option<u32>) {
    if let Some(pgid) = pgid.and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Builds the command for `sh -c script`, sandboxed if configured, in its own process group,
/// with secrets removed from its environment. A script too long for one argument is written to
/// a file that `sh` reads; the returned path must outlive the command.
pub fn shell_command(
    environment: &CommandEnvironment,
    script: &str,
) -> Result<(tokio::process::Command, Option<tempfile::TempPath>), String> {
    let (shell_args, script_file): (Vec<std::ffi::OsString>, Option<tempfile::TempPath>) =
        if script.len() > SCRIPT_ARGUMENT_LIMIT {
            let dir = environment.tmp.clone().unwrap_or_else(std::env::temp_dir);
            let mut file = tempfile::Builder::new()
                .prefix("missions-script-")
                .suffix(".sh")
                .tempfile_in(&dir)
                .map_err(|e| format!("cannot write the script to {}: {e}", dir.display()))?;
            std::io::Write::write_all(&mut file, script.as_bytes())
                .map_err(|e| format!("cannot write the script to {}: {e}", dir.display()))?;
            let path = file.into_temp_path();
            (vec!["sh".into(), path.as_os_str().to_owned()], Some(path))
        } else {
            (vec!["sh".into(), "-c".into(), script.into()], None)
        };
    let mut command = match &environment.sandbox {
        Some(sandbox) => {
            let mut c = tokio::process::Command::new(&sandbox.program);
            c.args(&sandbox.args).arg("--root").arg(&environment.root);
            if sandbox.allow_network {
                c.arg("--allow-network");
            }
            for path in sandbox.writable.iter().chain(environment.tmp.as_ref()) {
                c.arg("--writable").arg(path);
            }
            for path in &sandbox.hidden {
                c.arg("--hide").arg(path);
            }
            c.arg("--").args(&shell_args);
            c
        }
        None => {
            let mut c = tokio::process::Command::new(&shell_args[0]);
            c.args(&shell_args[1..]);
            c
        }
    };
    command.current_dir(&environment.root).stdin(Stdio::null()).process_group(0).kill_on_drop(true);
    if let Some(tmp) = &environment.tmp {
        command.env("TMPDIR", tmp);
    }
    // Output is read by models and shown in editors, not by a terminal (SPEC §5).
    command.env("NO_COLOR", "1").env("TERM", "dumb").env("CLICOLOR", "0");
    // A failing Rust test's backtrace floods a model's context; the user's own setting wins.
    if std::env::var_os("RUST_BACKTRACE").is_none() {
        command.env("RUST_BACKTRACE", "0");
    }
    for name in &environment.secret_env {
        command.env_remove(name);
    }
    // A key copied into another variable is still a key.
    for (name, value) in std::env::vars_os() {
        if environment.redactor.contains_secret(&value.to_string_lossy()) {
            command.env_remove(name);
        }
    }
    Ok((command, script_file))
}

/// Copies a pipe into the shared output until it closes.
pub fn drain<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    mut pipe: R,
    output: Arc<Mutex<CappedOutput>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match pipe.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => lock(&output).push(&buffer[..n]),
            }
        }
    })
}

/// Runs `script` to completion or until `timeout`.
pub async fn run_command(
    environment: &CommandEnvironment,
    script: &str,
    timeout: Duration,
) -> Result<CommandResult, String> {
    let started = Instant::now();
    let (mut child, _registration) = spawn(environment, script, |command| {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
    })?;
    let pgid = child.id();
    let output = Arc::new(Mutex::new(CappedOutput::new(OUTPUT_LIMIT)));
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        readers.push(drain(stdout, output.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(drain(stderr, output.clone()));
    }
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    // Whether it finished or not, nothing the command started may live on.
    kill_group(pgid);
    let (status, timed_out) = match waited {
        Ok(status) => (status.map_err(|e| format!("waiting for the command failed: {e}"))?, false),
        Err(_) => (child.wait().await.map_err(|e| format!("waiting for the command failed: {e}"))?, true),
    };
    let duration = started.elapsed();
    // The pipes close once the group is dead; a process that escaped into another group
    // could hold them open, so the wait is bounded.
    for reader in readers {
        let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
    }
    let text = lock(&output).render();
    Ok(CommandResult {
        exit_code: if timed_out { None } else { status.code() },
        timed_out,
        output: environment.redactor.redact(&text),
        duration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment(dir: &std::path::Path) -> CommandEnvironment {
        CommandEnvironment {
            root: dir.to_owned(),
            secret_env: vec!["MISSIONS_TEST_SECRET_NAME".into()],
            redactor: Redactor::new([("MISSIONS_TEST_SECRET_NAME", "sk-live-secret-value-123")]),
            sandbox: None,
            tmp: None,
            registry: None,
        }
    }

    #[tokio::test]
    async fn exit_codes_and_interleaved_output() {
        let dir = tempfile::tempdir().unwrap();
        let env = environment(dir.path());
        let result = run_command(&env, "echo out; echo err >&2; exit 3", Duration::from_secs(10)).await.unwrap();
        assert_eq!(result.exit_code, Some(3));
        assert!(!result.timed_out);
        assert!(result.output.contains("out\n") && result.output.contains("err\n"));
        let pwd = run_command(&env, "pwd", Duration::from_secs(10)).await.unwrap();
        assert_eq!(pwd.output.trim(), dir.path().canonicalize().unwrap().to_string_lossy());
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let env = environment(dir.path());
        let marker = dir.path().join("survived");
        let script = format!("echo started; (sleep 1; touch {}) & sleep 30", marker.display());
        let result = run_command(&env, &script, Duration::from_millis(300)).await.unwrap();
        assert!(result.timed_out);
        assert_eq!(result.exit_code, None);
        assert!(result.output.contains("started"));
        assert!(result.duration < Duration::from_secs(5));
        assert!(result.describe(Duration::from_millis(300)).starts_with("timed out after"));
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        assert!(!marker.exists(), "a background child outlived the timeout");
    }

    #[tokio::test]
    async fn background_children_do_not_outlive_a_finished_command() {
        let dir = tempfile::tempdir().unwrap();
        let env = environment(dir.path());
        let marker = dir.path().join("late");
        let script = format!("(sleep 1; touch {}) & echo done", marker.display());
        let result = run_command(&env, &script, Duration::from_secs(10)).await.unwrap();
        assert_eq!(result.exit_code, Some(0));
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        assert!(!marker.exists());
    }

    #[tokio::test]
    async fn floods_are_cut_to_head_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let env = environment(dir.path());
        let result = run_command(
            &env,
            "echo FIRST; head -c 5000000 /dev/zero | tr '\\0' x; echo; echo LAST",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert!(result.output.len() <= OUTPUT_LIMIT + 100, "{}", result.output.len());
        assert!(result.output.starts_with("FIRST\n"));
        assert!(result.output.trim_end().ends_with("LAST"));
        assert!(result.output.contains("bytes cut ..."));
    }

    /// An environment whose scripts and process records live in `dir`.
    fn with_registry(dir: &std::path::Path) -> CommandEnvironment {
        CommandEnvironment { tmp: Some(dir.to_owned()), registry: Some(dir.join("processes")), ..environment(dir) }
    }

    #[tokio::test]
    async fn a_script_longer_than_an_argument_may_be_still_runs() {
        let dir = tempfile::tempdir().unwrap();
        let script = format!("# {}\necho long-script-ran", "x".repeat(200 * 1024));
        let result = run_command(&with_registry(dir.path()), &script, Duration::from_secs(20)).await.unwrap();
        assert_eq!(result.exit_code, Some(0), "{}", result.output);
        assert!(result.output.contains("long-script-ran"));
        assert!(
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter_map(Result::ok)
                .all(|e| !e.file_name().to_string_lossy().starts_with("missions-script-")),
            "the script file is removed afterwards"
        );
    }

    #[tokio::test]
    async fn recorded_groups_are_killed_by_the_next_driver() {
        let dir = tempfile::tempdir().unwrap();
        let env = with_registry(dir.path());
        let marker = dir.path().join("still-running");
        let script = format!("while :; do touch {}; sleep 0.05; done", marker.display());
        let (child, registration) = spawn(&env, &script, |_| {}).unwrap();
        // The driver "dies": its handles are forgotten without killing anything.
        std::mem::forget(child);
        std::mem::forget(registration);
        std::thread::sleep(Duration::from_millis(200));
        assert!(marker.exists(), "the command runs");
        assert_eq!(kill_recorded(&dir.path().join("processes")).len(), 1);
        std::thread::sleep(Duration::from_millis(200));
        std::fs::remove_file(&marker).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(!marker.exists(), "the recorded group was killed");
        assert!(std::fs::read_dir(dir.path().join("processes")).unwrap().next().is_none(), "and forgotten");
    }
}

#[cfg(test)]
mod environment_tests {
    use super::*;

    #[test]
    fn configured_secret_variables_are_removed() {
        let env = CommandEnvironment {
            root: std::env::temp_dir(),
            secret_env: vec!["ANTHROPIC_API_KEY".into(), "OPENAI_API_KEY".into()],
            redactor: Redactor::default(),
            sandbox: None,
            tmp: None,
            registry: None,
        };
        let (command, _) = shell_command(&env, "env").unwrap();
        let removed: Vec<String> = command
            .as_std()
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        assert!(
            removed.contains(&"ANTHROPIC_API_KEY".to_owned()) && removed.contains(&"OPENAI_API_KEY".to_owned()),
            "{removed:?}"
        );
    }
}
