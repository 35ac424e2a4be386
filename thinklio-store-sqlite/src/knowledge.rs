//! `KnowledgeStore` on SQLite: facts with an FTS5 keyword index (BM25) and
//! embeddings compared with sqlite-vec's `vec_distance_cosine`.
//!
//! Every query over facts carries the visibility filter in its `WHERE`
//! clause (`account_id = ? AND owner_key IN (...)`, on an index), so what a
//! principal may not see is never read, counted or timed.
//!
//! Vector search is exact while a principal sees up to
//! [`APPROXIMATE_ABOVE`] facts: the distance of every visible current fact
//! is computed in SQL and the nearest are kept, and because the filter
//! narrows the scan to the principal's own owners first, the cost grows
//! with what one principal sees, not with the whole store. Above that, it
//! reads the inverted lists nearest the query (`vectors.rs`), built the
//! first time a search could use them (see `docs/benchmarks.md`).

use async_trait::async_trait;
use rusqlite::types::Value as SqlValue;
use rusqlite::{OptionalExtension, Row, params, params_from_iter};
use serde_json::json;
use thinklio_core::knowledge::FactChangeKind;
use thinklio_core::knowledge::{
    Candidate, Candidates, Cardinality, Curation, Fact, FactActor, FactChange, FactOwner,
    FactQuery, FactWrite, KnowledgeStore, Lookup, NewFact, Reconciliation, VectorIndex, Visibility,
    keywords, normalise, wrongly_superseded,
};
use thinklio_core::{
    AccountId, AccountPolicy, Clock, FactId, StoreError, StoreResult, SystemClock, Timestamp,
};

use crate::SqliteStore;
use crate::rows::{FACT_COLUMNS, backend, fact};

pub(crate) const CURRENT: &str = "f.invalid_at IS NULL AND f.expired_at IS NULL";

fn candidate(row: &Row<'_>) -> rusqlite::Result<Candidate> {
    let blob: Option<Vec<u8>> = row.get("embedding")?;
    let distance: Option<f64> = row.get("distance").ok().flatten();
    Ok(Candidate {
        fact: fact(row)?,
        embedding: blob.map(|b| from_blob(&b)).unwrap_or_default(),
        similarity: distance.map(|d| (1.0 - d) as f32),
    })
}

/// Runs a query whose rows are candidates.
pub(crate) fn candidates(
    c: &rusqlite::Connection,
    sql: &str,
    params: Vec<SqlValue>,
) -> StoreResult<Vec<Candidate>> {
    c.prepare_cached(sql)
        .map_err(backend)?
        .query_map(params_from_iter(params), candidate)
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)
}

pub(crate) fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The `owner_key IN (...)` filter of a visibility and its parameters.
pub(crate) fn visible(v: &Visibility, first_param: usize) -> (String, Vec<SqlValue>) {
    let keys = v.owner_keys();
    let mut sql = format!("f.account_id = ?{first_param} AND f.owner_key IN (");
    let mut params = vec![SqlValue::Text(v.account.to_string())];
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("?{}", first_param + 1 + i));
        params.push(SqlValue::Text(k.clone()));
    }
    if keys.is_empty() {
        sql.push_str("NULL");
    }
    sql.push(')');
    (sql, params)
}

