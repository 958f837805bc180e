//! Shared set-up for the provider tests: a provider pointed at a loopback server.
#![allow(dead_code)]

pub mod editor;
pub mod project;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use missions_core::config::{ProviderConfig, ProviderKind};
use missions_core::model::{ContentBlock, Message, ModelProvider, ModelRequest, ToolSpec};
use missions_core::secrets::Redactor;
use missions_providers::{PriceTable, build_provider};
use serde_json::json;

pub const KEY: &str = "sk-test-key-0123456789abcdef";

pub fn config(kind: ProviderKind, base_url: String) -> ProviderConfig {
    ProviderConfig {
        kind: Some(kind),
        base_url: Some(base_url),
        api_key_env: Some("TEST_PROVIDER_KEY".into()),
        max_retries: 2,
        initial_backoff_ms: 1,
        max_backoff_ms: 4,
        connect_timeout_s: 2.0,
        first_byte_timeout_s: 5.0,
        idle_timeout_s: 5.0,
        max_output_tokens: 1024,
        ..ProviderConfig::default()
    }
}

pub fn env() -> BTreeMap<String, String> {
    BTreeMap::from([("TEST_PROVIDER_KEY".to_owned(), KEY.to_owned())])
}

pub fn provider(config: &ProviderConfig) -> Arc<dyn ModelProvider> {
    build_provider(
        "test",
        config,
        Arc::new(PriceTable::with_overrides(&BTreeMap::new())),
        Path::new("/nonexistent-workspace"),
        &env(),
        &Redactor::new([("TEST_PROVIDER_KEY", KEY)]),
    )
    .expect("provider builds")
}

/// A request with a system prompt, one tool, and a finished tool round trip, so request
/// bodies exercise every block type.
pub fn request(model: &str) -> ModelRequest {
    ModelRequest {
        model: model.into(),
        system: "You are a worker.".into(),
        messages: vec![
            Message::user_text("Implement F1."),
            Message {
                role: missions_core::model::ChatRole::Assistant,
                content: vec![
                    ContentBlock::Text { text: "Reading.".into() },
                    ContentBlock::ToolUse {
                        id: "call_1".into(),
                        name: "read_file".into(),
                        input: json!({"path": "a.py"}),
                    },
                ],
            },
            Message {
                role: missions_core::model::ChatRole::User,
                content: vec![ContentBlock::ToolResult {
                    tool_use_id: "call_1".into(),
                    content: "x = 1".into(),
                    is_error: false,
                }],
            },
        ],
        tools: vec![ToolSpec {
            name: "read_file".into(),
            description: "Read a file.".into(),
            input_schema: json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
        }],
        max_tokens: None,
    }
}
