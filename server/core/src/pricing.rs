//! What a call cost: normalised usage times a price per million tokens.
//!
//! Prices come from the shipped, dated table (`prices.toml` at the crate root) with the
//! config's `[prices."<model>"]` on top. A model is looked up by its exact name, then with a
//! trailing date or `latest` tag removed (`claude-sonnet-4-5-20250929` is priced as
//! `claude-sonnet-4-5`). An unknown model has an unknown cost (`None`), never zero.

use std::collections::BTreeMap;

use crate::config::PriceOverride;
use crate::model::Usage;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Missing rates are charged at the input rate: an over-estimate rather than a free lunch.
    #[serde(default)]
    pub cache_read: Option<f64>,
    #[serde(default)]
    pub cache_write: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    pub as_of: String,
    models: BTreeMap<String, Price>,
}

#[derive(Deserialize)]
struct ShippedTable {
    as_of: String,
    models: BTreeMap<String, Price>,
}

const SHIPPED: &str = include_str!("../prices.toml");

impl PriceTable {
    /// The shipped table with `overrides` applied.
    pub fn with_overrides(overrides: &BTreeMap<String, PriceOverride>) -> PriceTable {
        // The shipped file is checked by a test; an unreadable one would give an empty table
        // (every cost unknown), which is safe.
        let shipped: ShippedTable =
            toml::from_str(SHIPPED).unwrap_or(ShippedTable { as_of: "unknown".into(), models: BTreeMap::new() });
        let mut models = shipped.models;
        for (model, price) in overrides {
            // Configuration validation insists on both rates; a half-set override would be
            // refused before it got here, and is skipped rather than priced at zero.
            let (Some(input), Some(output)) = (price.input, price.output) else {
                continue;
            };
            models.insert(
                model.clone(),
                Price { input, output, cache_read: price.cache_read, cache_write: price.cache_write },
            );
        }
        PriceTable { as_of: shipped.as_of, models }
    }

    pub fn price(&self, model: &str) -> Option<Price> {
        let mut name = model;
        loop {
            if let Some(price) = self.models.get(name) {
                return Some(*price);
            }
            let (head, tail) = name.rsplit_once('-')?;
            if !(tail == "latest" || (tail.len() >= 6 && tail.chars().all(|c| c.is_ascii_digit()))) {
                return None;
            }
            name = head;
        }
    }

    /// Dollars for `usage`, priced by the model asked for, else the model that answered.
    pub fn cost(&self, requested_model: &str, served_model: &str, usage: &Usage) -> Option<f64> {
        let price = self.price(requested_model).or_else(|| self.price(served_model))?;
        let per_token = |rate: f64, tokens: u64| rate * tokens as f64 / 1_000_000.0;
        Some(
            per_token(price.input, usage.input)
                + per_token(price.output, usage.output)
                + per_token(price.cache_read.unwrap_or(price.input), usage.cache_read)
                + per_token(price.cache_write.unwrap_or(price.input), usage.cache_write),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_table_parses_and_is_dated() {
        let shipped: ShippedTable = toml::from_str(SHIPPED).unwrap();
        assert!(shipped.models.len() >= 5);
        assert_eq!(shipped.as_of.len(), "2026-11-21".len());
    }

    #[test]
    fn cache_tokens_are_priced_at_their_own_rates() {
        let table = PriceTable::with_overrides(&BTreeMap::new());
        let usage =
            Usage { input: 1_000_000, output: 1_000_000, cache_read: 1_000_000, cache_write: 1_000_000, reasoning: 0 };
        let cost = table.cost("claude-sonnet-4-5", "", &usage).unwrap();
        assert!((cost - (3.0 + 15.0 + 0.3 + 3.75)).abs() < 1e-9, "{cost}");
    }

    #[test]
    fn dated_names_fall_back_and_unknown_models_have_no_price() {
        let table = PriceTable::with_overrides(&BTreeMap::new());
        assert!(table.price("claude-sonnet-4-5-20250929").is_some());
        assert!(table.price("claude-haiku-4-5-latest").is_some());
        assert!(table.price("qwen3-coder").is_none());
        assert!(table.price("claude-sonnet-4-5-beta").is_none());
        assert_eq!(table.cost("qwen3-coder", "qwen3-coder:30b", &Usage { input: 10, ..Usage::default() }), None);
        // The served name is tried when the requested one is an alias.
        assert!(table.cost("my-alias", "gpt-4o-mini", &Usage::default()).is_some());
    }

    #[test]
    fn config_overrides_win_and_can_price_local_models_at_zero() {
        let mut overrides = BTreeMap::new();
        overrides.insert(
            "qwen3-coder".to_owned(),
            PriceOverride { input: Some(0.0), output: Some(0.0), cache_read: None, cache_write: None },
        );
        overrides.insert(
            "gpt-4o".to_owned(),
            PriceOverride { input: Some(1.0), output: Some(1.0), cache_read: None, cache_write: None },
        );
        let table = PriceTable::with_overrides(&overrides);
        assert_eq!(table.cost("qwen3-coder", "", &Usage { input: 500, output: 500, ..Usage::default() }), Some(0.0));
        let cost =
            table.cost("gpt-4o", "", &Usage { input: 1_000_000, cache_read: 1_000_000, ..Usage::default() }).unwrap();
        assert!((cost - 2.0).abs() < 1e-9, "missing cache rates fall back to the input rate: {cost}");
    }
}
