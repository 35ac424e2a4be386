//! `BudgetStore` on PostgreSQL.

use async_trait::async_trait;
use thinklio_core::{
    BudgetLimit, BudgetPeriod, BudgetStore, Cost, Scope, StoreError, StoreResult, Timestamp,
};

use crate::PostgresStore;
use crate::rows::{self, backend, execute, query};

fn period_name(p: BudgetPeriod) -> &'static str {
    match p {
        BudgetPeriod::Daily => "daily",
        _ => "monthly",
    }
}

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
                &period_name(limit.period),
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
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        query(
            &tx,
            "SELECT scope_kind, scope_id, limit_nanos, limit_tokens, period, warn_at \
             FROM budgets ORDER BY scope_kind, scope_id",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            let kind: String = rows::get(r, "scope_kind")?;
            let id: String = rows::get(r, "scope_id")?;
            let period: String = rows::get(r, "period")?;
            let warn_at: String = rows::get(r, "warn_at")?;
            Ok(BudgetLimit {
                scope: rows::scope(&kind, &id)?,
                cost: rows::get::<Option<i64>>(r, "limit_nanos")?.map(Cost::from_nanos),
                tokens: rows::get::<Option<i64>>(r, "limit_tokens")?
                    .map(|t| u64::try_from(t).unwrap_or(0)),
                period: if period == "daily" {
                    BudgetPeriod::Daily
                } else {
                    BudgetPeriod::Monthly
                },
                warn_at: serde_json::from_str(&warn_at)
                    .map_err(|e| StoreError::Corrupt(format!("budget thresholds: {e}")))?,
            })
        })
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
