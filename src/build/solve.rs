//! The solver: runs the plan's stages as a DAG, each as soon as the
//! stages it needs are done, up to `--max-parallelism` at once, and each
//! step through the build cache.
//!
//! A step that makes a layer (RUN, COPY, ADD, WORKDIR) first gets its
//! cache key ([`super::cache`]). A hit takes the layer the index names
//! and runs nothing: the stage's view records the layer as pending, and
//! only a later step that misses needs its files (then the view unpacks
//! it, or stacks the snapshot the step left). A miss takes the key's
//! lock, looks again (another build may have made it meanwhile: identical
//! steps, in this build or another, are built once), runs the step,
//! writes the entry and the explanation record.
//!
//! The first failure cancels the other stages: steps not started are not
//! started, running RUN steps are killed.

use super::cache::{self, Files, Inputs};
use super::{import, BuildOptions, StageState};
use crate::context::checksum::{Selection, StatCache};
use crate::plan::{Base, Op, Plan, Source, Stage, Step};
use crate::progress::{Event, StepEvent};
use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A finished stage: its state, and the key of its last layer.
pub(super) struct Finished {
    pub state: Arc<Mutex<StageState>>,
    pub key: String,
}

/// What the stages of one build share.
pub(super) struct Shared<'a> {
    pub plan: &'a Plan,
    pub opts: &'a BuildOptions,
    pub store: &'a Store,
    pub images: import::Images,
    done: Mutex<BTreeMap<usize, Finished>>,
    cancel: AtomicBool,
    report: &'a (dyn Fn(&Event) + Sync),
    stat: Mutex<BTreeMap<PathBuf, Arc<StatCache>>>,
    /// The number of each stage's FROM line in the progress output.
    numbers: BTreeMap<usize, usize>,
    total: usize,
    /// The target stage and the stages it is based on (`FROM stage`):
    /// their layers are the image's.
    image_stages: BTreeSet<usize>,
    pub now: i64,
    pub created: String,
    pub hits: AtomicUsize,
    pub misses: AtomicUsize,
}

/// The error a stage stops with when another one failed first.
#[derive(Debug, thiserror::Error)]
#[error("cancelled: another stage failed")]
struct Cancelled;

impl Shared<'_> {
    /// A finished stage's state.
    pub fn stage(&self, index: usize) -> Result<Arc<Mutex<StageState>>> {
        self.done
            .lock()
            .map_err(|_| anyhow!("a stage failed"))?
            .get(&index)
            .map(|f| f.state.clone())
            .ok_or_else(|| anyhow!("stage {index} was not built"))
    }

    fn stage_key(&self, index: usize) -> Result<String> {
        self.done
            .lock()
            .map_err(|_| anyhow!("a stage failed"))?
            .get(&index)
            .map(|f| f.key.clone())
            .ok_or_else(|| anyhow!("stage {index} was not built"))
    }

    fn stat_cache(&self, dir: &Path) -> Arc<StatCache> {
        let Ok(mut m) = self.stat.lock() else {
            return Arc::new(StatCache::in_memory());
        };
        m.entry(dir.to_path_buf())
            .or_insert_with(|| Arc::new(StatCache::load(self.store.root(), dir)))
            .clone()
    }

    fn report(&self, e: &Event) {
        (self.report)(e);
    }
}

