//! Each rule through one `check` helper: a projection (folded from the events a mission would
//! have recorded), an input, and what the rule must say.

use missions_core::mission::{
    AssertionStatus, Check, ClaimedCommand, Finding, FindingStatus, MissionState, ObservedCommand, Severity, Source,
    SourceKind, Validator, WorkStatus,
};
use missions_core::store::{AssertionDraft, Event, FeatureDraft, MilestoneDraft, PlanDraft, Projection, Record};

use super::*;
use crate::mission::Command;

fn fold(events: impl IntoIterator<Item = Event>) -> Projection {
    let mut projection = Projection::default();
    for (index, event) in events.into_iter().enumerate() {
        let record = Record { seq: index as u64 + 1, ts: "2026-11-28T07:00:00Z".into(), prev: String::new(), event };
        projection.apply(&record);
    }
    projection
}

fn feature(id: &str, assertions: &[&str]) -> FeatureDraft {
    FeatureDraft {
        id: id.into(),
        title: format!("feature {id}"),
        description: "work".into(),
        assertions: assertions.iter().map(|a| (*a).to_owned()).collect(),
    }
}

fn assertion(id: &str, milestone: &str, command: &str) -> AssertionDraft {
    AssertionDraft {
        id: id.into(),
        milestone: milestone.into(),
        description: format!("{id} holds"),
        check: Check::Command { command: command.into(), expect_exit: 0 },
    }
}

/// A two-milestone plan submitted and waiting for approval.
fn planned() -> Vec<Event> {
    vec![
        Event::MissionCreated {
            id: "m1".into(),
            title: "t".into(),
            source: Source { kind: SourceKind::Text, item_id: None, text: "t".into() },
            branch: "missions/m1".into(),
            base_commit: "base".into(),
            auto_accept: false,
            max_tokens: None,
            max_usd: None,
        },
        Event::PlanSubmitted {
            plan: PlanDraft {
                title: "t".into(),
                summary: "s".into(),
                milestones: vec![
                    MilestoneDraft { id: "M1".into(), title: "first".into(), features: vec![feature("F1", &["A1"])] },
                    MilestoneDraft { id: "M2".into(), title: "second".into(), features: vec![feature("F2", &["A2"])] },
                ],
            },
            contract: vec![assertion("A1", "M1", "pytest -q"), assertion("A2", "M2", "pytest -q tests/b")],
        },
        Event::StateChanged { state: MissionState::AwaitingApproval, pause_reason: None, detail: None },
    ]
}

fn approved() -> Vec<Event> {
    let mut events = planned();
    let digest = store::contract_digest(&fold(planned()).contract.assertions);
    events.push(Event::PlanApproved { contract_sha256: digest });
    events
}

/// M1's work done and validated, with one open finding, waiting for the user.
fn awaiting_acceptance() -> Vec<Event> {
    let mut events = approved();
    events.extend([
        Event::MilestoneStarted { milestone: "M1".into(), base_commit: "c0".into() },
        Event::FeatureStatusChanged { feature: "F1".into(), status: WorkStatus::Done },
        Event::AssertionChecked { assertion: "A1".into(), status: AssertionStatus::Passing, evidence: "ok".into() },
        Event::FindingRecorded {
            finding: Finding {
                id: "finding-1".into(),
                milestone: "M1".into(),
                assertion: None,
                feature: Some("F1".into()),
                validator: Validator::Review,
                severity: Severity::Warning,
                path: Some("src/a.py".into()),
                line: Some(3),
                end_line: None,
                message: "the name is unclear".into(),
                evidence: "line 3".into(),
                status: FindingStatus::Open,
            },
        },
        Event::MilestoneStatusChanged { milestone: "M1".into(), status: WorkStatus::Validated },
        Event::StateChanged { state: MissionState::AwaitingAcceptance, pause_reason: None, detail: None },
    ]);
    events
}

fn with(mut events: Vec<Event>, more: impl IntoIterator<Item = Event>) -> Vec<Event> {
    events.extend(more);
    events
}

