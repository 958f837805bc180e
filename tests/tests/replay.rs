//! Recording a real exchange with the `record` switch, playing it back with the `replay`
//! provider, and routing each role to its own provider from `[roles]`.

mod common;

use std::collections::BTreeMap;

use common::{config, request};
use missions_core::config::{Layer, LayerSource, LoadedConfig, ProviderKind};
use missions_core::mission::Role;
use missions_core::model::{CallContext, ContentBlock, ModelError, ModelResponse, ProbeStatus, StopReason, Usage};
use missions_core::secrets::Redactor;
use missions_core::transcript::{TranscriptEntry, TranscriptWriter};
use missions_providers::{PriceTable, ProviderRegistry, build_provider};
use missions_tests::{MockServer, Reply, openai_sse};
use serde_json::json;
use std::sync::Arc;

fn text_response(text: &str) -> ModelResponse {
    ModelResponse {
        content: vec![ContentBlock::Text { text: text.into() }],
        stop_reason: StopReason::EndTurn,
        usage: Usage { input: 1, output: 1, ..Usage::default() },
        cost_usd: None,
        model: "tape".into(),
        request_id: None,
        attempts: 1,
    }
}

fn write_tape(path: &std::path::Path, texts: &[&str]) {
    let writer = TranscriptWriter::create(path, Redactor::default()).unwrap();
    for text in texts {
        writer
            .append(&TranscriptEntry::Response {
                key: None,
                ts: "t".into(),
                provider: "p".into(),
                response: text_response(text),
            })
            .unwrap();
    }
}

