//! Online backups of the store's file, and restoring one
//! ([`SqliteStore::backup`], [`SqliteStore::restore`]), through SQLite's
//! backup API (rusqlite's `backup` module).

use std::path::{Path, PathBuf};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::SqliteStore;

/// What a backup or a restore copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupReport {
    /// Database pages copied.
    pub pages: u64,
    /// The size of the file written, in bytes.
    pub bytes: u64,
}

/// Why a backup or a restore did not happen (nothing was changed at the
/// source; a partial destination is removed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The destination exists: a backup or restore never writes over a file.
    #[error("{0} exists: a backup or restore writes a new file only")]
    Exists(PathBuf),
    /// SQLite refused.
    #[error("backup of {path} failed: {source}")]
    Sqlite {
        /// The file SQLite refused.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The file system refused.
    #[error("backup to {path} failed: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The blocking task copying the file did not finish.
    #[error("the backup task stopped: {0}")]
    Task(String),
}

impl SqliteStore {
    /// Copies the store's database, as it is at one moment, to a new file
    /// `to`, while the store goes on serving.
    ///
    /// The copy is made by SQLite's backup API from a read-only connection
    /// of its own, all pages in one step: one read transaction, so the copy
    /// holds exactly what was committed when it began (every step and reply
    /// committed before the call returns-or-began is in it; what commits
    /// meanwhile is not), and the store's writes go on during it (WAL).
    /// Restore it with [`SqliteStore::restore`]; a runtime opened on the
    /// restored file resumes the interactions that were unfinished at that
    /// moment (`Runtime::recover`).
    pub async fn backup(&self, to: impl AsRef<Path>) -> Result<BackupReport, BackupError> {
        let (from, to) = (self.path().to_path_buf(), to.as_ref().to_path_buf());
        tokio::task::spawn_blocking(move || copy(&from, &to, true))
            .await
            .map_err(|e| BackupError::Task(e.to_string()))?
    }

    /// Restores backup `from` as a new database file `to` (it must not
    /// exist), to be opened with [`SqliteStore::open`].
    pub async fn restore(
        from: impl AsRef<Path>,
        to: impl AsRef<Path>,
    ) -> Result<BackupReport, BackupError> {
        let (from, to) = (from.as_ref().to_path_buf(), to.as_ref().to_path_buf());
        tokio::task::spawn_blocking(move || copy(&from, &to, false))
            .await
            .map_err(|e| BackupError::Task(e.to_string()))?
    }
}

/// Copies database `from` into the new file `to` in one backup step.
fn copy(from: &Path, to: &Path, online: bool) -> Result<BackupReport, BackupError> {
    if to.exists() {
        return Err(BackupError::Exists(to.to_path_buf()));
    }
    let sqlite = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BackupError::Sqlite { path, source }
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let source = Connection::open_with_flags(from, flags).map_err(sqlite(from))?;
    let result = (|| {
        let mut target = Connection::open(to).map_err(sqlite(to))?;
        let pages = {
            let backup = Backup::new(&source, &mut target).map_err(sqlite(to))?;
            // All pages at once: one read transaction on the source, so the
            // copy is one moment's database however busy its writers are.
            match backup.step(-1).map_err(sqlite(from))? {
                StepResult::Done => {}
                // Locked or busy: the store's connection holds a write
                // lock that a read-only reader cannot pass (not in WAL).
                other => {
                    return Err(BackupError::Sqlite {
                        path: from.to_path_buf(),
                        source: rusqlite::Error::SqliteFailure(
                            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                            Some(format!("the backup could not read the database: {other:?}")),
                        ),
                    });
                }
            }
            backup.progress().pagecount
        };
        if online {
            // The copy keeps the source's WAL mode; fold its log in so the
            // backup is one self-contained file.
            target
                .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
                .map_err(sqlite(to))?;
        }
        drop(target);
        let bytes = std::fs::metadata(to)
            .map_err(|source| BackupError::Io {
                path: to.to_path_buf(),
                source,
            })?
            .len();
        Ok(BackupReport {
            pages: u64::try_from(pages).unwrap_or(0),
            bytes,
        })
    })();
    if result.is_err() {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", to.display()));
        }
    }
    result
}
