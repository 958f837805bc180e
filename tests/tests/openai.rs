//! The OpenAI Chat Completions provider (and the quirks of compatible local servers) against a
//! loopback server speaking the wire format byte for byte.

mod common;

use common::{KEY, config, provider, request};
use missions_core::config::ProviderKind;
use missions_core::model::{CallContext, ContentBlock, ModelError, StopReason, Usage};
use missions_tests::{End, MockServer, Reply, openai_sse};
use serde_json::{Value, json};

fn chunk(delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-5-codex-2026",
        "obfuscation": "pad", "service_tier": "default",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
    })
}

/// Text, then two parallel tool calls whose fragments interleave, then a usage chunk.
fn parallel_stream() -> Vec<Value> {
    vec![
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": "Naïve ✓ "}), None),
        chunk(json!({"content": "plan"}), None),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "read_file", "arguments": ""}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "search", "arguments": "{\"pat"}}]}),
            None,
        ),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"path\": "}}]}), None),
        chunk(json!({"tool_calls": [{"index": 1, "function": {"arguments": "tern\": \"slug\"}"}}]}), None),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"ü.py\"}"}}]}), None),
        chunk(json!({}), Some("tool_calls")),
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-5-codex-2026", "choices": [], "usage": {
            "prompt_tokens": 1000, "completion_tokens": 60, "total_tokens": 1060,
            "prompt_tokens_details": {"cached_tokens": 800, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 20}
        }}),
    ]
}

fn expected_content() -> Vec<ContentBlock> {
    vec![
        ContentBlock::Text { text: "Naïve ✓ plan".into() },
        ContentBlock::ToolUse { id: "call_a".into(), name: "read_file".into(), input: json!({"path": "ü.py"}) },
        ContentBlock::ToolUse { id: "call_b".into(), name: "search".into(), input: json!({"pattern": "slug"}) },
    ]
}

#[tokio::test]
async fn parallel_tool_calls_are_assembled_by_index_however_the_stream_is_split() {
    // An OpenRouter-style keep-alive comment in front, which must be ignored.
    let body = format!(": OPENROUTER PROCESSING\n\n{}", openai_sse(&parallel_stream()));
    let server = MockServer::start(Vec::new()).await;
    let provider = provider(&config(ProviderKind::Openai, format!("{}/v1", server.url())));
    let mut sizes: Vec<usize> = (1..=48).collect();
    sizes.extend([101, 499, body.len()]);
    for size in sizes {
        server.push(Reply::sse(body.clone()).split_every(size));
        let response = provider.complete(&request("gpt-5-codex"), CallContext::default()).await.unwrap();
        assert_eq!(response.content, expected_content(), "pieces of {size} bytes");
        assert_eq!(response.stop_reason, StopReason::ToolUse);
        // prompt_tokens includes the cached ones: uncached input is the difference.
        assert_eq!(response.usage, Usage { input: 200, output: 60, cache_read: 800, cache_write: 0, reasoning: 20 });
        let expected_cost = (200.0 * 1.25 + 60.0 * 10.0 + 800.0 * 0.125) / 1e6;
        assert!((response.cost_usd.unwrap() - expected_cost).abs() < 1e-12);
    }
}

