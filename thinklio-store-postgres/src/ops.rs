//! `OpsStore` on PostgreSQL: the backlog, and pruning.

use async_trait::async_trait;
use thinklio_core::StoreResult;
use thinklio_core::store::retention::{self, PruneReport, Pruning};
use thinklio_core::store::{Backlog, OpsStore, StoreCounts};

use crate::PostgresStore;
use crate::rows::{backend, execute, query};

/// The advisory lock a pruning batch holds, so that two workers pruning at
/// once take turns (rolling the same usage up twice would count it twice).
const PRUNE_LOCK: i64 = 0x7072_756e_6500;

#[async_trait]
impl OpsStore for PostgresStore {
    async fn backlog(&self) -> StoreResult<Backlog> {
        let client = self.client().await?;
        let rows = query(&client, thinklio_core::store::rows::BACKLOG, &[]).await?;
        let counts = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<_, String>(0).map_err(backend)?,
                    r.try_get::<_, String>(1).map_err(backend)?,
                    r.try_get::<_, i64>(2).map_err(backend)?,
                ))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(thinklio_core::store::rows::backlog(counts))
    }

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
        let mut client = self.client().await?;
        let mut after = 0_i64;
        loop {
            let tx = client.transaction().await.map_err(backend)?;
            execute(&tx, "SELECT pg_advisory_xact_lock($1)", &[&PRUNE_LOCK]).await?;
            let Some(through) = max(&tx, &batch_end, &[&finished, &batch, &after]).await? else {
                break;
            };
            report.interactions += execute(&tx, &mark, &[&finished, &after, &through]).await?;
            report.transitions += execute(&tx, retention::TRANSITIONS, &[]).await?;
            report.steps += execute(&tx, &steps, &[]).await?;
            let now = self.clock.now().as_millis();
            execute(&tx, retention::UNMARK, &[&now]).await?;
            tx.commit().await.map_err(backend)?;
            after = through;
        }
        let mut after = 0_i64;
        loop {
            let tx = client.transaction().await.map_err(backend)?;
            let Some(through) =
                max(&tx, retention::EVENTS_END, &[&finished, &batch, &after]).await?
            else {
                break;
            };
            report.events +=
                execute(&tx, retention::EVENTS, &[&finished, &after, &through]).await?;
            tx.commit().await.map_err(backend)?;
            after = through;
        }
        let tx = client.transaction().await.map_err(backend)?;
        report.replies += execute(&tx, retention::REPLIES, &[&finished]).await?;
        report.tasks += execute(&tx, retention::TASKS, &[&finished]).await?;
        tx.commit().await.map_err(backend)?;
        let mut after = 0_i64;
        loop {
            let tx = client.transaction().await.map_err(backend)?;
            execute(&tx, "SELECT pg_advisory_xact_lock($1)", &[&PRUNE_LOCK]).await?;
            let Some(bound) = max(&tx, retention::USAGE_BOUND, &[&usage, &batch, &after]).await?
            else {
                break;
            };
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&usage, &bound, &after];
            report.usage_rollups += execute(&tx, retention::USAGE_ROLLUP, &params).await?;
            report.usage_rolled_up += execute(&tx, retention::USAGE_ROLLED, &params).await?;
            tx.commit().await.map_err(backend)?;
            after = bound;
        }
        Ok(report)
    }
}

/// The one value (a `MAX`, NULL when nothing matched) a query reads.
async fn max(
    tx: &impl deadpool_postgres::GenericClient,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> StoreResult<Option<i64>> {
    match query(tx, sql, params).await?.first() {
        Some(row) => row.try_get(0).map_err(backend),
        None => Ok(None),
    }
}

impl PostgresStore {
    /// Bytes Thinklio's tables take on disk, indexes and TOAST included:
    /// the tables of the schema the store works in (its `search_path`'s
    /// first), as an operator sizes what retention prunes.
    pub async fn table_bytes(&self) -> StoreResult<u64> {
        let client = self.client().await?;
        let bytes = max(
            &client,
            "SELECT CAST(SUM(pg_total_relation_size(c.oid)) AS BIGINT) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relkind = 'r'",
            &[],
        )
        .await?;
        Ok(u64::try_from(bytes.unwrap_or(0)).unwrap_or(0))
    }

    /// Runs `VACUUM` on Thinklio's tables (`VACUUM FULL` when `full`: it
    /// gives the space pruning freed back to the file system, but locks
    /// each table while it rewrites it). Autovacuum makes the freed space
    /// reusable without it.
    pub async fn vacuum(&self, full: bool) -> StoreResult<()> {
        let client = self.client().await?;
        let sql = if full { "VACUUM FULL" } else { "VACUUM" };
        let tables = client
            .query(
                "SELECT quote_ident(c.relname) FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = current_schema() AND c.relkind = 'r'",
                &[],
            )
            .await
            .map_err(backend)?;
        for table in tables {
            let name: String = table.try_get(0).map_err(backend)?;
            client
                .batch_execute(&format!("{sql} {name}"))
                .await
                .map_err(backend)?;
        }
        Ok(())
    }
}

impl PostgresStore {
    /// What the server counted for this store's database: statements run
    /// (each a round trip; from `pg_stat_statements`, which the cluster
    /// must preload, as `scripts/postgres.sh` does) and transactions
    /// committed (`pg_stat_database`). Every client of the database is
    /// counted but this count's own statements (those that read the
    /// server's statistics), and the server publishes other sessions'
    /// figures within about a second.
    pub async fn server_counts(&self) -> StoreResult<StoreCounts> {
        let client = self.client().await?;
        client
            .batch_execute("SELECT pg_stat_clear_snapshot()")
            .await
            .map_err(backend)?;
        let row = client
            .query_one(
                "SELECT \
                   (SELECT CAST(COALESCE(SUM(calls), 0) AS BIGINT) FROM pg_stat_statements \
                    WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                    AND query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE '%pg_stat_clear_snapshot%'), \
                   (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database())",
                &[],
            )
            .await
            .map_err(backend)?;
        let count = |i: usize| -> StoreResult<u64> {
            let n: Option<i64> = row.try_get(i).map_err(backend)?;
            Ok(u64::try_from(n.unwrap_or(0)).unwrap_or(0))
        };
        Ok(StoreCounts::new(count(0)?, count(1)?))
    }
}
