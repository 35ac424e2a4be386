//! Jobs: deferred work an interaction hands off ("I'll get back to you"),
//! with subjobs, observers, a usefulness rule, a deadline and cancellation.
//!
//! A job moves `pending → dispatched → in_progress → resolved | failed |
//! cancelled | timed_out` ([`JobState::can_become`]); terminal states are
//! final, and a store refuses any other move with
//! [`StoreError::IllegalJobTransition`](crate::StoreError) and changes
//! nothing. Each move appends a `job.state_changed` event and, in the same
//! transaction, one [`JobNotification`] per observer that hears of it — a
//! durable outbox of notices, each delivered once (a notice is marked
//! delivered when its observer has it; a failed delivery is retried later).
//! The work that drives jobs (dispatchers, the timeout monitor, follow-ups)
//! builds on this record.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ErrorCode;
use crate::ids::{InteractionId, JobId, NotificationId, ObserverId, SessionId, StepId};
use crate::principal::Principal;
use crate::store::StoreError;
use crate::time::Timestamp;

/// What a capability running as a job can do with its job (the
/// [`InvocationContext::job`](crate::InvocationContext) of a deferred
/// call). The runtime implements it; a capability only calls it.
#[async_trait::async_trait]
pub trait JobHandle: fmt::Debug + Send + Sync {
    /// The job as it was when dispatched.
    fn job(&self) -> &Job;

    /// The job's id.
    fn id(&self) -> JobId {
        self.job().id
    }

    /// Where outside work reports back, when the runtime signs callbacks
    /// (`RuntimeBuilder::job_callbacks`).
    fn callback(&self) -> Option<&JobCallback>;

    /// Creates a subjob run by `capability` on the job workers. Its key is
    /// the parent's id and the subjob's number in this dispatch, so a
    /// dispatch run again after a crash finds the subjobs it created
    /// instead of creating more. A job that created subjobs ends when they
    /// do, by its usefulness rule.
    async fn subjob(&self, capability: &str, input: Value) -> Result<Job, JobHandleError>;

    /// Records a progress report (the job keeps its state).
    async fn progress(&self, progress: Value) -> Result<(), JobHandleError>;

    /// Sets the context bundle a follow-up gets with the result.
    async fn set_context(&self, context: Value) -> Result<(), JobHandleError>;

    /// Whether the job has ended (cancelled, timed out) while this ran;
    /// long work checks it to stop early.
    async fn has_ended(&self) -> Result<bool, JobHandleError>;
}

/// Why a [`JobHandle`] call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobHandleError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The runtime that dispatched the job has been dropped.
    #[error("the runtime of this job is gone")]
    RuntimeGone,
    /// The runtime failed otherwise.
    #[error("{message}")]
    Failed {
        /// Its code.
        code: ErrorCode,
        /// What happened.
        message: String,
    },
}

impl JobHandleError {
    /// A stable code for hosts.
    pub fn code(&self) -> ErrorCode {
        match self {
            JobHandleError::Store(e) => e.code(),
            JobHandleError::RuntimeGone => ErrorCode::RuntimeConfig,
            JobHandleError::Failed { code, .. } => *code,
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
    /// A callback at `url` proven by `token`.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: token.into(),
        }
    }

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

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Created, not yet handed to whatever runs it.
    Pending,
    /// Handed over (a worker, a webhook, a delegate).
    Dispatched,
    /// Reported under way.
    InProgress,
    /// Finished with a result.
    Resolved,
    /// Finished without one.
    Failed,
    /// Stopped by the user, the agent or the system.
    Cancelled,
    /// Past its deadline.
    TimedOut,
}

crate::step::str_enum!(JobState, "job state",
    JobState::Pending => "pending",
    JobState::Dispatched => "dispatched",
    JobState::InProgress => "in_progress",
    JobState::Resolved => "resolved",
    JobState::Failed => "failed",
    JobState::Cancelled => "cancelled",
    JobState::TimedOut => "timed_out",
);

impl JobState {
    /// Whether the job has ended (no move leaves a terminal state).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Resolved | JobState::Failed | JobState::Cancelled | JobState::TimedOut
        )
    }

    /// Whether a job may move from `self` to `to`: forward along
    /// `pending → dispatched → in_progress`, and from any of those to an
    /// end. Progress reports while `in_progress` are updates, not moves.
    pub fn can_become(self, to: JobState) -> bool {
        use JobState::*;
        match (self, to) {
            (Pending, Dispatched) | (Dispatched, InProgress) => true,
            (Pending | Dispatched | InProgress, end) => end.is_terminal(),
            _ => false,
        }
    }
}

