//! docker's command line, unchanged, with kiln in docker buildx's place:
//! Kamal's exact build command, and the flags CI pipelines pass.

use crate::image::{read_oci, stderr, Ctx};
use crate::registry::Registry;
use crate::run::busybox;
use std::process::Command;

/// A busybox context for an app: `Dockerfile.production` takes a build
/// arg and a secret, as a Kamal app's does.
fn kamal_app() -> Ctx {
    let c = busybox("", &[]);
    std::fs::write(
        c.ctx().join("Dockerfile.production"),
        "FROM scratch\nCOPY bin /bin\nENV PATH=/bin\nARG RUBY_VERSION\n\
         RUN --mount=type=secret,id=GITHUB_TOKEN test \"$(busybox cat /run/secrets/GITHUB_TOKEN)\" = s3cret && echo $RUBY_VERSION > /ruby\n",
    )
    .expect("Dockerfile.production");
    c
}

/// The image at `reference`, copied out of the registry with skopeo.
fn pulled(c: &Ctx, reference: &str) -> crate::image::ReadImage {
    let out = c.path("pulled.tar");
    let _ = std::fs::remove_file(&out);
    let o = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .arg(format!("oci-archive:{}", out.display()))
        .output()
        .expect("skopeo");
    assert!(o.status.success(), "skopeo: {}", stderr(&o));
    read_oci(&std::fs::read(&out).expect("archive"))
}

