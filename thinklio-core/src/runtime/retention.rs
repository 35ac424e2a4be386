//! Retention: pruning finished work on a schedule ([`RetentionPolicy`],
//! [`Runtime::prune`], [`Runtime::spawn_retention_worker`]). What goes and
//! what stays is the store's rule ([`retention`](crate::store::retention)):
//! never unfinished work, never what a report or a budget reads.

use std::time::Duration;

use super::{Runtime, RuntimeError};
use crate::store::{PruneReport, Pruning};

/// How long finished work is kept, and how often it is pruned.
///
/// Nothing is pruned unless a host asks for it ([`Runtime::prune`] or
/// [`Runtime::spawn_retention_worker`]): a runtime keeps everything by
/// default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionPolicy {
    /// Finished turns' steps, events and summarised replies older than this
    /// go (30 days unless set).
    pub keep_finished: Duration,
    /// Usage records older than this are rolled up by the hour (90 days
    /// unless set; reports by day and month read the same sums).
    pub keep_usage_detail: Duration,
    /// How often the worker prunes (hourly unless set; a second at least).
    pub every: Duration,
    /// Rows per transaction (1,000 unless set).
    pub batch: u32,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            keep_finished: Duration::from_secs(30 * 86_400),
            keep_usage_detail: Duration::from_secs(90 * 86_400),
            every: Duration::from_secs(3_600),
            batch: 1_000,
        }
    }
}

impl RetentionPolicy {
    /// Keeps finished work for `keep`; the rest as [`Default`].
    pub fn keep_finished(keep: Duration) -> Self {
        Self {
            keep_finished: keep,
            ..Self::default()
        }
    }

    /// With usage detail kept for `keep`.
    pub fn usage_detail(mut self, keep: Duration) -> Self {
        self.keep_usage_detail = keep;
        self
    }

    /// Pruning every `every`.
    pub fn every(mut self, every: Duration) -> Self {
        self.every = every;
        self
    }

    /// With `batch` rows per transaction.
    pub fn batch(mut self, batch: u32) -> Self {
        self.batch = batch.max(1);
        self
    }
}

/// The shortest pause of the retention worker: a policy asking for less
/// (a zero, say) would have it prune in a loop that never rests.
const MIN_EVERY: Duration = Duration::from_secs(1);

fn before(now: crate::time::Timestamp, keep: Duration) -> crate::time::Timestamp {
    let ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    crate::time::Timestamp::from_millis(now.as_millis().saturating_sub(ms))
}

impl Runtime {
    /// Prunes what `policy` no longer keeps, now, and says what went.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use thinklio_core::{RetentionPolicy, Runtime};
    /// # async fn prune(runtime: &Runtime) -> Result<(), thinklio_core::RuntimeError> {
    /// let report = runtime
    ///     .prune(&RetentionPolicy::keep_finished(Duration::from_secs(14 * 86_400)))
    ///     .await?;
    /// println!("pruned {} interactions, {} steps", report.interactions, report.steps);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn prune(&self, policy: &RetentionPolicy) -> Result<PruneReport, RuntimeError> {
        let now = self.inner.clock.now();
        let pruning = Pruning::new(
            before(now, policy.keep_finished),
            before(now, policy.keep_usage_detail),
        )
        .batch(policy.batch);
        let report = self.inner.store.prune(pruning).await?;
        if !report.is_empty() {
            tracing::info!(
                interactions = report.interactions,
                steps = report.steps,
                events = report.events,
                replies = report.replies,
                usage_rolled_up = report.usage_rolled_up,
                tasks = report.tasks,
                "pruned finished work"
            );
        }
        Ok(report)
    }

    /// Starts a worker that prunes by `policy` at once and then every
    /// `policy.every`, until stopped, dropped or the runtime shuts down.
    pub fn spawn_retention_worker(&self, policy: RetentionPolicy) -> RetentionWorker {
        let runtime = self.clone();
        RetentionWorker::spawn(|mut stopped| async move {
            loop {
                if *stopped.borrow() || runtime.inner.closing() {
                    return;
                }
                if let Err(e) = runtime.prune(&policy).await {
                    tracing::error!(error = %e, "retention worker could not prune");
                }
                tokio::select! {
                    _ = stopped.changed() => {}
                    _ = runtime.inner.closed() => {}
                    _ = tokio::time::sleep(policy.every.max(MIN_EVERY)) => {}
                }
            }
        })
    }
}

super::worker::worker_handle!(
    /// A background pruner; stops when [`RetentionWorker::stop`] is called,
    /// when dropped, or when the runtime shuts down.
    RetentionWorker,
    "Stops the worker and waits for a pruning under way to end."
);
