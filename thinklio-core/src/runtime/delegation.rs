//! Agents as capabilities: delegation.
//!
//! A [`Delegate`] offers an agent to other agents under a capability name
//! with an invocation contract (parameter and return schemas). Calling it is
//! an ordinary `act` step; behind it, the runtime creates a child interaction
//! (`parent_interaction_id`, `delegation_depth + 1`) in the caller's session,
//! runs the delegate's harness on it durably, and returns the delegate's
//! answer as the observation. The child's tokens and cost roll up into the
//! calling step, and so into every interaction above it.
//!
//! The delegate works with its own capabilities, narrowed by the chain: its
//! trust level is capped at the lowest along the chain, so a delegate never
//! sees a capability its callers could not. (Assignments and account policy
//! narrow further where the tenancy layer applies them.) It sees no session
//! history; its context is the task.
//!
//! Refusals are fail-closed: a cycle in the configured agent graph fails
//! [`RuntimeBuilder::build`](super::RuntimeBuilder::build) and
//! [`Directory::register_agent`](super::Directory::register_agent); at run time a
//! call whose chain already holds the delegate, or that would pass the
//! smallest `max_delegation_depth` along the chain, is refused as an
//! observation (`delegation.cycle`, `delegation.depth_exceeded`).
//!
//! The call is `idempotent`: its idempotency key is the child's inbound id,
//! so re-running an interrupted call resumes the same child instead of
//! starting another.
//!
//! Approvals hold along the chain: a delegate runs in the most careful
//! approval mode of the agents above it. A call in it that waits for a
//! person's decision pauses it and every caller above it: the child's step
//! waits (`approval.requested`), and the calling `act` step waits with it
//! (`step.waiting`, a [`Proposal`](crate::approval::Proposal) naming the
//! child and the steps to decide). Once they are all decided, the caller's
//! step runs again, which resumes the child where it stopped: no step of
//! either runs twice. A delegate dispatched as a job cannot wait; such a
//! call is refused there (`approval.in_delegate`).

use crate::error::ErrorCode;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::harness::{Delegation, Run};
use super::{Inner, RuntimeError};
use crate::agent::AgentDefinition;
use crate::approval::ApprovalMode;
use crate::capability::{
    Capability, CapabilityError, CapabilityKind, CapabilityManifest, InvocationContext, SideEffect,
    TrustLevel,
};
use crate::ids::AgentId;
use crate::interaction::NewInteraction;
use crate::step::StepMode;

/// An agent offered to other agents as a capability.
///
/// ```
/// use thinklio_core::Delegate;
/// let researcher = Delegate::new("researcher", "ask_researcher", "Researches a question and answers it.");
/// assert_eq!(researcher.name(), "ask_researcher");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Delegate {
    agent: AgentId,
    name: String,
    description: String,
    parameters: Value,
    returns: Value,
    timeout: Duration,
    trust_level: TrustLevel,
    mode: StepMode,
}

impl Delegate {
    /// Offers `agent` as the capability `name`. Its default contract takes
    /// `{"task": string}` and returns the delegate's answer as a string.
    pub fn new(
        agent: impl Into<AgentId>,
        name: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        Self {
            agent: agent.into(),
            name: name.into(),
            description: description.into(),
            parameters: json!({
                "type": "object",
                "properties": { "task": { "type": "string", "description": "What the delegate should do." } },
                "required": ["task"]
            }),
            returns: json!({ "type": "string" }),
            timeout: Duration::from_secs(600),
            trust_level: TrustLevel::Basic,
            mode: StepMode::Immediate,
        }
    }

    /// The capability name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The agent behind it.
    pub fn agent(&self) -> &AgentId {
        &self.agent
    }

    /// Sets the parameter schema (the invocation contract). The delegate's
    /// task is the `task` argument when there is one, the arguments as JSON
    /// otherwise.
    pub fn parameters(mut self, schema: Value) -> Self {
        self.parameters = schema;
        self
    }

