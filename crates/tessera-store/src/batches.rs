//! Batch jobs and their lines. A line's result is written the moment it is
//! known, in its own transaction, and never overwritten: after a crash the
//! lines without a result are exactly those still to run.

use rusqlite::{params, OptionalExtension, Row};
use serde_json::Value;

use crate::files::{self, FileRecord, NewFile};
use crate::{Store, StoreError};

/// A batch's lifecycle, OpenAI's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchStatus {
    /// The input file is being checked.
    Validating,
    /// The input was invalid (see the batch's errors).
    Failed,
    /// Lines are running.
    InProgress,
    /// Every line ran; the output files are being written.
    Finalizing,
    /// Done.
    Completed,
    /// The completion window ended first; finished lines are kept.
    Expired,
    /// Cancel asked; lines already running finish.
    Cancelling,
    /// Cancelled; finished lines are kept.
    Cancelled,
}

impl BatchStatus {
    /// OpenAI's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validating => "validating",
            Self::Failed => "failed",
            Self::InProgress => "in_progress",
            Self::Finalizing => "finalizing",
            Self::Completed => "completed",
            Self::Expired => "expired",
            Self::Cancelling => "cancelling",
            Self::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "validating" => Self::Validating,
            "in_progress" => Self::InProgress,
            "finalizing" => Self::Finalizing,
            "completed" => Self::Completed,
            "expired" => Self::Expired,
            "cancelling" => Self::Cancelling,
            "cancelled" => Self::Cancelled,
            _ => Self::Failed,
        }
    }

    /// Whether nothing more will happen to the batch.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Failed | Self::Completed | Self::Expired | Self::Cancelled
        )
    }

    /// The column of the time the batch entered this status.
    fn timestamp_column(self) -> Option<&'static str> {
        match self {
            Self::Validating => None,
            Self::Failed => Some("failed_at"),
            Self::InProgress => Some("in_progress_at"),
            Self::Finalizing => Some("finalizing_at"),
            Self::Completed => Some("completed_at"),
            Self::Expired => Some("expired_at"),
            Self::Cancelling => Some("cancelling_at"),
            Self::Cancelled => Some("cancelled_at"),
        }
    }
}

/// A batch to create.
#[derive(Debug, Clone)]
pub struct NewBatch {
    /// `batch_...`.
    pub id: String,
    /// Who may see it.
    pub owner: String,
    /// `/v1/chat/completions`, ...
    pub endpoint: String,
    /// The `batch` file with the lines.
    pub input_file_id: String,
    /// As asked (`24h`).
    pub completion_window: String,
    /// The client's metadata.
    pub metadata: Option<Value>,
    /// When it expires (Unix seconds).
    pub expires_at: i64,
}

/// `request_counts`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCounts {
    /// Lines in the input.
    pub total: u64,
    /// Lines that ran with a 2xx answer.
    pub completed: u64,
    /// Lines that ran and failed.
    pub failed: u64,
}

/// A stored batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRecord {
    /// `batch_...`.
    pub id: String,
    /// Who may see it.
    pub owner: String,
    /// `/v1/chat/completions`, ...
    pub endpoint: String,
    /// The `batch` file with the lines.
    pub input_file_id: String,
    /// As asked.
    pub completion_window: String,
    /// The client's metadata.
    pub metadata: Option<Value>,
    /// Where it is.
    pub status: BatchStatus,
    /// The input's errors (`failed` batches), OpenAI's `errors.data`.
    pub errors: Option<Value>,
    /// The `batch_output` file of 2xx answers.
    pub output_file_id: Option<String>,
    /// The `batch_output` file of failed lines.
    pub error_file_id: Option<String>,
    /// Unix seconds of each step (`None`: not reached).
    pub created_at: i64,
    /// When the window ends.
    pub expires_at: i64,
    #[allow(missing_docs)]
    pub in_progress_at: Option<i64>,
    #[allow(missing_docs)]
    pub finalizing_at: Option<i64>,
    #[allow(missing_docs)]
    pub completed_at: Option<i64>,
    #[allow(missing_docs)]
    pub failed_at: Option<i64>,
    #[allow(missing_docs)]
    pub expired_at: Option<i64>,
    #[allow(missing_docs)]
    pub cancelling_at: Option<i64>,
    #[allow(missing_docs)]
    pub cancelled_at: Option<i64>,
    /// `request_counts`.
    pub counts: BatchCounts,
}

