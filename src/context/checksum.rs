//! Content checksums of source files, for cache keys.
//!
//! A COPY's key covers exactly the files it selects: for each, its path
//! as selected, its type, mode, owner, and its content digest or symlink
//! target; never its times. Content digests are remembered in a stat
//! cache per source directory (`<store>/cache/stat/<sha256 of the
//! directory's path>`), valid while a file's inode, size, mtime and ctime
//! are unchanged, so a rebuild reads only the files that changed.
//!
//! A file changed again in the same clock tick in which it was hashed
//! would keep its times (git's "racily clean" problem), so a digest is
//! not kept when the file changed less than [`RACY`] before it was taken.

use crate::layer::compress::sha256_hex;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How recent a change must be for its digest not to be remembered.
const RACY: i64 = 2_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    ino: u64,
    size: u64,
    mtime: i64,
    ctime: i64,
}

impl Stat {
    fn of(m: &Metadata) -> Stat {
        Stat {
            ino: m.ino(),
            size: m.len(),
            mtime: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        }
    }
}

/// Remembered content digests of the files under one directory.
pub struct StatCache {
    /// Where the cache is saved; `None` keeps it in memory only.
    file: Option<PathBuf>,
    /// Path → (stat, digest, when the digest was taken: 0 for entries
    /// read from the saved cache, which were checked when saved).
    map: Mutex<HashMap<String, (Stat, String, i64)>>,
    dirty: std::sync::atomic::AtomicBool,
    /// Files read (not answered from the cache), for reports and tests.
    pub hashed: std::sync::atomic::AtomicUsize,
}

impl StatCache {
    /// The cache of `dir` in the store at `store_root` (empty when there
    /// is none, or it cannot be read).
    pub fn load(store_root: &Path, dir: &Path) -> StatCache {
        let abs = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let name = sha256_hex(abs.as_os_str().as_encoded_bytes());
        let file = store_root.join("cache/stat").join(name);
        let map = fs::read_to_string(&file)
            .map(|t| parse(&t))
            .unwrap_or_default();
        StatCache {
            file: Some(file),
            map: Mutex::new(map),
            dirty: false.into(),
            hashed: 0.into(),
        }
    }

    /// A cache that is never saved.
    pub fn in_memory() -> StatCache {
        StatCache {
            file: None,
            map: Mutex::new(HashMap::new()),
            dirty: false.into(),
            hashed: 0.into(),
        }
    }

