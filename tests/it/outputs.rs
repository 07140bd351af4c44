//! `kiln build` outputs: `-o type=local|tar|oci|docker`, their attributes,
//! layer compression, several outputs at once, `--iidfile`,
//! `--metadata-file`, `-t` names and `--label`, each read back and checked.

use crate::image::{entry, listing, read_oci, stderr, tar_files, Ctx, ReadImage};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Output;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const OCI_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// A filesystem with every kind of thing an exporter must keep: files
/// with different modes, a file owned by someone else, a symlink and an
/// empty directory.
const TREE: &str = "FROM scratch
COPY tree/ /t/
COPY --chmod=0755 run.sh /bin/run.sh
COPY --chown=1000:1000 owned.txt /home/owned.txt
";

fn tree_ctx() -> Ctx {
    let c = Ctx::new(
        TREE,
        &[
            ("tree/a.txt", "alpha\n"),
            ("tree/exec.sh", "#!/bin/sh\necho exec\n"),
            ("tree/sub/b.txt", "bravo\n"),
            ("run.sh", "#!/bin/sh\necho run\n"),
            ("owned.txt", "mine\n"),
        ],
    );
    chmod(&c.ctx().join("tree/a.txt"), 0o644);
    chmod(&c.ctx().join("tree/exec.sh"), 0o750);
    chmod(&c.ctx().join("run.sh"), 0o600);
    std::os::unix::fs::symlink("a.txt", c.ctx().join("tree/link")).expect("symlink tree/link");
    std::fs::create_dir(c.ctx().join("tree/empty")).expect("mkdir tree/empty");
    c
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "kiln build failed ({:?}):\n{}",
        o.status.code(),
        stderr(o)
    );
}

/// One line per path under `dir` (sorted): type, mode, owner, and the
/// content or link target.
fn describe(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let e = e.expect("walking the output directory");
        let rel = e
            .path()
            .strip_prefix(dir)
            .expect("entry under the output directory")
            .display()
            .to_string();
        let m = e.path().symlink_metadata().expect("lstat");
        let what = if m.file_type().is_symlink() {
            format!(
                "symlink -> {}",
                std::fs::read_link(e.path()).expect("readlink").display()
            )
        } else if m.is_dir() {
            "dir".to_string()
        } else {
            format!(
                "file {:?}",
                std::fs::read_to_string(e.path()).expect("read output file")
            )
        };
        out.push(format!(
            "{rel} {what} {:04o} {}:{}",
            m.mode() & 0o7777,
            m.uid(),
            m.gid()
        ));
    }
    out
}

fn media_types(img: &ReadImage) -> Vec<String> {
    img.manifest["layers"]
        .as_array()
        .expect("manifest layers")
        .iter()
        .map(|l| {
            l["mediaType"]
                .as_str()
                .expect("layer mediaType")
                .to_string()
        })
        .collect()
}

fn read_json(p: &Path) -> Value {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()))
}

/// `-o type=local,dest=DIR` writes the final filesystem: contents, modes,
/// root (or --chown) owners, symlinks and empty directories.
#[test]
fn local_output_writes_the_filesystem() {
    let c = tree_ctx();
    let dir = c.path("local");
    let spec = format!("type=local,dest={}", dir.display());
    ok(&c.kiln(&["-o", &spec]));
    let got = describe(&dir);
    let want = [
        "bin dir 0755 0:0",
        "bin/run.sh file \"#!/bin/sh\\necho run\\n\" 0755 0:0",
        // Parents COPY creates belong to the --chown owner, as in BuildKit
        // (fixtures/build/copy-parents-chown).
        "home dir 0755 1000:1000",
        "home/owned.txt file \"mine\\n\" 0644 1000:1000",
        "t dir 0755 0:0",
        "t/a.txt file \"alpha\\n\" 0644 0:0",
        "t/empty dir 0755 0:0",
        "t/exec.sh file \"#!/bin/sh\\necho exec\\n\" 0750 0:0",
        "t/link symlink -> a.txt 0777 0:0",
        "t/sub dir 0755 0:0",
        "t/sub/b.txt file \"bravo\\n\" 0644 0:0",
    ];
    assert_eq!(got, want, "the local output differs");
}

/// `-o DIR` (a bare path) is `type=local,dest=DIR`.
#[test]
fn bare_output_path_is_a_local_output() {
    let c = tree_ctx();
    let explicit = c.path("explicit");
    let spec = format!("type=local,dest={}", explicit.display());
    ok(&c.kiln(&["-o", &spec]));
    let bare = c.path("bare");
    ok(&c.kiln(&["-o", &bare.to_string_lossy()]));
    let want = describe(&explicit);
    assert!(
        want.iter().any(|l| l.starts_with("t/a.txt file")),
        "{want:?}"
    );
    assert_eq!(describe(&bare), want);
}

