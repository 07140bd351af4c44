//! Lowering: typed instructions → stages of resolved steps.
//!
//! Walks the global ARGs, splits the Dockerfile into stages, resolves stage
//! references into graph edges, prunes to the target, then plans each
//! reachable stage in dependency order (`stage::StageCtx`).

use super::graph::{self, Edge};
use super::platform::Platform;
use super::refs::{flag_token, Refs};
use super::scope::{self, StageScope, PROXY_ARGS};
use super::stage::StageCtx;
use super::{error_at, Base, BaseConfig, ImageResolver, Plan, PlanOptions, Source, Stage};
use crate::dockerfile::diag::{suggest, Diagnostic, Pos};
use crate::dockerfile::instructions::{self, Instruction, Kind};
use crate::dockerfile::mount;
use crate::dockerfile::parser;
use crate::dockerfile::shell::{Env, Lexer};
use crate::image::reference;
use std::collections::{BTreeMap, BTreeSet};

/// A stage before planning: its FROM and its instructions.
struct RawStage<'a> {
    from: &'a Instruction,
    name: Option<String>,
    /// Base name after expansion with the global ARGs.
    base: String,
    platform: Option<Platform>,
    body: &'a [Instruction],
}

fn undeclared_in_from(
    warnings: &mut Vec<Diagnostic>,
    unmatched: &BTreeSet<String>,
    global_args: &[(String, Option<String>)],
    global_env: &[(String, String)],
    pos: Pos,
) {
    for var in unmatched {
        if global_args.iter().any(|(k, _)| k == var) {
            continue;
        }
        let mut msg = format!("FROM argument '{var}' is not declared");
        let known: Vec<&str> = global_env.iter().map(|(k, _)| k.as_str()).collect();
        if let Some(s) = suggest(var, &known) {
            msg.push_str(&format!(" (did you mean {s}?)"));
        }
        warnings.push(
            Diagnostic::warning(pos, "UndefinedArgInFrom", msg).with_token(format!("${var}")),
        );
    }
}

