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

use super::cache::{self, Inputs};
use super::{import, BuildOptions, StageState};
use crate::context::checksum::StatCache;
use crate::plan::{Base, Op, Plan, Stage, Step};
use crate::progress::{Event, StepEvent};
use crate::store::Store;
use anyhow::{anyhow, bail, Result};
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
    cancel: Arc<AtomicBool>,
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
    /// The keys of the steps this build used (for `--cache-to`).
    used: Mutex<Vec<String>>,
}

/// The error a stage stops with when another one failed first.
#[derive(Debug, thiserror::Error)]
#[error("cancelled: another stage failed")]
pub struct Cancelled;

impl Shared<'_> {
    pub fn report(&self, e: &Event) {
        (self.report)(e);
    }

    fn finished<T>(&self, index: usize, f: impl Fn(&Finished) -> T) -> Result<T> {
        self.done
            .lock()
            .map_err(|_| anyhow!("a stage failed"))?
            .get(&index)
            .map(f)
            .ok_or_else(|| anyhow!("stage {index} was not built"))
    }

    /// A finished stage's state.
    pub fn stage(&self, index: usize) -> Result<Arc<Mutex<StageState>>> {
        self.finished(index, |f| f.state.clone())
    }

    /// What a finished stage made (see [`Parent::made`]).
    pub fn stage_key(&self, index: usize) -> Result<String> {
        self.finished(index, |f| f.key.clone())
    }

    pub fn stat_cache(&self, dir: &Path) -> Arc<StatCache> {
        let Ok(mut m) = self.stat.lock() else {
            return Arc::new(StatCache::in_memory());
        };
        m.entry(dir.to_path_buf())
            .or_insert_with(|| Arc::new(StatCache::load(self.store.root(), dir)))
            .clone()
    }
}

/// Builds the plan's stages; returns the target's state.
pub(super) fn solve(
    plan: &Plan,
    opts: &BuildOptions,
    store: &Store,
    report: &(dyn Fn(&Event) + Sync),
) -> Result<(StageState, (usize, usize), Vec<String>)> {
    let now = opts.source_date_epoch.unwrap_or_else(super::unix_now);
    let mut numbers = BTreeMap::new();
    let mut total = 0;
    for &i in &plan.order {
        if let Some(st) = super::stage(plan, i) {
            numbers.insert(i, opts.numbered_after + total + 1);
            total += st.steps.len() + 1;
        }
    }
    debug_assert_eq!(total, step_count(plan));
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
        cancel: opts.cancel.clone(),
        report,
        stat: Mutex::new(BTreeMap::new()),
        numbers,
        total,
        now,
        created: crate::image::config::rfc3339(now, 0),
        hits: AtomicUsize::new(0),
        misses: AtomicUsize::new(0),
        used: Mutex::new(Vec::new()),
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
    let used = sh.used.lock().map(|u| u.clone()).unwrap_or_default();
    Ok((state, counts, used))
}

/// How many stages may run at once (`--max-parallelism`), shared by the
/// builds of several platforms.
pub struct Slots {
    free: Mutex<usize>,
    freed: std::sync::Condvar,
}

impl Slots {
    pub fn new(n: usize) -> Slots {
        Slots {
            free: Mutex::new(n.max(1)),
            freed: std::sync::Condvar::new(),
        }
    }

    /// Takes a slot if one is free.
    fn take(&self) -> bool {
        let Ok(mut free) = self.free.lock() else {
            return true;
        };
        if *free == 0 {
            return false;
        }
        *free -= 1;
        true
    }

    fn give(&self) {
        if let Ok(mut free) = self.free.lock() {
            *free += 1;
        }
        self.freed.notify_all();
    }

    /// Waits until a slot may be free (at most `t`).
    fn wait(&self, t: std::time::Duration) {
        if let Ok(free) = self.free.lock() {
            if *free == 0 {
                let _ = self.freed.wait_timeout(free, t);
            }
        }
    }
}

/// How many steps the plan's progress output numbers: each stage's FROM
/// and its steps.
pub fn step_count(plan: &Plan) -> usize {
    plan.order
        .iter()
        .filter_map(|&i| super::stage(plan, i))
        .map(|st| st.steps.len() + 1)
        .sum()
}

