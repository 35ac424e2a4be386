//! `KnowledgeStore` on PostgreSQL: a generated `tsvector` (GIN index,
//! `ts_rank`) for keywords and pgvector embeddings compared exactly.
//!
//! Vector search is exact over the visible facts, unless a principal sees
//! more than `APPROXIMATE_ABOVE` of them (and the query is not `exact`) and the embedding's size has an HNSW
//! index: then the index is scanned iteratively (pgvector 0.8), filtering
//! by visibility as it goes.
//!
//! Every query over facts carries the visibility filter in its `WHERE`
//! clause (`account_id = $1 AND owner_key = ANY($2)`, on an index), so what
//! a principal may not see is never read, counted or ranked. Recording a
//! fact holds an advisory lock on its slot, so two processes reconciling the
//! same slot at once take turns.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use pgvector::Vector;
use serde_json::json;
use thinklio_core::knowledge::APPROXIMATE_ABOVE;
use thinklio_core::knowledge::{
    Candidate, Candidates, Cardinality, Curation, Fact, FactActor, FactChange, FactChangeKind,
    FactOwner, FactQuery, FactWrite, KnowledgeStore, Lookup, NEAR_DUPLICATE, NewFact,
    Reconciliation, VectorIndex, Visibility, keywords, normalise, wrongly_superseded,
};
use thinklio_core::{
    AccountId, AccountPolicy, Clock, FactId, StoreError, StoreResult, SystemClock, Timestamp,
};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::PostgresStore;
use crate::rows::{self, FACT_COLUMNS, backend, execute, fact, query, query_opt};

pub(crate) const CURRENT: &str = "f.invalid_at IS NULL AND f.expired_at IS NULL";

/// The embedding sizes with an HNSW index (migration 3).
pub(crate) const INDEXED_DIMENSIONS: [usize; 3] = [384, 768, 1536];

/// How many candidates an HNSW scan keeps (pgvector's `ef_search`): with
/// the indexes of migration 16, recall@10 of 0.97 over 100,000 MiniLM
/// vectors (0.96 at 200, 0.98 at 400, each step costing about a
/// millisecond more per search).
const EF_SEARCH: usize = 300;

fn candidate(row: &Row) -> StoreResult<Candidate> {
    let embedding: Option<Vector> = rows::get(row, "embedding")?;
    let distance: Option<f64> = row.try_get("distance").ok().flatten();
    Ok(Candidate {
        fact: fact(row)?,
        embedding: embedding.map(|v| v.to_vec()).unwrap_or_default(),
        similarity: distance.map(|d| (1.0 - d) as f32),
    })
}

