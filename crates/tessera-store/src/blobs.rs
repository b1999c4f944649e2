//! File contents on disk: `files/<id>`, written as `files/.tmp-<id>`, fsynced
//! and renamed, so a reader never sees half a file and a crash leaves only a
//! temporary that the next start removes.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Store, StoreError};

/// The directory of the contents, under the data directory.
pub(crate) const FILES_DIR: &str = "files";
const TMP_PREFIX: &str = ".tmp-";

impl Store {
    /// Where the contents of file `id` are (ids are ours: `file-` and
    /// alphanumerics, never a path).
    pub fn blob_path(&self, id: &str) -> PathBuf {
        self.dir.join(FILES_DIR).join(id)
    }

    /// Starts writing the contents of file `id`.
    pub fn blob_writer(&self, id: &str) -> Result<BlobWriter, StoreError> {
        let dir = self.dir.join(FILES_DIR);
        let tmp = dir.join(format!("{TMP_PREFIX}{id}"));
        let file = File::create(&tmp)
            .map_err(|e| StoreError::io(format!("creating {}", tmp.display()), e))?;
        Ok(BlobWriter {
            file: Some(file),
            tmp,
            target: dir.join(id),
            dir,
            bytes: 0,
        })
    }
}

/// Contents being written; dropped without [`BlobWriter::commit`], they
/// leave nothing behind.
#[derive(Debug)]
pub struct BlobWriter {
    file: Option<File>,
    tmp: PathBuf,
    target: PathBuf,
    dir: PathBuf,
    bytes: u64,
}

impl BlobWriter {
    /// Appends `data`.
    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let file = self.file.as_mut().ok_or_else(|| {
            StoreError::io("writing a committed file", std::io::ErrorKind::Other.into())
        })?;
        file.write_all(data)
            .map_err(|e| StoreError::io(format!("writing {}", self.tmp.display()), e))?;
        self.bytes += data.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Makes the contents durable under their final name; returns their size.
    pub fn commit(mut self) -> Result<u64, StoreError> {
        let Some(file) = self.file.take() else {
            return Ok(self.bytes);
        };
        file.sync_all()
            .map_err(|e| StoreError::io(format!("syncing {}", self.tmp.display()), e))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.target)
            .map_err(|e| StoreError::io(format!("renaming {}", self.tmp.display()), e))?;
        sync_dir(&self.dir)?;
        Ok(self.bytes)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format!("syncing {}", dir.display()), e))
}

/// Removes temporaries and contents without a file record: what a crash
/// between writing and recording leaves.
pub(crate) fn remove_orphans(store: &Store) -> Result<(), StoreError> {
    let dir = store.dir.join(FILES_DIR);
    let entries = std::fs::read_dir(&dir)
        .map_err(|e| StoreError::io(format!("reading {}", dir.display()), e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(TMP_PREFIX) || !store.file_exists(name)? {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}
