//! COPY and ADD: expanding sources, and placing files into a target
//! directory with BuildKit's rules.
//!
//! Sources come from a [`Src`] (the build context seen through
//! `.dockerignore`, a stage's root filesystem, or a named context). The
//! [`Target`] decides, against a [`View`] of the stage's filesystem, which
//! entries the step writes; the layer is made from them, its file contents
//! read from the sources. All destination paths resolve inside the view.

use super::chmod::Chmod;
use super::glob;
use super::view::{Node, NodeKind, View};
use crate::context::ignore::{self, Matcher};
use crate::layer::writer::{Entry, EntryKind, FileSource};
use crate::snapshot::{host_path, join_rel, parent_rel, resolve_in_root};
use anyhow::{anyhow, bail, Context as _, Result};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Looks up the owner a source path should have.
pub type OwnerOf<'a> = dyn Fn(&str) -> Option<(u32, u32)> + 'a;

/// Where a COPY reads from.
pub struct Src<'a> {
    pub root: &'a Path,
    /// `.dockerignore` of the build context.
    pub matcher: Option<&'a Matcher>,
    /// Context files are owned by 0:0 in the image, whoever owns them on
    /// the host (BuildKit resets them when it transfers the context).
    pub reset_owner: bool,
    /// Shown in "not found" errors: "build context", "stage builder".
    pub what: String,
    /// Owners that the files on disk may not show: without root, unpacked
    /// files belong to the user running kiln, so a stage's or an archive's
    /// intended owners come from here.
    pub owners: Option<&'a OwnerOf<'a>>,
}

impl Src<'_> {
    fn excluded(&self, rel: &str) -> bool {
        !rel.is_empty() && self.matcher.is_some_and(|m| m.excluded(rel))
    }

    /// Whether a source is invisible: excluded by name or by where it
    /// resolves to, unless it is a directory under which an exception
    /// re-includes something (the walk then yields only that).
    fn hidden(&self, rel: &str, resolved: &str, is_dir: bool) -> bool {
        let Some(m) = self.matcher else { return false };
        let out = |p: &str| self.excluded(p) && !(is_dir && m.may_reinclude_under(p));
        out(rel) || out(resolved)
    }
}

/// Ownership, mode and time settings of one COPY.
pub struct Settings {
    pub chown: Option<(u32, u32)>,
    pub chmod: Option<Chmod>,
    /// Time for directories and files that COPY creates itself.
    pub now: i64,
    /// `--exclude` patterns.
    pub exclude: Option<Matcher>,
}

/// The entries one step writes, decided against a [`View`] of the stage's
/// filesystem. Nothing is written to disk: the layer is made from
/// [`Target::finish`]'s entries, whose file contents are read from the
/// sources.
pub struct Target<'a> {
    view: &'a View,
    entries: BTreeMap<String, Entry>,
    links: HashMap<(u64, u64), String>,
    resolved: HashMap<String, String>,
}

impl<'a> Target<'a> {
    pub fn new(view: &'a View) -> Self {
        Target {
            view,
            entries: BTreeMap::new(),
            links: HashMap::new(),
            resolved: HashMap::new(),
        }
    }

    /// The entries written, plus every parent directory of them with its
    /// metadata as it is (a snapshot diff has them too).
    pub fn finish(self) -> Result<Vec<Entry>> {
        let mut all = self.entries;
        let paths: Vec<String> = all.keys().cloned().collect();
        for p in paths {
            let mut parent = parent_rel(&p).to_string();
            while !parent.is_empty() && !all.contains_key(&parent) {
                let node = self
                    .view
                    .lstat(&parent)?
                    .ok_or_else(|| anyhow!("/{parent} disappeared"))?;
                all.insert(parent.clone(), dir_entry(&parent, &node));
                parent = parent_rel(&parent).to_string();
            }
        }
        Ok(all.into_values().collect())
    }

    fn lstat(&self, rel: &str) -> Result<Option<Node>> {
        match self.entries.get(rel) {
            Some(e) => Ok(Some(Node {
                kind: match &e.kind {
                    EntryKind::Dir => NodeKind::Dir,
                    EntryKind::Symlink { target } => {
                        NodeKind::Symlink(target.to_string_lossy().into_owned())
                    }
                    _ => NodeKind::Other,
                },
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                mtime: e.mtime,
            })),
            None => self.view.lstat(rel),
        }
    }

