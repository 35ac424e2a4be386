//! SQLite's approximate vector index: inverted lists ([`IvfLists`], the
//! rule in core). `vector_lists` keeps one row per embedding size (its
//! centroids in one blob and a generation); `fact_vectors.list` files each
//! vector under a list, indexed, so a search reads the vectors of a few
//! lists instead of every visible one.
//!
//! A list's key carries the generation of the lists it belongs to, so
//! vectors filed under lists of a former build never match the lists of
//! the current one. A rebuild trains and files every vector away from the
//! connection (k-means on tokio's blocking pool), then writes the new
//! lists and every vector's list in one transaction: a search sees the old
//! index or the new one, never half of each.

use std::cell::RefCell;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::types::Value as SqlValue;
use rusqlite::{OptionalExtension, params};
use thinklio_core::knowledge::{
    APPROXIMATE_ABOVE, Candidate, Fact, FactQuery, IvfLists, LISTS_FROM, NEAR_DUPLICATE,
    VectorIndex, Visibility,
};
use thinklio_core::{StoreError, StoreResult};

use crate::SqliteStore;
use crate::knowledge::{CURRENT, candidates, from_blob, query_facts, to_blob, visible};
use crate::rows::{FACT_COLUMNS, backend};

/// How long the store waits before building lists again after a build
/// that found too few vectors or failed.
const QUIET: Duration = Duration::from_secs(60);

/// Whether lists are being built in the background, and until when none
/// should be started.
#[derive(Debug, Default)]
pub(crate) struct Indexing {
    running: bool,
    quiet_until: Option<Instant>,
}

/// Vectors read from the connection at a time while a build files them.
const CHUNK: i64 = 20_000;

