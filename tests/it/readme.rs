//! The README's examples, run as written (with a local registry in place
//! of the CI systems' ones, a private dockerd as the Docker daemon and
//! the container runtime).

use crate::consumers::Dockerd;
use crate::image::stderr;
use crate::registry::Registry;
use serde_json::Value;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Output};

/// The digest the README's quick start says it prints.
fn quick_start_digest_in(text: &str) -> &str {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("built sha256:"))
        .and_then(|l| l.split(' ').next())
        .expect("the quick start's digest")
}

fn readme() -> String {
    std::fs::read_to_string(crate::util::root().join("README.md")).expect("README.md")
}

/// The quick start's command gives the digest the README shows, and the
/// commands after it work.
#[test]
fn quick_start_digest() {
    let text = readme();
    let want = quick_start_digest_in(&text);
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("store");
    let kiln = |args: &[&str]| {
        let o = Command::new(crate::util::kiln_bin())
            .args(args)
            .current_dir(crate::util::root())
            .env("KILN_CACHE_DIR", &store)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .expect("kiln");
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        o
    };
    let archive = tmp.path().join("demo.tar");
    let dest = format!("type=oci,dest={}", archive.display());
    let o = kiln(&["build", "-t", "demo:1.0.0", "-o", &dest, "testdata/demo"]);
    assert!(
        stderr(&o).contains(&format!("built sha256:{want} ")),
        "README says {want}:\n{}",
        stderr(&o)
    );
    let o = kiln(&["inspect", &archive.to_string_lossy()]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("kiln demo site"));
    let o = kiln(&["build", "--dry-run", "testdata/demo"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("CACHED"));
    // The push line, to a local registry in example.com's place.
    let reg = Registry::start();
    let push = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("kiln build -t registry.example.com/demo:1.0.0 --push"))
        .expect("the push example");
    let push = push.replace("registry.example.com", &reg.addr);
    let args: Vec<&str> = push.split_whitespace().skip(1).collect();
    let o = kiln(&args);
    assert!(
        stderr(&o).contains(&format!("pushed to {}/demo:1.0.0", reg.addr)),
        "{}",
        stderr(&o)
    );
}

