//! `JobStore` on SQLite: jobs, observers and the outbox of notices, each
//! change of a job with its event and notices in one transaction.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use serde_json::Value;
use thinklio_core::{
    EventKind, Job, JobChange, JobId, JobNotification, JobObserver, JobState, JobStore, JobUpdate,
    NewJob, Notice, NotificationId, ObserverId, StoreError, StoreResult, Timestamp, Usefulness,
};

use crate::SqliteStore;
use crate::interactions::append_event;
use crate::rows::{JOB_COLUMNS, NOTIFICATION_COLUMNS, backend, job, notification, observer};

/// The notices due at `?1`, at most `?2`: each observer's oldest
/// undelivered one, if it is due.
const DUE: &str = "FROM job_notifications n JOIN job_observers o ON o.id = n.observer_id \
     WHERE n.delivered_at IS NULL AND n.due_at <= ?1 \
     AND NOT EXISTS (SELECT 1 FROM job_notifications e WHERE e.observer_id = n.observer_id \
         AND e.delivered_at IS NULL AND e.n < n.n) \
     ORDER BY n.due_at, n.n LIMIT ?2";

fn load(c: &rusqlite::Connection, id: JobId) -> StoreResult<Job> {
    c.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))
        .map_err(backend)?
        .query_row([id.to_string()], job)
        .optional()
        .map_err(backend)?
        .ok_or_else(|| StoreError::not_found("job", id))
}

fn load_notification(c: &rusqlite::Connection, id: &str) -> StoreResult<JobNotification> {
    c.prepare_cached(&format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM job_notifications n \
         JOIN job_observers o ON o.id = n.observer_id WHERE n.id = ?1"
    ))
    .map_err(backend)?
    .query_row([id], notification)
    .optional()
    .map_err(backend)?
    .ok_or_else(|| StoreError::not_found("job notification", id))
}

