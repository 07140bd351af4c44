//! A stage's filesystem as the build sees it: a directory on disk (what
//! is materialized) plus an index of the entries of layers made since,
//! which are not written out until something needs real files.
//!
//! COPY into the final stage is the common case, and it never needs the
//! files on disk: the layer is written straight from the sources. So the
//! layer's entries go into the index, and lookups (does `/app` exist, is
//! `/lib` a symlink, who owns `/etc`) consult the index before the
//! directory. [`View::materialize`] applies the pending layers to the
//! directory when real files are needed (a `COPY --from` of this stage,
//! a `type=local` output).

use crate::layer::writer::{Entry, EntryKind, FileSource};
use crate::snapshot::{host_path, parent_rel};
use anyhow::{Context as _, Result};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What a path is: enough of lstat for COPY's decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    Symlink(String),
    Other,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        self.kind == NodeKind::Dir
    }

    fn of_entry(e: &Entry) -> Node {
        let kind = match &e.kind {
            EntryKind::Dir => NodeKind::Dir,
            EntryKind::Symlink { target } => {
                NodeKind::Symlink(target.to_string_lossy().into_owned())
            }
            _ => NodeKind::Other,
        };
        Node {
            kind,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            mtime: e.mtime,
        }
    }

    fn of_disk(p: &Path) -> io::Result<Option<Node>> {
        let m = match fs::symlink_metadata(p) {
            Ok(m) => m,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            NodeKind::Dir
        } else if ft.is_symlink() {
            NodeKind::Symlink(fs::read_link(p)?.to_string_lossy().into_owned())
        } else {
            NodeKind::Other
        };
        let _ = ft.is_fifo();
        Ok(Some(Node {
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            mtime: m.mtime(),
        }))
    }
}

/// A stage's filesystem: `root` on disk, overlaid by `index`.
#[derive(Debug, Clone)]
pub struct View {
    pub root: PathBuf,
    /// Entries of the layers made in this build, by path (applied to
    /// `root` or not).
    index: BTreeMap<String, Entry>,
    /// Those layers, bottom first, as blobs in the store.
    pending: Vec<crate::image::LayerBlob>,
    /// Owners of the base image's files, when the disk cannot hold them
    /// (unpacked without root).
    base_owners: Option<std::sync::Arc<super::import::Owners>>,
    /// With the overlay backend: the snapshots `root` is the overlay of,
    /// bottom first. `root` is then read-only: materializing mounts a new
    /// overlay with the pending layers' snapshots on top.
    snapshots: Option<Vec<PathBuf>>,
    /// Pending layers came from the build cache: their entries are not in
    /// `index`, so lookups are only right after [`View::materialize`].
    opaque: bool,
}

impl View {
    pub fn new(root: PathBuf) -> View {
        View {
            root,
            index: BTreeMap::new(),
            pending: Vec::new(),
            base_owners: None,
            snapshots: None,
            opaque: false,
        }
    }

    /// A view whose disk is the overlay of `snapshots` mounted at `root`
    /// (nothing mounted and `root` empty when there are none).
    pub fn overlay(root: PathBuf, snapshots: Vec<PathBuf>) -> View {
        View {
            snapshots: Some(snapshots),
            ..View::new(root)
        }
    }

    /// A copy for a stage based on this one: the directory is cloned by
    /// the caller into `root`; the pending layers are shared.
    pub fn derive(&self, root: PathBuf) -> View {
        View {
            root,
            index: self.index.clone(),
            pending: self.pending.clone(),
            base_owners: self.base_owners.clone(),
            snapshots: self.snapshots.clone(),
            opaque: self.opaque,
        }
    }

    /// Mounts the overlay of the snapshots at a new mount point (the old
    /// overlay may be another stage's view too) and makes it the disk.
    fn remount(&mut self) -> Result<()> {
        let Some(chain) = &self.snapshots else {
            return Ok(());
        };
        // A name no other view takes: stages running at once may share a
        // root (two stages FROM one image).
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let target = loop {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let t = PathBuf::from(format!("{}.{n}", self.root.display()));
            if !t.exists() {
                break t;
            }
        };
        super::import::mount(chain, &target)?;
        self.root = target;
        Ok(())
    }

