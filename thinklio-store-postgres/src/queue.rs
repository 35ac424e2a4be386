//! `QueueStore` on PostgreSQL: claims take the oldest due task with
//! `FOR UPDATE SKIP LOCKED`, so workers in many processes never take the same
//! one, and a lease that runs out makes the task claimable again.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use serde_json::json;
use thinklio_core::{
    EventKind, NewTask, QueueStore, StoreError, StoreResult, Task, TaskId, TaskRetry, Timestamp,
};
use uuid::Uuid;

use crate::PostgresStore;
use crate::rows::{self, TASK_COLUMNS, append_event, backend, execute, query, query_opt};

async fn load_task(tx: &impl GenericClient, id: &str, lock: bool) -> StoreResult<Option<Task>> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    query_opt(
        tx,
        &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1{lock}"),
        &[&id],
    )
    .await?
    .map(|r| rows::task(&r))
    .transpose()
}

async fn require_lease(tx: &impl GenericClient, id: TaskId, token: &str) -> StoreResult<Task> {
    let task = load_task(tx, &id.to_string(), true)
        .await?
        .ok_or_else(|| StoreError::not_found("task", id))?;
    if task.state != thinklio_core::TaskState::Leased || task.lease_token.as_deref() != Some(token)
    {
        return Err(StoreError::Conflict(format!(
            "task {id} is no longer leased by this worker (its lease ran out and it was claimed again)"
        )));
    }
    Ok(task)
}

async fn dead_letter(
    tx: &impl GenericClient,
    task: &Task,
    error: &str,
    now: Timestamp,
) -> StoreResult<()> {
    execute(
        tx,
        "UPDATE tasks SET state = 'dead', lease_until = NULL, lease_token = NULL, last_error = $2, updated_at = $3 \
         WHERE id = $1",
        &[&task.id.to_string(), &error, &now.as_millis()],
    )
    .await?;
    append_event(
        tx,
        EventKind::TaskDeadLettered,
        None,
        None,
        None,
        &json!({ "task_id": task.id, "kind": task.kind, "attempts": task.attempts, "error": error }),
        now,
    )
    .await?;
    Ok(())
}

/// Writes a new pending task; shared with `finish_step`, which enqueues a
/// reply's tasks in the reply's commit.
pub(crate) async fn insert_task(
    tx: &impl GenericClient,
    channel: &str,
    new: NewTask,
    now: Timestamp,
) -> StoreResult<Task> {
    let owner = new.owner.map(|(a, u)| (a.to_string(), u.to_string()));
    let task = new.created(now);
    execute(
        tx,
        "INSERT INTO tasks (id, kind, payload, state, attempts, max_attempts, run_at, created_at, updated_at, \
         owner_account, owner_user) VALUES ($1, $2, $3, 'pending', 0, $4, $5, $6, $6, $7, $8)",
        &[
            &task.id.to_string(),
            &task.kind,
            &task.payload.to_string(),
            &i64::from(task.max_attempts),
            &task.run_at.as_millis(),
            &now.as_millis(),
            &owner.as_ref().map(|o| o.0.as_str()),
            &owner.as_ref().map(|o| o.1.as_str()),
        ],
    )
    .await?;
    crate::rows::signal(tx, channel).await?;
    Ok(task)
}

