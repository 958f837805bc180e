//! Per-run transcripts: `transcripts/<run-id>.jsonl`, every model request and response of one
//! agent run, one JSON object per line.
//!
//! Requests are recorded as the wire body that was sent (never the headers, so never an
//! `x-api-key` or `Authorization`), and every line passes through a [`Redactor`] before it is
//! written, so a key that somehow reached a prompt still never reaches the disk. The replay
//! provider reads the `response` entries back ([`read_responses`]).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};

use crate::model::{ExchangeRecorder, ModelResponse};
use crate::secrets::Redactor;
use crate::sync::lock;

pub use crate::model::TranscriptEntry;

#[derive(Debug, thiserror::Error)]
pub enum TranscriptError {
    #[error("cannot write transcript {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot read transcript {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("transcript {path} line {line}: {message}")]
    Malformed { path: PathBuf, line: usize, message: String },
}

/// Appends entries to one transcript file. Shared by reference between the agent loop and the
/// provider; the mutex keeps lines whole.
#[derive(Debug)]
pub struct TranscriptWriter {
    path: PathBuf,
    /// Where lines go, and how many conversation messages the requests written so far held.
    file: Mutex<(Sink, usize)>,
    redactor: Redactor,
}

/// Where a transcript's lines go. Creating a file costs more than the rest of a model turn's
/// bookkeeping, so the file is created by the opener thread while the run's first call is
/// under way, and the lines written before it is open wait in memory.
#[derive(Debug)]
enum Sink {
    Opening {
        opened: mpsc::Receiver<std::io::Result<File>>,
        waiting: Vec<u8>,
    },
    Open(File),
    /// The file could not be created (said once, in the log); lines are dropped.
    Failed,
}

impl Sink {
    fn write(&mut self, path: &Path, line: &[u8], wait: bool) -> std::io::Result<()> {
        if let Sink::Opening { opened, waiting } = self {
            waiting.extend_from_slice(line);
            let answer =
                if wait { opened.recv().map_err(|_| mpsc::TryRecvError::Disconnected) } else { opened.try_recv() };
            let opened = match answer {
                Err(mpsc::TryRecvError::Empty) => return Ok(()),
                Ok(opened) => opened,
                Err(mpsc::TryRecvError::Disconnected) => {
                    Err(std::io::Error::other("the thread that creates transcripts stopped"))
                }
            };
            // The file is open: what waited goes first, in order.
            let Sink::Opening { waiting, .. } = std::mem::replace(self, Sink::Failed) else { return Ok(()) };
            return match opened {
                Ok(mut file) => {
                    let written = file.write_all(&waiting);
                    *self = Sink::Open(file);
                    written
                }
                Err(error) => {
                    tracing::warn!("cannot create transcript {}: {error}", path.display());
                    Ok(())
                }
            };
        }
        match self {
            Sink::Open(file) => file.write_all(line),
            Sink::Opening { .. } | Sink::Failed => Ok(()),
        }
    }
}

/// Creates the transcript file at `path` and the directories leading to it.
fn open(path: &Path) -> std::io::Result<File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// A file to create, and where to send it.
type Opening = (PathBuf, mpsc::Sender<std::io::Result<File>>);

/// Has `path` created by the opener thread, one for the whole process (started on first use),
/// and returns where the file will come; `None` when there is no such thread.
fn open_elsewhere(path: &Path) -> Option<mpsc::Receiver<std::io::Result<File>>> {
    static OPENER: Mutex<Option<mpsc::Sender<Opening>>> = Mutex::new(None);
    let mut opener = lock(&OPENER);
    if opener.is_none() {
        let (requests, received) = mpsc::channel::<Opening>();
        let spawned = std::thread::Builder::new().name("missions-transcripts".into()).spawn(move || {
            for (path, reply) in received {
                let _ = reply.send(open(&path));
            }
        });
        if spawned.is_ok() {
            *opener = Some(requests);
        }
    }
    let (reply, opened) = mpsc::channel();
    match opener.as_ref()?.send((path.to_owned(), reply)) {
        Ok(()) => Some(opened),
        Err(_) => {
            *opener = None;
            None
        }
    }
}

impl Drop for TranscriptWriter {
    fn drop(&mut self) {
        self.flush();
    }
}

impl ExchangeRecorder for TranscriptWriter {
    fn record(&self, entry: &TranscriptEntry) {
        TranscriptWriter::record(self, entry);
    }
}

impl TranscriptWriter {
    pub fn create(path: &Path, redactor: Redactor) -> Result<TranscriptWriter, TranscriptError> {
        let io = |source| TranscriptError::Io { path: path.to_owned(), source };
        let sink = match open_elsewhere(path) {
            Some(opened) => Sink::Opening { opened, waiting: Vec::new() },
            None => Sink::Open(open(path).map_err(io)?),
        };
        Ok(TranscriptWriter { path: path.to_owned(), file: Mutex::new((sink, 0)), redactor })
    }

