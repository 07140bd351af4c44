//! The layer applier: unpacks a tar stream (an OCI image layer, or the archive
//! named by an `ADD` source) into a directory, and the compression sniffing
//! `ADD` uses to decide whether a source is an archive at all.
//!
//! Main items: [`apply`] with [`ApplyOptions`], returning [`ApplyStats`];
//! [`detect`], [`decompressed`] and [`is_archive`]; one error type,
//! [`ApplyError`].
//!
//! Safety model. The root directory is opened once and every parent directory
//! is resolved from that descriptor with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)`, so symlinks in the tree, absolute or full of `..`,
//! resolve as if chrooted into the root. The final component of a name is
//! never followed: it is created or changed with `*at` calls relative to the
//! resolved parent (`O_NOFOLLOW | O_EXCL`, `AT_SYMLINK_NOFOLLOW`, `linkat`
//! without `AT_SYMLINK_FOLLOW`). Names are also checked lexically, as Docker
//! does: a relative name or hardlink target whose `..` climbs above the
//! destination is a "breakout" error. The applier assumes nothing else writes
//! to the tree while it runs.
//!
//! `tar::Archive` is only used to read headers and data; its `unpack` is not
//! used (it turns FIFOs and devices into files and resolves paths itself).

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{
    self as rfs, AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid,
    XattrFlags,
};
use rustix::io::Errno;
use tar::EntryType;

/// The compression of a stream, as sniffed from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Plain,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

/// Everything that can go wrong applying or sniffing an archive. Entry names
/// are shown lossily (non-UTF-8 bytes replaced) and quoted with escapes.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The stream is not a readable tar (bad header, decompression error,
    /// extended headers over the limit, I/O error of the source).
    #[error("reading archive: {0}")]
    Archive(#[source] io::Error),
    #[error("opening {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("destination {0:?} climbs above the root")]
    Dest(String),
    /// Docker's breakout error: the name's `..` climbs above the destination.
    #[error("{entry:?}: breakout: the name climbs above the extraction directory")]
    Breakout { entry: String },
    #[error("{entry:?}: breakout: hardlink target {target:?} is outside the extraction directory")]
    LinkBreakout { entry: String, target: String },
    #[error("{entry:?}: invalid whiteout name")]
    Whiteout { entry: String },
    #[error("{entry:?}: archive truncated: {expected} bytes declared, {got} present")]
    Truncated {
        entry: String,
        expected: u64,
        got: u64,
    },
    #[error("{entry:?}: unsupported tar entry ({what})")]
    Unsupported { entry: String, what: String },
    #[error("{entry:?}: {op}: {source}")]
    Io {
        entry: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

/// How [`apply`] treats ownership, devices and whiteouts.
#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    /// OCI layer mode: `.wh.<name>` removes `<name>` and `.wh..wh..opq`
    /// empties its directory of what lower layers put there; the markers are
    /// not created. Other `.wh..wh.*` names (AUFS metadata) are skipped, as
    /// Docker does. When false (ADD), markers are ordinary files: BuildKit's
    /// ADD untars with moby's default whiteout format, which has no
    /// converter.
    pub whiteouts: bool,
    /// Restore uid/gid from the headers. When not root and the chown is
    /// refused (EPERM/EINVAL), the current owner stays and
    /// `ownership_fallbacks` counts it; as root a refusal is an error.
    pub same_owner: bool,
    /// Override ownership of everything extracted (ADD --chown); takes
    /// precedence over `same_owner`. Same fallback rule.
    pub chown: Option<(u32, u32)>,
    /// Create character and block devices; when false, or when mknod is
    /// refused (EPERM, e.g. in a user namespace), they are skipped and counted.
    pub devices: bool,
    /// With `whiteouts`: the destination is an empty snapshot directory
    /// for this one layer, to be stacked by overlayfs. Whiteouts are kept
    /// in overlay's own form instead of removing anything: `.wh.<name>`
    /// becomes a character device 0/0 `<name>`, and `.wh..wh..opq` the
    /// `overlay.opaque` xattr of its directory (`trusted.` as root, else
    /// `user.`). The layer's own `overlay.*` xattrs are dropped: they would
    /// steer overlayfs.
    pub overlay: bool,
}

/// What [`apply`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Tar members applied, whiteouts and skipped devices included (PAX
    /// global headers and members naming the destination itself excluded).
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
    /// Devices (and FIFOs refused with EPERM) not created.
    pub skipped_devices: u64,
    /// Members whose requested owner could not be set (not root).
    pub ownership_fallbacks: u64,
    /// `SCHILY.xattr.*` records refused with EPERM or ENOTSUP (skipped as
    /// moby does with BestEffortXattrs, which BuildKit's ADD sets).
    pub skipped_xattrs: u64,
}

