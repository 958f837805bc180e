//! The Anthropic Messages provider against a loopback server speaking the wire format byte for
//! byte: streaming assembly, request bodies, errors, retries, timeouts and transcripts.

mod common;

use std::time::Duration;

use common::{KEY, config, provider, request};
use missions_core::config::ProviderKind;
use missions_core::model::{CallContext, ContentBlock, ModelError, StopReason, Usage};
use missions_core::secrets::Redactor;
use missions_core::transcript::TranscriptWriter;
use missions_tests::{End, MockServer, Reply, anthropic_sse, closed_port};
use serde_json::{Value, json};

fn message_start() -> Value {
    json!({"type": "message_start", "message": {
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": [], "stop_reason": null,
        "usage": {"input_tokens": 12, "cache_creation_input_tokens": 300, "cache_read_input_tokens": 4000, "output_tokens": 1}
    }})
}

/// Text with multi-byte characters, then a tool call whose JSON arrives in fragments.
fn tool_stream() -> Vec<Value> {
    vec![
        message_start(),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Héllo ✓ "}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "wörld"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_01", "name": "write_file", "input": {}, "caller": {"type": "direct"}}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"path\": \"slug.py\", "}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"content\": \"def slugify(s):\\n    return s ✓\"}"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 87}}),
        json!({"type": "message_stop"}),
    ]
}

fn expected_content() -> Vec<ContentBlock> {
    vec![
        ContentBlock::Text { text: "Héllo ✓ wörld".into() },
        ContentBlock::ToolUse {
            id: "toolu_01".into(),
            name: "write_file".into(),
            input: json!({"path": "slug.py", "content": "def slugify(s):\n    return s ✓"}),
        },
    ]
}

#[tokio::test]
async fn a_stream_split_anywhere_assembles_to_the_same_response() {
    let body = anthropic_sse(&tool_stream());
    let server = MockServer::start(Vec::new()).await;
    let provider = provider(&config(ProviderKind::Anthropic, server.url()));
    let mut sizes: Vec<usize> = (1..=64).collect();
    sizes.extend([97, 256, 1021, body.len()]);
    for size in sizes {
        server.push(Reply::sse(body.clone()).split_every(size));
        let response = provider.complete(&request("claude-sonnet-4-5"), CallContext::default()).await.unwrap();
        assert_eq!(response.content, expected_content(), "pieces of {size} bytes");
        assert_eq!(response.stop_reason, StopReason::ToolUse);
        // Cumulative output from message_delta; input and cache counts fall back to message_start.
        assert_eq!(response.usage, Usage { input: 12, output: 87, cache_read: 4000, cache_write: 300, reasoning: 0 });
        assert_eq!(response.model, "claude-sonnet-4-5-20250929");
        assert_eq!(response.request_id.as_deref(), Some("msg_01"));
        let expected_cost = (12.0 * 3.0 + 87.0 * 15.0 + 4000.0 * 0.3 + 300.0 * 3.75) / 1e6;
        assert!((response.cost_usd.unwrap() - expected_cost).abs() < 1e-12);
    }
}

#[tokio::test]
async fn the_request_is_the_messages_api_with_cache_breakpoints_on_the_stable_prefix() {
    let server = MockServer::start(vec![Reply::sse(anthropic_sse(&tool_stream()))]).await;
    let mut config = config(ProviderKind::Anthropic, format!("{}/", server.url()));
    config.anthropic_version = Some("2026-10-21".into());
    provider(&config).complete(&request("claude-sonnet-4-5"), CallContext::default()).await.unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!((sent.method.as_str(), sent.path.as_str()), ("POST", "/v1/messages"));
    assert_eq!(sent.header("x-api-key"), Some(KEY));
    assert_eq!(sent.header("anthropic-version"), Some("2026-10-21"));
    assert_eq!(sent.header("authorization"), None);
    assert_eq!(
        sent.json(),
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "stream": true,
            "system": [{"type": "text", "text": "You are a worker.", "cache_control": {"type": "ephemeral"}}],
            "tools": [{
                "name": "read_file", "description": "Read a file.",
                "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
                "cache_control": {"type": "ephemeral"}
            }],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Implement F1."}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Reading."},
                    {"type": "tool_use", "id": "call_1", "name": "read_file", "input": {"path": "a.py"}}
                ]},
                {"role": "user", "content": [{
                    "type": "tool_result", "tool_use_id": "call_1", "content": "x = 1", "is_error": false,
                    "cache_control": {"type": "ephemeral"}
                }]}
            ]
        })
    );
}

