//! Tests for the layer applier. Tar inputs are built byte by byte so that
//! hostile names (which the tar crate's setters refuse) reach the applier.

use super::*;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

/// Raw tar builder; names and link names are copied into the header as given.
#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    fn push(
        &mut self,
        name: &str,
        flag: u8,
        mode: u32,
        link: &str,
        data: &[u8],
        edit: impl FnOnce(&mut tar::Header),
    ) -> &mut Self {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        // Written raw: set_entry_type would turn an old-style '\0' into '0'.
        h.as_mut_bytes()[156] = flag;
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_000_000);
        h.set_uid(0);
        h.set_gid(0);
        edit(&mut h);
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
        self
    }
    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.push(name, b'0', 0o644, "", data, |_| {})
    }
    fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.push(name, b'5', mode, "", b"", |_| {})
    }
    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.push(name, b'2', 0o777, target, b"", |_| {})
    }
    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.push(name, b'1', 0o644, target, b"", |_| {})
    }
    /// A PAX 'x' member describing the next member.
    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (key, value) in records {
            let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            body.extend_from_slice(format!("{len} {key}=").as_bytes());
            body.extend_from_slice(value);
            body.push(b'\n');
        }
        self.push("PaxHeaders/x", b'x', 0o644, "", &body, |_| {})
    }
    fn bytes(&self) -> Vec<u8> {
        let mut out = self.0.clone();
        out.extend_from_slice(&[0; 1024]);
        out
    }
}

/// A root inside an outer temporary directory; after a hostile input the
/// outer directory must still hold nothing but the root.
struct Sandbox {
    outer: tempfile::TempDir,
    root: PathBuf,
}

fn sandbox() -> Sandbox {
    let outer = tempfile::tempdir().expect("tempdir");
    let root = outer.path().join("root");
    fs::create_dir(&root).expect("mkdir root");
    Sandbox { outer, root }
}

impl Sandbox {
    fn apply(&self, tar: &Tar, opts: &ApplyOptions) -> Result<ApplyStats, ApplyError> {
        apply(&tar.bytes()[..], &self.root, "", opts)
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
    fn assert_contained(&self) {
        let names: Vec<_> = fs::read_dir(self.outer.path())
            .expect("read outer")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("root")]);
    }
}

fn layer() -> ApplyOptions {
    ApplyOptions {
        whiteouts: true,
        same_owner: true,
        chown: None,
        devices: true,
        overlay: false,
    }
}

fn add() -> ApplyOptions {
    ApplyOptions::default()
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A name that no host should have, to check nothing landed on the host.
fn host_probe(tag: &str) -> String {
    format!("kiln-apply-{}-{tag}", std::process::id())
}

fn small_tar() -> Vec<u8> {
    let mut t = Tar::default();
    t.file("hello.txt", b"hello\n");
    t.bytes()
}

fn compress(format: Format, data: &[u8]) -> Vec<u8> {
    match format {
        Format::Plain => data.to_vec(),
        Format::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).expect("gzip");
            e.finish().expect("gzip")
        }
        Format::Bzip2 => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(data).expect("bzip2");
            e.finish().expect("bzip2")
        }
        Format::Xz => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(data).expect("xz");
            e.finish().expect("xz")
        }
        Format::Zstd => zstd::stream::encode_all(data, 3).expect("zstd"),
    }
}

const FORMATS: [Format; 5] = [
    Format::Plain,
    Format::Gzip,
    Format::Bzip2,
    Format::Xz,
    Format::Zstd,
];

#[test]
fn detect_reads_magic_bytes() {
    for format in FORMATS {
        assert_eq!(detect(&compress(format, &small_tar())), format);
    }
    assert_eq!(detect(b"BZh"), Format::Bzip2);
    assert_eq!(
        detect(&[0x1F, 0x8B]),
        Format::Plain,
        "gzip magic needs the method byte"
    );
    // A zstd skippable frame (magic 0x184D2A5?) is zstd too, as in Docker.
    assert_eq!(detect(&[0x53, 0x2A, 0x4D, 0x18, 0, 0, 0, 0]), Format::Zstd);
    assert_eq!(detect(&[0x53, 0x2A, 0x4D, 0x18]), Format::Plain);
    assert_eq!(detect(b""), Format::Plain);
    assert_eq!(detect(b"hello world"), Format::Plain);
}

