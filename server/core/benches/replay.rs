//! Benchmark: replaying (reading, verifying the hash chain of, and folding) a 100k-event log.
//! Goal from issue #2: at most 0.5 s on the 2-core CI machine. Run with `cargo bench -p missions-core`.

// A benchmark is a tool run by hand, not a server code path: failing loudly is what it should do.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Instant;

use missions_core::mission::{FindingStatus, Role};
use missions_core::model::Usage;
use missions_core::store::{Event, MissionStore, load_projection};

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let created = Event::MissionCreated {
        id: "bench".into(),
        title: "bench".into(),
        source: missions_core::mission::Source {
            kind: missions_core::mission::SourceKind::Text,
            item_id: None,
            text: "bench".into(),
        },
        branch: "missions/bench".into(),
        base_commit: "0".repeat(40),
        auto_accept: false,
        max_tokens: None,
        max_usd: None,
    };
    let store = MissionStore::create(dir.path(), created).expect("create");
    let mission_dir = store.dir().to_owned();
    drop(store);

    // Writing 100k fsync'd events through the store would time the disk, not the replay, so
    // the log is written by the same code path without fsync: a writer store's log format.
    let path = mission_dir.join("events.jsonl");
    let contents = missions_core::store::log::read_log(&path).expect("read");
    let mut prev = contents.last_hash.clone();
    let mut text = std::fs::read_to_string(&path).expect("read");
    let events = 100_000u64;
    for seq in 2..=events {
        let event = match seq % 4 {
            0 => Event::UsageRecorded {
                role: Role::Worker,
                run_id: format!("run-{seq}"),
                provider: "anthropic".into(),
                model: "claude-sonnet-4-5".into(),
                usage: Usage { input: 1200, output: 300, cache_read: 40_000, cache_write: 900, reasoning: 0 },
                cost_usd: Some(0.0213),
            },
            1 => Event::CursorMoved {
                milestone: Some("M1".into()),
                feature: Some(format!("F{seq}")),
                role: Some(Role::Worker),
            },
            2 => Event::FindingStatusChanged { finding: format!("X{seq}"), status: FindingStatus::Fixed, reason: None },
            _ => Event::CourseCorrectionNoted { note: "keep the public API stable; prefer small commits".into() },
        };
        let record = missions_core::store::Record { seq, ts: "2026-11-21T09:00:00Z".into(), prev: prev.clone(), event };
        let line = serde_json::to_string(&record).expect("encode");
        prev = missions_core::store::log::line_hash(line.as_bytes());
        text.push_str(&line);
        text.push('\n');
    }
    std::fs::write(&path, &text).expect("write");
    let bytes = text.len();

    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let (projection, _) = load_projection(&mission_dir).expect("replay");
        let elapsed = start.elapsed().as_secs_f64();
        assert_eq!(projection.events, events);
        best = best.min(elapsed);
    }
    println!(
        "replay: {events} events, {:.1} MiB: best of 5 = {:.3} s ({:.2} µs/event); goal ≤ 0.5 s",
        bytes as f64 / (1024.0 * 1024.0),
        best,
        best * 1e6 / events as f64
    );
}
