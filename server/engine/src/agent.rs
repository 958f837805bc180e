//! The agent loop, the same for every role: model turn → tool calls → tool results → … until
//! the run's terminal tool is accepted, with a turn limit, a context budget, budget checks
//! before every call, control checks between steps, and a transcript of every exchange.
//!
//! A run ends in a [`RunEnd`]: finished (the terminal tool's checked output), gave up (the
//! model would not finish), or stopped (budget, pause, cancel, an editor conflict, or a
//! provider that kept failing). What a role's run *means* is not known here: the terminal
//! tool ([`Terminal`]) checks its own input, and the engine's [`RunHooks`] account usage and
//! relay control.

use std::sync::Arc;

use missions_core::mission::Role;
use missions_core::model::ExchangeRecorder;
use missions_core::model::{
    CallContext, ChatRole, ContentBlock, Message, ModelError, ModelProvider, ModelRequest, StopReason, ToolSpec, Usage,
};
use missions_core::transcript::TranscriptWriter;
use missions_tools::ToolBox;
use serde_json::Value;

/// The tool that ends a run, with the check of its input.
pub trait Terminal: Send {
    type Output: Send;
    fn spec(&self) -> ToolSpec;
    /// `Ok` ends the run with the output; `Err` is returned to the model as the tool result,
    /// so it can fix what the message says and call again. Asynchronous because a check may
    /// run commands (the plan's dry run).
    fn accept(&mut self, input: &Value) -> impl std::future::Future<Output = Result<Self::Output, String>> + Send;
    /// Tools that feed the terminal call and belong to it, offered beside the run's other
    /// tools (the test author's `write_acceptance_test`).
    fn side_specs(&self) -> Vec<ToolSpec> {
        Vec::new()
    }
    /// Answers a call of one of [`Terminal::side_specs`]: `None` when `name` is not one of
    /// them; `Err` is returned to the model as a failed tool call.
    fn side_call(&mut self, _name: &str, _input: &Value) -> Option<Result<String, String>> {
        None
    }
}

/// Why a run was stopped from outside the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The next call would pass a budget cap.
    Budget(String),
    Paused,
    Cancelled,
    /// A write was refused because the editor holds unsaved changes to this file.
    Conflict(String),
    /// The provider failed in a way retries did not fix.
    Provider(String),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Budget(detail) => write!(f, "budget: {detail}"),
            Stop::Paused => f.write_str("paused"),
            Stop::Cancelled => f.write_str("cancelled"),
            Stop::Conflict(path) => write!(f, "{path} has unsaved changes in an editor"),
            Stop::Provider(detail) => write!(f, "provider: {detail}"),
        }
    }
}

/// How a run ended.
#[derive(Debug)]
pub enum RunEnd<T> {
    Finished(T),
    /// The model did not finish (turn limit, or it kept stopping without the terminal tool).
    GaveUp(String),
    Stopped(Stop),
}

/// What the engine provides to every run.
pub trait RunHooks: Send + Sync {
    /// Before a model call, with an estimate of its input tokens and the most output the role
    /// may produce. Returns the output the call is granted (at most `max_output_tokens`, less
    /// when a budget cap is near); `Err` stops the run before anything is sent.
    fn before_call(&self, role: Role, model: &str, input_tokens: u64, max_output_tokens: u32) -> Result<u32, Stop>;
    /// After a call, with what the provider reported, success or not.
    fn after_call(&self, role: Role, run_id: &str, model: &str, usage: &Usage, cost_usd: Option<f64>);
    /// A tool is about to run (for progress).
    fn on_tool(&self, role: Role, name: &str, input: &Value);
    /// A pause or cancel that arrived while the run was going on.
    fn interrupted(&self) -> Option<Stop>;
}

/// One run's fixed settings.
pub struct AgentConfig {
    pub role: Role,
    pub run_id: String,
    pub provider: Arc<dyn ModelProvider>,
    pub model: String,
    pub system: String,
    pub first_message: String,
    pub max_turns: u32,
    /// When the conversation grows past this many (estimated) tokens, old tool output is
    /// elided to make room.
    pub context_tokens: usize,
    /// The most output one call may produce (for the budget estimate).
    pub max_output_tokens: u32,
    /// The loop guard of SPEC §2 rule 10: identical failing calls tolerated in a row.
    pub max_repeated_failures: u32,
    /// The same for identical refused terminal calls.
    pub max_repeated_refusals: u32,
}

