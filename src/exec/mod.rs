//! Running a RUN step's process in a sandbox, as BuildKit's runc executor
//! does: new mount, PID, UTS and IPC namespaces (and network, for
//! `--network=none`), the step's root an overlay of its layers' snapshots
//! plus a fresh upper directory, `/proc`, a minimal `/dev`, a read-only
//! `/sys`, and kiln's `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`.
//!
//! Namespaces cannot be entered by a multi-threaded process, so kiln
//! re-executes itself as a single-threaded helper ([`sandbox`]) with the
//! [`Spec`] in a file. The helper forks the step's PID 1, which sets up
//! its mounts, pivots into the root and executes the command. When kiln
//! dies, the helper dies (parent-death signal), and with it the PID
//! namespace and every mount in it.

pub mod sandbox;

use anyhow::{anyhow, Context as _, Result};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::{BufRead, Read as _, Write};
use std::path::{Path, PathBuf};

/// The argument that makes kiln the sandbox helper.
pub const HELPER_ARG: &str = "__kiln-sandbox";

/// What the helper needs to run one step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    /// Snapshot directories, bottom first.
    pub lowers: Vec<PathBuf>,
    /// An empty directory (the bottom layer when there are no lowers).
    pub empty: PathBuf,
    pub upper: PathBuf,
    /// overlayfs's work directory, beside `upper`.
    pub work: PathBuf,
    /// Where the root is mounted (an empty directory); with `overlay`
    /// false, the root itself (a full copy the step may change).
    pub rootfs: PathBuf,
    /// Mount the lowers and the upper as an overlay at `rootfs`.
    pub overlay: bool,
    pub argv: Vec<String>,
    /// `KEY=value`.
    pub env: Vec<String>,
    /// Absolute, in the container.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub hostname: String,
    /// A network namespace of its own (`--network=none`).
    pub isolate_network: bool,
    /// Host files bind-mounted over container paths (`/etc/hosts`...).
    pub binds: Vec<(String, PathBuf)>,
    /// Files written under `/dev` (heredoc scripts in `/dev/pipes/`):
    /// container path, content, mode.
    pub dev_files: Vec<(String, String, u32)>,
    /// Where the helper reports how the step ended.
    pub status: PathBuf,
    /// `RUN --mount`s, in order.
    pub mounts: Vec<MountSpec>,
    /// Environment variables set from secrets: name, index in the
    /// secrets the helper reads on its stdin (their bytes never enter the
    /// spec file).
    pub secret_env: Vec<(String, usize)>,
    /// An empty host directory where a tmpfs holds the secret files.
    pub secrets_dir: PathBuf,
    /// `/dev/shm`'s size in bytes (`--shm-size`; 64 MiB by default).
    #[serde(default)]
    pub shm_size: Option<u64>,
    /// `--ulimit`s: (resource name, soft, hard).
    #[serde(default)]
    pub ulimits: Vec<(String, u64, u64)>,
}

/// Parses `--ulimit NAME=SOFT[:HARD]` (`-1` or `unlimited`: no limit),
/// as docker names the resources.
pub fn parse_ulimit(spec: &str) -> Result<(String, u64, u64), String> {
    let (name, vals) = spec
        .split_once('=')
        .ok_or_else(|| format!("--ulimit {spec:?}: expected NAME=SOFT[:HARD]"))?;
    if resource(name).is_none() {
        return Err(format!(
            "--ulimit {spec:?}: unknown limit {name:?} (core, cpu, data, fsize, locks, memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack)"
        ));
    }
    let num = |v: &str| -> Result<u64, String> {
        match v {
            "-1" | "unlimited" => Ok(u64::MAX),
            _ => v
                .parse()
                .map_err(|_| format!("--ulimit {spec:?}: {v:?} is not a number")),
        }
    };
    let (soft, hard) = match vals.split_once(':') {
        Some((s, h)) => (num(s)?, num(h)?),
        None => (num(vals)?, num(vals)?),
    };
    if soft > hard {
        return Err(format!(
            "--ulimit {spec:?}: the soft limit is above the hard one"
        ));
    }
    Ok((name.to_string(), soft, hard))
}

