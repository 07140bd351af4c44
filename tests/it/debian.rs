//! A real Debian base image: `debootstrap --variant=minbase bookworm` from
//! Debian's mirror, packed with GNU tar and turned into an OCI archive by
//! kiln (`FROM scratch` + `ADD rootfs.tar /`), served by a real registry.
//! kiln pulls it, builds on it and pushes a result that a real dockerd
//! pulls and runs; what kiln pulls and exports matches the debootstrap
//! rootfs file by file; a second build works with the registry gone.
//!
//! The debootstrap result is made once per test-binary run and cached
//! across runs under `CARGO_TARGET_TMPDIR/kiln-debian/` (delete that
//! directory to start over):
//!
//! - `bookworm-minbase.listing`: the rootfs, walked before it was deleted
//!   (see [`Rec`]);
//! - `bookworm-minbase.packages`: its installed packages, by the host's
//!   `dpkg-query --admindir`;
//! - `bookworm-minbase.rootfs.tar`: the rootfs packed by GNU tar (written
//!   last of the three, so its presence means all three are there);
//! - `bookworm-minbase.tar`: the OCI archive kiln made of it, and
//!   `bookworm-minbase.tar.kiln`, the kiln binary (size, mtime) that made
//!   it: a rebuilt kiln remakes the archive from the cached rootfs tar
//!   (10-20 s with a debug kiln), so the tests never run on an archive an
//!   older kiln made.
//!
//! Every file is written under a temporary name and renamed, so a killed
//! run never leaves half a file; work directories of dead runs are
//! unmounted and removed by the next run.
//!
//! Needs root (debootstrap) and Debian's mirror (http://deb.debian.org).

use crate::consumers::Dockerd;
use crate::image::{stderr, Ctx};
use crate::registry::Registry;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
/// SOURCE_DATE_EPOCH of every kiln build here.
const SDE: &str = "1700000000";

fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-debian")
}

/// `CACHE/bookworm-minbase.<ext>`.
fn cached(ext: &str) -> PathBuf {
    cache_dir().join(format!("{SUITE}-minbase.{ext}"))
}

/// The OCI archive (tag `bookworm`) of a Debian bookworm minbase image,
/// made once per test-binary run and cached across runs. Its rootfs
/// listing and package list are [`cached`] next to it.
pub fn debian_base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(make_base)
}

fn make_base() -> PathBuf {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).expect("creating the debian cache directory");
    clean_stale(&dir);
    let rootfs_tar = cached("rootfs.tar");
    if !rootfs_tar.exists() {
        debootstrap_rootfs(&dir);
    }
    let archive = cached("tar");
    let stamp = cached("tar.kiln");
    let want = kiln_stamp();
    if archive.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return archive;
    }
    let work = Work::new(&dir);
    let ctx = work.path.join("ctx");
    std::fs::create_dir_all(&ctx).expect("mkdir ctx");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nADD rootfs.tar /\nCMD [\"bash\"]\n",
    )
    .expect("Dockerfile");
    if std::fs::hard_link(&rootfs_tar, ctx.join("rootfs.tar")).is_err() {
        std::fs::copy(&rootfs_tar, ctx.join("rootfs.tar")).expect("copying rootfs.tar");
    }
    let tmp = tmp_name(&archive);
    let t = Instant::now();
    let o = Command::new(crate::util::kiln_bin())
        .args([
            "build",
            "-q",
            "-t",
            &format!("debian:{SUITE}"),
            "--cache-dir",
        ])
        .arg(work.path.join("store"))
        .arg("-o")
        .arg(format!("type=oci,dest={}", tmp.display()))
        .arg(&ctx)
        .env("SOURCE_DATE_EPOCH", SDE)
        .output()
        .expect("running kiln");
    if !o.status.success() {
        let _ = std::fs::remove_file(&tmp);
    }
    assert!(
        o.status.success(),
        "kiln build of the debian base: {}",
        stderr(&o)
    );
    eprintln!(
        "debian: kiln build FROM scratch + ADD rootfs.tar: {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_file(&stamp);
    std::fs::rename(&tmp, &archive).expect("renaming the archive into place");
    write_atomic(&stamp, want.as_bytes());
    archive
}