    /// The snapshots the disk is an overlay of, bottom first (overlay
    /// backend).
    pub fn snapshots(&self) -> Option<&[PathBuf]> {
        self.snapshots.as_deref()
    }

    /// Stacks a committed snapshot (a RUN step's changes) on the disk,
    /// which then holds every file of the stage: the index of pending
    /// entries is no longer needed (materialize first).
    pub fn push_snapshot(&mut self, snapshot: PathBuf) -> Result<()> {
        let Some(chain) = &mut self.snapshots else {
            anyhow::bail!("a snapshot can only be stacked on an overlay view");
        };
        chain.push(snapshot);
        self.index.clear();
        self.remount()
    }

    /// Makes `root` (a full copy a RUN step changed) the disk, which then
    /// holds every file of the stage (copy snapshotter).
    pub fn replace_disk(&mut self, root: PathBuf) {
        self.root = root;
        self.index.clear();
        self.pending.clear();
    }

    /// Whether the disk is a read-only overlay of snapshots.
    pub fn is_overlay(&self) -> bool {
        self.snapshots.is_some()
    }

    /// What `rel` (resolved, no symlinks in its parents) is.
    pub fn lstat(&self, rel: &str) -> Result<Option<Node>> {
        if rel.is_empty() {
            return Ok(Some(Node {
                kind: NodeKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: 0,
            }));
        }
        if let Some(e) = self.index.get(rel) {
            return Ok(Some(Node::of_entry(e)));
        }
        // A pending non-directory above hides whatever is on disk below.
        let mut p = parent_rel(rel);
        while !p.is_empty() {
            if let Some(e) = self.index.get(p) {
                if !matches!(e.kind, EntryKind::Dir) {
                    return Ok(None);
                }
                break;
            }
            p = parent_rel(p);
        }
        let host = host_path(&self.root, rel);
        let mut node = Node::of_disk(&host).with_context(|| format!("cannot read /{rel}"))?;
        if let (Some(n), Some((uid, gid))) = (
            node.as_mut(),
            self.base_owners.as_ref().and_then(|o| o.get(rel)),
        ) {
            n.uid = *uid;
            n.gid = *gid;
        }
        Ok(node)
    }

    /// Resolves `rel` following symlinks inside the view, as
    /// [`crate::snapshot::resolve_in_root`] does on disk. `extra` is
    /// consulted first (the entries of the step in progress).
    pub fn resolve(
        &self,
        extra: &BTreeMap<String, Entry>,
        rel: &str,
        follow_final: bool,
    ) -> Result<String> {
        crate::snapshot::resolve_with(rel, follow_final, |cur| {
            let node = match extra.get(cur) {
                Some(e) => Some(Node::of_entry(e)),
                None => self.lstat(cur)?,
            };
            Ok::<_, anyhow::Error>(match node.map(|n| n.kind) {
                Some(NodeKind::Symlink(target)) => Some(target),
                _ => None,
            })
        })
    }

    /// Owner and mode of every path the layers made in this build wrote,
    /// and the owner (mode unknown: the disk has it right) of the base
    /// image's files when those were unpacked without root.
    pub fn owner_modes(&self) -> BTreeMap<String, (u32, u32, Option<u32>)> {
        let mut out: BTreeMap<String, (u32, u32, Option<u32>)> = self
            .base_owners
            .iter()
            .flat_map(|o| o.iter())
            .map(|(k, &(u, g))| (k.clone(), (u, g, None)))
            .collect();
        for (k, e) in &self.index {
            out.insert(k.clone(), (e.uid, e.gid, Some(e.mode)));
        }
        out
    }

    /// The owner that layers made in this build gave `rel`, or the base
    /// image's layers when they were unpacked without root.
    pub fn owner(&self, rel: &str) -> Option<(u32, u32)> {
        self.index
            .get(rel)
            .map(|e| (e.uid, e.gid))
            .or_else(|| self.base_owners.as_ref().and_then(|o| o.get(rel).copied()))
    }

