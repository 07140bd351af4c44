//! kiln's outputs read by real consumers: `docker load` + `docker run` +
//! `docker inspect` on a private dockerd, `skopeo inspect`, and
//! `umoci unpack`. scripts/test installs them (docker.io, skopeo, umoci,
//! busybox-static).

use crate::image::{read_oci, stderr, tar_files, Ctx};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const DOCKER: &str = "/usr/bin/docker";
const DOCKERD: &str = "/usr/sbin/dockerd";

const APP: &str = r#"FROM scratch
COPY busybox /bin/busybox
COPY --chmod=0755 hello.txt /app/
COPY --chown=1000:1001 data/ /data/
ENV GREETING="hello world"
LABEL org.opencontainers.image.title=kiln-test
WORKDIR /app
EXPOSE 8080
HEALTHCHECK --interval=10s CMD ["/bin/busybox", "true"]
CMD ["/bin/busybox", "sh", "-c", "cat /app/hello.txt; echo $GREETING; stat -c '%u:%g %a' /app/hello.txt /data/x; pwd"]
"#;

fn app_ctx() -> Ctx {
    let c = Ctx::new(APP, &[("hello.txt", "hi from kiln\n"), ("data/x", "x\n")]);
    std::fs::copy("/bin/busybox", c.ctx().join("busybox"))
        .expect("copying /bin/busybox (Debian's busybox-static; scripts/test installs it)");
    c
}

