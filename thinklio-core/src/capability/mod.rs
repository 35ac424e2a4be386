//! Capabilities: anything the model can call. A Rust function, an HTTP
//! webhook, a tool of an MCP server and another agent all implement one trait,
//! [`Capability`], described by one [`CapabilityManifest`]; from the harness's
//! side, calling a tool and delegating to an agent are the same operation.
//!
//! The harness, not the capability, parses the model's arguments and validates
//! them against the manifest's parameter schema before [`Capability::invoke`]
//! is called, so every kind gets the same checks.

mod function;
mod registry;
pub(crate) use registry::describe;

use crate::error::ErrorCode;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use function::{FunctionCapability, FunctionCapabilityBuilder};
pub use registry::{CapabilityRegistry, RegisteredCapability};

use crate::ids::{AgentId, InteractionId, StepId};
use crate::principal::Principal;
use crate::step::StepMode;
use crate::usage::{Cost, TokenUsage, UsageTotals};

/// What calling a capability does to the world; decides how recovery treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SideEffect {
    /// Reads only: safe to repeat.
    ReadOnly,
    /// Changes the world, but repeating with the same idempotency key changes
    /// nothing more: safe to repeat with that key.
    Idempotent,
    /// Changes the world and may do so again if repeated: run at most once. A
    /// call interrupted by a crash is never re-run; the model is told its
    /// outcome is unknown.
    External,
}

crate::step::str_enum!(SideEffect, "side-effect class",
    SideEffect::ReadOnly => "read_only",
    SideEffect::Idempotent => "idempotent",
    SideEffect::External => "external",
);

impl SideEffect {
    /// Whether a call may be repeated with the same idempotency key.
    pub fn is_repeatable(self) -> bool {
        !matches!(self, SideEffect::External)
    }
}

/// How much an agent is trusted, and how much a capability requires. A
/// capability whose required level is above the agent's is invisible to it
/// and cannot be called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustLevel {
    /// Read-only, harmless capabilities.
    Basic,
    /// Ordinary work on the principal's own data.
    Standard,
    /// Acts on others' behalf or spends money.
    Elevated,
    /// Administrative actions.
    Privileged,
}

/// What kind of thing stands behind a capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CapabilityKind {
    /// A Rust function in the host process.
    Function,
    /// An HTTP webhook.
    Webhook,
    /// A tool of an MCP server.
    Mcp,
    /// Another agent.
    Agent,
}

/// The one description every capability has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CapabilityManifest {
    /// The name the model calls it by: `^[a-zA-Z0-9_-]{1,64}$`.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// What stands behind it.
    pub kind: CapabilityKind,
    /// JSON Schema of its arguments.
    pub parameters: Value,
    /// JSON Schema of its result, if declared.
    pub returns: Option<Value>,
    /// The trust level an agent needs to see and call it.
    pub trust_level: TrustLevel,
    /// Its side-effect class.
    pub side_effect: SideEffect,
    /// Whether it runs now or as a job, unless the agent chooses otherwise.
    pub default_mode: StepMode,
    /// When run as a job: when its observers hear of partial output, and
    /// how it ends when it waits on subjobs.
    #[serde(default)]
    pub usefulness: crate::job::Usefulness,
    /// How long one call may take.
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
    /// What one call usually costs, if known.
    pub cost_hint: Option<Cost>,
}

impl CapabilityManifest {
    /// A manifest with defaults: standard trust, `external` (at most once:
    /// a capability nobody classified is never repeated after a crash),
    /// immediate, 30 s timeout. Mark what only reads `read_only`, and what
    /// the idempotency key makes safe to repeat `idempotent`.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        kind: CapabilityKind,
        parameters: Value,
    ) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            kind,
            parameters,
            returns: None,
            trust_level: TrustLevel::Standard,
            side_effect: SideEffect::External,
            default_mode: StepMode::Immediate,
            usefulness: crate::job::Usefulness::AllSubjobs,
            timeout: Duration::from_secs(30),
            cost_hint: None,
        }
    }
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// What a capability is told about the call it serves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InvocationContext {
    /// The interaction calling.
    pub interaction_id: InteractionId,
    /// The `act` step of this attempt.
    pub step_id: StepId,
    /// Stable across attempts of this call: pass it on to anything that
    /// de-duplicates (payment APIs, webhooks).
    pub idempotency_key: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Who the call is for.
    pub principal: Principal,
    /// The agent calling.
    pub agent_id: AgentId,
    /// How deep in a delegation chain the caller is.
    pub delegation_depth: u32,
    /// Where a capability reports tokens and cost it spent on the call's
    /// behalf; they roll up into the `act` step and its interaction.
    pub meter: UsageMeter,
    /// The job this call runs as, when it runs deferred: it creates
    /// subjobs, reports progress and names the callback of external work.
    pub job: Option<std::sync::Arc<dyn crate::job::JobHandle>>,
}

impl PartialEq for InvocationContext {
    fn eq(&self, other: &Self) -> bool {
        self.interaction_id == other.interaction_id
            && self.step_id == other.step_id
            && self.idempotency_key == other.idempotency_key
            && self.attempt == other.attempt
            && self.principal == other.principal
            && self.agent_id == other.agent_id
            && self.delegation_depth == other.delegation_depth
            && self.meter == other.meter
            && self.job.as_ref().map(|j| j.id()) == other.job.as_ref().map(|j| j.id())
    }
}

