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

/// Prices per model id.
///
/// Lookups are forgiving in the ways real providers need: a model id may
/// carry a provider prefix (`openai/gpt-4o-mini`, as OpenRouter names
/// models) and a date or `latest` suffix (`gpt-4o-mini-2024-07-18`,
/// `claude-sonnet-4-5-20250929`, `claude-3-5-sonnet@20241022`,
/// `claude-3-7-sonnet-latest`), as providers answer with the snapshot that
/// served a call. [`PriceTable::price`] tries the id as given, without its
/// prefix, then the family without its date, so a price for the family
/// prices every snapshot while a price for one snapshot still wins for it.
/// Nothing else is guessed: `gpt-4o-mini` never falls back to `gpt-4o`.
///
/// Core keeps no vendor's prices: `thinklio_llm::prices::published()` has
/// the list prices of the providers it speaks to. A model with no price
/// costs zero; [`PriceTable::cost`] says so by returning `None`, and the
/// runtime warns once per such model (a `usage.unpriced_model` event and a
/// log line), since a cost budget cannot see what it is not told.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PriceTable {
    prices: HashMap<String, ModelPrice>,
}

impl PriceTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// This table with a price set for `model` (an id or a family).
    pub fn with(mut self, model: impl Into<String>, price: ModelPrice) -> Self {
        self.prices.insert(model.into(), price);
        self
    }

    /// Whether no model has a price.
    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }

    /// The price of `model`, if known: the id as given, then without its
    /// provider prefix, then its family (the id without a date suffix).
    pub fn price(&self, model: &str) -> Option<&ModelPrice> {
        let short = model.rsplit_once('/').map_or(model, |(_, short)| short);
        [model, short, family(model), family(short)]
            .into_iter()
            .find_map(|id| self.prices.get(id))
    }

    /// The price of a call that asked for `requested` and was answered by
    /// `answered`: the answering model's price if known (a provider names
    /// the snapshot it used), else the requested one's.
    pub fn price_of(&self, answered: &str, requested: &str) -> Option<&ModelPrice> {
        self.price(answered).or_else(|| self.price(requested))
    }

    /// What `usage` of `model` costs, or `None` when the model has no price.
    pub fn cost(&self, model: &str, usage: TokenUsage) -> Option<Cost> {
        self.price(model).map(|p| p.cost(usage))
    }
}

/// A model id without the date or `latest` suffix providers add to name a
/// snapshot: `gpt-4o-mini-2024-07-18` → `gpt-4o-mini`,
/// `claude-sonnet-4-5-20250929` → `claude-sonnet-4-5`,
/// `claude-3-5-sonnet@20241022` → `claude-3-5-sonnet`,
/// `claude-3-7-sonnet-latest` → `claude-3-7-sonnet`. An id without such a
/// suffix is returned as it is.
pub fn family(model: &str) -> &str {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(base) = model.strip_suffix("-latest") {
        return base;
    }
    // `-YYYY-MM-DD`
    if model.len() > 11 && model.is_char_boundary(model.len() - 11) {
        let (base, tail) = model.split_at(model.len() - 11);
        let parts: Vec<&str> = tail.split('-').collect();
        if let ["", y, m, d] = parts.as_slice()
            && y.len() == 4
            && m.len() == 2
            && d.len() == 2
            && digits(y)
            && digits(m)
            && digits(d)
            && !base.is_empty()
        {
            return base;
        }
    }
    // `-YYYYMMDD` or `@YYYYMMDD`
    if let Some(at) = model.rfind(['-', '@']) {
        let (base, tail) = (&model[..at], &model[at + 1..]);
        if tail.len() == 8 && digits(tail) && tail.starts_with("20") && !base.is_empty() {
            return base;
        }
    }
    model
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

    fn table() -> PriceTable {
        PriceTable::new()
            .with("gpt-4o-mini", ModelPrice::usd_per_million(0.15, 0.60))
            .with("gpt-4o", ModelPrice::usd_per_million(2.50, 10.00))
            .with("claude-sonnet-4-5", ModelPrice::usd_per_million(3.0, 15.0))
    }

    #[test]
    fn provider_prefix_falls_back_to_short_name() {
        let t = table();
        assert!(
            t.cost("openai/gpt-4o-mini", TokenUsage::new(10, 10))
                .is_some()
        );
        assert!(t.cost("unknown-model", TokenUsage::new(10, 10)).is_none());
    }

    #[test]
    fn a_dated_model_name_is_priced() {
        let t = table();
        let mini = ModelPrice::usd_per_million(0.15, 0.60);
        let sonnet = ModelPrice::usd_per_million(3.0, 15.0);
        assert_eq!(t.price("gpt-4o-mini-2024-07-18"), Some(&mini));
        assert_eq!(t.price("openai/gpt-4o-mini-2024-07-18"), Some(&mini));
        assert_eq!(t.price("claude-sonnet-4-5-20250929"), Some(&sonnet));
        assert_eq!(t.price("claude-sonnet-4-5@20250929"), Some(&sonnet));
        assert_eq!(t.price("claude-sonnet-4-5-latest"), Some(&sonnet));
        // Only a date is dropped: no family is guessed from a shorter name.
        assert_eq!(t.price("gpt-4o-mini-audio-preview"), None);
        assert_eq!(t.price("gpt-4o-2"), None);
        // A snapshot's own price wins over its family's.
        let t = t.with("gpt-4o-2024-05-13", ModelPrice::usd_per_million(5.0, 15.0));
        assert_eq!(
            t.price("gpt-4o-2024-05-13"),
            Some(&ModelPrice::usd_per_million(5.0, 15.0))
        );
        assert_eq!(
            t.price("gpt-4o-2024-08-06"),
            Some(&ModelPrice::usd_per_million(2.50, 10.00))
        );
    }

    #[test]
    fn the_requested_model_prices_an_unknown_answer() {
        let t = table();
        let mini = ModelPrice::usd_per_million(0.15, 0.60);
        assert_eq!(t.price_of("gpt-4o-mini-2024-07-18", "x"), Some(&mini));
        assert_eq!(
            t.price_of("served-by-proxy", "openai/gpt-4o-mini"),
            Some(&mini)
        );
        assert_eq!(t.price_of("a", "b"), None);
    }

    #[test]
    fn family_never_panics_and_only_shortens() {
        for id in [
            "",
            "-",
            "@",
            "a-2024-07-1",
            "é-2024-07-18",
            "-20240718",
            "x-ü2024071",
            "2024-07-18",
            "@20250929",
        ] {
            let f = family(id);
            assert!(id.starts_with(f), "{id} → {f}");
        }
        assert_eq!(family("-20240718"), "-20240718");
        assert_eq!(family("é-2024-07-18"), "é");
    }
}