#[test]
fn decompressed_round_trips_every_format() {
    let tar = small_tar();
    for format in FORMATS {
        let (mut r, found) =
            decompressed(io::Cursor::new(compress(format, &tar))).expect("decoder");
        assert_eq!(found, format);
        let mut out = Vec::new();
        r.read_to_end(&mut out).expect("decode");
        assert_eq!(out, tar, "{format:?}");
    }
    // Short inputs are plain, not an error (moby ignores EOF on the peek).
    let (mut r, found) = decompressed(io::Cursor::new(b"ab".to_vec())).expect("short");
    assert_eq!(found, Format::Plain);
    let mut out = Vec::new();
    r.read_to_end(&mut out).expect("read");
    assert_eq!(out, b"ab");
}

#[test]
fn is_archive_accepts_tar_in_every_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    for format in FORMATS {
        let path = dir.path().join(format!("{format:?}"));
        fs::write(&path, compress(format, &small_tar())).expect("write");
        assert!(is_archive(&path).expect("sniff"), "{format:?}");
    }
}

#[test]
fn is_archive_rejects_non_archives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, data: &[u8]| {
        let path = dir.path().join(name);
        fs::write(&path, data).expect("write");
        path
    };
    let text = b"just some text, long enough to fill a tar block. ".repeat(20);
    let cases = [
        write("text", &text),
        write("short-text", b"hello"),
        write("empty", b""),
        write("gzip-text", &compress(Format::Gzip, &text)),
        write("xz-text", &compress(Format::Xz, &text)),
        write("zero-blocks", &[0; 1024]),
        write("bad-gzip", &[0x1F, 0x8B, 0x08, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
    ];
    for path in &cases {
        assert!(!is_archive(path).expect("sniff"), "{}", path.display());
    }
    // A tar whose checksum is off by one is not a tar.
    let mut bad = small_tar();
    bad[148] = bad[148].wrapping_add(1);
    assert!(!is_archive(&write("bad-sum", &bad)).expect("sniff"));
    // Only regular files: a directory or a symlink to an archive is not one
    // (BuildKit's isArchivePath uses Lstat).
    assert!(!is_archive(dir.path()).expect("dir"));
    let real = write("real.tar", &small_tar());
    let link = dir.path().join("link.tar");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    assert!(!is_archive(&link).expect("symlink"));
    assert!(matches!(
        is_archive(&dir.path().join("missing")),
        Err(ApplyError::Open { .. })
    ));
}

#[test]
fn names_climbing_above_dest_are_breakouts() {
    for name in ["../escape", "a/../../escape", "..", "./../escape"] {
        let sb = sandbox();
        let mut t = Tar::default();
        t.file(name, b"x");
        let err = sb.apply(&t, &layer()).expect_err(name);
        assert!(
            matches!(&err, ApplyError::Breakout { entry } if entry == name),
            "{err}"
        );
        assert!(err.to_string().contains("breakout"));
        sb.assert_contained();
    }
}

#[test]
fn absolute_names_land_inside_root() {
    let sb = sandbox();
    let probe = host_probe("abs");
    let mut t = Tar::default();
    t.file(&format!("/etc/{probe}"), b"inner")
        .file("/etc/passwd", b"inner passwd")
        .file("/../../top", b"clamped");
    sb.apply(&t, &layer()).expect("apply");
    assert_eq!(fs::read(sb.p("etc/passwd")).expect("read"), b"inner passwd");
    assert_ne!(fs::read("/etc/passwd").ok(), Some(b"inner passwd".to_vec()));
    assert_eq!(
        fs::read(sb.p(&format!("etc/{probe}"))).expect("read"),
        b"inner"
    );
    assert_eq!(fs::read(sb.p("top")).expect("read"), b"clamped");
    assert!(!Path::new("/etc").join(&probe).exists());
    sb.assert_contained();
}

#[test]
fn absolute_symlink_is_resolved_inside_root() {
    let sb = sandbox();
    let probe = host_probe("evil");
    let mut t = Tar::default();
    t.symlink("evil", "/")
        .file(&format!("evil/etc/{probe}"), b"inner");
    sb.apply(&t, &layer()).expect("apply");
    assert_eq!(fs::read_link(sb.p("evil")).expect("link"), Path::new("/"));
    assert_eq!(
        fs::read(sb.p(&format!("etc/{probe}"))).expect("read"),
        b"inner"
    );
    assert!(!Path::new("/etc").join(&probe).exists());
    sb.assert_contained();
}

#[test]
fn dotdot_symlink_is_clamped_to_root() {
    let sb = sandbox();
    let mut t = Tar::default();
    t.symlink("up", "../../..")
        .file("up/x", b"inner")
        .dir("etc/", 0o755)
        .symlink("d/deep", "../../../../etc")
        .file("d/deep/y", b"inner");
    sb.apply(&t, &layer()).expect("apply");
    assert_eq!(fs::read(sb.p("x")).expect("read"), b"inner");
    assert_eq!(fs::read(sb.p("etc/y")).expect("read"), b"inner");
    sb.assert_contained();

    // The same from a destination below the root: still never outside root.
    let sb = sandbox();
    let mut t = Tar::default();
    t.symlink("up", "../../..").file("up/x", b"inner");
    apply(&t.bytes()[..], &sb.root, "sub/dir", &add()).expect("apply");
    assert_eq!(fs::read(sb.p("x")).expect("read"), b"inner");
    sb.assert_contained();
}

#[test]
fn hardlinks_must_stay_inside() {
    let sb = sandbox();
    let mut t = Tar::default();
    t.hardlink("l", "../outside");
    let err = sb.apply(&t, &layer()).expect_err("breakout");
    assert!(
        matches!(&err, ApplyError::LinkBreakout { entry, target } if entry == "l" && target == "../outside"),
        "{err}"
    );
    sb.assert_contained();

    // An absolute target, directly or through an absolute symlink, is the
    // root's file, never the host's.
    let sb = sandbox();
    fs::create_dir(sb.p("etc")).expect("mkdir");
    fs::write(sb.p("etc/passwd"), b"inner").expect("write");
    let host_links = fs::metadata("/etc/passwd").map(|m| m.nlink()).ok();
    let mut t = Tar::default();
    t.hardlink("h", "/etc/passwd")
        .symlink("evil", "/")
        .hardlink("h2", "evil/etc/passwd");
    sb.apply(&t, &layer()).expect("apply");
    let ino = fs::metadata(sb.p("etc/passwd")).expect("stat").ino();
    assert_eq!(fs::metadata(sb.p("h")).expect("stat").ino(), ino);
    assert_eq!(fs::metadata(sb.p("h2")).expect("stat").ino(), ino);
    assert_eq!(fs::read(sb.p("h")).expect("read"), b"inner");
    assert_eq!(
        fs::metadata("/etc/passwd").map(|m| m.nlink()).ok(),
        host_links
    );

    // A target missing from the root is an error, not the host's file.
    let sb = sandbox();
    let mut t = Tar::default();
    t.hardlink("h", "/etc/passwd");
    let err = sb.apply(&t, &layer()).expect_err("missing target");
    assert!(matches!(err, ApplyError::Io { .. }), "{err}");
    assert!(!sb.p("h").exists());
    sb.assert_contained();
}

#[test]
fn truncated_archive_is_an_error_naming_the_entry() {
    let sb = sandbox();
    let mut t = Tar::default();
    t.push("short.bin", b'0', 0o644, "", b"0123456789", |h| {
        h.set_size(1000)
    });
    // Cut right after the data: no padding, no end blocks.
    let bytes = t.0[..512 + 10].to_vec();
    let err = apply(&bytes[..], &sb.root, "", &layer()).expect_err("truncated");
    match &err {
        ApplyError::Truncated {
            entry,
            expected,
            got,
        } => {
            assert_eq!((entry.as_str(), *expected, *got), ("short.bin", 1000, 10));
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("short.bin"));
    sb.assert_contained();
}

#[test]
fn huge_declared_size_without_data_fails_fast() {
    let sb = sandbox();
    for flag in [b'0', b'5'] {
        let mut t = Tar::default();
        t.push("huge", flag, 0o644, "", b"", |h| h.set_size(1 << 40));
        let err = sb.apply(&t, &layer()).expect_err("huge");
        assert!(
            matches!(&err, ApplyError::Truncated { entry, expected, .. } if entry == "huge" && *expected == 1 << 40),
            "{err}"
        );
    }
    sb.assert_contained();
}

#[test]
fn oversized_extended_header_is_refused_without_buffering_it() {
    let sb = sandbox();
    let size = 64u64 << 20;
    let mut t = Tar::default();
    t.push("PaxHeaders/x", b'x', 0o644, "", b"", |h| h.set_size(size));
    // Data is generated lazily, so a reader that buffered it all would be
    // slow and big; the applier must stop at its header budget.
    let stream = io::Cursor::new(t.0.clone()).chain(io::repeat(b'a').take(size));
    let err = apply(stream, &sb.root, "", &layer()).expect_err("oversized");
    assert!(matches!(&err, ApplyError::Archive(_)), "{err}");
    assert!(err.to_string().contains("MiB"), "{err}");
}

#[test]
fn every_entry_type_is_created() {
    let sb = sandbox();
    let mut t = Tar::default();
    t.dir("d/", 0o755)
        .push("d/f", b'0', 0o640, "", b"hello", |h| {
            h.set_uid(1234);
            h.set_gid(5678);
            h.set_mtime(1_500_000_000);
        })
        .push("d/suid", b'0', 0o4755, "", b"#!", |h| h.set_uid(1234))
        .dir("d/sgid/", 0o2755)
        .dir("d/sticky/", 0o1777)
        .push("d/s", b'2', 0o777, "f", b"", |h| h.set_mtime(1_234_567))
        .hardlink("d/h", "d/f")
        .push("d/p", b'6', 0o600, "", b"", |_| {})
        .push("d/null", b'3', 0o666, "", b"", |h| {
            h.set_device_major(1).expect("major");
            h.set_device_minor(3).expect("minor");
        });
    let stats = sb.apply(&t, &layer()).expect("apply");
    assert_eq!(stats.entries, 9);
    assert_eq!(stats.bytes, 7);

    let f = fs::metadata(sb.p("d/f")).expect("f");
    assert_eq!(fs::read(sb.p("d/f")).expect("read"), b"hello");
    assert_eq!(f.mode() & 0o7777, 0o640);
    assert_eq!(f.mtime(), 1_500_000_000);
    assert_eq!(
        fs::metadata(sb.p("d/suid")).expect("suid").mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        fs::metadata(sb.p("d/sgid")).expect("sgid").mode() & 0o7777,
        0o2755
    );
    assert_eq!(
        fs::metadata(sb.p("d/sticky")).expect("sticky").mode() & 0o7777,
        0o1777
    );
    let s = fs::symlink_metadata(sb.p("d/s")).expect("s");
    assert!(s.file_type().is_symlink());
    assert_eq!(s.mtime(), 1_234_567);
    assert_eq!(fs::read_link(sb.p("d/s")).expect("link"), Path::new("f"));
    let h = fs::metadata(sb.p("d/h")).expect("h");
    assert_eq!((h.ino(), h.nlink()), (f.ino(), 2));
    assert!(fs::symlink_metadata(sb.p("d/p"))
        .expect("p")
        .file_type()
        .is_fifo());
    assert_eq!(
        fs::symlink_metadata(sb.p("d/p")).expect("p").mode() & 0o7777,
        0o600
    );

    if is_root() {
        // chown came before chmod, so setuid survived (checked above).
        assert_eq!((f.uid(), f.gid()), (1234, 5678));
        assert_eq!(stats.ownership_fallbacks, 0);
        let dev = fs::symlink_metadata(sb.p("d/null")).expect("dev");
        assert!(dev.file_type().is_char_device());
        assert_eq!(dev.rdev(), rfs::makedev(1, 3));
        assert_eq!(stats.skipped_devices, 0);
    } else {
        assert!(stats.ownership_fallbacks >= 1);
        assert_eq!(stats.skipped_devices, 1);
        assert!(!sb.p("d/null").exists());
    }

    // devices: false skips the node and counts it.
    let sb = sandbox();
    let stats = sb
        .apply(
            &t,
            &ApplyOptions {
                devices: false,
                overlay: false,
                ..layer()
            },
        )
        .expect("apply");
    assert_eq!(stats.skipped_devices, 1);
    assert!(fs::symlink_metadata(sb.p("d/null")).is_err());
}

#[test]
fn directory_metadata_is_set_after_children() {
    let sb = sandbox();
    let mut t = Tar::default();
    t.push("d/", b'5', 0o555, "", b"", |h| h.set_mtime(1000))
        .push("d/sub/", b'5', 0o700, "", b"", |h| h.set_mtime(2000))
        .file("d/sub/g", b"g")
        .file("d/f", b"f")
        .symlink("d/l", "f");
    sb.apply(&t, &layer()).expect("apply");
    let d = fs::metadata(sb.p("d")).expect("d");
    assert_eq!((d.mtime(), d.mode() & 0o7777), (1000, 0o555));
    let sub = fs::metadata(sb.p("d/sub")).expect("sub");
    assert_eq!((sub.mtime(), sub.mode() & 0o7777), (2000, 0o700));
    assert_eq!(fs::read(sb.p("d/sub/g")).expect("g"), b"g");
    fs::set_permissions(sb.p("d"), fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn pax_records_set_xattrs_and_precise_times() {
    let sb = sandbox();
    let mut t = Tar::default();
    t.pax(&[
        ("SCHILY.xattr.user.kiln", b"abc\0binary"),
        ("mtime", b"1234567890.5"),
        ("path", b"renamed-by-pax.txt"),
    ])
    .file("short-name", b"data")
    .pax(&[("SCHILY.xattr.user.dir", b"d")])
    .dir("xd/", 0o755)
    .pax(&[("SCHILY.xattr.trusted.kiln", b"t")])
    .symlink("xl", "renamed-by-pax.txt");
    let stats = sb.apply(&t, &layer()).expect("apply");
    let path = sb.p("renamed-by-pax.txt");
    assert!(!sb.p("short-name").exists());
    let m = fs::metadata(&path).expect("stat");
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_234_567_890, 500_000_000));
    let get = |p: &Path, name: &str| {
        let mut buf = [0u8; 64];
        rfs::lgetxattr(p, name, &mut buf).map(|n| buf[..n].to_vec())
    };
    // ext4 and tmpfs take user.* xattrs on files and directories; where not,
    // the record is counted as skipped instead.
    match get(&path, "user.kiln") {
        Ok(v) => assert_eq!(v, b"abc\0binary"),
        Err(_) => assert!(stats.skipped_xattrs >= 1),
    }
    if let Ok(v) = get(&sb.p("xd"), "user.dir") {
        assert_eq!(v, b"d");
    }
    // A symlink goes through /proc/self/fd; trusted.* needs CAP_SYS_ADMIN.
    if is_root() {
        assert_eq!(get(&sb.p("xl"), "trusted.kiln").expect("trusted"), b"t");
    } else {
        assert!(stats.skipped_xattrs >= 1);
    }
}

#[test]
fn gnu_long_names_and_links_are_read() {
    let sb = sandbox();
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(120));
    let target = format!("../{long}");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    b.append_data(&mut h, &long, &b"long"[..])
        .expect("long name");
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "x/link", &target).expect("long link");
    let bytes = b.into_inner().expect("tar");
    assert!(
        bytes.windows(13).any(|w| w == b"././@LongLink"),
        "GNU 'L'/'K' used"
    );
    apply(&bytes[..], &sb.root, "", &layer()).expect("apply");
    assert_eq!(fs::read(sb.p(&long)).expect("read"), b"long");
    assert_eq!(
        fs::read_link(sb.p("x/link")).expect("link"),
        Path::new(&target)
    );
    assert_eq!(fs::read(sb.p("x/link")).expect("via link"), b"long");
}

