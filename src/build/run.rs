//! RUN: the step's process runs in the sandbox ([`crate::exec`]) over an
//! overlay of the stage's snapshots with a fresh upper directory; the
//! upper directory becomes the step's layer ([`crate::snapshot::diff`])
//! and, renamed into the store, the snapshot the next step stacks on.

use super::{layer, users, StageState};
use crate::exec::{Exit, Spec};
use crate::plan::Op;
use crate::store::{digest_hex, Store};
use anyhow::{anyhow, bail, Context as _, Result};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// The hostname steps see, as in BuildKit.
const HOSTNAME: &str = "buildkitsandbox";

/// Files the sandbox mounts over; those the image lacks are created as
/// stubs for the mount and removed from the layer afterwards.
const STUBS: [&str; 6] = [
    "proc",
    "dev",
    "sys",
    "etc/hosts",
    "etc/resolv.conf",
    "etc/hostname",
];

/// A RUN step's command failed: the exit, and its last lines of output.
#[derive(Debug, thiserror::Error)]
#[error("process {shown} did not complete successfully: {how}")]
pub struct RunFailed {
    pub shown: String,
    pub how: String,
    pub tail: Vec<String>,
}

/// The kernel could not execute the step's program (ENOEXEC): most often
/// a program for another platform with no emulator registered.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExecFormat {
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

/// Where the kernel's binfmt_misc handlers are listed.
const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// Why a program of `platform` would not run on `host`, from the
/// emulators registered in `binfmt` (qemu-user-static's names:
/// `qemu-aarch64`).
pub fn exec_format_hint(
    platform: &crate::plan::Platform,
    host: &crate::plan::Platform,
    binfmt: &Path,
) -> String {
    if platform.os != host.os || platform.arch == host.arch {
        return format!(
            "the program is not an executable for {platform}, the step's platform \
             (check the image's platform and the file's first line, e.g. a #! line)"
        );
    }
    let qemu = match platform.arch.as_str() {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "386" => "i386",
        "mips64le" => "mips64el",
        "mipsle" => "mipsel",
        "loong64" => "loongarch64",
        other => other,
    };
    let install = "install an emulator: on Debian or Ubuntu `apt-get install \
                   qemu-user-static binfmt-support`; elsewhere, or in a container, \
                   `docker run --privileged --rm tonistiigi/binfmt --install all`";
    if !binfmt.join("register").exists() {
        return format!(
            "programs for {platform} run on this {host} machine through an emulator that \
             binfmt_misc starts, and binfmt_misc is not mounted at {}: mount it \
             (`mount -t binfmt_misc binfmt_misc {}`), then {install}",
            binfmt.display(),
            binfmt.display()
        );
    }
    let entry = binfmt.join(format!("qemu-{qemu}"));
    match std::fs::read_to_string(&entry) {
        Err(_) => format!(
            "programs for {platform} run on this {host} machine through an emulator, and \
             none is registered for {qemu} ({} is missing): {install}",
            entry.display()
        ),
        Ok(text) if text.lines().next() == Some("disabled") => format!(
            "the emulator for {platform} is registered but disabled: \
             `echo 1 > {}`",
            entry.display()
        ),
        Ok(text)
            if !text
                .lines()
                .any(|l| l.starts_with("flags:") && l.contains('F')) =>
        {
            format!(
                "the emulator for {platform} ({}) is registered without the F flag, so it \
                 is looked up inside the step's filesystem, where it is not: register it \
                 with the F (fix binary) flag, as qemu-user-static's packages do",
                entry.display()
            )
        }
        Ok(_) => format!(
            "an emulator for {platform} is registered ({}), so the program itself is not \
             an executable for {platform}: check the base image's platform",
            entry.display()
        ),
    }
}

