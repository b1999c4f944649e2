//! tessera's persistence: uploaded files and batch jobs, kept in a data
//! directory so that they outlive the process.
//!
//! Metadata lives in SQLite (`tessera.db`, WAL mode, schema versioned by
//! `PRAGMA user_version`); file contents live beside it under `files/`, each
//! written to a temporary name, fsynced and renamed, so a crash leaves either
//! the whole file or none. Every call is blocking: async callers run them on a
//! blocking thread.

mod batches;
mod blobs;
mod files;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::Connection;

pub use batches::{BatchCounts, BatchRecord, BatchStatus, LineRecord, NewBatch};
pub use blobs::BlobWriter;
pub use files::{FileRecord, NewFile};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database.
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The file system.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Another process holds the data directory.
    #[error("{0} is in use by another tessera process")]
    Locked(PathBuf),
    /// A database written by a newer tessera.
    #[error("the data directory's schema version {found} is newer than this tessera's ({known})")]
    NewerSchema {
        /// The version found.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
    /// A stored JSON value that does not parse (a damaged database).
    #[error("stored JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl StoreError {
    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// The store over one data directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    conn: Mutex<Connection>,
    /// Held (locked) while the store is open: two processes running the
    /// same batches would run their lines twice.
    _lock: std::fs::File,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, migrating its schema.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let files = dir.join(blobs::FILES_DIR);
        std::fs::create_dir_all(&files)
            .map_err(|e| StoreError::io(format!("creating {}", files.display()), e))?;
        let lock_path = dir.join("lock");
        let lock = std::fs::File::create(&lock_path)
            .map_err(|e| StoreError::io(format!("creating {}", lock_path.display()), e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(dir.into())),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::io(
                    format!("locking {}", lock_path.display()),
                    e,
                ))
            }
        }
        let conn = Connection::open(dir.join("tessera.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // WAL with NORMAL loses at most the last commits on power loss, never
        // consistency; FULL makes every finished batch line durable at once.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        schema::migrate(&conn)?;
        let store = Self {
            dir: dir.to_path_buf(),
            conn: Mutex::new(conn),
            _lock: lock,
        };
        blobs::remove_orphans(&store)?;
        Ok(store)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
