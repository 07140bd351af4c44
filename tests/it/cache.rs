//! The build cache and the solver: hits skip work and read no layer data,
//! every miss says why, stages run in parallel (and only those the target
//! needs), a failure cancels the rest, and concurrent or killed builds
//! leave a cache the next build can use.

use crate::image::{read_oci, stderr, Ctx};
use crate::registry::Registry;
use crate::run::busybox;
use std::process::{Command, Stdio};

const SDE: (&str, &str) = ("SOURCE_DATE_EPOCH", "1700000000");

/// A context whose Dockerfile starts with a busybox stage named `tools`,
/// then `rest`.
fn tools(rest: &str) -> Ctx {
    let c = busybox("", &[]);
    let dockerfile = format!("FROM scratch AS tools\nCOPY bin /bin\nENV PATH=/bin\n{rest}");
    std::fs::write(c.ctx().join("Dockerfile"), dockerfile).expect("Dockerfile");
    c
}

/// What the output says of `step` (plain progress): `CACHED`, or
/// `cache miss: REASON` (`would run: REASON` in a dry run).
pub fn miss_reason(out: &str, step: &str) -> String {
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    let header = format!("] {step}");
    let id = lines
        .iter()
        .find(|l| l.starts_with('#') && l.ends_with(&header))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("no step {step:?} in:\n{out}"));
    let prefix = format!("{id} ");
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix))
        .find(|l| *l == "CACHED" || l.starts_with("cache miss: ") || l.starts_with("would run: "))
        .unwrap_or_else(|| panic!("no verdict for {step:?} in:\n{out}"))
        .to_string()
}

fn digest_of(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("built "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("no digest in:\n{out}"))
        .to_string()
}

fn build(c: &Ctx, args: &[&str]) -> String {
    let o = c.kiln_env(args, &[SDE]);
    assert!(o.status.success(), "{}", stderr(&o));
    stderr(&o)
}

/// An unchanged rebuild runs nothing; a changed file, a changed ARG and
/// `--no-cache` each rebuild what they must and say why; times alone
/// change nothing.
#[test]
fn rebuilds_run_only_what_changed_and_say_why() {
    let c = busybox(
        "ARG VERSION=1.2\n\
         COPY src /app/src\n\
         RUN busybox cat /app/src/app.py > /out && echo $VERSION > /v\n\
         RUN echo done > /done\n",
        &[("src/app.py", "print(1)\n"), ("src/lib.py", "x = 1\n")],
    );
    let first = build(&c, &[]);
    assert_eq!(
        miss_reason(&first, "COPY src /app/src"),
        "cache miss: no earlier build of this step"
    );
    assert!(first.contains("(0 steps cached, 4 ran)"), "{first}");
    let digest = digest_of(&first);

    let warm = build(&c, &[]);
    assert!(warm.contains("(4 steps cached, 0 ran)"), "{warm}");
    assert_eq!(digest_of(&warm), digest);

    // A new mtime, the same contents: still cached.
    let f = std::fs::File::options()
        .write(true)
        .open(c.ctx().join("src/lib.py"))
        .expect("open");
    f.set_modified(std::time::UNIX_EPOCH).expect("mtime");
    let touched = build(&c, &[]);
    assert!(touched.contains("(4 steps cached, 0 ran)"), "{touched}");

    c.write("src/app.py", "print(2)\n");
    let changed = build(&c, &[]);
    assert_eq!(
        miss_reason(&changed, "COPY src /app/src"),
        "cache miss: 1 file changed: src/app.py"
    );
    assert_eq!(
        miss_reason(
            &changed,
            "RUN busybox cat /app/src/app.py > /out && echo $VERSION > /v"
        ),
        "cache miss: parent changed (COPY src /app/src)"
    );
    assert!(changed.contains("(1 steps cached, 3 ran)"), "{changed}");

    let arg = build(&c, &["--build-arg", "VERSION=1.3"]);
    assert_eq!(
        miss_reason(
            &arg,
            "RUN busybox cat /app/src/app.py > /out && echo $VERSION > /v"
        ),
        "cache miss: ARG VERSION changed: 1.2 -> 1.3"
    );
    assert_eq!(miss_reason(&arg, "COPY src /app/src"), "CACHED");

    let forced = build(&c, &["--no-cache"]);
    assert_eq!(
        miss_reason(&forced, "COPY src /app/src"),
        "cache miss: --no-cache"
    );
    assert!(forced.contains("(0 steps cached, 4 ran)"), "{forced}");
    // What ran again is what the cache gave: the build is reproducible.
    assert_eq!(digest_of(&forced), digest_of(&changed));

    // The files of a cached build are the right ones.
    let o = c.kiln_env(&["-o", "type=tar,dest=-"], &[SDE]);
    assert!(o.status.success(), "{}", stderr(&o));
    let files = crate::image::tar_files(&o.stdout);
    assert_eq!(String::from_utf8_lossy(&files["out"]), "print(2)\n");
    assert_eq!(String::from_utf8_lossy(&files["v"]), "1.2\n");
}

