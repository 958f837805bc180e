//! Unit tests of the event store: the hash chain, torn and corrupt logs, the writer lock,
//! projections rebuilt from the log.

use super::*;
use crate::mission::*;
use crate::model::Usage;

/// A log that touches every kind of event, as a mission would write it.
pub(crate) fn sample_events(id: &str) -> Vec<Event> {
    let check = |c: &str| Check::Command { command: c.to_owned(), expect_exit: 0 };
    let finding = |n: u32, status| Finding {
        id: format!("F{n}"),
        milestone: "M1".into(),
        assertion: Some("A1".into()),
        feature: Some("F1".into()),
        validator: Validator::Command,
        severity: Severity::Error,
        path: Some("src/slug.py".into()),
        line: Some(3),
        end_line: None,
        message: "A1: slugify('') raised".into(),
        evidence: "exit 1".into(),
        status,
    };
    vec![
        Event::MissionCreated {
            id: id.to_owned(),
            title: "Add slugify — ünïcode ✓".into(),
            source: Source { kind: SourceKind::Text, item_id: None, text: "Add slugify".into() },
            branch: format!("missions/{id}"),
            base_commit: "abc123".into(),
            auto_accept: false,
            max_tokens: Some(1000),
            max_usd: Some(2.0),
        },
        Event::PlanSubmitted {
            plan: PlanDraft {
                title: "Slugify".into(),
                summary: "Add it.".into(),
                milestones: vec![MilestoneDraft {
                    id: "M1".into(),
                    title: "Core".into(),
                    features: vec![FeatureDraft {
                        id: "F1".into(),
                        title: "slugify()".into(),
                        description: "Write it.".into(),
                        assertions: vec!["A1".into()],
                    }],
                }],
            },
            contract: vec![AssertionDraft {
                id: "A1".into(),
                milestone: "M1".into(),
                description: "tests pass".into(),
                check: check("pytest -q"),
            }],
        },
        Event::StateChanged { state: MissionState::AwaitingApproval, pause_reason: None, detail: None },
        Event::PlanApproved { contract_sha256: "d".repeat(64) },
        Event::StateChanged { state: MissionState::Running, pause_reason: None, detail: None },
        Event::CursorMoved { milestone: Some("M1".into()), feature: Some("F1".into()), role: Some(Role::Worker) },
        Event::MilestoneStarted { milestone: "M1".into(), base_commit: "abc123".into() },
        Event::FeatureStarted {
            milestone: "M1".into(),
            feature: "F1".into(),
            base_commit: "abc123".into(),
            run_id: "worker-1".into(),
        },
        Event::RunStarted {
            run_id: "worker-1".into(),
            role: Role::Worker,
            milestone: Some("M1".into()),
            feature: Some("F1".into()),
        },
        Event::FeatureStatusChanged { feature: "F1".into(), status: WorkStatus::InProgress },
        Event::UsageRecorded {
            role: Role::Worker,
            run_id: "worker-1".into(),
            provider: "p".into(),
            model: "m".into(),
            usage: Usage { input: 10, output: 5, cache_read: 100, cache_write: 20, reasoning: 0 },
            cost_usd: Some(0.01),
        },
        Event::HandoffRecorded {
            handoff: Handoff {
                feature: "F1".into(),
                model: "m".into(),
                claim: HandoffClaim {
                    summary: "done".into(),
                    completed: vec!["slugify".into()],
                    skipped: vec![],
                    commands: vec![ClaimedCommand { command: "pytest -q".into(), exit_code: 0 }],
                    issues: vec![],
                    procedures_followed: true,
                    procedure_notes: String::new(),
                },
                files_changed: vec![FileChange { path: "src/slug.py".into(), ranges: vec![[1, 9]] }],
                commit: Some("def456".into()),
                observed_commands: vec![ObservedCommand {
                    command: "pytest -q".into(),
                    exit_code: Some(0),
                    duration_ms: 12,
                }],
            },
        },
        Event::RunFinished { run_id: "worker-1".into(), outcome: RunOutcome::Finished, detail: "handed off".into() },
        Event::FeatureStatusChanged { feature: "F1".into(), status: WorkStatus::Done },
        Event::StateChanged { state: MissionState::Validating, pause_reason: None, detail: None },
        Event::RunStarted {
            run_id: "review-1".into(),
            role: Role::Reviewer,
            milestone: Some("M1".into()),
            feature: Some("F1".into()),
        },
        // A call of its own names the active run's model (and costs nothing here, so the
        // budget's totals below are the other calls').
        Event::UsageRecorded {
            role: Role::Reviewer,
            run_id: "review-1".into(),
            provider: "p".into(),
            model: "reviewer-model".into(),
            usage: Usage::default(),
            cost_usd: Some(0.0),
        },
        Event::AssertionChecked { assertion: "A1".into(), status: AssertionStatus::Failing, evidence: "exit 1".into() },
        Event::FindingRecorded { finding: finding(1, FindingStatus::Open) },
        Event::FeaturesAdded {
            milestone: "M1".into(),
            features: vec![FeatureDraft {
                id: "F1-fix1".into(),
                title: "fix empty".into(),
                description: "handle ''".into(),
                assertions: vec!["A1".into()],
            }],
            by: Some(Author::Orchestrator),
        },
        Event::DecisionRecorded {
            milestone: "M1".into(),
            decision: BoundaryDecision::Correct,
            notes: "fix empty input".into(),
            corrections: Vec::new(),
            new_assertions: Vec::new(),
        },
        Event::AssertionsAdded {
            assertions: vec![AssertionDraft {
                id: "A2".into(),
                milestone: "M1".into(),
                description: "empty input".into(),
                check: check("pytest -q -k empty"),
            }],
            by: Author::Orchestrator,
        },
        Event::UsageRecorded {
            role: Role::Orchestrator,
            run_id: "orch-1".into(),
            provider: "p".into(),
            model: "unpriced".into(),
            usage: Usage { input: 1, output: 1, ..Usage::default() },
            cost_usd: None,
        },
        Event::CourseCorrectionNoted { note: "use unicodedata".into() },
        Event::AssertionChecked { assertion: "A1".into(), status: AssertionStatus::Passing, evidence: "ok".into() },
        Event::FindingStatusChanged { finding: "F1".into(), status: FindingStatus::Fixed, reason: None },
        Event::AssertionWaived { assertion: "A2".into(), reason: "user says so".into() },
        Event::MilestoneCommitted { milestone: "M1".into(), commit: "fed789".into() },
        Event::MilestoneRejected {
            milestone: "M1".into(),
            feedback: "also handle emoji".into(),
            correction: None,
            to_boundary: false,
        },
        Event::AutoAcceptSet { auto_accept: true },
        Event::BudgetSet { max_tokens: Some(1000), max_usd: Some(2.0) },
        Event::StateChanged {
            state: MissionState::Paused,
            pause_reason: Some(PauseReason::Budget),
            detail: Some("cap".into()),
        },
    ]
}

