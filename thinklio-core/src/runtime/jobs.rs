//! Jobs at run time: deferred `act` steps, dispatch on the runtime's job
//! workers, subjobs, reports from outside, observers, deadlines and
//! cancellation.
//!
//! The record of a job lives in the store ([`JobStore`](crate::JobStore));
//! this module drives it:
//!
//! - A capability called in `deferred` mode (its manifest's default mode, or
//!   the agent's choice with [`AgentDefinition::defer`](crate::AgentDefinition::defer))
//!   makes its `act` step create a job, keyed by the step's idempotency key,
//!   and the step succeeds at once: the model is told the work is under way.
//! - A job worker ([`Runtime::run_due_jobs`], [`Runtime::spawn_job_worker`])
//!   claims pending jobs (`pending → dispatched`) and hands each to its
//!   capability's [`Capability::dispatch`]: a function runs on the worker and
//!   its result resolves the job; a delegate runs as a child interaction
//!   that stops at its next step when the job is cancelled; a webhook gets
//!   the job id and a callback ([`JobCallback`]) and reports back through
//!   [`Runtime::report_job`]. A dispatch that creates subjobs
//!   ([`JobHandle::subjob`]) leaves its job `in_progress` until the subjobs
//!   end; the job's [`Usefulness`] rule then decides how it ends.
//! - Every change writes, in its transaction, one notice per observer. The
//!   worker delivers them: a follow-up interaction in the job's session whose
//!   `context` step carries the result and context bundle, a signed webhook
//!   ([`NoticeWebhook`]), or an in-process [`ObserverCallback`]. A failed
//!   delivery is retried with the runtime's backoff; a notice is marked
//!   delivered once, and carries its id for receivers that de-duplicate.
//! - Deadlines: overdue jobs move to `timed_out`; cancellation by the user,
//!   the agent (the built-in `cancel_job` capability) or the system ends a
//!   job and, with it, its unfinished subjobs and its delegate's child
//!   interaction.
//! - Workers hold a lease on each job they dispatch and renew it while the
//!   dispatch runs. A job whose worker died (its lease ran out) is taken
//!   over by the next claim: dispatched again with the same idempotency key
//!   (`job:<id>`) if its capability is repeatable, failed as
//!   `capability.outcome_unknown` if it is `external`, never run twice.
//!   [`Runtime::recover`] settles jobs waiting on subjobs that ended
//!   meanwhile and closes a delegate's child interaction whose job ended;
//!   accepted outside work waits for its report or its deadline.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::harness::Run;
use super::{Inner, Runtime, RuntimeError};
use crate::capability::{
    Capability, CapabilityError, CapabilityKind, CapabilityManifest, Dispatch, InvocationContext,
    SideEffect, UsageMeter,
};
use crate::ids::{AgentId, JobId, NotificationId, ObserverId, StepId, UserId};
use crate::interaction::{Interaction, InteractionState, NewInteraction};
use crate::job::{
    Job, JobChange, JobNotification, JobReport, JobState, JobUpdate, NewJob, Notice, ObserverKind,
    Usefulness,
};
use crate::store::StoreError;

/// Why a job call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The job works for someone else.
    #[error("job {job} belongs to another user")]
    Forbidden {
        /// The job.
        job: JobId,
    },
    /// The callback token does not match the job.
    #[error("the callback token of job {job} is not valid")]
    BadToken {
        /// The job.
        job: JobId,
    },
    /// The job has ended; nothing changes it any more.
    #[error("job {job} has ended ({state})")]
    Ended {
        /// The job.
        job: JobId,
        /// How it ended.
        state: JobState,
    },
    /// Reports from outside need [`RuntimeBuilder::job_callbacks`](super::RuntimeBuilder::job_callbacks).
    #[error("no job callbacks are configured: set RuntimeBuilder::job_callbacks")]
    NoCallbacks,
}

impl JobError {
    /// A stable code for hosts.
    pub fn code(&self) -> &'static str {
        match self {
            JobError::Forbidden { .. } => "job.forbidden",
            JobError::BadToken { .. } => "job.bad_token",
            JobError::Ended { .. } => "job.ended",
            JobError::NoCallbacks => "job.no_callbacks",
        }
    }
}

/// Who cancels a job.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelledBy {
    /// The user the job works for (anyone else is refused).
    User(UserId),
    /// An agent, through the built-in `cancel_job` capability.
    Agent(AgentId),
    /// The host or the runtime itself.
    System,
}

impl fmt::Display for CancelledBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CancelledBy::User(_) => f.write_str("the user"),
            CancelledBy::Agent(a) => write!(f, "the agent `{a}`"),
            CancelledBy::System => f.write_str("the system"),
        }
    }
}

/// Where outside work reports back on one job: the URL and its token. The
/// token's `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct JobCallback {
    url: String,
    token: String,
}

impl JobCallback {
    /// The URL to report to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The token that proves a report comes from whoever got the job.
    pub fn token(&self) -> &str {
        &self.token
    }
}

impl fmt::Debug for JobCallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobCallback")
            .field("url", &self.url)
            .field("token", &"***")
            .finish()
    }
}

