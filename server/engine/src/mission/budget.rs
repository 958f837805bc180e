//! One run's hooks into the mission: the budget reservation before each model call (SPEC §2
//! rule 7, through [`rules::grant_output`]), usage recorded after it, progress for each tool
//! call, and the control commands that can stop it.

use missions_core::model::Usage;
use serde_json::Value;

use super::*;
use crate::agent::RunHooks;

/// One run's view of the shared state, implementing the agent loop's hooks.
pub(super) struct RunScope<'a> {
    pub(super) shared: &'a Shared,
    pub(super) milestone: Option<String>,
    pub(super) feature: Option<String>,
    pub(super) run_id: String,
    /// What this run's call in flight reserved against the caps.
    pub(super) reservation: Mutex<(u64, f64)>,
}

impl RunHooks for RunScope<'_> {
    fn before_call(&self, role: Role, model: &str, input_tokens: u64, max_output_tokens: u32) -> Result<u32, Stop> {
        let budget = match &lock(&self.shared.store).projection().mission {
            Some(mission) => mission.budget.clone(),
            None => return Ok(max_output_tokens),
        };
        let mut reserved = lock(&self.shared.reserved);
        // A model without a known price cannot be estimated in dollars; the token cap still
        // holds for it.
        let cost = |input: u64, output: u64| {
            self.shared.prices.cost(model, model, &Usage { input, output, ..Usage::default() })
        };
        // SPEC §2 rule 7.
        let ask = rules::BudgetAsk {
            max_tokens: budget.max_tokens,
            used_tokens: budget.used_tokens,
            max_usd: budget.max_usd,
            used_usd: budget.used_usd,
            reserved_tokens: reserved.0,
            reserved_usd: reserved.1,
            input_tokens,
            max_output_tokens,
            min_output_tokens: self.shared.min_output_tokens,
            input_usd: cost(input_tokens, 0),
            usd_per_million_output: cost(0, 1_000_000),
        };
        let granted = rules::grant_output(&ask).map_err(|why| Stop::Budget(format!("the next {role} call {why}")))?;
        let granted = u64::from(granted);
        let estimate = input_tokens + granted;
        let estimate_usd = cost(input_tokens, granted).unwrap_or(0.0);
        reserved.0 += estimate;
        reserved.1 += estimate_usd;
        *lock(&self.reservation) = (estimate, estimate_usd);
        Ok(u32::try_from(granted).unwrap_or(max_output_tokens))
    }

    fn after_call(&self, role: Role, run_id: &str, model: &str, usage: &Usage, cost_usd: Option<f64>) {
        let (tokens, usd) = std::mem::take(&mut *lock(&self.reservation));
        {
            let mut reserved = lock(&self.shared.reserved);
            reserved.0 = reserved.0.saturating_sub(tokens);
            reserved.1 = (reserved.1 - usd).max(0.0);
        }
        if usage.total() == 0 && cost_usd.is_none() {
            return;
        }
        let event = Event::UsageRecorded {
            role,
            run_id: run_id.to_owned(),
            provider: self.shared.provider_names.get(&role).cloned().unwrap_or_default(),
            model: model.to_owned(),
            usage: *usage,
            cost_usd,
        };
        if let Err(error) = self.shared.append(event) {
            tracing::error!("cannot record usage: {error}");
        }
    }

    fn on_tool(&self, role: Role, name: &str, input: &Value) {
        let detail = ["command", "path", "pattern", "url", "name"]
            .iter()
            .find_map(|key| input.get(*key).and_then(Value::as_str))
            .unwrap_or_default();
        (self.shared.progress)(&Progress {
            mission: self.shared.mission_id.clone(),
            milestone: self.milestone.clone(),
            feature: self.feature.clone(),
            role: Some(role),
            run: Some(self.run_id.clone()),
            step: Step::ToolCalled { tool: name.to_owned(), detail: detail.chars().take(80).collect() },
        });
    }

    fn interrupted(&self) -> Option<Stop> {
        self.shared.poll_control()
    }
}
