//! What `kiln build` reads besides the context's plain files: ADD from an
//! HTTP server and of local archives, named build contexts (directories
//! and OCI layouts), `.dockerignore`, COPY's `--exclude`/`--parents`,
//! other stages, and the registry (not implemented: a clear error).

use crate::image::{all_paths, entry, listing, read_oci, stderr, Ctx, ReadImage};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Output;

/// The file the test server serves.
const BODY: &str = "downloaded by kiln\n";
const LAST_MODIFIED: &str = "Tue, 14 Nov 2023 22:13:20 GMT";

/// Starts an HTTP/1.1 server on 127.0.0.1 that serves [`BODY`] at
/// `/files/hello.txt` and 404 for every other path; returns its base URL.
/// The server thread lives until the test process ends.
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || answer(stream));
        }
    });
    format!("http://{addr}")
}

fn answer(mut s: TcpStream) {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&req);
    let path = text.split_whitespace().nth(1).unwrap_or("");
    let resp = if path == "/files/hello.txt" {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nLast-Modified: {LAST_MODIFIED}\r\nConnection: close\r\n\r\n{BODY}",
            BODY.len()
        )
    } else {
        let body = "not found\n";
        format!(
            "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let _ = s.write_all(resp.as_bytes());
    let _ = s.flush();
}

fn sha256(b: &[u8]) -> String {
    let hex: String = Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect();
    format!("sha256:{hex}")
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "kiln build failed ({:?}):\n{}",
        o.status.code(),
        stderr(o)
    );
}

/// Runs kiln with the proxy settings of the environment out of the way
/// of the test server.
fn kiln_local(c: &Ctx, args: &[&str]) -> Output {
    c.kiln_env(
        args,
        &[("NO_PROXY", "127.0.0.1"), ("no_proxy", "127.0.0.1")],
    )
}

/// Builds to an OCI archive (see [`kiln_local`]) and reads it back.
fn build_local(c: &Ctx, extra: &[&str]) -> ReadImage {
    let out = c.path("out.tar");
    let dest = format!("type=oci,dest={}", out.display());
    let mut args = vec!["-o", dest.as_str()];
    args.extend_from_slice(extra);
    ok(&kiln_local(c, &args));
    read_oci(&std::fs::read(&out).expect("reading out.tar"))
}

fn names(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .map(|l| l.split('\t').next().unwrap_or(""))
        .collect()
}

/// ADD of an http:// URL writes the body with mode 0600 and the server's
/// Last-Modified as mtime; into a directory it keeps the URL's basename.
#[test]
fn add_url_downloads_with_mode_and_mtime() {
    let base = serve();
    let url = format!("{base}/files/hello.txt");
    let c = Ctx::new(
        &format!("FROM scratch\nADD {url} /renamed.txt\nADD {url} /dl/\n"),
        &[],
    );
    let img = build_local(&c, &[]);
    assert_eq!(img.layers.len(), 2);
    let size = BODY.len().to_string();
    let hash = sha256(BODY.as_bytes());
    let hash = hash.trim_start_matches("sha256:");
    let first = listing(&img.layers[0]);
    let f = entry(&first, "renamed.txt");
    assert_eq!(
        (f[1], f[2], f[3], f[4], f[5], f[6], f[8]),
        ("file", "0600", "0", "0", size.as_str(), hash, "1700000000"),
        "{f:?}"
    );
    let second = listing(&img.layers[1]);
    assert_eq!(names(&second), ["dl/", "dl/hello.txt"], "{second:?}");
    let f = entry(&second, "dl/hello.txt");
    assert_eq!(
        (f[1], f[2], f[6], f[8]),
        ("file", "0600", hash, "1700000000"),
        "{f:?}"
    );
}

