//! The schema and its migrations: `PRAGMA user_version` is the number of
//! migrations applied; each runs once, in order, in its own transaction.

use rusqlite::Connection;

use crate::StoreError;

/// The migrations, oldest first. Never edit a released one: append.
const MIGRATIONS: &[&str] = &[
    // 1: files, batches and the lines of batches.
    "CREATE TABLE files (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        purpose TEXT NOT NULL,
        filename TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX files_owner ON files(owner, created_at);
    CREATE TABLE batches (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        input_file_id TEXT NOT NULL,
        completion_window TEXT NOT NULL,
        metadata TEXT,
        status TEXT NOT NULL,
        errors TEXT,
        output_file_id TEXT,
        error_file_id TEXT,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        in_progress_at INTEGER,
        finalizing_at INTEGER,
        completed_at INTEGER,
        failed_at INTEGER,
        expired_at INTEGER,
        cancelling_at INTEGER,
        cancelled_at INTEGER
    );
    CREATE INDEX batches_owner ON batches(owner, seq);
    CREATE TABLE batch_lines (
        batch_id TEXT NOT NULL REFERENCES batches(id) ON DELETE CASCADE,
        line INTEGER NOT NULL,
        custom_id TEXT NOT NULL,
        body TEXT NOT NULL,
        result TEXT,
        failed INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (batch_id, line)
    );",
];

/// Brings the database up to the newest schema.
pub fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > known {
        return Err(StoreError::NewerSchema { found, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_is_a_no_op_and_newer_schemas_are_refused() {
        let conn = Connection::open_in_memory().expect("db");
        migrate(&conn).expect("first");
        migrate(&conn).expect("second");
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(v, MIGRATIONS.len() as i64);
        conn.pragma_update(None, "user_version", 99).expect("set");
        assert!(matches!(
            migrate(&conn),
            Err(StoreError::NewerSchema { found: 99, .. })
        ));
    }
}
