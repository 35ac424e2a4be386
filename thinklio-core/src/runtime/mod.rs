//! The [`Runtime`]: registered agents and capabilities over a store and a
//! chat model, running every message as a durable interaction.
//!
//! Messages of one session are processed one after another, in the order
//! `send` was called; different sessions run concurrently. The ordering holds
//! within one process; `recover()` assumes no other process runs the same
//! interactions (one process per SQLite file).

mod access;
mod approvals;
mod builder;
mod catalog;
pub mod channel;
mod config;
mod conversations;
mod delegation;
mod governance;
mod harness;
mod jobs;
mod knowledge;
mod locks;
mod ops;
mod queue;
mod reply;
mod retention;
mod sessions;
mod streams;
mod summaries;
mod templates;
mod worker;

pub use config::RuntimeConfig;

use crate::error::ErrorCode;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::broadcast;

pub use approvals::{ApprovalError, Approvals};
pub use builder::RuntimeBuilder;
pub use conversations::Sessions;
pub use delegation::{Delegate, DelegationGraph};
pub use governance::{Directory, Usage};
pub use jobs::{
    CANCEL_JOB, CancelledBy, JOB_STATUS, JobCallbacks, JobError, JobNotice, JobRecovery, JobRun,
    JobWorker, Jobs, NoticeWebhook, ObserverCallback,
};
pub use knowledge::Knowledge;
pub use knowledge::{EXTRACT_TASK, EXTRACTION_PROMPT, KnowledgeConfig, extraction_schema};
pub use ops::ShutdownReport;
pub use queue::{QueueRun, QueueWorker, TaskError, TaskHandler};
pub use reply::{AnswerError, Inbound, RecoveryReport, Reply, Structured};
pub use retention::{RetentionPolicy, RetentionWorker};
pub use sessions::InteractionWorker;
pub use summaries::{SUMMARIZE_TASK, SUMMARY_PROMPT};
pub use templates::{Instantiation, Templates};

use crate::agent::AgentDefinition;
use crate::budget::BudgetLimit;
use crate::capability::{CapabilityError, CapabilityRegistry};
use crate::directory::{AccessError, ContentRules};
use crate::event::{Event, EventKind, NewEvent, SessionUpdate, TokenDelta};
use crate::ids::{AgentId, InteractionId, SessionId};
use crate::interaction::{Interaction, InteractionKind, InteractionState, NewInteraction};
use crate::model::{ChatModel, Embedder, ModelError};
use crate::outbox::{OutboxMessage, ReplySink};
use crate::principal::{Principal, Scope};
use crate::session::{NewSession, Session};
use crate::step::StepError;
use crate::store::{Store, StoreError};
use crate::time::Clock;
use crate::usage::PriceTable;

