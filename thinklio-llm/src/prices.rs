//! List prices of the providers this crate speaks to, for
//! [`RuntimeBuilder::prices`](thinklio_core::RuntimeBuilder::prices).
//!
//! Prices are per million tokens in US dollars, as the vendors published
//! them; they change, so check them against your provider's price list and
//! override any with [`PriceTable::with`]. Each entry names a model family:
//! the dated snapshots providers answer with (`gpt-4o-mini-2024-07-18`,
//! `claude-sonnet-4-5-20250929`) are priced by their family
//! ([`thinklio_core::usage::family`]).
//!
//! ```
//! use thinklio_core::TokenUsage;
//! let prices = thinklio_llm::prices::published();
//! let cost = prices.cost("gpt-4o-mini-2024-07-18", TokenUsage::new(1_000_000, 0));
//! assert_eq!(cost.map(|c| c.as_usd()), Some(0.15));
//! ```

use thinklio_core::{ModelPrice, PriceTable};

/// `(family, input, output)`: US dollars per million tokens.
const LIST_PRICES: &[(&str, f64, f64)] = &[
    // OpenAI
    ("gpt-5", 1.25, 10.00),
    ("gpt-5-mini", 0.25, 2.00),
    ("gpt-5-nano", 0.05, 0.40),
    ("gpt-4.1", 2.00, 8.00),
    ("gpt-4.1-mini", 0.40, 1.60),
    ("gpt-4.1-nano", 0.10, 0.40),
    ("gpt-4o", 2.50, 10.00),
    ("gpt-4o-mini", 0.15, 0.60),
    ("o3", 2.00, 8.00),
    ("o4-mini", 1.10, 4.40),
    // Anthropic
    ("claude-opus-4-5", 5.00, 25.00),
    ("claude-opus-4-1", 15.00, 75.00),
    ("claude-opus-4", 15.00, 75.00),
    ("claude-sonnet-4-5", 3.00, 15.00),
    ("claude-sonnet-4", 3.00, 15.00),
    ("claude-3-7-sonnet", 3.00, 15.00),
    ("claude-haiku-4-5", 1.00, 5.00),
    ("claude-3-5-haiku", 0.80, 4.00),
];

/// The published list prices of common OpenAI and Anthropic models.
pub fn published() -> PriceTable {
    LIST_PRICES
        .iter()
        .fold(PriceTable::new(), |table, &(model, input, output)| {
            table.with(model, ModelPrice::usd_per_million(input, output))
        })
}

#[cfg(test)]
mod tests {
    use thinklio_core::TokenUsage;

    #[test]
    fn the_snapshots_real_providers_answer_with_are_priced() {
        let prices = super::published();
        for model in [
            "gpt-4o-mini-2024-07-18",
            "gpt-4o-2024-08-06",
            "claude-sonnet-4-5-20250929",
            "claude-3-5-haiku-20241022",
            "anthropic/claude-sonnet-4-5",
            "openai/gpt-4.1-mini-2025-04-14",
        ] {
            let cost = prices.cost(model, TokenUsage::new(1000, 1000));
            assert!(cost.is_some_and(|c| c.as_nanos() > 0), "{model}");
        }
    }
}
