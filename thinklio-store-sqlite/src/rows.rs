//! Conversions between rows and domain types.

use std::str::FromStr;

use rusqlite::Row;
use thinklio_core::approval::StoredDecision;
use thinklio_core::store::rows;
pub(crate) use thinklio_core::store::rows::{
    AGENT_COLUMNS, AGENT_VERSION_COLUMNS, BUDGET_COLUMNS, DECISION_COLUMNS, EVENT_COLUMNS,
    FACT_COLUMNS, HISTORY_QUERY, IMAGE_COLUMNS, INTERACTION_COLUMNS, JOB_COLUMNS,
    NOTIFICATION_COLUMNS, OUTBOX_COLUMNS, SESSION_COLUMNS, STEP_COLUMNS, SUMMARY_COLUMNS,
    TASK_COLUMNS, image_ids_text,
};
use thinklio_core::{
    BudgetLimit, Event, Fact, Image, Interaction, Job, JobNotification, JobObserver, OutboxMessage,
    Session, Step, StoreError, StoreResult, Summary, Task, Timestamp, Turn,
};

pub(crate) fn backend(e: rusqlite::Error) -> StoreError {
    match e {
        // A shared mapping's own error, carried through a row callback.
        rusqlite::Error::FromSqlConversionFailure(i, t, inner) => {
            match inner.downcast::<StoreError>() {
                Ok(e) => *e,
                Err(inner) => StoreError::Backend(Box::new(
                    rusqlite::Error::FromSqlConversionFailure(i, t, inner),
                )),
            }
        }
        e => StoreError::Backend(Box::new(e)),
    }
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

/// A rusqlite row as the shared mappings of `thinklio_core::store::rows`
/// read it.
pub(crate) struct Sql<'a, 'b>(pub(crate) &'a Row<'b>);

impl rows::Row for Sql<'_, '_> {
    fn text_opt(&self, column: &str) -> StoreResult<Option<String>> {
        self.0.get(column).map_err(|e| rows::corrupt(column, e))
    }

    fn int_opt(&self, column: &str) -> StoreResult<Option<i64>> {
        self.0.get(column).map_err(|e| rows::corrupt(column, e))
    }

    fn blob_opt(&self, column: &str) -> StoreResult<Option<Vec<u8>>> {
        self.0.get(column).map_err(|e| rows::corrupt(column, e))
    }

    fn real(&self, column: &str) -> StoreResult<f64> {
        self.0.get(column).map_err(|e| rows::corrupt(column, e))
    }

    fn flag(&self, column: &str) -> StoreResult<bool> {
        self.0.get(column).map_err(|e| rows::corrupt(column, e))
    }
}

/// Reads a column into a type parsed from text; corrupt text becomes a
/// conversion error.
pub(crate) fn parse<T: FromStr>(row: &Row<'_>, idx: &str) -> rusqlite::Result<T>
where
    T::Err: std::fmt::Display,
{
    rows::Row::parse(&Sql(row), idx).map_err(conversion)
}

pub(crate) fn parse_opt<T: FromStr>(row: &Row<'_>, idx: &str) -> rusqlite::Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    rows::Row::parse_opt(&Sql(row), idx).map_err(conversion)
}

pub(crate) fn ts(row: &Row<'_>, idx: &str) -> rusqlite::Result<Timestamp> {
    Ok(Timestamp::from_millis(row.get(idx)?))
}

pub(crate) fn ts_opt(row: &Row<'_>, idx: &str) -> rusqlite::Result<Option<Timestamp>> {
    Ok(row.get::<_, Option<i64>>(idx)?.map(Timestamp::from_millis))
}

/// The shared mappings, as rusqlite's row callbacks take them; a value that
/// does not read comes back out of [`backend`] as `StoreError::Corrupt`.
macro_rules! mapped {
    ($($name:ident -> $ty:ty),* $(,)?) => {$(
        pub(crate) fn $name(row: &Row<'_>) -> rusqlite::Result<$ty> {
            rows::$name(&Sql(row)).map_err(conversion)
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

/// A scope stored as its kind (`account`, `team`, `user`) and id.
pub(crate) fn scope(kind: &str, id: &str) -> Result<thinklio_core::Scope, StoreError> {
    thinklio_core::Scope::parse(kind, id)
}

pub(crate) use thinklio_core::store::rows::unfinished;
