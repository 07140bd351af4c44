//! Pulling from a real registry: Debian's `docker-registry` (the CNCF
//! distribution registry) on a free loopback port, seeded with skopeo from
//! an image kiln built.

use crate::image::{listing, serve_http, stderr, Ctx, Reply};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A registry process, stopped by PID on drop.
pub struct Registry {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with(None)
    }

    /// With `Some((user, password))`, the registry asks for basic auth
    /// (an htpasswd file made with Debian's apache2-utils).
    pub fn start_with(auth: Option<(&str, &str)>) -> Registry {
        Registry::start_config(|dir| match auth {
            Some((user, pass)) => {
                let o = Command::new("htpasswd")
                    .args(["-Bbn", user, pass])
                    .output()
                    .expect("htpasswd (Debian's apache2-utils; scripts/test installs it)");
                assert!(o.status.success());
                let file = dir.join("htpasswd");
                std::fs::write(&file, o.stdout).expect("htpasswd file");
                format!(
                    "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                    file.display()
                )
            }
            None => String::new(),
        })
    }

    /// A registry whose config.yml gets `extra(dir)` appended, where `dir`
    /// is the registry's own temporary directory (for key, certificate or
    /// htpasswd files). The YAML before it ends inside the `http:` section
    /// (`  addr: ...`), so text indented by two spaces adds to `http:`
    /// (`  tls:`), and unindented text adds top-level sections (`auth:`).
    pub fn start_config(extra: impl FnOnce(&std::path::Path) -> String) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let mut yml = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        yml.push_str(&extra(dir.path()));
        std::fs::write(&config, yml).expect("config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect(
                "starting docker-registry (Debian's docker-registry; scripts/test installs it)",
            );
        let r = Registry {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&r.addr).is_ok() {
                return r;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the registry did not start");
    }

    /// Builds a small base image (`/base/base.txt`) with kiln and pushes it
    /// as `repo:tag` with skopeo; returns its context.
    pub fn seed_base(&self, dest: &str, creds: Option<&str>) -> Ctx {
        let b = Ctx::new(
            "FROM scratch\nCOPY base.txt /base/\n",
            &[("base.txt", "base\n")],
        );
        b.build_oci(&["-t", "base:v1"]);
        self.push_archive_as(&b.path("out.tar"), "v1", dest, creds);
        b
    }

    /// Copies an OCI archive into the registry as `repo:tag`, with skopeo.
    pub fn push_archive(&self, archive: &std::path::Path, tag_in_archive: &str, dest: &str) {
        self.push_archive_as(archive, tag_in_archive, dest, None);
    }

    pub fn push_archive_as(
        &self,
        archive: &std::path::Path,
        tag_in_archive: &str,
        dest: &str,
        creds: Option<&str>,
    ) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--dest-tls-verify=false"]);
        if let Some(c) = creds {
            cmd.arg("--dest-creds").arg(c);
        }
        let o = cmd
            .arg(format!(
                "oci-archive:{}:{tag_in_archive}",
                archive.display()
            ))
            .arg(format!("docker://{}/{dest}", self.addr))
            .output()
            .expect("skopeo");
        assert!(o.status.success(), "skopeo copy: {}", stderr(&o));
    }
}