/// `-o type=tar,dest=FILE` writes the filesystem as a tar, with modes,
/// owners, symlinks and empty directories.
#[test]
fn tar_output_writes_the_filesystem_as_a_tar() {
    let c = tree_ctx();
    let out = c.path("fs.tar");
    let spec = format!("type=tar,dest={}", out.display());
    ok(&c.kiln(&["-o", &spec]));
    let lines = listing(&std::fs::read(&out).expect("reading fs.tar"));
    let a = entry(&lines, "t/a.txt");
    assert_eq!(a[1..6], ["file", "0644", "0", "0", "6"], "{a:?}");
    let exec = entry(&lines, "t/exec.sh");
    assert_eq!(exec[1..5], ["file", "0750", "0", "0"], "{exec:?}");
    let link = entry(&lines, "t/link");
    assert_eq!((link[1], link[7]), ("symlink", "a.txt"), "{link:?}");
    let empty = entry(&lines, "t/empty/");
    assert_eq!(empty[1], "dir", "{empty:?}");
    let owned = entry(&lines, "home/owned.txt");
    assert_eq!(owned[1..5], ["file", "0644", "1000", "1000"], "{owned:?}");
    let run = entry(&lines, "bin/run.sh");
    assert_eq!(run[1..5], ["file", "0755", "0", "0"], "{run:?}");
    let files = tar_files(&std::fs::read(&out).expect("reading fs.tar"));
    assert_eq!(files["t/sub/b.txt"], b"bravo\n");
}

/// `dest=-` writes the tar to stdout, the same bytes as to a file.
#[test]
fn tar_output_to_stdout() {
    let c = tree_ctx();
    let sde = [("SOURCE_DATE_EPOCH", "1700000000")];
    let o = c.kiln_env(&["-o", "type=tar,dest=-"], &sde);
    ok(&o);
    let files = tar_files(&o.stdout);
    assert_eq!(
        files.get("t/a.txt").map(Vec::as_slice),
        Some(&b"alpha\n"[..]),
        "stdout is not the filesystem tar: {:?}",
        files.keys().collect::<Vec<_>>()
    );
    let out = c.path("fs.tar");
    let spec = format!("type=tar,dest={}", out.display());
    ok(&c.kiln_env(&["-o", &spec], &sde));
    let file = std::fs::read(&out).expect("reading fs.tar");
    assert!(file == o.stdout, "the tar on stdout differs from dest=FILE");
}

/// With SOURCE_DATE_EPOCH two builds of copies of a context (with
/// different file times) give byte-identical filesystem tars.
#[test]
fn tar_output_is_reproducible() {
    let build = |touch: Option<&str>| {
        let c = tree_ctx();
        if let Some(t) = touch {
            for f in ["tree/a.txt", "tree/sub/b.txt", "run.sh", "owned.txt"] {
                let s = std::process::Command::new("touch")
                    .args(["-d", t])
                    .arg(c.ctx().join(f))
                    .status()
                    .expect("running touch");
                assert!(s.success(), "touch {f}");
            }
        }
        let out = c.path("fs.tar");
        let spec = format!("type=tar,dest={}", out.display());
        ok(&c.kiln_env(&["-o", &spec], &[("SOURCE_DATE_EPOCH", "1700000000")]));
        std::fs::read(&out).expect("reading fs.tar")
    };
    let first = build(None);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = build(Some("@1800000000"));
    let lines = listing(&first);
    assert!(
        lines.iter().all(|l| l.ends_with("\t1700000000")),
        "mtimes are not clamped to SOURCE_DATE_EPOCH: {lines:?}"
    );
    assert!(first == second, "the two filesystem tars differ");
}

