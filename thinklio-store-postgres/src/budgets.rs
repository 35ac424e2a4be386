//! `BudgetStore` on PostgreSQL.

use async_trait::async_trait;
use thinklio_core::{BudgetLimit, BudgetStore, Cost, Scope, StoreError, StoreResult, Timestamp};

use crate::PostgresStore;
use crate::rows::{self, BUDGET_COLUMNS, backend, execute, query};

#[async_trait]
impl BudgetStore for PostgresStore {
    async fn set_budget(&self, limit: BudgetLimit) -> StoreResult<()> {
        let warn_at = serde_json::to_string(&limit.warn_at)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        execute(
            &tx,
            "INSERT INTO budgets (scope_kind, scope_id, limit_nanos, limit_tokens, period, warn_at) \
             VALUES ($1, $2, $3, $6, $4, $5) ON CONFLICT (scope_kind, scope_id) \
             DO UPDATE SET limit_nanos = $3, limit_tokens = $6, period = $4, warn_at = $5",
            &[
                &limit.scope.kind(),
                &limit.scope.id(),
                &limit.cost.map(Cost::as_nanos),
                &limit.period.as_str(),
                &warn_at,
                &limit.tokens.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
            ],
        )
        .await?;
        tx.commit().await.map_err(backend)
    }

    async fn remove_budget(&self, scope: Scope) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let n = execute(
            &tx,
            "DELETE FROM budgets WHERE scope_kind = $1 AND scope_id = $2",
            &[&scope.kind(), &scope.id()],
        )
        .await?;
        tx.commit().await.map_err(backend)?;
        Ok(n > 0)
    }

    async fn budgets(&self) -> StoreResult<Vec<BudgetLimit>> {
        let client = self.client().await?;
        query(
            &client,
            &format!("SELECT {BUDGET_COLUMNS} FROM budgets ORDER BY scope_kind, scope_id"),
            &[],
        )
        .await?
        .iter()
        .map(rows::budget)
        .collect()
    }

    async fn record_budget_warning(
        &self,
        scope: Scope,
        period_start: Timestamp,
        threshold: u8,
    ) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let n = execute(
            &tx,
            "INSERT INTO budget_warnings (scope_kind, scope_id, period_start, threshold) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &[
                &scope.kind(),
                &scope.id(),
                &period_start.as_millis(),
                &i64::from(threshold),
            ],
        )
        .await?;
        tx.commit().await.map_err(backend)?;
        Ok(n == 1)
    }
}
