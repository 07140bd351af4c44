//! Executing a plan. The solver ([`solve`]) schedules the stages as a DAG
//! and looks every step up in the build cache ([`cache`], [`keys`]); what
//! misses runs here: COPY and ADD write into a stage's view and record
//! what changed, RUN runs in the sandbox ([`run`]), and each becomes a
//! layer in the content store; metadata instructions change the image
//! config and leave history entries.

mod cache;
mod chmod;
mod copy;
mod dry;
mod glob;
mod import;
mod keys;
mod layer;
mod meta;
pub mod mounts;
mod run;
mod solve;
mod users;
mod view;

pub use import::{manifest_and_config, pull_to_store, NamedContext, NamedResolver};
pub use solve::{step_count, Slots};

use crate::context::ignore::Matcher;
use crate::image::config::{History, ImageConfig};
use crate::image::{Image, LayerBlob};
use crate::layer::compress::Compression;
use crate::plan::{Base, CopyOp, Op, Plan, Source, Stage, Step};
use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Inputs of a build besides the plan.
#[derive(Clone)]
pub struct BuildOptions {
    /// The build context directory.
    pub context: PathBuf,
    /// Its `.dockerignore` (already chosen: `<Dockerfile>.dockerignore`
    /// first).
    pub ignore: Matcher,
    /// `--build-context NAME=...`.
    pub named: BTreeMap<String, NamedContext>,
    /// SOURCE_DATE_EPOCH: clamps layer mtimes and sets config times.
    pub source_date_epoch: Option<i64>,
    pub compression: Compression,
    pub threads: usize,
    /// A directory for this build's snapshots; removed by the caller.
    pub work: PathBuf,
    /// `--pull`: re-resolve image tags at the registry instead of using
    /// what the store pulled before.
    pub pull: bool,
    /// Write the target stage's files to disk (for `type=local` and
    /// `type=tar` outputs); otherwise only its layers are made.
    pub materialize: bool,
    /// Keep RUN steps' output to the error of a failing step (`-q`).
    pub quiet: bool,
    /// `--secret`s by id.
    pub secrets: BTreeMap<String, mounts::SecretSource>,
    /// `--ssh` agent sockets by id.
    pub ssh: BTreeMap<String, PathBuf>,
    /// `--network`: RUN's network when a step names none.
    pub network: Option<String>,
    /// `--no-cache`: run every step (and cache the results).
    pub no_cache: bool,
    /// `--no-cache-filter`: stages (by name or index) whose steps run.
    pub no_cache_filter: Vec<String>,
    /// How many stages may run at once.
    pub max_parallelism: usize,
    /// The limit shared by the builds of several platforms (else each
    /// build keeps `max_parallelism` of its own).
    pub slots: Option<std::sync::Arc<solve::Slots>>,
    /// Identifies the Dockerfile across builds (its path), for cache-miss
    /// explanations.
    pub dockerfile_id: String,
    /// Only say what each step would do (`--dry-run`): run nothing, pull
    /// nothing.
    pub dry_run: bool,
    /// `--add-host NAME:IP` entries for RUN's `/etc/hosts`.
    pub add_hosts: Vec<(String, String)>,
    /// `--shm-size` for RUN's `/dev/shm`.
    pub shm_size: Option<u64>,
    /// `--ulimit`s for RUN.
    pub ulimits: Vec<(String, u64, u64)>,
    /// Called with each layer a step of the final image makes (the blob's
    /// digest), as soon as it is in the store: `--push` starts uploading.
    pub on_layer: Option<LayerHook>,
    /// Shown before each stage's name in progress (`linux/arm64`), in a
    /// build of several platforms.
    pub label: Option<String>,
    /// The number of the build's first step in progress output, less
    /// one (after the steps of the platforms before it).
    pub numbered_after: usize,
    /// Set when the build must stop because another one (of another
    /// platform) failed.
    pub cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// See [`BuildOptions::on_layer`].
pub type LayerHook = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// A step failure, with the Dockerfile lines of its instruction.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub line: usize,
    pub end_line: usize,
    pub message: String,
    /// A RUN's last lines of output.
    pub tail: Vec<String>,
    /// A registry failed (pulling a base image, say).
    pub registry: bool,
    /// What to do about it, when kiln knows.
    pub hint: Option<String>,
}