/// Layers are gzip by default; `--compression zstd` and
/// `--compression uncompressed` change the layer media types, and the
/// blobs match their digests and diffIDs.
#[test]
fn compression_flag_sets_layer_media_types() {
    let c = tree_ctx();
    for (flag, want) in [
        (None, OCI_GZIP),
        (Some("zstd"), OCI_ZSTD),
        (Some("uncompressed"), OCI_TAR),
    ] {
        let args: Vec<&str> = flag.map_or(vec![], |f| vec!["--compression", f]);
        let img = c.build_oci(&args);
        let types = media_types(&img);
        assert_eq!(types, vec![want; 3], "--compression {flag:?}");
        let first = listing(&img.layers[0]);
        entry(&first, "t/a.txt");
    }
    let o = c.kiln(&["--compression", "brotli", "-o", "type=tar,dest=-"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// `-o type=oci,dest=X,compression=zstd` compresses the layers with zstd.
#[test]
fn compression_output_attribute() {
    let c = tree_ctx();
    let out = c.path("z.tar");
    let spec = format!("type=oci,dest={},compression=zstd", out.display());
    ok(&c.kiln(&["-o", &spec]));
    let img = read_oci(&std::fs::read(&out).expect("reading z.tar"));
    assert_eq!(media_types(&img), vec![OCI_ZSTD; 3]);
    let owned = listing(&img.layers[2]);
    let e = entry(&owned, "home/owned.txt");
    assert_eq!(e[3..5], ["1000", "1000"], "{e:?}");
}

/// `oci-mediatypes=false` writes Docker media types into an OCI layout.
#[test]
fn oci_output_with_docker_media_types() {
    let c = tree_ctx();
    // A fixed time: two builds a second apart would have different
    // configs (and their second, all cache hits, runs nothing).
    let sde = "SOURCE_DATE_EPOCH=1700000000";
    let oci = c.build_oci(&["--build-arg", sde]);
    assert_eq!(oci.manifest["mediaType"], OCI_MANIFEST);
    assert_eq!(oci.manifest["config"]["mediaType"], OCI_CONFIG);
    assert_eq!(oci.index["manifests"][0]["mediaType"], OCI_MANIFEST);
    let out = c.path("d.tar");
    let spec = format!("type=oci,dest={},oci-mediatypes=false", out.display());
    ok(&c.kiln(&["-o", &spec, "--build-arg", sde]));
    let img = read_oci(&std::fs::read(&out).expect("reading d.tar"));
    assert_eq!(img.manifest["mediaType"], DOCKER_MANIFEST);
    assert_eq!(img.manifest["config"]["mediaType"], DOCKER_CONFIG);
    assert_eq!(media_types(&img), vec![DOCKER_GZIP; 3]);
    assert_eq!(img.index["manifests"][0]["mediaType"], DOCKER_MANIFEST);
    // The same layers and config, only the manifest differs.
    assert_eq!(img.config_raw, oci.config_raw);
    assert_ne!(img.manifest_digest, oci.manifest_digest);
}

/// `type=docker` uses Docker media types and writes `manifest.json` with
/// the `-t` names in Docker's familiar form.
#[test]
fn docker_output_has_manifest_json_and_repo_tags() {
    let c = tree_ctx();
    let out = c.path("docker.tar");
    let spec = format!("type=docker,dest={}", out.display());
    ok(&c.kiln(&[
        "-t",
        "app",
        "-t",
        "me/app:2",
        "-t",
        "ghcr.io/o/app:1.4",
        "-t",
        "docker.io/library/other:3",
        "-o",
        &spec,
    ]));
    let bytes = std::fs::read(&out).expect("reading docker.tar");
    let img = read_oci(&bytes);
    assert_eq!(img.manifest["mediaType"], DOCKER_MANIFEST);
    assert_eq!(img.manifest["config"]["mediaType"], DOCKER_CONFIG);
    assert_eq!(media_types(&img), vec![DOCKER_GZIP; 3]);
    let files = tar_files(&bytes);
    let m: Value = serde_json::from_slice(&files["manifest.json"]).expect("manifest.json is JSON");
    assert_eq!(
        m[0]["RepoTags"],
        json!(["app:latest", "me/app:2", "ghcr.io/o/app:1.4", "other:3"])
    );
    let config = format!(
        "blobs/sha256/{}",
        img.manifest["config"]["digest"]
            .as_str()
            .expect("config digest")
            .trim_start_matches("sha256:")
    );
    assert_eq!(m[0]["Config"], config.as_str());
    let layers: Vec<String> = img.manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            let d = l["digest"].as_str().expect("layer digest");
            format!("blobs/sha256/{}", d.trim_start_matches("sha256:"))
        })
        .collect();
    assert_eq!(m[0]["Layers"], json!(layers));
    for l in &layers {
        assert!(files.contains_key(l), "{l} missing from the archive");
    }
}

/// Several `-o` in one build are all written.
#[test]
fn several_outputs_are_all_written() {
    let c = tree_ctx();
    let (oci, docker, fs, dir) = (
        c.path("a.tar"),
        c.path("d.tar"),
        c.path("fs.tar"),
        c.path("dir"),
    );
    let specs = [
        format!("type=oci,dest={}", oci.display()),
        format!("type=docker,dest={}", docker.display()),
        format!("type=tar,dest={}", fs.display()),
        format!("type=local,dest={}", dir.display()),
    ];
    let mut args = Vec::new();
    for s in &specs {
        args.extend(["-o", s.as_str()]);
    }
    ok(&c.kiln(&args));
    let a = read_oci(&std::fs::read(&oci).expect("reading a.tar"));
    assert_eq!(a.manifest["mediaType"], OCI_MANIFEST);
    let d = read_oci(&std::fs::read(&docker).expect("reading d.tar"));
    assert_eq!(d.manifest["mediaType"], DOCKER_MANIFEST);
    assert_eq!(a.config_raw, d.config_raw, "one image, two formats");
    let lines = listing(&std::fs::read(&fs).expect("reading fs.tar"));
    entry(&lines, "t/sub/b.txt");
    assert_eq!(
        std::fs::read_to_string(dir.join("t/sub/b.txt")).expect("local output file"),
        "bravo\n"
    );
}

/// Unknown output attributes, unknown types and `type=registry` are usage
/// errors (exit code 2) that say what is wrong, and nothing is written.
#[test]
fn bad_outputs_are_usage_errors() {
    let c = tree_ctx();
    let out = c.path("x.tar");
    let cases = [
        (
            format!("type=oci,dest={},bogus=1", out.display()),
            vec!["unknown attribute", "bogus"],
        ),
        (
            format!("type=zip,dest={}", out.display()),
            vec!["zip", "not one of"],
        ),
        (
            "type=registry".to_string(),
            vec!["registry", "--push", "-t"],
        ),
        (
            "type=image,name=example.com/app:1,colour=blue".to_string(),
            vec!["colour"],
        ),
        (
            format!("type=oci,dest={},oci-mediatypes=maybe", out.display()),
            vec!["oci-mediatypes"],
        ),
    ];
    for (spec, words) in cases {
        let o = c.kiln(&["-o", &spec]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "-o {spec}: {e}");
        for w in words {
            assert!(e.contains(w), "-o {spec}: the message lacks {w:?}: {e}");
        }
        assert!(!out.exists(), "-o {spec} wrote {}", out.display());
    }
}

/// `--metadata-file` records the manifest digest of the image written
/// (`containerimage.digest`), its config digest and the normalized names.
#[test]
fn metadata_file_records_the_digests() {
    let c = tree_ctx();
    let meta = c.path("meta.json");
    let img = c.build_oci(&["-t", "app:1", "--metadata-file", &meta.to_string_lossy()]);
    let m = read_json(&meta);
    assert_eq!(m["containerimage.digest"], img.manifest_digest.as_str());
    assert_eq!(
        m["containerimage.config.digest"],
        img.manifest["config"]["digest"]
    );
    assert_eq!(m["image.name"], "docker.io/library/app:1");
}

/// `--iidfile` holds the image ID, which buildx defines as the digest of
/// the image config (`getImageID` prefers `containerimage.config.digest`),
/// for an OCI output as for a docker one.
#[test]
fn iidfile_holds_the_image_id() {
    let c = tree_ctx();
    let iid = c.path("iid");
    let img = c.build_oci(&["--iidfile", &iid.to_string_lossy()]);
    let id = std::fs::read_to_string(&iid).expect("reading the iidfile");
    assert!(
        id.starts_with("sha256:") && id.len() == 71,
        "not a digest: {id:?}"
    );
    let config = img.manifest["config"]["digest"]
        .as_str()
        .expect("config digest");
    assert_eq!(
        id, config,
        "--iidfile with -o type=oci holds {id}, the manifest digest is {}",
        img.manifest_digest
    );
    let out = c.path("docker.tar");
    let spec = format!("type=docker,dest={}", out.display());
    ok(&c.kiln(&["-o", &spec, "--iidfile", &iid.to_string_lossy()]));
    let d = read_oci(&std::fs::read(&out).expect("reading docker.tar"));
    let id = std::fs::read_to_string(&iid).expect("reading the iidfile");
    assert_eq!(id, d.manifest["config"]["digest"].as_str().expect("digest"));
}

/// `-t` names the image in the OCI index: the tag in
/// `org.opencontainers.image.ref.name`, the normalized full name in
/// `io.containerd.image.name`.
#[test]
fn tag_sets_oci_index_annotations() {
    let c = tree_ctx();
    for (tag, full, short) in [
        ("app", "docker.io/library/app:latest", "latest"),
        ("me/app:2", "docker.io/me/app:2", "2"),
        (
            "registry.example.com:5000/team/app:1.4",
            "registry.example.com:5000/team/app:1.4",
            "1.4",
        ),
    ] {
        let img = c.build_oci(&["-t", tag]);
        let ann = &img.index["manifests"][0]["annotations"];
        assert_eq!(ann["io.containerd.image.name"], full, "-t {tag}");
        assert_eq!(ann["org.opencontainers.image.ref.name"], short, "-t {tag}");
        assert_eq!(
            img.index["manifests"][0]["digest"],
            img.manifest_digest.as_str()
        );
    }
    // Without -t the descriptor has no name.
    let img = c.build_oci(&[]);
    assert!(
        img.index["manifests"][0]["annotations"]["io.containerd.image.name"].is_null(),
        "{}",
        img.index
    );
}

/// `--label k=v` adds labels to the image config, over the Dockerfile's.
#[test]
fn label_flag_adds_config_labels() {
    let c = Ctx::new(
        "FROM scratch\nLABEL a=from-dockerfile b=kept\nCOPY f /f\n",
        &[("f", "x")],
    );
    let img = c.build_oci(&[
        "--label",
        "a=from-flag",
        "--label",
        "org.example.c=three words",
    ]);
    let labels: BTreeMap<String, String> =
        serde_json::from_value(img.config["config"]["Labels"].clone()).expect("labels map");
    let want: BTreeMap<String, String> = [
        ("a", "from-flag"),
        ("b", "kept"),
        ("org.example.c", "three words"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(labels, want);
}

/// `-o -` is a filesystem tarball on stdout (buildx), and `-q` prints the
/// image ID (the config digest) on stdout when stdout is free.
#[test]
fn dash_output_and_quiet_image_id() {
    let c = Ctx::new("FROM scratch\nCOPY a /a\n", &[("a", "a\n")]);
    let o = c.kiln(&["-q", "-o", "-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let files = tar_files(&o.stdout);
    assert_eq!(files.get("a").map(Vec::as_slice), Some(&b"a\n"[..]));
    let out = c.path("x.tar");
    let spec = format!("type=oci,dest={}", out.display());
    let o = c.kiln(&["-q", "-o", &spec]);
    assert!(o.status.success(), "{}", stderr(&o));
    let img = read_oci(&std::fs::read(&out).expect("x.tar"));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(Some(id.as_str()), img.manifest["config"]["digest"].as_str());
}

/// Bad names and times are usage errors before anything is built: names
/// outside the distribution grammar, a digest in a tag, an epoch beyond
/// year 9999.
#[test]
fn bad_names_and_epochs_are_usage_errors() {
    let c = Ctx::new("FROM scratch\nCOPY a /a\n", &[("a", "a\n")]);
    let digest = format!("app@sha256:{}", "0".repeat(64));
    for args in [
        vec!["-t", "a..b"],
        vec!["-t", "a.com:port/x"],
        vec!["-t", digest.as_str()],
        vec!["-o", "type=docker,dest=x.tar,name=Bad Name"],
        vec!["--build-arg", "SOURCE_DATE_EPOCH=253402300800"],
        vec!["--build-arg", "SOURCE_DATE_EPOCH=-1"],
    ] {
        let o = c.kiln(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

/// SIGTERM in the middle of a build removes the work directory and the
/// half-written output, and exits with 128 + 15.
#[test]
fn interrupted_build_leaves_nothing_behind() {
    let c = Ctx::new("FROM scratch\nCOPY big /big\n", &[]);
    let made = std::process::Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=150", "status=none"])
        .arg(format!("of={}", c.ctx().join("big").display()))
        .status()
        .expect("dd");
    assert!(made.success());
    let out_dir = c.path("out");
    std::fs::create_dir(&out_dir).expect("mkdir");
    let mut child = std::process::Command::new(crate::util::kiln_bin())
        .arg("build")
        .arg("--cache-dir")
        .arg(c.path("store"))
        .arg("-o")
        .arg(format!("type=oci,dest={}", out_dir.join("x.tar").display()))
        .arg(c.ctx())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kiln");
    // Wait until the build has made its work directory, then stop it.
    let tmp = c.path("store/tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_dir(&tmp).map_or(true, |d| d.count() == 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the build never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.wait().expect("wait");
    assert_eq!(
        status.code(),
        Some(143),
        "the build finished before the signal"
    );
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .expect("tmp")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        left.iter()
            .all(|n| n.to_string_lossy().starts_with("blob-")),
        "{left:?}"
    );
    let partial: Vec<_> = std::fs::read_dir(&out_dir)
        .expect("out")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(partial.is_empty(), "{partial:?}");
    // A blob temporary of the killed build is swept by the next build.
    let o = c.kiln(&[
        "-o",
        &format!("type=oci,dest={}", out_dir.join("y.tar").display()),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .expect("tmp")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
