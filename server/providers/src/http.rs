//! The HTTP half shared by every wire format: one call is a loop of attempts, each with
//! connect, first-byte and idle-stream timeouts, retried per [`RetryPolicy`], recorded in the
//! run's transcript, and priced at the end.
//!
//! A wire format ([`Wire`]) only says how to build a request body, how to read a whole
//! response, how to assemble a streamed one ([`StreamAssembler`]) and how to classify an error
//! body; everything about time, retries and accounting lives here, once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use missions_core::model::{
    CallContext, ContentBlock, ExchangeRecorder, ModelError, ModelFailure, ModelProvider, ModelRequest, ModelResponse,
    ProbeReport, ProbeStatus, StreamUpdate, TimeoutPhase, Usage,
};
use missions_core::transcript::{TranscriptEntry, TranscriptWriter};
use reqwest::header::HeaderMap;

use crate::retry::{RetryHints, RetryPolicy};
use crate::sse::{SseDecoder, SseEvent};
use missions_core::pricing::PriceTable;

/// Assembles one streamed response from its SSE events.
pub(crate) trait StreamAssembler: Send {
    /// Takes one event. An `Err` is a failure the stream itself reported (a mid-stream error
    /// event), classified by the wire format.
    fn event(&mut self, event: &SseEvent, context: &CallContext<'_>) -> Result<(), ModelError>;
    /// The body ended: returns the whole response, or says why it is not whole.
    fn finish(self: Box<Self>) -> Result<ModelResponse, ModelError>;
    /// The body broke off (`reason`): the error to report, carrying what was assembled so far.
    fn interrupted(self: Box<Self>, reason: String) -> ModelError;
    /// Usage the stream has reported so far; it counts even when the attempt fails.
    fn usage_so_far(&self) -> Usage;
}

/// One wire format.
pub(crate) trait Wire: Send + Sync + 'static {
    /// The endpoint a completion request is posted to.
    fn completion_url(&self) -> String;
    /// The cheap endpoint `missions doctor` probes (a model list).
    fn probe_url(&self) -> String;
    /// Authentication and version headers.
    fn headers(&self, key: Option<&str>) -> Result<HeaderMap, ModelError>;
    fn request_body(&self, request: &ModelRequest, max_tokens: u32, stream: bool) -> serde_json::Value;
    fn parse_body(&self, body: &[u8]) -> Result<ModelResponse, ModelError>;
    fn assembler(&self, model: &str) -> Box<dyn StreamAssembler>;
    fn error_from_body(&self, status: u16, body: &[u8]) -> ModelError;
    /// The response header that carries the request id.
    fn request_id_header(&self) -> &'static str;
}

/// Per-provider settings taken from its configuration.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub stream: bool,
    pub max_output_tokens: u32,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    pub retry: RetryPolicy,
}

pub(crate) struct HttpProvider<W: Wire> {
    name: String,
    wire: W,
    client: reqwest::Client,
    key: Option<String>,
    settings: HttpSettings,
    prices: Arc<PriceTable>,
    /// The `record` file, when configured: every exchange is appended there too.
    recorder: Option<TranscriptWriter>,
}

/// A failed attempt: the error and what the server said about retrying.
struct Failure {
    error: ModelError,
    hints: RetryHints,
    usage: Usage,
}

impl Failure {
    fn plain(error: ModelError) -> Failure {
        let usage = match &error {
            ModelError::StreamInterrupted { partial, .. } | ModelError::IncompleteToolCall { partial, .. } => {
                partial.usage
            }
            _ => Usage::default(),
        };
        Failure { error, hints: RetryHints::default(), usage }
    }
}

/// The chain of causes of a transport error, which is where "Connection refused" lives.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

fn transport_error(error: reqwest::Error, url: &str, connect_timeout: Duration) -> ModelError {
    if error.is_timeout() {
        ModelError::Timeout { phase: TimeoutPhase::Connect, after: connect_timeout }
    } else {
        ModelError::Connect { url: url.to_owned(), reason: describe(&error) }
    }
}

impl<W: Wire> HttpProvider<W> {
    pub(crate) fn new(
        name: String,
        wire: W,
        key: Option<String>,
        settings: HttpSettings,
        prices: Arc<PriceTable>,
        recorder: Option<TranscriptWriter>,
    ) -> Result<HttpProvider<W>, ModelError> {
        let client = reqwest::Client::builder().connect_timeout(settings.connect_timeout).build().map_err(|error| {
            ModelError::Protocol { message: format!("cannot build the HTTP client: {}", describe(&error)) }
        })?;
        Ok(HttpProvider { name, wire, client, key, settings, prices, recorder })
    }

