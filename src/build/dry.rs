//! `--dry-run`: the solver's walk over the plan, without running or
//! pulling anything. Each step's key comes from what the store knows (a
//! base image as it was last pulled); the answer is whether the index
//! has it and, if not, why it would run.

use super::cache::{self, Inputs};
use super::keys::inputs;
use super::solve::{no_cache, platform_text, slot_of, At, Parent, Shared};
use super::{import, StageState};
use crate::plan::{Base, Op, Stage, Step};
use crate::progress::StepEvent;
use anyhow::{anyhow, Result};
use std::sync::atomic::Ordering;

/// The key of a step whose inputs a dry run cannot know (an image not in
/// the store): later steps say their parent would run.
pub(super) const UNKNOWN: &str = "unknown";

/// A dry run's stage start: the base's config from the store, no files.
pub(super) fn start(sh: &Shared, st: &Stage) -> Result<(StageState, Parent)> {
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
                            made: UNKNOWN.into(),
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
    Ok((
        state,
        Parent {
            made: key.clone(),
            key,
            text,
        },
    ))
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

/// A dry run's step: its key, and whether the cache has it.
pub(super) fn step(
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
                    None => match sh.store.cache_get(&key) {
                        Ok(entry) => Ok((key, entry.diff_id)),
                        Err(_) => {
                            let slot = slot_of(sh, st, i);
                            Err(cache::explain(sh.store, &slot, &inputs, &files))
                        }
                    },
                }
            }
        }
    };
    match verdict {
        Ok((key, diff_id)) => {
            sh.hits.fetch_add(1, Ordering::Relaxed);
            head.report(sh, StepEvent::Cached);
            *parent = parent.then(key, &step.text, &diff_id);
        }
        Err(why) => {
            sh.misses.fetch_add(1, Ordering::Relaxed);
            head.report(sh, StepEvent::Start);
            head.report(sh, StepEvent::WouldRun(&why));
            *parent = Parent {
                key: UNKNOWN.into(),
                text: format!("parent would run ({})", step.text),
                made: UNKNOWN.into(),
            };
        }
    }
    Ok(())
}
