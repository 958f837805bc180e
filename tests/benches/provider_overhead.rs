//! Benchmark: what one model call costs beyond the network, against a loopback server.
//!
//! Three figures: the raw transport floor (a hand-written HTTP exchange on a fresh TCP
//! connection), one whole `complete()` call through the Anthropic provider for a small tool-use
//! stream (request building, headers, SSE decoding, assembly, pricing), and assembly
//! throughput for a large streamed answer. Run with
//! `cargo bench -p missions-tests --bench provider_overhead`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use missions_core::config::{ProviderConfig, ProviderKind};
use missions_core::model::{CallContext, Message, ModelRequest};
use missions_core::secrets::Redactor;
use missions_providers::{PriceTable, build_provider};
use missions_tests::{MockServer, Reply, anthropic_sse};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn small_stream() -> String {
    anthropic_sse(&[
        json!({"type": "message_start", "message": {"id": "m", "model": "claude-sonnet-4-5", "usage": {"input_tokens": 10, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "read_file", "input": {}}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"path\": \"src/lib.rs\"}"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 20}}),
        json!({"type": "message_stop"}),
    ])
}

fn large_stream(deltas: usize) -> String {
    let mut events = vec![
        json!({"type": "message_start", "message": {"id": "m", "model": "claude-sonnet-4-5", "usage": {"input_tokens": 10, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ];
    for _ in 0..deltas {
        events.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "let slug = title.to_lowercase(); // ✓ "}}));
    }
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events
        .push(json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9000}}));
    events.push(json!({"type": "message_stop"}));
    anthropic_sse(&events)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(name: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "{name}: n={} mean {:.0} µs, p50 {:.0} µs, p99 {:.0} µs",
        samples.len(),
        mean.as_secs_f64() * 1e6,
        percentile(&samples, 0.5).as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6
    );
    percentile(&samples, 0.5)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    const N: usize = 400;
    let body = small_stream();
    let server = MockServer::start(Vec::new()).await;
    for _ in 0..N {
        server.push(Reply::sse(body.clone()));
    }
    let address = server.url().trim_start_matches("http://").to_owned();
    let mut floor = Vec::with_capacity(N);
    for _ in 0..N {
        let start = Instant::now();
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let request = "POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}";
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        floor.push(start.elapsed());
    }
    let floor_p50 = summary("transport floor (raw HTTP exchange, new connection)", floor);

    for _ in 0..N {
        server.push(Reply::sse(body.clone()));
    }
    let config = ProviderConfig {
        kind: Some(ProviderKind::Anthropic),
        base_url: Some(server.url()),
        max_retries: 0,
        ..ProviderConfig::default()
    };
    let prices = Arc::new(PriceTable::with_overrides(&BTreeMap::new()));
    let provider =
        build_provider("bench", &config, prices, Path::new("."), &BTreeMap::new(), &Redactor::default()).unwrap();
    let request = ModelRequest {
        model: "claude-sonnet-4-5".into(),
        system: "You are a worker.".repeat(50),
        messages: vec![Message::user_text("Implement F1.".repeat(100))],
        tools: Vec::new(),
        max_tokens: None,
    };
    let mut calls = Vec::with_capacity(N);
    for _ in 0..N {
        let start = Instant::now();
        provider.complete(&request, CallContext::default()).await.unwrap();
        calls.push(start.elapsed());
    }
    let call_p50 = summary("complete() through the Anthropic provider", calls);
    println!(
        "per-request overhead over the transport floor (p50): {:.0} µs",
        (call_p50.as_secs_f64() - floor_p50.as_secs_f64()) * 1e6
    );

    let large = large_stream(100_000);
    server.push(Reply::sse(large.clone()));
    let start = Instant::now();
    let response = provider.complete(&request, CallContext::default()).await.unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "streamed assembly: {:.1} MiB, {} text deltas in {:.0} ms = {:.0} MiB/s end to end (text {} bytes)",
        large.len() as f64 / 1048576.0,
        100_000,
        elapsed * 1e3,
        large.len() as f64 / 1048576.0 / elapsed,
        response.text().len()
    );
}
