//! `JobStore` on PostgreSQL: each change of a job locks its row and writes
//! the change, its event and its notices in one transaction; claims of jobs
//! and of notices skip rows another worker holds (`FOR UPDATE SKIP LOCKED`).

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use serde_json::Value;
use thinklio_core::{
    EventKind, Job, JobChange, JobId, JobNotification, JobObserver, JobState, JobStore, JobUpdate,
    NewJob, Notice, NotificationId, ObserverId, StoreError, StoreResult, Timestamp, Usefulness,
};

use crate::PostgresStore;
use crate::rows::{
    self, JOB_COLUMNS, NOTIFICATION_COLUMNS, append_event, backend, execute, job, notification,
    observer, query, query_opt,
};

/// The notices due at `$1`, at most `$2`: each observer's oldest
/// undelivered one, if it is due.
const DUE: &str = "FROM job_notifications n JOIN job_observers o ON o.id = n.observer_id \
     WHERE n.delivered_at IS NULL AND n.due_at <= $1 \
     AND NOT EXISTS (SELECT 1 FROM job_notifications e WHERE e.observer_id = n.observer_id \
         AND e.delivered_at IS NULL AND e.n < n.n) \
     ORDER BY n.due_at, n.n LIMIT $2";

async fn load(tx: &impl GenericClient, id: JobId, lock: bool) -> StoreResult<Job> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let row = query_opt(
        tx,
        &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1{lock}"),
        &[&id.to_string()],
    )
    .await?
    .ok_or_else(|| StoreError::not_found("job", id))?;
    job(&row)
}

async fn load_notification(tx: &impl GenericClient, id: &str) -> StoreResult<JobNotification> {
    let row = query_opt(
        tx,
        &format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM job_notifications n \
             JOIN job_observers o ON o.id = n.observer_id WHERE n.id = $1"
        ),
        &[&id],
    )
    .await?
    .ok_or_else(|| StoreError::not_found("job notification", id))?;
    notification(&row)
}

/// Writes one notice for each observer of `job`.
async fn notify(
    tx: &impl GenericClient,
    channel: &str,
    job: JobId,
    notice: Notice,
    now: Timestamp,
) -> StoreResult<Vec<JobNotification>> {
    let observers = query(
        tx,
        "SELECT id FROM job_observers WHERE job_id = $1 ORDER BY n",
        &[&job.to_string()],
    )
    .await?;
    let mut out = Vec::with_capacity(observers.len());
    for o in observers {
        let observer: String = rows::get(&o, "id")?;
        let id = NotificationId::new().to_string();
        execute(
            tx,
            "INSERT INTO job_notifications (id, observer_id, job_id, notice, due_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $5)",
            &[
                &id,
                &observer,
                &job.to_string(),
                &notice.as_str(),
                &now.as_millis(),
            ],
        )
        .await?;
        out.push(load_notification(tx, &id).await?);
    }
    if !out.is_empty() {
        rows::signal(tx, channel).await?;
    }
    Ok(out)
}

fn json_text(v: &Option<Value>) -> Option<String> {
    v.as_ref().map(Value::to_string)
}

/// Applies a change to a job, in the caller's transaction, with the job's
/// row locked.
async fn apply(
    tx: &impl GenericClient,
    channel: &str,
    id: JobId,
    change: JobChange,
    now: Timestamp,
) -> StoreResult<JobUpdate> {
    let before = load(tx, id, true).await?;
    let state = change.check(id, before.state)?;
    execute(
        tx,
        "UPDATE jobs SET state = $2, progress = COALESCE($3, progress), result = COALESCE($4, result), \
         context = COALESCE($5, context), error = COALESCE($6, error), updated_at = $7 WHERE id = $1",
        &[
            &id.to_string(),
            &state.as_str(),
            &json_text(&change.progress),
            &json_text(&change.result),
            &json_text(&change.context),
            &change.error,
            &now.as_millis(),
        ],
    )
    .await?;
    let mut notifications = Vec::new();
    let event = match change.event(&before) {
        Some(payload) => Some(
            append_event(
                tx,
                EventKind::JobStateChanged,
                Some(before.session_id.to_string()),
                Some(before.interaction_id.to_string()),
                before.step_id.map(|s| s.to_string()),
                &payload.to_json(),
                now,
            )
            .await?,
        ),
        None => None,
    };
    let fanout = change.fanout(&before);
    if let Some(notice) = fanout.notice {
        notifications.extend(notify(tx, channel, id, notice, now).await?);
    }
    if let Some(parent) = fanout.partial_for {
        let first = execute(
            tx,
            "UPDATE jobs SET partial_notified = true WHERE id = $1 AND usefulness = $2 \
             AND NOT partial_notified AND state IN ('pending', 'dispatched', 'in_progress')",
            &[
                &parent.to_string(),
                &Usefulness::AnyCompletedSubjob.as_str(),
            ],
        )
        .await?;
        if first == 1 {
            notifications.extend(notify(tx, channel, parent, Notice::Partial, now).await?);
        }
    }
    Ok(JobUpdate {
        job: load(tx, id, false).await?,
        notifications,
        event,
        taken_over: false,
    })
}

