//! The store: several narrow async traits, each testable alone, combined by
//! the blanket [`Store`] trait. `thinklio-core` knows no database; store
//! crates (`thinklio-store-sqlite`, `thinklio-store-postgres`) implement
//! these traits and prove it by passing the conformance suite (feature
//! `conformance`). What both apply lives here once: the rules of a write
//! ([`StepEnding`] and the `created` constructors of new records) and the
//! mapping of stored rows to records ([`rows`]).
//!
//! Contracts every store keeps:
//! - A step's state only moves along [`StepState::can_become`]; any other
//!   update fails with [`StoreError::IllegalTransition`] and changes nothing.
//! - Every state change of a step is recorded as a [`StepTransition`] and an
//!   [`Event`] in the same transaction as the change.
//! - A `respond` step's success and its outbox entry commit together.
//! - A committed write survives a crash of the process.

use crate::error::ErrorCode;
use serde::Deserialize;
use std::fmt;

mod ops;
pub mod retention;
pub mod rows;
mod sessions;

pub use ops::{Backlog, OpsStore, StoreCounts};
pub use retention::{PruneReport, Pruning};
pub use sessions::SessionStore;

use async_trait::async_trait;

use crate::approval::{NewDecision, StoredDecision};
use crate::budget::BudgetLimit;
use crate::directory::{Access, AccessError, AccountPolicy, AccountRole, Assignment};
use crate::event::{Event, EventKind, NewEvent, StepEvent};
use crate::ids::{
    AccountId, AgentId, InteractionId, OutboxId, SessionId, StepId, TaskId, TeamId, UserId,
};
use crate::interaction::{Interaction, NewInteraction};
use crate::outbox::{NewOutboxMessage, OutboxMessage};
use crate::principal::{Principal, Scope};
use crate::queue::{NewTask, Task, TaskRetry};

use crate::step::{
    FirstStep, ModelUsage, NewStep, Step, StepError, StepOutcome, StepState, StepTransition,
};
use crate::time::Timestamp;
use crate::todo::Todo;
use crate::usage::{Cost, TokenUsage, UsageFilter, UsageGroup, UsageRow, UsageTotals};

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No such record.
    #[error("{entity} {id} not found")]
    NotFound {
        /// What was looked for (`session`, `step`, ...).
        entity: &'static str,
        /// Its id.
        id: String,
    },
    /// The step is not in a state that allows the change.
    #[error("step {step} cannot move from {from} to {to}")]
    IllegalTransition {
        /// The step.
        step: StepId,
        /// Its current state.
        from: StepState,
        /// The state asked for.
        to: StepState,
    },
    /// The job is not in a state that allows the move.
    #[error("job {job} cannot move from {from} to {to}")]
    IllegalJobTransition {
        /// The job.
        job: crate::ids::JobId,
        /// Its current state.
        from: crate::job::JobState,
        /// The state asked for.
        to: crate::job::JobState,
    },
    /// The change conflicts with the stored data (a lost lease, a duplicate).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Stored data could not be read back.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("store backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
}

impl StoreError {
    /// A stable code for hosts.
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::NotFound { .. } => ErrorCode::StoreNotFound,
            StoreError::IllegalTransition { .. } => ErrorCode::StoreIllegalTransition,
            StoreError::IllegalJobTransition { .. } => ErrorCode::StoreIllegalJobTransition,
            StoreError::Conflict(_) => ErrorCode::StoreConflict,
            StoreError::Corrupt(_) => ErrorCode::StoreCorrupt,
            StoreError::Backend(_) => ErrorCode::StoreBackend,
            StoreError::Closed => ErrorCode::StoreClosed,
        }
    }

    /// A not-found error.
    pub fn not_found(entity: &'static str, id: impl fmt::Display) -> Self {
        StoreError::NotFound {
            entity,
            id: id.to_string(),
        }
    }
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// What [`InteractionStore::create_interaction_begun`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatedInteraction {
    /// The interaction: new, or the one that has the message's inbound id.
    pub interaction: Interaction,
    /// Its `interaction.created` event, when it is new.
    pub created: Option<Event>,
    /// Its first step, running, and that step's `step.started` event, when
    /// the interaction is new.
    pub first: Option<(Step, Event)>,
}

