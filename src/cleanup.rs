//! Paths to remove if kiln is interrupted (SIGINT, SIGTERM): the build's
//! work directory and a half-written output. A handler thread removes
//! them and exits with 128 + the signal, as a shell reports it.
//!
//! Everything else kiln writes is already safe to interrupt: blobs reach
//! the store by rename, and the store sweeps temporaries of dead builds.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static PATHS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether a signal is ending kiln: the handler thread cleans up and
/// exits; other threads must not exit first with their own code.
pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Waits for the handler thread to end the process, when a signal came.
pub fn wait_if_interrupted() {
    while interrupted() {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Kills process `pid` (a sandbox helper) if kiln is interrupted; its
/// step's whole process tree goes with it.
pub fn register_child(pid: u32) {
    if let Ok(mut v) = CHILDREN.lock() {
        v.push(pid);
    }
}

/// Kills every running sandbox helper (their steps' process trees go
/// with them): a build that failed cancels the steps still running.
pub fn kill_children() {
    if let Ok(v) = CHILDREN.lock() {
        for pid in v.iter() {
            if let Ok(pid) = i32::try_from(*pid) {
                // SAFETY: kill with a plain pid; the waiting thread reaps.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// The process `pid` has ended.
pub fn forget_child(pid: u32) {
    if let Ok(mut v) = CHILDREN.lock() {
        v.retain(|x| *x != pid);
    }
}

/// Removes `p` if kiln is interrupted, until [`forget`] is called.
pub fn register(p: &Path) {
    if let Ok(mut v) = PATHS.lock() {
        v.push(p.to_path_buf());
    }
}

/// `p` is finished (renamed into place, or removed): keep it.
pub fn forget(p: &Path) {
    if let Ok(mut v) = PATHS.lock() {
        v.retain(|x| x != p);
    }
}

/// Starts the handler thread. Call once, early.
pub fn install() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
            // Running steps first: their helpers take their namespaces,
            // processes and mounts with them.
            if let Ok(v) = CHILDREN.lock() {
                for pid in v.iter() {
                    if let Ok(pid) = i32::try_from(*pid) {
                        // SAFETY: kill with a plain pid.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                        let mut status = 0;
                        // SAFETY: reaping our own child.
                        unsafe { libc::waitpid(pid, &mut status, 0) };
                    }
                }
            }
            // Overlay mounts next, so that removing the work directory
            // does not walk into them.
            crate::snapshot::overlay::unmount_all();
            if let Ok(v) = PATHS.lock() {
                for p in v.iter() {
                    let _ = if p.is_dir() {
                        std::fs::remove_dir_all(p)
                    } else {
                        std::fs::remove_file(p)
                    };
                }
            }
            // A live progress view goes before the last words.
            crate::progress::finish();
            eprintln!("kiln: interrupted; removed temporary files");
            std::process::exit(128 + sig);
        }
    });
}