/// When a job's observers hear of partial output, and how a job that waits
/// on subjobs ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Usefulness {
    /// Only the whole job is useful: observers hear when it ends, and a job
    /// waiting on subjobs resolves only if every one resolved.
    #[default]
    AllSubjobs,
    /// The first resolved subjob is already useful: observers hear of it
    /// (once) as partial output, and a job waiting on subjobs resolves when
    /// they have all ended and at least one resolved.
    AnyCompletedSubjob,
}

crate::step::str_enum!(Usefulness, "usefulness rule",
    Usefulness::AllSubjobs => "all_subjobs",
    Usefulness::AnyCompletedSubjob => "any_completed_subjob",
);

/// Who is told about a job.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ObserverKind {
    /// A follow-up interaction in the job's session, whose `context` step
    /// carries the job's result and context bundle.
    FollowUp,
    /// A signed webhook (its secret is the runtime's, never stored here).
    Webhook {
        /// Where notices are POSTed.
        url: String,
    },
    /// An in-process callback registered under this name.
    Callback {
        /// The callback's name.
        name: String,
    },
}

/// An observer of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobObserver {
    /// Its id.
    pub id: ObserverId,
    /// The job observed.
    pub job_id: JobId,
    /// Who it is.
    pub kind: ObserverKind,
}

/// What an observer is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    /// The job was handed over.
    Dispatched,
    /// Useful partial output exists (the usefulness rule says when).
    Partial,
    /// The job resolved.
    Resolved,
    /// The job failed.
    Failed,
    /// The job was cancelled.
    Cancelled,
    /// The job timed out.
    TimedOut,
}

crate::step::str_enum!(Notice, "job notice",
    Notice::Dispatched => "dispatched",
    Notice::Partial => "partial",
    Notice::Resolved => "resolved",
    Notice::Failed => "failed",
    Notice::Cancelled => "cancelled",
    Notice::TimedOut => "timed_out",
);

impl Notice {
    /// The notice a move to `state` gives, if any (`in_progress` is not one).
    pub fn of(state: JobState) -> Option<Notice> {
        match state {
            JobState::Dispatched => Some(Notice::Dispatched),
            JobState::Resolved => Some(Notice::Resolved),
            JobState::Failed => Some(Notice::Failed),
            JobState::Cancelled => Some(Notice::Cancelled),
            JobState::TimedOut => Some(Notice::TimedOut),
            JobState::Pending | JobState::InProgress => None,
        }
    }
}

/// One notice for one observer, in the durable outbox of notices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobNotification {
    /// Its id: the de-duplication key for the observer.
    pub id: NotificationId,
    /// The observer.
    pub observer: JobObserver,
    /// What it is told.
    pub notice: Notice,
    /// Delivery attempts that failed.
    pub attempts: u32,
    /// Not to be tried before this.
    pub due_at: Timestamp,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it was delivered, once it was.
    pub delivered_at: Option<Timestamp>,
    /// When it was written.
    pub created_at: Timestamp,
}

