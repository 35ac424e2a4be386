//! What operating a runtime calls on it: the store's backlog for the
//! metrics ([`Runtime::sample_backlog`]), and stopping without losing or
//! repeating work ([`Runtime::shutdown`]): it takes no new work, lets the
//! steps running finish (until a deadline); on a shared store it ends each
//! run at that step and gives its session back so another worker continues
//! it at once; it delivers the job notices due.

use std::time::{Duration, Instant};

use super::{Inner, Runtime, RuntimeError};
use crate::ids::{InteractionId, SessionId};

/// What a [`Runtime::shutdown`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Runs that ended before the deadline: with their reply, or (on a
    /// shared store) between two steps, unfinished for the next holder.
    pub stopped: usize,
    /// Runs still inside a step at the deadline: they are left as a crash
    /// leaves them (the next holder settles the step), and their sessions
    /// are given back all the same.
    pub cut_off: Vec<InteractionId>,
    /// Sessions whose lease was given back at the deadline (those released
    /// by their runs before it are not listed).
    pub released: Vec<SessionId>,
    /// Job notices delivered on the way out.
    pub notices_delivered: usize,
}

impl Inner {
    /// Whether [`Runtime::shutdown`] has begun.
    pub(in crate::runtime) fn closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Resolves once [`Runtime::shutdown`] begins (at once if it has).
    pub(in crate::runtime) fn closed(&self) -> impl std::future::Future<Output = ()> + use<> {
        let mut closing = self.closing.subscribe();
        async move {
            let _ = closing.wait_for(|c| *c).await;
        }
    }

    fn running_now(&self) -> Vec<InteractionId> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect()
    }

    fn held_now(&self) -> Vec<SessionId> {
        self.holds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect()
    }
}

impl Runtime {
    /// Reads the store's [`Backlog`](crate::store::Backlog) (queued tasks
    /// and jobs by state, undelivered replies and notices, calls waiting for
    /// a decision) and sets the sampled gauges of
    /// [`telemetry`](crate::telemetry) from it; a host exporting metrics
    /// calls it before each export. One read of the store.
    pub async fn sample_backlog(&self) -> Result<crate::store::Backlog, RuntimeError> {
        let backlog = self.inner.store.backlog().await?;
        crate::telemetry::backlog(&backlog);
        Ok(backlog)
    }

    /// Stops this runtime gracefully, within `deadline`:
    ///
    /// 1. It takes no new work: `send` and `submit` are refused with
    ///    [`RuntimeError::ShuttingDown`], and its interaction, job and queue
    ///    workers stop claiming (their loops end).
    /// 2. On a shared store ([`RuntimeConfig::shared_store`](super::RuntimeConfig::shared_store)),
    ///    each run finishes the step it is in and stops there, its outcome
    ///    committed and no next step begun, and its session's lease is given
    ///    back: another worker claims the session at once and continues from
    ///    the next step. A caller of `send` whose run stopped so gets
    ///    `ShuttingDown`. In one process, where nobody else would continue
    ///    them, the runs go on to their replies.
    /// 3. At the deadline, runs still inside a step are left as a crash
    ///    would leave them and every lease still held is given back.
    /// 4. The job notices due are delivered.
    ///
    /// Nothing runs twice and nothing is lost: what stopped is resumed from
    /// its steps by whoever holds the session next. Call it once, before the
    /// process exits; the runtime takes no work afterwards.
    pub async fn shutdown(&self, deadline: Duration) -> Result<ShutdownReport, RuntimeError> {
        let inner = &self.inner;
        let began = Instant::now();
        let running_at_start = inner.running_now().len();
        inner.closing.send_replace(true);
        // An idle interaction worker wakes up to see it.
        inner.submitted.notify_waiters();
        let mut report = ShutdownReport::default();
        // Polled, not signalled: a run ends when its step does, and a short
        // poll keeps this free of bookkeeping in the step loop.
        while began.elapsed() < deadline
            && !(inner.running_now().is_empty() && inner.held_now().is_empty())
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        report.cut_off = inner.running_now();
        report.stopped = running_at_start.saturating_sub(report.cut_off.len());
        for session in inner.held_now() {
            inner
                .holds
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&session);
            if let Err(e) = inner.store.release_session(session, &inner.worker).await {
                tracing::warn!(%session, error = %e, "could not give a session back on shutdown");
            } else {
                report.released.push(session);
            }
        }
        match inner.deliver_notices().await {
            Ok((delivered, _)) => report.notices_delivered = delivered,
            Err(e) => tracing::warn!(error = %e, "could not deliver job notices on shutdown"),
        }
        tracing::info!(
            stopped = report.stopped,
            cut_off = report.cut_off.len(),
            released = report.released.len(),
            "runtime shut down"
        );
        Ok(report)
    }
}