    fn record(&self, context: &CallContext<'_>, entry: TranscriptEntry) {
        let own = self.recorder.as_ref().map(|r| r as &dyn ExchangeRecorder);
        for writer in context.transcript.into_iter().chain(own) {
            writer.record(&entry);
        }
    }

    async fn read_all(&self, response: &mut reqwest::Response) -> Result<Vec<u8>, ModelError> {
        let mut body = Vec::new();
        loop {
            match tokio::time::timeout(self.settings.idle_timeout, response.chunk()).await {
                Err(_) => {
                    return Err(ModelError::Timeout { phase: TimeoutPhase::Idle, after: self.settings.idle_timeout });
                }
                Ok(Err(error)) => {
                    return Err(ModelError::StreamInterrupted {
                        reason: describe(&error),
                        partial: Box::new(empty_response(String::new())),
                    });
                }
                Ok(Ok(None)) => return Ok(body),
                Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
            }
        }
    }

    async fn attempt(
        &self,
        url: &str,
        body: &[u8],
        model: &str,
        context: &CallContext<'_>,
    ) -> Result<ModelResponse, Failure> {
        let headers = self.wire.headers(self.key.as_deref()).map_err(Failure::plain)?;
        let request = self.client.post(url).headers(headers).body(body.to_vec());
        let mut response = match tokio::time::timeout(self.settings.first_byte_timeout, request.send()).await {
            Err(_) => {
                return Err(Failure::plain(ModelError::Timeout {
                    phase: TimeoutPhase::FirstByte,
                    after: self.settings.first_byte_timeout,
                }));
            }
            Ok(Err(error)) => {
                return Err(Failure::plain(transport_error(error, url, self.settings.connect_timeout)));
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status().as_u16();
        let hints = RetryHints::from_headers(response.headers(), SystemTime::now());
        let request_id =
            response.headers().get(self.wire.request_id_header()).and_then(|v| v.to_str().ok()).map(str::to_owned);
        if !(200..300).contains(&status) {
            let body = self.read_all(&mut response).await.unwrap_or_default();
            let mut error = self.wire.error_from_body(status, &body);
            if let ModelError::RateLimited { retry_after, .. } = &mut error {
                *retry_after = hints.retry_after;
            }
            return Err(Failure { error, hints, usage: Usage::default() });
        }

        let mut assembled = if self.settings.stream {
            self.read_stream(&mut response, model, context).await?
        } else {
            let body = self.read_all(&mut response).await.map_err(Failure::plain)?;
            self.wire.parse_body(&body).map_err(Failure::plain)?
        };
        if assembled.request_id.is_none() {
            assembled.request_id = request_id;
        }
        Ok(assembled)
    }

    async fn read_stream(
        &self,
        response: &mut reqwest::Response,
        model: &str,
        context: &CallContext<'_>,
    ) -> Result<ModelResponse, Failure> {
        let mut assembler = self.wire.assembler(model);
        let mut decoder = SseDecoder::new();
        let mut events = Vec::new();
        loop {
            let chunk = match tokio::time::timeout(self.settings.idle_timeout, response.chunk()).await {
                Err(_) => {
                    let usage = assembler.usage_so_far();
                    let reason = format!("no data for {:?}", self.settings.idle_timeout);
                    return Err(Failure { error: assembler.interrupted(reason), hints: RetryHints::default(), usage });
                }
                Ok(Err(error)) => {
                    let usage = assembler.usage_so_far();
                    return Err(Failure {
                        error: assembler.interrupted(describe(&error)),
                        hints: RetryHints::default(),
                        usage,
                    });
                }
                Ok(Ok(chunk)) => chunk,
            };
            match &chunk {
                Some(bytes) => decoder.feed(bytes, &mut events),
                None => decoder.finish(&mut events),
            }
            for event in events.drain(..) {
                if let Err(error) = assembler.event(&event, context) {
                    let usage = assembler.usage_so_far();
                    return Err(Failure { error, hints: RetryHints::default(), usage });
                }
            }
            if chunk.is_none() {
                return assembler.finish().map_err(Failure::plain);
            }
        }
    }

    async fn call(&self, request: &ModelRequest, context: CallContext<'_>) -> Result<ModelResponse, ModelFailure> {
        let url = self.wire.completion_url();
        let max_tokens = request.max_tokens.unwrap_or(self.settings.max_output_tokens);
        let body_json = self.wire.request_body(request, max_tokens, self.settings.stream);
        let body =
            serde_json::to_vec(&body_json).map_err(|error| ModelError::Protocol { message: error.to_string() })?;
        let mut consumed = Usage::default();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.record(
                &context,
                TranscriptEntry::Request {
                    ts: missions_core::now_rfc3339(),
                    provider: self.name.clone(),
                    url: url.clone(),
                    attempt,
                    body: body_json.clone(),
                },
            );
            match self.attempt(&url, &body, &request.model, &context).await {
                Ok(mut response) => {
                    response.usage.add(&consumed);
                    response.attempts = attempt;
                    response.cost_usd = self.prices.cost(&request.model, &response.model, &response.usage);
                    self.record(
                        &context,
                        TranscriptEntry::Response {
                            ts: missions_core::now_rfc3339(),
                            provider: self.name.clone(),
                            key: Some(request.replay_key()),
                            response: response.clone(),
                        },
                    );
                    return Ok(response);
                }
                Err(failure) => {
                    consumed.add(&failure.usage);
                    let delay = self.settings.retry.next_delay(attempt, &failure.error, failure.hints);
                    self.record(
                        &context,
                        TranscriptEntry::Error {
                            ts: missions_core::now_rfc3339(),
                            provider: self.name.clone(),
                            attempt,
                            error: failure.error.to_string(),
                            retry_in_ms: delay.map(|d| d.as_millis() as u64),
                        },
                    );
                    let Some(delay) = delay else {
                        return Err(ModelFailure { error: failure.error, usage: consumed, attempts: attempt });
                    };
                    context.notify(StreamUpdate::Retrying { attempt, delay, reason: failure.error.to_string() });
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn probe_once(&self) -> ProbeReport {
        let url = self.wire.probe_url();
        let headers = match self.wire.headers(self.key.as_deref()) {
            Ok(headers) => headers,
            Err(error) => {
                return ProbeReport { status: ProbeStatus::Rejected, detail: error.to_string() };
            }
        };
        let limit = self.settings.first_byte_timeout.min(Duration::from_secs(15));
        let sent = tokio::time::timeout(limit, self.client.get(&url).headers(headers).send()).await;
        let mut response = match sent {
            Err(_) => {
                return ProbeReport {
                    status: ProbeStatus::Unreachable,
                    detail: format!("GET {url}: no response within {limit:?}"),
                };
            }
            Ok(Err(error)) => {
                let error = transport_error(error, &url, self.settings.connect_timeout);
                return ProbeReport { status: ProbeStatus::Unreachable, detail: format!("GET {url}: {error}") };
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return ProbeReport { status: ProbeStatus::Ok, detail: format!("GET {url}: HTTP {status}") };
        }
        let body = self.read_all(&mut response).await.unwrap_or_default();
        let error = self.wire.error_from_body(status, &body);
        ProbeReport { status: ProbeStatus::Rejected, detail: format!("GET {url}: {error}") }
    }
}

fn tool_names(response: &ModelResponse) -> impl Iterator<Item = &str> {
    response.content.iter().filter_map(|block| match block {
        ContentBlock::ToolUse { name, .. } => Some(name.as_str()),
        ContentBlock::Text { .. } | ContentBlock::ToolResult { .. } => None,
    })
}

fn without_tool_calls(mut response: ModelResponse) -> Box<ModelResponse> {
    response.content.retain(|block| !matches!(block, ContentBlock::ToolUse { .. }));
    Box::new(response)
}

/// What an assembled stream amounts to once its body has ended: the whole response, or an
/// error saying why it is not whole. `terminal` says whether the wire format's last event
/// (`terminal_event`) arrived; `hit_limit` whether the model stopped at its output limit;
/// `unparsable_tool` names a call whose input did not parse.
pub(crate) fn settle(
    response: ModelResponse,
    unparsable_tool: Option<String>,
    terminal: bool,
    hit_limit: bool,
    terminal_event: &str,
) -> Result<ModelResponse, ModelError> {
    if !terminal {
        return Err(broken_off(response, unparsable_tool, format!("the stream ended without {terminal_event}")));
    }
    let limit_reason = || "the response hit the output token limit (max_tokens)".to_owned();
    if let Some(tool) = unparsable_tool {
        let reason = if hit_limit { limit_reason() } else { "its input is not valid JSON".to_owned() };
        return Err(ModelError::IncompleteToolCall { tool, reason, partial: without_tool_calls(response) });
    }
    // A call that ends the response when the limit struck may have been cut at a point where
    // its JSON still parses (an empty input is `{}`), so it cannot be trusted either.
    if hit_limit && let Some(ContentBlock::ToolUse { name, .. }) = response.content.last() {
        let tool = name.clone();
        return Err(ModelError::IncompleteToolCall {
            tool,
            reason: limit_reason(),
            partial: without_tool_calls(response),
        });
    }
    Ok(response)
}

/// The error for a stream whose body broke off (`reason`): always a retryable
/// `StreamInterrupted`, with every tool call taken out of what was assembled so far.
pub(crate) fn broken_off(response: ModelResponse, cut_tool: Option<String>, reason: String) -> ModelError {
    let cut_tool = cut_tool.or_else(|| tool_names(&response).last().map(str::to_owned));
    let reason = match cut_tool {
        Some(tool) => format!("{reason}; tool call `{tool}` was not executed"),
        None => reason,
    };
    ModelError::StreamInterrupted { reason, partial: without_tool_calls(response) }
}

/// An empty response, the start of every assembly.
pub(crate) fn empty_response(model: String) -> ModelResponse {
    ModelResponse {
        content: Vec::new(),
        stop_reason: missions_core::model::StopReason::EndTurn,
        usage: Usage::default(),
        cost_usd: None,
        model,
        request_id: None,
        attempts: 1,
    }
}

impl<W: Wire> ModelProvider for HttpProvider<W> {
    fn name(&self) -> &str {
        &self.name
    }

    fn complete<'a>(
        &'a self,
        request: &'a ModelRequest,
        context: CallContext<'a>,
    ) -> BoxFuture<'a, Result<ModelResponse, ModelFailure>> {
        Box::pin(self.call(request, context))
    }

    fn probe(&self) -> BoxFuture<'_, ProbeReport> {
        Box::pin(self.probe_once())
    }
}

/// Maps a provider's error vocabulary to [`ModelError`]. `status` is `None` for an error that
/// arrived inside a 200 stream, which is classified by its type alone: a mid-stream
/// `overloaded_error` is an overload, whatever the HTTP status said.
pub(crate) fn classify(status: Option<u16>, kind: Option<&str>, code: Option<&str>, message: String) -> ModelError {
    let lower = message.to_ascii_lowercase();
    let quota = matches!(code, Some("enforced_spend_limit_reached" | "insufficient_quota"))
        || matches!(kind, Some("insufficient_quota" | "billing_error"))
        || lower.contains("spend limit")
        || lower.contains("usage limits")
        || lower.contains("credit balance is too low");
    if quota {
        return ModelError::QuotaExhausted { message };
    }
    let overflow = matches!(code, Some("context_length_exceeded"))
        || lower.contains("prompt is too long")
        || lower.contains("maximum context length")
        || lower.contains("context window");
    if overflow {
        return ModelError::ContextOverflow { message };
    }
    match kind {
        Some("rate_limit_error" | "rate_limit_exceeded") => {
            return ModelError::RateLimited { message, retry_after: None };
        }
        Some("overloaded_error") => return ModelError::Overloaded { message },
        Some("authentication_error" | "permission_error" | "invalid_api_key") => {
            return ModelError::Auth { status: status.unwrap_or(401), message };
        }
        Some("api_error" | "server_error" | "timeout_error") => {
            return ModelError::Server { status: status.unwrap_or(500), message };
        }
        Some("invalid_request_error" | "not_found_error" | "request_too_large")
            if status.is_none_or(|s| (400..500).contains(&s) && s != 429 && s != 408 && s != 409) =>
        {
            return ModelError::InvalidRequest { status: status.unwrap_or(400), message };
        }
        _ => {}
    }
    match status {
        Some(401 | 403) => ModelError::Auth { status: status.unwrap_or(401), message },
        Some(429) => ModelError::RateLimited { message, retry_after: None },
        Some(529) => ModelError::Overloaded { message },
        Some(s @ 500..=599) => ModelError::Server { status: s, message },
        Some(s @ (408 | 409)) => ModelError::Api { status: s, kind: kind.unwrap_or("http").to_owned(), message },
        Some(s @ 400..=499) => ModelError::InvalidRequest { status: s, message },
        Some(s) => ModelError::Api { status: s, kind: kind.unwrap_or("http").to_owned(), message },
        None => ModelError::Api { status: 200, kind: kind.unwrap_or("unknown").to_owned(), message },
    }
}

/// Reads `{"error": {"type", "message", "code"}}`-shaped bodies (both vendors nest the error
/// object like this), falling back to the raw text for anything else.
pub(crate) fn error_parts(body: &[u8]) -> (Option<String>, Option<String>, String) {
    let text = String::from_utf8_lossy(body).trim().to_owned();
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        let message = if text.is_empty() { "no error message".to_owned() } else { text.chars().take(500).collect() };
        return (None, None, message);
    };
    let error = value.get("error").unwrap_or(&value);
    let kind = error.get("type").and_then(|v| v.as_str()).map(str::to_owned);
    let code = error
        .get("code")
        .and_then(|v| v.as_str())
        .or_else(|| error.pointer("/details/error_code").and_then(|v| v.as_str()))
        .map(str::to_owned);
    let message = error
        .get("message")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| text.chars().take(500).collect());
    (kind, code, message)
}
