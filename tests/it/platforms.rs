//! Multi-platform builds (`--platform linux/amd64,linux/arm64`): an image
//! per platform, built at once, and an index of them, pushed to a real
//! registry and pulled and run by a real Docker daemon. The arm64 steps
//! run Debian's busybox-static for arm64 through qemu-user-static's
//! binfmt_misc emulator (scripts/test installs and registers both).

use crate::image::{stderr, tar_files, Ctx};
use crate::registry::Registry;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// Debian's busybox-static for arm64, fetched by scripts/test.
fn arm64_busybox() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("busybox-arm64");
    assert!(
        p.is_file(),
        "{} is missing: scripts/test fetches it (Debian's busybox-static:arm64)",
        p.display()
    );
    assert!(
        std::path::Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists(),
        "no arm64 emulator is registered: scripts/test installs qemu-user-static and registers it"
    );
    p
}

/// A context with busybox for both platforms (`busybox-amd64`,
/// `busybox-arm64`) and this Dockerfile.
fn two_arch(dockerfile: &str) -> Ctx {
    let c = Ctx::new(dockerfile, &[]);
    std::fs::copy("/bin/busybox", c.ctx().join("busybox-amd64"))
        .expect("copying /bin/busybox (Debian's busybox-static)");
    std::fs::copy(arm64_busybox(), c.ctx().join("busybox-arm64")).expect("busybox-arm64");
    c
}

/// A base image for both platforms: busybox with its applets linked, the
/// arm64 one installed by an emulated RUN.
const BASE: &str = "FROM scratch\nARG TARGETARCH\nCOPY busybox-${TARGETARCH} /bin/busybox\n\
                    ENV PATH=/bin\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";

const BOTH: &str = "linux/amd64,linux/arm64";

fn skopeo_raw(reference: &str, arch: Option<&str>) -> Value {
    let mut cmd = Command::new("skopeo");
    cmd.arg("inspect").arg("--tls-verify=false");
    match arch {
        Some(a) => cmd.args(["--override-arch", a, "--config"]),
        None => cmd.arg("--raw"),
    };
    let o = cmd
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo");
    assert!(o.status.success(), "skopeo: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("json")
}

/// The Kamal-style multi-platform push: both images build at once (the
/// arm64 one emulated), each stage's steps show their platform, the
/// registry gets an index whose manifests name their platforms and carry
/// the annotations asked for, and Docker pulls and runs each platform's
/// image. A rebuild is all cache hits with the same digest.
#[test]
fn a_multi_platform_push_is_an_index_docker_runs() {
    let reg = Registry::start();
    let base = two_arch(BASE);
    let base_ref = format!("{}/mp/base:1", reg.addr);
    let o = base.kiln(&["--platform", BOTH, "--push", "-t", &base_ref]);
    assert!(o.status.success(), "{}", stderr(&o));
    let app = Ctx::new(
        &format!(
            "FROM {base_ref} AS build\nARG TARGETPLATFORM BUILDPLATFORM\n\
             RUN echo \"$TARGETPLATFORM on $(uname -m), built on $BUILDPLATFORM\" > /msg\n\
             FROM {base_ref}\nCOPY --from=build /msg /msg\nCMD [\"cat\", \"/msg\"]\n"
        ),
        &[],
    );
    let app_ref = format!("{}/mp/app:1", reg.addr);
    let meta = app.path("meta.json");
    let args = [
        "--progress=plain",
        "--platform",
        BOTH,
        "--push",
        "-t",
        &app_ref,
        "--label",
        "service=app",
        "--annotation",
        "index:org.opencontainers.image.description=two platforms",
        "--annotation",
        "manifest[linux/arm64]:com.example.arm=yes",
        "--metadata-file",
        &meta.to_string_lossy(),
    ];
    let sde = [("SOURCE_DATE_EPOCH", "1700000000")];
    let o = app.kiln_env(&args, &sde);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    for p in ["linux/amd64", "linux/arm64"] {
        assert!(err.contains(&format!("[{p} build 2/2] RUN echo")), "{err}");
    }
    assert!(err.contains("2 platforms"), "{err}");
    let digest = crate::registry::metadata_digest(&meta);
    let index = skopeo_raw(&app_ref, None);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(
        index["annotations"]["org.opencontainers.image.description"],
        "two platforms"
    );
    let manifests = index["manifests"].as_array().expect("manifests");
    let platforms: Vec<&str> = manifests
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(platforms, ["amd64", "arm64"]);
    for m in manifests {
        let arch = m["platform"]["architecture"].as_str().unwrap_or("");
        let by_digest = format!(
            "{}/mp/app@{}",
            reg.addr,
            m["digest"].as_str().expect("digest")
        );
        let manifest = skopeo_raw(&by_digest, None);
        assert_eq!(
            manifest["annotations"]["com.example.arm"].as_str(),
            (arch == "arm64").then_some("yes"),
            "{manifest}"
        );
        let config = skopeo_raw(&app_ref, Some(arch));
        assert_eq!(config["architecture"], arch);
        assert_eq!(config["config"]["Labels"]["service"], "app");
    }
    let d = crate::consumers::Dockerd::start();
    for (platform, machine) in [("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")] {
        // Docker names what it pulled by the index's digest.
        let pulled = d.ok(&["pull", "--platform", platform, &app_ref]);
        assert!(pulled.contains(&format!("Digest: {digest}")), "{pulled}");
        let out = d.run(&["--network", "host", "--platform", platform, &app_ref]);
        assert_eq!(
            out,
            format!("{platform} on {machine}, built on linux/amd64\n")
        );
    }
    let o = app.kiln_env(&args, &sde);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains(" steps cached, 0 ran)"), "{err}");
    assert_eq!(crate::registry::metadata_digest(&meta), digest);
}

