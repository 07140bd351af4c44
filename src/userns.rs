//! Rootless builds: an unprivileged `kiln build` re-runs itself as root of
//! a user namespace, the way podman and buildah do, so that layers unpack
//! with their owners, snapshots are overlay mounts and RUN steps get their
//! sandbox. The user's subordinate ids (`/etc/subuid`, `/etc/subgid`) are
//! mapped with `newuidmap`/`newgidmap`; without them, only the user's own
//! id is mapped (to root), and kiln says what that costs.
//!
//! The launcher runs first thing in `main`, while the process has one
//! thread (a multi-threaded process cannot enter a user namespace).

use std::ffi::CString;
use std::io::{Read as _, Write as _};

/// Set in the re-executed kiln: `mapped` or `single`.
const ENV: &str = "KILN_USERNS";

/// How kiln's ids relate to the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No user namespace of kiln's own: root, or a rootless run that
    /// opted out (`KILN_USERNS=off`).
    Host,
    /// Root of a user namespace with the user's subordinate ids.
    Mapped,
    /// Root of a user namespace in which only the user's id exists.
    Single,
}

pub fn mode() -> Mode {
    match std::env::var(ENV).as_deref() {
        Ok("mapped") => Mode::Mapped,
        Ok("single") => Mode::Single,
        _ => Mode::Host,
    }
}

/// Whether kiln runs in a user namespace of its own.
pub fn in_userns() -> bool {
    mode() != Mode::Host
}

/// Whether files can be given any owner: root on the host, or root of a
/// user namespace with subordinate ids.
pub fn full_ids() -> bool {
    rustix::process::geteuid().is_root() && mode() != Mode::Single
}

/// The subordinate range of `user` (by name or uid) in an `/etc/sub?id`
/// file: (start, count).
fn subordinate(file: &str, name: &str, id: u32) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        (who == name || who == id.to_string())
            .then(|| Some((start.parse().ok()?, count.parse().ok()?)))
            .flatten()
    })
}

fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.get(2)? == &uid.to_string()).then(|| f[0].to_string())
            })
        })
        .unwrap_or_default()
}

/// Whether this invocation needs the namespace: a build, or a prune (of
/// files owned by subordinate ids).
fn wants_namespace(args: &[String]) -> bool {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--insecure-registry" {
            it.next();
        } else if !a.starts_with('-') {
            return a == "build" || a == "prune";
        }
    }
    false
}

/// Re-runs kiln inside a user namespace when it is an unprivileged build;
/// returns (to go on as usual) otherwise, and never in the launcher.
pub fn maybe_enter() {
    if rustix::process::geteuid().is_root() || std::env::var_os(ENV).is_some() {
        return;
    }
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if !wants_namespace(&args) {
        return;
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match launch(&args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // No user namespaces here (a locked-down container): build
            // without one, as before; RUN will say it needs one.
            eprintln!("kiln: warning: cannot create a user namespace ({e}); building without one (RUN steps will fail)");
            std::env::set_var(ENV, "off");
        }
    }
}

fn launch(args: &[std::ffi::OsString]) -> Result<i32, String> {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let name = user_name(uid);
    let sub_u = subordinate("/etc/subuid", &name, uid);
    let sub_g = subordinate("/etc/subgid", &name, uid);
    let (from_parent, mut to_child) = std::io::pipe().map_err(|e| e.to_string())?;
    let (mut from_child, to_parent) = std::io::pipe().map_err(|e| e.to_string())?;
    // SAFETY: the process has one thread; the child only unshares, talks
    // over the pipes and executes.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    if pid == 0 {
        drop(to_child);
        drop(from_child);
        child(args, from_parent, to_parent);
    }
    drop(from_parent);
    drop(to_parent);
    let mut b = [0u8; 1];
    if from_child.read_exact(&mut b).is_err() || b[0] != b'u' {
        wait(pid);
        return Err("the user namespace could not be created".into());
    }
    let mapped = match (sub_u, sub_g) {
        (Some(u), Some(g)) => map_ranges(pid, uid, gid, u, g),
        _ => Ranges::None,
    };
    let mode = match mapped {
        Ranges::Both => "mapped",
        Ranges::UidOnly => {
            drop(to_child);
            wait(pid);
            return Err("newuidmap worked but newgidmap did not".into());
        }
        Ranges::None => {
            map_single(pid, uid, gid)?;
            eprintln!(
                "kiln: warning: no subordinate ids for {} in /etc/subuid and /etc/subgid (or no newuidmap): \
                 building in a user namespace where only your own id exists; files of other owners in images \
                 are kept in layers but belong to root on disk, and RUN steps run as root only",
                if name.is_empty() { uid.to_string() } else { name }
            );
            "single"
        }
    };
    to_child
        .write_all(mode.as_bytes())
        .map_err(|e| e.to_string())?;
    drop(to_child);
    // SIGINT and SIGTERM go to the kiln in the namespace, which cleans up.
    crate::exec::forward_signals(pid, None);
    Ok(wait(pid))
}

