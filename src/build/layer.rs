//! Writing a step's entries as a layer: a deterministic tar, compressed,
//! its digests computed on the way, stored under its digest.

use super::BuildOptions;
use crate::image::LayerBlob;
use crate::layer::compress::LayerSink;
use crate::layer::writer::{self, Entry, WriteOptions};
use crate::store::Store;
use anyhow::{Context as _, Result};

/// Writes `entries` as a layer into the store. A step that changed
/// nothing still gets a layer (the empty tar), as BuildKit gives COPY, ADD
/// and WORKDIR one.
pub fn write(entries: Vec<Entry>, opts: &BuildOptions, store: &Store) -> Result<LayerBlob> {
    write_with(entries, opts, store, true)
}

/// [`write`], choosing whether files that share an inode become
/// hardlinks (`no_inode_links` false: a RUN step's upper directory).
pub fn write_with(
    entries: Vec<Entry>,
    opts: &BuildOptions,
    store: &Store,
    no_inode_links: bool,
) -> Result<LayerBlob> {
    let tmp = store.temp_file()?;
    let file = tmp.reopen().context("cannot open the layer file")?;
    let sink = LayerSink::new(
        std::io::BufWriter::with_capacity(1 << 20, file),
        opts.compression,
        opts.threads,
    );
    let wopts = WriteOptions {
        source_date_epoch: opts.source_date_epoch,
        // COPY decides which files are hardlinks (within one source only).
        no_inode_links,
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