/// Archives and directories of a multi-platform build: the OCI layout's
/// index.json names the index (which skopeo copies whole), `type=local`
/// and `type=tar` put each platform's files under `linux_amd64/` and
/// `linux_arm64/` (or all in one with `platform-split=false`), `-q` and
/// `--iidfile` give the index's digest, and with SOURCE_DATE_EPOCH two
/// builds from empty stores are byte for byte the same.
#[test]
fn multi_platform_archives_and_directories() {
    let c = Ctx::new(
        "FROM scratch\nARG TARGETARCH\nCOPY ${TARGETARCH}.txt /arch.txt\nCOPY common.txt /\n",
        &[
            ("amd64.txt", "x86\n"),
            ("arm64.txt", "arm\n"),
            ("common.txt", "both\n"),
        ],
    );
    let oci = c.path("out.tar");
    let fs = c.path("fs.tar");
    let dir = c.path("dir");
    let merged = c.path("merged");
    let iid = c.path("iid");
    let outputs = [
        format!("type=oci,dest={}", oci.display()),
        format!("type=tar,dest={}", fs.display()),
        format!("type=local,dest={}", dir.display()),
        format!("type=local,dest={},platform-split=false", merged.display()),
    ];
    let mut args = vec![
        "-q",
        "--platform",
        BOTH,
        "-t",
        "mp:1",
        "--annotation",
        "manifest-descriptor[linux/arm64]:com.example.d=arm",
        "--annotation",
        "index-descriptor:com.example.i=top",
        "--iidfile",
    ];
    let iid_s = iid.to_string_lossy().into_owned();
    args.push(&iid_s);
    for o in &outputs {
        args.extend(["-o", o.as_str()]);
    }
    let sde = [("SOURCE_DATE_EPOCH", "1700000000")];
    let o = c.kiln_env(&args, &sde);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(std::fs::read_to_string(&iid).expect("iidfile"), printed);

    let layout = tar_files(&std::fs::read(&oci).expect("out.tar"));
    let top: Value = serde_json::from_slice(&layout["index.json"]).expect("index.json");
    let desc = &top["manifests"][0];
    assert_eq!(top["manifests"].as_array().map(Vec::len), Some(1));
    assert_eq!(desc["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(desc["digest"], printed.as_str());
    assert_eq!(
        desc["annotations"]["io.containerd.image.name"],
        "docker.io/library/mp:1"
    );
    assert_eq!(desc["annotations"]["com.example.i"], "top");
    let blob = |d: &Value| -> Vec<u8> {
        let name = format!("blobs/sha256/{}", &d.as_str().expect("digest")[7..]);
        layout.get(&name).cloned().expect("blob in the layout")
    };
    let index: Value = serde_json::from_slice(&blob(&desc["digest"])).expect("index");
    for (m, arch) in index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .zip(["amd64", "arm64"])
    {
        assert_eq!(
            m["platform"],
            serde_json::json!({"architecture": arch, "os": "linux"})
        );
        assert_eq!(
            m["annotations"]["com.example.d"].as_str(),
            (arch == "arm64").then_some("arm"),
            "{m}"
        );
        let manifest: Value = serde_json::from_slice(&blob(&m["digest"])).expect("manifest");
        let config: Value =
            serde_json::from_slice(&blob(&manifest["config"]["digest"])).expect("config");
        assert_eq!(config["architecture"], arch);
        assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    }
    // skopeo reads the layout and copies every platform's image.
    let copied = c.path("copied");
    let o = Command::new("skopeo")
        .args(["copy", "--all"])
        .arg(format!("oci-archive:{}:1", oci.display()))
        .arg(format!("oci:{}:1", copied.display()))
        .output()
        .expect("skopeo");
    assert!(o.status.success(), "skopeo copy: {}", stderr(&o));

    let files = tar_files(&std::fs::read(&fs).expect("fs.tar"));
    assert_eq!(files["linux_amd64/arch.txt"], b"x86\n");
    assert_eq!(files["linux_arm64/arch.txt"], b"arm\n");
    assert_eq!(files["linux_arm64/common.txt"], b"both\n");
    for (p, want) in [("linux_amd64", "x86\n"), ("linux_arm64", "arm\n")] {
        let got = std::fs::read_to_string(dir.join(p).join("arch.txt")).expect("arch.txt");
        assert_eq!(got, want);
    }
    assert!(merged.join("common.txt").is_file() && !merged.join("linux_amd64").exists());

    // The store knows the index by its -t name: `kiln inspect` picks a
    // platform's image from it, `kiln images` sizes both.
    let kiln = |args: &[&str]| {
        let o = Command::new(crate::util::kiln_bin())
            .args(args)
            .arg("--cache-dir")
            .arg(c.path("store"))
            .output()
            .expect("kiln");
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let arm: Value = serde_json::from_str(&kiln(&["inspect", "--platform", "linux/arm64", "mp:1"]))
        .expect("json");
    assert_eq!(arm["platform"], "linux/arm64");
    assert_eq!(arm["digest"], index["manifests"][1]["digest"]);
    let images = kiln(&["images"]);
    let line = images
        .lines()
        .find(|l| l.starts_with("docker.io/library/mp:1 "))
        .unwrap_or_else(|| panic!("{images}"));
    assert!(
        line.contains(" built ") && !line.ends_with(" 0B"),
        "{images}"
    );

    // The same inputs from an empty store: the same bytes.
    std::fs::remove_dir_all(c.path("store")).expect("rm store");
    let first = std::fs::read(&oci).expect("out.tar");
    let o = c.kiln_env(&args, &sde);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&oci).expect("out.tar"), first);
}

/// What a multi-platform build cannot do is refused before it starts, as
/// buildx refuses it: `--load` and `type=docker` (a docker archive holds
/// no index); an index annotation needs an index.
#[test]
fn multi_platform_refusals_are_usage_errors() {
    let c = Ctx::new("FROM scratch\nCOPY f /f\n", &[("f", "x")]);
    let docker = format!("type=docker,dest={}", c.path("d.tar").display());
    for (args, says) in [
        (
            vec!["--platform", BOTH, "--load"],
            "--load takes one platform",
        ),
        (
            vec!["--platform", BOTH, "-o", &docker],
            "type=docker takes one platform",
        ),
        (
            vec!["--annotation", "index:a=b"],
            "a single-platform image has no index",
        ),
        (
            vec!["--annotation", "layer:a=b"],
            "the types are manifest, manifest-descriptor, index and index-descriptor",
        ),
        (
            vec!["--annotation", "index-descriptor:a=b"],
            "a single-platform image has no index",
        ),
        (vec!["--platform", "linux/amd64,"], ""),
    ] {
        let o = c.kiln(&args);
        if says.is_empty() {
            // A trailing comma is no second platform.
            assert!(o.status.success(), "{args:?}: {}", stderr(&o));
            continue;
        }
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
}

/// The first failure stops the other platform's build: the arm64 step
/// fails while the amd64 one sleeps, and the build ends at once with the
/// arm64 step's error, its platform shown.
#[test]
fn a_failing_platform_stops_the_others() {
    let c = two_arch(&format!(
        "{BASE}RUN if [ \"$(uname -m)\" = aarch64 ]; then echo arm fails; exit 7; fi; sleep 40\n"
    ));
    let started = std::time::Instant::now();
    let o = c.kiln(&["--progress=plain", "--platform", BOTH]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "the amd64 step was not stopped: {err}"
    );
    assert!(err.contains("exit code: 7"), "{err}");
    assert!(err.contains("arm fails"), "{err}");
    assert!(err.contains("[linux/arm64 stage-0 4/4] RUN if"), "{err}");
    assert!(!err.contains("cancelled: another stage failed"), "{err}");
}

/// A program the kernel cannot execute gets advice from what binfmt_misc
/// has registered: here the arm64 emulator is, so the file is at fault.
#[test]
fn a_program_for_no_machine_gets_a_hint() {
    arm64_busybox();
    let c = Ctx::new("FROM scratch\nCOPY sh /bin/sh\nRUN true\n", &[]);
    // An ELF header for a machine nothing runs (e_machine 0x1234).
    let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
    elf.resize(16, 0);
    elf.extend([2, 0, 0x34, 0x12, 1, 0, 0, 0]);
    elf.resize(64, 0);
    std::fs::write(c.ctx().join("sh"), elf).expect("sh");
    std::fs::set_permissions(
        c.ctx().join("sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let o = c.kiln(&["--platform", "linux/arm64"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("Exec format error"), "{err}");
    assert!(
        err.contains("hint: an emulator for linux/arm64 is registered (/proc/sys/fs/binfmt_misc/qemu-aarch64)"),
        "{err}"
    );
}

/// The cross-compiling pattern: a stage `FROM --platform=$BUILDPLATFORM`
/// an image runs natively, once (both platforms' builds need the same
/// step, and one waits for the other's), and each platform's image
/// copies from it; `FROM --platform=…` of another stage keeps that
/// stage's platform, as in BuildKit.
#[test]
fn build_platform_stages_run_once_natively() {
    let reg = Registry::start();
    let base = two_arch(BASE);
    let base_ref = format!("{}/mp/base:1", reg.addr);
    let o = base.kiln(&["--platform", BOTH, "--push", "-t", &base_ref]);
    assert!(o.status.success(), "{}", stderr(&o));
    let c = Ctx::new(
        &format!(
            "FROM --platform=$BUILDPLATFORM {base_ref} AS build\n\
             RUN uname -m > /built-on\n\
             FROM {base_ref} AS native\n\
             FROM --platform=$BUILDPLATFORM native AS still-target\n\
             RUN uname -m > /machine\n\
             FROM {base_ref}\nARG TARGETPLATFORM\n\
             COPY --from=build /built-on /\nCOPY --from=still-target /machine /\n\
             RUN echo \"$TARGETPLATFORM on $(uname -m): built on $(cat /built-on), stage on $(cat /machine)\" > /msg\n"
        ),
        &[],
    );
    let dir = c.path("out");
    let o = c.kiln(&[
        "--progress=plain",
        "--platform",
        BOTH,
        "-o",
        &format!("type=local,dest={}", dir.display()),
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    for (p, m) in [("linux_amd64", "x86_64"), ("linux_arm64", "aarch64")] {
        let msg = std::fs::read_to_string(dir.join(p).join("msg")).expect("msg");
        let platform = p.replace('_', "/");
        assert_eq!(
            msg,
            format!("{platform} on {m}: built on x86_64, stage on {m}\n")
        );
    }
    // Both builds show the step; one ran it, the other waited and took
    // its result.
    let number = |platform: &str| {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("[{platform} build 2/2] RUN uname")))
            .unwrap_or_else(|| panic!("{err}"));
        line.split(' ').next().unwrap_or_default().to_string()
    };
    let cached = ["linux/amd64", "linux/arm64"]
        .iter()
        .filter(|p| err.contains(&format!("{} CACHED", number(p))))
        .count();
    assert_eq!(cached, 1, "{err}");
}

/// A rootless multi-platform build (emulated steps inside the user
/// namespace) gives the same index, byte for byte, as root's.
#[test]
fn rootless_multi_platform_matches_root() {
    let c = two_arch(&format!("{BASE}RUN uname -m > /machine\n"));
    let user = crate::run::rootless_user();
    let (o0, b0, o1, b1, _tmp) =
        crate::run::root_and_rootless_with(&c, user, &["--platform", BOTH]);
    assert!(o0.status.success(), "root: {}", stderr(&o0));
    assert!(o1.status.success(), "rootless: {}", stderr(&o1));
    assert_eq!(o0.stdout, o1.stdout, "the index digests differ");
    assert!(String::from_utf8_lossy(&o1.stdout).starts_with("sha256:"));
    assert!(b0 == b1, "the OCI archives differ");
    let layout = tar_files(&b1);
    let machines: Vec<String> = layout
        .iter()
        // Layers are the gzip blobs.
        .filter(|(k, v)| k.starts_with("blobs/") && v.starts_with(&[0x1f, 0x8b]))
        .filter_map(|(_, v)| {
            let tar = crate::image::decompress(v, "application/vnd.oci.image.layer.v1.tar+gzip");
            tar_files(&tar)
                .get("machine")
                .map(|m| String::from_utf8_lossy(m).into_owned())
        })
        .collect();
    assert_eq!(machines.len(), 2, "{machines:?}");
    assert!(machines.contains(&"aarch64\n".to_string()), "{machines:?}");
}

/// A layer both platforms' images share uploads once and counts once in
/// the push's summary.
#[test]
fn a_multi_platform_push_counts_each_layer_once() {
    let reg = Registry::start();
    let c = Ctx::new(
        "FROM scratch\nARG TARGETARCH\nCOPY ${TARGETARCH}.txt /arch.txt\nCOPY common.txt /common.txt\n",
        &[("amd64.txt", "x86\n"), ("arm64.txt", "arm\n"), ("common.txt", "both\n")],
    );
    let target = format!("{}/mp/shared:1", reg.addr);
    let o = c.kiln(&[
        "--progress=plain",
        "--platform",
        BOTH,
        "--push",
        "-t",
        &target,
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("(3 of 3 layers uploaded, 0 mounted, 2 platforms)"),
        "{err}"
    );
}

/// Each image is named by the platform it was built for, whatever its
/// final stage's base says (here `FROM --platform=$BUILDPLATFORM`, so
/// both start from amd64): the config, the index and the directories say
/// linux/amd64 and linux/arm64, as BuildKit's do.
#[test]
fn images_are_named_by_the_platform_they_were_built_for() {
    let c = Ctx::new(
        "FROM --platform=$BUILDPLATFORM scratch\nARG TARGETARCH\nCOPY f /f-$TARGETARCH\n",
        &[("f", "x\n")],
    );
    let oci = c.path("out.tar");
    let dir = c.path("dir");
    let o = c.kiln(&[
        "--platform",
        BOTH,
        "--annotation",
        "manifest[linux/arm64]:com.example.arm=yes",
        "-o",
        &format!("type=oci,dest={}", oci.display()),
        "-o",
        &format!("type=local,dest={}", dir.display()),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let layout = tar_files(&std::fs::read(&oci).expect("out.tar"));
    let blob = |d: &Value| -> Value {
        let name = format!("blobs/sha256/{}", &d.as_str().expect("digest")[7..]);
        serde_json::from_slice(&layout[&name]).expect("json")
    };
    let top: Value = serde_json::from_slice(&layout["index.json"]).expect("index.json");
    let index = blob(&top["manifests"][0]["digest"]);
    for (m, arch) in index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .zip(["amd64", "arm64"])
    {
        assert_eq!(m["platform"]["architecture"], arch, "{index}");
        let manifest = blob(&m["digest"]);
        assert_eq!(blob(&manifest["config"]["digest"])["architecture"], arch);
        assert_eq!(
            manifest["annotations"]["com.example.arm"].as_str(),
            (arch == "arm64").then_some("yes")
        );
    }
    assert!(dir.join("linux_amd64/f-amd64").is_file());
    assert!(dir.join("linux_arm64/f-arm64").is_file());
}

/// `--max-parallelism` limits the whole build, not each platform's: two
/// platforms' steps that can only finish together (each waits, in a
/// shared cache mount, for the other's mark) finish by default, and fail
/// with `--max-parallelism 1`.
#[test]
fn max_parallelism_covers_every_platform() {
    let c = two_arch(&format!(
        "{BASE}ARG ROUND\n\
         RUN --mount=type=cache,id=meet-$ROUND,target=/c,sharing=shared \
         touch /c/$(uname -m) && i=0 && while [ $i -lt 50 ]; do \
         [ -e /c/x86_64 ] && [ -e /c/aarch64 ] && exit 0; sleep 0.1; i=$((i+1)); done; exit 1\n"
    ));
    let o = c.kiln(&["--platform", BOTH, "--build-arg", "ROUND=1"]);
    assert!(o.status.success(), "together: {}", stderr(&o));
    let o = c.kiln(&[
        "--platform",
        BOTH,
        "--build-arg",
        "ROUND=2",
        "--max-parallelism",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(3), "one at a time: {}", stderr(&o));
}
