//! The Anthropic Messages API (`POST {base}/v1/messages`), streamed or whole.
//!
//! Requests put prompt-cache breakpoints on the stable prefix: the last tool, the system
//! prompt, and the last block of the conversation so far, so each turn of an agent run reads
//! the previous turns from the cache. Streams are assembled exactly: text deltas appended,
//! `input_json_delta` fragments concatenated and parsed once at `content_block_stop` (an empty
//! concatenation means `{}`), unknown events, blocks and deltas ignored, `ping` skipped, and a
//! mid-stream `error` event classified by its `error.type`. Usage in `message_delta` is
//! cumulative; each field falls back to `message_start` when the delta lacks it.

use std::collections::BTreeMap;

use missions_core::model::{
    CallContext, ChatRole, ContentBlock, ModelError, ModelRequest, ModelResponse, StopReason, StreamUpdate, Usage,
};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

use crate::http::{StreamAssembler, Wire, broken_off, classify, empty_response, error_parts, settle};
use crate::sse::SseEvent;

pub const DEFAULT_VERSION: &str = "2023-06-01";

pub(crate) struct AnthropicWire {
    pub base_url: String,
    pub version: String,
}

fn cache_control() -> Value {
    json!({"type": "ephemeral"})
}

fn block_json(block: &ContentBlock) -> Option<Value> {
    match block {
        // The API rejects empty text blocks.
        ContentBlock::Text { text } if text.is_empty() => None,
        ContentBlock::Text { text } => Some(json!({"type": "text", "text": text})),
        ContentBlock::ToolUse { id, name, input } => {
            Some(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
        }
        ContentBlock::ToolResult { tool_use_id, content, is_error } => Some(json!({
            "type": "tool_result", "tool_use_id": tool_use_id, "content": content, "is_error": is_error
        })),
    }
}

pub(crate) fn map_stop_reason(reason: &str) -> StopReason {
    match reason {
        "end_turn" => StopReason::EndTurn,
        "tool_use" => StopReason::ToolUse,
        "max_tokens" => StopReason::MaxTokens,
        "stop_sequence" => StopReason::StopSequence,
        "refusal" => StopReason::Refusal,
        "pause_turn" => StopReason::PauseTurn,
        "model_context_window_exceeded" => StopReason::ContextWindowExceeded,
        other => StopReason::Other(other.to_owned()),
    }
}

/// The four usage counters as Anthropic reports them; each may be absent from an event.
#[derive(Debug, Default, Clone, Copy)]
struct RawUsage {
    input: Option<u64>,
    output: Option<u64>,
    cache_write: Option<u64>,
    cache_read: Option<u64>,
}

impl RawUsage {
    fn read(value: Option<&Value>) -> RawUsage {
        let field = |name: &str| value.and_then(|u| u.get(name)).and_then(Value::as_u64);
        RawUsage {
            input: field("input_tokens"),
            output: field("output_tokens"),
            cache_write: field("cache_creation_input_tokens"),
            cache_read: field("cache_read_input_tokens"),
        }
    }

    /// `self` is the later report; its fields win where present.
    fn over(self, earlier: RawUsage) -> Usage {
        Usage {
            input: self.input.or(earlier.input).unwrap_or(0),
            output: self.output.or(earlier.output).unwrap_or(0),
            cache_write: self.cache_write.or(earlier.cache_write).unwrap_or(0),
            cache_read: self.cache_read.or(earlier.cache_read).unwrap_or(0),
            reasoning: 0,
        }
    }
}

/// Parses a tool call's accumulated JSON; an empty string is the empty object.
pub(crate) fn parse_tool_input(json: &str) -> Option<Value> {
    if json.trim().is_empty() {
        return Some(json!({}));
    }
    serde_json::from_str(json).ok()
}

impl Wire for AnthropicWire {
    fn completion_url(&self) -> String {
        format!("{}/v1/messages", self.base_url.trim_end_matches('/'))
    }

    fn probe_url(&self) -> String {
        format!("{}/v1/models", self.base_url.trim_end_matches('/'))
    }

    fn headers(&self, key: Option<&str>) -> Result<HeaderMap, ModelError> {
        let mut headers = HeaderMap::new();
        let value = |v: &str| {
            HeaderValue::from_str(v)
                .map_err(|_| ModelError::Protocol { message: "a header value is not valid ASCII".into() })
        };
        headers.insert(HeaderName::from_static("content-type"), HeaderValue::from_static("application/json"));
        headers.insert(HeaderName::from_static("anthropic-version"), value(&self.version)?);
        if let Some(key) = key {
            let mut key = value(key)?;
            key.set_sensitive(true);
            headers.insert(HeaderName::from_static("x-api-key"), key);
        }
        Ok(headers)
    }

    fn request_body(&self, request: &ModelRequest, max_tokens: u32, stream: bool) -> Value {
        let mut messages: Vec<Value> = request
            .messages
            .iter()
            .map(|message| {
                let role = match message.role {
                    ChatRole::User => "user",
                    ChatRole::Assistant => "assistant",
                };
                json!({"role": role, "content": message.content.iter().filter_map(block_json).collect::<Vec<_>>()})
            })
            .collect();
        // Caching the conversation so far: the next turn repeats it byte for byte.
        if let Some(last) = messages
            .last_mut()
            .and_then(|m| m.get_mut("content"))
            .and_then(Value::as_array_mut)
            .and_then(|c| c.last_mut())
            && let Some(block) = last.as_object_mut()
        {
            block.insert("cache_control".into(), cache_control());
        }
        let mut tools: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| json!({"name": tool.name, "description": tool.description, "input_schema": tool.input_schema}))
            .collect();
        if let Some(last) = tools.last_mut().and_then(Value::as_object_mut) {
            last.insert("cache_control".into(), cache_control());
        }
        let mut body = json!({
            "model": request.model,
            "max_tokens": max_tokens,
            "messages": messages,
        });
        if !request.system.is_empty() {
            body["system"] = json!([{"type": "text", "text": request.system, "cache_control": cache_control()}]);
        }
        if !tools.is_empty() {
            body["tools"] = Value::Array(tools);
        }
        if stream {
            body["stream"] = Value::Bool(true);
        }
        body
    }

    fn parse_body(&self, body: &[u8]) -> Result<ModelResponse, ModelError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|error| ModelError::Protocol { message: format!("response is not JSON: {error}") })?;
        let mut response = empty_response(value.get("model").and_then(Value::as_str).unwrap_or_default().to_owned());
        response.request_id = value.get("id").and_then(Value::as_str).map(str::to_owned);
        response.usage = RawUsage::read(value.get("usage")).over(RawUsage::default());
        let stop = value.get("stop_reason").and_then(Value::as_str).unwrap_or("end_turn");
        response.stop_reason = map_stop_reason(stop);
        for block in value.get("content").and_then(Value::as_array).into_iter().flatten() {
            match block.get("type").and_then(Value::as_str) {
                Some("text") => {
                    let text = block.get("text").and_then(Value::as_str).unwrap_or_default().to_owned();
                    response.content.push(ContentBlock::Text { text });
                }
                Some("tool_use") => {
                    let name = block.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
                    let id = block.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
                    let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                    response.content.push(ContentBlock::ToolUse { id, name, input });
                }
                _ => {}
            }
        }
        // A whole response is settled like a finished stream: a call that ends a response cut
        // by max_tokens may be partial and is never trusted.
        let hit_limit = response.stop_reason == StopReason::MaxTokens;
        settle(response, None, true, hit_limit, "message_stop")
    }

    fn assembler(&self, model: &str) -> Box<dyn StreamAssembler> {
        Box::new(AnthropicStream {
            response: empty_response(model.to_owned()),
            blocks: BTreeMap::new(),
            start_usage: RawUsage::default(),
            delta_usage: RawUsage::default(),
            stop_reason: None,
            stopped: false,
        })
    }

    fn error_from_body(&self, status: u16, body: &[u8]) -> ModelError {
        let (kind, code, message) = error_parts(body);
        classify(Some(status), kind.as_deref(), code.as_deref(), message)
    }

    fn request_id_header(&self) -> &'static str {
        "request-id"
    }
}