/// Runs a RUN step; returns its layer and history text.
pub fn run(
    op: &Op,
    state: &mut StageState,
    sh: &super::solve::Shared,
    at: &super::solve::At,
) -> Result<(crate::image::LayerBlob, String)> {
    let (opts, store) = (sh.opts, sh.store);
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let Op::Run {
        argv,
        files,
        mounts,
        network,
        security,
        env,
        args,
        proxy,
        workdir,
        user,
        ..
    } = op
    else {
        bail!("not a RUN step");
    };
    // Overlay snapshots, or (where overlayfs is refused) a full copy of
    // the stage that the step changes in place.
    let overlay = state.view.is_overlay();
    if security == "insecure" {
        bail!("RUN --security=insecure needs the security.insecure entitlement, which kiln does not grant");
    }
    // A step's own --network wins; else the build's --network.
    let network = match (network.as_str(), &opts.network) {
        ("default", Some(n)) => n.as_str(),
        (n, _) => n,
    };
    let isolate_network = match network {
        "none" => true,
        "default" | "host" => false,
        other => bail!("RUN --network={other} is not supported"),
    };
    state.view.materialize(store)?;
    let read = |p: &str| super::view_read(&state.view, p);
    let who = users::exec_user(&read, user).map_err(|e| anyhow!("USER {user:?}: {e}"))?;

    let dir = opts.work.join(format!("run-{seq}"));
    let (upper, work, rootfs) = (dir.join("upper"), dir.join("work"), dir.join("rootfs"));
    let empty = dir.join("empty");
    for d in [&upper, &work, &rootfs, &empty] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let hosts = dir.join("hosts");
    let resolv = dir.join("resolv.conf");
    let hostname = dir.join("hostname");
    write(&hosts, &crate::exec::hosts_file(HOSTNAME, &opts.add_hosts))?;
    write(&resolv, &crate::exec::resolv_conf())?;
    write(&hostname, &format!("{HOSTNAME}\n"))?;

    let prepared = super::mounts::prepare(mounts, state, sh, &dir)?;
    let lower = state.view.root.clone();
    if !overlay {
        // The directory exists (empty): copy into a fresh name, then swap.
        std::fs::remove_dir(&rootfs).context("cannot prepare the step's root")?;
        crate::snapshot::copy::copy_tree(&lower, &rootfs)
            .context("cannot copy the stage for the step (copy snapshotter)")?;
    }
    // Mount points the image lacks: the sandbox creates them (and their
    // parents); they leave the upper directory after the step.
    let mut stubs: Vec<String> = STUBS.iter().map(|s| s.to_string()).collect();
    stubs.extend(
        prepared
            .targets
            .iter()
            .map(|t| t.trim_matches('/').to_string())
            .filter(|t| !t.is_empty()),
    );
    let missing = missing_paths(&lower, &stubs);

    let mut vars: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    vars.extend(proxy.iter().map(|(k, v)| format!("{k}={v}")));
    vars.extend(prepared.env.iter().cloned());
    if !env.iter().any(|(k, _)| k == "PATH") {
        vars.push(format!("PATH={}", super::DEFAULT_PATH));
    }
    // runc's HOME: the user's, unless ENV set one.
    if !env.iter().any(|(k, _)| k == "HOME") {
        vars.push(format!("HOME={}", who.home));
    }
    let spec = Spec {
        lowers: crate::snapshot::layers::distinct(state.view.snapshots().unwrap_or_default())?,
        empty,
        upper: upper.clone(),
        work: work.clone(),
        rootfs: rootfs.clone(),
        overlay,
        argv: argv.clone(),
        env: vars,
        cwd: workdir.clone(),
        uid: who.uid,
        gid: who.gid,
        groups: who.groups,
        hostname: HOSTNAME.into(),
        isolate_network,
        binds: vec![
            ("/etc/hosts".into(), hosts),
            ("/etc/resolv.conf".into(), resolv),
            ("/etc/hostname".into(), hostname),
        ],
        dev_files: files
            .iter()
            .map(|f| (f.path.clone(), f.data.clone(), 0o755))
            .collect(),
        status: dir.join("status"),
        mounts: prepared.mounts.clone(),
        secret_env: prepared.secret_env.clone(),
        secrets_dir: dir.join("secrets"),
        shm_size: opts.shm_size,
        ulimits: opts.ulimits.clone(),
    };
    std::fs::create_dir_all(&spec.secrets_dir).context("cannot create a secrets directory")?;
    let echo = |line: &str| at.report(sh, crate::progress::StepEvent::Output(line));
    let echo: Option<&dyn Fn(&str)> = Some(&echo);
    let outcome = crate::exec::run(&spec, &dir.join("spec.json"), &prepared.secrets, echo)
        .map_err(|e| {
            let message = crate::error_chain(&e);
            if message.contains("(os error 8)") {
                let platform = super::state_platform(state);
                let hint = exec_format_hint(
                    &platform,
                    &crate::plan::Platform::host(),
                    Path::new(BINFMT_MISC),
                );
                anyhow::Error::new(ExecFormat { message, hint })
            } else {
                e
            }
        })?;
    drop(prepared);
    let shown = go_quote_argv(argv);
    match outcome.exit {
        Exit::Code(0) => {}
        exit => {
            let how = match exit {
                Exit::Code(n) => format!("exit code: {n}"),
                Exit::Signal(s) => format!("killed by signal {s}"),
            };
            return Err(RunFailed {
                shown,
                how,
                tail: outcome.tail,
            }
            .into());
        }
    }

    if !overlay {
        remove_stubs(&rootfs, &lower, &missing)?;
        let entries = crate::snapshot::diff::walk_entries(&rootfs, &lower)
            .context("cannot read the step's changes")?;
        let blob = layer::write_with(entries, opts, store, false)?;
        state.view.replace_disk(rootfs);
        return Ok((blob, history_text(argv, args)));
    }
    remove_stubs(&upper, &lower, &missing)?;
    let entries = crate::snapshot::diff::upper_entries(&upper, &lower)
        .context("cannot read the step's changes")?;
    let blob = layer::write_with(entries, opts, store, false)?;
    let snapshot = commit_snapshot(store, &upper, &blob.diff_id, &spec.lowers)?;
    let _ = std::fs::remove_dir_all(&work);
    state.view.push_snapshot(snapshot)?;
    Ok((blob, history_text(argv, args)))
}