/// The `setrlimit` resource a docker ulimit name stands for.
pub fn resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "core" => libc::RLIMIT_CORE,
        "cpu" => libc::RLIMIT_CPU,
        "data" => libc::RLIMIT_DATA,
        "fsize" => libc::RLIMIT_FSIZE,
        "locks" => libc::RLIMIT_LOCKS,
        "memlock" => libc::RLIMIT_MEMLOCK,
        "msgqueue" => libc::RLIMIT_MSGQUEUE,
        "nice" => libc::RLIMIT_NICE,
        "nofile" => libc::RLIMIT_NOFILE,
        "nproc" => libc::RLIMIT_NPROC,
        "rss" => libc::RLIMIT_RSS,
        "rtprio" => libc::RLIMIT_RTPRIO,
        "rttime" => libc::RLIMIT_RTTIME,
        "sigpending" => libc::RLIMIT_SIGPENDING,
        "stack" => libc::RLIMIT_STACK,
        _ => return None,
    })
}

/// One `RUN --mount`, resolved to host paths.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MountSpec {
    /// `source` bound at `target`. A writable bind of an image or stage
    /// (`scratch` given) gets a throwaway overlay: its writes are lost.
    Bind {
        source: PathBuf,
        target: String,
        readonly: bool,
        scratch: Option<PathBuf>,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
    /// Secret number `index` as a file.
    Secret {
        target: String,
        index: usize,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

/// How a step's process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// A finished step: how it ended, and the last lines of its output.
#[derive(Debug)]
pub struct Outcome {
    pub exit: Exit,
    pub tail: Vec<String>,
}

/// Lines of output kept for the error of a failing step.
const TAIL: usize = 20;

/// Runs `spec` in the sandbox helper; the step's stdout and stderr go to
/// `echo` (when given) line by line as they come.
pub fn run(
    spec: &Spec,
    spec_path: &Path,
    secrets: &[Vec<u8>],
    echo: Option<&dyn Fn(&str)>,
) -> Result<Outcome> {
    let text = serde_json::to_vec(spec).context("cannot encode the sandbox spec")?;
    std::fs::write(spec_path, text)
        .with_context(|| format!("cannot write {}", spec_path.display()))?;
    let (reader, writer) = std::io::pipe().context("cannot create a pipe")?;
    let writer2 = writer.try_clone().context("cannot create a pipe")?;
    let mut child = std::process::Command::new("/proc/self/exe")
        .arg(HELPER_ARG)
        .arg(spec_path)
        .env("KILN_PARENT_PID", std::process::id().to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(writer)
        .stderr(writer2)
        .spawn()
        .context("cannot start the sandbox helper")?;
    crate::cleanup::register_child(child.id());
    // Secrets travel on the helper's stdin, never through a file.
    if let Some(mut stdin) = child.stdin.take() {
        use base64::Engine as _;
        let encoded: Vec<String> = secrets
            .iter()
            .map(|s| base64::engine::general_purpose::STANDARD.encode(s))
            .collect();
        let sent = serde_json::to_vec(&encoded)
            .map_err(anyhow::Error::from)
            .and_then(|p| stdin.write_all(&p).map_err(anyhow::Error::from));
        if let Err(e) = sent {
            let _ = child.kill();
            let _ = child.wait();
            crate::cleanup::forget_child(child.id());
            return Err(e).context("cannot pass the secrets to the sandbox helper");
        }
    }
    let mut tail: VecDeque<String> = VecDeque::new();
    // Lines are cut at 64 KiB: output without newlines must not grow
    // without bound.
    let mut lines = std::io::BufReader::new(reader).take(u64::MAX);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        lines.set_limit(64 << 10);
        match lines.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']);
                if let Some(f) = echo {
                    f(line);
                }
                if tail.len() == TAIL {
                    tail.pop_front();
                }
                tail.push_back(line.to_string());
            }
            Err(_) => break,
        }
    }
    let status = child.wait().context("cannot wait for the sandbox helper")?;
    crate::cleanup::forget_child(child.id());
    // Killed because kiln is being interrupted: the signal handler ends
    // the process.
    crate::cleanup::wait_if_interrupted();
    let report = std::fs::read_to_string(&spec.status).unwrap_or_default();
    let exit = parse_status(&report).ok_or_else(|| {
        anyhow!(
            "the sandbox helper ended ({status}) without a report{}",
            tail.back().map(|l| format!(": {l}")).unwrap_or_default()
        )
    })??;
    Ok(Outcome {
        exit,
        tail: tail.into_iter().collect(),
    })
}

