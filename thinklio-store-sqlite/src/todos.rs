//! `TodoStore` on SQLite.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};
use thinklio_core::{AccountId, StoreError, StoreResult, Timestamp, Todo, TodoStore, UserId};

use crate::SqliteStore;
use crate::rows::{self, backend};

const COLUMNS: &str = "account_id, user_id, number, text, created_at, done_at";

fn todo(row: &Row<'_>) -> rusqlite::Result<Todo> {
    Ok(Todo {
        number: row.get("number")?,
        account: rows::parse(row, "account_id")?,
        user: rows::parse(row, "user_id")?,
        text: row.get("text")?,
        done_at: rows::ts_opt(row, "done_at")?,
        created_at: rows::ts(row, "created_at")?,
    })
}

fn load(
    c: &rusqlite::Connection,
    account: &str,
    user: &str,
    number: i64,
) -> StoreResult<Option<Todo>> {
    c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM todos WHERE account_id = ?1 AND user_id = ?2 AND number = ?3"
    ))
    .map_err(backend)?
    .query_row(params![account, user, number], todo)
    .optional()
    .map_err(backend)
}

#[async_trait]
impl TodoStore for SqliteStore {
    async fn add_todo(
        &self,
        account: AccountId,
        user: UserId,
        text: &str,
        key: &str,
    ) -> StoreResult<Todo> {
        let now = self.clock.now();
        let (text, key) = (text.to_owned(), key.to_owned());
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let (a, u) = (account.to_string(), user.to_string());
                let existing: Option<i64> = tx
                    .prepare_cached("SELECT number FROM todos WHERE account_id = ?1 AND user_id = ?2 AND add_key = ?3")
                    .map_err(backend)?
                    .query_row(params![a, u, key], |r| r.get(0))
                    .optional()
                    .map_err(backend)?;
                let number = match existing {
                    Some(n) => n,
                    None => {
                        let number: i64 = tx
                            .prepare_cached(
                                "SELECT COALESCE(MAX(number), 0) + 1 FROM todos WHERE account_id = ?1 AND user_id = ?2",
                            )
                            .map_err(backend)?
                            .query_row(params![a, u], |r| r.get(0))
                            .map_err(backend)?;
                        tx.prepare_cached(
                            "INSERT INTO todos (account_id, user_id, number, text, add_key, created_at) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        )
                        .map_err(backend)?
                        .execute(params![a, u, number, text, key, now.as_millis()])
                        .map_err(backend)?;
                        number
                    }
                };
                let item = load(&tx, &a, &u, number)?.ok_or_else(|| StoreError::not_found("todo", number))?;
                tx.commit().map_err(backend)?;
                Ok(item)
            })
            .await
    }

    async fn todos(
        &self,
        account: AccountId,
        user: UserId,
        include_done: bool,
    ) -> StoreResult<Vec<Todo>> {
        self.conn
            .call(move |c| {
                let filter = if include_done { "" } else { "AND done_at IS NULL" };
                c.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM todos WHERE account_id = ?1 AND user_id = ?2 {filter} ORDER BY number"
                ))
                .map_err(backend)?
                .query_map(params![account.to_string(), user.to_string()], todo)
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)
            })
            .await
    }

    async fn complete_todo(
        &self,
        account: AccountId,
        user: UserId,
        number: i64,
        at: Timestamp,
    ) -> StoreResult<Todo> {
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let (a, u) = (account.to_string(), user.to_string());
                tx.prepare_cached(
                    "UPDATE todos SET done_at = ?4 WHERE account_id = ?1 AND user_id = ?2 AND number = ?3 \
                     AND done_at IS NULL",
                )
                .map_err(backend)?
                .execute(params![a, u, number, at.as_millis()])
                .map_err(backend)?;
                let item = load(&tx, &a, &u, number)?.ok_or_else(|| StoreError::not_found("todo", number))?;
                tx.commit().map_err(backend)?;
                Ok(item)
            })
            .await
    }
}
