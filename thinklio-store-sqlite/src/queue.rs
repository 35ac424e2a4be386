//! `QueueStore` on SQLite.

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use serde_json::json;
use thinklio_core::{
    EventKind, NewTask, QueueStore, StoreError, StoreResult, Task, TaskId, TaskRetry, Timestamp,
};
use uuid::Uuid;

use crate::SqliteStore;
use crate::interactions::append_event;
use crate::rows::{self, TASK_COLUMNS, backend};

fn load_task(tx: &rusqlite::Connection, id: &str) -> StoreResult<Option<Task>> {
    tx.prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"))
        .map_err(backend)?
        .query_row([id], rows::task)
        .optional()
        .map_err(backend)
}

fn require_lease(tx: &rusqlite::Connection, id: TaskId, token: &str) -> StoreResult<Task> {
    let task = load_task(tx, &id.to_string())?.ok_or_else(|| StoreError::not_found("task", id))?;
    if task.state != thinklio_core::TaskState::Leased || task.lease_token.as_deref() != Some(token)
    {
        return Err(StoreError::Conflict(format!(
            "task {id} is no longer leased by this worker (its lease ran out and it was claimed again)"
        )));
    }
    Ok(task)
}

fn dead_letter(
    tx: &rusqlite::Connection,
    task: &Task,
    error: &str,
    now: Timestamp,
) -> StoreResult<()> {
    tx.prepare_cached(
        "UPDATE tasks SET state = 'dead', lease_until = NULL, lease_token = NULL, last_error = ?2, updated_at = ?3 \
         WHERE id = ?1",
    )
    .map_err(backend)?
    .execute(params![task.id.to_string(), error, now.as_millis()])
    .map_err(backend)?;
    append_event(
        tx,
        EventKind::TaskDeadLettered,
        None,
        None,
        None,
        &json!({ "task_id": task.id, "kind": task.kind, "attempts": task.attempts, "error": error }),
        now,
    )?;
    Ok(())
}

/// Writes a new pending task; shared with `finish_step`, which enqueues a
/// reply's tasks in the reply's commit.
pub(crate) fn insert_task(
    c: &rusqlite::Connection,
    new: NewTask,
    now: Timestamp,
) -> StoreResult<Task> {
    let owner = new.owner.map(|(a, u)| (a.to_string(), u.to_string()));
    let task = new.created(now);
    c.prepare_cached(
        "INSERT INTO tasks (id, kind, payload, state, attempts, max_attempts, run_at, created_at, updated_at, \
         owner_account, owner_user) VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?5, ?6, ?6, ?7, ?8)",
    )
    .map_err(backend)?
    .execute(params![
        task.id.to_string(),
        task.kind,
        task.payload.to_string(),
        task.max_attempts,
        task.run_at.as_millis(),
        now.as_millis(),
        owner.as_ref().map(|o| &o.0),
        owner.as_ref().map(|o| &o.1),
    ])
    .map_err(backend)?;
    Ok(task)
}

#[async_trait]
impl QueueStore for SqliteStore {
    async fn enqueue(&self, new: NewTask) -> StoreResult<Task> {
        let now = self.clock.now();
        self.conn.call(move |c| insert_task(c, new, now)).await
    }

