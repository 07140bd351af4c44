//! `kiln build` end to end, for Dockerfiles without RUN: the image it
//! writes is read back and checked, file by file and field by field.

use crate::image::{listing, read_oci, stderr, Ctx};
use serde_json::json;

const META: &str = r#"FROM scratch
LABEL org.example.a=1 b="two words"
ENV A=1 B="x y"
COPY hello.txt /app/
COPY dir/ /data/
WORKDIR /app
USER 1000:1000
EXPOSE 80 53/udp
VOLUME ["/var/lib/app"]
STOPSIGNAL SIGINT
HEALTHCHECK --interval=30s --timeout=5s --retries=4 CMD ["/bin/true"]
SHELL ["/bin/ash", "-c"]
ONBUILD COPY . /src
ENTRYPOINT ["/bin/app"]
CMD ["--serve"]
"#;

fn meta_ctx() -> Ctx {
    Ctx::new(
        META,
        &[
            ("hello.txt", "hello\n"),
            ("dir/a.txt", "a\n"),
            ("dir/sub/b.txt", "b\n"),
        ],
    )
}

/// Every metadata instruction lands in the config, with Docker's field
/// names and the extension fields oci-spec would drop.
#[test]
fn metadata_instructions_fill_the_config() {
    let c = meta_ctx();
    let img = c.build_oci(&["--build-arg", "SOURCE_DATE_EPOCH=1700000000"]);
    let cfg = &img.config["config"];
    assert_eq!(
        cfg["Labels"],
        json!({"b": "two words", "org.example.a": "1"})
    );
    assert_eq!(
        cfg["Env"],
        json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "A=1",
            "B=x y"
        ])
    );
    assert_eq!(cfg["WorkingDir"], "/app");
    assert_eq!(cfg["User"], "1000:1000");
    assert_eq!(cfg["ExposedPorts"], json!({"53/udp": {}, "80/tcp": {}}));
    assert_eq!(cfg["Volumes"], json!({"/var/lib/app": {}}));
    assert_eq!(cfg["StopSignal"], "SIGINT");
    assert_eq!(
        cfg["Healthcheck"],
        json!({"Test": ["CMD", "/bin/true"], "Interval": 30_000_000_000u64, "Timeout": 5_000_000_000u64, "Retries": 4})
    );
    assert_eq!(cfg["Shell"], json!(["/bin/ash", "-c"]));
    assert_eq!(cfg["OnBuild"], json!(["COPY . /src"]));
    assert_eq!(cfg["Entrypoint"], json!(["/bin/app"]));
    assert_eq!(cfg["Cmd"], json!(["--serve"]));
    assert_eq!(img.config["created"], "2023-11-14T22:13:20Z");
    assert_eq!(img.config["os"], "linux");
    let history = img.config["history"].as_array().expect("history");
    let layers: Vec<bool> = history
        .iter()
        .map(|h| h["empty_layer"].as_bool().unwrap_or(false))
        .collect();
    // COPY, COPY and WORKDIR (which creates /app) make layers.
    assert_eq!(layers.iter().filter(|e| !**e).count(), img.layers.len());
    assert!(history
        .iter()
        .all(|h| h["created"] == "2023-11-14T22:13:20Z"));
}

/// COPY writes the file and its parent directories, owned by root, with
/// the context's mode, and a directory's contents (not the directory).
#[test]
fn copy_layers_hold_the_files_and_their_parents() {
    let c = meta_ctx();
    let img = c.build_oci(&["--build-arg", "SOURCE_DATE_EPOCH=1700000000"]);
    let first = listing(&img.layers[0]);
    let names: Vec<&str> = first
        .iter()
        .map(|l| l.split('\t').next().unwrap_or(""))
        .collect();
    assert_eq!(names, ["app/", "app/hello.txt"]);
    assert!(
        first[1].starts_with("app/hello.txt\tfile\t0644\t0\t0\t6\t"),
        "{}",
        first[1]
    );
    let second = listing(&img.layers[1]);
    let names: Vec<&str> = second
        .iter()
        .map(|l| l.split('\t').next().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        ["data/", "data/a.txt", "data/sub/", "data/sub/b.txt"]
    );
    // mtimes are clamped to SOURCE_DATE_EPOCH.
    assert!(
        second.iter().all(|l| l.ends_with("\t1700000000")),
        "{second:?}"
    );
}