    fn insert(&mut self, e: Entry) {
        if !matches!(e.kind, EntryKind::Dir) {
            let prefix = format!("{}/", e.path);
            self.entries.retain(|k, _| !k.starts_with(&prefix));
            self.resolved
                .retain(|_, v| !(v == &e.path || v.starts_with(&prefix)));
        }
        self.entries.insert(e.path.clone(), e);
    }

    /// Resolves a directory path, creating what is missing (mode 0755,
    /// owned by `owner`, time `now`), and returns it resolved.
    pub fn ensure_dir(&mut self, rel: &str, owner: (u32, u32), now: i64) -> Result<String> {
        if let Some(r) = self.resolved.get(rel) {
            return Ok(r.clone());
        }
        let resolved = self.view.resolve(&self.entries, rel, true)?;
        let mut cur = String::new();
        for comp in resolved.split('/').filter(|c| !c.is_empty()) {
            cur = join_rel(&cur, comp);
            match self.lstat(&cur)? {
                Some(n) if n.is_dir() => {}
                Some(_) => {
                    bail!("/{cur} exists in the image and is not a directory")
                }
                None => {
                    let node = Node {
                        kind: NodeKind::Dir,
                        mode: 0o755,
                        uid: owner.0,
                        gid: owner.1,
                        mtime: now,
                    };
                    self.insert(dir_entry(&cur, &node));
                }
            }
        }
        self.resolved.insert(rel.to_string(), resolved.clone());
        Ok(resolved)
    }

    /// Where `rel` goes: its parent resolved (and created), its own name
    /// kept, so an existing symlink there is replaced, not followed.
    fn place_path(&mut self, rel: &str, owner: (u32, u32), now: i64) -> Result<String> {
        let parent = self.ensure_dir(parent_rel(rel), owner, now)?;
        let name = rel.rsplit('/').next().unwrap_or(rel);
        if name == ".." || name == "." || name.is_empty() {
            bail!("invalid destination path /{rel}");
        }
        Ok(join_rel(&parent, name))
    }

    /// Copies one filesystem object (not its children) from `src` to the
    /// target path `rel`, with the given owner, mode and time.
    pub fn put(
        &mut self,
        src: &Path,
        meta: &Metadata,
        rel: &str,
        m: &Meta,
        now: i64,
    ) -> Result<String> {
        let rel = self.place_path(rel, (m.uid, m.gid), now)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            if let Some(Node {
                kind: NodeKind::Symlink(_),
                ..
            }) = self.lstat(&rel)?
            {
                // BuildKit: "cannot copy to non-directory".
                bail!(
                    "cannot copy the directory {} to /{rel}: it is a symlink in the image",
                    src.display()
                );
            }
        }
        let (major, minor) = (
            rustix::fs::major(meta.rdev()),
            rustix::fs::minor(meta.rdev()),
        );
        let kind = if ft.is_dir() {
            self.resolved.insert(rel.clone(), rel.clone());
            EntryKind::Dir
        } else if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            match self.links.get(&key) {
                Some(first) if meta.nlink() > 1 && self.entries.contains_key(first) => {
                    EntryKind::Hardlink {
                        target: first.clone(),
                    }
                }
                _ => {
                    if meta.nlink() > 1 {
                        self.links.insert(key, rel.clone());
                    }
                    EntryKind::File {
                        source: FileSource::Path(src.to_path_buf()),
                        size: meta.len(),
                    }
                }
            }
        } else if ft.is_symlink() {
            EntryKind::Symlink {
                target: fs::read_link(src)
                    .with_context(|| format!("cannot read {}", src.display()))?
                    .into_os_string(),
            }
        } else if ft.is_fifo() {
            EntryKind::Fifo
        } else if ft.is_char_device() {
            EntryKind::CharDevice { major, minor }
        } else if ft.is_block_device() {
            EntryKind::BlockDevice { major, minor }
        } else {
            bail!(
                "cannot copy {}: sockets cannot be stored in an image",
                src.display()
            );
        };
        self.insert(m.entry(&rel, kind));
        Ok(rel)
    }

    /// Writes a file with the given bytes (heredoc sources).
    pub fn put_bytes(&mut self, data: &[u8], rel: &str, m: &Meta, now: i64) -> Result<String> {
        let kind = EntryKind::File {
            source: FileSource::Bytes(data.to_vec()),
            size: data.len() as u64,
        };
        self.put_new(kind, rel, m, now)
    }

    /// Writes a file whose contents are read from `src` (downloads).
    pub fn put_file(
        &mut self,
        src: &Path,
        size: u64,
        rel: &str,
        m: &Meta,
        now: i64,
    ) -> Result<String> {
        let kind = EntryKind::File {
            source: FileSource::Path(src.to_path_buf()),
            size,
        };
        self.put_new(kind, rel, m, now)
    }

    fn put_new(&mut self, kind: EntryKind, rel: &str, m: &Meta, now: i64) -> Result<String> {
        let rel = self.place_path(rel, (m.uid, m.gid), now)?;
        self.insert(m.entry(&rel, kind));
        Ok(rel)
    }

    /// Where a file named as the destination lands: an existing symlink
    /// there is followed (inside the image), as BuildKit's copy resolves
    /// the destination path.
    pub fn file_dest(&self, rel: &str) -> Result<String> {
        self.view.resolve(&self.entries, rel, true)
    }

    /// Starts a new source: hardlinks are only kept within one.
    pub fn forget_links(&mut self) {
        self.links.clear();
    }

    /// Gives the directory `rel` (resolved) the time `mtime`, keeping its
    /// owner and mode.
    pub fn touch_dir(&mut self, rel: &str, mtime: i64) -> Result<()> {
        let node = self
            .lstat(rel)?
            .ok_or_else(|| anyhow!("/{rel} does not exist"))?;
        let mut e = dir_entry(rel, &node);
        e.mtime = mtime;
        self.insert(e);
        Ok(())
    }

    /// Whether `rel` is an existing directory (following symlinks).
    pub fn is_dir(&self, rel: &str) -> bool {
        self.view
            .resolve(&self.entries, rel, true)
            .ok()
            .and_then(|r| self.lstat(&r).ok().flatten())
            .is_some_and(|n| n.is_dir())
    }
}