async fn candidates(
    tx: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<Vec<Candidate>> {
    query(tx, sql, params)
        .await?
        .iter()
        .map(candidate)
        .collect()
}

/// The keyword query matching any of `terms`, for `to_tsquery`: the terms
/// are letters and digits only (see `keywords`), so nothing in them is
/// query syntax.
fn ts_query(terms: &[String]) -> Option<String> {
    let words: Vec<String> = terms
        .iter()
        .map(|t| {
            t.chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
        })
        .filter(|t| !t.is_empty())
        .collect();
    (!words.is_empty()).then(|| words.join(" | "))
}

/// The keywords of the question that tell the visible facts apart (as on
/// SQLite: a term in more than a quarter of the visible facts is dropped).
async fn selective_terms(
    tx: &impl GenericClient,
    query_: &FactQuery,
    current: &str,
    visible_count: i64,
) -> StoreResult<Vec<String>> {
    let terms = keywords(&query_.text);
    let cut = (visible_count / 4).max(3);
    let account = query_.visibility.account.to_string();
    let owners = query_.visibility.owner_keys();
    let sql = format!(
        "SELECT count(*)::BIGINT AS n FROM (SELECT 1 FROM facts f \
         WHERE f.tsv @@ to_tsquery('english', $1) AND f.account_id = $3 AND f.owner_key = ANY($4){current} \
         LIMIT $2) m"
    );
    let mut kept = Vec::with_capacity(terms.len());
    for term in terms {
        let Some(q) = ts_query(std::slice::from_ref(&term)) else {
            continue;
        };
        let row = query_opt(tx, &sql, &[&q, &(cut + 1), &account, &owners])
            .await?
            .ok_or_else(|| StoreError::Corrupt("no count".into()))?;
        let n: i64 = rows::get(&row, "n")?;
        if n > 0 && n <= cut {
            kept.push(term);
        }
    }
    Ok(kept)
}

async fn history(
    tx: &impl GenericClient,
    id: FactId,
    kind: &str,
    actor: &FactActor,
    at: Timestamp,
    detail: serde_json::Value,
) -> StoreResult<()> {
    execute(
        tx,
        "INSERT INTO fact_history (fact_id, kind, actor, at, detail) VALUES ($1, $2, $3, $4, $5)",
        &[
            &id.to_string(),
            &kind,
            &actor.as_text(),
            &at.as_millis(),
            &detail.to_string(),
        ],
    )
    .await?;
    Ok(())
}

async fn load(tx: &impl GenericClient, id: FactId) -> StoreResult<Fact> {
    let row = query_opt(
        tx,
        &format!("SELECT {FACT_COLUMNS} FROM facts f WHERE f.id = $1"),
        &[&id.to_string()],
    )
    .await?
    .ok_or_else(|| StoreError::not_found("fact", id))?;
    fact(&row)
}

pub(crate) async fn query_facts(
    tx: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<Vec<Fact>> {
    query(tx, sql, params).await?.iter().map(fact).collect()
}

/// After schema version 11 added `facts.cardinality`: resolves each fact's
/// cardinality with its account's declarations (core's
/// [`Cardinality::resolve`]) and makes current again the many-valued facts
/// the older store had superseded ([`wrongly_superseded`]), each with a
/// `restore` history entry. Nothing is deleted. Returns how many were restored.
pub(crate) async fn migrate_cardinality(tx: &impl GenericClient) -> StoreResult<usize> {
    let mut policies = std::collections::HashMap::new();
    for row in query(tx, "SELECT id, policy FROM accounts", &[]).await? {
        let id: String = rows::get(&row, "id")?;
        let policy: String = rows::get(&row, "policy")?;
        let policy: AccountPolicy = serde_json::from_str(&policy)
            .map_err(|e| StoreError::Corrupt(format!("policy of account {id}: {e}")))?;
        policies.insert(id, policy);
    }
    let none = AccountPolicy::default();
    let mut facts = query_facts(tx, &format!("SELECT {FACT_COLUMNS} FROM facts f"), &[]).await?;
    let mut single = Vec::new();
    for f in &mut facts {
        let policy = policies.get(&f.account.to_string()).unwrap_or(&none);
        f.cardinality = Cardinality::resolve(&f.predicate, &policy.cardinality, None);
        if f.predicate.contains(['_', '-']) {
            // Slots now read `lives_in` as `lives in`.
            execute(
                tx,
                "UPDATE facts SET slot = $2 WHERE id = $1",
                &[&f.id.to_string(), &f.slot()],
            )
            .await?;
        }
        if f.cardinality == Cardinality::Single {
            single.push(f.id.to_string());
        }
    }
    execute(
        tx,
        "UPDATE facts SET cardinality = 'single' WHERE id = ANY($1)",
        &[&single],
    )
    .await?;
    let restored = wrongly_superseded(&facts);
    let ids: Vec<String> = restored.iter().map(ToString::to_string).collect();
    execute(
        tx,
        "UPDATE facts SET invalid_at = NULL, expired_at = NULL, superseded_by = NULL \
         WHERE id = ANY($1)",
        &[&ids],
    )
    .await?;
    let now = SystemClock.now();
    for id in &restored {
        history(
            tx,
            *id,
            FactChangeKind::Restore.as_str(),
            &FactActor::System,
            now,
            json!({ "reason": "many_valued" }),
        )
        .await?;
    }
    Ok(restored.len())
}

async fn record(tx: &impl GenericClient, new: NewFact, now: Timestamp) -> StoreResult<FactWrite> {
    new.check()?;
    let account = new.account.to_string();
    let owner_key = new.owner.key();
    let slot = new.slot();
    let text = new.text();
    let norm_text = normalise(&text);
    let valid_at = new.valid_at.unwrap_or(now);
    // Writers of one slot (or one free text) take turns.
    let lock_key = format!(
        "fact:{account}:{owner_key}:{}",
        slot.as_deref().unwrap_or(&norm_text)
    );
    execute(
        tx,
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&lock_key],
    )
    .await?;
    if let Some(named) = new.replaces {
        // Two updates of one fact take turns too.
        execute(
            tx,
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&format!("fact:{named}")],
        )
        .await?;
    }
    let cardinality = new.cardinality();
    let existing = match new.lookup() {
        Lookup::Slot(slot) => query_facts(
            tx,
            &format!(
                "SELECT {FACT_COLUMNS} FROM facts f WHERE f.account_id = $1 AND f.owner_key = $2 \
                     AND f.slot = $3 AND {CURRENT} ORDER BY f.n"
            ),
            &[&account, &owner_key, &slot],
        )
        .await?,
        Lookup::Duplicates { slot, norm_text } => {
            let mut found = query_facts(
                tx,
                &format!(
                    "SELECT {FACT_COLUMNS} FROM facts f WHERE f.account_id = $1 AND f.owner_key = $2 \
                     AND f.slot IS NOT DISTINCT FROM $3 AND f.norm_text = $4 AND {CURRENT} \
                     ORDER BY f.n"
                ),
                &[&account, &owner_key, &slot, &norm_text],
            )
            .await?;
            if found.is_empty()
                && crate::vectors::large_owner(tx, &account, &owner_key, &new.embedding).await?
            {
                found = crate::vectors::near_duplicate_indexed(
                    tx,
                    &account,
                    &owner_key,
                    &slot,
                    &new.embedding,
                )
                .await?;
            } else if found.is_empty() && !new.embedding.is_empty() {
                let dims = i32::try_from(new.embedding.len()).unwrap_or(i32::MAX);
                found = query_facts(
                    tx,
                    &format!(
                        "SELECT {FACT_COLUMNS} FROM facts f JOIN fact_vectors v ON v.n = f.n \
                         WHERE f.account_id = $1 AND f.owner_key = $2 \
                         AND f.slot IS NOT DISTINCT FROM $3 AND {CURRENT} \
                         AND vector_dims(v.embedding) = $4 AND (v.embedding <=> $5) <= $6 \
                         ORDER BY f.n LIMIT 1"
                    ),
                    &[
                        &account,
                        &owner_key,
                        &slot,
                        &dims,
                        &Vector::from(new.embedding.clone()),
                        &(1.0 - f64::from(NEAR_DUPLICATE)),
                    ],
                )
                .await?;
            }
            found
        }
    };
    let named = match new.replaces {
        Some(id) => query_facts(
            tx,
            &format!(
                "SELECT {FACT_COLUMNS} FROM facts f WHERE f.id = $1 AND f.account_id = $2 \
                 AND f.owner_key = $3 AND {CURRENT}"
            ),
            &[&id.to_string(), &account, &owner_key],
        )
        .await?
        .pop(),
        None => None,
    };
    let (invalid_at, supersedes) = match new.reconcile(&existing, named.as_ref(), valid_at)? {
        Reconciliation::Duplicate(same) => return Ok(FactWrite::Duplicate(*same)),
        Reconciliation::Insert {
            invalid_at,
            supersedes,
        } => (invalid_at, supersedes),
    };
    let id = FactId::new();
    let provenance =
        serde_json::to_string(&new.provenance).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let row = query_opt(
        tx,
        "INSERT INTO facts (id, account_id, owner_key, layer, owner_id, subject, predicate, value, \
         slot, text, norm_text, confidence, provenance, locked, valid_at, invalid_at, created_at, \
         cardinality) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
         RETURNING n",
        &[
            &id.to_string(),
            &account,
            &owner_key,
            &new.owner.layer().as_str(),
            &new.owner.id(),
            &new.subject,
            &new.predicate,
            &new.value,
            &slot,
            &text,
            &norm_text,
            &f64::from(new.confidence),
            &provenance,
            &new.locked,
            &valid_at.as_millis(),
            &invalid_at.map(Timestamp::as_millis),
            &now.as_millis(),
            &cardinality.as_str(),
        ],
    )
    .await?
    .ok_or_else(|| StoreError::Corrupt("no fact number returned".into()))?;
    let n: i64 = rows::get(&row, "n")?;
    if !new.embedding.is_empty() {
        execute(
            tx,
            "INSERT INTO fact_vectors (n, embedding) VALUES ($1, $2)",
            &[&n, &Vector::from(new.embedding.clone())],
        )
        .await?;
    }
    history(
        tx,
        id,
        "add",
        &new.actor,
        now,
        json!({ "provenance": new.provenance, "layer": new.owner.layer() }),
    )
    .await?;
    if invalid_at.is_some() {
        return Ok(FactWrite::Historical(load(tx, id).await?));
    }
    let mut replaced = Vec::new();
    for old in supersedes {
        execute(
            tx,
            "UPDATE facts SET invalid_at = $2, expired_at = $3, superseded_by = $4 WHERE id = $1",
            &[
                &old.to_string(),
                &valid_at.as_millis(),
                &now.as_millis(),
                &id.to_string(),
            ],
        )
        .await?;
        history(
            tx,
            old,
            "supersede",
            &new.actor,
            now,
            json!({ "superseded_by": id }),
        )
        .await?;
        replaced.push(load(tx, old).await?);
    }
    let fact = load(tx, id).await?;
    Ok(if replaced.is_empty() {
        FactWrite::Added(fact)
    } else {
        FactWrite::Superseded { fact, replaced }
    })
}

