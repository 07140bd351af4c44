//! Pulling from a real registry: Debian's `docker-registry` (the CNCF
//! distribution registry) on a free loopback port, seeded with skopeo from
//! an image kiln built.

use crate::image::{listing, stderr, Ctx};
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
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("config");
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

    /// Copies an OCI archive into the registry as `repo:tag`, with skopeo.
    pub fn push_archive(&self, archive: &std::path::Path, tag_in_archive: &str, dest: &str) {
        let o = Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
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

/// An image the registry does not have: exit 3, naming the image and the
/// registry's HTTP status, at the FROM line.
#[test]
fn missing_registry_image_is_a_clear_error() {
    let reg = Registry::start();
    let c = Ctx::new(&format!("FROM {}/nope:1\n", reg.addr), &[]);
    let o = c.kiln(&["-o", "type=tar,dest=-"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("Dockerfile:1") && e.contains("404"), "{e}");
}

/// A registry that lies: it serves a layer whose bytes do not match the
/// digest the manifest names, and one whose body is cut short. kiln fails
/// naming the blob, and nothing lands in the store under that digest.
#[test]
fn a_lying_registry_is_refused() {
    use sha2::Digest as _;
    use std::io::{BufRead, BufReader, Write};
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
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let config_c = config.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut s = stream;
            let (ctype, body, declared): (&str, Vec<u8>, usize) =
                if path.ends_with("/liar/manifests/1") {
                    (
                        "application/vnd.oci.image.manifest.v1+json",
                        liar_manifest.clone().into_bytes(),
                        liar_manifest.len(),
                    )
                } else if path.ends_with("/short/manifests/1") {
                    (
                        "application/vnd.oci.image.manifest.v1+json",
                        short_manifest.clone().into_bytes(),
                        short_manifest.len(),
                    )
                } else if path.contains("/blobs/") && path.ends_with(&hex(config_c.as_bytes())) {
                    (
                        "application/octet-stream",
                        config_c.clone().into_bytes(),
                        config_c.len(),
                    )
                } else if path.starts_with("/v2/liar/blobs/") {
                    (
                        "application/octet-stream",
                        layer_sent.clone(),
                        layer_sent.len(),
                    )
                } else if path.starts_with("/v2/short/blobs/") {
                    // Declares 100 bytes, sends 10, hangs up.
                    (
                        "application/octet-stream",
                        layer_claimed[..10].to_vec(),
                        100,
                    )
                } else {
                    let _ = s.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    continue;
                };
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n");
            let _ = s.write_all(&body);
        }
    });
    for (repo, want) in [
        ("liar", "arrived with digest"),
        ("short", "download failed"),
    ] {
        let c = Ctx::new(&format!("FROM {addr}/{repo}:1\n"), &[]);
        let o = c.kiln(&["-o", "type=tar,dest=-"]);
        assert_eq!(o.status.code(), Some(3), "{repo}: {}", stderr(&o));
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
    let b = Ctx::new(
        "FROM scratch\nCOPY base.txt /base/\n",
        &[("base.txt", "base\n")],
    );
    b.build_oci(&["-t", "base:v1"]);
    reg.push_archive(&b.path("out.tar"), "v1", "base:v1");
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
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot reach"), "{}", stderr(&o));
}
