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
use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read as _, Write as _};
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

/// Copies `src` to `dest` through a temporary file in `tmp_dir` (the
/// store's `tmp/`, which the store sweeps, or the destination's own
/// directory), checking that its sha256 is `digest`.
fn copy_checked(src: &Path, dest: &Path, digest: &str, tmp_dir: Option<&Path>) -> Result<()> {
    use sha2::Digest as _;
    let dir = dest.parent().context("a blob path has a parent")?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp_dir = tmp_dir.unwrap_or(dir);
    let mut tmp = tempfile::Builder::new()
        .prefix(&Store::temp_prefix("blob"))
        .tempfile_in(tmp_dir)
        .with_context(|| format!("cannot write in {}", tmp_dir.display()))?;
    let mut f = fs::File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", src.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        tmp.write_all(&buf[..n])
            .with_context(|| format!("cannot write {}", dest.display()))?;
    }
    let actual = format!("sha256:{}", crate::layer::compress::hex(&h.finalize()));
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
            copy_checked(&store.blob_path(&entry.digest)?, &dest, &entry.digest, None)?;
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
        if !store.has(&entry.digest) {
            let src = dir.join("blobs/sha256").join(digest_hex(&entry.digest)?);
            if !src.is_file() {
                continue;
            }
            let tmp = store.root().join("tmp");
            copy_checked(
                &src,
                &store.blob_path(&entry.digest)?,
                &entry.digest,
                Some(&tmp),
            )?;
        }
        store.cache_put(&key, &entry)?;
        n += 1;
    }
    Ok(n)
}
