//! Building a [`Runtime`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;

use super::delegation::{self, Delegate, DelegationGraph};
use super::jobs::{JobCallbacks, JobControl, JobsState, NoticeWebhook, ObserverCallback};
use super::locks::SessionLocks;
use super::{Inner, Runtime, RuntimeConfig, RuntimeError};
use crate::agent::AgentDefinition;
use crate::capability::{Capability, CapabilityRegistry};
use crate::directory::ContentRules;
use crate::ids::AgentId;
use crate::job::ObserverKind;
use crate::knowledge::OfflineEmbedder;
use crate::model::{ChatModel, Embedder};
use crate::outbox::ReplySink;
use crate::store::Store;
use crate::time::{Clock, SystemClock};
use crate::usage::PriceTable;

/// Builds a [`Runtime`].
#[derive(Default)]
pub struct RuntimeBuilder {
    store: Option<Arc<dyn Store>>,
    model: Option<Arc<dyn ChatModel>>,
    embedder: Option<Arc<dyn Embedder>>,
    capabilities: Vec<Arc<dyn Capability>>,
    agents: Vec<AgentDefinition>,
    delegates: Vec<Delegate>,
    content: Option<Arc<dyn ContentRules>>,
    prices: Option<PriceTable>,
    sink: Option<Arc<dyn ReplySink>>,
    clock: Option<Arc<dyn Clock>>,
    config: RuntimeConfig,
    job_callbacks: Option<JobCallbacks>,
    notice_webhook: Option<Arc<dyn NoticeWebhook>>,
    observer_callbacks: HashMap<String, Arc<dyn ObserverCallback>>,
    job_observers: Vec<ObserverKind>,
    token_counter: Option<Arc<dyn crate::context::TokenCounter>>,
    windows: crate::context::ContextWindows,
}

impl RuntimeBuilder {
    /// The store (required).
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// How tokens are counted for context budgets (the estimate
    /// [`EstimatedTokens`](crate::context::EstimatedTokens) unless set;
    /// `thinklio_llm::Tiktoken` counts OpenAI's families exactly).
    pub fn token_counter(mut self, counter: impl crate::context::TokenCounter) -> Self {
        self.token_counter = Some(Arc::new(counter));
        self
    }

    /// Sets the context window of a model (its exact id), where the known
    /// families' windows do not apply.
    pub fn context_window(mut self, model: impl Into<String>, tokens: u32) -> Self {
        self.windows.set(model, tokens);
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

    /// The embedder of knowledge facts and questions (default: the
    /// [`OfflineEmbedder`], which needs no model; see its quality notes).
    /// Facts stored with one embedder are searched with the same one.
    pub fn embedder(mut self, embedder: impl Embedder) -> Self {
        self.embedder = Some(Arc::new(embedder));
        self
    }

    /// A shared embedder.
    pub fn embedder_arc(mut self, embedder: Arc<dyn Embedder>) -> Self {
        self.embedder = Some(embedder);
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

    /// Model prices, for cost accounting and cost budgets (default: none,
    /// so every call costs zero and each model is warned about once; use
    /// `thinklio_llm::prices::published()` for the providers' list prices).
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

    /// Where outside work reports on jobs (a webhook dispatched as a job):
    /// the host serves the URL and routes it to
    /// [`Jobs::report`](super::Jobs::report).
    pub fn job_callbacks(mut self, callbacks: JobCallbacks) -> Self {
        self.job_callbacks = Some(callbacks);
        self
    }

    /// How notices reach [`ObserverKind::Webhook`] observers
    /// (`thinklio_capabilities::SignedNoticeWebhook` signs and posts them).
    pub fn notice_webhook(mut self, webhook: impl NoticeWebhook) -> Self {
        self.notice_webhook = Some(Arc::new(webhook));
        self
    }

    /// Registers the in-process observer named `name`
    /// ([`ObserverKind::Callback`]).
    pub fn observer_callback(
        mut self,
        name: impl Into<String>,
        callback: impl ObserverCallback,
    ) -> Self {
        self.observer_callbacks
            .insert(name.into(), Arc::new(callback));
        self
    }

    /// An observer every job of a deferred `act` step gets, besides the
    /// follow-up interaction in its session.
    pub fn job_observer(mut self, observer: ObserverKind) -> Self {
        self.job_observers.push(observer);
        self
    }

    /// Tunables.
    pub fn config(mut self, config: RuntimeConfig) -> Self {
        self.config = config;
        self
    }

    /// Builds the runtime.
    pub fn build(mut self) -> Result<Runtime, RuntimeError> {
        crate::telemetry::describe();
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
        for agent in &self.agents {
            agent.check().map_err(RuntimeError::Config)?;
        }
        // Delegations kept with the agents' definitions are delegates too.
        for agent in &self.agents {
            for to in &agent.delegates {
                match self.delegates.iter().find(|d| d.name() == to.name) {
                    Some(d) if d.agent() != &to.agent => {
                        return Err(RuntimeError::Config(format!(
                            "agent `{}`: the capability name `{}` delegates to `{}` already",
                            agent.id,
                            to.name,
                            d.agent()
                        )));
                    }
                    Some(_) => {}
                    None => self.delegates.push(Delegate::new(
                        to.agent.clone(),
                        to.name.clone(),
                        to.description.clone(),
                    )),
                }
            }
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
        let (tokens, _) = broadcast::channel(self.config.event_capacity.max(1));
        let streams = super::streams::SessionStreams::new(self.config.event_capacity);
        let inner = Arc::new(Inner {
            store,
            model,
            embedder: self
                .embedder
                .unwrap_or_else(|| Arc::new(OfflineEmbedder::default())),
            capabilities,
            agents: RwLock::new(agents),
            prices: self.prices.unwrap_or_default(),
            sink: self.sink,
            clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            config: self.config,
            events,
            tokens,
            streams,
            locks: SessionLocks::default(),
            task_handlers: RwLock::new(HashMap::new()),
            sessions: std::sync::Mutex::new(HashMap::new()),
            delegates: RwLock::new(delegates),
            budgets: tokio::sync::RwLock::new(None),
            content: self.content,
            token_counter: self
                .token_counter
                .unwrap_or_else(|| Arc::new(crate::context::EstimatedTokens)),
            windows: self.windows,
            running: Default::default(),
            warned: std::sync::Mutex::new(Default::default()),
            unpriced: std::sync::Mutex::new(Default::default()),
            query_embeddings: std::sync::Mutex::new(HashMap::new()),
            worker: format!("runtime-{}", uuid::Uuid::now_v7()),
            hears_cancels: std::sync::OnceLock::new(),
            closing: tokio::sync::watch::channel(false).0,
            stored: std::sync::Mutex::new(HashMap::new()),
            submitted: tokio::sync::Notify::new(),
            holds: std::sync::Mutex::new(HashMap::new()),
            jobs: JobsState {
                callbacks: self.job_callbacks,
                webhook: self.notice_webhook,
                observers: RwLock::new(self.observer_callbacks),
                default_observers: self.job_observers,
                ..JobsState::default()
            },
        });
        super::knowledge::register(&inner);
        super::summaries::register(&inner);
        for control in JobControl::both(&inner) {
            inner.capabilities.register(control)?;
        }
        for d in &self.delegates {
            let capability = delegation::AgentCapability::new(d, Arc::downgrade(&inner));
            inner.capabilities.register(capability)?;
        }
        Ok(Runtime { inner })
    }
}

/// Refuses a configuration whose agents delegate in a circle.
pub(super) fn check_graph(
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
