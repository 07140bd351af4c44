//! A step's layer from its overlay upper directory, with the semantics of
//! BuildKit's overlay differ (which is continuity's walking differ, sped
//! up by reading the upper directory):
//! - a 0/0 character device is a deletion, dropped when the base has no
//!   such path;
//! - an entry the base has is a modification, dropped when it is the same
//!   file (type, mode, owner, device, capabilities; for non-directories
//!   also size and mtime, and the content when both mtimes lack
//!   nanoseconds);
//! - under a directory marked opaque, the base's entries that are gone
//!   become deletions (the top-most of each gone subtree), as the walking
//!   differ reports them: no opaque markers are written;
//! - every ancestor of a recorded entry is recorded too, with its current
//!   metadata (containerd's change writer includes parents).

use crate::layer::writer::{entries_from_dir, Entry, EntryKind, WriteError};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn overlay_xattr(k: &str) -> bool {
    k.starts_with("trusted.overlay.") || k.starts_with("user.overlay.")
}

/// Whether overlayfs marked the directory opaque (in either namespace).
fn is_opaque(dir: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|k| {
            let mut v = [0u8; 4];
            matches!(rustix::fs::lgetxattr(dir, *k, &mut v), Ok(1) if v[0] == b'y')
        })
}

fn capability(p: &Path) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    rustix::fs::lgetxattr(p, "security.capability", &mut buf)
        .ok()
        .map(|n| buf[..n].to_vec())
}

/// `rel`'s metadata in `base`, its own (a symlink is not followed) and
/// reached only through real directories: an image's `/var/run -> /run`
/// must not lead to the host's `/run`.
fn base_stat(base: &Path, rel: &str) -> Option<std::fs::Metadata> {
    let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    let mut cur = base.to_path_buf();
    for (i, c) in comps.iter().enumerate() {
        cur.push(c);
        let m = std::fs::symlink_metadata(&cur).ok()?;
        if i + 1 < comps.len() && !m.is_dir() {
            return None;
        }
        if i + 1 == comps.len() {
            return Some(m);
        }
    }
    None
}

fn base_is_dir(base: &Path, rel: &str) -> bool {
    base_stat(base, rel).is_some_and(|m| m.is_dir())
}

/// continuity's `sameFile`: the same entry, or a copy-up that changed
/// nothing.
fn same_dirent(base: &Path, upper: &Path) -> bool {
    let (Ok(b), Ok(u)) = (
        std::fs::symlink_metadata(base),
        std::fs::symlink_metadata(upper),
    ) else {
        return false;
    };
    if b.mode() != u.mode() || b.uid() != u.uid() || b.gid() != u.gid() || b.rdev() != u.rdev() {
        return false;
    }
    if capability(base) != capability(upper) {
        return false;
    }
    if b.is_dir() {
        return true;
    }
    if b.len() != u.len() || b.mtime() != u.mtime() {
        return false;
    }
    if b.mtime_nsec() == 0 && u.mtime_nsec() == 0 {
        // Truncated times (unpacked from a tar): compare what they hold.
        if b.file_type().is_symlink() {
            return std::fs::read_link(base).ok() == std::fs::read_link(upper).ok();
        }
        if b.len() == 0 {
            return true;
        }
        return same_content(base, upper).unwrap_or(false);
    }
    b.mtime_nsec() == u.mtime_nsec()
}

fn same_content(a: &Path, b: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
    fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        Ok(n)
    }
}

/// The layer entries of `upper` (a step's overlay upper directory) over
/// `base` (the step's root before it ran, mounted).
pub fn upper_entries(upper: &Path, base: &Path) -> Result<Vec<Entry>, WriteError> {
    let exists = |rel: &str| base_stat(base, rel).is_some();
    let all = entries_from_dir(upper, "")?;
    let mut keep: BTreeMap<String, Entry> = BTreeMap::new();
    // Opaque directories the base has: what the base had under them and
    // the upper lacks is deleted.
    let mut opaque: Vec<String> = Vec::new();
    let mut deletions: Vec<String> = Vec::new();
    for mut e in all {
        e.xattrs.retain(|k, _| !overlay_xattr(k));
        let path = e.path.clone();
        let up = upper.join(&path);
        match e.kind {
            EntryKind::CharDevice { major: 0, minor: 0 } => {
                if exists(&path) {
                    keep.insert(path.clone(), whiteout(path));
                }
                continue;
            }
            // (A directory made where the base had a file is opaque too;
            // it replaces the file, and there is nothing under it to lose.)
            EntryKind::Dir if base_is_dir(base, &path) && is_opaque(&up) => {
                opaque.push(path.clone())
            }
            _ => {}
        }
        if !(exists(&path) && same_dirent(&base.join(&path), &up)) {
            keep.insert(path, e);
        }
    }
    for dir in &opaque {
        gone_under(base, upper, dir, &mut deletions).map_err(|source| WriteError::Read {
            path: base.join(dir),
            source,
        })?;
    }
    for path in deletions {
        keep.entry(path.clone()).or_insert_with(|| whiteout(path));
    }
    with_parents(upper, keep)
}

