//! API keys of the HTTP host: scoped to one account and to what they may
//! do ([`KeyScope`]), stored hashed, revocable.
//!
//! A key is `tk_` and 64 hex digits of operating-system randomness (256
//! bits). Only its SHA-256 is stored: a key that long cannot be guessed, so
//! a slow password hash would buy nothing and cost every request; the hash
//! keeps a leaked database from yielding working keys. Keys live in the host's
//! own table (`http_api_keys`) of the SQLite file given to the server.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thinklio_core::AccountId;
use utoipa::ToSchema;

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key table could not be read or written.
    #[error("API key storage: {0}")]
    Storage(String),
    /// The system's random source failed.
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

impl From<rusqlite::Error> for KeyError {
    fn from(e: rusqlite::Error) -> Self {
        KeyError::Storage(e.to_string())
    }
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyScope {
    /// Conversations: sessions, messages, their streams and steps, jobs,
    /// and the knowledge of the users it names. What a web page or an app
    /// holds.
    Chat,
    /// Everything a chat key may, and the account's own business: its keys,
    /// its usage, exporting and forgetting a user. What an operator holds.
    Admin,
}

impl KeyScope {
    /// `chat` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyScope::Chat => "chat",
            KeyScope::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Result<Self, KeyError> {
        match s {
            "chat" => Ok(KeyScope::Chat),
            "admin" => Ok(KeyScope::Admin),
            other => Err(KeyError::Storage(format!("unknown key scope `{other}`"))),
        }
    }
}

impl std::str::FromStr for KeyScope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        KeyScope::parse(s).map_err(|_| format!("`{s}` is not a key scope (chat, admin)"))
    }
}

/// A key as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ApiKey {
    /// The key's id (for revoking it).
    pub id: String,
    /// The account it acts for.
    #[schema(value_type = String)]
    pub account: AccountId,
    /// What it may do.
    pub scope: KeyScope,
    /// A label chosen when it was created.
    pub label: String,
    /// When it was created (ms since the Unix epoch).
    pub created_at: i64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// What presenting a key resolved to.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A live key.
    Valid(ApiKey),
    /// A key that was revoked.
    Revoked,
    /// No such key.
    Unknown,
}

/// The key table. Cheap to clone.
#[derive(Clone)]
pub struct ApiKeys {
    db: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys").finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The columns every key query reads, in [`Row`]'s order.
const COLUMNS: &str = "id, account, scope, label, created_at, revoked_at";

type Row = (String, String, String, String, i64, Option<i64>);

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn key_of((id, account, scope, label, created_at, revoked_at): Row) -> Result<ApiKey, KeyError> {
    Ok(ApiKey {
        id,
        account: account
            .parse()
            .map_err(|e| KeyError::Storage(format!("{e}")))?,
        scope: KeyScope::parse(&scope)?,
        label,
        created_at,
        revoked_at,
    })
}

impl ApiKeys {
    /// Opens (creating if needed) the key table in the SQLite file at `path`.
    pub fn open(path: &Path) -> Result<Self, KeyError> {
        let db = Connection::open(path)?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS http_api_keys (
                 id TEXT PRIMARY KEY,
                 account TEXT NOT NULL,
                 label TEXT NOT NULL,
                 hash TEXT NOT NULL UNIQUE,
                 created_at INTEGER NOT NULL,
                 revoked_at INTEGER
             );
             CREATE INDEX IF NOT EXISTS http_api_keys_account ON http_api_keys(account);",
        )?;
        // Keys made before scopes existed could do everything: they stay
        // admin keys.
        let scoped: bool = db
            .prepare("SELECT 1 FROM pragma_table_info('http_api_keys') WHERE name = 'scope'")?
            .exists([])?;
        if !scoped {
            db.execute_batch(
                "ALTER TABLE http_api_keys ADD COLUMN scope TEXT NOT NULL DEFAULT 'admin'",
            )?;
        }
        Ok(Self {
            db: Arc::new(Mutex::new(db)),
        })
    }

