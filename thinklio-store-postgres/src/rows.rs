//! Conversions between rows and domain types, and the small query helpers
//! every module uses.

use std::str::FromStr;

use deadpool_postgres::Transaction;
use serde_json::Value;
use thinklio_core::{
    AgentId, Cost, ErrorCode, Event, EventKind, Interaction, OutboxMessage, Principal, Session,
    Step, StepError, StoreError, StoreResult, Task, Timestamp, TokenUsage,
};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

/// The parameters of one query.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(crate) fn backend(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

pub(crate) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Backend(Box::new(e))
}

pub(crate) fn is(e: &tokio_postgres::Error, state: &SqlState) -> bool {
    e.code() == Some(state)
}

/// Rows of a statement, prepared once per connection.
pub(crate) async fn query(
    tx: &Transaction<'_>,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<Vec<Row>> {
    let statement = tx.prepare_cached(sql).await.map_err(backend)?;
    tx.query(&statement, params).await.map_err(backend)
}

/// The row of a statement, if any.
pub(crate) async fn query_opt(
    tx: &Transaction<'_>,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<Option<Row>> {
    let statement = tx.prepare_cached(sql).await.map_err(backend)?;
    tx.query_opt(&statement, params).await.map_err(backend)
}

/// Runs a statement; the rows it changed.
pub(crate) async fn execute(
    tx: &Transaction<'_>,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<u64> {
    let statement = tx.prepare_cached(sql).await.map_err(backend)?;
    tx.execute(&statement, params).await.map_err(backend)
}

fn corrupt(column: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("column {column}: {e}"))
}

pub(crate) fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    column: &str,
) -> StoreResult<T> {
    row.try_get(column).map_err(|e| corrupt(column, e))
}

pub(crate) fn parse<T: FromStr>(row: &Row, column: &str) -> StoreResult<T>
where
    T::Err: std::fmt::Display,
{
    get::<String>(row, column)?
        .parse()
        .map_err(|e| corrupt(column, e))
}

pub(crate) fn parse_opt<T: FromStr>(row: &Row, column: &str) -> StoreResult<Option<T>>
where
    T::Err: std::fmt::Display,
{
    get::<Option<String>>(row, column)?
        .map(|s| s.parse().map_err(|e| corrupt(column, e)))
        .transpose()
}

pub(crate) fn json(row: &Row, column: &str) -> StoreResult<Value> {
    serde_json::from_str(&get::<String>(row, column)?).map_err(|e| corrupt(column, e))
}

pub(crate) fn json_opt(row: &Row, column: &str) -> StoreResult<Option<Value>> {
    get::<Option<String>>(row, column)?
        .map(|s| serde_json::from_str(&s).map_err(|e| corrupt(column, e)))
        .transpose()
}

pub(crate) fn ts(row: &Row, column: &str) -> StoreResult<Timestamp> {
    Ok(Timestamp::from_millis(get(row, column)?))
}

pub(crate) fn ts_opt(row: &Row, column: &str) -> StoreResult<Option<Timestamp>> {
    Ok(get::<Option<i64>>(row, column)?.map(Timestamp::from_millis))
}

pub(crate) fn u32_of(row: &Row, column: &str) -> StoreResult<u32> {
    Ok(u32::try_from(get::<i64>(row, column)?).unwrap_or(0))
}

fn u64_of(row: &Row, column: &str) -> StoreResult<u64> {
    Ok(u64::try_from(get::<i64>(row, column)?).unwrap_or(0))
}

/// A count or token number as a BIGINT.
pub(crate) fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn principal(row: &Row) -> StoreResult<Principal> {
    Ok(Principal {
        account: parse(row, "account_id")?,
        team: parse_opt(row, "team_id")?,
        user: parse(row, "user_id")?,
    })
}

pub(crate) const SESSION_COLUMNS: &str =
    "id, account_id, team_id, user_id, agent_id, channel, channel_key, created_at";

pub(crate) fn session(row: &Row) -> StoreResult<Session> {
    Ok(Session {
        id: parse(row, "id")?,
        principal: principal(row)?,
        agent_id: AgentId::new(get::<String>(row, "agent_id")?),
        channel: get(row, "channel")?,
        key: get(row, "channel_key")?,
        created_at: ts(row, "created_at")?,
    })
}

pub(crate) const INTERACTION_COLUMNS: &str = "seq, id, session_id, account_id, team_id, user_id, agent_id, input, \
     inbound_id, parent_interaction_id, delegation_depth, job_id, kind, created_at";

pub(crate) fn interaction(row: &Row) -> StoreResult<Interaction> {
    Ok(Interaction {
        id: parse(row, "id")?,
        seq: get(row, "seq")?,
        session_id: parse(row, "session_id")?,
        principal: principal(row)?,
        agent_id: AgentId::new(get::<String>(row, "agent_id")?),
        input: get(row, "input")?,
        inbound_id: get(row, "inbound_id")?,
        parent_interaction_id: parse_opt(row, "parent_interaction_id")?,
        delegation_depth: u32_of(row, "delegation_depth")?,
        job_id: parse_opt(row, "job_id")?,
        kind: parse(row, "kind")?,
        created_at: ts(row, "created_at")?,
    })
}

pub(crate) const STEP_COLUMNS: &str = "id, interaction_id, seq, kind, mode, state, attempt, idempotency_key, \
     capability, side_effect, input, output, error_code, error_message, model, input_tokens, output_tokens, \
     cost_nanos, created_at, updated_at";

