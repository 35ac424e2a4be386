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
        let (mark, steps) = (retention::mark(), retention::steps());
        let clock = std::sync::Arc::clone(&self.clock);
        let turns = self
            .batches(
                retention::batch_end(),
                finished,
                batch,
                move |tx, after, through| {
                    let marked = tx
                        .prepare_cached(&mark)
                        .map_err(backend)?
                        .execute(named_params! {"$1": finished, "$2": after, "$3": through})
                        .map_err(backend)?;
                    let transitions = tx.execute(retention::TRANSITIONS, []).map_err(backend)?;
                    let steps = tx.execute(&steps, []).map_err(backend)?;
                    let now = clock.now().as_millis();
                    tx.execute(retention::UNMARK, named_params! {"$1": now})
                        .map_err(backend)?;
                    Ok((marked, transitions, steps))
                },
            )
            .await?;
        for (marked, transitions, steps) in turns {
            report.interactions += marked as u64;
            report.transitions += transitions as u64;
            report.steps += steps as u64;
        }
        let events = self
            .batches(
                retention::EVENTS_END.to_owned(),
                finished,
                batch,
                move |tx, after, through| {
                    tx.prepare_cached(retention::EVENTS)
                        .map_err(backend)?
                        .execute(named_params! {"$1": finished, "$2": after, "$3": through})
                        .map_err(backend)
                },
            )
            .await?;
        report.events += events.iter().sum::<usize>() as u64;
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
        let rolled = self
            .batches(
                retention::USAGE_BOUND.to_owned(),
                usage,
                batch,
                move |tx, after, bound| {
                    let params = named_params! {"$1": usage, "$2": bound, "$3": after};
                    let rollups = tx
                        .execute(retention::USAGE_ROLLUP, params)
                        .map_err(backend)?;
                    let rolled = tx
                        .execute(retention::USAGE_ROLLED, params)
                        .map_err(backend)?;
                    Ok((rolled, rollups))
                },
            )
            .await?;
        for (rolled, rollups) in rolled {
            report.usage_rolled_up += rolled as u64;
            report.usage_rollups += rollups as u64;
        }
        Ok(report)
    }
}

impl SqliteStore {
    /// Walks the batches a cursor query marks out (`end`: one of the
    /// retention's `*_END` or `USAGE_BOUND` queries, `$1` before, `$2`
    /// batch size, `$3` where the last batch ended), running `work` on each
    /// (with where the last ended and where this one ends) in a transaction
    /// of its own, until none is left.
    async fn batches<T, W>(
        &self,
        end: String,
        before: i64,
        batch: i64,
        work: W,
    ) -> StoreResult<Vec<T>>
    where
        T: Send + 'static,
        W: Fn(&rusqlite::Connection, i64, i64) -> StoreResult<T> + Clone + Send + 'static,
    {
        let mut done = Vec::new();
        let mut after = 0_i64;
        loop {
            let (end, work) = (end.clone(), work.clone());
            let next = self
                .conn
                .call(move |c| {
                    let tx = c.savepoint().map_err(backend)?;
                    let Some(through) = next_batch(&tx, &end, before, batch, after)? else {
                        return Ok(None);
                    };
                    let result = work(&tx, after, through)?;
                    tx.commit().map_err(backend)?;
                    Ok(Some((through, result)))
                })
                .await?;
            let Some((through, result)) = next else {
                return Ok(done);
            };
            after = through;
            done.push(result);
        }
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
