//! The embedded default store of Thinklio: one SQLite file, no server to run.
//!
//! ```no_run
//! # async fn demo() -> Result<(), thinklio_store_sqlite::OpenError> {
//! let store = thinklio_store_sqlite::SqliteStore::open("agent.db").await?;
//! # let _ = store; Ok(()) }
//! ```
//!
//! # How it works
//! - One connection, owned by a dedicated OS thread; async callers send it
//!   closures and await the answer, so no tokio worker thread ever blocks on
//!   SQLite. SQLite has one writer at a time anyway, and a single connection
//!   keeps every prepared statement cached.
//! - WAL journal mode. With the default `synchronous = NORMAL`, a committed
//!   transaction survives a crash or kill of the process; a power loss may
//!   lose the last transactions. Choose [`Synchronous::Full`] to survive
//!   power loss at the price of an fsync per commit.
//! - Versioned migrations, applied at open, tracked in `PRAGMA user_version`.
//! - `sqlite-vec` is registered on every connection (for knowledge search);
//!   FTS5 is compiled in by the bundled SQLite.
//!
//! Payloads (step inputs and outputs, messages) are stored as plain JSON text,
//! unencrypted. One process per database file: the store does not coordinate
//! runtimes in several processes (use the PostgreSQL store for that).

#![warn(missing_docs)]

pub use backup::{BackupError, BackupReport};

mod agents;
mod approvals;
mod backup;
mod budgets;
mod conn;
mod directory;
mod events;
mod images;
mod interactions;
mod jobs;
mod knowledge;
mod ops;
mod privacy;
mod queue;
mod rows;
mod schema;
mod sessions;
mod summaries;
mod todos;
mod vectors;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use thinklio_core::{Clock, StoreError, SystemClock};

use conn::Connection;
pub use conn::Synchronous;

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// SQLite could not open or set up the file.
    #[error("cannot open SQLite database {path}: {source}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The file's schema is newer than this version of Thinklio knows.
    #[error("database {path} has schema version {found}; this Thinklio knows up to {known}")]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
    /// The store thread could not be started.
    #[error("cannot start the store thread: {0}")]
    Thread(#[source] std::io::Error),
    /// A migration's data step failed (the file is left at the version before it).
    #[error("cannot migrate database {path} to schema version {version}: {source}")]
    Migration {
        /// The file.
        path: PathBuf,
        /// The version being migrated to.
        version: i64,
        /// The cause.
        #[source]
        source: thinklio_core::StoreError,
    },
}

/// Options of [`SqliteStore::open_with`].
#[derive(Clone)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// Durability of commits (default [`Synchronous::Normal`]).
    pub synchronous: Synchronous,
    /// The clock used for timestamps.
    pub clock: Arc<dyn Clock>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Normal,
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for SqliteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteOptions")
            .field("synchronous", &self.synchronous)
            .finish_non_exhaustive()
    }
}

impl SqliteOptions {
    /// Sets the durability of commits.
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Sets the clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }
}

/// A Thinklio store in one SQLite file. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Connection,
    clock: Arc<dyn Clock>,
    path: Arc<PathBuf>,
    /// Whether vector lists are being built in the background.
    indexing: Arc<std::sync::Mutex<vectors::Indexing>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` with default options.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Opens (creating if needed) the database at `path`.
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<Self, OpenError> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open(path.clone(), options.synchronous).await?;
        Ok(Self {
            conn,
            clock: options.clock,
            path: Arc::new(path),
            indexing: Arc::default(),
        })
    }

    /// Creates the database at `path` with the schema of `version` only, as
    /// an older Thinklio left it: for tests of migrations.
    #[doc(hidden)]
    pub fn create_at_schema_version(path: impl AsRef<Path>, version: i64) -> Result<(), OpenError> {
        let path = path.as_ref();
        let mut conn = rusqlite::Connection::open(path).map_err(|source| OpenError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
        schema::migrate_to(&mut conn, path, version)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The version of the registered sqlite-vec extension (proves it is loaded).
    pub async fn vec_version(&self) -> Result<String, StoreError> {
        self.conn
            .call(|c| {
                c.query_row("SELECT vec_version()", [], |r| r.get::<_, String>(0))
                    .map_err(rows::backend)
            })
            .await
    }

    /// Round trips to the store's thread and transactions committed since
    /// it opened (its clones share them).
    pub fn counts(&self) -> thinklio_core::store::StoreCounts {
        self.conn.counts()
    }

    /// The schema version of the file.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn
            .call(|c| {
                c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
                    .map_err(rows::backend)
            })
            .await
    }
}
