//! The inputs of a step's cache key ([`super::cache`]): the instruction,
//! its args and environment, and checksums of what it reads (the files a
//! COPY or a bind mount selects, from the context or another stage; an
//! image's digest).

use super::cache::{self, Files, Inputs};
use super::dry::UNKNOWN;
use super::solve::{platform_text, Parent, Shared};
use super::{import, StageState};
use crate::context::checksum::{Selection, StatCache};
use crate::plan::{Op, Source, Step};
use anyhow::{anyhow, bail, Context as _, Result};
use std::path::{Path, PathBuf};

/// A step's inputs, the per-file records of its source checksums, and a
/// reason it cannot be served from the cache, if any.
pub(super) fn inputs(
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
            // The environment the step gets, all of it: an ENV may
            // override an ARG of the same name.
            for (k, v) in env {
                inputs.set(&format!("env:{k}"), v.clone());
            }
            // What the command line gives every RUN (only when set, so
            // that keys without them stay as they were).
            if let Some(n) = &sh.opts.network {
                inputs.set("run:network", n.clone());
            }
            if !sh.opts.add_hosts.is_empty() {
                inputs.set("run:add-host", format!("{:?}", sh.opts.add_hosts));
            }
            if let Some(s) = sh.opts.shm_size {
                inputs.set("run:shm-size", s.to_string());
            }
            if !sh.opts.ulimits.is_empty() {
                inputs.set("run:ulimit", format!("{:?}", sh.opts.ulimits));
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
    let (sum, list) = select(sel, &root, matcher, &what, &stat)?;
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
    let (sum, list) = select(sel, &root, None, &what, &StatCache::in_memory())?;
    cache::record_files(sh.store, &sum, &list);
    cache::derived_put(sh.store, &memo, &sum);
    files.insert(sum.clone(), list);
    Ok(sum)
}

/// The checksum of what `sel` takes from `root`, and its records.
fn select(
    sel: &SourceSel,
    root: &Path,
    matcher: Option<&crate::context::ignore::Matcher>,
    what: &str,
    stat: &StatCache,
) -> Result<(String, Vec<(String, String)>)> {
    let mut selection = Selection::new();
    match sel {
        SourceSel::Copy(c) => select_copy(c, root, matcher, what, stat, &mut selection)?,
        SourceSel::Path(p) => {
            let rel = crate::snapshot::resolve_in_root(root, p, true)
                .with_context(|| format!("mount source {p:?} in the {what}"))?;
            select_tree(root, &rel, &rel, matcher, None, stat, &mut selection)?;
        }
    }
    Ok(selection.finish())
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