/// Deletes the facts of one owner with their vectors, leaving a `delete`
/// entry each. Shared with the privacy call.
pub(crate) async fn delete_owned(
    tx: &impl GenericClient,
    account: AccountId,
    owner: &FactOwner,
    now: Timestamp,
) -> StoreResult<u64> {
    let doomed = query(
        tx,
        "DELETE FROM facts WHERE account_id = $1 AND owner_key = $2 RETURNING id",
        &[&account.to_string(), &owner.key()],
    )
    .await?;
    for row in &doomed {
        let id: FactId = rows::parse(row, "id")?;
        history(tx, id, "delete", &FactActor::System, now, json!({})).await?;
    }
    Ok(u64::try_from(doomed.len()).unwrap_or(0))
}

/// How many facts of `account`'s `owners` a search sees (`current` limits
/// it to current facts): what chooses between exact and indexed search.
async fn visible_facts(
    tx: &impl GenericClient,
    account: &str,
    owners: &[String],
    current: &str,
) -> StoreResult<i64> {
    let count = query_opt(
        tx,
        &format!(
            "SELECT count(*)::BIGINT AS n FROM facts f WHERE f.account_id = $1 AND f.owner_key = ANY($2){current}"
        ),
        &[&account, &owners],
    )
    .await?
    .ok_or_else(|| StoreError::Corrupt("no count".into()))?;
    rows::get(&count, "n")
}