/// Interactions and their steps.
#[async_trait]
pub trait InteractionStore: Send + Sync {
    /// Creates an interaction and appends its `interaction.created` event in
    /// the same transaction, returning both. When `inbound_id` is given and
    /// the session already has an interaction with it, returns that one and
    /// no event.
    async fn create_interaction(
        &self,
        new: NewInteraction,
    ) -> StoreResult<(Interaction, Option<Event>)>;

    /// The interaction `id`.
    async fn interaction(&self, id: InteractionId) -> StoreResult<Interaction>;

    /// Interactions of a session, in order.
    async fn interactions_of_session(&self, session: SessionId) -> StoreResult<Vec<Interaction>>;

    /// Interactions that are neither completed nor failed (see
    /// [`InteractionState::derive`](crate::InteractionState::derive)), in order of creation.
    async fn unfinished_interactions(&self) -> StoreResult<Vec<Interaction>>;

    /// Unfinished interactions of one session that are not a delegate's,
    /// in order (what an interaction worker runs when it holds the session).
    async fn unfinished_in_session(&self, session: SessionId) -> StoreResult<Vec<Interaction>> {
        Ok(self
            .unfinished_interactions()
            .await?
            .into_iter()
            .filter(|i| i.session_id == session && i.parent_interaction_id.is_none())
            .collect())
    }

    /// [`create_interaction`](Self::create_interaction) and, when the
    /// interaction is new, its first step begun as
    /// [`begin_step`](Self::begin_step) begins `first.of(id)`: in one
    /// transaction (one commit where there were two), the events in that
    /// order. A store that does not override it does one after the other.
    async fn create_interaction_begun(
        &self,
        new: NewInteraction,
        first: FirstStep,
    ) -> StoreResult<CreatedInteraction> {
        let (interaction, created) = self.create_interaction(new).await?;
        let first = match created {
            Some(_) => Some(self.begin_step(first.of(interaction.id)).await?),
            None => None,
        };
        Ok(CreatedInteraction {
            interaction,
            created,
            first,
        })
    }

    /// Steps of an interaction, in order.
    async fn steps(&self, interaction: InteractionId) -> StoreResult<Vec<Step>>;

    /// The step `id`.
    async fn step(&self, id: StepId) -> StoreResult<Step>;

    /// Writes a step as `created` and moves it to `running` in one
    /// transaction, recording both transitions and a `step.started` event.
    /// Fails with [`StoreError::Conflict`] if the interaction already has a
    /// step at `new.seq`.
    async fn begin_step(&self, new: NewStep) -> StoreResult<(Step, Event)>;

    /// Ends a `running` step, in one transaction: its outcome, its usage
    /// record, the transition and a `step.succeeded`/`step.failed` event; with
    /// `reply`, its outbox entry and an `interaction.completed` event (and,
    /// when the reply is marked delivered, a `reply.delivered` event); with
    /// `next`, the next step begun as [`begin_step`](Self::begin_step) would.
    /// Finishing one step and starting the next in one commit keeps the
    /// durability contract (the outcome is committed before the next step's
    /// work, whose row exists before that work) at one commit per step.
    /// Nothing is written if any part fails.
    ///
    /// `step` is the step as the caller last saw it. The store ends the step
    /// it holds under `step.id` and checks the move against the state it
    /// holds, so a copy that is out of date changes nothing but the speed: a
    /// store may write the whole ending at once when the state it holds is
    /// still the copy's (PostgreSQL does, in one statement).
    async fn finish_step(
        &self,
        step: &Step,
        outcome: StepOutcome,
        reply: Option<NewOutboxMessage>,
        next: Option<NewStep>,
    ) -> StoreResult<FinishedStep>;

    /// The recorded state changes of a step, in order.
    async fn step_transitions(&self, id: StepId) -> StoreResult<Vec<StepTransition>>;

