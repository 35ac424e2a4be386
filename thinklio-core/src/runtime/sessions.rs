//! Sessions shared by several runtimes: leases in the store, work submitted
//! for any worker to run, and the interaction worker that runs it.
//!
//! With [`RuntimeConfig::shared_store`](super::RuntimeConfig::shared_store),
//! whoever runs an interaction of a session (`send`, a job follow-up, the
//! interaction worker) first takes the session's lease in the store and
//! renews it while it works; another runtime waits for it. A worker that dies
//! stops renewing: when its lease runs out, any interaction worker claims the
//! session and resumes its unfinished interactions from their steps, as
//! `recover` does in one process. Without `shared_store`, the in-process
//! session locks alone keep a session's messages in order.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{Inbound, Inner, Runtime, RuntimeError};
use crate::ids::SessionId;
use crate::interaction::{Interaction, InteractionKind};

/// A session held for this runtime; [`SessionHold::release`] gives it back.
pub(crate) struct SessionHold {
    held: Option<(Arc<Inner>, SessionId, JoinHandle<()>)>,
    /// The session as stored when its lease was taken.
    fresh: Option<crate::session::Session>,
}

impl SessionHold {
    /// The session as the store held it when the lease was taken (shared
    /// stores only): fresh, so a run need not read it again.
    pub(crate) fn fresh(&mut self) -> Option<crate::session::Session> {
        self.fresh.take()
    }

    /// Gives the session's lease back.
    pub(crate) async fn release(mut self) {
        if let Some((inner, session, heartbeat)) = self.held.take() {
            heartbeat.abort();
            inner.forget_hold(session);
            if let Err(e) = inner.store.release_session(session, &inner.worker).await {
                // The lease runs out by itself; another worker then takes over.
                tracing::warn!(%session, error = %e, "could not release a session lease");
            }
        }
    }
}

impl Drop for SessionHold {
    fn drop(&mut self) {
        if let Some((_, _, heartbeat)) = &self.held {
            heartbeat.abort();
        }
    }
}

impl Inner {
    /// Takes the session's lease in the store (shared stores only), waiting
    /// while another runtime holds it, and keeps renewing it until released.
    pub(crate) async fn hold_session(
        self: &Arc<Self>,
        session: SessionId,
    ) -> Result<SessionHold, RuntimeError> {
        if !self.config.shared_store {
            return Ok(SessionHold {
                held: None,
                fresh: None,
            });
        }
        self.hear_cancels();
        let lease = self.config.task_lease;
        let mut wait = Duration::from_millis(5);
        let fresh = loop {
            let taken = self
                .store
                .lease_session_read(session, &self.worker, self.clock.now(), lease)
                .await?;
            if let Some(fresh) = taken {
                break fresh;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(200));
        };
        self.note_hold(session);
        Ok(SessionHold {
            held: Some((Arc::clone(self), session, self.renew_session(session))),
            fresh: Some(fresh),
        })
    }

    /// Renews a held session's lease every third of its length.
    fn renew_session(self: &Arc<Self>, session: SessionId) -> JoinHandle<()> {
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            let lease = inner.config.task_lease;
            loop {
                tokio::time::sleep(lease / 3).await;
                match inner
                    .store
                    .lease_session(session, &inner.worker, inner.clock.now(), lease)
                    .await
                {
                    Ok(true) => inner.note_hold(session),
                    Ok(false) => {
                        tracing::error!(%session, "lost the lease of a session this runtime runs");
                        inner.forget_hold(session);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(%session, error = %e, "could not renew a session lease")
                    }
                }
            }
        })
    }

    /// Records that this runtime holds `session` for one more lease from now.
    pub(crate) fn note_hold(&self, session: SessionId) {
        let until = self.clock.now().plus(self.config.task_lease);
        self.holds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(session, until);
    }

    fn forget_hold(&self, session: SessionId) {
        self.holds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&session);
    }

    /// Before a step of a session on a shared store: confirms this runtime
    /// still holds the session. A hold whose lease may have run out (the
    /// process stalled past its renewals) is confirmed in the store first;
    /// one another worker took is an error, and the run stops, leaving the
    /// interaction to the new holder.
    pub(crate) async fn confirm_hold(&self, session: SessionId) -> Result<(), RuntimeError> {
        if !self.config.shared_store {
            return Ok(());
        }
        let lease = self.config.task_lease;
        let now = self.clock.now();
        let until = self
            .holds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&session)
            .copied();
        if until.is_some_and(|u| now.plus(lease / 3) < u) {
            return Ok(());
        }
        if until.is_some()
            && self
                .store
                .lease_session(session, &self.worker, now, lease)
                .await?
        {
            self.note_hold(session);
            return Ok(());
        }
        self.forget_hold(session);
        Err(RuntimeError::Store(crate::store::StoreError::Conflict(
            format!(
                "this runtime no longer holds session {session}; the worker that took it over continues"
            ),
        )))
    }

    /// Runs the unfinished interactions of a session this runtime holds
    /// (its lease, and its in-process lock), in order; returns how many it ran.
    pub(crate) async fn run_waiting(
        self: &Arc<Self>,
        session: SessionId,
    ) -> Result<usize, RuntimeError> {
        let waiting: Vec<Interaction> = self.store.unfinished_in_session(session).await?;
        let n = waiting.len();
        let runtime = Runtime {
            inner: Arc::clone(self),
        };
        for (id, outcome) in runtime.resume_session(session, waiting).await {
            match outcome {
                Ok(_)
                | Err(RuntimeError::InteractionFailed { .. } | RuntimeError::ShuttingDown) => {}
                Err(e) => {
                    tracing::error!(interaction = %id, error = %e, "interaction could not run")
                }
            }
        }
        Ok(n)
    }
}

