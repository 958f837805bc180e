//! The user-testing agent's tools: `start_process`, `stop_process` and `http_request`.
//!
//! Started processes run in process groups of their own, like commands, and are tracked by
//! name; when the run ends, [`Processes`] kills every one of them (also on drop), so nothing a
//! user-testing run started survives it. HTTP requests may only go to loopback addresses.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::command::{CommandEnvironment, OUTPUT_LIMIT, Registration, drain, kill_group, spawn};
use crate::output::CappedOutput;
use missions_core::sync::lock;

/// How long a process may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

struct Managed {
    child: tokio::process::Child,
    pgid: Option<u32>,
    output: Arc<Mutex<CappedOutput>>,
    /// Kept until the process is stopped: its record in the registry.
    _registration: Registration,
}

/// The processes one run started.
#[derive(Default)]
pub struct Processes {
    running: Mutex<BTreeMap<String, Managed>>,
}

fn rendered(output: &Arc<Mutex<CappedOutput>>) -> String {
    lock(output).render()
}

impl Processes {
    /// Starts `command` under `name` and waits until it is ready: its output matches
    /// `ready_pattern`, or `ready_url` answers any HTTP response, or at once if neither.
    pub async fn start(
        &self,
        environment: &CommandEnvironment,
        name: &str,
        command: &str,
        ready_pattern: Option<&str>,
        ready_url: Option<&str>,
    ) -> Result<String, String> {
        if name.trim().is_empty() {
            return Err("`name` is empty".into());
        }
        if lock(&self.running).contains_key(name) {
            return Err(format!("a process named `{name}` is already running; stop it first or use another name"));
        }
        let pattern =
            ready_pattern.map(regex::Regex::new).transpose().map_err(|e| format!("invalid ready_pattern: {e}"))?;
        if let Some(url) = ready_url
            && !missions_core::net::is_loopback_url(url)
        {
            return Err(format!("ready_url `{url}` is not a loopback address"));
        }
        let (mut child, registration) = spawn(environment, command, |spawned| {
            spawned.stdout(Stdio::piped()).stderr(Stdio::piped());
        })
        .map_err(|e| format!("cannot start `{command}`: {e}"))?;
        let pgid = child.id();
        let output = Arc::new(Mutex::new(CappedOutput::new(OUTPUT_LIMIT)));
        if let Some(stdout) = child.stdout.take() {
            drain(stdout, output.clone());
        }
        if let Some(stderr) = child.stderr.take() {
            drain(stderr, output.clone());
        }
        let started = Instant::now();
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().map_err(|e| e.to_string())?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                kill_group(pgid);
                return Err(format!(
                    "`{command}` exited ({status}) before it was ready. Its output:\n{}",
                    environment.redactor.redact(&rendered(&output))
                ));
            }
            let matched = pattern.as_ref().is_some_and(|p| p.is_match(&rendered(&output)));
            let answered = match ready_url {
                Some(url) => client.get(url).send().await.is_ok(),
                None => false,
            };
            let nothing_to_wait_for = pattern.is_none() && ready_url.is_none();
            if matched || answered || nothing_to_wait_for {
                break;
            }
            if started.elapsed() > READY_TIMEOUT {
                kill_group(pgid);
                return Err(format!(
                    "`{name}` was not ready after {} s and was stopped. Its output:\n{}",
                    READY_TIMEOUT.as_secs(),
                    environment.redactor.redact(&rendered(&output))
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let text = environment.redactor.redact(&rendered(&output));
        lock(&self.running).insert(name.to_owned(), Managed { child, pgid, output, _registration: registration });
        Ok(format!("started `{name}` (ready after {:.1} s). Output so far:\n{text}", started.elapsed().as_secs_f64()))
    }

    /// Stops process `name` and returns its output.
    pub async fn stop(&self, environment: &CommandEnvironment, name: &str) -> Result<String, String> {
        let managed = lock(&self.running).remove(name);
        let Some(mut managed) = managed else {
            return Err(format!("no process named `{name}` is running"));
        };
        kill_group(managed.pgid);
        let status = managed.child.wait().await.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
        Ok(format!(
            "stopped `{name}` ({status}). Its output:\n{}",
            environment.redactor.redact(&rendered(&managed.output))
        ))
    }

    /// Kills every process still running.
    pub fn stop_all(&self) {
        let mut running = lock(&self.running);
        for (_, managed) in std::mem::take(&mut *running) {
            kill_group(managed.pgid);
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// `http_request`: one request to a loopback address; the response status, headers and body.
pub async fn http_request(
    method: &str,
    url: &str,
    headers: &BTreeMap<String, String>,
    body: Option<&str>,
) -> Result<String, String> {
    if !missions_core::net::is_loopback_url(url) {
        return Err(format!("`{url}` is not a loopback address; http_request only reaches this machine"));
    }
    let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("invalid method `{method}`"))?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let mut request = client.request(method, url);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    if let Some(body) = body {
        request = request.body(body.to_owned());
    }
    let response = request.send().await.map_err(|e| format!("request failed: {e}"))?;
    let mut out = format!("HTTP {}\n", response.status().as_u16());
    for (name, value) in response.headers() {
        out.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("<binary>")));
    }
    let bytes = response.bytes().await.map_err(|e| format!("reading the body failed: {e}"))?;
    let mut capped = CappedOutput::new(OUTPUT_LIMIT);
    capped.push(&bytes);
    out.push('\n');
    out.push_str(&capped.render());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use missions_core::secrets::Redactor;

    fn environment(dir: &std::path::Path) -> CommandEnvironment {
        CommandEnvironment {
            root: dir.to_owned(),
            secret_env: Vec::new(),
            redactor: Redactor::default(),
            sandbox: None,
            tmp: None,
            registry: None,
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn a_server_is_started_until_ready_used_over_loopback_and_stopped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "hello from the program").unwrap();
        let env = environment(dir.path());
        let processes = Processes::default();
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}/");
        let started = processes
            .start(&env, "web", &format!("exec python3 -m http.server {port} --bind 127.0.0.1"), None, Some(&url))
            .await
            .unwrap();
        assert!(started.starts_with("started `web`"), "{started}");
        let response = http_request("GET", &url, &BTreeMap::new(), None).await.unwrap();
        assert!(response.starts_with("HTTP 200") && response.contains("hello from the program"), "{response}");
        assert!(processes.start(&env, "web", "true", None, None).await.unwrap_err().contains("already running"));
        let stopped = processes.stop(&env, "web").await.unwrap();
        assert!(stopped.contains("stopped `web`"), "{stopped}");
        assert!(http_request("GET", &url, &BTreeMap::new(), None).await.is_err(), "the server is gone");
        assert!(processes.stop(&env, "web").await.unwrap_err().contains("no process named"));
    }

    #[tokio::test]
    async fn ready_patterns_early_exits_and_loopback_only() {
        let dir = tempfile::tempdir().unwrap();
        let env = environment(dir.path());
        let processes = Processes::default();
        let ok =
            processes.start(&env, "ticker", "echo booting; echo READY; sleep 30", Some("READY"), None).await.unwrap();
        assert!(ok.contains("READY"), "{ok}");
        let failed = processes.start(&env, "broken", "echo oops; exit 3", Some("never"), None).await.unwrap_err();
        assert!(failed.contains("exited") && failed.contains("oops"), "{failed}");
        assert!(
            http_request("GET", "http://192.0.2.1/", &BTreeMap::new(), None)
                .await
                .unwrap_err()
                .contains("not a loopback address")
        );
        assert!(
            processes
                .start(&env, "x", "true", None, Some("http://example.com/"))
                .await
                .unwrap_err()
                .contains("not a loopback address")
        );
    }

    #[tokio::test]
    async fn every_process_a_run_started_is_gone_when_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let env = environment(dir.path());
        let marker = dir.path().join("still-alive");
        {
            let processes = Processes::default();
            let script = format!("echo up; (sleep 1; touch {}) & sleep 30", marker.display());
            processes.start(&env, "daemon", &script, Some("up"), None).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        assert!(!marker.exists(), "a process (or its child) outlived the run");
    }
}
