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
    /// For an agent that declares its answer's schema
    /// ([`AgentDefinition::answers_as`](crate::AgentDefinition::answers_as)):
    /// the answer, read from `text` as JSON.
    pub answer: Option<serde_json::Value>,
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
            answer: None,
        }
    }
}

impl Reply {
    /// The reply's text read as a `T` (an agent's structured answer).
    pub fn structured<T: serde::de::DeserializeOwned>(&self) -> Result<T, AnswerError> {
        if !self.waiting.is_empty() {
            return Err(AnswerError::Waiting {
                interaction: self.interaction_id,
                steps: self.waiting.clone(),
            });
        }
        serde_json::from_str(self.text.trim()).map_err(|e| AnswerError::Invalid {
            interaction: self.interaction_id,
            message: e.to_string(),
        })
    }
}

/// A typed answer ([`Runtime::send_structured`](super::Runtime::send_structured)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Structured<T> {
    /// The answer, read as a `T`.
    pub value: T,
    /// The reply it was read from (its text is the answer's JSON).
    pub reply: Reply,
}

/// Why a typed answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    /// The answer is not a value of the type asked for.
    #[error("the answer of interaction {interaction} is not the value asked for: {message}")]
    Invalid {
        /// The interaction.
        interaction: InteractionId,
        /// What is wrong.
        message: String,
    },
    /// The interaction waits for a person's decision about these steps.
    #[error("interaction {interaction} waits for decisions before it answers")]
    Waiting {
        /// The interaction.
        interaction: InteractionId,
        /// The steps to decide.
        steps: Vec<crate::ids::StepId>,
    },
}

impl AnswerError {
    /// A stable code for hosts.
    pub fn code(&self) -> crate::error::ErrorCode {
        match self {
            AnswerError::Invalid { .. } => crate::error::ErrorCode::AnswerInvalid,
            AnswerError::Waiting { .. } => crate::error::ErrorCode::AnswerWaiting,
        }
    }
}

/// An inbound message: text, and images the model is shown with it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Inbound {
    /// The text (may be empty when the message carries images).
    pub text: String,
    /// The channel's id for the message; a message sent twice with the same id
    /// is answered once.
    pub id: Option<String>,
    /// Its images, checked when it is sent
    /// ([`image::check`](crate::image::check)) and stored once.
    pub images: Vec<crate::image::ImageInput>,
}

impl Inbound {
    /// A message with a channel id for de-duplication.
    pub fn with_id(text: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            id: Some(id.into()),
            images: Vec::new(),
        }
    }

    /// With an image.
    ///
    /// ```
    /// use thinklio_core::{ImageInput, Inbound};
    /// # let read_the_upload = || b"\x89PNG\r\n\x1a\n".to_vec();
    /// let png: Vec<u8> = read_the_upload();
    /// let message = Inbound::from("What is in this picture?")
    ///     .image(ImageInput::bytes_of_type(png, "image/png"))
    ///     .image(ImageInput::url("https://example.com/cat.jpg"));
    /// assert_eq!(message.images.len(), 2);
    /// ```
    pub fn image(mut self, image: crate::image::ImageInput) -> Self {
        self.images.push(image);
        self
    }
}

impl From<&str> for Inbound {
    fn from(text: &str) -> Self {
        Self::from(text.to_owned())
    }
}

impl From<String> for Inbound {
    fn from(text: String) -> Self {
        Self {
            text,
            id: None,
            images: Vec::new(),
        }
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
