//! The append-only event log that hosts and observers subscribe to.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ErrorCode;
use crate::ids::{InteractionId, JobId, SessionId, StepId};
use crate::job::JobState;
use crate::step::{ModelUsage, Step, StepError, StepKind};
use crate::time::Timestamp;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EventKind {
    /// `interaction.created`
    #[serde(rename = "interaction.created")]
    InteractionCreated,
    /// `interaction.completed`: its `respond` step succeeded.
    #[serde(rename = "interaction.completed")]
    InteractionCompleted,
    /// `interaction.failed`
    #[serde(rename = "interaction.failed")]
    InteractionFailed,
    /// `step.started`: a step was written and moved to `running`.
    #[serde(rename = "step.started")]
    StepStarted,
    /// `step.succeeded`
    #[serde(rename = "step.succeeded")]
    StepSucceeded,
    /// `step.failed`
    #[serde(rename = "step.failed")]
    StepFailed,
    /// `reply.delivered`: an outbox entry reached its channel.
    #[serde(rename = "reply.delivered")]
    ReplyDelivered,
    /// `task.dead_lettered`: a queued task ran out of attempts.
    #[serde(rename = "task.dead_lettered")]
    TaskDeadLettered,
    /// `budget.warning`: spend passed a warning threshold of a budget.
    #[serde(rename = "budget.warning")]
    BudgetWarning,
    /// `job.state_changed`: a job moved to another state.
    #[serde(rename = "job.state_changed")]
    JobStateChanged,
    /// `usage.unpriced_model`: a model with no price answered (once per
    /// model per runtime): its calls cost zero and cost budgets miss them.
    #[serde(rename = "usage.unpriced_model")]
    UsageUnpriced,
    /// `approval.requested`: an `act` step waits for a person's decision;
    /// the payload has the step's fields and the proposed `arguments`.
    #[serde(rename = "approval.requested")]
    ApprovalRequested,
    /// `approval.decided`: a decision was taken about a waiting step.
    #[serde(rename = "approval.decided")]
    ApprovalDecided,
    /// `step.waiting`: a call to a delegate waits because calls in the
    /// delegate wait for decisions (each announced by its own
    /// `approval.requested`).
    #[serde(rename = "step.waiting")]
    StepWaiting,
}

crate::step::str_enum!(EventKind, "event kind",
    EventKind::InteractionCreated => "interaction.created",
    EventKind::InteractionCompleted => "interaction.completed",
    EventKind::InteractionFailed => "interaction.failed",
    EventKind::StepStarted => "step.started",
    EventKind::StepSucceeded => "step.succeeded",
    EventKind::StepFailed => "step.failed",
    EventKind::ReplyDelivered => "reply.delivered",
    EventKind::TaskDeadLettered => "task.dead_lettered",
    EventKind::BudgetWarning => "budget.warning",
    EventKind::JobStateChanged => "job.state_changed",
    EventKind::UsageUnpriced => "usage.unpriced_model",
    EventKind::ApprovalRequested => "approval.requested",
    EventKind::ApprovalDecided => "approval.decided",
    EventKind::StepWaiting => "step.waiting",
);

/// An entry of the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the log: strictly increasing.
    pub seq: i64,
    /// What happened.
    pub kind: EventKind,
    /// The session concerned, if any.
    pub session_id: Option<SessionId>,
    /// The interaction concerned, if any.
    pub interaction_id: Option<InteractionId>,
    /// The step concerned, if any.
    pub step_id: Option<StepId>,
    /// Details.
    pub payload: Value,
    /// When.
    pub at: Timestamp,
}

/// An event about to be appended.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// What happened.
    pub kind: EventKind,
    /// The session concerned, if any.
    pub session_id: Option<SessionId>,
    /// The interaction concerned, if any.
    pub interaction_id: Option<InteractionId>,
    /// The step concerned, if any.
    pub step_id: Option<StepId>,
    /// Details.
    pub payload: Value,
}

impl NewEvent {
    /// An event with no subject and an empty payload.
    pub fn new(kind: EventKind) -> Self {
        Self {
            kind,
            session_id: None,
            interaction_id: None,
            step_id: None,
            payload: Value::Null,
        }
    }