/// The xattr namespace overlayfs reads its markers from: `trusted.` for
/// a mount made as root, `user.` for one made in a user namespace
/// (`userxattr`).
pub fn overlay_xattr_prefix() -> &'static str {
    if rustix::process::geteuid().is_root() && !crate::userns::in_userns() {
        "trusted."
    } else {
        "user."
    }
}

/// Bytes the tar reader may consume for one member's headers: the GNU
/// long-name/long-link and PAX records that precede it (Go's archive/tar caps
/// each at 1 MiB). Without it a PAX header of a few GiB of zeros, tiny once
/// compressed, would be read whole into memory by the tar crate.
const HEADER_BUDGET: u64 = 4 << 20;
const WH_PREFIX: &[u8] = b".wh.";
const WH_META_PREFIX: &[u8] = b".wh..wh.";
const WH_OPAQUE: &[u8] = b".wh..wh..opq";
const XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";
/// Mode of directories implied by a member's path (moby's ImpliedDirectoryMode).
const IMPLIED_DIR_MODE: u32 = 0o755;
/// moby and containerd (`boundTime`) clamp times outside [epoch, 1<<63-1 ns]
/// to the epoch.
const MAX_SECS: i64 = 9_223_372_036;

/// Detects the compression of a stream by magic bytes, as Docker's
/// `compression.Detect` does (zstd includes skippable frames, RFC 8878 §3).
pub fn detect(head: &[u8]) -> Format {
    let skippable_zstd = head.len() >= 8
        && u32::from_le_bytes([head[0], head[1], head[2], head[3]]) & 0xFFFF_FFF0 == 0x184D_2A50;
    if head.starts_with(b"BZh") {
        Format::Bzip2
    } else if head.starts_with(&[0x1F, 0x8B, 0x08]) {
        Format::Gzip
    } else if head.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0x00]) {
        Format::Xz
    } else if head.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) || skippable_zstd {
        Format::Zstd
    } else {
        Format::Plain
    }
}

/// Wraps `r` in the decoder its first bytes call for. Multi-member gzip,
/// bzip2 and xz streams are read to the end, as Go's readers and `xz -d` do.
pub fn decompressed<R: Read + Send + 'static>(
    mut r: R,
) -> Result<(Box<dyn Read + Send>, Format), ApplyError> {
    let mut head = [0u8; 10];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ApplyError::Archive(e)),
        }
    }
    let format = detect(&head[..n]);
    let stream = io::Cursor::new(head[..n].to_vec()).chain(r);
    let out: Box<dyn Read + Send> = match format {
        Format::Plain => Box::new(io::BufReader::new(stream)),
        Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        Format::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(stream)),
        Format::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(stream)),
        Format::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(stream).map_err(ApplyError::Archive)?)
        }
    };
    Ok((out, format))
}