/// The `containerimage.digest` a `--metadata-file` records.
pub fn metadata_digest(meta: &std::path::Path) -> String {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(meta).expect("metadata")).expect("json");
    m["containerimage.digest"]
        .as_str()
        .expect("containerimage.digest")
        .to_string()
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// A base image in a registry: `FROM` pulls it (layers verified and
/// reused as they are), its config shapes the plan (ENV expands, ONBUILD
/// runs), and `--build-context x=docker-image://` and `COPY --from=<image>`
/// read it too.
#[test]
fn from_a_registry_image() {
    let reg = Registry::start();
    let b = Ctx::new(
        "FROM scratch\nCOPY base.txt /base/\nENV PATH=/opt/bin:/usr/bin\nONBUILD COPY trig.txt /trig.txt\n",
        &[("base.txt", "base\n")],
    );
    let base = b.build_oci(&["-t", "base:v1"]);
    reg.push_archive(&b.path("out.tar"), "v1", "team/base:v1");

    let c = Ctx::new(
        &format!(
            "FROM scratch\nCOPY --from={0}/team/base:v1 /base/base.txt /copied.txt\n\
             COPY --from=ctx /base/base.txt /ctx.txt\n",
            reg.addr
        ),
        &[],
    );
    let ctx = format!("ctx=docker-image://{}/team/base:v1", reg.addr);
    let c0 = Ctx::new(
        &format!(
            "FROM {}/team/base:v1\nENV PATH=/kiln/bin:$PATH\nCOPY app.txt /app/\n",
            reg.addr
        ),
        &[("app.txt", "app\n"), ("trig.txt", "t\n")],
    );
    let img = c0.build_oci(&[]);
    let base_layers: Vec<&str> = base.manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter_map(|l| l["digest"].as_str())
        .collect();
    let layers: Vec<&str> = img.manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter_map(|l| l["digest"].as_str())
        .collect();
    assert_eq!(
        layers[..base_layers.len()],
        base_layers[..],
        "the base's layers are reused"
    );
    let env = img.config["config"]["Env"].as_array().expect("Env");
    assert!(
        env.iter().any(|v| v == "PATH=/kiln/bin:/opt/bin:/usr/bin"),
        "{env:?}"
    );
    let all: Vec<String> = img.layers.iter().flat_map(|l| listing(l)).collect();
    assert!(
        all.iter().any(|l| l.starts_with("trig.txt\t")),
        "the ONBUILD trigger ran: {all:?}"
    );

    let img = c.build_oci(&["--build-context", &ctx]);
    let last: Vec<String> = img.layers.iter().flat_map(|l| listing(l)).collect();
    for want in ["copied.txt\t", "ctx.txt\t"] {
        assert!(last.iter().any(|l| l.starts_with(want)), "{want}: {last:?}");
    }
}

/// An image the registry does not have: exit 4, naming the image and the
/// registry's HTTP status, at the FROM line.
#[test]
fn missing_registry_image_is_a_clear_error() {
    let reg = Registry::start();
    let c = Ctx::new(&format!("FROM {}/nope:1\n", reg.addr), &[]);
    let o = c.kiln(&["-o", "type=tar,dest=-"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("Dockerfile:1") && e.contains("404"), "{e}");
}

/// A registry that lies: it serves a layer whose bytes do not match the
/// digest the manifest names, and one whose body is cut short. kiln fails
/// naming the blob, and nothing lands in the store under that digest.
#[test]
fn a_lying_registry_is_refused() {
    use sha2::Digest as _;
    let hex = |b: &[u8]| -> String {
        sha2::Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect()
    };
    let layer_claimed = vec![7u8; 100];
    let layer_sent = vec![8u8; 100];
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", hex(&layer_claimed))]},
    })
    .to_string();
    let manifest = |layer_digest: &str, size: usize| {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": format!("sha256:{}", hex(config.as_bytes())), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": size}],
        })
        .to_string()
    };
    let claimed = format!("sha256:{}", hex(&layer_claimed));
    let liar_manifest = manifest(&claimed, 100);
    let short_manifest = manifest(&claimed, 100);
    const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    const BLOB: &str = "application/octet-stream";
    let config_hex = hex(config.as_bytes());
    let addr = serve_http(move |path| {
        if path.ends_with("/liar/manifests/1") {
            Reply::ok(MANIFEST, liar_manifest.clone().into_bytes())
        } else if path.ends_with("/short/manifests/1") {
            Reply::ok(MANIFEST, short_manifest.clone().into_bytes())
        } else if path.contains("/blobs/") && path.ends_with(&config_hex) {
            Reply::ok(BLOB, config.clone().into_bytes())
        } else if path.starts_with("/v2/liar/blobs/") {
            Reply::ok(BLOB, layer_sent.clone())
        } else if path.starts_with("/v2/short/blobs/") {
            // Declares 100 bytes, sends 10, hangs up.
            Reply {
                declared: 100,
                ..Reply::ok(BLOB, layer_claimed[..10].to_vec())
            }
        } else {
            Reply::status("404 Not Found")
        }
    });
    for (repo, want) in [("liar", "arrived with digest"), ("short", "failed 4 times")] {
        let c = Ctx::new(&format!("FROM {addr}/{repo}:1\n"), &[]);
        let o = c.kiln(&["-o", "type=tar,dest=-"]);
        assert_eq!(o.status.code(), Some(4), "{repo}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains(&claimed) && (e.contains(want) || e.contains("bytes")),
            "{repo}: {e}"
        );
        let stored = c
            .path("store/blobs/sha256")
            .join(claimed.trim_start_matches("sha256:"));
        assert!(
            !stored.exists(),
            "{repo}: a bad blob was stored under its claimed digest"
        );
    }
}