    /// The sha256 (hex) of the regular file `host`, whose metadata is
    /// `meta`; `rel` names it in the cache.
    pub fn file_digest(&self, rel: &str, host: &Path, meta: &Metadata) -> io::Result<String> {
        let stat = Stat::of(meta);
        if let Ok(map) = self.map.lock() {
            if let Some((s, d, _)) = map.get(rel) {
                if *s == stat {
                    return Ok(d.clone());
                }
            }
        }
        let taken = now_ns();
        let digest = hash_file(host)?;
        self.hashed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // The file may have changed while it was read: remember the
        // digest only for what it was before and is after.
        let after = fs::symlink_metadata(host).map(|m| Stat::of(&m)).ok();
        if after == Some(stat) {
            if let Ok(mut map) = self.map.lock() {
                map.insert(rel.to_string(), (stat, digest.clone(), taken));
                self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(digest)
    }

    /// Saves the cache if it changed (to a temporary file, renamed into
    /// place). Failing to save only costs time later, so callers may
    /// ignore the error.
    pub fn save(&self, store_tmp: &Path) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if !self.dirty.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let map = self.map.lock().map_err(|_| io::Error::other("poisoned"))?;
        let mut keys: Vec<&String> = map.keys().collect();
        keys.sort();
        let mut text = String::with_capacity(map.len() * 128);
        for k in keys {
            let (s, d, taken) = &map[k];
            if *taken != 0 && (s.mtime > taken - RACY || s.ctime > taken - RACY) {
                continue;
            }
            // The path last: it may hold spaces, never a newline (checked).
            if k.contains('\n') {
                continue;
            }
            text.push_str(&format!(
                "{d} {} {} {} {} {k}\n",
                s.ino, s.size, s.mtime, s.ctime
            ));
        }
        if let Some(dir) = file.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut tmp = tempfile::Builder::new()
            .prefix(&crate::store::Store::temp_prefix("stat"))
            .tempfile_in(store_tmp)?;
        tmp.write_all(text.as_bytes())?;
        tmp.persist(file).map_err(|e| e.error)?;
        Ok(())
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn parse(text: &str) -> HashMap<String, (Stat, String, i64)> {
    let mut map = HashMap::new();
    for line in text.lines() {
        let mut it = line.splitn(6, ' ');
        let (Some(d), Some(ino), Some(size), Some(mtime), Some(ctime), Some(rel)) = (
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
        ) else {
            continue;
        };
        let (Ok(ino), Ok(size), Ok(mtime), Ok(ctime)) =
            (ino.parse(), size.parse(), mtime.parse(), ctime.parse())
        else {
            continue;
        };
        if d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        map.insert(
            rel.to_string(),
            (
                Stat {
                    ino,
                    size,
                    mtime,
                    ctime,
                },
                d.to_string(),
                0,
            ),
        );
    }
    map
}

fn hash_file(p: &Path) -> io::Result<String> {
    let mut f = fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(crate::layer::compress::hex(&h.finalize()))
}

/// A checksum of a selection of files, built one file at a time, with
/// the per-file records kept for explanations.
pub struct Selection {
    hasher: Sha256,
    /// `(name, record)`: what each selected path contributed.
    pub files: Vec<(String, String)>,
    /// The first name of each file with several links (by device and
    /// inode): a later name of it is recorded as a link to that one (COPY
    /// keeps hardlinks, so `ln -f a b` changes the result).
    links: HashMap<(u64, u64), String>,
}

impl Default for Selection {
    fn default() -> Self {
        Selection::new()
    }
}

impl Selection {
    pub fn new() -> Selection {
        Selection {
            hasher: Sha256::new(),
            files: Vec::new(),
            links: HashMap::new(),
        }
    }

    /// Adds the source `host`, selected as `name` (its path as the COPY
    /// sees it). `rel` names it in `cache` (its path in the source
    /// directory). Times are left out.
    pub fn add(
        &mut self,
        name: &str,
        rel: &str,
        host: &Path,
        meta: &Metadata,
        cache: &StatCache,
    ) -> io::Result<()> {
        let ft = meta.file_type();
        let first_name = if ft.is_file() && meta.nlink() > 1 {
            let first = self
                .links
                .entry((meta.dev(), meta.ino()))
                .or_insert_with(|| name.to_string());
            (first != name).then(|| first.clone())
        } else {
            None
        };
        let what = if let Some(first) = first_name {
            format!("hardlink {first}")
        } else if ft.is_file() {
            format!("file {}", cache.file_digest(rel, host, meta)?)
        } else if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_symlink() {
            let t = fs::read_link(host)?;
            format!("symlink {}", t.to_string_lossy())
        } else if ft.is_block_device() || ft.is_char_device() {
            format!("device {}", meta.rdev())
        } else if ft.is_fifo() {
            "fifo".to_string()
        } else {
            "socket".to_string()
        };
        let record = format!(
            "{what} {:o} {}:{}",
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid()
        );
        self.add_record(name, &record);
        Ok(())
    }

    /// Adds a record that is not a file on disk (a URL).
    pub fn add_record(&mut self, name: &str, record: &str) {
        self.add_marker(name, record);
        self.files.push((name.to_string(), record.to_string()));
    }

    /// Adds to the checksum only: a boundary between sources (the pattern
    /// that selected what follows), not a file to report.
    pub fn add_marker(&mut self, name: &str, record: &str) {
        for part in [name.as_bytes(), record.as_bytes()] {
            self.hasher.update((part.len() as u64).to_le_bytes());
            self.hasher.update(part);
        }
    }

    /// The checksum (`sha256:` and hex) and the records.
    pub fn finish(self) -> (String, Vec<(String, String)>) {
        (
            format!(
                "sha256:{}",
                crate::layer::compress::hex(&self.hasher.finalize())
            ),
            self.files,
        )
    }
}

/// The difference between two selections' records, in words:
/// `1 file changed: src/app.py`, `2 files added: a, b`.
pub fn describe_changes(old: &[(String, String)], new: &[(String, String)]) -> String {
    let o: HashMap<&str, &str> = old.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let n: HashMap<&str, &str> = new.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let mut changed: Vec<&str> = Vec::new();
    let mut added: Vec<&str> = Vec::new();
    let mut removed: Vec<&str> = Vec::new();
    for (name, rec) in new {
        match o.get(name.as_str()) {
            Some(r) if r == rec => {}
            Some(_) => changed.push(name),
            None => added.push(name),
        }
    }
    for (name, _) in old {
        if !n.contains_key(name.as_str()) {
            removed.push(name);
        }
    }
    let mut parts = Vec::new();
    for (list, verb) in [(changed, "changed"), (added, "added"), (removed, "removed")] {
        if list.is_empty() {
            continue;
        }
        let noun = if list.len() == 1 { "file" } else { "files" };
        let shown: Vec<&str> = list.iter().take(3).copied().collect();
        let more = if list.len() > 3 {
            format!(" and {} more", list.len() - 3)
        } else {
            String::new()
        };
        parts.push(format!(
            "{} {noun} {verb}: {}{more}",
            list.len(),
            shown.join(", ")
        ));
    }
    if parts.is_empty() {
        "the same files, in another order".to_string()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(dir: &Path, names: &[&str], cache: &StatCache) -> (String, Vec<(String, String)>) {
        let mut s = Selection::new();
        for n in names {
            let p = dir.join(n);
            let m = fs::symlink_metadata(&p).expect("stat");
            s.add(n, n, &p, &m, cache).expect("add");
        }
        s.finish()
    }

    /// Two names of one file copy as a hardlink, two files with the same
    /// contents as two files: the checksum tells them apart.
    #[test]
    fn hardlinks_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        fs::write(d.join("a"), "same").expect("write");
        fs::write(d.join("b"), "same").expect("write");
        let cache = StatCache::in_memory();
        let (copies, _) = sel(d, &["a", "b"], &cache);
        fs::remove_file(d.join("b")).expect("rm");
        fs::hard_link(d.join("a"), d.join("b")).expect("ln");
        let (linked, files) = sel(d, &["a", "b"], &cache);
        assert_ne!(linked, copies);
        assert!(files[1].1.starts_with("hardlink a "), "{files:?}");
        assert!(files[0].1.starts_with("file "), "{files:?}");
    }

    #[test]
    fn contents_modes_and_links_count_but_times_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        fs::write(d.join("a"), "one").expect("write");
        std::os::unix::fs::symlink("a", d.join("l")).expect("symlink");
        let cache = StatCache::in_memory();
        let (first, _) = sel(d, &["a", "l"], &cache);
        let f = fs::File::options()
            .write(true)
            .open(d.join("a"))
            .expect("open");
        f.set_modified(std::time::UNIX_EPOCH).expect("mtime");
        assert_eq!(sel(d, &["a", "l"], &cache).0, first, "mtime alone");
        fs::write(d.join("a"), "two").expect("write");
        let (second, files) = sel(d, &["a", "l"], &cache);
        assert_ne!(second, first, "contents");
        fs::set_permissions(
            d.join("a"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("chmod");
        let (third, _) = sel(d, &["a", "l"], &cache);
        assert_ne!(third, second, "mode");
        fs::remove_file(d.join("l")).expect("rm");
        std::os::unix::fs::symlink("b", d.join("l")).expect("symlink");
        let (fourth, files4) = sel(d, &["a", "l"], &cache);
        assert_ne!(fourth, third, "symlink target");
        assert_eq!(describe_changes(&files, &files4), "2 files changed: a, l");
        // Names are part of it: the same file under another name differs.
        assert_ne!(sel(d, &["a"], &cache).0, sel(d, &["l"], &cache).0);
    }

    #[test]
    fn unchanged_files_are_not_read_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = tempfile::tempdir().expect("tempdir");
        let tmp = store.path().join("tmp");
        fs::create_dir_all(&tmp).expect("mkdir");
        let d = dir.path();
        for n in ["a", "b", "c"] {
            fs::write(d.join(n), n).expect("write");
            // Old enough not to be racy.
            let f = fs::File::options()
                .write(true)
                .open(d.join(n))
                .expect("open");
            f.set_modified(std::time::UNIX_EPOCH).expect("mtime");
        }
        let cache = StatCache::load(store.path(), d);
        let (sum, _) = sel(d, &["a", "b", "c"], &cache);
        assert_eq!(cache.hashed.load(std::sync::atomic::Ordering::Relaxed), 3);
        cache.save(&tmp).expect("save");
        // ctime is now: entries are racy until two seconds pass.
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let cache = StatCache::load(store.path(), d);
        let _ = sel(d, &["a", "b", "c"], &cache);
        cache.save(&tmp).expect("save");
        let cache = StatCache::load(store.path(), d);
        fs::write(d.join("b"), "B").expect("write");
        let (again, _) = sel(d, &["a", "b", "c"], &cache);
        assert_ne!(again, sum);
        assert_eq!(
            cache.hashed.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "only the changed file is read"
        );
    }

    #[test]
    fn changes_are_described() {
        let r = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let old = r(&[("a", "1"), ("b", "1"), ("c", "1")]);
        let new = r(&[("a", "2"), ("b", "1"), ("d", "1")]);
        assert_eq!(
            describe_changes(&old, &new),
            "1 file changed: a; 1 file added: d; 1 file removed: c"
        );
    }
}
