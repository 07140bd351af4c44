//! Layer snapshots: each image layer applied once into its own directory,
//! `<store>/snapshots/sha256/<diffID hex>`, kept across builds. A snapshot
//! holds one layer's changes in overlayfs's form (whiteouts as 0/0
//! character devices, opaque directories by xattr), so a stack of them is
//! a root filesystem when mounted as an overlay's lower directories.
//!
//! A snapshot is made in the store's `tmp/` and renamed into place once
//! its content matched the diffID, so a present snapshot is complete and
//! verified; nothing writes to it afterwards.

use crate::layer::apply::{self, ApplyOptions};
use crate::store::{digest_hex, Store};
use anyhow::{bail, Context as _, Result};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The snapshot of the layer with `diff_id`, made from the stored blob
/// `digest` if the store has none yet.
pub fn ensure(store: &Store, digest: &str, diff_id: &str) -> Result<PathBuf> {
    let dir = store.root().join("snapshots/sha256");
    let path = dir.join(digest_hex(diff_id)?);
    if path.is_dir() {
        return Ok(path);
    }
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(&Store::temp_prefix("snapshot"))
        .tempdir_in(store.root().join("tmp"))
        .context("cannot create a snapshot directory")?;
    unpack(&store.blob_path(digest)?, digest, diff_id, tmp.path(), true)?;
    match fs::rename(tmp.path(), &path) {
        Ok(()) => {
            // Renamed: nothing is left for the TempDir to remove.
            let _ = tmp.keep();
            Ok(path)
        }
        // Another build made it first: theirs is as good.
        Err(_) if path.is_dir() => Ok(path),
        Err(e) => Err(e).with_context(|| format!("cannot move a snapshot to {}", path.display())),
    }
}

/// Applies the stored blob `digest` to `dest`, checking that it unpacks
/// to `diff_id`: as a layer over what `dest` holds (`overlay` false), or
/// into an empty snapshot directory (`overlay` true).
pub fn unpack(
    stored: &Path,
    digest: &str,
    diff_id: &str,
    dest: &Path,
    overlay: bool,
) -> Result<()> {
    let f = File::open(stored).with_context(|| format!("cannot open layer {digest}"))?;
    let (reader, _) = apply::decompressed(io::BufReader::new(f))
        .with_context(|| format!("cannot decompress layer {digest}"))?;
    let mut hashing = HashingReader::new(apply::ReadAhead::new(reader));
    let opts = ApplyOptions {
        whiteouts: true,
        same_owner: true,
        chown: None,
        devices: true,
        overlay,
    };
    apply::apply(&mut hashing, dest, "", &opts)
        .with_context(|| format!("cannot unpack layer {digest}"))?;
    io::copy(&mut hashing, &mut io::sink())
        .with_context(|| format!("cannot read layer {digest}"))?;
    let actual = hashing.digest();
    if actual != diff_id {
        bail!("layer {digest} unpacks to {actual}, but the config says {diff_id}");
    }
    Ok(())
}

/// A reader that sha256-hashes what passes through.
struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        use sha2::Digest;
        HashingReader {
            inner,
            hasher: sha2::Sha256::new(),
        }
    }
    fn digest(self) -> String {
        use sha2::Digest;
        let d = self.hasher.finalize();
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// `chain` with no directory twice, as overlayfs requires: a layer that
/// comes back (the same diffID again, say two identical COPYs) is skipped
/// when empty, else used through a copy of its snapshot beside it
/// (`<snapshot>.<n>`), made once.
pub fn distinct(chain: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut seen = std::collections::HashMap::<&Path, usize>::new();
    let mut out = Vec::with_capacity(chain.len());
    for dir in chain {
        let n = seen.entry(dir.as_path()).or_insert(0);
        *n += 1;
        if *n == 1 {
            out.push(dir.clone());
            continue;
        }
        let empty = fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_none();
        if empty {
            continue;
        }
        let alias = PathBuf::from(format!("{}.{}", dir.display(), *n - 1));
        if !alias.is_dir() {
            let tmp = PathBuf::from(format!("{}.tmp-{}", alias.display(), std::process::id()));
            let _ = fs::remove_dir_all(&tmp);
            crate::snapshot::copy::copy_tree(dir, &tmp)
                .with_context(|| format!("cannot copy {}", dir.display()))?;
            if fs::rename(&tmp, &alias).is_err() && !alias.is_dir() {
                bail!("cannot make {}", alias.display());
            }
            let _ = fs::remove_dir_all(&tmp);
        }
        out.push(alias);
    }
    Ok(out)
}