/// A built stage.
pub struct Built {
    pub image: Image,
    /// The stage's root filesystem (inside `BuildOptions::work`).
    pub rootfs: PathBuf,
    /// Owner and mode of the paths this build's layers wrote, as the
    /// layers record them (on disk they may differ without root).
    pub owners: BTreeMap<String, (u32, u32, Option<u32>)>,
    /// The platform it was built for (the plan's target platform).
    pub platform: crate::plan::Platform,
}

impl Built {
    /// Makes the image's config name the platform it was built for, as
    /// BuildKit does when `--platform` was given: the final stage may
    /// start from another platform's image (`FROM --platform=...`, or a
    /// single-platform base), and an arm64 base's `v8` variant is the
    /// default one, left out.
    pub fn claim_platform(&mut self) {
        let (c, p) = (&mut self.image.config, &self.platform);
        if c.os != p.os || c.architecture != p.arch {
            c.os = p.os.clone();
            c.architecture = p.arch.clone();
            c.variant = None;
        }
        if !p.variant.is_empty() {
            c.variant = Some(p.variant.clone());
        }
        if c.architecture == "arm64" && c.variant.as_deref() == Some("v8") {
            c.variant = None;
        }
    }
}

struct StageState {
    view: view::View,
    config: ImageConfig,
    layers: Vec<LayerBlob>,
    cmd_set: bool,
    /// The line of the ARG step just run, to merge its history entries.
    last_arg_line: Option<usize>,
}

/// Steps that came from the cache and steps that ran.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub cached: usize,
    pub ran: usize,
    /// The cache keys of the steps the build used.
    pub keys: Vec<String>,
}

/// Says, step by step, whether the cache has each step (`--dry-run`).
pub fn dry_run(
    plan: &Plan,
    opts: &BuildOptions,
    store: &Store,
    report: &(dyn Fn(&crate::progress::Event) + Sync),
) -> Result<Counts> {
    let (_, (cached, ran), keys) = solve::solve(plan, opts, store, report)?;
    Ok(Counts { cached, ran, keys })
}

/// Builds the plan's target stage.
pub fn build(
    plan: &Plan,
    opts: &BuildOptions,
    store: &Store,
    report: &(dyn Fn(&crate::progress::Event) + Sync),
) -> Result<(Built, Counts)> {
    let (mut target, (cached, ran), keys) = solve::solve(plan, opts, store, report)?;
    if opts.materialize {
        target.view.materialize(store)?;
    }
    let mut config = target.config;
    history_times(&mut config.history);
    // The image's time is its last timed history entry's (so an image
    // rebuilt from the cache is the same image); an image without one
    // (only ONBUILD, say, or metadata on scratch) has none, as in
    // BuildKit.
    config.created = config.history.iter().rev().find_map(|h| h.created.clone());
    config.rootfs.diff_ids = target.layers.iter().map(|l| l.diff_id.clone()).collect();
    Ok((
        Built {
            image: Image::new(config, target.layers),
            owners: target.view.owner_modes(),
            rootfs: target.view.root,
            platform: plan.platform.clone(),
        },
        Counts { cached, ran, keys },
    ))
}

/// Builds one plan per platform, all at once (each with its options: its
/// own work directory, label and numbering, one shared `cancel`). The
/// first failure stops the others, and is the error returned.
pub fn build_platforms(
    jobs: &[(Plan, BuildOptions)],
    store: &Store,
    report: &(dyn Fn(&crate::progress::Event) + Sync),
) -> Result<Vec<(Built, Counts)>> {
    if let [(plan, opts)] = jobs {
        return Ok(vec![build(plan, opts, store, report)?]);
    }
    let results: Vec<Result<(Built, Counts)>> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(plan, opts)| s.spawn(move || build(plan, opts, store, report)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("the build of a platform panicked")))
            })
            .collect()
    });
    let mut built = Vec::new();
    let mut cancelled = None;
    for r in results {
        match r {
            Ok(b) => built.push(b),
            Err(e) if e.downcast_ref::<solve::Cancelled>().is_some() => cancelled = Some(e),
            Err(e) => return Err(e),
        }
    }
    match cancelled {
        Some(e) => Err(e),
        None => Ok(built),
    }
}