fn paused() -> Event {
    Event::StateChanged { state: MissionState::Paused, pause_reason: Some(PauseReason::User), detail: None }
}

/// What `decide` says, as text: one event per line (its JSON), `nothing`, the rollback, or
/// `refused: <why>`.
fn check(events: Vec<Event>, command: Command, expected: &str) {
    let said = match decide(&fold(events), &command) {
        Ok(Ruling::Record(events)) => {
            events.iter().map(|e| serde_json::to_string(e).unwrap_or_default()).collect::<Vec<_>>().join("\n")
        }
        Ok(Ruling::Nothing) => "nothing".to_owned(),
        Ok(Ruling::RollBack { milestone, base }) => format!("roll back {milestone} to {base}"),
        Err(refusal) => format!("refused: {refusal}"),
    };
    assert_eq!(said, expected, "for {command:?}");
}

#[test]
fn a_plan_is_approved_only_while_it_waits_and_the_digest_locks_the_contract() {
    let digest = store::contract_digest(&fold(planned()).contract.assertions);
    check(planned(), Command::Approve, &format!(r#"{{"type":"plan_approved","contract_sha256":"{digest}"}}"#));
    check(approved(), Command::Approve, "refused: cannot approve the plan: the mission is running");
}

/// `planned()` with A2 an acceptance assertion, its test recorded when `written`.
fn planned_with_an_acceptance_test(written: bool) -> Vec<Event> {
    let mut events = planned();
    if let Event::PlanSubmitted { contract, .. } = &mut events[1] {
        contract[1].check = Check::Acceptance { behaviour: "b".into(), files: Vec::new(), command: None };
    }
    if written {
        let test = missions_core::store::AcceptanceTest {
            assertion: "A2".into(),
            command: "python3 -m unittest tests.test_b".into(),
            notes: String::new(),
            files: vec![missions_core::store::AcceptanceTestFile {
                path: "tests/test_b.py".into(),
                content: "x".into(),
            }],
            base_exit: Some(1),
            base_output: "FAILED".into(),
        };
        events.insert(2, Event::AcceptanceTestsRecorded { tests: vec![test] });
    }
    events
}

#[test]
fn a_plan_whose_acceptance_tests_are_missing_is_not_approved_and_resumes_to_its_test_author() {
    check(
        planned_with_an_acceptance_test(false),
        Command::Approve,
        "refused: the acceptance tests of A2 are not written yet; resume the mission so the test author finishes them",
    );
    let written = fold(planned_with_an_acceptance_test(true));
    assert!(matches!(decide(&written, &Command::Approve), Ok(Ruling::Record(_))));
    // The digest the approval locks covers the test's files.
    let Check::Acceptance { files, command, .. } = &written.contract.assertions[1].check else { panic!() };
    assert_eq!(command.as_deref(), Some("python3 -m unittest tests.test_b"));
    assert_eq!(files[0].path, "tests/test_b.py");
    assert_ne!(
        store::contract_digest(&written.contract.assertions),
        store::contract_digest(&fold(planned_with_an_acceptance_test(false)).contract.assertions)
    );
    // Paused while the test author worked: resuming goes back to it, not to the gate.
    let interrupted = fold(with(planned_with_an_acceptance_test(false), [paused()]));
    assert_eq!(resume_state(&interrupted), MissionState::Planning);
    assert_eq!(
        resume_state(&fold(with(planned_with_an_acceptance_test(true), [paused()]))),
        MissionState::AwaitingApproval
    );
}

#[test]
fn only_the_waiting_milestone_is_accepted_or_rejected_and_a_rejection_needs_feedback() {
    let accept = |milestone: Option<&str>| Command::Accept { milestone: milestone.map(str::to_owned) };
    check(awaiting_acceptance(), accept(None), r#"{"type":"milestone_accepted","milestone":"M1"}"#);
    check(awaiting_acceptance(), accept(Some("M2")), "refused: milestone M2 is not the one waiting; M1 is");
    check(approved(), accept(None), "refused: cannot accept a milestone: the mission is running");
    let reject =
        |milestone: &str, feedback: &str| Command::Reject { milestone: milestone.into(), feedback: feedback.into() };
    check(
        awaiting_acceptance(),
        reject("M1", "use the standard library"),
        r#"{"type":"milestone_rejected","milestone":"M1","feedback":"use the standard library","to_boundary":true}"#,
    );
    check(awaiting_acceptance(), reject("M1", "  "), "refused: a rejection needs feedback saying what to change");
    check(awaiting_acceptance(), reject("M2", "x"), "refused: milestone M2 is not waiting for acceptance");
}

#[test]
fn pause_resume_and_cancel_follow_the_state() {
    check(
        approved(),
        Command::Pause { note: None },
        r#"{"type":"state_changed","state":"paused","pause_reason":"user","detail":"paused by the user"}"#,
    );
    check(with(approved(), [paused()]), Command::Pause { note: None }, "refused: cannot pause: the mission is paused");
    check(approved(), Command::Resume, "refused: cannot resume: the mission is running");
    // A paused mission goes back to where it was: the gate it waited at, or the work.
    let resumed =
        |state: &str| format!(r#"{{"type":"state_changed","state":"{state}","pause_reason":null,"detail":null}}"#);
    check(with(planned(), [paused()]), Command::Resume, &resumed("awaiting_approval"));
    check(with(approved(), [paused()]), Command::Resume, &resumed("running"));
    check(with(awaiting_acceptance(), [paused()]), Command::Resume, &resumed("awaiting_acceptance"));
    check(
        approved(),
        Command::Cancel,
        r#"{"type":"state_changed","state":"cancelled","pause_reason":null,"detail":"cancelled by the user"}"#,
    );
    let cancelled = Event::StateChanged { state: MissionState::Cancelled, pause_reason: None, detail: None };
    check(with(approved(), [cancelled]), Command::Cancel, "refused: cannot cancel: the mission is cancelled");
}

#[test]
fn only_the_user_waives_with_a_reason_and_a_waiver_is_recorded_once() {
    let waive = |reason: &str| Command::Waive { assertion: "A2".into(), reason: reason.into() };
    check(approved(), waive("flaky on CI"), r#"{"type":"assertion_waived","assertion":"A2","reason":"flaky on CI"}"#);
    check(approved(), waive(""), "refused: waiving an assertion needs a reason");
    let waived = Event::AssertionWaived { assertion: "A2".into(), reason: "flaky".into() };
    check(with(approved(), [waived]), waive("again"), "nothing");
    check(approved(), Command::Waive { assertion: "A9".into(), reason: "r".into() }, "refused: no assertion A9");
}

#[test]
fn fixing_a_finding_gives_its_milestone_work_again_once() {
    check(
        awaiting_acceptance(),
        Command::FixFinding { finding: "finding-1".into() },
        concat!(
            r#"{"type":"features_added","milestone":"M1","features":[{"id":"fix-finding-1","title":"Fix finding-1","#,
            r#""description":"The user asked for this finding to be fixed at src/a.py:3:\n\nthe name is unclear\n\nEvidence:\nline 3","#,
            r#""assertions":[]}],"by":"user"}"#,
            "\n",
            r#"{"type":"milestone_status_changed","milestone":"M1","status":"in_progress"}"#,
            "\n",
            r#"{"type":"state_changed","state":"running","pause_reason":null,"detail":null}"#,
        ),
    );
    let fixing =
        Event::FeaturesAdded { milestone: "M1".into(), features: vec![feature("fix-finding-1", &[])], by: None };
    check(
        with(awaiting_acceptance(), [fixing]),
        Command::FixFinding { finding: "finding-1".into() },
        "refused: finding-1 is already being fixed by feature fix-finding-1",
    );
    let accepted = Event::MilestoneAccepted { milestone: "M1".into() };
    check(
        with(awaiting_acceptance(), [accepted]),
        Command::FixFinding { finding: "finding-1".into() },
        "refused: milestone M1 is already accepted; its findings can only be dismissed",
    );
    check(
        awaiting_acceptance(),
        Command::DismissFinding { finding: "finding-2".into(), reason: None },
        "refused: no open finding finding-2",
    );
}

#[test]
fn a_rollback_needs_a_started_milestone() {
    check(awaiting_acceptance(), Command::Rollback { milestone: "M1".into() }, "roll back M1 to c0");
    check(
        awaiting_acceptance(),
        Command::Rollback { milestone: "M2".into() },
        "refused: milestone M2 has not started, so there is nothing to roll back",
    );
}

/// What `contract_intact` says of a log: `intact` or the reason.
fn check_contract(events: Vec<Event>, expected: &str) {
    let said = match contract_intact(&fold(events)) {
        Ok(()) => "intact".to_owned(),
        Err(why) => why,
    };
    assert!(said.starts_with(expected), "{said:?} does not start with {expected:?}");
}

#[test]
fn the_contract_may_grow_but_never_change_after_approval() {
    check_contract(planned(), "intact");
    check_contract(approved(), "intact");
    let added =
        Event::AssertionsAdded { assertions: vec![assertion("A3", "M1", "pytest -q tests/c")], by: Author::User };
    check_contract(with(approved(), [added]), "intact");
    let shadow = Event::AssertionsAdded { assertions: vec![assertion("A1", "M1", "true")], by: Author::Orchestrator };
    check_contract(with(approved(), [shadow]), "assertion A1 was added again after approval");
    // An approval whose digest is not the contract's (a log written by something else).
    let mut forged = planned();
    forged.push(Event::PlanApproved { contract_sha256: "0".repeat(64) });
    check_contract(forged, "the contract's approved assertions no longer match the digest");
}

#[test]
fn a_milestone_passes_only_when_every_assertion_holds() {
    let projection = fold(awaiting_acceptance());
    assert_eq!(unmet_assertions(&projection, "M1"), Vec::new());
    assert_eq!(unmet_assertions(&projection, "M2"), vec![("A2".to_owned(), AssertionStatus::Pending)]);
    let failing =
        Event::AssertionChecked { assertion: "A1".into(), status: AssertionStatus::Failing, evidence: "exit 1".into() };
    let projection = fold(with(awaiting_acceptance(), [failing]));
    assert_eq!(unmet_assertions(&projection, "M1"), vec![("A1".to_owned(), AssertionStatus::Failing)]);
    let waived = Event::AssertionWaived { assertion: "A1".into(), reason: "r".into() };
    assert!(unmet_assertions(&fold(with(awaiting_acceptance(), [waived])), "M1").is_empty());
}

#[test]
fn correction_rounds_are_bounded_and_a_rejection_allows_one_more() {
    let decided = || Event::DecisionRecorded {
        milestone: "M1".into(),
        decision: missions_core::store::BoundaryDecision::Correct,
        notes: String::new(),
        corrections: vec![feature("F1-fix", &["A1"])],
        new_assertions: Vec::new(),
    };
    let check_round = |events: Vec<Event>, used: u32, bound: u32, exhausted: bool| {
        let round = correction_round(&fold(events), "M1", 2);
        assert_eq!((round.used, round.bound, round.exhausted()), (used, bound, exhausted));
    };
    check_round(approved(), 0, 2, false);
    check_round(with(approved(), [decided()]), 1, 2, false);
    check_round(with(approved(), [decided(), decided()]), 2, 2, true);
    let rejected =
        Event::MilestoneRejected { milestone: "M1".into(), feedback: "no".into(), correction: None, to_boundary: true };
    check_round(with(approved(), [decided(), decided(), rejected]), 3, 3, true);
}

fn ran(command: &str, exit_code: Option<i32>) -> ObservedCommand {
    ObservedCommand { command: command.into(), exit_code, duration_ms: 10 }
}

/// What `check_handoff` says of one claim: `matched`, or the finding as `validator severity: message`.
fn check_claim(claim: &str, exit_code: i32, observed: &[ObservedCommand], expected: &str) {
    let claimed = [ClaimedCommand { command: claim.into(), exit_code }];
    let said = match check_handoff("F1", &claimed, observed).as_slice() {
        [] => "matched".to_owned(),
        [found] => format!("{} {}: {}", found.validator, found.severity, found.message),
        more => format!("{} findings", more.len()),
    };
    assert_eq!(said, expected);
}

#[test]
fn a_handoff_is_checked_against_the_commands_that_ran() {
    let observed = [ran("pytest -q tests/test_slug.py", Some(0)), ran("ruff check .", Some(1))];
    check_claim("pytest -q tests/test_slug.py", 0, &observed, "matched");
    check_claim(
        "cargo test",
        0,
        &observed,
        "handoff-mismatch error: F1's handoff claims `cargo test` (exit 0), which the worker never ran",
    );
    check_claim(
        "ruff check .",
        0,
        &observed,
        "handoff-mismatch error: F1's handoff claims `ruff check .` exited 0, but it exited 1",
    );
    check_claim(
        "pytest -q ...",
        0,
        &observed,
        "engine info: F1's handoff abbreviates a command it ran: `pytest -q ...` stands for `pytest -q tests/test_slug.py` (exit 0)",
    );
    check_claim(
        "pytest -q tests/test_slug.py",
        0,
        &[ran("pytest -q tests/test_slug.py", None)],
        "handoff-mismatch error: F1's handoff claims `pytest -q tests/test_slug.py` exited 0, but it exited by a signal",
    );
}

fn ask() -> BudgetAsk {
    BudgetAsk {
        max_tokens: None,
        used_tokens: 0,
        max_usd: None,
        used_usd: 0.0,
        reserved_tokens: 0,
        reserved_usd: 0.0,
        input_tokens: 1_000,
        max_output_tokens: 8_000,
        min_output_tokens: 1_024,
        input_usd: None,
        usd_per_million_output: None,
    }
}

/// What `grant_output` says: the tokens granted, or `pause: <why>`.
fn check_grant(ask: BudgetAsk, expected: &str) {
    let said = match grant_output(&ask) {
        Ok(granted) => granted.to_string(),
        Err(why) => format!("pause: {why}"),
    };
    assert_eq!(said, expected);
}

#[test]
fn a_call_is_granted_what_the_caps_leave_and_pauses_when_too_little_is_left() {
    check_grant(ask(), "8000");
    check_grant(BudgetAsk { max_tokens: Some(100_000), used_tokens: 50_000, ..ask() }, "8000");
    check_grant(BudgetAsk { max_tokens: Some(10_000), used_tokens: 5_000, ..ask() }, "4000");
    // Calls in flight hold their reservation.
    check_grant(BudgetAsk { max_tokens: Some(10_000), used_tokens: 5_000, reserved_tokens: 2_000, ..ask() }, "2000");
    check_grant(
        BudgetAsk { max_tokens: Some(10_000), used_tokens: 8_500, ..ask() },
        "pause: needs room for at least 1024 output tokens, but the cap of 10000 tokens leaves 500 for its output (8500 used, about 1000 of input)",
    );
    // Dollars: $0.50 left after input at $15 per million output tokens buys 33,333 tokens.
    let priced = BudgetAsk {
        max_usd: Some(1.0),
        used_usd: 0.49,
        input_usd: Some(0.01),
        usd_per_million_output: Some(15.0),
        ..ask()
    };
    check_grant(BudgetAsk { max_output_tokens: 64_000, ..priced }, "33333");
    check_grant(
        BudgetAsk { used_usd: 0.99, ..priced },
        "pause: needs room for at least 1024 output tokens, but the cap of $1.00 leaves room for 0 output tokens ($0.99 used, about $0.0100 of input)",
    );
    // An unknown price leaves only the token cap.
    check_grant(BudgetAsk { used_usd: 5.0, usd_per_million_output: None, ..priced }, "8000");
}
