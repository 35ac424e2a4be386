//! Conversations as one actor may read them ([`Runtime::sessions`]): a
//! session, its history, an interaction, its steps and its state. A user
//! reads their own; an admin (with the directory enforced) or the host
//! acting for the account reads any of the account's; no one reads another
//! account's. Hosts need no store for these reads.

use super::access::Need;
use super::{Runtime, RuntimeError};
use crate::ids::{InteractionId, SessionId};
use crate::interaction::{Interaction, InteractionState};
use crate::outbox::OutboxMessage;
use crate::principal::Actor;
use crate::session::{Session, Turn};
use crate::step::Step;

/// Conversations, read as one actor ([`Runtime::sessions`]).
#[derive(Clone, Copy)]
pub struct Sessions<'a> {
    pub(super) rt: &'a Runtime,
}

impl std::fmt::Debug for Sessions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Sessions<'_> {
    async fn check(&self, by: &Actor, session: &Session) -> Result<(), RuntimeError> {
        self.rt
            .inner
            .authorize(
                by,
                session.principal.account,
                Need::User(session.principal.user),
            )
            .await
    }

    /// The session `id`, if `by` may read it.
    pub async fn get(&self, by: impl Into<Actor>, id: SessionId) -> Result<Session, RuntimeError> {
        let session = self.rt.inner.store.session(id).await?;
        self.check(&by.into(), &session).await?;
        Ok(session)
    }

    /// The sessions of a user of `by`'s account, if `by` may read them.
    pub async fn of_user(
        &self,
        by: impl Into<Actor>,
        user: crate::ids::UserId,
    ) -> Result<Vec<Session>, RuntimeError> {
        let by = by.into();
        let account = by.account();
        self.rt
            .inner
            .authorize(&by, account, Need::User(user))
            .await?;
        let mut sessions = self.rt.inner.store.sessions_of_user(user).await?;
        sessions.retain(|s| s.principal.account == account);
        Ok(sessions)
    }

    /// The session's last `limit` finished exchanges, oldest first.
    pub async fn history(
        &self,
        by: impl Into<Actor>,
        id: SessionId,
        limit: u32,
    ) -> Result<Vec<Turn>, RuntimeError> {
        self.get(by, id).await?;
        Ok(self.rt.inner.store.history(id, i64::MAX, limit).await?)
    }

    /// The interactions of a session, in order (delegates' and follow-ups'
    /// included).
    pub async fn interactions(
        &self,
        by: impl Into<Actor>,
        id: SessionId,
    ) -> Result<Vec<Interaction>, RuntimeError> {
        self.get(by, id).await?;
        Ok(self.rt.inner.store.interactions_of_session(id).await?)
    }

    /// The reply an interaction wrote to the outbox, once it has one.
    pub async fn reply(
        &self,
        by: impl Into<Actor>,
        id: InteractionId,
    ) -> Result<Option<OutboxMessage>, RuntimeError> {
        self.interaction(by, id).await?;
        Ok(self.rt.inner.store.reply_of(id).await?)
    }

    /// The interaction `id`, if `by` may read its session.
    pub async fn interaction(
        &self,
        by: impl Into<Actor>,
        id: InteractionId,
    ) -> Result<Interaction, RuntimeError> {
        let interaction = self.rt.inner.store.interaction(id).await?;
        self.rt
            .inner
            .authorize(
                &by.into(),
                interaction.principal.account,
                Need::User(interaction.principal.user),
            )
            .await?;
        Ok(interaction)
    }

    /// The steps of an interaction, in order: what it did, with inputs,
    /// outputs, errors, tokens and cost.
    pub async fn steps(
        &self,
        by: impl Into<Actor>,
        id: InteractionId,
    ) -> Result<Vec<Step>, RuntimeError> {
        self.interaction(by, id).await?;
        Ok(self.rt.inner.store.steps(id).await?)
    }

    /// Cancels an interaction in flight (or one waiting for a decision, or
    /// submitted and not yet run), as its user, an admin or the host: the
    /// step it is running is settled as a crash would settle it (an
    /// `external` call's outcome is unknown and it is never run again),
    /// steps waiting for a decision fail, delegates it started are closed,
    /// and it ends failed with `interaction.cancelled`. A delegate's
    /// interaction cancels the interaction that called it. Returns whether
    /// there was anything to cancel (`false` for one that had ended).
    ///
    /// A run of this runtime stops at once. On a shared store, the
    /// cancellation is announced to every process
    /// ([`InteractionStore::announce_cancel`](crate::InteractionStore::announce_cancel)):
    /// the one running the interaction stops it at once, and this call
    /// returns once it has let go of the session. The announcement is
    /// repeated each second until then (a listener that was reconnecting
    /// hears the next one).
    pub async fn cancel(
        &self,
        by: impl Into<Actor>,
        id: InteractionId,
    ) -> Result<bool, RuntimeError> {
        let inner = &self.rt.inner;
        let mut interaction = inner.store.interaction(id).await?;
        inner
            .authorize(
                &by.into(),
                interaction.principal.account,
                Need::User(interaction.principal.user),
            )
            .await?;
        while let Some(parent) = interaction.parent_interaction_id {
            interaction = inner.store.interaction(parent).await?;
        }
        if inner.cancel_running(interaction.id) {
            return Ok(true);
        }
        let announced = inner.config.shared_store;
        if announced {
            inner.store.announce_cancel(interaction.id).await?;
        }
        let session = interaction.session_id;
        let _guard = inner.locks.lock(session).await;
        // Announcements are best-effort (a listener reconnecting misses
        // them): repeated each second until the process running the
        // interaction lets go of the session.
        let repeat = announced.then(|| {
            let (inner, id) = (std::sync::Arc::clone(inner), interaction.id);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    if let Err(e) = inner.store.announce_cancel(id).await {
                        tracing::warn!(error = %e, interaction = %id, "cannot announce a cancellation");
                    }
                }
            })
        });
        let hold = inner.hold_session(session).await;
        if let Some(repeat) = repeat {
            repeat.abort();
        }
        let hold = hold?;
        let result = async {
            let steps = inner.store.steps(interaction.id).await?;
            if InteractionState::derive(&steps).is_finished() {
                // Stopped by the process that ran it, on the announcement.
                let cancelled = steps.iter().any(|s| {
                    s.error
                        .as_ref()
                        .is_some_and(|e| e.code == crate::error::ErrorCode::InteractionCancelled)
                });
                return Ok(announced && cancelled);
            }
            let run = super::harness::Run::new(
                std::sync::Arc::clone(inner),
                inner.session(session).await?,
                inner.agent_of(&interaction).await?,
                interaction,
                steps,
                false,
            );
            run.cancel().await?;
            Ok(true)
        }
        .await;
        hold.release().await;
        result
    }

    /// The state of an interaction, derived from its steps.
    pub async fn state(
        &self,
        by: impl Into<Actor>,
        id: InteractionId,
    ) -> Result<InteractionState, RuntimeError> {
        Ok(InteractionState::derive(&self.steps(by, id).await?))
    }
}
