//! The content store: blobs addressed by digest, under `<root>/blobs/sha256/<hex>`.
//!
//! A blob is written to a temporary file under `<root>/tmp` and renamed into
//! place once its digest is known, so a crash or a failed write never leaves
//! a partial blob under a digest name (go-containerregistry's
//! `layout/write.go` does the same). Writing a blob that already exists
//! only drops the temporary file.

pub mod gc;
pub mod index;
pub mod transfer;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Store failures, with the path involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid digest {0:?}: expected sha256: and 64 lower-case hex digits")]
    BadDigest(String),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// A content store rooted at a directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// The lock on `<root>/gc.lock`: shared while a build (or any other
    /// user) has the store open, exclusive for `kiln prune`.
    _gc: Option<std::sync::Arc<fs::File>>,
    /// For `kiln prune`: `<root>/gc.turnstile`, held while it waits for
    /// and holds `gc.lock`, so that builds starting meanwhile wait
    /// behind it instead of keeping it waiting for ever.
    _turnstile: Option<std::sync::Arc<fs::File>>,
}

/// The hex part of a `sha256:` digest, checked.
pub fn digest_hex(digest: &str) -> Result<&str, StoreError> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            Ok(h)
        }
        _ => Err(StoreError::BadDigest(digest.to_string())),
    }
}