/// Runs debootstrap into a work directory, then caches the rootfs's
/// listing, package list and tar.
fn debootstrap_rootfs(dir: &Path) {
    let work = Work::new(dir);
    let rootfs = work.path.join("rootfs");
    let t = Instant::now();
    let o = Command::new("debootstrap")
        .args(["--variant=minbase", SUITE])
        .arg(&rootfs)
        .arg(MIRROR)
        .output()
        .expect("running debootstrap (Debian's debootstrap; scripts/test installs it)");
    let secs = t.elapsed().as_secs_f64();
    // debootstrap mounts /proc (and /sys, or /dev in a container) in the
    // target and unmounts them on exit; a killed or failed run can leave
    // them, and nothing must stay mounted under the rootfs.
    let left = unmount_under(&rootfs);
    if !left.is_empty() {
        eprintln!("debian: debootstrap left {left:?} mounted; unmounted");
    }
    assert!(
        mounts_under(&rootfs).is_empty(),
        "still mounted under {}: {:?}",
        rootfs.display(),
        mounts_under(&rootfs)
    );
    if !o.status.success() {
        let log =
            std::fs::read_to_string(rootfs.join("debootstrap/debootstrap.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!(
            "debootstrap --variant=minbase {SUITE} failed (it needs root and {MIRROR}):\n{}\n{}\n...{}",
            String::from_utf8_lossy(&o.stdout),
            stderr(&o),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    eprintln!("debian: debootstrap --variant=minbase {SUITE}: {secs:.1}s");

    // What Debian's official images also drop: the downloaded .debs
    // (~31 MB) and apt's package lists (~49 MB). The directories stay.
    for (sub, only_debs) in [
        ("var/cache/apt/archives", true),
        ("var/lib/apt/lists", false),
    ] {
        for e in std::fs::read_dir(rootfs.join(sub)).expect("reading apt's directories") {
            let p = e.expect("entry").path();
            let deb = p.extension().is_some_and(|x| x == "deb");
            if p.is_file() && (deb || !only_debs) {
                std::fs::remove_file(&p).expect("removing an apt cache file");
            }
        }
    }

    let t = Instant::now();
    let listing = walk(&rootfs);
    let text: String = listing
        .iter()
        .map(|(p, r)| format!("{p}\t{}\n", r.line()))
        .collect();
    write_atomic(&cached("listing"), text.as_bytes());
    let o = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            rootfs.join("var/lib/dpkg").display()
        ))
        .args(["-W", "-f", "${Package}\\n"])
        .output()
        .expect("dpkg-query");
    assert!(o.status.success(), "dpkg-query: {}", stderr(&o));
    let mut pkgs: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    pkgs.sort();
    write_atomic(&cached("packages"), (pkgs.join("\n") + "\n").as_bytes());

    // GNU tar, POSIX (pax) format: numeric owners (no names: the image's
    // own /etc/passwd gives them), every xattr (minbase has none today;
    // the listing records them, so one appearing is compared too), sorted,
    // without atime/ctime. Packed as `.`, so the entries are `./usr/...`
    // as in most rootfs tarballs.
    let tmp = work.path.join("rootfs.tar");
    let o = Command::new("tar")
        .arg("--create")
        .arg("--file")
        .arg(&tmp)
        .arg("--directory")
        .arg(&rootfs)
        .args([
            "--format=posix",
            "--pax-option=delete=atime,delete=ctime",
            "--numeric-owner",
            "--sort=name",
            "--xattrs",
            "--xattrs-include=*",
            ".",
        ])
        .output()
        .expect("GNU tar");
    assert!(o.status.success(), "tar: {}", stderr(&o));
    std::fs::rename(&tmp, cached("rootfs.tar")).expect("renaming rootfs.tar into place");
    eprintln!(
        "debian: listing ({} paths), dpkg-query ({} packages) and tar: {:.1}s",
        listing.len(),
        pkgs.len(),
        t.elapsed().as_secs_f64()
    );
}

/// The kiln binary under test, as `size mtime`.
fn kiln_stamp() -> String {
    let m = std::fs::metadata(crate::util::kiln_bin()).expect("the kiln binary");
    format!("{} {}.{:09}\n", m.len(), m.mtime(), m.mtime_nsec())
}

fn tmp_name(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(format!(".tmp-{}", std::process::id()));
    PathBuf::from(s)
}

fn write_atomic(p: &Path, bytes: &[u8]) {
    let tmp = tmp_name(p);
    std::fs::write(&tmp, bytes).expect("writing a cache file");
    std::fs::rename(&tmp, p).expect("renaming a cache file into place");
}

/// A work directory `CACHE/work-PID`, unmounted and removed on drop.
struct Work {
    path: PathBuf,
}

impl Work {
    fn new(dir: &Path) -> Work {
        let path = dir.join(format!("work-{}", std::process::id()));
        remove_tree(&path);
        std::fs::create_dir_all(&path).expect("creating a work directory");
        Work { path }
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        remove_tree(&self.path);
    }
}

/// Removes work directories and temporary files of runs that died.
fn clean_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("work-")
            .or_else(|| name.rsplit_once(".tmp-").map(|(_, pid)| pid));
        let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if e.path().is_dir() {
            remove_tree(&e.path());
        } else {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Unmounts everything under `p`, then removes it; never removes across a
/// mount point that would not go away.
fn remove_tree(p: &Path) {
    unmount_under(p);
    let left = mounts_under(p);
    if !left.is_empty() {
        eprintln!(
            "debian: not removing {}: still mounted: {left:?}",
            p.display()
        );
        return;
    }
    if p.exists() {
        if let Err(e) = std::fs::remove_dir_all(p) {
            eprintln!("debian: removing {}: {e}", p.display());
        }
    }
}

/// Mount points at or under `p`, from /proc/self/mountinfo.
fn mounts_under(p: &Path) -> Vec<String> {
    let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let root = p.to_string_lossy().into_owned();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount)
        .filter(|m| *m == root || m.starts_with(&format!("{root}/")))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(v) = oct.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lazily unmounts everything at or under `p`, deepest first; returns what
/// was mounted.
fn unmount_under(p: &Path) -> Vec<String> {
    let mut all = Vec::new();
    for _ in 0..5 {
        let mut now = mounts_under(p);
        if now.is_empty() {
            break;
        }
        now.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in &now {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        all.extend(now);
    }
    all
}

/// One path of a filesystem, as the fidelity test compares it: type,
/// permission bits (with setuid/setgid/sticky), owner, size (files only),
/// content sha256 (files only), symlink target, device numbers, the
/// hardlink group (its first path by name, `-` when not hardlinked) and
/// xattrs (`name=hex`, comma-separated). Not times.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rec {
    kind: &'static str,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    sha: String,
    link: String,
    dev: String,
    group: String,
    xattrs: String,
}

impl Rec {
    fn line(&self) -> String {
        format!(
            "{}\t{:04o}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            self.kind,
            self.mode,
            self.uid,
            self.gid,
            self.size,
            self.sha,
            self.link,
            self.dev,
            self.group,
            self.xattrs
        )
    }

    fn parse(fields: &[&str]) -> Rec {
        let kind = match fields[0] {
            "file" => "file",
            "dir" => "dir",
            "symlink" => "symlink",
            "char" => "char",
            "block" => "block",
            "fifo" => "fifo",
            "socket" => "socket",
            k => panic!("unknown kind {k}"),
        };
        let n = |i: usize| fields[i].parse::<u64>().expect("a number");
        Rec {
            kind,
            mode: u32::from_str_radix(fields[1], 8).expect("mode"),
            uid: n(2),
            gid: n(3),
            size: n(4),
            sha: fields[5].into(),
            link: fields[6].into(),
            dev: fields[7].into(),
            group: fields[8].into(),
            xattrs: fields[9].into(),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha_of(mut r: impl std::io::Read) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf).expect("reading file data");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex(&h.finalize())
}

/// Sets each hardlinked path's group to the smallest path of its group.
fn set_groups(recs: &mut BTreeMap<String, Rec>, groups: Vec<Vec<String>>) {
    for mut g in groups.into_iter().filter(|g| g.len() > 1) {
        g.sort();
        for p in &g {
            if let Some(r) = recs.get_mut(p) {
                r.group = g[0].clone();
            }
        }
    }
}

/// A directory tree, by path relative to `root` (not `root` itself).
fn walk(root: &Path) -> BTreeMap<String, Rec> {
    let mut recs = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    for e in walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
    {
        let e = e.expect("walking the tree");
        let path = e.path();
        let rel = path
            .strip_prefix(root)
            .expect("under the root")
            .to_str()
            .unwrap_or_else(|| panic!("a non-UTF-8 path: {}", path.display()))
            .to_string();
        assert!(!rel.contains(['\t', '\n']), "{rel:?}");
        let md = path.symlink_metadata().expect("lstat");
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "socket"
        };
        let (size, sha) = if kind == "file" {
            let f = std::fs::File::open(path).expect("open");
            (md.len(), sha_of(f))
        } else {
            (0, "-".into())
        };
        let link = if kind == "symlink" {
            std::fs::read_link(path)
                .expect("readlink")
                .to_string_lossy()
                .into_owned()
        } else {
            "-".into()
        };
        let dev = if kind == "char" || kind == "block" {
            let r = md.rdev();
            let major = ((r >> 8) & 0xfff) | ((r >> 32) & !0xfff);
            let minor = (r & 0xff) | ((r >> 12) & !0xff);
            format!("{major},{minor}")
        } else {
            "-".into()
        };
        if kind != "dir" && md.nlink() > 1 {
            inodes
                .entry((md.dev(), md.ino()))
                .or_default()
                .push(rel.clone());
        }
        recs.insert(
            rel,
            Rec {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid().into(),
                gid: md.gid().into(),
                size,
                sha,
                link,
                dev,
                group: "-".into(),
                xattrs: xattrs_of(path),
            },
        );
    }
    set_groups(&mut recs, inodes.into_values().collect());
    recs
}

/// `name=hex(value)`, comma-separated, sorted; `-` for none.
fn xattrs_of(path: &Path) -> String {
    let mut names = vec![0u8; 64 * 1024];
    let n = rustix::fs::llistxattr(path, &mut names[..]).unwrap_or(0);
    let mut out: Vec<String> = names[..n]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|name| {
            let name = String::from_utf8_lossy(name).into_owned();
            let mut value = vec![0u8; 64 * 1024];
            let v = rustix::fs::lgetxattr(path, name.as_str(), &mut value[..]).unwrap_or(0);
            format!("{name}={}", hex(&value[..v]))
        })
        .collect();
    out.sort();
    if out.is_empty() {
        "-".into()
    } else {
        out.join(",")
    }
}

/// A filesystem tar (as `-o type=tar` writes), by path, hardlink entries
/// resolved to their target's record.
fn tar_records(tar: &Path) -> BTreeMap<String, Rec> {
    let f = std::fs::File::open(tar).expect("open the tar");
    let mut ar = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, f));
    let mut recs: BTreeMap<String, Rec> = BTreeMap::new();
    // A hardlink group by its first path: its members.
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut root_of: BTreeMap<String, String> = BTreeMap::new();
    let norm = |s: &str| -> String {
        s.trim_start_matches("./")
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_string()
    };
    for e in ar.entries().expect("tar entries") {
        let mut e = e.expect("tar entry");
        let path = norm(&e.path().expect("entry path").to_string_lossy());
        if path.is_empty() || path == "." {
            continue;
        }
        let mut xattrs: Vec<String> = Vec::new();
        if let Some(exts) = e.pax_extensions().expect("pax extensions") {
            for x in exts {
                let x = x.expect("a pax record");
                if let Some(name) = x.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                    xattrs.push(format!("{name}={}", hex(x.value_bytes())));
                }
            }
        }
        xattrs.sort();
        let h = e.header().clone();
        let link = e
            .link_name()
            .expect("link name")
            .map(|l| l.to_string_lossy().into_owned());
        let et = h.entry_type();
        if et == tar::EntryType::Link {
            let target = norm(&link.expect("a hardlink's target"));
            let root = root_of.get(&target).cloned().unwrap_or(target.clone());
            let rec = recs
                .get(&target)
                .unwrap_or_else(|| panic!("{path}: hardlink to {target}, not seen before"))
                .clone();
            groups
                .entry(root.clone())
                .or_insert_with(|| vec![root.clone()])
                .push(path.clone());
            root_of.insert(path.clone(), root);
            recs.insert(path, rec);
            continue;
        }
        let kind = match et {
            tar::EntryType::Regular | tar::EntryType::Continuous => "file",
            tar::EntryType::Directory => "dir",
            tar::EntryType::Symlink => "symlink",
            tar::EntryType::Char => "char",
            tar::EntryType::Block => "block",
            tar::EntryType::Fifo => "fifo",
            other => panic!("unexpected entry type {other:?} for {path}"),
        };
        let (size, sha) = if kind == "file" {
            let size = e.size();
            (size, sha_of(&mut e))
        } else {
            (0, "-".into())
        };
        let dev = if kind == "char" || kind == "block" {
            format!(
                "{},{}",
                h.device_major().ok().flatten().unwrap_or(0),
                h.device_minor().ok().flatten().unwrap_or(0)
            )
        } else {
            "-".into()
        };
        recs.insert(
            path,
            Rec {
                kind,
                mode: h.mode().expect("mode") & 0o7777,
                uid: h.uid().expect("uid"),
                gid: h.gid().expect("gid"),
                size,
                sha,
                link: if kind == "symlink" {
                    link.unwrap_or_default()
                } else {
                    "-".into()
                },
                dev,
                group: "-".into(),
                xattrs: if xattrs.is_empty() {
                    "-".into()
                } else {
                    xattrs.join(",")
                },
            },
        );
    }
    set_groups(&mut recs, groups.into_values().collect());
    recs
}