fn workspace_with_log(id: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut events = sample_events(id).into_iter();
    let mut store = MissionStore::create(dir.path(), events.next().unwrap()).unwrap();
    for event in events {
        store.append(event).unwrap();
    }
    let mission_dir = store.dir().to_owned();
    drop(store);
    (dir, mission_dir)
}

#[test]
fn the_fold_builds_every_projection() {
    let (_dir, mission_dir) = workspace_with_log("m1");
    let (projection, warnings) = load_projection(&mission_dir).unwrap();
    assert!(warnings.is_empty());
    let mission = projection.mission.as_ref().unwrap();
    assert_eq!(mission.state, MissionState::Paused);
    assert_eq!(mission.pause_reason, Some(PauseReason::Budget));
    assert!(mission.auto_accept);
    assert_eq!(mission.budget.used_tokens, 135 + 2);
    assert_eq!(mission.budget.by_role[&Role::Worker].tokens, 135);
    assert!((mission.budget.used_usd - 0.01).abs() < 1e-12);
    assert!(mission.budget.usd_unknown, "an unpriced call makes the dollar total a lower bound");
    let plan = projection.plan.as_ref().unwrap();
    assert_eq!(plan.milestones[0].features.len(), 2);
    assert_eq!(plan.milestones[0].status, WorkStatus::Validated);
    let statuses: Vec<_> = projection.contract.assertions.iter().map(|a| a.status).collect();
    assert_eq!(statuses, vec![AssertionStatus::Passing, AssertionStatus::Waived]);
    assert_eq!(projection.findings[0].status, FindingStatus::Fixed);
    assert_eq!(projection.handoffs["F1"].commit.as_deref(), Some("def456"));
    assert_eq!(projection.course_corrections, vec!["use unicodedata".to_owned()]);
    assert_eq!(projection.correction_rounds["M1"], 1);
    assert_eq!(projection.milestone_bases["M1"], "abc123");
    assert_eq!(projection.feature_bases["F1"], "abc123");
    assert_eq!(projection.milestone_commits["M1"], "fed789");
    // The reviewer's run started and never finished: it is the active run.
    assert_eq!(projection.active_run.as_ref().map(|r| r.run_id.as_str()), Some("review-1"));
    // Its model is its own calls', not that of a call another run made after it.
    assert_eq!(projection.active_run.as_ref().and_then(|r| r.model.as_deref()), Some("reviewer-model"));
}