    /// Tells every process sharing the store that `interaction` is to be
    /// cancelled: one that runs it stops it at once
    /// ([`cancel_announcements`](Self::cancel_announcements)). A store
    /// that is not shared between processes has no one to tell.
    async fn announce_cancel(&self, interaction: InteractionId) -> StoreResult<()> {
        let _ = interaction;
        Ok(())
    }

    /// Cancellations announced through the store by any process (this
    /// one's too); `None` for a store that is not shared between
    /// processes. Announcements are best-effort: one missed while a
    /// connection is down is not repeated.
    fn cancel_announcements(&self) -> Option<tokio::sync::broadcast::Receiver<InteractionId>> {
        None
    }
}

/// Which waiting steps to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApprovalFilter {
    /// Those of one session.
    Session(SessionId),
    /// Those of one account.
    Account(AccountId),
    /// Every one (the runtime's expiry sweep).
    All,
}

/// Decisions about calls that wait for a person (see [`crate::approval`]).
#[async_trait]
pub trait ApprovalStore: Send + Sync {
    /// Stores a decision about a waiting `act` step, with its
    /// `approval.decided` event, in one transaction. The same decision
    /// again returns the stored one and no event; another one after it,
    /// or a decision about a step that does not wait, is
    /// [`StoreError::Conflict`] (the rule is
    /// [`NewDecision::check`](crate::approval::NewDecision::check)).
    async fn decide(&self, new: NewDecision) -> StoreResult<(StoredDecision, Option<Event>)>;

    /// The decision about `step`, if one was taken.
    async fn decision(&self, step: StepId) -> StoreResult<Option<StoredDecision>>;

    /// Steps that wait for a decision nobody has taken yet, oldest first,
    /// each with its session.
    async fn waiting_steps(&self, filter: ApprovalFilter) -> StoreResult<Vec<(Step, SessionId)>>;

    /// Moves a decided `waiting` step back to `running` to run its call,
    /// recording the transition and a `step.started` event.
    async fn resume_step(&self, id: StepId) -> StoreResult<(Step, Event)>;
}

/// What a store writes when a running step ends, worked out once here from
/// the step as stored and its outcome, so that both stores write the same
/// row, usage record and event.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StepEnding {
    /// The state the step moves to.
    pub to: StepState,
    /// Its output, if it succeeded.
    pub output: Option<serde_json::Value>,
    /// Its error, if it failed.
    pub error: Option<StepError>,
    /// The model usage it reports.
    pub usage: Option<ModelUsage>,
    /// The kind of the event of its end.
    pub event: EventKind,
    /// That event's payload.
    pub payload: serde_json::Value,
}

impl StepEnding {
    /// The ending of `step` with `outcome`; a move [`StepState::can_become`]
    /// refuses is [`StoreError::IllegalTransition`].
    pub fn of(step: &Step, outcome: StepOutcome) -> StoreResult<Self> {
        let to = outcome.state();
        Self::legal(step, to)?;
        let (output, error, usage) = match outcome {
            StepOutcome::Succeeded { output, usage } => (Some(output), None, usage),
            StepOutcome::Failed { error, usage } => (None, Some(error), usage),
            StepOutcome::Waiting { proposal } => (Some(proposal), None, None),
        };
        let event = match to {
            StepState::Succeeded => EventKind::StepSucceeded,
            StepState::Waiting if step.mode != crate::step::StepMode::Interactive => {
                EventKind::StepWaiting
            }
            StepState::Waiting => EventKind::ApprovalRequested,
            _ => EventKind::StepFailed,
        };
        let ended = StepEvent::ended(step, error.as_ref(), usage.as_ref());
        let payload = match (to, output.as_ref()) {
            (StepState::Waiting, Some(proposal)) if event == EventKind::ApprovalRequested => {
                // What a host shows the person asked to decide.
                let arguments = crate::approval::Proposal::deserialize(proposal)
                    .ok()
                    .and_then(|p| serde_json::from_str(&p.call.arguments).ok())
                    .unwrap_or(serde_json::Value::Null);
                crate::step::payload::to_json(&crate::event::ApprovalRequested {
                    step: ended,
                    arguments,
                })
            }
            _ => ended.to_json(),
        };
        Ok(Self {
            to,
            output,
            error,
            usage,
            event,
            payload,
        })
    }

