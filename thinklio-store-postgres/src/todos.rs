//! `TodoStore` on PostgreSQL.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use thinklio_core::{AccountId, StoreError, StoreResult, Timestamp, Todo, TodoStore, UserId};
use tokio_postgres::Row;

use crate::PostgresStore;
use crate::rows::{self, backend, execute, query, query_opt};

const COLUMNS: &str = "account_id, user_id, number, text, created_at, done_at";

fn todo(row: &Row) -> StoreResult<Todo> {
    Ok(Todo {
        number: rows::get(row, "number")?,
        account: rows::parse(row, "account_id")?,
        user: rows::parse(row, "user_id")?,
        text: rows::get(row, "text")?,
        done_at: rows::ts_opt(row, "done_at")?,
        created_at: rows::ts(row, "created_at")?,
    })
}

async fn load(
    tx: &impl GenericClient,
    account: &str,
    user: &str,
    number: i64,
) -> StoreResult<Option<Todo>> {
    query_opt(
        tx,
        &format!(
            "SELECT {COLUMNS} FROM todos WHERE account_id = $1 AND user_id = $2 AND number = $3"
        ),
        &[&account, &user, &number],
    )
    .await?
    .map(|r| todo(&r))
    .transpose()
}

#[async_trait]
impl TodoStore for PostgresStore {
    async fn add_todo(
        &self,
        account: AccountId,
        user: UserId,
        text: &str,
        key: &str,
    ) -> StoreResult<Todo> {
        let now = self.clock.now();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let (a, u) = (account.to_string(), user.to_string());
        // One writer per owner's list at a time: numbers stay dense and a key
        // added twice at once is added once.
        execute(
            &tx,
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&format!("todos:{a}:{u}")],
        )
        .await?;
        let existing = query_opt(
            &tx,
            "SELECT number FROM todos WHERE account_id = $1 AND user_id = $2 AND add_key = $3",
            &[&a, &u, &key],
        )
        .await?;
        let number: i64 = match existing {
            Some(r) => rows::get(&r, "number")?,
            None => {
                let next = query_opt(
                    &tx,
                    "SELECT COALESCE(MAX(number), 0) + 1 AS n FROM todos WHERE account_id = $1 AND user_id = $2",
                    &[&a, &u],
                )
                .await?
                .ok_or_else(|| StoreError::Corrupt("no todo number".into()))?;
                let number: i64 = rows::get(&next, "n")?;
                execute(
                    &tx,
                    "INSERT INTO todos (account_id, user_id, number, text, add_key, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[&a, &u, &number, &text, &key, &now.as_millis()],
                )
                .await?;
                number
            }
        };
        let item = load(&tx, &a, &u, number)
            .await?
            .ok_or_else(|| StoreError::not_found("todo", number))?;
        tx.commit().await.map_err(backend)?;
        Ok(item)
    }

    async fn todos(
        &self,
        account: AccountId,
        user: UserId,
        include_done: bool,
    ) -> StoreResult<Vec<Todo>> {
        let filter = if include_done {
            ""
        } else {
            "AND done_at IS NULL"
        };
        let client = self.client().await?;
        query(
            &client,
            &format!(
                "SELECT {COLUMNS} FROM todos WHERE account_id = $1 AND user_id = $2 {filter} ORDER BY number"
            ),
            &[&account.to_string(), &user.to_string()],
        )
        .await?
        .iter()
        .map(todo)
        .collect()
    }

    async fn complete_todo(
        &self,
        account: AccountId,
        user: UserId,
        number: i64,
        at: Timestamp,
    ) -> StoreResult<Todo> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let (a, u) = (account.to_string(), user.to_string());
        execute(
            &tx,
            "UPDATE todos SET done_at = $4 WHERE account_id = $1 AND user_id = $2 AND number = $3 \
             AND done_at IS NULL",
            &[&a, &u, &number, &at.as_millis()],
        )
        .await?;
        let item = load(&tx, &a, &u, number)
            .await?
            .ok_or_else(|| StoreError::not_found("todo", number))?;
        tx.commit().await.map_err(backend)?;
        Ok(item)
    }
}