#[test]
fn a_rollback_reopens_its_milestone_and_every_later_one() {
    let mut projection = Projection::default();
    let mut events = sample_events("m1");
    events.push(Event::MilestoneAccepted { milestone: "M1".into() });
    events.push(Event::MilestoneRolledBack {
        milestone: "M1".into(),
        from_commit: "fed789".into(),
        to_commit: "abc123".into(),
        saved_ref: "refs/missions/m1/rolled-back/1".into(),
    });
    for (seq, event) in events.into_iter().enumerate() {
        projection.apply(&Record { seq: seq as u64 + 1, ts: "t".into(), prev: String::new(), event });
    }
    let plan = projection.plan.as_ref().unwrap();
    assert_eq!(plan.milestones[0].status, WorkStatus::Pending);
    assert!(plan.milestones[0].features.iter().all(|f| f.status == WorkStatus::Pending));
    let statuses: Vec<_> = projection.contract.assertions.iter().map(|a| a.status).collect();
    assert_eq!(statuses, vec![AssertionStatus::Pending, AssertionStatus::Waived], "a waiver survives a rollback");
    assert_eq!(projection.rollbacks, 1);
    assert!(projection.milestone_bases.is_empty() && projection.feature_bases.is_empty());
}

#[test]
fn projections_are_written_and_rebuilt_from_the_log_alone() {
    let (_dir, mission_dir) = workspace_with_log("m1");
    let names =
        ["mission.json", "plan.json", "plan.md", "contract.json", "contract.md", "findings.json", "handoffs/F1.json"];
    let before: Vec<String> = names.iter().map(|n| std::fs::read_to_string(mission_dir.join(n)).unwrap()).collect();
    let mission: Mission = serde_json::from_str(&before[0]).unwrap();
    assert_eq!(mission.id, "m1");
    assert!(before[4].contains("### A1 (passing)"), "{}", before[4]);
    for name in names {
        std::fs::remove_file(mission_dir.join(name)).unwrap();
    }
    // Readers never need the projections.
    assert_eq!(load_projection(&mission_dir).unwrap().0.mission.unwrap().id, "m1");
    // Opening for writing rebuilds them byte for byte.
    let (_store, _) = MissionStore::open(&mission_dir).unwrap();
    let after: Vec<String> = names.iter().map(|n| std::fs::read_to_string(mission_dir.join(n)).unwrap()).collect();
    assert_eq!(before, after);
}

