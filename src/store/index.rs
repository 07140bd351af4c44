//! The build cache's index: what a step with a given cache key produced.
//!
//! Each entry is one small JSON file, `<root>/cache/index/<key hex>`,
//! written to a temporary file and renamed into place, so a reader sees a
//! whole entry or none, whatever happens to the writer. An entry only
//! points at blobs; it is served only while the store still has them.
//! Its file's mtime is the entry's last use (a hit touches it), which
//! `kiln prune --filter until=` and `--keep-storage` read.
//!
//! Building a step that missed happens under an exclusive `flock` of
//! `<root>/cache/locks/<key hex>`: a second process (or thread) that
//! wants the same key waits, then finds the entry and uses it. There is
//! no global lock; readers take none.

use super::{digest_hex, io_err, Store, StoreError};
use crate::image::LayerBlob;
use crate::layer::compress::Compression;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::PathBuf;

/// Bumped when the meaning of keys or entries changes: old entries are
/// then never read (they age out through prune).
pub const VERSION: u32 = 1;

/// What a cached step produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub version: u32,
    /// The layer: a blob in the store.
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    /// `gzip`, `zstd` or `none`.
    pub compression: String,
    /// When the entry was made (seconds since the epoch).
    pub created: i64,
    /// The instruction, for `kiln du` and explanations.
    pub text: String,
}

impl Entry {
    pub fn new(layer: &LayerBlob, text: &str) -> Entry {
        Entry {
            version: VERSION,
            digest: layer.digest.clone(),
            diff_id: layer.diff_id.clone(),
            size: layer.size,
            compression: compression_name(layer.compression).into(),
            created: crate::build::unix_now(),
            text: text.to_string(),
        }
    }

    pub fn layer(&self) -> LayerBlob {
        let compression = match self.compression.as_str() {
            "zstd" => Compression::Zstd { level: 3 },
            "none" => Compression::None,
            _ => Compression::Gzip { level: 6 },
        };
        LayerBlob {
            digest: self.digest.clone(),
            diff_id: self.diff_id.clone(),
            size: self.size,
            compression,
        }
    }
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::Gzip { .. } => "gzip",
        Compression::Zstd { .. } => "zstd",
        Compression::None => "none",
    }
}

/// Why a key has no usable entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// No entry was ever written (or it was pruned).
    Absent,
    /// The entry's layer blob is gone from the store (pruned).
    BlobGone(String),
}

/// An exclusive hold on one key, released when dropped.
pub struct KeyLock {
    _file: fs::File,
}

impl Store {
    fn index_path(&self, key: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join("cache/index").join(digest_hex(key)?))
    }

    /// The entry for `key`, if there is one whose layer the store has.
    /// A hit marks the entry used. An unreadable entry is a miss (and is
    /// removed): entries are renamed into place, so only a disk fault or
    /// an older kiln makes one.
    pub fn cache_get(&self, key: &str) -> Result<Entry, Miss> {
        let Ok(path) = self.index_path(key) else {
            return Err(Miss::Absent);
        };
        let Ok(bytes) = fs::read(&path) else {
            return Err(Miss::Absent);
        };
        let entry: Entry = match serde_json::from_slice(&bytes) {
            Ok(e) => e,
            Err(_) => {
                let _ = fs::remove_file(&path);
                return Err(Miss::Absent);
            }
        };
        if entry.version != VERSION || digest_hex(&entry.diff_id).is_err() {
            return Err(Miss::Absent);
        }
        if !self.has(&entry.digest) {
            return Err(Miss::BlobGone(entry.digest));
        }
        let _ = touch(&path);
        Ok(entry)
    }

    /// Records what `key` produced. The layer blob must be in the store
    /// already, so that an entry never points at nothing.
    pub fn cache_put(&self, key: &str, entry: &Entry) -> Result<(), StoreError> {
        let path = self.index_path(key)?;
        let bytes = serde_json::to_vec(entry).map_err(|e| StoreError::Io {
            what: "cannot encode the cache entry for",
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        self.write_file(&path, &bytes)
    }

    /// Takes the lock of `key` (waiting while another build holds it).
    pub fn cache_lock(&self, key: &str) -> Result<KeyLock, StoreError> {
        let dir = self.root.join("cache/locks");
        fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
        let path = dir.join(digest_hex(key)?);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("cannot open", &path))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
            StoreError::Io {
                what: "cannot lock",
                path: path.clone(),
                source: e.into(),
            }
        })?;
        Ok(KeyLock { _file: file })
    }

    /// Every entry of the index, with its key and last use (unreadable
    /// ones are skipped).
    pub fn cache_entries(&self) -> Vec<(String, Entry, std::time::SystemTime)> {
        let dir = self.root.join("cache/index");
        let Ok(rd) = fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let key = format!("sha256:{name}");
            if digest_hex(&key).is_err() {
                continue;
            }
            let Ok(bytes) = fs::read(e.path()) else {
                continue;
            };
            let Ok(entry) = serde_json::from_slice::<Entry>(&bytes) else {
                continue;
            };
            let used = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            out.push((key, entry, used));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Removes the entry of `key` (prune).
    pub fn cache_remove(&self, key: &str) {
        if let Ok(p) = self.index_path(key) {
            let _ = fs::remove_file(p);
        }
    }
}

fn touch(path: &std::path::Path) -> std::io::Result<()> {
    let f = fs::OpenOptions::new().append(true).open(path)?;
    f.set_modified(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(store: &Store) -> LayerBlob {
        let digest = store.put_bytes(b"layer").expect("put");
        LayerBlob {
            digest,
            diff_id: format!("sha256:{}", "ab".repeat(32)),
            size: 5,
            compression: Compression::Gzip { level: 6 },
        }
    }

    #[test]
    fn entries_round_trip_and_need_their_blob() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let key = format!("sha256:{}", "01".repeat(32));
        assert_eq!(store.cache_get(&key), Err(Miss::Absent));
        let layer = blob(&store);
        let e = Entry::new(&layer, "RUN x");
        store.cache_put(&key, &e).expect("put");
        assert_eq!(store.cache_get(&key), Ok(e.clone()));
        assert_eq!(store.cache_get(&key).map(|e| e.layer()), Ok(layer.clone()));
        fs::remove_file(store.blob_path(&layer.digest).expect("path")).expect("rm");
        assert_eq!(
            store.cache_get(&key),
            Err(Miss::BlobGone(layer.digest.clone()))
        );
    }

    #[test]
    fn a_damaged_entry_is_a_miss_and_goes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let key = format!("sha256:{}", "02".repeat(32));
        let path = store.index_path(&key).expect("path");
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, b"{\"version\":1,").expect("write");
        assert_eq!(store.cache_get(&key), Err(Miss::Absent));
        assert!(!path.exists());
        assert!(store.cache_get("not a key").is_err());
    }
}