thread_local! {
    /// The lists of each embedding size with the generation they were read
    /// at. Thread-local because the connection's thread is the only one
    /// that touches the connection: each store has its own cache.
    static LISTS: RefCell<HashMap<usize, Lists>> = RefCell::new(HashMap::new());
    /// An embedding size a write found without lists where they would
    /// have served, for the store to build them once the write returns.
    static WANTED: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Asks for lists of `dims`-sized vectors (see [`wanted`]).
pub(crate) fn want(dims: usize) {
    WANTED.set(Some(dims));
}

/// The size a write on this thread asked lists for, if any, cleared.
pub(crate) fn wanted() -> Option<usize> {
    WANTED.take()
}

/// One size's lists as the connection's thread last read them.
#[derive(Clone)]
pub(crate) struct Lists {
    generation: i64,
    /// The vectors of this size when the lists were built.
    pub(crate) vectors: i64,
    /// The highest fact number filed when they were built.
    last_n: i64,
    pub(crate) index: Arc<IvfLists>,
}

impl Lists {
    /// The key `fact_vectors.list` holds for list `i`.
    pub(crate) fn key(&self, i: usize) -> i64 {
        key(self.generation, self.index.dims(), i)
    }

    /// Whether the store has grown past twice what the lists were built
    /// from (fact numbers only grow), so they should be built again.
    pub(crate) fn stale(&self, max_n: i64) -> bool {
        max_n - self.last_n > self.vectors.max(1)
    }
}

fn key(generation: i64, dims: usize, i: usize) -> i64 {
    (generation << 32) | ((dims as i64 & 0xffff) << 16) | (i as i64 & 0xffff)
}

/// The current lists of `dims`-sized vectors, if any were built: one
/// indexed read of their generation, and of the centroids only when the
/// generation moved.
pub(crate) fn lists(c: &rusqlite::Connection, dims: usize) -> StoreResult<Option<Lists>> {
    let row: Option<(i64, i64, i64)> = c
        .prepare_cached("SELECT generation, vectors, last_n FROM vector_lists WHERE dims = ?1")
        .map_err(backend)?
        .query_row([dims as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
        .map_err(backend)?;
    let Some((generation, vectors, last_n)) = row else {
        LISTS.with_borrow_mut(|m| m.remove(&dims));
        return Ok(None);
    };
    if let Some(hit) =
        LISTS.with_borrow(|m| m.get(&dims).filter(|l| l.generation == generation).cloned())
    {
        return Ok(Some(hit));
    }
    let blob: Vec<u8> = c
        .query_row(
            "SELECT centroids FROM vector_lists WHERE dims = ?1",
            [dims as i64],
            |r| r.get(0),
        )
        .map_err(backend)?;
    let index = IvfLists::from_centroids(dims, from_blob(&blob))
        .ok_or_else(|| StoreError::Corrupt(format!("vector lists of size {dims} are malformed")))?;
    let lists = Lists {
        generation,
        vectors,
        last_n,
        index: Arc::new(index),
    };
    LISTS.with_borrow_mut(|m| m.insert(dims, lists.clone()));
    Ok(Some(lists))
}

/// The list a new vector is filed under (`None` while its size has no lists).
pub(crate) fn list_of(c: &rusqlite::Connection, embedding: &[f32]) -> StoreResult<Option<i64>> {
    Ok(lists(c, embedding.len())?.map(|l| l.key(l.index.nearest(embedding))))
}

/// The vector list of a search: from the lists of the embedding's size
/// when the principal sees enough facts for them to pay ([`thinklio_core::knowledge::IvfLists::probes`]),
/// else exact over every visible fact; the nearest are found on
/// (n, distance) alone and only they are then read in full. Also says
/// whether the lists served, and whether lists should be built (none, or
/// stale, where they would serve).
pub(crate) fn nearest(
    c: &rusqlite::Connection,
    query: &FactQuery,
    e: &[f32],
    current: &str,
    visible_count: i64,
    limit: i64,
) -> StoreResult<(Vec<Candidate>, bool, bool)> {
    let (filter, mut params) = visible(&query.visibility, 3);
    let mut all = vec![SqlValue::Blob(to_blob(e)), SqlValue::Integer(limit)];
    all.append(&mut params);
    let exact = format!(
        "SELECT {FACT_COLUMNS}, v.embedding, d.distance FROM ( \
           SELECT f.n AS n, vec_distance_cosine(v.embedding, ?1) AS distance \
           FROM facts f JOIN fact_vectors v ON v.n = f.n \
           WHERE {filter}{current} AND length(v.embedding) = length(?1) \
           ORDER BY distance LIMIT ?2 \
         ) d JOIN facts f ON f.n = d.n JOIN fact_vectors v ON v.n = d.n \
         ORDER BY d.distance"
    );
    if query.exact || visible_count <= APPROXIMATE_ABOVE {
        return Ok((candidates(c, &exact, all)?, false, false));
    }
    let Some(lists) = lists(c, e.len())? else {
        return Ok((candidates(c, &exact, all)?, false, true));
    };
    let stale = lists.stale(max_n(c)?);
    let Some(probes) = lists.index.probes(visible_count, lists.vectors) else {
        return Ok((candidates(c, &exact, all)?, false, stale));
    };
    let found = walk_lists(
        c,
        &query.visibility,
        current,
        e,
        &list_keys(&lists, e, probes),
        limit,
        (visible_count, lists.vectors),
    )?;
    // Too few of what it sees lie in those lists: compare them all.
    if (found.len() as i64) < limit.min(visible_count) {
        return Ok((candidates(c, &exact, all)?, false, stale));
    }
    Ok((found, true, stale))
}

/// The `limit` nearest visible vectors among those filed under the lists
/// of `keys`, read in full, nearest first.
///
/// The lists' vectors are ranked by distance alone (one scan of the list
/// index, no fact read), then walked nearest first, a batch at a time,
/// through the visibility filter until `limit` pass: a principal that
/// sees most facts reads about `limit` of them, not every vector's fact.
/// The first batch is sized by the share it sees (`seen`: visible and
/// total vectors), each next one twice the last.
fn walk_lists(
    c: &rusqlite::Connection,
    visibility: &Visibility,
    current: &str,
    e: &[f32],
    keys: &str,
    limit: i64,
    seen: (i64, i64),
) -> StoreResult<Vec<Candidate>> {
    let ranked: Vec<i64> = c
        .prepare_cached(
            "SELECT n FROM fact_vectors WHERE list IN (SELECT value FROM json_each(?2)) \
             AND length(embedding) = length(?1) ORDER BY vec_distance_cosine(embedding, ?1)",
        )
        .map_err(backend)?
        .query_map(params![to_blob(e), keys], |r| r.get(0))
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    // The batch is one JSON parameter (?1), so the statement stays cached.
    let (filter, params) = visible(visibility, 2);
    let passes = format!(
        "SELECT f.n FROM facts f WHERE f.n IN (SELECT value FROM json_each(?1)) \
         AND {filter}{current}"
    );
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let share = seen.1.max(1) as f64 / seen.0.max(1) as f64;
    let mut size = ((limit as f64 * share * 2.0).ceil() as usize).max(limit);
    let mut kept: Vec<i64> = Vec::with_capacity(limit);
    let mut rest = ranked.as_slice();
    let mut with_batch = vec![SqlValue::Null];
    with_batch.extend(params);
    while kept.len() < limit && !rest.is_empty() {
        let (batch, after) = rest.split_at(size.min(rest.len()));
        rest = after;
        size = size.saturating_mul(2);
        with_batch[0] = SqlValue::Text(json_array(batch));
        let passed: std::collections::HashSet<i64> = c
            .prepare_cached(&passes)
            .map_err(backend)?
            .query_map(rusqlite::params_from_iter(&with_batch), |r| r.get(0))
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        kept.extend(
            batch
                .iter()
                .filter(|n| passed.contains(n))
                .take(limit - kept.len()),
        );
    }
    candidates(
        c,
        &format!(
            "SELECT {FACT_COLUMNS}, v.embedding, vec_distance_cosine(v.embedding, ?1) AS distance \
             FROM facts f JOIN fact_vectors v ON v.n = f.n \
             WHERE f.n IN (SELECT value FROM json_each(?2)) ORDER BY distance"
        ),
        vec![
            SqlValue::Blob(to_blob(e)),
            SqlValue::Text(json_array(&kept)),
        ],
    )
}

/// Integers as a JSON array, a parameter for `json_each`.
fn json_array(ns: &[i64]) -> String {
    // A slice of integers always serializes.
    serde_json::to_string(ns).unwrap_or_else(|_| "[]".into())
}

/// How many lists nearest a new fact's embedding are searched for a near
/// duplicate of it: one that close lies in the nearest list or the next.
const NEAR_DUPLICATE_PROBES: usize = 2;

/// A current fact of the owner (and slot) whose embedding is a near
/// duplicate of `embedding`. An owner with more than
/// [`APPROXIMATE_ABOVE`] facts is searched through the lists nearest the
/// embedding, so importing a large layer is not quadratic; one with more
/// than [`LISTS_FROM`] whose embedding's size has no lists yet asks for
/// them to be built.
pub(crate) fn near_duplicate(
    tx: &rusqlite::Connection,
    account: &str,
    owner_key: &str,
    slot: Option<&str>,
    embedding: &[f32],
) -> StoreResult<Vec<Fact>> {
    // Counted up to where lists could be built: past that, the owner alone
    // holds enough vectors for them.
    let owned: i64 = tx
        .prepare_cached(
            "SELECT count(*) FROM (SELECT 1 FROM facts WHERE account_id = ?1 AND owner_key = ?2 LIMIT ?3)",
        )
        .map_err(backend)?
        .query_row(params![account, owner_key, LISTS_FROM as i64 + 1], |r| r.get(0))
        .map_err(backend)?;
    let lists = if owned > APPROXIMATE_ABOVE {
        lists(tx, embedding.len())?
    } else {
        None
    };
    // None yet, or built when the store was less than half its size: their
    // lists have grown long, so they are built again.
    let stale = match &lists {
        Some(l) => l.stale(max_n(tx)?),
        None => owned > LISTS_FROM as i64,
    };
    if stale {
        want(embedding.len());
    }
    let (within, keys) = match lists {
        Some(l) => (
            "fact_vectors v CROSS JOIN facts f ON f.n = v.n \
             WHERE v.list IN (SELECT value FROM json_each(?6)) AND",
            list_keys(&l, embedding, NEAR_DUPLICATE_PROBES),
        ),
        None => (
            "facts f JOIN fact_vectors v ON v.n = f.n WHERE ?6 IS NULL AND",
            String::new(),
        ),
    };
    let keys = (!keys.is_empty()).then_some(keys);
    query_facts(
        tx,
        &format!(
            "SELECT {FACT_COLUMNS} FROM {within} f.account_id = ?1 AND f.owner_key = ?2 \
             AND f.slot IS ?3 AND {CURRENT} AND length(v.embedding) = length(?4) \
             AND vec_distance_cosine(v.embedding, ?4) <= ?5 LIMIT 1"
        ),
        params![
            account,
            owner_key,
            slot,
            to_blob(embedding),
            1.0 - f64::from(NEAR_DUPLICATE),
            keys
        ],
    )
}

/// The keys of the `probes` lists nearest `embedding`, as a JSON array.
fn list_keys(lists: &Lists, embedding: &[f32], probes: usize) -> String {
    let keys: Vec<i64> = lists
        .index
        .nearest_n(embedding, probes)
        .into_iter()
        .map(|i| lists.key(i))
        .collect();
    json_array(&keys)
}

/// The highest fact number holding a vector.
pub(crate) fn max_n(c: &rusqlite::Connection) -> StoreResult<i64> {
    c.query_row("SELECT coalesce(max(n), 0) FROM fact_vectors", [], |r| {
        r.get(0)
    })
    .map_err(backend)
}

impl SqliteStore {
    /// Starts building lists for `dims`-sized vectors in the background,
    /// unless a build is already running: a search found none, or found
    /// them stale, where they would have served it.
    pub(crate) fn build_lists_later(&self, dims: usize) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let Ok(mut state) = self.indexing.lock() else {
                return;
            };
            if state.running || state.quiet_until.is_some_and(|t| Instant::now() < t) {
                return;
            }
            state.running = true;
        }
        let store = self.clone();
        handle.spawn(async move {
            let built = match store.build_lists(Some(dims)).await {
                Ok(built) => {
                    for b in &built {
                        tracing::info!(dims = b.dims, vectors = b.vectors, lists = ?b.lists, took_ms = b.took.as_millis() as u64, "built vector lists");
                    }
                    !built.is_empty()
                }
                Err(e) => {
                    tracing::warn!(error = %e, dims, "building vector lists failed");
                    false
                }
            };
            if let Ok(mut state) = store.indexing.lock() {
                state.running = false;
                // Too few vectors yet, or a failure: not again for a while,
                // or every write and search would start a build.
                state.quiet_until = (!built).then(|| Instant::now() + QUIET);
            }
        });
    }

    /// Builds the lists of every embedding size with at least
    /// [`LISTS_FROM`] vectors (of `only` when given).
    pub(crate) async fn build_lists(&self, only: Option<usize>) -> StoreResult<Vec<VectorIndex>> {
        let sizes: Vec<(usize, i64, i64)> = self
            .conn
            .call(move |c| {
                let mut stmt = c
                    .prepare(
                        "SELECT length(embedding) / 4, count(*), max(n) FROM fact_vectors \
                         GROUP BY 1 HAVING count(*) >= ?1",
                    )
                    .map_err(backend)?;
                let rows = stmt
                    .query_map([LISTS_FROM as i64], |r| {
                        Ok((r.get::<_, i64>(0)? as usize, r.get(1)?, r.get(2)?))
                    })
                    .map_err(backend)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(backend)?;
                Ok(rows)
            })
            .await?;
        let mut built = Vec::new();
        for (dims, count, last_n) in sizes {
            if only.is_some_and(|d| d != dims) {
                continue;
            }
            built.push(self.build_size(dims, count, last_n).await?);
        }
        Ok(built)
    }

    async fn build_size(&self, dims: usize, count: i64, last_n: i64) -> StoreResult<VectorIndex> {
        let started = Instant::now();
        let width = (dims * 4) as i64;
        let lists_n = IvfLists::lists_for(count as usize);
        // A sample spread over the whole table: every step-th vector.
        let wanted = (lists_n * 64) as i64;
        let step = (count / wanted).max(1);
        let sample: Vec<Vec<f32>> = self
            .conn
            .call(move |c| {
                let mut stmt = c
                    .prepare(
                        "SELECT embedding FROM fact_vectors WHERE length(embedding) = ?1 \
                         AND n <= ?2 AND n % ?3 = 0",
                    )
                    .map_err(backend)?;
                let rows = stmt
                    .query_map(params![width, last_n, step], |r| r.get::<_, Vec<u8>>(0))
                    .map_err(backend)?
                    .map(|b| b.map(|b| from_blob(&b)))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(backend)?;
                Ok(rows)
            })
            .await?;
        let index = blocking(move || {
            let refs: Vec<&[f32]> = sample.iter().map(Vec::as_slice).collect();
            let lists =
                NonZeroUsize::new(lists_n.min(refs.len()).max(1)).unwrap_or(NonZeroUsize::MIN);
            IvfLists::train(&refs, dims, lists, 0x7468_696e_6b6c_696f)
        })
        .await?
        .ok_or_else(|| {
            StoreError::Conflict(format!("too few vectors of size {dims} to build lists"))
        })?;
        let index = Arc::new(index);
        let lists_n = index.len();
        // File every vector, a chunk at a time; only (n, list) is kept.
        let mut filed: Vec<(i64, usize)> = Vec::with_capacity(count as usize);
        let mut after = 0i64;
        loop {
            let chunk: Vec<(i64, Vec<u8>)> = self
                .conn
                .call(move |c| {
                    let mut stmt = c
                        .prepare_cached(
                            "SELECT n, embedding FROM fact_vectors WHERE n > ?1 AND n <= ?2 \
                             AND length(embedding) = ?3 ORDER BY n LIMIT ?4",
                        )
                        .map_err(backend)?;
                    let rows = stmt
                        .query_map(params![after, last_n, width, CHUNK], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })
                        .map_err(backend)?
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(backend)?;
                    Ok(rows)
                })
                .await?;
            let Some(&(last, _)) = chunk.last() else {
                break;
            };
            after = last;
            let index = index.clone();
            filed.extend(
                blocking(move || {
                    let vectors: Vec<Vec<f32>> = chunk.iter().map(|(_, b)| from_blob(b)).collect();
                    let refs: Vec<&[f32]> = vectors.iter().map(Vec::as_slice).collect();
                    let lists = index.nearest_all(&refs);
                    chunk.iter().map(|(n, _)| *n).zip(lists).collect::<Vec<_>>()
                })
                .await?,
            );
        }
        // One transaction: the new lists, every vector's list, and those
        // that came while the build ran, filed here.
        let (vectors, bytes) = self
            .conn
            .call(move |c| {
                let tx = c.savepoint().map_err(backend)?;
                let generation: i64 = tx
                    .query_row(
                        "SELECT coalesce(max(generation), 0) + 1 FROM vector_lists",
                        [],
                        |r| r.get(0),
                    )
                    .map_err(backend)?;
                {
                    let mut update = tx
                        .prepare_cached("UPDATE fact_vectors SET list = ?2 WHERE n = ?1")
                        .map_err(backend)?;
                    for (n, i) in &filed {
                        update.execute(params![n, key(generation, dims, *i)]).map_err(backend)?;
                    }
                    let late: Vec<(i64, Vec<u8>)> = tx
                        .prepare("SELECT n, embedding FROM fact_vectors WHERE n > ?1 AND length(embedding) = ?2")
                        .map_err(backend)?
                        .query_map(params![last_n, width], |r| Ok((r.get(0)?, r.get(1)?)))
                        .map_err(backend)?
                        .collect::<Result<_, _>>()
                        .map_err(backend)?;
                    for (n, blob) in late {
                        let i = index.nearest(&from_blob(&blob));
                        update.execute(params![n, key(generation, dims, i)]).map_err(backend)?;
                    }
                }
                let vectors: i64 = tx
                    .query_row(
                        "SELECT count(*) FROM fact_vectors WHERE length(embedding) = ?1",
                        [width],
                        |r| r.get(0),
                    )
                    .map_err(backend)?;
                tx.execute(
                    "INSERT INTO vector_lists (dims, generation, lists, vectors, last_n, centroids) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (dims) DO UPDATE SET \
                     generation = excluded.generation, lists = excluded.lists, \
                     vectors = excluded.vectors, last_n = excluded.last_n, centroids = excluded.centroids",
                    params![
                        dims as i64,
                        generation,
                        index.len() as i64,
                        vectors,
                        max_n(&tx)?,
                        to_blob(index.centroids())
                    ],
                )
                .map_err(backend)?;
                tx.commit().map_err(backend)?;
                Ok((vectors, index_bytes(c)?))
            })
            .await?;
        Ok(VectorIndex::new(
            dims,
            u64::try_from(vectors).unwrap_or(0),
            Some(lists_n),
            bytes,
            started.elapsed(),
        ))
    }
}

/// The bytes the index takes: its table of centroids and the index of
/// each vector's list (the `list` column itself is 8 bytes a vector more).
fn index_bytes(c: &rusqlite::Connection) -> StoreResult<u64> {
    // `dbstat` is compiled into the bundled SQLite.
    c.query_row(
        "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN ('vector_lists', 'fact_vectors_by_list')",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|b| u64::try_from(b).unwrap_or(0))
    .map_err(backend)
}

/// Runs arithmetic on tokio's blocking pool, away from the connection's
/// thread and the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> StoreResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))
}