/// Builds the plan's stages; returns the target's state.
pub(super) fn solve(
    plan: &Plan,
    opts: &BuildOptions,
    store: &Store,
    report: &(dyn Fn(&Event) + Sync),
) -> Result<(StageState, (usize, usize))> {
    let now = opts.source_date_epoch.unwrap_or_else(super::unix_now);
    let mut numbers = BTreeMap::new();
    let mut total = 0;
    for &i in &plan.order {
        if let Some(st) = super::stage(plan, i) {
            numbers.insert(i, total + 1);
            total += st.steps.len() + 1;
        }
    }
    let mut image_stages = BTreeSet::new();
    let mut at = Some(plan.target);
    while let Some(i) = at {
        if !image_stages.insert(i) {
            break;
        }
        at = match super::stage(plan, i).map(|s| &s.base) {
            Some(Base::Stage { index }) => Some(*index),
            _ => None,
        };
    }
    let sh = Shared {
        plan,
        image_stages,
        opts,
        store,
        images: import::Images::new(opts.work.join("images")),
        done: Mutex::new(BTreeMap::new()),
        cancel: AtomicBool::new(false),
        report,
        stat: Mutex::new(BTreeMap::new()),
        numbers,
        total,
        now,
        created: crate::image::config::rfc3339(now, 0),
        hits: AtomicUsize::new(0),
        misses: AtomicUsize::new(0),
    };
    let result = schedule(&sh);
    // Digests learned are worth keeping even when the build failed.
    if let Ok(m) = sh.stat.lock() {
        for c in m.values() {
            let _ = c.save(&store.root().join("tmp"));
        }
    }
    result?;
    let target = sh
        .done
        .lock()
        .map_err(|_| anyhow!("a stage failed"))?
        .remove(&plan.target)
        .ok_or_else(|| anyhow!("the target stage was not built"))?;
    let state = Arc::try_unwrap(target.state)
        .map_err(|_| anyhow!("the target stage is still in use"))?
        .into_inner()
        .map_err(|_| anyhow!("a stage failed"))?;
    let counts = (
        sh.hits.load(Ordering::Relaxed),
        sh.misses.load(Ordering::Relaxed),
    );
    Ok((state, counts))
}

/// Runs each stage on a thread of its own once the stages it needs are
/// done, at most `max_parallelism` at a time; the first error wins.
fn schedule(sh: &Shared) -> Result<()> {
    let max = sh.opts.max_parallelism.max(1);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<()>)>();
    let mut started: BTreeSet<usize> = BTreeSet::new();
    let mut finished: BTreeSet<usize> = BTreeSet::new();
    let mut first: Option<anyhow::Error> = None;
    std::thread::scope(|s| {
        let mut running = 0;
        loop {
            if first.is_none() {
                for &idx in &sh.plan.order {
                    if running >= max {
                        break;
                    }
                    if started.contains(&idx) {
                        continue;
                    }
                    let Some(st) = super::stage(sh.plan, idx) else {
                        continue;
                    };
                    if !st.deps.iter().all(|d| finished.contains(d)) {
                        continue;
                    }
                    started.insert(idx);
                    running += 1;
                    let tx = tx.clone();
                    s.spawn(move || {
                        let r = run_stage(sh, st);
                        let _ = tx.send((idx, r));
                    });
                }
            }
            if running == 0 {
                break;
            }
            let Ok((idx, r)) = rx.recv() else {
                break;
            };
            running -= 1;
            match r {
                Ok(()) => {
                    finished.insert(idx);
                }
                Err(e) => {
                    if first.is_none() && e.downcast_ref::<Cancelled>().is_none() {
                        sh.cancel.store(true, Ordering::SeqCst);
                        crate::cleanup::kill_children();
                        first = Some(e);
                    }
                }
            }
        }
    });
    match first {
        Some(e) => Err(e),
        None if started.len() < sh.plan.order.len() => {
            bail!("the plan's stages depend on each other in a cycle")
        }
        None => Ok(()),
    }
}

fn run_stage(sh: &Shared, st: &Stage) -> Result<()> {
    let number = sh.numbers.get(&st.index).copied().unwrap_or(0);
    let name = st.display_name();
    let from = format!("FROM {}", super::base_text(&st.base));
    At {
        n: number,
        stage: &name,
        text: &from,
    }
    .report(sh, StepEvent::Start);
    let (mut state, mut parent) = start(sh, st).map_err(|e| super::step_error(st.line, e))?;
    for (i, step) in st.steps.iter().enumerate() {
        if sh.cancel.load(Ordering::SeqCst) {
            return Err(Cancelled.into());
        }
        let head = At {
            n: number + i + 1,
            stage: &name,
            text: &step.text,
        };
        if let Err(e) = run_step(sh, st, i, step, &mut state, &mut parent, &head) {
            if !sh.cancel.load(Ordering::SeqCst) {
                head.report(sh, StepEvent::Error(&crate::error_chain(&e)));
            }
            return Err(super::step_error(step.line, e));
        }
    }
    sh.done
        .lock()
        .map_err(|_| anyhow!("a stage failed"))?
        .insert(
            st.index,
            Finished {
                state: Arc::new(Mutex::new(state)),
                key: parent.key,
            },
        );
    Ok(())
}