fn dir_entry(path: &str, n: &Node) -> Entry {
    Entry {
        path: path.to_string(),
        kind: EntryKind::Dir,
        mode: n.mode,
        uid: n.uid,
        gid: n.gid,
        mtime: n.mtime,
        xattrs: BTreeMap::new(),
    }
}

/// Owner, mode and time of one object to write.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub mtime: i64,
}

impl Meta {
    /// The layer entry for `path` with this owner, mode and time.
    fn entry(&self, path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: path.to_string(),
            kind,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            mtime: self.mtime,
            xattrs: BTreeMap::new(),
        }
    }
}

/// A source that matched: its path in the source root (symlinks at the
/// top followed, as BuildKit's `FollowSymlinks`), and how it was named.
pub struct Matched {
    /// The path as matched: a wildcard's match keeps a symlink's own name.
    pub rel: String,
    /// `rel` with its symlinks resolved: where the contents are read.
    pub resolved: String,
    pub host: PathBuf,
    pub meta: Metadata,
    /// What `--parents` keeps under the destination: `rel`, or the part
    /// after a `/./` pivot in the pattern (`x/./y/f` keeps `y/f`).
    pub keep: String,
}

/// Whether a relative path climbs above its root (`../x`, `a/../../x`).
fn escapes(pattern: &str) -> bool {
    let mut depth: i64 = 0;
    for c in pattern.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

/// Expands one source pattern against `src`.
pub fn expand(src: &Src, pattern: &str) -> Result<Vec<Matched>> {
    let clean = crate::plan::values::clean_path(&format!("/{pattern}"));
    let rel = clean.trim_start_matches('/');
    let pivot = pattern.find("/./").map(|i| {
        let before = crate::plan::values::clean_path(&format!("/{}", &pattern[..i]));
        before.trim_start_matches('/').to_string()
    });
    let keep_of = |rel: &str| -> String {
        match &pivot {
            Some(p) if !p.is_empty() => rel
                .strip_prefix(p.as_str())
                .and_then(|r| r.strip_prefix('/'))
                .unwrap_or(rel)
                .to_string(),
            _ => rel.to_string(),
        }
    };
    if !glob::has_meta(rel) {
        let resolved = resolve_in_root(src.root, rel, true)?;
        let host = host_path(src.root, &resolved);
        return match fs::metadata(&host) {
            Ok(meta) if !src.hidden(rel, &resolved, meta.is_dir()) => Ok(vec![Matched {
                rel: rel.to_string(),
                keep: keep_of(rel),
                resolved,
                host,
                meta,
            }]),
            Ok(_) => bail!(
                "{pattern}: excluded by .dockerignore, so not in the {}",
                src.what
            ),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                if escapes(pattern) {
                    bail!(
                        "{pattern}: not found in the {}: the path points outside it, \
                         which COPY cannot read (it looked for /{rel} inside)",
                        src.what
                    )
                }
                bail!("{pattern}: not found in the {}", src.what)
            }
            Err(e) => bail!("{pattern}: cannot read it in the {}: {e}", src.what),
        };
    }
    let mut level: Vec<String> = vec![String::new()];
    for comp in rel.split('/') {
        let mut next = Vec::new();
        for dir in &level {
            // Directories are listed where they resolve inside the root,
            // never through a symlink to the host.
            let dir_resolved = resolve_in_root(src.root, dir, true)?;
            let host = host_path(src.root, &dir_resolved);
            if !glob::has_meta(comp) {
                let cand = join_rel(dir, comp);
                if fs::symlink_metadata(host.join(comp)).is_ok() {
                    next.push(cand);
                }
                continue;
            }
            let rd = match fs::read_dir(&host) {
                Ok(rd) => rd,
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(libc::ENOTDIR) =>
                {
                    continue
                }
                Err(e) => bail!(
                    "{pattern}: cannot list /{dir_resolved} in the {}: {e}",
                    src.what
                ),
            };
            let mut names: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for name in names {
                if glob::matches(comp, &name).map_err(|e| anyhow!("{pattern}: {e}"))? {
                    next.push(join_rel(dir, &name));
                }
            }
        }
        level = next;
    }
    let mut out = Vec::new();
    for rel in level {
        let resolved = resolve_in_root(src.root, &rel, true)?;
        let host = host_path(src.root, &resolved);
        if let Ok(meta) = fs::metadata(&host) {
            if src.hidden(&rel, &resolved, meta.is_dir()) {
                continue;
            }
            out.push(Matched {
                keep: keep_of(&rel),
                rel,
                resolved,
                host,
                meta,
            });
        }
    }
    Ok(out)
}