#[test]
fn whiteouts_remove_lower_files_and_directories() {
    let sb = sandbox();
    fs::create_dir_all(sb.p("a/c/d")).expect("mkdir");
    fs::write(sb.p("a/b"), b"lower").expect("write");
    fs::write(sb.p("a/c/d/e"), b"lower").expect("write");
    fs::write(sb.p("a/stay"), b"lower").expect("write");
    let mut t = Tar::default();
    t.file("a/.wh.b", b"")
        .file("a/.wh.c", b"")
        .file(".wh.absent", b"");
    let stats = sb.apply(&t, &layer()).expect("apply");
    assert_eq!(stats.entries, 3);
    assert!(!sb.p("a/b").exists());
    assert!(!sb.p("a/c").exists());
    assert!(sb.p("a/stay").exists());
    assert!(!sb.p("a/.wh.b").exists() && !sb.p(".wh.absent").exists());
}

#[test]
fn opaque_clears_lower_children_but_keeps_this_layer() {
    let sb = sandbox();
    fs::create_dir_all(sb.p("a/sub")).expect("mkdir");
    fs::create_dir_all(sb.p("a/keepdir")).expect("mkdir");
    fs::write(sb.p("a/old"), b"lower").expect("write");
    fs::write(sb.p("a/sub/old2"), b"lower").expect("write");
    fs::write(sb.p("a/keepdir/lower"), b"lower").expect("write");
    fs::write(sb.p("outside-a"), b"lower").expect("write");
    let mut t = Tar::default();
    t.dir("a/", 0o755)
        .file("a/new", b"before the marker")
        .file("a/keepdir/x", b"implies keepdir")
        .file("a/.wh..wh..opq", b"")
        .file("a/later", b"after the marker");
    sb.apply(&t, &layer()).expect("apply");
    for kept in ["a/new", "a/later", "a/keepdir/x", "outside-a"] {
        assert!(sb.p(kept).exists(), "{kept} kept");
    }
    for gone in ["a/old", "a/sub", "a/keepdir/lower", "a/.wh..wh..opq"] {
        assert!(!sb.p(gone).exists(), "{gone} removed");
    }
}