/// Where a step is, for progress events.
pub(super) struct At<'a> {
    pub n: usize,
    pub stage: &'a str,
    pub text: &'a str,
}

impl At<'_> {
    pub fn report(&self, sh: &Shared, what: StepEvent) {
        sh.report(&Event::Step {
            n: self.n,
            total: sh.total,
            stage: self.stage,
            text: self.text,
            what,
        });
    }
}

/// The step before: its key and, for explanations, its text.
struct Parent {
    key: String,
    text: String,
}

fn platform_text(state: &StageState) -> String {
    super::state_platform(state).to_string()
}

/// The key of a step whose inputs a dry run cannot know (an image not in
/// the store): later steps say their parent would run.
const UNKNOWN: &str = "unknown";

/// A dry run's stage start: the base's config from the store, no files.
fn start_dry(sh: &Shared, st: &Stage) -> Result<(StageState, Parent)> {
    let platform = st
        .platform
        .clone()
        .unwrap_or_else(|| sh.plan.platform.clone());
    let mut config = crate::image::config::ImageConfig {
        architecture: platform.arch.clone(),
        os: platform.os.clone(),
        variant: (!platform.variant.is_empty()).then(|| platform.variant.clone()),
        ..Default::default()
    };
    let mut base = Inputs::default();
    let (key, text) = match &st.base {
        Base::Scratch => {
            config.config.working_dir = "/".into();
            base.set("platform", platform.to_string());
            base.set("base", "scratch");
            (base.key(), "scratch".to_string())
        }
        Base::Image { reference } => {
            let name = match sh.opts.named.get(reference) {
                Some(import::NamedContext::DockerImage(r)) => r.clone(),
                Some(_) => {
                    return Ok((
                        dry_state(sh, config),
                        Parent {
                            key: UNKNOWN.into(),
                            text: format!("build context {reference} is read only by a build"),
                        },
                    ))
                }
                None => reference.clone(),
            };
            match import::resolve_offline(&name, sh.store, &platform) {
                Some((digest, c)) => {
                    config = c;
                    base.set("platform", platform.to_string());
                    base.set("base", format!("image {digest}"));
                    (base.key(), format!("image {reference}@{digest}"))
                }
                None => (
                    UNKNOWN.to_string(),
                    format!("base image {reference} is not in the store: it would be pulled"),
                ),
            }
        }
        Base::Stage { index } => {
            let parent = sh.stage(*index)?;
            let parent = parent.lock().map_err(|_| anyhow!("stage {index} failed"))?;
            config = parent.config.clone();
            let key = sh.stage_key(*index)?;
            let name = super::stage(sh.plan, *index)
                .map_or_else(|| index.to_string(), |s| s.display_name());
            if key == UNKNOWN {
                (key, format!("stage {name} would run"))
            } else {
                base.set("platform", platform_text(&parent));
                base.set("base", format!("stage {key}"));
                (base.key(), format!("stage {name}"))
            }
        }
    };
    let mut state = dry_state(sh, config);
    if state.config.os == "linux" && state.config.config.env_get("PATH").is_none() {
        state.config.config.env_set("PATH", super::DEFAULT_PATH);
    }
    state.config.config.on_build.clear();
    Ok((state, Parent { key, text }))
}

fn dry_state(sh: &Shared, config: crate::image::config::ImageConfig) -> StageState {
    StageState {
        view: super::view::View::new(sh.opts.work.join("dry-run")),
        config,
        layers: Vec::new(),
        cmd_set: false,
        last_arg_line: None,
    }
}

