//! Disk use and garbage collection of a store (`kiln du`, `kiln prune`).
//!
//! What is kept: the cache index's entries that survive the filters, and
//! the images that names were pulled as (`refs/`), and everything they
//! reach: layer blobs, manifests and configs, the snapshots of their
//! layers (by diffID, with the `.N` copies overlayfs needs), and the
//! snapshots RUN steps left (`snapshots/stacked/`, whose `.diffid` file
//! says which layer each holds). Everything else goes.
//!
//! Builds hold a shared lock on `<root>/gc.lock` for as long as they run
//! (see [`Store::open`]); prune takes it exclusively, so it waits for
//! running builds and never removes a snapshot one of them uses.

use super::{digest_hex, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What to prune.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Everything: the cache, pulled images, cache mounts, records.
    pub all: bool,
    /// Drop the least recently used cache entries until the store is at
    /// most this big.
    pub keep_storage: Option<u64>,
    /// Drop cache entries not used for this long.
    pub until: Option<Duration>,
}

/// What a prune removed.
#[derive(Debug, Clone, Default)]
pub struct Pruned {
    pub entries: usize,
    pub blobs: usize,
    pub snapshots: usize,
    pub bytes: u64,
}

/// Disk use by kind: (count, bytes).
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub entries: usize,
    pub blobs: (usize, u64),
    pub snapshots: (usize, u64),
    pub cache_mounts: (usize, u64),
    pub other: u64,
    /// What `kiln prune` (no flags) would free.
    pub reclaimable: u64,
}

/// Size on disk of a file or tree (allocated blocks: sparse files count
/// what they hold), never following symlinks.
pub fn tree_size(p: &Path) -> u64 {
    let mut total = 0;
    for e in walkdir::WalkDir::new(p)
        .follow_links(false)
        .into_iter()
        .flatten()
    {
        if let Ok(m) = e.metadata() {
            total += m.blocks() * 512;
        }
    }
    total
}

/// The objects of a store and what references what.
struct Inventory {
    /// Blob digest → size.
    blobs: BTreeMap<String, u64>,
    /// Snapshot directory → (the diffID it holds, size).
    snapshots: BTreeMap<PathBuf, (String, u64)>,
    /// Index entries: key, layer digest, diffID, last use.
    entries: Vec<(String, String, String, SystemTime)>,
    /// What pulled images reach: blob digests and diffIDs.
    image_blobs: BTreeSet<String>,
    image_diff_ids: BTreeSet<String>,
    cache_mounts: (usize, u64),
}

impl Inventory {
    fn take(store: &Store) -> Inventory {
        let root = store.root();
        let mut blobs = BTreeMap::new();
        if let Ok(rd) = fs::read_dir(root.join("blobs/sha256")) {
            for e in rd.flatten() {
                let d = format!("sha256:{}", e.file_name().to_string_lossy());
                if digest_hex(&d).is_ok() {
                    let size = e.metadata().map_or(0, |m| m.blocks() * 512);
                    blobs.insert(d, size);
                }
            }
        }
        let mut snapshots = BTreeMap::new();
        for (dir, stacked) in [("snapshots/sha256", false), ("snapshots/stacked", true)] {
            let Ok(rd) = fs::read_dir(root.join(dir)) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let p = e.path();
                if !p.is_dir() {
                    continue;
                }
                // `<hex>` or its copy `<hex>.N`.
                let base = name.split('.').next().unwrap_or("");
                let diff_id = if stacked {
                    let side = root.join(dir).join(format!("{base}.diffid"));
                    fs::read_to_string(side)
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                } else {
                    format!("sha256:{base}")
                };
                snapshots.insert(p.clone(), (diff_id, tree_size(&p)));
            }
        }
        let entries = store
            .cache_entries()
            .into_iter()
            .map(|(k, e, used)| (k, e.digest, e.diff_id, used))
            .collect();
        let (image_blobs, image_diff_ids) = pulled_images(store);
        let mut cache_mounts = (0, 0);
        if let Ok(rd) = fs::read_dir(root.join("cache-mounts")) {
            for e in rd.flatten() {
                cache_mounts.0 += 1;
                cache_mounts.1 += tree_size(&e.path());
            }
        }
        Inventory {
            blobs,
            snapshots,
            entries,
            image_blobs,
            image_diff_ids,
            cache_mounts,
        }
    }

    /// What the entries in `keep` and the pulled images reach: blob
    /// digests and diffIDs.
    fn reached(&self, keep: &[bool]) -> (BTreeSet<&str>, BTreeSet<&str>) {
        let mut blobs: BTreeSet<&str> = self.image_blobs.iter().map(String::as_str).collect();
        let mut diffs: BTreeSet<&str> = self.image_diff_ids.iter().map(String::as_str).collect();
        for (e, k) in self.entries.iter().zip(keep) {
            if *k {
                blobs.insert(&e.1);
                diffs.insert(&e.2);
            }
        }
        (blobs, diffs)
    }

    /// Bytes of blobs and snapshots that `keep` leaves.
    fn kept_size(&self, keep: &[bool]) -> u64 {
        let (blobs, diffs) = self.reached(keep);
        let b: u64 = self
            .blobs
            .iter()
            .filter(|(d, _)| blobs.contains(d.as_str()))
            .map(|(_, s)| s)
            .sum();
        let s: u64 = self
            .snapshots
            .values()
            .filter(|(d, _)| diffs.contains(d.as_str()))
            .map(|(_, s)| s)
            .sum();
        b + s
    }
}