/// How outside work reports back: a URL template (`{job}` is replaced by
/// the job id) that the host serves and routes to [`Runtime::report_job`],
/// and the secret of the tokens. A token is the HMAC-SHA256 of the job id
/// under the secret, so nothing is stored and a restarted runtime with the
/// same secret accepts the reports of jobs dispatched before. The secret's
/// `Debug` prints `***`.
#[derive(Clone)]
pub struct JobCallbacks {
    url: String,
    secret: Vec<u8>,
}

impl JobCallbacks {
    /// Callbacks at `url` (with `{job}` in it), tokens signed with `secret`.
    pub fn new(url: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        Self {
            url: url.into(),
            secret: secret.into(),
        }
    }

    fn mac(&self, job: JobId) -> Option<Hmac<Sha256>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).ok()?;
        mac.update(b"thinklio.job:");
        mac.update(job.to_string().as_bytes());
        Some(mac)
    }

    /// The callback of `job`.
    pub fn callback(&self, job: JobId) -> JobCallback {
        let token = self
            .mac(job)
            .map(|m| hex(&m.finalize().into_bytes()))
            .unwrap_or_default();
        JobCallback {
            url: self.url.replace("{job}", &job.to_string()),
            token,
        }
    }

    /// Whether `token` is the token of `job` (compared in constant time).
    pub fn verify(&self, job: JobId, token: &str) -> bool {
        let Some(bytes) = unhex(token) else {
            return false;
        };
        self.mac(job)
            .is_some_and(|m| m.verify_slice(&bytes).is_ok())
    }
}

impl fmt::Debug for JobCallbacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobCallbacks")
            .field("url", &self.url)
            .field("secret", &"***")
            .finish()
    }
}

// Two small helpers rather than a crate: the token is the only hex in core.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What an observer is told: one notice about one job, with the job as it
/// is at delivery. `notification_id` is stable across redeliveries, for
/// receivers that de-duplicate.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct JobNotice {
    /// The notice's id (the de-duplication key).
    pub notification_id: NotificationId,
    /// The observer it is for.
    pub observer_id: ObserverId,
    /// What happened.
    pub notice: Notice,
    /// The job.
    pub job: Job,
}

/// An in-process observer of jobs, registered by name
/// ([`RuntimeBuilder::observer_callback`](super::RuntimeBuilder::observer_callback))
/// and named by [`ObserverKind::Callback`]. An error is retried later.
#[async_trait]
pub trait ObserverCallback: Send + Sync + 'static {
    /// Takes one notice.
    async fn notify(&self, notice: &JobNotice) -> Result<(), String>;
}

/// Posts notices to [`ObserverKind::Webhook`] observers. Core sends no HTTP
/// itself: `thinklio-capabilities` has a signed implementation. An error is
/// retried later with backoff.
#[async_trait]
pub trait NoticeWebhook: Send + Sync + 'static {
    /// Posts one notice to `url`.
    async fn post(&self, url: &str, notice: &JobNotice) -> Result<(), String>;
}

/// What a capability running as a job can do with its job.
#[derive(Clone)]
pub struct JobHandle {
    inner: Weak<Inner>,
    job: Job,
    subjobs: Arc<AtomicU32>,
    callback: Option<JobCallback>,
}

impl fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobHandle")
            .field("job", &self.job.id)
            .field("capability", &self.job.capability)
            .finish_non_exhaustive()
    }
}

impl PartialEq for JobHandle {
    fn eq(&self, other: &Self) -> bool {
        self.job.id == other.job.id
    }
}

impl JobHandle {
    fn runtime(&self) -> Result<Arc<Inner>, RuntimeError> {
        self.inner
            .upgrade()
            .ok_or_else(|| RuntimeError::Config("the runtime of this job is gone".into()))
    }

    /// The job's id.
    pub fn id(&self) -> JobId {
        self.job.id
    }

    /// The job as it was when dispatched.
    pub fn job(&self) -> &Job {
        &self.job
    }

    /// Where outside work reports back, when the runtime has
    /// [`JobCallbacks`].
    pub fn callback(&self) -> Option<&JobCallback> {
        self.callback.as_ref()
    }

    /// Creates a subjob run by `capability` on the job workers. Its key is
    /// the parent's id and the subjob's number in this dispatch, so a
    /// dispatch run again after a crash finds the subjobs it created
    /// instead of creating more. A job that created subjobs ends when they
    /// do, by its usefulness rule.
    pub async fn subjob(&self, capability: &str, input: Value) -> Result<Job, RuntimeError> {
        let rt = self.runtime()?;
        let n = self.subjobs.fetch_add(1, Ordering::SeqCst);
        let deadline = rt
            .capabilities
            .get(capability)
            .map(|c| rt.clock.now().plus(c.manifest().timeout));
        let job = rt
            .store
            .create_job(
                NewJob {
                    parent_id: Some(self.job.id),
                    session_id: self.job.session_id,
                    interaction_id: self.job.interaction_id,
                    step_id: self.job.step_id,
                    principal: self.job.principal,
                    capability: capability.to_owned(),
                    input,
                    usefulness: Usefulness::AllSubjobs,
                    deadline,
                    observers: Vec::new(),
                    key: Some(format!("{}:sub:{n}", self.job.id)),
                },
                rt.clock.now(),
            )
            .await?;
        rt.jobs.wake.notify_one();
        Ok(job)
    }