/// `--no-cache-filter` reruns the named stage only.
#[test]
fn no_cache_filter_names_stages() {
    let c = busybox(
        "RUN echo a > /a\n\
         FROM scratch AS other\n\
         COPY --from=0 /a /a\n",
        &[],
    );
    let _ = build(&c, &[]);
    let o = build(&c, &["--no-cache-filter", "other"]);
    assert_eq!(miss_reason(&o, "RUN echo a > /a"), "CACHED");
    assert_eq!(
        miss_reason(&o, "COPY --from=0 /a /a"),
        "cache miss: --no-cache-filter other"
    );
}

/// A fully cached rebuild with `--push` reads no layer data: the store's
/// layer blobs are overwritten with zeros after the first build, and the
/// second still succeeds, uploads nothing, and pushes the same manifest.
#[test]
fn a_cached_rebuild_reads_no_layer_data() {
    let reg = Registry::start();
    let c = busybox(
        "COPY app.txt /app/\nRUN busybox cat /app/app.txt > /copy\n",
        &[("app.txt", "app\n")],
    );
    let tag = format!("{}/cached:1", reg.addr);
    let first = build(
        &c,
        &[
            "-t",
            &tag,
            "--push",
            "-o",
            &format!("type=oci,dest={}", c.path("out.tar").display()),
        ],
    );
    let img = read_oci(&std::fs::read(c.path("out.tar")).expect("out.tar"));
    let digests: Vec<String> = img.manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_string())
        .collect();
    assert_eq!(digests.len(), 3);
    for d in &digests {
        let p = c
            .path("store/blobs/sha256")
            .join(d.trim_start_matches("sha256:"));
        let len = std::fs::metadata(&p).expect("blob").len();
        std::fs::write(&p, vec![0u8; len as usize]).expect("zero the blob");
    }
    let second = build(&c, &["-t", &tag, "--push"]);
    assert!(second.contains("(3 steps cached, 0 ran)"), "{second}");
    assert!(second.contains("(0 of 3 layers uploaded"), "{second}");
    assert_eq!(digest_of(&second), digest_of(&first));
}

/// A base image whose tag moved: the first step after FROM says so.
#[test]
fn a_moved_base_image_is_named() {
    let reg = Registry::start();
    let _b = reg.seed_base("base:v1", None);
    let c = Ctx::new(
        &format!("FROM {}/base:v1\nCOPY app.txt /app/\n", reg.addr),
        &[("app.txt", "app\n")],
    );
    let _ = build(&c, &[]);
    let other = Ctx::new(
        "FROM scratch\nCOPY base.txt /base/\n",
        &[("base.txt", "base, version 2\n")],
    );
    other.build_oci(&["-t", "base:v2"]);
    reg.push_archive(&other.path("out.tar"), "v2", "base:v1");
    let o = build(&c, &["--pull"]);
    let reason = miss_reason(&o, "COPY app.txt /app/");
    assert!(
        reason.starts_with(&format!(
            "cache miss: base image {}/base:v1 now resolves to sha256:",
            reg.addr
        )),
        "{reason}"
    );
    // Without --pull the tag resolves as it did last: all cached.
    let again = build(&c, &[]);
    assert_eq!(miss_reason(&again, "COPY app.txt /app/"), "CACHED");
}

