//! Benchmark: SSE decoding throughput on an Anthropic-shaped stream, fed in network-sized
//! chunks. Run with `cargo bench -p missions-providers --bench sse`.

// A benchmark is run by hand; failing loudly is what it should do.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Instant;

use missions_providers::sse::SseDecoder;

fn main() {
    let mut stream = String::new();
    let mut deltas = 0usize;
    while stream.len() < 16 * 1024 * 1024 {
        stream.push_str(
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"fn slugify(s: &str) -> String { s.to_lowercase() } ✓\"}}\n\n",
        );
        if deltas.is_multiple_of(20) {
            stream.push_str("event: ping\ndata: {\"type\": \"ping\"}\n\n");
        }
        deltas += 1;
    }
    let bytes = stream.as_bytes();
    for chunk_size in [1_460usize, 16 * 1024] {
        let mut best = f64::MAX;
        let mut events = 0usize;
        for _ in 0..5 {
            let start = Instant::now();
            let mut decoder = SseDecoder::new();
            let mut out = Vec::with_capacity(64);
            events = 0;
            for chunk in bytes.chunks(chunk_size) {
                decoder.feed(chunk, &mut out);
                events += out.len();
                out.clear();
            }
            decoder.finish(&mut out);
            events += out.len();
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!(
            "sse decode: {:.1} MiB in {chunk_size}-byte chunks, {events} events: best of 5 = {:.1} ms, {:.0} MiB/s, {:.0} ns/event",
            bytes.len() as f64 / 1048576.0,
            best * 1e3,
            bytes.len() as f64 / 1048576.0 / best,
            best * 1e9 / events as f64
        );
    }
}