/// One line of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct LineRecord {
    /// 1-based line number in the input file.
    pub line: u64,
    /// The client's id of the request.
    pub custom_id: String,
    /// The request body (JSON).
    pub body: String,
    /// The output line, once it ran.
    pub result: Option<String>,
    /// Whether it belongs in the error file.
    pub failed: bool,
}

const COLUMNS: &str = "b.id, b.owner, b.endpoint, b.input_file_id, b.completion_window,
    b.metadata, b.status, b.errors, b.output_file_id, b.error_file_id, b.created_at,
    b.expires_at, b.in_progress_at, b.finalizing_at, b.completed_at, b.failed_at,
    b.expired_at, b.cancelling_at, b.cancelled_at,
    (SELECT COUNT(*) FROM batch_lines l WHERE l.batch_id = b.id),
    (SELECT COUNT(*) FROM batch_lines l WHERE l.batch_id = b.id AND l.result IS NOT NULL AND l.failed = 0),
    (SELECT COUNT(*) FROM batch_lines l WHERE l.batch_id = b.id AND l.result IS NOT NULL AND l.failed = 1)";

fn json(text: Option<String>) -> rusqlite::Result<Option<Value>> {
    text.map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        })
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<BatchRecord> {
    let count = |i| r.get::<_, i64>(i).map(|n| n.max(0) as u64);
    Ok(BatchRecord {
        id: r.get(0)?,
        owner: r.get(1)?,
        endpoint: r.get(2)?,
        input_file_id: r.get(3)?,
        completion_window: r.get(4)?,
        metadata: json(r.get(5)?)?,
        status: BatchStatus::parse(&r.get::<_, String>(6)?),
        errors: json(r.get(7)?)?,
        output_file_id: r.get(8)?,
        error_file_id: r.get(9)?,
        created_at: r.get(10)?,
        expires_at: r.get(11)?,
        in_progress_at: r.get(12)?,
        finalizing_at: r.get(13)?,
        completed_at: r.get(14)?,
        failed_at: r.get(15)?,
        expired_at: r.get(16)?,
        cancelling_at: r.get(17)?,
        cancelled_at: r.get(18)?,
        counts: BatchCounts {
            total: count(19)?,
            completed: count(20)?,
            failed: count(21)?,
        },
    })
}

