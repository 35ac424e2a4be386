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
//!   [`Jobs::report`]. A dispatch that creates subjobs
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

use crate::error::ErrorCode;
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

use super::access::Need;
use super::harness::Run;
use super::{Inbound, Inner, Runtime, RuntimeError};
use crate::capability::{
    Capability, CapabilityError, CapabilityKind, CapabilityManifest, Dispatch, InvocationContext,
    SideEffect, UsageMeter,
};
use crate::ids::{AgentId, JobId, NotificationId, ObserverId, SessionId, StepId, UserId};
use crate::interaction::{Interaction, InteractionKind, InteractionState, NewInteraction};
use crate::job::{
    Job, JobCallback, JobChange, JobHandle, JobHandleError, JobNotification, JobReport, JobState,
    JobUpdate, NewJob, Notice, ObserverKind, Usefulness,
};
use crate::principal::Actor;
use crate::step::StepKind;
use crate::step::payload::{ActOutput, DispatchCall, to_json};
use crate::store::StoreError;

mod callbacks;
mod control;
mod notices;
mod run;

pub use callbacks::JobCallbacks;
pub(crate) use control::JobControl;
pub use control::{CANCEL_JOB, JOB_STATUS};
pub(crate) use notices::job_record;
pub use run::Jobs;

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
    /// A dispatch wrote no job; its `act` step says why.
    #[error("`{capability}` could not be dispatched: {code}: {message}")]
    NotDispatched {
        /// The capability.
        capability: String,
        /// Why, as the `act` step recorded it.
        code: ErrorCode,
        /// The step's message.
        message: String,
    },
}

impl JobError {
    /// A stable code for hosts.
    pub fn code(&self) -> ErrorCode {
        match self {
            JobError::Forbidden { .. } => ErrorCode::JobForbidden,
            JobError::BadToken { .. } => ErrorCode::JobBadToken,
            JobError::Ended { .. } => ErrorCode::JobEnded,
            JobError::NoCallbacks => ErrorCode::JobNoCallbacks,
            JobError::NotDispatched { .. } => ErrorCode::JobNotDispatched,
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

/// The runtime's [`JobHandle`]: what a capability running as a job is
/// given in its [`InvocationContext`](crate::InvocationContext).
pub(crate) struct RuntimeJobHandle {
    inner: Weak<Inner>,
    job: Job,
    subjobs: Arc<AtomicU32>,
    callback: Option<JobCallback>,
}

impl fmt::Debug for RuntimeJobHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobHandle")
            .field("job", &self.job.id)
            .field("capability", &self.job.capability)
            .finish_non_exhaustive()
    }
}

impl From<RuntimeError> for JobHandleError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::Store(e) => JobHandleError::Store(e),
            other => JobHandleError::Failed {
                code: other.code(),
                message: other.to_string(),
            },
        }
    }
}

impl RuntimeJobHandle {
    fn runtime(&self) -> Result<Arc<Inner>, JobHandleError> {
        self.inner.upgrade().ok_or(JobHandleError::RuntimeGone)
    }

    fn subjobs_created(&self) -> u32 {
        self.subjobs.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl JobHandle for RuntimeJobHandle {
    fn job(&self) -> &Job {
        &self.job
    }

    fn callback(&self) -> Option<&JobCallback> {
        self.callback.as_ref()
    }

    async fn subjob(&self, capability: &str, input: Value) -> Result<Job, JobHandleError> {
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

    async fn progress(&self, progress: Value) -> Result<(), JobHandleError> {
        let rt = self.runtime()?;
        rt.change_job(self.job.id, JobChange::default().progress(progress))
            .await?;
        Ok(())
    }

    async fn set_context(&self, context: Value) -> Result<(), JobHandleError> {
        let rt = self.runtime()?;
        rt.change_job(self.job.id, JobChange::default().context(context))
            .await?;
        Ok(())
    }

    async fn has_ended(&self) -> Result<bool, JobHandleError> {
        let rt = self.runtime()?;
        Ok(rt.store.job(self.job.id).await?.state.is_terminal())
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
    /// Proposed calls that expired undecided
    /// ([`Approvals::expire_due`](crate::runtime::Approvals::expire_due)).
    pub approvals_expired: usize,
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

super::worker::worker_handle!(
    /// A background job worker; stops when [`JobWorker::stop`] is called or
    /// it is dropped.
    JobWorker,
    "Stops the worker and waits for its loop to end (dispatches it started run on until they finish)."
);

/// The runtime's job state: configuration and what runs in this process.
#[derive(Default)]
pub(crate) struct JobsState {
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

fn ended_already(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::IllegalJobTransition { .. } | StoreError::Conflict(_)
    )
}