use self::harness::Run;
use self::locks::SessionLocks;

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The builder is missing something.
    #[error("runtime configuration: {0}")]
    Config(String),
    /// The session's agent is not registered with this runtime.
    #[error("agent `{0}` is not registered")]
    UnknownAgent(AgentId),
    /// No template of the account has that id.
    #[error("template `{0}` does not exist")]
    UnknownTemplate(crate::ids::TemplateId),
    /// The agent is paused: it takes no new messages until resumed.
    #[error("agent `{0}` is paused: it takes no new messages until it is resumed")]
    AgentPaused(AgentId),
    /// The agent is archived: it takes no new work.
    #[error("agent `{0}` is archived: it takes no new work")]
    AgentArchived(AgentId),
    /// The runtime is shutting down ([`Runtime::shutdown`]): it takes no new
    /// work; another process of a shared store, or this one restarted,
    /// takes it.
    #[error(
        "this runtime is shutting down and takes no new work; try another worker or again shortly"
    )]
    ShuttingDown,
    /// A capability could not be registered.
    #[error(transparent)]
    Capability(#[from] CapabilityError),
    /// The message is empty.
    #[error("the message is empty")]
    EmptyMessage,
    /// An image of the message was refused.
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    /// The message is longer than the runtime accepts.
    #[error("the message has {size} bytes; at most {limit} are accepted")]
    MessageTooLarge {
        /// Its size in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The directory does not let the principal do this.
    #[error(transparent)]
    Forbidden(#[from] AccessError),
    /// The agents' configuration delegates in a circle.
    #[error("delegation cycle: {0}")]
    DelegationCycle(String),
    /// The embedder failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A job call was refused.
    #[error(transparent)]
    Job(#[from] JobError),
    /// A decision was refused.
    #[error(transparent)]
    Approval(#[from] ApprovalError),
    /// A typed answer could not be read.
    #[error(transparent)]
    Answer(#[from] AnswerError),
    /// A stored step payload could not be read.
    #[error(transparent)]
    Payload(#[from] crate::step::payload::PayloadError),
    /// The interaction ended failed; its steps say more.
    #[error("interaction {interaction} failed: {error}")]
    InteractionFailed {
        /// The interaction.
        interaction: InteractionId,
        /// The step error that ended it.
        error: StepError,
    },
}

impl RuntimeError {
    /// A stable code for hosts.
    pub fn code(&self) -> ErrorCode {
        match self {
            RuntimeError::Store(e) => e.code(),
            RuntimeError::Config(_) => ErrorCode::RuntimeConfig,
            RuntimeError::UnknownAgent(_) => ErrorCode::RuntimeUnknownAgent,
            RuntimeError::UnknownTemplate(_) => ErrorCode::TemplateUnknown,
            RuntimeError::AgentPaused(_) => ErrorCode::AgentPaused,
            RuntimeError::AgentArchived(_) => ErrorCode::AgentArchived,
            RuntimeError::ShuttingDown => ErrorCode::RuntimeShuttingDown,
            RuntimeError::Capability(e) => e.code(),
            RuntimeError::EmptyMessage => ErrorCode::RuntimeEmptyMessage,
            RuntimeError::Image(e) => e.code(),
            RuntimeError::MessageTooLarge { .. } => ErrorCode::RuntimeMessageTooLarge,
            RuntimeError::DelegationCycle(_) => ErrorCode::DelegationCycle,
            RuntimeError::Forbidden(e) => e.code(),
            RuntimeError::Model(e) => e.code(),
            RuntimeError::Job(e) => e.code(),
            RuntimeError::Approval(e) => e.code(),
            RuntimeError::Answer(e) => e.code(),
            RuntimeError::Payload(_) => ErrorCode::StepCorrupt,
            RuntimeError::InteractionFailed { error, .. } => error.code,
        }
    }
}

impl From<ModelError> for StepError {
    fn from(e: ModelError) -> Self {
        StepError::new(e.code(), e.to_string())
    }
}

pub(in crate::runtime) struct Inner {
    pub(in crate::runtime) store: Arc<dyn Store>,
    pub(in crate::runtime) model: Arc<dyn ChatModel>,
    pub(in crate::runtime) embedder: Arc<dyn Embedder>,
    pub(in crate::runtime) capabilities: CapabilityRegistry,
    pub(in crate::runtime) agents: RwLock<HashMap<AgentId, Arc<AgentDefinition>>>,
    pub(in crate::runtime) prices: PriceTable,
    pub(in crate::runtime) sink: Option<Arc<dyn ReplySink>>,
    pub(in crate::runtime) clock: Arc<dyn Clock>,
    pub(in crate::runtime) config: RuntimeConfig,
    pub(in crate::runtime) events: broadcast::Sender<Event>,
    /// Reply text as the model writes it; `think` streams only while
    /// someone listens.
    pub(in crate::runtime) tokens: broadcast::Sender<TokenDelta>,
    /// Subscribers of one session each: its events and reply text.
    pub(in crate::runtime) streams: streams::SessionStreams,
    pub(in crate::runtime) locks: SessionLocks,
    pub(in crate::runtime) task_handlers: RwLock<HashMap<String, Arc<dyn TaskHandler>>>,
    /// Sessions never change once opened, so `send` reads them from here
    /// instead of asking the store each time.
    sessions: std::sync::Mutex<HashMap<SessionId, Session>>,
    /// Delegate capability names and the agents behind them.
    delegates: RwLock<std::collections::BTreeMap<String, AgentId>>,
    /// The budgets, read from the store once and kept in step by
    /// `set_budget`/`remove_budget`: with none set, a check costs nothing.
    budgets: tokio::sync::RwLock<Option<Vec<BudgetLimit>>>,
    /// The host's content rules, if any.
    pub(in crate::runtime) content: Option<Arc<dyn ContentRules>>,
    /// The root interactions this runtime is running, each with the sender
    /// that cancels it.
    pub(in crate::runtime) running:
        std::sync::Mutex<HashMap<InteractionId, tokio::sync::watch::Sender<bool>>>,
    /// How tokens are counted for context budgets.
    pub(in crate::runtime) token_counter: Arc<dyn crate::context::TokenCounter>,
    /// The models' context windows.
    pub(in crate::runtime) windows: crate::context::ContextWindows,
    /// Budget warnings this process knows were given: (scope, period start, threshold).
    warned: std::sync::Mutex<std::collections::HashSet<(Scope, i64, u8)>>,
    /// Models this process has warned have no price (at most
    /// [`governance::UNPRICED_MEMORY`] of them).
    unpriced: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The embedding of each recent interaction's message, so its recall
    /// and its extraction embed it once (at most
    /// [`knowledge::QUERY_EMBEDDINGS`] of them).
    pub(in crate::runtime) query_embeddings:
        std::sync::Mutex<HashMap<crate::ids::InteractionId, Arc<Vec<f32>>>>,
    /// Job configuration and the dispatches running in this process.
    pub(in crate::runtime) jobs: jobs::JobsState,
    /// This runtime's name as a holder of leases (unique per runtime).
    pub(in crate::runtime) worker: String,
    /// Wakes an idle interaction worker when work is submitted.
    pub(in crate::runtime) submitted: tokio::sync::Notify,
    /// Sessions this runtime holds in a shared store, and until when its
    /// lease surely runs (renewals move it on).
    pub(in crate::runtime) holds: std::sync::Mutex<HashMap<SessionId, crate::time::Timestamp>>,
    /// Whether this runtime listens for cancellations other processes
    /// announce through a shared store (started with its first run).
    pub(in crate::runtime) hears_cancels: std::sync::OnceLock<()>,
    /// Turns `true` when [`Runtime::shutdown`] begins: no new work, runs
    /// end at their next step boundary.
    pub(in crate::runtime) closing: tokio::sync::watch::Sender<bool>,
    /// Agents served from the store, with the version and state served
    /// (their definitions are in `agents`); an agent in `agents` and not
    /// here was registered in code.
    pub(in crate::runtime) stored: std::sync::Mutex<HashMap<AgentId, catalog::Served>>,
}

/// Sessions kept in [`Inner::sessions`]; the cache starts over when full.
const SESSION_CACHE: usize = 4096;

impl Inner {
    pub(crate) fn publish(&self, event: Event) {
        crate::telemetry::event(&event);
        if let Some(session) = event.session_id {
            self.streams
                .send(session, || SessionUpdate::Event(event.clone()));
        }
        // No subscriber is not an error: the event is in the store's log.
        let _ = self.events.send(event);
    }

    /// Publishes a piece of reply text to the token listeners and to the
    /// session's subscribers.
    pub(crate) fn publish_token(&self, token: TokenDelta) {
        self.streams
            .send(token.session_id, || SessionUpdate::Token(token.clone()));
        // No receiver left is not an error: the text is in the outcome.
        let _ = self.tokens.send(token);
    }

    /// Whether anyone listens for the reply text of `session`.
    pub(crate) fn streams_tokens(&self, session: SessionId) -> bool {
        self.tokens.receiver_count() > 0 || self.streams.listened(session)
    }

    async fn session(&self, id: SessionId) -> Result<Session, RuntimeError> {
        let cached = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned();
        match cached {
            Some(s) => Ok(s),
            None => {
                let session = self.store.session(id).await?;
                self.remember(&session);
                Ok(session)
            }
        }
    }

    fn remember(&self, session: &Session) {
        use crate::bounded::InsertBounded;
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert_bounded((session.id, session.clone()), SESSION_CACHE);
    }

    fn has_agent(&self, id: &AgentId) -> bool {
        self.agents
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
    }

    fn agent(&self, id: &AgentId) -> Result<Arc<AgentDefinition>, RuntimeError> {
        self.agents
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::UnknownAgent(id.clone()))
    }
}

/// The agent runtime. Cheap to clone; clones share everything.
///
/// Build one with [`Runtime::builder`], open a session, send messages:
/// see the crate documentation for a complete example.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("capabilities", &self.inner.capabilities)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Starts building a runtime.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// The capability registry; capabilities can be added and removed at run time.
    pub fn capabilities(&self) -> &CapabilityRegistry {
        &self.inner.capabilities
    }

    /// Conversations as one actor may read them: sessions, their history,
    /// an interaction's steps and state.
    pub fn sessions(&self) -> Sessions<'_> {
        Sessions { rt: self }
    }

    /// Knowledge: facts, their search, import and export.
    pub fn knowledge(&self) -> Knowledge<'_> {
        Knowledge { rt: self }
    }

    /// Jobs: reading, cancelling and reports of outside work.
    pub fn jobs(&self) -> Jobs<'_> {
        Jobs { rt: self }
    }

    /// The directory: agents, delegation, forgetting a user.
    pub fn directory(&self) -> Directory<'_> {
        Directory { rt: self }
    }

    /// Agent templates: what agents made from them start as, and keeping
    /// those agents in step.
    pub fn templates(&self) -> Templates<'_> {
        Templates { rt: self }
    }

    /// Usage and budgets.
    pub fn usage(&self) -> Usage<'_> {
        Usage { rt: self }
    }

    /// Calls waiting for a person's decision, and the decisions.
    pub fn approvals(&self) -> Approvals<'_> {
        Approvals { rt: self }
    }

    /// Events as they are appended, in process. Events missed by a slow
    /// subscriber are in the store's log ([`EventStore::events_after`](crate::EventStore::events_after)).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Reply text as models write it, in process (see [`TokenDelta`]). While
    /// at least one receiver exists, `think` steps call the model streamed
    /// and publish each piece of text; the stored outcome is the same.
    pub fn subscribe_tokens(&self) -> broadcast::Receiver<TokenDelta> {
        self.inner.tokens.subscribe()
    }

    /// The events and reply text of one session, as they happen, in
    /// process: what a host streaming one conversation listens to. Only
    /// `session`'s updates reach the receiver; one that falls behind by more
    /// than [`RuntimeConfig::event_capacity`] updates is told how many it
    /// missed (`RecvError::Lagged`) and finds them in the store (events in
    /// the log, text in the steps). While it exists, `think` steps of the
    /// session stream.
    pub fn subscribe_session(&self, session: SessionId) -> broadcast::Receiver<SessionUpdate> {
        self.inner.streams.subscribe(session)
    }

    /// Opens a session between `principal` and `agent` on `channel`, or
    /// returns the existing one for the same channel `key`.
    pub async fn open_session(
        &self,
        principal: Principal,
        agent: impl Into<AgentId>,
        channel: &str,
        key: Option<&str>,
    ) -> Result<Session, RuntimeError> {
        let agent = agent.into();
        self.inner.serve_agent(&agent, principal.account).await?;
        self.inner.access(&principal, &agent).await?;
        let session = self
            .inner
            .store
            .open_session(NewSession {
                principal,
                agent_id: agent,
                channel: channel.to_owned(),
                key: key.map(str::to_owned),
            })
            .await?;
        self.inner.remember(&session);
        Ok(session)
    }

    /// Answers one message in a session: creates the interaction, runs it
    /// durably to its reply, delivers the reply.
    ///
    /// Sends to one session run one at a time, in the order their futures
    /// are first polled; sends to different sessions run concurrently.
    pub async fn send(
        &self,
        session: SessionId,
        message: impl Into<Inbound>,
    ) -> Result<Reply, RuntimeError> {
        let message = message.into();
        self.check_message(&message)?;
        // The session lock is taken first, before any other await, so that
        // concurrent sends of one session run in the order they were first polled.
        let _guard = self.inner.locks.lock(session).await;
        let mut hold = self.inner.hold_session(session).await?;
        let fresh = hold.fresh();
        let result = self
            .send_held(session, message, InteractionKind::Message, fresh)
            .await;
        hold.release().await;
        result
    }

    /// Answers one message as [`send`](Self::send) does, and reads the
    /// answer as a `T`: for an agent that declares its answer's schema
    /// ([`AgentDefinition::answers_as`]), whose answers are checked
    /// against it and asked again when they do not match.
    ///
    /// An answer that is still not a `T` is
    /// [`AnswerError::Invalid`]; an interaction that waits for a person's
    /// decision instead of answering is [`AnswerError::Waiting`] (decide,
    /// then read the reply with `sessions().reply`).
    pub async fn send_structured<T: serde::de::DeserializeOwned>(
        &self,
        session: SessionId,
        message: impl Into<Inbound>,
    ) -> Result<Structured<T>, RuntimeError> {
        let reply = self.send(session, message).await?;
        Ok(Structured {
            value: reply.structured()?,
            reply,
        })
    }

    /// Runs what can go on in `session` now (after a decision), in order,
    /// holding it as `send` does.
    pub(crate) async fn run_session(&self, session: SessionId) -> Result<usize, RuntimeError> {
        let _guard = self.inner.locks.lock(session).await;
        let hold = self.inner.hold_session(session).await?;
        let result = self.inner.run_waiting(session).await;
        hold.release().await;
        result
    }

    /// Refuses an empty or too large message, and images that are not
    /// PNG, JPEG, GIF or WebP, too large, too many, or at URLs a provider
    /// cannot fetch.
    pub(crate) fn check_message(&self, message: &Inbound) -> Result<(), RuntimeError> {
        if self.inner.closing() {
            return Err(RuntimeError::ShuttingDown);
        }
        if message.text.trim().is_empty() && message.images.is_empty() {
            return Err(RuntimeError::EmptyMessage);
        }
        let config = &self.inner.config;
        let limit = config.max_message_bytes;
        if message.text.len() > limit {
            return Err(RuntimeError::MessageTooLarge {
                size: message.text.len(),
                limit,
            });
        }
        if message.images.len() > config.max_images_per_message {
            return Err(crate::image::ImageError::TooMany {
                count: message.images.len(),
                limit: config.max_images_per_message,
            }
            .into());
        }
        for image in &message.images {
            crate::image::check(image, config.max_image_bytes)?;
        }
        Ok(())
    }

    /// The body of `send` (and of a dispatch), with the session held;
    /// `fresh` is the session as read with its lease, if it was.
    pub(crate) async fn send_held(
        &self,
        session: SessionId,
        message: Inbound,
        kind: InteractionKind,
        fresh: Option<Session>,
    ) -> Result<Reply, RuntimeError> {
        let read_fresh = fresh.is_some();
        let session = match fresh {
            Some(session) => session,
            None => self.inner.session(session).await?,
        };
        let access = self
            .inner
            .access(&session.principal, &session.agent_id)
            .await?;
        let (interaction, created, begun) = self
            .inner
            .record_message(&session, message, kind, true)
            .await?;
        let agent = self.inner.agent_of(&interaction).await?;
        let steps = if created {
            Vec::new()
        } else {
            self.inner.store.steps(interaction.id).await?
        };
        let run = Run::new(
            Arc::clone(&self.inner),
            session,
            agent,
            interaction,
            steps,
            true,
        );
        run.with_access(access)
            .with_begun(begun)
            .with_fresh_session(read_fresh)
            .drive()
            .await
    }

    /// Resumes every unfinished interaction from its last committed step, then
    /// delivers replies left in the outbox. Call once at start-up, before
    /// serving messages.
    pub async fn recover(&self) -> Result<RecoveryReport, RuntimeError> {
        let jobs = self.inner.recover_jobs().await?;
        if self.inner.config.shared_store {
            // Other workers may be running interactions of this store: the
            // interaction worker takes over sessions whose lease ran out.
            // Replies a dead worker wrote but did not deliver go out now
            // (with their stable id, for sinks that de-duplicate).
            let mut report = RecoveryReport {
                jobs,
                ..RecoveryReport::default()
            };
            report.delivered = self.deliver_undelivered().await?;
            return Ok(report);
        }
        // A delegate's interaction is resumed by its caller's `act` step,
        // which runs again (it is idempotent) and finds the child by its key.
        let unfinished: Vec<Interaction> = self
            .inner
            .store
            .unfinished_interactions()
            .await?
            .into_iter()
            .filter(|i| i.parent_interaction_id.is_none())
            .collect();
        let mut report = RecoveryReport {
            resumed: unfinished.len(),
            jobs,
            ..Default::default()
        };
        let mut by_session: Vec<(SessionId, Vec<Interaction>)> = Vec::new();
        let mut index: HashMap<SessionId, usize> = HashMap::new();
        for i in unfinished {
            match index.get(&i.session_id) {
                Some(&k) => by_session[k].1.push(i),
                None => {
                    index.insert(i.session_id, by_session.len());
                    by_session.push((i.session_id, vec![i]));
                }
            }
        }
        let concurrency = self.inner.config.recovery_concurrency.max(1);
        let outcomes: Vec<Vec<(InteractionId, Result<InteractionState, RuntimeError>)>> =
            futures::stream::iter(by_session)
                .map(|(session, interactions)| async move {
                    let _guard = self.inner.locks.lock(session).await;
                    self.resume_session(session, interactions).await
                })
                .buffer_unordered(concurrency)
                .collect()
                .await;
        for (id, outcome) in outcomes.into_iter().flatten() {
            match outcome {
                Ok(InteractionState::Completed) => report.completed += 1,
                Ok(InteractionState::Waiting) => report.waiting += 1,
                Ok(_) | Err(RuntimeError::InteractionFailed { .. }) => report.failed += 1,
                Err(e) => report.errors.push((id, e.to_string())),
            }
        }
        report.delivered = self.deliver_undelivered().await?;
        Ok(report)
    }

    /// Delivers replies left in the outbox through the sink, if there is one.
    async fn deliver_undelivered(&self) -> Result<usize, RuntimeError> {
        let mut delivered = 0;
        if self.inner.sink.is_some() {
            for message in self.inner.store.undelivered().await? {
                if self.inner.deliver(&message).await? {
                    delivered += 1;
                }
            }
        }
        Ok(delivered)
    }

    /// Resumes unfinished interactions of one session, in order; the caller
    /// holds the session's in-process lock.
    pub(crate) async fn resume_session(
        &self,
        session_id: SessionId,
        interactions: Vec<Interaction>,
    ) -> Vec<(InteractionId, Result<InteractionState, RuntimeError>)> {
        let mut out = Vec::with_capacity(interactions.len());
        let session = match self.inner.store.session(session_id).await {
            Ok(s) => s,
            Err(e) => {
                let msg = e.to_string();
                return interactions
                    .into_iter()
                    .map(|i| {
                        (
                            i.id,
                            Err(RuntimeError::Store(StoreError::Corrupt(msg.clone()))),
                        )
                    })
                    .collect();
            }
        };
        for interaction in interactions {
            let id = interaction.id;
            let result = async {
                let agent = self.inner.agent_of(&interaction).await?;
                let access = self
                    .inner
                    .access(&interaction.principal, &interaction.agent_id)
                    .await?;
                let steps = self.inner.store.steps(id).await?;
                Run::new(
                    Arc::clone(&self.inner),
                    session.clone(),
                    agent,
                    interaction,
                    steps,
                    false,
                )
                .with_access(access)
                .drive()
                .await
                .map(|reply| {
                    if reply.waiting.is_empty() {
                        InteractionState::Completed
                    } else {
                        InteractionState::Waiting
                    }
                })
            }
            .await;
            out.push((id, result));
        }
        out
    }

    /// Replies written but not yet delivered (when no reply sink is set,
    /// replies of interactions finished by `recover` wait here).
    pub async fn undelivered_replies(&self) -> Result<Vec<OutboxMessage>, RuntimeError> {
        Ok(self.inner.store.undelivered().await?)
    }

    /// Marks a reply delivered by the host itself.
    pub async fn acknowledge_reply(&self, message: &OutboxMessage) -> Result<(), RuntimeError> {
        self.inner.mark_delivered(message).await
    }
}