/// What something working on a job reports back through
/// [`Jobs::report`](crate::runtime::Jobs::report) (the callback of a
/// webhook dispatched as a job, an external workflow).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobReport {
    /// Under way, with an optional progress payload.
    Progress {
        /// The progress payload.
        #[serde(default)]
        progress: Option<Value>,
    },
    /// Done, with its result and an optional context bundle for the follow-up.
    Resolved {
        /// The result.
        result: Value,
        /// What the follow-up needs besides the result.
        #[serde(default)]
        context: Option<Value>,
    },
    /// Failed, with the reason.
    Failed {
        /// Why.
        error: String,
    },
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// The job it is part of, for a subjob.
    pub parent_id: Option<JobId>,
    /// The session it reports back to.
    pub session_id: SessionId,
    /// The interaction that created it.
    pub interaction_id: InteractionId,
    /// The `act` step that dispatched it, if one did.
    pub step_id: Option<StepId>,
    /// Who it works for.
    pub principal: Principal,
    /// The capability that does the work.
    pub capability: String,
    /// Its input.
    pub input: Value,
    /// Where it stands.
    pub state: JobState,
    /// When observers hear of partial output.
    pub usefulness: Usefulness,
    /// The last progress report.
    pub progress: Option<Value>,
    /// The result, once resolved (or partial results before).
    pub result: Option<Value>,
    /// What a follow-up interaction needs besides the result.
    pub context: Option<Value>,
    /// Why it failed, was cancelled or timed out.
    pub error: Option<String>,
    /// It times out if not ended by then.
    pub deadline: Option<Timestamp>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// A job to create, with its observers.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// The job it is part of, for a subjob.
    pub parent_id: Option<JobId>,
    /// The session it reports back to.
    pub session_id: SessionId,
    /// The interaction that creates it.
    pub interaction_id: InteractionId,
    /// The `act` step that dispatches it, if one does.
    pub step_id: Option<StepId>,
    /// Who it works for.
    pub principal: Principal,
    /// The capability that does the work.
    pub capability: String,
    /// Its input.
    pub input: Value,
    /// When observers hear of partial output.
    pub usefulness: Usefulness,
    /// It times out if not ended by then.
    pub deadline: Option<Timestamp>,
    /// Who is told about it.
    pub observers: Vec<ObserverKind>,
    /// Makes creation idempotent: creating again with the same key returns
    /// the job created first (and adds no observers). A deferred `act` step
    /// passes its idempotency key, so a re-run after a crash finds its job.
    pub key: Option<String>,
}

/// A change to a job: a move to another state and/or new data.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct JobChange {
    /// The state to move to (none: data only, in the current state).
    pub state: Option<JobState>,
    /// A progress report.
    pub progress: Option<Value>,
    /// The result (or partial results).
    pub result: Option<Value>,
    /// The context bundle for the follow-up.
    pub context: Option<Value>,
    /// Why it failed, was cancelled or timed out.
    pub error: Option<String>,
}

impl JobChange {
    /// A move to `state`.
    pub fn to(state: JobState) -> Self {
        Self {
            state: Some(state),
            ..Self::default()
        }
    }

    /// With a result.
    pub fn result(mut self, result: Value) -> Self {
        self.result = Some(result);
        self
    }

    /// With a context bundle.
    pub fn context(mut self, context: Value) -> Self {
        self.context = Some(context);
        self
    }

    /// With a progress report.
    pub fn progress(mut self, progress: Value) -> Self {
        self.progress = Some(progress);
        self
    }

    /// With the reason it ended badly.
    pub fn error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }
}

/// Who hears of a change of a job's state: the rule every store applies
/// in the change's transaction ([`JobChange::fanout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fanout {
    /// The notice the job's own observers get.
    pub notice: Option<Notice>,
    /// A parent whose observers get [`Notice::Partial`], if it is
    /// [`Usefulness::AnyCompletedSubjob`], has not ended and was not told
    /// of partial output before (the store checks these and marks it told,
    /// in the same statement).
    pub partial_for: Option<JobId>,
}

impl JobChange {
    /// Who hears of this change to `job` (as it was before the change):
    /// its observers get the notice of its new state; the first subjob of
    /// a parent to resolve gives the parent partial output, once.
    pub fn fanout(&self, job: &Job) -> Fanout {
        let Some(to) = self.state else {
            return Fanout {
                notice: None,
                partial_for: None,
            };
        };
        Fanout {
            notice: Notice::of(to),
            partial_for: job.parent_id.filter(|_| to == JobState::Resolved),
        }
    }

    /// The payload of the `job.state_changed` event this change appends to
    /// `job` (as it was before), when it moves its state.
    pub fn event(&self, job: &Job) -> Option<crate::event::JobStateChanged> {
        self.state.map(|to| crate::event::JobStateChanged {
            job_id: job.id,
            from: job.state,
            to,
            capability: job.capability.clone(),
        })
    }
}

impl JobChange {
    /// Checks that this change may apply to job `job` in state `from`: the
    /// error every store gives otherwise ([`StoreError::IllegalJobTransition`](crate::StoreError)
    /// for a move [`JobState::can_become`] refuses, a conflict for data
    /// written to an ended job). Returns the state after the change.
    pub fn check(&self, job: JobId, from: JobState) -> crate::StoreResult<JobState> {
        if let Some(to) = self.state
            && !from.can_become(to)
        {
            return Err(crate::StoreError::IllegalJobTransition { job, from, to });
        }
        if self.state.is_none() && from.is_terminal() {
            return Err(crate::StoreError::Conflict(format!(
                "job {job} has ended ({from})"
            )));
        }
        Ok(self.state.unwrap_or(from))
    }
}