/// Two builds of copies of one context, in different directories, at
/// different times, with different umasks and file mtimes, give the same
/// image digest when SOURCE_DATE_EPOCH is set.
#[test]
fn reproducible_with_source_date_epoch() {
    let a = meta_ctx();
    let b = meta_ctx();
    for (i, name) in ["hello.txt", "dir/a.txt", "dir/sub/b.txt"]
        .iter()
        .enumerate()
    {
        let t = filetime(1_800_000_000 + i as i64);
        set_mtime(&b.ctx().join(name), t);
    }
    let build = |c: &Ctx, umask: &str| {
        let out = c.path("out.tar");
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umask {umask} && exec \"$0\" build --cache-dir \"$1\" -o type=oci,dest=\"$2\" \"$3\"",
            ))
            .arg(crate::util::kiln_bin())
            .arg(c.path("store"))
            .arg(&out)
            .arg(c.ctx())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .expect("kiln");
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read(out).expect("out.tar")
    };
    let first = build(&a, "022");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = build(&b, "077");
    let (ia, ib) = (read_oci(&first), read_oci(&second));
    assert_eq!(ia.manifest_digest, ib.manifest_digest);
    // The whole archive is byte-identical too.
    assert!(first == second, "the OCI archives differ");
}

fn filetime(secs: i64) -> i64 {
    secs
}

fn set_mtime(p: &std::path::Path, secs: i64) {
    let o = std::process::Command::new("touch")
        .arg("-h")
        .arg("-d")
        .arg(format!("@{secs}"))
        .arg(p)
        .status()
        .expect("touch");
    assert!(o.success());
}

/// Without SOURCE_DATE_EPOCH the digest changes with the time (the config
/// records it), so the reproducibility test above can fail.
#[test]
fn without_source_date_epoch_the_time_is_recorded() {
    let c = meta_ctx();
    let img = c.build_oci(&[]);
    let created = img.config["created"].as_str().expect("created");
    assert!(
        created.starts_with("20") && created != "2023-11-14T22:13:20Z",
        "{created}"
    );
}

/// An output that cannot be written is a clear error, and no partial file
/// is left.
#[test]
fn unwritable_output_is_a_clear_error() {
    let c = Ctx::new("FROM scratch\nCOPY a /a\n", &[("a", "x")]);
    let missing = c.path("no/such/dir/out.tar");
    let spec = format!("type=oci,dest={}", missing.display());
    let o = c.kiln(&["-o", &spec]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&missing.display().to_string()),
        "{}",
        stderr(&o)
    );
    // A destination that is a directory: the temporary file is removed.
    std::fs::create_dir(c.path("adir")).expect("mkdir");
    let spec = format!("type=oci,dest={}", c.path("adir").display());
    let o = c.kiln(&["-o", &spec]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let leftovers: Vec<_> = std::fs::read_dir(c.dir.path())
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A failing step reports its Dockerfile line.
#[test]
fn missing_source_reports_the_line() {
    let c = Ctx::new("FROM scratch\nCOPY a /a\nCOPY nope /b\n", &[("a", "x")]);
    let o = c.kiln(&["-o", "type=tar,dest=-"]);
    assert_eq!(o.status.code(), Some(3));
    let e = stderr(&o);
    assert!(e.contains("Dockerfile:3"), "{e}");
    assert!(e.contains("nope: not found in the build context"), "{e}");
}

/// The README's main command builds the demo, and with SOURCE_DATE_EPOCH
/// the digest is the same in two separate stores.
#[test]
fn readme_demo_builds_reproducibly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let demo = crate::util::root().join("testdata/demo");
    let mut digests = Vec::new();
    for i in 0..2 {
        let out = tmp.path().join(format!("demo{i}.tar"));
        let o = std::process::Command::new(crate::util::kiln_bin())
            .args(["build", "-q", "-t", "demo:1.0.0", "--cache-dir"])
            .arg(tmp.path().join(format!("store{i}")))
            .arg("-o")
            .arg(format!("type=oci,dest={}", out.display()))
            .arg(&demo)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .expect("kiln");
        assert!(o.status.success(), "{}", stderr(&o));
        let img = read_oci(&std::fs::read(&out).expect("demo.tar"));
        assert_eq!(img.config["config"]["User"], "101:101");
        assert_eq!(
            img.config["config"]["Labels"]["org.opencontainers.image.version"],
            "1.0.0"
        );
        let files = listing(&img.layers[0]);
        assert!(
            files
                .iter()
                .any(|l| l.starts_with("srv/www/version.txt\tfile\t0644\t101\t101\t")),
            "{files:?}"
        );
        digests.push(img.manifest_digest);
    }
    assert_eq!(digests[0], digests[1]);
}

