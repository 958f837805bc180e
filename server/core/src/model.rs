//! The one trait every model provider implements, and the provider-neutral conversation types.
//!
//! A [`ModelRequest`] (system prompt, [`Message`]s of [`ContentBlock`]s, [`ToolSpec`]s) goes
//! in; a [`ModelResponse`] (content, [`StopReason`], normalised [`Usage`], cost) comes out, or a
//! [`ModelError`] whose variant tells the caller what it can do about it. The HTTP providers
//! live in `missions-providers`; this module has no HTTP in it, so the engine can be driven by
//! any implementation, including scripted ones in tests.

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatRole {
    User,
    Assistant,
}

/// One block of a message. Tool results always answer a tool use of the previous assistant
/// message, matched by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    Text { text: String },
    ToolUse { id: String, name: String, input: serde_json::Value },
    ToolResult { tool_use_id: String, content: String, is_error: bool },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: ChatRole,
    pub content: Vec<ContentBlock>,
}

impl Message {
    pub fn user_text(text: impl Into<String>) -> Message {
        Message { role: ChatRole::User, content: vec![ContentBlock::Text { text: text.into() }] }
    }
}

/// A tool offered to the model: its name, what it is for, and a JSON Schema of its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub input_schema: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRequest {
    pub model: String,
    pub system: String,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    /// Overrides the provider's configured `max_output_tokens` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
}

impl ModelRequest {
    /// Identifies a request within recorded runs, for replay: which tools the run offers
    /// (they differ by role), the first line of its first user message (the engine writes it
    /// to say what the run is for: "Feature F2: …", "Review feature F1 …") and how far the
    /// conversation has got. Runs that go on in parallel (review agents) differ in their first
    /// line, so replay can answer each with its own responses whatever order the calls come in;
    /// and nothing that varies between runs (command output, timings) is part of the key.
    pub fn replay_key(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for tool in &self.tools {
            hasher.update(tool.name.as_bytes());
            hasher.update([1]);
        }
        hasher.update([0]);
        let first_line = self
            .messages
            .first()
            .and_then(|m| {
                m.content.iter().find_map(|b| match b {
                    ContentBlock::Text { text } => Some(text.lines().next().unwrap_or_default().to_owned()),
                    ContentBlock::ToolUse { .. } | ContentBlock::ToolResult { .. } => None,
                })
            })
            .unwrap_or_default();
        hasher.update(first_line.as_bytes());
        hasher.update([0]);
        hasher.update(self.messages.len().to_le_bytes());
        hex::encode(&hasher.finalize()[..12])
    }
}

/// Why the model stopped, mapped from each wire format's own vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndTurn,
    ToolUse,
    MaxTokens,
    StopSequence,
    Refusal,
    PauseTurn,
    ContextWindowExceeded,
    ContentFilter,
    /// A value this version does not know, kept verbatim.
    Other(String),
}

/// Token counts normalised across providers. `input` excludes cache reads and writes (the
/// Anthropic convention); OpenAI's `prompt_tokens` includes `cached_tokens`, so its adapter
/// subtracts them. `reasoning` is an informational subset of `output`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    #[serde(default)]
    pub reasoning: u64,
}

impl Usage {
    /// Every token the provider reported: input including cache reads and writes, plus output.
    pub fn total(&self) -> u64 {
        self.input + self.cache_read + self.cache_write + self.output
    }

    pub fn add(&mut self, other: &Usage) {
        self.input += other.input;
        self.output += other.output;
        self.cache_read += other.cache_read;
        self.cache_write += other.cache_write;
        self.reasoning += other.reasoning;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelResponse {
    pub content: Vec<ContentBlock>,
    pub stop_reason: StopReason,
    /// Usage of this call, summed over every attempt the provider reported usage for.
    pub usage: Usage,
    /// Dollars, from the price table; `None` when the model's price is unknown (never 0).
    pub cost_usd: Option<f64>,
    /// The model as the server named it in its response.
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// How many HTTP attempts this call took (1 when nothing was retried).
    #[serde(default = "one")]
    pub attempts: u32,
}

fn one() -> u32 {
    1
}

impl ModelResponse {
    pub fn tool_uses(&self) -> impl Iterator<Item = (&str, &str, &serde_json::Value)> {
        self.content.iter().filter_map(|block| match block {
            ContentBlock::ToolUse { id, name, input } => Some((id.as_str(), name.as_str(), input)),
            ContentBlock::Text { .. } | ContentBlock::ToolResult { .. } => None,
        })
    }

    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(|block| match block {
                ContentBlock::Text { text } => Some(text.as_str()),
                ContentBlock::ToolUse { .. } | ContentBlock::ToolResult { .. } => None,
            })
            .collect()
    }
}

/// Which wait ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    Connect,
    FirstByte,
    Idle,
}

impl std::fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Connect => "the connection",
            TimeoutPhase::FirstByte => "the first byte of the response",
            TimeoutPhase::Idle => "the next chunk of the stream",
        })
    }
}