impl Inner {
    /// Writes the interaction of an inbound message (a repeated inbound id
    /// returns the first) and publishes its creation; whether it is new.
    pub(crate) async fn record_message(
        self: &Arc<Self>,
        session: &Session,
        message: Inbound,
        kind: InteractionKind,
        begin: bool,
    ) -> Result<(Interaction, bool, Option<crate::step::Step>), RuntimeError> {
        // The agent as served now (refused while paused or archived); a
        // repeated message finds the interaction it made, with its version.
        let (_, agent_version) = self
            .serve_agent(&session.agent_id, session.principal.account)
            .await?;
        // Images are stored first, once each: a message sent again (or
        // after a crash here) finds them stored and refers to the same rows.
        let mut images = Vec::with_capacity(message.images.len());
        for image in message.images {
            let new = crate::image::NewImage::checked(
                session.principal,
                image,
                self.config.max_image_bytes,
            )?;
            images.push(self.store.put_image(new).await?.id);
        }
        let first = if begin {
            harness::first_step(kind, &message.text)
        } else {
            None
        };
        let new = NewInteraction {
            session_id: session.id,
            principal: session.principal,
            agent_id: session.agent_id.clone(),
            input: message.text,
            images,
            agent_version,
            inbound_id: message.id,
            parent_interaction_id: None,
            delegation_depth: 0,
            job_id: None,
            kind,
        };
        // The first step is begun in the same commit: one commit fewer for
        // every message, and still its row exists before its work.
        let (interaction, created, first) = match first {
            Some(first) => {
                let c = self.store.create_interaction_begun(new, first).await?;
                (c.interaction, c.created, c.first)
            }
            None => {
                let (interaction, created) = self.store.create_interaction(new).await?;
                (interaction, created, None)
            }
        };
        let new = created.is_some();
        if let Some(event) = created {
            self.publish(event);
        }
        let begun = first.map(|(step, event)| {
            self.publish(event);
            step
        });
        Ok((interaction, new, begun))
    }