/// The helper's report: `exit N`, `signal N`, or `error MESSAGE` (the
/// sandbox could not be set up, or the command not started).
fn parse_status(s: &str) -> Option<Result<Exit>> {
    let s = s.trim_end();
    if let Some(n) = s.strip_prefix("exit ") {
        return n.parse().ok().map(|n| Ok(Exit::Code(n)));
    }
    if let Some(n) = s.strip_prefix("signal ") {
        return n.parse().ok().map(|n| Ok(Exit::Signal(n)));
    }
    s.strip_prefix("error ").map(|m| Err(anyhow!("{m}")))
}

/// Waits for child `pid` (through EINTR); its raw wait status.
pub(crate) fn wait_status(pid: libc::pid_t) -> std::io::Result<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(status);
        }
        let e = std::io::Error::last_os_error();
        if r < 0 && e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

static FORWARD_TO: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
static FORWARD_AS: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = FORWARD_TO.load(std::sync::atomic::Ordering::Relaxed);
    let as_sig = FORWARD_AS.load(std::sync::atomic::Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, if as_sig > 0 { as_sig } else { sig }) };
    }
}

/// Passes SIGINT, SIGTERM and SIGHUP on to child `pid`: as themselves, or
/// all as `as_signal` (SIGKILL, for a step's PID 1, which takes its whole
/// namespace with it). For the single-threaded launchers only.
pub(crate) fn forward_signals(pid: libc::pid_t, as_signal: Option<libc::c_int>) {
    FORWARD_TO.store(pid, std::sync::atomic::Ordering::Relaxed);
    FORWARD_AS.store(as_signal.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a handler that only calls kill.
        unsafe { libc::signal(sig, forward as *const () as libc::sighandler_t) };
    }
}

/// Writes the helper's report (best effort: the parent says when it is
/// missing).
pub(crate) fn report(path: &Path, text: &str) {
    if let Ok(mut f) = std::fs::File::create(path) {
        let _ = f.write_all(text.as_bytes());
    }
}

/// The `/etc/hosts` a step sees, as BuildKit's.
pub fn hosts_file(hostname: &str, extra: &[(String, String)]) -> String {
    let mut s =
        format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    // `--add-host NAME:IP`, as BuildKit appends them.
    for (name, ip) in extra {
        s.push_str(&format!("{ip}\t{name}\n"));
    }
    s
}

/// The host's resolver configuration for steps: systemd-resolved's
/// upstream file when the host's points at the local stub, as BuildKit
/// does.
pub fn resolv_conf() -> String {
    let main = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if main
        .lines()
        .any(|l| l.trim_start().starts_with("nameserver 127.0.0.53"))
    {
        if let Ok(up) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf") {
            return up;
        }
    }
    if !main
        .lines()
        .any(|l| l.trim_start().starts_with("nameserver"))
    {
        // No resolver configured: Docker's defaults, as BuildKit uses them.
        return "nameserver 8.8.8.8\nnameserver 8.8.4.4\n".to_string();
    }
    main
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse() {
        assert_eq!(
            parse_status("exit 3\n").map(|r| r.ok()),
            Some(Some(Exit::Code(3)))
        );
        assert_eq!(
            parse_status("signal 9").map(|r| r.ok()),
            Some(Some(Exit::Signal(9)))
        );
        let e = parse_status("error exec: nope: not found").map(|r| r.err().map(|e| e.to_string()));
        assert_eq!(e, Some(Some("exec: nope: not found".to_string())));
        assert!(parse_status("").is_none());
    }
}