/// Reads `inner` on a thread of its own, up to 4 MiB ahead of the reader:
/// decompressing a layer then runs beside the writing of its files.
pub struct ReadAhead {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl ReadAhead {
    pub fn new(mut inner: Box<dyn Read + Send>) -> ReadAhead {
        const CHUNK: usize = 1 << 20;
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        std::thread::spawn(move || loop {
            let mut buf = vec![0u8; CHUNK];
            let mut n = 0;
            while n < CHUNK {
                match inner.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
            if n == 0 {
                return;
            }
            buf.truncate(n);
            // A reader that went away stops the thread.
            if tx.send(Ok(buf)).is_err() || n < CHUNK {
                return;
            }
        });
        ReadAhead {
            rx,
            cur: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(b)) => {
                    self.cur = b;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Whether the file at `path` is a tar archive, possibly compressed, that ADD
/// must extract. BuildKit's `isArchivePath`: a regular file (not followed if
/// a symlink) whose decompressed stream yields a first tar header with a
/// valid checksum. An empty tar (zero blocks only) is not an archive, as Go's
/// `Next` returns EOF for it. Reads only the first header group. I/O errors
/// of the file itself are errors; anything the decoders or tar reader reject
/// is `Ok(false)`.
pub fn is_archive(path: &Path) -> Result<bool, ApplyError> {
    let open_err = |source| ApplyError::Open {
        path: path.to_path_buf(),
        source,
    };
    if !std::fs::symlink_metadata(path).map_err(open_err)?.is_file() {
        return Ok(false);
    }
    let failure = std::sync::Arc::new(std::sync::Mutex::new(None));
    let file = Tracked {
        inner: File::open(path).map_err(open_err)?,
        failure: failure.clone(),
    };
    let verdict = match decompressed(file) {
        Ok((stream, _)) => {
            let guard = Guard {
                inner: stream,
                budget: Rc::new(Cell::new(Some(HEADER_BUDGET))),
            };
            let mut archive = tar::Archive::new(guard);
            let first = archive.entries().map(|mut e| e.next());
            matches!(first, Ok(Some(Ok(_))))
        }
        Err(_) => false,
    };
    match failure.lock().ok().and_then(|mut f| f.take()) {
        Some(source) => Err(open_err(source)),
        None => Ok(verdict),
    }
}

/// Extracts the (already decompressed) tar stream `r` into `root/dest`
/// (`dest` relative to `root`, "" for the root itself; created if missing).
/// Every path is resolved inside `root` as if chrooted, so nothing is ever
/// written outside it. Relative names or hardlink targets climbing above
/// `dest` are breakout errors; absolute names are taken relative to `dest`,
/// as Docker does. The first error stops the extraction and leaves what was
/// written so far.
pub fn apply<R: Read>(
    r: R,
    root: &Path,
    dest: &str,
    opts: &ApplyOptions,
) -> Result<ApplyStats, ApplyError> {
    let root_fd = rfs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ApplyError::Open {
        path: root.to_path_buf(),
        source: e.into(),
    })?;
    let dest_comps = clean(dest.as_bytes()).ok_or_else(|| ApplyError::Dest(dest.to_string()))?;
    let mut ap = Applier {
        root: root_fd,
        dest: dest_comps,
        opts,
        // Root of a user namespace without subordinate ids cannot give
        // files other owners: a refusal is then not an error.
        is_root: crate::userns::full_ids(),
        stats: ApplyStats::default(),
        keep: HashSet::new(),
        dirs: BTreeMap::new(),
        buf: vec![0; 64 * 1024],
    };
    ap.ensure_dir(&ap.dest)
        .at(dest, "creating the destination")?;

    // The budget is armed only while the tar crate reads headers, never while
    // member data streams (see HEADER_BUDGET).
    let budget = Rc::new(Cell::new(None));
    let mut archive = tar::Archive::new(Guard {
        inner: r,
        budget: budget.clone(),
    });
    let mut entries = archive.entries().map_err(ApplyError::Archive)?;
    loop {
        budget.set(Some(HEADER_BUDGET));
        let next = entries.next();
        budget.set(None);
        match next {
            None => break,
            Some(Err(e)) => return Err(ApplyError::Archive(e)),
            Some(Ok(mut entry)) => ap.entry(&mut entry)?,
        }
    }
    // The tar reader stops at the first end-of-archive block; the rest
    // (the second block, a record's padding) is read too, so that a
    // writer on the other end of a pipe is never cut off mid-write (a
    // broken pipe, under load, in `type=local` exports).
    // Best effort: what follows the archive is not part of it (a
    // compressed file's padding may not even decompress).
    let _ = io::copy(&mut archive.into_inner(), &mut io::sink());
    ap.finish()?;
    Ok(ap.stats)
}

/// Reader that fails once its budget is spent; `None` means unlimited.
struct Guard<R> {
    inner: R,
    budget: Rc<Cell<Option<u64>>>,
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.budget.get() {
            None => self.inner.read(buf),
            Some(0) => Err(io::Error::other(format!(
                "the headers of one tar member exceed {} MiB",
                HEADER_BUDGET >> 20
            ))),
            Some(left) => {
                let cap = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = self.inner.read(&mut buf[..cap])?;
                self.budget.set(Some(left.saturating_sub(n as u64)));
                Ok(n)
            }
        }
    }
}

/// Reader that remembers the first error of the underlying file, so that
/// `is_archive` tells "unreadable file" from "not an archive".
struct Tracked<R> {
    inner: R,
    failure: std::sync::Arc<std::sync::Mutex<Option<io::Error>>>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                if let Ok(mut f) = self.failure.lock() {
                    *f = Some(io::Error::new(e.kind(), e.to_string()));
                }
            }
        })
    }
}

/// Deferred directory metadata, applied after all members (see `finish`).
struct DirMeta {
    mode: u32,
    times: (Timespec, Timespec),
    label: String,
}

/// What the PAX records of a member add to its header.
#[derive(Default)]
struct Extensions {
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    mtime: Option<(i64, u32)>,
    atime: Option<(i64, u32)>,
    sparse: bool,
}

/// The metadata a member asks for, applied by `finish_node`.
struct Meta {
    owner: Option<(u32, u32)>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    mode: u32,
    times: (Timespec, Timespec),
}

/// How metadata reaches a node: through an open descriptor, or by name in its
/// parent without following it (symlinks, devices, FIFOs).
#[derive(Clone, Copy)]
enum Node<'a> {
    Fd(&'a OwnedFd),
    Symlink,
    Special,
}

struct Applier<'o> {
    root: OwnedFd,
    dest: Vec<Vec<u8>>,
    opts: &'o ApplyOptions,
    is_root: bool,
    stats: ApplyStats,
    /// Layer mode: paths (and their ancestors) this layer wrote. Whiteouts
    /// apply only to lower layers (OCI image-spec layer.md, "Whiteouts"), so
    /// an opaque marker or whiteout must not remove these, whatever the
    /// member order.
    keep: HashSet<Vec<u8>>,
    /// Directory members; mode and times are set at the end, deepest first,
    /// so that writing children (or lacking write permission on a 0555
    /// directory as non-root) does not interfere (containerd's apply).
    dirs: BTreeMap<Vec<Vec<u8>>, DirMeta>,
    buf: Vec<u8>,
}

