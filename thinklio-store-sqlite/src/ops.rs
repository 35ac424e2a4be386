//! `OpsStore` on SQLite: the backlog, and pruning.

use async_trait::async_trait;
use rusqlite::named_params;
use thinklio_core::StoreResult;
use thinklio_core::store::retention::{self, PruneReport, Pruning};
use thinklio_core::store::{Backlog, OpsStore};

use crate::SqliteStore;
use crate::rows::backend;

#[async_trait]
impl OpsStore for SqliteStore {
    async fn backlog(&self) -> StoreResult<Backlog> {
        self.conn
            .call(|c| {
                c.prepare_cached(thinklio_core::store::rows::BACKLOG)
                    .map_err(backend)?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .map_err(backend)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(backend)
            })
            .await
            .map(thinklio_core::store::rows::backlog)
    }

    /// Each batch is one call on the connection's thread, so the runtime's
    /// writes interleave with the batches and wait for one at most.
    async fn prune(&self, pruning: Pruning) -> StoreResult<PruneReport> {
        let mut report = PruneReport::default();
        let finished = pruning.finished_before.as_millis();
        let usage = pruning.usage_before.as_millis();
        let batch = i64::from(pruning.batch);
        let (batch_end, mark, steps) = (
            retention::batch_end(),
            retention::mark(),
            retention::steps(),
        );
        let mut after = 0_i64;
        loop {
            let (batch_end, mark, steps) = (batch_end.clone(), mark.clone(), steps.clone());
            let now = self.clock.now().as_millis();
            let done = self
                .conn
                .call(move |c| {
                    let tx = c.savepoint().map_err(backend)?;
                    let through = next_batch(&tx, &batch_end, finished, batch, after)?;
                    let Some(through) = through else {
                        return Ok(None);
                    };
                    let marked = tx
                        .prepare_cached(&mark)
                        .map_err(backend)?
                        .execute(named_params! {"$1": finished, "$2": after, "$3": through})
                        .map_err(backend)?;
                    let transitions = tx.execute(retention::TRANSITIONS, []).map_err(backend)?;
                    let steps = tx.execute(&steps, []).map_err(backend)?;
                    tx.execute(retention::UNMARK, named_params! {"$1": now})
                        .map_err(backend)?;
                    tx.commit().map_err(backend)?;
                    Ok(Some((through, marked, transitions, steps)))
                })
                .await?;
            let Some((through, marked, transitions, steps)) = done else {
                break;
            };
            after = through;
            report.interactions += marked as u64;
            report.transitions += transitions as u64;
            report.steps += steps as u64;
        }
        let mut after = 0_i64;
        loop {
            let done = self
                .conn
                .call(move |c| {
                    let tx = c.savepoint().map_err(backend)?;
                    let through = next_batch(&tx, retention::EVENTS_END, finished, batch, after)?;
                    let Some(through) = through else {
                        return Ok(None);
                    };
                    let n = tx
                        .prepare_cached(retention::EVENTS)
                        .map_err(backend)?
                        .execute(named_params! {"$1": finished, "$2": after, "$3": through})
                        .map_err(backend)?;
                    tx.commit().map_err(backend)?;
                    Ok(Some((through, n)))
                })
                .await?;
            let Some((through, n)) = done else {
                break;
            };
            after = through;
            report.events += n as u64;
        }
        let (replies, tasks) = self
            .conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let replies = tx
                    .execute(retention::REPLIES, named_params! {"$1": finished})
                    .map_err(backend)?;
                let tasks = tx
                    .execute(retention::TASKS, named_params! {"$1": finished})
                    .map_err(backend)?;
                tx.commit().map_err(backend)?;
                Ok((replies, tasks))
            })
            .await?;
        report.replies += replies as u64;
        report.tasks += tasks as u64;
        let mut after = 0_i64;
        loop {
            let done = self
                .conn
                .call(move |c| {
                    let tx = c.savepoint().map_err(backend)?;
                    let bound = next_batch(&tx, retention::USAGE_BOUND, usage, batch, after)?;
                    let Some(bound) = bound else {
                        return Ok(None);
                    };
                    let params = named_params! {"$1": usage, "$2": bound, "$3": after};
                    let rollups = tx
                        .execute(retention::USAGE_ROLLUP, params)
                        .map_err(backend)?;
                    let rolled = tx
                        .execute(retention::USAGE_ROLLED, params)
                        .map_err(backend)?;
                    tx.commit().map_err(backend)?;
                    Ok(Some((bound, rolled, rollups)))
                })
                .await?;
            let Some((bound, rolled, rollups)) = done else {
                break;
            };
            after = bound;
            report.usage_rolled_up += rolled as u64;
            report.usage_rollups += rollups as u64;
        }
        Ok(report)
    }
}

/// Where the next batch ends, as one of the retention's `*_END` or
/// `USAGE_BOUND` queries says (`$1` before, `$2` batch size, `$3` where the
/// last batch ended); `None` when nothing is left.
fn next_batch(
    c: &rusqlite::Connection,
    sql: &str,
    before: i64,
    batch: i64,
    after: i64,
) -> StoreResult<Option<i64>> {
    c.prepare_cached(sql)
        .map_err(backend)?
        .query_row(
            named_params! {"$1": before, "$2": batch, "$3": after},
            |r| r.get(0),
        )
        .map_err(backend)
}
