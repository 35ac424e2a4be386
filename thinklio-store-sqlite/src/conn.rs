//! The connection thread.
//!
//! Written here rather than taken from a crate: the async-wrapper crates for
//! rusqlite pin their own rusqlite version, and this store needs the newest
//! rusqlite (for the bundled SQLite with FTS5) together with sqlite-vec. The
//! whole mechanism is a channel of closures and a oneshot reply.

use std::path::PathBuf;
use std::sync::Once;
use std::sync::mpsc;

use thinklio_core::StoreError;
use tokio::sync::oneshot;

use crate::OpenError;
use crate::schema;

/// Durability of commits in WAL mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// Commits survive a process crash; a power loss may lose the last ones.
    #[default]
    Normal,
    /// Commits survive a power loss too (an fsync per commit).
    Full,
}

/// What a job does once the batch it ran in has committed (`Ok`) or failed
/// to (`Err`, with the reason): answer its caller.
type Answer = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Work on the connection. Jobs write inside a savepoint of their own, so
/// several can share one transaction (group commit) or run alone.
type Job = Box<dyn FnOnce(&mut rusqlite::Connection) -> Answer + Send>;

/// The most jobs committed together.
const MAX_BATCH: usize = 64;

#[derive(Clone)]
pub(crate) struct Connection {
    jobs: mpsc::Sender<Job>,
    counts: std::sync::Arc<Counts>,
}

/// Jobs sent to the connection's thread and transactions committed.
#[derive(Debug, Default)]
struct Counts {
    round_trips: std::sync::atomic::AtomicU64,
    commits: std::sync::atomic::AtomicU64,
}

static REGISTER_VEC: Once = Once::new();

/// Registers sqlite-vec as an auto extension, so every connection opened
/// afterwards has it.
#[allow(unsafe_code)]
fn register_sqlite_vec() {
    REGISTER_VEC.call_once(|| {
        // SAFETY: `sqlite3_vec_init` has the signature SQLite expects of an
        // extension entry point; sqlite3_auto_extension takes it as the
        // generic `void(*)(void)` pointer type, hence the transmute of one
        // function pointer type into another. It is called once per process.
        unsafe {
            type EntryPoint = unsafe extern "C" fn(
                *mut rusqlite::ffi::sqlite3,
                *mut *mut std::os::raw::c_char,
                *const rusqlite::ffi::sqlite3_api_routines,
            ) -> std::os::raw::c_int;
            let init: unsafe extern "C" fn() = sqlite_vec::sqlite3_vec_init;
            let entry: EntryPoint = std::mem::transmute::<unsafe extern "C" fn(), EntryPoint>(init);
            rusqlite::ffi::sqlite3_auto_extension(Some(entry));
        }
    });
}

fn setup(path: &PathBuf, synchronous: Synchronous) -> Result<rusqlite::Connection, OpenError> {
    let err = |source| OpenError::Sqlite {
        path: path.clone(),
        source,
    };
    register_sqlite_vec();
    let mut conn = rusqlite::Connection::open(path).map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err)?;
    let sync = match synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync).map_err(err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(err)?;
    conn.set_prepared_statement_cache_capacity(64);
    // The query planner's stability guarantee: a statement's plan does not
    // depend on the values bound to it. Without it, SQLite marks a
    // statement whose plan looked at a bound value, and a cached statement
    // so marked is compiled again on every use once its values are cleared:
    // the step transition's insert, the reply's outbox insert and the
    // history and summary reads were, a seventh of the connection thread's
    // time with 10,000 interactions in flight. The store's partial indexes
    // are matched by literals in its statements, so no plan needs a bound
    // value.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(err)?;
    schema::migrate(&mut conn, path)?;
    Ok(conn)
}

/// Runs jobs and answers their callers. Several jobs waiting together share
/// one transaction: one commit makes all their writes durable, and no caller
/// hears of its result before that commit. A job that fails rolls back its
/// own savepoint only.
fn run_batch(conn: &mut rusqlite::Connection, batch: Vec<Job>) {
    if batch.len() == 1 || conn.execute_batch("BEGIN IMMEDIATE").is_err() {
        // Alone (or unable to open a shared transaction): each job's
        // savepoint is its own transaction, committed when it ends.
        for job in batch {
            job(conn)(Ok(()));
        }
        return;
    }
    let answers: Vec<Answer> = batch.into_iter().map(|job| job(conn)).collect();
    let committed = conn.execute_batch("COMMIT").map_err(|e| e.to_string());
    if committed.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for answer in answers {
        answer(committed.clone());
    }
}