    async fn claim(
        &self,
        now: Timestamp,
        lease: Duration,
        kinds: &[String],
    ) -> StoreResult<Option<Task>> {
        let kinds = kinds.to_vec();
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let kind_filter = if kinds.is_empty() {
                    String::new()
                } else {
                    let marks: Vec<String> = (0..kinds.len()).map(|i| format!("?{}", i + 2)).collect();
                    format!("AND kind IN ({})", marks.join(", "))
                };
                let sql = format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE ((state = 'pending' AND run_at <= ?1) \
                     OR (state = 'leased' AND lease_until <= ?1)) {kind_filter} ORDER BY run_at, id LIMIT 1"
                );
                loop {
                    let mut values: Vec<rusqlite::types::Value> = vec![now.as_millis().into()];
                    values.extend(kinds.iter().map(|k| rusqlite::types::Value::from(k.clone())));
                    let candidate = tx
                        .prepare_cached(&sql)
                        .map_err(backend)?
                        .query_row(rusqlite::params_from_iter(values), rows::task)
                        .optional()
                        .map_err(backend)?;
                    let Some(task) = candidate else {
                        tx.commit().map_err(backend)?;
                        return Ok(None);
                    };
                    // A lease that ran out on the last allowed attempt: that
                    // attempt counts, so the task is dead, not run again.
                    if task.attempts >= task.max_attempts {
                        dead_letter(&tx, &task, "the lease of the last attempt ran out", now)?;
                        continue;
                    }
                    let token = Uuid::now_v7().to_string();
                    let until = now.plus(lease);
                    tx.prepare_cached(
                        "UPDATE tasks SET state = 'leased', attempts = attempts + 1, lease_until = ?2, lease_token = ?3, \
                         updated_at = ?4 WHERE id = ?1",
                    )
                    .map_err(backend)?
                    .execute(params![task.id.to_string(), until.as_millis(), token, now.as_millis()])
                    .map_err(backend)?;
                    tx.commit().map_err(backend)?;
                    return Ok(Some(Task {
                        state: thinklio_core::TaskState::Leased,
                        attempts: task.attempts + 1,
                        lease_until: Some(until),
                        lease_token: Some(token),
                        ..task
                    }));
                }
            })
            .await
    }

    async fn complete_task(&self, id: TaskId, lease_token: &str) -> StoreResult<()> {
        let now = self.clock.now();
        let token = lease_token.to_owned();
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                require_lease(&tx, id, &token)?;
                tx.prepare_cached(
                    "UPDATE tasks SET state = 'done', lease_until = NULL, lease_token = NULL, updated_at = ?2 WHERE id = ?1",
                )
                .map_err(backend)?
                .execute(params![id.to_string(), now.as_millis()])
                .map_err(backend)?;
                tx.commit().map_err(backend)
            })
            .await
    }

    async fn fail_task(
        &self,
        id: TaskId,
        lease_token: &str,
        error: &str,
        retry: TaskRetry,
    ) -> StoreResult<Task> {
        let now = self.clock.now();
        let token = lease_token.to_owned();
        let error = error.to_owned();
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let task = require_lease(&tx, id, &token)?;
                match retry {
                    TaskRetry::At(at) => {
                        tx.prepare_cached(
                            "UPDATE tasks SET state = 'pending', run_at = ?2, lease_until = NULL, lease_token = NULL, \
                             last_error = ?3, updated_at = ?4 WHERE id = ?1",
                        )
                        .map_err(backend)?
                        .execute(params![id.to_string(), at.as_millis(), error, now.as_millis()])
                        .map_err(backend)?;
                    }
                    TaskRetry::DeadLetter => dead_letter(&tx, &task, &error, now)?,
                }
                let task = load_task(&tx, &id.to_string())?.ok_or_else(|| StoreError::not_found("task", id))?;
                tx.commit().map_err(backend)?;
                Ok(task)
            })
            .await
    }

    async fn task(&self, id: TaskId) -> StoreResult<Task> {
        self.conn
            .call(move |c| {
                load_task(c, &id.to_string())?.ok_or_else(|| StoreError::not_found("task", id))
            })
            .await
    }

    async fn dead_letters(&self) -> StoreResult<Vec<Task>> {
        self.conn
            .call(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE state = 'dead' ORDER BY created_at, id"
                ))
                .map_err(backend)?
                .query_map([], rows::task)
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)
            })
            .await
    }

    async fn requeue(&self, id: TaskId, run_at: Timestamp) -> StoreResult<Task> {
        let now = self.clock.now();
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let changed = tx
                    .prepare_cached(
                        "UPDATE tasks SET state = 'pending', attempts = 0, run_at = ?2, updated_at = ?3 \
                         WHERE id = ?1 AND state = 'dead'",
                    )
                    .map_err(backend)?
                    .execute(params![id.to_string(), run_at.as_millis(), now.as_millis()])
                    .map_err(backend)?;
                let task = load_task(&tx, &id.to_string())?.ok_or_else(|| StoreError::not_found("task", id))?;
                if changed != 1 {
                    return Err(StoreError::Conflict(format!(
                        "task {id} is {}, not dead-lettered; only dead letters can be requeued",
                        task.state
                    )));
                }
                tx.commit().map_err(backend)?;
                Ok(task)
            })
            .await
    }
}