#[test]
fn whiteout_spares_what_the_same_layer_wrote() {
    let sb = sandbox();
    let mut t = Tar::default();
    t.file("a/b", b"this layer").file("a/.wh.b", b"");
    sb.apply(&t, &layer()).expect("apply");
    assert_eq!(fs::read(sb.p("a/b")).expect("read"), b"this layer");
}

#[test]
fn add_mode_keeps_whiteout_names_as_files() {
    let sb = sandbox();
    fs::write(sb.p("b"), b"lower").expect("write");
    let mut t = Tar::default();
    t.file(".wh.b", b"marker").file(".wh..wh..opq", b"opq");
    sb.apply(&t, &add()).expect("apply");
    assert_eq!(fs::read(sb.p("b")).expect("read"), b"lower");
    assert_eq!(fs::read(sb.p(".wh.b")).expect("read"), b"marker");
    assert_eq!(fs::read(sb.p(".wh..wh..opq")).expect("read"), b"opq");
}

#[test]
fn invalid_whiteouts_and_aufs_metadata() {
    for name in [".wh.", "a/.wh..", "a/.wh..."] {
        let sb = sandbox();
        fs::create_dir(sb.p("a")).expect("mkdir");
        let mut t = Tar::default();
        t.file(name, b"");
        let err = sb.apply(&t, &layer()).expect_err(name);
        assert!(matches!(err, ApplyError::Whiteout { .. }), "{err}");
        assert!(sb.p("a").exists());
    }
    let sb = sandbox();
    let mut t = Tar::default();
    t.dir(".wh..wh.plnk/", 0o700)
        .file(".wh..wh.plnk/123.456", b"aufs")
        .file("real", b"r");
    sb.apply(&t, &layer()).expect("apply");
    assert!(!sb.p(".wh..wh.plnk").exists());
    assert!(sb.p("real").exists());
}