/// The manifest of an OCI archive, and its blobs under 1 MiB by digest
/// (not the Debian layer: reading it back in a debug build is slow).
fn oci_small(archive: &Path) -> (serde_json::Value, BTreeMap<String, Vec<u8>>) {
    let f = std::fs::File::open(archive).expect("open the OCI archive");
    let mut ar = tar::Archive::new(std::io::BufReader::new(f));
    let mut blobs = BTreeMap::new();
    let mut index = None;
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        let path = e.path().expect("path").to_string_lossy().into_owned();
        if e.size() > 1 << 20 {
            continue;
        }
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("data");
        if path == "index.json" {
            index = Some(data);
        } else if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            blobs.insert(format!("sha256:{hex}"), data);
        }
    }
    let index: serde_json::Value =
        serde_json::from_slice(&index.expect("index.json")).expect("index json");
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .expect("manifest digest");
    let manifest = serde_json::from_slice(&blobs[digest]).expect("manifest json");
    (manifest, blobs)
}

fn cached_listing() -> BTreeMap<String, Rec> {
    let text = std::fs::read_to_string(cached("listing")).expect("the cached rootfs listing");
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 11, "a listing line: {l}");
            (f[0].to_string(), Rec::parse(&f[1..]))
        })
        .collect()
}

/// The differences between the rootfs and what kiln wrote, one line each.
fn differences(want: &BTreeMap<String, Rec>, got: &BTreeMap<String, Rec>) -> Vec<String> {
    let mut out = Vec::new();
    for (p, w) in want {
        match got.get(p) {
            None => out.push(format!("missing: {p}\t{}", w.line())),
            Some(g) if g != w => out.push(format!(
                "differs: {p}\n    rootfs: {}\n    kiln:   {}",
                w.line(),
                g.line()
            )),
            Some(_) => {}
        }
    }
    for (p, g) in got {
        if !want.contains_key(p) {
            out.push(format!("extra:   {p}\t{}", g.line()));
        }
    }
    out
}