#[test]
fn fold_after_truncation_at_every_byte_offset_is_consistent() {
    let (_dir, mission_dir) = workspace_with_log("m1");
    let path = mission_dir.join("events.jsonl");
    let bytes = std::fs::read(&path).unwrap();
    let full = log::parse_log(&path, &bytes).unwrap();
    // The fold of the first n whole events, for every n.
    let mut prefixes = vec![Projection::default()];
    for record in &full.records {
        let mut next = prefixes.last().unwrap().clone();
        next.apply(record);
        prefixes.push(next);
    }
    for cut in 0..=bytes.len() {
        let prefix = &bytes[..cut];
        let contents = log::parse_log(&path, prefix).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let whole_lines = prefix.iter().filter(|b| **b == b'\n').count();
        assert_eq!(contents.records.len(), whole_lines, "cut at {cut}");
        assert_eq!(
            contents.warnings.len(),
            usize::from(!prefix.is_empty() && !prefix.ends_with(b"\n")),
            "cut at {cut}"
        );
        assert_eq!(Projection::from_records(&contents.records), prefixes[whole_lines], "cut at {cut}");
    }
}

#[test]
fn a_torn_tail_is_dropped_on_open_and_appending_continues_the_chain() {
    let (_dir, mission_dir) = workspace_with_log("m1");
    let path = mission_dir.join("events.jsonl");
    let mut bytes = std::fs::read(&path).unwrap();
    let whole = bytes.iter().filter(|b| **b == b'\n').count();
    bytes.extend_from_slice(br#"{"seq":999,"ts":"2026-"#);
    std::fs::write(&path, &bytes).unwrap();

    let (mut store, warnings) = MissionStore::open(&mission_dir).unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("incomplete last line"), "{warnings:?}");
    store.append(Event::CourseCorrectionNoted { note: "after crash".into() }).unwrap();
    drop(store);
    let contents = log::read_log(&path).unwrap();
    assert_eq!(contents.records.len(), whole + 1);
    assert!(contents.warnings.is_empty());
}

#[test]
fn a_broken_chain_in_the_middle_is_an_error_not_a_repair() {
    let (_dir, mission_dir) = workspace_with_log("m1");
    let path = mission_dir.join("events.jsonl");
    let original = std::fs::read_to_string(&path).unwrap();

    // Editing an earlier event breaks the chain at the line after it.
    let tampered = original.replacen("\"pytest -q\"", "\"true\"", 1);
    assert_ne!(tampered, original);
    std::fs::write(&path, &tampered).unwrap();
    let error = MissionStore::open(&mission_dir).unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { line: 3, .. }), "{error}");
    assert!(error.to_string().contains("hash chain broken"), "{error}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), tampered, "a corrupt log is never rewritten");

    // Losing a line in the middle is caught too.
    let mut lines: Vec<&str> = original.lines().collect();
    lines.remove(4);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let error = load_projection(&mission_dir).unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { line: 5, .. }), "{error}");

    // Garbage in a whole line in the middle is corruption, not a torn tail.
    let mut lines: Vec<&str> = original.lines().collect();
    lines[2] = "{not json";
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    assert!(matches!(load_projection(&mission_dir).unwrap_err(), StoreError::Corrupt { line: 3, .. }));
}

#[test]
fn a_second_writer_is_refused_and_told_who_holds_the_mission() {
    let (_dir, mission_dir) = workspace_with_log("m1");
    let (first, _) = MissionStore::open(&mission_dir).unwrap();
    let error = MissionStore::open(&mission_dir).unwrap_err();
    match &error {
        StoreError::Locked { holder, .. } => {
            assert!(holder.contains(&format!("pid {}", std::process::id())), "{holder}");
        }
        other => panic!("expected Locked, got {other}"),
    }
    // Readers are not writers: status still works while a driver holds the lock.
    assert!(load_projection(&mission_dir).is_ok());
    drop(first);
    assert!(MissionStore::open(&mission_dir).is_ok(), "the lock is released with its holder");
}

#[test]
fn missions_are_listed_and_unknown_ids_refused() {
    let (dir, _mission_dir) = workspace_with_log("20261121-b-0001");
    let mut events = sample_events("20261120-a-0002").into_iter();
    drop(MissionStore::create(dir.path(), events.next().unwrap()).unwrap());
    assert_eq!(list_missions(dir.path()).unwrap(), vec!["20261120-a-0002", "20261121-b-0001"]);
    for bad in ["nope", "..", "", "../x"] {
        assert!(matches!(mission_dir(dir.path(), bad), Err(StoreError::NotFound { .. })), "{bad}");
    }
    assert!(mission_dir(dir.path(), "20261121-b-0001").is_ok());
}