#[test]
fn existing_paths_are_replaced_or_merged() {
    let sb = sandbox();
    fs::create_dir_all(sb.p("x/deep")).expect("mkdir");
    fs::write(sb.p("x/deep/child"), b"lower").expect("write");
    fs::write(sb.p("y"), b"lower file").expect("write");
    fs::create_dir(sb.p("z")).expect("mkdir");
    fs::write(sb.p("z/child"), b"lower").expect("write");
    std::os::unix::fs::symlink("/", sb.p("w")).expect("symlink");
    std::os::unix::fs::symlink("/", sb.p("v")).expect("symlink");
    let mut t = Tar::default();
    t.file("x", b"file now")
        .dir("y/", 0o750)
        .dir("z/", 0o700)
        .file("w", b"not through the link")
        .dir("v/", 0o700);
    sb.apply(&t, &add()).expect("apply");
    assert_eq!(fs::read(sb.p("x")).expect("x"), b"file now");
    assert!(fs::metadata(sb.p("y")).expect("y").is_dir());
    assert_eq!(fs::read(sb.p("z/child")).expect("merged"), b"lower");
    assert_eq!(fs::metadata(sb.p("z")).expect("z").mode() & 0o7777, 0o700);
    assert!(fs::symlink_metadata(sb.p("w")).expect("w").is_file());
    assert!(fs::symlink_metadata(sb.p("v")).expect("v").is_dir());
    sb.assert_contained();
}