enum Block {
    Text(String),
    Tool {
        id: String,
        name: String,
        json: String,
        closed: bool,
    },
    /// Thinking, citations and block types added after this was written.
    Other,
}

struct AnthropicStream {
    response: ModelResponse,
    blocks: BTreeMap<u64, Block>,
    start_usage: RawUsage,
    delta_usage: RawUsage,
    stop_reason: Option<String>,
    stopped: bool,
}

impl AnthropicStream {
    fn usage(&self) -> Usage {
        self.delta_usage.over(self.start_usage)
    }

    /// The response built so far, and the first tool call that is not whole, if any.
    fn build(&mut self) -> (ModelResponse, Option<String>) {
        let mut response = std::mem::replace(&mut self.response, empty_response(String::new()));
        response.usage = self.usage();
        let mut incomplete = None;
        for block in std::mem::take(&mut self.blocks).into_values() {
            match block {
                Block::Text(text) if !text.is_empty() => response.content.push(ContentBlock::Text { text }),
                Block::Tool { id, name, json, closed } => match parse_tool_input(&json).filter(|_| closed) {
                    Some(input) => response.content.push(ContentBlock::ToolUse { id, name, input }),
                    None => {
                        incomplete.get_or_insert(name);
                    }
                },
                Block::Text(_) | Block::Other => {}
            }
        }
        if let Some(reason) = &self.stop_reason {
            response.stop_reason = map_stop_reason(reason);
        }
        (response, incomplete)
    }
}

