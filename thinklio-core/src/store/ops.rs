//! What operations ask of a store: its backlog, in one read, and pruning.

use async_trait::async_trait;

use super::StoreResult;
use super::retention::{PruneReport, Pruning};

/// What an operator watches of a store: work waiting and work stuck, read
/// at once (each count is exact when read; the metrics of
/// [`Runtime::sample_backlog`](crate::Runtime::sample_backlog) come from it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backlog {
    /// Queued tasks by state (`pending`, `running`, `dead`, …).
    pub tasks: std::collections::BTreeMap<String, u64>,
    /// Jobs by state.
    pub jobs: std::collections::BTreeMap<String, u64>,
    /// Replies in the outbox not yet delivered.
    pub undelivered_replies: u64,
    /// Job notices not yet delivered.
    pub undelivered_notices: u64,
    /// Calls waiting for a person's decision.
    pub waiting_approvals: u64,
}

/// Round trips to a store and transactions it committed, counted since it
/// opened: what the benchmarks divide by the interactions they ran, so a
/// change to the store's path can be judged by it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreCounts {
    /// Calls that went to the database and back (SQLite: jobs run on the
    /// connection's thread; PostgreSQL: statements the server ran).
    pub round_trips: u64,
    /// Transactions committed.
    pub commits: u64,
}

impl StoreCounts {
    /// Counts of a store.
    pub fn new(round_trips: u64, commits: u64) -> Self {
        Self {
            round_trips,
            commits,
        }
    }

    /// What was counted between `earlier` and `self`.
    pub fn since(self, earlier: StoreCounts) -> StoreCounts {
        StoreCounts::new(
            self.round_trips.saturating_sub(earlier.round_trips),
            self.commits.saturating_sub(earlier.commits),
        )
    }
}

/// What operations read of a store.
#[async_trait]
pub trait OpsStore: Send + Sync {
    /// The store's [`Backlog`], in one read ([`BACKLOG`](super::rows::BACKLOG)).
    async fn backlog(&self) -> StoreResult<Backlog>;

    /// Prunes finished work as [`retention`](super::retention) describes,
    /// batch after batch until nothing is left to prune; never unfinished
    /// work, never what a usage report reads.
    async fn prune(&self, pruning: Pruning) -> StoreResult<PruneReport>;
}
