//! `RUN --mount`s resolved to host paths for the sandbox: bind sources
//! (the context as `.dockerignore` leaves it, a stage, an image), cache
//! directories kept in the store with their sharing locks, tmpfs, secrets
//! (read from `--secret`, passed to the sandbox in memory) and SSH agent
//! sockets (`--ssh`).

use super::{BuildOptions, NamedContext, StageState};
use crate::dockerfile::mount::{MountType, Sharing};
use crate::exec::MountSpec;
use crate::plan::{PlannedMount, Source};
use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};
use std::path::{Path, PathBuf};

/// Where a `--secret` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

/// Parses `--secret id=ID[,src=PATH|,env=VAR][,type=file|env]` (buildx's
/// syntax; with only an id, the variable of that name, else the file).
pub fn parse_secret(spec: &str) -> Result<(String, SecretSource), String> {
    let (mut id, mut src, mut env, mut kind) = (None, None, None, None);
    for field in spec.split(',') {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| format!("--secret {spec:?}: {field:?} is not key=value"))?;
        match k {
            "id" => id = Some(v.to_string()),
            "src" | "source" => src = Some(v.to_string()),
            "env" => env = Some(v.to_string()),
            "type" => kind = Some(v.to_string()),
            _ => return Err(format!("--secret {spec:?}: unexpected key {k:?}")),
        }
    }
    let id = id
        .or_else(|| src.as_deref().map(|s| go_base(s).to_string()))
        .or_else(|| env.clone())
        .filter(|i| !i.is_empty())
        .ok_or_else(|| format!("--secret {spec:?}: needs id=ID"))?;
    let source = match (src, env, kind.as_deref()) {
        (Some(s), _, Some("file") | None) => SecretSource::File(PathBuf::from(s)),
        (Some(s), _, Some("env")) => SecretSource::Env(s),
        (None, Some(e), _) => SecretSource::Env(e),
        (None, None, Some("file")) => SecretSource::File(PathBuf::from(&id)),
        (None, None, _) => {
            if std::env::var_os(&id).is_some() {
                SecretSource::Env(id.clone())
            } else {
                SecretSource::File(PathBuf::from(&id))
            }
        }
        (_, _, Some(other)) => return Err(format!("--secret {spec:?}: unknown type {other:?}")),
    };
    Ok((id, source))
}

fn go_base(p: &str) -> &str {
    p.trim_end_matches('/').rsplit('/').next().unwrap_or(p)
}

/// What a `--ssh` id forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshSource {
    /// A running agent's socket.
    Socket(PathBuf),
    /// Private key files, served by an agent kiln starts for the build.
    Keys(Vec<PathBuf>),
}

/// Parses `--ssh default|ID=PATH[,PATH...]`, as buildx: `default` alone
/// is `$SSH_AUTH_SOCK`; a PATH is an agent socket or a private key file.
pub fn parse_ssh(spec: &str) -> Result<(String, SshSource), String> {
    let (id, paths) = match spec.split_once('=') {
        Some((id, p)) => (
            id.to_string(),
            p.split(',').map(PathBuf::from).collect::<Vec<_>>(),
        ),
        None => {
            let sock = std::env::var_os("SSH_AUTH_SOCK")
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("--ssh {spec}: SSH_AUTH_SOCK is not set"))?;
            (spec.to_string(), vec![PathBuf::from(sock)])
        }
    };
    if id.is_empty() {
        return Err(format!("--ssh {spec}: the id is empty"));
    }
    if paths.iter().any(|p| p.as_os_str().is_empty()) {
        return Err(format!("--ssh {spec}: a path is empty"));
    }
    let is_socket = |p: &PathBuf| {
        use std::os::unix::fs::FileTypeExt;
        std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
    };
    match paths.as_slice() {
        [one] if is_socket(one) => Ok((id, SshSource::Socket(one.clone()))),
        many if many.iter().any(is_socket) => Err(format!(
            "--ssh {spec}: give one agent socket, or key files, not both"
        )),
        keys => Ok((id, SshSource::Keys(keys.to_vec()))),
    }
}