/// Runs each stage on a thread of its own once the stages it needs are
/// done, at most `max_parallelism` at a time; the first error wins.
fn schedule(sh: &Shared) -> Result<()> {
    let max = sh.opts.max_parallelism.max(1);
    // The builds of several platforms share one limit.
    let slots = sh
        .opts
        .slots
        .clone()
        .unwrap_or_else(|| Arc::new(Slots::new(max)));
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<()>)>();
    let mut started: BTreeSet<usize> = BTreeSet::new();
    let mut finished: BTreeSet<usize> = BTreeSet::new();
    let mut first: Option<anyhow::Error> = None;
    let mut cancelled = false;
    std::thread::scope(|s| {
        let mut running = 0;
        loop {
            let mut waiting_for_a_slot = false;
            if first.is_none() && !sh.cancel.load(Ordering::SeqCst) {
                for &idx in &sh.plan.order {
                    if started.contains(&idx) {
                        continue;
                    }
                    let Some(st) = super::stage(sh.plan, idx) else {
                        continue;
                    };
                    if !st.deps.iter().all(|d| finished.contains(d)) {
                        continue;
                    }
                    if !slots.take() {
                        waiting_for_a_slot = true;
                        break;
                    }
                    started.insert(idx);
                    running += 1;
                    let (tx, slots) = (tx.clone(), slots.clone());
                    s.spawn(move || {
                        // A panic must end the build with an error, not
                        // leave the scheduler waiting for this stage.
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            run_stage(sh, st)
                        }))
                        .unwrap_or_else(|_| {
                            Err(anyhow!(
                                "stage {} failed unexpectedly (a bug in kiln)",
                                st.display_name()
                            ))
                        });
                        slots.give();
                        let _ = tx.send((idx, r));
                    });
                }
            }
            if running == 0 {
                if waiting_for_a_slot {
                    // Another platform's stages hold them all.
                    slots.wait(std::time::Duration::from_millis(100));
                    continue;
                }
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
                    // Stopped, or killed mid-step, because a build of
                    // another platform failed first.
                    if e.downcast_ref::<Cancelled>().is_some()
                        || (first.is_none() && sh.cancel.load(Ordering::SeqCst))
                    {
                        cancelled = true;
                    } else if first.is_none() {
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
        // Another platform's build failed.
        None if cancelled || sh.cancel.load(Ordering::SeqCst) => Err(Cancelled.into()),
        None if started.len() < sh.plan.order.len() => {
            bail!("the plan's stages depend on each other in a cycle")
        }
        None => Ok(()),
    }
}

fn run_stage(sh: &Shared, st: &Stage) -> Result<()> {
    let number = sh.numbers.get(&st.index).copied().unwrap_or(0);
    let name = labelled(sh, st);
    let from = format!("FROM {}", super::base_text(&st.base));
    // The stage's vertices, as BuildKit counts them: its FROM and the
    // steps that make layers.
    let count = 1 + st.steps.iter().filter(|s| makes_layer(&s.op)).count();
    let head = At {
        n: number,
        stage: &name,
        index: 1,
        count,
        text: &from,
    };
    head.report(sh, StepEvent::Start);
    let began = std::time::Instant::now();
    let (mut state, mut parent) = start(sh, st).map_err(|e| {
        head.report(sh, StepEvent::Error(&crate::error_chain(&e)));
        super::step_error(st.line, st.line, e)
    })?;
    head.report(sh, StepEvent::Done(began.elapsed().as_secs_f64()));
    let mut index = 1;
    for (i, step) in st.steps.iter().enumerate() {
        if sh.cancel.load(Ordering::SeqCst) {
            return Err(Cancelled.into());
        }
        let layered = makes_layer(&step.op);
        index += usize::from(layered);
        let head = At {
            n: number + i + 1,
            stage: &name,
            index: if layered { index } else { 0 },
            count,
            text: &step.text,
        };
        if let Err(e) = run_step(sh, st, i, step, &mut state, &mut parent, &head) {
            if !sh.cancel.load(Ordering::SeqCst) {
                head.report(sh, StepEvent::Error(&crate::error_chain(&e)));
            }
            return Err(super::step_error(step.line, step.end_line, e));
        }
    }
    sh.done
        .lock()
        .map_err(|_| anyhow!("a stage failed"))?
        .insert(
            st.index,
            Finished {
                state: Arc::new(Mutex::new(state)),
                key: parent.made,
            },
        );
    Ok(())
}

/// Where a step is, for progress events.
pub(super) struct At<'a> {
    pub n: usize,
    pub stage: &'a str,
    /// Among the stage's vertices (0: a metadata step).
    pub index: usize,
    pub count: usize,
    pub text: &'a str,
}

/// Whether a step makes a layer (and so is cached).
fn makes_layer(op: &Op) -> bool {
    matches!(op, Op::Run { .. } | Op::Copy(_) | Op::Workdir { .. })
}

impl At<'_> {
    pub fn report(&self, sh: &Shared, what: StepEvent) {
        sh.report(&Event::Step {
            n: self.n,
            total: sh.total,
            stage: self.stage,
            index: self.index,
            count: self.count,
            text: self.text,
            what,
        });
    }
}

/// The step before: its key and, for explanations, its text.
pub(super) struct Parent {
    pub key: String,
    pub text: String,
    /// What the stage has made so far: its base and the diffIDs of its
    /// layers. A stage is known to others by this, not by its steps'
    /// keys: a step run again (--no-cache-filter) may make other files
    /// under the same key.
    pub made: String,
}