/// The settings the index scan runs under: iterative, so the visibility
/// filter still yields enough rows, and without sorting, or the planner
/// (which cannot tell how many rows the filter keeps) reads them all and
/// sorts by distance instead of walking the index.
pub(crate) fn ann_settings() -> String {
    format!(
        "SET LOCAL hnsw.iterative_scan = relaxed_order; SET LOCAL hnsw.ef_search = {EF_SEARCH}; \
         SET LOCAL enable_sort = off"
    )
}

/// The vector search on the HNSW index of `n` dimensions: `$1` the query
/// vector, `$2` the limit, `$3` the account, `$4` the visible owners.
fn ann_sql(n: usize, current: &str) -> String {
    format!(
        "SELECT {FACT_COLUMNS}, v.embedding, (v.embedding::vector({n}) <=> $1::vector({n})) AS distance \
         FROM fact_vectors v JOIN facts f ON f.n = v.n \
         WHERE vector_dims(v.embedding) = {n} AND f.account_id = $3 AND f.owner_key = ANY($4){current} \
         ORDER BY v.embedding::vector({n}) <=> $1::vector({n}) LIMIT $2"
    )
}

impl PostgresStore {
    /// The server's plan (`EXPLAIN`) of the vector search `query` runs on
    /// the HNSW index, when its principal sees enough facts for that; `None`
    /// when the search is exact over the visible facts. For operators who
    /// want to see that the index is used.
    pub async fn explain_indexed_search(&self, search: &FactQuery) -> StoreResult<Option<String>> {
        let Some(e) = search.embedding.as_ref().filter(|e| !e.is_empty()) else {
            return Ok(None);
        };
        if !INDEXED_DIMENSIONS.contains(&e.len()) {
            return Ok(None);
        }
        let current = if search.include_history {
            String::new()
        } else {
            format!(" AND {CURRENT}")
        };
        let account = search.visibility.account.to_string();
        let owners = search.visibility.owner_keys();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let visible = visible_facts(&tx, &account, &owners, &current).await?;
        if visible <= APPROXIMATE_ABOVE || search.exact {
            return Ok(None);
        }
        tx.batch_execute(&ann_settings()).await.map_err(backend)?;
        let limit = i64::try_from(search.candidates.max(search.k)).unwrap_or(i64::MAX);
        let plan = query(
            &tx,
            &format!("EXPLAIN {}", ann_sql(e.len(), &current)),
            &[&Vector::from(e.clone()), &limit, &account, &owners],
        )
        .await?
        .iter()
        .map(|r| rows::get::<String>(r, "QUERY PLAN"))
        .collect::<StoreResult<Vec<_>>>()?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(plan.join("\n")))
    }
}

