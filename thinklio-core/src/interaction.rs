//! Interactions: one unit of work in a session, and its state derived from its steps.

use crate::error::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, InteractionId, JobId, SessionId};
use crate::principal::Principal;
use crate::step::{Step, StepKind, StepState};
use crate::time::Timestamp;

/// What started an interaction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum InteractionKind {
    /// A message, answered by the agent's model.
    #[default]
    Message,
    /// A capability dispatched as a job by a host
    /// ([`Jobs::dispatch`](crate::runtime::Jobs::dispatch)): its input is a
    /// [`DispatchCall`](crate::step::payload::DispatchCall), run as one
    /// deferred `act` step, with no model call; the follow-up of the job is
    /// of this kind too, and answers with the job's report.
    Dispatch,
}

crate::step::str_enum!(InteractionKind, "interaction kind",
    InteractionKind::Message => "message",
    InteractionKind::Dispatch => "dispatch",
);

/// One unit of work in a session: usually one inbound message and everything
/// done to answer it. Its state is never stored; see [`InteractionState::derive`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    /// The interaction's id.
    pub id: InteractionId,
    /// Global order of creation in the store.
    pub seq: i64,
    /// The session it belongs to.
    pub session_id: SessionId,
    /// Who it acts for.
    pub principal: Principal,
    /// The agent that runs it.
    pub agent_id: AgentId,
    /// The inbound message.
    pub input: String,
    /// The images the message carried, stored once each
    /// ([`ImageStore`](crate::store::ImageStore)).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<crate::ids::ImageId>,
    /// The version of its agent it runs with, for a stored agent
    /// ([`crate::catalog`]); `None` for an agent registered in code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<u32>,
    /// The channel's id for the inbound message, if given; sending the same id
    /// twice in a session yields the same interaction.
    pub inbound_id: Option<String>,
    /// The interaction that delegated this one, if any.
    pub parent_interaction_id: Option<InteractionId>,
    /// 0 for an interaction started by a message; parent's depth + 1 for a delegate.
    pub delegation_depth: u32,
    /// The job this interaction follows up on: its `context` step carries
    /// the job's result and context bundle.
    pub job_id: Option<JobId>,
    /// What started it.
    #[serde(default)]
    pub kind: InteractionKind,
    /// When it was created.
    pub created_at: Timestamp,
}

/// What is needed to create an interaction.
#[derive(Debug, Clone, PartialEq)]
pub struct NewInteraction {
    /// The session.
    pub session_id: SessionId,
    /// Who it acts for.
    pub principal: Principal,
    /// The agent.
    pub agent_id: AgentId,
    /// The inbound message.
    pub input: String,
    /// The images it carried, stored before.
    pub images: Vec<crate::ids::ImageId>,
    /// The version of a stored agent it runs with.
    pub agent_version: Option<u32>,
    /// The channel's id for the message, for de-duplication.
    pub inbound_id: Option<String>,
    /// The delegating interaction, if any.
    pub parent_interaction_id: Option<InteractionId>,
    /// Delegation depth.
    pub delegation_depth: u32,
    /// The job it follows up on, if any.
    pub job_id: Option<JobId>,
    /// What starts it.
    pub kind: InteractionKind,
}

impl NewInteraction {
    /// The interaction as a store writes it: with `id`, `seq`, at `now`.
    pub fn created(self, id: InteractionId, seq: i64, now: Timestamp) -> Interaction {
        Interaction {
            id,
            seq,
            session_id: self.session_id,
            principal: self.principal,
            agent_id: self.agent_id,
            input: self.input,
            images: self.images,
            agent_version: self.agent_version,
            inbound_id: self.inbound_id,
            parent_interaction_id: self.parent_interaction_id,
            delegation_depth: self.delegation_depth,
            job_id: self.job_id,
            kind: self.kind,
            created_at: now,
        }
    }
}

/// Where an interaction stands, derived from its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum InteractionState {
    /// No step written yet.
    Pending,
    /// Some steps written; not finished.
    Running,
    /// A call waits for a person's decision (an `act` step is `waiting`);
    /// nothing runs until it is decided.
    Waiting,
    /// A `respond` step succeeded.
    Completed,
    /// A `context`, `think` or `respond` step failed for good.
    Failed,
}

impl InteractionState {
    /// Derives the state from the interaction's steps, in order.
    ///
    /// A failed `act` step never ends an interaction (the model observes the
    /// failure), a step failed as [`ErrorCode::StepInterrupted`] is retried, and
    /// a `think` step refused as [`ErrorCode::BudgetExceeded`] is followed
    /// by a reply saying so.
    pub fn derive(steps: &[Step]) -> Self {
        if steps.is_empty() {
            return InteractionState::Pending;
        }
        if steps
            .iter()
            .any(|s| s.kind == StepKind::Respond && s.state == StepState::Succeeded)
        {
            return InteractionState::Completed;
        }
        if steps.iter().any(is_terminal_failure) {
            return InteractionState::Failed;
        }
        if steps.iter().any(|s| s.state == StepState::Waiting) {
            return InteractionState::Waiting;
        }
        InteractionState::Running
    }

    /// Whether the interaction has ended.
    pub fn is_finished(self) -> bool {
        matches!(self, InteractionState::Completed | InteractionState::Failed)
    }
}

/// Whether a step's failure ends its interaction.
pub fn is_terminal_failure(step: &Step) -> bool {
    step.state == StepState::Failed
        && matches!(
            step.kind,
            StepKind::Context | StepKind::Think | StepKind::Respond
        )
        && step
            .error
            .as_ref()
            .is_none_or(|e| !ErrorCode::NOT_TERMINAL.contains(&e.code))
}