/// Two stages that each wait for the other can only finish if they run
/// at the same time: they meet in a shared cache mount. The unused stage
/// would fail the build if it ran. With `--max-parallelism 1` the stages
/// run one after the other, so the first gives up waiting.
#[test]
fn stages_run_in_parallel_and_unused_ones_not_at_all() {
    let wait = |me: &str, other: &str| {
        format!(
            "RUN --mount=type=cache,id=meet,target=/meet,sharing=shared \
             touch /meet/{me} && i=0 && while [ ! -e /meet/{other} ]; do \
             sleep 0.1; i=$((i+1)); [ $i -lt 150 ] || exit 7; done && echo {me} > /{me}\n"
        )
    };
    let dockerfile = format!(
        "FROM tools AS a\n{}\
         FROM tools AS b\n{}\
         FROM tools AS unused\nRUN exit 9\n\
         FROM scratch\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n",
        wait("a", "b"),
        wait("b", "a")
    );
    let c = tools(&dockerfile);
    let o = build(&c, &[]);
    assert!(!o.contains("unused"), "the unused stage ran:\n{o}");
    let serial = tools(&dockerfile);
    let o = serial.kiln_env(&["--max-parallelism", "1"], &[SDE]);
    assert!(!o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("exit code: 7"), "{}", stderr(&o));
}

/// A failing stage stops the others: the running step of the other
/// stage is killed, and the build ends at once.
#[test]
fn a_failure_cancels_the_other_stages() {
    let marker = format!("{}.5", 40 + std::process::id() % 50);
    let c = tools(&format!(
        "FROM tools AS slow\nRUN sleep {marker}\n\
         FROM tools AS bad\nRUN sleep 1 && exit 3\n\
         FROM scratch\nCOPY --from=slow /bin /s\nCOPY --from=bad /bin /b\n"
    ));
    let start = std::time::Instant::now();
    let o = c.kiln_env(&[], &[SDE]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("exit code: 3"), "{}", stderr(&o));
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "the build waited for the slow stage: {:?}",
        start.elapsed()
    );
    let ps = Command::new("pgrep")
        .args(["-f", &format!("sleep {marker}")])
        .output()
        .expect("pgrep");
    assert!(
        ps.stdout.is_empty(),
        "the slow step still runs: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
}

/// Three builds of the same Dockerfile at once, sharing one cache: all
/// succeed with the same image, and a fourth is all hits.
#[test]
fn concurrent_builds_share_a_cache() {
    let c = busybox(
        "COPY a.txt /a.txt\nRUN busybox sha256sum /bin/busybox > /sum && sleep 1\nRUN echo two > /two\n",
        &[("a.txt", "a\n")],
    );
    let children: Vec<_> = (0..3)
        .map(|_| {
            Command::new(crate::util::kiln_bin())
                .arg("build")
                .arg("--cache-dir")
                .arg(c.path("store"))
                .arg(c.ctx())
                .env(SDE.0, SDE.1)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("kiln")
        })
        .collect();
    let mut digests = Vec::new();
    for ch in children {
        let o = ch.wait_with_output().expect("wait");
        assert!(o.status.success(), "{}", stderr(&o));
        digests.push(digest_of(&stderr(&o)));
    }
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    let last = build(&c, &[]);
    assert!(last.contains("(4 steps cached, 0 ran)"), "{last}");
    assert_eq!(digest_of(&last), digests[0]);
}