/// Writes one notice for each observer of `job`.
fn notify(
    c: &rusqlite::Connection,
    job: JobId,
    notice: Notice,
    now: Timestamp,
) -> StoreResult<Vec<JobNotification>> {
    let observers: Vec<String> = c
        .prepare_cached("SELECT id FROM job_observers WHERE job_id = ?1 ORDER BY n")
        .map_err(backend)?
        .query_map([job.to_string()], |r| r.get(0))
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    let mut out = Vec::with_capacity(observers.len());
    for observer in observers {
        let id = NotificationId::new().to_string();
        c.prepare_cached(
            "INSERT INTO job_notifications (id, observer_id, job_id, notice, due_at, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        )
        .map_err(backend)?
        .execute(params![
            id,
            observer,
            job.to_string(),
            notice.as_str(),
            now.as_millis()
        ])
        .map_err(backend)?;
        out.push(load_notification(c, &id)?);
    }
    Ok(out)
}

fn json_text(v: &Option<Value>) -> Option<String> {
    v.as_ref().map(Value::to_string)
}

/// Applies a change to a job, in the caller's transaction.
fn apply(
    c: &rusqlite::Connection,
    id: JobId,
    change: JobChange,
    now: Timestamp,
) -> StoreResult<JobUpdate> {
    let before = load(c, id)?;
    let state = change.check(id, before.state)?;
    c.prepare_cached(
        "UPDATE jobs SET state = ?2, progress = COALESCE(?3, progress), result = COALESCE(?4, result), \
         context = COALESCE(?5, context), error = COALESCE(?6, error), updated_at = ?7 WHERE id = ?1",
    )
    .map_err(backend)?
    .execute(params![
        id.to_string(),
        state.as_str(),
        json_text(&change.progress),
        json_text(&change.result),
        json_text(&change.context),
        change.error,
        now.as_millis()
    ])
    .map_err(backend)?;
    let mut notifications = Vec::new();
    let event = match change.event(&before) {
        Some(payload) => Some(append_event(
            c,
            EventKind::JobStateChanged,
            Some(before.session_id.to_string()),
            Some(before.interaction_id.to_string()),
            before.step_id.map(|s| s.to_string()),
            &payload.to_json(),
            now,
        )?),
        None => None,
    };
    let fanout = change.fanout(&before);
    if let Some(notice) = fanout.notice {
        notifications.extend(notify(c, id, notice, now)?);
    }
    if let Some(parent) = fanout.partial_for {
        let first = c
            .prepare_cached(
                "UPDATE jobs SET partial_notified = 1 WHERE id = ?1 AND usefulness = ?2 \
                 AND partial_notified = 0 AND state IN ('pending', 'dispatched', 'in_progress')",
            )
            .map_err(backend)?
            .execute(params![
                parent.to_string(),
                Usefulness::AnyCompletedSubjob.as_str()
            ])
            .map_err(backend)?;
        if first == 1 {
            notifications.extend(notify(c, parent, Notice::Partial, now)?);
        }
    }
    Ok(JobUpdate {
        job: load(c, id)?,
        notifications,
        event,
        taken_over: false,
    })
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn create_job(&self, new: NewJob, now: Timestamp) -> StoreResult<Job> {
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                if let Some(parent) = new.parent_id {
                    let p = load(&tx, parent)?;
                    if p.state.is_terminal() {
                        return Err(StoreError::Conflict(format!(
                            "job {parent} has ended ({}); it takes no subjobs",
                            p.state
                        )));
                    }
                }
                if let Some(key) = &new.key {
                    let existing: Option<String> = tx
                        .prepare_cached("SELECT id FROM jobs WHERE key = ?1")
                        .map_err(backend)?
                        .query_row([key], |r| r.get(0))
                        .optional()
                        .map_err(backend)?;
                    if let Some(id) = existing {
                        let id: JobId = id
                            .parse()
                            .map_err(|_| StoreError::Corrupt(format!("bad job id `{id}`")))?;
                        return load(&tx, id);
                    }
                }
                let id = JobId::new();
                tx.prepare_cached(
                    "INSERT INTO jobs (id, parent_id, session_id, interaction_id, step_id, account_id, team_id, \
                     user_id, capability, input, state, usefulness, deadline, created_at, updated_at, key) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'pending', ?11, ?12, ?13, ?13, ?14)",
                )
                .map_err(backend)?
                .execute(params![
                    id.to_string(),
                    new.parent_id.map(|p| p.to_string()),
                    new.session_id.to_string(),
                    new.interaction_id.to_string(),
                    new.step_id.map(|s| s.to_string()),
                    new.principal.account.to_string(),
                    new.principal.team.map(|t| t.to_string()),
                    new.principal.user.to_string(),
                    new.capability,
                    new.input.to_string(),
                    new.usefulness.as_str(),
                    new.deadline.map(Timestamp::as_millis),
                    now.as_millis(),
                    new.key,
                ])
                .map_err(backend)?;
                for kind in new.observers {
                    let kind = serde_json::to_string(&kind).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    tx.prepare_cached("INSERT INTO job_observers (id, job_id, kind) VALUES (?1, ?2, ?3)")
                        .map_err(backend)?
                        .execute(params![ObserverId::new().to_string(), id.to_string(), kind])
                        .map_err(backend)?;
                }
                let job = load(&tx, id)?;
                tx.commit().map_err(backend)?;
                Ok(job)
            })
            .await
    }

    async fn job(&self, id: JobId) -> StoreResult<Job> {
        self.conn.call(move |c| load(c, id)).await
    }

    async fn subjobs(&self, id: JobId) -> StoreResult<Vec<Job>> {
        self.conn
            .call(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE parent_id = ?1 ORDER BY n"
                ))
                .map_err(backend)?
                .query_map([id.to_string()], job)
                .map_err(backend)?
                .collect::<Result<_, _>>()
                .map_err(backend)
            })
            .await
    }

    async fn job_observers(&self, id: JobId) -> StoreResult<Vec<JobObserver>> {
        self.conn
            .call(move |c| {
                c.prepare_cached(
                    "SELECT id AS observer_id, job_id AS observer_job_id, kind FROM job_observers \
                     WHERE job_id = ?1 ORDER BY n",
                )
                .map_err(backend)?
                .query_map([id.to_string()], observer)
                .map_err(backend)?
                .collect::<Result<_, _>>()
                .map_err(backend)
            })
            .await
    }

    async fn update_job(
        &self,
        id: JobId,
        change: JobChange,
        now: Timestamp,
    ) -> StoreResult<JobUpdate> {
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let update = apply(&tx, id, change, now)?;
                tx.commit().map_err(backend)?;
                Ok(update)
            })
            .await
    }

    async fn claim_job(
        &self,
        capabilities: &[String],
        worker: &str,
        now: Timestamp,
        lease: std::time::Duration,
    ) -> StoreResult<Option<JobUpdate>> {
        let capabilities = capabilities.to_vec();
        let worker = worker.to_owned();
        let until = now.plus(lease);
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                // One connection serialises every claim, so the select and
                // the move in this transaction cannot interleave with another.
                let open: Vec<(String, String, String)> = tx
                    .prepare_cached(
                        "SELECT id, capability, state FROM jobs WHERE state = 'pending' \
                         OR (state = 'dispatched' AND lease_until <= ?1) \
                         ORDER BY state = 'dispatched', n",
                    )
                    .map_err(backend)?
                    .query_map([now.as_millis()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .map_err(backend)?
                    .collect::<Result<_, _>>()
                    .map_err(backend)?;
                let Some((id, _, state)) = open
                    .into_iter()
                    .find(|(_, cap, _)| capabilities.is_empty() || capabilities.contains(cap))
                else {
                    return Ok(None);
                };
                let id: JobId = id
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("bad job id `{id}`")))?;
                let update = if state == "pending" {
                    apply(&tx, id, JobChange::to(JobState::Dispatched), now)?
                } else {
                    JobUpdate {
                        job: load(&tx, id)?,
                        notifications: Vec::new(),
                        event: None,
                        taken_over: true,
                    }
                };
                tx.prepare_cached(
                    "UPDATE jobs SET lease_owner = ?2, lease_until = ?3 WHERE id = ?1",
                )
                .map_err(backend)?
                .execute(params![id.to_string(), worker, until.as_millis()])
                .map_err(backend)?;
                tx.commit().map_err(backend)?;
                Ok(Some(update))
            })
            .await
    }

    async fn renew_job(&self, id: JobId, worker: &str, until: Timestamp) -> StoreResult<bool> {
        let worker = worker.to_owned();
        self.conn
            .call(move |c| {
                let changed = c
                    .prepare_cached(
                        "UPDATE jobs SET lease_until = ?3 WHERE id = ?1 AND lease_owner = ?2 \
                         AND state = 'dispatched'",
                    )
                    .map_err(backend)?
                    .execute(params![id.to_string(), worker, until.as_millis()])
                    .map_err(backend)?;
                Ok(changed == 1)
            })
            .await
    }

    async fn overdue_jobs(&self, now: Timestamp) -> StoreResult<Vec<Job>> {
        self.conn
            .call(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('pending', 'dispatched', 'in_progress') \
                     AND deadline IS NOT NULL AND deadline <= ?1 ORDER BY deadline, n"
                ))
                .map_err(backend)?
                .query_map([now.as_millis()], job)
                .map_err(backend)?
                .collect::<Result<_, _>>()
                .map_err(backend)
            })
            .await
    }

    async fn unfinished_jobs(&self) -> StoreResult<Vec<Job>> {
        self.conn
            .call(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('pending', 'dispatched', 'in_progress') ORDER BY n"
                ))
                .map_err(backend)?
                .query_map([], job)
                .map_err(backend)?
                .collect::<Result<_, _>>()
                .map_err(backend)
            })
            .await
    }

    async fn due_notifications(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<JobNotification>> {
        self.conn
            .call(move |c| {
                c.prepare_cached(&format!("SELECT {NOTIFICATION_COLUMNS} {DUE}"))
                    .map_err(backend)?
                    .query_map(params![now.as_millis(), limit], notification)
                    .map_err(backend)?
                    .collect::<Result<_, _>>()
                    .map_err(backend)
            })
            .await
    }

    async fn claim_notifications(
        &self,
        now: Timestamp,
        lease: std::time::Duration,
        limit: u32,
    ) -> StoreResult<Vec<JobNotification>> {
        let until = now.plus(lease);
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                // One connection serialises every claim: the select and the
                // update cannot interleave with another deliverer's.
                let mut due: Vec<JobNotification> = tx
                    .prepare_cached(&format!("SELECT {NOTIFICATION_COLUMNS} {DUE}"))
                    .map_err(backend)?
                    .query_map(params![now.as_millis(), limit], notification)
                    .map_err(backend)?
                    .collect::<Result<_, _>>()
                    .map_err(backend)?;
                for n in &mut due {
                    tx.prepare_cached("UPDATE job_notifications SET due_at = ?2 WHERE id = ?1")
                        .map_err(backend)?
                        .execute(params![n.id.to_string(), until.as_millis()])
                        .map_err(backend)?;
                    n.due_at = until;
                }
                tx.commit().map_err(backend)?;
                Ok(due)
            })
            .await
    }

    async fn notification_delivered(
        &self,
        id: NotificationId,
        now: Timestamp,
    ) -> StoreResult<bool> {
        self.conn
            .call(move |c| {
                let id = id.to_string();
                let changed = c
                    .prepare_cached(
                        "UPDATE job_notifications SET delivered_at = ?2 WHERE id = ?1 AND delivered_at IS NULL",
                    )
                    .map_err(backend)?
                    .execute(params![id, now.as_millis()])
                    .map_err(backend)?;
                if changed == 0 {
                    load_notification(c, &id)?;
                }
                Ok(changed == 1)
            })
            .await
    }

    async fn notification_failed(
        &self,
        id: NotificationId,
        error: &str,
        retry_at: Timestamp,
    ) -> StoreResult<JobNotification> {
        let error = error.to_owned();
        self.conn
            .call(move |c| {
                let id = id.to_string();
                let changed = c
                    .prepare_cached(
                        "UPDATE job_notifications SET attempts = attempts + 1, last_error = ?2, due_at = ?3 \
                         WHERE id = ?1 AND delivered_at IS NULL",
                    )
                    .map_err(backend)?
                    .execute(params![id, error, retry_at.as_millis()])
                    .map_err(backend)?;
                let n = load_notification(c, &id)?;
                if changed == 0 {
                    return Err(StoreError::Conflict(format!("notification {id} was delivered already")));
                }
                Ok(n)
            })
            .await
    }
}