/// ADD --checksum accepts the right digest and rejects a wrong one, naming
/// both digests, at the ADD's line.
#[test]
fn add_url_checksum() {
    let base = serve();
    let url = format!("{base}/files/hello.txt");
    let right = sha256(BODY.as_bytes());
    let c = Ctx::new(
        &format!("FROM scratch\nADD --checksum={right} {url} /ok.txt\n"),
        &[],
    );
    let img = build_local(&c, &[]);
    let f = listing(&img.layers[0]);
    entry(&f, "ok.txt");

    let wrong = format!("sha256:{}", "0".repeat(64));
    let c = Ctx::new(
        &format!("FROM scratch\nCOPY a /a\nADD --checksum={wrong} {url} /bad.txt\n"),
        &[("a", "a\n")],
    );
    let o = kiln_local(&c, &["-o", "type=tar,dest=-"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{e}");
    assert!(
        e.contains(&right),
        "the message lacks the actual digest: {e}"
    );
    assert!(
        e.contains(&wrong),
        "the message lacks the expected digest: {e}"
    );
    assert!(e.contains("Dockerfile:3"), "{e}");
}

/// A URL the server answers 404 fails the ADD with the HTTP status, at the
/// ADD's line.
#[test]
fn add_url_not_found() {
    let base = serve();
    let c = Ctx::new(
        &format!("FROM scratch\nCOPY a /a\nADD {base}/nope.txt /nope.txt\n"),
        &[("a", "a\n")],
    );
    let o = kiln_local(&c, &["-o", "type=tar,dest=-"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{e}");
    assert!(e.contains("404"), "the message lacks the HTTP status: {e}");
    assert!(e.contains("Dockerfile:3"), "{e}");
    assert!(o.stdout.is_empty(), "a failed build wrote an output");
}

/// ADD of a local .tar.gz extracts it, keeping the archive's modes, owners
/// and times; ADD of a plain file copies it.
#[test]
fn add_local_archive_extracts_and_plain_file_copies() {
    let c = Ctx::new(
        "FROM scratch\nADD app.tar.gz /opt/\nADD plain.txt /p/plain.txt\n",
        &[("plain.txt", "plain\n")],
    );
    let gz = std::fs::File::create(c.ctx().join("app.tar.gz")).expect("creating app.tar.gz");
    let enc = flate2::write::GzEncoder::new(gz, flate2::Compression::default());
    let mut b = tar::Builder::new(enc);
    let add = |b: &mut tar::Builder<_>, path: &str, mode: u32, body: Option<&[u8]>| {
        let mut h = tar::Header::new_ustar();
        h.set_mode(mode);
        h.set_uid(1234);
        h.set_gid(5678);
        h.set_mtime(1_600_000_000);
        match body {
            Some(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append_data(&mut h, path, data).expect("tar file entry");
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_cksum();
                b.append_data(&mut h, path, &[][..]).expect("tar dir entry");
            }
        }
    };
    add(&mut b, "pkg/", 0o755, None);
    add(&mut b, "pkg/a.txt", 0o640, Some(b"from the archive\n"));
    add(&mut b, "pkg/bin/", 0o700, None);
    add(&mut b, "pkg/bin/tool", 0o755, Some(b"#!/bin/sh\n"));
    b.into_inner()
        .expect("finishing the tar")
        .finish()
        .expect("finishing the gzip stream");

    let img = build_local(&c, &[]);
    assert_eq!(img.layers.len(), 2);
    let first = listing(&img.layers[0]);
    assert_eq!(
        names(&first),
        [
            "opt/",
            "opt/pkg/",
            "opt/pkg/a.txt",
            "opt/pkg/bin/",
            "opt/pkg/bin/tool"
        ],
        "{first:?}"
    );
    let a = entry(&first, "opt/pkg/a.txt");
    assert_eq!(
        (a[1], a[2], a[3], a[4], a[8]),
        ("file", "0640", "1234", "5678", "1600000000"),
        "{a:?}"
    );
    assert_eq!(
        a[6],
        sha256(b"from the archive\n").trim_start_matches("sha256:")
    );
    let bin = entry(&first, "opt/pkg/bin/");
    assert_eq!((bin[1], bin[2]), ("dir", "0700"), "{bin:?}");
    let second = listing(&img.layers[1]);
    let p = entry(&second, "p/plain.txt");
    assert_eq!((p[1], p[3], p[4], p[5]), ("file", "0", "0", "6"), "{p:?}");
    assert!(
        !all_paths(&img).iter().any(|n| n.ends_with("app.tar.gz")),
        "the archive itself was copied"
    );
}

/// `--build-context name=DIR`: `COPY --from=name` reads from the
/// directory (root-owned, as from the main context).
#[test]
fn named_dir_context_as_copy_source() {
    let c = Ctx::new(
        "FROM scratch\nCOPY --from=extra data.txt /from-extra/\nCOPY --from=extra sub/ /sub/\n",
        &[],
    );
    let extra = c.path("extra");
    std::fs::create_dir_all(extra.join("sub")).expect("mkdir extra/sub");
    std::fs::write(extra.join("data.txt"), "extra data\n").expect("write data.txt");
    std::fs::write(extra.join("sub/s.txt"), "s\n").expect("write sub/s.txt");
    let ctx = format!("extra={}", extra.display());
    let img = build_local(&c, &["--build-context", &ctx]);
    let first = listing(&img.layers[0]);
    let d = entry(&first, "from-extra/data.txt");
    assert_eq!((d[1], d[3], d[4], d[5]), ("file", "0", "0", "11"), "{d:?}");
    let second = listing(&img.layers[1]);
    entry(&second, "sub/s.txt");
}

/// `--build-context base=DIR` + `FROM base`: the directory is the stage's
/// root filesystem, in the filesystem output and in the image's layers.
#[test]
fn named_dir_context_as_base() {
    let c = Ctx::new("FROM base\nCOPY a.txt /a.txt\n", &[("a.txt", "a\n")]);
    let base = c.path("basefs");
    std::fs::create_dir_all(base.join("etc")).expect("mkdir basefs/etc");
    std::fs::write(base.join("etc/base.conf"), "base=1\n").expect("write base.conf");
    let ctx = format!("base={}", base.display());
    let dir = c.path("local");
    let local = format!("type=local,dest={}", dir.display());
    let img = build_local(&c, &["--build-context", &ctx, "-o", &local]);
    assert_eq!(
        std::fs::read_to_string(dir.join("etc/base.conf")).expect("etc/base.conf in the output"),
        "base=1\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("a.txt")).expect("a.txt in the output"),
        "a\n"
    );
    let paths = all_paths(&img);
    assert!(
        paths.iter().any(|p| p == "a.txt"),
        "the COPY layer is missing: {paths:?}"
    );
    assert!(
        paths.iter().any(|p| p == "etc/base.conf"),
        "the image's layers lack the base directory's files: {paths:?}"
    );
}

/// Builds a base image with kiln and unpacks its OCI archive into a
/// layout directory; returns the image and the layout.
fn base_layout() -> (Ctx, ReadImage, std::path::PathBuf) {
    let c = Ctx::new(
        "FROM scratch\nCOPY base.txt /base/\nCOPY more/ /more/\nENV BASE=1\nCMD [\"/bin/base\"]\n",
        &[("base.txt", "base\n"), ("more/m.txt", "m\n")],
    );
    let img = c.build_oci(&["-t", "base:v1"]);
    let layout = c.path("layout");
    std::fs::create_dir(&layout).expect("mkdir layout");
    let f = std::fs::File::open(c.path("out.tar")).expect("opening out.tar");
    tar::Archive::new(f)
        .unpack(&layout)
        .expect("unpacking the OCI archive");
    (c, img, layout)
}

fn layer_digests(img: &ReadImage) -> Vec<String> {
    img.manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_string())
        .collect()
}

/// `--build-context base=oci-layout://DIR:TAG` + `FROM base`: the image
/// has the base's layers first, unchanged, then its own, and inherits the
/// base's config.
#[test]
fn oci_layout_context_as_base() {
    let (_b, base, layout) = base_layout();
    // A separate context and store: the layers are read from the layout.
    let c = Ctx::new(
        "FROM base\nCOPY child.txt /child/\n",
        &[("child.txt", "child\n")],
    );
    let ctx = format!("base=oci-layout://{}:v1", layout.display());
    let img = build_local(&c, &["--build-context", &ctx]);
    let want = layer_digests(&base);
    let got = layer_digests(&img);
    assert_eq!(got.len(), want.len() + 1, "{got:?}");
    assert_eq!(got[..want.len()], want[..], "the base's layers changed");
    assert_eq!(
        img.config["rootfs"]["diff_ids"]
            .as_array()
            .expect("diff_ids")[..want.len()],
        base.config["rootfs"]["diff_ids"]
            .as_array()
            .expect("diff_ids")[..]
    );
    let last = listing(img.layers.last().expect("a layer"));
    assert_eq!(names(&last), ["child/", "child/child.txt"], "{last:?}");
    let cfg = &img.config["config"];
    assert!(
        cfg["Env"]
            .as_array()
            .is_some_and(|e| e.iter().any(|v| v == "BASE=1")),
        "{cfg}"
    );
    assert_eq!(cfg["Cmd"], serde_json::json!(["/bin/base"]));
}

/// A layout whose layer blob does not match its digest fails the build,
/// naming the digest.
#[test]
fn tampered_oci_layout_is_rejected() {
    let (_b, base, layout) = base_layout();
    let digest = layer_digests(&base)[0].clone();
    let blob = layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).expect("reading the layer blob");
    let n = bytes.len();
    for b in &mut bytes[n / 2..] {
        *b ^= 0x5a;
    }
    std::fs::write(&blob, &bytes).expect("overwriting the layer blob");
    let c = Ctx::new("FROM base\nCOPY a /a\n", &[("a", "a\n")]);
    let ctx = format!("base=oci-layout://{}:v1", layout.display());
    let o = kiln_local(&c, &["--build-context", &ctx, "-o", "type=tar,dest=-"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{e}");
    assert!(e.contains(&digest), "the message lacks {digest}: {e}");
    assert!(o.stdout.is_empty(), "a failed build wrote an output");
}

/// `.dockerignore` hides files from COPY: a name, a `!` re-include, and
/// `**/*.log` at any depth.
#[test]
fn dockerignore_applies_to_copy() {
    let c = Ctx::new(
        "FROM scratch\nCOPY . /app/\n",
        &[
            (".dockerignore", "secret.txt\n*.md\n!README.md\n**/*.log\n"),
            ("secret.txt", "s\n"),
            ("README.md", "r\n"),
            ("NOTES.md", "n\n"),
            ("keep.txt", "k\n"),
            ("top.log", "l\n"),
            ("sub/deep/x.log", "l\n"),
            ("sub/deep/y.txt", "y\n"),
        ],
    );
    let img = build_local(&c, &[]);
    let lines = listing(&img.layers[0]);
    let got = names(&lines);
    for want in ["app/README.md", "app/keep.txt", "app/sub/deep/y.txt"] {
        assert!(got.contains(&want), "{want} missing: {got:?}");
    }
    for gone in [
        "app/secret.txt",
        "app/NOTES.md",
        "app/top.log",
        "app/sub/deep/x.log",
    ] {
        assert!(!got.contains(&gone), "{gone} was copied: {got:?}");
    }
    // A COPY naming an ignored file fails.
    let c2 = Ctx::new(
        "FROM scratch\nCOPY secret.txt /s\n",
        &[(".dockerignore", "secret.txt\n"), ("secret.txt", "s\n")],
    );
    let o = kiln_local(&c2, &["-o", "type=tar,dest=-"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("secret.txt"), "{}", stderr(&o));
}

/// `<Dockerfile name>.dockerignore` beside a `-f` Dockerfile is used
/// instead of the context's `.dockerignore`.
#[test]
fn dockerfile_specific_dockerignore_wins() {
    let c = Ctx::new(
        "FROM scratch\nCOPY . /app/\n",
        &[
            (".dockerignore", "a.txt\n"),
            ("build/app.Dockerfile", "FROM scratch\nCOPY . /app/\n"),
            ("build/app.Dockerfile.dockerignore", "b.txt\nbuild\n"),
            ("a.txt", "a\n"),
            ("b.txt", "b\n"),
        ],
    );
    let df = c.ctx().join("build/app.Dockerfile");
    let img = build_local(&c, &["-f", &df.to_string_lossy()]);
    let lines = listing(&img.layers[0]);
    let got = names(&lines);
    assert!(got.contains(&"app/a.txt"), "a.txt was ignored: {got:?}");
    assert!(!got.contains(&"app/b.txt"), "b.txt was copied: {got:?}");
    assert!(
        got.contains(&"app/.dockerignore"),
        "the context's .dockerignore is only a file here: {got:?}"
    );
    // Without -f the context's .dockerignore applies.
    let img = build_local(&c, &[]);
    let lines = listing(&img.layers[0]);
    let got = names(&lines);
    assert!(!got.contains(&"app/a.txt"), "{got:?}");
    assert!(got.contains(&"app/b.txt"), "{got:?}");
}

/// `COPY --exclude` leaves out matching files; `COPY --parents` keeps the
/// source's directories under the destination (no `# syntax` line).
#[test]
fn copy_exclude_and_parents() {
    let c = Ctx::new(
        "FROM scratch\nCOPY --exclude=*.log dir/ /d/\nCOPY --parents a/b/c.txt x/y.txt /dst/\n",
        &[
            ("dir/keep.txt", "k\n"),
            ("dir/drop.log", "l\n"),
            ("dir/sub/inner.txt", "i\n"),
            ("a/b/c.txt", "c\n"),
            ("a/b/other.txt", "o\n"),
            ("x/y.txt", "y\n"),
        ],
    );
    let img = build_local(&c, &[]);
    let first = listing(&img.layers[0]);
    assert_eq!(
        names(&first),
        ["d/", "d/keep.txt", "d/sub/", "d/sub/inner.txt"],
        "{first:?}"
    );
    let second = listing(&img.layers[1]);
    let got = names(&second);
    for want in ["dst/a/b/c.txt", "dst/x/y.txt"] {
        assert!(got.contains(&want), "{want} missing: {got:?}");
    }
    for gone in ["dst/c.txt", "dst/y.txt", "dst/a/b/other.txt"] {
        assert!(!got.contains(&gone), "{gone} is there: {got:?}");
    }
}

/// `COPY --from=0` (by index) and `--from=NAME` read an earlier stage and
/// keep its files' owners.
#[test]
fn copy_from_stage_keeps_owners() {
    let c = Ctx::new(
        "FROM scratch AS builder\n\
         COPY --chown=1000:1000 app.txt /out/app.txt\n\
         COPY --chown=1000:1000 lib/ /out/lib/\n\
         FROM scratch\n\
         COPY --from=0 /out/app.txt /by-index/app.txt\n\
         COPY --from=builder /out/ /by-name/\n",
        &[("app.txt", "app\n"), ("lib/l.so", "lib\n")],
    );
    let img = build_local(&c, &[]);
    assert_eq!(img.layers.len(), 2, "only the final stage's layers");
    let first = listing(&img.layers[0]);
    let a = entry(&first, "by-index/app.txt");
    assert_eq!(
        (a[1], a[3], a[4], a[5]),
        ("file", "1000", "1000", "4"),
        "{a:?}"
    );
    let second = listing(&img.layers[1]);
    for p in ["by-name/app.txt", "by-name/lib/l.so"] {
        let e = entry(&second, p);
        assert_eq!((e[3], e[4]), ("1000", "1000"), "{e:?}");
    }
    let lib = entry(&second, "by-name/lib/");
    assert_eq!((lib[1], lib[3], lib[4]), ("dir", "1000", "1000"), "{lib:?}");
}

/// A base image whose registry refuses the connection is a build failure
/// (exit code 3) that names the URL, and writes no output.
#[test]
fn unreachable_registry_is_a_clear_error() {
    let c = Ctx::new("FROM 127.0.0.1:1/alpine\nCOPY a /a\n", &[("a", "a\n")]);
    let o = kiln_local(&c, &["-o", "type=tar,dest=-"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(4), "{e}");
    assert!(e.contains("127.0.0.1:1/v2/alpine/manifests/latest"), "{e}");
    assert!(
        e.contains("Connection refused") || e.contains("connect"),
        "{e}"
    );
    assert!(o.stdout.is_empty(), "a failed build wrote an output");
}

/// The planner sees an OCI-layout base's config: its ENV expands in the
/// child's instructions, its WORKDIR is where relative paths land, and its
/// ONBUILD triggers run in the child (and are not inherited).
#[test]
fn oci_layout_base_config_shapes_the_plan() {
    let b = Ctx::new(
        "FROM scratch\nENV APP_HOME=/srv/app PATH=/opt/bin:/usr/bin\nWORKDIR /srv/app\n\
         ONBUILD COPY trigger.txt ./from-trigger.txt\n",
        &[],
    );
    let out = b.path("base.tar");
    let spec = format!("type=oci,dest={}", out.display());
    let o = b.kiln(&["-t", "base:v2", "-o", &spec]);
    assert!(o.status.success(), "{}", stderr(&o));
    let layout = b.path("layout");
    std::fs::create_dir(&layout).expect("mkdir");
    let f = std::fs::File::open(&out).expect("opening base.tar");
    tar::Archive::new(f)
        .unpack(&layout)
        .expect("unpacking the OCI archive");
    let c = Ctx::new(
        "FROM base\nENV PATH=/kiln/bin:$PATH\nCOPY rel.txt notes/\n",
        &[("rel.txt", "r\n"), ("trigger.txt", "t\n")],
    );
    let ctx = format!("base=oci-layout://{}:v2", layout.display());
    let img = build_local(&c, &["--build-context", &ctx]);
    let cfg = &img.config["config"];
    let env = cfg["Env"].as_array().expect("Env");
    assert!(
        env.iter().any(|v| v == "PATH=/kiln/bin:/opt/bin:/usr/bin"),
        "{env:?}"
    );
    assert!(
        cfg.get("OnBuild").is_none(),
        "triggers are not inherited: {cfg}"
    );
    let mut paths = Vec::new();
    for l in &img.layers {
        paths.extend(
            listing(l)
                .into_iter()
                .map(|l| l.split('\t').next().unwrap_or("").to_string()),
        );
    }
    assert!(
        paths.iter().any(|p| p == "srv/app/from-trigger.txt"),
        "{paths:?}"
    );
    assert!(
        paths.iter().any(|p| p == "srv/app/notes/rel.txt"),
        "{paths:?}"
    );
}

/// A `.tar.gz` with zeros after its gzip stream (some tools pad archives
/// to a block) extracts as gzip and GNU tar take it: what follows the
/// archive is not part of it.
#[test]
fn add_of_an_archive_padded_after_its_gzip_stream() {
    let c = Ctx::new("FROM scratch\nADD padded.tar.gz /x/\n", &[]);
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "in.txt", &b"in\n"[..])
        .expect("append");
    let raw = tar.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &raw).expect("gzip");
    let mut bytes = gz.finish().expect("gzip");
    bytes.extend_from_slice(&[0u8; 4096]);
    std::fs::write(c.ctx().join("padded.tar.gz"), bytes).expect("write");
    let img = c.build_oci(&[]);
    let files = crate::image::tar_files(img.layers.last().expect("layer"));
    assert_eq!(files["x/in.txt"], b"in\n");
}
