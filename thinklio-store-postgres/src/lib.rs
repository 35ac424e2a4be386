//! The server store of Thinklio: PostgreSQL (15 or newer) with pgvector, for
//! many runtime processes sharing one database.
//!
//! ```no_run
//! # async fn demo() -> Result<(), thinklio_store_postgres::OpenError> {
//! let store = thinklio_store_postgres::PostgresStore::connect(
//!     "postgres://thinklio@127.0.0.1:5432/thinklio",
//! )
//! .await?;
//! # let _ = store; Ok(()) }
//! ```
//!
//! # How it works
//! - A connection pool (`deadpool-postgres`); every write of a trait call
//!   is one transaction, and statements are prepared once per connection.
//! - Work shared between processes is claimed with row locks: queue tasks
//!   and jobs with `FOR UPDATE SKIP LOCKED`, so two workers never take the
//!   same one; a job or a step being changed is locked for the change.
//! - Versioned migrations at connect, under an advisory lock, so processes
//!   starting together migrate once. The `vector` extension must be
//!   available to the server (`scripts/postgres.sh install` builds it).
//! - Knowledge: the keyword side is a generated `tsvector` with a GIN index
//!   ranked by `ts_rank`; vectors are compared exactly (`<=>`, cosine) over
//!   the facts the principal may see, as on SQLite.
//! - Payloads are stored as JSON text, unencrypted, as on SQLite.

#![warn(missing_docs)]

/// Running Thinklio on PostgreSQL with several worker processes
/// (`docs/postgres.md`; its example is compiled as a doc test).
#[doc = include_str!("../../docs/postgres.md")]
pub mod guide {}

mod agents;
mod approvals;
mod budgets;
mod directory;
mod events;
mod images;
mod interactions;
mod jobs;
mod knowledge;
mod listen;
mod ops;
mod privacy;
mod queue;
mod rows;
mod schema;
mod sessions;
mod steps;
mod summaries;
mod tls;
mod todos;
mod vectors;

use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use thinklio_core::{Clock, StoreError, SystemClock};

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// TLS could not be set up as the connection string asks (an unknown
    /// `sslmode`, an unreadable `sslrootcert`).
    #[error("TLS to PostgreSQL: {0}")]
    Tls(String),
    /// The connection string is not one PostgreSQL understands.
    #[error("invalid PostgreSQL connection string: {0}")]
    Config(#[source] tokio_postgres::Error),
    /// The pool could not be built.
    #[error("cannot build the connection pool: {0}")]
    Pool(String),
    /// The server could not be reached or refused the connection.
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(#[source] deadpool_postgres::PoolError),
    /// Migrating the schema failed (the `vector` extension missing, a
    /// schema newer than this build).
    #[error("cannot migrate the database: {0}")]
    Migrate(#[source] StoreError),
}

/// Options of [`PostgresStore::connect_with`].
#[derive(Clone)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// The most connections the pool opens (default 16).
    pub max_connections: usize,
    /// A schema to keep Thinklio's tables in (default: the connection's
    /// search path, usually `public`). Created if missing.
    pub schema: Option<String>,
    /// The clock used for timestamps.
    pub clock: Arc<dyn Clock>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            schema: None,
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("max_connections", &self.max_connections)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresOptions {
    /// Sets the size of the pool.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Keeps the tables in `schema`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Sets the clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }
}

/// A Thinklio store on PostgreSQL. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    clock: Arc<dyn Clock>,
    /// The channel work is announced on (`pg_notify`), one per schema.
    channel: Arc<str>,
    /// Woken when another process announces work.
    work: Arc<tokio::sync::Notify>,
    /// Cancellations announced on the channel, by any process.
    cancels: tokio::sync::broadcast::Sender<thinklio_core::InteractionId>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection string may hold a password: it is not shown.
        f.debug_struct("PostgresStore")
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url` (a `postgres://` URL or a key-value string) with
    /// default options and migrates the schema.
    pub async fn connect(url: &str) -> Result<Self, OpenError> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Connects to `url` and migrates the schema.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<Self, OpenError> {
        Self::connect_at(url, options, schema::LATEST).await
    }

    /// Connects and migrates only up to schema `version`, as an older
    /// Thinklio left the database: for tests of migrations (the store's
    /// queries expect the newest schema).
    #[doc(hidden)]
    pub async fn connect_at_schema_version(
        url: &str,
        options: PostgresOptions,
        version: i64,
    ) -> Result<Self, OpenError> {
        Self::connect_at(url, options, version).await
    }

    async fn connect_at(
        url: &str,
        options: PostgresOptions,
        target: i64,
    ) -> Result<Self, OpenError> {
        let tls::Parsed { mut config, tls } = tls::parse(url)?;
        let listen_config = config.clone();
        if let Some(schema) = &options.schema {
            let quoted = format!("\"{}\"", schema.replace('"', "\"\""));
            config.options(format!(
                "-c search_path={},public",
                quoted.replace(' ', "\\ ")
            ));
        }
        let manager = Manager::from_config(
            config,
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_connections)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| OpenError::Pool(e.to_string()))?;
        let mut client = pool.get().await.map_err(OpenError::Connect)?;
        if let Some(schema) = &options.schema {
            let quoted = format!("\"{}\"", schema.replace('"', "\"\""));
            client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {quoted}"))
                .await
                .map_err(|e| OpenError::Migrate(rows::backend(e)))?;
        }
        schema::migrate_to(&mut client, target)
            .await
            .map_err(OpenError::Migrate)?;
        let channel: Arc<str> = match &options.schema {
            Some(schema) => format!("thinklio_work_{schema}")
                .chars()
                .take(63)
                .collect::<String>()
                .into(),
            None => "thinklio_work".into(),
        };
        let work = Arc::new(tokio::sync::Notify::new());
        let (cancels, _) = tokio::sync::broadcast::channel(64);
        listen::spawn(
            listen_config,
            tls,
            Arc::clone(&channel),
            Arc::downgrade(&work),
            cancels.clone(),
        );
        Ok(Self {
            pool,
            clock: options.clock,
            channel,
            work,
            cancels,
        })
    }

    /// The schema version of the database.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT COALESCE(MAX(version), 0) FROM thinklio_schema", &[])
            .await
            .map_err(rows::backend)?;
        Ok(row.get(0))
    }

    /// Whether this store's connections to the server are encrypted (TLS).
    pub async fn encrypted(&self) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT COALESCE((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
                &[],
            )
            .await
            .map_err(rows::backend)?;
        Ok(row.get(0))
    }

    /// The version of the `vector` extension (proves it is installed).
    pub async fn vector_version(&self) -> Result<String, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'",
                &[],
            )
            .await
            .map_err(rows::backend)?;
        Ok(row.get(0))
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(rows::pool_error)
    }
}