#[async_trait]
impl QueueStore for PostgresStore {
    async fn wait_for_work(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.work.notified()).await;
    }

    async fn enqueue(&self, new: NewTask) -> StoreResult<Task> {
        let now = self.clock.now();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let task = insert_task(&tx, &self.channel, new, now).await?;
        tx.commit().await.map_err(backend)?;
        Ok(task)
    }

    async fn claim(
        &self,
        now: Timestamp,
        lease: Duration,
        kinds: &[String],
    ) -> StoreResult<Option<Task>> {
        let kinds = kinds.to_vec();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        loop {
            let candidate = query_opt(
                &tx,
                &format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE ((state = 'pending' AND run_at <= $1) \
                     OR (state = 'leased' AND lease_until <= $1)) \
                     AND (cardinality($2::TEXT[]) = 0 OR kind = ANY($2)) \
                     ORDER BY run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED"
                ),
                &[&now.as_millis(), &kinds],
            )
            .await?
            .map(|r| rows::task(&r))
            .transpose()?;
            let Some(task) = candidate else {
                tx.commit().await.map_err(backend)?;
                return Ok(None);
            };
            // A lease that ran out on the last allowed attempt: that attempt
            // counts, so the task is dead, not run again.
            if task.attempts >= task.max_attempts {
                dead_letter(&tx, &task, "the lease of the last attempt ran out", now).await?;
                continue;
            }
            let token = Uuid::now_v7().to_string();
            let until = now.plus(lease);
            execute(
                &tx,
                "UPDATE tasks SET state = 'leased', attempts = attempts + 1, lease_until = $2, lease_token = $3, \
                 updated_at = $4 WHERE id = $1",
                &[&task.id.to_string(), &until.as_millis(), &token, &now.as_millis()],
            )
            .await?;
            tx.commit().await.map_err(backend)?;
            return Ok(Some(Task {
                state: thinklio_core::TaskState::Leased,
                attempts: task.attempts + 1,
                lease_until: Some(until),
                lease_token: Some(token),
                ..task
            }));
        }
    }

    async fn complete_task(&self, id: TaskId, lease_token: &str) -> StoreResult<()> {
        let now = self.clock.now();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        require_lease(&tx, id, lease_token).await?;
        execute(
            &tx,
            "UPDATE tasks SET state = 'done', lease_until = NULL, lease_token = NULL, updated_at = $2 WHERE id = $1",
            &[&id.to_string(), &now.as_millis()],
        )
        .await?;
        tx.commit().await.map_err(backend)
    }

    async fn fail_task(
        &self,
        id: TaskId,
        lease_token: &str,
        error: &str,
        retry: TaskRetry,
    ) -> StoreResult<Task> {
        let now = self.clock.now();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let task = require_lease(&tx, id, lease_token).await?;
        match retry {
            TaskRetry::At(at) => {
                execute(
                    &tx,
                    "UPDATE tasks SET state = 'pending', run_at = $2, lease_until = NULL, lease_token = NULL, \
                     last_error = $3, updated_at = $4 WHERE id = $1",
                    &[&id.to_string(), &at.as_millis(), &error, &now.as_millis()],
                )
                .await?;
            }
            TaskRetry::DeadLetter => dead_letter(&tx, &task, error, now).await?,
        }
        let task = load_task(&tx, &id.to_string(), false)
            .await?
            .ok_or_else(|| StoreError::not_found("task", id))?;
        tx.commit().await.map_err(backend)?;
        Ok(task)
    }

    async fn task(&self, id: TaskId) -> StoreResult<Task> {
        let client = self.client().await?;
        load_task(&client, &id.to_string(), false)
            .await?
            .ok_or_else(|| StoreError::not_found("task", id))
    }

    async fn dead_letters(&self) -> StoreResult<Vec<Task>> {
        let client = self.client().await?;
        query(
            &client,
            &format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE state = 'dead' ORDER BY created_at, id"
            ),
            &[],
        )
        .await?
        .iter()
        .map(rows::task)
        .collect()
    }

    async fn requeue(&self, id: TaskId, run_at: Timestamp) -> StoreResult<Task> {
        let now = self.clock.now();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let changed = execute(
            &tx,
            "UPDATE tasks SET state = 'pending', attempts = 0, run_at = $2, updated_at = $3 \
             WHERE id = $1 AND state = 'dead'",
            &[&id.to_string(), &run_at.as_millis(), &now.as_millis()],
        )
        .await?;
        let task = load_task(&tx, &id.to_string(), false)
            .await?
            .ok_or_else(|| StoreError::not_found("task", id))?;
        if changed != 1 {
            return Err(StoreError::Conflict(format!(
                "task {id} is {}, not dead-lettered; only dead letters can be requeued",
                task.state
            )));
        }
        tx.commit().await.map_err(backend)?;
        Ok(task)
    }
}
