//! The file sink: one JSON line per event, appended; when the next line
//! would take the file past its size it is flushed, fsynced and renamed
//! `PATH.1` (older ones shift to `PATH.2`, ...), and a new file begins, so
//! no line is split or lost at a rotation.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::mpsc::Receiver;

use prometheus::IntCounter;

use super::Event;

/// A size-rotated JSON-lines file.
pub(super) struct Rotating {
    path: PathBuf,
    max_bytes: u64,
    max_files: usize,
    file: Option<BufWriter<File>>,
    size: u64,
}

impl Rotating {
    pub(super) fn new(path: PathBuf, max_bytes: u64, max_files: usize) -> Self {
        Self {
            path,
            max_bytes,
            max_files: max_files.max(1),
            file: None,
            size: 0,
        }
    }

    fn rotated(&self, k: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{k}"));
        PathBuf::from(name)
    }

    fn open(&mut self) -> io::Result<&mut BufWriter<File>> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.size = f.metadata()?.len();
            self.file = Some(BufWriter::new(f));
        }
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("file not open"))
    }

    fn rotate(&mut self) -> io::Result<()> {
        if let Some(mut w) = self.file.take() {
            w.flush()?;
            w.get_ref().sync_all()?;
        }
        let _ = std::fs::remove_file(self.rotated(self.max_files));
        for k in (1..self.max_files).rev() {
            let from = self.rotated(k);
            if from.exists() {
                std::fs::rename(&from, self.rotated(k + 1))?;
            }
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        self.size = 0;
        Ok(())
    }

    /// Appends one line (without its newline), rotating first if it would
    /// not fit.
    pub(super) fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.open()?;
        let len = line.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        let w = self.open()?;
        w.write_all(line)?;
        w.write_all(b"\n")?;
        self.size += len;
        Ok(())
    }

    pub(super) fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

/// The sink's thread: writes events as they come, flushing whenever the
/// queue is empty; ends when the logger is dropped.
pub(super) fn run(mut w: Rotating, rx: Receiver<Event>, ok: IntCounter, failed: IntCounter) {
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(event) = next {
            let line = serde_json::to_vec(&event).unwrap_or_default();
            match w.write_line(&line) {
                Ok(()) => ok.inc(),
                Err(e) => {
                    failed.inc();
                    tracing::warn!(path = %w.path.display(), error = %e, "payload log: writing failed");
                    // Reopened on the next event.
                    w.file = None;
                }
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = w.flush() {
            tracing::warn!(path = %w.path.display(), error = %e, "payload log: flushing failed");
            w.file = None;
        }
    }
    let _ = w.flush();
}