#[async_trait]
impl JobStore for PostgresStore {
    async fn create_job(&self, new: NewJob, now: Timestamp) -> StoreResult<Job> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        if let Some(parent) = new.parent_id {
            let p = load(&tx, parent, true).await?;
            if p.state.is_terminal() {
                return Err(StoreError::Conflict(format!(
                    "job {parent} has ended ({}); it takes no subjobs",
                    p.state
                )));
            }
        }
        let id = JobId::new();
        let inserted = execute(
            &tx,
            "INSERT INTO jobs (id, parent_id, session_id, interaction_id, step_id, account_id, team_id, \
             user_id, capability, input, state, usefulness, deadline, created_at, updated_at, key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', $11, $12, $13, $13, $14) \
             ON CONFLICT (key) DO NOTHING",
            &[
                &id.to_string(),
                &new.parent_id.map(|p| p.to_string()),
                &new.session_id.to_string(),
                &new.interaction_id.to_string(),
                &new.step_id.map(|s| s.to_string()),
                &new.principal.account.to_string(),
                &new.principal.team.map(|t| t.to_string()),
                &new.principal.user.to_string(),
                &new.capability,
                &new.input.to_string(),
                &new.usefulness.as_str(),
                &new.deadline.map(Timestamp::as_millis),
                &now.as_millis(),
                &new.key,
            ],
        )
        .await?;
        if inserted == 0 {
            // Created before under this key: that job, unchanged.
            let row = query_opt(
                &tx,
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE key = $1"),
                &[&new.key],
            )
            .await?
            .ok_or_else(|| StoreError::Conflict("the job could not be created".into()))?;
            return job(&row);
        }
        for kind in new.observers {
            let kind =
                serde_json::to_string(&kind).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            execute(
                &tx,
                "INSERT INTO job_observers (id, job_id, kind) VALUES ($1, $2, $3)",
                &[&ObserverId::new().to_string(), &id.to_string(), &kind],
            )
            .await?;
        }
        rows::signal(&tx, &self.channel).await?;
        let created = load(&tx, id, false).await?;
        tx.commit().await.map_err(backend)?;
        Ok(created)
    }

    async fn job(&self, id: JobId) -> StoreResult<Job> {
        let client = self.client().await?;
        load(&client, id, false).await
    }

    async fn subjobs(&self, id: JobId) -> StoreResult<Vec<Job>> {
        let client = self.client().await?;
        query(
            &client,
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE parent_id = $1 ORDER BY n"),
            &[&id.to_string()],
        )
        .await?
        .iter()
        .map(job)
        .collect()
    }

    async fn job_observers(&self, id: JobId) -> StoreResult<Vec<JobObserver>> {
        let client = self.client().await?;
        query(
            &client,
            "SELECT id AS observer_id, job_id AS observer_job_id, kind FROM job_observers \
             WHERE job_id = $1 ORDER BY n",
            &[&id.to_string()],
        )
        .await?
        .iter()
        .map(observer)
        .collect()
    }

    async fn update_job(
        &self,
        id: JobId,
        change: JobChange,
        now: Timestamp,
    ) -> StoreResult<JobUpdate> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let update = apply(&tx, &self.channel, id, change, now).await?;
        tx.commit().await.map_err(backend)?;
        Ok(update)
    }

    async fn claim_job(
        &self,
        capabilities: &[String],
        worker: &str,
        now: Timestamp,
        lease: std::time::Duration,
    ) -> StoreResult<Option<JobUpdate>> {
        let capabilities = capabilities.to_vec();
        let until = now.plus(lease);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let Some(row) = query_opt(
            &tx,
            "SELECT id, state FROM jobs \
             WHERE (state = 'pending' OR (state = 'dispatched' AND lease_until <= $2)) \
             AND (cardinality($1::TEXT[]) = 0 OR capability = ANY($1)) \
             ORDER BY state = 'dispatched', n LIMIT 1 FOR UPDATE SKIP LOCKED",
            &[&capabilities, &now.as_millis()],
        )
        .await?
        else {
            return Ok(None);
        };
        let id: JobId = rows::parse(&row, "id")?;
        let state: String = rows::get(&row, "state")?;
        let update = if state == "pending" {
            apply(
                &tx,
                &self.channel,
                id,
                JobChange::to(JobState::Dispatched),
                now,
            )
            .await?
        } else {
            JobUpdate {
                job: load(&tx, id, false).await?,
                notifications: Vec::new(),
                event: None,
                taken_over: true,
            }
        };
        execute(
            &tx,
            "UPDATE jobs SET lease_owner = $2, lease_until = $3 WHERE id = $1",
            &[&id.to_string(), &worker, &until.as_millis()],
        )
        .await?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(update))
    }

    async fn renew_job(&self, id: JobId, worker: &str, until: Timestamp) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let changed = execute(
            &tx,
            "UPDATE jobs SET lease_until = $3 WHERE id = $1 AND lease_owner = $2 AND state = 'dispatched'",
            &[&id.to_string(), &worker, &until.as_millis()],
        )
        .await?;
        tx.commit().await.map_err(backend)?;
        Ok(changed == 1)
    }

    async fn overdue_jobs(&self, now: Timestamp) -> StoreResult<Vec<Job>> {
        let client = self.client().await?;
        query(
            &client,
            &format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('pending', 'dispatched', 'in_progress') \
                 AND deadline IS NOT NULL AND deadline <= $1 ORDER BY deadline, n"
            ),
            &[&now.as_millis()],
        )
        .await?
        .iter()
        .map(job)
        .collect()
    }

    async fn unfinished_jobs(&self) -> StoreResult<Vec<Job>> {
        let client = self.client().await?;
        query(
            &client,
            &format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('pending', 'dispatched', 'in_progress') ORDER BY n"
            ),
            &[],
        )
        .await?
        .iter()
        .map(job)
        .collect()
    }

    async fn due_notifications(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<JobNotification>> {
        let client = self.client().await?;
        query(
            &client,
            &format!("SELECT {NOTIFICATION_COLUMNS} {DUE}"),
            &[&now.as_millis(), &i64::from(limit)],
        )
        .await?
        .iter()
        .map(notification)
        .collect()
    }

    async fn claim_notifications(
        &self,
        now: Timestamp,
        lease: std::time::Duration,
        limit: u32,
    ) -> StoreResult<Vec<JobNotification>> {
        let until = now.plus(lease);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        // Rows another deliverer is taking are skipped; once it commits,
        // their due time has moved past the lease.
        let taken = query(
            &tx,
            "UPDATE job_notifications SET due_at = $3 WHERE id IN ( \
               SELECT n.id FROM job_notifications n \
               WHERE n.delivered_at IS NULL AND n.due_at <= $1 \
               AND NOT EXISTS (SELECT 1 FROM job_notifications e WHERE e.observer_id = n.observer_id \
                   AND e.delivered_at IS NULL AND e.n < n.n) \
               ORDER BY n.due_at, n.n LIMIT $2 FOR UPDATE SKIP LOCKED) \
             RETURNING id",
            &[&now.as_millis(), &i64::from(limit), &until.as_millis()],
        )
        .await?;
        let mut out = Vec::with_capacity(taken.len());
        for row in taken {
            let id: String = rows::get(&row, "id")?;
            out.push(load_notification(&tx, &id).await?);
        }
        tx.commit().await.map_err(backend)?;
        out.sort_by_key(|n| n.created_at);
        Ok(out)
    }

    async fn notification_delivered(
        &self,
        id: NotificationId,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let id = id.to_string();
        let changed = execute(
            &tx,
            "UPDATE job_notifications SET delivered_at = $2 WHERE id = $1 AND delivered_at IS NULL",
            &[&id, &now.as_millis()],
        )
        .await?;
        if changed == 0 {
            load_notification(&tx, &id).await?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(changed == 1)
    }

    async fn notification_failed(
        &self,
        id: NotificationId,
        error: &str,
        retry_at: Timestamp,
    ) -> StoreResult<JobNotification> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let id = id.to_string();
        let changed = execute(
            &tx,
            "UPDATE job_notifications SET attempts = attempts + 1, last_error = $2, due_at = $3 \
             WHERE id = $1 AND delivered_at IS NULL",
            &[&id, &error, &retry_at.as_millis()],
        )
        .await?;
        let n = load_notification(&tx, &id).await?;
        if changed == 0 {
            return Err(StoreError::Conflict(format!(
                "notification {id} was delivered already"
            )));
        }
        tx.commit().await.map_err(backend)?;
        Ok(n)
    }
}
