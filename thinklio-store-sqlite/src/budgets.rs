//! `BudgetStore` on SQLite.

use async_trait::async_trait;
use rusqlite::params;
use thinklio_core::{BudgetLimit, BudgetStore, Cost, Scope, StoreError, StoreResult, Timestamp};

use crate::SqliteStore;
use crate::rows::{self, BUDGET_COLUMNS, backend};

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
                    limit.period.as_str(),
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
                c.prepare_cached(&format!(
                    "SELECT {BUDGET_COLUMNS} FROM budgets ORDER BY scope_kind, scope_id"
                ))
                .map_err(backend)?
                .query_map([], rows::budget)
                .map_err(backend)?
                .collect::<Result<_, _>>()
                .map_err(backend)
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