impl Store {
    /// Records a new batch, `validating`.
    pub fn create_batch(&self, b: &NewBatch) -> Result<BatchRecord, StoreError> {
        let metadata = b.metadata.as_ref().map(Value::to_string);
        {
            let conn = self.conn();
            conn.execute(
                "INSERT INTO batches (id, seq, owner, endpoint, input_file_id, completion_window,
                     metadata, status, created_at, expires_at)
                 VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM batches), ?2, ?3, ?4, ?5,
                     ?6, 'validating', ?7, ?8)",
                params![
                    b.id,
                    b.owner,
                    b.endpoint,
                    b.input_file_id,
                    b.completion_window,
                    metadata,
                    crate::unix_now(),
                    b.expires_at
                ],
            )?;
        }
        self.batch_by_id(&b.id)?
            .ok_or(StoreError::Sql(rusqlite::Error::QueryReturnedNoRows))
    }

    /// Batch `id`, whoever owns it.
    pub fn batch_by_id(&self, id: &str) -> Result<Option<BatchRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM batches b WHERE b.id = ?1"),
                params![id],
                from_row,
            )
            .optional()?)
    }

    /// `owner`'s batch `id`.
    pub fn batch(&self, owner: &str, id: &str) -> Result<Option<BatchRecord>, StoreError> {
        Ok(self.batch_by_id(id)?.filter(|b| b.owner == owner))
    }

    /// `owner`'s batches, newest first, after the batch `after`, at most `limit`.
    pub fn batches(
        &self,
        owner: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BatchRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM batches b
             WHERE b.owner = ?1
               AND (?2 IS NULL OR b.seq < (SELECT seq FROM batches WHERE id = ?2))
             ORDER BY b.seq DESC LIMIT ?3"
        ))?;
        let rows = stmt.query_map(
            params![owner, after, i64::try_from(limit).unwrap_or(i64::MAX)],
            from_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Batches not yet in a final status, oldest first: the work to (re)start.
    pub fn unfinished_batches(&self) -> Result<Vec<BatchRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM batches b
             WHERE b.status IN ('validating', 'in_progress', 'finalizing', 'cancelling')
             ORDER BY b.seq"
        ))?;
        let rows = stmt.query_map([], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Moves a batch to `status` (stamping its time) if it is in one of
    /// `from`; whether it moved.
    pub fn set_batch_status(
        &self,
        id: &str,
        from: &[BatchStatus],
        status: BatchStatus,
    ) -> Result<bool, StoreError> {
        let conn = self.conn();
        Ok(transition(&conn, id, from, status)? > 0)
    }

    /// A validated batch: its lines, and `in_progress`, in one transaction.
    pub fn start_batch(
        &self,
        id: &str,
        lines: &[(u64, String, String)],
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if transition(&tx, id, &[BatchStatus::Validating], BatchStatus::InProgress)? == 0 {
            return Ok(false);
        }
        {
            let mut insert = tx.prepare(
                "INSERT INTO batch_lines (batch_id, line, custom_id, body) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (line, custom_id, body) in lines {
                insert.execute(params![id, *line as i64, custom_id, body])?;
            }
        }
        tx.commit()?;
        Ok(true)
    }

    /// An invalid input: `failed`, with OpenAI's `errors.data`.
    pub fn fail_batch(&self, id: &str, errors: &Value) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE batches SET errors = ?2 WHERE id = ?1",
            params![id, errors.to_string()],
        )?;
        transition(&tx, id, &[BatchStatus::Validating], BatchStatus::Failed)?;
        tx.commit()?;
        Ok(())
    }

    /// The lines of batch `id`, in input order.
    pub fn batch_lines(&self, id: &str, pending_only: bool) -> Result<Vec<LineRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT line, custom_id, body, result, failed FROM batch_lines
             WHERE batch_id = ?1 AND (?2 = 0 OR result IS NULL) ORDER BY line",
        )?;
        let rows = stmt.query_map(params![id, pending_only as i64], |r| {
            Ok(LineRecord {
                line: r.get::<_, i64>(0)?.max(0) as u64,
                custom_id: r.get(1)?,
                body: r.get(2)?,
                result: r.get(3)?,
                failed: r.get::<_, i64>(4)? != 0,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a line's output, once: a line that already has one keeps it.
    pub fn finish_line(
        &self,
        id: &str,
        line: u64,
        result: &str,
        failed: bool,
    ) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE batch_lines SET result = ?3, failed = ?4
             WHERE batch_id = ?1 AND line = ?2 AND result IS NULL",
            params![id, line as i64, result, failed as i64],
        )?;
        Ok(n > 0)
    }

    /// Ends a batch: records its output files (contents committed) and moves
    /// it from `from` to `status`, in one transaction.
    pub fn end_batch(
        &self,
        id: &str,
        from: &[BatchStatus],
        status: BatchStatus,
        output: Option<&NewFile>,
        errors: Option<&NewFile>,
    ) -> Result<(Option<FileRecord>, Option<FileRecord>), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if transition(&tx, id, from, status)? == 0 {
            return Ok((None, None));
        }
        let output = output.map(|f| files::insert(&tx, f)).transpose()?;
        let errors = errors.map(|f| files::insert(&tx, f)).transpose()?;
        tx.execute(
            "UPDATE batches SET output_file_id = ?2, error_file_id = ?3 WHERE id = ?1",
            params![
                id,
                output.as_ref().map(|f| &f.id),
                errors.as_ref().map(|f| &f.id)
            ],
        )?;
        tx.commit()?;
        Ok((output, errors))
    }
}

fn transition(
    conn: &rusqlite::Connection,
    id: &str,
    from: &[BatchStatus],
    status: BatchStatus,
) -> Result<usize, StoreError> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let from = serde_json::to_string(&from)?;
    let filter = "WHERE id = ?1 AND status IN (SELECT value FROM json_each(?2))";
    Ok(match status.timestamp_column() {
        Some(c) => conn.execute(
            &format!("UPDATE batches SET status = ?3, {c} = COALESCE({c}, ?4) {filter}"),
            params![id, from, status.as_str(), crate::unix_now()],
        )?,
        None => conn.execute(
            &format!("UPDATE batches SET status = ?3 {filter}"),
            params![id, from, status.as_str()],
        )?,
    })
}