    /// Writes whatever waits for the file to be created.
    pub fn flush(&self) {
        let mut guard = lock(&self.file);
        if let Err(error) = guard.0.write(&self.path, &[], true) {
            tracing::warn!("cannot write transcript {}: {error}", self.path.display());
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry, logging a failure instead of returning it: a transcript is a
    /// record for people, not mission state, so a full disk must not fail a model call.
    pub fn record(&self, entry: &TranscriptEntry) {
        if let Err(error) = self.append(entry) {
            tracing::warn!("{error}");
        }
    }

    /// Appends one entry. A request records only the messages that are new since the
    /// previous request, with `messages_before` saying how many came before them: an agent
    /// run resends its whole conversation on every turn, and recording it whole each time would
    /// make a long run's transcript grow with the square of its length.
    pub fn append(&self, entry: &TranscriptEntry) -> Result<(), TranscriptError> {
        let io = |source| TranscriptError::Io { path: self.path.clone(), source };
        let mut guard = lock(&self.file);
        let (file, recorded) = &mut *guard;
        let mut value = serde_json::to_value(entry)
            .map_err(|error| io(std::io::Error::new(std::io::ErrorKind::InvalidData, error)))?;
        if let Some(messages) = value.pointer_mut("/body/messages").and_then(|m| m.as_array_mut()) {
            let total = messages.len();
            let before = (*recorded).min(total);
            messages.drain(..before);
            *recorded = total;
            if let Some(body) = value.get_mut("body").and_then(|b| b.as_object_mut()) {
                body.insert("messages_before".into(), serde_json::Value::from(before));
            }
        }
        let mut line = self.redactor.redact(&value.to_string());
        line.push('\n');
        file.write(&self.path, line.as_bytes(), false).map_err(io)
    }
}

/// The largest transcript replay reads (a whole recorded mission fits many times over).
pub const TRANSCRIPT_LIMIT: u64 = 512 * 1024 * 1024;

/// Reads the `response` entries of a transcript, in order, for replay: each with the key of
/// the request it answered, when one was recorded.
pub fn read_responses(path: &Path) -> Result<Vec<(Option<String>, ModelResponse)>, TranscriptError> {
    let read_error = |message: String| TranscriptError::Read { path: path.to_owned(), message };
    let bytes = crate::store::read_bounded(path, TRANSCRIPT_LIMIT).map_err(|error| match error {
        crate::store::StoreError::Io { source, .. } => read_error(source.to_string()),
        other => read_error(other.to_string()),
    })?;
    let text = String::from_utf8(bytes).map_err(|_| read_error("it is not UTF-8 text".into()))?;
    let mut responses = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry: TranscriptEntry = serde_json::from_str(line).map_err(|error| TranscriptError::Malformed {
            path: path.to_owned(),
            line: index + 1,
            message: error.to_string(),
        })?;
        if let TranscriptEntry::Response { key, response, .. } = entry {
            responses.push((key, response));
        }
    }
    Ok(responses)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ContentBlock, StopReason, Usage};

    #[test]
    fn requests_record_only_the_messages_new_since_the_last_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.jsonl");
        let writer = TranscriptWriter::create(&path, Redactor::default()).unwrap();
        for count in [1usize, 3, 5] {
            let messages: Vec<serde_json::Value> = (0..count).map(|i| serde_json::json!({"n": i})).collect();
            let body = serde_json::json!({"model": "m", "messages": messages});
            writer
                .append(&TranscriptEntry::Request {
                    ts: "t".into(),
                    provider: "p".into(),
                    url: "u".into(),
                    attempt: 1,
                    body,
                })
                .unwrap();
        }
        writer.flush();
        let lines: Vec<serde_json::Value> =
            std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let recorded: Vec<(u64, Vec<u64>)> = lines
            .iter()
            .map(|l| {
                let numbers =
                    l["body"]["messages"].as_array().unwrap().iter().map(|m| m["n"].as_u64().unwrap()).collect();
                (l["body"]["messages_before"].as_u64().unwrap(), numbers)
            })
            .collect();
        assert_eq!(recorded, vec![(0, vec![0]), (1, vec![1, 2]), (3, vec![3, 4])]);
    }

    #[test]
    fn lines_written_before_the_file_exists_are_kept_in_order_and_a_failure_fails_no_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.jsonl");
        let request = |attempt| TranscriptEntry::Request {
            ts: "t".into(),
            provider: "p".into(),
            url: "u".into(),
            attempt,
            body: serde_json::json!({}),
        };
        let writer = TranscriptWriter::create(&path, Redactor::default()).unwrap();
        for attempt in 1..=50 {
            writer.append(&request(attempt)).unwrap();
        }
        drop(writer);
        let attempts: Vec<u64> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["attempt"].as_u64().unwrap())
            .collect();
        assert_eq!(attempts, (1..=50).collect::<Vec<u64>>());
        // A file that cannot be created (a directory is in the way) costs the record, not the run.
        let blocked = dir.path().join("blocked.jsonl");
        std::fs::create_dir(&blocked).unwrap();
        let writer = TranscriptWriter::create(&blocked, Redactor::default()).unwrap();
        writer.append(&request(1)).unwrap();
        writer.flush();
        writer.append(&request(2)).unwrap();
    }

    #[test]
    fn writes_redacted_lines_and_reads_responses_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("transcripts/run-1.jsonl");
        let writer = TranscriptWriter::create(&path, Redactor::new([("KEY_ENV", "sk-very-secret-key")])).unwrap();
        writer
            .append(&TranscriptEntry::Request {
                ts: "t".into(),
                provider: "p".into(),
                url: "http://x".into(),
                attempt: 1,
                body: serde_json::json!({"messages": [{"content": "my key is sk-very-secret-key"}]}),
            })
            .unwrap();
        let response = ModelResponse {
            content: vec![ContentBlock::Text { text: "hi".into() }],
            stop_reason: StopReason::EndTurn,
            usage: Usage { input: 3, output: 1, ..Usage::default() },
            cost_usd: None,
            model: "m".into(),
            request_id: None,
            attempts: 1,
        };
        writer
            .append(&TranscriptEntry::Response {
                ts: "t".into(),
                provider: "p".into(),
                key: None,
                response: response.clone(),
            })
            .unwrap();
        // The file is created in the background; what waits for it is written on flush (and
        // when the writer is dropped).
        writer.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("sk-very-secret-key"));
        assert!(text.contains("[REDACTED:KEY_ENV]"));
        assert_eq!(read_responses(&path).unwrap(), vec![(None, response)]);
    }
}