/// The owner and mode a copied object gets.
pub fn meta_for(src: &Src, s: &Settings, rel: &str, meta: &Metadata) -> Meta {
    let (uid, gid) = match s.chown {
        Some(o) => o,
        None if src.reset_owner => (0, 0),
        None => src
            .owners
            .and_then(|f| f(rel))
            .unwrap_or((meta.uid(), meta.gid())),
    };
    let mode = meta.mode() & 0o7777;
    let is_link = meta.file_type().is_symlink();
    let mode = match (&s.chmod, is_link) {
        (Some(c), false) => c.apply(mode, meta.is_dir()),
        _ => mode,
    };
    Meta {
        uid,
        gid,
        mode,
        mtime: meta.mtime(),
    }
}

/// Copies the contents of the source directory `m` into the target
/// directory `dest` (BuildKit's `CopyDirContentsOnly`).
pub fn copy_dir_contents(
    src: &Src,
    m: &Matched,
    s: &Settings,
    t: &mut Target,
    dest: &str,
    with_top: bool,
) -> Result<()> {
    let empty = Matcher::from_patterns::<&str>(&[]).map_err(|e| anyhow!("{e}"))?;
    let matcher = src.matcher.unwrap_or(&empty);
    let entries = ignore::walk(src.root, &m.resolved, matcher)
        .with_context(|| format!("cannot read {} in the {}", m.rel, src.what))?;
    let prefix_len = if m.resolved.is_empty() {
        0
    } else {
        m.resolved.len() + 1
    };
    // The directory itself: BuildKit creates the destination (0755, owned
    // by the --chown user or root) and gives it only the source's mtime,
    // even when it exists already; its mode and owner stay.
    let dest_rel = dest.trim_matches('/');
    let top = meta_for(src, s, &m.resolved, &m.meta);
    let resolved = t.ensure_dir(dest_rel, s.chown.unwrap_or((0, 0)), s.now)?;
    if with_top && !resolved.is_empty() {
        t.touch_dir(&resolved, top.mtime)?;
    }
    for e in entries {
        if e.rel_path.len() < prefix_len || e.rel_path == m.resolved {
            continue;
        }
        let sub = &e.rel_path[prefix_len..];
        if let Some(ex) = &s.exclude {
            if ex.excluded(sub) {
                continue;
            }
        }
        let host = host_path(src.root, &e.rel_path);
        let meta = meta_for(src, s, &e.rel_path, &e.metadata);
        t.put(&host, &e.metadata, &join_rel(dest_rel, sub), &meta, s.now)?;
    }
    Ok(())
}
