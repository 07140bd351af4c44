//! The sandbox helper: kiln re-executed as `kiln __kiln-sandbox SPEC`,
//! single-threaded. It unshares the namespaces, forks the step's PID 1,
//! waits for it and writes how it ended to the spec's status file. PID 1
//! mounts the root and its special filesystems, pivots into the root,
//! drops to the step's user and executes the command.

use super::{report, Spec};
use rustix::mount::{MountFlags, MountPropagationFlags};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;

/// The helper's `main`; never returns.
pub fn main(spec_path: &str) -> ! {
    let spec: Spec = match std::fs::read(spec_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kiln sandbox: cannot read {spec_path}: {e}");
            std::process::exit(125);
        }
    };
    let secrets = match read_secrets() {
        Ok(s) => s,
        Err(e) => fail(&spec, "cannot read the secrets", e),
    };
    // Die with kiln (and if kiln died already, before the prctl took
    // effect, now: an orphan's parent is init or a subreaper, not kiln).
    let kiln = std::env::var("KILN_PARENT_PID")
        .ok()
        .and_then(|p| p.parse::<i32>().ok());
    // SAFETY: prctl with integer arguments; getppid cannot fail.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if kiln.is_some_and(|k| k != unsafe { libc::getppid() }) {
        std::process::exit(125);
    }

    // The mount namespace is PID 1's alone (unshared after the fork):
    // pivot_root moves every process of a mount namespace into the new
    // root, and the helper must keep the host's.
    let mut flags = libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if spec.isolate_network {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: the helper has one thread.
    if unsafe { libc::unshare(flags) } != 0 {
        fail(
            &spec,
            "cannot create the namespaces",
            std::io::Error::last_os_error(),
        );
    }
    // SAFETY: single-threaded; the child only calls async-signal-safe
    // functions until it executes (allocation is fine: no other thread
    // holds the allocator's lock).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        fail(&spec, "cannot fork", std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: as above.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
        // Opened before the pivot, which hides the host's paths.
        let status = std::fs::File::create(&spec.status);
        // SAFETY: single-threaded.
        let err = if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            format!(
                "cannot create the mount namespace: {}",
                std::io::Error::last_os_error()
            )
        } else {
            init(&spec, &secrets)
        };
        if let Ok(mut f) = status {
            use std::io::Write as _;
            let _ = write!(f, "error {err}");
        }
        std::process::exit(127);
    }
    // Signals to the helper end the step (its PID 1 takes its whole
    // namespace with it).
    super::forward_signals(pid, Some(libc::SIGKILL));
    let status = match super::wait_status(pid) {
        Ok(s) => s,
        Err(e) => fail(&spec, "cannot wait for the step", e),
    };
    // PID 1 reports its own setup failures; keep that report.
    let own = std::fs::read_to_string(&spec.status).unwrap_or_default();
    if !own.starts_with("error ") {
        let text = if libc::WIFSIGNALED(status) {
            format!("signal {}", libc::WTERMSIG(status))
        } else {
            format!("exit {}", libc::WEXITSTATUS(status))
        };
        report(&spec.status, &text);
    }
    std::process::exit(0);
}

fn fail(spec: &Spec, what: &str, e: std::io::Error) -> ! {
    report(&spec.status, &format!("error {what}: {e}"));
    std::process::exit(126);
}

/// The secrets kiln writes on the helper's stdin: a JSON list of base64
/// strings.
fn read_secrets() -> std::io::Result<Vec<Vec<u8>>> {
    use base64::Engine as _;
    use std::io::Read as _;
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf)?;
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<String> = serde_json::from_slice(&buf)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    list.iter()
        .map(|s| {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })
        .collect()
}