/// Rootless: as an unprivileged user (uid 65534, via setpriv) kiln builds
/// to the same digest as root does: the demo (owners set by --chown), and
/// a stage that ADDs an archive of files owned by 123:456 and is then
/// copied from. Owners come from layer entries and archive headers, not
/// from what an unprivileged chown(2) could leave on disk.
#[test]
fn rootless_build_matches_root() {
    rootless_matches_root(&crate::util::root().join("testdata/demo"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir(&ctx).expect("mkdir");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch AS a\nADD a.tar /d/\nCOPY --chown=7:8 Dockerfile /g\n\
         FROM scratch\nCOPY --from=a /g /g2\nCOPY --from=a /d /d2\n",
    )
    .expect("Dockerfile");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(3);
    h.set_mode(0o640);
    h.set_uid(123);
    h.set_gid(456);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    b.append_data(&mut h, "owned.txt", &b"abc"[..])
        .expect("tar");
    std::fs::write(ctx.join("a.tar"), b.into_inner().expect("tar")).expect("a.tar");
    rootless_matches_root(&ctx);

    // An OCI-layout base whose files belong to 123:456 and 1000:1000: a
    // stage built on it and a COPY --from of it keep those owners.
    let base = tmp.path().join("base");
    std::fs::create_dir(&base).expect("mkdir");
    std::fs::write(
        base.join("Dockerfile"),
        "FROM scratch\nADD a.tar /opt/\nCOPY --chown=1000:1000 Dockerfile /home/app/Dockerfile\n",
    )
    .expect("Dockerfile");
    std::fs::copy(ctx.join("a.tar"), base.join("a.tar")).expect("a.tar");
    let out = tmp.path().join("base.tar");
    let o = std::process::Command::new(crate::util::kiln_bin())
        .args(["build", "-q", "--cache-dir"])
        .arg(tmp.path().join("base.store"))
        .arg("-o")
        .arg(format!("type=oci,dest={}", out.display()))
        .arg(&base)
        .output()
        .expect("kiln");
    assert!(o.status.success(), "{}", stderr(&o));
    let child = tmp.path().join("child");
    std::fs::create_dir(&child).expect("mkdir");
    let layout = child.join("layout");
    tar::Archive::new(std::fs::File::open(&out).expect("base.tar"))
        .unpack(&layout)
        .expect("unpack");
    std::fs::write(
        child.join("Dockerfile"),
        "FROM base AS mid\nCOPY Dockerfile /opt/new\nCOPY Dockerfile /home/app/again\n\
         FROM scratch\nCOPY --from=base /opt /o\nCOPY --from=0 /home /h\n",
    )
    .expect("Dockerfile");
    let ctx = ["--build-context", "base=oci-layout://layout"];
    rootless_matches_root_with(&child, &ctx);
    // The stage on the base as the target: its type=tar output has the
    // base's owners too.
    rootless_matches_root_with(&child, &[ctx[0], ctx[1], "--target", "mid"]);
}

fn rootless_matches_root(context: &std::path::Path) {
    rootless_matches_root_with(context, &[]);
}

/// Builds `context` as root and as uid 65534 (with `args`, run from the
/// copied context's directory) and compares the results.
fn rootless_matches_root_with(context: &std::path::Path, args: &[&str]) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path().join("w");
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(context)
        .arg(&work)
        .status()
        .expect("cp");
    assert!(status.success());
    let chown = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(tmp.path())
        .status()
        .expect("chown");
    assert!(chown.success());
    let build = |rootless: bool, name: &str| {
        let out = tmp.path().join(name);
        let mut cmd = if rootless {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(crate::util::kiln_bin());
            c
        } else {
            std::process::Command::new(crate::util::kiln_bin())
        };
        let o = cmd
            .args(["build", "-q", "--cache-dir"])
            .arg(tmp.path().join(format!("{name}.store")))
            .args(args)
            .current_dir(&work)
            .arg("-o")
            .arg(format!("type=oci,dest={}", out.display()))
            .arg("-o")
            .arg(format!("type=tar,dest={}.fs", out.display()))
            .arg(&work)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .expect("kiln");
        assert!(o.status.success(), "rootless={rootless}: {}", stderr(&o));
        let fs = std::fs::read(format!("{}.fs", out.display())).expect("fs tar");
        (
            read_oci(&std::fs::read(out).expect("archive")).manifest_digest,
            fs,
        )
    };
    let (nobody, root) = (build(true, "nobody.tar"), build(false, "root.tar"));
    assert_eq!(nobody.0, root.0, "image digests");
    // The filesystem tarball records the layers' owners too.
    assert!(nobody.1 == root.1, "the type=tar outputs differ");
}