/// kill -9 at random moments, build after build, then a build to the end:
/// it succeeds, and gives the image a build in a fresh cache gives.
#[test]
fn builds_killed_at_random_leave_a_usable_cache() {
    let steps = "COPY a.txt /a.txt\n\
                 RUN busybox seq 1 20000 > /numbers && sleep 0.2\n\
                 RUN busybox cp /numbers /again && busybox rm /numbers\n\
                 COPY b.txt /b.txt\n\
                 RUN echo end > /end\n";
    let c = busybox(steps, &[("a.txt", "a\n"), ("b.txt", "b\n")]);
    let mut rng = crate::util::Lcg(0x6b696c6e);
    for _ in 0..8 {
        let mut child = Command::new(crate::util::kiln_bin())
            .arg("build")
            .arg("--cache-dir")
            .arg(c.path("store"))
            .arg("--no-cache-filter")
            .arg(if rng.below(2) == 0 { "none" } else { "0" })
            .arg(c.ctx())
            .env(SDE.0, SDE.1)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kiln");
        std::thread::sleep(std::time::Duration::from_millis(rng.below(900) as u64));
        let _ = child.kill();
        let _ = child.wait();
    }
    let killed = build(&c, &[]);
    let fresh = busybox(steps, &[("a.txt", "a\n"), ("b.txt", "b\n")]);
    let clean = build(&fresh, &[]);
    assert_eq!(digest_of(&killed), digest_of(&clean), "{killed}");
    // And the files are right.
    let o = c.kiln_env(&["-o", "type=tar,dest=-"], &[SDE]);
    assert!(o.status.success(), "{}", stderr(&o));
    let files = crate::image::tar_files(&o.stdout);
    assert_eq!(files["again"].len(), 108894);
    assert!(!files.contains_key("numbers"));
}

fn kiln_cmd(c: &Ctx, args: &[&str]) -> std::process::Output {
    Command::new(crate::util::kiln_bin())
        .args(args)
        .arg("--cache-dir")
        .arg(c.path("store"))
        .output()
        .expect("kiln")
}

fn entries(c: &Ctx) -> usize {
    std::fs::read_dir(c.path("store/cache/index")).map_or(0, |rd| rd.count())
}