/// The child: unshare, report, wait for the maps, become root, exec.
fn child(
    args: &[std::ffi::OsString],
    mut from_parent: std::io::PipeReader,
    mut to_parent: std::io::PipeWriter,
) -> ! {
    // SAFETY: single-threaded.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
        let _ = to_parent.write_all(b"x");
        std::process::exit(125);
    }
    let _ = to_parent.write_all(b"u");
    drop(to_parent);
    let mut mode = String::new();
    if from_parent.read_to_string(&mut mode).is_err() || mode.is_empty() {
        std::process::exit(125);
    }
    // SAFETY: plain syscalls; ids 0 are mapped now.
    let ok = unsafe {
        (mode != "mapped" || libc::setgroups(0, std::ptr::null()) == 0)
            && libc::setresgid(0, 0, 0) == 0
            && libc::setresuid(0, 0, 0) == 0
    };
    if !ok {
        eprintln!(
            "kiln: cannot become root of the user namespace: {}",
            std::io::Error::last_os_error()
        );
        std::process::exit(125);
    }
    std::env::set_var(ENV, &mode);
    let exe = CString::new("/proc/self/exe").unwrap_or_default();
    let argv: Vec<CString> = args
        .iter()
        .filter_map(|a| {
            use std::os::unix::ffi::OsStrExt;
            CString::new(a.as_bytes()).ok()
        })
        .collect();
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: valid NUL-terminated strings and a NULL-terminated array;
    // the environment is the process's own (set_var above).
    unsafe { libc::execv(exe.as_ptr(), ptrs.as_ptr()) };
    eprintln!(
        "kiln: cannot re-execute in the user namespace: {}",
        std::io::Error::last_os_error()
    );
    std::process::exit(125);
}

/// What [`map_ranges`] managed.
enum Ranges {
    Both,
    /// The uid map is written, the gid map not: the namespace is spoiled.
    UidOnly,
    None,
}

/// `newuidmap PID 0 UID 1 1 START COUNT` and the same for gids.
fn map_ranges(pid: i32, uid: u32, gid: u32, u: (u32, u32), g: (u32, u32)) -> Ranges {
    let run = |tool: &str, own: u32, (start, count): (u32, u32)| {
        std::process::Command::new(tool)
            .args([
                pid.to_string(),
                "0".into(),
                own.to_string(),
                "1".into(),
                "1".into(),
                start.to_string(),
                count.to_string(),
            ])
            .status()
            .is_ok_and(|s| s.success())
    };
    match (run("newuidmap", uid, u), run("newgidmap", gid, g)) {
        (true, true) => Ranges::Both,
        (true, false) => Ranges::UidOnly,
        _ => Ranges::None,
    }
}

/// Maps only the user's own ids, which an unprivileged process may do.
fn map_single(pid: i32, uid: u32, gid: u32) -> Result<(), String> {
    let write = |file: &str, text: &str| {
        std::fs::write(format!("/proc/{pid}/{file}"), text)
            .map_err(|e| format!("cannot write /proc/{pid}/{file}: {e}"))
    };
    write("setgroups", "deny")?;
    write("uid_map", &format!("0 {uid} 1\n"))?;
    write("gid_map", &format!("0 {gid} 1\n"))
}

/// Waits for `pid`; its exit code, or 128 + the signal that ended it.
fn wait(pid: i32) -> i32 {
    match crate::exec::wait_status(pid) {
        Ok(s) if libc::WIFSIGNALED(s) => 128 + libc::WTERMSIG(s),
        Ok(s) => libc::WEXITSTATUS(s),
        Err(_) => 125,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_builds_want_a_namespace() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(wants_namespace(&v(&["kiln", "build", "."])));
        assert!(wants_namespace(&v(&[
            "kiln",
            "--insecure-registry=x",
            "build",
            "."
        ])));
        assert!(wants_namespace(&v(&[
            "kiln",
            "--insecure-registry",
            "r:5000",
            "build"
        ])));
        assert!(wants_namespace(&v(&["kiln", "prune"])));
        assert!(!wants_namespace(&v(&["kiln", "pull", "x"])));
        assert!(!wants_namespace(&v(&["kiln"])));
    }
}