fn write(p: &Path, text: &str) -> Result<()> {
    std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))
}

/// The paths among `stubs` (relative; resolved inside `lower` as the
/// sandbox resolves them, symlinks never leaving the root) that `lower`
/// lacks, each with the ancestors it lacks too, deepest first.
fn missing_paths(lower: &Path, stubs: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for stub in stubs {
        let Ok(stub) = crate::snapshot::resolve_in_root(lower, stub, true) else {
            continue;
        };
        let mut p = Path::new(&stub);
        while std::fs::symlink_metadata(lower.join(p)).is_err() {
            let s = p.to_string_lossy().into_owned();
            if !out.contains(&s) {
                out.push(s);
            }
            match p.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => p = parent,
                _ => break,
            }
        }
    }
    // Deepest first, so that a directory is empty when its turn comes.
    out.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    out
}

/// Removes the mount points the sandbox had to create (still empty:
/// mounts covered them) and the directories made for them, so they do not
/// reach the layer; an existing directory that got one gets its old times
/// back.
fn remove_stubs(upper: &Path, lower: &Path, missing: &[String]) -> Result<()> {
    for stub in missing {
        // The step may have put a symlink where a parent was: nothing here
        // may be reached through one.
        if !real_dirs_to(upper, stub) {
            continue;
        }
        let p = upper.join(stub);
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let removed = if m.is_dir() {
            std::fs::remove_dir(&p).is_ok()
        } else if m.is_file() && m.len() == 0 {
            std::fs::remove_file(&p).is_ok()
        } else {
            false
        };
        if !removed {
            continue;
        }
        let Some(parent) = Path::new(stub)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        else {
            continue;
        };
        if let Ok(lm) = std::fs::symlink_metadata(lower.join(parent)) {
            let times = rustix::fs::Timestamps {
                last_access: ts(lm.atime(), lm.atime_nsec()),
                last_modification: ts(lm.mtime(), lm.mtime_nsec()),
            };
            let _ = rustix::fs::utimensat(
                rustix::fs::CWD,
                upper.join(parent).as_path(),
                &times,
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            );
        }
    }
    Ok(())
}

/// Whether every ancestor of `rel` under `root` is a directory, not a
/// symlink.
fn real_dirs_to(root: &Path, rel: &str) -> bool {
    let mut cur = root.to_path_buf();
    let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    for c in comps.iter().take(comps.len().saturating_sub(1)) {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            _ => return false,
        }
    }
    true
}

fn ts(secs: i64, nanos: i64) -> rustix::fs::Timespec {
    rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: nanos as _,
    }
}

