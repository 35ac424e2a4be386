//! `BudgetStore` on SQLite.

use async_trait::async_trait;
use rusqlite::params;
use thinklio_core::{
    BudgetLimit, BudgetPeriod, BudgetStore, Cost, Scope, StoreError, StoreResult, Timestamp,
};

use crate::SqliteStore;
use crate::rows::{self, backend};

fn period_name(p: BudgetPeriod) -> &'static str {
    match p {
        BudgetPeriod::Daily => "daily",
        _ => "monthly",
    }
}

#[async_trait]
impl BudgetStore for SqliteStore {
    async fn set_budget(&self, limit: BudgetLimit) -> StoreResult<()> {
        let warn_at = serde_json::to_string(&limit.warn_at)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.conn
            .call(move |c| {
                c.prepare_cached(
                    "INSERT INTO budgets (scope_kind, scope_id, limit_nanos, limit_tokens, period, warn_at) \
                     VALUES (?1, ?2, ?3, ?6, ?4, ?5) ON CONFLICT (scope_kind, scope_id) \
                     DO UPDATE SET limit_nanos = ?3, limit_tokens = ?6, period = ?4, warn_at = ?5",
                )
                .map_err(backend)?
                .execute(params![
                    limit.scope.kind(),
                    limit.scope.id(),
                    limit.cost.map(Cost::as_nanos),
                    period_name(limit.period),
                    warn_at,
                    limit.tokens.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
                ])
                .map_err(backend)?;
                Ok(())
            })
            .await
    }

    async fn remove_budget(&self, scope: Scope) -> StoreResult<bool> {
        self.conn
            .call(move |c| {
                let n = c
                    .prepare_cached("DELETE FROM budgets WHERE scope_kind = ?1 AND scope_id = ?2")
                    .map_err(backend)?
                    .execute(params![scope.kind(), scope.id()])
                    .map_err(backend)?;
                Ok(n > 0)
            })
            .await
    }

    async fn budgets(&self) -> StoreResult<Vec<BudgetLimit>> {
        self.conn
            .call(move |c| {
                type Row = (String, String, Option<i64>, Option<i64>, String, String);
                let rows: Vec<Row> = c
                    .prepare_cached(
                        "SELECT scope_kind, scope_id, limit_nanos, limit_tokens, period, warn_at \
                         FROM budgets ORDER BY scope_kind, scope_id",
                    )
                    .map_err(backend)?
                    .query_map([], |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                        ))
                    })
                    .map_err(backend)?
                    .collect::<Result<_, _>>()
                    .map_err(backend)?;
                rows.into_iter()
                    .map(|(kind, id, nanos, tokens, period, warn_at)| {
                        Ok(BudgetLimit {
                            scope: rows::scope(&kind, &id)?,
                            cost: nanos.map(Cost::from_nanos),
                            tokens: tokens.map(|t| u64::try_from(t).unwrap_or(0)),
                            period: if period == "daily" {
                                BudgetPeriod::Daily
                            } else {
                                BudgetPeriod::Monthly
                            },
                            warn_at: serde_json::from_str(&warn_at).map_err(|e| {
                                StoreError::Corrupt(format!("budget thresholds: {e}"))
                            })?,
                        })
                    })
                    .collect()
            })
            .await
    }

    async fn record_budget_warning(
        &self,
        scope: Scope,
        period_start: Timestamp,
        threshold: u8,
    ) -> StoreResult<bool> {
        self.conn
            .call(move |c| {
                let n = c
                    .prepare_cached(
                        "INSERT INTO budget_warnings (scope_kind, scope_id, period_start, threshold) \
                         VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                    )
                    .map_err(backend)?
                    .execute(params![scope.kind(), scope.id(), period_start.as_millis(), threshold])
                    .map_err(backend)?;
                Ok(n == 1)
            })
            .await
    }
}
