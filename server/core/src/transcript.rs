//! Per-run transcripts: `transcripts/<run-id>.jsonl`, every model request and response of one
//! agent run, one JSON object per line.
//!
//! Requests are recorded as the wire body that was sent (never the headers, so never an
//! `x-api-key` or `Authorization`), and every line passes through a [`Redactor`] before it is
//! written, so a key that somehow reached a prompt still never reaches the disk. The replay
//! provider reads the `response` entries back ([`read_responses`]).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::model::ModelResponse;
use crate::secrets::Redactor;

/// One line of a transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TranscriptEntry {
    /// A request as sent on the wire (body only).
    Request { ts: String, provider: String, url: String, attempt: u32, body: serde_json::Value },
    /// The assembled response of a successful call. `key` is the request's
    /// [`ModelRequest::replay_key`](crate::model::ModelRequest::replay_key).
    Response {
        ts: String,
        provider: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        response: ModelResponse,
    },
    /// A failed attempt, and whether it is retried.
    Error { ts: String, provider: String, attempt: u32, error: String, retry_in_ms: Option<u64> },
}

#[derive(Debug, thiserror::Error)]
pub enum TranscriptError {
    #[error("cannot write transcript {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("transcript {path} line {line}: {message}")]
    Malformed { path: PathBuf, line: usize, message: String },
}

/// Appends entries to one transcript file. Shared by reference between the agent loop and the
/// provider; the mutex keeps lines whole.
#[derive(Debug)]
pub struct TranscriptWriter {
    path: PathBuf,
    file: Mutex<File>,
    redactor: Redactor,
}

impl TranscriptWriter {
    pub fn create(path: &Path, redactor: Redactor) -> Result<TranscriptWriter, TranscriptError> {
        let io = |source| TranscriptError::Io { path: path.to_owned(), source };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
        Ok(TranscriptWriter { path: path.to_owned(), file: Mutex::new(file), redactor })
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

    /// Appends one entry. A transcript is a record for people, not the source of truth, so a
    /// failed write is reported to the caller but never loses mission state.
    pub fn append(&self, entry: &TranscriptEntry) -> Result<(), TranscriptError> {
        let io = |source| TranscriptError::Io { path: self.path.clone(), source };
        let line = serde_json::to_string(entry)
            .map_err(|error| io(std::io::Error::new(std::io::ErrorKind::InvalidData, error)))?;
        let mut line = self.redactor.redact(&line);
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        file.write_all(line.as_bytes()).map_err(io)
    }
}

/// Reads the `response` entries of a transcript, in order, for replay: each with the key of
/// the request it answered, when one was recorded.
pub fn read_responses(path: &Path) -> Result<Vec<(Option<String>, ModelResponse)>, TranscriptError> {
    let file = File::open(path).map_err(|source| TranscriptError::Io { path: path.to_owned(), source })?;
    let mut responses = Vec::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| TranscriptError::Io { path: path.to_owned(), source })?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: TranscriptEntry = serde_json::from_str(&line).map_err(|error| TranscriptError::Malformed {
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
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("sk-very-secret-key"));
        assert!(text.contains("[REDACTED:KEY_ENV]"));
        assert_eq!(read_responses(&path).unwrap(), vec![(None, response)]);
    }
}
