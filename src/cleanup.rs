//! Paths to remove if kiln is interrupted (SIGINT, SIGTERM): the build's
//! work directory and a half-written output. A handler thread removes
//! them and exits with 128 + the signal, as a shell reports it.
//!
//! Everything else kiln writes is already safe to interrupt: blobs reach
//! the store by rename, and the store sweeps temporaries of dead builds.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static PATHS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

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
            // Overlay mounts first, so that removing the work directory
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
            eprintln!("kiln: interrupted; removed temporary files");
            std::process::exit(128 + sig);
        }
    });
}