/// The stage's start, and the key its first step builds on.
fn start(sh: &Shared, st: &Stage) -> Result<(StageState, Parent)> {
    if sh.opts.dry_run {
        return start_dry(sh, st);
    }
    let state = super::start_stage(sh, st)?;
    let mut base = Inputs::default();
    base.set("platform", platform_text(&state));
    let text = match &st.base {
        Base::Scratch => {
            base.set("base", "scratch");
            "scratch".to_string()
        }
        Base::Image { reference } => {
            let platform = st
                .platform
                .clone()
                .unwrap_or_else(|| sh.plan.platform.clone());
            let img = sh.images.get(reference, sh.opts, sh.store, &platform)?;
            base.set("base", format!("image {}", img.digest));
            format!("image {reference}@{}", img.digest)
        }
        Base::Stage { index } => {
            let key = sh.stage_key(*index)?;
            base.set("base", format!("stage {key}"));
            let name = super::stage(sh.plan, *index)
                .map_or_else(|| index.to_string(), |s| s.display_name());
            format!("stage {name}")
        }
    };
    Ok((
        state,
        Parent {
            key: base.key(),
            text,
        },
    ))
}

fn no_cache(sh: &Shared, st: &Stage) -> Option<String> {
    if sh.opts.no_cache {
        return Some("--no-cache".into());
    }
    let name = st.display_name();
    sh.opts
        .no_cache_filter
        .iter()
        .find(|f| **f == name || **f == st.index.to_string())
        .map(|f| format!("--no-cache-filter {f}"))
}

fn run_step(
    sh: &Shared,
    st: &Stage,
    i: usize,
    step: &Step,
    state: &mut StageState,
    parent: &mut Parent,
    head: &At,
) -> Result<()> {
    let layered = matches!(step.op, Op::Run { .. } | Op::Copy(_) | Op::Workdir { .. });
    if !layered {
        head.report(sh, StepEvent::Start);
        super::run_step(step, state, sh, None, head)?;
        return Ok(());
    }
    if sh.opts.dry_run {
        return dry_step(sh, st, i, step, state, parent, head);
    }
    let (inputs, files, uncacheable) = inputs(sh, step, state, parent)?;
    let key = inputs.key();
    let forced = no_cache(sh, st).or(uncacheable);
    if forced.is_none() {
        if let Ok(entry) = sh.store.cache_get(&key) {
            return hit(sh, step, state, parent, head, key, entry);
        }
    }
    // Identical steps (in this build or another) are built once: the
    // others wait here, then find the entry.
    let _lock = sh.store.cache_lock(&key)?;
    if forced.is_none() {
        if let Ok(entry) = sh.store.cache_get(&key) {
            return hit(sh, step, state, parent, head, key, entry);
        }
    }
    let slot = slot_of(sh, st, i);
    let reason = match forced {
        Some(r) => r,
        None => cache::explain(sh.store, &slot, &inputs, &files),
    };
    sh.misses.fetch_add(1, Ordering::Relaxed);
    head.report(sh, StepEvent::Start);
    head.report(sh, StepEvent::Miss(&reason));
    let began = std::time::Instant::now();
    if state.view.is_opaque() {
        state.view.materialize(sh.store)?;
    }
    let layer = super::run_step(step, state, sh, None, head)?
        .ok_or_else(|| anyhow!("the step made no layer"))?;
    head.report(sh, StepEvent::Done(began.elapsed().as_secs_f64()));
    sh.store
        .cache_put(&key, &crate::store::index::Entry::new(&layer, &step.text))?;
    if let (Some(f), true) = (&sh.opts.on_layer, sh.image_stages.contains(&st.index)) {
        f(&layer.digest);
    }
    for (sum, list) in &files {
        cache::record_files(sh.store, sum, list);
    }
    cache::record(sh.store, &slot, &inputs);
    *parent = Parent {
        key,
        text: step.text.clone(),
    };
    Ok(())
}