/// What [`JobStore::update_job`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct JobUpdate {
    /// The job, changed.
    pub job: Job,
    /// Notices written for observers, in order (for this job and, on a
    /// subjob's resolution, partial output of its parent).
    pub notifications: Vec<JobNotification>,
    /// The `job.state_changed` event appended, when the state moved.
    pub event: Option<crate::event::Event>,
    /// A claim took over a `dispatched` job whose worker's lease ran out
    /// (the worker died): its state did not move, and what the dispatch did
    /// before is unknown.
    pub taken_over: bool,
}

/// Jobs, their subjobs and observers, and the outbox of notices.
#[async_trait::async_trait]
pub trait JobStore: Send + Sync {
    /// Creates a job as `pending` with its observers.
    async fn create_job(&self, new: NewJob, now: Timestamp) -> crate::StoreResult<Job>;

    /// The job `id`.
    async fn job(&self, id: JobId) -> crate::StoreResult<Job>;

    /// The subjobs of a job, in order of creation.
    async fn subjobs(&self, id: JobId) -> crate::StoreResult<Vec<Job>>;

    /// The observers of a job.
    async fn job_observers(&self, id: JobId) -> crate::StoreResult<Vec<JobObserver>>;

    /// Changes a job in one transaction: the move (refused with
    /// [`StoreError::IllegalJobTransition`](crate::StoreError) if
    /// [`JobState::can_become`] says no, or with a conflict for any change to
    /// an ended job), its data, a `job.state_changed` event, and a notice for
    /// each of its observers when the move gives one ([`Notice::of`]). When
    /// a subjob resolves and its parent's rule is
    /// [`Usefulness::AnyCompletedSubjob`], the parent's observers get one
    /// [`Notice::Partial`] — for the first resolved subjob only.
    async fn update_job(
        &self,
        id: JobId,
        change: JobChange,
        now: Timestamp,
    ) -> crate::StoreResult<JobUpdate>;

    /// Atomically claims the oldest `pending` job (of one of `capabilities`,
    /// or any when empty) by moving it to `dispatched`, as
    /// [`update_job`](Self::update_job) would, or else the oldest
    /// `dispatched` one whose lease ran out ([`JobUpdate::taken_over`]);
    /// `worker` holds it until `now + lease` unless it renews it. Two
    /// workers never claim the same job.
    async fn claim_job(
        &self,
        capabilities: &[String],
        worker: &str,
        now: Timestamp,
        lease: std::time::Duration,
    ) -> crate::StoreResult<Option<JobUpdate>>;

    /// Renews `worker`'s lease of a dispatched job until `until`; `false`
    /// if it no longer holds it (the job moved on, or another took it).
    async fn renew_job(
        &self,
        id: JobId,
        worker: &str,
        until: Timestamp,
    ) -> crate::StoreResult<bool>;

    /// Jobs not ended whose deadline is at or before `now`, oldest deadline first.
    async fn overdue_jobs(&self, now: Timestamp) -> crate::StoreResult<Vec<Job>>;

    /// Jobs not ended, in order of creation (for recovery).
    async fn unfinished_jobs(&self) -> crate::StoreResult<Vec<Job>>;

    /// Notices not yet delivered and due at `now`, oldest first, at most
    /// `limit`: for each observer only its oldest undelivered notice, so an
    /// observer hears of changes in order even when a delivery is retried.
    async fn due_notifications(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> crate::StoreResult<Vec<JobNotification>>;

    /// Atomically takes the notices [`due_notifications`](Self::due_notifications)
    /// would list for delivery, moving each one's `due_at` to `now + lease`:
    /// two deliverers never take the same notice, and one that dies before
    /// recording the outcome leaves it to be taken again after the lease.
    async fn claim_notifications(
        &self,
        now: Timestamp,
        lease: std::time::Duration,
        limit: u32,
    ) -> crate::StoreResult<Vec<JobNotification>>;

    /// Marks a notice delivered; returns `false` if it already was (idempotent).
    async fn notification_delivered(
        &self,
        id: NotificationId,
        now: Timestamp,
    ) -> crate::StoreResult<bool>;

    /// Records a failed delivery and when to try again.
    async fn notification_failed(
        &self,
        id: NotificationId,
        error: &str,
        retry_at: Timestamp,
    ) -> crate::StoreResult<JobNotification>;
}
