//! The inbox (SPEC §2 rule 8): commands other processes queue in `.missions/<id>/inbox/` for
//! the process driving the mission, applied between steps and acknowledged with a `.done`
//! file the sender waits for.

use serde_json::Value;

use super::*;

impl Shared {
    /// Applies pause, cancel and course corrections that arrived while a run is going on;
    /// other commands stay in the inbox for the next step.
    pub(super) fn poll_control(&self) -> Option<Stop> {
        if let Some(stop) = lock(&self.stop).clone() {
            return Some(stop);
        }
        self.process_inbox(|command| {
            matches!(
                command,
                Command::Pause { .. }
                    | Command::Cancel
                    | Command::CourseCorrect { .. }
                    | Command::DismissFinding { .. }
                    | Command::Waive { .. }
                    | Command::AddAssertion { .. }
            )
        });
        lock(&self.stop).clone()
    }

    /// Applies the inbox's commands that `now` accepts, oldest first; each applied command
    /// file is replaced by a `.done` file recording whether it took effect, which the process
    /// that queued it waits for.
    pub(super) fn process_inbox(&self, now: impl Fn(&Command) -> bool) {
        let Ok(entries) = std::fs::read_dir(&self.inbox) else { return };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for file in files {
            let command = match std::fs::read_to_string(&file).map(|text| serde_json::from_str::<Command>(&text)) {
                Ok(Ok(command)) => command,
                Ok(Err(error)) => {
                    acknowledge(&file, Err(format!("not a command: {error}")));
                    continue;
                }
                Err(_) => continue,
            };
            if !now(&command) {
                continue;
            }
            // Whoever queued the command is told it applied only once what it recorded is
            // durable.
            let result = self
                .apply(command)
                .and_then(|()| lock(&self.store).flush().map_err(EngineError::from))
                .map_err(|error| error.to_string());
            if let Err(error) = &result {
                tracing::warn!("inbox command not applied: {error}");
            }
            acknowledge(&file, result);
        }
    }
}

/// Replaces an inbox command file by its `.done` acknowledgement.
fn acknowledge(file: &Path, result: Result<(), String>) {
    let done = file.with_extension("done");
    let body = match result {
        Ok(()) => serde_json::json!({"ok": true}),
        Err(error) => serde_json::json!({"ok": false, "error": error}),
    };
    if store::write_atomically(&done, body.to_string().as_bytes()).is_ok() {
        let _ = std::fs::remove_file(file);
    }
}

/// Queues `command` for the process driving the mission.
pub fn write_inbox(inbox: &Path, command: &Command) -> Result<PathBuf, EngineError> {
    std::fs::create_dir_all(inbox).map_err(|e| EngineError::Io(format!("{}: {e}", inbox.display())))?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let name = format!("{nanos:024}-{:04x}.json", fastrand::u16(..));
    let path = inbox.join(name);
    let text = serde_json::to_string(command).map_err(|e| EngineError::Io(e.to_string()))?;
    store::write_atomically(&path, text.as_bytes())?;
    Ok(path)
}

/// Waits up to `limit` for the driver to apply the queued command at `queued`: `Some(Ok)` it
/// took effect, `Some(Err)` it was refused (with why), `None` no driver picked it up.
pub fn wait_for_ack(queued: &Path, limit: Duration) -> Option<Result<(), String>> {
    let done = queued.with_extension("done");
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if let Ok(text) = std::fs::read_to_string(&done) {
            let _ = std::fs::remove_file(&done);
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Some(if value["ok"].as_bool() == Some(true) {
                Ok(())
            } else {
                Err(value["error"].as_str().unwrap_or("refused").to_owned())
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}