/// Blobs and diffIDs of the images names were pulled as: manifests (and
/// the platform manifests of an index), configs, layers.
fn pulled_images(store: &Store) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut blobs = BTreeSet::new();
    let mut diffs = BTreeSet::new();
    let Ok(rd) = fs::read_dir(store.root().join("refs")) else {
        return (blobs, diffs);
    };
    let mut todo: Vec<String> = Vec::new();
    for e in rd.flatten() {
        if let Ok(t) = fs::read_to_string(e.path()) {
            if let Some(d) = t.lines().nth(1) {
                todo.push(d.to_string());
            }
        }
    }
    while let Some(d) = todo.pop() {
        if !blobs.insert(d.clone()) {
            continue;
        }
        let Ok(bytes) = store.read(&d) else { continue };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        for m in v["manifests"].as_array().into_iter().flatten() {
            if let Some(md) = m["digest"].as_str() {
                if store.has(md) {
                    todo.push(md.to_string());
                }
            }
        }
        if let Some(c) = v["config"]["digest"].as_str() {
            blobs.insert(c.to_string());
            if let Ok(cb) = store.read(c) {
                if let Ok(cv) = serde_json::from_slice::<serde_json::Value>(&cb) {
                    for id in cv["rootfs"]["diff_ids"].as_array().into_iter().flatten() {
                        if let Some(id) = id.as_str() {
                            diffs.insert(id.to_string());
                        }
                    }
                }
            }
        }
        for l in v["layers"].as_array().into_iter().flatten() {
            if let Some(ld) = l["digest"].as_str() {
                blobs.insert(ld.to_string());
            }
        }
    }
    (blobs, diffs)
}

/// The store's disk use.
pub fn usage(store: &Store) -> Usage {
    let inv = Inventory::take(store);
    let keep = vec![true; inv.entries.len()];
    let blobs: (usize, u64) = (inv.blobs.len(), inv.blobs.values().sum());
    let snapshots: (usize, u64) = (
        inv.snapshots.len(),
        inv.snapshots.values().map(|(_, s)| s).sum(),
    );
    let kept = inv.kept_size(&keep);
    let other = ["cache", "tmp", "refs", "sources"]
        .iter()
        .map(|d| tree_size(&store.root().join(d)))
        .sum();
    Usage {
        entries: inv.entries.len(),
        reclaimable: (blobs.1 + snapshots.1).saturating_sub(kept),
        blobs,
        snapshots,
        cache_mounts: inv.cache_mounts,
        other,
    }
}

