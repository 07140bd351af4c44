//! COPY and ADD: expanding sources, and placing files into a target
//! directory with BuildKit's rules.
//!
//! Sources come from a [`Src`] (the build context seen through
//! `.dockerignore`, a stage's root filesystem, or a named context). The
//! target is a stage's root filesystem, or an empty directory for
//! `--link`. Every path written is recorded in [`Target::changes`]; the
//! layer is made from those paths afterwards. All paths in the target are
//! resolved inside it ([`crate::snapshot::resolve_in_root`]).

use super::chmod::Chmod;
use super::glob;
use crate::context::ignore::{self, Matcher};
use crate::snapshot::{host_path, join_rel, parent_rel, resolve_in_root};
use anyhow::{anyhow, bail, Context as _, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

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
}

impl Src<'_> {
    fn excluded(&self, rel: &str) -> bool {
        !rel.is_empty() && self.matcher.is_some_and(|m| m.excluded(rel))
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

/// The directory being written, and what was written to it.
pub struct Target<'a> {
    pub root: &'a Path,
    pub changes: &'a mut BTreeSet<String>,
    links: HashMap<(u64, u64), String>,
    /// Directories whose metadata is set once their contents are written.
    dir_meta: BTreeMap<String, (u32, u32, u32, i64, u32)>,
    resolved: HashMap<String, String>,
}

impl<'a> Target<'a> {
    pub fn new(root: &'a Path, changes: &'a mut BTreeSet<String>) -> Self {
        Target {
            root,
            changes,
            links: HashMap::new(),
            dir_meta: BTreeMap::new(),
            resolved: HashMap::new(),
        }
    }

    /// Sets the metadata of the directories written, deepest first, so
    /// that writing children does not disturb a parent's mtime.
    pub fn finish(self) -> Result<()> {
        for (rel, (uid, gid, mode, secs, nanos)) in self.dir_meta.iter().rev() {
            let p = host_path(self.root, rel);
            set_meta(&p, *uid, *gid, Some(*mode), *secs, *nanos)?;
        }
        Ok(())
    }