    /// The ending, worked out from a copy of a step, for the step as the
    /// store holds it: the same ending (it depends on nothing that changes
    /// once a step is written but its state), if the move from the state
    /// held is one [`StepState::can_become`] allows.
    pub fn recheck(self, stored: &Step) -> StoreResult<Self> {
        Self::legal(stored, self.to)?;
        Ok(self)
    }

    fn legal(step: &Step, to: StepState) -> StoreResult<()> {
        if step.state.can_become(to) {
            Ok(())
        } else {
            Err(StoreError::IllegalTransition {
                step: step.id,
                from: step.state,
                to,
            })
        }
    }

    /// The model that answered, if any.
    pub fn model(&self) -> Option<&str> {
        self.usage.as_ref().map(|u| u.model.as_str())
    }

    /// The tokens the step used.
    pub fn tokens(&self) -> TokenUsage {
        self.usage.as_ref().map(|u| u.tokens).unwrap_or_default()
    }

    /// What the step cost.
    pub fn cost(&self) -> Cost {
        self.usage.as_ref().map(|u| u.cost).unwrap_or_default()
    }

    /// The usage to keep as a usage record of its own: none for usage
    /// rolled up from steps that recorded it already.
    pub fn recorded_usage(&self) -> Option<&ModelUsage> {
        self.usage.as_ref().filter(|u| !u.rolled_up)
    }

    /// `step` as it reads once the ending is written at `now`.
    pub fn apply(self, mut step: Step, now: Timestamp) -> Step {
        step.state = self.to;
        step.model = self.model().map(str::to_owned);
        step.usage = self.tokens();
        step.cost = self.cost();
        step.output = self.output;
        step.error = self.error;
        step.updated_at = now;
        step
    }
}

/// What [`InteractionStore::finish_step`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedStep {
    /// The step, ended.
    pub step: Step,
    /// The next step, begun, when one was asked for.
    pub next: Option<Step>,
    /// The outbox entry, when a reply was given.
    pub reply: Option<OutboxMessage>,
    /// The events appended, in order.
    pub events: Vec<Event>,
}

/// The outbox of replies.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Replies not yet delivered, oldest first.
    async fn undelivered(&self) -> StoreResult<Vec<OutboxMessage>>;

    /// The reply of an interaction, if written.
    async fn reply_of(&self, interaction: InteractionId) -> StoreResult<Option<OutboxMessage>>;

    /// Marks a reply delivered (idempotent) and appends `reply.delivered` the first time.
    async fn mark_delivered(&self, id: OutboxId, at: Timestamp) -> StoreResult<Option<Event>>;
}

/// The durable background queue.
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Enqueues a task.
    async fn enqueue(&self, task: NewTask) -> StoreResult<Task>;

    /// Waits until another process may have added work (an interaction, a
    /// job, a task, a notice) or `timeout` passes, so idle workers need not
    /// poll tightly. A store shared by one process only waits the timeout
    /// (the runtime wakes its own workers); PostgreSQL listens for the other
    /// processes' notifications.
    async fn wait_for_work(&self, timeout: std::time::Duration) {
        tokio::time::sleep(timeout).await;
    }

    /// Atomically claims the oldest due task (`pending` with `run_at <= now`,
    /// or `leased` with an expired lease), counts an attempt, and leases it
    /// until `now + lease`. `kinds` limits the kinds claimed; empty means all.
    async fn claim(
        &self,
        now: Timestamp,
        lease: std::time::Duration,
        kinds: &[String],
    ) -> StoreResult<Option<Task>>;

    /// Marks a claimed task done. [`StoreError::Conflict`] if the lease was lost.
    async fn complete_task(&self, id: TaskId, lease_token: &str) -> StoreResult<()>;

    /// Records a failed attempt: schedules a retry or dead-letters the task
    /// (appending `task.dead_lettered`). [`StoreError::Conflict`] if the lease was lost.
    async fn fail_task(
        &self,
        id: TaskId,
        lease_token: &str,
        error: &str,
        retry: TaskRetry,
    ) -> StoreResult<Task>;

    /// The task `id`.
    async fn task(&self, id: TaskId) -> StoreResult<Task>;

    /// Dead-lettered tasks, oldest first.
    async fn dead_letters(&self) -> StoreResult<Vec<Task>>;

    /// Puts a dead-lettered task back as pending with its attempts reset.
    async fn requeue(&self, id: TaskId, run_at: Timestamp) -> StoreResult<Task>;
}