/// Gives the history entries of metadata steps (which have no time yet)
/// times as BuildKit's exporter does: the time of the first layer made
/// after them, or of the layer before them. When no entry has a time (an
/// image of metadata alone, on `scratch`), none gets one, so that it too
/// is the same image when built again.
fn history_times(history: &mut [History]) {
    // The first timed entry after an untimed one, else the last timed.
    let mut fill: Option<String> = None;
    let mut untimed = false;
    for h in history.iter() {
        match &h.created {
            Some(t) => {
                fill = Some(t.clone());
                if untimed {
                    break;
                }
            }
            None => untimed = true,
        }
    }
    let Some(mut fill) = fill else {
        return;
    };
    let mut untimed = false;
    for h in history.iter_mut() {
        match &h.created {
            Some(t) if untimed => fill = t.clone(),
            Some(_) => {}
            None => {
                untimed = true;
                h.created = Some(fill.clone());
            }
        }
    }
}

fn step_error(line: usize, end_line: usize, e: anyhow::Error) -> anyhow::Error {
    let message = crate::error_chain(&e);
    let tail = e
        .chain()
        .find_map(|c| c.downcast_ref::<run::RunFailed>())
        .map(|f| f.tail.clone())
        .unwrap_or_default();
    anyhow::Error::new(StepError {
        line,
        end_line: end_line.max(line),
        message,
        tail,
        registry: crate::registry::is_registry_error(&e),
        hint: crate::registry::hint(&e).or_else(|| {
            e.chain()
                .find_map(|c| c.downcast_ref::<run::ExecFormat>())
                .map(|f| f.hint.clone())
        }),
    })
}

fn stage(plan: &Plan, idx: usize) -> Option<&Stage> {
    plan.stages.iter().find(|s| s.index == idx)
}