    /// Records a progress report (the job keeps its state).
    pub async fn progress(&self, progress: Value) -> Result<(), RuntimeError> {
        let rt = self.runtime()?;
        rt.change_job(self.job.id, JobChange::default().progress(progress))
            .await?;
        Ok(())
    }

    /// Sets the context bundle a follow-up gets with the result.
    pub async fn set_context(&self, context: Value) -> Result<(), RuntimeError> {
        let rt = self.runtime()?;
        rt.change_job(self.job.id, JobChange::default().context(context))
            .await?;
        Ok(())
    }

    /// Whether the job has ended (cancelled, timed out) while this ran;
    /// long work checks it to stop early.
    pub async fn has_ended(&self) -> Result<bool, RuntimeError> {
        let rt = self.runtime()?;
        Ok(rt.store.job(self.job.id).await?.state.is_terminal())
    }

    fn subjobs_created(&self) -> u32 {
        self.subjobs.load(Ordering::SeqCst)
    }
}

/// What one [`Runtime::run_due_jobs`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobRun {
    /// Jobs handed to their capability.
    pub dispatched: usize,
    /// Jobs moved to `timed_out`.
    pub timed_out: usize,
    /// Notices delivered.
    pub notified: usize,
    /// Deliveries that failed and wait for a retry.
    pub notice_failures: usize,
}

/// What [`Runtime::recover`] did with jobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobRecovery {
    /// Jobs not ended when recovery began.
    pub unfinished: usize,
    /// Dispatched jobs whose worker stopped: a job worker takes each over
    /// when its lease runs out (`RuntimeConfig::task_lease`), dispatching it
    /// again with the same key if its capability is repeatable, failing it
    /// as `capability.outcome_unknown` if it is `external`.
    pub dispatched: usize,
    /// Jobs waiting on subjobs that had all ended, now settled.
    pub settled: usize,
    /// Child interactions of ended jobs, closed.
    pub children_closed: usize,
}

/// A background job worker; stops when [`JobWorker::stop`] is called or it
/// is dropped.
#[derive(Debug)]
pub struct JobWorker {
    stop: watch::Sender<bool>,
    handle: Option<JoinHandle<()>>,
}

impl JobWorker {
    /// Stops the worker and waits for its loop to end (dispatches it
    /// started run on until they finish).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
    }
}

impl Drop for JobWorker {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The runtime's job state: configuration and what runs in this process.
#[derive(Default)]
pub(crate) struct Jobs {
    pub(crate) callbacks: Option<JobCallbacks>,
    pub(crate) webhook: Option<Arc<dyn NoticeWebhook>>,
    pub(crate) observers: std::sync::RwLock<HashMap<String, Arc<dyn ObserverCallback>>>,
    /// Observers every job of a deferred `act` step gets besides its follow-up.
    pub(crate) default_observers: Vec<ObserverKind>,
    /// Dispatches running in this process, told when their job ends.
    pub(crate) running: std::sync::Mutex<HashMap<JobId, watch::Sender<bool>>>,
    /// Wakes an idle worker when there is work.
    pub(crate) wake: tokio::sync::Notify,
    /// One deliverer of notices at a time in this process.
    pub(crate) delivering: tokio::sync::Mutex<()>,
}

/// The text of a follow-up interaction's message.
fn follow_up_text(job: &Job, notice: Notice) -> String {
    let what = match notice {
        Notice::Partial => "has partial results",
        Notice::Resolved => "has finished",
        Notice::Failed => "has failed",
        Notice::Cancelled => "was cancelled",
        Notice::TimedOut => "ran out of time",
        Notice::Dispatched => "was dispatched",
    };
    format!(
        "[job {} {}] The `{}` job {what}.",
        job.id,
        notice.as_str(),
        job.capability
    )
}

/// The job as a `context` step records it for a follow-up, with what its
/// subjobs have produced so far (partial output before the job resolves).
pub(crate) fn job_record(job: &Job, subjobs: &[Job]) -> Value {
    let mut record = json!({
        "id": job.id,
        "capability": job.capability,
        "state": job.state,
        "progress": job.progress,
        "result": job.result,
        "context": job.context,
        "error": job.error,
    });
    if !subjobs.is_empty() && job.result.is_none() {
        record["subjobs"] = subjobs
            .iter()
            .map(|s| json!({ "capability": s.capability, "state": s.state, "result": s.result }))
            .collect();
    }
    record
}

/// The system message a follow-up's transcript gets from its `context` step.
pub(crate) fn job_message(context_output: Option<&Value>) -> Option<crate::model::ChatMessage> {
    let job = context_output?.get("job")?;
    let mut text = format!(
        "Deferred work reported back. Job {} (`{}`) is {}.",
        job["id"].as_str().unwrap_or_default(),
        job["capability"].as_str().unwrap_or_default(),
        job["state"].as_str().unwrap_or_default(),
    );
    for (field, label) in [
        ("result", "Result"),
        ("subjobs", "Subjobs so far"),
        ("context", "Context"),
        ("progress", "Progress"),
    ] {
        if !job[field].is_null() {
            text.push_str(&format!("\n{label}: {}", job[field]));
        }
    }
    if let Some(e) = job["error"].as_str() {
        text.push_str(&format!("\nError: {e}"));
    }
    Some(crate::model::ChatMessage::system(text))
}

fn ended_already(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::IllegalJobTransition { .. } | StoreError::Conflict(_)
    )
}

