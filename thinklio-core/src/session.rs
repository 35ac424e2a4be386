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
    /// The inbound message.
    pub user: String,
    /// The reply.
    pub assistant: String,
    /// When the user said it (the interaction's creation).
    pub at: Timestamp,
}
