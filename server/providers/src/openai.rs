//! OpenAI Chat Completions (`POST {base}/chat/completions`, base including `/v1`), which
//! Ollama, vLLM, llama.cpp server, LM Studio and OpenRouter speak too.
//!
//! Streamed tool calls are accumulated by their `index`, not their id, so parallel calls that
//! interleave stay apart; `id` and `name` arrive once, `arguments` in fragments. Local servers
//! bend the format, and the quirks seen in the wild are absorbed: arguments sent whole (even as
//! a JSON object instead of a string), a missing `index` or `id`, usage on a chunk that also
//! has choices, no `[DONE]`. `prompt_tokens` includes cached tokens, so they are subtracted to
//! get uncached input.

use std::collections::BTreeMap;

use missions_core::model::{
    CallContext, ChatRole, ContentBlock, ModelError, ModelRequest, ModelResponse, StopReason, StreamUpdate, Usage,
};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

use crate::anthropic::parse_tool_input;
use crate::http::{StreamAssembler, Wire, broken_off, classify, empty_response, error_parts, settle};
use crate::sse::SseEvent;

pub(crate) struct OpenAiWire {
    pub base_url: String,
}

pub(crate) fn map_finish_reason(reason: &str) -> StopReason {
    match reason {
        "stop" => StopReason::EndTurn,
        "length" => StopReason::MaxTokens,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "content_filter" => StopReason::ContentFilter,
        other => StopReason::Other(other.to_owned()),
    }
}

fn read_usage(value: &Value) -> Usage {
    let number = |pointer: &str| value.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
    let prompt = number("/prompt_tokens");
    let cache_read = number("/prompt_tokens_details/cached_tokens");
    let cache_write = number("/prompt_tokens_details/cache_write_tokens");
    Usage {
        input: prompt.saturating_sub(cache_read).saturating_sub(cache_write),
        output: number("/completion_tokens"),
        cache_read,
        cache_write,
        reasoning: number("/completion_tokens_details/reasoning_tokens"),
    }
}