#[tokio::test]
async fn empty_tool_json_is_an_empty_object_and_unknown_events_are_tolerated() {
    let events = vec![
        message_start(),
        json!({"type": "brand_new_event", "whatever": [1, 2]}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_9", "name": "list_files", "input": {}}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "compaction_delta", "data": "x"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_details": {"x": 1}}, "usage": {"output_tokens": 5, "input_tokens": 12, "cache_read_input_tokens": 10}}),
        json!({"type": "message_stop"}),
    ];
    let server = MockServer::start(vec![Reply::sse(anthropic_sse(&events))]).await;
    let response = provider(&config(ProviderKind::Anthropic, server.url()))
        .complete(&request("claude-sonnet-4-5"), CallContext::default())
        .await
        .unwrap();
    assert_eq!(
        response.content,
        vec![ContentBlock::ToolUse { id: "toolu_9".into(), name: "list_files".into(), input: json!({}) }]
    );
    // A later message_delta that repeats input counts overrides message_start field by field.
    assert_eq!(response.usage, Usage { input: 12, output: 5, cache_read: 10, cache_write: 300, reasoning: 0 });
}

#[tokio::test]
async fn a_tool_call_cut_off_by_max_tokens_is_never_returned_as_a_call() {
    let events = vec![
        message_start(),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "write_file", "input": {}}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"path\": \"a.py\", \"content\": \"def f("}}),
        json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 1024}}),
        json!({"type": "message_stop"}),
    ];
    let server = MockServer::start(vec![Reply::sse(anthropic_sse(&events))]).await;
    let error = provider(&config(ProviderKind::Anthropic, server.url()))
        .complete(&request("claude-sonnet-4-5"), CallContext::default())
        .await
        .unwrap_err()
        .error;
    match &error {
        ModelError::IncompleteToolCall { tool, reason, partial } => {
            assert_eq!(tool, "write_file");
            assert!(reason.contains("max_tokens"), "{reason}");
            assert!(partial.tool_uses().next().is_none(), "the cut call must not be in the partial response");
            assert_eq!(partial.usage.output, 1024, "the tokens still count");
        }
        other => panic!("expected IncompleteToolCall, got {other:?}"),
    }
    assert!(!error.is_retryable(), "the agent loop decides what to do, not the retry loop");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_stream_that_stops_early_is_an_interruption_not_a_response() {
    let body = anthropic_sse(&tool_stream());
    // Cut inside the tool call's JSON, and separately inside the text, with a clean close.
    let in_tool = body.find("\"content\\\": ").unwrap();
    let in_text = body.find("wörld").unwrap();
    let server = MockServer::start(vec![
        Reply::sse(body.clone()).cut_at(in_tool, End::Close),
        Reply::sse(body.clone()).cut_at(in_text, End::Abort),
    ])
    .await;
    let mut config = config(ProviderKind::Anthropic, server.url());
    config.max_retries = 0;
    let provider = provider(&config);
    let error = provider.complete(&request("claude-sonnet-4-5"), CallContext::default()).await.unwrap_err().error;
    match &error {
        // A broken stream is retryable; the call that was being sent is named, never returned.
        ModelError::StreamInterrupted { reason, partial } => {
            assert!(reason.contains("write_file"), "{reason}");
            assert!(partial.tool_uses().next().is_none());
        }
        other => panic!("expected StreamInterrupted, got {other:?}"),
    }
    assert!(error.is_retryable());
    let error = provider.complete(&request("claude-sonnet-4-5"), CallContext::default()).await.unwrap_err().error;
    match &error {
        ModelError::StreamInterrupted { partial, .. } => {
            assert_eq!(partial.text(), "Héllo ✓ ");
            assert_eq!(partial.usage.input, 12);
        }
        other => panic!("expected StreamInterrupted, got {other:?}"),
    }
}