/// `--dry-run` says which steps would come from the cache and why the
/// others would run, and runs nothing.
#[test]
fn dry_run_shows_what_would_hit() {
    let c = busybox(
        "COPY app.txt /app/\nRUN busybox cat /app/app.txt > /copy\n",
        &[("app.txt", "one\n")],
    );
    let _ = build(&c, &[]);
    let o = c.kiln_env(&["--dry-run"], &[SDE]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(miss_reason(&out, "COPY app.txt /app/"), "CACHED");
    assert_eq!(
        miss_reason(&out, "RUN busybox cat /app/app.txt > /copy"),
        "CACHED"
    );
    let before = entries(&c);
    c.write("app.txt", "two\n");
    let o = c.kiln_env(&["--dry-run"], &[SDE]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("would run: 1 file changed: app.txt"), "{out}");
    assert!(
        out.contains("would run: parent would run (COPY app.txt /app/)"),
        "{out}"
    );
    assert_eq!(entries(&c), before, "a dry run built something");
}

/// `kiln prune` keeps what the index reaches, `--filter until=` drops
/// entries not used lately, `--keep-storage` the least recently used
/// ones, `--all` everything; `kiln du` reports; a running build holds
/// prune off until it ends.
#[test]
fn prune_and_du_manage_the_cache() {
    let c = busybox(
        "ARG V=1\nRUN echo $V > /v && busybox seq 1 50000 > /n\n",
        &[],
    );
    let _ = build(&c, &["--build-arg", "V=1"]);
    let _ = build(&c, &["--build-arg", "V=2"]);
    assert_eq!(entries(&c), 3);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // Used again: V=2's entries (and the shared COPY) are recent.
    let _ = build(&c, &["--build-arg", "V=2"]);
    let du = kiln_cmd(&c, &["du"]);
    assert!(du.status.success(), "{}", stderr(&du));
    let text = String::from_utf8_lossy(&du.stdout).into_owned();
    assert!(text.contains("cache entries       3"), "{text}");

    let p = kiln_cmd(&c, &["prune", "--filter", "until=1s"]);
    assert!(p.status.success(), "{}", stderr(&p));
    assert!(
        stderr(&p).contains("removed 1 cache entries"),
        "{}",
        stderr(&p)
    );
    assert_eq!(entries(&c), 2);
    let again = build(&c, &["--build-arg", "V=2"]);
    assert!(again.contains("(2 steps cached, 0 ran)"), "{again}");
    let v1 = build(&c, &["--build-arg", "V=1"]);
    assert!(v1.contains("(1 steps cached, 1 ran)"), "{v1}");

    // A build in progress keeps prune waiting, and is not disturbed.
    let slow = busybox("RUN sleep 2 && echo slow > /slow\n", &[]);
    let child = Command::new(crate::util::kiln_bin())
        .arg("build")
        .arg("--cache-dir")
        .arg(c.path("store"))
        .arg(slow.ctx())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("kiln");
    std::thread::sleep(std::time::Duration::from_millis(700));
    let p = kiln_cmd(&c, &["prune", "--keep-storage", "0"]);
    assert!(p.status.success(), "{}", stderr(&p));
    assert!(
        stderr(&p).contains("waiting for the builds"),
        "{}",
        stderr(&p)
    );
    let o = child.wait_with_output().expect("wait");
    assert!(o.status.success(), "{}", stderr(&o));
    // --keep-storage 0 dropped every entry, then what they reached.
    assert_eq!(entries(&c), 0);
    let du = kiln_cmd(&c, &["du"]);
    let text = String::from_utf8_lossy(&du.stdout).into_owned();
    assert!(text.contains("snapshots           0"), "{text}");

    let p = kiln_cmd(&c, &["prune", "--all"]);
    assert!(p.status.success(), "{}", stderr(&p));
    assert!(!c.path("store").exists());
    let bad = kiln_cmd(&c, &["prune", "--filter", "since=1h"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
}

/// A COPY from a stage is keyed by the files it takes, not by the
/// stage's key: a stage rebuilt to the same files still gives a hit, and
/// one rebuilt to other files names them.
#[test]
fn a_stage_rebuilt_to_the_same_files_still_gives_a_hit() {
    let c = tools(
        "FROM tools AS builder\nARG X=1\n\
         RUN echo built > /out && if [ \"$X\" = 3 ]; then echo three >> /out; fi\n\
         FROM scratch\nCOPY --from=builder /out /out\n",
    );
    let run = "RUN echo built > /out && if [ \"$X\" = 3 ]; then echo three >> /out; fi";
    let _ = build(&c, &[]);
    let o = build(&c, &["--build-arg", "X=2"]);
    assert_eq!(miss_reason(&o, run), "cache miss: ARG X changed: 1 -> 2");
    assert_eq!(miss_reason(&o, "COPY --from=builder /out /out"), "CACHED");
    let o = build(&c, &["--build-arg", "X=3"]);
    assert_eq!(
        miss_reason(&o, "COPY --from=builder /out /out"),
        "cache miss: 1 file changed: out"
    );
}

/// ADD of a URL without --checksum is fetched on every build; the steps
/// after it hit when it brought the same bytes, and run again when the
/// bytes changed.
#[test]
fn add_of_a_url_is_fetched_again_and_keys_what_it_brought() {
    let body = std::sync::Arc::new(std::sync::Mutex::new(b"one\n".to_vec()));
    let served = body.clone();
    let addr = crate::image::serve_http(move |_| crate::image::Reply {
        last_modified: Some("Wed, 15 Nov 2023 10:00:00 GMT"),
        ..crate::image::Reply::ok("text/plain", served.lock().expect("body").clone())
    });
    let c = tools(&format!(
        "FROM tools\nADD http://{addr}/f.txt /f.txt\nRUN busybox cat /f.txt > /copy\n"
    ));
    let add = format!("ADD http://{addr}/f.txt /f.txt");
    let _ = build(&c, &[]);
    let o = build(&c, &[]);
    assert!(
        miss_reason(&o, &add).starts_with("cache miss: ADD of http://"),
        "{o}"
    );
    assert_eq!(miss_reason(&o, "RUN busybox cat /f.txt > /copy"), "CACHED");
    // Fetched again, the same bytes make the same layer, which keeps its
    // time: the same image.
    let first = c.build_oci(&[]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(c.build_oci(&[]).manifest_digest, first.manifest_digest);
    *body.lock().expect("body") = b"two\n".to_vec();
    let o = build(&c, &[]);
    assert_eq!(
        miss_reason(&o, "RUN busybox cat /f.txt > /copy"),
        "cache miss: parent changed (".to_string() + &add + ")"
    );
    let o = c.kiln_env(&["-o", "type=tar,dest=-"], &[SDE]);
    let files = crate::image::tar_files(&o.stdout);
    assert_eq!(String::from_utf8_lossy(&files["copy"]), "two\n");
}

/// Found in review: an ENV overriding an ARG of the same name, and the
/// build's --network, are part of a RUN's key; a stage run again under
/// the same keys (--no-cache-filter) is known by what it made, so a COPY
/// from it is not served the old files.
#[test]
fn keys_cover_env_over_arg_network_and_rerun_stages() {
    let c = busybox("ARG X=1\nENV X=foo\nRUN echo $X > /o\n", &[]);
    let _ = build(&c, &[]);
    std::fs::write(
        c.ctx().join("Dockerfile"),
        "FROM scratch\nCOPY bin /bin\nENV PATH=/bin\nARG X=1\nENV X=bar\nRUN echo $X > /o\n",
    )
    .expect("Dockerfile");
    let o = build(&c, &[]);
    assert_eq!(
        miss_reason(&o, "RUN echo $X > /o"),
        "cache miss: ENV X changed: foo -> bar"
    );
    let o = build(&c, &["--network", "none"]);
    assert_eq!(
        miss_reason(&o, "RUN echo $X > /o"),
        "cache miss: --network changed: (not given) -> none"
    );

    let c = tools(
        "FROM tools AS b\nRUN busybox cat /proc/sys/kernel/random/uuid > /s\n\
         FROM scratch\nCOPY --from=b /s /s\n",
    );
    let read = |c: &Ctx| {
        let o = c.kiln_env(&["-o", "type=tar,dest=-"], &[SDE]);
        assert!(o.status.success(), "{}", stderr(&o));
        crate::image::tar_files(&o.stdout)["s"].clone()
    };
    let first = read(&c);
    assert_eq!(read(&c), first, "a cached rebuild keeps the stage's files");
    let o = build(&c, &["--no-cache-filter", "b"]);
    assert_eq!(
        miss_reason(&o, "RUN busybox cat /proc/sys/kernel/random/uuid > /s"),
        "cache miss: --no-cache-filter b"
    );
    assert_eq!(
        miss_reason(&o, "COPY --from=b /s /s"),
        "cache miss: 1 file changed: s"
    );
    assert_ne!(read(&c), first);
}

/// A context file rewritten all through the build: the COPY's layer is
/// made, but not cached under a key that does not describe it.
#[test]
fn sources_changing_during_a_step_are_not_cached() {
    let c = busybox(
        "COPY live.txt /live.txt\n",
        &[("live.txt", "00000000000000000000")],
    );
    let path = c.ctx().join("live.txt");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                // Whole files renamed into place: a reader sees one or
                // the other, never a truncated one.
                let tmp = path.with_extension("tmp");
                let _ = std::fs::write(&tmp, format!("{n:020}"));
                let _ = std::fs::rename(&tmp, &path);
            }
        })
    };
    // The writer may be starved on a busy machine: a few tries.
    let mut seen = None;
    for _ in 0..5 {
        let before = entries(&c);
        let o = build(&c, &["--no-cache"]);
        if o.contains("its sources changed while it ran; its layer is not cached") {
            seen = Some((before, entries(&c)));
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = writer.join();
    let (before, after) = seen.expect("the change was never noticed");
    // The COPY of bin/ may be new; the COPY of live.txt is not cached.
    assert!(after <= before.max(1), "{before} -> {after} entries");
}

/// Linking two files that had the same contents (`ln -f a b`) changes
/// what COPY makes (one file and a hardlink to it), so it is a miss that
/// says so, not a stale hit that still gives two files.
#[test]
fn a_new_hardlink_is_a_miss() {
    let c = Ctx::new(
        "FROM scratch\nCOPY d /d\n",
        &[("d/a", "same\n"), ("d/b", "same\n")],
    );
    let img = c.build_oci(&[]);
    let kinds = |img: &crate::image::ReadImage| -> Vec<String> {
        crate::image::listing(&img.layers[0])
            .iter()
            .map(|l| l.split('\t').take(2).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(kinds(&img), ["d/ dir", "d/a file", "d/b file"]);
    std::fs::remove_file(c.ctx().join("d/b")).expect("rm");
    std::fs::hard_link(c.ctx().join("d/a"), c.ctx().join("d/b")).expect("ln");
    let out = c.path("out.tar");
    let o = c.kiln(&[
        "--progress=plain",
        "-o",
        &format!("type=oci,dest={}", out.display()),
    ]);
    assert!(o.status.success(), "{}", crate::image::stderr(&o));
    assert!(
        crate::image::stderr(&o).contains("cache miss: 1 file changed: d/b"),
        "{}",
        crate::image::stderr(&o)
    );
    let img = crate::image::read_oci(&std::fs::read(&out).expect("out.tar"));
    assert_eq!(kinds(&img), ["d/ dir", "d/a file", "d/b hardlink"]);
}

/// A rebuild that the cache serves whole is the same image, digest for
/// digest, without SOURCE_DATE_EPOCH: each layer's history shows when it
/// was made, metadata steps the time of the layer after them (or
/// before), and the image the last entry's time, as BuildKit's exporter
/// gives them. A changed step and those after it show the new build's.
#[test]
fn a_cached_rebuild_is_the_same_image() {
    let c = busybox(
        "ENV A=1\nRUN echo built > /b\nCOPY f /f\nLABEL l=1\n",
        &[("f", "one\n")],
    );
    let first = c.build_oci(&[]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = c.build_oci(&[]);
    assert_eq!(again.manifest_digest, first.manifest_digest);
    let times = |img: &crate::image::ReadImage| -> Vec<String> {
        img.config["history"]
            .as_array()
            .expect("history")
            .iter()
            .map(|h| h["created"].as_str().unwrap_or("-").to_string())
            .collect()
    };
    let t1 = times(&first);
    // COPY bin, ENV PATH, ENV A, RUN, COPY f, LABEL: one build, one time.
    assert_eq!(t1.len(), 6, "{t1:?}");
    assert!(t1.iter().all(|t| *t == t1[0]), "{t1:?}");
    assert_eq!(first.config["created"], t1[0].as_str());
    c.write("f", "two\n");
    let changed = c.build_oci(&[]);
    let t2 = times(&changed);
    assert_ne!(changed.manifest_digest, first.manifest_digest);
    assert_eq!(t2[..4], t1[..4], "the cached steps keep their times");
    assert!(t2[4] > t1[4] && t2[5] == t2[4], "{t1:?} {t2:?}");
    assert_eq!(changed.config["created"], t2[5].as_str());
    // An image of metadata alone has no time to show, and is the same
    // image when built again.
    let meta = Ctx::new("FROM scratch\nLABEL a=b\nCMD [\"x\"]\n", &[]);
    let first = meta.build_oci(&[]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(meta.build_oci(&[]).manifest_digest, first.manifest_digest);
}

/// A prune waiting for a running build goes before the builds that start
/// while it waits (which would otherwise keep it waiting for ever on a
/// busy CI machine): the later build finishes after the prune.
#[test]
fn prune_goes_before_builds_that_start_after_it() {
    let slow = busybox("RUN sleep 2 && echo slow > /slow\n", &[]);
    // Takes a moment, so that its end is well after the prune's.
    let quick = busybox("RUN sleep 0.5 && echo quick > /quick\n", &[]);
    let store = slow.path("store");
    let spawn = |args: &[&str]| {
        Command::new(crate::util::kiln_bin())
            .args(args)
            .arg("--cache-dir")
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kiln")
    };
    let finish = |child: std::process::Child| {
        std::thread::spawn(move || {
            let o = child.wait_with_output().expect("wait");
            (std::time::Instant::now(), o)
        })
    };
    let a = finish(spawn(&["build", &slow.ctx().to_string_lossy()]));
    std::thread::sleep(std::time::Duration::from_millis(700));
    let p = finish(spawn(&["prune"]));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let b = finish(spawn(&[
        "build",
        "--no-cache",
        &quick.ctx().to_string_lossy(),
    ]));
    let (_, a) = a.join().expect("a");
    let (p_end, p) = p.join().expect("prune");
    let (b_end, b) = b.join().expect("b");
    for o in [&a, &p, &b] {
        assert!(o.status.success(), "{}", stderr(o));
    }
    assert!(
        stderr(&p).contains("waiting for the builds"),
        "{}",
        stderr(&p)
    );
    // (The prune's own words say it waited for the running build; the
    // two exits are too close together to order from here.)
    assert!(
        b_end > p_end,
        "the build started after the prune finished before it:\n{}",
        stderr(&b)
    );
}