/// The lines of the README's fenced block that follows `title`.
fn block_after(text: &str, title: &str) -> Vec<String> {
    let start = text
        .find(title)
        .unwrap_or_else(|| panic!("no {title:?} in the README"));
    let rest = &text[start..];
    let open = rest.find("```").expect("a code block");
    let body = &rest[open..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    let close = body.find("```").expect("the end of the block");
    body[..close].lines().map(str::to_string).collect()
}

fn demo_copy(dir: &std::path::Path) -> std::path::PathBuf {
    let ctx = dir.join("app");
    let o = Command::new("cp")
        .arg("-a")
        .arg(crate::util::root().join("testdata/demo"))
        .arg(&ctx)
        .output()
        .expect("cp");
    assert!(o.status.success());
    ctx
}

/// Runs a shell script with bash, kiln first on the PATH.
fn bash(script: &str, dir: &std::path::Path, env: &[(&str, String)]) -> std::process::Output {
    let bin = crate::util::kiln_bin();
    let path = format!(
        "{}:{}",
        bin.parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .env("PATH", path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("bash")
}

/// The GitLab CI job's script, as written, against a registry that wants
/// a login: the first job logs in, builds and pushes; the second, with
/// the cache directory the first left, builds nothing.
#[test]
fn the_gitlab_example_runs() {
    let lines = block_after(&readme(), "GitLab CI (");
    let script: Vec<String> = lines
        .iter()
        .filter_map(|l| l.trim().strip_prefix("- ").map(str::to_string))
        .filter(|l| l.starts_with("kiln "))
        .collect();
    assert_eq!(script.len(), 2, "{lines:?}");
    let reg = Registry::start_with(Some(("ci", "ci-password")));
    let work = tempfile::tempdir().expect("tempdir");
    let ctx = demo_copy(work.path());
    let env = [
        ("CI_REGISTRY_USER", "ci".to_string()),
        ("CI_REGISTRY_PASSWORD", "ci-password".to_string()),
        ("CI_REGISTRY", reg.addr.clone()),
        ("CI_REGISTRY_IMAGE", format!("{}/group/app", reg.addr)),
        ("CI_COMMIT_SHA", "0123abc".to_string()),
        (
            "DOCKER_CONFIG",
            work.path().join("docker").display().to_string(),
        ),
    ];
    let mut outs = Vec::new();
    for job in 0..2 {
        let mut env = env.to_vec();
        env.push((
            "KILN_CACHE_DIR",
            work.path()
                .join(format!("store-{job}"))
                .display()
                .to_string(),
        ));
        let o = bash(&script.join("\n"), &ctx, &env);
        assert!(o.status.success(), "job {job}: {}", stderr(&o));
        outs.push(stderr(&o));
    }
    assert!(outs[1].contains("(4 steps cached, 0 ran)"), "{}", outs[1]);
    assert!(
        outs[1].contains(&format!("pushed to {}/group/app:0123abc", reg.addr)),
        "{}",
        outs[1]
    );
}

/// The README section that starts with `heading`, up to the next one.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text
        .find(&format!("\n{heading}"))
        .unwrap_or_else(|| panic!("no {heading:?} section in the README"));
    let rest = &text[start + 1..];
    let end = rest[heading.len()..]
        .find("\n## ")
        .map_or(rest.len(), |i| i + heading.len());
    &rest[..end]
}

/// The first line of `section` that starts with `prefix` (trimmed), with
/// the shell comment after it cut off.
fn command_line(section: &str, prefix: &str) -> String {
    let line = section
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{section}"));
    line.split(" #").next().unwrap_or(line).trim().to_string()
}

/// docker, against the test daemon; the output whatever the status.
fn docker(d: &Dockerd, args: &[&str]) -> Output {
    Command::new("/usr/bin/docker")
        .env("DOCKER_HOST", d.host())
        .args(args)
        .output()
        .expect("docker (Debian's docker.io; scripts/test installs it)")
}

/// The quick start's `--load` line, as written, with DOCKER_HOST naming a
/// real dockerd: docker then has `demo:1.0.0` with the demo's config, and
/// its files with their owners (read with `docker create` + `docker cp`:
/// the image has no binaries to run).
#[test]
fn quick_start_loads_into_docker() {
    let text = readme();
    let line = command_line(
        section(&text, "## Quick start"),
        "kiln build --load -t demo:1.0.0",
    );
    let d = Dockerd::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let env = [
        ("DOCKER_HOST", d.host()),
        (
            "KILN_CACHE_DIR",
            tmp.path().join("store").display().to_string(),
        ),
    ];
    let o = bash(&line, &crate::util::root(), &env);
    assert!(o.status.success(), "{line}: {}", stderr(&o));
    assert!(stderr(&o).contains("loaded into docker"), "{}", stderr(&o));

    let inspect: Value =
        serde_json::from_str(&d.ok(&["image", "inspect", "demo:1.0.0"])).expect("inspect json");
    let cfg = &inspect[0]["Config"];
    assert_eq!(
        cfg["Labels"]["org.opencontainers.image.title"],
        "kiln demo site"
    );
    assert_eq!(cfg["Labels"]["org.opencontainers.image.version"], "1.0.0");
    assert_eq!(cfg["User"], "101:101");
    assert_eq!(cfg["WorkingDir"], "/srv/www");
    assert!(cfg["ExposedPorts"]["8080/tcp"].is_object(), "{cfg}");
    assert_eq!(
        cfg["Cmd"],
        serde_json::json!(["httpd", "-f", "-p", "8080", "-h", "/srv/www"])
    );
    assert_eq!(
        cfg["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "httpd-check", "http://localhost:8080/"])
    );
    assert_eq!(cfg["Healthcheck"]["Interval"], 30_000_000_000u64);

    let id = d.ok(&["create", "demo:1.0.0"]).trim().to_string();
    let cp = docker(&d, &["cp", &format!("{id}:/srv/www"), "-"]);
    assert!(cp.status.success(), "docker cp: {}", stderr(&cp));
    d.ok(&["rm", &id]);
    let mut files = std::collections::BTreeMap::new();
    let mut ar = tar::Archive::new(&cp.stdout[..]);
    for e in ar.entries().expect("tar entries") {
        let mut e = e.expect("tar entry");
        let path = e.path().expect("path").to_string_lossy().into_owned();
        let owner = (
            e.header().uid().expect("uid"),
            e.header().gid().expect("gid"),
        );
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("entry data");
        files.insert(path.trim_end_matches('/').to_string(), (owner, data));
    }
    let demo = crate::util::root().join("testdata/demo/public");
    let want = [
        ("www/version.txt", b"demo 1.0.0\n".to_vec()),
        (
            "www/index.html",
            std::fs::read(demo.join("index.html")).expect("index.html"),
        ),
        (
            "www/css/site.css",
            std::fs::read(demo.join("css/site.css")).expect("site.css"),
        ),
    ];
    for (path, data) in want {
        assert_eq!(
            files.get(path),
            Some(&((101, 101), data)),
            "{path} in docker's image: {:?}",
            files.keys().collect::<Vec<_>>()
        );
    }
}

/// The uid a GitHub runner's steps run as here: not root.
const RUNNER: u32 = 65534;

/// Runs a shell script as a CI runner does: bash as an unprivileged user
/// with its own HOME, kiln first on the PATH.
fn runner_bash(script: &str, dir: &Path, home: &Path) -> Output {
    let bin = crate::util::kiln_bin();
    let path = format!(
        "{}:{}",
        bin.parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("setpriv")
        .args([
            &format!("--reuid={RUNNER}"),
            &format!("--regid={RUNNER}"),
            "--clear-groups",
            "bash",
            "-euo",
            "pipefail",
            "-c",
            script,
        ])
        .current_dir(dir)
        .env("HOME", home)
        .env("PATH", path)
        .env_remove("KILN_CACHE_DIR")
        .env_remove("XDG_CACHE_HOME")
        .output()
        .expect("setpriv bash")
}

/// The GitHub Actions job, step by step, on two commits of the same
/// source, each on a fresh runner (its own home, a fresh checkout), as an
/// unprivileged user: the cache step comes before the build and saves
/// the directory the build's `--cache-dir` names; the first run builds
/// and pushes; its store, archived and restored with tar as actions/cache
/// does, into the second runner's home, serves every step of the second
/// run (0 ran), which pushes the same layers.
#[test]
fn the_github_actions_example_runs_from_a_restored_cache() {
    let steps = block_after(&readme(), "GitHub Actions (");
    let step = |prefix: &str| {
        steps
            .iter()
            .position(|l| l.trim().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} step: {steps:#?}"))
    };
    let (cache_at, build_at) = (step("- uses: actions/cache@"), step("- run: kiln build"));
    assert!(
        cache_at < build_at,
        "actions/cache restores where its step is: after the build, the build never sees the cache: {steps:#?}"
    );
    let with = steps
        .get(cache_at + 1)
        .and_then(|l| l.trim().strip_prefix("with: {"))
        .and_then(|l| l.strip_suffix('}'))
        .unwrap_or_else(|| panic!("the cache step's `with:` map: {steps:#?}"));
    let with: std::collections::BTreeMap<&str, &str> = with
        .split(", ")
        .filter_map(|kv| kv.trim().split_once(": "))
        .collect();
    let (path, key, restore) = (with["path"], with["key"], with["restore-keys"]);
    assert!(
        key.starts_with(restore),
        "a new commit's run restores the last run's cache only if {restore:?} prefixes {key:?}"
    );
    let build = steps[build_at]
        .trim()
        .strip_prefix("- run: ")
        .expect("a run step");
    let words: Vec<&str> = build.split_whitespace().collect();
    let cache_dir = words
        .windows(2)
        .find(|w| w[0] == "--cache-dir")
        .map(|w| w[1])
        .expect("the build step's --cache-dir");
    assert_eq!(
        cache_dir, path,
        "the build's store is the directory the cache step saves"
    );
    let in_home = path
        .strip_prefix("~/")
        .expect("a path in the runner's home");

    let reg = Registry::start();
    let work = tempfile::tempdir().expect("tempdir");
    let runner = |n: usize| work.path().join(format!("runner-{n}"));
    for n in [1, 2] {
        std::fs::create_dir_all(runner(n).join("home")).expect("mkdir home");
        // A checkout: the files are new (cp without -p), as git writes them.
        let o = Command::new("cp")
            .arg("-r")
            .arg(crate::util::root().join("testdata/demo"))
            .arg(runner(n).join("checkout"))
            .output()
            .expect("cp");
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = Command::new("chown")
        .args(["-R", &format!("{RUNNER}:{RUNNER}")])
        .arg(work.path())
        .output()
        .expect("chown");
    assert!(o.status.success(), "{}", stderr(&o));
    let job = |n: usize, sha: &str| {
        let script = build
            .replace(
                "ghcr.io/${{ github.repository }}",
                &format!("{}/team/app", reg.addr),
            )
            .replace("${{ github.sha }}", sha);
        let o = runner_bash(
            &script,
            &runner(n).join("checkout"),
            &runner(n).join("home"),
        );
        assert!(o.status.success(), "run {n}: {script}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("pushed to {}/team/app:{sha}", reg.addr)),
            "run {n}: {}",
            stderr(&o)
        );
        stderr(&o)
    };
    let first = job(1, "1111aaa");
    assert!(first.contains("(0 steps cached, 4 ran)"), "{first}");
    assert!(
        runner(1).join("home").join(in_home).join("blobs").is_dir(),
        "the build did not write its store to {path}"
    );
    // actions/cache: tar of the path when the job ends, extracted at the
    // same path of the next runner's home before its build.
    let archive = work.path().join("cache.tar");
    let save = format!(
        "tar --posix -cf {} -C \"$HOME\" {in_home}",
        archive.display()
    );
    let o = runner_bash(&save, work.path(), &runner(1).join("home"));
    assert!(o.status.success(), "saving the cache: {}", stderr(&o));
    let restore = format!("tar -xf {} -C \"$HOME\"", archive.display());
    let o = runner_bash(&restore, work.path(), &runner(2).join("home"));
    assert!(o.status.success(), "restoring the cache: {}", stderr(&o));
    let second = job(2, "2222bbb");
    assert!(second.contains("(4 steps cached, 0 ran)"), "{second}");

    // Without SOURCE_DATE_EPOCH the config's times differ; the layers,
    // which the cache serves, do not.
    let layers = |tag: &str| {
        let o = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/team/app:{tag}", reg.addr))
            .output()
            .expect("skopeo (scripts/test installs it)");
        assert!(o.status.success(), "skopeo inspect: {}", stderr(&o));
        let m: Value = serde_json::from_slice(&o.stdout).expect("manifest");
        m["layers"].clone()
    };
    let (l1, l2) = (layers("1111aaa"), layers("2222bbb"));
    assert_eq!(l1.as_array().map(Vec::len), Some(2), "{l1}");
    assert_eq!(l1, l2, "the second run pushed other layers");
}

/// What the Job's workspace holds: a RUN step (which needs the namespaces
/// and overlay mounts the privileged securityContext allows), from
/// Debian's busybox-static.
const JOB_APP: &str = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox mkdir /out && /bin/busybox echo built by a Job > /out/msg"]
CMD ["/bin/busybox", "cat", "/out/msg"]
"#;

/// The Kubernetes Job, run as a pod would run it, under a real container
/// runtime (dockerd): the README's script makes the kiln image (kiln and
/// its glibc, FROM scratch) with kiln and pushes it to a local registry
/// in registry.example.com's place; the Job's container runs from it with
/// its args, privileged as its securityContext says, each volumeMount a
/// directory (the source in the build context's, empty ones for the
/// others, as emptyDirs are) and the host's network (to reach the
/// registry); it builds the source with a RUN step, on overlayfs (the
/// store's volume), and pushes; the registry has the image kiln reported,
/// and docker pulls and runs it.
#[test]
fn the_kubernetes_job_runs_in_a_container() {
    let text = readme();
    let script = block_after(&text, "Kubernetes, a Job").join("\n");
    let job = block_after(&text, "The Job builds");
    let field = |name: &str| {
        job.iter()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in the Job: {job:#?}"))
    };
    let image = field("image:");
    assert!(
        script.contains(&format!("kiln build -t {image} --push")),
        "the script does not push the Job's image {image}:\n{script}"
    );
    let list = |v: &str| -> Vec<String> {
        v.strip_prefix('[')
            .and_then(|v| v.strip_suffix(']'))
            .unwrap_or_else(|| panic!("a flow sequence: {v}"))
            .split(", ")
            .map(str::to_string)
            .collect()
    };
    let args = list(field("args:"));
    let context = args.last().expect("the build context").clone();
    assert_eq!(field("securityContext:"), "{ privileged: true }");
    // [{ name: a, mountPath: /a }, { name: b, mountPath: /b }]
    let mounts: Vec<(String, String)> = list(field("volumeMounts:"))
        .chunks(2)
        .map(|m| {
            let name = m[0].strip_prefix("{ name: ");
            let path = m.get(1).and_then(|p| p.strip_prefix("mountPath: "));
            match (name, path.and_then(|p| p.strip_suffix(" }"))) {
                (Some(n), Some(p)) => (n.to_string(), p.to_string()),
                _ => panic!("a volumeMount: {m:?}"),
            }
        })
        .collect();
    assert!(
        mounts.iter().any(|(_, p)| *p == context),
        "the build context {context} is not a volume: {mounts:?}"
    );
    let volumes = field("volumes:");
    for (name, _) in &mounts {
        assert!(
            volumes.contains(&format!("{{ name: {name}, emptyDir: {{}} }}")),
            "{name} is not an emptyDir: {volumes}"
        );
    }

    let reg = Registry::start();
    let work = tempfile::tempdir().expect("tempdir");
    let o = bash(
        &script.replace("registry.example.com", &reg.addr),
        work.path(),
        &[(
            "KILN_CACHE_DIR",
            work.path().join("store").display().to_string(),
        )],
    );
    let image = image.replace("registry.example.com", &reg.addr);
    assert!(o.status.success(), "{script}: {}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("pushed to {image}")),
        "{}",
        stderr(&o)
    );

    let src = work.path().join("src");
    std::fs::create_dir(&src).expect("mkdir src");
    std::fs::write(src.join("Dockerfile"), JOB_APP).expect("Dockerfile");
    std::fs::copy("/bin/busybox", src.join("busybox"))
        .expect("copying /bin/busybox (Debian's busybox-static; scripts/test installs it)");
    let d = Dockerd::start();
    let mut run: Vec<String> = ["run", "--rm", "--privileged", "--network", "host"]
        .map(String::from)
        .to_vec();
    for (name, path) in &mounts {
        let host = if *path == context {
            src.clone()
        } else {
            let dir = work.path().join("volumes").join(name);
            std::fs::create_dir_all(&dir).expect("mkdir volume");
            dir
        };
        run.push("-v".into());
        run.push(format!("{}:{path}", host.display()));
    }
    run.push(image);
    run.extend(
        args.iter()
            .map(|a| a.replace("registry.example.com", &reg.addr)),
    );
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    let o = docker(&d, &run);
    let log = stderr(&o);
    assert!(o.status.success(), "docker {run:?}: {log}");
    let app = args
        .windows(2)
        .find(|w| w[0] == "-t")
        .map(|w| w[1].replace("registry.example.com", &reg.addr))
        .expect("the Job's -t");
    assert!(log.contains(&format!("pushed to {app}")), "{log}");
    assert!(log.contains("(0 steps cached, 2 ran)"), "{log}");
    assert!(
        !log.contains("overlayfs cannot be used"),
        "the store's volume takes overlay mounts: {log}"
    );
    let digest = log
        .lines()
        .find_map(|l| l.strip_prefix(&format!("pushed {app}@")))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("the pushed digest: {log}"));
    let o = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{app}"))
        .output()
        .expect("skopeo (scripts/test installs it)");
    assert!(o.status.success(), "skopeo inspect: {}", stderr(&o));
    assert_eq!(format!("sha256:{}", hex(&o.stdout)), digest);
    d.ok(&["pull", &app]);
    let out = d.run(&["--network", "host", &app]);
    assert_eq!(out, "built by a Job\n");
}

fn hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// The Install line, as written, into a temporary root (`--root`): it
/// builds the release binary (scripts/test builds it first, so this only
/// installs it), which is the same file the comment's `cargo build
/// --release` leaves in target/release; the installed kiln, first on the
/// PATH, runs the quick start's first line in a directory holding
/// testdata/demo and prints the README's digest.
/// The cargo that built the tests (the same toolchain), in the
/// environment a shell has: without what cargo sets for a test, or the
/// release build scripts/test made is stale (ring's build script reruns
/// when CARGO_MANIFEST_DIR changes, and all that depends on it).
fn shell_cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_BIN_EXE_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
            ]
            .contains(&k.as_ref())
            || k == "LD_LIBRARY_PATH"
        {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd
}

/// "The main job" of "The two commands", as written but for where the
/// archive goes (not into the checkout): `cargo run --release` builds the
/// demo into an OCI archive. (Without SOURCE_DATE_EPOCH: cargo would
/// rebuild the C dependencies under it, their build scripts track it;
/// `quick_start_digest` checks the digest it gives.)
#[test]
fn the_main_job_line_builds_the_demo() {
    let text = readme();
    let line = command_line(section(&text, "## The two commands"), "cargo run");
    let tmp = tempfile::tempdir().expect("tempdir");
    let archive = tmp.path().join("demo.tar");
    let line = line.replace("dest=demo.tar", &format!("dest={}", archive.display()));
    let words: Vec<&str> = line.split_whitespace().collect();
    let o = shell_cargo()
        .args(&words[1..])
        .current_dir(crate::util::root())
        .env_remove("SOURCE_DATE_EPOCH")
        .env("KILN_CACHE_DIR", tmp.path().join("store"))
        .output()
        .expect("cargo");
    assert!(o.status.success(), "{line}: {}", stderr(&o));
    assert!(stderr(&o).contains("built sha256:"), "{}", stderr(&o));
    let img = crate::image::read_oci(&std::fs::read(&archive).expect("demo.tar"));
    assert_eq!(
        img.config["config"]["Labels"]["org.opencontainers.image.title"],
        "kiln demo site"
    );
    assert_eq!(
        img.index["manifests"][0]["annotations"]["io.containerd.image.name"],
        "docker.io/library/demo:1.0.0"
    );
}

#[test]
fn the_install_line_installs_a_working_kiln() {
    let text = readme();
    let install = section(&text, "## Install");
    let line = command_line(install, "cargo install");
    let alternative = install
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{line} # or: ")))
        .expect("the alternative in the comment");
    let (build, copy) = alternative.split_once("; ").expect("a build, then a copy");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let cargo = |line: &str, extra: &[&std::ffi::OsStr]| {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words.first(), Some(&"cargo"), "{line}");
        let o = shell_cargo()
            .args(&words[1..])
            .args(extra)
            .current_dir(crate::util::root())
            .output()
            .expect("cargo");
        assert!(o.status.success(), "{line} {extra:?}: {}", stderr(&o));
    };
    cargo(&line, &["--root".as_ref(), root.as_os_str()]);
    let installed = root.join("bin/kiln");
    cargo(build, &[]);
    let built = copy
        .split_whitespace()
        .nth(1)
        .expect("cp's source")
        .strip_prefix("target/")
        .expect("a file in target/");
    let target = crate::util::kiln_bin()
        .parent()
        .and_then(Path::parent)
        .expect("the target directory")
        .to_path_buf();
    assert!(
        std::fs::read(target.join(built)).expect("the built binary")
            == std::fs::read(&installed).expect("the installed binary"),
        "{line} installed another binary than {build} builds"
    );

    let want = quick_start_digest_in(&text);
    let quick = command_line(section(&text, "## Quick start"), "SOURCE_DATE_EPOCH=");
    let dir = tmp.path().join("checkout");
    std::fs::create_dir_all(dir.join("testdata")).expect("mkdir");
    let o = Command::new("cp")
        .arg("-r")
        .arg(crate::util::root().join("testdata/demo"))
        .arg(dir.join("testdata/demo"))
        .output()
        .expect("cp");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = Command::new("bash")
        .args([
            "-euo",
            "pipefail",
            "-c",
            &format!("command -v kiln; {quick}"),
        ])
        .current_dir(&dir)
        .env(
            "PATH",
            format!(
                "{}:{}",
                root.join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("KILN_CACHE_DIR", tmp.path().join("store"))
        .output()
        .expect("bash");
    assert!(o.status.success(), "{quick}: {}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        installed.display().to_string(),
        "the installed kiln ran"
    );
    assert!(
        stderr(&o).contains(&format!("built sha256:{want} ")),
        "README says {want}:\n{}",
        stderr(&o)
    );
    assert!(dir.join("demo.tar").is_file());
}

/// The cache section's example of miss explanations is what kiln prints:
/// a six-step stage (its `make` a script) built, `src/app.py` edited,
/// built again with `--progress=plain`; every line of the example is in
/// the output.
#[test]
fn the_cache_miss_example_is_what_kiln_prints() {
    let text = readme();
    let section = section(&text, "## The build cache");
    let example: Vec<&str> = section
        .lines()
        .filter(|l| l.starts_with("    #"))
        .map(str::trim)
        .collect();
    assert_eq!(example.len(), 4, "{section}");
    let c = crate::run::busybox(
        "WORKDIR /src\nCOPY Makefile ./\nCOPY . .\nRUN make\n",
        &[
            ("Makefile", "all:\n"),
            ("src/app.py", "print(1)\n"),
            ("bin/make", "#!/bin/sh\necho made > /src/made\n"),
        ],
    );
    std::fs::set_permissions(
        c.ctx().join("bin/make"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let o = c.kiln(&["--progress=plain"]);
    assert!(o.status.success(), "{}", stderr(&o));
    c.write("src/app.py", "print(2)\n");
    let o = c.kiln(&["--progress=plain"]);
    let out = stderr(&o);
    assert!(o.status.success(), "{out}");
    for line in example {
        assert!(out.lines().any(|l| l == line), "no {line:?} in:\n{out}");
    }
}

/// The exit-code section's failing step is what kiln prints for that
/// Dockerfile (its `make` a script that prints 30 lines, then fails with
/// 2); the example's `...` stands for the 20 lines.
#[test]
fn the_failing_step_example_is_what_kiln_prints() {
    let text = readme();
    let from = text
        .find("A failing step is shown the way BuildKit shows it")
        .expect("the example");
    let example: Vec<&str> = text[from..]
        .lines()
        .skip_while(|l| !l.starts_with("    Dockerfile:"))
        .take_while(|l| l.starts_with("    "))
        .map(|l| &l[4..])
        .collect();
    assert!(example.len() > 5, "{example:?}");
    let c = crate::run::busybox(
        "# build it\nRUN make && \\\n    make install\nCMD [\"app\"]\n",
        &[(
            "bin/make",
            "#!/bin/sh\nfor i in $(seq 1 30); do echo \"line $i\"; done\nexit 2\n",
        )],
    );
    std::fs::set_permissions(
        c.ctx().join("bin/make"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let o = c.kiln(&["--progress=plain"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let out = stderr(&o);
    // The report: from the excerpt's first line to the error.
    let start = out
        .find("Dockerfile:5\n")
        .unwrap_or_else(|| panic!("{out}"));
    let report: Vec<&str> = out[start..].lines().collect();
    let mut at = 0;
    for line in example {
        if line.trim() == "..." {
            // The tail: lines 11 to 30 of the script's output.
            for i in 11..=30 {
                assert_eq!(
                    report.get(at).map(|l| l.trim()),
                    Some(format!("line {i}").as_str()),
                    "{out}"
                );
                at += 1;
            }
            continue;
        }
        assert_eq!(report.get(at).copied(), Some(line), "{out}");
        at += 1;
    }
}

/// The README's first line of kiln, run in a checkout of the demo with
/// the registry's name made the test registry's: it pushes.
#[test]
fn the_opening_example_pushes() {
    let text = readme();
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("kiln build -f Dockerfile"))
        .expect("the opening example");
    let reg = Registry::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let ctx = demo_copy(tmp.path());
    let line = line.replace("registry.example.com", &reg.addr);
    let o = bash(
        &line,
        &ctx,
        &[(
            "KILN_CACHE_DIR",
            tmp.path().join("store").display().to_string(),
        )],
    );
    assert!(o.status.success(), "{line}: {}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("pushed to {}/app:1.4", reg.addr)),
        "{}",
        stderr(&o)
    );
}
