//! Conversions between rows and domain types, and the small query helpers
//! every module uses.

use std::str::FromStr;

use deadpool_postgres::GenericClient;
use serde_json::Value;
use thinklio_core::approval::StoredDecision;
use thinklio_core::store::rows;
pub(crate) use thinklio_core::store::rows::{
    AGENT_COLUMNS, AGENT_VERSION_COLUMNS, BUDGET_COLUMNS, DECISION_COLUMNS, EVENT_COLUMNS,
    FACT_COLUMNS, HISTORY_QUERY, IMAGE_COLUMNS, INTERACTION_COLUMNS, JOB_COLUMNS,
    NOTIFICATION_COLUMNS, OUTBOX_COLUMNS, SESSION_COLUMNS, STEP_COLUMNS, SUMMARY_COLUMNS,
    TASK_COLUMNS, image_ids_text,
};
use thinklio_core::{
    BudgetLimit, Event, EventKind, Fact, Image, Interaction, Job, JobNotification, JobObserver,
    OutboxMessage, Session, Step, StoreError, StoreResult, Summary, Task, Timestamp, Turn,
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

/// Rows of a statement, prepared once per connection; `tx` is a
/// transaction, or a connection outside one (one statement, its own
/// transaction).
pub(crate) async fn query(
    tx: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<Vec<Row>> {
    let statement = tx.prepare_cached(sql).await.map_err(backend)?;
    tx.query(&statement, params).await.map_err(backend)
}

/// The row of a statement, if any.
pub(crate) async fn query_opt(
    tx: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<Option<Row>> {
    let statement = tx.prepare_cached(sql).await.map_err(backend)?;
    tx.query_opt(&statement, params).await.map_err(backend)
}

/// Runs a statement; the rows it changed.
pub(crate) async fn execute(
    tx: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<u64> {
    let statement = tx.prepare_cached(sql).await.map_err(backend)?;
    tx.execute(&statement, params).await.map_err(backend)
}

pub(crate) fn corrupt(column: &str, e: impl std::fmt::Display) -> StoreError {
    rows::corrupt(column, e)
}

pub(crate) fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    column: &str,
) -> StoreResult<T> {
    row.try_get(column).map_err(|e| corrupt(column, e))
}

/// A PostgreSQL row as the shared mappings of `thinklio_core::store::rows`
/// read it.
pub(crate) struct Pg<'a>(pub(crate) &'a Row);

impl rows::Row for Pg<'_> {
    fn text_opt(&self, column: &str) -> StoreResult<Option<String>> {
        get(self.0, column)
    }

    fn int_opt(&self, column: &str) -> StoreResult<Option<i64>> {
        get(self.0, column)
    }

    fn blob_opt(&self, column: &str) -> StoreResult<Option<Vec<u8>>> {
        get(self.0, column)
    }

    fn real(&self, column: &str) -> StoreResult<f64> {
        get(self.0, column)
    }

    fn flag(&self, column: &str) -> StoreResult<bool> {
        get(self.0, column)
    }
}

pub(crate) fn parse<T: FromStr>(row: &Row, column: &str) -> StoreResult<T>
where
    T::Err: std::fmt::Display,
{
    rows::Row::parse(&Pg(row), column)
}

pub(crate) fn parse_opt<T: FromStr>(row: &Row, column: &str) -> StoreResult<Option<T>>
where
    T::Err: std::fmt::Display,
{
    rows::Row::parse_opt(&Pg(row), column)
}

pub(crate) fn json(row: &Row, column: &str) -> StoreResult<Value> {
    rows::Row::json(&Pg(row), column)
}

pub(crate) fn ts(row: &Row, column: &str) -> StoreResult<Timestamp> {
    rows::Row::ts(&Pg(row), column)
}

pub(crate) fn ts_opt(row: &Row, column: &str) -> StoreResult<Option<Timestamp>> {
    rows::Row::ts_opt(&Pg(row), column)
}

/// The shared mappings, for PostgreSQL rows.
macro_rules! mapped {
    ($($name:ident -> $ty:ty),* $(,)?) => {$(
        pub(crate) fn $name(row: &Row) -> StoreResult<$ty> {
            rows::$name(&Pg(row))
        }
    )*};
}

mapped!(
    session -> Session,
    interaction -> Interaction,
    step -> Step,
    outbox -> OutboxMessage,
    event -> Event,
    task -> Task,
    job -> Job,
    notification -> JobNotification,
    observer -> JobObserver,
    fact -> Fact,
    budget -> BudgetLimit,
    decision -> StoredDecision,
    summary -> Summary,
    turn -> Turn,
    image -> Image,
    stored_agent -> thinklio_core::StoredAgent,
    agent_version -> thinklio_core::AgentVersion,
    template -> thinklio_core::AgentTemplate,
);

/// A count or token number as a BIGINT.
pub(crate) fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A scope stored as its kind (`account`, `team`, `user`) and id.
pub(crate) fn scope(kind: &str, id: &str) -> Result<thinklio_core::Scope, StoreError> {
    thinklio_core::Scope::parse(kind, id)
}

/// The statement that appends an event and returns its place.
const APPEND_EVENT: &str = "INSERT INTO events (kind, session_id, interaction_id, step_id, payload, at) \
     VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq";

/// Appends an event in the caller's transaction and returns it.
pub(crate) async fn append_event(
    tx: &impl GenericClient,
    kind: EventKind,
    session_id: Option<String>,
    interaction_id: Option<String>,
    step_id: Option<String>,
    payload: &Value,
    at: Timestamp,
) -> StoreResult<Event> {
    let row = query_opt(
        tx,
        APPEND_EVENT,
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
    let ids = [session_id, interaction_id, step_id];
    Ok(logged(get(&row, "seq")?, kind, ids, payload.clone(), at))
}

/// The event appended at `seq`; `ids` are its session, interaction and
/// step.
pub(crate) fn logged(
    seq: i64,
    kind: EventKind,
    ids: [Option<String>; 3],
    payload: Value,
    at: Timestamp,
) -> Event {
    let [session_id, interaction_id, step_id] = ids;
    Event {
        seq,
        kind,
        session_id: session_id.and_then(|s| s.parse().ok()),
        interaction_id: interaction_id.and_then(|s| s.parse().ok()),
        step_id: step_id.and_then(|s| s.parse().ok()),
        payload,
        at,
    }
}

/// Announces new work to other processes' idle workers, at commit.
pub(crate) async fn signal(tx: &impl GenericClient, channel: &str) -> StoreResult<()> {
    execute(tx, "SELECT pg_notify($1, '')", &[&channel]).await?;
    Ok(())
}

pub(crate) use thinklio_core::store::rows::unfinished;