    /// Resolves a directory path in the target, creating what is missing
    /// (mode 0755, owned by `owner`, time `now`), and returns it resolved.
    pub fn ensure_dir(&mut self, rel: &str, owner: (u32, u32), now: i64) -> Result<String> {
        if let Some(r) = self.resolved.get(rel) {
            return Ok(r.clone());
        }
        let resolved = resolve_in_root(self.root, rel, true)?;
        let mut cur = String::new();
        for comp in resolved.split('/').filter(|c| !c.is_empty()) {
            cur = join_rel(&cur, comp);
            let host = host_path(self.root, &cur);
            match fs::symlink_metadata(&host) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(anyhow!(
                        "cannot copy to /{cur}: it exists in the image and is not a directory"
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&host).with_context(|| format!("cannot create /{cur}"))?;
                    self.changes.insert(cur.clone());
                    self.dir_meta
                        .insert(cur.clone(), (owner.0, owner.1, 0o755, now, 0));
                }
                Err(e) => return Err(e).with_context(|| format!("cannot read /{cur}")),
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
        let dst = host_path(self.root, &rel);
        let ft = meta.file_type();
        let existing = fs::symlink_metadata(&dst).ok();
        if ft.is_dir() {
            match existing {
                Some(e) if e.is_dir() => {}
                Some(_) => {
                    fs::remove_file(&dst).with_context(|| format!("cannot replace /{rel}"))?;
                    fs::create_dir(&dst).with_context(|| format!("cannot create /{rel}"))?;
                }
                None => fs::create_dir(&dst).with_context(|| format!("cannot create /{rel}"))?,
            }
            self.resolved.insert(rel.clone(), rel.clone());
            self.dir_meta
                .insert(rel.clone(), (m.uid, m.gid, m.mode, m.mtime, m.mtime_nsec));
            self.changes.insert(rel.clone());
            return Ok(rel);
        }
        if let Some(e) = existing {
            if e.is_dir() {
                fs::remove_dir_all(&dst).with_context(|| format!("cannot replace /{rel}"))?;
            } else {
                fs::remove_file(&dst).with_context(|| format!("cannot replace /{rel}"))?;
            }
        }
        if ft.is_file() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                fs::hard_link(host_path(self.root, first), &dst)
                    .with_context(|| format!("cannot link /{rel}"))?;
                self.changes.insert(rel.clone());
                return Ok(rel);
            }
            self.links.insert(key, rel.clone());
        }
        if ft.is_file() {
            let mut from =
                File::open(src).with_context(|| format!("cannot read {}", src.display()))?;
            let mut to = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&dst)
                .with_context(|| format!("cannot create /{rel}"))?;
            io::copy(&mut from, &mut to)
                .with_context(|| format!("cannot copy {} to /{rel}", src.display()))?;
        } else if ft.is_symlink() {
            let target =
                fs::read_link(src).with_context(|| format!("cannot read {}", src.display()))?;
            std::os::unix::fs::symlink(&target, &dst)
                .with_context(|| format!("cannot create /{rel}"))?;
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_fifo() {
                rustix::fs::FileType::Fifo
            } else if ft.is_char_device() {
                rustix::fs::FileType::CharacterDevice
            } else {
                rustix::fs::FileType::BlockDevice
            };
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &dst,
                kind,
                rustix::fs::Mode::from_raw_mode(m.mode),
                meta.rdev(),
            )
            .with_context(|| format!("cannot create /{rel}"))?;
        } else {
            bail!("cannot copy {}: unsupported file type", src.display());
        }
        let mode = (!ft.is_symlink()).then_some(m.mode);
        set_meta(&dst, m.uid, m.gid, mode, m.mtime, m.mtime_nsec)?;
        self.changes.insert(rel.clone());
        Ok(rel)
    }

    /// Writes a file with the given bytes (heredoc sources, downloads).
    pub fn put_bytes(&mut self, data: &[u8], rel: &str, m: &Meta, now: i64) -> Result<String> {
        let rel = self.place_path(rel, (m.uid, m.gid), now)?;
        let dst = host_path(self.root, &rel);
        if let Ok(e) = fs::symlink_metadata(&dst) {
            if e.is_dir() {
                fs::remove_dir_all(&dst)
            } else {
                fs::remove_file(&dst)
            }
            .with_context(|| format!("cannot replace /{rel}"))?;
        }
        fs::write(&dst, data).with_context(|| format!("cannot write /{rel}"))?;
        set_meta(&dst, m.uid, m.gid, Some(m.mode), m.mtime, m.mtime_nsec)?;
        self.changes.insert(rel.clone());
        Ok(rel)
    }

    /// Starts a new source: hardlinks are only kept within one.
    pub fn forget_links(&mut self) {
        self.links.clear();
    }

    /// Records that the directory `rel` (resolved) gets `mtime`, keeping
    /// its owner and mode.
    pub fn touch_dir(&mut self, rel: &str, mtime: i64, nanos: u32) -> Result<()> {
        let host = host_path(self.root, rel);
        let m = fs::symlink_metadata(&host).with_context(|| format!("cannot read /{rel}"))?;
        let entry = self.dir_meta.entry(rel.to_string()).or_insert((
            m.uid(),
            m.gid(),
            m.mode() & 0o7777,
            mtime,
            nanos,
        ));
        entry.3 = mtime;
        entry.4 = nanos;
        self.changes.insert(rel.to_string());
        Ok(())
    }

    /// Whether `rel` is an existing directory (following symlinks inside
    /// the target).
    pub fn is_dir(&self, rel: &str) -> bool {
        resolve_in_root(self.root, rel, true).is_ok_and(|r| host_path(self.root, &r).is_dir())
    }
}

