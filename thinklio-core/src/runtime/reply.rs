//! What the message path hands back: the reply to a message, the inbound
//! message itself, and what recovery did.

use crate::ids::InteractionId;
use crate::step::Step;
use crate::usage::{Cost, TokenUsage};

use super::JobRecovery;

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
    /// The `act` steps waiting for a person's decision (this interaction's,
    /// or its delegates' when a call to one waits): while any is, the
    /// interaction has no reply yet (`text` is empty) and goes on once all
    /// are decided ([`Approvals::decide`](super::Approvals::decide)).
    pub waiting: Vec<crate::ids::StepId>,
}

impl Reply {
    pub(super) fn from_steps(interaction_id: InteractionId, text: String, steps: &[Step]) -> Self {
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
            // A call to a delegate that waits is decided through the calls
            // it waits on.
            waiting: steps
                .iter()
                .filter(|s| s.state == crate::step::StepState::Waiting)
                .flat_map(|s| match s.output_as::<crate::approval::Proposal>() {
                    Ok(Some(proposal)) => proposal.decidable(s.id),
                    _ => vec![s.id],
                })
                .collect(),
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

/// What [`Runtime::recover`](super::Runtime::recover) did.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Unfinished interactions found.
    pub resumed: usize,
    /// Of those, how many completed.
    pub completed: usize,
    /// Of those, how many ended failed.
    pub failed: usize,
    /// Of those, how many wait for a person's decision.
    pub waiting: usize,
    /// Replies delivered from the outbox.
    pub delivered: usize,
    /// Interactions that could not be resumed, with the reason (they stay
    /// unfinished and are tried again by the next `recover`).
    pub errors: Vec<(InteractionId, String)>,
    /// What was done with jobs a crash interrupted (dispatches run again
    /// by the job worker).
    pub jobs: JobRecovery,
}