impl Store {
    /// Opens (creating when missing) the store at `root`, and removes what
    /// interrupted builds left in its `tmp/`.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        Store::open_shared(root)
    }

    /// Opens the store for `kiln prune`: waits until no build has it open,
    /// and keeps builds out until dropped. `waiting` is called once if
    /// that means waiting.
    pub fn open_exclusive(root: &Path, waiting: &dyn Fn()) -> Result<Store, StoreError> {
        let file = Store::gc_file(root)?;
        let turnstile = Store::lock_file(root, "gc.turnstile")?;
        use rustix::fs::FlockOperation as F;
        let lock = |f: &fs::File, name: &str| {
            rustix::fs::flock(f, F::LockExclusive)
                .map_err(|e| io_err("cannot lock", &root.join(name))(e.into()))
        };
        let mut told = false;
        if rustix::fs::flock(&turnstile, F::NonBlockingLockExclusive).is_err() {
            waiting();
            told = true;
            lock(&turnstile, "gc.turnstile")?;
        }
        if rustix::fs::flock(&file, F::NonBlockingLockExclusive).is_err() {
            if !told {
                waiting();
            }
            lock(&file, "gc.lock")?;
        }
        Ok(Store {
            root: root.to_path_buf(),
            _gc: Some(std::sync::Arc::new(file)),
            _turnstile: Some(std::sync::Arc::new(turnstile)),
        })
    }

    fn lock_file(root: &Path, name: &str) -> Result<fs::File, StoreError> {
        let path = root.join(name);
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("cannot open", &path))
    }

    fn gc_file(root: &Path) -> Result<fs::File, StoreError> {
        for dir in [root.join("blobs/sha256"), root.join("tmp")] {
            fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
        }
        Store::lock_file(root, "gc.lock")
    }

    fn open_shared(root: &Path) -> Result<Store, StoreError> {
        let file = Store::gc_file(root)?;
        use rustix::fs::FlockOperation as F;
        // Through the turnstile: a prune waiting for the builds that run
        // goes before the builds that start after it.
        let turnstile = Store::lock_file(root, "gc.turnstile")?;
        rustix::fs::flock(&turnstile, F::LockExclusive)
            .map_err(|e| io_err("cannot lock", &root.join("gc.turnstile"))(e.into()))?;
        rustix::fs::flock(&file, F::LockShared)
            .map_err(|e| io_err("cannot lock", &root.join("gc.lock"))(e.into()))?;
        drop(turnstile);
        let store = Store {
            root: root.to_path_buf(),
            _gc: Some(std::sync::Arc::new(file)),
            _turnstile: None,
        };
        store.sweep();
        Ok(store)
    }

    /// Temporary names carry the process ID of the build that made them
    /// (`blob-PID-…`, `build-PID-…`); those of processes that no longer
    /// run are leftovers of a build that was killed. Best effort: a
    /// failure to remove one is not an error.
    fn sweep(&self) {
        let Ok(rd) = fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name
                .split_once('-')
                .and_then(|(_, rest)| rest.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            let Some(pid) = pid else { continue };
            if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let p = e.path();
            let _ = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
        }
    }

    /// The prefix of this process's temporary names in the store.
    pub fn temp_prefix(what: &str) -> String {
        format!("{what}-{}-", std::process::id())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with `digest` lives (whether or not it exists).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join("blobs/sha256").join(digest_hex(digest)?))
    }

    pub fn has(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    /// A new temporary file in the store, removed when dropped unless it
    /// is committed.
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile, StoreError> {
        let dir = self.root.join("tmp");
        tempfile::Builder::new()
            .prefix(&Store::temp_prefix("blob"))
            .tempfile_in(&dir)
            .map_err(io_err("cannot create a temporary file in", &dir))
    }

    /// Moves a finished temporary file into place under `digest`. The
    /// caller computed the digest while writing it.
    pub fn commit(
        &self,
        tmp: tempfile::NamedTempFile,
        digest: &str,
    ) -> Result<PathBuf, StoreError> {
        let dest = self.blob_path(digest)?;
        if dest.is_file() {
            return Ok(dest);
        }
        tmp.persist(&dest).map_err(|e| StoreError::Io {
            what: "cannot move a blob into place at",
            path: dest.clone(),
            source: e.error,
        })?;
        Ok(dest)
    }

    /// Stores `bytes`, returning their digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<String, StoreError> {
        let digest = format!("sha256:{}", crate::layer::compress::sha256_hex(bytes));
        if self.has(&digest) {
            return Ok(digest);
        }
        let mut tmp = self.temp_file()?;
        io::Write::write_all(&mut tmp, bytes)
            .map_err(io_err("cannot write", &self.root.join("tmp")))?;
        self.commit(tmp, &digest)?;
        Ok(digest)
    }

    /// The manifest digest a name (`docker.io/library/busybox:latest`) was
    /// last pulled as, for offline reuse.
    pub fn get_ref(&self, name: &str) -> Option<String> {
        let p = self.ref_path(name);
        let text = fs::read_to_string(p).ok()?;
        let mut lines = text.lines();
        (lines.next() == Some(name))
            .then(|| lines.next().map(str::to_string))?
            .filter(|d| digest_hex(d).is_ok())
    }

    /// Every name the store records, with its digest, sorted by name.
    pub fn refs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Ok(rd) = fs::read_dir(self.root.join("refs")) {
            for e in rd.flatten() {
                let Ok(text) = fs::read_to_string(e.path()) else {
                    continue;
                };
                let mut lines = text.lines();
                if let (Some(n), Some(d)) = (lines.next(), lines.next()) {
                    if digest_hex(d).is_ok() {
                        out.push((n.to_string(), d.to_string()));
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Records what a name resolved to (written to a temporary file and
    /// renamed, so a reader never sees half of it).
    pub fn set_ref(&self, name: &str, digest: &str) -> Result<(), StoreError> {
        digest_hex(digest)?;
        self.write_file(
            &self.ref_path(name),
            format!("{name}\n{digest}\n").as_bytes(),
        )
    }

    /// Records the repository (`domain/repo`) a blob was pulled from, so a
    /// push to another repository of that registry can mount it.
    pub fn set_source(&self, digest: &str, repository: &str) -> Result<(), StoreError> {
        let path = self.root.join("sources").join(digest_hex(digest)?);
        self.write_file(&path, repository.as_bytes())
    }

    /// Writes a small file of the store's own (cache records) through a
    /// temporary file and a rename.
    pub fn write_small(&self, dest: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        self.write_file(dest, bytes)
    }

    /// Writes a small file of the store's own (refs, sources) through a
    /// temporary file and a rename, so a reader never sees half of it.
    fn write_file(&self, dest: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
        }
        let mut tmp = self.temp_file()?;
        io::Write::write_all(&mut tmp, bytes).map_err(io_err("cannot write", dest))?;
        tmp.persist(dest).map_err(|e| StoreError::Io {
            what: "cannot write",
            path: dest.to_path_buf(),
            source: e.error,
        })?;
        Ok(())
    }

    /// Where a blob was pulled from, if known.
    pub fn source(&self, digest: &str) -> Option<String> {
        let hex = digest_hex(digest).ok()?;
        fs::read_to_string(self.root.join("sources").join(hex)).ok()
    }

    fn ref_path(&self, name: &str) -> PathBuf {
        let h = crate::layer::compress::sha256_hex(name.as_bytes());
        self.root.join("refs").join(h)
    }

    /// Reads a whole (small) blob: configs, manifests.
    pub fn read(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        let p = self.blob_path(digest)?;
        fs::read(&p).map_err(io_err("cannot read blob", &p))
    }
}

/// The default store location: `$KILN_CACHE_DIR`, else `/var/lib/kiln`
/// for root, else `$XDG_CACHE_HOME/kiln`, else `$HOME/.cache/kiln`.
pub fn default_root() -> PathBuf {
    if let Some(d) = std::env::var_os("KILN_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    // Root's store is the system's; a rootless build runs as root of its
    // own user namespace, but its store is the user's.
    if rustix::process::geteuid().is_root() && !crate::userns::in_userns() {
        return PathBuf::from("/var/lib/kiln");
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("kiln");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => PathBuf::from(h).join(".cache/kiln"),
        None => std::env::temp_dir().join("kiln-cache"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_land_under_their_digest_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let d = store.put_bytes(b"hello").expect("put");
        assert_eq!(
            d,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(store.read(&d).expect("read"), b"hello");
        assert_eq!(store.put_bytes(b"hello").expect("again"), d);
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
            0
        );
    }

    #[test]
    fn refs_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let d = store.put_bytes(b"m").expect("put");
        assert_eq!(store.get_ref("docker.io/library/a:1"), None);
        store.set_ref("docker.io/library/a:1", &d).expect("set");
        assert_eq!(store.get_ref("docker.io/library/a:1"), Some(d));
        assert!(store.set_ref("x", "sha256:nope").is_err());
    }

    #[test]
    fn rejects_digests_that_could_escape() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        for bad in ["sha256:../../etc/passwd", "md5:abc", "sha256:ABCDEF"] {
            assert!(
                matches!(store.blob_path(bad), Err(StoreError::BadDigest(_))),
                "{bad}"
            );
        }
    }
}