/// The append-only event log.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends an event.
    async fn append_event(&self, event: NewEvent) -> StoreResult<Event>;

    /// Events with `seq > after`, in order, at most `limit`.
    async fn events_after(&self, after: i64, limit: u32) -> StoreResult<Vec<Event>>;
}

/// Usage records and their sums.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Records the usage of a model call made outside a step's work
    /// (knowledge extraction), so it counts in reports and budgets like any
    /// other. A step's own usage is recorded by `finish_step`.
    async fn record_usage(&self, record: crate::usage::UsageRecord) -> StoreResult<()>;

    /// Sums of the usage records matching `filter`.
    async fn usage_totals(&self, filter: &UsageFilter) -> StoreResult<UsageTotals>;

    /// Sums of the usage records matching `filter`, one row per `group`,
    /// highest cost first.
    async fn usage_report(
        &self,
        group: UsageGroup,
        filter: &UsageFilter,
    ) -> StoreResult<Vec<UsageRow>>;
}

/// What [`PrivacyStore::forget_user`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForgetReport {
    /// Sessions deleted.
    pub sessions: u64,
    /// Interactions deleted, with their steps, replies and events.
    pub interactions: u64,
    /// Usage records kept for the account's totals but no longer tied to the user.
    pub usage_anonymized: u64,
    /// Todo items deleted.
    pub todos: u64,
    /// Knowledge facts of the user layer deleted.
    pub facts: u64,
    /// Jobs deleted (with their input, result, subjobs, observers and
    /// notices).
    pub jobs: u64,
    /// Queue tasks working on the user's data deleted, whatever their state.
    pub tasks: u64,
    /// Memberships deleted: of the account, of its teams, and the user's
    /// own assignments of the account's agents.
    pub memberships: u64,
    /// Summaries of their sessions deleted.
    pub summaries: u64,
    /// Images their messages carried, deleted.
    pub images: u64,
}

/// Agents kept as data ([`crate::catalog`]).
#[async_trait]
pub trait AgentStore: Send + Sync {
    /// Stores `new` as its agent's next version (1 for a new agent), in one
    /// transaction with the agent's ownership (an agent stays with the
    /// account that first stored it). Refused as
    /// [`StoreError::Conflict`] by the rule of
    /// [`NewAgentVersion::next_version`](crate::catalog::NewAgentVersion::next_version):
    /// another account's agent, an unexpected version, an archived agent.
    async fn put_agent(
        &self,
        new: crate::catalog::NewAgentVersion,
    ) -> StoreResult<crate::catalog::StoredAgent>;

    /// The agent `id` as stored, if it is.
    async fn stored_agent(&self, id: &AgentId) -> StoreResult<Option<crate::catalog::StoredAgent>>;

    /// Every version of an agent, oldest first.
    async fn agent_versions(&self, id: &AgentId) -> StoreResult<Vec<crate::catalog::AgentVersion>>;

    /// One version of an agent.
    async fn agent_version(
        &self,
        id: &AgentId,
        version: u32,
    ) -> StoreResult<crate::catalog::AgentVersion>;

    /// Moves an agent to `state` (an archived agent stays archived:
    /// [`StoreError::Conflict`]); returns it as stored.
    async fn set_agent_state(
        &self,
        id: &AgentId,
        state: crate::catalog::AgentState,
    ) -> StoreResult<crate::catalog::StoredAgent>;