/// A private dockerd, stopped (by PID) and cleaned up on drop.
pub struct Dockerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Dockerd {
    pub fn start() -> Dockerd {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("docker.sock");
        let log = std::fs::File::create(dir.path().join("dockerd.log")).expect("log");
        let child = Command::new(DOCKERD)
            .args(["--iptables=false", "--bridge=none", "--ip-masq=false"])
            .arg("--data-root")
            .arg(dir.path().join("root"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting dockerd (Debian's docker.io; scripts/test installs it)");
        let d = Dockerd { child, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if d.docker(&["info"]).status.success() {
                return d;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let log = std::fs::read_to_string(d.dir.path().join("dockerd.log")).unwrap_or_default();
        panic!("dockerd did not start:\n{log}");
    }

    /// The daemon's DOCKER_HOST.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new(DOCKER)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.dir.path().join("docker.sock").display()),
            )
            .args(args)
            .output()
            .expect("running docker")
    }

    /// `docker run ARGS`, returning the container's stdout: run detached,
    /// waited for, and read back from its log, since an attached
    /// `docker run --rm` can lose a short-lived container's output when
    /// the machine is loaded. The container must exit 0.
    pub fn run(&self, args: &[&str]) -> String {
        let mut all = vec!["run", "-d"];
        all.extend_from_slice(args);
        let id = self.ok(&all).trim().to_string();
        let code = self.ok(&["wait", &id]).trim().to_string();
        let logs = self.docker(&["logs", &id]);
        let _ = self.docker(&["rm", "-f", &id]);
        assert!(
            code == "0" && logs.status.success(),
            "docker run {args:?} exited {code}: {}",
            stderr(&logs)
        );
        String::from_utf8_lossy(&logs.stdout).into_owned()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(o.status.success(), "docker {args:?} failed: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").arg("-TERM").arg(&pid).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Unmount anything dockerd left under its roots before the
        // directory is removed.
        let root = self.dir.path().to_string_lossy().into_owned();
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let mut under: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(1))
                .filter(|m| m.starts_with(&root))
                .collect();
            under.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in under {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
    }
}

/// `docker load` takes the docker archive on the first try, `docker run`
/// runs it with the files, owners, modes, env and workdir kiln wrote, and
/// `docker inspect` shows the config.
#[test]
fn docker_loads_runs_and_inspects_the_image() {
    let c = app_ctx();
    let out = c.path("docker.tar");
    let spec = format!("type=docker,dest={}", out.display());
    let sde = ["--build-arg", "SOURCE_DATE_EPOCH=1700000000"];
    let o = c.kiln(&[
        sde[0],
        sde[1],
        "-t",
        "kiln-test/app:1.0",
        "-t",
        "kiln-test/app:latest",
        "-o",
        &spec,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let d = Dockerd::start();
    let loaded = d.ok(&["load", "-i", &out.to_string_lossy()]);
    assert!(loaded.contains("kiln-test/app:1.0"), "{loaded}");
    let run = d.run(&["--network", "host", "kiln-test/app:1.0"]);
    assert_eq!(
        run,
        "hi from kiln\nhello world\n0:0 755\n1000:1001 644\n/app\n"
    );
    let inspect: Value =
        serde_json::from_str(&d.ok(&["inspect", "kiln-test/app:latest"])).expect("inspect json");
    let cfg = &inspect[0]["Config"];
    assert_eq!(cfg["WorkingDir"], "/app");
    assert_eq!(cfg["Labels"]["org.opencontainers.image.title"], "kiln-test");
    assert!(cfg["ExposedPorts"]["8080/tcp"].is_object(), "{cfg}");
    assert_eq!(cfg["Healthcheck"]["Interval"], 10_000_000_000u64);
    assert!(cfg["Env"]
        .as_array()
        .is_some_and(|e| e.iter().any(|v| v == "GREETING=hello world")));
    let tags = inspect[0]["RepoTags"].as_array().expect("tags").len();
    assert_eq!(tags, 2);
    // The image ID docker computes is kiln's config digest.
    let id = inspect[0]["Id"].as_str().expect("id").to_string();
    let iid = c.path("iid");
    let o = c.kiln(&[
        sde[0],
        sde[1],
        "-t",
        "kiln-test/app:1.0",
        "-o",
        &spec,
        "--iidfile",
        &iid.to_string_lossy(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let config_digest = {
        let files = tar_files(&std::fs::read(&out).expect("docker.tar"));
        let m: Value = serde_json::from_slice(&files["manifest.json"]).expect("manifest.json");
        format!(
            "sha256:{}",
            m[0]["Config"]
                .as_str()
                .expect("Config")
                .trim_start_matches("blobs/sha256/")
        )
    };
    assert_eq!(config_digest, id, "docker's image ID is the config digest");
    assert_eq!(std::fs::read_to_string(iid).expect("iidfile"), id);
}

/// skopeo reads the OCI archive and agrees on the manifest digest.
#[test]
fn skopeo_inspects_the_oci_archive() {
    let c = app_ctx();
    let img = c.build_oci(&["-t", "registry.example.com/app:1.4"]);
    let out = c.path("out.tar");
    let o = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", out.display()))
        .output()
        .expect("skopeo (scripts/test installs it)");
    assert!(o.status.success(), "{}", stderr(&o));
    let raw = o.stdout;
    assert_eq!(
        format!("sha256:{}", hex(&raw)),
        img.manifest_digest,
        "skopeo's manifest is kiln's"
    );
    let o = Command::new("skopeo")
        .args(["inspect"])
        .arg(format!("oci-archive:{}:1.4", out.display()))
        .output()
        .expect("skopeo");
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["Layers"].as_array().map(Vec::len), Some(img.layers.len()));
    assert_eq!(v["Labels"]["org.opencontainers.image.title"], "kiln-test");
    assert_eq!(
        img.index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "1.4"
    );
}

fn hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// umoci unpacks the OCI layout into a runtime bundle with kiln's files,
/// owners and config.
#[test]
fn umoci_unpacks_the_oci_layout() {
    let c = app_ctx();
    c.build_oci(&["-t", "app:v1"]);
    let layout = c.path("layout");
    std::fs::create_dir(&layout).expect("mkdir");
    extract(&c.path("out.tar"), &layout);
    let bundle = c.path("bundle");
    let o = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:v1", layout.display()))
        .arg(&bundle)
        .output()
        .expect("umoci (scripts/test installs it)");
    assert!(o.status.success(), "{}", stderr(&o));
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("app/hello.txt")).expect("file"),
        "hi from kiln\n"
    );
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(rootfs.join("data/x")).expect("meta");
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 1001, 0o644));
    let spec: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).expect("config.json"))
            .expect("json");
    assert_eq!(spec["process"]["cwd"], "/app");
    assert!(spec["process"]["env"]
        .as_array()
        .is_some_and(|e| e.iter().any(|v| v == "GREETING=hello world")));
}

fn extract(tar: &Path, into: &Path) {
    let files = tar_files(&std::fs::read(tar).expect("read tar"));
    for (name, data) in files {
        let p: PathBuf = into.join(&name);
        if name.ends_with('/') {
            std::fs::create_dir_all(&p).expect("mkdir");
            continue;
        }
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, data).expect("write");
    }
}

/// The OCI archive read back by the test's own reader, for the same app.
#[test]
fn oci_archive_is_consistent() {
    let c = app_ctx();
    let img = c.build_oci(&[]);
    assert_eq!(
        img.manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        img.manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert!(img.config_raw.first() == Some(&b'{'));
    let _ = read_oci;
}
