//! Benchmark: the language server under a large mission (SPEC §8; issues "structure" and
//! "editor clients"). One mission waits for acceptance with 10,000 open findings in 2,000
//! files, 20 features whose handoffs changed 100 files each. Measured over the real binary and
//! stdio, as an editor sees it:
//! - the time from `initialized` to the diagnostics of all 2,000 files (a restart),
//! - `textDocument/hover` and `textDocument/codeAction` p50/p99 over 1,000 requests each,
//! - the same while another process appends to the mission's log (the server follows it):
//!   200 events a second, every 20th a new finding,
//! - the server's resident memory when idle and its peak.
//!
//! Run with `cargo bench -p missions-tests --bench lsp_requests`. Goals (issue "structure"):
//! p99 ≤ 5 ms, republish ≤ 2 s, RSS ≤ 100 MB.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::editor::Editor;
use missions_core::mission::{
    Check, FileChange, Finding, FindingStatus, Handoff, HandoffClaim, MissionState, Severity, Source, SourceKind,
    Validator, WorkStatus,
};
use missions_core::store::{AssertionDraft, Event, FeatureDraft, MilestoneDraft, MissionStore, PlanDraft};
use serde_json::{Value, json};

const FILES: usize = 2_000;
const FINDINGS_PER_FILE: usize = 5;
const FEATURES: usize = 20;
const REQUESTS: usize = 1_000;
const MISSION: &str = "20261128-bench";

fn file_name(index: usize) -> String {
    format!("src/module_{index:04}.py")
}

/// A workspace holding the files and one mission's log, as a driver would have written it.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    let body: String = (0..60).map(|i| format!("value_{i} = compute({i})  # line {i}\n")).collect();
    for index in 0..FILES {
        std::fs::write(dir.path().join(file_name(index)), &body).unwrap();
    }
    let mut store = MissionStore::create(
        dir.path(),
        Event::MissionCreated {
            id: MISSION.into(),
            title: "A large mission".into(),
            source: Source { kind: SourceKind::Text, item_id: None, text: "Large".into() },
            branch: format!("missions/{MISSION}"),
            base_commit: "0".repeat(40),
            auto_accept: false,
            max_tokens: None,
            max_usd: None,
        },
    )
    .unwrap();
    let features: Vec<FeatureDraft> = (1..=FEATURES)
        .map(|n| FeatureDraft {
            id: format!("F{n}"),
            title: format!("feature {n}"),
            description: "work".into(),
            assertions: vec!["A1".into()],
        })
        .collect();
    let contract = vec![AssertionDraft {
        id: "A1".into(),
        milestone: "M1".into(),
        description: "the work holds".into(),
        check: Check::Command { command: "true".into(), expect_exit: 0 },
    }];
    let plan = PlanDraft {
        title: "Large".into(),
        summary: "many files".into(),
        milestones: vec![MilestoneDraft { id: "M1".into(), title: "everything".into(), features }],
    };
    store.append(Event::PlanSubmitted { plan, contract }).unwrap();
    store.append(Event::PlanApproved { contract_sha256: "0".repeat(64) }).unwrap();
    for n in 1..=FEATURES {
        let files_changed = (0..FILES / FEATURES)
            .map(|i| FileChange { path: file_name((n - 1) * (FILES / FEATURES) + i), ranges: vec![[10, 30]] })
            .collect();
        let handoff = Handoff {
            feature: format!("F{n}"),
            model: "bench-model".into(),
            claim: HandoffClaim {
                summary: "Changed many files.".into(),
                completed: vec!["everything".into()],
                skipped: Vec::new(),
                commands: Vec::new(),
                issues: Vec::new(),
                procedures_followed: true,
                procedure_notes: String::new(),
            },
            files_changed,
            commit: Some("1".repeat(40)),
            observed_commands: Vec::new(),
        };
        store.append(Event::HandoffRecorded { handoff }).unwrap();
        store.append(Event::FeatureStatusChanged { feature: format!("F{n}"), status: WorkStatus::Done }).unwrap();
    }
    for index in 0..FILES * FINDINGS_PER_FILE {
        let file = index / FINDINGS_PER_FILE;
        let line = 5 + (index % FINDINGS_PER_FILE) as u32 * 10;
        let finding = Finding {
            id: format!("finding-{}", index + 1),
            milestone: "M1".into(),
            assertion: (index % 3 == 0).then(|| "A1".into()),
            feature: Some(format!("F{}", file / (FILES / FEATURES) + 1)),
            validator: Validator::Review,
            severity: Severity::Warning,
            path: Some(file_name(file)),
            line: Some(line),
            end_line: Some(line + 2),
            message: format!("finding {index}: this could be simpler"),
            evidence: "seen in review".into(),
            status: FindingStatus::Open,
        };
        store.append(Event::FindingRecorded { finding }).unwrap();
    }
    store.append(Event::MilestoneStatusChanged { milestone: "M1".into(), status: WorkStatus::Validated }).unwrap();
    store
        .append(Event::StateChanged { state: MissionState::AwaitingAcceptance, pause_reason: None, detail: None })
        .unwrap();
    drop(store);
    dir
}