#[async_trait]
impl KnowledgeStore for PostgresStore {
    async fn record_fact(&self, new: NewFact, now: Timestamp) -> StoreResult<FactWrite> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let write = record(&tx, new, now).await?;
        tx.commit().await.map_err(backend)?;
        Ok(write)
    }

    async fn import_facts(
        &self,
        facts: Vec<NewFact>,
        now: Timestamp,
    ) -> StoreResult<Vec<FactWrite>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let mut writes = Vec::with_capacity(facts.len());
        for f in facts {
            writes.push(record(&tx, f, now).await?);
        }
        tx.commit().await.map_err(backend)?;
        Ok(writes)
    }

    async fn fact(&self, id: FactId) -> StoreResult<Fact> {
        let client = self.client().await?;
        load(&client, id).await
    }

    async fn curate_fact(
        &self,
        id: FactId,
        curation: Curation,
        actor: FactActor,
        now: Timestamp,
    ) -> StoreResult<Fact> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let before = load(&tx, id).await?;
        if let Some(conf) = curation.confidence
            && !(0.0..=1.0).contains(&conf)
        {
            return Err(StoreError::Conflict(format!(
                "confidence {conf} is not between 0 and 1"
            )));
        }
        let retract = curation.retract_at.filter(|_| before.is_current());
        execute(
            &tx,
            "UPDATE facts SET locked = COALESCE($2, locked), \
             confidence = COALESCE($3, confidence), \
             invalid_at = COALESCE($4, invalid_at), \
             expired_at = CASE WHEN $4::BIGINT IS NULL THEN expired_at ELSE $5 END \
             WHERE id = $1",
            &[
                &id.to_string(),
                &curation.locked,
                &curation.confidence.map(f64::from),
                &retract.map(Timestamp::as_millis),
                &now.as_millis(),
            ],
        )
        .await?;
        history(
            &tx,
            id,
            "curate",
            &actor,
            now,
            json!({
                "locked": curation.locked,
                "confidence": curation.confidence,
                "retract_at": retract,
            }),
        )
        .await?;
        let fact = load(&tx, id).await?;
        tx.commit().await.map_err(backend)?;
        Ok(fact)
    }

    async fn facts(
        &self,
        visibility: &Visibility,
        include_history: bool,
    ) -> StoreResult<Vec<Fact>> {
        let current = if include_history {
            String::new()
        } else {
            format!(" AND {CURRENT}")
        };
        let client = self.client().await?;
        query(
            &client,
            &format!(
                "SELECT {FACT_COLUMNS} FROM facts f WHERE f.account_id = $1 AND f.owner_key = ANY($2){current} \
                 ORDER BY f.n"
            ),
            &[&visibility.account.to_string(), &visibility.owner_keys()],
        )
        .await?
        .iter()
        .map(fact)
        .collect()
    }

    async fn fact_history(&self, id: FactId) -> StoreResult<Vec<FactChange>> {
        let client = self.client().await?;
        query(
            &client,
            "SELECT kind, actor, at, detail FROM fact_history WHERE fact_id = $1 ORDER BY seq",
            &[&id.to_string()],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(FactChange {
                fact_id: id,
                kind: rows::get::<String>(r, "kind")?.parse()?,
                actor: FactActor::parse(&rows::get::<String>(r, "actor")?)?,
                at: rows::ts(r, "at")?,
                detail: rows::json(r, "detail")?,
            })
        })
        .collect()
    }

    async fn index_vectors(&self) -> StoreResult<Vec<VectorIndex>> {
        self.rebuild_vector_indexes().await
    }

    async fn fact_candidates(&self, query_: &FactQuery) -> StoreResult<Candidates> {
        let limit = i64::try_from(query_.candidates.max(query_.k)).unwrap_or(i64::MAX);
        let current = if query_.include_history {
            String::new()
        } else {
            format!(" AND {CURRENT}")
        };
        let account = query_.visibility.account.to_string();
        let owners = query_.visibility.owner_keys();
        let mut out = Candidates::default();
        let mut client = self.client().await?;
        // Counted before the transaction, which only the index's settings
        // need: nothing visible costs one statement.
        let visible_count = visible_facts(&client, &account, &owners, &current).await?;
        if visible_count == 0 {
            return Ok(out);
        }
        let tx = client.transaction().await.map_err(backend)?;
        if let Some(e) = query_.embedding.as_ref().filter(|e| !e.is_empty())
            && !query_.exact
            && visible_count > APPROXIMATE_ABOVE
            && INDEXED_DIMENSIONS.contains(&e.len())
        {
            // Many visible facts: the HNSW index of this size, scanned
            // iteratively so the visibility filter still yields enough rows.
            // Sorting is ruled out for this query, or the planner, which
            // cannot tell how many rows the filter keeps, reads them all and
            // sorts by distance instead of walking the index.
            let n = e.len();
            tx.batch_execute(&ann_settings()).await.map_err(backend)?;
            let sql = ann_sql(n, &current);
            let mut found = candidates(
                &tx,
                &sql,
                &[&Vector::from(e.clone()), &limit, &account, &owners],
            )
            .await?;
            tx.batch_execute("SET LOCAL enable_sort = on")
                .await
                .map_err(backend)?;
            // A relaxed scan may return rows slightly out of order.
            found.sort_by(|a, b| {
                b.similarity
                    .unwrap_or(f32::MIN)
                    .total_cmp(&a.similarity.unwrap_or(f32::MIN))
            });
            out.vector = found;
            out.approximate = true;
        } else if let Some(e) = query_.embedding.as_ref().filter(|e| !e.is_empty()) {
            let dims = i32::try_from(e.len()).unwrap_or(i32::MAX);
            // The nearest are found on (n, distance) alone; only they are
            // then read in full.
            let sql = format!(
                "SELECT {FACT_COLUMNS}, v.embedding, d.distance FROM ( \
                   SELECT f.n AS n, v.embedding <=> $1 AS distance \
                   FROM facts f JOIN fact_vectors v ON v.n = f.n \
                   WHERE f.account_id = $3 AND f.owner_key = ANY($4){current} \
                   AND vector_dims(v.embedding) = $5 \
                   ORDER BY distance LIMIT $2 \
                 ) d JOIN facts f ON f.n = d.n JOIN fact_vectors v ON v.n = d.n \
                 ORDER BY d.distance, f.n"
            );
            out.vector = candidates(
                &tx,
                &sql,
                &[&Vector::from(e.clone()), &limit, &account, &owners, &dims],
            )
            .await?;
        }
        let terms = selective_terms(&tx, query_, &current, visible_count).await?;
        if let Some(q) = ts_query(&terms) {
            let sql = format!(
                "SELECT {FACT_COLUMNS}, v.embedding FROM facts f LEFT JOIN fact_vectors v ON v.n = f.n \
                 WHERE f.tsv @@ to_tsquery('english', $1) AND f.account_id = $3 AND f.owner_key = ANY($4){current} \
                 ORDER BY ts_rank(f.tsv, to_tsquery('english', $1)) DESC, f.n LIMIT $2"
            );
            out.keyword = candidates(&tx, &sql, &[&q, &limit, &account, &owners]).await?;
        }
        if let Some(period) = query_.during {
            // Facts from the period the question names: nearest first, or
            // newest first without an embedding.
            let (start, end) = (period.start.as_millis(), period.end.as_millis());
            out.during = match query_.embedding.as_ref().filter(|e| !e.is_empty()) {
                Some(e) => {
                    let dims = i32::try_from(e.len()).unwrap_or(i32::MAX);
                    let sql = format!(
                        "SELECT {FACT_COLUMNS}, v.embedding, v.embedding <=> $1 AS distance \
                         FROM facts f JOIN fact_vectors v ON v.n = f.n \
                         WHERE f.account_id = $3 AND f.owner_key = ANY($4){current} \
                         AND f.valid_at >= $5 AND f.valid_at < $6 AND vector_dims(v.embedding) = $7 \
                         ORDER BY distance, f.n LIMIT $2"
                    );
                    let v = Vector::from(e.clone());
                    candidates(
                        &tx,
                        &sql,
                        &[&v, &limit, &account, &owners, &start, &end, &dims],
                    )
                    .await?
                }
                None => {
                    let sql = format!(
                        "SELECT {FACT_COLUMNS}, v.embedding FROM facts f LEFT JOIN fact_vectors v ON v.n = f.n \
                         WHERE f.account_id = $2 AND f.owner_key = ANY($3){current} \
                         AND f.valid_at >= $4 AND f.valid_at < $5 \
                         ORDER BY f.valid_at DESC, f.n LIMIT $1"
                    );
                    candidates(&tx, &sql, &[&limit, &account, &owners, &start, &end]).await?
                }
            };
        }
        let mut slots: Vec<String> = out
            .vector
            .iter()
            .chain(&out.keyword)
            .chain(&out.during)
            .filter(|c| c.fact.cardinality == Cardinality::Single)
            .filter_map(|c| c.fact.slot())
            .collect();
        slots.sort();
        slots.dedup();
        if !slots.is_empty() {
            let sql = format!(
                "SELECT {FACT_COLUMNS}, v.embedding FROM facts f LEFT JOIN fact_vectors v ON v.n = f.n \
                 WHERE f.account_id = $1 AND f.owner_key = ANY($2) AND {CURRENT} \
                 AND f.cardinality = 'single' AND f.slot = ANY($3)"
            );
            out.rivals = candidates(&tx, &sql, &[&account, &owners, &slots]).await?;
        }
        Ok(out)
    }

    async fn delete_facts(
        &self,
        account: AccountId,
        owner: &FactOwner,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let n = delete_owned(&tx, account, owner, now).await?;
        tx.commit().await.map_err(backend)?;
        Ok(n)
    }
}
