//! A scripted model behind a loopback server speaking the Anthropic Messages wire format.
//!
//! The script is a function of the real request, as a model would be: the role is told by the
//! terminal tool it is offered (`submit_plan`, `submit_handoff`, `decide_milestone`,
//! `report_findings` with or without `start_process`), the run by the first line of its first
//! message, the turn by how many answers it has given. So parallel review agents each get
//! their own answers, and the engine's real requests (tool results included) are what the
//! script sees and what tests assert on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{MockServer, RecordedRequest, Reply, anthropic_sse};

/// Which kind of run a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptRole {
    Planner,
    Boundary,
    Worker,
    Reviewer,
    UserTester,
    TestAuthor,
}

/// What the script sees of a request.
#[derive(Debug, Clone)]
pub struct Call {
    pub role: ScriptRole,
    /// The first line of the run's first user message, e.g. `Feature F1: slugify`.
    pub first_line: String,
    /// The whole first user message.
    pub first_message: String,
    /// How many answers the model has already given in this run.
    pub turn: usize,
    /// The tool results of the previous turn, in order: (content, is_error).
    pub results: Vec<(String, bool)>,
    pub system: String,
    /// The request's `max_tokens`.
    pub max_tokens: Option<u64>,
}

/// One answer: some text and tool calls.
#[derive(Debug, Clone, Default)]
pub struct Turn {
    pub text: String,
    pub calls: Vec<(String, Value)>,
    /// The answer hits the output limit in the middle of its last tool call's JSON.
    pub cut_off: bool,
}

impl Turn {
    pub fn call(name: &str, input: Value) -> Turn {
        Turn { text: String::new(), calls: vec![(name.to_owned(), input)], cut_off: false }
    }

    /// A call whose JSON input is cut off by the output limit.
    pub fn cut_off(name: &str, input: Value) -> Turn {
        Turn { cut_off: true, ..Turn::call(name, input) }
    }

    pub fn calls(calls: Vec<(&str, Value)>) -> Turn {
        Turn { text: String::new(), calls: calls.into_iter().map(|(n, v)| (n.to_owned(), v)).collect(), cut_off: false }
    }

    pub fn text(text: &str) -> Turn {
        Turn { text: text.to_owned(), calls: Vec::new(), cut_off: false }
    }
}

pub type Script = Arc<dyn Fn(&Call) -> Turn + Send + Sync>;

fn tool_names(body: &Value) -> Vec<String> {
    body["tools"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str().map(str::to_owned)).collect()
}

/// Reads an Anthropic request body into what the script sees.
pub fn parse_call(body: &Value) -> Call {
    let tools = tool_names(body);
    let has = |name: &str| tools.iter().any(|t| t == name);
    let role = if has("submit_plan") {
        ScriptRole::Planner
    } else if has("decide_milestone") {
        ScriptRole::Boundary
    } else if has("submit_handoff") {
        ScriptRole::Worker
    } else if has("submit_acceptance_tests") {
        ScriptRole::TestAuthor
    } else if has("start_process") {
        ScriptRole::UserTester
    } else {
        ScriptRole::Reviewer
    };
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let text_of = |message: &Value| -> String {
        match &message["content"] {
            Value::String(s) => s.clone(),
            Value::Array(blocks) => blocks.iter().filter_map(|b| b["text"].as_str()).collect::<Vec<_>>().join("\n"),
            _ => String::new(),
        }
    };
    let first_message = messages.first().map(text_of).unwrap_or_default();
    let turn = messages.iter().filter(|m| m["role"] == "assistant").count();
    let results = messages
        .last()
        .and_then(|m| m["content"].as_array())
        .map(|blocks| {
            blocks
                .iter()
                .filter(|b| b["type"] == "tool_result")
                .map(|b| {
                    (b["content"].as_str().unwrap_or_default().to_owned(), b["is_error"].as_bool().unwrap_or(false))
                })
                .collect()
        })
        .unwrap_or_default();
    let system = body["system"][0]["text"].as_str().unwrap_or_default().to_owned();
    Call {
        role,
        first_line: first_message.lines().next().unwrap_or_default().to_owned(),
        first_message,
        turn,
        results,
        system,
        max_tokens: body["max_tokens"].as_u64(),
    }
}

/// Encodes a turn as an Anthropic SSE stream.
pub fn encode(turn: &Turn, input_tokens: u64) -> String {
    let mut events = vec![json!({"type": "message_start", "message": {
        "id": "msg_script", "type": "message", "role": "assistant", "model": "scripted-model", "content": [],
        "usage": {"input_tokens": input_tokens, "output_tokens": 1}
    }})];
    let mut index = 0;
    if !turn.text.is_empty() || turn.calls.is_empty() {
        let text = if turn.text.is_empty() { "…" } else { turn.text.as_str() };
        events.push(
            json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
        );
        events.push(
            json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
        );
        events.push(json!({"type": "content_block_stop", "index": index}));
        index += 1;
    }
    for (name, input) in &turn.calls {
        events.push(json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": format!("toolu_{index}_{}", fastrand_id()), "name": name, "input": {}}}));
        let mut json_text = input.to_string();
        if turn.cut_off {
            json_text.truncate(json_text.len() / 2);
        }
        events.push(json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": json_text}}));
        if !turn.cut_off {
            events.push(json!({"type": "content_block_stop", "index": index}));
        }
        index += 1;
    }
    let stop = if turn.cut_off {
        "max_tokens"
    } else if turn.calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    events.push(json!({"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 50}}));
    events.push(json!({"type": "message_stop"}));
    anthropic_sse(&events)
}

fn fastrand_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed).to_string()
}

/// A loopback model server driven by a script, recording every request it answered.
pub struct ScriptedModel {
    pub server: MockServer,
    pub calls: Arc<Mutex<Vec<(Call, Turn)>>>,
}

impl ScriptedModel {
    /// Starts the server; every answer is delayed by `delay` (to let tests act mid-run).
    pub async fn start(script: Script, delay: Duration) -> ScriptedModel {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let log = calls.clone();
        let responder = Arc::new(move |request: &RecordedRequest| {
            let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
            if request.path != "/v1/messages" {
                return Reply::json(200, &json!({"data": [{"id": "scripted-model"}]}));
            }
            let call = parse_call(&body);
            let turn = script(&call);
            let input_tokens = (request.body.len() / 4) as u64;
            log.lock().unwrap().push((call, turn.clone()));
            Reply::sse(encode(&turn, input_tokens)).delayed(delay)
        });
        let server = MockServer::start_with(responder).await;
        ScriptedModel { server, calls }
    }

    /// The calls answered so far, in arrival order.
    pub fn calls(&self) -> Vec<(Call, Turn)> {
        self.calls.lock().unwrap().clone()
    }

    /// A workspace config that routes every role to this server.
    pub fn config_toml(&self, extra: &str) -> String {
        format!(
            "[providers.script]\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key_env = \"MISSIONS_TEST_KEY\"\nmax_retries = 0\n\n\
             [roles]\norchestrator = \"script/planner-model\"\nworker = \"script/worker-model\"\nreviewer = \"script/reviewer-model\"\nuser_tester = \"script/tester-model\"\n\n{extra}",
            self.server.url()
        )
    }
}