/// Sessions an interaction worker claims in one round trip at most.
const CLAIM_AT_ONCE: usize = 32;

super::worker::worker_handle!(
    /// A background interaction worker; stops when
    /// [`InteractionWorker::stop`] is called or it is dropped.
    InteractionWorker,
    "Stops the worker and waits for the sessions it is running."
);

impl Runtime {
    /// Records a message for any worker to answer: the interaction is
    /// written (a repeated inbound id returns the first) and an interaction
    /// worker of any runtime on this store runs it, in the session's order.
    /// The reply leaves through the outbox and the reply sink.
    pub async fn submit(
        &self,
        session: SessionId,
        message: impl Into<Inbound>,
    ) -> Result<Interaction, RuntimeError> {
        let message = message.into();
        self.check_message(&message)?;
        let session = self.inner.session(session).await?;
        self.inner
            .access(&session.principal, &session.agent_id)
            .await?;
        // Recorded without its first step: the worker that answers it
        // begins that (a step begun here would read as one a crash stopped).
        let (interaction, _, _) = self
            .inner
            .record_message(&session, message, InteractionKind::Message, false)
            .await?;
        self.inner.submitted.notify_one();
        Ok(interaction)
    }

    /// Answers, here and now, what waits in a session: the messages
    /// recorded with [`Runtime::submit`] and not yet answered, and any a
    /// crash interrupted, in order, with the session held as [`Runtime::send`]
    /// holds it. Replies leave through the outbox. Returns how many
    /// interactions ran. A host of one process calls it after `submit`
    /// (several processes share the work with
    /// [`Runtime::spawn_interaction_worker`] instead).
    pub async fn answer_waiting(&self, session: SessionId) -> Result<usize, RuntimeError> {
        let _guard = self.inner.locks.lock(session).await;
        let hold = self.inner.hold_session(session).await?;
        let result = self.inner.run_waiting(session).await;
        hold.release().await;
        result
    }

    /// Starts an interaction worker: it claims sessions with unfinished
    /// interactions (submitted, or left by a worker that died) and runs them
    /// in order, at most `concurrency` sessions at a time, checking every
    /// `poll` when idle. Needs [`RuntimeConfig::shared_store`](super::RuntimeConfig::shared_store)
    /// when other runtimes use the store.
    pub fn spawn_interaction_worker(
        &self,
        poll: Duration,
        concurrency: usize,
    ) -> InteractionWorker {
        let inner = Arc::clone(&self.inner);
        if inner.config.shared_store {
            inner.hear_cancels();
        }
        let slots = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
        InteractionWorker::spawn(|mut stopped| async move {
            let mut running = tokio::task::JoinSet::new();
            loop {
                if *stopped.borrow() || inner.closing() {
                    break;
                }
                while running.try_join_next().is_some() {}
                // As many sessions as there are free slots, in one claim:
                // taking over a stopped worker's sessions starts them all.
                let free = slots.available_permits().min(CLAIM_AT_ONCE);
                if free == 0 {
                    tokio::select! {
                        _ = stopped.changed() => {}
                        _ = inner.closed() => {}
                        _ = running.join_next() => {}
                    }
                    continue;
                }
                let claimed = inner
                    .store
                    .claim_sessions(
                        &inner.worker,
                        inner.clock.now(),
                        inner.config.task_lease,
                        free,
                    )
                    .await;
                match claimed {
                    Ok(sessions) if !sessions.is_empty() => {
                        for session in sessions {
                            // Free: only this loop takes slots.
                            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                                break;
                            };
                            let inner = Arc::clone(&inner);
                            running.spawn(async move {
                                let _slot = slot;
                                let _local = inner.locks.lock(session).await;
                                inner.note_hold(session);
                                let hold = SessionHold {
                                    held: Some((
                                        Arc::clone(&inner),
                                        session,
                                        inner.renew_session(session),
                                    )),
                                    fresh: None,
                                };
                                if let Err(e) = inner.run_waiting(session).await {
                                    tracing::error!(%session, error = %e, "session could not run");
                                }
                                hold.release().await;
                            });
                        }
                    }
                    Ok(_) => {
                        tokio::select! {
                            _ = stopped.changed() => {}
                            _ = inner.closed() => {}
                            _ = inner.submitted.notified() => {}
                            _ = inner.store.wait_for_work(poll) => {}
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "interaction worker could not reach the store");
                        tokio::select! {
                            _ = stopped.changed() => {}
                            _ = tokio::time::sleep(poll) => {}
                        }
                    }
                }
            }
            while running.join_next().await.is_some() {}
        })
    }
}