#[test]
fn contract_digest_ignores_order_and_status_but_not_content() {
    let assertion = |id: &str, command: &str, status| Assertion {
        id: id.into(),
        milestone: "M1".into(),
        description: "d".into(),
        check: Check::Command { command: command.into(), expect_exit: 0 },
        status,
    };
    let a = [assertion("A1", "x", AssertionStatus::Pending), assertion("A2", "y", AssertionStatus::Pending)];
    let b = [assertion("A2", "y", AssertionStatus::Failing), assertion("A1", "x", AssertionStatus::Passing)];
    let c = [assertion("A1", "x", AssertionStatus::Pending), assertion("A2", "true", AssertionStatus::Pending)];
    assert_eq!(contract_digest(&a), contract_digest(&b));
    assert_ne!(contract_digest(&a), contract_digest(&c));
    assert_eq!(contract_digest(&a).len(), 64);
}

#[test]
fn a_projection_that_cannot_be_written_does_not_fail_a_durable_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut events = sample_events("m1").into_iter();
    let mut store = MissionStore::create(dir.path(), events.next().unwrap()).unwrap();
    // A directory where plan.json should go makes every write of that projection fail.
    let blocker = store.dir().join("plan.json");
    std::fs::create_dir(&blocker).unwrap();
    let plan_submitted = events.next().unwrap();
    let record = store.append(plan_submitted).expect("the event is durable, so append succeeds");
    assert_eq!(record.seq, 2);
    assert!(store.projection().plan.is_some());
    assert!(blocker.is_dir(), "the stale projection is left for later");
    // The log has the event; once the obstacle is gone the next append heals the projection.
    assert_eq!(log::read_log(&store.dir().join("events.jsonl")).unwrap().records.len(), 2);
    std::fs::remove_dir(&blocker).unwrap();
    store.append(events.next().unwrap()).unwrap();
    store.flush().unwrap();
    let plan: Plan = serde_json::from_str(&std::fs::read_to_string(&blocker).unwrap()).unwrap();
    assert_eq!(plan.title, "Slugify");
}

#[test]
fn a_new_mission_appears_whole_with_its_first_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut events = sample_events("m1").into_iter();
    let store = MissionStore::create(dir.path(), events.next().unwrap()).unwrap();
    let log_text = std::fs::read_to_string(store.dir().join("events.jsonl")).unwrap();
    assert_eq!(log_text.lines().count(), 1);
    assert!(log_text.ends_with('\n'));
    let leftovers: Vec<_> = std::fs::read_dir(store.dir())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Creating the same mission again is refused rather than overwriting it.
    drop(store);
    let again = MissionStore::create(dir.path(), sample_events("m1").remove(0));
    assert!(again.is_err());
    assert_eq!(std::fs::read_to_string(mission_dir(dir.path(), "m1").unwrap().join("events.jsonl")).unwrap(), log_text);
}

#[test]
fn one_unreadable_mission_does_not_hide_the_others() {
    let (dir, broken_dir) = workspace_with_log("20261120-broken-0001");
    let mut events = sample_events("20261121-fine-0002").into_iter();
    drop(MissionStore::create(dir.path(), events.next().unwrap()).unwrap());
    let path = broken_dir.join("events.jsonl");
    let text = std::fs::read_to_string(&path).unwrap().replacen("\"seq\":2", "\"seq\":7", 1);
    std::fs::write(&path, text).unwrap();
    let status = crate::status::workspace_snapshots(dir.path()).unwrap();
    let ids: Vec<&str> = status.snapshots.iter().map(|s| s.mission.id.as_str()).collect();
    assert_eq!(ids, ["20261121-fine-0002"]);
    assert_eq!(status.unreadable.len(), 1);
    assert_eq!(status.unreadable[0].0, "20261120-broken-0001");
    assert!(matches!(status.unreadable[0].1, StoreError::Corrupt { line: 2, .. }));
}

