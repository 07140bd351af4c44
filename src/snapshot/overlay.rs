//! Overlay mounts of snapshot chains, in a mount namespace of kiln's own.
//!
//! As root, kiln enters a private mount namespace before it starts any
//! thread ([`init`]): every mount it makes is invisible to the host and
//! ends with the process, even one killed with SIGKILL. A stage's files
//! are then a read-only overlay of its layers' snapshot directories,
//! bottom layer last, with no copying. Where that cannot be (not root, no
//! overlayfs, `KILN_SNAPSHOTTER=copy`), builds copy instead.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

static ENABLED: OnceLock<bool> = OnceLock::new();
/// Set when overlayfs turned out unusable for the store (see [`probe`]).
static REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static MOUNTS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Enters a private mount namespace when kiln runs as root. Call first
/// thing in `main`, while the process has one thread (unsharing the mount
/// namespace needs that).
pub fn init() {
    let _ = ENABLED.set(enter_namespace());
}

fn enter_namespace() -> bool {
    if std::env::var("KILN_SNAPSHOTTER").is_ok_and(|v| v == "copy") {
        return false;
    }
    if !rustix::process::geteuid().is_root() {
        return false;
    }
    // SAFETY: only NEWNS is unshared (no file-descriptor table), and the
    // process has one thread.
    if unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }.is_err() {
        return false;
    }
    use rustix::mount::MountPropagationFlags as P;
    rustix::mount::mount_change("/", P::PRIVATE | P::REC).is_ok()
}

/// Whether stages are overlay mounts (else copies).
pub fn enabled() -> bool {
    ENABLED.get().copied().unwrap_or(false) && !REFUSED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Checks, once, that overlayfs works with directories in `tmp` (the
/// store's, where snapshots and steps' upper directories live); where it
/// does not (an upper directory on overlayfs inside a container, a kernel
/// without it), kiln copies instead, and says so.
pub fn probe(tmp: &Path) {
    if !enabled() {
        return;
    }
    if let Err(e) = try_mount(tmp) {
        REFUSED.store(true, std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "kiln: warning: overlayfs cannot be used in {} ({e}); stages and RUN steps use full copies instead (slower; KILN_SNAPSHOTTER=copy chooses this outright)",
            tmp.display()
        );
    }
}

fn try_mount(tmp: &Path) -> io::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix(&crate::store::Store::temp_prefix("probe"))
        .tempdir_in(tmp)?;
    let (lower, upper, work) = (
        dir.path().join("l"),
        dir.path().join("u"),
        dir.path().join("w"),
    );
    for d in [&lower, &upper, &work] {
        std::fs::create_dir(d)?;
    }
    // Never attached anywhere: dropping the descriptor unmounts it.
    let _mnt = overlay_fd(
        &[&lower],
        Some((&upper, &work)),
        rustix::mount::MountAttrFlags::empty(),
    )?;
    Ok(())
}

/// Which backend builds use, for messages: `overlay` or `copy`.
pub fn backend() -> &'static str {
    if enabled() {
        "overlay"
    } else {
        "copy"
    }
}

/// An overlay mount not attached anywhere yet: `lowers` bottom first (each
/// passed alone with `lowerdir+`, so no option string limits their number;
/// overlayfs allows 500), and, when writable, its upper and work
/// directories. A writable one keeps every change whole in the upper
/// directory: no redirects for renamed directories, no metadata-only
/// copies (`userxattr`, in a user namespace, implies both and refuses them
/// as options).
pub fn overlay_fd(
    lowers: &[&Path],
    upper_work: Option<(&Path, &Path)>,
    attrs: rustix::mount::MountAttrFlags,
) -> io::Result<std::os::fd::OwnedFd> {
    use rustix::mount::{
        fsconfig_create, fsconfig_set_string, fsmount, fsopen, FsMountFlags, FsOpenFlags,
    };
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    for dir in lowers.iter().rev() {
        fsconfig_set_string(&fs, "lowerdir+", *dir)?;
    }
    if let Some((upper, work)) = upper_work {
        fsconfig_set_string(&fs, "upperdir", upper)?;
        fsconfig_set_string(&fs, "workdir", work)?;
        // No sync of the upper file system when the mount goes (syncfs of
        // the whole store's file system, 100 ms and more after a big
        // unpack): a build's upper directory is thrown away or renamed
        // into the store like every other file kiln writes, none of which
        // is fsynced. Kernels before 5.10 lack the option: mount without.
        let _ = rustix::mount::fsconfig_set_flag(&fs, "volatile");
        if !crate::userns::in_userns() {
            fsconfig_set_string(&fs, "redirect_dir", "off")?;
            fsconfig_set_string(&fs, "metacopy", "off")?;
            fsconfig_set_string(&fs, "index", "off")?;
        }
    }
    if crate::userns::in_userns() {
        rustix::mount::fsconfig_set_flag(&fs, "userxattr")?;
    }
    fsconfig_create(&fs)?;
    Ok(fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)?)
}

/// Attaches a mount made by [`overlay_fd`] at `target`.
pub fn attach(mnt: &std::os::fd::OwnedFd, target: &Path) -> io::Result<()> {
    rustix::mount::move_mount(
        mnt,
        "",
        rustix::fs::CWD,
        target,
        rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

/// Mounts, read-only at `target` (an empty directory), the union of
/// `layers` (snapshot directories, bottom first). `empty` is an empty
/// directory, stacked at the bottom so that even one layer makes a valid
/// overlay (whose whiteouts then hide nothing, as they should).
pub fn mount_chain(layers: &[PathBuf], empty: &Path, target: &Path) -> io::Result<()> {
    use rustix::mount::MountAttrFlags as A;
    let mut lowers = vec![empty];
    lowers.extend(layers.iter().map(PathBuf::as_path));
    let mnt = overlay_fd(
        &lowers,
        None,
        A::MOUNT_ATTR_RDONLY | A::MOUNT_ATTR_NODEV | A::MOUNT_ATTR_NOSUID,
    )?;
    attach(&mnt, target)?;
    if let Ok(mut m) = MOUNTS.lock() {
        m.push(target.to_path_buf());
    }
    Ok(())
}

/// Unmounts everything [`mount_chain`] mounted, newest first; the work
/// directory can then be removed.
pub fn unmount_all() {
    let Ok(mut m) = MOUNTS.lock() else {
        return;
    };
    while let Some(p) = m.pop() {
        let _ = rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH);
    }
}