/// Owner, mode and time of one object to write.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
}

/// Sets owner, then mode (chown clears setuid), then times, without
/// following a final symlink.
pub fn set_meta(
    p: &Path,
    uid: u32,
    gid: u32,
    mode: Option<u32>,
    secs: i64,
    nanos: u32,
) -> Result<()> {
    use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
    let owner = (
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    );
    if let Err(e) = rustix::fs::chownat(CWD, p, owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW) {
        // Without root, ownership cannot be set; the layer still records
        // what it should be (see the layer writer), so only fail as root.
        if rustix::process::geteuid().is_root() {
            return Err(io::Error::from(e))
                .with_context(|| format!("cannot chown {}", p.display()));
        }
    }
    if let Some(mode) = mode {
        rustix::fs::chmodat(
            CWD,
            p,
            rustix::fs::Mode::from_raw_mode(mode & 0o7777),
            AtFlags::empty(),
        )
        .map_err(io::Error::from)
        .with_context(|| format!("cannot chmod {}", p.display()))?;
    }
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: nanos.into(),
    };
    rustix::fs::utimensat(
        CWD,
        p,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(io::Error::from)
    .with_context(|| format!("cannot set the times of {}", p.display()))?;
    Ok(())
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
    pub from_wildcard: bool,
}

/// Expands one source pattern against `src`.
pub fn expand(src: &Src, pattern: &str) -> Result<Vec<Matched>> {
    let clean = crate::plan::values::clean_path(&format!("/{pattern}"));
    let rel = clean.trim_start_matches('/');
    if !glob::has_meta(rel) {
        let resolved = resolve_in_root(src.root, rel, true)?;
        let host = host_path(src.root, &resolved);
        return match fs::metadata(&host) {
            Ok(meta) if !src.excluded(rel) && !src.excluded(&resolved) => Ok(vec![Matched {
                rel: rel.to_string(),
                resolved,
                host,
                meta,
                from_wildcard: false,
            }]),
            Ok(_) => bail!(
                "{pattern}: excluded by .dockerignore, so not in the {}",
                src.what
            ),
            Err(_) => bail!("{pattern}: not found in the {}", src.what),
        };
    }
    let mut level: Vec<String> = vec![String::new()];
    for comp in rel.split('/') {
        let mut next = Vec::new();
        for dir in &level {
            if !glob::has_meta(comp) {
                let cand = join_rel(dir, comp);
                if fs::symlink_metadata(host_path(src.root, &cand)).is_ok() {
                    next.push(cand);
                }
                continue;
            }
            let host = host_path(src.root, dir);
            let Ok(rd) = fs::read_dir(&host) else {
                continue;
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
        if src.excluded(&rel) {
            continue;
        }
        let resolved = resolve_in_root(src.root, &rel, true)?;
        let host = host_path(src.root, &resolved);
        if let Ok(meta) = fs::metadata(&host) {
            out.push(Matched {
                rel,
                resolved,
                host,
                meta,
                from_wildcard: true,
            });
        }
    }
    Ok(out)
}

/// The owner and mode a copied object gets.
pub fn meta_for(src: &Src, s: &Settings, meta: &Metadata) -> Meta {
    let (uid, gid) = match s.chown {
        Some(o) => o,
        None if src.reset_owner => (0, 0),
        None => (meta.uid(), meta.gid()),
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
        mtime_nsec: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
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
    let top = meta_for(src, s, &m.meta);
    let resolved = t.ensure_dir(dest_rel, s.chown.unwrap_or((0, 0)), s.now)?;
    if with_top && !resolved.is_empty() {
        t.touch_dir(&resolved, top.mtime, top.mtime_nsec)?;
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
        let meta = meta_for(src, s, &e.metadata);
        t.put(&host, &e.metadata, &join_rel(dest_rel, sub), &meta, s.now)?;
    }
    Ok(())
}