    /// Sets how long the whole delegated interaction may take.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets whether callers wait for the delegate (`immediate`, the
    /// default) or hand it the task as a job (`deferred`): the child
    /// interaction runs on the job workers and its answer comes back in a
    /// follow-up; the timeout is then the job's deadline.
    pub fn default_mode(mut self, mode: StepMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the trust level a caller needs to see this delegate.
    pub fn trust_level(mut self, level: TrustLevel) -> Self {
        self.trust_level = level;
        self
    }

    fn manifest(&self) -> CapabilityManifest {
        let mut m = CapabilityManifest::new(
            self.name.clone(),
            self.description.clone(),
            CapabilityKind::Agent,
            self.parameters.clone(),
        );
        m.returns = Some(self.returns.clone());
        m.side_effect = SideEffect::Idempotent;
        m.default_mode = self.mode;
        m.timeout = self.timeout;
        m.trust_level = self.trust_level;
        m
    }
}

/// The capability behind a [`Delegate`].
pub(crate) struct AgentCapability {
    manifest: CapabilityManifest,
    agent: AgentId,
    runtime: Weak<Inner>,
}

impl AgentCapability {
    pub(crate) fn new(delegate: &Delegate, runtime: Weak<Inner>) -> Self {
        Self {
            manifest: delegate.manifest(),
            agent: delegate.agent.clone(),
            runtime,
        }
    }
}

#[async_trait]
impl Capability for AgentCapability {
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
            .ok_or_else(|| CapabilityError::failed("the runtime behind this delegate is gone"))?;
        // Called as a plain capability (by a job), the delegate cannot wait:
        // a call in it that needs a decision is refused there.
        match inner
            .delegate(context, &self.agent, arguments, false)
            .await?
        {
            Delegated::Answered(value) => Ok(value),
            Delegated::Waiting { interaction, .. } => Err(CapabilityError::Refused {
                code: ErrorCode::ApprovalInDelegate,
                message: format!(
                    "the delegate `{}` (interaction {interaction}) waits for a decision its caller cannot wait for",
                    self.agent
                ),
            }),
        }
    }
}

/// What a delegate's run came to.
#[derive(Debug)]
pub(crate) enum Delegated {
    /// Its answer.
    Answered(Value),
    /// Calls in it wait for a person's decision: its interaction, and the
    /// steps (in it or in delegates below it) to decide.
    Waiting {
        interaction: crate::ids::InteractionId,
        steps: Vec<crate::ids::StepId>,
    },
}

fn store_failure(e: impl std::fmt::Display) -> CapabilityError {
    CapabilityError::failed(format!("the delegation could not be written: {e}"))
}

