//! The `replay` provider: plays back the responses of a recorded transcript, in order.
//!
//! A transcript written by any run (or by a provider's `record` file) holds `response`
//! entries; replaying them makes a whole mission reproducible offline, which is how the demo
//! and many tests run. Calls are answered strictly in order and a shared cursor is kept per
//! provider, so every role routed to the same replay provider draws from one tape.

use std::path::PathBuf;
use std::sync::Mutex;

use futures_util::future::BoxFuture;
use missions_core::model::{
    CallContext, ModelError, ModelFailure, ModelProvider, ModelRequest, ModelResponse, ProbeReport,
    ProbeStatus, StreamUpdate,
};
use missions_core::transcript::{TranscriptEntry, read_responses};

pub struct ReplayProvider {
    name: String,
    path: PathBuf,
    /// The tape, loaded on first use, and how far it has been played.
    tape: Mutex<Option<(Vec<ModelResponse>, usize)>>,
}

impl ReplayProvider {
    pub fn new(name: String, path: PathBuf) -> ReplayProvider {
        ReplayProvider {
            name,
            path,
            tape: Mutex::new(None),
        }
    }

    fn next_response(&self) -> Result<ModelResponse, ModelError> {
        let mut tape = self
            .tape
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if tape.is_none() {
            let responses = read_responses(&self.path).map_err(|error| ModelError::Replay {
                message: error.to_string(),
            })?;
            *tape = Some((responses, 0));
        }
        let Some((responses, cursor)) = tape.as_mut() else {
            return Err(ModelError::Replay {
                message: "the tape could not be loaded".into(),
            });
        };
        let response = responses.get(*cursor).cloned().ok_or_else(|| ModelError::Replay {
            message: format!(
                "{} holds {} responses and all have been played; the run asked for more than was recorded",
                self.path.display(),
                responses.len()
            ),
        })?;
        *cursor += 1;
        Ok(response)
    }

    async fn call(
        &self,
        request: &ModelRequest,
        context: CallContext<'_>,
    ) -> Result<ModelResponse, ModelError> {
        let ts = missions_core::now_rfc3339;
        if let Some(transcript) = context.transcript {
            let body = serde_json::to_value(request).unwrap_or_default();
            let entry = TranscriptEntry::Request {
                ts: ts(),
                provider: self.name.clone(),
                url: format!("replay:{}", self.path.display()),
                attempt: 1,
                body,
            };
            transcript.record(&entry);
        }
        let response = self.next_response()?;
        let text = response.text();
        if !text.is_empty() {
            context.notify(StreamUpdate::Text(text));
        }
        if let Some(transcript) = context.transcript {
            let entry = TranscriptEntry::Response {
                ts: ts(),
                provider: self.name.clone(),
                response: response.clone(),
            };
            transcript.record(&entry);
        }
        Ok(response)
    }
}

impl ModelProvider for ReplayProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn complete<'a>(
        &'a self,
        request: &'a ModelRequest,
        context: CallContext<'a>,
    ) -> BoxFuture<'a, Result<ModelResponse, ModelFailure>> {
        Box::pin(async move {
            self.call(request, context)
                .await
                .map_err(ModelFailure::from)
        })
    }

    fn probe(&self) -> BoxFuture<'_, ProbeReport> {
        Box::pin(async move {
            match read_responses(&self.path) {
                Ok(responses) => ProbeReport {
                    status: ProbeStatus::Ok,
                    detail: format!(
                        "{} recorded responses in {}",
                        responses.len(),
                        self.path.display()
                    ),
                },
                Err(error) => ProbeReport {
                    status: ProbeStatus::Unreachable,
                    detail: error.to_string(),
                },
            }
        })
    }
}