/// PID 1: mounts, pivot, user, exec. Returns only on failure.
fn init(spec: &Spec, secrets: &[Vec<u8>]) -> String {
    match setup(spec, secrets) {
        Ok(()) => {}
        Err(e) => return e,
    }
    let Some((prog, args)) = spec.argv.split_first() else {
        return "the step has no command".into();
    };
    let mut cmd = std::process::Command::new(prog);
    cmd.args(args)
        .env_clear()
        .stdin(std::process::Stdio::null());
    for kv in &spec.env {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    for (name, index) in &spec.secret_env {
        if let Some(v) = secrets.get(*index) {
            cmd.env(name, std::ffi::OsStr::from_bytes(v));
        }
    }
    let e = cmd.exec();
    if e.kind() == std::io::ErrorKind::NotFound {
        return format!("exec: {prog:?}: executable file not found in $PATH");
    }
    format!("exec: {prog:?}: {e}")
}

fn setup(spec: &Spec, secrets: &[Vec<u8>]) -> Result<(), String> {
    let root = &spec.rootfs;
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(|e| format!("cannot make the mounts private: {e}"))?;
    if spec.overlay {
        mount_root(spec).map_err(|e| format!("cannot mount the step's root filesystem: {e}"))?;
    } else {
        // The copied root, made a mount point for pivot_root.
        bind(root, root, true, false).map_err(|e| format!("cannot bind the step's root: {e}"))?;
    }
    // The mount points the parent checked for; what it had to create it
    // removes from the layer afterwards.
    let (proc_dir, dev_dir, sys_dir) = (
        in_root(root, "proc")?,
        in_root(root, "dev")?,
        in_root(root, "sys")?,
    );
    for dir in [&proc_dir, &dev_dir, &sys_dir] {
        ensure_dir(dir)?;
    }
    rustix::mount::mount(
        "proc",
        &proc_dir,
        "proc",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )
    .map_err(|e| format!("cannot mount /proc: {e}"))?;
    setup_dev(spec, &dev_dir)?;
    if spec.isolate_network {
        // A sysfs of the step's own network namespace (only `lo`), and
        // that interface up, as runc does.
        rustix::mount::mount(
            "sysfs",
            &sys_dir,
            "sysfs",
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            None,
        )
        .map_err(|e| format!("cannot mount /sys: {e}"))?;
        loopback_up().map_err(|e| format!("cannot bring up lo: {e}"))?;
    } else {
        bind(Path::new("/sys"), &sys_dir, true, true).map_err(|e| format!("/sys: {e}"))?;
    }
    for (target, host) in &spec.binds {
        let dest = in_root(root, target)?;
        if let Some(parent) = dest.parent() {
            ensure_dir(parent)?;
        }
        if std::fs::symlink_metadata(&dest).is_err() {
            std::fs::write(&dest, b"").map_err(|e| format!("cannot create {target}: {e}"))?;
        }
        bind(host, &dest, false, false).map_err(|e| format!("{target}: {e}"))?;
    }
    ensure_dir(&in_root(root, &spec.cwd)?)?;
    for m in &spec.mounts {
        user_mount(spec, m, secrets)?;
    }
    confine_proc_and_sys(&proc_dir, &sys_dir);
    pivot(root)?;
    std::env::set_current_dir(&spec.cwd)
        .map_err(|e| format!("cannot change to the working directory {}: {e}", spec.cwd))?;
    for (name, soft, hard) in &spec.ulimits {
        let Some(res) = super::resource(name) else {
            return Err(format!("unknown ulimit {name:?}"));
        };
        let lim = libc::rlimit {
            rlim_cur: if *soft == u64::MAX {
                libc::RLIM_INFINITY
            } else {
                *soft
            },
            rlim_max: if *hard == u64::MAX {
                libc::RLIM_INFINITY
            } else {
                *hard
            },
        };
        // Raised while kiln is still root in the step's namespace.
        // SAFETY: setrlimit with a valid struct.
        if unsafe { libc::setrlimit(res, &lim) } != 0 {
            return Err(format!(
                "cannot set ulimit {name}={soft}:{hard}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    drop_bounding_capabilities()?;
    // SAFETY: plain syscalls with valid buffers.
    unsafe {
        let name = spec.hostname.as_bytes();
        if libc::sethostname(name.as_ptr().cast(), name.len()) != 0 {
            return Err(format!(
                "cannot set the hostname: {}",
                std::io::Error::last_os_error()
            ));
        }
        // A user namespace with one id denies setgroups.
        let single = crate::userns::mode() == crate::userns::Mode::Single;
        if !single && libc::setgroups(spec.groups.len(), spec.groups.as_ptr()) != 0 {
            return Err(format!(
                "cannot set the groups: {}",
                std::io::Error::last_os_error()
            ));
        }
        if libc::setgid(spec.gid) != 0 {
            return Err(format!(
                "cannot set gid {}: {}",
                spec.gid,
                std::io::Error::last_os_error()
            ));
        }
        if libc::setuid(spec.uid) != 0 {
            return Err(format!(
                "cannot set uid {}: {}",
                spec.uid,
                std::io::Error::last_os_error()
            ));
        }
    }
    limit_capabilities()?;
    Ok(())
}

/// Docker's default capabilities: what a step may keep.
const DEFAULT_CAPS: [u32; 14] = [
    0,  // CHOWN
    1,  // DAC_OVERRIDE
    3,  // FOWNER
    4,  // FSETID
    5,  // KILL
    6,  // SETGID
    7,  // SETUID
    8,  // SETPCAP
    10, // NET_BIND_SERVICE
    13, // NET_RAW
    18, // SYS_CHROOT
    27, // MKNOD
    29, // AUDIT_WRITE
    31, // SETFCAP
];

/// Takes every other capability out of the bounding set, for good (as
/// runc does with Docker's defaults); needs CAP_SETPCAP, so before the
/// user changes.
fn drop_bounding_capabilities() -> Result<(), String> {
    for cap in 0..64u32 {
        if DEFAULT_CAPS.contains(&cap) {
            continue;
        }
        // SAFETY: prctl with integer arguments; EINVAL past the last
        // capability the kernel knows ends the loop.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(format!("cannot drop capability {cap}: {e}"));
        }
    }
    Ok(())
}

/// Limits the effective, permitted and inheritable capabilities to the
/// defaults (they matter for root; another user has none left).
fn limit_capabilities() -> Result<(), String> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut mask: u64 = 0;
    for c in DEFAULT_CAPS {
        mask |= 1 << c;
    }
    let lo = (mask & 0xffff_ffff) as u32;
    let hi = (mask >> 32) as u32;
    let mut header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget/capset with the v3 header and two data words.
    unsafe {
        if libc::syscall(
            libc::SYS_capget,
            &mut header as *mut Header,
            data.as_mut_ptr(),
        ) != 0
        {
            return Err(format!("capget: {}", std::io::Error::last_os_error()));
        }
        for (d, m) in data.iter_mut().zip([lo, hi]) {
            d.effective &= m;
            d.permitted &= m;
            d.inheritable &= m;
        }
        if libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) != 0 {
            return Err(format!("capset: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// runc's default confinement of /proc and /sys: kernel tunables and
/// triggers read-only, information leaks masked, /sys read-only all the
/// way down. Paths the kernel lacks are skipped.
fn confine_proc_and_sys(proc_dir: &Path, sys_dir: &Path) {
    for ro in ["bus", "fs", "irq", "sys", "sysrq-trigger"] {
        let p = proc_dir.join(ro);
        if p.exists() && bind(&p, &p, true, false).is_ok() {
            let _ = read_only_recursive(&p);
        }
    }
    for masked in [
        "asound",
        "acpi",
        "kcore",
        "keys",
        "latency_stats",
        "timer_list",
        "timer_stats",
        "sched_debug",
        "scsi",
    ] {
        let p = proc_dir.join(masked);
        match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => {
                let _ = rustix::mount::mount("tmpfs", &p, "tmpfs", MountFlags::RDONLY, None);
            }
            Ok(_) => {
                let _ = bind(Path::new("/dev/null"), &p, false, false);
            }
            Err(_) => {}
        }
    }
    let _ = read_only_recursive(sys_dir);
}

/// `mount_setattr(path, AT_RECURSIVE, MOUNT_ATTR_RDONLY)`.
fn read_only_recursive(p: &Path) -> std::io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let path = CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let attr = MountAttr {
        attr_set: 0x1, // MOUNT_ATTR_RDONLY
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: a valid path and attribute struct of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Where `rel` is under `root`, every symlink followed inside the root
/// (an image's `/var/run -> /run` stays in the image, never the host's).
fn in_root(root: &Path, rel: &str) -> Result<std::path::PathBuf, String> {
    let r = crate::snapshot::resolve_in_root(root, rel, true)
        .map_err(|e| format!("cannot resolve {rel} in the step's root: {e}"))?;
    Ok(crate::snapshot::host_path(root, &r))
}

/// Creates `target` (a file, or a directory) unless it exists.
fn ensure_target(target: &Path, dir: bool) -> Result<(), String> {
    if std::fs::symlink_metadata(target).is_ok() {
        return Ok(());
    }
    if dir {
        return ensure_dir(target);
    }
    if let Some(parent) = target.parent() {
        ensure_dir(parent)?;
    }
    std::fs::write(target, b"").map_err(|e| format!("cannot create {}: {e}", target.display()))
}

/// One `RUN --mount`, under the root (before the pivot).
fn user_mount(spec: &Spec, m: &super::MountSpec, secrets: &[Vec<u8>]) -> Result<(), String> {
    use super::MountSpec;
    let at = |t: &str| in_root(&spec.rootfs, t);
    match m {
        MountSpec::Bind {
            source,
            target,
            readonly,
            scratch,
        } => {
            let dir = source.is_dir();
            let dest = at(target)?;
            ensure_target(&dest, dir)?;
            match scratch {
                Some(scratch) if dir && !readonly && spec.overlay => {
                    throwaway_overlay(source, scratch, &dest).map_err(|e| format!("{target}: {e}"))
                }
                Some(scratch) if dir && !readonly => {
                    // No overlayfs: a throwaway copy.
                    let copy = scratch.join("tree");
                    crate::snapshot::copy::copy_tree(source, &copy)
                        .map_err(|e| format!("{target}: {e}"))?;
                    bind(&copy, &dest, true, false).map_err(|e| format!("{target}: {e}"))
                }
                Some(scratch) if !readonly => {
                    // A writable file: a copy, thrown away with the step.
                    std::fs::create_dir_all(scratch).map_err(|e| format!("{target}: {e}"))?;
                    let copy = scratch.join("file");
                    std::fs::copy(source, &copy).map_err(|e| format!("{target}: {e}"))?;
                    bind(&copy, &dest, false, false).map_err(|e| format!("{target}: {e}"))
                }
                _ => bind(source, &dest, false, *readonly).map_err(|e| format!("{target}: {e}")),
            }
        }
        MountSpec::Tmpfs { target, size } => {
            let dest = at(target)?;
            ensure_target(&dest, true)?;
            let opts = match size {
                Some(n) => format!("mode=1777,size={n}"),
                None => "mode=1777".to_string(),
            };
            let opts = CString::new(opts).map_err(|e| e.to_string())?;
            rustix::mount::mount(
                "tmpfs",
                &dest,
                "tmpfs",
                MountFlags::NOSUID | MountFlags::NODEV,
                Some(opts.as_c_str()),
            )
            .map_err(|e| format!("cannot mount a tmpfs at {target}: {e}"))
        }
        MountSpec::Secret {
            target,
            index,
            mode,
            uid,
            gid,
        } => {
            let value = secrets
                .get(*index)
                .ok_or_else(|| format!("secret {index} for {target} was not passed"))?;
            let store = &spec.secrets_dir;
            // One tmpfs for the step's secrets: their bytes stay in memory.
            if !is_mountpoint(store) {
                let opts = CString::new("mode=700,size=16m").map_err(|e| e.to_string())?;
                rustix::mount::mount(
                    "tmpfs",
                    store,
                    "tmpfs",
                    MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
                    Some(opts.as_c_str()),
                )
                .map_err(|e| format!("cannot mount the secrets' tmpfs: {e}"))?;
            }
            let file = store.join(index.to_string());
            std::fs::write(&file, value).map_err(|e| format!("cannot write a secret: {e}"))?;
            rustix::fs::chown(
                &file,
                Some(rustix::fs::Uid::from_raw(*uid)),
                Some(rustix::fs::Gid::from_raw(*gid)),
            )
            .map_err(|e| format!("cannot chown the secret for {target}: {e}"))?;
            rustix::fs::chmod(&file, rustix::fs::Mode::from_raw_mode(*mode))
                .map_err(|e| format!("cannot chmod the secret for {target}: {e}"))?;
            let dest = at(target)?;
            ensure_target(&dest, false)?;
            bind(&file, &dest, false, true).map_err(|e| format!("{target}: {e}"))
        }
    }
}

fn is_mountpoint(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(p), p.parent().map(std::fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

/// A writable view of `source` whose writes land in `scratch` and are
/// thrown away with it.
fn throwaway_overlay(source: &Path, scratch: &Path, dest: &Path) -> std::io::Result<()> {
    let (upper, work) = (scratch.join("upper"), scratch.join("work"));
    std::fs::create_dir_all(&upper)?;
    std::fs::create_dir_all(&work)?;
    let mnt = crate::snapshot::overlay::overlay_fd(
        &[source],
        Some((&upper, &work)),
        rustix::mount::MountAttrFlags::empty(),
    )?;
    crate::snapshot::overlay::attach(&mnt, dest)
}

/// `ip link set lo up`, through the SIOCSIFFLAGS ioctl.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a socket used for one ioctl on a zeroed, filled-in ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut r = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if r == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            r = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if r != 0 {
            return Err(err);
        }
    }
    Ok(())
}

fn ensure_dir(p: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => Ok(()),
        _ => std::fs::create_dir_all(p).map_err(|e| format!("cannot create {}: {e}", p.display())),
    }
}

/// The overlay of the lowers with the upper directory on top.
fn mount_root(spec: &Spec) -> std::io::Result<()> {
    let mut lowers = vec![spec.empty.as_path()];
    lowers.extend(spec.lowers.iter().map(|l| l.as_path()));
    let mnt = crate::snapshot::overlay::overlay_fd(
        &lowers,
        Some((&spec.upper, &spec.work)),
        rustix::mount::MountAttrFlags::empty(),
    )?;
    crate::snapshot::overlay::attach(&mnt, &spec.rootfs)
}

fn bind(src: &Path, dest: &Path, recursive: bool, readonly: bool) -> rustix::io::Result<()> {
    let mut flags = MountFlags::BIND;
    if recursive {
        flags |= MountFlags::REC;
    }
    rustix::mount::mount(src, dest, "", flags, None)?;
    if readonly {
        // A remount must keep the flags the source mount has (in a user
        // namespace they are locked).
        let mut keep = MountFlags::empty();
        if let Ok(st) = rustix::fs::statvfs(dest) {
            use rustix::fs::StatVfsMountFlags as V;
            for (v, m) in [
                (V::NOEXEC, MountFlags::NOEXEC),
                (V::NOATIME, MountFlags::NOATIME),
                (V::NODIRATIME, MountFlags::NODIRATIME),
                (V::RELATIME, MountFlags::RELATIME),
            ] {
                if st.f_flag.contains(v) {
                    keep |= m;
                }
            }
        }
        rustix::mount::mount_remount(
            dest,
            MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | keep,
            "",
        )?;
    }
    Ok(())
}

/// A tmpfs `/dev` with the usual devices, `pts`, `shm`, the fd links and
/// the step's `/dev/pipes` files.
fn setup_dev(spec: &Spec, dev: &Path) -> Result<(), String> {
    let dev = dev.to_path_buf();
    let cstr = |s: &str| CString::new(s).map_err(|e| e.to_string());
    rustix::mount::mount(
        "tmpfs",
        &dev,
        "tmpfs",
        // Not noexec: heredoc scripts run from /dev/pipes.
        MountFlags::NOSUID,
        Some(cstr("mode=755,size=65536k")?.as_c_str()),
    )
    .map_err(|e| format!("cannot mount /dev: {e}"))?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let p = dev.join(name);
        if crate::userns::in_userns() {
            // No mknod in a user namespace: the host's devices, bound.
            std::fs::write(&p, b"").map_err(|e| format!("cannot create /dev/{name}: {e}"))?;
            bind(&Path::new("/dev").join(name), &p, false, false)
                .map_err(|e| format!("cannot bind /dev/{name}: {e}"))?;
            continue;
        }
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &p,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(major, minor),
        )
        .map_err(|e| format!("cannot create /dev/{name}: {e}"))?;
        // The umask must not narrow the modes.
        rustix::fs::chmod(&p, rustix::fs::Mode::from_raw_mode(0o666))
            .map_err(|e| format!("cannot set the mode of /dev/{name}: {e}"))?;
    }
    for d in ["pts", "shm", "pipes"] {
        std::fs::create_dir(dev.join(d)).map_err(|e| format!("cannot create /dev/{d}: {e}"))?;
    }
    rustix::mount::mount(
        "devpts",
        dev.join("pts"),
        "devpts",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        // The tty group only where it exists.
        Some(
            cstr(if crate::userns::mode() == crate::userns::Mode::Single {
                "newinstance,ptmxmode=0666,mode=0620"
            } else {
                "newinstance,ptmxmode=0666,mode=0620,gid=5"
            })?
            .as_c_str(),
        ),
    )
    .map_err(|e| format!("cannot mount /dev/pts: {e}"))?;
    rustix::mount::mount(
        "shm",
        dev.join("shm"),
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        Some(
            cstr(&format!(
                "mode=1777,size={}",
                spec.shm_size.unwrap_or(64 << 20)
            ))?
            .as_c_str(),
        ),
    )
    .map_err(|e| format!("cannot mount /dev/shm: {e}"))?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link))
            .map_err(|e| format!("cannot create /dev/{link}: {e}"))?;
    }
    for (path, content, mode) in &spec.dev_files {
        // Only a plain name under /dev/pipes: nothing may climb out of the
        // tmpfs.
        let name = path
            .strip_prefix("/dev/pipes/")
            .filter(|n| !n.is_empty() && !n.contains('/') && *n != "." && *n != "..")
            .ok_or_else(|| format!("{path:?} is not a file name under /dev/pipes"))?;
        let p = dev.join("pipes").join(name);
        std::fs::write(&p, content).map_err(|e| format!("cannot write {path}: {e}"))?;
        rustix::fs::chmod(&p, rustix::fs::Mode::from_raw_mode(*mode))
            .map_err(|e| format!("cannot set the mode of {path}: {e}"))?;
    }
    Ok(())
}

/// Makes `root` the root directory and lets go of the old one.
fn pivot(root: &Path) -> Result<(), String> {
    std::env::set_current_dir(root).map_err(|e| format!("cannot enter the root: {e}"))?;
    rustix::process::pivot_root(".", ".").map_err(|e| format!("cannot pivot_root: {e}"))?;
    rustix::mount::unmount(".", rustix::mount::UnmountFlags::DETACH)
        .map_err(|e| format!("cannot detach the old root: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("cannot enter /: {e}"))?;
    Ok(())
}