fn base_text(b: &Base) -> String {
    match b {
        Base::Scratch => "scratch".into(),
        Base::Image { reference } => reference.clone(),
        Base::Stage { index } => format!("stage {index}"),
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The default PATH BuildKit puts into the config of a Linux image that
/// has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn start_stage(sh: &solve::Shared, st: &Stage) -> Result<StageState> {
    let (plan, opts, store) = (sh.plan, sh.opts, sh.store);
    let rootfs = opts.work.join(format!("stage-{}", st.index));
    if rootfs.exists() {
        std::fs::remove_dir_all(&rootfs)
            .with_context(|| format!("cannot clear {}", rootfs.display()))?;
    }
    std::fs::create_dir_all(&rootfs)
        .with_context(|| format!("cannot create {}", rootfs.display()))?;
    let platform = st.platform.clone().unwrap_or_else(|| plan.platform.clone());
    let fresh = |view, config, layers| StageState {
        view,
        config,
        layers,
        cmd_set: false,
        last_arg_line: None,
    };
    let mut state = match &st.base {
        Base::Scratch => {
            let mut config = ImageConfig {
                architecture: platform.arch.clone(),
                os: platform.os.clone(),
                variant: (!platform.variant.is_empty()).then(|| platform.variant.clone()),
                ..ImageConfig::default()
            };
            // BuildKit's empty image works in `/`.
            config.config.working_dir = "/".into();
            let v = if crate::snapshot::overlay::enabled() {
                view::View::overlay(rootfs, Vec::new())
            } else {
                view::View::new(rootfs)
            };
            fresh(v, config, Vec::new())
        }
        Base::Stage { index } => {
            let parent = sh.stage(*index)?;
            let parent = parent.lock().map_err(|_| anyhow!("stage {index} failed"))?;
            // The parent's pending layers are shared, not written; its
            // disk is shared too when it is a (read-only) overlay, else
            // cloned.
            let root = if parent.view.is_overlay() {
                parent.view.root.clone()
            } else {
                crate::export::copy_dir(&parent.view.root, &rootfs)?;
                rootfs
            };
            fresh(
                parent.view.derive(root),
                parent.config.clone(),
                parent.layers.clone(),
            )
        }
        Base::Image { reference } => {
            let img = sh.images.get(reference, opts, store, &platform)?;
            let mut v = match &img.snapshots {
                // The image's overlay is read-only: the stage shares it.
                Some(chain) => view::View::overlay(img.rootfs.clone(), chain.clone()),
                None => {
                    crate::export::copy_dir(&img.rootfs, &rootfs)?;
                    view::View::new(rootfs)
                }
            };
            v.set_base_owners(img.owners.clone());
            if let (Some(entries), Some(layer)) = (&img.entries, img.image.layers.last()) {
                v.add_layer(entries.clone(), layer.clone());
            }
            fresh(v, img.image.config.clone(), img.image.layers.clone())
        }
    };
    if state.config.os == "linux" && state.config.config.env_get("PATH").is_none() {
        state.config.config.env_set("PATH", DEFAULT_PATH);
    }
    // The stage's triggers were planned as steps; the config keeps none.
    state.config.config.on_build.clear();
    Ok(state)
}

/// Runs one step, or (with `cached`, the layer a cache hit gave) only
/// records its layer and history; returns the layer the step made.
fn run_step(
    step: &Step,
    state: &mut StageState,
    sh: &solve::Shared,
    cached: Option<(LayerBlob, i64)>,
    at: &solve::At,
) -> Result<Option<LayerBlob>> {
    let (opts, store) = (sh.opts, sh.store);
    // A layer's history shows when it was made: now, or when the cached
    // layer was (with SOURCE_DATE_EPOCH, that time always). Metadata
    // steps get theirs when the image is finished (see `history_times`).
    let made_at = match (&cached, opts.source_date_epoch) {
        (Some((_, t)), None) => crate::image::config::rfc3339(*t, 0),
        _ => sh.created.clone(),
    };
    let created = made_at.as_str();
    let meta_time = opts.source_date_epoch.map(|_| created);
    let cached = cached.map(|(l, _)| l);
    let made = match &step.op {
        Op::Run { argv, args, .. } => {
            let (layer, text) = match cached {
                Some(l) => {
                    state.view.add_cached(l.clone());
                    (l, run::history_text(argv, args))
                }
                None => run::run(&step.op, state, sh, at)?,
            };
            push_history(state, Some(created), text, Some(layer.clone()))?;
            Some(layer)
        }
        Op::Copy(c) => {
            let layer = match cached {
                Some(l) => {
                    state.view.add_cached(l.clone());
                    l
                }
                None => run_copy(c, state, sh)?,
            };
            push_history(state, Some(created), copy_history(c), Some(layer.clone()))?;
            Some(layer)
        }
        Op::Workdir { path } => {
            let text = meta::apply(&step.op, &mut state.config, &mut state.cmd_set);
            let layer = match cached {
                Some(l) => {
                    state.view.add_cached(l.clone());
                    l
                }
                None => {
                    // The directory is created owned by the USER in force.
                    let user = state.config.config.user.clone();
                    // BuildKit fails here when the user is unknown ("invalid
                    // user index: -1"); kiln says which user.
                    let owner = if user.is_empty() {
                        (0, 0)
                    } else {
                        users::resolve_chown(&|p| view_read(&state.view, p), &user).map_err(
                            |e| anyhow!("WORKDIR {path} is created for USER {user}: {e}"),
                        )?
                    };
                    let mut t = copy::Target::new(&state.view);
                    t.ensure_dir(path.trim_start_matches('/'), owner, sh.now)?;
                    let entries = t.finish()?;
                    let layer = layer::write(entries.clone(), opts, store)?;
                    state.view.add_layer(entries, layer.clone());
                    layer
                }
            };
            push_history(
                state,
                Some(created),
                text.unwrap_or_default(),
                Some(layer.clone()),
            )?;
            Some(layer)
        }
        Op::Arg { name, default, .. } => {
            meta::apply(&step.op, &mut state.config, &mut state.cmd_set);
            // One ARG instruction declaring several names is one history
            // entry, as in BuildKit.
            let decl = match default {
                Some(v) => format!("{name}={v}"),
                None => name.clone(),
            };
            let same_line = state.last_arg_line == Some(step.line);
            match state.config.history.last_mut() {
                Some(h) if same_line => {
                    if let Some(cb) = h.created_by.as_mut() {
                        cb.push(' ');
                        cb.push_str(&decl);
                    }
                }
                _ => push_history(state, meta_time, format!("ARG {decl}"), None)?,
            }
            state.last_arg_line = Some(step.line);
            return Ok(None);
        }
        op => {
            let text = meta::apply(op, &mut state.config, &mut state.cmd_set);
            if let Some(text) = text {
                push_history(state, meta_time, text, None)?;
            }
            None
        }
    };
    state.last_arg_line = None;
    Ok(made)
}

/// `created_by` of COPY and ADD, as BuildKit words it: `--chown` and
/// `--chmod` kept, `--from` and `--link` left out, heredocs as `<<NAME`.
fn copy_history(c: &CopyOp) -> String {
    let mut parts = vec![if c.add { "ADD" } else { "COPY" }.to_string()];
    if let Some(o) = &c.chown {
        parts.push(format!("--chown={o}"));
    }
    if let Some(m) = &c.chmod {
        parts.push(format!("--chmod={m}"));
    }
    parts.extend(c.inline.iter().map(|i| format!("<<{}", i.name)));
    parts.extend(c.sources.iter().cloned());
    parts.push(c.dest_raw.clone());
    format!("{} # buildkit", parts.join(" "))
}

fn push_history(
    state: &mut StageState,
    created: Option<&str>,
    created_by: String,
    layer: Option<LayerBlob>,
) -> Result<()> {
    state.config.history.push(History {
        created: created.map(str::to_string),
        created_by: Some(created_by),
        author: None,
        comment: Some(meta::HISTORY_COMMENT.into()),
        empty_layer: layer.is_none(),
    });
    if let Some(l) = layer {
        state.layers.push(l);
    }
    Ok(())
}

fn view_read(view: &view::View, rel: &str) -> Result<Option<Vec<u8>>, String> {
    view.read(rel).map_err(|e| format!("{e:#}"))
}

fn run_copy(c: &CopyOp, state: &mut StageState, sh: &solve::Shared) -> Result<LayerBlob> {
    let (opts, store, now) = (sh.opts, sh.store, sh.now);
    let chown = match &c.chown {
        Some(spec) => Some(
            users::resolve_chown(&|p| view_read(&state.view, p), spec).map_err(|e| anyhow!(e))?,
        ),
        None => None,
    };
    let chmod = match &c.chmod {
        Some(m) => Some(chmod::Chmod::parse(m).map_err(|e| anyhow!(e))?),
        None => None,
    };
    let exclude = if c.exclude.is_empty() {
        None
    } else {
        Some(Matcher::from_patterns(&c.exclude).map_err(|e| anyhow!("--exclude: {e}"))?)
    };
    let settings = copy::Settings {
        chown,
        chmod,
        now,
        exclude,
    };
    // A source stage stays locked while it is read; reading it needs its
    // files on disk.
    let stage_arc = match &c.source {
        Source::Stage { index } => Some(sh.stage(*index)?),
        _ => None,
    };
    let mut stage_guard = match &stage_arc {
        Some(a) => Some(a.lock().map_err(|_| anyhow!("the source stage failed"))?),
        None => None,
    };
    if let Some(g) = stage_guard.as_mut() {
        g.view.materialize(store)?;
    }
    let image = match &c.source {
        Source::Image { reference }
            if !matches!(opts.named.get(reference), Some(NamedContext::Dir(_))) =>
        {
            Some(
                sh.images
                    .get(reference, opts, store, &state_platform(state))?,
            )
        }
        _ => None,
    };
    let (src_root, matcher, reset_owner, what): (PathBuf, Option<&Matcher>, bool, String) =
        match &c.source {
            Source::Context => (
                opts.context.clone(),
                Some(&opts.ignore),
                true,
                "build context".into(),
            ),
            Source::Stage { index } => {
                let root = stage_guard
                    .as_ref()
                    .map(|g| g.view.root.clone())
                    .ok_or_else(|| anyhow!("stage {index} was not built"))?;
                (root, None, false, format!("stage {index}"))
            }
            Source::Image { reference } => match (&image, opts.named.get(reference)) {
                (Some(img), _) => (
                    img.rootfs.clone(),
                    None,
                    false,
                    format!("image {reference}"),
                ),
                (None, Some(NamedContext::Dir(d))) => {
                    (d.clone(), None, true, format!("build context {reference}"))
                }
                (None, _) => bail!("image {reference} was not loaded"),
            },
        };
    // A stage's intended owners are in its view's index (the disk may not
    // have them without root).
    let stage_view = stage_guard.as_ref().map(|g| &g.view);
    // An image unpacked without root: its owners come from its layers.
    let image_owners = image.as_ref().and_then(|i| i.owners.clone());
    let owner_of: Option<Box<copy::OwnerOf<'_>>> = match (stage_view, image_owners) {
        (Some(v), _) => Some(Box::new(move |rel: &str| v.owner(rel))),
        (None, Some(o)) => Some(Box::new(move |rel: &str| o.get(rel).copied())),
        (None, None) => None,
    };
    let src = copy::Src {
        root: &src_root,
        matcher,
        reset_owner,
        what,
        owners: owner_of.as_ref().map(|f| f as &copy::OwnerOf<'_>),
    };
    // With --link the layer is made against an empty filesystem, so it
    // does not depend on the layers below.
    let empty;
    let base: &view::View = if c.link {
        let dir = opts.work.join("empty");
        std::fs::create_dir_all(&dir).context("cannot create an empty directory")?;
        empty = view::View::new(dir);
        &empty
    } else {
        &state.view
    };
    let mut t = copy::Target::new(base);
    copy_sources(c, &src, &settings, &mut t, opts)?;
    let entries = t.finish()?;
    let layer = layer::write(entries.clone(), opts, store)?;
    state.view.add_layer(entries, layer.clone());
    Ok(layer)
}

fn state_platform(state: &StageState) -> crate::plan::Platform {
    crate::plan::Platform {
        os: state.config.os.clone(),
        arch: state.config.architecture.clone(),
        variant: state.config.variant.clone().unwrap_or_default(),
    }
}

fn copy_sources(
    c: &CopyOp,
    src: &copy::Src,
    s: &copy::Settings,
    t: &mut copy::Target,
    opts: &BuildOptions,
) -> Result<()> {
    let dest = c.dest.as_str();
    let dest_rel = dest.trim_start_matches('/');
    let dest_is_dir = dest.ends_with('/');
    let owner = s.chown.unwrap_or((0, 0));
    // A file COPY makes itself (heredoc, download): named `name` inside a
    // directory destination, else the destination; `mode` unless --chmod.
    let made = |t: &copy::Target, name: &str, mode: u32, mtime: i64| {
        let rel = if dest_is_dir || t.is_dir(dest_rel) {
            crate::snapshot::join_rel(dest_rel.trim_end_matches('/'), name)
        } else {
            dest_rel.to_string()
        };
        let meta = copy::Meta {
            uid: owner.0,
            gid: owner.1,
            mode: s.chmod.as_ref().map_or(mode, |m| m.apply(mode, false)),
            mtime,
        };
        (rel, meta)
    };
    for inline in &c.inline {
        let (rel, m) = made(t, &inline.name, 0o644, s.now);
        t.put_bytes(inline.data.as_bytes(), &rel, &m, s.now)?;
    }
    let mut matched = Vec::new();
    for pattern in &c.sources {
        if c.add && crate::plan::values::is_remote(pattern) {
            let dl = import::download(pattern, c.checksum.as_deref(), &opts.work)?;
            // BuildKit gives downloads mode 0600.
            let (rel, m) = made(t, &dl.name, 0o600, dl.mtime.unwrap_or(s.now));
            t.put_file(&dl.path, dl.size, &rel, &m, s.now)?;
            continue;
        }
        // A wildcard that matches nothing is not an error (BuildKit copies
        // nothing and still makes a layer); a missing plain name is.
        matched.extend(copy::expand(src, pattern)?);
    }
    // Several matches go into the destination as a directory; a wildcard
    // with one match follows the single-file rules (`COPY *.jar app.jar`).
    let several = matched.len() > 1;
    for m in &matched {
        if s.exclude.as_ref().is_some_and(|ex| ex.excluded(&m.rel)) {
            continue;
        }
        // Hardlinks are kept within one source, not across sources.
        t.forget_links();
        if m.meta.is_dir() {
            let sub = if c.parents && !m.keep.is_empty() {
                crate::snapshot::join_rel(dest_rel.trim_end_matches('/'), &m.keep)
            } else {
                dest_rel.trim_end_matches('/').to_string()
            };
            copy::copy_dir_contents(src, m, s, t, &sub, true)?;
            continue;
        }
        let base = m.rel.rsplit('/').next().unwrap_or(&m.rel).to_string();
        let into_dir = dest_is_dir || several || t.is_dir(dest_rel);
        let rel = if c.parents {
            crate::snapshot::join_rel(dest_rel.trim_end_matches('/'), &m.keep)
        } else if into_dir {
            crate::snapshot::join_rel(dest_rel.trim_end_matches('/'), &base)
        } else {
            dest_rel.to_string()
        };
        if c.add && crate::layer::apply::is_archive(&m.host)? {
            import::extract_into(&m.host, t, dest_rel.trim_end_matches('/'), s, &opts.work)?;
            continue;
        }
        let meta = copy::meta_for(src, s, &m.resolved, &m.meta);
        let rel = if into_dir || c.parents {
            rel
        } else {
            t.file_dest(&rel)?
        };
        t.put(&m.host, &m.meta, &rel, &meta, s.now)?;
    }
    Ok(())
}
