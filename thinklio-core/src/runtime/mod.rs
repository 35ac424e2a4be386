//! The [`Runtime`]: registered agents and capabilities over a store and a
//! chat model, running every message as a durable interaction.
//!
//! Messages of one session are processed one after another, in the order
//! `send` was called; different sessions run concurrently. The ordering holds
//! within one process; `recover()` assumes no other process runs the same
//! interactions (one process per SQLite file).

mod delegation;
mod harness;
mod locks;
mod queue;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::broadcast;

pub use delegation::{Delegate, DelegationGraph};
pub use queue::{QueueRun, QueueWorker, TaskError, TaskHandler};

use crate::agent::AgentDefinition;
use crate::budget::{BudgetLimit, BudgetScope};
use crate::capability::{Capability, CapabilityError, CapabilityRegistry};
use crate::directory::{Access, AccessError, AccountRole, ContentRules};
use crate::event::{Event, EventKind, NewEvent};
use crate::ids::{AccountId, AgentId, InteractionId, SessionId, UserId};
use crate::interaction::{Interaction, InteractionState, NewInteraction};
use crate::model::{ChatModel, ModelError};
use crate::outbox::{OutboxMessage, ReplySink};
use crate::principal::Principal;
use crate::queue::RetryPolicy;
use crate::session::{NewSession, Session};
use crate::step::{Step, StepError};
use crate::store::{ForgetReport, Store, StoreError};
use crate::time::{Clock, SystemClock};
use crate::usage::{Cost, PriceTable, TokenUsage, UsageFilter, UsageGroup, UsageRow, UsageTotals};

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
    /// A capability could not be registered.
    #[error(transparent)]
    Capability(#[from] CapabilityError),
    /// The message is empty.
    #[error("the message is empty")]
    EmptyMessage,
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
    pub fn code(&self) -> &str {
        match self {
            RuntimeError::Store(e) => e.code(),
            RuntimeError::Config(_) => "runtime.config",
            RuntimeError::UnknownAgent(_) => "runtime.unknown_agent",
            RuntimeError::Capability(e) => e.code(),
            RuntimeError::EmptyMessage => "runtime.empty_message",
            RuntimeError::MessageTooLarge { .. } => "runtime.message_too_large",
            RuntimeError::DelegationCycle(_) => "delegation.cycle",
            RuntimeError::Forbidden(e) => e.code(),
            RuntimeError::InteractionFailed { error, .. } => &error.code,
        }
    }
}

impl From<ModelError> for StepError {
    fn from(e: ModelError) -> Self {
        StepError::new(e.code(), e.to_string())
    }
}

/// The answer to one message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Reply {
    /// The interaction that produced it.
    pub interaction_id: InteractionId,
    /// The reply text.
    pub text: String,
    /// Steps the interaction took.
    pub steps: u32,
    /// Tokens it used.
    pub usage: TokenUsage,
    /// What it cost.
    pub cost: Cost,
}

impl Reply {
    fn from_steps(interaction_id: InteractionId, text: String, steps: &[Step]) -> Self {
        let mut usage = TokenUsage::default();
        let mut cost = Cost::ZERO;
        for s in steps {
            usage += s.usage;
            cost += s.cost;
        }
        Self {
            interaction_id,
            text,
            steps: u32::try_from(steps.len()).unwrap_or(u32::MAX),
            usage,
            cost,
        }
    }
}

/// An inbound message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Inbound {
    /// The text.
    pub text: String,
    /// The channel's id for the message; a message sent twice with the same id
    /// is answered once.
    pub id: Option<String>,
}

impl Inbound {
    /// A message with a channel id for de-duplication.
    pub fn with_id(text: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            id: Some(id.into()),
        }
    }
}

impl From<&str> for Inbound {
    fn from(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            id: None,
        }
    }
}

impl From<String> for Inbound {
    fn from(text: String) -> Self {
        Self { text, id: None }
    }
}

/// What [`Runtime::recover`] did.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Unfinished interactions found.
    pub resumed: usize,
    /// Of those, how many completed.
    pub completed: usize,
    /// Of those, how many ended failed.
    pub failed: usize,
    /// Replies delivered from the outbox.
    pub delivered: usize,
    /// Interactions that could not be resumed, with the reason (they stay
    /// unfinished and are tried again by the next `recover`).
    pub errors: Vec<(InteractionId, String)>,
}