fn uri(dir: &Path, index: usize) -> String {
    format!("file://{}/{}", dir.display(), file_name(index))
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Times `REQUESTS` requests made by `request(i)`, returning p50 and p99 in milliseconds.
fn time_requests(editor: &mut Editor, mut request: impl FnMut(usize) -> (&'static str, Value)) -> (f64, f64) {
    let mut times = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        let (method, params) = request(i);
        let started = Instant::now();
        let response = editor.request(method, params);
        times.push(started.elapsed());
        assert!(response.get("error").is_none(), "{method} failed: {response}");
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(percentile(&times, 0.5)), ms(percentile(&times, 0.99)))
}

/// The diagnostics a client would send back with a code action request for file `index`.
fn diagnostics_of(index: usize) -> Value {
    let findings: Vec<Value> = (0..FINDINGS_PER_FILE)
        .map(|k| {
            let id = index * FINDINGS_PER_FILE + k + 1;
            let line = 4 + k as u32 * 10;
            json!({
                "range": {"start": {"line": line, "character": 0}, "end": {"line": line + 2, "character": 10}},
                "source": "missions",
                "message": "this could be simpler",
                "data": {"missionId": MISSION, "findingId": format!("finding-{id}")}
            })
        })
        .collect();
    Value::Array(findings)
}

fn measure(editor: &mut Editor, dir: &Path, label: &str) {
    let (hover_p50, hover_p99) = time_requests(editor, |i| {
        let index = (i * 7) % FILES;
        let params = json!({"textDocument": {"uri": uri(dir, index)}, "position": {"line": 14, "character": 2}});
        ("textDocument/hover", params)
    });
    let (action_p50, action_p99) = time_requests(editor, |i| {
        let index = (i * 13) % FILES;
        let params = json!({
            "textDocument": {"uri": uri(dir, index)},
            "range": {"start": {"line": 4, "character": 0}, "end": {"line": 6, "character": 0}},
            "context": {"diagnostics": diagnostics_of(index)}
        });
        ("textDocument/codeAction", params)
    });
    println!("{label:<34} hover p50 {hover_p50:>7.2} ms  p99 {hover_p99:>7.2} ms");
    println!("{label:<34} codeAction p50 {action_p50:>7.2} ms  p99 {action_p99:>7.2} ms");
}

fn main() {
    let built = Instant::now();
    let dir = workspace();
    println!(
        "workspace: {FILES} files, {} open findings, {FEATURES} handoffs (built in {:.1} s)",
        FILES * FINDINGS_PER_FILE,
        built.elapsed().as_secs_f64()
    );
    let mut editor = Editor::start(dir.path());
    let pid = editor.child.id();
    editor.initialize(dir.path());
    let started = Instant::now();
    let mut published = std::collections::BTreeSet::new();
    let deadline = started + Duration::from_secs(120);
    while published.len() < FILES {
        let Some(message) = editor.next(deadline) else { panic!("only {} files got diagnostics", published.len()) };
        if message["method"] == "textDocument/publishDiagnostics" {
            published.insert(message["params"]["uri"].as_str().unwrap_or_default().to_owned());
        }
    }
    println!("republish after a restart: {FILES} files in {:.0} ms", started.elapsed().as_secs_f64() * 1000.0);
    editor.seen.clear();
    println!("idle RSS: {:.1} MB", rss_kib(pid, "VmRSS:") as f64 / 1024.0);

    measure(&mut editor, dir.path(), "idle");

    // Another process appends to the log while the editor asks: the server follows it.
    let writer_dir = dir.path().to_owned();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer_stop = stop.clone();
    let writer = std::thread::spawn(move || {
        let mission = missions_core::store::mission_dir(&writer_dir, MISSION).unwrap();
        let (mut store, _) = MissionStore::open(&mission).unwrap();
        let mut appended = 0u64;
        // Mostly events that leave findings alone, and every 20th a new finding, as a busy
        // mission records them (far faster than a real one).
        while !writer_stop.load(std::sync::atomic::Ordering::Relaxed) {
            let event = if appended % 20 == 19 {
                let line = 50 + (appended % 10) as u32;
                Event::FindingRecorded {
                    finding: Finding {
                        id: format!("finding-{}", FILES * FINDINGS_PER_FILE + appended as usize + 1),
                        milestone: "M1".into(),
                        assertion: None,
                        feature: None,
                        validator: Validator::Review,
                        severity: Severity::Info,
                        path: Some(file_name(appended as usize % FILES)),
                        line: Some(line),
                        end_line: None,
                        message: format!("a note while the mission runs ({appended})"),
                        evidence: String::new(),
                        status: FindingStatus::Open,
                    },
                }
            } else {
                Event::CourseCorrectionNoted { note: format!("note {appended}") }
            };
            store.append(event).unwrap();
            appended += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        appended
    });
    measure(&mut editor, dir.path(), "while another process appends");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let appended = writer.join().unwrap();
    println!("(the other process appended {appended} events meanwhile)");
    println!(
        "RSS after the requests: {:.1} MB, peak {:.1} MB",
        rss_kib(pid, "VmRSS:") as f64 / 1024.0,
        rss_kib(pid, "VmHWM:") as f64 / 1024.0
    );
    editor.seen.clear();
    editor.stop();
}