/// A dry run's step: its key, and whether the cache has it.
fn dry_step(
    sh: &Shared,
    st: &Stage,
    i: usize,
    step: &Step,
    state: &mut StageState,
    parent: &mut Parent,
    head: &At,
) -> Result<()> {
    if let Op::Workdir { .. } = step.op {
        super::meta::apply(&step.op, &mut state.config, &mut state.cmd_set);
    }
    let verdict = if parent.key == UNKNOWN {
        Err(parent.text.clone())
    } else {
        match inputs(sh, step, state, parent) {
            Err(e) => Err(crate::error_chain(&e)),
            Ok((inputs, files, uncacheable)) => {
                let key = inputs.key();
                let forced = no_cache(sh, st).or(uncacheable);
                match forced {
                    Some(r) => Err(r),
                    None if sh.store.cache_get(&key).is_ok() => Ok(key),
                    None => {
                        let slot = slot_of(sh, st, i);
                        Err(cache::explain(sh.store, &slot, &inputs, &files))
                    }
                }
            }
        }
    };
    match verdict {
        Ok(key) => {
            sh.hits.fetch_add(1, Ordering::Relaxed);
            head.report(sh, StepEvent::Cached);
            *parent = Parent {
                key,
                text: step.text.clone(),
            };
        }
        Err(why) => {
            sh.misses.fetch_add(1, Ordering::Relaxed);
            head.report(sh, StepEvent::Start);
            head.report(sh, StepEvent::WouldRun(&why));
            *parent = Parent {
                key: UNKNOWN.into(),
                text: format!("parent would run ({})", step.text),
            };
        }
    }
    Ok(())
}

fn slot_of(sh: &Shared, st: &Stage, i: usize) -> String {
    cache::slot(
        &sh.opts.context.to_string_lossy(),
        &sh.opts.dockerfile_id,
        &st.display_name(),
        i,
    )
}

fn hit(
    sh: &Shared,
    step: &Step,
    state: &mut StageState,
    parent: &mut Parent,
    head: &At,
    key: String,
    entry: crate::store::index::Entry,
) -> Result<()> {
    sh.hits.fetch_add(1, Ordering::Relaxed);
    head.report(sh, StepEvent::Cached);
    super::run_step(step, state, sh, Some(entry.layer()), head)?;
    *parent = Parent {
        key,
        text: step.text.clone(),
    };
    Ok(())
}

/// A step's inputs, the per-file records of its source checksums, and a
/// reason it cannot be served from the cache, if any.
fn inputs(
    sh: &Shared,
    step: &Step,
    state: &StageState,
    parent: &Parent,
) -> Result<(Inputs, Files, Option<String>)> {
    let mut inputs = Inputs {
        parent_text: parent.text.clone(),
        ..Inputs::default()
    };
    inputs.set("parent", parent.key.clone());
    inputs.set("platform", platform_text(state));
    inputs.set(
        "format",
        format!(
            "{:?} source-date-epoch={}",
            sh.opts.compression,
            sh.opts
                .source_date_epoch
                .map_or_else(|| "unset".to_string(), |t| t.to_string())
        ),
    );
    let mut files = Files::new();
    let mut uncacheable = None;
    let mut op = serde_json::to_value(&step.op).context("cannot encode the step")?;
    match &step.op {
        Op::Run {
            env, args, mounts, ..
        } => {
            if let Some(m) = op.as_object_mut() {
                // Proxies never count; args and env count one by one.
                for k in ["env", "args", "proxy"] {
                    m.remove(k);
                }
            }
            for (k, v) in args {
                inputs.set(&format!("arg:{k}"), v.clone());
            }
            for (k, v) in env {
                // ARGs are in the environment too: counted once, as ARGs.
                if !args.iter().any(|(a, _)| a == k) {
                    inputs.set(&format!("env:{k}"), v.clone());
                }
            }
            for (n, pm) in mounts.iter().enumerate() {
                use crate::dockerfile::mount::MountType;
                if pm.mount.kind != MountType::Bind {
                    continue;
                }
                let source = pm.mount.source.clone().unwrap_or_default();
                let sum = source_checksum(
                    sh,
                    state,
                    pm.from_source.as_ref().unwrap_or(&Source::Context),
                    &SourceSel::Path(&source),
                    &mut files,
                )?;
                inputs.set(&format!("src:{n}"), sum);
            }
        }
        Op::Copy(c) => {
            let remote: Vec<&String> = c
                .sources
                .iter()
                .filter(|s| c.add && crate::plan::values::is_remote(s))
                .collect();
            if !remote.is_empty() && c.checksum.is_none() {
                uncacheable = Some(format!(
                    "ADD of {} is fetched on every build (give --checksum to cache it)",
                    remote[0]
                ));
            }
            let sum = source_checksum(sh, state, &c.source, &SourceSel::Copy(c), &mut files)?;
            inputs.set("src:0", sum);
        }
        Op::Workdir { .. } => {
            // The directory is made for the USER in force.
            inputs.set("user", state.config.config.user.clone());
        }
        _ => {}
    }
    inputs.set("instruction", op.to_string());
    Ok((inputs, files, uncacheable))
}