/// Collects the usage a capability spent on one call (a delegate agent's
/// model calls, a paid API's cost), to roll it up into the calling step.
#[derive(Debug, Clone, Default)]
pub struct UsageMeter(std::sync::Arc<std::sync::Mutex<UsageTotals>>);

impl UsageMeter {
    /// Adds spent tokens and cost.
    pub fn report(&self, tokens: TokenUsage, cost: Cost) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        t.calls += 1;
        t.tokens += tokens;
        t.cost += cost;
    }

    /// What was reported so far.
    pub fn totals(&self) -> UsageTotals {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PartialEq for UsageMeter {
    fn eq(&self, other: &Self) -> bool {
        self.totals() == other.totals()
    }
}

/// Why a capability call failed. Every variant becomes an observation the
/// model can act on; none ends the interaction.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CapabilityError {
    /// No capability of that name is visible to the agent.
    #[error("no capability named `{0}` is available")]
    NotFound(String),
    /// The arguments were not JSON.
    #[error("arguments are not valid JSON: {0}")]
    InvalidJson(String),
    /// The arguments do not match the parameter schema.
    #[error("arguments do not match the schema: {0}")]
    InvalidArguments(String),
    /// The result does not match the return schema.
    #[error("result does not match the return schema: {0}")]
    InvalidResult(String),
    /// The call took longer than the manifest's timeout.
    #[error("the call took longer than {0:?}")]
    Timeout(Duration),
    /// The capability ran and reported a failure.
    #[error("{0}")]
    Failed(String),
    /// The runtime refused the call: a delegation cycle, a depth limit.
    #[error("{message}")]
    Refused {
        /// A stable code such as `delegation.cycle`.
        code: ErrorCode,
        /// What was refused and why.
        message: String,
    },
    /// The capability panicked; the panic was caught and the runtime goes on.
    #[error("the capability panicked: {0}")]
    Panicked(String),
    /// The call was interrupted and its effect on the world is unknown.
    #[error("the call was interrupted; whether it took effect is unknown")]
    OutcomeUnknown,
    /// A manifest is invalid (bad name, bad schema).
    #[error("invalid manifest for `{name}`: {reason}")]
    InvalidManifest {
        /// The capability.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Another capability has this name already; nothing was replaced.
    #[error("a capability named `{name}` is registered already{}", owner.as_ref().map(|o| format!(" (by {o})")).unwrap_or_default())]
    NameTaken {
        /// The name.
        name: String,
        /// Who registered the one there, if an owner did.
        owner: Option<String>,
    },
}

impl CapabilityError {
    /// A stable code for step records and hosts.
    pub fn code(&self) -> ErrorCode {
        match self {
            CapabilityError::NotFound(_) => ErrorCode::CapabilityNotFound,
            CapabilityError::InvalidJson(_) => ErrorCode::CapabilityInvalidJson,
            CapabilityError::InvalidArguments(_) => ErrorCode::CapabilityInvalidArguments,
            CapabilityError::InvalidResult(_) => ErrorCode::CapabilityInvalidResult,
            CapabilityError::Timeout(_) => ErrorCode::CapabilityTimeout,
            CapabilityError::Failed(_) => ErrorCode::CapabilityFailed,
            CapabilityError::Refused { code, .. } => *code,
            CapabilityError::Panicked(_) => ErrorCode::CapabilityPanicked,
            CapabilityError::OutcomeUnknown => ErrorCode::CapabilityOutcomeUnknown,
            CapabilityError::InvalidManifest { .. } => ErrorCode::CapabilityInvalidManifest,
            CapabilityError::NameTaken { .. } => ErrorCode::CapabilityNameTaken,
        }
    }

    /// A failure reported by a capability, from anything displayable.
    pub fn failed(message: impl fmt::Display) -> Self {
        CapabilityError::Failed(message.to_string())
    }
}

/// What [`Capability::dispatch`] did with a job.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Dispatch {
    /// The work is done: the job resolves with this result (unless it
    /// created subjobs, whose ends decide; then this is its context bundle).
    Done(Value),
    /// Something outside took the work over and reports back through
    /// [`Jobs::report`](crate::runtime::Jobs::report): the job is
    /// `in_progress` until it does or its deadline passes.
    Accepted,
}

/// Anything the model can call.
#[async_trait]
pub trait Capability: Send + Sync + 'static {
    /// Its manifest.
    fn manifest(&self) -> &CapabilityManifest;

    /// Runs one call with arguments already validated against the parameter schema.
    async fn invoke(
        &self,
        context: &InvocationContext,
        arguments: Value,
    ) -> Result<Value, CapabilityError>;

    /// Runs one call as a job, on the runtime's job workers (`context.job`
    /// is set). By default it invokes the capability and the job resolves
    /// with the result; a capability that hands work to something outside
    /// (a webhook, a workflow engine) answers [`Dispatch::Accepted`] instead.
    async fn dispatch(
        &self,
        context: &InvocationContext,
        arguments: Value,
    ) -> Result<Dispatch, CapabilityError> {
        self.invoke(context, arguments).await.map(Dispatch::Done)
    }
}
