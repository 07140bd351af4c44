//! A faithful copy of a root filesystem, for the copy snapshotter: every
//! file type, owners, modes, xattrs, hardlinks and times to the
//! nanosecond (a step's changes are later found by comparing the copy
//! with its original, which needs the times intact). File data is
//! reflinked where the filesystem can share it (btrfs, XFS), else copied.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Copies the tree at `from` into `to` (created; it must not exist).
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    let mut links: HashMap<(u64, u64), std::path::PathBuf> = HashMap::new();
    let mut dirs = Vec::new();
    let walk = walkdir::WalkDir::new(from)
        .follow_links(false)
        .sort_by_file_name();
    for item in walk {
        let item = item.map_err(io::Error::other)?;
        let rel = item.path().strip_prefix(from).map_err(io::Error::other)?;
        let dest = to.join(rel);
        let md = std::fs::symlink_metadata(item.path())?;
        let ft = md.file_type();
        if rel.as_os_str().is_empty() {
            dirs.push((dest, md, item.path().to_path_buf()));
            continue;
        }
        if ft.is_dir() {
            std::fs::create_dir(&dest)?;
            dirs.push((dest, md, item.path().to_path_buf()));
            continue;
        }
        if !ft.is_dir() && md.nlink() > 1 {
            if let Some(first) = links.get(&(md.dev(), md.ino())) {
                std::fs::hard_link(first, &dest)?;
                continue;
            }
            links.insert((md.dev(), md.ino()), dest.clone());
        }
        if ft.is_file() {
            copy_file(item.path(), &dest)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(item.path())?, &dest)?;
        } else {
            use std::os::unix::fs::FileTypeExt;
            let kind = if ft.is_char_device() {
                rustix::fs::FileType::CharacterDevice
            } else if ft.is_block_device() {
                rustix::fs::FileType::BlockDevice
            } else if ft.is_fifo() {
                rustix::fs::FileType::Fifo
            } else {
                rustix::fs::FileType::Socket
            };
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &dest,
                kind,
                rustix::fs::Mode::from_raw_mode(0o600),
                md.rdev(),
            )?;
        }
        finish(item.path(), &dest, &md)?;
    }
    // Directories last, deepest first: their times change while they fill.
    for (dest, md, src) in dirs.iter().rev() {
        finish(src, dest, md)?;
    }
    Ok(())
}

/// Copies the entries `rels` of `from` (relative paths, each directory
/// before what it holds) into `to`, with their metadata: a chosen part of
/// a tree (the build context as `.dockerignore` leaves it).
pub fn copy_paths<'a>(
    from: &Path,
    rels: impl IntoIterator<Item = &'a str>,
    to: &Path,
) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    let mut dirs = Vec::new();
    for rel in rels {
        let src = from.join(rel);
        let dest = to.join(rel);
        let md = std::fs::symlink_metadata(&src)?;
        let ft = md.file_type();
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if ft.is_dir() {
            std::fs::create_dir_all(&dest)?;
            dirs.push((dest, md, src));
            continue;
        }
        if ft.is_file() {
            copy_file(&src, &dest)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dest)?;
        } else {
            // Devices, FIFOs and sockets have no place in a context view.
            continue;
        }
        finish(&src, &dest, &md)?;
    }
    for (dest, md, src) in dirs.iter().rev() {
        finish(src, dest, md)?;
    }
    Ok(())
}

/// Reflinks `from` to `to` when the filesystem allows, else copies.
fn copy_file(from: &Path, to: &Path) -> io::Result<()> {
    let src = std::fs::File::open(from)?;
    let dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)?;
    if rustix::fs::ioctl_ficlone(&dst, &src).is_ok() {
        return Ok(());
    }
    let (mut src, mut dst) = (src, dst);
    io::copy(&mut src, &mut dst)?;
    Ok(())
}

/// Owner, xattrs, mode, then times, as the original has them.
fn finish(src: &Path, dest: &Path, md: &std::fs::Metadata) -> io::Result<()> {
    rustix::fs::chownat(
        rustix::fs::CWD,
        dest,
        Some(rustix::fs::Uid::from_raw(md.uid())),
        Some(rustix::fs::Gid::from_raw(md.gid())),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )?;
    copy_xattrs(src, dest)?;
    if !md.file_type().is_symlink() {
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
    }
    let ts = |s: i64, n: i64| rustix::fs::Timespec {
        tv_sec: s,
        tv_nsec: n as _,
    };
    let times = rustix::fs::Timestamps {
        last_access: ts(md.atime(), md.atime_nsec()),
        last_modification: ts(md.mtime(), md.mtime_nsec()),
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        dest,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

fn copy_xattrs(src: &Path, dest: &Path) -> io::Result<()> {
    let mut names = vec![0u8; 64 * 1024];
    let n = match rustix::fs::llistxattr(src, &mut names) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut value = vec![0u8; 64 * 1024];
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = std::ffi::OsStr::from_bytes_compat(name);
        let Ok(len) = rustix::fs::lgetxattr(src, name, &mut value) else {
            continue;
        };
        // What the destination refuses (a namespace not ours) is left.
        let _ = rustix::fs::lsetxattr(dest, name, &value[..len], rustix::fs::XattrFlags::empty());
    }
    Ok(())
}

/// `OsStr::from_bytes`, named so as not to clash with the trait import.
trait FromBytes {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr;
}

impl FromBytes for std::ffi::OsStr {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}