#[test]
fn unknown_types_fail_and_global_headers_are_ignored() {
    for flag in [b'7', b'V', b'M'] {
        let sb = sandbox();
        let mut t = Tar::default();
        t.push("odd", flag, 0o644, "", b"", |_| {});
        let err = sb.apply(&t, &layer()).expect_err("unsupported");
        assert!(
            matches!(&err, ApplyError::Unsupported { entry, .. } if entry == "odd"),
            "{err}"
        );
        assert!(!sb.p("odd").exists());
    }
    // GNU sparse members are refused rather than expanded.
    let sb = sandbox();
    let mut t = Tar::default();
    let mut h = tar::Header::new_gnu();
    h.set_path("sparse").expect("path");
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_size(0);
    h.as_gnu_mut().expect("gnu").realsize = *b"00000000000\0";
    h.set_cksum();
    t.0.extend_from_slice(h.as_bytes());
    let err = sb.apply(&t, &layer()).expect_err("sparse");
    assert!(matches!(err, ApplyError::Unsupported { .. }), "{err}");

    let sb = sandbox();
    let mut t = Tar::default();
    t.push("global", b'g', 0o644, "", b"9 a=bcd\n", |_| {})
        .file("after", b"a");
    let stats = sb.apply(&t, &layer()).expect("apply");
    assert_eq!(stats.entries, 1);
    assert!(!sb.p("global").exists() && sb.p("after").exists());
}