/// Plans the whole Dockerfile.
pub fn plan(
    instrs: &[Instruction],
    escape: char,
    opts: &PlanOptions,
    resolver: &dyn ImageResolver,
) -> Result<Plan, Diagnostic> {
    let lexer = Lexer::new(escape);
    let mut warnings = Vec::new();

    let first_from = instrs
        .iter()
        .position(|i| matches!(i.kind, Kind::From(_)))
        .ok_or_else(|| {
            let pos = instrs.first().map_or(Pos::new(1, 1), |i| i.pos);
            error_at(
                pos,
                "dockerfile contains no stages to build: every stage starts with FROM",
            )
        })?;

    // Global scope: the automatic platform ARGs (overridable by
    // --build-arg), then the ARGs before the first FROM.
    let mut global_env: Vec<(String, String)> = Vec::new();
    for (k, v) in opts
        .platform
        .args("TARGET")
        .into_iter()
        .chain(opts.build_platform.args("BUILD"))
    {
        let v = opts.build_args.get(&k).cloned().unwrap_or(v);
        scope::set(&mut global_env, &k, &v);
    }
    let mut defaults_env = global_env.clone();
    let mut global_args: Vec<(String, Option<String>)> = Vec::new();
    let mut consumed: BTreeSet<String> = BTreeSet::new();
    for ins in &instrs[..first_from] {
        let Kind::Arg(decls) = &ins.kind else {
            return Err(error_at(
                ins.pos,
                format!(
                    "no build stage in current context: {} comes before the first FROM, where only ARG may",
                    ins.keyword()
                ),
            ));
        };
        for d in decls {
            consumed.insert(d.name.clone());
            // A build-arg wins verbatim; the default is then not expanded.
            let default = match (&d.default, opts.build_args.contains_key(&d.name)) {
                (Some(def), false) => Some(expand(&lexer, def, &global_env, ins.pos)?),
                _ => None,
            };
            if let Some(def) = &d.default {
                // For InvalidDefaultArgInFrom: the defaults alone.
                if let Ok(v) = lexer.process_word(def, &defaults_env) {
                    scope::set(&mut defaults_env, &d.name, &v.value);
                }
            }
            let value = match opts.build_args.get(&d.name) {
                Some(v) => Some(v.clone()),
                None => default,
            };
            if let Some(v) = &value {
                scope::set(&mut global_env, &d.name, v);
            }
            match global_args.iter_mut().find(|(k, _)| *k == d.name) {
                Some(slot) => slot.1 = value,
                None => global_args.push((d.name.clone(), value)),
            }
        }
    }

    // Split into stages and expand FROM lines with the global ARGs.
    let mut raw: Vec<RawStage> = Vec::new();
    let mut idx = first_from;
    while idx < instrs.len() {
        let from_ins = &instrs[idx];
        let end = instrs[idx + 1..]
            .iter()
            .position(|i| matches!(i.kind, Kind::From(_)))
            .map_or(instrs.len(), |p| idx + 1 + p);
        let Kind::From(from) = &from_ins.kind else {
            idx += 1;
            continue;
        };
        let pos = from_ins.pos;
        let exp = lexer
            .process_word(&from.image, &global_env)
            .map_err(|e| error_at(pos, e.message))?;
        undeclared_in_from(
            &mut warnings,
            &exp.unmatched,
            &global_args,
            &global_env,
            pos,
        );
        if from.image.contains('$') {
            let with_defaults = lexer
                .process_word(&from.image, &defaults_env)
                .map(|e| e.value)
                .unwrap_or_default();
            if with_defaults != "scratch" && reference::validate(&with_defaults).is_err() {
                warnings.push(Diagnostic::warning(
                    pos,
                    "InvalidDefaultArgInFrom",
                    format!(
                        "Default value for ARG {} results in empty or invalid base image name",
                        from.image
                    ),
                ));
            }
        }
        if exp.value.is_empty() {
            return Err(error_at(
                pos,
                format!("base name ({}) should not be blank", from.image),
            ));
        }
        let platform = match &from.platform {
            Some(p) => {
                let v = lexer.process_word(p, &global_env).map_err(|e| {
                    error_at(
                        pos,
                        format!(
                            "failed to process arguments for platform {p}: {}",
                            e.message
                        ),
                    )
                })?;
                undeclared_in_from(&mut warnings, &v.unmatched, &global_args, &global_env, pos);
                if v.value.is_empty() {
                    return Err(error_at(
                        pos,
                        format!("empty platform value from expression {p}"),
                    ));
                }
                let parsed = Platform::parse(&v.value)
                    .map_err(|m| error_at(pos, format!("failed to parse platform {p}: {m}")))?;
                if p.contains('$') {
                    if v.matched.len() == 1
                        && v.matched.contains("TARGETPLATFORM")
                        && v.unmatched.is_empty()
                    {
                        warnings.push(Diagnostic::warning(
                            pos,
                            "RedundantTargetPlatform",
                            format!("Setting platform to predefined {p} in FROM is redundant as this is the default behavior"),
                        ));
                    }
                } else {
                    let name = from.name.clone().unwrap_or_default();
                    if !name.contains(&parsed.os) && !name.contains(&parsed.arch) {
                        warnings.push(Diagnostic::warning(
                            pos,
                            "FromPlatformFlagConstDisallowed",
                            format!("FROM --platform flag should not use constant value {p:?}"),
                        ));
                    }
                }
                Some(parsed)
            }
            None => None,
        };
        if let Some(name) = &from.name {
            if let Some(prev) = raw.iter().find(|s| s.name.as_deref() == Some(name)) {
                return Err(error_at(
                    pos,
                    format!(
                        "duplicate stage name {name:?}: stage names should be unique (first defined on line {})",
                        prev.from.pos.line
                    ),
                ));
            }
        }
        raw.push(RawStage {
            from: from_ins,
            name: from.name.clone(),
            base: exp.value,
            platform,
            body: &instrs[idx + 1..end],
        });
        idx = end;
    }

    // Edges: FROM <earlier stage>, COPY --from, RUN --mount from=, and the
    // same inside ONBUILD triggers that a stage inherits from its base stage.
    let names: Vec<Option<String>> = raw.iter().map(|s| s.name.clone()).collect();
    let mut edges: Vec<Vec<Edge>> = vec![Vec::new(); raw.len()];
    let mut bases: Vec<Base> = Vec::new();
    for (i, st) in raw.iter().enumerate() {
        // BuildKit matches the base against earlier stage names exactly,
        // before treating `scratch` as the empty image.
        let base = if let Some(j) = names[..i]
            .iter()
            .position(|n| n.as_deref() == Some(st.base.as_str()))
        {
            edges[i].push(Edge {
                to: j,
                pos: st.from.pos,
                value: st.base.clone(),
                what: "build from",
                end_line: st.from.end_line,
            });
            Base::Stage { index: j }
        } else if st.base == "scratch" {
            Base::Scratch
        } else {
            reference::validate(&st.base).map_err(|why| {
                let mut d = error_at(st.from.pos, format!("invalid base image reference {:?}: {why}", st.base))
                    .with_token(st.base.clone());
                let lower = st.base.to_lowercase();
                if names[..i].iter().any(|n| n.as_deref() == Some(lower.as_str())) {
                    d = d.with_hint(format!("FROM matches stage names exactly: write `FROM {lower}` to build on that stage"));
                }
                d
            })?;
            Base::Image {
                reference: st.base.clone(),
            }
        };
        let inherited: Vec<&Instruction> = match &base {
            Base::Stage { index } => raw[*index]
                .body
                .iter()
                .filter_map(|ins| match &ins.kind {
                    Kind::Onbuild { trigger, .. } => trigger.as_deref(),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        bases.push(base);
        let refs = Refs {
            names: &names,
            current: i,
        };
        let mut scratch = Vec::new();
        for ins in st.body.iter().chain(inherited) {
            for (value, what, pos) in from_refs(ins)? {
                let token = flag_token(what);
                let resolved = refs
                    .lookup(&value, pos, &mut scratch)
                    .map_err(|d| d.with_token(token).spanning(ins.end_line))?;
                if let Source::Stage { index } = resolved {
                    edges[i].push(Edge {
                        to: index,
                        pos,
                        value,
                        what,
                        end_line: ins.end_line,
                    });
                }
            }
        }
    }

    let target = match &opts.target {
        None => raw.len() - 1,
        Some(t) => {
            let lower = t.to_lowercase();
            match names
                .iter()
                .position(|n| n.as_deref() == Some(lower.as_str()))
            {
                Some(i) => i,
                None => {
                    let stage_names: Vec<&str> =
                        names.iter().flatten().map(String::as_str).collect();
                    let mut msg = format!("target stage {t:?} could not be found");
                    if let Some(s) = suggest(t, &stage_names) {
                        msg.push_str(&format!(" (did you mean {s:?}?)"));
                    } else if !stage_names.is_empty() {
                        msg.push_str(&format!(" (stages: {})", stage_names.join(", ")));
                    } else {
                        msg.push_str(" (no stage has a name: use FROM ... AS name)");
                    }
                    return Err(error_at(Pos::new(0, 0), msg));
                }
            }
        }
    };
    // Every stage the target needs, in Dockerfile order. References must
    // point backwards (checked here, for the stages that are built, as
    // BuildKit does), so Dockerfile order has dependencies first.
    let order: Vec<usize> = if opts.all_stages {
        (0..raw.len()).collect()
    } else {
        graph::reachable(&edges, target).into_iter().collect()
    };
    let available: BTreeSet<usize> = order.iter().copied().collect();
    for &i in &order {
        let refs = Refs {
            names: &names,
            current: i,
        };
        for e in &edges[i] {
            let token = flag_token(e.what);
            refs.check_order(&Source::Stage { index: e.to }, &e.value, e.what, e.pos)
                .map_err(|d| d.with_token(token).spanning(e.end_line))?;
        }
    }

    // Plan each stage, dependencies first.
    let mut finals: BTreeMap<usize, StageScope> = BTreeMap::new();
    let mut stages: BTreeMap<usize, Stage> = BTreeMap::new();
    for &i in &order {
        let st = &raw[i];
        let stage_platform = st.platform.clone().unwrap_or_else(|| opts.platform.clone());
        let mut sc = match &bases[i] {
            Base::Scratch => StageScope {
                env_known: true,
                ..StageScope::default()
            },
            Base::Stage { index } => finals.get(index).cloned().unwrap_or_default(),
            Base::Image { reference } => {
                match resolver
                    .resolve(reference, &stage_platform)
                    .map_err(|m| error_at(st.from.pos, m))?
                {
                    Some(cfg) => from_base_config(cfg),
                    None => StageScope::default(),
                }
            }
        };
        let windows = stage_platform.os == "windows";
        if sc.shell.is_empty() {
            sc.shell = if windows {
                vec!["cmd".into(), "/S".into(), "/C".into()]
            } else {
                vec!["/bin/sh".into(), "-c".into()]
            };
        }
        // BuildKit's default PATH is for Linux; Windows gets none.
        if matches!(bases[i], Base::Scratch | Base::Image { .. }) && !windows {
            sc.ensure_path();
        }
        // ONBUILD triggers of the base run first and are not inherited further.
        let triggers = std::mem::take(&mut sc.onbuild);
        let mut ctx = StageCtx {
            lexer,
            refs: Refs {
                names: &names,
                current: i,
            },
            available: &available,
            build_args: &opts.build_args,
            global_env: &global_env,
            sc,
            steps: Vec::new(),
            image_deps: BTreeSet::new(),
            consumed: &mut consumed,
            warnings: &mut warnings,
            seen_once: BTreeMap::new(),
        };
        for text in &triggers {
            let ins = parse_trigger(text, st.from.pos)?;
            ctx.lower(&ins, true)?;
        }
        for ins in st.body {
            ctx.lower(ins, false)?;
        }
        let mut deps: Vec<usize> = edges[i].iter().map(|e| e.to).collect();
        deps.sort_unstable();
        deps.dedup();
        let mut image_deps: Vec<String> = ctx.image_deps.into_iter().collect();
        image_deps.sort();
        stages.insert(
            i,
            Stage {
                index: i,
                name: st.name.clone(),
                line: st.from.pos.line,
                base: bases[i].clone(),
                platform: st.platform.clone(),
                steps: ctx.steps,
                deps,
                image_deps,
            },
        );
        finals.insert(i, ctx.sc);
    }

    let unused: Vec<&str> = opts
        .build_args
        .keys()
        .map(String::as_str)
        .filter(|k| {
            !consumed.contains(*k)
                && !PROXY_ARGS.iter().any(|p| p.eq_ignore_ascii_case(k))
                && !k.starts_with("BUILDKIT_")
                && *k != "SOURCE_DATE_EPOCH"
                && !global_env.iter().any(|(g, _)| g == k)
        })
        .collect();
    if !unused.is_empty() {
        warnings.push(Diagnostic::warning(
            Pos::new(0, 0),
            "UnusedBuildArgs",
            format!(
                "One or more build-args [{}] were not consumed",
                unused.join(" ")
            ),
        ));
    }

    let pruned = (0..raw.len())
        .filter(|i| !stages.contains_key(i))
        .map(|i| raw[i].name.clone().unwrap_or_else(|| format!("stage-{i}")))
        .collect();
    Ok(Plan {
        target,
        platform: opts.platform.clone(),
        stages: stages.into_values().collect(),
        order,
        pruned,
        global_args,
        warnings,
        checks: opts.checks.clone(),
    })
}

fn from_base_config(cfg: BaseConfig) -> StageScope {
    StageScope {
        run_env: cfg.env.clone(),
        env: cfg.env,
        // WorkdirRelativePath only trusts a WORKDIR set in the Dockerfile.
        workdir_set: false,
        workdir: cfg.workdir,
        user: cfg.user,
        shell_set: !cfg.shell.is_empty(),
        shell: cfg.shell,
        onbuild: cfg.onbuild,
        env_known: true,
        ..StageScope::default()
    }
}

/// Parses an ONBUILD trigger on its own, with the default escape character.
fn parse_trigger(text: &str, pos: Pos) -> Result<Instruction, Diagnostic> {
    let fail = |m: &str| error_at(pos, format!("ONBUILD trigger {text:?} of the base: {m}"));
    let df = parser::parse(text).map_err(|d| fail(&d.message))?;
    let [node] = df.nodes.as_slice() else {
        return Err(fail("onbuild trigger should be a single expression"));
    };
    let mut ins = instructions::from_node(node).map_err(|d| fail(&d.message))?;
    ins.pos = pos;
    ins.end_line = pos.line;
    Ok(ins)
}

/// The stage references of an instruction (unexpanded, as BuildKit reads
/// them to build its graph).
fn from_refs(ins: &Instruction) -> Result<Vec<(String, &'static str, Pos)>, Diagnostic> {
    let mut out = Vec::new();
    match &ins.kind {
        Kind::Copy(c) | Kind::Add(c) => {
            if let Some(f) = &c.from {
                out.push((f.clone(), "copy from", ins.pos));
            }
        }
        Kind::Run(r) => {
            for (n, m) in r.mounts.iter().enumerate() {
                let from = mount::scan(m)
                    .map_err(|e| error_at(ins.pos, e).with_token_nth("--mount", n))?;
                if let Some(f) = from {
                    out.push((f, "mount from", ins.pos));
                }
            }
        }
        _ => {}
    }
    Ok(out)
}

fn expand(lexer: &Lexer, word: &str, env: &dyn Env, pos: Pos) -> Result<String, Diagnostic> {
    lexer
        .process_word(word, env)
        .map(|e| e.value)
        .map_err(|e| error_at(pos, e.message))
}
