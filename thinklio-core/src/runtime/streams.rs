//! Subscriptions to one session: a host streaming a conversation (an SSE
//! client, a web chat) hears that session's events and reply text only,
//! from a channel of its own, instead of every tenant's and filtering.
//!
//! Each subscribed session has one broadcast channel; it exists while a
//! receiver does (the next update of a session nobody listens to any more
//! drops it). A receiver that falls behind by more than the runtime's
//! `event_capacity` is told how many updates it missed
//! (`RecvError::Lagged`), and finds the events in the store's log and the
//! text in the steps.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::broadcast;

use crate::event::SessionUpdate;
use crate::ids::SessionId;

pub(crate) struct SessionStreams {
    capacity: usize,
    senders: Mutex<HashMap<SessionId, broadcast::Sender<SessionUpdate>>>,
}

impl SessionStreams {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            senders: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn subscribe(&self, session: SessionId) -> broadcast::Receiver<SessionUpdate> {
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        // Sessions whose listeners all left are dropped here too, so the map
        // holds only sessions someone listens to.
        senders.retain(|_, s| s.receiver_count() > 0);
        senders
            .entry(session)
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .subscribe()
    }

    /// Whether anyone listens to `session`.
    pub(crate) fn listened(&self, session: SessionId) -> bool {
        self.senders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&session)
            .is_some_and(|s| s.receiver_count() > 0)
    }

    pub(crate) fn send(&self, session: SessionId, update: impl FnOnce() -> SessionUpdate) {
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        let Some(sender) = senders.get(&session) else {
            return;
        };
        if sender.send(update()).is_err() {
            // No receiver left.
            senders.remove(&session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::TokenDelta;
    use crate::ids::{InteractionId, StepId};

    fn token(session: SessionId, text: &str) -> SessionUpdate {
        SessionUpdate::Token(TokenDelta {
            session_id: session,
            interaction_id: InteractionId::new(),
            step_id: StepId::new(),
            text: text.to_owned(),
        })
    }

    #[test]
    fn a_subscriber_hears_its_session_only_and_is_told_what_it_missed() {
        let streams = SessionStreams::new(2);
        let (mine, theirs) = (SessionId::new(), SessionId::new());
        let mut rx = streams.subscribe(mine);
        streams.send(theirs, || token(theirs, "not for you"));
        for text in ["a", "b", "c"] {
            streams.send(mine, || token(mine, text));
        }
        assert_eq!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(1))
        );
        let texts: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|u| match u {
                SessionUpdate::Token(t) => t.text,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(texts, ["b", "c"]);
        assert!(streams.listened(mine) && !streams.listened(theirs));
        drop(rx);
        streams.send(mine, || token(mine, "d"));
        assert!(
            streams.senders.lock().unwrap().is_empty(),
            "a session nobody listens to is dropped"
        );
    }
}