/// The token of an owner in the keyword index's `scope` column: a letter
/// for the layer and the owner's id as bare hex (agent names are hashed with
/// their account). A hash collision could only add candidates, which the
/// SQL filter on `owner_key` then drops.
fn scope_token(account: AccountId, owner: &FactOwner) -> String {
    match owner {
        FactOwner::Account => format!("a{}", account.as_uuid().simple()),
        FactOwner::Team(t) => format!("t{}", t.as_uuid().simple()),
        FactOwner::User(u) => format!("u{}", u.as_uuid().simple()),
        FactOwner::Agent(a) => {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in account
                .to_string()
                .bytes()
                .chain([b'/'])
                .chain(a.as_str().bytes())
            {
                h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
            format!("g{h:016x}")
        }
    }
}

/// The FTS5 query for `terms` (any of them) among the facts of the visible
/// owners.
fn match_query(visibility: &Visibility, terms: &[String]) -> Option<String> {
    let words: Vec<String> = terms
        .iter()
        .map(|w| format!("\"{}\"", w.replace('"', "")))
        .collect();
    let owners: Vec<String> = visibility
        .owners()
        .iter()
        .map(|o| scope_token(visibility.account, o))
        .collect();
    (!words.is_empty() && !owners.is_empty()).then(|| {
        format!(
            "scope : ({}) AND text : ({})",
            owners.join(" OR "),
            words.join(" OR ")
        )
    })
}

/// How many facts `visibility` sees (current ones only, unless `current` is empty).
fn count_visible(
    c: &rusqlite::Connection,
    visibility: &Visibility,
    current: &str,
) -> StoreResult<i64> {
    let (filter, params) = visible(visibility, 1);
    c.prepare_cached(&format!(
        "SELECT count(*) FROM facts f WHERE {filter}{current}"
    ))
    .map_err(backend)?
    .query_row(params_from_iter(params), |r| r.get(0))
    .map_err(backend)
}

/// The keywords of the question that tell the visible facts apart: a term
/// found in more than a quarter of them (the user's own name in a store of
/// facts about that user) carries no keyword signal and would only crowd
/// the keyword list. Counted on the visible facts only (the owners' tokens
/// are part of the match), and each count stops at the cut-off.
fn selective_terms(
    c: &rusqlite::Connection,
    query: &FactQuery,
    current: &str,
    visible_count: i64,
) -> StoreResult<Vec<String>> {
    let terms = keywords(&query.text);
    if terms.is_empty() {
        return Ok(terms);
    }
    let cut = (visible_count / 4).max(3);
    let (filter, params) = visible(&query.visibility, 3);
    let sql = format!(
        "SELECT count(*) FROM (SELECT 1 FROM facts_fts JOIN facts f ON f.n = facts_fts.rowid \
         WHERE facts_fts MATCH ?1 AND {filter}{current} LIMIT ?2)"
    );
    let mut kept = Vec::with_capacity(terms.len());
    for term in terms {
        let Some(m) = match_query(&query.visibility, std::slice::from_ref(&term)) else {
            continue;
        };
        let mut all = vec![SqlValue::Text(m), SqlValue::Integer(cut + 1)];
        all.extend(params.iter().cloned());
        let n: i64 = c
            .prepare_cached(&sql)
            .map_err(backend)?
            .query_row(params_from_iter(all), |r| r.get(0))
            .map_err(backend)?;
        if n > 0 && n <= cut {
            kept.push(term);
        }
    }
    Ok(kept)
}

fn history(
    tx: &rusqlite::Connection,
    id: FactId,
    kind: &str,
    actor: &FactActor,
    at: Timestamp,
    detail: serde_json::Value,
) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO fact_history (fact_id, kind, actor, at, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .map_err(backend)?
    .execute(params![
        id.to_string(),
        kind,
        actor.as_text(),
        at.as_millis(),
        detail.to_string()
    ])
    .map_err(backend)?;
    Ok(())
}

fn load(c: &rusqlite::Connection, id: FactId) -> StoreResult<Fact> {
    c.prepare_cached(&format!(
        "SELECT {FACT_COLUMNS} FROM facts f WHERE f.id = ?1"
    ))
    .map_err(backend)?
    .query_row([id.to_string()], fact)
    .optional()
    .map_err(backend)?
    .ok_or_else(|| StoreError::not_found("fact", id))
}

pub(crate) fn query_facts(
    c: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StoreResult<Vec<Fact>> {
    c.prepare_cached(sql)
        .map_err(backend)?
        .query_map(params, fact)
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)
}

fn record(tx: &rusqlite::Connection, new: NewFact, now: Timestamp) -> StoreResult<FactWrite> {
    new.check()?;
    let account = new.account.to_string();
    let owner_key = new.owner.key();
    let slot = new.slot();
    let text = new.text();
    let norm_text = normalise(&text);
    let valid_at = new.valid_at.unwrap_or(now);
    let cardinality = new.cardinality();
    let existing = match new.lookup() {
        Lookup::Slot(slot) => query_facts(
            tx,
            &format!(
                "SELECT {FACT_COLUMNS} FROM facts f WHERE f.account_id = ?1 AND f.owner_key = ?2 \
                 AND f.slot = ?3 AND {CURRENT}"
            ),
            params![account, owner_key, slot],
        )?,
        Lookup::Duplicates { slot, norm_text } => {
            let mut found = query_facts(
                tx,
                &format!(
                    "SELECT {FACT_COLUMNS} FROM facts f WHERE f.account_id = ?1 AND f.owner_key = ?2 \
                     AND f.slot IS ?3 AND f.norm_text = ?4 AND {CURRENT}"
                ),
                params![account, owner_key, slot, norm_text],
            )?;
            if found.is_empty() && !new.embedding.is_empty() {
                found = crate::vectors::near_duplicate(
                    tx,
                    &account,
                    &owner_key,
                    slot.as_deref(),
                    &new.embedding,
                )?;
            }
            found
        }
    };
    let named = match new.replaces {
        Some(id) => query_facts(
            tx,
            &format!(
                "SELECT {FACT_COLUMNS} FROM facts f WHERE f.id = ?1 AND f.account_id = ?2 \
                 AND f.owner_key = ?3 AND {CURRENT}"
            ),
            params![id.to_string(), account, owner_key],
        )?
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
    tx.prepare_cached(
        "INSERT INTO facts (id, account_id, owner_key, layer, owner_id, subject, predicate, value, \
         slot, norm_text, confidence, provenance, locked, valid_at, invalid_at, created_at, \
         cardinality) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )
    .map_err(backend)?
    .execute(params![
        id.to_string(),
        account,
        owner_key,
        new.owner.layer().as_str(),
        new.owner.id(),
        new.subject,
        new.predicate,
        new.value,
        slot,
        norm_text,
        f64::from(new.confidence),
        serde_json::to_string(&new.provenance).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        new.locked,
        valid_at.as_millis(),
        invalid_at.map(Timestamp::as_millis),
        now.as_millis(),
        cardinality.as_str(),
    ])
    .map_err(backend)?;
    let n = tx.last_insert_rowid();
    if !new.embedding.is_empty() {
        let list = crate::vectors::list_of(tx, &new.embedding)?;
        tx.prepare_cached("INSERT INTO fact_vectors (n, embedding, list) VALUES (?1, ?2, ?3)")
            .map_err(backend)?
            .execute(params![n, to_blob(&new.embedding), list])
            .map_err(backend)?;
    }
    tx.prepare_cached("INSERT INTO facts_fts (rowid, text, scope) VALUES (?1, ?2, ?3)")
        .map_err(backend)?
        .execute(params![n, text, scope_token(new.account, &new.owner)])
        .map_err(backend)?;
    history(
        tx,
        id,
        "add",
        &new.actor,
        now,
        json!({ "provenance": new.provenance, "layer": new.owner.layer() }),
    )?;
    if invalid_at.is_some() {
        return Ok(FactWrite::Historical(load(tx, id)?));
    }
    let mut replaced = Vec::new();
    for old in supersedes {
        tx.prepare_cached(
            "UPDATE facts SET invalid_at = ?2, expired_at = ?3, superseded_by = ?4 WHERE id = ?1",
        )
        .map_err(backend)?
        .execute(params![
            old.to_string(),
            valid_at.as_millis(),
            now.as_millis(),
            id.to_string()
        ])
        .map_err(backend)?;
        history(
            tx,
            old,
            "supersede",
            &new.actor,
            now,
            json!({ "superseded_by": id }),
        )?;
        replaced.push(load(tx, old)?);
    }
    let fact = load(tx, id)?;
    Ok(if replaced.is_empty() {
        FactWrite::Added(fact)
    } else {
        FactWrite::Superseded { fact, replaced }
    })
}

/// After schema version 11 added `facts.cardinality`: resolves each fact's
/// cardinality with its account's declarations (the rule is core's
/// [`Cardinality::resolve`]) and makes current again the many-valued facts
/// the older store had superseded ([`wrongly_superseded`]), each with a
/// `restore` history entry. Nothing is deleted. Returns how many were restored.
pub(crate) fn migrate_cardinality(tx: &rusqlite::Connection) -> StoreResult<usize> {
    let policies: std::collections::HashMap<String, AccountPolicy> = tx
        .prepare("SELECT id, policy FROM accounts")
        .map_err(backend)?
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(backend)?
        .map(|row| {
            let (id, policy) = row.map_err(backend)?;
            let policy = serde_json::from_str(&policy)
                .map_err(|e| StoreError::Corrupt(format!("policy of account {id}: {e}")))?;
            Ok((id, policy))
        })
        .collect::<StoreResult<_>>()?;
    let none = AccountPolicy::default();
    let mut facts = query_facts(tx, &format!("SELECT {FACT_COLUMNS} FROM facts f"), [])?;
    for f in &mut facts {
        let policy = policies.get(&f.account.to_string()).unwrap_or(&none);
        f.cardinality = Cardinality::resolve(&f.predicate, &policy.cardinality, None);
        if f.predicate.contains(['_', '-']) {
            // Slots now read `lives_in` as `lives in`.
            tx.prepare_cached("UPDATE facts SET slot = ?2 WHERE id = ?1")
                .map_err(backend)?
                .execute(params![f.id.to_string(), f.slot()])
                .map_err(backend)?;
        }
        if f.cardinality == Cardinality::Single {
            tx.prepare_cached("UPDATE facts SET cardinality = 'single' WHERE id = ?1")
                .map_err(backend)?
                .execute([f.id.to_string()])
                .map_err(backend)?;
        }
    }
    let restored = wrongly_superseded(&facts);
    let now = SystemClock.now();
    for id in &restored {
        tx.prepare_cached(
            "UPDATE facts SET invalid_at = NULL, expired_at = NULL, superseded_by = NULL \
             WHERE id = ?1",
        )
        .map_err(backend)?
        .execute([id.to_string()])
        .map_err(backend)?;
        history(
            tx,
            *id,
            FactChangeKind::Restore.as_str(),
            &FactActor::System,
            now,
            json!({ "reason": "many_valued" }),
        )?;
    }
    Ok(restored.len())
}

/// Deletes the facts of one owner with their vectors and index entries,
/// leaving a `delete` entry each. Shared with the privacy call.
pub(crate) fn delete_owned(
    tx: &rusqlite::Connection,
    account: AccountId,
    owner: &FactOwner,
    now: Timestamp,
) -> StoreResult<u64> {
    let doomed: Vec<(i64, String)> = tx
        .prepare_cached("SELECT n, id FROM facts WHERE account_id = ?1 AND owner_key = ?2")
        .map_err(backend)?
        .query_map(params![account.to_string(), owner.key()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    for (n, id) in &doomed {
        tx.prepare_cached("DELETE FROM facts_fts WHERE rowid = ?1")
            .map_err(backend)?
            .execute([n])
            .map_err(backend)?;
        tx.prepare_cached("DELETE FROM fact_vectors WHERE n = ?1")
            .map_err(backend)?
            .execute([n])
            .map_err(backend)?;
        tx.prepare_cached("DELETE FROM facts WHERE n = ?1")
            .map_err(backend)?
            .execute([n])
            .map_err(backend)?;
        let id: FactId = id
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("bad fact id `{id}`")))?;
        history(tx, id, "delete", &FactActor::System, now, json!({}))?;
    }
    Ok(u64::try_from(doomed.len()).unwrap_or(0))
}

#[async_trait]
impl KnowledgeStore for SqliteStore {
    async fn record_fact(&self, new: NewFact, now: Timestamp) -> StoreResult<FactWrite> {
        let (write, wanted) = self
            .conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let write = record(&tx, new, now)?;
                tx.commit().map_err(backend)?;
                Ok((write, crate::vectors::wanted()))
            })
            .await?;
        if let Some(dims) = wanted {
            self.build_lists_later(dims);
        }
        Ok(write)
    }

    async fn import_facts(
        &self,
        facts: Vec<NewFact>,
        now: Timestamp,
    ) -> StoreResult<Vec<FactWrite>> {
        let (writes, wanted) = self
            .conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let writes = facts
                    .into_iter()
                    .map(|f| record(&tx, f, now))
                    .collect::<StoreResult<Vec<_>>>()?;
                tx.commit().map_err(backend)?;
                Ok((writes, crate::vectors::wanted()))
            })
            .await?;
        if let Some(dims) = wanted {
            self.build_lists_later(dims);
        }
        Ok(writes)
    }

    async fn fact(&self, id: FactId) -> StoreResult<Fact> {
        self.conn.call(move |c| load(c, id)).await
    }

    async fn curate_fact(
        &self,
        id: FactId,
        curation: Curation,
        actor: FactActor,
        now: Timestamp,
    ) -> StoreResult<Fact> {
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let before = load(&tx, id)?;
                if let Some(conf) = curation.confidence
                    && !(0.0..=1.0).contains(&conf)
                {
                    return Err(StoreError::Conflict(format!(
                        "confidence {conf} is not between 0 and 1"
                    )));
                }
                let retract = curation.retract_at.filter(|_| before.is_current());
                tx.prepare_cached(
                    "UPDATE facts SET locked = COALESCE(?2, locked), \
                     confidence = COALESCE(?3, confidence), \
                     invalid_at = COALESCE(?4, invalid_at), \
                     expired_at = CASE WHEN ?4 IS NULL THEN expired_at ELSE ?5 END \
                     WHERE id = ?1",
                )
                .map_err(backend)?
                .execute(params![
                    id.to_string(),
                    curation.locked,
                    curation.confidence.map(f64::from),
                    retract.map(Timestamp::as_millis),
                    now.as_millis()
                ])
                .map_err(backend)?;
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
                )?;
                let fact = load(&tx, id)?;
                tx.commit().map_err(backend)?;
                Ok(fact)
            })
            .await
    }

    async fn facts(
        &self,
        visibility: &Visibility,
        include_history: bool,
    ) -> StoreResult<Vec<Fact>> {
        let (filter, params) = visible(visibility, 1);
        let current = if include_history {
            String::new()
        } else {
            format!(" AND {CURRENT}")
        };
        let sql =
            format!("SELECT {FACT_COLUMNS} FROM facts f WHERE {filter}{current} ORDER BY f.n");
        self.conn
            .call(move |c| {
                c.prepare_cached(&sql)
                    .map_err(backend)?
                    .query_map(params_from_iter(params), fact)
                    .map_err(backend)?
                    .collect::<Result<_, _>>()
                    .map_err(backend)
            })
            .await
    }

    async fn fact_history(&self, id: FactId) -> StoreResult<Vec<FactChange>> {
        self.conn
            .call(move |c| {
                let rows: Vec<(String, String, i64, String)> = c
                    .prepare_cached(
                        "SELECT kind, actor, at, detail FROM fact_history WHERE fact_id = ?1 ORDER BY seq",
                    )
                    .map_err(backend)?
                    .query_map([id.to_string()], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .map_err(backend)?
                    .collect::<Result<_, _>>()
                    .map_err(backend)?;
                rows.into_iter()
                    .map(|(kind, actor, at, detail)| {
                        Ok(FactChange {
                            fact_id: id,
                            kind: kind.parse()?,
                            actor: FactActor::parse(&actor)?,
                            at: Timestamp::from_millis(at),
                            detail: serde_json::from_str(&detail)
                                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                        })
                    })
                    .collect()
            })
            .await
    }

    async fn fact_candidates(&self, query: &FactQuery) -> StoreResult<Candidates> {
        let query = query.clone();
        let (out, build) = self
            .conn
            .call(move |c| {
                let limit = i64::try_from(query.candidates.max(query.k)).unwrap_or(i64::MAX);
                let current = if query.include_history {
                    String::new()
                } else {
                    format!(" AND {CURRENT}")
                };
                let mut out = Candidates::default();
                let mut build = None;
                let visible_count = count_visible(c, &query.visibility, &current)?;
                if visible_count == 0 {
                    // Nothing to find (a new user, an empty store): the
                    // common case of a harness step costs one index probe.
                    return Ok((out, build));
                }
                if let Some(e) = query.embedding.as_ref().filter(|e| !e.is_empty()) {
                    let (vector, approximate, wanted) =
                        crate::vectors::nearest(c, &query, e, &current, visible_count, limit)?;
                    out.vector = vector;
                    out.approximate = approximate;
                    build = wanted.then_some(e.len());
                }
                let terms = selective_terms(c, &query, &current, visible_count)?;
                if let Some(m) = match_query(&query.visibility, &terms) {
                    let (filter, mut params) = visible(&query.visibility, 3);
                    let sql = format!(
                        "SELECT {FACT_COLUMNS}, v.embedding FROM facts_fts \
                         JOIN facts f ON f.n = facts_fts.rowid LEFT JOIN fact_vectors v ON v.n = f.n \
                         WHERE facts_fts MATCH ?1 AND {filter}{current} \
                         ORDER BY bm25(facts_fts) LIMIT ?2"
                    );
                    let mut all = vec![SqlValue::Text(m), SqlValue::Integer(limit)];
                    all.append(&mut params);
                    out.keyword = candidates(c, &sql, all)?;
                }
                if let Some(period) = query.during {
                    // Facts from the period the question names: nearest
                    // first, or newest first without an embedding.
                    let (filter, mut params) = visible(&query.visibility, 5);
                    let embedding = query.embedding.as_ref().filter(|e| !e.is_empty());
                    let sql = match embedding {
                        Some(_) => format!(
                            "SELECT {FACT_COLUMNS}, v.embedding, vec_distance_cosine(v.embedding, ?1) AS distance \
                             FROM facts f JOIN fact_vectors v ON v.n = f.n \
                             WHERE {filter}{current} AND f.valid_at >= ?3 AND f.valid_at < ?4 \
                             AND length(v.embedding) = length(?1) ORDER BY distance, f.n LIMIT ?2"
                        ),
                        None => format!(
                            "SELECT {FACT_COLUMNS}, v.embedding FROM facts f LEFT JOIN fact_vectors v ON v.n = f.n \
                             WHERE {filter}{current} AND f.valid_at >= ?3 AND f.valid_at < ?4 \
                             AND ?1 IS NULL ORDER BY f.valid_at DESC, f.n LIMIT ?2"
                        ),
                    };
                    let mut all = vec![
                        embedding.map_or(SqlValue::Null, |e| SqlValue::Blob(to_blob(e))),
                        SqlValue::Integer(limit),
                        SqlValue::Integer(period.start.as_millis()),
                        SqlValue::Integer(period.end.as_millis()),
                    ];
                    all.append(&mut params);
                    out.during = candidates(c, &sql, all)?;
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
                    let (filter, mut params) = visible(&query.visibility, 1);
                    let first = params.len() + 1;
                    let marks: Vec<String> =
                        (0..slots.len()).map(|i| format!("?{}", first + i)).collect();
                    let sql = format!(
                        "SELECT {FACT_COLUMNS}, v.embedding FROM facts f LEFT JOIN fact_vectors v ON v.n = f.n \
                         WHERE {filter} AND {CURRENT} AND f.cardinality = 'single' AND f.slot IN ({})",
                        marks.join(", ")
                    );
                    params.extend(slots.into_iter().map(SqlValue::Text));
                    out.rivals = candidates(c, &sql, params)?;
                }
                Ok((out, build))
            })
            .await?;
        if let Some(dims) = build {
            self.build_lists_later(dims);
        }
        Ok(out)
    }

    async fn index_vectors(&self) -> StoreResult<Vec<VectorIndex>> {
        self.build_lists(None).await
    }

    async fn delete_facts(
        &self,
        account: AccountId,
        owner: &FactOwner,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let owner = owner.clone();
        self.conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let n = delete_owned(&tx, account, &owner, now)?;
                tx.commit().map_err(backend)?;
                Ok(n)
            })
            .await
    }
}
