//! The outbox: replies written in the same transaction as the `respond` step
//! that produced them, then delivered to their channel.
//!
//! Delivery is at-least-once with a stable [`OutboxMessage::id`]: a crash
//! after a channel accepted a reply but before the store recorded it may
//! deliver it again on recovery. A [`ReplySink`] that de-duplicates on the id
//! (most messaging APIs take a client id) turns this into exactly-once.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ids::{InteractionId, OutboxId, SessionId};
use crate::time::Timestamp;

/// A reply in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxMessage {
    /// Stable id: the de-duplication key for the channel.
    pub id: OutboxId,
    /// The interaction that produced it.
    pub interaction_id: InteractionId,
    /// Its session.
    pub session_id: SessionId,
    /// The session's channel.
    pub channel: String,
    /// The session's channel key (a chat id), if any.
    pub channel_key: Option<String>,
    /// The reply text.
    pub text: String,
    /// When it was written.
    pub created_at: Timestamp,
    /// When it was delivered, if it was.
    pub delivered_at: Option<Timestamp>,
}

/// A reply to put in the outbox along with a `respond` step's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutboxMessage {
    /// The reply text.
    pub text: String,
    /// Whether it counts as delivered as soon as it is committed: true when
    /// the caller waiting for it is the channel itself.
    pub delivered: bool,
    /// Background work enqueued in the same commit as the reply (knowledge
    /// extraction): a reply is never written without the work it implies.
    pub tasks: Vec<crate::queue::NewTask>,
}

impl NewOutboxMessage {
    /// A reply to be delivered later, through a [`ReplySink`].
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            delivered: false,
            tasks: Vec::new(),
        }
    }
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
#[error("delivery failed: {message}")]
pub struct DeliveryError {
    /// What happened.
    pub message: String,
    /// Whether trying later may work.
    pub retryable: bool,
}

/// Where replies go: a chat, a socket, a file. Implemented by hosts.
#[async_trait]
pub trait ReplySink: Send + Sync + 'static {
    /// Delivers one reply. May be called again with the same message after a
    /// crash; de-duplicate on `message.id` for exactly-once delivery.
    async fn deliver(&self, message: &OutboxMessage) -> Result<(), DeliveryError>;
}