#[tokio::test]
async fn the_request_is_chat_completions_with_tool_messages() {
    let server = MockServer::start(vec![Reply::sse(openai_sse(&parallel_stream()))]).await;
    provider(&config(ProviderKind::Openai, format!("{}/v1/", server.url())))
        .complete(&request("gpt-5-codex"), CallContext::default())
        .await
        .unwrap();
    let sent = &server.requests()[0];
    assert_eq!((sent.method.as_str(), sent.path.as_str()), ("POST", "/v1/chat/completions"));
    assert_eq!(sent.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(sent.header("x-api-key"), None);
    assert_eq!(
        sent.json(),
        json!({
            "model": "gpt-5-codex",
            "max_completion_tokens": 1024,
            "stream": true,
            "stream_options": {"include_usage": true},
            "tools": [{"type": "function", "function": {
                "name": "read_file", "description": "Read a file.",
                "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
            }}],
            "messages": [
                {"role": "system", "content": "You are a worker."},
                {"role": "user", "content": "Implement F1."},
                {"role": "assistant", "content": "Reading.", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": "{\"path\":\"a.py\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "x = 1"}
            ]
        })
    );
}

#[tokio::test]
async fn local_server_quirks_are_absorbed() {
    // Ollama-style: arguments as a whole object, no index, no id, usage on a chunk with
    // choices, finish_reason `stop` in the same chunk as the call, and no [DONE].
    let body: String = [
        json!({"model": "qwen3-coder", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
        json!({"model": "qwen3-coder", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"function": {"name": "run_command", "arguments": {"command": "pytest -q"}}}
        ]}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 50, "completion_tokens": 9}}),
    ]
    .iter()
    .map(|c| format!("data: {c}\n\n"))
    .collect();
    let server = MockServer::start(vec![Reply::sse(body)]).await;
    let mut config = config(ProviderKind::Openai, format!("{}/v1", server.url()));
    config.api_key_env = None;
    let response = provider(&config).complete(&request("qwen3-coder"), CallContext::default()).await.unwrap();
    assert_eq!(
        response.content,
        vec![ContentBlock::ToolUse {
            id: "call_0".into(),
            name: "run_command".into(),
            input: json!({"command": "pytest -q"})
        }]
    );
    assert_eq!(response.stop_reason, StopReason::ToolUse, "`stop` with calls is a tool-use turn");
    assert_eq!(response.usage, Usage { input: 50, output: 9, ..Usage::default() });
    assert_eq!(response.cost_usd, None, "a local model without a price has an unknown cost, not zero");
    assert_eq!(server.requests()[0].header("authorization"), None, "no key configured, none sent");
}

#[tokio::test]
async fn truncated_arguments_and_early_ends_are_never_calls() {
    let truncated = openai_sse(&[
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_x", "function": {"name": "write_file", "arguments": "{\"path\": \"a"}}]}),
            None,
        ),
        chunk(json!({}), Some("length")),
    ]);
    let full = openai_sse(&parallel_stream());
    // The stream cut right after a call's arguments happen to form valid JSON: still not whole.
    let cut_at = full.find("finish_reason\":\"tool_calls").unwrap();
    let server = MockServer::start(vec![
        Reply::sse(truncated),
        Reply::sse(full.clone()).cut_at(cut_at, End::Close),
        Reply::sse(openai_sse(&parallel_stream()[..3])).cut_at(full.len(), End::Close),
    ])
    .await;
    let mut config = config(ProviderKind::Openai, format!("{}/v1", server.url()));
    config.max_retries = 0;
    let provider = provider(&config);
    let error = provider.complete(&request("m"), CallContext::default()).await.unwrap_err().error;
    assert!(
        matches!(&error, ModelError::IncompleteToolCall { tool, reason, .. } if tool == "write_file" && reason.contains("token limit")),
        "{error:?}"
    );
    let error = provider.complete(&request("m"), CallContext::default()).await.unwrap_err().error;
    match &error {
        ModelError::StreamInterrupted { partial, reason } => {
            assert!(partial.tool_uses().next().is_none());
            assert!(reason.contains("read_file"), "the call being sent is named: {reason}");
        }
        other => panic!("expected StreamInterrupted, got {other:?}"),
    }
    // Text only, but [DONE] is a terminal event: three chunks and [DONE] is a whole answer.
    let response = provider.complete(&request("m"), CallContext::default()).await.unwrap();
    assert_eq!(response.text(), "Naïve ✓ plan");
}

#[tokio::test]
async fn a_stream_without_a_terminal_chunk_is_interrupted() {
    let body: String = parallel_stream()[..3].iter().map(|c| format!("data: {c}\n\n")).collect();
    let server = MockServer::start(vec![Reply::sse(body)]).await;
    let mut config = config(ProviderKind::Openai, format!("{}/v1", server.url()));
    config.max_retries = 0;
    let error = provider(&config).complete(&request("m"), CallContext::default()).await.unwrap_err().error;
    assert!(
        matches!(&error, ModelError::StreamInterrupted { partial, .. } if partial.text() == "Naïve ✓ plan"),
        "{error:?}"
    );
}

#[tokio::test]
async fn mid_stream_errors_and_quota_are_classified() {
    let mid_stream_error = format!(
        "data: {}\n\ndata: {}\n\n",
        chunk(json!({"content": "Hi"}), None),
        json!({"error": {"message": "Rate limit reached", "type": "rate_limit_exceeded", "code": null}})
    );
    let quota = json!({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}});
    let server = MockServer::start(vec![
        Reply::sse(mid_stream_error),
        Reply::sse(openai_sse(&parallel_stream())),
        Reply::json(429, &quota).header("retry-after", "1"),
        Reply::json(400, &json!({"error": {"message": "This model's maximum context length is 128000 tokens", "type": "invalid_request_error", "code": "context_length_exceeded"}})),
    ])
    .await;
    let provider = provider(&config(ProviderKind::Openai, format!("{}/v1", server.url())));
    let response = provider.complete(&request("m"), CallContext::default()).await.unwrap();
    assert_eq!(response.attempts, 2, "the mid-stream rate limit was retried");
    let error = provider.complete(&request("m"), CallContext::default()).await.unwrap_err().error;
    assert!(matches!(error, ModelError::QuotaExhausted { .. }), "{error:?}");
    let error = provider.complete(&request("m"), CallContext::default()).await.unwrap_err().error;
    assert!(matches!(error, ModelError::ContextOverflow { .. }), "{error:?}");
    assert_eq!(server.requests().len(), 4, "quota and context errors were not retried");
}

#[tokio::test]
async fn whole_responses_work_when_streaming_is_off() {
    let whole = json!({
        "id": "chatcmpl-2", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null,
            "tool_calls": [{"id": "call_z", "type": "function", "function": {"name": "list_files", "arguments": "{}"}}]
        }}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 10}}
    });
    let server = MockServer::start(vec![Reply::json(200, &whole)]).await;
    let mut config = config(ProviderKind::Openai, format!("{}/v1", server.url()));
    config.stream = false;
    let response = provider(&config).complete(&request("gpt-4o-mini"), CallContext::default()).await.unwrap();
    let body = server.requests()[0].json();
    assert_eq!((body.get("stream"), body.get("stream_options")), (None, None));
    assert_eq!(
        response.content,
        vec![ContentBlock::ToolUse { id: "call_z".into(), name: "list_files".into(), input: json!({}) }]
    );
    assert_eq!(response.usage, Usage { input: 20, output: 4, cache_read: 10, ..Usage::default() });
}
