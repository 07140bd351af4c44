//! A step's layer from its overlay upper directory, the way BuildKit's
//! overlay differ reads one: a 0/0 character device is a whiteout, a
//! directory with the `overlay.opaque` xattr hides what lower layers had
//! in it, and a directory copied up only because something inside it
//! changed is left out when its own metadata matches the lower one.
//! Nothing walks the lower layers.

use crate::layer::writer::{entries_from_dir, Entry, EntryKind};
use std::collections::BTreeMap;
use std::path::Path;

/// What a directory's own metadata is, for comparison: mode, owner,
/// mtime to the nanosecond, and xattrs.
pub type DirMeta = (u32, u32, u32, i64, i64, BTreeMap<String, Vec<u8>>);

/// The [`DirMeta`] of a directory on disk; None when it is not one.
pub fn dir_meta(path: &Path) -> Option<DirMeta> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).ok()?;
    if !m.is_dir() {
        return None;
    }
    let x = crate::layer::writer::read_xattrs(path).ok()?;
    Some((
        m.mode() & 0o7777,
        m.uid(),
        m.gid(),
        m.mtime(),
        m.mtime_nsec(),
        x,
    ))
}

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

/// The layer entries of `upper`. `lower_dir` gives the metadata of a
/// directory in the lower layers (None when it is not a directory there).
pub fn upper_entries(
    upper: &Path,
    lower_dir: &dyn Fn(&str) -> Option<DirMeta>,
) -> Result<Vec<Entry>, crate::layer::writer::WriteError> {
    let mut out = Vec::new();
    for mut e in entries_from_dir(upper, "")? {
        let opaque = matches!(e.kind, EntryKind::Dir) && is_opaque(&upper.join(&e.path));
        e.xattrs.retain(|k, _| !overlay_xattr(k));
        match e.kind {
            EntryKind::CharDevice { major: 0, minor: 0 } => {
                e.kind = EntryKind::Whiteout;
                out.push(e);
            }
            EntryKind::Dir if opaque => {
                let marker = Entry {
                    kind: EntryKind::OpaqueWhiteout,
                    xattrs: BTreeMap::new(),
                    ..e.clone()
                };
                out.push(e);
                out.push(marker);
            }
            EntryKind::Dir => {
                let same =
                    lower_dir(&e.path).is_some_and(|m| Some(m) == dir_meta(&upper.join(&e.path)));
                if !same {
                    out.push(e);
                }
            }
            _ => out.push(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteouts_opaque_dirs_and_unchanged_parents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let up = dir.path();
        std::fs::create_dir_all(up.join("etc/sub")).expect("mkdir");
        std::fs::write(up.join("etc/new"), b"n").expect("write");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            up.join("etc/gone"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .expect("whiteout");
        let key = format!(
            "{}overlay.opaque",
            crate::layer::apply::overlay_xattr_prefix()
        );
        rustix::fs::setxattr(
            up.join("etc/sub").as_path(),
            key.as_str(),
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .expect("opaque");
        let same = dir_meta(&up.join("etc")).expect("etc");
        let entries = upper_entries(up, &|p| (p == "etc").then(|| same.clone())).expect("entries");
        let got: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| {
                let kind = match e.kind {
                    EntryKind::Whiteout => "whiteout",
                    EntryKind::OpaqueWhiteout => "opaque",
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
                ("etc/gone", "whiteout"),
                ("etc/new", "file"),
                ("etc/sub", "dir"),
                ("etc/sub", "opaque"),
            ]
        );
        assert!(entries.iter().all(|e| e.xattrs.is_empty()));
    }
}