/// Kamal 2.11's command line (lib/kamal/commands/builder/base.rb), as its
/// shell hands it to `docker buildx build`, then Kamal 1.x's and early
/// 2.x's, which say `--push`, and the multi-arch form (an index of two
/// platforms): each works with `kiln build` in its place,
/// the secret read from the environment as buildx reads it.
#[test]
fn kamal_build_command_lines_work_unchanged() {
    let reg = Registry::start();
    let c = kamal_app();
    let image = format!("{}/app", reg.addr);
    let (v, latest) = (format!("{image}:abc123"), format!("{image}:latest"));
    for (i, lead) in [
        vec![
            "--output=type=registry",
            "--platform",
            "linux/amd64",
            "--builder",
            "kamal-local-docker-container",
        ],
        vec![
            "--push",
            "--platform",
            "linux/amd64",
            "--builder",
            "kamal-app-multiarch",
        ],
        // `arch: [amd64, arm64]` in deploy.yml.
        vec![
            "--output=type=registry",
            "--platform",
            "linux/amd64,linux/arm64",
            "--builder",
            "kamal-app-multiarch",
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let mut args = vec!["build"];
        args.extend(lead);
        args.extend([
            "-t",
            &v,
            "-t",
            &latest,
            "--label",
            "service=app",
            "--build-arg",
            "RUBY_VERSION=3.3.0",
            "--secret",
            "id=GITHUB_TOKEN",
            "--file",
            "Dockerfile.production",
            ".",
        ]);
        let o = Command::new(crate::util::kiln_bin())
            .args(&args)
            .current_dir(c.ctx())
            .env("KILN_CACHE_DIR", c.path(&format!("store-{i}")))
            .env("GITHUB_TOKEN", "s3cret")
            .output()
            .expect("kiln");
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        for r in [&v, &latest] {
            let img = pulled(&c, r);
            assert_eq!(img.config["config"]["Labels"]["service"], "app", "{r}");
            let files = crate::image::tar_files(img.layers.last().expect("layer"));
            assert_eq!(String::from_utf8_lossy(&files["ruby"]), "3.3.0\n");
            let raw = Command::new("skopeo")
                .args(["inspect", "--raw", "--tls-verify=false"])
                .arg(format!("docker://{r}"))
                .output()
                .expect("skopeo");
            let raw: serde_json::Value = serde_json::from_slice(&raw.stdout).expect("json");
            let platforms = raw["manifests"].as_array().map_or(0, Vec::len);
            assert_eq!(platforms, if i == 2 { 2 } else { 0 }, "{r}: {raw}");
        }
    }
}

/// --add-host, --shm-size and --ulimit reach RUN; --annotation the
/// manifest (and manifest-descriptor: the descriptor in index.json);
/// --allow network.host is accepted, security.insecure refused;
/// attestation flags warn; unknown cache types warn and are ignored.
#[test]
fn execution_and_output_flags() {
    let c = busybox(
        "RUN busybox grep db.internal /etc/hosts > /hosts && busybox df -k /dev/shm | busybox tail -1 | busybox awk '{print $2}' > /shm && ulimit -n > /nofile\n",
        &[],
    );
    let o = c.kiln(&[
        "--add-host",
        "db.internal:10.1.2.3",
        "--shm-size",
        "128m",
        "--ulimit",
        "nofile=1234:2048",
        "--annotation",
        "org.opencontainers.image.source=https://example.com/app",
        // docker/metadata-action's other level for one image.
        "--annotation",
        "manifest-descriptor:org.opencontainers.image.version=1.4",
        "--allow",
        "network.host",
        "--provenance=false",
        "--cache-from",
        "type=gha",
        "-o",
        &format!("type=oci,dest={}", c.path("o.tar").display()),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("type=gha ignored"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("attestations"), "{}", stderr(&o));
    let img = read_oci(&std::fs::read(c.path("o.tar")).expect("o.tar"));
    assert_eq!(
        img.manifest["annotations"]["org.opencontainers.image.source"],
        "https://example.com/app"
    );
    let desc = &img.index["manifests"][0]["annotations"];
    assert_eq!(desc["org.opencontainers.image.version"], "1.4", "{desc}");
    assert!(img.manifest["annotations"]["org.opencontainers.image.version"].is_null());
    let files = crate::image::tar_files(img.layers.last().expect("layer"));
    assert_eq!(
        String::from_utf8_lossy(&files["hosts"]),
        "10.1.2.3\tdb.internal\n"
    );
    assert_eq!(String::from_utf8_lossy(&files["shm"]), "131072\n");
    assert_eq!(String::from_utf8_lossy(&files["nofile"]), "1234\n");
    let o = c.kiln(&["--allow", "security.insecure"]);
    assert_eq!(o.status.code(), Some(2));
    let o = c.kiln(&["-q", "--sbom=true"]);
    assert!(
        stderr(&o).contains("kiln writes no attestations"),
        "{}",
        stderr(&o)
    );
    let o = c.kiln(&["--ulimit", "bogus=1"]);
    assert_eq!(o.status.code(), Some(2));
}

/// --cache-to type=local writes the entries a build used; --cache-from
/// in a fresh store makes the same build all hits (a CI job restoring a
/// saved cache directory).
#[test]
fn local_cache_export_and_import() {
    let c = busybox("COPY bin /tools\nRUN echo made > /made\n", &[]);
    let dir = c.path("ci-cache");
    let dest = format!("type=local,dest={}", dir.display());
    let o = c.kiln(&["--cache-to", &dest]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.join("kiln-cache.json").is_file());
    let fresh = Command::new(crate::util::kiln_bin())
        .args(["build", "--cache-dir"])
        .arg(c.path("other-store"))
        .arg("--cache-from")
        .arg(format!("type=local,src={}", dir.display()))
        .arg(c.ctx())
        .output()
        .expect("kiln");
    assert!(fresh.status.success(), "{}", stderr(&fresh));
    let e = stderr(&fresh);
    assert!(e.contains("imported 3 cache entries"), "{e}");
    assert!(e.contains("(3 steps cached, 0 ran)"), "{e}");
    // A cache whose entries lie about their layers' diffIDs is refused
    // (the image would name layers it does not have), and the build runs
    // its steps instead.
    let manifest = dir.join("kiln-cache.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).expect("manifest")).expect("json");
    for (_, entry) in m["entries"].as_object_mut().expect("entries").iter_mut() {
        entry["diff_id"] = format!("sha256:{}", "ab".repeat(32)).into();
    }
    std::fs::write(&manifest, serde_json::to_vec(&m).expect("json")).expect("write");
    let lied = Command::new(crate::util::kiln_bin())
        .args(["build", "--cache-dir"])
        .arg(c.path("third-store"))
        .arg("--cache-from")
        .arg(format!("type=local,src={}", dir.display()))
        .arg(c.ctx())
        .output()
        .expect("kiln");
    let e = stderr(&lied);
    assert!(lied.status.success(), "{e}");
    assert!(
        e.contains("not the diffID") && e.contains("the cache is corrupt"),
        "{e}"
    );
    assert!(e.contains("(0 steps cached, 3 ran)"), "{e}");
}

/// --load puts the image into the running Docker daemon.
#[test]
fn load_into_docker() {
    let d = crate::consumers::Dockerd::start();
    let c = busybox("RUN echo loaded > /l\n", &[]);
    let o = c.kiln_env(
        &["--load", "-t", "kiln-load-test:1"],
        &[("DOCKER_HOST", &d.host())],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("loaded into docker"), "{}", stderr(&o));
    let out = d.run(&[
        "--network=host",
        "kiln-load-test:1",
        "/bin/busybox",
        "cat",
        "/l",
    ]);
    assert_eq!(out, "loaded\n");
}

/// `kiln inspect` reads an OCI archive, a docker archive and a registry
/// image; `kiln images` lists what was built with -t and what was pulled.
#[test]
fn inspect_and_images() {
    let reg = Registry::start();
    let c = busybox("LABEL team=web\nRUN echo x > /x\n", &[]);
    let tag = format!("{}/web:2", reg.addr);
    let o = c.kiln(&[
        "-t",
        &tag,
        "--push",
        "-o",
        &format!("type=oci,dest={}", c.path("o.tar").display()),
        "-o",
        &format!("type=docker,dest={}", c.path("d.tar").display()),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = |args: &[&str]| -> serde_json::Value {
        let o = Command::new(crate::util::kiln_bin())
            .args(args)
            .arg("--cache-dir")
            .arg(c.path("store"))
            .output()
            .expect("kiln");
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        serde_json::from_slice(&o.stdout).expect("json")
    };
    let oci = run(&["inspect", &c.path("o.tar").to_string_lossy()]);
    assert_eq!(oci["config"]["Labels"]["team"], "web");
    assert_eq!(oci["layers"].as_array().map(Vec::len), Some(2));
    let docker = run(&["inspect", &c.path("d.tar").to_string_lossy()]);
    assert_eq!(docker["config"]["Labels"]["team"], "web");
    let remote = run(&["inspect", &tag]);
    assert_eq!(remote["digest"], oci["digest"]);
    assert_eq!(remote["layers"], oci["layers"]);
    let o = Command::new(crate::util::kiln_bin())
        .args(["images", "--cache-dir"])
        .arg(c.path("store"))
        .output()
        .expect("kiln");
    let list = String::from_utf8_lossy(&o.stdout);
    assert!(
        list.lines()
            .any(|l| l.starts_with(&tag) && l.contains("built")),
        "{list}"
    );
}