/// Tunables of a runtime.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RuntimeConfig {
    /// The largest inbound message accepted, in bytes.
    pub max_message_bytes: usize,
    /// How many sessions `recover()` resumes at once.
    pub recovery_concurrency: usize,
    /// Backoff of the background queue.
    pub retry_policy: RetryPolicy,
    /// How long a claimed task is leased before another worker may take it.
    pub task_lease: std::time::Duration,
    /// Checks every call that acts for a principal against the directory
    /// (membership, agent ownership, assignments, account policy). Off by
    /// default, for single-user embeddings that keep no directory.
    pub enforce_directory: bool,
    /// Capacity of the in-process event channel; slower subscribers miss
    /// events (they can read them from the store's event log).
    pub event_capacity: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            recovery_concurrency: 64,
            retry_policy: RetryPolicy::default(),
            task_lease: std::time::Duration::from_secs(60),
            enforce_directory: false,
            event_capacity: 1024,
        }
    }
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) model: Arc<dyn ChatModel>,
    pub(crate) capabilities: CapabilityRegistry,
    pub(crate) agents: RwLock<HashMap<AgentId, Arc<AgentDefinition>>>,
    pub(crate) prices: PriceTable,
    pub(crate) sink: Option<Arc<dyn ReplySink>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: RuntimeConfig,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) locks: SessionLocks,
    pub(crate) task_handlers: RwLock<HashMap<String, Arc<dyn TaskHandler>>>,
    /// Sessions never change once opened, so `send` reads them from here
    /// instead of asking the store each time.
    sessions: std::sync::Mutex<HashMap<SessionId, Session>>,
    /// Delegate capability names and the agents behind them.
    delegates: RwLock<std::collections::BTreeMap<String, AgentId>>,
    /// The budgets, read from the store once and kept in step by
    /// `set_budget`/`remove_budget`: with none set, a check costs nothing.
    budgets: tokio::sync::RwLock<Option<Vec<BudgetLimit>>>,
    /// The host's content rules, if any.
    pub(crate) content: Option<Arc<dyn ContentRules>>,
}

/// Sessions kept in [`Inner::sessions`]; the cache starts over when full.
const SESSION_CACHE: usize = 4096;

impl Inner {
    pub(crate) fn publish(&self, event: Event) {
        // No subscriber is not an error: the event is in the store's log.
        let _ = self.events.send(event);
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
        let mut cache = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= SESSION_CACHE {
            cache.clear();
        }
        cache.insert(session.id, session.clone());
    }

    /// Checks every budget covering `principal`: emits each warning whose
    /// threshold spend has reached (once per period), and refuses with
    /// [`StepError::BUDGET_EXCEEDED`] when a limit is spent.
    pub(crate) async fn check_budgets(
        &self,
        principal: &Principal,
        interaction: &Interaction,
    ) -> Result<(), StepError> {
        let store_error = |e: StoreError| StepError::new(e.code(), e.to_string());
        if self.budgets.read().await.is_none() {
            let loaded = self.store.budgets().await.map_err(store_error)?;
            *self.budgets.write().await = Some(loaded);
        }
        let covering: Vec<BudgetLimit> = self
            .budgets
            .read()
            .await
            .iter()
            .flatten()
            .filter(|b| b.scope.covers(principal))
            .cloned()
            .collect();
        let now = self.clock.now();
        for budget in covering {
            let start = budget.period.start(now);
            let mut filter = budget.scope.filter();
            filter.from = Some(start);
            let spent = self
                .store
                .usage_totals(&filter)
                .await
                .map_err(store_error)?
                .cost;
            let limit = budget.limit.as_nanos().max(0);
            let percent = if limit == 0 {
                100
            } else {
                i128::from(spent.as_nanos()) * 100 / i128::from(limit)
            };
            let mut thresholds = budget.warn_at.clone();
            thresholds.sort_unstable();
            for threshold in thresholds {
                if percent < i128::from(threshold) {
                    break;
                }
                let first = self
                    .store
                    .record_budget_warning(budget.scope, start, threshold)
                    .await
                    .map_err(store_error)?;
                if first {
                    let payload = serde_json::json!({
                        "scope": budget.scope.kind(),
                        "scope_id": budget.scope.id(),
                        "threshold": threshold,
                        "spent_nanos": spent.as_nanos(),
                        "limit_nanos": limit,
                        "period_start": start,
                    });
                    let event = interaction_event(EventKind::BudgetWarning, interaction, payload);
                    self.append_event(event)
                        .await
                        .map_err(|e| StepError::new(e.code(), e.to_string()))?;
                }
            }
            if spent.as_nanos() >= limit {
                return Err(StepError::new(
                    StepError::BUDGET_EXCEEDED,
                    format!(
                        "the {} budget of {} for this {} is spent ({} so far)",
                        budget.scope.kind(),
                        budget.limit,
                        budget.period.name(),
                        spent
                    ),
                ));
            }
        }
        Ok(())
    }