impl Inner {
    /// Changes a job, then tells whatever depends on it: a parent waiting on
    /// subjobs, a dispatch running in this process, an idle worker.
    pub(crate) async fn change_job(
        self: &Arc<Self>,
        id: JobId,
        change: JobChange,
    ) -> Result<JobUpdate, RuntimeError> {
        let update = self.store.update_job(id, change, self.clock.now()).await?;
        if let Some(event) = &update.event {
            self.publish(event.clone());
        }
        if update.job.state.is_terminal() {
            if let Some(tx) = self
                .jobs
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&id)
            {
                let _ = tx.send(true);
            }
            if let Some(parent) = update.job.parent_id {
                Box::pin(self.settle_parent(parent)).await?;
            }
        }
        if !update.notifications.is_empty() {
            self.jobs.wake.notify_one();
        }
        Ok(update)
    }

    /// Ends a job that waits on subjobs once they have all ended, by its
    /// usefulness rule. Returns whether it ended it.
    async fn settle_parent(self: &Arc<Self>, id: JobId) -> Result<bool, RuntimeError> {
        let parent = self.store.job(id).await?;
        if parent.state != JobState::InProgress {
            return Ok(false);
        }
        let subjobs = self.store.subjobs(id).await?;
        if subjobs.is_empty() || subjobs.iter().any(|s| !s.state.is_terminal()) {
            return Ok(false);
        }
        let resolved = subjobs
            .iter()
            .filter(|s| s.state == JobState::Resolved)
            .count();
        let results: Vec<Value> = subjobs
            .iter()
            .map(|s| {
                json!({
                    "id": s.id,
                    "capability": s.capability,
                    "state": s.state,
                    "result": s.result,
                    "error": s.error,
                })
            })
            .collect();
        let ok = match parent.usefulness {
            Usefulness::AllSubjobs => resolved == subjobs.len(),
            Usefulness::AnyCompletedSubjob => resolved > 0,
        };
        let change = if ok {
            JobChange::to(JobState::Resolved).result(json!({ "subjobs": results }))
        } else {
            JobChange::to(JobState::Failed)
                .result(json!({ "subjobs": results }))
                .error(format!(
                    "{resolved} of {} subjobs resolved; the rule `{}` is not met",
                    subjobs.len(),
                    parent.usefulness
                ))
        };
        match self.change_job(id, change).await {
            Ok(_) => Ok(true),
            Err(RuntimeError::Store(e)) if ended_already(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Ends `id` and every unfinished job below it.
    pub(crate) async fn cancel_tree(
        self: &Arc<Self>,
        id: JobId,
        state: JobState,
        reason: String,
    ) -> Result<Job, RuntimeError> {
        let update = self
            .change_job(id, JobChange::to(state).error(reason.clone()))
            .await?;
        let mut stack = vec![id];
        while let Some(parent) = stack.pop() {
            for sub in self.store.subjobs(parent).await? {
                stack.push(sub.id);
                if sub.state.is_terminal() {
                    continue;
                }
                let why = format!("its parent job {parent} ended: {reason}");
                match self
                    .change_job(sub.id, JobChange::to(JobState::Cancelled).error(why))
                    .await
                {
                    Ok(_) => {}
                    Err(RuntimeError::Store(e)) if ended_already(&e) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(update.job)
    }

    /// Creates the job of a deferred `act` step (once per step key).
    pub(crate) async fn create_deferred_job(
        &self,
        interaction: &Interaction,
        step_id: StepId,
        idempotency_key: &str,
        manifest: &CapabilityManifest,
        input: Value,
    ) -> Result<Job, StoreError> {
        let now = self.clock.now();
        let mut observers = vec![ObserverKind::FollowUp];
        observers.extend(self.jobs.default_observers.iter().cloned());
        let job = self
            .store
            .create_job(
                NewJob {
                    parent_id: None,
                    session_id: interaction.session_id,
                    interaction_id: interaction.id,
                    step_id: Some(step_id),
                    principal: interaction.principal,
                    capability: manifest.name.clone(),
                    input,
                    usefulness: manifest.usefulness,
                    deadline: Some(now.plus(manifest.timeout)),
                    observers,
                    key: Some(idempotency_key.to_owned()),
                },
                now,
            )
            .await?;
        self.jobs.wake.notify_one();
        Ok(job)
    }

    /// Hands a claimed (`dispatched`) job to its capability and records
    /// what came of it.
    async fn run_job(self: Arc<Self>, job: Job) -> Result<(), RuntimeError> {
        let Some(cap) = self.capabilities.get(&job.capability) else {
            let why = format!(
                "no capability named `{}` is registered to run it",
                job.capability
            );
            return self
                .end_job(job.id, JobChange::to(JobState::Failed).error(why))
                .await;
        };
        let interaction = self.store.interaction(job.interaction_id).await?;
        if let Err(refused) = self.check_budgets(&job.principal, &interaction).await {
            let change = JobChange::to(JobState::Failed)
                .error(format!("{}: {}", refused.code, refused.message));
            return self.end_job(job.id, change).await;
        }
        let heartbeat = self.renew_job(job.id);
        let (tx, mut ended) = watch::channel(false);
        self.jobs
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job.id, tx);
        let handle = JobHandle {
            inner: Arc::downgrade(&self),
            job: job.clone(),
            subjobs: Arc::new(AtomicU32::new(0)),
            callback: self.jobs.callbacks.as_ref().map(|c| c.callback(job.id)),
        };
        let context = InvocationContext {
            interaction_id: job.interaction_id,
            step_id: job
                .step_id
                .unwrap_or_else(|| StepId::from_uuid(uuid::Uuid::nil())),
            idempotency_key: format!("job:{}", job.id),
            attempt: 1,
            principal: job.principal,
            agent_id: interaction.agent_id.clone(),
            delegation_depth: interaction.delegation_depth,
            meter: UsageMeter::default(),
            job: Some(handle.clone()),
        };
        let call = std::panic::AssertUnwindSafe(cap.dispatch(&context, job.input.clone()))
            .catch_unwind()
            .map(|r| {
                r.unwrap_or_else(|p| {
                    Err(CapabilityError::Panicked(super::harness::panic_message(
                        p.as_ref(),
                    )))
                })
            });
        let outcome = if cap.manifest().kind == CapabilityKind::Agent {
            // A delegate's child interaction stops itself at its next step
            // when the job ends, so every step it wrote is settled.
            Some(call.await)
        } else {
            tokio::select! {
                r = call => Some(r),
                _ = ended.wait_for(|e| *e) => None,
            }
        };
        heartbeat.abort();
        self.jobs
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&job.id);
        let Some(outcome) = outcome else {
            tracing::info!(job_id = %job.id, "job ended while it ran; its dispatch was stopped");
            return Ok(());
        };
        let change = match outcome {
            Ok(Dispatch::Done(value)) if handle.subjobs_created() > 0 => {
                self.end_job(job.id, JobChange::to(JobState::InProgress).context(value))
                    .await?;
                self.settle_parent(job.id).await?;
                return Ok(());
            }
            Ok(Dispatch::Done(value)) => JobChange::to(JobState::Resolved).result(value),
            Ok(Dispatch::Accepted) => {
                if self.store.job(job.id).await?.state == JobState::Dispatched {
                    self.end_job(job.id, JobChange::to(JobState::InProgress))
                        .await?;
                }
                if handle.subjobs_created() > 0 {
                    self.settle_parent(job.id).await?;
                }
                return Ok(());
            }
            Err(e) => JobChange::to(JobState::Failed).error(format!("{}: {e}", e.code())),
        };
        self.end_job(job.id, change).await
    }

    /// Applies a change that may find the job already ended (cancelled or
    /// timed out meanwhile): that is not an error.
    async fn end_job(self: &Arc<Self>, id: JobId, change: JobChange) -> Result<(), RuntimeError> {
        match self.change_job(id, change).await {
            Ok(_) => Ok(()),
            Err(RuntimeError::Store(e)) if ended_already(&e) => {
                tracing::info!(job_id = %id, "job had already ended");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves overdue jobs to `timed_out` (their subjobs are cancelled).
    async fn time_out_overdue(self: &Arc<Self>) -> Result<usize, RuntimeError> {
        let mut n = 0;
        for job in self.store.overdue_jobs(self.clock.now()).await? {
            let reason = format!(
                "the job passed its deadline ({} ms after its creation)",
                job.deadline
                    .map(|d| d.since(job.created_at).as_millis())
                    .unwrap_or_default()
            );
            match self.cancel_tree(job.id, JobState::TimedOut, reason).await {
                Ok(_) => n += 1,
                Err(RuntimeError::Store(e)) if ended_already(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Claims a pending job, or takes over one whose worker's lease ran
    /// out: a repeatable one is dispatched again with its key; an
    /// `external` one fails as outcome unknown and `None` is returned for it.
    async fn claim_job(self: &Arc<Self>) -> Result<Option<Job>, RuntimeError> {
        loop {
            let Some(update) = self
                .store
                .claim_job(&[], &self.worker, self.clock.now(), self.config.task_lease)
                .await?
            else {
                return Ok(None);
            };
            if let Some(event) = update.event {
                self.publish(event);
            }
            if !update.notifications.is_empty() {
                self.jobs.wake.notify_one();
            }
            if update.taken_over && !self.repeatable(&update.job) {
                tracing::warn!(job_id = %update.job.id, "took over an external job whose worker died; its outcome is unknown");
                let e = CapabilityError::OutcomeUnknown;
                let change = JobChange::to(JobState::Failed).error(format!("{}: {e}", e.code()));
                self.end_job(update.job.id, change).await?;
                continue;
            }
            return Ok(Some(update.job));
        }
    }

    /// Whether a job's dispatch may run again with the same key.
    fn repeatable(&self, job: &Job) -> bool {
        self.capabilities.get(&job.capability).is_none_or(|c| {
            c.manifest().side_effect.is_repeatable() || c.manifest().kind == CapabilityKind::Agent
        })
    }

    /// Renews this runtime's lease of a dispatched job every third of its
    /// length while its dispatch runs.
    fn renew_job(self: &Arc<Self>, id: JobId) -> JoinHandle<()> {
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            let lease = inner.config.task_lease;
            loop {
                tokio::time::sleep(lease / 3).await;
                let until = inner.clock.now().plus(lease);
                match inner.store.renew_job(id, &inner.worker, until).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        tracing::warn!(job_id = %id, error = %e, "could not renew a job lease")
                    }
                }
            }
        })
    }

    /// Delivers the notices due now; returns (delivered, failed).
    async fn deliver_notices(self: &Arc<Self>) -> Result<(usize, usize), RuntimeError> {
        let _one = self.jobs.delivering.lock().await;
        let mut delivered = 0;
        let mut failed = 0;
        loop {
            let due = self
                .store
                .claim_notifications(self.clock.now(), self.config.task_lease, 32)
                .await?;
            if due.is_empty() {
                return Ok((delivered, failed));
            }
            for n in due {
                match self.deliver_notice(&n).await {
                    Ok(()) => {
                        if self
                            .store
                            .notification_delivered(n.id, self.clock.now())
                            .await?
                        {
                            delivered += 1;
                        }
                    }
                    Err(error) => {
                        failed += 1;
                        let delay = self.config.retry_policy.delay(n.attempts + 1);
                        let retry_at = self.clock.now().plus(delay);
                        tracing::warn!(
                            notification_id = %n.id,
                            job_id = %n.observer.job_id,
                            attempt = n.attempts + 1,
                            error = %error,
                            "job notice delivery failed; it is retried later"
                        );
                        self.store
                            .notification_failed(n.id, &error, retry_at)
                            .await?;
                    }
                }
            }
        }
    }

    async fn deliver_notice(self: &Arc<Self>, n: &JobNotification) -> Result<(), String> {
        let job = self
            .store
            .job(n.observer.job_id)
            .await
            .map_err(|e| e.to_string())?;
        let notice = JobNotice {
            notification_id: n.id,
            observer_id: n.observer.id,
            notice: n.notice,
            job,
        };
        match &n.observer.kind {
            ObserverKind::FollowUp => self.follow_up(&notice).await,
            ObserverKind::Webhook { url } => match &self.jobs.webhook {
                Some(w) => w.post(url, &notice).await,
                None => Err("no notice webhook sender is configured \
                     (RuntimeBuilder::notice_webhook)"
                    .into()),
            },
            ObserverKind::Callback { name } => {
                let callback = self
                    .jobs
                    .observers
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(name)
                    .cloned();
                match callback {
                    Some(c) => c.notify(&notice).await,
                    None => Err(format!("no observer callback named `{name}` is registered")),
                }
            }
        }
    }

    /// Runs the follow-up interaction of a notice in the job's session. The
    /// notice id is its inbound id: a redelivery after a crash resumes the
    /// same interaction instead of starting another.
    async fn follow_up(self: &Arc<Self>, notice: &JobNotice) -> Result<(), String> {
        if notice.notice == Notice::Dispatched {
            // The dispatching interaction already said the work is under way.
            return Ok(());
        }
        if notice.notice == Notice::Partial && notice.job.state.is_terminal() {
            // The job ended before its partial output was followed up: the
            // follow-up of its end tells everything at once.
            return Ok(());
        }
        let job = &notice.job;
        let _guard = self.locks.lock(job.session_id).await;
        let hold = self
            .hold_session(job.session_id)
            .await
            .map_err(|e| e.to_string())?;
        let outcome = async {
            {
                let session = self.session(job.session_id).await?;
                self.agent(&session.agent_id)?;
                self.access(&session.principal, &session.agent_id).await?;
                let (_, created) = self
                    .store
                    .create_interaction(NewInteraction {
                        session_id: session.id,
                        principal: session.principal,
                        agent_id: session.agent_id.clone(),
                        input: follow_up_text(job, notice.notice),
                        inbound_id: Some(format!("job-notice:{}", notice.notification_id)),
                        parent_interaction_id: None,
                        delegation_depth: 0,
                        job_id: Some(job.id),
                    })
                    .await?;
                if let Some(event) = created {
                    self.publish(event);
                }
            }
            // The follow-up is recorded: it runs after whatever else waits in
            // the session (an interaction a crash interrupted), in order. One
            // that cannot run now stays unfinished for `recover` or an
            // interaction worker; the notice is delivered either way.
            self.run_waiting(job.session_id).await
        }
        .await;
        hold.release().await;
        outcome.map(|_| ()).map_err(|e: RuntimeError| e.to_string())
    }

    /// Continues jobs a crash interrupted; see the module documentation.
    pub(crate) async fn recover_jobs(self: &Arc<Self>) -> Result<JobRecovery, RuntimeError> {
        let unfinished = self.store.unfinished_jobs().await?;
        let mut report = JobRecovery {
            unfinished: unfinished.len(),
            ..JobRecovery::default()
        };
        for job in unfinished {
            match job.state {
                // Its worker stopped (or, on a shared store, may still be
                // running it): a job worker takes it over when its lease runs
                // out, dispatching it again or failing it as outcome unknown.
                JobState::Dispatched => report.dispatched += 1,
                JobState::InProgress if self.settle_parent(job.id).await? => {
                    report.settled += 1;
                }
                _ => {}
            }
        }
        // A delegate's child interaction whose job ended while the process
        // was down is closed the way a running one closes itself.
        for child in self.store.unfinished_interactions().await? {
            let Some(job_id) = child
                .inbound_id
                .as_deref()
                .and_then(|k| k.strip_prefix("job:"))
                .and_then(|k| k.parse::<JobId>().ok())
            else {
                continue;
            };
            if child.parent_interaction_id.is_none()
                || !self.store.job(job_id).await?.state.is_terminal()
            {
                continue;
            }
            if self.close_child(child, job_id).await? {
                report.children_closed += 1;
            }
        }
        Ok(report)
    }

    async fn close_child(
        self: &Arc<Self>,
        child: Interaction,
        job: JobId,
    ) -> Result<bool, RuntimeError> {
        let session = self.session(child.session_id).await?;
        let agent = self.agent(&child.agent_id)?;
        let steps = self.store.steps(child.id).await?;
        let id = child.id;
        match Run::new(Arc::clone(self), session, agent, child, steps, false)
            .for_job(job)
            .drive()
            .await
        {
            Ok(_) | Err(RuntimeError::InteractionFailed { .. }) => {}
            Err(e) => return Err(e),
        }
        let state = InteractionState::derive(&self.store.steps(id).await?);
        Ok(state.is_finished())
    }

    /// One pass of a worker: deadlines, claims (and takeovers of jobs whose
    /// worker died), notices. With `inline`, dispatches run before it
    /// returns; otherwise they are spawned on the runtime's tokio workers.
    async fn job_pass(self: &Arc<Self>, inline: bool) -> Result<JobRun, RuntimeError> {
        let mut run = JobRun {
            timed_out: self.time_out_overdue().await?,
            ..JobRun::default()
        };
        let mut jobs = Vec::new();
        while let Some(job) = self.claim_job().await? {
            jobs.push(job);
            if inline {
                break;
            }
        }
        for job in jobs {
            run.dispatched += 1;
            let rt = Arc::clone(self);
            let id = job.id;
            if inline {
                rt.run_job(job).await?;
            } else {
                tokio::spawn(async move {
                    if let Err(e) = rt.run_job(job).await {
                        tracing::error!(job_id = %id, error = %e, "job dispatch could not be recorded");
                    }
                });
            }
        }
        let (notified, failures) = self.deliver_notices().await?;
        run.notified = notified;
        run.notice_failures = failures;
        Ok(run)
    }
}

impl Runtime {
    /// The job `id`.
    pub async fn job(&self, id: JobId) -> Result<Job, RuntimeError> {
        Ok(self.inner.store.job(id).await?)
    }

    /// The subjobs of a job, in order of creation.
    pub async fn subjobs(&self, id: JobId) -> Result<Vec<Job>, RuntimeError> {
        Ok(self.inner.store.subjobs(id).await?)
    }

    /// Registers (or replaces) the in-process observer named `name`.
    pub fn register_observer_callback(
        &self,
        name: impl Into<String>,
        callback: impl ObserverCallback,
    ) {
        self.inner
            .jobs
            .observers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.into(), Arc::new(callback));
    }

    /// Cancels a job and its unfinished subjobs; a delegate's child
    /// interaction stops at its next step. A user may cancel only their own
    /// jobs; an ended job is refused with [`JobError::Ended`].
    pub async fn cancel_job(
        &self,
        id: JobId,
        by: CancelledBy,
        reason: &str,
    ) -> Result<Job, RuntimeError> {
        let job = self.inner.store.job(id).await?;
        if let CancelledBy::User(user) = &by
            && job.principal.user != *user
        {
            return Err(JobError::Forbidden { job: id }.into());
        }
        if job.state.is_terminal() {
            return Err(JobError::Ended {
                job: id,
                state: job.state,
            }
            .into());
        }
        let why = if reason.is_empty() {
            format!("cancelled by {by}")
        } else {
            format!("cancelled by {by}: {reason}")
        };
        match self.inner.cancel_tree(id, JobState::Cancelled, why).await {
            Err(RuntimeError::Store(StoreError::IllegalJobTransition { from, .. })) => {
                Err(JobError::Ended {
                    job: id,
                    state: from,
                }
                .into())
            }
            other => other,
        }
    }

    /// Takes a report from outside work on a job (the callback of a webhook
    /// dispatched as a job): `token` must be the job's
    /// [`JobCallback::token`]. Progress moves a dispatched job to
    /// `in_progress`; a result or a failure ends it.
    pub async fn report_job(
        &self,
        id: JobId,
        token: &str,
        report: JobReport,
    ) -> Result<Job, RuntimeError> {
        let callbacks = self
            .inner
            .jobs
            .callbacks
            .as_ref()
            .ok_or(JobError::NoCallbacks)?;
        if !callbacks.verify(id, token) {
            return Err(JobError::BadToken { job: id }.into());
        }
        let job = self.inner.store.job(id).await?;
        if job.state.is_terminal() {
            return Err(JobError::Ended {
                job: id,
                state: job.state,
            }
            .into());
        }
        let change = match report {
            JobReport::Progress { progress } => {
                let mut c = if job.state == JobState::InProgress {
                    JobChange::default()
                } else {
                    JobChange::to(JobState::InProgress)
                };
                c.progress = progress;
                c
            }
            JobReport::Resolved { result, context } => {
                let mut c = JobChange::to(JobState::Resolved).result(result);
                c.context = context;
                c
            }
            JobReport::Failed { error } => JobChange::to(JobState::Failed).error(error),
        };
        Ok(self.inner.change_job(id, change).await?.job)
    }

    /// Runs the job work that is due now until none is: deadlines, claims
    /// and dispatches (one at a time, each to its end), notices. For tests
    /// and batch hosts; a server runs [`spawn_job_worker`](Self::spawn_job_worker).
    pub async fn run_due_jobs(&self) -> Result<JobRun, RuntimeError> {
        let mut total = JobRun::default();
        loop {
            let run = self.inner.job_pass(true).await?;
            total.dispatched += run.dispatched;
            total.timed_out += run.timed_out;
            total.notified += run.notified;
            total.notice_failures += run.notice_failures;
            if run.dispatched == 0 && run.timed_out == 0 && run.notified == 0 {
                return Ok(total);
            }
        }
    }

    /// Starts a background job worker: it dispatches jobs as they are
    /// created (each on its own tokio task), times out overdue ones and
    /// delivers notices, waking when there is work and checking every
    /// `poll` for deadlines and retries.
    pub fn spawn_job_worker(&self, poll: Duration) -> JobWorker {
        let (stop, mut stopped) = watch::channel(false);
        let inner = Arc::clone(&self.inner);
        let handle = tokio::spawn(async move {
            loop {
                if *stopped.borrow() {
                    return;
                }
                let busy = match inner.job_pass(false).await {
                    Ok(run) => run.dispatched > 0 || run.timed_out > 0 || run.notified > 0,
                    Err(e) => {
                        tracing::error!(error = %e, "job worker could not reach the store");
                        false
                    }
                };
                if !busy {
                    tokio::select! {
                        _ = stopped.changed() => {}
                        _ = inner.jobs.wake.notified() => {}
                        _ = inner.store.wait_for_work(poll) => {}
                    }
                }
            }
        });
        JobWorker {
            stop,
            handle: Some(handle),
        }
    }
}

/// The built-in `cancel_job` and `job_status` capabilities: an agent
/// cancels or looks at jobs of the principal it serves.
pub(crate) struct JobControl {
    manifest: CapabilityManifest,
    runtime: Weak<Inner>,
    cancel: bool,
}

/// The name of the built-in capability that cancels a job.
pub const CANCEL_JOB: &str = "cancel_job";
/// The name of the built-in capability that reports a job's state.
pub const JOB_STATUS: &str = "job_status";

impl JobControl {
    pub(crate) fn both(runtime: &Arc<Inner>) -> [JobControl; 2] {
        let params = |reason: bool| {
            let mut properties = json!({
                "job_id": { "type": "string", "description": "The job's id." }
            });
            if reason {
                properties["reason"] =
                    json!({ "type": "string", "description": "Why it is cancelled." });
            }
            json!({ "type": "object", "properties": properties, "required": ["job_id"] })
        };
        let mut cancel = CapabilityManifest::new(
            CANCEL_JOB,
            "Cancels a job started earlier for this user, with its subjobs.",
            CapabilityKind::Function,
            params(true),
        );
        cancel.side_effect = SideEffect::Idempotent;
        let mut status = CapabilityManifest::new(
            JOB_STATUS,
            "Tells where a job started earlier for this user stands, with its result when done.",
            CapabilityKind::Function,
            params(false),
        );
        status.side_effect = SideEffect::ReadOnly;
        [
            JobControl {
                manifest: cancel,
                runtime: Arc::downgrade(runtime),
                cancel: true,
            },
            JobControl {
                manifest: status,
                runtime: Arc::downgrade(runtime),
                cancel: false,
            },
        ]
    }
}

#[async_trait]
impl Capability for JobControl {
    fn manifest(&self) -> &CapabilityManifest {
        &self.manifest
    }

    async fn invoke(
        &self,
        context: &InvocationContext,
        arguments: Value,
    ) -> Result<Value, CapabilityError> {
        let inner = self
            .runtime
            .upgrade()
            .ok_or_else(|| CapabilityError::failed("the runtime is gone"))?;
        let id: JobId = arguments["job_id"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .map_err(|e| CapabilityError::InvalidArguments(format!("job_id: {e}")))?;
        let job = inner.store.job(id).await.map_err(|e| match e {
            StoreError::NotFound { .. } => CapabilityError::failed(format!("no job {id}")),
            other => CapabilityError::failed(other),
        })?;
        if job.principal.account != context.principal.account
            || job.principal.user != context.principal.user
        {
            // Another user's job is treated as absent.
            return Err(CapabilityError::failed(format!("no job {id}")));
        }
        if !self.cancel {
            let subjobs = inner
                .store
                .subjobs(id)
                .await
                .map_err(CapabilityError::failed)?;
            return Ok(job_record(&job, &subjobs));
        }
        if job.state.is_terminal() {
            return Ok(
                json!({ "job_id": id, "state": job.state, "note": "the job had already ended" }),
            );
        }
        let reason = arguments["reason"].as_str().unwrap_or_default();
        let runtime = Runtime { inner };
        match runtime
            .cancel_job(id, CancelledBy::Agent(context.agent_id.clone()), reason)
            .await
        {
            Ok(job) => Ok(json!({ "job_id": id, "state": job.state })),
            Err(RuntimeError::Job(JobError::Ended { state, .. })) => {
                Ok(json!({ "job_id": id, "state": state, "note": "the job had already ended" }))
            }
            Err(e) => Err(CapabilityError::failed(e)),
        }
    }
}