#[tokio::test]
async fn a_mid_stream_error_event_is_classified_by_its_type_and_retried() {
    let mut broken = vec![message_start()];
    broken.push(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}));
    broken.push(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));
    let server =
        MockServer::start(vec![Reply::sse(anthropic_sse(&broken)), Reply::sse(anthropic_sse(&tool_stream()))]).await;
    let provider = provider(&config(ProviderKind::Anthropic, server.url()));
    let response = provider.complete(&request("claude-sonnet-4-5"), CallContext::default()).await.unwrap();
    assert_eq!(response.attempts, 2);
    assert_eq!(response.content, expected_content());
    // The failed attempt's reported input still counts.
    assert_eq!(response.usage.input, 24);
    assert_eq!(server.requests().len(), 2);

    // Without retries the error surfaces with its real kind, not as an HTTP 200.
    let server = MockServer::start(vec![Reply::sse(anthropic_sse(&broken))]).await;
    let mut no_retry = config(ProviderKind::Anthropic, server.url());
    no_retry.max_retries = 0;
    let error = common::provider(&no_retry).complete(&request("m"), CallContext::default()).await.unwrap_err().error;
    assert!(matches!(error, ModelError::Overloaded { .. }), "{error:?}");
}

fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_1"})
}

#[tokio::test]
async fn rate_limits_and_overloads_are_retried_as_the_headers_say() {
    let server = MockServer::start(vec![
        Reply::json(429, &error_body("rate_limit_error", "slow down")).header("retry-after-ms", "20"),
        Reply::json(529, &error_body("overloaded_error", "Overloaded")),
        Reply::sse(anthropic_sse(&tool_stream())),
    ])
    .await;
    let provider = provider(&config(ProviderKind::Anthropic, server.url()));
    let started = std::time::Instant::now();
    let response = provider.complete(&request("claude-sonnet-4-5"), CallContext::default()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(20), "retry-after-ms was honoured");
    assert_eq!(response.attempts, 3);
    assert_eq!(server.requests().len(), 3);

    // The attempts are bounded: 1 + max_retries.
    let server = MockServer::start(vec![
        Reply::json(529, &error_body("overloaded_error", "Overloaded")),
        Reply::json(529, &error_body("overloaded_error", "Overloaded")),
        Reply::json(529, &error_body("overloaded_error", "Overloaded")),
        Reply::sse(anthropic_sse(&tool_stream())),
    ])
    .await;
    let error = common::provider(&config(ProviderKind::Anthropic, server.url()))
        .complete(&request("m"), CallContext::default())
        .await
        .unwrap_err()
        .error;
    assert!(matches!(error, ModelError::Overloaded { .. }), "{error:?}");
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn x_should_retry_is_honoured_first() {
    let server = MockServer::start(vec![
        Reply::json(500, &error_body("api_error", "boom")).header("x-should-retry", "false"),
        Reply::json(400, &error_body("invalid_request_error", "flaky")).header("x-should-retry", "true"),
        Reply::sse(anthropic_sse(&tool_stream())),
    ])
    .await;
    let provider = provider(&config(ProviderKind::Anthropic, server.url()));
    let error = provider.complete(&request("m"), CallContext::default()).await.unwrap_err().error;
    assert!(matches!(error, ModelError::Server { status: 500, .. }), "{error:?}");
    assert_eq!(server.requests().len(), 1, "x-should-retry: false stops a retryable 500");
    let response = provider.complete(&request("m"), CallContext::default()).await.unwrap();
    assert_eq!(response.attempts, 2, "x-should-retry: true retries a 400");
}

#[tokio::test]
async fn spend_limits_and_auth_errors_are_never_retried() {
    let spend = json!({"type": "error", "error": {
        "type": "rate_limit_error", "message": "monthly spend limit reached",
        "details": {"error_code": "enforced_spend_limit_reached"}
    }});
    let server = MockServer::start(vec![
        Reply::json(429, &spend).header("x-should-retry", "true"),
        Reply::json(401, &error_body("authentication_error", "invalid x-api-key")).header("x-should-retry", "true"),
    ])
    .await;
    let provider = provider(&config(ProviderKind::Anthropic, server.url()));
    let error = provider.complete(&request("m"), CallContext::default()).await.unwrap_err().error;
    assert!(matches!(error, ModelError::QuotaExhausted { .. }), "{error:?}");
    let error = provider.complete(&request("m"), CallContext::default()).await.unwrap_err().error;
    assert!(matches!(error, ModelError::Auth { status: 401, .. }), "{error:?}");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn whole_responses_work_when_streaming_is_off() {
    let whole = json!({
        "id": "msg_2", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
        "content": [
            {"type": "text", "text": "Done."},
            {"type": "tool_use", "id": "toolu_2", "name": "submit_handoff", "input": {"summary": "ok"}},
            {"type": "server_tool_use", "id": "x"}
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 5, "output_tokens": 7, "cache_read_input_tokens": 2, "cache_creation_input_tokens": 0, "service_tier": "standard"}
    });
    let server = MockServer::start(vec![Reply::json(200, &whole)]).await;
    let mut config = config(ProviderKind::Anthropic, server.url());
    config.stream = false;
    let response = provider(&config).complete(&request("claude-haiku-4-5"), CallContext::default()).await.unwrap();
    assert_eq!(server.requests()[0].json().get("stream"), None);
    assert_eq!(response.text(), "Done.");
    assert_eq!(response.tool_uses().count(), 1);
    assert_eq!(response.stop_reason, StopReason::ToolUse);
    assert_eq!(response.usage, Usage { input: 5, output: 7, cache_read: 2, cache_write: 0, reasoning: 0 });
}

#[tokio::test]
async fn slow_drips_are_fine_but_a_silent_stream_times_out() {
    let body = anthropic_sse(&tool_stream());
    let server = MockServer::start(vec![
        Reply::sse(body.clone()).drip(200, Duration::from_millis(5)),
        Reply::sse(body.clone()).stall_after(300, Duration::from_millis(600)),
        Reply::sse(body).delayed(Duration::from_millis(600)),
    ])
    .await;
    let mut config = config(ProviderKind::Anthropic, server.url());
    config.max_retries = 0;
    config.idle_timeout_s = 0.2;
    config.first_byte_timeout_s = 0.2;
    let provider = provider(&config);
    let response = provider.complete(&request("m"), CallContext::default()).await.unwrap();
    assert_eq!(response.content, expected_content());
    let error = provider.complete(&request("m"), CallContext::default()).await.unwrap_err().error;
    assert!(matches!(&error, ModelError::StreamInterrupted { reason, .. } if reason.contains("no data")), "{error:?}");
    let error = provider.complete(&request("m"), CallContext::default()).await.unwrap_err().error;
    assert!(
        matches!(error, ModelError::Timeout { phase: missions_core::model::TimeoutPhase::FirstByte, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_closed_port_is_a_connection_error_with_the_reason() {
    let mut config = config(ProviderKind::Anthropic, format!("http://127.0.0.1:{}", closed_port()));
    config.max_retries = 0;
    let error = provider(&config).complete(&request("m"), CallContext::default()).await.unwrap_err().error;
    match &error {
        ModelError::Connect { reason, .. } => {
            assert!(reason.to_lowercase().contains("refused"), "{reason}")
        }
        other => panic!("expected Connect, got {other:?}"),
    }
}

#[tokio::test]
async fn transcripts_hold_requests_and_responses_but_never_the_key() {
    let server = MockServer::start(vec![
        Reply::json(529, &error_body("overloaded_error", "Overloaded")),
        Reply::sse(anthropic_sse(&tool_stream())),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("transcripts/run-1.jsonl");
    let transcript = TranscriptWriter::create(&path, Redactor::new([("TEST_PROVIDER_KEY", KEY)])).unwrap();
    let mut leaky = request("claude-sonnet-4-5");
    leaky.messages.push(missions_core::model::Message::user_text(format!("the key is {KEY}")));
    let context = CallContext { transcript: Some(&transcript), observer: None };
    provider(&config(ProviderKind::Anthropic, server.url())).complete(&leaky, context).await.unwrap();
    transcript.flush();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(KEY), "the key leaked into the transcript");
    assert!(!text.to_lowercase().contains("x-api-key"));
    let kinds: Vec<String> = text
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["request", "error", "request", "response"]);
    let responses = missions_core::transcript::read_responses(&path).unwrap();
    assert_eq!(responses[0].1.content, expected_content());
}

#[tokio::test]
async fn a_stream_broken_inside_a_tool_call_is_retried() {
    let body = anthropic_sse(&tool_stream());
    let in_tool = body.find("\"content\\\": ").unwrap();
    let server = MockServer::start(vec![Reply::sse(body.clone()).cut_at(in_tool, End::Abort), Reply::sse(body)]).await;
    let response = provider(&config(ProviderKind::Anthropic, server.url()))
        .complete(&request("claude-sonnet-4-5"), CallContext::default())
        .await
        .unwrap();
    assert_eq!(response.content, expected_content());
    assert_eq!(response.attempts, 2);
}

#[tokio::test]
async fn an_empty_tool_input_cut_by_max_tokens_is_not_a_call() {
    // The limit struck right after the call began: its (empty) JSON parses as {}, but the call
    // may have had arguments that never came.
    let events = vec![
        message_start(),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "submit_handoff", "input": {}}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 1024}}),
        json!({"type": "message_stop"}),
    ];
    let server = MockServer::start(vec![Reply::sse(anthropic_sse(&events))]).await;
    let failure = provider(&config(ProviderKind::Anthropic, server.url()))
        .complete(&request("claude-sonnet-4-5"), CallContext::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&failure.error, ModelError::IncompleteToolCall { tool, .. } if tool == "submit_handoff"),
        "{failure:?}"
    );
}

#[tokio::test]
async fn tokens_of_failed_attempts_are_counted_whatever_the_final_error() {
    // First attempt: a stream that reported its input usage, then broke. Second: a 529.
    let body = anthropic_sse(&tool_stream());
    let server = MockServer::start(vec![
        Reply::sse(body.clone()).cut_at(body.find("wörld").unwrap(), End::Abort),
        Reply::json(529, &error_body("overloaded_error", "Overloaded")),
    ])
    .await;
    let mut config = config(ProviderKind::Anthropic, server.url());
    config.max_retries = 1;
    let failure = provider(&config).complete(&request("claude-sonnet-4-5"), CallContext::default()).await.unwrap_err();
    assert!(matches!(failure.error, ModelError::Overloaded { .. }), "{failure:?}");
    assert_eq!(failure.attempts, 2);
    assert_eq!(failure.usage, Usage { input: 12, output: 1, cache_read: 4000, cache_write: 300, reasoning: 0 });
}

#[tokio::test]
async fn a_connection_that_never_completes_hits_the_connect_timeout() {
    // A listener that never accepts, with its backlog filled: further SYNs are dropped, so a
    // new connection hangs in the handshake, all on 127.0.0.1.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let address = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_millis(100), tokio::net::TcpStream::connect(address)).await
        {
            fillers.push(stream);
        }
    }
    let mut config = config(ProviderKind::Anthropic, format!("http://{address}"));
    config.max_retries = 0;
    config.connect_timeout_s = 0.3;
    let started = std::time::Instant::now();
    let failure = provider(&config).complete(&request("m"), CallContext::default()).await.unwrap_err();
    assert!(
        matches!(failure.error, ModelError::Timeout { phase: missions_core::model::TimeoutPhase::Connect, .. }),
        "{failure:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(listener);
}