#[test]
fn destination_subdirectory_is_the_base_of_names() {
    let sb = sandbox();
    let mut t = Tar::default();
    t.file("/abs", b"a")
        .file("rel", b"r")
        .hardlink("/l", "/abs");
    let stats = apply(&t.bytes()[..], &sb.root, "/opt/app", &add()).expect("apply");
    assert_eq!(stats.entries, 3);
    assert_eq!(fs::read(sb.p("opt/app/abs")).expect("abs"), b"a");
    assert_eq!(fs::read(sb.p("opt/app/rel")).expect("rel"), b"r");
    let ino = |p: &str| fs::metadata(sb.p(p)).expect("stat").ino();
    assert_eq!(ino("opt/app/l"), ino("opt/app/abs"));
    assert_eq!(
        fs::metadata(sb.p("opt")).expect("opt").mode() & 0o777,
        0o755
    );

    // Climbing above dest is a breakout even though it stays inside root.
    let mut t = Tar::default();
    t.file("../sibling", b"x");
    let err = apply(&t.bytes()[..], &sb.root, "opt/app", &add()).expect_err("breakout");
    assert!(matches!(err, ApplyError::Breakout { .. }), "{err}");
    let mut t = Tar::default();
    t.hardlink("l2", "../../opt/app/abs");
    let err = apply(&t.bytes()[..], &sb.root, "opt/app", &add()).expect_err("breakout");
    assert!(matches!(err, ApplyError::LinkBreakout { .. }), "{err}");
    let err = apply(&t.bytes()[..], &sb.root, "../x", &add()).expect_err("dest");
    assert!(matches!(err, ApplyError::Dest(_)), "{err}");
    sb.assert_contained();
}

#[test]
fn entries_naming_the_destination_are_skipped() {
    let sb = sandbox();
    fs::set_permissions(&sb.root, fs::Permissions::from_mode(0o751)).expect("chmod");
    let mut t = Tar::default();
    t.dir("./", 0o700).dir("/", 0o700).file("./f", b"f");
    let stats = sb.apply(&t, &layer()).expect("apply");
    assert_eq!(stats.entries, 1);
    assert_eq!(fs::metadata(&sb.root).expect("root").mode() & 0o7777, 0o751);
    assert!(sb.p("f").exists());
}

#[test]
fn old_style_directory_and_zero_files() {
    let sb = sandbox();
    let mut zeros_then_data = vec![0u8; 200_000];
    zeros_then_data.extend_from_slice(b"tail");
    let mut t = Tar::default();
    t.push("olddir/", 0, 0o755, "", b"", |_| {})
        .file("olddir/zeros", &vec![0u8; 1 << 20])
        .file("olddir/mixed", &zeros_then_data)
        .file(
            "olddir/data-then-zeros",
            &[b"head".as_slice(), &[0; 100_000]].concat(),
        );
    sb.apply(&t, &add()).expect("apply");
    assert!(fs::metadata(sb.p("olddir")).expect("dir").is_dir());
    let zeros = fs::metadata(sb.p("olddir/zeros")).expect("zeros");
    assert_eq!(zeros.len(), 1 << 20);
    assert!(
        zeros.blocks() * 512 < 1 << 20,
        "all-zero blocks become holes"
    );
    assert_eq!(
        fs::read(sb.p("olddir/zeros")).expect("read"),
        vec![0u8; 1 << 20]
    );
    assert_eq!(
        fs::read(sb.p("olddir/mixed")).expect("read"),
        zeros_then_data
    );
    let tail = fs::read(sb.p("olddir/data-then-zeros")).expect("read");
    assert_eq!((tail.len(), &tail[..4]), (100_004, b"head".as_slice()));
}

#[test]
fn chown_override_applies_to_everything() {
    let sb = sandbox();
    let mut t = Tar::default();
    t.dir("d/", 0o755)
        .push("d/suid", b'0', 0o4755, "", b"x", |h| h.set_uid(1))
        .symlink("d/l", "suid");
    let opts = ApplyOptions {
        chown: Some((4321, 8765)),
        ..add()
    };
    let stats = sb.apply(&t, &opts).expect("apply");
    if is_root() {
        for p in ["d", "d/suid", "d/l"] {
            let m = fs::symlink_metadata(sb.p(p)).expect("stat");
            assert_eq!((m.uid(), m.gid()), (4321, 8765), "{p}");
        }
        assert_eq!(stats.ownership_fallbacks, 0);
    } else {
        assert_eq!(stats.ownership_fallbacks, 3);
    }
    assert_eq!(
        fs::metadata(sb.p("d/suid")).expect("suid").mode() & 0o7777,
        0o4755
    );
}