/// The next job: spins briefly before sleeping, because a harness sends its
/// next request within microseconds of the last answer, and waking a sleeping
/// thread costs more than the query itself.
fn next_job(receiver: &mpsc::Receiver<Job>) -> Option<Job> {
    let spin_until = std::time::Instant::now() + std::time::Duration::from_micros(SPIN_MICROS);
    loop {
        match receiver.try_recv() {
            Ok(job) => return Some(job),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            Err(mpsc::TryRecvError::Empty) if std::time::Instant::now() < spin_until => {
                for _ in 0..64 {
                    std::hint::spin_loop();
                }
            }
            Err(mpsc::TryRecvError::Empty) => return receiver.recv().ok(),
        }
    }
}

/// How long a caller or the connection thread spins before sleeping.
const SPIN_MICROS: u64 = 200;

impl Connection {
    pub(crate) async fn open(path: PathBuf, synchronous: Synchronous) -> Result<Self, OpenError> {
        let (jobs, receiver) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let counts = std::sync::Arc::new(Counts::default());
        let committed = std::sync::Arc::clone(&counts);
        std::thread::Builder::new()
            .name("thinklio-sqlite".into())
            .spawn(move || {
                let mut conn = match setup(&path, synchronous) {
                    Ok(mut c) => {
                        let counted = c.commit_hook(Some(move || {
                            committed
                                .commits
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            false // let the commit go on
                        }));
                        if let Err(e) = counted {
                            tracing::warn!(error = %e, "commits of this store are not counted");
                        }
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // Runs until every `Connection` handle is dropped.
                while let Some(first) = next_job(&receiver) {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match receiver.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    run_batch(&mut conn, batch);
                }
            })
            .map_err(OpenError::Thread)?;
        match ready_rx.await {
            Ok(Ok(())) => Ok(Self { jobs, counts }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(OpenError::Thread(std::io::Error::other(
                "the store thread stopped while opening the database",
            ))),
        }
    }

    /// Round trips to the connection's thread and commits so far.
    pub(crate) fn counts(&self) -> thinklio_core::store::StoreCounts {
        use std::sync::atomic::Ordering::Relaxed;
        thinklio_core::store::StoreCounts::new(
            self.counts.round_trips.load(Relaxed),
            self.counts.commits.load(Relaxed),
        )
    }

    /// Runs `f` on the connection thread.
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.counts
            .round_trips
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.jobs
            .send(Box::new(move |conn| {
                let result = f(conn);
                Box::new(move |committed: Result<(), String>| {
                    let _ = tx.send(match committed {
                        Ok(()) => result,
                        Err(reason) => Err(StoreError::Backend(
                            format!("the transaction could not be committed: {reason}").into(),
                        )),
                    });
                })
            }))
            .map_err(|_| StoreError::Closed)?;
        // Most calls are answered within tens of microseconds: yield to other
        // tasks while the answer is that close instead of letting the worker
        // thread go to sleep and paying for its wake-up.
        let spin_until = std::time::Instant::now() + std::time::Duration::from_micros(SPIN_MICROS);
        let mut rx = rx;
        loop {
            match rx.try_recv() {
                Ok(result) => return result,
                Err(oneshot::error::TryRecvError::Closed) => return Err(StoreError::Closed),
                Err(oneshot::error::TryRecvError::Empty)
                    if std::time::Instant::now() < spin_until =>
                {
                    tokio::task::yield_now().await;
                }
                Err(oneshot::error::TryRecvError::Empty) => break,
            }
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    #[tokio::test]
    async fn a_cached_statement_is_never_prepared_again_for_new_values() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::SqliteStore::open(dir.path().join("t.db"))
            .await
            .unwrap();
        // Steps begun, finished and waiting, as the harness writes them.
        thinklio_core::conformance::step_lifecycle_records_legal_history(store.clone()).await;
        thinklio_core::conformance::finishing_a_step_can_begin_the_next_atomically(store.clone())
            .await;
        let (reprepared, runs) = store
            .conn
            .call(|c| {
                let stmt = c
                    .prepare_cached(crate::interactions::TRANSITION)
                    .map_err(crate::rows::backend)?;
                Ok((
                    stmt.get_status(StatementStatus::RePrepare),
                    stmt.get_status(StatementStatus::Run),
                ))
            })
            .await
            .unwrap();
        assert!(
            runs > 4,
            "the transitions were written with this statement: {runs}"
        );
        assert_eq!(reprepared, 0, "re-prepared in {runs} runs");
    }
}