fn fold(events: Vec<Event>) -> Projection {
    let mut projection = Projection::default();
    for (seq, event) in events.into_iter().enumerate() {
        projection.apply(&Record { seq: seq as u64 + 1, ts: "t".into(), prev: String::new(), event });
    }
    projection
}

#[test]
fn a_waiver_outlasts_later_verdicts_and_duplicate_feature_ids_are_never_added() {
    let mut events: Vec<Event> = sample_events("m1").into_iter().take(2).collect();
    events.push(Event::AssertionWaived { assertion: "A1".into(), reason: "flaky upstream".into() });
    events.push(Event::AssertionChecked {
        assertion: "A1".into(),
        status: AssertionStatus::Failing,
        evidence: "x".into(),
    });
    let duplicate =
        FeatureDraft { id: "F1".into(), title: "again".into(), description: "d".into(), assertions: vec![] };
    events.push(Event::FeaturesAdded { milestone: "M1".into(), features: vec![duplicate], by: Some(Author::User) });
    let projection = fold(events);
    assert_eq!(projection.contract.assertions[0].status, AssertionStatus::Waived);
    let features: Vec<&str> =
        projection.plan.as_ref().unwrap().milestones[0].features.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(features, ["F1"]);
}

#[test]
fn a_rollback_resets_the_milestones_correction_rounds() {
    let mut events = sample_events("m1");
    events.push(Event::MilestoneRolledBack {
        milestone: "M1".into(),
        from_commit: "b".into(),
        to_commit: "a".into(),
        saved_ref: "refs/missions/m1/rolled-back/1".into(),
    });
    let projection = fold(events);
    assert!(projection.correction_rounds.is_empty());
    assert_eq!(projection.last_rollback, Some(("refs/missions/m1/rolled-back/1".into(), "b".into(), "a".into())));
}

#[test]
fn a_reader_never_takes_a_log_being_appended_to_for_a_corrupt_one() {
    // A driver appends and rewrites mission.json while another process reads: the reader must
    // never see a projection newer than the log it read (it reads mission.json first).
    let (_dir, mission_dir) = workspace_with_log("m1");
    let (mut store, _) = MissionStore::open(&mission_dir).unwrap();
    let reader_dir = mission_dir.clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reading = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut reads = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) || reads == 0 {
                if let Err(error) = load_projection(&reader_dir) {
                    return Err(format!("read {reads}: {error}"));
                }
                reads += 1;
            }
            Ok(reads)
        })
    };
    for n in 0..300 {
        store.append(Event::CourseCorrectionNoted { note: format!("note {n}") }).unwrap();
        store.flush().unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let reads = reading.join().unwrap().unwrap_or_else(|error| panic!("a live log was called corrupt: {error}"));
    assert!(reads > 0);
}

#[test]
fn a_log_that_lost_whole_events_is_corrupt_and_left_untouched() {
    let (_dir, mission_dir) = workspace_with_log("m1");
    let path = mission_dir.join("events.jsonl");
    let bytes = std::fs::read(&path).unwrap();
    // Cut the log back by three whole events and half of a fourth: mission.json (written after
    // the last event) now shows a mission the log cannot explain.
    let newlines: Vec<usize> = bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i).collect();
    let cut = newlines[newlines.len() - 5] + 1 + 10;
    std::fs::write(&path, &bytes[..cut]).unwrap();
    match MissionStore::open(&mission_dir) {
        Err(StoreError::Corrupt { message, .. }) => assert!(message.contains("whole events were lost"), "{message}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(load_projection(&mission_dir), Err(StoreError::Corrupt { .. })));
    assert_eq!(std::fs::read(&path).unwrap(), &bytes[..cut], "the log is left as it was");

    // A torn last line alone is still only a warning.
    let (_dir, mission_dir) = workspace_with_log("m2");
    let path = mission_dir.join("events.jsonl");
    let mut torn = std::fs::read(&path).unwrap();
    torn.extend_from_slice(b"{\"seq\": 99, \"ts\": \"2");
    std::fs::write(&path, &torn).unwrap();
    let (_, warnings) = MissionStore::open(&mission_dir).unwrap();
    assert!(warnings[0].contains("incomplete last line"), "{warnings:?}");
}

#[test]
fn reading_a_file_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.toml");
    std::fs::write(&big, vec![b'#'; 2048]).unwrap();
    assert!(matches!(super::read_bounded(&big, 1024), Err(StoreError::TooLarge { limit: 1024, .. })));
    assert_eq!(super::read_bounded(&big, 4096).unwrap().len(), 2048);
    let zero = dir.path().join("zero.toml");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    assert!(matches!(super::read_bounded(&zero, 1024), Err(StoreError::NotAFile { .. })));
}