/// A second build reuses what the first pulled, with the registry gone;
/// `--pull` asks the registry again (and so fails without it).
#[test]
fn pulled_images_are_reused_offline() {
    let reg = Registry::start();
    reg.seed_base("base:v1", None);
    let c = Ctx::new(
        &format!("FROM {}/base:v1\nCOPY a /a\n", reg.addr),
        &[("a", "a\n")],
    );
    let sde = ["--build-arg", "SOURCE_DATE_EPOCH=1700000000"];
    let first = c.build_oci(&sde);
    drop(reg);
    let second = c.build_oci(&sde);
    assert_eq!(first.manifest_digest, second.manifest_digest);
    let o = c.kiln(&["--pull", "-o", "type=tar,dest=-"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot reach"), "{}", stderr(&o));
}

/// A registry that asks for basic auth: without credentials kiln says so;
/// with `auths` in `$DOCKER_CONFIG/config.json` it pulls; with a wrong
/// password it says the registry refused them. The password never appears
/// in kiln's output.
#[test]
fn basic_auth_from_docker_config() {
    let reg = Registry::start_with(Some(("alice", "s3cret-pw")));
    reg.seed_base("private/base:v1", Some("alice:s3cret-pw"));
    let c = Ctx::new(&format!("FROM {}/private/base:v1\n", reg.addr), &[]);
    let docker_config = |user_pass: &str| {
        let dir = c.path(&format!("docker-{}", user_pass.len()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(user_pass);
        let cfg = serde_json::json!({"auths": {reg.addr.clone(): {"auth": auth}}});
        std::fs::write(dir.join("config.json"), cfg.to_string()).expect("config.json");
        dir
    };
    let empty = c.path("docker-none");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let o = c.kiln_env(
        &["-o", "type=tar,dest=-"],
        &[("DOCKER_CONFIG", &empty.to_string_lossy())],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("asks for credentials"),
        "{}",
        stderr(&o)
    );

    let good = docker_config("alice:s3cret-pw");
    let o = c.kiln_env(
        &["-o", "type=tar,dest=-"],
        &[("DOCKER_CONFIG", &good.to_string_lossy())],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(crate::image::tar_files(&o.stdout).contains_key("base/base.txt"));

    let bad = docker_config("alice:wrong-password");
    let o = c.kiln_env(
        &["--pull", "-o", "type=tar,dest=-"],
        &[("DOCKER_CONFIG", &bad.to_string_lossy())],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("refused the credentials"), "{e}");
    assert!(
        !e.contains("wrong-password") && !e.contains("s3cret"),
        "a password leaked: {e}"
    );
}

/// `--push` uploads the image under each `-t`; the registry serves it back
/// byte for byte (skopeo reads the same manifest digest), kiln pulls it in
/// a fresh store, and a second push uploads no layer again.
#[test]
fn push_then_pull_back() {
    let reg = Registry::start();
    let c = Ctx::new(
        "FROM scratch\nCOPY a /a\nCOPY b /b\nCMD [\"/a\"]\n",
        &[("a", "a\n"), ("b", "b\n")],
    );
    let t1 = format!("{}/team/app:1.0", reg.addr);
    let t2 = format!("{}/team/app:latest", reg.addr);
    let meta = c.path("meta.json");
    let o = c.kiln_env(
        &[
            "--push",
            "-t",
            &t1,
            "-t",
            &t2,
            "--metadata-file",
            &meta.to_string_lossy(),
        ],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("(2 of 2 layers uploaded, 0 mounted)"),
        "{}",
        stderr(&o)
    );
    let digest = crate::registry::metadata_digest(&meta);
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{t1}"))
        .output()
        .expect("skopeo");
    assert!(raw.status.success(), "{}", stderr(&raw));
    use sha2::Digest as _;
    let got: String = sha2::Sha256::digest(&raw.stdout)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(format!("sha256:{got}"), digest);
    // Pushed again: the layers are there already.
    let o = c.kiln_env(
        &["--push", "-t", &t1],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("(0 of 2 layers uploaded, 0 mounted)"),
        "{}",
        stderr(&o)
    );
    // Pulled back by another build with its own store.
    let d = Ctx::new(&format!("FROM {t2}\nCOPY c /c\n"), &[("c", "c\n")]);
    let img = d.build_oci(&[]);
    assert_eq!(img.layers.len(), 3);
    assert_eq!(img.config["config"]["Cmd"], serde_json::json!(["/a"]));
}

/// Transient failures are retried: a registry that answers 503 to the
/// first manifest request, and drops the first layer download halfway,
/// still gives a build.
#[test]
fn transient_registry_failures_are_retried() {
    use sha2::Digest as _;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let hex = |b: &[u8]| -> String {
        sha2::Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect()
    };
    // A layer with one file, as a plain tar.
    let mut tb = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_cksum();
    tb.append_data(&mut h, "hello.txt", &b"hi\n"[..])
        .expect("tar");
    let layer = tb.into_inner().expect("tar");
    let layer_digest = format!("sha256:{}", hex(&layer));
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest.clone()]},
    })
    .to_string();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", hex(config.as_bytes())), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest.clone(), "size": layer.len()}],
    })
    .to_string();
    let manifest_hits = Arc::new(AtomicUsize::new(0));
    let layer_hits = Arc::new(AtomicUsize::new(0));
    let (mh, lh) = (manifest_hits.clone(), layer_hits.clone());
    let config_hex = hex(config.as_bytes());
    let addr = serve_http(move |path| {
        if path.contains("/manifests/") {
            if mh.fetch_add(1, Ordering::SeqCst) == 0 {
                return Reply::status("503 Service Unavailable");
            }
            Reply::ok(
                "application/vnd.oci.image.manifest.v1+json",
                manifest.clone().into_bytes(),
            )
        } else if path.ends_with(&config_hex) {
            Reply::ok("application/octet-stream", config.clone().into_bytes())
        } else if path.contains("/blobs/") {
            if lh.fetch_add(1, Ordering::SeqCst) == 0 {
                // Declares the whole layer, sends half, hangs up.
                Reply {
                    declared: layer.len(),
                    ..Reply::ok(
                        "application/octet-stream",
                        layer[..layer.len() / 2].to_vec(),
                    )
                }
            } else {
                Reply::ok("application/octet-stream", layer.clone())
            }
        } else {
            Reply::status("404 Not Found")
        }
    });
    let c = Ctx::new(&format!("FROM {addr}/flaky:1\n"), &[]);
    let o = c.kiln(&["-o", "type=tar,dest=-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(crate::image::tar_files(&o.stdout).contains_key("hello.txt"));
    assert!(manifest_hits.load(Ordering::SeqCst) >= 2);
    assert!(layer_hits.load(Ordering::SeqCst) >= 2);
}

/// `kiln push ARCHIVE REF` uploads an OCI archive as it is (the registry
/// serves the archive's manifest digest), and `kiln pull REF` fills a store
/// from which a later build works with the registry gone.
#[test]
fn push_archive_and_pull_subcommands() {
    let reg = Registry::start();
    let c = Ctx::new("FROM scratch\nCOPY a /a\n", &[("a", "a\n")]);
    let img = c.build_oci(&[]);
    let target = format!("{}/sub/cmd:2", reg.addr);
    let o = Command::new(crate::util::kiln_bin())
        .arg("push")
        .arg("--cache-dir")
        .arg(c.path("push-store"))
        .arg(c.path("out.tar"))
        .arg(&target)
        .output()
        .expect("kiln push");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        img.manifest_digest
    );
    let fresh = c.path("pull-store");
    let o = Command::new(crate::util::kiln_bin())
        .arg("pull")
        .arg("--cache-dir")
        .arg(&fresh)
        .arg(&target)
        .output()
        .expect("kiln pull");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        img.manifest_digest
    );
    drop(reg);
    let d = Ctx::new(&format!("FROM {target}\nCOPY b /b\n"), &[("b", "b\n")]);
    let o = Command::new(crate::util::kiln_bin())
        .args(["build", "-q", "--cache-dir"])
        .arg(&fresh)
        .arg("-o")
        .arg("type=tar,dest=-")
        .arg(d.ctx())
        .output()
        .expect("kiln build");
    assert!(
        o.status.success(),
        "offline build from the pulled store: {}",
        stderr(&o)
    );
    let files = crate::image::tar_files(&o.stdout);
    assert!(
        files.contains_key("a") && files.contains_key("b"),
        "{:?}",
        files.keys()
    );
}