    /// Runs `f` on the connection off the async threads.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, KeyError> + Send + 'static,
    ) -> Result<T, KeyError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let conn = db.lock().unwrap_or_else(|e| e.into_inner());
            f(&conn)
        })
        .await
        .map_err(|e| KeyError::Storage(e.to_string()))?
    }

    /// Creates a key for `account`; returns it and its secret, which is
    /// shown this once and never stored.
    pub async fn create(
        &self,
        account: AccountId,
        scope: KeyScope,
        label: &str,
    ) -> Result<(ApiKey, String), KeyError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
        let secret = format!("tk_{}", hex::encode(bytes));
        let key = ApiKey {
            id: uuid::Uuid::now_v7().to_string(),
            account,
            scope,
            label: label.to_owned(),
            created_at: now_ms(),
            revoked_at: None,
        };
        let (stored, digest) = (key.clone(), hash(&secret));
        self.with(move |db| {
            db.execute(
                "INSERT INTO http_api_keys (id, account, scope, label, hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    stored.id,
                    stored.account.to_string(),
                    stored.scope.as_str(),
                    stored.label,
                    digest,
                    stored.created_at
                ],
            )?;
            Ok(())
        })
        .await?;
        Ok((key, secret))
    }

    /// What a presented key is.
    pub async fn verify(&self, secret: &str) -> Result<Verdict, KeyError> {
        let digest = hash(secret);
        let found = self
            .with(move |db| {
                Ok(db
                    .query_row(
                        &format!("SELECT {COLUMNS} FROM http_api_keys WHERE hash = ?1"),
                        [digest],
                        row,
                    )
                    .optional()?)
            })
            .await?;
        Ok(match found {
            None => Verdict::Unknown,
            Some(r) if r.5.is_some() => Verdict::Revoked,
            Some(r) => Verdict::Valid(key_of(r)?),
        })
    }

    /// The keys of an account, oldest first.
    pub async fn list(&self, account: AccountId) -> Result<Vec<ApiKey>, KeyError> {
        let rows = self
            .with(move |db| {
                let mut stmt = db.prepare(&format!(
                    "SELECT {COLUMNS} FROM http_api_keys WHERE account = ?1 ORDER BY created_at, id"
                ))?;
                let rows = stmt
                    .query_map([account.to_string()], row)?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await?;
        rows.into_iter().map(key_of).collect()
    }

    /// Whether any key was ever made, live or revoked: the server mints a
    /// first key only on a file that never had one, never again after.
    pub async fn any_ever(&self) -> Result<bool, KeyError> {
        self.with(|db| {
            let n: i64 = db.query_row("SELECT COUNT(*) FROM http_api_keys", [], |r| r.get(0))?;
            Ok(n > 0)
        })
        .await
    }

    /// Whether the file holds any account of the runtime's directory (the
    /// store's `accounts` table, in the same file): a file with accounts is
    /// not new, key or no key.
    pub async fn any_account(&self) -> Result<bool, KeyError> {
        self.with(|db| {
            let table: bool = db
                .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'accounts'")?
                .exists([])?;
            if !table {
                return Ok(false);
            }
            Ok(db.prepare("SELECT 1 FROM accounts LIMIT 1")?.exists([])?)
        })
        .await
    }

    /// Whether any key is live.
    pub async fn any_live(&self) -> Result<bool, KeyError> {
        self.with(|db| {
            let n: i64 = db.query_row(
                "SELECT COUNT(*) FROM http_api_keys WHERE revoked_at IS NULL",
                [],
                |r| r.get(0),
            )?;
            Ok(n > 0)
        })
        .await
    }

    /// Revokes a key of `account`; false if the account has no such live key.
    pub async fn revoke(&self, account: AccountId, id: &str) -> Result<bool, KeyError> {
        let id = id.to_owned();
        self.with(move |db| {
            let n = db.execute(
                "UPDATE http_api_keys SET revoked_at = ?1 WHERE id = ?2 AND account = ?3 AND revoked_at IS NULL",
                params![now_ms(), id, account.to_string()],
            )?;
            Ok(n == 1)
        })
        .await
    }
}