pub(crate) fn step(row: &Row) -> StoreResult<Step> {
    let error = match (
        parse_opt::<ErrorCode>(row, "error_code")?,
        get::<Option<String>>(row, "error_message")?,
    ) {
        (Some(code), message) => Some(StepError::new(code, message.unwrap_or_default())),
        _ => None,
    };
    Ok(Step {
        id: parse(row, "id")?,
        interaction_id: parse(row, "interaction_id")?,
        seq: u32_of(row, "seq")?,
        kind: parse(row, "kind")?,
        mode: parse(row, "mode")?,
        state: parse(row, "state")?,
        attempt: u32_of(row, "attempt")?,
        idempotency_key: get(row, "idempotency_key")?,
        capability: get(row, "capability")?,
        side_effect: parse_opt(row, "side_effect")?,
        input: json(row, "input")?,
        output: json_opt(row, "output")?,
        error,
        model: get(row, "model")?,
        usage: TokenUsage::new(u64_of(row, "input_tokens")?, u64_of(row, "output_tokens")?),
        cost: Cost::from_nanos(get(row, "cost_nanos")?),
        created_at: ts(row, "created_at")?,
        updated_at: ts(row, "updated_at")?,
    })
}

pub(crate) const OUTBOX_COLUMNS: &str =
    "id, interaction_id, session_id, channel, channel_key, text, created_at, delivered_at";

pub(crate) fn outbox(row: &Row) -> StoreResult<OutboxMessage> {
    Ok(OutboxMessage {
        id: parse(row, "id")?,
        interaction_id: parse(row, "interaction_id")?,
        session_id: parse(row, "session_id")?,
        channel: get(row, "channel")?,
        channel_key: get(row, "channel_key")?,
        text: get(row, "text")?,
        created_at: ts(row, "created_at")?,
        delivered_at: ts_opt(row, "delivered_at")?,
    })
}

pub(crate) const EVENT_COLUMNS: &str =
    "seq, kind, session_id, interaction_id, step_id, payload, at";

pub(crate) fn event(row: &Row) -> StoreResult<Event> {
    Ok(Event {
        seq: get(row, "seq")?,
        kind: parse(row, "kind")?,
        session_id: parse_opt(row, "session_id")?,
        interaction_id: parse_opt(row, "interaction_id")?,
        step_id: parse_opt(row, "step_id")?,
        payload: json(row, "payload")?,
        at: ts(row, "at")?,
    })
}

pub(crate) const TASK_COLUMNS: &str = "id, kind, payload, state, attempts, max_attempts, run_at, lease_until, \
     lease_token, last_error, created_at";

pub(crate) fn task(row: &Row) -> StoreResult<Task> {
    Ok(Task {
        id: parse(row, "id")?,
        kind: get(row, "kind")?,
        payload: json(row, "payload")?,
        state: parse(row, "state")?,
        attempts: u32_of(row, "attempts")?,
        max_attempts: u32_of(row, "max_attempts")?,
        run_at: ts(row, "run_at")?,
        lease_until: ts_opt(row, "lease_until")?,
        lease_token: get(row, "lease_token")?,
        last_error: get(row, "last_error")?,
        created_at: ts(row, "created_at")?,
    })
}

/// A scope stored as its kind (`account`, `team`, `user`) and id.
pub(crate) fn scope(kind: &str, id: &str) -> Result<thinklio_core::Scope, StoreError> {
    thinklio_core::Scope::parse(kind, id)
}

/// Appends an event in the caller's transaction and returns it.
pub(crate) async fn append_event(
    tx: &Transaction<'_>,
    kind: EventKind,
    session_id: Option<String>,
    interaction_id: Option<String>,
    step_id: Option<String>,
    payload: &Value,
    at: Timestamp,
) -> StoreResult<Event> {
    let row = query_opt(
        tx,
        "INSERT INTO events (kind, session_id, interaction_id, step_id, payload, at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
        &[
            &kind.as_str(),
            &session_id,
            &interaction_id,
            &step_id,
            &payload.to_string(),
            &at.as_millis(),
        ],
    )
    .await?
    .ok_or_else(|| StoreError::Corrupt("no event sequence returned".into()))?;
    Ok(Event {
        seq: get(&row, "seq")?,
        kind,
        session_id: session_id.and_then(|s| s.parse().ok()),
        interaction_id: interaction_id.and_then(|s| s.parse().ok()),
        step_id: step_id.and_then(|s| s.parse().ok()),
        payload: payload.clone(),
        at,
    })
}

/// Announces new work to other processes' idle workers, at commit.
pub(crate) async fn signal(tx: &Transaction<'_>, channel: &str) -> StoreResult<()> {
    execute(tx, "SELECT pg_notify($1, '')", &[&channel]).await?;
    Ok(())
}

/// The condition that interaction `i` has not ended, derived from its steps
/// exactly as `InteractionState::derive` does: no succeeded `respond` step,
/// and no `context`, `think` or `respond` step failed for good.
pub(crate) fn unfinished(i: &str) -> String {
    let not_terminal = ErrorCode::NOT_TERMINAL
        .iter()
        .map(|code| format!("'{code}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "NOT EXISTS (SELECT 1 FROM steps e WHERE e.interaction_id = {i}.id AND ( \
           (e.kind = 'respond' AND e.state = 'succeeded') OR \
           (e.state = 'failed' AND e.kind IN ('context', 'think', 'respond') \
            AND COALESCE(e.error_code, '') NOT IN ({not_terminal}))))"
    )
}