/// A failed model call, classified so that callers can branch: retry, pause the mission with
/// reason `provider`, tell the model its tool call was cut, or give up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("timed out waiting for {phase} after {after:?}")]
    Timeout { phase: TimeoutPhase, after: Duration },
    #[error("rate limited: {message}")]
    RateLimited { message: String, retry_after: Option<Duration> },
    #[error("the provider is overloaded: {message}")]
    Overloaded { message: String },
    #[error("server error (HTTP {status}): {message}")]
    Server { status: u16, message: String },
    #[error("authentication failed (HTTP {status}): {message}")]
    Auth { status: u16, message: String },
    #[error("quota or spend limit reached, not retried: {message}")]
    QuotaExhausted { message: String },
    #[error("the request does not fit the model's context window: {message}")]
    ContextOverflow { message: String },
    #[error("invalid request (HTTP {status}): {message}")]
    InvalidRequest { status: u16, message: String },
    #[error("{kind} error (HTTP {status}): {message}")]
    Api { status: u16, kind: String, message: String },
    /// The stream ended, or broke, before its terminal event. `partial` holds the text so far
    /// and never a tool call (a call that was being sent is named in `reason`); nothing in it
    /// may be acted on as if it were a whole turn. Retrying the request is safe.
    #[error("the response stream ended early: {reason}")]
    StreamInterrupted { reason: String, partial: Box<ModelResponse> },
    /// A finished response whose last tool call cannot be trusted: the model hit its output
    /// limit while writing it, or its input is not valid JSON. No tool call is in
    /// `partial.content` and none may be executed; the agent loop can tell the model and ask
    /// again (retrying the same request would give the same answer).
    #[error("the input of tool call `{tool}` was cut off ({reason}); it was not executed")]
    IncompleteToolCall { tool: String, reason: String, partial: Box<ModelResponse> },
    #[error("malformed response from the provider: {message}")]
    Protocol { message: String },
    #[error("replay: {message}")]
    Replay { message: String },
    #[error("the call was cancelled")]
    Cancelled,
}

impl ModelError {
    /// Whether trying the same request again may succeed. Quota, auth and request errors never
    /// get better by retrying; the SDKs' retry set (408, 409, 429, 5xx, 529) maps to the
    /// variants below.
    pub fn is_retryable(&self) -> bool {
        match self {
            ModelError::Connect { .. }
            | ModelError::Timeout { .. }
            | ModelError::RateLimited { .. }
            | ModelError::Overloaded { .. }
            | ModelError::Server { .. }
            | ModelError::StreamInterrupted { .. } => true,
            ModelError::Api { status, .. } => matches!(status, 408 | 409 | 429) || *status >= 500,
            ModelError::Auth { .. }
            | ModelError::QuotaExhausted { .. }
            | ModelError::ContextOverflow { .. }
            | ModelError::InvalidRequest { .. }
            | ModelError::IncompleteToolCall { .. }
            | ModelError::Protocol { .. }
            | ModelError::Replay { .. }
            | ModelError::Cancelled => false,
        }
    }
}

/// A call that did not produce a response: what went wrong, and what it cost anyway. The usage
/// of every failed attempt is kept here because providers bill for it and the budget must
/// count it (SPEC §2 rule 7).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error}")]
pub struct ModelFailure {
    pub error: ModelError,
    /// Tokens the provider reported over all attempts of the call.
    pub usage: Usage,
    pub attempts: u32,
}

impl From<ModelError> for ModelFailure {
    fn from(error: ModelError) -> ModelFailure {
        ModelFailure { error, usage: Usage::default(), attempts: 1 }
    }
}

/// What a streaming call reports while it runs, for progress displays.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamUpdate {
    Text(String),
    ToolCallStarted { name: String },
    Retrying { attempt: u32, delay: Duration, reason: String },
}

/// One line of a transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TranscriptEntry {
    /// A request as sent on the wire (body only).
    Request { ts: String, provider: String, url: String, attempt: u32, body: serde_json::Value },
    /// The assembled response of a successful call. `key` is the request's
    /// [`ModelRequest::replay_key`].
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

/// Where a call's exchange with its model is recorded: the run's transcript
/// (`transcript::TranscriptWriter`), which this module knows only through this trait.
pub trait ExchangeRecorder: Send + Sync {
    fn record(&self, entry: &TranscriptEntry);
}

/// Per-call context: where to record the exchange and who wants progress.
#[derive(Default, Clone, Copy)]
pub struct CallContext<'a> {
    pub transcript: Option<&'a dyn ExchangeRecorder>,
    pub observer: Option<&'a (dyn Fn(&StreamUpdate) + Send + Sync)>,
}

impl CallContext<'_> {
    pub fn notify(&self, update: StreamUpdate) {
        if let Some(observer) = self.observer {
            observer(&update);
        }
    }
}

/// The result of `missions doctor`'s cheap request to one provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeReport {
    pub status: ProbeStatus,
    /// What was tried and what came back, in a sentence.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeStatus {
    /// The server answered and accepted the request.
    Ok,
    /// The server answered but refused (a bad key, a wrong path).
    Rejected,
    /// Nothing answered: connection refused, DNS, timeout.
    Unreachable,
}

/// A model provider: one wire format, one configured endpoint.
pub trait ModelProvider: Send + Sync {
    /// The provider's name in `[providers.<name>]`.
    fn name(&self) -> &str;

    /// Sends one request and returns the whole, assembled response. Retries retryable
    /// failures per the provider's policy before giving up.
    fn complete<'a>(
        &'a self,
        request: &'a ModelRequest,
        context: CallContext<'a>,
    ) -> BoxFuture<'a, Result<ModelResponse, ModelFailure>>;

    /// One cheap request that tells whether the provider can be reached and accepts the key.
    fn probe(&self) -> BoxFuture<'_, ProbeReport>;
}

/// The model that serves one role: which provider, which model, how much output a call may
/// produce.
#[derive(Clone)]
pub struct RoleModel {
    pub provider: std::sync::Arc<dyn ModelProvider>,
    pub model: String,
    pub max_output_tokens: u32,
}

/// Each role's model.
#[derive(Clone, Default)]
pub struct Models {
    pub by_role: std::collections::BTreeMap<crate::mission::Role, RoleModel>,
}