impl Inner {
    /// The agent behind the delegate capability `name`, if it is one.
    pub(crate) fn delegate_agent(&self, name: &str) -> Option<AgentId> {
        self.delegates
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Runs `delegate` for the caller in `context`, as a child interaction.
    /// With `can_wait`, a call in it that needs a person's decision pauses
    /// it ([`Delegated::Waiting`]) and calling it again once the decision
    /// is taken resumes it where it stopped; without, such a call is
    /// refused in the delegate.
    ///
    /// Boxed: a delegate's run calls delegates of its own.
    pub(crate) fn delegate<'a>(
        self: Arc<Self>,
        context: &'a InvocationContext,
        delegate: &'a AgentId,
        arguments: Value,
        can_wait: bool,
    ) -> BoxFuture<'a, Result<Delegated, CapabilityError>> {
        self.delegate_run(context, delegate, arguments, can_wait)
            .boxed()
    }

    async fn delegate_run(
        self: Arc<Self>,
        context: &InvocationContext,
        delegate: &AgentId,
        arguments: Value,
        can_wait: bool,
    ) -> Result<Delegated, CapabilityError> {
        // The chain of agents from the root interaction down to the caller.
        let mut chain = Vec::new();
        let mut next = Some(context.interaction_id);
        let mut caller = None;
        while let Some(id) = next {
            let interaction = self.store.interaction(id).await.map_err(store_failure)?;
            next = interaction.parent_interaction_id;
            chain.push(interaction.agent_id.clone());
            caller.get_or_insert(interaction);
        }
        chain.reverse();
        let Some(caller) = caller else {
            return Err(CapabilityError::failed(
                "the calling interaction was not found",
            ));
        };
        if chain.contains(delegate) {
            let path: Vec<&str> = chain
                .iter()
                .map(AgentId::as_str)
                .chain([delegate.as_str()])
                .collect();
            return Err(CapabilityError::Refused {
                code: ErrorCode::DelegationCycle,
                message: format!(
                    "delegation refused: it would form the cycle {}",
                    path.join(" → ")
                ),
            });
        }
        let agents: Vec<Arc<AgentDefinition>> =
            chain.iter().filter_map(|a| self.agent(a).ok()).collect();
        // The directory's word on the chain's root agent holds for the whole
        // chain: its assignments' narrowing and the account policy.
        let access = match chain.first() {
            Some(root) => self.access(&context.principal, root).await.map_err(|e| {
                CapabilityError::Refused {
                    code: ErrorCode::DelegationForbidden,
                    message: format!("delegation refused: {e}"),
                }
            })?,
            None => None,
        };
        let depth = context.delegation_depth + 1;
        let policy_limit = access
            .as_ref()
            .and_then(|a| a.policy.max_delegation_depth)
            .unwrap_or(u32::MAX);
        let mut limit = agents
            .iter()
            .map(|a| a.max_delegation_depth)
            .min()
            .unwrap_or(0)
            .min(policy_limit);
        // A delegation kept with its caller narrows the chain below the
        // agent it reaches (`DelegateTo::max_depth`), and what that agent
        // may use (`DelegateTo::capabilities`).
        let spec = |from: &AgentId, to: &AgentId| {
            agents
                .iter()
                .find(|a| &a.id == from)
                .and_then(|a| a.delegates.iter().find(|d| &d.agent == to))
                .cloned()
        };
        for (level, pair) in chain.windows(2).enumerate() {
            if let Some(below) = spec(&pair[0], &pair[1]).and_then(|d| d.max_depth) {
                let reached = u32::try_from(level + 1).unwrap_or(u32::MAX);
                limit = limit.min(reached.saturating_add(below));
            }
        }
        let allowed = chain
            .last()
            .and_then(|caller| spec(caller, delegate))
            .and_then(|d| d.capabilities);
        if depth > limit {
            return Err(CapabilityError::Refused {
                code: ErrorCode::DelegationDepthExceeded,
                message: format!(
                    "delegation refused: it would reach depth {depth}, beyond this chain's limit of {limit}"
                ),
            });
        }
        let agent = self
            .agent(delegate)
            .map_err(|e| CapabilityError::failed(format!("the delegate is not available: {e}")))?;
        let trust_ceiling = agents
            .iter()
            .map(|a| a.trust_level)
            .min()
            .unwrap_or(TrustLevel::Basic);
        // The most careful approval mode along the chain holds below it.
        let approval_ceiling = agents
            .iter()
            .map(|a| a.approval_mode)
            .min()
            .unwrap_or(ApprovalMode::Observe);
        let session = self
            .session(caller.session_id)
            .await
            .map_err(store_failure)?;
        let task = match arguments.get("task").and_then(Value::as_str) {
            Some(task) => task.to_owned(),
            None => arguments.to_string(),
        };
        let (child, created) = self
            .store
            .create_interaction(NewInteraction {
                session_id: session.id,
                principal: context.principal,
                agent_id: delegate.clone(),
                input: task,
                images: Vec::new(),
                agent_version: None,
                // The call's idempotency key: re-running the call resumes this child.
                inbound_id: Some(context.idempotency_key.clone()),
                parent_interaction_id: Some(context.interaction_id),
                delegation_depth: depth,
                job_id: None,
                kind: crate::interaction::InteractionKind::Message,
            })
            .await
            .map_err(store_failure)?;
        let steps = match created {
            Some(event) => {
                self.publish(event);
                Vec::new()
            }
            None => self.store.steps(child.id).await.map_err(store_failure)?,
        };
        let mut run = Run::new(Arc::clone(&self), session, agent, child, steps, false)
            .delegate(Delegation {
                trust_ceiling,
                approval_ceiling,
                can_wait: can_wait && context.job.is_none(),
                allowed,
            })
            .with_access(access);
        if let Some(job) = &context.job {
            // Dispatched as a job: the child stops when the job ends.
            run = run.for_job(job.id());
        }
        match run.drive().await {
            Ok(reply) if !reply.waiting.is_empty() => Ok(Delegated::Waiting {
                interaction: reply.interaction_id,
                steps: reply.waiting,
            }),
            Ok(reply) => {
                context.meter.report(reply.usage, reply.cost);
                Ok(Delegated::Answered(Value::String(reply.text)))
            }
            Err(RuntimeError::InteractionFailed { interaction, error }) => {
                Err(CapabilityError::failed(format!(
                    "the delegate `{delegate}` failed (interaction {interaction}): {error}"
                )))
            }
            Err(e) => Err(CapabilityError::failed(format!(
                "the delegate `{delegate}` could not run: {e}"
            ))),
        }
    }
}

/// The delegation graph: which agent may call which, through which capability.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DelegationGraph {
    /// Every agent, with its delegation depth limit.
    pub agents: BTreeMap<AgentId, u32>,
    /// Edges `(caller, capability name, delegate)`.
    pub edges: Vec<(AgentId, String, AgentId)>,
}