    /// Delivers through the sink and marks delivered; returns whether it delivered.
    pub(crate) async fn deliver(&self, message: &OutboxMessage) -> Result<bool, RuntimeError> {
        let Some(sink) = &self.sink else {
            return Ok(false);
        };
        match sink.deliver(message).await {
            Ok(()) => {
                self.mark_delivered(message).await?;
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(
                    outbox_id = %message.id,
                    retryable = e.retryable,
                    error = %e,
                    "reply delivery failed; it stays in the outbox"
                );
                Ok(false)
            }
        }
    }

    pub(crate) async fn mark_delivered(&self, message: &OutboxMessage) -> Result<(), RuntimeError> {
        if let Some(event) = self
            .store
            .mark_delivered(message.id, self.clock.now())
            .await?
        {
            self.publish(event);
        }
        Ok(())
    }

    pub(crate) async fn append_event(&self, event: NewEvent) -> Result<(), RuntimeError> {
        let event = self.store.append_event(event).await?;
        self.publish(event);
        Ok(())
    }
}

pub(crate) fn interaction_event(
    kind: EventKind,
    interaction: &Interaction,
    payload: Value,
) -> NewEvent {
    NewEvent::new(kind)
        .interaction(interaction.session_id, interaction.id)
        .payload(payload)
}
