//! RUN steps in the sandbox, over a busybox image made from Debian's
//! busybox-static: what a step sees (PID 1, hostname, /etc/hosts, /dev,
//! user, workdir, shell, network), the layer made from what it changed
//! (whiteouts, opaque directories, no mount stubs), failures, and
//! interruption.

use crate::image::{listing, read_oci, stderr, Ctx, ReadImage};

/// A context whose Dockerfile starts from a busybox image: `/bin/busybox`
/// with `/bin/sh` linking to it, `PATH=/bin`, and the given steps after.
pub fn busybox(steps: &str, files: &[(&str, &str)]) -> Ctx {
    let c = Ctx::new(
        &format!("FROM scratch\nCOPY bin /bin\nENV PATH=/bin\n{steps}"),
        files,
    );
    let bin = c.ctx().join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .expect("copying /bin/busybox (Debian's busybox-static; scripts/test installs it)");
    std::os::unix::fs::symlink("busybox", bin.join("sh")).expect("sh");
    c
}

/// The listing of layer `n` of an image (see `image::listing`).
fn layer(img: &ReadImage, n: usize) -> Vec<String> {
    listing(&img.layers[n])
}

fn paths(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .map(|l| l.split('\t').next().unwrap_or(""))
        .collect()
}

/// What the step sees: it is PID 1 in its own PID namespace, its
/// hostname and /etc/hosts are BuildKit's, /dev has the usual devices,
/// and the image's ENV and the ARGs in scope are its environment.
#[test]
fn a_step_sees_a_container() {
    let c = busybox(
        "ARG A=from-arg\nENV E=from-env\n\
         RUN busybox mkdir -p /out && echo $$ > /out/pid && busybox hostname > /out/hostname \
         && busybox cat /etc/hosts > /out/hosts && busybox ls /dev > /out/dev && echo \"$A $E $HOME\" > /out/env \
         && busybox ps -o pid,comm > /out/procs\n",
        &[],
    );
    let o = c.kiln(&["-o", "type=tar,dest=-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let files = crate::image::tar_files(&o.stdout);
    let text = |p: &str| String::from_utf8_lossy(&files[p]).into_owned();
    assert_eq!(text("out/pid"), "1\n");
    assert_eq!(text("out/hostname"), "buildkitsandbox\n");
    assert!(text("out/hosts").contains("127.0.0.1\tlocalhost buildkitsandbox"));
    for dev in [
        "null", "zero", "random", "urandom", "tty", "pts", "shm", "fd", "ptmx",
    ] {
        assert!(
            text("out/dev").lines().any(|l| l == dev),
            "/dev/{dev}: {}",
            text("out/dev")
        );
    }
    assert_eq!(text("out/env"), "from-arg from-env /\n");
    // ps itself (the shell execs the last command) as PID 1, alone:
    // nothing of the host is visible.
    let procs: Vec<String> = text("out/procs")
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(procs, ["1 busybox"], "{}", text("out/procs"));
}

/// The layer holds what the step changed, as BuildKit writes it: new
/// files, a whiteout for a deleted one, whiteouts for what a directory
/// deleted and made again no longer has (BuildKit's differ writes no
/// opaque markers), the parents of all that, and none of the mount points (/proc, /dev,
/// /sys, /etc/hosts...) the sandbox had to create in an image that has
/// none.
#[test]
fn a_steps_layer_is_what_it_changed() {
    let c = busybox(
        "COPY tree /tree\n\
         RUN busybox rm /tree/gone && busybox rm -r /tree/dir && busybox mkdir /tree/dir \
         && echo new > /tree/dir/new && echo added > /added && busybox ln /added /added-link \
         && busybox mkfifo /fifo && busybox chmod 4755 /added\n",
        &[
            ("tree/gone", "gone\n"),
            ("tree/keep", "keep\n"),
            ("tree/dir/old", "old\n"),
        ],
    );
    let img = c.build_oci(&[]);
    assert_eq!(img.layers.len(), 3, "COPY bin, COPY tree, RUN");
    let run = layer(&img, 2);
    let p = paths(&run);
    assert_eq!(
        p,
        [
            "added",
            "added-link",
            "fifo",
            "tree/",
            "tree/dir/",
            "tree/dir/new",
            "tree/dir/.wh.old",
            "tree/.wh.gone",
        ],
        "{run:#?}"
    );
    let added = &run[0];
    assert!(added.contains("\tfile\t4755\t"), "{added}");
    assert!(run[1].contains("\thardlink\t"), "{}", run[1]);
    assert!(run[2].contains("\tfifo\t"), "{}", run[2]);
    let history = img.config["history"].as_array().expect("history");
    assert_eq!(
        history.last().expect("history")["created_by"],
        "RUN /bin/sh -c busybox rm /tree/gone && busybox rm -r /tree/dir && busybox mkdir /tree/dir \
         && echo new > /tree/dir/new && echo added > /added && busybox ln /added /added-link \
         && busybox mkfifo /fifo && busybox chmod 4755 /added # buildkit"
    );
    // The files a later step and the exported filesystem see.
    let o = c.kiln(&["-o", "type=tar,dest=-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let files = crate::image::tar_files(&o.stdout);
    assert!(files.contains_key("tree/keep") && files.contains_key("tree/dir/new"));
    assert!(!files.contains_key("tree/gone") && !files.contains_key("tree/dir/old"));
    assert!(!files
        .keys()
        .any(|k| k.starts_with("proc") || k.starts_with("etc")));
}

/// USER (names from the image's /etc/passwd and /etc/group, with
/// supplementary groups), WORKDIR (created when missing) and SHELL apply
/// to RUN; a heredoc with a shebang runs as a script.
#[test]
fn user_workdir_and_shell_apply() {
    let c = busybox(
        "RUN busybox mkdir -p /etc /tmp && busybox chmod 1777 /tmp \
         && echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd \
         && echo 'app:x:1000:1000:app:/home/app:/bin/sh' >> /etc/passwd \
         && printf 'root:x:0:\\napp:x:1000:\\nextra:x:2000:app\\n' > /etc/group\n\
         USER app\nWORKDIR /work/here\n\
         RUN busybox id > /tmp/id && busybox pwd > /tmp/pwd && echo $HOME > /tmp/home\n\
         SHELL [\"/bin/busybox\", \"sh\", \"-c\"]\nUSER root\n\
         RUN echo $0 > /shell\n\
         RUN <<EOF\n#!/bin/sh\necho from-heredoc > /heredoc\nEOF\n",
        &[],
    );
    let o = c.kiln(&["-o", "type=tar,dest=-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let files = crate::image::tar_files(&o.stdout);
    let text = |p: &str| String::from_utf8_lossy(&files[p]).into_owned();
    assert_eq!(
        text("tmp/id"),
        "uid=1000(app) gid=1000(app) groups=1000(app),2000(extra)\n"
    );
    assert_eq!(text("tmp/pwd"), "/work/here\n");
    assert_eq!(text("tmp/home"), "/home/app\n");
    assert_eq!(text("shell"), "sh\n");
    assert_eq!(text("heredoc"), "from-heredoc\n");
}

/// `--network=none`: the step has its own network namespace with only
/// `lo`, which is up.
#[test]
fn network_none_has_only_loopback() {
    let c = busybox(
        "RUN --network=none busybox ls /sys/class/net > /nets && busybox ping -c1 -W2 127.0.0.1 > /dev/null && echo ok > /ping\n",
        &[],
    );
    let o = c.kiln(&["-o", "type=tar,dest=-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let files = crate::image::tar_files(&o.stdout);
    assert_eq!(String::from_utf8_lossy(&files["nets"]), "lo\n");
    assert_eq!(String::from_utf8_lossy(&files["ping"]), "ok\n");
}

/// A failing command fails the build with exit 3, at its line, with its
/// exit code and its last lines of output; an unknown program says so.
#[test]
fn failing_steps_are_reported() {
    let c = busybox("RUN echo first && echo last-words && exit 7\n", &[]);
    let o = c.kiln(&["-o", "type=tar,dest=-"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("Dockerfile:4"), "{e}");
    assert!(
        e.contains("did not complete successfully: exit code: 7"),
        "{e}"
    );
    assert!(e.contains("    last-words"), "{e}");
    let c = busybox("RUN [\"/bin/no-such-program\"]\n", &[]);
    let o = c.kiln(&["-q", "-o", "type=tar,dest=-"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("no-such-program") && e.contains("not found"),
        "{e}"
    );
}

/// SIGTERM during a long step kills the step's processes, and leaves no
/// work directory, mount or process behind.
#[test]
fn an_interrupted_step_leaves_nothing() {
    let marker = format!("kiln-run-test-{}", std::process::id());
    let c = busybox(
        &format!("ENV MARKER={marker}\nRUN busybox sleep 300; true\n"),
        &[],
    );
    let child = std::process::Command::new(crate::util::kiln_bin())
        .args(["build", "--cache-dir"])
        .arg(c.path("store"))
        .arg(c.ctx())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kiln");
    let running = |m: &str| {
        std::fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .any(|p| {
                std::fs::read(p.path().join("environ"))
                    .map(|c| String::from_utf8_lossy(&c).contains(m))
                    .unwrap_or(false)
            })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !running(&format!("MARKER={marker}")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the step never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(128 + 15), "{}", stderr(&o));
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!running(&marker), "the step's process survived");
    let tmp: Vec<_> = std::fs::read_dir(c.path("store/tmp"))
        .expect("tmp")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(tmp.is_empty(), "left in the store: {tmp:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(c.path("store").to_str().expect("utf-8")));
}

/// The image is the same bytes every time (SOURCE_DATE_EPOCH set), RUN
/// layers included.
#[test]
fn run_layers_are_reproducible() {
    let c = busybox(
        "RUN echo data > /f && busybox mkdir -p /d/e && busybox touch /d/e/g\n",
        &[],
    );
    let mut digests = Vec::new();
    for store in ["s1", "s2"] {
        let out = c.path(&format!("{store}.tar"));
        let o = std::process::Command::new(crate::util::kiln_bin())
            .args(["build", "-q", "--cache-dir"])
            .arg(c.path(store))
            .arg("-o")
            .arg(format!("type=oci,dest={}", out.display()))
            .arg(c.ctx())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .expect("kiln");
        assert!(o.status.success(), "{}", stderr(&o));
        digests.push(read_oci(&std::fs::read(&out).expect("out")).manifest_digest);
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_eq!(digests[0], digests[1]);
}

/// A cache mount keeps its files from one build to the next, under its
/// id whatever the target, and none of them reaches a layer.
#[test]
fn cache_mounts_persist_and_stay_out_of_layers() {
    let c = busybox(
        "RUN --mount=type=cache,target=/cache,id=shared echo run >> /cache/log && busybox cat /cache/log | busybox wc -l > /count\n\
         RUN --mount=type=cache,target=/other,id=shared busybox cat /other/log | busybox wc -l > /count2\n",
        &[],
    );
    let mut counts = Vec::new();
    // --no-cache: the steps must run each time for the cache mount to grow.
    for _ in 0..2 {
        let img = c.build_oci(&["--no-cache"]);
        let all = crate::image::all_paths(&img);
        assert!(
            !all.iter()
                .any(|p| p.contains("cache") || p.contains("other") || p.contains("log")),
            "{all:?}"
        );
        let o = c.kiln(&["-q", "--no-cache", "-o", "type=tar,dest=-"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let files = crate::image::tar_files(&o.stdout);
        counts.push((
            String::from_utf8_lossy(&files["count"]).trim().to_string(),
            String::from_utf8_lossy(&files["count2"]).trim().to_string(),
        ));
    }
    // Two builds per round (OCI, then tar), one line per build.
    assert_eq!(counts, [("2".into(), "2".into()), ("4".into(), "4".into())]);
}

/// Bind mounts: the context by default (read-only, as `.dockerignore`
/// leaves it), a stage's files with `from=` and `source=`, one file, and
/// `rw` binds whose writes are thrown away; none reaches the layer.
#[test]
fn bind_mounts_read_the_context_stages_and_files() {
    let c = busybox(
        "FROM scratch AS other\nCOPY data.txt /sub/data.txt\n\
         FROM scratch\nCOPY bin /bin\nENV PATH=/bin\n\
         RUN --mount=target=/ctx busybox ls /ctx > /ctx-list && (echo x > /ctx/new 2>/dev/null && echo writable || echo read-only) > /ctx-rw\n\
         RUN --mount=type=bind,from=other,source=/sub,target=/o busybox cat /o/data.txt > /from-stage\n\
         RUN --mount=type=bind,source=data.txt,target=/one.txt busybox cat /one.txt > /one\n\
         RUN --mount=type=bind,from=other,target=/w,rw echo scribble > /w/sub/data.txt && busybox cat /w/sub/data.txt > /rw\n\
         RUN --mount=type=bind,from=other,target=/w busybox cat /w/sub/data.txt > /after\n",
        &[("data.txt", "data\n"), ("secret.env", "hidden\n"), (".dockerignore", "secret.env\n")],
    );
    // The busybox() helper writes its own first lines; this Dockerfile has
    // its own stages.
    let dockerfile = std::fs::read_to_string(c.ctx().join("Dockerfile")).expect("Dockerfile");
    let body = dockerfile.splitn(4, '\n').nth(3).expect("steps");
    std::fs::write(c.ctx().join("Dockerfile"), body).expect("Dockerfile");
    let o = c.kiln(&["-o", "type=tar,dest=-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let files = crate::image::tar_files(&o.stdout);
    let text = |p: &str| String::from_utf8_lossy(&files[p]).into_owned();
    let listed: Vec<&str> = files["ctx-list"]
        .split(|b| *b == b'\n')
        .map(|l| std::str::from_utf8(l).unwrap_or(""))
        .collect::<Vec<_>>()
        .into_iter()
        .filter(|l| !l.is_empty())
        .collect();
    assert!(
        listed.contains(&"data.txt") && listed.contains(&"Dockerfile"),
        "{listed:?}"
    );
    assert!(
        !listed.contains(&"secret.env"),
        "an ignored file was visible: {listed:?}"
    );
    assert_eq!(text("ctx-rw"), "read-only\n");
    assert_eq!(text("from-stage"), "data\n");
    assert_eq!(text("one"), "data\n");
    assert_eq!(text("rw"), "scribble\n");
    assert_eq!(text("after"), "data\n", "an rw bind's write was kept");
    assert!(
        !files.keys().any(|k| k.starts_with("ctx/")
            || k.starts_with("o/")
            || k.starts_with("w/")
            || k == "one.txt"),
        "{:?}",
        files.keys()
    );
}

/// tmpfs mounts are empty, sized, and never reach the layer.
#[test]
fn tmpfs_mounts() {
    let c = busybox(
        "RUN --mount=type=tmpfs,target=/scratch,size=1m echo x > /scratch/f && busybox df -k /scratch | busybox tail -1 | busybox awk '{print $2}' > /size\n",
        &[],
    );
    let o = c.kiln(&["-o", "type=tar,dest=-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let files = crate::image::tar_files(&o.stdout);
    assert_eq!(String::from_utf8_lossy(&files["size"]), "1024\n");
    assert!(!files.keys().any(|k| k.starts_with("scratch")));
}

/// Secrets reach the step as a file (with its mode and owner) and as an
/// environment variable, and nowhere else: not in any layer, the config,
/// the history, kiln's output or the store. A required secret that was
/// not given is an error that says how to give it (an optional one is
/// simply absent, as in BuildKit).
#[test]
fn secrets_reach_the_step_and_nothing_else() {
    let value = format!("s3cr3t-{}", std::process::id());
    let c = busybox(
        "RUN --mount=type=secret,id=tok,required=true,mode=0440,uid=5,gid=6 busybox stat -c '%a %u %g' /run/secrets/tok > /stat && busybox wc -c < /run/secrets/tok > /len\n\
         RUN --mount=type=secret,id=tok,env=TOKEN,target=/t test \"$TOKEN\" = \"$(busybox cat /t)\" && echo same > /same\n",
        &[],
    );
    std::fs::write(c.path("tok.txt"), &value).expect("secret file");
    let secret = format!("id=tok,src={}", c.path("tok.txt").display());
    let out = c.path("out.tar");
    let o = c.kiln(&[
        "--secret",
        &secret,
        "-o",
        &format!("type=oci,dest={}", out.display()),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let img = read_oci(&std::fs::read(&out).expect("out"));
    let o2 = c.kiln(&["--secret", &secret, "-o", "type=tar,dest=-"]);
    assert!(o2.status.success(), "{}", stderr(&o2));
    let files = crate::image::tar_files(&o2.stdout);
    assert_eq!(String::from_utf8_lossy(&files["stat"]), "440 5 6\n");
    assert_eq!(
        String::from_utf8_lossy(&files["len"]).trim(),
        value.len().to_string()
    );
    assert_eq!(String::from_utf8_lossy(&files["same"]), "same\n");
    let all = crate::image::all_paths(&img);
    assert!(
        !all.iter().any(|p| p.starts_with("run") || p == "t"),
        "{all:?}"
    );
    let needle = value.as_bytes();
    let contains = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    for l in &img.layers {
        assert!(!contains(l), "the secret is in a layer");
    }
    assert!(!contains(&img.config_raw), "the secret is in the config");
    assert!(!contains(&o.stderr) && !contains(&o.stdout) && !contains(&o2.stdout));
    for e in walkdir::WalkDir::new(c.path("store")).into_iter().flatten() {
        if e.file_type().is_file() {
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            assert!(!contains(&bytes), "the secret is in {}", e.path().display());
        }
    }
    // Secrets are not part of cache keys (as in Docker): the step must
    // run for the missing secret to matter.
    let o = c.kiln(&["--no-cache", "-o", "type=tar,dest=-"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("secret \"tok\" is required") && e.contains("--secret id=tok"),
        "{e}"
    );
}

/// `--ssh default` forwards the agent socket named by SSH_AUTH_SOCK: the
/// step sees a socket at the mount's target and SSH_AUTH_SOCK pointing
/// at it.
#[test]
fn ssh_agent_sockets_are_forwarded() {
    let c = busybox(
        "RUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo \"$SSH_AUTH_SOCK\" > /sock\n",
        &[],
    );
    let sock = c.path("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("socket");
    let o = c.kiln_env(
        &["--ssh", "default", "-o", "type=tar,dest=-"],
        &[("SSH_AUTH_SOCK", sock.to_str().expect("utf-8"))],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let files = crate::image::tar_files(&o.stdout);
    assert_eq!(
        String::from_utf8_lossy(&files["sock"]),
        "/run/buildkit/ssh_agent.0\n"
    );
    assert!(!files.keys().any(|k| k.starts_with("run")));
}

/// A step over more layers than a classic overlay mount option string
/// can name (each layer is passed on its own with `lowerdir+`): 150
/// layers, each adding a file, under long store paths.
#[test]
fn a_step_over_many_layers() {
    let mut steps = String::new();
    for i in 0..150 {
        steps.push_str(&format!("COPY f /layers/f{i}\n"));
    }
    steps.push_str("RUN busybox ls /layers | busybox wc -l > /count && busybox rm /layers/f0\n");
    let c = busybox(&steps, &[("f", "x\n")]);
    let deep = c.path(&format!("store-{}", "x".repeat(120)));
    let o = std::process::Command::new(crate::util::kiln_bin())
        .args(["build", "-q", "--cache-dir"])
        .arg(&deep)
        .args(["-o", "type=tar,dest=-"])
        .arg(c.ctx())
        .output()
        .expect("kiln");
    assert!(o.status.success(), "{}", stderr(&o));
    let files = crate::image::tar_files(&o.stdout);
    assert_eq!(String::from_utf8_lossy(&files["count"]), "150\n");
    assert!(!files.contains_key("layers/f0") && files.contains_key("layers/f149"));
}

/// An unprivileged user with subordinate ids in /etc/subuid and
/// /etc/subgid (made here when missing, as `useradd` makes them).
pub fn rootless_user() -> (u32, u32) {
    const NAME: &str = "kiln-rootless";
    let id = |flag: &str| {
        std::process::Command::new("id")
            .args([flag, NAME])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<u32>()
                    .ok()
            })
    };
    if id("-u").is_none() {
        let o = std::process::Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", NAME])
            .output()
            .expect("useradd");
        assert!(o.status.success() || id("-u").is_some(), "{}", stderr(&o));
    }
    let has = |file: &str| {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with(&format!("{NAME}:")))
    };
    if !has("/etc/subuid") || !has("/etc/subgid") {
        let o = std::process::Command::new("usermod")
            .args([
                "--add-subuids",
                "300000-365535",
                "--add-subgids",
                "300000-365535",
                NAME,
            ])
            .output()
            .expect("usermod");
        assert!(o.status.success(), "{}", stderr(&o));
    }
    (id("-u").expect("uid"), id("-g").expect("gid"))
}

/// Builds `c` as root and as `uid:gid` (a copy of the context they own),
/// SOURCE_DATE_EPOCH set; returns both outputs.
fn root_and_rootless(
    c: &Ctx,
    user: (u32, u32),
) -> (
    std::process::Output,
    Vec<u8>,
    std::process::Output,
    Vec<u8>,
    tempfile::TempDir,
) {
    root_and_rootless_with(c, user, &[])
}

/// As [`root_and_rootless`], with more `kiln build` arguments.
pub fn root_and_rootless_with(
    c: &Ctx,
    (uid, gid): (u32, u32),
    extra: &[&str],
) -> (
    std::process::Output,
    Vec<u8>,
    std::process::Output,
    Vec<u8>,
    tempfile::TempDir,
) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path().join("w");
    assert!(std::process::Command::new("cp")
        .arg("-a")
        .arg(c.ctx())
        .arg(&work)
        .status()
        .expect("cp")
        .success());
    assert!(std::process::Command::new("chown")
        .args(["-R", &format!("{uid}:{gid}")])
        .arg(tmp.path())
        .status()
        .expect("chown")
        .success());
    let build = |rootless: bool| {
        let out = tmp
            .path()
            .join(if rootless { "rootless.tar" } else { "root.tar" });
        let mut cmd = if rootless {
            let mut c = std::process::Command::new("setpriv");
            c.args([
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
                "--clear-groups",
            ])
            .arg(crate::util::kiln_bin());
            c
        } else {
            std::process::Command::new(crate::util::kiln_bin())
        };
        let o = cmd
            .args(["build", "-q", "--cache-dir"])
            .arg(tmp.path().join(if rootless { "s1" } else { "s0" }))
            .arg("-o")
            .arg(format!("type=oci,dest={}", out.display()))
            .args(extra)
            .arg(&work)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("HOME", tmp.path())
            .env_remove("KILN_USERNS")
            .output()
            .expect("kiln");
        let bytes = std::fs::read(&out).unwrap_or_default();
        (o, bytes)
    };
    let (o0, b0) = build(false);
    let (o1, b1) = build(true);
    (o0, b0, o1, b1, tmp)
}

/// Rootless RUN: an unprivileged user with subordinate ids builds in a
/// user namespace (overlay with `userxattr`, the sandbox, owners other
/// than root kept) to the same image digest as root.
#[test]
fn rootless_run_matches_root() {
    let c = busybox(
        "COPY --chown=7:8 data /data/\n\
         RUN busybox mkdir -p /etc && echo 'app:x:1000:1000::/home/app:/bin/sh' > /etc/passwd && \
         echo 'app:x:1000:' > /etc/group && busybox mkdir -p /home/app && busybox chown 1000:1000 /home/app && \
         busybox rm /data/gone && echo changed > /data/kept && busybox chown 33:44 /data/kept\n\
         USER app\nRUN busybox id -u > /home/app/uid && busybox touch /home/app/made\n",
        &[("data/gone", "g\n"), ("data/kept", "k\n")],
    );
    let user = rootless_user();
    let (o0, b0, o1, b1, tmp) = root_and_rootless(&c, user);
    assert!(o0.status.success(), "root: {}", stderr(&o0));
    assert!(o1.status.success(), "rootless: {}", stderr(&o1));
    assert!(!stderr(&o1).contains("warning"), "{}", stderr(&o1));
    let (i0, i1) = (read_oci(&b0), read_oci(&b1));
    let run = layer(&i1, 2);
    assert!(
        run.iter()
            .any(|l| l.starts_with("data/kept\tfile\t0644\t33\t44\t")),
        "{run:#?}"
    );
    assert!(
        layer(&i1, 3)
            .iter()
            .any(|l| l.starts_with("home/app/made\tfile\t0644\t1000\t1000\t")),
        "{:#?}",
        layer(&i1, 3)
    );
    assert_eq!(i0.manifest_digest, i1.manifest_digest);
    // The rootless store holds files of subordinate ids; `kiln prune`
    // removes it from inside the namespace.
    let store = tmp.path().join("s1");
    let copy_mode = std::env::var("KILN_SNAPSHOTTER").is_ok_and(|v| v == "copy");
    assert!(copy_mode || store.join("snapshots").is_dir());
    let o = std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={}", user.0),
            &format!("--regid={}", user.1),
            "--clear-groups",
        ])
        .arg(crate::util::kiln_bin())
        .args(["prune", "--all", "--cache-dir"])
        .arg(&store)
        .env("HOME", tmp.path())
        .output()
        .expect("kiln prune");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!store.exists());
}

/// Without subordinate ids (uid 65534 has none), kiln still runs RUN in a
/// user namespace where only root exists, and says what that costs; a
/// step as another user then fails with a clear error.
#[test]
fn rootless_without_subordinate_ids() {
    let c = busybox("RUN echo ok > /ok\n", &[]);
    let (o0, b0, o1, b1, _tmp) = root_and_rootless(&c, (65534, 65534));
    assert!(
        o0.status.success() && o1.status.success(),
        "{}",
        stderr(&o1)
    );
    assert!(
        stderr(&o1).contains("no subordinate ids"),
        "{}",
        stderr(&o1)
    );
    assert_eq!(read_oci(&b0).manifest_digest, read_oci(&b1).manifest_digest);
    let c = busybox("USER 1000\nRUN echo no > /no\n", &[]);
    let (_, _, o1, _, _tmp) = root_and_rootless(&c, (65534, 65534));
    assert_eq!(o1.status.code(), Some(3), "{}", stderr(&o1));
    assert!(stderr(&o1).contains("cannot set"), "{}", stderr(&o1));
}

/// A file past what a tar header's size field holds (an 8 GiB sparse
/// file a step makes): its size goes into a PAX record, as Go writes it,
/// and a later step on the image (the layer applied again, holes kept)
/// sees the same size. The layer is streamed, never held in memory.
#[test]
fn files_past_8_gib() {
    use std::io::Read as _;
    // 8^11 bytes: one more than the 11 octal digits of a ustar size hold.
    let size: u64 = 8 << 30;
    let c = busybox(&format!("RUN busybox truncate -s {size} /big\n"), &[]);
    let out = c.path("big.tar");
    let o = c.kiln(&["-q", "-o", &format!("type=oci,dest={}", out.display())]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The manifest, then the last layer, streamed.
    let mut jsons = std::collections::BTreeMap::new();
    let mut ar = tar::Archive::new(std::fs::File::open(&out).expect("archive"));
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        if e.header().size().expect("size") < 1 << 20 {
            let mut b = Vec::new();
            e.read_to_end(&mut b).expect("read");
            jsons.insert(e.path().expect("path").to_string_lossy().into_owned(), b);
        }
    }
    let blob = |d: &str| format!("blobs/sha256/{}", &d[7..]);
    let index: serde_json::Value = serde_json::from_slice(&jsons["index.json"]).expect("index");
    let m: serde_json::Value = serde_json::from_slice(
        &jsons[&blob(index["manifests"][0]["digest"].as_str().expect("digest"))],
    )
    .expect("manifest");
    let last = blob(
        m["layers"]
            .as_array()
            .and_then(|l| l.last())
            .and_then(|l| l["digest"].as_str())
            .expect("layer"),
    );
    let mut ar = tar::Archive::new(std::fs::File::open(&out).expect("archive"));
    let mut found = false;
    for e in ar.entries().expect("entries") {
        let e = e.expect("entry");
        if e.path().expect("path").to_string_lossy() != last {
            continue;
        }
        let mut layer = tar::Archive::new(flate2::read::GzDecoder::new(e));
        for le in layer.entries().expect("layer entries") {
            let le = le.expect("layer entry");
            if le.path().expect("path").to_string_lossy() == "big" {
                assert_eq!(le.size(), size, "the PAX size");
                assert_eq!(
                    le.header().size().expect("ustar size"),
                    0,
                    "not in the ustar field"
                );
                found = true;
            }
        }
    }
    assert!(found, "no big file in the last layer");
    // A step on that image sees the whole file, and the snapshot keeps the
    // holes.
    let layout = c.path("layout");
    std::fs::create_dir_all(&layout).expect("layout");
    tar::Archive::new(std::fs::File::open(&out).expect("archive"))
        .unpack(&layout)
        .expect("unpack");
    std::fs::remove_file(&out).expect("rm");
    let d = Ctx::new(
        &format!("FROM big\nRUN test \"$(busybox stat -c %s /big)\" = {size}\n"),
        &[],
    );
    let ctx_arg = format!("big=oci-layout://{}", layout.display());
    let o = d.kiln(&["-q", "--build-context", &ctx_arg]);
    assert!(o.status.success(), "{}", stderr(&o));
    let snaps = d.path("store/snapshots/sha256");
    // (No snapshots with the copy snapshotter.)
    for s in std::fs::read_dir(&snaps).into_iter().flatten().flatten() {
        let big = s.path().join("big");
        if let Ok(m) = std::fs::metadata(&big) {
            use std::os::unix::fs::MetadataExt;
            assert_eq!(m.len(), size);
            assert!(
                m.blocks() * 512 < 64 << 20,
                "the holes were filled: {} blocks",
                m.blocks()
            );
        }
    }
}

/// `--ssh ID=KEYFILE`: kiln runs an ssh-agent of its own holding the key
/// for the build; the step's SSH_AUTH_SOCK reaches it (OpenSSH's ssh-add,
/// with its libraries, lists the key inside the step), and the agent is
/// gone afterwards.
#[test]
fn ssh_key_files_get_an_agent() {
    let c = busybox(
        "COPY host /host\n\
         RUN --mount=type=ssh,id=deploy /host/ld.so --library-path /host/lib /host/ssh-add -l > /keys\n",
        &[],
    );
    let key = c.path("id_ed25519");
    let o = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-test", "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen (Debian's openssh-client)");
    assert!(o.status.success(), "{}", stderr(&o));
    // ssh-add and the shared libraries it needs, copied into the context.
    let host = c.ctx().join("host");
    std::fs::create_dir_all(host.join("lib")).expect("host");
    let ssh_add = std::process::Command::new("sh")
        .args(["-c", "command -v ssh-add"])
        .output()
        .expect("sh");
    let ssh_add = String::from_utf8_lossy(&ssh_add.stdout).trim().to_string();
    std::fs::copy(&ssh_add, host.join("ssh-add")).expect("ssh-add");
    let ldd = std::process::Command::new("ldd")
        .arg(&ssh_add)
        .output()
        .expect("ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(std::path::PathBuf::from);
        let Some(path) = path else { continue };
        let name = path.file_name().expect("name").to_os_string();
        if line.contains("ld-linux") {
            std::fs::copy(&path, host.join("ld.so")).expect("loader");
        } else {
            std::fs::copy(&path, host.join("lib").join(name)).expect("lib");
        }
    }
    let spec = format!("deploy={}", key.display());
    let o = c.kiln(&["--ssh", &spec, "-o", "type=tar,dest=-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let files = crate::image::tar_files(&o.stdout);
    let keys = String::from_utf8_lossy(&files["keys"]).into_owned();
    let fp = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&key)
        .output()
        .expect("ssh-keygen -l");
    let fingerprint = String::from_utf8_lossy(&fp.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_string();
    assert!(
        keys.contains(&fingerprint) && keys.contains("kiln-test"),
        "{keys}"
    );
    // The agent (its socket was in the build's work directory, in the
    // store) is gone with the build.
    let store = c.path("store").to_string_lossy().into_owned();
    let agents = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|p| {
            std::fs::read(p.path().join("cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c).into_owned();
                    c.starts_with("ssh-agent") && c.contains(&store)
                })
                .unwrap_or(false)
        })
        .count();
    assert_eq!(agents, 0);
}

/// `RUN --mount=from=NAME` reads named contexts: a directory, and an
/// image (an OCI layout), as `--build-context` gives them.
#[test]
fn mounts_from_named_contexts() {
    let img = busybox(
        "COPY img.txt /img.txt\n",
        &[("img.txt", "from the image\n")],
    );
    let layout = img.path("layout");
    let built = img.build_oci(&[]);
    drop(built);
    std::fs::create_dir_all(&layout).expect("layout");
    tar::Archive::new(std::fs::File::open(img.path("out.tar")).expect("out.tar"))
        .unpack(&layout)
        .expect("unpack");
    let c = busybox(
        "RUN --mount=from=dirctx,target=/d busybox cat /d/dir.txt > /from-dir\n\
         RUN --mount=from=imgctx,source=/img.txt,target=/i.txt busybox cat /i.txt > /from-image\n",
        &[],
    );
    let dir = c.path("dirctx");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("dir.txt"), "from the directory\n").expect("dir.txt");
    let o = c.kiln(&[
        "--build-context",
        &format!("dirctx={}", dir.display()),
        "--build-context",
        &format!("imgctx=oci-layout://{}", layout.display()),
        "-o",
        "type=tar,dest=-",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let files = crate::image::tar_files(&o.stdout);
    assert_eq!(
        String::from_utf8_lossy(&files["from-dir"]),
        "from the directory\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&files["from-image"]),
        "from the image\n"
    );
}

/// Nothing a Dockerfile or an image says reaches the host: a secret
/// target climbing with `..`, a WORKDIR and a mount target through an
/// absolute symlink of the image all stay in the step's root; a heredoc
/// script name cannot hold a `/`; the step keeps Docker's default
/// capabilities only, and /proc/sys and /sys are read-only.
#[test]
fn a_step_cannot_reach_the_host() {
    let host = std::env::temp_dir().join(format!("kiln-host-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&host);
    let c = busybox(
        &format!(
            "RUN busybox ln -s {host} /link\n\
             WORKDIR /link/app\n\
             RUN --mount=type=secret,id=s,target=../../../../../..{host}/secret \
             --mount=type=tmpfs,target=/link/tmp \
             busybox grep CapBnd /proc/self/status > /caps; \
             (echo 1 > /proc/sys/kernel/sysrq) 2>/dev/null && echo writable > /proc-sys || echo read-only > /proc-sys; \
             busybox touch /sys/kiln 2>/dev/null && echo writable > /sys-rw || echo read-only > /sys-rw\n",
            host = host.display()
        ),
        &[("s.txt", "secret\n")],
    );
    let secret = format!("id=s,src={}", c.ctx().join("s.txt").display());
    let o = c.kiln(&["--secret", &secret, "-o", "type=tar,dest=-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !host.exists(),
        "the build wrote to the host's {}",
        host.display()
    );
    let files = crate::image::tar_files(&o.stdout);
    let text = |p: &str| String::from_utf8_lossy(&files[p]).into_owned();
    assert_eq!(text("caps"), "CapBnd:\t00000000a80425fb\n");
    assert_eq!(text("proc-sys"), "read-only\n");
    assert_eq!(text("sys-rw"), "read-only\n");
    // The WORKDIR went through the image's own symlink, inside the root.
    assert!(
        files
            .keys()
            .any(|k| k.ends_with("/app/") || k.ends_with("/app")),
        "{:?}",
        files.keys()
    );

    let c = busybox("RUN <<../../x\n#!/bin/sh\necho no\n../../x\n", &[]);
    let o = c.kiln(&["-o", "type=tar,dest=-"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("cannot name a script file"),
        "{}",
        stderr(&o)
    );
}