impl StreamAssembler for AnthropicStream {
    fn event(&mut self, event: &SseEvent, context: &CallContext<'_>) -> Result<(), ModelError> {
        let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
            // Anthropic's data lines are always JSON; an unparsable one is an event of a kind
            // this version does not know, and is skipped like any unknown event.
            return Ok(());
        };
        let kind = data.get("type").and_then(Value::as_str).or(event.event.as_deref()).unwrap_or_default();
        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind {
            "message_start" => {
                let message = data.get("message");
                if let Some(model) = message.and_then(|m| m.get("model")).and_then(Value::as_str) {
                    self.response.model = model.to_owned();
                }
                self.response.request_id = message.and_then(|m| m.get("id")).and_then(Value::as_str).map(str::to_owned);
                self.start_usage = RawUsage::read(message.and_then(|m| m.get("usage")));
            }
            "content_block_start" => {
                let block = data.get("content_block");
                let block = match block.and_then(|b| b.get("type")).and_then(Value::as_str) {
                    Some("text") => Block::Text(
                        block.and_then(|b| b.get("text")).and_then(Value::as_str).unwrap_or_default().to_owned(),
                    ),
                    Some("tool_use") => {
                        let name =
                            block.and_then(|b| b.get("name")).and_then(Value::as_str).unwrap_or_default().to_owned();
                        context.notify(StreamUpdate::ToolCallStarted { name: name.clone() });
                        Block::Tool {
                            id: block.and_then(|b| b.get("id")).and_then(Value::as_str).unwrap_or_default().to_owned(),
                            name,
                            json: String::new(),
                            closed: false,
                        }
                    }
                    _ => Block::Other,
                };
                self.blocks.insert(index, block);
            }
            "content_block_delta" => {
                let delta = data.get("delta");
                match (delta.and_then(|d| d.get("type")).and_then(Value::as_str), self.blocks.get_mut(&index)) {
                    (Some("text_delta"), Some(Block::Text(text))) => {
                        let piece = delta.and_then(|d| d.get("text")).and_then(Value::as_str).unwrap_or_default();
                        text.push_str(piece);
                        context.notify(StreamUpdate::Text(piece.to_owned()));
                    }
                    (Some("input_json_delta"), Some(Block::Tool { json, .. })) => {
                        json.push_str(
                            delta.and_then(|d| d.get("partial_json")).and_then(Value::as_str).unwrap_or_default(),
                        );
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                if let Some(Block::Tool { closed, .. }) = self.blocks.get_mut(&index) {
                    *closed = true;
                }
            }
            "message_delta" => {
                if let Some(reason) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(reason.to_owned());
                }
                let latest = RawUsage::read(data.get("usage"));
                self.delta_usage = RawUsage {
                    input: latest.input.or(self.delta_usage.input),
                    output: latest.output.or(self.delta_usage.output),
                    cache_write: latest.cache_write.or(self.delta_usage.cache_write),
                    cache_read: latest.cache_read.or(self.delta_usage.cache_read),
                };
            }
            "message_stop" => self.stopped = true,
            "error" => {
                let error = data.get("error");
                let field = |name: &str| error.and_then(|e| e.get(name)).and_then(Value::as_str);
                let code = error.and_then(|e| e.pointer("/details/error_code")).and_then(Value::as_str);
                return Err(classify(None, field("type"), code, field("message").unwrap_or("error event").to_owned()));
            }
            // `ping` and event types added after this was written.
            _ => {}
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<ModelResponse, ModelError> {
        let (stopped, hit_limit) = (self.stopped, self.stop_reason.as_deref() == Some("max_tokens"));
        let (response, incomplete) = self.build();
        settle(response, incomplete, stopped, hit_limit, "message_stop")
    }

    fn interrupted(mut self: Box<Self>, reason: String) -> ModelError {
        let (response, incomplete) = self.build();
        broken_off(response, incomplete, reason)
    }

    fn usage_so_far(&self) -> Usage {
        self.usage()
    }
}
