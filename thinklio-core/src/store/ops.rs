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