fn assert_same_tree(what: &str, want: &BTreeMap<String, Rec>, got: &BTreeMap<String, Rec>) {
    let d = differences(want, got);
    assert!(
        d.is_empty(),
        "{what}: {} of {} paths differ from the debootstrap rootfs (kind mode uid gid size sha256 link dev hardlink-group xattrs):\n{}",
        d.len(),
        want.len(),
        d.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// A registry holding the Debian base as `debian:bookworm`; returns it and
/// the image reference.
fn registry_with_debian() -> (Registry, String) {
    let base = debian_base();
    let reg = Registry::start();
    let t = Instant::now();
    reg.push_archive(base, SUITE, &format!("debian:{SUITE}"));
    eprintln!(
        "debian: skopeo copy of the base into the registry: {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let r = format!("{}/debian:{SUITE}", reg.addr);
    (reg, r)
}

const PROBE: &str = r#"#!/bin/bash
# Runs in the pushed image, as the Dockerfile's USER.
set -euo pipefail
echo "bash ${BASH_VERSINFO[0]} $(bash -c 'echo "$0 ok"')"
. /srv/facts/os-release
echo "os $ID $VERSION_CODENAME $(cut -d. -f1 /srv/facts/debian_version)"
cmp -s /etc/os-release /srv/facts/os-release && echo "os-release copied"
stat -c '%U:%G %u:%g %a' /srv/facts/os-release /usr/local/bin/probe
echo "user $(id -un) $(id -u):$(id -g) $(id -gn)"
echo "pwd $(pwd) $PROBE_GREETING"
echo "packages $(dpkg-query -W -f '${Package}\n' | wc -l)"
dpkg-query -W -f '${Package}\n' | sort | sha256sum | cut -d' ' -f1
perl -e 'print "perl ", $] >= 5.036 ? "ok" : "old", "\n"'
echo "gzip $(echo kiln | gzip -c | gunzip -c) $(echo kiln | gzip -c | uncompress -c)"
stat -c '%h %i' /usr/bin/perl /usr/bin/perl5.36.0 | uniq | awk '{print "perl links", $1, NR}'
stat -c '%a %U:%G %n' /usr/bin/passwd /usr/bin/chage /etc/shadow /var/mail /tmp
readlink /bin /lib /sbin
echo "sed $(echo abc | sed 's/b/B/') grep $(printf 'x\ny\n' | grep -c y) find $(find /etc/apt -maxdepth 0 -type d)"
apt-get --version | sed -n '1s/ .*//p'
"#;

/// End to end: kiln pulls the Debian base from the registry, builds a
/// multi-stage image on it (COPY --from the base stage with --chown to
/// Debian's own users, ENV, WORKDIR, USER, CMD) and pushes it; skopeo
/// reads the digest kiln reported; a private dockerd pulls and runs it,
/// and the Debian userland in it works: bash, dpkg's database (the same
/// packages as the rootfs), perl, gzip through hardlinked names, setuid
/// and group-owned files, merged /usr; `dpkg --verify` finds every
/// packaged file's md5sum intact.
#[test]
fn push_on_debian_then_docker_pull_and_run() {
    let (reg, from) = registry_with_debian();
    let app = Ctx::new(
        &format!(
            "FROM {from} AS base\n\
             FROM {from}\n\
             COPY --from=base --chown=www-data:staff /etc/os-release /etc/debian_version /srv/facts/\n\
             COPY --chmod=0755 probe.sh /usr/local/bin/probe\n\
             ENV PROBE_GREETING=\"hello from kiln\"\n\
             WORKDIR /srv/facts\n\
             USER nobody\n\
             CMD [\"probe\"]\n"
        ),
        &[("probe.sh", PROBE)],
    );
    let app_ref = format!("{}/app:1", reg.addr);
    let meta = app.path("meta.json");
    let t = Instant::now();
    let o = app.kiln_env(
        &[
            "--push",
            "-t",
            &app_ref,
            "--metadata-file",
            &meta.to_string_lossy(),
        ],
        &[("SOURCE_DATE_EPOCH", SDE)],
    );
    eprintln!(
        "debian: kiln build --push on the debian base (pull, build, push): {:.1}s",
        t.elapsed().as_secs_f64()
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // The Debian layer is mounted from debian/, not uploaded again; the
    // others are the two COPYs and WORKDIR's (empty, as BuildKit's).
    assert!(
        stderr(&o).contains("(3 of 4 layers uploaded, 1 mounted)"),
        "{}",
        stderr(&o)
    );
    let digest = crate::registry::metadata_digest(&meta);
    assert!(
        stderr(&o).contains(&format!("pushed {app_ref}@{digest}")),
        "kiln printed another digest than its metadata file's {digest}: {}",
        stderr(&o)
    );
    let skopeo = |raw: bool| {
        let mut cmd = Command::new("skopeo");
        cmd.args(["inspect", "--tls-verify=false"]);
        if raw {
            cmd.arg("--raw");
        }
        let o = cmd
            .arg(format!("docker://{app_ref}"))
            .output()
            .expect("skopeo");
        assert!(o.status.success(), "skopeo inspect: {}", stderr(&o));
        o.stdout
    };
    let raw = skopeo(true);
    assert_eq!(format!("sha256:{}", hex(&Sha256::digest(&raw))), digest);
    let inspect: serde_json::Value = serde_json::from_slice(&skopeo(false)).expect("json");
    assert_eq!(inspect["Digest"], digest.as_str());
    let manifest: serde_json::Value = serde_json::from_slice(&raw).expect("manifest");
    let layers = manifest["layers"].as_array().expect("layers");
    let (base, _) = oci_small(debian_base());
    assert_eq!(base["layers"].as_array().map(Vec::len), Some(1), "{base}");
    assert_eq!(
        layers[0]["digest"], base["layers"][0]["digest"],
        "the Debian layer is pushed as it was pulled"
    );
    assert_eq!(layers.len(), 4, "{manifest}");

    let t = Instant::now();
    let d = Dockerd::start();
    eprintln!("debian: dockerd start: {:.1}s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    d.ok(&["pull", &app_ref]);
    eprintln!("debian: docker pull: {:.1}s", t.elapsed().as_secs_f64());
    let digests = d.ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        &app_ref,
    ]);
    assert!(digests.contains(&digest), "{digests} vs {digest}");
    let t = Instant::now();
    let out = d.run(&["--network", "host", &app_ref]);
    eprintln!("debian: docker run: {:.1}s", t.elapsed().as_secs_f64());

    let pkgs = std::fs::read_to_string(cached("packages")).expect("the cached package list");
    let n = pkgs.lines().count();
    assert!(n > 50, "{pkgs}");
    let want = format!(
        "bash 5 bash ok\n\
         os debian {SUITE} 12\n\
         os-release copied\n\
         www-data:staff 33:50 644\n\
         root:root 0:0 755\n\
         user nobody 65534:65534 nogroup\n\
         pwd /srv/facts hello from kiln\n\
         packages {n}\n\
         {}\n\
         perl ok\n\
         gzip kiln kiln\n\
         perl links 2 1\n\
         4755 root:root /usr/bin/passwd\n\
         2755 root:shadow /usr/bin/chage\n\
         640 root:shadow /etc/shadow\n\
         2775 root:mail /var/mail\n\
         1777 root:root /tmp\n\
         usr/bin\nusr/lib\nusr/sbin\n\
         sed aBc grep 1 find /etc/apt\n\
         apt\n",
        hex(&Sha256::digest(pkgs.as_bytes()))
    );
    assert_eq!(out, want, "the probe's output");
    let t = Instant::now();
    let verify = d.run(&[
        "--network",
        "host",
        "--user",
        "root",
        &app_ref,
        "dpkg",
        "--verify",
    ]);
    eprintln!(
        "debian: docker run dpkg --verify: {:.1}s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(verify, "", "dpkg --verify found changed files");
}

/// What kiln pulls from the registry and exports is the debootstrap
/// rootfs: the same paths, and for each the same type, mode, owner, size,
/// content, symlink target, device numbers, hardlink group and xattrs.
/// Then, with the registry stopped, a second build FROM it in the same
/// store (adding a file) works from what the first one pulled, and its
/// `type=local` export is the rootfs again, plus that file.
#[test]
fn pulled_debian_matches_the_rootfs_and_is_reused_offline() {
    let (reg, from) = registry_with_debian();
    let want = cached_listing();
    // The comparison is not vacuous: the rootfs has what it is about.
    let count = |f: &dyn Fn(&Rec) -> bool| want.values().filter(|r| f(r)).count();
    assert!(want.len() > 5000, "{} paths", want.len());
    assert!(count(&|r| r.kind == "symlink") > 100);
    assert!(count(&|r| r.kind == "char") >= 8, "/dev's nodes");
    assert!(count(&|r| r.group != "-") >= 4, "perl and gzip's hardlinks");
    assert!(count(&|r| r.mode & 0o6000 != 0) >= 5, "setuid/setgid files");
    assert!(count(&|r| r.gid != 0) >= 5, "files owned by other groups");

    let c = Ctx::new(&format!("FROM {from}\n"), &[("note.txt", "offline\n")]);
    let out = c.path("fs.tar");
    let t = Instant::now();
    let o = c.kiln_env(
        &["-o", &format!("type=tar,dest={}", out.display())],
        &[("SOURCE_DATE_EPOCH", SDE)],
    );
    eprintln!(
        "debian: kiln build FROM debian (pulls it) -o type=tar: {:.1}s",
        t.elapsed().as_secs_f64()
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let t = Instant::now();
    let got = tar_records(&out);
    eprintln!(
        "debian: reading the exported tar: {:.1}s",
        t.elapsed().as_secs_f64()
    );
    assert_same_tree("-o type=tar", &want, &got);
    std::fs::remove_file(&out).expect("rm fs.tar");

    let addr = reg.addr.clone();
    drop(reg);
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "the registry is still up"
    );
    c.write(
        "Dockerfile",
        &format!("FROM {from}\nCOPY note.txt /srv/note.txt\n"),
    );
    let dir = c.path("fs");
    let t = Instant::now();
    let o = c.kiln_env(
        &["-o", &format!("type=local,dest={}", dir.display())],
        &[("SOURCE_DATE_EPOCH", SDE)],
    );
    eprintln!(
        "debian: second build, registry stopped, -o type=local: {:.1}s",
        t.elapsed().as_secs_f64()
    );
    assert!(o.status.success(), "offline: {}", stderr(&o));
    let mut got = walk(&dir);
    let note = got
        .remove("srv/note.txt")
        .expect("srv/note.txt was written");
    assert_eq!(
        (note.kind, note.size, note.uid, note.gid),
        ("file", 8, 0, 0),
        "{note:?}"
    );
    assert_eq!(
        std::fs::read(dir.join("srv/note.txt")).expect("note"),
        b"offline\n"
    );
    assert_same_tree("offline, -o type=local", &want, &got);
}

/// RUN on the Debian base with the default network: `apt-get install`
/// fetches a package from Debian's mirror (the one scripts/test installs
/// from), `useradd` adds a user, a step runs as that user; the pushed
/// image runs under a real dockerd.
#[test]
fn run_apt_get_install_on_debian() {
    let (reg, from) = registry_with_debian();
    let app = Ctx::new(
        &format!(
            "FROM {from}\n\
             RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends hello > /dev/null \
             && rm -rf /var/lib/apt/lists/*\n\
             RUN useradd --create-home app\n\
             USER app\n\
             RUN hello > /home/app/greeting && id -un >> /home/app/greeting\n\
             CMD [\"sh\", \"-c\", \"cat /home/app/greeting && hello -g kiln\"]\n"
        ),
        &[],
    );
    let app_ref = format!("{}/apt:1", reg.addr);
    let t = Instant::now();
    let o = app.kiln(&["--push", "-t", &app_ref]);
    eprintln!(
        "debian: RUN apt-get install, useradd, as the user, and push: {:.1}s",
        t.elapsed().as_secs_f64()
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let d = Dockerd::start();
    d.ok(&["pull", &app_ref]);
    let out = d.run(&["--network", "host", &app_ref]);
    assert_eq!(out, "Hello, world!\napp\nkiln\n");
}