fn io_err(entry: &str, op: &'static str, e: impl Into<io::Error>) -> ApplyError {
    ApplyError::Io {
        entry: entry.to_string(),
        op,
        source: e.into(),
    }
}

/// Attaches the member name and the failed step to an I/O error.
trait At<T> {
    fn at(self, entry: &str, op: &'static str) -> Result<T, ApplyError>;
}

impl<T, E: Into<io::Error>> At<T> for Result<T, E> {
    fn at(self, entry: &str, op: &'static str) -> Result<T, ApplyError> {
        self.map_err(|e| io_err(entry, op, e))
    }
}

/// Lexically cleans a member name into components, like Go's `path.Clean`
/// followed by Docker's breakout check: `None` when a relative name climbs
/// above its base. In an absolute name `..` stops at the root ("/../x" is
/// "x"), as `path.Clean` does.
fn clean(name: &[u8]) -> Option<Vec<Vec<u8>>> {
    let absolute = name.starts_with(b"/");
    let mut out: Vec<Vec<u8>> = Vec::new();
    for comp in name.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() && !absolute {
                    return None;
                }
            }
            _ => out.push(comp.to_vec()),
        }
    }
    Some(out)
}

fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    if comps.is_empty() {
        return b".".to_vec();
    }
    comps.join(&b'/')
}

fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// Opens a directory by name in `parent` without following a final symlink.
fn open_dir_nofollow(parent: impl AsFd, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    rfs::openat(
        parent,
        os(name),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Names in a directory, read fully before the caller removes any.
fn list(dir: impl AsFd) -> rustix::io::Result<Vec<Vec<u8>>> {
    let fd = rfs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for item in rfs::Dir::new(fd)? {
        let name = item?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    Ok(names)
}

/// Removes `name` in `dir` and, if it is a directory, everything below it,
/// never following symlinks (moby's `os.RemoveAll`). Holds one descriptor
/// per level of depth.
fn remove_all(dir: impl AsFd, name: &[u8]) -> rustix::io::Result<()> {
    let dir = dir.as_fd();
    match rfs::unlinkat(dir, os(name), AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::ISDIR) => {
            let sub = open_dir_nofollow(dir, name)?;
            for child in list(&sub)? {
                remove_all(&sub, &child)?;
            }
            match rfs::unlinkat(dir, os(name), AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Parses a PAX time ("1350244992.023960108"); `None` if malformed, and the
/// header's time is used instead.
fn pax_time(value: &[u8]) -> Option<(i64, u32)> {
    let text = std::str::from_utf8(value).ok()?;
    if text.starts_with('-') {
        return Some((-1, 0)); // before the epoch: clamped, as moby's boundTime does
    }
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().unwrap_or(i64::MAX);
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    Some((secs, digits.parse().unwrap_or(0)))
}

fn timespec((secs, nanos): (i64, u32)) -> Timespec {
    if !(0..=MAX_SECS).contains(&secs) {
        return Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
    }
    Timespec {
        tv_sec: secs,
        tv_nsec: nanos.into(),
    }
}

fn stamps((last_access, last_modification): (Timespec, Timespec)) -> Timestamps {
    Timestamps {
        last_access,
        last_modification,
    }
}

/// Reads and discards the rest of a member's data, checking it is all there.
fn drain<R: Read>(entry: &mut tar::Entry<'_, R>, label: &str) -> Result<(), ApplyError> {
    let expected = entry.size();
    let got = io::copy(entry, &mut io::sink()).at(label, "reading data")?;
    if got < expected {
        return Err(ApplyError::Truncated {
            entry: label.to_string(),
            expected,
            got,
        });
    }
    Ok(())
}

impl Applier<'_> {
    /// Resolves a directory inside the root, following symlinks as if
    /// chrooted. EAGAIN (a concurrent rename) is retried a few times.
    fn open_dir(&self, comps: &[Vec<u8>]) -> rustix::io::Result<OwnedFd> {
        let path = join(comps);
        let mut tries = 0;
        loop {
            let r = rfs::openat2(
                &self.root,
                os(&path),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            );
            match r {
                Err(Errno::AGAIN) if tries < 16 => tries += 1,
                other => return other,
            }
        }
    }

    /// Like `open_dir`, creating missing components with mode 0755 (moby's
    /// implied directories). An existing non-directory is ENOTDIR, as for
    /// containerd's mkparent.
    fn ensure_dir(&self, comps: &[Vec<u8>]) -> rustix::io::Result<OwnedFd> {
        match self.open_dir(comps) {
            Err(Errno::NOENT) => {}
            other => return other,
        }
        let Some((last, parent_comps)) = comps.split_last() else {
            return Err(Errno::NOENT);
        };
        let parent = self.ensure_dir(parent_comps)?;
        match rfs::mkdirat(&parent, os(last), Mode::from_raw_mode(0o700)) {
            Ok(()) => {
                // Explicit chmod so the umask does not decide the mode.
                let fd = open_dir_nofollow(&parent, last)?;
                rfs::fchmod(&fd, Mode::from_raw_mode(IMPLIED_DIR_MODE))?;
            }
            Err(Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
        self.open_dir(comps)
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ApplyError> {
        let raw = entry.path_bytes().into_owned();
        let label = String::from_utf8_lossy(&raw).into_owned();
        let header = entry.header().clone();
        let flag = header.as_bytes()[156];
        let mut kind = header.entry_type();
        if kind.is_pax_global_extensions() {
            return drain(entry, &label); // ignored, as Docker and containerd do
        }
        // Go's reader turns an old-style '\0' member with a trailing slash
        // into a directory.
        if flag == 0 && raw.ends_with(b"/") {
            kind = EntryType::Directory;
        }
        let unsupported = |what: String| ApplyError::Unsupported {
            entry: label.clone(),
            what,
        };
        use EntryType::{Block, Char, Directory, Fifo, Link, Regular, Symlink};
        // Docker fails on any other type ("unhandled tar header type"). GNU
        // sparse members are refused rather than expanded: the tar crate
        // would write every hole as zeros, unbounded by the input.
        if !matches!(
            kind,
            Regular | Directory | Symlink | Link | Char | Block | Fifo
        ) {
            return Err(unsupported(format!("type {:?}", char::from(flag))));
        }
        let ext = self.extensions(entry, &label)?;
        if ext.sparse {
            return Err(unsupported("PAX sparse file".into()));
        }
        let rel = clean(&raw).ok_or_else(|| ApplyError::Breakout {
            entry: label.clone(),
        })?;
        let Some((name, rel_parent)) = rel.split_last() else {
            // Names the destination itself ("." or "/"): skipped, as Docker
            // and containerd do, so the destination keeps its metadata.
            return drain(entry, &label);
        };
        if self.opts.whiteouts && rel_parent.iter().any(|c| c.starts_with(WH_META_PREFIX)) {
            // Inside AUFS metadata such as .wh..wh.plnk/: Docker skips it.
            return drain(entry, &label);
        }
        self.stats.entries += 1;
        let mut full = self.dest.clone();
        full.extend(rel.iter().cloned());
        let parent_comps = &full[..full.len() - 1];
        let parent = self
            .ensure_dir(parent_comps)
            .at(&label, "resolving the parent directory")?;

        if self.opts.whiteouts && name.starts_with(WH_PREFIX) {
            drain(entry, &label)?;
            return self.whiteout(&parent, parent_comps, name, &label);
        }
        if matches!(kind, EntryType::Char | EntryType::Block) && !self.opts.devices {
            self.stats.skipped_devices += 1;
            return drain(entry, &label);
        }

        // OCI layer.md "Changeset over existing files": two directories merge;
        // anything else is removed, recursively, and recreated.
        let existing = match rfs::statat(&parent, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Some(FileType::from_raw_mode(st.st_mode)),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(io_err(&label, "inspecting the existing path", e)),
        };
        let existing_dir = existing == Some(FileType::Directory);
        if existing.is_some() && !(existing_dir && kind == EntryType::Directory) {
            remove_all(&parent, name).at(&label, "removing the existing path")?;
        }

        let old = header.as_old();
        let mode = numeric(header.mode(), &old.mode)? & 0o7777;
        let mtime = match ext.mtime {
            Some(t) => t,
            None => {
                let secs = numeric(header.mtime(), &old.mtime)?;
                (i64::try_from(secs).unwrap_or(i64::MAX), 0)
            }
        };
        // Docker's latestTime: atime is never earlier than mtime.
        let atime = ext.atime.filter(|a| *a > mtime).unwrap_or(mtime);
        let meta = Meta {
            owner: self.requested_owner(&header, &label)?,
            xattrs: ext.xattrs,
            mode,
            times: (timespec(atime), timespec(mtime)),
        };

        match kind {
            EntryType::Directory => {
                if !existing_dir {
                    rfs::mkdirat(&parent, os(name), Mode::from_raw_mode(0o700))
                        .at(&label, "creating the directory")?;
                }
                let fd = open_dir_nofollow(&parent, name).at(&label, "opening the directory")?;
                self.set_owner(&parent, name, Node::Fd(&fd), meta.owner, &label)?;
                self.set_xattrs(&parent, name, Node::Fd(&fd), &meta.xattrs, &label)?;
                let (mode, times) = (meta.mode, meta.times);
                let dir = DirMeta {
                    mode,
                    times,
                    label: label.clone(),
                };
                self.dirs.insert(full.clone(), dir);
                drain(entry, &label)?;
            }
            EntryType::Regular => {
                let fd = rfs::openat(
                    &parent,
                    os(name),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .at(&label, "creating the file")?;
                let mut file = File::from(fd);
                self.write_data(entry, &mut file, &label)?;
                let fd = OwnedFd::from(file);
                self.finish_node(&parent, name, Node::Fd(&fd), &meta, &label)?;
            }
            EntryType::Symlink => {
                let target = link_target(entry);
                drain(entry, &label)?;
                // The target is stored verbatim: it is only ever resolved
                // inside the root (here by openat2, later by the container),
                // like containerd. Docker also rejects relative targets that
                // climb above the destination; that adds no safety here.
                rfs::symlinkat(os(&target), &parent, os(name))
                    .at(&label, "creating the symlink")?;
                self.finish_node(&parent, name, Node::Symlink, &meta, &label)?;
            }
            EntryType::Link => {
                let target = link_target(entry);
                drain(entry, &label)?;
                self.hardlink(&parent, name, &target, &label)?;
            }
            _ => {
                drain(entry, &label)?;
                let (file_type, dev) = match kind {
                    EntryType::Char => (FileType::CharacterDevice, device(&header)?),
                    EntryType::Block => (FileType::BlockDevice, device(&header)?),
                    _ => (FileType::Fifo, 0),
                };
                let private = Mode::from_raw_mode(0o600);
                match rfs::mknodat(&parent, os(name), file_type, private, dev) {
                    Ok(()) => {}
                    // moby skips devices (and EPERM FIFOs) in a user namespace.
                    Err(Errno::PERM) => {
                        self.stats.skipped_devices += 1;
                        return Ok(());
                    }
                    Err(e) => return Err(io_err(&label, "creating the node", e)),
                }
                self.finish_node(&parent, name, Node::Special, &meta, &label)?;
            }
        }
        if self.opts.whiteouts {
            // Ancestors go in too; once one is present, all of its are.
            for i in (1..=full.len()).rev() {
                if !self.keep.insert(join(&full[..i])) {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Collects the PAX records this applier uses.
    fn extensions<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        label: &str,
    ) -> Result<Extensions, ApplyError> {
        let mut ext = Extensions::default();
        let records = entry.pax_extensions().at(label, "reading PAX records")?;
        for record in records.into_iter().flatten() {
            let record = record.at(label, "reading PAX records")?;
            let (key, value) = (record.key_bytes(), record.value_bytes());
            if let Some(attr) = key.strip_prefix(XATTR_PREFIX) {
                ext.xattrs.push((attr.to_vec(), value.to_vec()));
            } else if key == b"mtime" {
                ext.mtime = pax_time(value);
            } else if key == b"atime" {
                ext.atime = pax_time(value);
            } else if key.starts_with(b"GNU.sparse.") {
                ext.sparse = true;
            }
        }
        Ok(ext)
    }

    /// Streams exactly the member's declared size into `file`. All-zero
    /// blocks become holes, so a file of zeros costs no disk.
    fn write_data<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        file: &mut File,
        label: &str,
    ) -> Result<(), ApplyError> {
        let expected = entry.size();
        let mut got = 0u64;
        let mut hole = false;
        while got < expected {
            let want = usize::try_from(expected - got)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            let n = match entry.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(ApplyError::Truncated {
                        entry: label.to_string(),
                        expected,
                        got,
                    })
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(label, "reading data", e)),
            };
            let chunk = &self.buf[..n];
            if chunk.iter().all(|b| *b == 0) {
                file.seek(SeekFrom::Current(n as i64))
                    .at(label, "writing the file")?;
                hole = true;
            } else {
                file.write_all(chunk).at(label, "writing the file")?;
                hole = false;
            }
            got += n as u64;
        }
        if hole {
            file.set_len(expected).at(label, "writing the file")?;
        }
        self.stats.bytes += expected;
        Ok(())
    }

    /// Hardlink targets are names in the archive, relative to the destination
    /// like member names; one climbing above it is a breakout (moby's
    /// "invalid hardlink"). The target's parent resolves inside the root; the
    /// target itself is not followed, so a link to a symlink links the
    /// symlink. The shared inode keeps the metadata its own member gave it.
    fn hardlink(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        target: &[u8],
        label: &str,
    ) -> Result<(), ApplyError> {
        let breakout = || ApplyError::LinkBreakout {
            entry: label.to_string(),
            target: String::from_utf8_lossy(target).into_owned(),
        };
        let rel = clean(target).ok_or_else(breakout)?;
        if rel.is_empty() {
            return Err(breakout());
        }
        let mut full = self.dest.clone();
        full.extend(rel);
        let (tname, tparent_comps) = match full.split_last() {
            Some(split) => split,
            None => return Err(breakout()),
        };
        let tparent = self
            .open_dir(tparent_comps)
            .at(label, "resolving the hardlink target")?;
        rfs::linkat(&tparent, os(tname), parent, os(name), AtFlags::empty())
            .at(label, "creating the hardlink")
    }

    /// Applies a whiteout marker (OCI image-spec layer.md, "Whiteouts").
    fn whiteout(
        &mut self,
        parent: &OwnedFd,
        parent_comps: &[Vec<u8>],
        name: &[u8],
        label: &str,
    ) -> Result<(), ApplyError> {
        let prefix = |child: &[u8]| {
            let mut key = Vec::new();
            if !parent_comps.is_empty() {
                key = join(parent_comps);
                key.push(b'/');
            }
            key.extend_from_slice(child);
            key
        };
        if self.opts.overlay {
            return self.overlay_whiteout(parent, name, label);
        }
        if name == WH_OPAQUE {
            // Opaque: every child of the directory that a lower layer put
            // there goes; what this layer wrote, before or after the marker,
            // stays ("Opaque Whiteout").
            let children = list(parent).at(label, "listing the directory")?;
            for child in children {
                self.prune(parent, &child, prefix(&child))
                    .at(label, "applying the opaque whiteout")?;
            }
            return Ok(());
        }
        if name.starts_with(WH_META_PREFIX) {
            return Ok(()); // other AUFS metadata (.wh..wh.plnk, .wh..wh.aufs)
        }
        let target = &name[WH_PREFIX.len()..];
        if target.is_empty() || target == b"." || target == b".." {
            // containerd's validateWhiteout: the target must be a child.
            return Err(ApplyError::Whiteout {
                entry: label.to_string(),
            });
        }
        self.prune(parent, target, prefix(target))
            .at(label, "applying the whiteout")
    }

    /// Records a whiteout as overlayfs does (see [`ApplyOptions::overlay`]).
    fn overlay_whiteout(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        label: &str,
    ) -> Result<(), ApplyError> {
        if name == WH_OPAQUE {
            let key = format!("{}overlay.opaque", overlay_xattr_prefix());
            // The directory's descriptor is an O_PATH one: set the xattr
            // through its /proc link (which names the directory itself).
            let path = format!("/proc/self/fd/{}", parent.as_raw_fd());
            return rfs::setxattr(path.as_str(), key.as_str(), b"y", XattrFlags::empty())
                .at(label, "marking the directory opaque");
        }
        if name.starts_with(WH_META_PREFIX) {
            return Ok(());
        }
        let target = &name[WH_PREFIX.len()..];
        if target.is_empty() || target == b"." || target == b".." {
            return Err(ApplyError::Whiteout {
                entry: label.to_string(),
            });
        }
        // What this layer wrote under that name stays (the whiteout hides
        // only lower layers' files, and a directory's own lower children
        // are hidden by an opaque marker, not by this).
        match rfs::statat(parent, os(target), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => return Ok(()),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(io_err(label, "inspecting the whiteout's target", e)),
        }
        rfs::mknodat(
            parent,
            os(target),
            FileType::CharacterDevice,
            Mode::empty(),
            0,
        )
        .at(label, "creating the overlay whiteout")
    }

    /// Removes `name` unless this layer wrote it; a directory this layer
    /// wrote (or wrote into) loses only its lower-layer children.
    fn prune(&self, dir: &OwnedFd, name: &[u8], key: Vec<u8>) -> rustix::io::Result<()> {
        let st = match rfs::statat(dir, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(e),
        };
        if !self.keep.contains(&key) {
            return remove_all(dir, name);
        }
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let sub = open_dir_nofollow(dir, name)?;
            for child in list(&sub)? {
                let mut child_key = key.clone();
                child_key.push(b'/');
                child_key.extend_from_slice(&child);
                self.prune(&sub, &child, child_key)?;
            }
        }
        Ok(())
    }

    /// The owner to set: `chown` override, else the header's when
    /// `same_owner`, else none (the current user keeps it).
    fn requested_owner(
        &self,
        header: &tar::Header,
        label: &str,
    ) -> Result<Option<(u32, u32)>, ApplyError> {
        if let Some(owner) = self.opts.chown {
            return Ok(Some(owner));
        }
        if !self.opts.same_owner {
            return Ok(None);
        }
        let old = header.as_old();
        let id = |v: io::Result<u64>, field: &[u8]| -> Result<u32, ApplyError> {
            let v = numeric(v, field)?;
            u32::try_from(v).map_err(|_| {
                io_err(
                    label,
                    "reading the owner",
                    io::Error::other("id out of range"),
                )
            })
        };
        Ok(Some((
            id(header.uid(), &old.uid)?,
            id(header.gid(), &old.gid)?,
        )))
    }

    fn set_owner(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        node: Node<'_>,
        owner: Option<(u32, u32)>,
        label: &str,
    ) -> Result<(), ApplyError> {
        let Some((uid, gid)) = owner else {
            return Ok(());
        };
        let (uid, gid) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        let result = match node {
            Node::Fd(fd) => rfs::fchown(fd, uid, gid),
            _ => rfs::chownat(parent, os(name), uid, gid, AtFlags::SYMLINK_NOFOLLOW),
        };
        match result {
            Ok(()) => Ok(()),
            Err(Errno::PERM | Errno::INVAL) if !self.is_root => {
                self.stats.ownership_fallbacks += 1;
                Ok(())
            }
            Err(e) => Err(io_err(label, "changing the owner", e)),
        }
    }

    fn set_xattrs(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        node: Node<'_>,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        label: &str,
    ) -> Result<(), ApplyError> {
        for (key, value) in xattrs {
            if self.opts.overlay
                && (key.starts_with(b"trusted.overlay.") || key.starts_with(b"user.overlay."))
            {
                self.stats.skipped_xattrs += 1;
                continue;
            }
            let result = match node {
                Node::Fd(fd) => rfs::fsetxattr(fd, os(key), value, XattrFlags::empty()),
                _ => {
                    // No fd-relative lsetxattr: go through the parent's
                    // descriptor in /proc; the final name is not followed.
                    let mut path = format!("/proc/self/fd/{}/", parent.as_raw_fd()).into_bytes();
                    path.extend_from_slice(name);
                    rfs::lsetxattr(os(&path), os(key), value, XattrFlags::empty())
                }
            };
            match result {
                Ok(()) => {}
                Err(Errno::PERM | Errno::OPNOTSUPP) => self.stats.skipped_xattrs += 1,
                Err(e) => return Err(io_err(label, "setting an xattr", e)),
            }
        }
        Ok(())
    }

    /// Owner, then xattrs, then mode (chown clears setuid/setgid, so chmod
    /// comes after it), then times.
    fn finish_node(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        node: Node<'_>,
        meta: &Meta,
        label: &str,
    ) -> Result<(), ApplyError> {
        self.set_owner(parent, name, node, meta.owner, label)?;
        self.set_xattrs(parent, name, node, &meta.xattrs, label)?;
        let mode = Mode::from_raw_mode(meta.mode);
        let stamps = stamps(meta.times);
        let result = match node {
            Node::Fd(fd) => rfs::fchmod(fd, mode).and_then(|()| rfs::futimens(fd, &stamps)),
            // Symlinks have no mode of their own on Linux.
            Node::Symlink => rfs::utimensat(parent, os(name), &stamps, AtFlags::SYMLINK_NOFOLLOW),
            // chmodat follows a final symlink, but we have just created this
            // node and nothing else writes to the tree meanwhile.
            Node::Special => {
                rfs::chmodat(parent, os(name), mode, AtFlags::empty()).and_then(|()| {
                    rfs::utimensat(parent, os(name), &stamps, AtFlags::SYMLINK_NOFOLLOW)
                })
            }
        };
        result.at(label, "setting mode and times")
    }

    /// Sets directory modes and times, deepest first, now that no child will
    /// be written. A directory removed or replaced by a later member is
    /// skipped.
    fn finish(&mut self) -> Result<(), ApplyError> {
        let mut dirs: Vec<_> = std::mem::take(&mut self.dirs).into_iter().collect();
        dirs.sort_by_key(|(comps, _)| std::cmp::Reverse(comps.len()));
        for (comps, meta) in dirs {
            let Some((name, parent_comps)) = comps.split_last() else {
                continue;
            };
            let gone = |e: &Errno| matches!(*e, Errno::NOENT | Errno::NOTDIR | Errno::LOOP);
            let parent = match self.open_dir(parent_comps) {
                Ok(fd) => fd,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(io_err(&meta.label, "reopening the directory", e)),
            };
            let fd = match open_dir_nofollow(&parent, name) {
                Ok(fd) => fd,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(io_err(&meta.label, "reopening the directory", e)),
            };
            rfs::fchmod(&fd, Mode::from_raw_mode(meta.mode))
                .and_then(|()| rfs::futimens(&fd, &stamps(meta.times)))
                .map_err(|e| io_err(&meta.label, "setting mode and times", e))?;
        }
        Ok(())
    }
}

/// A numeric header field; one left blank (NULs or spaces) reads as zero,
/// as Go's archive/tar parses it.
fn numeric<T: Default>(parsed: io::Result<T>, field: &[u8]) -> Result<T, ApplyError> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if field.iter().all(|b| *b == 0 || *b == b' ') => Ok(T::default()),
        Err(e) => Err(ApplyError::Archive(e)),
    }
}

fn link_target<R: Read>(entry: &tar::Entry<'_, R>) -> Vec<u8> {
    entry
        .link_name_bytes()
        .map(|t| t.into_owned())
        .unwrap_or_default()
}

fn device(header: &tar::Header) -> Result<rfs::Dev, ApplyError> {
    let major = header
        .device_major()
        .map_err(ApplyError::Archive)?
        .unwrap_or(0);
    let minor = header
        .device_minor()
        .map_err(ApplyError::Archive)?
        .unwrap_or(0);
    Ok(rfs::makedev(major, minor))
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
