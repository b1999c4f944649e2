//! File records: who uploaded what, for which purpose.

use rusqlite::{params, OptionalExtension, Row};

use crate::{Store, StoreError};

/// A file to record (its contents already committed with a
/// [`crate::BlobWriter`]).
#[derive(Debug, Clone)]
pub struct NewFile {
    /// `file-...`.
    pub id: String,
    /// Who may see it.
    pub owner: String,
    /// `batch`, `batch_output`, ...
    pub purpose: String,
    /// The name it was uploaded under.
    pub filename: String,
    /// Its size.
    pub bytes: u64,
}

/// A recorded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// `file-...`.
    pub id: String,
    /// Who may see it.
    pub owner: String,
    /// `batch`, `batch_output`, ...
    pub purpose: String,
    /// The name it was uploaded under.
    pub filename: String,
    /// Its size.
    pub bytes: u64,
    /// Unix seconds.
    pub created_at: i64,
}

const COLUMNS: &str = "id, owner, purpose, filename, bytes, created_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<FileRecord> {
    Ok(FileRecord {
        id: r.get(0)?,
        owner: r.get(1)?,
        purpose: r.get(2)?,
        filename: r.get(3)?,
        bytes: r.get::<_, i64>(4)?.max(0) as u64,
        created_at: r.get(5)?,
    })
}

pub(crate) fn insert(conn: &rusqlite::Connection, f: &NewFile) -> rusqlite::Result<FileRecord> {
    let created_at = crate::unix_now();
    conn.execute(
        "INSERT INTO files (id, owner, purpose, filename, bytes, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            f.id,
            f.owner,
            f.purpose,
            f.filename,
            i64::try_from(f.bytes).unwrap_or(i64::MAX),
            created_at
        ],
    )?;
    Ok(FileRecord {
        id: f.id.clone(),
        owner: f.owner.clone(),
        purpose: f.purpose.clone(),
        filename: f.filename.clone(),
        bytes: f.bytes,
        created_at,
    })
}

impl Store {
    /// Records a file whose contents are committed.
    pub fn insert_file(&self, f: &NewFile) -> Result<FileRecord, StoreError> {
        Ok(insert(&self.conn(), f)?)
    }

    /// `owner`'s file `id`.
    pub fn file(&self, owner: &str, id: &str) -> Result<Option<FileRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM files WHERE id = ?1 AND owner = ?2"),
                params![id, owner],
                from_row,
            )
            .optional()?)
    }

    pub(crate) fn file_exists(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM files WHERE id = ?1", params![id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// `owner`'s files, newest first, optionally of one purpose, after the
    /// file `after` (a cursor from a previous page), at most `limit`.
    pub fn files(
        &self,
        owner: &str,
        purpose: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<FileRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM files
             WHERE owner = ?1 AND (?2 IS NULL OR purpose = ?2)
               AND (?3 IS NULL OR rowid < (SELECT rowid FROM files WHERE id = ?3))
             ORDER BY rowid DESC LIMIT ?4"
        ))?;
        let rows = stmt.query_map(
            params![
                owner,
                purpose,
                after,
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            from_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes `owner`'s file `id`, record and contents; whether it existed.
    pub fn delete_file(&self, owner: &str, id: &str) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "DELETE FROM files WHERE id = ?1 AND owner = ?2",
            params![id, owner],
        )?;
        if n > 0 {
            let path = self.blob_path(id);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(format!("removing {}", path.display()), e)),
            }
        }
        Ok(n > 0)
    }
}
