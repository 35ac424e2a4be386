//! Sessions: conversations between a principal and an agent on a channel.

use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, InteractionId, SessionId};
use crate::principal::Principal;
use crate::time::Timestamp;

/// A conversation between a principal and an agent on a channel. Its history is
/// the sequence of its interactions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The session's id.
    pub id: SessionId,
    /// Who the session acts for.
    pub principal: Principal,
    /// The agent serving it.
    pub agent_id: AgentId,
    /// The channel it runs on (`cli`, `telegram`, `http`, ...).
    pub channel: String,
    /// The channel's own key for the conversation (a chat id), if any. A session
    /// is unique per (principal, agent, channel, key).
    pub key: Option<String>,
    /// When it was opened.
    pub created_at: Timestamp,
    /// The approval mode chosen for this session, if any: it narrows the
    /// agent's (the most careful wins), never widens it. Set with
    /// [`Approvals::set_session_mode`](crate::runtime::Approvals::set_session_mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_mode: Option<crate::approval::ApprovalMode>,
}

/// What is needed to open a session.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSession {
    /// Who the session acts for.
    pub principal: Principal,
    /// The agent serving it.
    pub agent_id: AgentId,
    /// The channel.
    pub channel: String,
    /// The channel's key for the conversation; opening the same key again
    /// returns the existing session.
    pub key: Option<String>,
}

impl NewSession {
    /// The session as a store writes it, with a new id, at `now`.
    pub fn created(self, now: Timestamp) -> Session {
        Session {
            id: crate::ids::SessionId::new(),
            principal: self.principal,
            agent_id: self.agent_id,
            channel: self.channel,
            key: self.key,
            created_at: now,
            approval_mode: None,
        }
    }
}

/// One finished exchange of a session: what the user said and what the agent replied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// The interaction the turn comes from.
    pub interaction_id: InteractionId,
    /// Its position in the store's order of interactions.
    #[serde(default)]
    pub seq: i64,
    /// The inbound message.
    pub user: String,
    /// The images it carried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<crate::ids::ImageId>,
    /// The reply.
    pub assistant: String,
    /// When the user said it (the interaction's creation).
    pub at: Timestamp,
}

/// A summary of a session's turns up to one of them: what the model is shown
/// in place of the turns it folds. Summaries chain: each folds the previous
/// one and the turns after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Summary {
    /// Its id.
    pub id: crate::ids::SummaryId,
    /// The session summarised.
    pub session_id: SessionId,
    /// Whose session it is.
    pub principal: Principal,
    /// The last interaction (by sequence number) it covers: every turn of
    /// the session up to it.
    pub through_seq: i64,
    /// The summary it folded in, if any.
    pub previous: Option<crate::ids::SummaryId>,
    /// The text shown to the model.
    pub text: String,
    /// The model that wrote it.
    pub model: String,
    /// The tokens its writing took.
    pub tokens: crate::usage::TokenUsage,
    /// What its writing cost.
    pub cost: crate::usage::Cost,
    /// The interaction whose reply asked for it (its usage is recorded there).
    pub interaction_id: InteractionId,
    /// When it was written.
    pub created_at: Timestamp,
}

/// A summary about to be stored.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NewSummary {
    /// The session summarised.
    pub session_id: SessionId,
    /// Whose session it is.
    pub principal: Principal,
    /// The last interaction it covers.
    pub through_seq: i64,
    /// The summary it folded in, if any.
    pub previous: Option<crate::ids::SummaryId>,
    /// Its text.
    pub text: String,
    /// The model that wrote it.
    pub model: String,
    /// The tokens its writing took.
    pub tokens: crate::usage::TokenUsage,
    /// What its writing cost.
    pub cost: crate::usage::Cost,
    /// The interaction whose reply asked for it.
    pub interaction_id: InteractionId,
}

impl NewSummary {
    /// A summary of `session` through `through_seq`, written by `model`.
    pub fn new(
        session: &Session,
        through_seq: i64,
        text: impl Into<String>,
        model: impl Into<String>,
        interaction_id: InteractionId,
    ) -> Self {
        Self {
            session_id: session.id,
            principal: session.principal,
            through_seq,
            previous: None,
            text: text.into(),
            model: model.into(),
            tokens: crate::usage::TokenUsage::default(),
            cost: crate::usage::Cost::ZERO,
            interaction_id,
        }
    }

    /// The summary as a store writes it, with a new id, at `now`.
    pub fn created(self, now: Timestamp) -> Summary {
        Summary {
            id: crate::ids::SummaryId::new(),
            session_id: self.session_id,
            principal: self.principal,
            through_seq: self.through_seq,
            previous: self.previous,
            text: self.text,
            model: self.model,
            tokens: self.tokens,
            cost: self.cost,
            interaction_id: self.interaction_id,
            created_at: now,
        }
    }
}
