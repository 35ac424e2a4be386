//! `EventStore` and `UsageStore` on SQLite.

use async_trait::async_trait;
use rusqlite::params;
use thinklio_core::store::retention::USAGE_SUMS as SUMS;
use thinklio_core::{
    Cost, Event, EventStore, NewEvent, StoreResult, TokenUsage, UsageFilter, UsageGroup,
    UsageRecord, UsageRow, UsageStore, UsageTotals,
};

use crate::SqliteStore;
use crate::interactions::append_event;
use crate::rows::{self, EVENT_COLUMNS, backend};

#[async_trait]
impl EventStore for SqliteStore {
    async fn append_event(&self, event: NewEvent) -> StoreResult<Event> {
        let now = self.clock.now();
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let e = append_event(
                    &tx,
                    event.kind,
                    event.session_id.map(|s| s.to_string()),
                    event.interaction_id.map(|i| i.to_string()),
                    event.step_id.map(|s| s.to_string()),
                    &event.payload,
                    now,
                )?;
                tx.commit().map_err(backend)?;
                Ok(e)
            })
            .await
    }

    async fn events_after(&self, after: i64, limit: u32) -> StoreResult<Vec<Event>> {
        self.conn
            .call(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
                ))
                .map_err(backend)?
                .query_map(params![after, i64::from(limit)], rows::event)
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)
            })
            .await
    }
}

/// The WHERE clause and its values for a usage filter.
fn filter_sql(filter: &UsageFilter) -> (String, Vec<rusqlite::types::Value>) {
    let mut clauses: Vec<&str> = Vec::new();
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    let mut push = |clause: &'static str, value: rusqlite::types::Value| {
        clauses.push(clause);
        values.push(value);
    };
    if let Some(a) = filter.account {
        push("account_id = ?", a.to_string().into());
    }
    if let Some(t) = filter.team {
        push("team_id = ?", t.to_string().into());
    }
    if let Some(u) = filter.user {
        push("user_id = ?", u.to_string().into());
    }
    if let Some(a) = &filter.agent_id {
        push("agent_id = ?", a.as_str().to_owned().into());
    }
    if let Some(f) = filter.from {
        push("at >= ?", f.as_millis().into());
    }
    if let Some(u) = filter.until {
        push("at < ?", u.as_millis().into());
    }
    let sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    (sql, values)
}

fn totals(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<UsageTotals> {
    let n =
        |i: usize| -> rusqlite::Result<u64> { Ok(u64::try_from(r.get::<_, i64>(i)?).unwrap_or(0)) };
    Ok(UsageTotals {
        calls: n(first)?,
        tokens: TokenUsage::new(n(first + 1)?, n(first + 2)?),
        cost: Cost::from_nanos(r.get(first + 3)?),
    })
}

#[async_trait]
impl UsageStore for SqliteStore {
    async fn record_usage(&self, r: UsageRecord) -> StoreResult<()> {
        self.conn
            .call(move |c| {
                c.prepare_cached(
                    "INSERT INTO usage_records (step_id, interaction_id, account_id, team_id, user_id, agent_id, \
                     model, input_tokens, output_tokens, cost_nanos, at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .map_err(backend)?
                .execute(rusqlite::params![
                    r.step_id.to_string(),
                    r.interaction_id.to_string(),
                    r.account.to_string(),
                    r.team.map(|t| t.to_string()),
                    r.user.to_string(),
                    r.agent_id.as_str(),
                    r.model,
                    i64::try_from(r.tokens.input_tokens).unwrap_or(i64::MAX),
                    i64::try_from(r.tokens.output_tokens).unwrap_or(i64::MAX),
                    r.cost.as_nanos(),
                    r.at.as_millis(),
                ])
                .map_err(backend)?;
                Ok(())
            })
            .await
    }

    async fn usage_totals(&self, filter: &UsageFilter) -> StoreResult<UsageTotals> {
        let (filter_sql, values) = filter_sql(filter);
        self.conn
            .call(move |c| {
                c.prepare_cached(&format!("SELECT {SUMS} FROM usage_records {filter_sql}"))
                    .map_err(backend)?
                    .query_row(rusqlite::params_from_iter(values), |r| totals(r, 0))
                    .map_err(backend)
            })
            .await
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
        self.conn
            .call(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {column}, {SUMS} FROM usage_records {filter_sql} GROUP BY 1 \
                     ORDER BY SUM(cost_nanos) DESC, 1"
                ))
                .map_err(backend)?
                .query_map(rusqlite::params_from_iter(values), |r| {
                    Ok(UsageRow {
                        key: r.get(0)?,
                        totals: totals(r, 1)?,
                    })
                })
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)
            })
            .await
    }
}