/// An `ssh-agent` kiln runs for a build's `--ssh` key files; stopped
/// (by PID) when dropped.
pub struct Agent {
    child: std::process::Child,
    pub socket: PathBuf,
}

impl Agent {
    /// Starts OpenSSH's `ssh-agent` on a socket in `dir` and adds `keys`
    /// (which must not need a passphrase: nothing can ask for it).
    pub fn start(keys: &[PathBuf], dir: &Path) -> Result<Agent> {
        let socket = dir.join(format!("ssh-agent-{}.sock", std::process::id()));
        let child = std::process::Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot start ssh-agent for --ssh key files (OpenSSH's ssh-agent, Debian's openssh-client)")?;
        crate::cleanup::register_child(child.id());
        let agent = Agent { child, socket };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !agent.socket.exists() {
            if std::time::Instant::now() > deadline {
                bail!("ssh-agent did not start");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let o = std::process::Command::new("ssh-add")
            .args(keys)
            .env("SSH_AUTH_SOCK", &agent.socket)
            .env("SSH_ASKPASS_REQUIRE", "never")
            .stdin(std::process::Stdio::null())
            .output()
            .context("cannot run ssh-add")?;
        if !o.status.success() {
            bail!(
                "ssh-add could not load the --ssh keys: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        Ok(agent)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        crate::cleanup::forget_child(self.child.id());
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// What the sandbox needs for a step's mounts.
#[derive(Default)]
pub struct Prepared {
    pub mounts: Vec<MountSpec>,
    pub secrets: Vec<Vec<u8>>,
    pub secret_env: Vec<(String, usize)>,
    /// `SSH_AUTH_SOCK=...` for the first ssh mount.
    pub env: Vec<String>,
    /// Container paths the mounts cover (stubs to clean up).
    pub targets: Vec<String>,
    /// Cache locks, held until the step ends.
    _locks: Vec<std::fs::File>,
}

/// Resolves a step's mounts; `dir` is the step's work directory.
pub(super) fn prepare(
    mounts: &[PlannedMount],
    state: &StageState,
    sh: &super::solve::Shared,
    dir: &Path,
) -> Result<Prepared> {
    let (opts, store) = (sh.opts, sh.store);
    let mut src = Sources {
        state,
        opts,
        store,
        sh,
        dir,
    };
    let mut p = Prepared::default();
    for (n, pm) in mounts.iter().enumerate() {
        let m = &pm.mount;
        let target = m.target.clone().unwrap_or_default();
        match m.kind {
            MountType::Bind => {
                let source = src.source_path(pm, n)?;
                let scratch = (!m.readonly).then(|| dir.join(format!("mount-{n}")));
                p.mounts.push(MountSpec::Bind {
                    source,
                    target: target.clone(),
                    readonly: m.readonly,
                    scratch,
                });
            }
            MountType::Cache => {
                let (path, lock) = src.cache_dir(pm, n)?;
                p._locks.extend(lock);
                p.mounts.push(MountSpec::Bind {
                    source: path,
                    target: target.clone(),
                    readonly: m.readonly,
                    scratch: None,
                });
            }
            MountType::Tmpfs => p.mounts.push(MountSpec::Tmpfs {
                target: target.clone(),
                size: m.size,
            }),
            MountType::Secret => {
                let id = m.id.clone().unwrap_or_default();
                let Some(value) = secret_value(opts, &id)? else {
                    if m.required {
                        bail!("secret {id:?} is required but was not given (--secret id={id},src=FILE or env=VAR)");
                    }
                    continue;
                };
                let index = p.secrets.len();
                p.secrets.push(value);
                if let Some(var) = &m.env {
                    p.secret_env.push((var.clone(), index));
                }
                if let Some(t) = &m.target {
                    p.mounts.push(MountSpec::Secret {
                        target: t.clone(),
                        index,
                        mode: m.mode.unwrap_or(0o400),
                        uid: m.uid.unwrap_or(0),
                        gid: m.gid.unwrap_or(0),
                    });
                } else {
                    continue;
                }
            }
            MountType::Ssh => {
                let id = m.id.clone().unwrap_or_else(|| "default".into());
                let Some(sock) = opts.ssh.get(&id) else {
                    if m.required {
                        bail!("ssh agent {id:?} is required but was not forwarded (--ssh {id})");
                    }
                    continue;
                };
                if !p.env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
                    p.env.push(format!("SSH_AUTH_SOCK={target}"));
                }
                p.mounts.push(MountSpec::Bind {
                    source: sock.clone(),
                    target: target.clone(),
                    readonly: false,
                    scratch: None,
                });
            }
        }
        p.targets.push(target);
    }
    Ok(p)
}

fn secret_value(opts: &BuildOptions, id: &str) -> Result<Option<Vec<u8>>> {
    Ok(match opts.secrets.get(id) {
        None => None,
        Some(SecretSource::Env(var)) => std::env::var_os(var).map(|v| {
            use std::os::unix::ffi::OsStrExt;
            v.as_bytes().to_vec()
        }),
        Some(SecretSource::File(path)) => Some(
            crate::snapshot::read_small(path, 500 << 10)
                .with_context(|| format!("secret {id:?}: cannot read {}", path.display()))?,
        ),
    })
}

/// What a step's mounts read from.
struct Sources<'a> {
    state: &'a StageState,
    opts: &'a BuildOptions,
    store: &'a Store,
    sh: &'a super::solve::Shared<'a>,
    /// The step's work directory.
    dir: &'a Path,
}

impl Sources<'_> {
    /// The host path of a bind mount's (or cache seed's) `from`/`source`.
    fn source_path(&mut self, pm: &PlannedMount, n: usize) -> Result<PathBuf> {
        let (state, opts, store, dir) = (self.state, self.opts, self.store, self.dir);
        let sh = self.sh;
        let (root, what) = match &pm.from_source {
            None | Some(Source::Context) => (
                filtered_context(opts, &dir.join(format!("context-{n}")))?,
                "the build context".to_string(),
            ),
            Some(Source::Stage { index }) => {
                let s = sh.stage(*index)?;
                let mut s = s.lock().map_err(|_| anyhow!("stage {index} failed"))?;
                s.view.materialize(store)?;
                (s.view.root.clone(), format!("stage {index}"))
            }
            Some(Source::Image { reference }) => match opts.named.get(reference) {
                Some(NamedContext::Dir(d)) => (d.clone(), format!("build context {reference}")),
                _ => {
                    let platform = super::state_platform(state);
                    let img = sh.images.get(reference, opts, store, &platform)?;
                    (img.rootfs.clone(), format!("image {reference}"))
                }
            },
        };
        let source = pm.mount.source.clone().unwrap_or_default();
        let rel = crate::snapshot::resolve_in_root(&root, &source, true)
            .with_context(|| format!("mount source {source:?} in {what}"))?;
        let host = crate::snapshot::host_path(&root, &rel);
        if std::fs::symlink_metadata(&host).is_err() {
            bail!("mount source {:?} is not in {what}", format!("/{rel}"));
        }
        Ok(host)
    }

    /// The cache mount's directory (made on first use, seeded from `from`
    /// when given, with its mode and owner), and the lock its sharing asks
    /// for. A `private` cache in use by another build gets a fresh directory
    /// for this step.
    fn cache_dir(
        &mut self,
        pm: &PlannedMount,
        n: usize,
    ) -> Result<(PathBuf, Option<std::fs::File>)> {
        let (store, dir) = (self.store, self.dir);
        let m = &pm.mount;
        let id = m.id.clone().unwrap_or_default();
        let key = crate::layer::compress::sha256_hex(id.as_bytes());
        let caches = store.root().join("cache-mounts");
        std::fs::create_dir_all(&caches)
            .with_context(|| format!("cannot create {}", caches.display()))?;
        let mut path = caches.join(&key[..32]);
        let lock_path = caches.join(format!("{}.lock", &key[..32]));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        use rustix::fs::FlockOperation as F;
        let lock = match m.sharing.unwrap_or(Sharing::Shared) {
            Sharing::Shared => {
                rustix::fs::flock(&lock, F::LockShared).context("cannot lock a cache mount")?;
                Some(lock)
            }
            Sharing::Locked => {
                rustix::fs::flock(&lock, F::LockExclusive).context("cannot lock a cache mount")?;
                Some(lock)
            }
            Sharing::Private => match rustix::fs::flock(&lock, F::NonBlockingLockExclusive) {
                Ok(()) => Some(lock),
                Err(_) => {
                    path = dir.join(format!("cache-{n}"));
                    None
                }
            },
        };
        if !path.is_dir() {
            let tmp = dir.join(format!("cache-new-{n}"));
            let seeded = pm.from_source.is_some();
            if seeded {
                let from = self.source_path(pm, n)?;
                crate::export::copy_dir(&from, &tmp)?;
            } else {
                std::fs::create_dir_all(&tmp)
                    .with_context(|| format!("cannot create {}", tmp.display()))?;
            }
            rustix::fs::chown(
                &tmp,
                Some(rustix::fs::Uid::from_raw(m.uid.unwrap_or(0))),
                Some(rustix::fs::Gid::from_raw(m.gid.unwrap_or(0))),
            )
            .context("cannot set the owner of a cache mount")?;
            rustix::fs::chmod(
                &tmp,
                rustix::fs::Mode::from_raw_mode(m.mode.unwrap_or(0o755)),
            )
            .context("cannot set the mode of a cache mount")?;
            if std::fs::rename(&tmp, &path).is_err() && !path.is_dir() {
                bail!("cannot create the cache mount {}", path.display());
            }
        }
        Ok((path, lock))
    }
}

/// The build context as `.dockerignore` leaves it: the directory itself
/// when nothing is ignored, else a read-only overlay in which whiteouts
/// hide what is ignored.
fn filtered_context(opts: &BuildOptions, at: &Path) -> Result<PathBuf> {
    if opts.ignore.is_empty() {
        return Ok(opts.context.clone());
    }
    if !crate::snapshot::overlay::enabled() {
        // No overlayfs: a copy of what the context keeps.
        let kept = crate::context::ignore::walk(&opts.context, "", &opts.ignore)
            .with_context(|| format!("cannot read {}", opts.context.display()))?;
        crate::snapshot::copy::copy_paths(
            &opts.context,
            kept.iter().map(|e| e.rel_path.as_str()),
            at,
        )
        .with_context(|| format!("cannot copy {}", opts.context.display()))?;
        return Ok(at.to_path_buf());
    }
    let hide = at.with_extension("hide");
    std::fs::create_dir_all(&hide).with_context(|| format!("cannot create {}", hide.display()))?;
    let ctx = &opts.context;
    let mut walk = walkdir::WalkDir::new(ctx)
        .follow_links(false)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter();
    while let Some(item) = walk.next() {
        let item = item.with_context(|| format!("cannot read {}", ctx.display()))?;
        let Some(rel) = item.path().strip_prefix(ctx).ok().and_then(Path::to_str) else {
            continue;
        };
        if !opts.ignore.excluded(rel) {
            continue;
        }
        let is_dir = item.file_type().is_dir();
        if is_dir && opts.ignore.may_reinclude_under(rel) {
            // Some of it may come back: hide its children one by one.
            std::fs::create_dir_all(hide.join(rel)).context("cannot hide ignored files")?;
            continue;
        }
        let p = hide.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).context("cannot hide ignored files")?;
        }
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &p,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .context("cannot hide ignored files")?;
        if is_dir {
            walk.skip_current_dir();
        }
    }
    super::import::mount(&[ctx.clone(), hide], at)?;
    Ok(at.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_parse_as_buildx() {
        assert_eq!(
            parse_secret("id=a,src=/x/y").expect("ok"),
            ("a".into(), SecretSource::File("/x/y".into()))
        );
        assert_eq!(
            parse_secret("id=a,env=TOKEN").expect("ok"),
            ("a".into(), SecretSource::Env("TOKEN".into()))
        );
        assert_eq!(
            parse_secret("src=/run/key.pem").expect("ok"),
            ("key.pem".into(), SecretSource::File("/run/key.pem".into()))
        );
        assert!(parse_secret("id=a,bogus=1").is_err());
        assert!(parse_secret("src=").is_err());
    }
}