/// Tool-call arguments as a string, whether the server sent a string or (Ollama) an object.
fn arguments_text(arguments: Option<&Value>) -> String {
    match arguments {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

impl Wire for OpenAiWire {
    fn completion_url(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }

    fn probe_url(&self) -> String {
        format!("{}/models", self.base_url.trim_end_matches('/'))
    }

    fn headers(&self, key: Option<&str>) -> Result<HeaderMap, ModelError> {
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static("content-type"), HeaderValue::from_static("application/json"));
        if let Some(key) = key {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| ModelError::Protocol { message: "the API key is not valid ASCII".into() })?;
            value.set_sensitive(true);
            headers.insert(HeaderName::from_static("authorization"), value);
        }
        Ok(headers)
    }

    fn request_body(&self, request: &ModelRequest, max_tokens: u32, stream: bool) -> Value {
        let mut messages = Vec::new();
        if !request.system.is_empty() {
            messages.push(json!({"role": "system", "content": request.system}));
        }
        for message in &request.messages {
            let text: String = message
                .content
                .iter()
                .filter_map(|b| match b {
                    ContentBlock::Text { text } => Some(text.as_str()),
                    ContentBlock::ToolUse { .. } | ContentBlock::ToolResult { .. } => None,
                })
                .collect::<Vec<_>>()
                .join("\n");
            match message.role {
                ChatRole::Assistant => {
                    let calls: Vec<Value> = message
                        .content
                        .iter()
                        .filter_map(|b| match b {
                            ContentBlock::ToolUse { id, name, input } => Some(json!({
                                "id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()}
                            })),
                            ContentBlock::Text { .. } | ContentBlock::ToolResult { .. } => None,
                        })
                        .collect();
                    let mut entry = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::String(text) }});
                    if !calls.is_empty() {
                        entry["tool_calls"] = Value::Array(calls);
                    }
                    messages.push(entry);
                }
                ChatRole::User => {
                    // Tool results are messages of their own, right after the assistant
                    // message that called them; any text of the same turn follows them.
                    for block in &message.content {
                        if let ContentBlock::ToolResult { tool_use_id, content, is_error } = block {
                            let content = if *is_error { format!("Error: {content}") } else { content.clone() };
                            messages.push(json!({"role": "tool", "tool_call_id": tool_use_id, "content": content}));
                        }
                    }
                    if !text.is_empty() {
                        messages.push(json!({"role": "user", "content": text}));
                    }
                }
            }
        }
        let mut body = json!({
            "model": request.model,
            "messages": messages,
            "max_completion_tokens": max_tokens,
        });
        if !request.tools.is_empty() {
            body["tools"] = Value::Array(
                request
                    .tools
                    .iter()
                    .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.input_schema}}))
                    .collect(),
            );
        }
        if stream {
            body["stream"] = Value::Bool(true);
            body["stream_options"] = json!({"include_usage": true});
        }
        body
    }

    fn parse_body(&self, body: &[u8]) -> Result<ModelResponse, ModelError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|error| ModelError::Protocol { message: format!("response is not JSON: {error}") })?;
        if value.get("error").is_some() {
            let (kind, code, message) = error_parts(body);
            return Err(classify(None, kind.as_deref(), code.as_deref(), message));
        }
        let mut stream = OpenAiStream::new(value.get("model").and_then(Value::as_str).unwrap_or_default());
        stream.response.request_id = value.get("id").and_then(Value::as_str).map(str::to_owned);
        if let Some(usage) = value.get("usage").filter(|u| u.is_object()) {
            stream.usage = Some(read_usage(usage));
        }
        let choice = value.get("choices").and_then(Value::as_array).and_then(|c| c.first());
        let message = choice.and_then(|c| c.get("message"));
        if let Some(text) = message.and_then(|m| m.get("content")).and_then(Value::as_str) {
            stream.text.push_str(text);
        }
        for (position, call) in
            message.and_then(|m| m.get("tool_calls")).and_then(Value::as_array).into_iter().flatten().enumerate()
        {
            stream.calls.insert(
                position as u64,
                ToolCall {
                    id: call.get("id").and_then(Value::as_str).map(str::to_owned),
                    name: call.pointer("/function/name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    arguments: arguments_text(call.pointer("/function/arguments")),
                },
            );
        }
        stream.finish_reason =
            Some(choice.and_then(|c| c.get("finish_reason")).and_then(Value::as_str).unwrap_or("stop").to_owned());
        Box::new(stream).finish()
    }

    fn assembler(&self, model: &str) -> Box<dyn StreamAssembler> {
        Box::new(OpenAiStream::new(model))
    }

    fn error_from_body(&self, status: u16, body: &[u8]) -> ModelError {
        let (kind, code, message) = error_parts(body);
        classify(Some(status), kind.as_deref(), code.as_deref(), message)
    }

    fn request_id_header(&self) -> &'static str {
        "x-request-id"
    }
}

struct ToolCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

struct OpenAiStream {
    response: ModelResponse,
    text: String,
    calls: BTreeMap<u64, ToolCall>,
    /// The index of the call the last fragment belonged to, for servers that omit `index`.
    last_index: Option<u64>,
    finish_reason: Option<String>,
    done: bool,
    usage: Option<Usage>,
}

impl OpenAiStream {
    fn new(model: &str) -> OpenAiStream {
        OpenAiStream {
            response: empty_response(model.to_owned()),
            text: String::new(),
            calls: BTreeMap::new(),
            last_index: None,
            finish_reason: None,
            done: false,
            usage: None,
        }
    }

