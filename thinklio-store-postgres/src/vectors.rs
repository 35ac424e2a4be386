//! PostgreSQL's approximate vector index: pgvector's HNSW indexes (one per
//! indexed embedding size, migration 3), rebuilt on request, and the
//! near-duplicate check of a large owner's writes through them.

use deadpool_postgres::GenericClient;
use pgvector::Vector;
use thinklio_core::StoreResult;
use thinklio_core::knowledge::{APPROXIMATE_ABOVE, Fact, NEAR_DUPLICATE, VectorIndex};

use crate::PostgresStore;
use crate::knowledge::{CURRENT, INDEXED_DIMENSIONS, ann_settings, query_facts};
use crate::rows::{FACT_COLUMNS, backend};

impl PostgresStore {
    /// Rebuilds each HNSW index that holds vectors (`REINDEX
    /// CONCURRENTLY`: built aside and swapped in) and reports it.
    pub(crate) async fn rebuild_vector_indexes(&self) -> StoreResult<Vec<VectorIndex>> {
        let client = self.client().await?;
        let mut built = Vec::new();
        for dims in INDEXED_DIMENSIONS {
            let name = format!("fact_vectors_hnsw_{dims}");
            let vectors: i64 = client
                .query_one(
                    "SELECT count(*)::BIGINT FROM fact_vectors WHERE vector_dims(embedding) = $1",
                    &[&i32::try_from(dims).unwrap_or(i32::MAX)],
                )
                .await
                .map_err(backend)?
                .get(0);
            if vectors == 0 {
                continue;
            }
            let started = std::time::Instant::now();
            // Built aside and swapped in: searches and writes go on meanwhile.
            client
                .batch_execute(&format!("REINDEX INDEX CONCURRENTLY {name}"))
                .await
                .map_err(backend)?;
            let took = started.elapsed();
            let bytes: i64 = client
                .query_one("SELECT pg_relation_size(to_regclass($1))::BIGINT", &[&name])
                .await
                .map_err(backend)?
                .get(0);
            built.push(VectorIndex::new(
                dims,
                u64::try_from(vectors).unwrap_or(0),
                None,
                u64::try_from(bytes).unwrap_or(0),
                took,
            ));
        }
        Ok(built)
    }
}

/// Whether a write's near-duplicate check should go through the HNSW index:
/// its embedding's size has one and its owner holds more than
/// [`APPROXIMATE_ABOVE`] facts (counted no further), so that importing a
/// large layer is not quadratic.
pub(crate) async fn large_owner(
    tx: &impl GenericClient,
    account: &str,
    owner_key: &str,
    embedding: &[f32],
) -> StoreResult<bool> {
    if !INDEXED_DIMENSIONS.contains(&embedding.len()) {
        return Ok(false);
    }
    let owned: i64 = tx
        .query_one(
            "SELECT count(*)::BIGINT FROM (SELECT 1 FROM facts WHERE account_id = $1 \
             AND owner_key = $2 LIMIT $3) o",
            &[&account, &owner_key, &(APPROXIMATE_ABOVE + 1)],
        )
        .await
        .map_err(backend)?
        .get(0);
    Ok(owned > APPROXIMATE_ABOVE)
}

/// The owner's nearest current fact of the slot through the HNSW index,
/// kept when it is a near duplicate of `embedding`.
pub(crate) async fn near_duplicate_indexed(
    tx: &impl GenericClient,
    account: &str,
    owner_key: &str,
    slot: &Option<String>,
    embedding: &[f32],
) -> StoreResult<Vec<Fact>> {
    let n = embedding.len();
    tx.batch_execute(&ann_settings()).await.map_err(backend)?;
    let found = query_facts(
        tx,
        &format!(
            "SELECT {FACT_COLUMNS} FROM ( \
               SELECT f.n AS n, (v.embedding::vector({n}) <=> $4::vector({n})) AS distance \
               FROM fact_vectors v JOIN facts f ON f.n = v.n \
               WHERE vector_dims(v.embedding) = {n} AND f.account_id = $1 AND f.owner_key = $2 \
               AND f.slot IS NOT DISTINCT FROM $3 AND {CURRENT} \
               ORDER BY v.embedding::vector({n}) <=> $4::vector({n}) LIMIT 1 \
             ) d JOIN facts f ON f.n = d.n WHERE d.distance <= $5"
        ),
        &[
            &account,
            &owner_key,
            slot,
            &Vector::from(embedding.to_vec()),
            &(1.0 - f64::from(NEAR_DUPLICATE)),
        ],
    )
    .await?;
    tx.batch_execute("SET LOCAL enable_sort = on")
        .await
        .map_err(backend)?;
    Ok(found)
}
