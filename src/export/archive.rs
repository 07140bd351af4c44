//! Helpers for the archives exporters write, and for copying a filesystem
//! to a directory (`type=local`).

use crate::layer::writer::{Entry, EntryKind, FileSource};
use anyhow::{Context as _, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// A directory entry of an image archive: root-owned, 0755, time 0.
pub fn dir(path: &str) -> Entry {
    Entry {
        path: path.to_string(),
        kind: EntryKind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: 0,
        xattrs: BTreeMap::new(),
    }
}

/// A file entry of an image archive: root-owned, 0644, time 0.
pub fn file(path: &str, source: FileSource, size: u64) -> Entry {
    Entry {
        path: path.to_string(),
        kind: EntryKind::File { source, size },
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 0,
        xattrs: BTreeMap::new(),
    }
}

/// Copies a filesystem to `dest` (created when missing), keeping owners
/// (when root), modes, times and links, by streaming it through the layer
/// writer and the applier, so the same code handles every file type.
pub fn copy_dir(from: &Path, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let entries = crate::layer::writer::entries_from_dir(from, "")?;
    let (reader, writer) = std::io::pipe().context("cannot create a pipe")?;
    let producer = std::thread::spawn(move || {
        let opts = crate::layer::writer::WriteOptions {
            source_date_epoch: None,
            ..Default::default()
        };
        crate::layer::writer::write_tar(entries, writer, &opts).map(|_| ())
    });
    let opts = crate::layer::apply::ApplyOptions {
        whiteouts: false,
        same_owner: true,
        chown: None,
        devices: true,
        overlay: false,
    };
    // The applier reads the stream to its end, so the writer never finds
    // the pipe closed early.
    let applied = crate::layer::apply::apply(reader, dest, "", &opts)
        .with_context(|| format!("cannot write {}", dest.display()));
    let written = producer
        .join()
        .map_err(|_| anyhow::anyhow!("the archive writer panicked"))?;
    applied?;
    written.with_context(|| format!("cannot read {}", from.display()))?;
    Ok(())
}