/// A layer kiln pulled from one repository is mounted, not uploaded, when
/// the image is pushed to another repository of the same registry.
#[test]
fn push_mounts_layers_from_the_base_repository() {
    let reg = Registry::start();
    reg.seed_base("team/base:v1", None);
    let c = Ctx::new(
        &format!("FROM {}/team/base:v1\nCOPY a /a\n", reg.addr),
        &[("a", "a\n")],
    );
    let o = c.kiln(&["--push", "-t", &format!("{}/team/app:1", reg.addr)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("(1 of 2 layers uploaded, 1 mounted)"),
        "{}",
        stderr(&o)
    );
}

/// A Docker schema2 image (pushed by skopeo with `--format v2s2`) pulls
/// like an OCI one.
#[test]
fn docker_schema2_images_pull() {
    let reg = Registry::start();
    let b = Ctx::new(
        "FROM scratch\nCOPY base.txt /base/\nENV X=1\n",
        &[("base.txt", "base\n")],
    );
    b.build_oci(&["-t", "base:v1"]);
    let o = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--format", "v2s2"])
        .arg(format!("oci-archive:{}:v1", b.path("out.tar").display()))
        .arg(format!("docker://{}/docker/base:v1", reg.addr))
        .output()
        .expect("skopeo");
    assert!(o.status.success(), "{}", stderr(&o));
    let c = Ctx::new(
        &format!("FROM {}/docker/base:v1\nCOPY a /a\n", reg.addr),
        &[("a", "a\n")],
    );
    let img = c.build_oci(&[]);
    assert_eq!(img.layers.len(), 2);
    let env = img.config["config"]["Env"].as_array().expect("Env");
    assert!(env.iter().any(|v| v == "X=1"), "{env:?}");
}

/// A multi-platform index: `--platform` picks the matching image, and a
/// platform the index lacks is an error listing the ones it has.
#[test]
fn multi_platform_index_selects_the_platform() {
    let reg = Registry::start();
    let mut manifests = Vec::new();
    for (arch, file) in [("amd64", "amd.txt"), ("arm64", "arm.txt")] {
        let b = Ctx::new(
            &format!("FROM scratch\nCOPY {file} /{file}\n"),
            &[(file, arch)],
        );
        let img = b.build_oci(&["--platform", &format!("linux/{arch}"), "-t", "x:v1"]);
        assert_eq!(img.config["architecture"], arch);
        reg.push_archive(&b.path("out.tar"), "v1", &format!("multi/base:{arch}"));
        let raw = img.index["manifests"][0].clone();
        manifests.push(serde_json::json!({
            "mediaType": raw["mediaType"], "digest": raw["digest"], "size": raw["size"],
            "platform": {"os": "linux", "architecture": arch},
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    })
    .to_string();
    let put = reqwest::blocking::Client::new()
        .put(format!("http://{}/v2/multi/base/manifests/v1", reg.addr))
        .header("Content-Type", "application/vnd.oci.image.index.v1+json")
        .body(index)
        .send()
        .expect("PUT index");
    assert_eq!(put.status().as_u16(), 201, "{:?}", put.text());
    let c = Ctx::new(&format!("FROM {}/multi/base:v1\n", reg.addr), &[]);
    let o = c.kiln(&["--platform", "linux/arm64", "-o", "type=tar,dest=-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let files = crate::image::tar_files(&o.stdout);
    assert!(
        files.contains_key("arm.txt") && !files.contains_key("amd.txt"),
        "{:?}",
        files.keys()
    );
    let o = c.kiln(&["--platform", "linux/s390x", "-o", "type=tar,dest=-"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("linux/s390x") && e.contains("linux/amd64") && e.contains("linux/arm64"),
        "{e}"
    );
}

/// End to end: a multi-stage image built `FROM` an image in the registry
/// is pushed with `--push`, then `docker pull` and `docker run` it; skopeo
/// agrees on the digest.
#[test]
fn push_then_docker_pull_and_run() {
    let reg = Registry::start();
    let base = Ctx::new(
        "FROM scratch\nCOPY busybox /bin/busybox\nENV PATH=/bin\n",
        &[],
    );
    std::fs::copy("/bin/busybox", base.ctx().join("busybox"))
        .expect("copying /bin/busybox (Debian's busybox-static)");
    let base_ref = format!("{}/e2e/base:1", reg.addr);
    let o = base.kiln(&["--push", "-t", &base_ref]);
    assert!(o.status.success(), "{}", stderr(&o));
    let app = Ctx::new(
        &format!(
            "FROM {base_ref} AS build\nCOPY msg.txt /out/msg.txt\n\
             FROM {base_ref}\nCOPY --from=build /out/msg.txt /app/msg.txt\n\
             CMD [\"/bin/busybox\", \"cat\", \"/app/msg.txt\"]\n"
        ),
        &[("msg.txt", "pushed by kiln\n")],
    );
    let app_ref = format!("{}/e2e/app:1", reg.addr);
    let meta = app.path("meta.json");
    let o = app.kiln(&[
        "--push",
        "-t",
        &app_ref,
        "--metadata-file",
        &meta.to_string_lossy(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("(1 of 2 layers uploaded, 1 mounted)"),
        "{}",
        stderr(&o)
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta).expect("metadata")).expect("json");
    let d = crate::consumers::Dockerd::start();
    d.ok(&["pull", &app_ref]);
    let out = d.run(&["--network", "host", &app_ref]);
    assert_eq!(out, "pushed by kiln\n");
    let digests = d.ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        &app_ref,
    ]);
    let digest = m["containerimage.digest"].as_str().expect("digest");
    assert!(digests.contains(digest), "{digests} vs {digest}");
}

/// `kiln login` checks the password against the registry before storing it
/// in `$DOCKER_CONFIG/config.json` (0600, base64 as docker writes it); a
/// build then pulls with it; `kiln logout` removes it.
#[test]
fn login_and_logout() {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt;
    let reg = Registry::start_with(Some(("bob", "hunter2-pw")));
    let b = reg.seed_base("private/base:v1", Some("bob:hunter2-pw"));
    let cfg_dir = b.path("docker-config");
    let login = |password: &str| {
        let mut child = Command::new(crate::util::kiln_bin())
            .args(["login", &reg.addr, "-u", "bob", "--password-stdin"])
            .env("DOCKER_CONFIG", &cfg_dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kiln login");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{password}\n").as_bytes())
            .expect("password");
        child.wait_with_output().expect("wait")
    };
    let o = login("wrong-pw");
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(!stderr(&o).contains("wrong-pw"), "{}", stderr(&o));
    assert!(
        !cfg_dir.join("config.json").exists(),
        "a refused login was stored"
    );
    let o = login("hunter2-pw");
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg = cfg_dir.join("config.json");
    let mode = std::fs::metadata(&cfg)
        .expect("config.json")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let c = Ctx::new(&format!("FROM {}/private/base:v1\n", reg.addr), &[]);
    let env = [("DOCKER_CONFIG", cfg_dir.to_str().expect("utf-8 path"))];
    let o = c.kiln_env(&["-o", "type=tar,dest=-"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = Command::new(crate::util::kiln_bin())
        .args(["logout", &reg.addr])
        .env("DOCKER_CONFIG", &cfg_dir)
        .output()
        .expect("kiln logout");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = c.kiln_env(&["--pull", "-o", "type=tar,dest=-"], &env);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("asks for credentials"),
        "{}",
        stderr(&o)
    );
}

/// `SSL_CERT_FILE` adds a CA for registries; a file with no PEM
/// certificate in it is a clear error, not a silent fallback.
#[test]
fn ssl_cert_file_must_hold_certificates() {
    let c = Ctx::new("FROM 127.0.0.1:1/x\n", &[]);
    let bad = c.path("garbage.pem");
    std::fs::write(&bad, "not a certificate\n").expect("write");
    let o = c.kiln_env(
        &["-o", "type=tar,dest=-"],
        &[("SSL_CERT_FILE", bad.to_str().expect("utf-8"))],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("holds no PEM certificates"),
        "{}",
        stderr(&o)
    );
}

fn kiln_cmd(args: &[&str], store: &std::path::Path) -> std::process::Output {
    Command::new(crate::util::kiln_bin())
        .args(args)
        .arg("--cache-dir")
        .arg(store)
        .output()
        .expect("kiln")
}

/// `--progress=plain` reports every layer's bytes: `kiln pull` and a
/// build's `--push` print a finished line per blob with its size, and a
/// second push says the registry has them.
#[test]
fn transfers_report_bytes_per_layer() {
    let reg = Registry::start();
    let b = Ctx::new(
        "FROM scratch\nCOPY a /a\nCOPY b /b\n",
        &[("a", &"a".repeat(300_000)), ("b", "b\n")],
    );
    let img = b.build_oci(&["-t", "x:v1"]);
    reg.push_archive(&b.path("out.tar"), "v1", "prog/base:v1");
    let layers: Vec<(String, u64)> = img.manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().expect("digest").to_string(),
                l["size"].as_u64().expect("size"),
            )
        })
        .collect();
    assert_eq!(layers.len(), 2);
    let target = format!("{}/prog/base:v1", reg.addr);
    let o = kiln_cmd(&["pull", "--progress=plain", &target], &b.path("s1"));
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    for (digest, size) in &layers {
        let line = format!("pulling {} {} done", &digest[..19], human(*size));
        assert!(e.contains(&line), "no {line:?} in:\n{e}");
    }
    // Push it on: every layer is uploaded (and said so), then exists.
    let c = Ctx::new(&format!("FROM {target}\nCOPY c /c\n"), &[("c", "c\n")]);
    let dest = format!("{}/prog/app:v1", reg.addr);
    for (round, how) in [(0, "done|mounted"), (1, "exists")] {
        let o = c.kiln(&["--progress=plain", "--push", "-t", &dest]);
        assert!(o.status.success(), "round {round}: {}", stderr(&o));
        let e = stderr(&o);
        for (digest, size) in &layers {
            let ok = how
                .split('|')
                .any(|h| e.contains(&format!("pushing {} {} {h}", &digest[..19], human(*size))));
            assert!(ok, "round {round}: {digest} not reported as {how}:\n{e}");
        }
    }
}

/// BuildKit's byte sizes, as kiln's plain progress prints them.
fn human(n: u64) -> String {
    kiln::progress::human(n)
}

/// `kiln push` of an archive holding a multi-platform image pushes every
/// platform's manifest and then the index under the tag; a pull per
/// platform gets that platform's manifest.
#[test]
fn push_archive_with_a_multi_platform_index() {
    let reg = Registry::start();
    let mut blobs = std::collections::BTreeMap::new();
    let mut manifests = Vec::new();
    for arch in ["amd64", "arm64"] {
        let b = Ctx::new("FROM scratch\nCOPY f /f\n", &[("f", arch)]);
        let img = b.build_oci(&["--platform", &format!("linux/{arch}")]);
        let files = crate::image::tar_files(&std::fs::read(b.path("out.tar")).expect("out.tar"));
        blobs.extend(files.into_iter().filter(|(k, _)| k.starts_with("blobs/")));
        let raw = img.index["manifests"][0].clone();
        manifests.push(serde_json::json!({
            "mediaType": raw["mediaType"], "digest": raw["digest"], "size": raw["size"],
            "platform": {"os": "linux", "architecture": arch},
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    })
    .to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("multi.tar");
    let mut t = tar::Builder::new(std::fs::File::create(&archive).expect("archive"));
    let mut add = |name: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, name, bytes).expect("append");
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", index.as_bytes());
    for (name, bytes) in &blobs {
        add(name, bytes);
    }
    t.finish().expect("tar");
    let target = format!("{}/multi/app:v1", reg.addr);
    let o = kiln_cmd(
        &["push", archive.to_str().expect("utf-8"), &target],
        &dir.path().join("store"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let index_digest = format!(
        "sha256:{}",
        kiln::layer::compress::sha256_hex(index.as_bytes())
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), index_digest);
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{target}"))
        .output()
        .expect("skopeo");
    assert!(raw.status.success(), "{}", stderr(&raw));
    assert_eq!(String::from_utf8_lossy(&raw.stdout), index);
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        let o = kiln_cmd(
            &["pull", "--platform", &format!("linux/{arch}"), &target],
            &dir.path().join(format!("pull-{arch}")),
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            manifests[i]["digest"].as_str().expect("digest")
        );
    }
}

/// A registry that is not on loopback speaks HTTPS unless it is named
/// insecure: without that, kiln's error says how to name it; with
/// `--insecure-registry` (or `insecure-registries` in kiln's config) a
/// plain-HTTP registry works. `0.0.0.0:PORT` reaches the loopback registry
/// under a name kiln does not treat as loopback.
#[test]
fn insecure_registries_are_named() {
    let reg = Registry::start();
    reg.seed_base("ins/base:v1", None);
    let port = reg.addr.rsplit(':').next().expect("port");
    let name = format!("0.0.0.0:{port}");
    let target = format!("{name}/ins/base:v1");
    let dir = tempfile::tempdir().expect("tempdir");
    let o = kiln_cmd(&["pull", &target], &dir.path().join("s0"));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("https://{name}/"))
            && e.contains(&format!("--insecure-registry {name}")),
        "{e}"
    );
    let o = kiln_cmd(
        &["pull", "--insecure-registry", &name, &target],
        &dir.path().join("s1"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let digest = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");
    // The same through kiln's config file.
    let cfg = dir.path().join("kiln.json");
    std::fs::write(&cfg, format!(r#"{{"insecure-registries": ["{name}"]}}"#)).expect("config");
    let o = Command::new(crate::util::kiln_bin())
        .args(["pull", &target, "--cache-dir"])
        .arg(dir.path().join("s2"))
        .env("KILN_CONFIG", &cfg)
        .output()
        .expect("kiln");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), digest);
    // A config kiln cannot read is a usage error, not silence.
    std::fs::write(&cfg, "{not json").expect("config");
    let o = Command::new(crate::util::kiln_bin())
        .args(["pull", &target])
        .env("KILN_CONFIG", &cfg)
        .output()
        .expect("kiln");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("kiln.json"), "{}", stderr(&o));
}

/// With `credsStore` in the docker config, `kiln login` hands the password
/// to `docker-credential-<store> store` (the protocol docker speaks) and
/// leaves only an empty `auths` entry in config.json, as docker does; a
/// build gets it back through `get`; `kiln logout` runs `erase`. The helper
/// here is a small program keeping one JSON file per server.
#[test]
fn login_through_a_credential_helper() {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt;
    let reg = Registry::start_with(Some(("carol", "c4rol-pw")));
    let b = reg.seed_base("helped/base:v1", Some("carol:c4rol-pw"));
    let bin = b.path("bin");
    let vault = b.path("vault");
    std::fs::create_dir_all(&bin).expect("bin");
    std::fs::create_dir_all(&vault).expect("vault");
    let helper = bin.join("docker-credential-kilntest");
    std::fs::write(
        &helper,
        r#"#!/usr/bin/env python3
import json, os, pathlib, sys
vault = pathlib.Path(os.environ["KILN_TEST_VAULT"])
action, data = sys.argv[1], sys.stdin.read()
with open(vault / "log", "a") as log:
    log.write(action + "\n")
def path(server):
    return vault / (server.strip().replace("/", "_") + ".json")
if action == "store":
    v = json.loads(data)
    path(v["ServerURL"]).write_text(json.dumps(v))
elif action in ("get", "erase"):
    f = path(data)
    if not f.exists():
        print("credentials not found in native keychain")
        sys.exit(1)
    if action == "get":
        print(f.read_text())
    else:
        f.unlink()
"#,
    )
    .expect("helper");
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let cfg_dir = b.path("docker-config");
    std::fs::create_dir_all(&cfg_dir).expect("config dir");
    std::fs::write(cfg_dir.join("config.json"), r#"{"credsStore": "kilntest"}"#)
        .expect("config.json");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env: Vec<(&str, &str)> = vec![
        ("DOCKER_CONFIG", cfg_dir.to_str().expect("utf-8")),
        ("PATH", &path),
        ("KILN_TEST_VAULT", vault.to_str().expect("utf-8")),
    ];
    let mut child = Command::new(crate::util::kiln_bin())
        .args(["login", &reg.addr, "-u", "carol", "--password-stdin"])
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kiln login");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"c4rol-pw\n")
        .expect("password");
    let o = child.wait_with_output().expect("wait");
    assert!(o.status.success(), "{}", stderr(&o));
    let stored: serde_json::Value = serde_json::from_slice(
        &std::fs::read(vault.join(format!("{}.json", reg.addr))).expect("the helper stored it"),
    )
    .expect("json");
    assert_eq!(
        stored,
        serde_json::json!({"ServerURL": reg.addr, "Username": "carol", "Secret": "c4rol-pw"})
    );
    let cfg = std::fs::read_to_string(cfg_dir.join("config.json")).expect("config.json");
    assert!(!cfg.contains("c4rol") && !cfg.contains("YzRyb2"), "{cfg}");
    let v: serde_json::Value = serde_json::from_str(&cfg).expect("json");
    assert_eq!(v["credsStore"], "kilntest");
    assert_eq!(v["auths"][&reg.addr], serde_json::json!({}));
    let c = Ctx::new(&format!("FROM {}/helped/base:v1\n", reg.addr), &[]);
    let o = c.kiln_env(&["-o", "type=tar,dest=-"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = Command::new(crate::util::kiln_bin())
        .args(["logout", &reg.addr])
        .envs(env.iter().copied())
        .output()
        .expect("kiln logout");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!vault.join(format!("{}.json", reg.addr)).exists());
    let log = std::fs::read_to_string(vault.join("log")).expect("log");
    assert_eq!(log.lines().collect::<Vec<_>>(), ["store", "get", "erase"]);
    let o = c.kiln_env(&["--pull", "-o", "type=tar,dest=-"], &env);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
}