/// Not root (a thread that dropped root when the tests run as root): devices
/// are skipped and counted, ownership falls back to the current user.
#[test]
fn unprivileged_apply_falls_back_instead_of_failing() {
    let sb = sandbox();
    let mut t = Tar::default();
    t.push("f", b'0', 0o644, "", b"x", |h| h.set_uid(0))
        .push("null", b'3', 0o666, "", b"", |h| {
            h.set_device_major(1).expect("major");
            h.set_device_minor(3).expect("minor");
        })
        .push("p", b'6', 0o644, "", b"", |_| {});
    let bytes = t.bytes();
    let root = sb.root.clone();
    let nobody = 65534;
    let run = move |drop_root: bool| {
        if drop_root {
            rustix::thread::set_thread_res_gid(
                Gid::from_raw(nobody),
                Gid::from_raw(nobody),
                Gid::from_raw(nobody),
            )
            .expect("setresgid");
            rustix::thread::set_thread_res_uid(
                Uid::from_raw(nobody),
                Uid::from_raw(nobody),
                Uid::from_raw(nobody),
            )
            .expect("setresuid");
        }
        assert!(!rustix::process::geteuid().is_root());
        apply(&bytes[..], &root, "", &layer())
    };
    let stats = if is_root() {
        for p in [sb.outer.path(), &sb.root] {
            std::os::unix::fs::chown(p, Some(nobody), Some(nobody)).expect("chown");
        }
        // setresuid through rustix changes only the calling thread.
        std::thread::spawn(move || run(true))
            .join()
            .expect("thread")
    } else {
        run(false)
    }
    .expect("apply");
    assert_eq!(stats.skipped_devices, 1);
    assert!(stats.ownership_fallbacks >= 1);
    assert!(!sb.p("null").exists());
    assert!(fs::symlink_metadata(sb.p("p"))
        .expect("fifo")
        .file_type()
        .is_fifo());
    assert_ne!(fs::metadata(sb.p("f")).expect("f").uid(), 0);
}

#[test]
fn overlay_mode_keeps_whiteouts_in_overlay_form() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let sb = sandbox();
    let mut t = Tar::default();
    t.dir("a/", 0o755)
        .file("a/.wh..wh..opq", b"")
        .file("a/new", b"this layer")
        .file("a/.wh.gone", b"")
        .file("a/.wh.new", b"")
        .file(".wh..wh.plnk", b"");
    t.pax(&[("SCHILY.xattr.trusted.overlay.redirect", b"/etc")]);
    t.file("steer", b"x");
    let opts = ApplyOptions {
        overlay: true,
        ..layer()
    };
    let stats = sb.apply(&t, &opts).expect("apply");
    let gone = fs::symlink_metadata(sb.p("a/gone")).expect("a whiteout device");
    assert!(gone.file_type().is_char_device() && gone.rdev() == 0);
    // What the layer itself wrote is not hidden by its own whiteout.
    assert_eq!(fs::read(sb.p("a/new")).expect("read"), b"this layer");
    assert!(!sb.p(".wh..wh.plnk").exists() && !sb.p("a/.wh.gone").exists());
    let key = format!("{}overlay.opaque", overlay_xattr_prefix());
    assert_eq!(
        rustix::fs::getxattr(sb.p("a").as_path(), key.as_str(), &mut [0u8; 8]).expect("opaque"),
        1
    );
    assert!(rustix::fs::getxattr(
        sb.p("steer").as_path(),
        "trusted.overlay.redirect",
        &mut [0u8; 8]
    )
    .is_err());
    assert_eq!(stats.skipped_xattrs, 1);
    sb.assert_contained();
}

/// The applier reads its stream to the end, past the first end-of-archive
/// block the tar reader stops at (the second block, a record's padding):
/// a writer on the other end of a pipe must not be cut off.
#[test]
fn reads_the_stream_to_its_end() {
    let s = sandbox();
    let mut bytes = small_tar();
    // A GNU tar record: padded with zeros to 10 KiB.
    bytes.resize(10240, 0);
    let mut r = &bytes[..];
    apply(&mut r, &s.root, "", &add()).expect("apply");
    assert!(r.is_empty(), "{} bytes left unread", r.len());
    assert_eq!(fs::read(s.p("hello.txt")).expect("hello"), b"hello\n");
}