/// The loop guard (SPEC §2 rule 10): counts the same call failing the same way in a row. At the
/// limit the model gets one pointed reply; one more and the run ends as given up. A terminal
/// call refused with the same arguments has a limit of two.
#[derive(Debug, Default)]
pub struct LoopGuard {
    last: Option<(String, String, String)>,
    repeats: u32,
}

/// What the loop guard says about one failed call.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to say.
    Fine,
    /// The limit is reached: add this to the tool result.
    Warn(String),
    /// Past the limit: end the run with this reason.
    GiveUp(String),
}

impl LoopGuard {
    /// Notes a call that succeeded: the run is not repeating itself.
    pub fn succeeded(&mut self) {
        self.last = None;
        self.repeats = 0;
    }

    /// Notes a call that failed with `error`; `limit` is how many identical failures in a row
    /// are tolerated before the pointed reply.
    pub fn failed(&mut self, name: &str, input: &Value, error: &str, limit: u32) -> Verdict {
        let key = (name.to_owned(), input.to_string(), error.to_owned());
        if self.last.as_ref() == Some(&key) {
            self.repeats += 1;
        } else {
            self.last = Some(key);
            self.repeats = 1;
        }
        let limit = limit.max(1);
        if self.repeats > limit {
            Verdict::GiveUp(format!(
                "the model made the same `{name}` call {} times in a row and it failed the same way each time: {}",
                self.repeats,
                first_line(error)
            ))
        } else if self.repeats == limit {
            Verdict::Warn(format!(
                "\n\nThis exact `{name}` call has now failed the same way {limit} times in a row. Repeating it will not \
                 change the result: read the message above and do something different. The same call again ends this \
                 run."
            ))
        } else {
            Verdict::Fine
        }
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or_default().trim();
    line.chars().take(200).collect()
}

/// How many turns in a row a model may end without any tool call before the run gives up.
const MAX_IDLE_TURNS: u32 = 3;
const ELIDED: &str =
    "[output elided to keep the conversation within its context budget; run the tool again if you need it]";

/// The bytes `value` takes as JSON: the measure of size the context budget is kept in.
fn json_len(value: &impl serde::Serialize) -> usize {
    serde_json::to_string(value).map_or(0, |s| s.len())
}

/// A run's request to the model, kept from turn to turn: the conversation grows in place, and
/// the size of each message is measured once, when it is added, so that neither the context
/// budget nor the estimate before each call serializes the whole conversation again.
struct Conversation {
    request: ModelRequest,
    /// The JSON size of each message of `request.messages`.
    sizes: Vec<usize>,
    /// The size of the system prompt and the tools' schemas.
    fixed: usize,
}

impl Conversation {
    fn new(request: ModelRequest) -> Conversation {
        let fixed = request.system.len() + json_len(&request.tools);
        let sizes = request.messages.iter().map(json_len).collect();
        Conversation { request, sizes, fixed }
    }

    fn push(&mut self, message: Message) {
        self.sizes.push(json_len(&message));
        self.request.messages.push(message);
    }

    /// A rough token count of the whole request: about four bytes a token for code and
    /// English.
    fn tokens(&self) -> usize {
        // The messages as a JSON array: their sizes, a comma between two, and the brackets.
        let messages = self.sizes.iter().sum::<usize>() + self.sizes.len().saturating_sub(1) + 2;
        (self.fixed + messages) / 4
    }