    /// Sets the owners of the base image's files (see `base_owners`).
    pub fn set_base_owners(&mut self, owners: Option<std::sync::Arc<super::import::Owners>>) {
        self.base_owners = owners;
    }

    /// Reads a small file (/etc/passwd) through the view: a regular file
    /// of at most 4 MiB, or an error.
    pub fn read(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        const MAX: u64 = 4 << 20;
        let rel = self.resolve(&BTreeMap::new(), rel, true)?;
        let path = match self.index.get(&rel) {
            Some(e) => match &e.kind {
                EntryKind::File {
                    source: FileSource::Bytes(b),
                    ..
                } => return Ok(Some(b.clone())),
                EntryKind::File {
                    source: FileSource::Path(p),
                    ..
                } => p.clone(),
                _ => anyhow::bail!("/{rel} is not a regular file"),
            },
            None => {
                if self.lstat(&rel)?.is_none() {
                    return Ok(None);
                }
                host_path(&self.root, &rel)
            }
        };
        crate::snapshot::read_small(&path, MAX)
            .map(Some)
            .with_context(|| format!("cannot read /{rel}"))
    }

    /// Records a layer made on top of this view.
    pub fn add_layer(&mut self, entries: Vec<Entry>, blob: crate::image::LayerBlob) {
        for e in entries {
            if !matches!(e.kind, EntryKind::Dir) {
                // A file replacing a directory hides what was under it.
                let prefix = format!("{}/", e.path);
                let under: Vec<String> = self
                    .index
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in under {
                    self.index.remove(&k);
                }
            }
            self.index.insert(e.path.clone(), e);
        }
        self.pending.push(blob);
    }

    /// Records a layer that a cache hit gave: nothing about its files is
    /// known until the view is materialized (which unpacks it, or stacks
    /// the snapshot its step left).
    pub fn add_cached(&mut self, blob: crate::image::LayerBlob) {
        self.pending.push(blob);
        self.opaque = true;
    }

    /// Whether lookups need [`View::materialize`] first (layers from the
    /// cache are pending).
    pub fn is_opaque(&self) -> bool {
        self.opaque
    }

    /// Applies the pending layers to the directory, so that it holds the
    /// stage's files.
    pub fn materialize(&mut self, store: &crate::store::Store) -> Result<()> {
        let opaque = std::mem::take(&mut self.opaque);
        if opaque {
            // The disk will be the truth; entries of earlier layers could
            // shadow what a cached layer changed.
            self.index.clear();
        }
        if let Some(chain) = &mut self.snapshots {
            if self.pending.is_empty() {
                return Ok(());
            }
            for blob in std::mem::take(&mut self.pending) {
                // A RUN step's own snapshot, kept over these same lowers,
                // saves unpacking its layer.
                let lowers = crate::snapshot::layers::distinct(chain)?;
                let stacked = super::run::stacked_path(store, &blob.diff_id, &lowers)?;
                chain.push(if stacked.is_dir() {
                    stacked
                } else {
                    crate::snapshot::layers::ensure(store, &blob.digest, &blob.diff_id)?
                });
            }
            return self.remount();
        }
        for blob in std::mem::take(&mut self.pending) {
            let p = store.blob_path(&blob.digest)?;
            let f =
                fs::File::open(&p).with_context(|| format!("cannot open layer {}", blob.digest))?;
            let (reader, _) = crate::layer::apply::decompressed(io::BufReader::new(f))
                .with_context(|| format!("cannot decompress layer {}", blob.digest))?;
            let opts = crate::layer::apply::ApplyOptions {
                whiteouts: true,
                same_owner: true,
                chown: None,
                devices: true,
                overlay: false,
            };
            let reader = crate::layer::apply::ReadAhead::new(reader);
            crate::layer::apply::apply(reader, &self.root, "", &opts)
                .with_context(|| format!("cannot apply layer {}", blob.digest))?;
        }
        // The index stays: it has the owners the files should have, which
        // the disk lacks when kiln runs without root.
        Ok(())
    }
}
