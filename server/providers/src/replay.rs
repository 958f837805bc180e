//! The `replay` provider: plays back the responses of recorded transcripts.
//!
//! A transcript written by any run (or by a provider's `record` file) holds `response`
//! entries, each with the key of the request it answered
//! ([`ModelRequest::replay_key`]). Replay answers a request with the first unplayed response
//! recorded under the same key, so runs that call in parallel (one review agent per feature)
//! each get their own answers whatever order their calls arrive in. Entries recorded without a
//! key are played in order. Roles routed to the same replay provider share one tape.

use std::path::PathBuf;
use std::sync::Mutex;

use futures_util::future::BoxFuture;
use missions_core::model::{
    CallContext, ModelError, ModelFailure, ModelProvider, ModelRequest, ModelResponse, ProbeReport, ProbeStatus,
    StreamUpdate,
};
use missions_core::sync::lock;
use missions_core::transcript::{TranscriptEntry, read_responses};

/// One recorded answer and whether it has been played.
struct Take {
    key: Option<String>,
    response: ModelResponse,
    played: bool,
}

pub struct ReplayProvider {
    name: String,
    path: PathBuf,
    /// The tape, loaded on first use.
    tape: Mutex<Option<Vec<Take>>>,
}

impl ReplayProvider {
    pub fn new(name: String, path: PathBuf) -> ReplayProvider {
        ReplayProvider { name, path, tape: Mutex::new(None) }
    }

    fn next_response(&self, key: &str) -> Result<ModelResponse, ModelError> {
        let mut tape = lock(&self.tape);
        if tape.is_none() {
            let responses =
                read_responses(&self.path).map_err(|error| ModelError::Replay { message: error.to_string() })?;
            *tape = Some(responses.into_iter().map(|(key, response)| Take { key, response, played: false }).collect());
        }
        let Some(takes) = tape.as_mut() else {
            return Err(ModelError::Replay { message: "the tape could not be loaded".into() });
        };
        let position = takes
            .iter()
            .position(|t| !t.played && t.key.as_deref() == Some(key))
            .or_else(|| takes.iter().position(|t| !t.played && t.key.is_none()));
        let Some(position) = position else {
            let left = takes.iter().filter(|t| !t.played).count();
            return Err(ModelError::Replay {
                message: format!(
                    "{} has no recorded response for this request ({left} of {} unplayed); the run asked for something \
                     that was not recorded, or its prompts changed since the recording",
                    self.path.display(),
                    takes.len()
                ),
            });
        };
        takes[position].played = true;
        Ok(takes[position].response.clone())
    }

    async fn call(&self, request: &ModelRequest, context: CallContext<'_>) -> Result<ModelResponse, ModelError> {
        let ts = missions_core::now_rfc3339;
        let key = request.replay_key();
        if let Some(transcript) = context.transcript {
            let body = serde_json::to_value(request).unwrap_or_default();
            let url = format!("replay:{}", self.path.display());
            transcript.record(&TranscriptEntry::Request {
                ts: ts(),
                provider: self.name.clone(),
                url,
                attempt: 1,
                body,
            });
        }
        let response = self.next_response(&key)?;
        let text = response.text();
        if !text.is_empty() {
            context.notify(StreamUpdate::Text(text));
        }
        if let Some(transcript) = context.transcript {
            transcript.record(&TranscriptEntry::Response {
                ts: ts(),
                provider: self.name.clone(),
                key: Some(key),
                response: response.clone(),
            });
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
        Box::pin(async move { self.call(request, context).await.map_err(ModelFailure::from) })
    }

    fn probe(&self) -> BoxFuture<'_, ProbeReport> {
        Box::pin(async move {
            match read_responses(&self.path) {
                Ok(responses) => ProbeReport {
                    status: ProbeStatus::Ok,
                    detail: format!("{} recorded responses in {}", responses.len(), self.path.display()),
                },
                Err(error) => ProbeReport { status: ProbeStatus::Unreachable, detail: error.to_string() },
            }
        })
    }
}