impl DelegationGraph {
    pub(crate) fn build(
        agents: &BTreeMap<AgentId, Arc<AgentDefinition>>,
        delegates: &BTreeMap<String, AgentId>,
    ) -> Self {
        let mut graph = DelegationGraph::default();
        for (id, agent) in agents {
            graph.agents.insert(id.clone(), agent.max_delegation_depth);
            for name in &agent.capabilities {
                if let Some(target) = delegates.get(name) {
                    graph.edges.push((id.clone(), name.clone(), target.clone()));
                }
            }
        }
        graph
    }

    /// The part of the graph reachable from `start` by delegation (`start`
    /// alone when it delegates to no one; empty when it is not in it).
    pub fn reachable_from(&self, start: &AgentId) -> DelegationGraph {
        let mut graph = DelegationGraph::default();
        let mut todo = vec![start.clone()];
        while let Some(at) = todo.pop() {
            let Some(depth) = self.agents.get(&at) else {
                continue;
            };
            if graph.agents.insert(at.clone(), *depth).is_some() {
                continue;
            }
            for edge in self.edges.iter().filter(|(from, _, _)| *from == at) {
                graph.edges.push(edge.clone());
                todo.push(edge.2.clone());
            }
        }
        graph
    }

    /// The cycles of the graph, each as the agents along it, first agent repeated at the end.
    pub fn cycles(&self) -> Vec<Vec<AgentId>> {
        let mut cycles = Vec::new();
        let mut seen = BTreeSet::new();
        for start in self.agents.keys() {
            let mut path = vec![start.clone()];
            self.walk(start, &mut path, &mut cycles, &mut seen);
        }
        cycles
    }

    fn walk(
        &self,
        at: &AgentId,
        path: &mut Vec<AgentId>,
        cycles: &mut Vec<Vec<AgentId>>,
        seen: &mut BTreeSet<Vec<AgentId>>,
    ) {
        for (_, _, to) in self.edges.iter().filter(|(from, _, _)| from == at) {
            if let Some(pos) = path.iter().position(|a| a == to) {
                let mut cycle: Vec<AgentId> = path[pos..].to_vec();
                // One cycle, however it is entered: keyed by its sorted members.
                let mut key = cycle.clone();
                key.sort();
                if seen.insert(key) {
                    cycle.push(to.clone());
                    cycles.push(cycle);
                }
            } else {
                path.push(to.clone());
                self.walk(to, path, cycles, seen);
                path.pop();
            }
        }
    }

    fn in_cycle(&self, from: &AgentId, to: &AgentId) -> bool {
        self.cycles()
            .iter()
            .any(|c| c.windows(2).any(|w| &w[0] == from && &w[1] == to))
    }

    /// The graph as a Mermaid flowchart; edges on a cycle are drawn red.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        for (agent, depth) in &self.agents {
            let _ = writeln!(
                out,
                "    {}[\"{} (max depth {depth})\"]",
                node(agent),
                label(agent.as_str())
            );
        }
        let mut red = Vec::new();
        for (i, (from, name, to)) in self.edges.iter().enumerate() {
            let _ = writeln!(out, "    {} -->|{}| {}", node(from), label(name), node(to));
            if self.in_cycle(from, to) {
                red.push(i.to_string());
            }
        }
        if !red.is_empty() {
            let _ = writeln!(
                out,
                "    linkStyle {} stroke:red,stroke-width:2px",
                red.join(",")
            );
        }
        out
    }

    /// The graph as Graphviz DOT; edges on a cycle are drawn red.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph delegation {\n    rankdir=LR;\n");
        for (agent, depth) in &self.agents {
            let agent = quoted(agent.as_str());
            let _ = writeln!(
                out,
                "    \"{agent}\" [label=\"{agent}\\nmax depth {depth}\"];"
            );
        }
        for (from, name, to) in &self.edges {
            let style = if self.in_cycle(from, to) {
                ", color=red"
            } else {
                ""
            };
            let (f, n, t) = (quoted(from.as_str()), quoted(name), quoted(to.as_str()));
            let _ = writeln!(out, "    \"{f}\" -> \"{t}\" [label=\"{n}\"{style}];");
        }
        out.push_str("}\n");
        out
    }
}

/// Text inside a DOT string: quotes and backslashes escaped, line breaks
/// dropped (agent and capability names come from users now).
fn quoted(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

/// Text inside a Mermaid label or edge text: what would end it replaced by
/// its entity.
fn label(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .map(|c| match c {
            '"' => "#quot;".to_owned(),
            '|' => "#124;".to_owned(),
            '[' | ']' | '<' | '>' | '{' | '}' => format!("#{};", u32::from(c)),
            c => c.to_string(),
        })
        .collect()
}

/// A Mermaid node id for an agent: its name with anything unusual replaced.
fn node(agent: &AgentId) -> String {
    agent
        .as_str()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
