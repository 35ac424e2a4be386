//! Tokens, cost and prices.
//!
//! Cost is kept as an integer count of nano-dollars (10⁻⁹ USD) so that sums
//! over millions of steps are exact; a token of a cheap model costs a fraction
//! of a micro-dollar.

use std::collections::HashMap;
use std::fmt;
use std::ops::{Add, AddAssign};

use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, AgentId, InteractionId, StepId, TeamId, UserId};
use crate::principal::Scope;
use crate::time::Timestamp;

/// Tokens used by one or more model calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Tokens sent to the model.
    pub input_tokens: u64,
    /// Tokens the model produced.
    pub output_tokens: u64,
}

impl TokenUsage {
    /// A usage.
    pub const fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Self {
            input_tokens,
            output_tokens,
        }
    }

    /// Input plus output tokens.
    pub const fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

impl Add for TokenUsage {
    type Output = TokenUsage;
    fn add(self, rhs: TokenUsage) -> TokenUsage {
        TokenUsage::new(
            self.input_tokens.saturating_add(rhs.input_tokens),
            self.output_tokens.saturating_add(rhs.output_tokens),
        )
    }
}

impl AddAssign for TokenUsage {
    fn add_assign(&mut self, rhs: TokenUsage) {
        *self = *self + rhs;
    }
}

/// An amount of money in nano-dollars (10⁻⁹ USD).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Cost(i64);

impl Cost {
    /// Nothing.
    pub const ZERO: Cost = Cost(0);

    /// A cost in nano-dollars.
    pub const fn from_nanos(nanos: i64) -> Self {
        Self(nanos)
    }

    /// A cost in US dollars, rounded to the nearest nano-dollar.
    pub fn from_usd(usd: f64) -> Self {
        Self((usd * 1e9).round() as i64)
    }

    /// Nano-dollars.
    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    /// US dollars, for display.
    pub fn as_usd(self) -> f64 {
        self.0 as f64 / 1e9
    }
}

impl Add for Cost {
    type Output = Cost;
    fn add(self, rhs: Cost) -> Cost {
        Cost(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign for Cost {
    fn add_assign(&mut self, rhs: Cost) {
        *self = *self + rhs;
    }
}

impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${:.6}", self.as_usd())
    }
}

/// The price of a model per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelPrice {
    /// Price of a million input tokens.
    pub input_per_million: Cost,
    /// Price of a million output tokens.
    pub output_per_million: Cost,
}

impl ModelPrice {
    /// A price in US dollars per million input and output tokens.
    pub fn usd_per_million(input: f64, output: f64) -> Self {
        Self {
            input_per_million: Cost::from_usd(input),
            output_per_million: Cost::from_usd(output),
        }
    }

    /// What `usage` costs at this price.
    pub fn cost(&self, usage: TokenUsage) -> Cost {
        let part = |tokens: u64, per_million: Cost| -> i64 {
            let n = i128::from(tokens) * i128::from(per_million.as_nanos()) / 1_000_000;
            i64::try_from(n).unwrap_or(i64::MAX)
        };
        Cost(
            part(usage.input_tokens, self.input_per_million)
                .saturating_add(part(usage.output_tokens, self.output_per_million)),
        )
    }
}

/// Prices per model id. A model id may carry a provider prefix
/// (`openai/gpt-4o-mini`); lookups try the full id first, then the part after
/// the last `/`. A model with no price costs zero, and [`PriceTable::cost`]
/// says so by returning `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PriceTable {
    prices: HashMap<String, ModelPrice>,
}