    /// What the directory lets `principal` do through `agent`: `None` when
    /// the directory is not enforced.
    pub(crate) async fn access(
        &self,
        principal: &Principal,
        agent: &AgentId,
    ) -> Result<Option<Access>, RuntimeError> {
        if !self.config.enforce_directory {
            return Ok(None);
        }
        Ok(Some(self.store.access(principal, agent).await??))
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

/// Builds a [`Runtime`].
#[derive(Default)]
pub struct RuntimeBuilder {
    store: Option<Arc<dyn Store>>,
    model: Option<Arc<dyn ChatModel>>,
    capabilities: Vec<Arc<dyn Capability>>,
    agents: Vec<AgentDefinition>,
    delegates: Vec<Delegate>,
    content: Option<Arc<dyn ContentRules>>,
    prices: Option<PriceTable>,
    sink: Option<Arc<dyn ReplySink>>,
    clock: Option<Arc<dyn Clock>>,
    config: RuntimeConfig,
}

impl RuntimeBuilder {
    /// The store (required).
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// A shared store.
    pub fn store_arc(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The chat model (required). Agents name the model id; the chat model
    /// routes it (a fallback chain is a chat model too).
    pub fn model(mut self, model: impl ChatModel) -> Self {
        self.model = Some(Arc::new(model));
        self
    }

    /// A shared chat model.
    pub fn model_arc(mut self, model: Arc<dyn ChatModel>) -> Self {
        self.model = Some(model);
        self
    }

    /// Registers a capability.
    pub fn capability(mut self, capability: impl Capability) -> Self {
        self.capabilities.push(Arc::new(capability));
        self
    }

    /// Registers an agent.
    pub fn agent(mut self, agent: AgentDefinition) -> Self {
        self.agents.push(agent);
        self
    }

    /// Offers an agent to other agents as a capability.
    pub fn delegate(mut self, delegate: Delegate) -> Self {
        self.delegates.push(delegate);
        self
    }

    /// Content rules checking every inbound message and every reply.
    pub fn content_rules(mut self, rules: impl ContentRules) -> Self {
        self.content = Some(Arc::new(rules));
        self
    }

    /// Model prices (default: [`PriceTable::published`]).
    pub fn prices(mut self, prices: PriceTable) -> Self {
        self.prices = Some(prices);
        self
    }

    /// Where replies are delivered. Without one, the caller of `send` is the
    /// channel: a reply counts as delivered when `send` returns it.
    pub fn reply_sink(mut self, sink: impl ReplySink) -> Self {
        self.sink = Some(Arc::new(sink));
        self
    }

    /// The clock (default: the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Tunables.
    pub fn config(mut self, config: RuntimeConfig) -> Self {
        self.config = config;
        self
    }

    /// Builds the runtime.
    pub fn build(self) -> Result<Runtime, RuntimeError> {
        let store = self
            .store
            .ok_or_else(|| RuntimeError::Config("a store is required: call .store(...)".into()))?;
        let model = self.model.ok_or_else(|| {
            RuntimeError::Config("a chat model is required: call .model(...)".into())
        })?;
        let capabilities = CapabilityRegistry::new();
        for c in self.capabilities {
            capabilities.register_arc(c)?;
        }
        let agents: HashMap<AgentId, Arc<AgentDefinition>> = self
            .agents
            .into_iter()
            .map(|a| (a.id.clone(), Arc::new(a)))
            .collect();
        let delegates: std::collections::BTreeMap<String, AgentId> = self
            .delegates
            .iter()
            .map(|d| (d.name().to_owned(), d.agent().clone()))
            .collect();
        check_graph(&agents, &delegates)?;
        let (events, _) = broadcast::channel(self.config.event_capacity.max(1));
        let inner = Arc::new(Inner {
            store,
            model,
            capabilities,
            agents: RwLock::new(agents),
            prices: self.prices.unwrap_or_else(PriceTable::published),
            sink: self.sink,
            clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            config: self.config,
            events,
            locks: SessionLocks::default(),
            task_handlers: RwLock::new(HashMap::new()),
            sessions: std::sync::Mutex::new(HashMap::new()),
            delegates: RwLock::new(delegates),
            budgets: tokio::sync::RwLock::new(None),
            content: self.content,
        });
        for d in &self.delegates {
            let capability = delegation::AgentCapability::new(d, Arc::downgrade(&inner));
            inner.capabilities.register(capability)?;
        }
        Ok(Runtime { inner })
    }
}

/// Refuses a configuration whose agents delegate in a circle.
fn check_graph(
    agents: &HashMap<AgentId, Arc<AgentDefinition>>,
    delegates: &std::collections::BTreeMap<String, AgentId>,
) -> Result<(), RuntimeError> {
    let agents = agents
        .iter()
        .map(|(k, v)| (k.clone(), Arc::clone(v)))
        .collect();
    let cycles = DelegationGraph::build(&agents, delegates).cycles();
    if cycles.is_empty() {
        return Ok(());
    }
    let described: Vec<String> = cycles
        .iter()
        .map(|c| {
            c.iter()
                .map(AgentId::as_str)
                .collect::<Vec<_>>()
                .join(" → ")
        })
        .collect();
    Err(RuntimeError::DelegationCycle(described.join("; ")))
}

impl Runtime {
    /// Starts building a runtime.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The capability registry; capabilities can be added and removed at run time.
    pub fn capabilities(&self) -> &CapabilityRegistry {
        &self.inner.capabilities
    }

    /// Registers (or replaces) an agent at run time; refused if it would
    /// make the agents delegate in a circle.
    pub fn register_agent(&self, agent: AgentDefinition) -> Result<(), RuntimeError> {
        let mut agents = self.inner.agents.write().unwrap_or_else(|e| e.into_inner());
        let mut next = agents.clone();
        next.insert(agent.id.clone(), Arc::new(agent));
        check_graph(
            &next,
            &self
                .inner
                .delegates
                .read()
                .unwrap_or_else(|e| e.into_inner()),
        )?;
        *agents = next;
        Ok(())
    }

    /// Registers (or replaces) an agent owned by `actor`'s account, as
    /// `actor`: editors, admins and owners may; viewers and non-members may not.
    pub async fn put_agent(
        &self,
        actor: &Principal,
        agent: AgentDefinition,
    ) -> Result<(), RuntimeError> {
        let role = self.inner.store.role(actor.account, actor.user).await?;
        match role {
            Some(role) if role >= AccountRole::Editor => {}
            Some(role) => {
                return Err(AccessError::RoleTooLow {
                    role,
                    account: actor.account,
                    action: "change agents",
                }
                .into());
            }
            None => {
                return Err(AccessError::NotAMember {
                    user: actor.user,
                    account: actor.account,
                }
                .into());
            }
        }
        let id = agent.id.clone();
        self.register_agent(agent)?;
        self.inner.store.set_agent_owner(&id, actor.account).await?;
        Ok(())
    }

    /// Offers an agent to other agents as a capability, at run time; refused
    /// if it would make the agents delegate in a circle.
    pub fn register_delegate(&self, delegate: Delegate) -> Result<(), RuntimeError> {
        let mut delegates = self
            .inner
            .delegates
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let mut next = delegates.clone();
        next.insert(delegate.name().to_owned(), delegate.agent().clone());
        check_graph(
            &self.inner.agents.read().unwrap_or_else(|e| e.into_inner()),
            &next,
        )?;
        self.inner
            .capabilities
            .register_arc(self.delegate_capability(&delegate))?;
        *delegates = next;
        Ok(())
    }

    /// The capability behind a delegate, unregistered and unchecked: for
    /// hosts that assemble registries themselves. A cycle that reaches the
    /// registry this way is still refused when it is called.
    pub fn delegate_capability(&self, delegate: &Delegate) -> Arc<dyn Capability> {
        Arc::new(delegation::AgentCapability::new(
            delegate,
            Arc::downgrade(&self.inner),
        ))
    }

    /// Sets a spending limit (replacing any earlier one for its scope).
    pub async fn set_budget(&self, limit: BudgetLimit) -> Result<(), RuntimeError> {
        self.inner.store.set_budget(limit).await?;
        let all = self.inner.store.budgets().await?;
        *self.inner.budgets.write().await = Some(all);
        Ok(())
    }

    /// Removes the spending limit of a scope.
    pub async fn remove_budget(&self, scope: BudgetScope) -> Result<bool, RuntimeError> {
        let removed = self.inner.store.remove_budget(scope).await?;
        let all = self.inner.store.budgets().await?;
        *self.inner.budgets.write().await = Some(all);
        Ok(removed)
    }

    /// Usage over `filter`, one row per user, team, account or agent.
    pub async fn usage_report(
        &self,
        group: UsageGroup,
        filter: &UsageFilter,
    ) -> Result<Vec<UsageRow>, RuntimeError> {
        Ok(self.inner.store.usage_report(group, filter).await?)
    }

    /// Deletes everything a user owns (see [`PrivacyStore::forget_user`](crate::PrivacyStore::forget_user)).
    pub async fn forget_user(
        &self,
        account: AccountId,
        user: UserId,
    ) -> Result<ForgetReport, RuntimeError> {
        let report = self.inner.store.forget_user(account, user).await?;
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, s| s.principal.user != user);
        Ok(report)
    }

    /// Usage (calls, tokens, cost) over `filter`, from the store.
    pub async fn usage(&self, filter: &UsageFilter) -> Result<UsageTotals, RuntimeError> {
        Ok(self.inner.store.usage_totals(filter).await?)
    }

    /// The delegation graph of the registered agents and delegates.
    pub fn delegation_graph(&self) -> DelegationGraph {
        let agents = self
            .inner
            .agents
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        DelegationGraph::build(
            &agents,
            &self
                .inner
                .delegates
                .read()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    /// Events as they are appended, in process. Events missed by a slow
    /// subscriber are in the store's log ([`EventStore::events_after`](crate::EventStore::events_after)).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
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
        self.inner.agent(&agent)?;
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
        if message.text.trim().is_empty() {
            return Err(RuntimeError::EmptyMessage);
        }
        let limit = self.inner.config.max_message_bytes;
        if message.text.len() > limit {
            return Err(RuntimeError::MessageTooLarge {
                size: message.text.len(),
                limit,
            });
        }
        // The session lock is taken first, before any other await, so that
        // concurrent sends of one session run in the order they were first polled.
        let _guard = self.inner.locks.lock(session).await;
        let session = self.inner.session(session).await?;
        let agent = self.inner.agent(&session.agent_id)?;
        let access = self
            .inner
            .access(&session.principal, &session.agent_id)
            .await?;
        let (interaction, created) = self
            .inner
            .store
            .create_interaction(NewInteraction {
                session_id: session.id,
                principal: session.principal,
                agent_id: session.agent_id.clone(),
                input: message.text,
                inbound_id: message.id,
                parent_interaction_id: None,
                delegation_depth: 0,
            })
            .await?;
        let steps = match created {
            Some(event) => {
                self.inner.publish(event);
                Vec::new()
            }
            None => self.inner.store.steps(interaction.id).await?,
        };
        let run = Run::new(
            Arc::clone(&self.inner),
            session,
            agent,
            interaction,
            steps,
            true,
        );
        run.with_access(access).drive().await
    }

    /// Resumes every unfinished interaction from its last committed step, then
    /// delivers replies left in the outbox. Call once at start-up, before
    /// serving messages.
    pub async fn recover(&self) -> Result<RecoveryReport, RuntimeError> {
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
                .map(|(session, interactions)| self.recover_session(session, interactions))
                .buffer_unordered(concurrency)
                .collect()
                .await;
        for (id, outcome) in outcomes.into_iter().flatten() {
            match outcome {
                Ok(InteractionState::Completed) => report.completed += 1,
                Ok(_) | Err(RuntimeError::InteractionFailed { .. }) => report.failed += 1,
                Err(e) => report.errors.push((id, e.to_string())),
            }
        }
        if self.inner.sink.is_some() {
            for message in self.inner.store.undelivered().await? {
                if self.inner.deliver(&message).await? {
                    report.delivered += 1;
                }
            }
        }
        Ok(report)
    }

    async fn recover_session(
        &self,
        session_id: SessionId,
        interactions: Vec<Interaction>,
    ) -> Vec<(InteractionId, Result<InteractionState, RuntimeError>)> {
        let mut out = Vec::with_capacity(interactions.len());
        let _guard = self.inner.locks.lock(session_id).await;
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
                let agent = self.inner.agent(&interaction.agent_id)?;
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
                .map(|_| InteractionState::Completed)
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

    /// The state of an interaction, derived from its steps.
    pub async fn interaction_state(
        &self,
        id: InteractionId,
    ) -> Result<InteractionState, RuntimeError> {
        let steps = self.inner.store.steps(id).await?;
        Ok(InteractionState::derive(&steps))
    }
}

impl Inner {
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