/// Moves a step's upper directory into the store as its snapshot. The
/// upper holds more than the layer (copies-up that changed nothing,
/// whiteouts of what the base never had), which is right only over the
/// same lower layers: it is keyed by them and the diffID together, never
/// served as the plain snapshot of the diffID.
fn commit_snapshot(
    store: &Store,
    upper: &Path,
    diff_id: &str,
    lowers: &[PathBuf],
) -> Result<PathBuf> {
    let dest = stacked_path(store, diff_id, lowers)?;
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if dest.is_dir() {
        let _ = std::fs::remove_dir_all(upper);
        return Ok(dest);
    }
    // Which layer the snapshot holds, for `kiln prune` (written first: a
    // snapshot without one is only ever pruned early).
    store.write_small(
        &dest.with_extension("diffid"),
        format!("{diff_id}\n").as_bytes(),
    )?;
    match std::fs::rename(upper, &dest) {
        Ok(()) => Ok(dest),
        Err(_) if dest.is_dir() => Ok(dest),
        Err(e) => Err(e).with_context(|| format!("cannot move a snapshot to {}", dest.display())),
    }
}

/// Where the snapshot of a RUN step's layer `diff_id` over `lowers` is
/// kept (whether or not it exists).
pub fn stacked_path(store: &Store, diff_id: &str, lowers: &[PathBuf]) -> Result<PathBuf> {
    let mut key = format!("{}\n", digest_hex(diff_id)?);
    for l in lowers {
        key.push_str(&l.to_string_lossy());
        key.push('\n');
    }
    Ok(store
        .root()
        .join("snapshots/stacked")
        .join(crate::layer::compress::sha256_hex(key.as_bytes())))
}

/// `RUN` history as BuildKit writes it: `|N K=V ...` for the build args
/// in scope, then the argv, then ` # buildkit`.
pub fn history_text(argv: &[String], args: &[(String, String)]) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !args.is_empty() {
        parts.push(format!("|{}", args.len()));
        parts.extend(args.iter().map(|(k, v)| format!("{k}={v}")));
    }
    parts.extend(argv.iter().cloned());
    format!("RUN {} # buildkit", parts.join(" "))
}

/// The argv as BuildKit quotes it in errors: `"/bin/sh -c exit 3"`.
fn go_quote_argv(argv: &[String]) -> String {
    super::meta::go_quote(&argv.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each state of binfmt_misc gets its own advice.
    #[test]
    fn exec_format_hints_read_binfmt_misc() {
        let p = |s: &str| crate::plan::Platform::parse(s).expect("platform");
        let (arm, host) = (p("linux/arm64"), p("linux/amd64"));
        let dir = tempfile::tempdir().expect("tempdir");
        let hint = |d: &Path| exec_format_hint(&arm, &host, d);
        assert!(exec_format_hint(&host, &host, dir.path())
            .contains("not an executable for linux/amd64"));
        assert!(hint(dir.path()).contains("binfmt_misc is not mounted"));
        std::fs::write(dir.path().join("register"), "").expect("register");
        let h = hint(dir.path());
        assert!(
            h.contains("none is registered for aarch64") && h.contains("qemu-user-static"),
            "{h}"
        );
        let entry = dir.path().join("qemu-aarch64");
        std::fs::write(&entry, "disabled\ninterpreter /q\nflags: PF\n").expect("entry");
        assert!(hint(dir.path()).contains("registered but disabled"));
        std::fs::write(&entry, "enabled\ninterpreter /q\nflags: P\n").expect("entry");
        assert!(hint(dir.path()).contains("without the F flag"));
        std::fs::write(&entry, "enabled\ninterpreter /q\nflags: PF\n").expect("entry");
        assert!(hint(dir.path()).contains("the program itself is not an executable"));
    }

    #[test]
    fn history_as_buildkit() {
        let argv = vec!["/bin/sh".to_string(), "-c".into(), "echo hi".into()];
        assert_eq!(
            history_text(&argv, &[]),
            "RUN /bin/sh -c echo hi # buildkit"
        );
        assert_eq!(
            history_text(
                &argv,
                &[("A".into(), "1".into()), ("B".into(), "x y".into())]
            ),
            "RUN |2 A=1 B=x y /bin/sh -c echo hi # buildkit"
        );
        assert_eq!(go_quote_argv(&argv), "\"/bin/sh -c echo hi\"");
    }
}