    fn take_tool_delta(&mut self, call: &Value, context: &CallContext<'_>) {
        let id = call.get("id").and_then(Value::as_str).filter(|id| !id.is_empty());
        let index = match call.get("index").and_then(Value::as_u64) {
            Some(index) => index,
            // No index: a new id starts a new call, anything else continues the last one.
            None => match (id, self.last_index) {
                (Some(id), Some(last)) if self.calls.get(&last).and_then(|c| c.id.as_deref()) == Some(id) => last,
                (None, Some(last)) => last,
                _ => self.calls.len() as u64,
            },
        };
        self.last_index = Some(index);
        let entry = self.calls.entry(index).or_insert_with(|| ToolCall {
            id: None,
            name: String::new(),
            arguments: String::new(),
        });
        if entry.id.is_none() {
            entry.id = id.map(str::to_owned);
        }
        if let Some(name) = call.pointer("/function/name").and_then(Value::as_str).filter(|n| !n.is_empty())
            && entry.name.is_empty()
        {
            entry.name = name.to_owned();
            context.notify(StreamUpdate::ToolCallStarted { name: name.to_owned() });
        }
        match call.pointer("/function/arguments") {
            Some(Value::String(fragment)) => entry.arguments.push_str(fragment),
            // A whole object in one go (Ollama): it is the complete arguments.
            Some(object @ Value::Object(_)) => entry.arguments = object.to_string(),
            _ => {}
        }
    }

    /// The response so far, and the first tool call that is not whole. Before a terminal
    /// chunk no call can be known to be whole (its arguments may parse by accident, e.g. `{}`
    /// before the rest arrived), so then every call counts as cut off.
    fn build(&mut self) -> (ModelResponse, Option<String>) {
        let terminal = self.finish_reason.is_some() || self.done;
        let mut response = std::mem::replace(&mut self.response, empty_response(String::new()));
        response.usage = self.usage.unwrap_or_default();
        if !self.text.is_empty() {
            response.content.push(ContentBlock::Text { text: std::mem::take(&mut self.text) });
        }
        let mut incomplete = None;
        for (index, call) in std::mem::take(&mut self.calls) {
            match parse_tool_input(&call.arguments).filter(|_| terminal) {
                Some(input) => response.content.push(ContentBlock::ToolUse {
                    // Some local servers send no id; a stable one is made so the result can
                    // be matched to the call.
                    id: call.id.unwrap_or_else(|| format!("call_{index}")),
                    name: call.name,
                    input,
                }),
                None => {
                    incomplete.get_or_insert(call.name);
                }
            }
        }
        let has_calls = response.tool_uses().next().is_some();
        response.stop_reason = match self.finish_reason.as_deref() {
            // Some local servers say `stop` while returning calls; the calls are what matter.
            Some("stop") if has_calls => StopReason::ToolUse,
            Some(reason) => map_finish_reason(reason),
            None if has_calls => StopReason::ToolUse,
            None => StopReason::EndTurn,
        };
        (response, incomplete)
    }
}

impl StreamAssembler for OpenAiStream {
    fn event(&mut self, event: &SseEvent, context: &CallContext<'_>) -> Result<(), ModelError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            return Ok(());
        };
        if let Some(error) = chunk.get("error") {
            let field = |name: &str| error.get(name).and_then(Value::as_str);
            return Err(classify(
                None,
                field("type"),
                field("code"),
                field("message").unwrap_or("error event").to_owned(),
            ));
        }
        if let Some(model) = chunk.get("model").and_then(Value::as_str) {
            self.response.model = model.to_owned();
        }
        if self.response.request_id.is_none() {
            self.response.request_id = chunk.get("id").and_then(Value::as_str).map(str::to_owned);
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(read_usage(usage));
        }
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|choices| choices.iter().find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0));
        let Some(choice) = choice else { return Ok(()) };
        if let Some(text) = choice.pointer("/delta/content").and_then(Value::as_str) {
            self.text.push_str(text);
            context.notify(StreamUpdate::Text(text.to_owned()));
        }
        for call in choice.pointer("/delta/tool_calls").and_then(Value::as_array).into_iter().flatten() {
            self.take_tool_delta(call, context);
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_owned());
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<ModelResponse, ModelError> {
        let terminal = self.finish_reason.is_some() || self.done;
        let hit_limit = self.finish_reason.as_deref() == Some("length");
        let (response, incomplete) = self.build();
        settle(response, incomplete, terminal, hit_limit, "a finish_reason")
    }

    fn interrupted(mut self: Box<Self>, reason: String) -> ModelError {
        let (response, incomplete) = self.build();
        broken_off(response, incomplete, reason)
    }

    fn usage_so_far(&self) -> Usage {
        self.usage.unwrap_or_default()
    }
}
