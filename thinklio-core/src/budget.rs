//! Budgets: spending limits per account, team or user over a period, in
//! money, in tokens, or both.
//!
//! A budget is checked before every model call and every capability call,
//! delegations included (a delegate spends from its caller's principal).
//! Spend is summed from the usage records of the current period, so periods
//! reset by themselves at their boundary, with no job to run. A call starts
//! only while spend is below every applicable limit, so a limit is passed by
//! at most the one call that crossed it. Warning thresholds (percent of the
//! limit; of the nearer one when both are set) each emit one
//! `budget.warning` event per period.
//!
//! A money limit sees only what the runtime's price table prices: a model
//! with no price costs zero (the runtime warns once per such model). A
//! token limit holds whatever the prices say.

use serde::{Deserialize, Serialize};

use crate::principal::Scope;
use crate::time::{DAY_MS, Timestamp, civil_from_days, days_from_civil};
use crate::usage::Cost;

/// How long a budget period lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BudgetPeriod {
    /// Calendar months, UTC.
    Monthly,
    /// Calendar days, UTC.
    Daily,
}

crate::step::str_enum!(BudgetPeriod, "budget period",
    BudgetPeriod::Monthly => "monthly",
    BudgetPeriod::Daily => "daily",
);

impl BudgetPeriod {
    /// The start of the period that contains `now`.
    pub fn start(&self, now: Timestamp) -> Timestamp {
        let days = now.as_millis().div_euclid(DAY_MS);
        match self {
            BudgetPeriod::Daily => Timestamp::from_millis(days * DAY_MS),
            BudgetPeriod::Monthly => {
                let (y, m, _) = civil_from_days(days);
                Timestamp::from_millis(days_from_civil(y, m, 1) * DAY_MS)
            }
        }
    }

    /// `month` or `day`.
    pub fn name(&self) -> &'static str {
        match self {
            BudgetPeriod::Monthly => "month",
            BudgetPeriod::Daily => "day",
        }
    }
}

/// A spending limit: money, tokens, or both (whichever is spent first
/// stops the calls).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetLimit {
    /// Whose spending it limits.
    pub scope: Scope,
    /// The most money that may be spent per period, if limited.
    pub cost: Option<Cost>,
    /// The most tokens (input and output) that may be used per period, if
    /// limited.
    pub tokens: Option<u64>,
    /// The period.
    pub period: BudgetPeriod,
    /// Percentages of the limit at which a `budget.warning` event is emitted,
    /// once per period each.
    pub warn_at: Vec<u8>,
}

impl BudgetLimit {
    /// A monthly money limit for `scope` with warnings at 50%, 80% and 100%.
    pub fn monthly(scope: Scope, limit: Cost) -> Self {
        Self {
            scope,
            cost: Some(limit),
            tokens: None,
            period: BudgetPeriod::Monthly,
            warn_at: vec![50, 80, 100],
        }
    }

    /// A monthly token limit for `scope` with warnings at 50%, 80% and 100%.
    pub fn monthly_tokens(scope: Scope, tokens: u64) -> Self {
        Self {
            cost: None,
            tokens: Some(tokens),
            ..Self::monthly(scope, Cost::ZERO)
        }
    }

    /// The same budget, also limited to `tokens` per period.
    pub fn tokens(mut self, tokens: u64) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// How much of this budget `spent` (money) and `used` (tokens) take, in
    /// percent of the nearer limit; 100 or more when a limit is spent, 0
    /// when nothing is limited.
    pub fn percent_used(&self, spent: Cost, used: u64) -> i128 {
        let of = |n: i128, limit: i128| if limit <= 0 { 100 } else { n * 100 / limit };
        let money = self
            .cost
            .map(|c| of(i128::from(spent.as_nanos()), i128::from(c.as_nanos())));
        let tokens = self.tokens.map(|t| of(i128::from(used), i128::from(t)));
        money.into_iter().chain(tokens).max().unwrap_or(0)
    }

    /// The same limit over another period.
    pub fn per(mut self, period: BudgetPeriod) -> Self {
        self.period = period;
        self
    }

    /// The same limit with other warning thresholds.
    pub fn warn_at(mut self, percents: impl IntoIterator<Item = u8>) -> Self {
        self.warn_at = percents.into_iter().collect();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(y: i64, m: i64, d: i64) -> Timestamp {
        Timestamp::from_millis(days_from_civil(y, m, d) * DAY_MS)
    }

    #[test]
    fn calendar_round_trips() {
        for days in [-800_000, -1, 0, 1, 19_000, 20_513, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }

    #[test]
    fn periods_start_at_their_boundary() {
        let mid = ms(2026, 11, 26).plus(std::time::Duration::from_secs(3600 * 13));
        assert_eq!(BudgetPeriod::Monthly.start(mid), ms(2026, 11, 1));
        assert_eq!(BudgetPeriod::Daily.start(mid), ms(2026, 11, 26));
        assert_eq!(BudgetPeriod::Monthly.start(ms(2027, 1, 1)), ms(2027, 1, 1));
        assert_eq!(
            BudgetPeriod::Monthly.start(ms(2024, 3, 1).plus(std::time::Duration::from_millis(1))),
            ms(2024, 3, 1)
        );
    }
}