    /// The agents an account stores, by id.
    async fn stored_agents(
        &self,
        account: AccountId,
    ) -> StoreResult<Vec<crate::catalog::StoredAgent>>;
}

/// Agent templates of accounts ([`crate::catalog::AgentTemplate`]).
#[async_trait]
pub trait TemplateStore: Send + Sync {
    /// Stores `new` as its template's next version (1 for a new one), by
    /// the rule of [`NewTemplate::next_version`](crate::catalog::NewTemplate::next_version).
    async fn put_template(
        &self,
        new: crate::catalog::NewTemplate,
    ) -> StoreResult<crate::catalog::AgentTemplate>;

    /// The template `id`, if it is stored.
    async fn template(
        &self,
        id: &crate::ids::TemplateId,
    ) -> StoreResult<Option<crate::catalog::AgentTemplate>>;

    /// The templates of an account, by id.
    async fn templates(
        &self,
        account: AccountId,
    ) -> StoreResult<Vec<crate::catalog::AgentTemplate>>;

    /// Deletes a template; whether there was one. Agents made from it stay
    /// as they are (and remember its id).
    async fn delete_template(&self, id: &crate::ids::TemplateId) -> StoreResult<bool>;
}

/// Images messages carried, stored once.
#[async_trait]
pub trait ImageStore: Send + Sync {
    /// Stores an image; the same content from the same user of the same
    /// account ([`NewImage::sha256`](crate::image::NewImage::sha256)) is
    /// stored once: a second write returns the first.
    async fn put_image(&self, new: crate::image::NewImage) -> StoreResult<crate::image::Image>;

    /// An image by id.
    async fn image(&self, id: crate::ids::ImageId) -> StoreResult<crate::image::Image>;
}

/// Summaries of sessions' older turns.
#[async_trait]
pub trait SummaryStore: Send + Sync {
    /// Stores a summary; one through the same turn of the same session is
    /// stored once (a second write returns the first: a summariser retried
    /// after a crash writes no duplicate).
    async fn put_summary(
        &self,
        new: crate::session::NewSummary,
    ) -> StoreResult<crate::session::Summary>;

    /// A summary by id.
    async fn summary(&self, id: crate::ids::SummaryId) -> StoreResult<crate::session::Summary>;

    /// The newest summary of `session` covering only turns before
    /// `before_seq`, if any.
    async fn latest_summary(
        &self,
        session: SessionId,
        before_seq: i64,
    ) -> StoreResult<Option<crate::session::Summary>>;
}

/// Deleting what a user owns.
#[async_trait]
pub trait PrivacyStore: Send + Sync {
    /// Deletes everything `user` of `account` owns, in one transaction: their
    /// sessions, interactions, steps (with their payloads), replies, events,
    /// jobs (input, result, subjobs, observers, notices), queue tasks owned
    /// by them ([`NewTask::owner`](crate::NewTask::owner)), todos, user
    /// budgets, summaries, images, user-layer facts (each leaving a content-free `delete` entry
    /// in its history), and their place in the directory (membership of the
    /// account and its teams, user-scope assignments of its agents). Usage
    /// records stay for the account's totals, attributed to
    /// [`UserId::ANONYMOUS`] and tied to no interaction.
    async fn forget_user(&self, account: AccountId, user: UserId) -> StoreResult<ForgetReport>;
}

/// A durable per-user todo list.
#[async_trait]
pub trait TodoStore: Send + Sync {
    /// Adds an item to the owner's list. `key` makes the call idempotent:
    /// adding again with the same key returns the item added first.
    async fn add_todo(
        &self,
        account: AccountId,
        user: UserId,
        text: &str,
        key: &str,
    ) -> StoreResult<Todo>;

    /// The owner's items in order, done ones included when asked.
    async fn todos(
        &self,
        account: AccountId,
        user: UserId,
        include_done: bool,
    ) -> StoreResult<Vec<Todo>>;

    /// Marks the owner's item `number` done (idempotent); not found if the
    /// owner has no such item.
    async fn complete_todo(
        &self,
        account: AccountId,
        user: UserId,
        number: i64,
        at: Timestamp,
    ) -> StoreResult<Todo>;
}