impl PriceTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Published list prices (USD per million tokens) of some common models,
    /// as of 2026. Check them against your provider's price list; override any
    /// with [`PriceTable::with`].
    pub fn published() -> Self {
        Self::new()
            .with("gpt-4o-mini", ModelPrice::usd_per_million(0.15, 0.60))
            .with("gpt-4o", ModelPrice::usd_per_million(2.50, 10.00))
            .with("gpt-4.1-mini", ModelPrice::usd_per_million(0.40, 1.60))
            .with("gpt-4.1", ModelPrice::usd_per_million(2.00, 8.00))
            .with(
                "claude-sonnet-4-5",
                ModelPrice::usd_per_million(3.00, 15.00),
            )
            .with("claude-haiku-4-5", ModelPrice::usd_per_million(1.00, 5.00))
            .with("claude-opus-4-1", ModelPrice::usd_per_million(15.00, 75.00))
    }

    /// This table with a price set for `model`.
    pub fn with(mut self, model: impl Into<String>, price: ModelPrice) -> Self {
        self.prices.insert(model.into(), price);
        self
    }

    /// The price of `model`, if known.
    pub fn price(&self, model: &str) -> Option<&ModelPrice> {
        self.prices.get(model).or_else(|| {
            model
                .rsplit_once('/')
                .and_then(|(_, short)| self.prices.get(short))
        })
    }

    /// What `usage` of `model` costs, or `None` when the model has no price.
    pub fn cost(&self, model: &str, usage: TokenUsage) -> Option<Cost> {
        self.price(model).map(|p| p.cost(usage))
    }
}

/// Usage of one model call, as recorded for reporting and budgets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// The step that made the call.
    pub step_id: StepId,
    /// Its interaction.
    pub interaction_id: InteractionId,
    /// The account charged.
    pub account: AccountId,
    /// The team charged, if any.
    pub team: Option<TeamId>,
    /// The user charged.
    pub user: UserId,
    /// The agent that made the call.
    pub agent_id: AgentId,
    /// The model.
    pub model: String,
    /// Tokens.
    pub tokens: TokenUsage,
    /// Cost.
    pub cost: Cost,
    /// When.
    pub at: Timestamp,
}

/// A filter over usage records; `None` fields match everything.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct UsageFilter {
    /// Only this account.
    pub account: Option<AccountId>,
    /// Only this team.
    pub team: Option<TeamId>,
    /// Only this user.
    pub user: Option<UserId>,
    /// Only this agent.
    pub agent_id: Option<AgentId>,
    /// From this time on (inclusive).
    pub from: Option<Timestamp>,
    /// Before this time (exclusive).
    pub until: Option<Timestamp>,
}

impl UsageFilter {
    /// Everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only the usage of `scope` (an account, a team or a user).
    pub fn scope(mut self, scope: Scope) -> Self {
        match scope {
            Scope::Account(a) => self.account = Some(a),
            Scope::Team(t) => self.team = Some(t),
            Scope::User(u) => self.user = Some(u),
        }
        self
    }

    /// Only this account.
    pub fn account(mut self, account: AccountId) -> Self {
        self.account = Some(account);
        self
    }

    /// Only this user.
    pub fn user(mut self, user: UserId) -> Self {
        self.user = Some(user);
        self
    }

    /// Only this agent.
    pub fn agent(mut self, agent: AgentId) -> Self {
        self.agent_id = Some(agent);
        self
    }

    /// Only records in `[from, until)`.
    pub fn between(mut self, from: Timestamp, until: Timestamp) -> Self {
        self.from = Some(from);
        self.until = Some(until);
        self
    }
}

/// What a usage report groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UsageGroup {
    /// One row per user.
    User,
    /// One row per team (usage with no team is one row with an empty key).
    Team,
    /// One row per account.
    Account,
    /// One row per agent.
    Agent,
}

/// One row of a usage report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The user, team, account or agent id.
    pub key: String,
    /// Its sums.
    pub totals: UsageTotals,
}

/// Sums of usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTotals {
    /// Number of model calls.
    pub calls: u64,
    /// Tokens.
    pub tokens: TokenUsage,
    /// Cost.
    pub cost: Cost,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_exact_per_million() {
        let price = ModelPrice::usd_per_million(0.15, 0.60);
        let c = price.cost(TokenUsage::new(1_000_000, 500_000));
        assert_eq!(c, Cost::from_usd(0.15 + 0.30));
        assert_eq!(price.cost(TokenUsage::new(1, 0)), Cost::from_nanos(150));
    }

    #[test]
    fn provider_prefix_falls_back_to_short_name() {
        let t = PriceTable::published();
        assert!(
            t.cost("openai/gpt-4o-mini", TokenUsage::new(10, 10))
                .is_some()
        );
        assert!(t.cost("unknown-model", TokenUsage::new(10, 10)).is_none());
    }
}
