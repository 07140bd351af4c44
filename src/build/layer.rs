//! Turning the paths a step changed into a layer: each changed path and
//! every parent directory of it (as a snapshot diff has them, with their
//! metadata as they are now), written as a deterministic tar, compressed,
//! and stored under its digest.

use super::BuildOptions;
use crate::image::LayerBlob;
use crate::layer::compress::LayerSink;
use crate::layer::writer::{self, Entry, EntryKind, FileSource, WriteOptions};
use crate::snapshot::{host_path, parent_rel};
use crate::store::Store;
use anyhow::{Context as _, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Makes and stores the layer for `changes` under `root`. A step that
/// changed nothing still gets a layer (the empty tar), as BuildKit gives
/// COPY, ADD and WORKDIR one.
pub fn commit(
    root: &Path,
    changes: &BTreeSet<String>,
    opts: &BuildOptions,
    store: &Store,
) -> Result<LayerBlob> {
    let mut all: BTreeSet<&str> = BTreeSet::new();
    for rel in changes {
        let mut p = rel.as_str();
        while !p.is_empty() && all.insert(p) {
            p = parent_rel(p);
        }
    }
    let mut entries = Vec::with_capacity(all.len());
    for rel in all {
        entries.push(entry_for(root, rel)?);
    }
    let tmp = store.temp_file()?;
    let file = tmp.reopen().context("cannot open the layer file")?;
    let sink = LayerSink::new(
        std::io::BufWriter::with_capacity(1 << 20, file),
        opts.compression,
        opts.threads,
    );
    let wopts = WriteOptions {
        source_date_epoch: opts.source_date_epoch,
    };
    let sink = writer::write_tar(entries, sink, &wopts).context("cannot write the layer")?;
    let (mut out, info) = sink.finish().context("cannot compress the layer")?;
    std::io::Write::flush(&mut out).context("cannot write the layer")?;
    store.commit(tmp, &info.digest)?;
    Ok(LayerBlob {
        digest: info.digest,
        diff_id: info.diff_id,
        size: info.size,
        compression: opts.compression,
    })
}

/// A tar entry for the object at `rel`, read with lstat.
pub fn entry_for(root: &Path, rel: &str) -> Result<Entry> {
    let host = host_path(root, rel);
    let m = fs::symlink_metadata(&host).with_context(|| format!("cannot read /{rel}"))?;
    let ft = m.file_type();
    let dev = m.rdev();
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let kind = if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File {
            source: FileSource::Path(host.clone()),
            size: m.len(),
        }
    } else if ft.is_symlink() {
        EntryKind::Symlink {
            target: fs::read_link(&host)
                .with_context(|| format!("cannot read /{rel}"))?
                .into_os_string(),
        }
    } else if ft.is_char_device() {
        EntryKind::CharDevice { major, minor }
    } else if ft.is_block_device() {
        EntryKind::BlockDevice { major, minor }
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else {
        anyhow::bail!("/{rel}: sockets cannot be stored in a layer");
    };
    Ok(Entry {
        path: rel.to_string(),
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: m.mtime(),
        xattrs: BTreeMap::new(),
    })
}