/// What a checksum covers in a source.
enum SourceSel<'a> {
    /// A COPY's sources.
    Copy(&'a crate::plan::CopyOp),
    /// A bind mount's source path.
    Path(&'a str),
}

/// The checksum of what a step reads from `source`: the selected files
/// of a directory, or the key of a stage, or the digest of an image.
fn source_checksum(
    sh: &Shared,
    state: &StageState,
    source: &Source,
    sel: &SourceSel,
    files: &mut Files,
) -> Result<String> {
    let (root, matcher, what): (PathBuf, Option<&crate::context::ignore::Matcher>, String) =
        match source {
            Source::Context => (
                sh.opts.context.clone(),
                Some(&sh.opts.ignore),
                "build context".into(),
            ),
            Source::Stage { index } => {
                let key = sh.stage_key(*index)?;
                let name = super::stage(sh.plan, *index)
                    .map_or_else(|| index.to_string(), |s| s.display_name());
                if key == UNKNOWN {
                    bail!("source stage {name} would run");
                }
                return stage_checksum(sh, *index, &name, &key, sel, files);
            }
            Source::Image { reference } => match sh.opts.named.get(reference) {
                Some(import::NamedContext::Dir(d)) => {
                    (d.clone(), None, format!("build context {reference}"))
                }
                _ => {
                    let img = sh.images.get(
                        reference,
                        sh.opts,
                        sh.store,
                        &super::state_platform(state),
                    )?;
                    return Ok(format!("image {}", img.digest));
                }
            },
        };
    let stat = sh.stat_cache(&root);
    let mut selection = Selection::new();
    match sel {
        SourceSel::Copy(c) => select_copy(c, &root, matcher, &what, &stat, &mut selection)?,
        SourceSel::Path(p) => {
            let rel = crate::snapshot::resolve_in_root(&root, p, true)
                .with_context(|| format!("mount source {p:?} in the {what}"))?;
            select_tree(&root, &rel, &rel, matcher, None, &stat, &mut selection)?;
        }
    }
    let (sum, list) = selection.finish();
    files.insert(sum.clone(), list);
    Ok(sum)
}

/// The checksum of what a step selects from a finished stage: its files'
/// contents, as for the context, so that a stage rebuilt to the same
/// files still gives a hit. Remembered per stage key and selection.
fn stage_checksum(
    sh: &Shared,
    index: usize,
    name: &str,
    key: &str,
    sel: &SourceSel,
    files: &mut Files,
) -> Result<String> {
    let what = format!("stage {name}");
    let desc = match sel {
        SourceSel::Copy(c) => serde_json::json!({
            "sources": c.sources,
            "exclude": c.exclude,
            "add": c.add,
            "checksum": c.checksum,
        })
        .to_string(),
        SourceSel::Path(p) => serde_json::json!({ "path": p }).to_string(),
    };
    let mut memo = Inputs::default();
    memo.set("stage", key);
    memo.set("selection", desc);
    let memo = memo.key();
    let memo = crate::store::digest_hex(&memo)?.to_string();
    if let Some(sum) = cache::derived_get(sh.store, &memo) {
        if let Some(list) = cache::load_files(sh.store, &sum) {
            files.insert(sum.clone(), list);
        }
        return Ok(sum);
    }
    if sh.opts.dry_run {
        bail!("the files of {what} were never checksummed");
    }
    let st = sh.stage(index)?;
    let mut st = st.lock().map_err(|_| anyhow!("{what} failed"))?;
    st.view.materialize(sh.store)?;
    let root = st.view.root.clone();
    // Stage roots are mounts that change between builds: no stat cache.
    let stat = StatCache::in_memory();
    let mut selection = Selection::new();
    match sel {
        SourceSel::Copy(c) => select_copy(c, &root, None, &what, &stat, &mut selection)?,
        SourceSel::Path(p) => {
            let rel = crate::snapshot::resolve_in_root(&root, p, true)
                .with_context(|| format!("mount source {p:?} in {what}"))?;
            select_tree(&root, &rel, &rel, None, None, &stat, &mut selection)?;
        }
    }
    let (sum, list) = selection.finish();
    cache::record_files(sh.store, &sum, &list);
    cache::derived_put(sh.store, &memo, &sum);
    files.insert(sum.clone(), list);
    Ok(sum)
}

/// Adds exactly what a COPY reads: each pattern's matches, and under a
/// directory what `.dockerignore` and `--exclude` leave.
fn select_copy(
    c: &crate::plan::CopyOp,
    root: &Path,
    matcher: Option<&crate::context::ignore::Matcher>,
    what: &str,
    stat: &StatCache,
    sel: &mut Selection,
) -> Result<()> {
    let src = super::copy::Src {
        root,
        matcher,
        reset_owner: true,
        what: what.to_string(),
        owners: None,
    };
    let exclude = if c.exclude.is_empty() {
        None
    } else {
        Some(
            crate::context::ignore::Matcher::from_patterns(&c.exclude)
                .map_err(|e| anyhow!("--exclude: {e}"))?,
        )
    };
    for pattern in &c.sources {
        if c.add && crate::plan::values::is_remote(pattern) {
            sel.add_record(
                pattern,
                &format!("url checksum={}", c.checksum.as_deref().unwrap_or("")),
            );
            continue;
        }
        sel.add_marker(pattern, "pattern");
        for m in super::copy::expand(&src, pattern)? {
            if exclude.as_ref().is_some_and(|ex| ex.excluded(&m.rel)) {
                continue;
            }
            if m.meta.is_dir() {
                select_tree(
                    root,
                    &m.resolved,
                    &m.rel,
                    matcher,
                    exclude.as_ref(),
                    stat,
                    sel,
                )?;
            } else {
                sel.add(&m.rel, &m.resolved, &m.host, &m.meta, stat)
                    .with_context(|| format!("cannot read {} in the {what}", m.rel))?;
            }
        }
    }
    Ok(())
}

/// Adds the tree at `rel` in `root` (or the one file), named under
/// `name`, as the walker that copies it sees it.
fn select_tree(
    root: &Path,
    rel: &str,
    name: &str,
    matcher: Option<&crate::context::ignore::Matcher>,
    exclude: Option<&crate::context::ignore::Matcher>,
    stat: &StatCache,
    sel: &mut Selection,
) -> Result<()> {
    let host = crate::snapshot::host_path(root, rel);
    let meta = std::fs::metadata(&host).with_context(|| format!("cannot read /{rel}"))?;
    sel.add(name, rel, &host, &meta, stat)
        .with_context(|| format!("cannot read /{rel}"))?;
    if !meta.is_dir() {
        return Ok(());
    }
    let empty;
    let matcher = match matcher {
        Some(m) => m,
        None => {
            empty = crate::context::ignore::Matcher::from_patterns::<&str>(&[])
                .map_err(|e| anyhow!("{e}"))?;
            &empty
        }
    };
    let entries = crate::context::ignore::walk(root, rel, matcher)
        .with_context(|| format!("cannot read /{rel}"))?;
    let prefix_len = if rel.is_empty() { 0 } else { rel.len() + 1 };
    for e in entries {
        if e.rel_path.len() < prefix_len || e.rel_path == rel {
            continue;
        }
        let sub = &e.rel_path[prefix_len..];
        if exclude.is_some_and(|ex| ex.excluded(sub)) {
            continue;
        }
        let h = crate::snapshot::host_path(root, &e.rel_path);
        let shown = crate::snapshot::join_rel(name, sub);
        sel.add(&shown, &e.rel_path, &h, &e.metadata, stat)
            .with_context(|| format!("cannot read /{}", e.rel_path))?;
    }
    Ok(())
}