    /// Elides the oldest tool results until the request fits `budget` tokens; the last two
    /// messages are never touched, so the model always sees what it just did.
    fn compact(&mut self, budget: usize) {
        let keep_from = self.request.messages.len().saturating_sub(2);
        for index in 0..keep_from {
            if self.tokens() <= budget {
                return;
            }
            let message = &mut self.request.messages[index];
            let mut elided = false;
            for block in message.content.iter_mut() {
                if let ContentBlock::ToolResult { content, .. } = block
                    && content.len() > ELIDED.len()
                {
                    *content = ELIDED.to_owned();
                    elided = true;
                }
            }
            if elided {
                self.sizes[index] = json_len(message);
            }
        }
    }
}

/// Runs one agent to its end.
pub async fn run_agent<T: Terminal>(
    config: &AgentConfig,
    tools: &ToolBox,
    terminal: &mut T,
    hooks: &dyn RunHooks,
    transcript: Option<&TranscriptWriter>,
) -> RunEnd<T::Output> {
    let mut specs = tools.specs();
    let terminal_spec = terminal.spec();
    let terminal_name = terminal_spec.name.clone();
    specs.push(terminal_spec);
    specs.extend(terminal.side_specs());
    let mut conversation = Conversation::new(ModelRequest {
        model: config.model.clone(),
        system: config.system.clone(),
        messages: vec![Message::user_text(config.first_message.clone())],
        tools: specs,
        max_tokens: Some(config.max_output_tokens),
    });
    let mut idle_turns = 0u32;
    let mut guard = LoopGuard::default();
    let mut refusals = LoopGuard::default();
    for _turn in 0..config.max_turns {
        if let Some(stop) = hooks.interrupted() {
            return RunEnd::Stopped(stop);
        }
        conversation.compact(config.context_tokens);
        let input_tokens = conversation.tokens() as u64;
        match hooks.before_call(config.role, &config.model, input_tokens, config.max_output_tokens) {
            Ok(granted) => conversation.request.max_tokens = Some(granted),
            Err(stop) => return RunEnd::Stopped(stop),
        }
        let request = &conversation.request;
        let context = CallContext { transcript: transcript.map(|t| t as &dyn ExchangeRecorder), observer: None };
        let response = match config.provider.complete(request, context).await {
            Ok(response) => {
                hooks.after_call(config.role, &config.run_id, &config.model, &response.usage, response.cost_usd);
                response
            }
            Err(failure) => {
                // Tokens billed for a failed call count all the same; their price is taken
                // from the partial response when there is one.
                let cost = match &failure.error {
                    ModelError::IncompleteToolCall { partial, .. } | ModelError::StreamInterrupted { partial, .. } => {
                        partial.cost_usd
                    }
                    _ => None,
                };
                hooks.after_call(config.role, &config.run_id, &config.model, &failure.usage, cost);
                match failure.error {
                    ModelError::IncompleteToolCall { tool, reason, partial } => {
                        let text = partial.text();
                        conversation.push(Message {
                            role: ChatRole::Assistant,
                            content: vec![ContentBlock::Text {
                                text: if text.is_empty() { "(cut off)".into() } else { text },
                            }],
                        });
                        conversation.push(Message::user_text(format!(
                            "Your call to `{tool}` was cut off ({reason}) and was not executed. Call it again. If its input \
                             is large (a whole file), write the file in parts: write_file with the first part, then edit_file \
                             to append the rest."
                        )));
                        continue;
                    }
                    error => return RunEnd::Stopped(Stop::Provider(error.to_string())),
                }
            }
        };
        let calls: Vec<(String, String, Value)> =
            response.tool_uses().map(|(id, name, input)| (id.to_owned(), name.to_owned(), input.clone())).collect();
        let stop_reason = response.stop_reason;
        let content = if response.content.is_empty() {
            vec![ContentBlock::Text { text: "(no output)".into() }]
        } else {
            response.content
        };
        conversation.push(Message { role: ChatRole::Assistant, content });
        if calls.is_empty() {
            idle_turns += 1;
            if idle_turns >= MAX_IDLE_TURNS {
                return RunEnd::GaveUp(format!(
                    "the model stopped {MAX_IDLE_TURNS} times without calling `{terminal_name}`"
                ));
            }
            let nudge = if stop_reason == StopReason::MaxTokens {
                "Your answer was cut at the output limit. Continue, and use the tools to act.".to_owned()
            } else {
                format!(
                    "The run is not finished until you call `{terminal_name}`. Continue the work with the tools, or call `{terminal_name}` now."
                )
            };
            conversation.push(Message::user_text(nudge));
            continue;
        }
        idle_turns = 0;
        let mut results = Vec::new();
        for (id, name, input) in calls {
            hooks.on_tool(config.role, &name, &input);
            // The writes answered earlier take their place before anything looks at the tree.
            let settled = tools.settle();
            let (mut content, is_error, limit) = if let Err(failure) = settled {
                (failure, true, config.max_repeated_failures)
            } else if name == terminal_name {
                match terminal.accept(&input).await {
                    Ok(output) => return RunEnd::Finished(output),
                    Err(reasons) => (reasons, true, config.max_repeated_refusals),
                }
            } else if let Some(answer) = terminal.side_call(&name, &input) {
                match answer {
                    Ok(content) => (content, false, config.max_repeated_failures),
                    Err(content) => (content, true, config.max_repeated_failures),
                }
            } else {
                let output = tools.call(&name, &input).await;
                if let Some(path) = output.conflict {
                    return RunEnd::Stopped(Stop::Conflict(path));
                }
                (output.content, output.is_error, config.max_repeated_failures)
            };
            // Refusals of the terminal call are counted apart: a successful read in between
            // does not make the same refused decision new again.
            let terminal_call = name == terminal_name;
            let counter = if terminal_call { &mut refusals } else { &mut guard };
            if is_error {
                match counter.failed(&name, &input, &content, limit) {
                    Verdict::Fine => {}
                    Verdict::Warn(reply) => content.push_str(&reply),
                    Verdict::GiveUp(reason) => return RunEnd::GaveUp(reason),
                }
            } else {
                counter.succeeded();
            }
            results.push(ContentBlock::ToolResult { tool_use_id: id, content, is_error });
            if let Some(stop) = hooks.interrupted() {
                return RunEnd::Stopped(stop);
            }
        }
        conversation.push(Message { role: ChatRole::User, content: results });
    }
    RunEnd::GaveUp(format!("the run reached its limit of {} turns without calling `{terminal_name}`", config.max_turns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_elides_old_tool_output_first_and_keeps_the_last_turns() {
        let big = "x".repeat(4_000);
        let result = |id: &str| Message {
            role: ChatRole::User,
            content: vec![ContentBlock::ToolResult { tool_use_id: id.into(), content: big.clone(), is_error: false }],
        };
        let assistant = Message { role: ChatRole::Assistant, content: vec![ContentBlock::Text { text: "ok".into() }] };
        let mut conversation = Conversation::new(ModelRequest {
            model: "m".into(),
            system: String::new(),
            messages: vec![Message::user_text("task")],
            tools: Vec::new(),
            max_tokens: None,
        });
        for message in [assistant.clone(), result("1"), assistant.clone(), result("2"), assistant, result("3")] {
            conversation.push(message);
        }
        let before = conversation.tokens();
        conversation.compact(1_500);
        assert!(conversation.tokens() <= 1_500 && conversation.tokens() < before);
        // The sizes kept as messages came and went are the sizes of the messages sent.
        assert_eq!(conversation.tokens(), json_len(&conversation.request.messages) / 4);
        let elided: Vec<bool> = conversation
            .request
            .messages
            .iter()
            .filter_map(|m| match &m.content[0] {
                ContentBlock::ToolResult { content, .. } => Some(content == ELIDED),
                _ => None,
            })
            .collect();
        assert_eq!(elided, vec![true, true, false]);
    }

    #[test]
    fn the_loop_guard_warns_once_at_the_limit_then_gives_up() {
        let mut guard = LoopGuard::default();
        let input = serde_json::json!({"path": "missing.py"});
        let fail = |guard: &mut LoopGuard| guard.failed("read_file", &input, "no such file", 3);
        assert_eq!(fail(&mut guard), Verdict::Fine);
        assert_eq!(fail(&mut guard), Verdict::Fine);
        assert!(matches!(fail(&mut guard), Verdict::Warn(_)));
        assert!(matches!(fail(&mut guard), Verdict::GiveUp(reason) if reason.contains("4 times")));
        // A different failure, or a success, starts the count again.
        let mut guard = LoopGuard::default();
        fail(&mut guard);
        fail(&mut guard);
        guard.failed("read_file", &serde_json::json!({"path": "other.py"}), "no such file", 3);
        assert_eq!(fail(&mut guard), Verdict::Fine);
        guard.succeeded();
        assert_eq!(fail(&mut guard), Verdict::Fine);
        // A refused terminal call: the second identical refusal is the limit.
        let mut guard = LoopGuard::default();
        let complete = serde_json::json!({"decision": "complete"});
        assert_eq!(guard.failed("decide_milestone", &complete, "A1 fails", 2), Verdict::Fine);
        assert!(matches!(guard.failed("decide_milestone", &complete, "A1 fails", 2), Verdict::Warn(_)));
        assert!(matches!(guard.failed("decide_milestone", &complete, "A1 fails", 2), Verdict::GiveUp(_)));
    }
}