#[tokio::test]
async fn a_recorded_exchange_replays_identically() {
    let stream = openai_sse(&[
        json!({"model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {"content": "recorded ✓"}, "finish_reason": null}]}),
        json!({"model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "list_files", "arguments": "{}"}}]}, "finish_reason": "tool_calls"}]}),
    ]);
    let server = MockServer::start(vec![Reply::sse(stream)]).await;
    let workspace = tempfile::tempdir().unwrap();
    let mut recording = config(ProviderKind::Openai, format!("{}/v1", server.url()));
    recording.record = Some("tapes/session.jsonl".into());
    let prices = Arc::new(PriceTable::with_overrides(&BTreeMap::new()));
    let redactor = Redactor::new([("TEST_PROVIDER_KEY", common::KEY)]);
    let live = build_provider("live", &recording, prices.clone(), workspace.path(), &common::env(), &redactor).unwrap();
    let original = live.complete(&request("gpt-4o-mini"), CallContext::default()).await.unwrap();

    let tape = workspace.path().join("tapes/session.jsonl");
    assert!(!std::fs::read_to_string(&tape).unwrap().contains(common::KEY));
    let mut replay_config =
        missions_core::config::ProviderConfig { kind: Some(ProviderKind::Replay), ..Default::default() };
    replay_config.transcript = Some("tapes/session.jsonl".into());
    let replay = build_provider("tape", &replay_config, prices, workspace.path(), &common::env(), &redactor).unwrap();
    let probe = replay.probe().await;
    assert_eq!(probe.status, ProbeStatus::Ok, "{}", probe.detail);
    assert!(probe.detail.contains("1 recorded responses"), "{}", probe.detail);
    let replayed = replay.complete(&request("gpt-4o-mini"), CallContext::default()).await.unwrap();
    assert_eq!(replayed, original);

    let error = replay.complete(&request("gpt-4o-mini"), CallContext::default()).await.unwrap_err().error;
    assert!(
        matches!(&error, ModelError::Replay { message } if message.contains("no recorded response") && message.contains("0 of 1 unplayed")),
        "{error}"
    );
}

#[tokio::test]
async fn a_missing_tape_is_reported_not_panicked() {
    let workspace = tempfile::tempdir().unwrap();
    let replay_config = missions_core::config::ProviderConfig {
        kind: Some(ProviderKind::Replay),
        transcript: Some("nope.jsonl".into()),
        ..Default::default()
    };
    let prices = Arc::new(PriceTable::with_overrides(&BTreeMap::new()));
    let replay =
        build_provider("tape", &replay_config, prices, workspace.path(), &common::env(), &Redactor::default()).unwrap();
    assert_eq!(replay.probe().await.status, ProbeStatus::Unreachable);
    let error = replay.complete(&request("m"), CallContext::default()).await.unwrap_err().error;
    assert!(error.to_string().contains("nope.jsonl"), "{error}");
    assert!(error.to_string().contains("cannot read transcript"), "a missing tape is not a write error: {error}");
}

#[tokio::test]
async fn each_role_is_routed_to_its_own_provider_and_model() {
    let workspace = tempfile::tempdir().unwrap();
    write_tape(&workspace.path().join("planner.jsonl"), &["plan"]);
    write_tape(&workspace.path().join("builder.jsonl"), &["build 1", "build 2"]);
    let (layer, warnings) = Layer::from_toml(
        "test",
        r#"
[providers.planner]
kind = "replay"
transcript = "planner.jsonl"
[providers.builder]
kind = "replay"
transcript = "builder.jsonl"
[roles]
orchestrator = "planner/big-model"
worker = "builder/small-model"
reviewer = "builder/small-model"
user_tester = "builder/other-model"
"#,
    )
    .unwrap();
    assert!(warnings.is_empty());
    let loaded = LoadedConfig::from_layers(
        vec![Layer::defaults().unwrap(), layer],
        vec![LayerSource { origin: "test".into(), loaded: true }],
        Vec::new(),
    )
    .unwrap();
    let registry = ProviderRegistry::from_config(&loaded, workspace.path(), &BTreeMap::new()).unwrap();
    let (orchestrator, model) = registry.for_role(Role::Orchestrator).unwrap();
    assert_eq!((orchestrator.name(), model), ("planner", "big-model"));
    let (worker, model) = registry.for_role(Role::Worker).unwrap();
    assert_eq!((worker.name(), model), ("builder", "small-model"));
    assert_eq!(registry.for_role(Role::UserTester).unwrap().1, "other-model");

    let call = |provider: &Arc<dyn missions_core::model::ModelProvider>| {
        let provider = provider.clone();
        async move { provider.complete(&request("m"), CallContext::default()).await.unwrap().text() }
    };
    assert_eq!(call(orchestrator).await, "plan");
    assert_eq!(call(worker).await, "build 1");
    // The reviewer shares the worker's provider instance, and so its tape.
    assert_eq!(call(registry.for_role(Role::Reviewer).unwrap().0).await, "build 2");
}

#[tokio::test]
async fn parallel_runs_get_their_own_recorded_answers_in_any_order() {
    let workspace = tempfile::tempdir().unwrap();
    let tape = workspace.path().join("tape.jsonl");
    let mut for_a = request("m");
    for_a.messages.truncate(1);
    for_a.messages[0] = missions_core::model::Message::user_text("Review feature F1");
    let mut for_b = for_a.clone();
    for_b.messages[0] = missions_core::model::Message::user_text("Review feature F2");
    let writer = TranscriptWriter::create(&tape, Redactor::default()).unwrap();
    for (req, text) in [(&for_a, "verdict for F1"), (&for_b, "verdict for F2")] {
        writer
            .append(&TranscriptEntry::Response {
                ts: "t".into(),
                provider: "p".into(),
                key: Some(req.replay_key()),
                response: text_response(text),
            })
            .unwrap();
    }
    // The tape is whole once its writer is done with it.
    drop(writer);
    let config = missions_core::config::ProviderConfig {
        kind: Some(ProviderKind::Replay),
        transcript: Some("tape.jsonl".into()),
        ..Default::default()
    };
    let prices = Arc::new(PriceTable::with_overrides(&BTreeMap::new()));
    let replay =
        build_provider("tape", &config, prices, workspace.path(), &common::env(), &Redactor::default()).unwrap();
    // F2's reviewer calls first.
    assert_eq!(replay.complete(&for_b, CallContext::default()).await.unwrap().text(), "verdict for F2");
    assert_eq!(replay.complete(&for_a, CallContext::default()).await.unwrap().text(), "verdict for F1");
}
