//! Conversions between rows and domain types.

use std::str::FromStr;

use rusqlite::Row;
use serde_json::Value;
use thinklio_core::{
    AgentId, Cost, ErrorCode, Event, Interaction, OutboxMessage, Principal, Session, Step,
    StepError, StoreError, Task, Timestamp, TokenUsage,
};

pub(crate) fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

/// A value that could not be read back, as rusqlite reports it.
fn conversion(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}

/// Reads a column into a type parsed from text; corrupt text becomes a
/// conversion error.
pub(crate) fn parse<T: FromStr>(row: &Row<'_>, idx: &str) -> rusqlite::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    row.get::<_, String>(idx)?.parse::<T>().map_err(conversion)
}

pub(crate) fn parse_opt<T: FromStr>(row: &Row<'_>, idx: &str) -> rusqlite::Result<Option<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    row.get::<_, Option<String>>(idx)?
        .map(|s| s.parse::<T>().map_err(conversion))
        .transpose()
}

pub(crate) fn json(row: &Row<'_>, idx: &str) -> rusqlite::Result<Value> {
    serde_json::from_str(&row.get::<_, String>(idx)?).map_err(conversion)
}

pub(crate) fn json_opt(row: &Row<'_>, idx: &str) -> rusqlite::Result<Option<Value>> {
    row.get::<_, Option<String>>(idx)?
        .map(|s| serde_json::from_str(&s).map_err(conversion))
        .transpose()
}

pub(crate) fn ts(row: &Row<'_>, idx: &str) -> rusqlite::Result<Timestamp> {
    Ok(Timestamp::from_millis(row.get(idx)?))
}

pub(crate) fn ts_opt(row: &Row<'_>, idx: &str) -> rusqlite::Result<Option<Timestamp>> {
    Ok(row.get::<_, Option<i64>>(idx)?.map(Timestamp::from_millis))
}

fn u64_of(row: &Row<'_>, idx: &str) -> rusqlite::Result<u64> {
    Ok(u64::try_from(row.get::<_, i64>(idx)?).unwrap_or(0))
}

fn u32_of(row: &Row<'_>, idx: &str) -> rusqlite::Result<u32> {
    Ok(u32::try_from(row.get::<_, i64>(idx)?).unwrap_or(0))
}

pub(crate) fn principal(row: &Row<'_>) -> rusqlite::Result<Principal> {
    Ok(Principal {
        account: parse(row, "account_id")?,
        team: parse_opt(row, "team_id")?,
        user: parse(row, "user_id")?,
    })
}

pub(crate) const SESSION_COLUMNS: &str =
    "id, account_id, team_id, user_id, agent_id, channel, channel_key, created_at";

pub(crate) fn session(row: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: parse(row, "id")?,
        principal: principal(row)?,
        agent_id: AgentId::new(row.get::<_, String>("agent_id")?),
        channel: row.get("channel")?,
        key: row.get("channel_key")?,
        created_at: ts(row, "created_at")?,
    })
}

pub(crate) const INTERACTION_COLUMNS: &str = "seq, id, session_id, account_id, team_id, user_id, agent_id, input, \
     inbound_id, parent_interaction_id, delegation_depth, job_id, kind, created_at";

pub(crate) fn interaction(row: &Row<'_>) -> rusqlite::Result<Interaction> {
    Ok(Interaction {
        id: parse(row, "id")?,
        seq: row.get("seq")?,
        session_id: parse(row, "session_id")?,
        principal: principal(row)?,
        agent_id: AgentId::new(row.get::<_, String>("agent_id")?),
        input: row.get("input")?,
        inbound_id: row.get("inbound_id")?,
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

pub(crate) fn step(row: &Row<'_>) -> rusqlite::Result<Step> {
    let error = match (
        parse_opt::<ErrorCode>(row, "error_code")?,
        row.get::<_, Option<String>>("error_message")?,
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
        idempotency_key: row.get("idempotency_key")?,
        capability: row.get("capability")?,
        side_effect: parse_opt(row, "side_effect")?,
        input: json(row, "input")?,
        output: json_opt(row, "output")?,
        error,
        model: row.get("model")?,
        usage: TokenUsage::new(u64_of(row, "input_tokens")?, u64_of(row, "output_tokens")?),
        cost: Cost::from_nanos(row.get("cost_nanos")?),
        created_at: ts(row, "created_at")?,
        updated_at: ts(row, "updated_at")?,
    })
}

pub(crate) const OUTBOX_COLUMNS: &str =
    "id, interaction_id, session_id, channel, channel_key, text, created_at, delivered_at";

pub(crate) fn outbox(row: &Row<'_>) -> rusqlite::Result<OutboxMessage> {
    Ok(OutboxMessage {
        id: parse(row, "id")?,
        interaction_id: parse(row, "interaction_id")?,
        session_id: parse(row, "session_id")?,
        channel: row.get("channel")?,
        channel_key: row.get("channel_key")?,
        text: row.get("text")?,
        created_at: ts(row, "created_at")?,
        delivered_at: ts_opt(row, "delivered_at")?,
    })
}

pub(crate) const EVENT_COLUMNS: &str =
    "seq, kind, session_id, interaction_id, step_id, payload, at";

pub(crate) fn event(row: &Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        seq: row.get("seq")?,
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

pub(crate) fn task(row: &Row<'_>) -> rusqlite::Result<Task> {
    Ok(Task {
        id: parse(row, "id")?,
        kind: row.get("kind")?,
        payload: json(row, "payload")?,
        state: parse(row, "state")?,
        attempts: u32_of(row, "attempts")?,
        max_attempts: u32_of(row, "max_attempts")?,
        run_at: ts(row, "run_at")?,
        lease_until: ts_opt(row, "lease_until")?,
        lease_token: row.get("lease_token")?,
        last_error: row.get("last_error")?,
        created_at: ts(row, "created_at")?,
    })
}

/// A scope stored as its kind (`account`, `team`, `user`) and id.
pub(crate) fn scope(kind: &str, id: &str) -> Result<thinklio_core::Scope, StoreError> {
    thinklio_core::Scope::parse(kind, id)
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