/// Spending limits and the warnings already given about them.
#[async_trait]
pub trait BudgetStore: Send + Sync {
    /// Sets the limit of a scope (replacing any earlier one for that scope).
    async fn set_budget(&self, limit: BudgetLimit) -> StoreResult<()>;

    /// Removes the limit of a scope; returns whether there was one.
    async fn remove_budget(&self, scope: Scope) -> StoreResult<bool>;

    /// Every limit.
    async fn budgets(&self) -> StoreResult<Vec<BudgetLimit>>;

    /// Records that the warning at `threshold` percent was given for
    /// `scope` in the period starting at `period_start`; returns `false` if
    /// it had been given already (so each is given once).
    async fn record_budget_warning(
        &self,
        scope: Scope,
        period_start: Timestamp,
        threshold: u8,
    ) -> StoreResult<bool>;
}

/// The directory: accounts, teams, members, agent ownership, assignments.
#[async_trait]
pub trait DirectoryStore: Send + Sync {
    /// Creates an account, or renames it and replaces its policy.
    async fn put_account(
        &self,
        account: AccountId,
        name: &str,
        policy: AccountPolicy,
    ) -> StoreResult<()>;

    /// The policy of an account; not found without the account.
    async fn account_policy(&self, account: AccountId) -> StoreResult<AccountPolicy>;

    /// Creates a team in an account (or renames it); not found without the account.
    async fn put_team(&self, account: AccountId, team: TeamId, name: &str) -> StoreResult<()>;

    /// The account a team belongs to, if the directory knows the team.
    async fn team_account(&self, team: TeamId) -> StoreResult<Option<AccountId>>;

    /// Makes a user a member of an account with a role (or changes the role).
    async fn set_member(
        &self,
        account: AccountId,
        user: UserId,
        role: AccountRole,
    ) -> StoreResult<()>;

    /// The user's role in the account, if a member.
    async fn role(&self, account: AccountId, user: UserId) -> StoreResult<Option<AccountRole>>;

    /// Adds a member of the team's account to the team; a conflict for anyone else.
    async fn add_to_team(&self, team: TeamId, user: UserId) -> StoreResult<()>;

    /// Records which account owns an agent. An agent never moves between
    /// accounts: setting another owner for an agent that has one is a
    /// [`StoreError::Conflict`] and changes nothing.
    async fn set_agent_owner(&self, agent: &AgentId, account: AccountId) -> StoreResult<()>;

    /// The account that owns an agent, if any.
    async fn agent_owner(&self, agent: &AgentId) -> StoreResult<Option<AccountId>>;

    /// Adds or replaces the assignment of an agent at a scope.
    async fn assign(&self, assignment: Assignment) -> StoreResult<()>;

    /// Checks that `principal` may act through `agent` and returns what
    /// narrows the agent for them, or why they may not.
    async fn access(
        &self,
        principal: &Principal,
        agent: &AgentId,
    ) -> StoreResult<Result<Access, AccessError>>;
}

/// Everything the runtime needs from a store.
pub trait Store:
    SessionStore
    + InteractionStore
    + OutboxStore
    + QueueStore
    + EventStore
    + UsageStore
    + BudgetStore
    + PrivacyStore
    + DirectoryStore
    + crate::knowledge::KnowledgeStore
    + crate::job::JobStore
    + ApprovalStore
    + SummaryStore
    + ImageStore
    + AgentStore
    + TemplateStore
    + OpsStore
    + 'static
{
}

impl<T> Store for T where
    T: SessionStore
        + InteractionStore
        + OutboxStore
        + QueueStore
        + EventStore
        + UsageStore
        + BudgetStore
        + PrivacyStore
        + DirectoryStore
        + crate::knowledge::KnowledgeStore
        + crate::job::JobStore
        + ApprovalStore
        + SummaryStore
        + ImageStore
        + AgentStore
        + TemplateStore
        + OpsStore
        + 'static
{
}
