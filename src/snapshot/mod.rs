//! Snapshot directories: per-layer snapshots in the store ([`layers`]),
//! their overlay mounts ([`overlay`]), and the path arithmetic that keeps
//! every access inside a root filesystem.
//!
//! [`resolve_in_root`] follows symlinks as if the directory were `/` (what a
//! chroot would see), so an image's `/lib -> usr/lib` or a hostile
//! `evil -> /` symlink resolves to a path under the root, never outside it.
//! This module knows nothing of Dockerfiles or registries.

pub mod copy;
pub mod diff;
pub mod layers;
pub mod overlay;

use std::io;
use std::path::{Path, PathBuf};

/// Symlinks followed in one resolution before giving up (Linux's limit).
const MAX_LINKS: usize = 40;

/// Path failures, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("too many levels of symbolic links resolving /{0}")]
    Loop(String),
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Resolves the slash-separated path `rel` (absolute or relative, taken
/// against the root) to a clean root-relative path with every symlink
/// along the way followed inside `root`. The last component is followed
/// only when `follow_final`. Missing components are kept as they are, so
/// the result names where a new file would go. Returns `""` for the root.
pub fn resolve_in_root(root: &Path, rel: &str, follow_final: bool) -> Result<String, PathError> {
    resolve_with(rel, follow_final, |cur| {
        let host = root.join(cur);
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => std::fs::read_link(&host)
                .map(|t| Some(t.to_string_lossy().into_owned()))
                .map_err(|source| PathError::Io { path: host, source }),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(20) => {
                Ok(None)
            }
            Err(source) => Err(PathError::Io { path: host, source }),
        }
    })
}

/// The resolution itself, over any filesystem: `readlink(path)` gives the
/// target when the root-relative `path` is a symlink, `None` when it is
/// anything else or missing. A missing component is kept as named and the
/// walk goes on, because a later `..` can climb back into directories
/// whose symlinks must still be resolved.
pub fn resolve_with<E: From<PathError>>(
    rel: &str,
    follow_final: bool,
    mut readlink: impl FnMut(&str) -> Result<Option<String>, E>,
) -> Result<String, E> {
    let mut done: Vec<String> = Vec::new();
    let mut todo: Vec<String> = components(rel).into_iter().rev().collect();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            done.pop();
            continue;
        }
        let is_last = todo.is_empty();
        done.push(c);
        if is_last && !follow_final {
            break;
        }
        if let Some(target) = readlink(&done.join("/"))? {
            links += 1;
            if links > MAX_LINKS {
                return Err(PathError::Loop(rel.trim_start_matches('/').to_string()).into());
            }
            done.pop();
            if target.starts_with('/') {
                done.clear();
            }
            todo.extend(components(&target).into_iter().rev());
        }
    }
    Ok(done.join("/"))
}

fn components(p: &str) -> Vec<String> {
    p.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
        .collect()
}

/// Reads a small regular file (a config file of an image or a context):
/// refuses FIFOs, devices and directories (opened without blocking, so a
/// FIFO cannot hang the build) and anything larger than `max` bytes.
pub fn read_small(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    if meta.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is larger than {max} bytes", path.display()),
        ));
    }
    let mut buf = Vec::new();
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is larger than {max} bytes", path.display()),
        ));
    }
    Ok(buf)
}

/// The host path of a root-relative path.
pub fn host_path(root: &Path, rel: &str) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

/// The parent of a root-relative path (`""` for top-level names).
pub fn parent_rel(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(p, _)| p)
}

/// Joins two root-relative paths.
pub fn join_rel(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path();
        std::fs::create_dir_all(root.join("usr/lib")).expect("mkdir");
        symlink("usr/lib", root.join("lib")).expect("link");
        symlink("/", root.join("evil")).expect("link");
        symlink("../../../..", root.join("usr/up")).expect("link");
        symlink("loop", root.join("loop")).expect("link");
        assert_eq!(
            resolve_in_root(root, "/lib/x.so", true).expect("r"),
            "usr/lib/x.so"
        );
        assert_eq!(
            resolve_in_root(root, "evil/etc/passwd", true).expect("r"),
            "etc/passwd"
        );
        assert_eq!(resolve_in_root(root, "usr/up/etc", true).expect("r"), "etc");
        assert_eq!(
            resolve_in_root(root, "../../a/./b/..", true).expect("r"),
            "a"
        );
        assert_eq!(resolve_in_root(root, "lib", false).expect("r"), "lib");
        assert_eq!(resolve_in_root(root, "lib", true).expect("r"), "usr/lib");
        assert!(matches!(
            resolve_in_root(root, "loop/x", true),
            Err(PathError::Loop(_))
        ));
        assert_eq!(resolve_in_root(root, "/", true).expect("r"), "");
        // A `..` after a missing component climbs back into real
        // directories, whose symlinks still resolve inside the root.
        assert_eq!(
            resolve_in_root(root, "nope/../evil/etc/passwd", true).expect("r"),
            "etc/passwd"
        );
    }
}
