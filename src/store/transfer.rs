//! `--cache-to type=local,dest=DIR` and `--cache-from type=local,src=DIR`:
//! the cache entries a build used, with their layer blobs, in a directory
//! a CI system can save and restore between jobs.
//!
//! ```text
//! DIR/kiln-cache.json          {"version": 1, "entries": {KEY: ENTRY, ...}}
//! DIR/blobs/sha256/<hex>       the layers
//! ```
//!
//! Export adds to what the directory holds (blobs are written to a
//! temporary name and renamed; the entry list last). Import copies into
//! the store only what it lacks, checking each blob's digest, and writes
//! an entry only once its blob is in.

use super::index::{Entry, VERSION};
use super::{digest_hex, Store};
use crate::layer::compress::HashingWriter;
use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::Path;

#[derive(Serialize, Deserialize, Default)]
struct Manifest {
    version: u32,
    entries: BTreeMap<String, Entry>,
}

fn read_manifest(dir: &Path) -> Result<Manifest> {
    let p = dir.join("kiln-cache.json");
    match fs::read(&p) {
        Ok(b) => {
            let m: Manifest = serde_json::from_slice(&b)
                .with_context(|| format!("{} is not a kiln cache", p.display()))?;
            if m.version != VERSION {
                return Ok(Manifest::default());
            }
            Ok(m)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
    }
}

impl Store {
    /// Copies the blob at `src` (an OCI layout's, a cache directory's)
    /// into the store, checking its digest on the way; does nothing when
    /// the store has it.
    pub fn import_file(&self, src: &Path, digest: &str) -> Result<std::path::PathBuf> {
        if self.has(digest) {
            return Ok(self.blob_path(digest)?);
        }
        let tmp = self.temp_file()?;
        let mut f = fs::File::open(src).with_context(|| format!("cannot open blob {digest}"))?;
        let mut w = HashingWriter::new(tmp.reopen().context("cannot open a temporary file")?);
        std::io::copy(&mut f, &mut w).with_context(|| format!("cannot copy blob {digest}"))?;
        let (_, actual, _) = w.finish();
        if actual != digest {
            bail!(
                "blob {digest} has digest {actual}: {} is corrupt",
                src.display()
            );
        }
        Ok(self.commit(tmp, digest)?)
    }
}

/// Copies `src` to `dest` (outside the store) through a temporary file
/// beside it, checking that its sha256 is `digest`.
fn copy_checked(src: &Path, dest: &Path, digest: &str) -> Result<()> {
    let dir = dest.parent().context("a blob path has a parent")?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(&Store::temp_prefix("blob"))
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let mut f = fs::File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
    let mut w = HashingWriter::new(tmp.reopen().context("cannot open a temporary file")?);
    std::io::copy(&mut f, &mut w).with_context(|| format!("cannot copy {}", src.display()))?;
    let (_, actual, _) = w.finish();
    if actual != digest {
        bail!("{} has digest {actual}, not {digest}", src.display());
    }
    tmp.persist(dest)
        .with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(())
}

/// Writes the entries of `keys` (those the store has) and their blobs to
/// `dir`; returns how many entries.
pub fn export(store: &Store, keys: &[String], dir: &Path) -> Result<usize> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut m = read_manifest(dir)?;
    m.version = VERSION;
    let mut n = 0;
    for key in keys {
        let Ok(entry) = store.cache_get(key) else {
            continue;
        };
        let dest = dir.join("blobs/sha256").join(digest_hex(&entry.digest)?);
        if !dest.is_file() {
            copy_checked(&store.blob_path(&entry.digest)?, &dest, &entry.digest)?;
        }
        m.entries.insert(key.clone(), entry);
        n += 1;
    }
    let bytes = serde_json::to_vec_pretty(&m)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&Store::temp_prefix("cache"))
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(&bytes)?;
    tmp.persist(dir.join("kiln-cache.json"))
        .with_context(|| format!("cannot write {}", dir.display()))?;
    Ok(n)
}

/// Copies into the store the entries of `dir` it lacks; returns how many.
pub fn import(store: &Store, dir: &Path) -> Result<usize> {
    let m = read_manifest(dir)?;
    let mut n = 0;
    for (key, entry) in m.entries {
        digest_hex(&key)?;
        if store.cache_get(&key).is_ok() {
            continue;
        }
        let in_store = store.has(&entry.digest);
        let src = if in_store {
            store.blob_path(&entry.digest)?
        } else {
            dir.join("blobs/sha256").join(digest_hex(&entry.digest)?)
        };
        if !src.is_file() {
            continue;
        }
        // The entry's diffID goes into image configs: check it against
        // the layer's contents (the store's copy, or the imported one
        // before the store takes it).
        let actual = diff_id_of(&src)?;
        if actual != entry.diff_id {
            bail!(
                "{}: the layer {} uncompresses to {actual}, not the diffID {} its entry \
                 claims: the cache is corrupt",
                dir.display(),
                entry.digest,
                entry.diff_id
            );
        }
        if !in_store {
            store.import_file(&src, &entry.digest)?;
        }
        store.cache_put(&key, &entry)?;
        n += 1;
    }
    Ok(n)
}

/// The sha256 of a layer blob's uncompressed contents.
fn diff_id_of(blob: &Path) -> Result<String> {
    let f = fs::File::open(blob).with_context(|| format!("cannot open {}", blob.display()))?;
    let (mut r, _) = crate::layer::apply::decompressed(std::io::BufReader::new(f))
        .with_context(|| format!("cannot uncompress {}", blob.display()))?;
    let mut w = HashingWriter::new(std::io::sink());
    std::io::copy(&mut r, &mut w)
        .with_context(|| format!("cannot uncompress {}", blob.display()))?;
    let (_, digest, _) = w.finish();
    Ok(digest)
}