/// Adds every ancestor of a recorded entry, with its metadata in `root`
/// (where it exists: a step's upper directory copies parents up).
fn with_parents(root: &Path, mut keep: BTreeMap<String, Entry>) -> Result<Vec<Entry>, WriteError> {
    let mut parents: BTreeSet<String> = BTreeSet::new();
    for path in keep.keys() {
        let mut p = Path::new(path).parent();
        while let Some(dir) = p.filter(|d| !d.as_os_str().is_empty()) {
            let s = dir.to_string_lossy().into_owned();
            if !parents.insert(s) {
                break;
            }
            p = dir.parent();
        }
    }
    let missing: Vec<String> = parents
        .into_iter()
        .filter(|p| !keep.contains_key(p))
        .collect();
    if !missing.is_empty() {
        for e in entries_from_dir(root, "")? {
            if missing.contains(&e.path) {
                let mut e = e;
                e.xattrs.retain(|k, _| !overlay_xattr(k));
                keep.insert(e.path.clone(), e);
            }
        }
    }
    Ok(keep.into_values().collect())
}

/// The layer entries of `new` (a full copy of `base` a step ran in) over
/// `base`, by walking both: what continuity's walking differ reports,
/// and what [`upper_entries`] gives for the same change.
pub fn walk_entries(new: &Path, base: &Path) -> Result<Vec<Entry>, WriteError> {
    let mut keep: BTreeMap<String, Entry> = BTreeMap::new();
    for mut e in entries_from_dir(new, "")? {
        e.xattrs.retain(|k, _| !overlay_xattr(k));
        let b = base.join(&e.path);
        if base_stat(base, &e.path).is_some() && same_dirent(&b, &new.join(&e.path)) {
            continue;
        }
        keep.insert(e.path.clone(), e);
    }
    let mut deletions = Vec::new();
    gone_under(base, new, "", &mut deletions).map_err(|source| WriteError::Read {
        path: base.to_path_buf(),
        source,
    })?;
    for path in deletions {
        keep.entry(path.clone()).or_insert_with(|| whiteout(path));
    }
    with_parents(new, keep)
}

/// A deletion as BuildKit's layers hold it: mode 0, owned by root, time 0.
fn whiteout(path: String) -> Entry {
    Entry {
        path,
        kind: EntryKind::Whiteout,
        mode: 0,
        uid: 0,
        gid: 0,
        mtime: 0,
        xattrs: BTreeMap::new(),
    }
}

/// The top-most paths under `dir` that `base` has and `upper` lacks.
fn gone_under(base: &Path, upper: &Path, dir: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    if !dir.is_empty() && !base_is_dir(base, dir) {
        return Ok(());
    }
    let mut names: Vec<_> = std::fs::read_dir(base.join(dir))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let rel = if dir.is_empty() {
            name.to_string_lossy().into_owned()
        } else {
            format!("{dir}/{}", name.to_string_lossy())
        };
        match std::fs::symlink_metadata(upper.join(&rel)) {
            Err(_) => out.push(rel),
            Ok(m) if m.is_dir() && base_is_dir(base, &rel) => gone_under(base, upper, &rel, out)?,
            Ok(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfile(p: &Path, data: &[u8]) {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::fs::write(p, data).expect("write");
    }

    #[test]
    fn changes_as_buildkits_differ_reports_them() {
        let t = tempfile::tempdir().expect("tempdir");
        let (base, up) = (t.path().join("base"), t.path().join("upper"));
        mkfile(&base.join("etc/keep"), b"k");
        mkfile(&base.join("etc/gone"), b"g");
        mkfile(&base.join("etc/deep/a/b"), b"b");
        mkfile(&base.join("opq/old"), b"o");
        mkfile(&base.join("opq/sub/old2"), b"o");
        mkfile(&base.join("opq/sub/stays"), b"s");
        // The upper: a new file deep down, a whiteout, a whiteout of what
        // the base never had, and an opaque directory.
        mkfile(&up.join("etc/deep/a/new"), b"n");
        for wh in ["etc/gone", "etc/never"] {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                up.join(wh),
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::empty(),
                0,
            )
            .expect("whiteout");
        }
        mkfile(&up.join("opq/sub/stays"), b"changed");
        mkfile(&up.join("opq/fresh"), b"f");
        let key = format!(
            "{}overlay.opaque",
            crate::layer::apply::overlay_xattr_prefix()
        );
        rustix::fs::setxattr(
            up.join("opq").as_path(),
            key.as_str(),
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .expect("opaque");
        let entries = upper_entries(&up, &base).expect("entries");
        let got: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| {
                let kind = match e.kind {
                    EntryKind::Whiteout => "whiteout",
                    EntryKind::Dir => "dir",
                    EntryKind::File { .. } => "file",
                    _ => "other",
                };
                (e.path.as_str(), kind)
            })
            .collect();
        assert_eq!(
            got,
            [
                ("etc", "dir"),
                ("etc/deep", "dir"),
                ("etc/deep/a", "dir"),
                ("etc/deep/a/new", "file"),
                ("etc/gone", "whiteout"),
                ("opq", "dir"),
                ("opq/fresh", "file"),
                ("opq/old", "whiteout"),
                ("opq/sub", "dir"),
                ("opq/sub/old2", "whiteout"),
                ("opq/sub/stays", "file"),
            ]
        );
        assert!(entries.iter().all(|e| e.xattrs.is_empty()));
    }
}