#[test]
fn typed_fields_keep_the_words_logs_were_written_with() {
    let read = |json: &str| serde_json::from_str::<Event>(json).unwrap();
    assert_eq!(
        read(r#"{"type":"run_finished","run_id":"r","outcome":"gave_up","detail":"d"}"#),
        Event::RunFinished { run_id: "r".into(), outcome: RunOutcome::GaveUp, detail: "d".into() }
    );
    let decided = read(r#"{"type":"decision_recorded","milestone":"M1","decision":"complete","notes":"n"}"#);
    assert!(matches!(decided, Event::DecisionRecorded { decision: BoundaryDecision::Complete, .. }));
    let added = read(r#"{"type":"features_added","milestone":"M1","features":[],"by":"orchestrator"}"#);
    assert!(matches!(added, Event::FeaturesAdded { by: Some(Author::Orchestrator), .. }));
    let added = read(r#"{"type":"assertions_added","assertions":[],"by":"user"}"#);
    assert!(matches!(added, Event::AssertionsAdded { by: Author::User, .. }));
    let written = serde_json::to_value(Event::RunFinished {
        run_id: "r".into(),
        outcome: RunOutcome::Finished,
        detail: String::new(),
    })
    .unwrap();
    assert_eq!(written["outcome"], "finished");
}

/// A model call's usage: an event that only reports progress.
fn usage_recorded() -> Event {
    Event::UsageRecorded {
        role: Role::Worker,
        run_id: "r1".into(),
        provider: "anthropic".into(),
        model: "m".into(),
        usage: Usage { input: 10, output: 5, ..Usage::default() },
        cost_usd: Some(0.01),
    }
}

#[test]
fn progress_events_are_not_synced_alone_yet_no_process_crash_loses_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut events = sample_events("m1").into_iter();
    let mut store = MissionStore::create(dir.path(), events.next().unwrap()).unwrap();
    let usage = usage_recorded();
    assert_eq!(usage.urgency(), Urgency::Progress, "usage only reports progress");
    assert!(events.clone().next().is_some_and(|e| e.urgency() == Urgency::Soon), "a plan is a decision");
    let work = Event::WorkRecorded { files: Vec::new() };
    assert_eq!(work.urgency(), Urgency::WriteAhead, "the proof of the mission's own work goes before the work");
    store.append(usage).unwrap();
    // The process dies without closing the store: the line is in the file all the same.
    let path = store.dir().join("events.jsonl");
    std::mem::forget(store);
    let read = log::read_log(&path).unwrap();
    assert_eq!(read.records.len(), 2);
    assert!(matches!(read.records[1].event, Event::UsageRecorded { .. }));
    assert!(read.warnings.is_empty(), "{:?}", read.warnings);
}

#[test]
fn views_never_show_events_before_they_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let events = sample_events("m1");
    let mut store = MissionStore::create(dir.path(), events[0].clone()).unwrap();
    for event in &events[1..11] {
        store.append(event.clone()).unwrap();
    }
    store.flush().unwrap();
    let handoffs = store.dir().join("handoffs");
    // A handoff recorded within a group settles the view only once the group is durable.
    store.begin_group();
    assert!(matches!(events[11], Event::HandoffRecorded { .. }));
    store.append(events[11].clone()).unwrap();
    store.flush().unwrap();
    assert!(!handoffs.exists(), "a view showed an event of a group not yet durable");
    store.end_group();
    store.flush().unwrap();
    assert_eq!(std::fs::read_dir(&handoffs).unwrap().count(), 1);
    // After progress events (not synced alone) the views are brought up to date only once
    // the log is synced; either way, a reader never finds mission.json ahead of the log.
    store.append(events[12].clone()).unwrap();
    store.flush().unwrap();
    assert!(log::read_log(&store.dir().join("events.jsonl")).is_ok());
}

#[test]
fn an_event_is_durable_when_its_urgency_says_and_an_effect_waits_for_all_but_progress() {
    let dir = tempfile::tempdir().unwrap();
    let mut events = sample_events("m1").into_iter();
    let (mut log, _) = log::EventLog::create(&dir.path().join("m1"), events.next().unwrap()).unwrap();
    let durability = log.durability();
    let created = log.written_len();
    assert_eq!(durability.synced_len(), created, "a new log is durable whole");
    // A decision is written at once and synced soon, by whoever syncs next.
    let plan = events.next().unwrap();
    assert_eq!(plan.urgency(), Urgency::Soon);
    log.append(plan).unwrap();
    let after_plan = log.written_len();
    assert_eq!(durability.synced_len(), created);
    // Progress after it is not what an effect waits for; the decision is.
    log.append(usage_recorded()).unwrap();
    durability.sync_needed().unwrap();
    assert_eq!(durability.synced_len(), after_plan, "synced up to the decision, not the progress after it");
    // The proof of the mission's own work is durable before its append returns, and every
    // line before it with it.
    log.append(Event::WorkRecorded { files: Vec::new() }).unwrap();
    assert_eq!(durability.synced_len(), log.written_len());
}

#[test]
fn a_record_written_ahead_is_durable_once_its_effect_waited_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut events = sample_events("m1").into_iter();
    let mut store = MissionStore::create(dir.path(), events.next().unwrap()).unwrap();
    let (record, ahead) = store.append_ahead(Event::WorkRecorded { files: Vec::new() }).unwrap();
    assert_eq!(record.seq, 2);
    ahead.wait().unwrap();
    assert_eq!(store.durability().synced_len(), store.log.written_len());
    // Within a group it is durable before the append returns.
    store.begin_group();
    let (_, ahead) = store.append_ahead(Event::WorkRecorded { files: Vec::new() }).unwrap();
    assert_eq!(store.durability().synced_len(), store.log.written_len());
    ahead.wait().unwrap();
    store.end_group();
}

#[test]
fn views_follow_a_quick_run_of_events_paced_and_catch_up_with_no_further_call() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().unwrap();
    let mut store = MissionStore::create(dir.path(), sample_events("m1").remove(0)).unwrap();
    store.flush().unwrap();
    let view = store.dir().join("mission.json");
    let inode = || std::fs::metadata(&view).map(|m| m.ino()).ok();
    // A quick run of decisions, each its own update: every one is synced at once, but the
    // view is replaced at most once per pacing interval (the flush just rendered it).
    let started = std::time::Instant::now();
    let mut replaced = 0usize;
    let mut last = inode();
    let states = [MissionState::Paused, MissionState::Running];
    for state in states.iter().cycle().take(60) {
        let event = Event::StateChanged { state: *state, pause_reason: None, detail: Some("quick".into()) };
        store.append(event).unwrap();
        let now = inode();
        if now != last {
            replaced += 1;
            last = now;
        }
    }
    let intervals = started.elapsed().as_millis() / views::RENDER_EVERY.as_millis();
    assert!(
        replaced as u128 <= intervals + 2,
        "mission.json was replaced {replaced} times in {:?} of quick updates",
        started.elapsed()
    );
    // With no further call (no flush, no event), the view catches up once its render is due.
    let wanted = serde_json::to_value(store.projection().mission.as_ref().unwrap()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let shown =
            std::fs::read(&view).ok().and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
        if shown.as_ref() == Some(&wanted) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "mission.json never caught up: {shown:?}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // A flush shows everything at once, paced or not.
    store.append(Event::StateChanged { state: MissionState::Paused, pause_reason: None, detail: None }).unwrap();
    store.flush().unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&std::fs::read(&view).unwrap()).unwrap();
    assert_eq!(shown["state"], "paused");
}
