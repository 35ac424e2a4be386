//! `EventStore` and `UsageStore` on PostgreSQL.

use async_trait::async_trait;
use thinklio_core::store::retention::USAGE_SUMS as SUMS;
use thinklio_core::{
    Cost, Event, EventStore, NewEvent, StoreResult, TokenUsage, UsageFilter, UsageGroup,
    UsageRecord, UsageRow, UsageStore, UsageTotals,
};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::PostgresStore;
use crate::rows::{self, EVENT_COLUMNS, append_event, backend, big, execute, query};

#[async_trait]
impl EventStore for PostgresStore {
    async fn append_event(&self, event: NewEvent) -> StoreResult<Event> {
        let now = self.clock.now();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let e = append_event(
            &tx,
            event.kind,
            event.session_id.map(|s| s.to_string()),
            event.interaction_id.map(|i| i.to_string()),
            event.step_id.map(|s| s.to_string()),
            &event.payload,
            now,
        )
        .await?;
        tx.commit().await.map_err(backend)?;
        Ok(e)
    }

    async fn events_after(&self, after: i64, limit: u32) -> StoreResult<Vec<Event>> {
        let client = self.client().await?;
        query(
            &client,
            &format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2"),
            &[&after, &i64::from(limit)],
        )
        .await?
        .iter()
        .map(rows::event)
        .collect()
    }
}

/// The WHERE clause and its values for a usage filter.
fn filter_sql(filter: &UsageFilter) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let mut clauses: Vec<String> = Vec::new();
    let mut values: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut push = |column: &str, op: &str, value: Box<dyn ToSql + Sync + Send>| {
        values.push(value);
        clauses.push(format!("{column} {op} ${}", values.len()));
    };
    if let Some(a) = filter.account {
        push("account_id", "=", Box::new(a.to_string()));
    }
    if let Some(t) = filter.team {
        push("team_id", "=", Box::new(t.to_string()));
    }
    if let Some(u) = filter.user {
        push("user_id", "=", Box::new(u.to_string()));
    }
    if let Some(a) = &filter.agent_id {
        push("agent_id", "=", Box::new(a.as_str().to_owned()));
    }
    if let Some(f) = filter.from {
        push("at", ">=", Box::new(f.as_millis()));
    }
    if let Some(u) = filter.until {
        push("at", "<", Box::new(u.as_millis()));
    }
    let sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    (sql, values)
}

fn totals(r: &Row, first: usize) -> StoreResult<UsageTotals> {
    let n = |i: usize| -> StoreResult<u64> {
        let v: i64 = r
            .try_get(i)
            .map_err(|e| thinklio_core::StoreError::Corrupt(e.to_string()))?;
        Ok(u64::try_from(v).unwrap_or(0))
    };
    Ok(UsageTotals {
        calls: n(first)?,
        tokens: TokenUsage::new(n(first + 1)?, n(first + 2)?),
        cost: Cost::from_nanos(
            r.try_get(first + 3)
                .map_err(|e| thinklio_core::StoreError::Corrupt(e.to_string()))?,
        ),
    })
}

#[async_trait]
impl UsageStore for PostgresStore {
    async fn record_usage(&self, r: UsageRecord) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        execute(
            &tx,
            "INSERT INTO usage_records (step_id, interaction_id, account_id, team_id, user_id, agent_id, \
             model, input_tokens, output_tokens, cost_nanos, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &r.step_id.to_string(),
                &r.interaction_id.to_string(),
                &r.account.to_string(),
                &r.team.map(|t| t.to_string()),
                &r.user.to_string(),
                &r.agent_id.as_str(),
                &r.model,
                &big(r.tokens.input_tokens),
                &big(r.tokens.output_tokens),
                &r.cost.as_nanos(),
                &r.at.as_millis(),
            ],
        )
        .await?;
        tx.commit().await.map_err(backend)
    }

    async fn usage_totals(&self, filter: &UsageFilter) -> StoreResult<UsageTotals> {
        let (filter_sql, values) = filter_sql(filter);
        let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| &**v as _).collect();
        let client = self.client().await?;
        let rows = query(
            &client,
            &format!("SELECT {SUMS} FROM usage_records {filter_sql}"),
            &params,
        )
        .await?;
        match rows.first() {
            Some(r) => totals(r, 0),
            None => Ok(UsageTotals::default()),
        }
    }

    async fn usage_report(
        &self,
        group: UsageGroup,
        filter: &UsageFilter,
    ) -> StoreResult<Vec<UsageRow>> {
        let column = match group {
            UsageGroup::User => "user_id",
            UsageGroup::Team => "COALESCE(team_id, '')",
            UsageGroup::Account => "account_id",
            _ => "agent_id",
        };
        let (filter_sql, values) = filter_sql(filter);
        let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| &**v as _).collect();
        let client = self.client().await?;
        query(
            &client,
            &format!(
                "SELECT {column} AS key, {SUMS} FROM usage_records {filter_sql} GROUP BY 1 \
                 ORDER BY SUM(cost_nanos) DESC, 1"
            ),
            &params,
        )
        .await?
        .iter()
        .map(|r| {
            Ok(UsageRow {
                key: rows::get(r, "key")?,
                totals: totals(r, 1)?,
            })
        })
        .collect()
    }
}