    /// About this interaction (and its session).
    pub fn interaction(mut self, session: SessionId, interaction: InteractionId) -> Self {
        self.session_id = Some(session);
        self.interaction_id = Some(interaction);
        self
    }

    /// With this payload.
    pub fn payload(mut self, payload: Value) -> Self {
        self.payload = payload;
        self
    }
}

/// What a subscriber of one session hears
/// ([`Runtime::subscribe_session`](crate::Runtime::subscribe_session)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SessionUpdate {
    /// An event of the session, as it is appended to the log.
    Event(Event),
    /// A piece of reply text, as the model writes it.
    Token(TokenDelta),
}

/// A piece of a reply's text as the model produces it, for hosts that show
/// replies while they are written (server-sent events, a chat that types).
///
/// Token deltas are not events of the log: they are not stored and a
/// subscriber that falls behind misses them. The step's stored output is
/// the whole text. See [`Runtime::subscribe_tokens`](crate::Runtime::subscribe_tokens).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TokenDelta {
    /// The session.
    pub session_id: SessionId,
    /// The interaction.
    pub interaction_id: InteractionId,
    /// The `think` step the text belongs to.
    pub step_id: StepId,
    /// The next piece of text.
    pub text: String,
}

/// The payload of `step.started`, `step.succeeded` and `step.failed`, as
/// every store writes it and hosts read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepEvent {
    /// The step's kind.
    pub kind: StepKind,
    /// Its position in the interaction.
    pub seq: u32,
    /// Its attempt.
    pub attempt: u32,
    /// The capability an `act` step calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<ErrorCode>,
    /// Input tokens its model call used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    /// Output tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    /// What it cost, in billionths of a dollar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_nanos: Option<i64>,
}

impl StepEvent {
    /// The payload of a step's start.
    pub fn started(kind: StepKind, seq: u32, attempt: u32, capability: Option<&str>) -> Self {
        Self {
            kind,
            seq,
            attempt,
            capability: capability.map(str::to_owned),
            error_code: None,
            input_tokens: None,
            output_tokens: None,
            cost_nanos: None,
        }
    }

    /// The payload of `step`'s start (or its start again, after a decision).
    pub fn started_of(step: &Step) -> Self {
        Self::started(
            step.kind,
            step.seq,
            step.attempt,
            step.capability.as_deref(),
        )
    }

    /// The payload of a step's end.
    pub fn ended(step: &Step, error: Option<&StepError>, usage: Option<&ModelUsage>) -> Self {
        Self {
            error_code: error.map(|e| e.code),
            input_tokens: usage.map(|u| u.tokens.input_tokens),
            output_tokens: usage.map(|u| u.tokens.output_tokens),
            cost_nanos: usage.map(|u| u.cost.as_nanos()),
            ..Self::started(
                step.kind,
                step.seq,
                step.attempt,
                step.capability.as_deref(),
            )
        }
    }

    /// As stored.
    pub fn to_json(&self) -> Value {
        crate::step::payload::to_json(self)
    }
}

/// The payload of `approval.requested`: the waiting step's fields and the
/// arguments proposed (`null` when they are not JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ApprovalRequested {
    /// The step.
    #[serde(flatten)]
    pub step: StepEvent,
    /// The arguments proposed.
    #[serde(default)]
    pub arguments: Value,
}

/// The payload of `approval.decided`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ApprovalDecided {
    /// The step decided.
    pub step_id: crate::ids::StepId,
    /// What was decided.
    #[serde(flatten)]
    pub decision: crate::approval::Decision,
    /// Who decided.
    pub by: crate::approval::DecidedBy,
    /// Through which channel.
    pub channel: String,
}

/// The payload of `job.state_changed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStateChanged {
    /// The job.
    pub job_id: JobId,
    /// Its state before.
    pub from: JobState,
    /// Its state after.
    pub to: JobState,
    /// Its capability.
    pub capability: String,
}

impl JobStateChanged {
    /// As stored.
    pub fn to_json(&self) -> Value {
        crate::step::payload::to_json(self)
    }
}