/// Prunes the store (which the caller holds exclusively).
pub fn prune(store: &Store, opts: &PruneOptions) -> Pruned {
    let root = store.root().to_path_buf();
    if opts.all {
        let mut p = Pruned::default();
        let u = usage(store);
        p.entries = u.entries;
        p.blobs = u.blobs.0;
        p.snapshots = u.snapshots.0;
        p.bytes = u.blobs.1 + u.snapshots.1 + u.cache_mounts.1 + u.other;
        for d in [
            "blobs",
            "snapshots",
            "cache",
            "cache-mounts",
            "refs",
            "sources",
            "tmp",
        ] {
            let _ = fs::remove_dir_all(root.join(d));
        }
        return p;
    }
    let inv = Inventory::take(store);
    let now = SystemTime::now();
    let mut keep: Vec<bool> = inv
        .entries
        .iter()
        .map(|e| match opts.until {
            Some(d) => now.duration_since(e.3).map_or(true, |age| age < d),
            None => true,
        })
        .collect();
    if let Some(limit) = opts.keep_storage {
        // Least recently used first.
        let mut order: Vec<usize> = (0..inv.entries.len()).collect();
        order.sort_by_key(|&i| inv.entries[i].3);
        for i in order {
            if inv.kept_size(&keep) <= limit {
                break;
            }
            keep[i] = false;
        }
    }
    let mut out = Pruned::default();
    for (e, k) in inv.entries.iter().zip(&keep) {
        if !k {
            store.cache_remove(&e.0);
            out.entries += 1;
        }
    }
    let (blobs, diffs) = inv.reached(&keep);
    for (d, size) in &inv.blobs {
        if blobs.contains(d.as_str()) {
            continue;
        }
        if let Ok(p) = store.blob_path(d) {
            if fs::remove_file(p).is_ok() {
                out.blobs += 1;
                out.bytes += size;
                if let Ok(h) = digest_hex(d) {
                    let _ = fs::remove_file(root.join("sources").join(h));
                }
            }
        }
    }
    for (p, (d, size)) in &inv.snapshots {
        if diffs.contains(d.as_str()) {
            continue;
        }
        if remove_tree(p) {
            out.snapshots += 1;
            out.bytes += size;
            if let Some(name) = p.file_name().map(|n| n.to_string_lossy().into_owned()) {
                if !name.contains('.') {
                    let _ = fs::remove_file(p.with_file_name(format!("{name}.diffid")));
                }
            }
        }
    }
    // The cache's own records (per-file lists for explanations, stage
    // checksums, explanation and stat records) go when unused this long:
    // without them a miss explains less, or a stage is checksummed again.
    let max_age = opts.until.unwrap_or(Duration::from_secs(30 * 86_400));
    for d in [
        "cache/files",
        "cache/derived",
        "cache/explain",
        "cache/stat",
    ] {
        let Ok(rd) = fs::read_dir(root.join(d)) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            let old = m
                .modified()
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age >= max_age);
            if old && fs::remove_file(e.path()).is_ok() {
                out.bytes += m.blocks() * 512;
            }
        }
    }
    // No build runs: every lock and temporary is free to go.
    let _ = fs::remove_dir_all(root.join("cache/locks"));
    if let Ok(rd) = fs::read_dir(root.join("tmp")) {
        for e in rd.flatten() {
            out.bytes += tree_size(&e.path());
            remove_tree(&e.path());
        }
    }
    out
}

/// Removes a file or a tree; snapshot trees may hold read-only
/// directories (as root that does not matter).
fn remove_tree(p: &Path) -> bool {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).is_ok(),
        Ok(_) => fs::remove_file(p).is_ok(),
        Err(_) => false,
    }
}

/// Parses `--keep-storage`: bytes, or a number with a unit (`500MB`,
/// `10GB`, `1.5GiB`); units are powers of 1024, as buildx takes them.
pub fn parse_size(s: &str) -> Result<u64, String> {
    crate::dockerfile::mount::parse_size(s)
        .ok_or_else(|| format!("{s:?} is not a size such as 10GB or 500MB"))
}

/// Parses a Go duration as `--filter until=` takes it: `24h`, `1h30m`,
/// `90s`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration such as 24h, 30m or 1h30m");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, after) = rest.split_at(split);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let secs = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * secs;
        rest = next;
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("10GB"), Ok(10 << 30));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("10 parsecs").is_err());
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("3 days").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("10").is_err());
    }
}