impl Parent {
    /// The step that made the layer `diff_id` (`key`) follows.
    pub fn then(&self, key: String, text: &str, diff_id: &str) -> Parent {
        Parent {
            key,
            text: text.to_string(),
            made: made(&self.made, diff_id),
        }
    }
}

/// `made` after one more layer.
pub(super) fn made(before: &str, diff_id: &str) -> String {
    if before == super::dry::UNKNOWN || diff_id == super::dry::UNKNOWN {
        return super::dry::UNKNOWN.to_string();
    }
    let mut i = Inputs::default();
    i.set("made", before);
    i.set("layer", diff_id);
    i.key()
}

pub(super) fn platform_text(state: &StageState) -> String {
    super::state_platform(state).to_string()
}

/// The stage's start, and the key its first step builds on.
fn start(sh: &Shared, st: &Stage) -> Result<(StageState, Parent)> {
    if sh.opts.dry_run {
        return super::dry::start(sh, st);
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
    let key = base.key();
    Ok((
        state,
        Parent {
            made: key.clone(),
            key,
            text,
        },
    ))
}

pub(super) fn no_cache(sh: &Shared, st: &Stage) -> Option<String> {
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
    if !makes_layer(&step.op) {
        head.report(sh, StepEvent::Start);
        super::run_step(step, state, sh, None, head)?;
        return Ok(());
    }
    if sh.opts.dry_run {
        return super::dry::step(sh, st, i, step, state, parent, head);
    }
    let (inputs, files, uncacheable) = super::keys::inputs(sh, step, state, parent)?;
    let key = inputs.key();
    if let Ok(mut u) = sh.used.lock() {
        u.push(key.clone());
    }
    // A step whose inputs do not say what it makes (ADD of a URL without
    // --checksum) hands the steps after it a key that covers what it made.
    let by_output = uncacheable.is_some();
    let forced = no_cache(sh, st).or(uncacheable);
    if forced.is_none() {
        if let Ok(entry) = sh.store.cache_get(&key) {
            return hit(sh, step, state, parent, head, key, entry);
        }
    }
    // Identical steps (in this build or another) are built once: the
    // others wait here, then find the entry.
    let _lock = sh.store.cache_lock(&key)?;
    if sh.cancel.load(Ordering::SeqCst) {
        return Err(Cancelled.into());
    }
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
    // Sources read from disk may have changed while the step read them:
    // the layer is then not what the key says, and is not cached. (The
    // stat cache makes this a walk of stats unless something changed.)
    let steady = files.is_empty()
        || super::keys::inputs(sh, step, state, parent)
            .map(|(again, _, _)| again.key() == key)
            .unwrap_or(false);
    if steady {
        // Made at the build's time, which its history entry shows: a
        // rebuild from the cache shows the same (and so makes the same
        // image, as BuildKit's does).
        let mut entry = crate::store::index::Entry::new(&layer, &step.text);
        entry.created = sh.now;
        // A step that ran again (ADD of a URL, --no-cache) and made what
        // its entry holds keeps the entry's time: the same layer is the
        // same history, and the image stays the same.
        if let Ok(old) = sh.store.cache_get(&key) {
            if old.digest == layer.digest && old.diff_id == layer.diff_id {
                entry.created = old.created;
                if sh.opts.source_date_epoch.is_none() {
                    if let Some(h) = state.config.history.last_mut() {
                        h.created = Some(crate::image::config::rfc3339(old.created, 0));
                    }
                }
            }
        }
        sh.store.cache_put(&key, &entry)?;
    } else {
        head.report(
            sh,
            StepEvent::Output("warning: its sources changed while it ran; its layer is not cached"),
        );
    }
    if let (Some(f), true) = (&sh.opts.on_layer, sh.image_stages.contains(&st.index)) {
        f(&layer.digest);
    }
    for (sum, list) in &files {
        cache::record_files(sh.store, sum, list);
    }
    cache::record(sh.store, &slot, &inputs);
    let key = if by_output {
        let mut out = Inputs::default();
        out.set("step", key);
        out.set("made", layer.diff_id.clone());
        out.key()
    } else {
        key
    };
    *parent = parent.then(key, &step.text, &layer.diff_id);
    Ok(())
}

pub(super) fn slot_of(sh: &Shared, st: &Stage, i: usize) -> String {
    cache::slot(
        &sh.opts.context.to_string_lossy(),
        &sh.opts.dockerfile_id,
        &labelled(sh, st),
        i,
    )
}

/// A stage's name as progress shows it: after the platform in a build of
/// several (`linux/arm64 builder`, as BuildKit shows it).
pub(super) fn labelled(sh: &Shared, st: &Stage) -> String {
    match &sh.opts.label {
        Some(l) => format!("{l} {}", st.display_name()),
        None => st.display_name(),
    }
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
    super::run_step(step, state, sh, Some((entry.layer(), entry.created)), head)?;
    *parent = parent.then(key, &step.text, &entry.diff_id);
    Ok(())
}
