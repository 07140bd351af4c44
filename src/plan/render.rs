//! Printing a plan: a readable text form for `--dry-run`, and stable JSON
//! for `--dry-run=json` (fields in a fixed order, versioned).

use super::{Base, Op, Plan, Source, Stage};
use std::fmt::Write;

/// The JSON format version; bump it on incompatible changes.
pub const JSON_VERSION: u32 = 1;

/// The plan as stable, pretty JSON.
pub fn to_json(plan: &Plan) -> String {
    #[derive(serde::Serialize)]
    struct Doc<'a> {
        kiln_plan_version: u32,
        #[serde(flatten)]
        plan: &'a Plan,
    }
    let doc = Doc {
        kiln_plan_version: JSON_VERSION,
        plan,
    };
    serde_json::to_string_pretty(&doc)
        .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
}

fn stage_label(plan: &Plan, index: usize) -> String {
    plan.stages
        .iter()
        .find(|s| s.index == index)
        .map_or_else(|| format!("stage-{index}"), Stage::display_name)
}

fn source_label(plan: &Plan, s: &Source) -> String {
    match s {
        Source::Context => "context".into(),
        Source::Stage { index } => format!("stage {}", stage_label(plan, *index)),
        Source::Image { reference } => format!("image {reference}"),
    }
}

fn quote_argv(argv: &[String]) -> String {
    serde_json::to_string(argv).unwrap_or_default()
}

/// The plan for people.
pub fn to_text(plan: &Plan) -> String {
    let mut out = String::new();
    let target = stage_label(plan, plan.target);
    let _ = writeln!(out, "plan: target {target}, platform {}", plan.platform);
    if !plan.global_args.is_empty() {
        let args: Vec<String> = plan
            .global_args
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            })
            .collect();
        let _ = writeln!(out, "global args: {}", args.join(" "));
    }
    for &i in &plan.order {
        let Some(st) = plan.stages.iter().find(|s| s.index == i) else {
            continue;
        };
        let base = match &st.base {
            Base::Scratch => "scratch".to_string(),
            Base::Image { reference } => format!("image {reference}"),
            Base::Stage { index } => format!("stage {}", stage_label(plan, *index)),
        };
        let _ = write!(
            out,
            "\nstage {} [{}] line {}: from {base}",
            st.index,
            st.display_name(),
            st.line
        );
        if let Some(p) = &st.platform {
            let _ = write!(out, " (platform {p})");
        }
        if !st.deps.is_empty() {
            let deps: Vec<String> = st.deps.iter().map(|d| stage_label(plan, *d)).collect();
            let _ = write!(out, ", needs {}", deps.join(", "));
        }
        out.push('\n');
        let n = st.steps.len();
        for (k, step) in st.steps.iter().enumerate() {
            let _ = writeln!(
                out,
                "  [{}/{}] line {}: {}",
                k + 1,
                n,
                step.line,
                describe(plan, &step.op)
            );
        }
    }
    if !plan.pruned.is_empty() {
        let _ = writeln!(
            out,
            "\nnot needed by the target: {}",
            plan.pruned.join(", ")
        );
    }
    out
}

fn describe(plan: &Plan, op: &Op) -> String {
    match op {
        Op::Run {
            argv,
            mounts,
            network,
            security,
            files,
            ..
        } => {
            let mut s = format!("RUN {}", quote_argv(argv));
            for m in mounts {
                let kind = serde_json::to_value(m.mount.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let _ = write!(
                    s,
                    " mount={kind}:{}",
                    m.mount.target.as_deref().unwrap_or("-")
                );
                if let Some(src) = &m.from_source {
                    let _ = write!(s, "<-{}", source_label(plan, src));
                }
            }
            if network != "default" {
                let _ = write!(s, " network={network}");
            }
            if security != "sandbox" {
                let _ = write!(s, " security={security}");
            }
            for f in files {
                let _ = write!(s, " file={}", f.path);
            }
            s
        }
        Op::Copy(c) => {
            let mut s = String::from(if c.add { "ADD" } else { "COPY" });
            if c.source != Source::Context {
                let _ = write!(s, " from {}", source_label(plan, &c.source));
            }
            for src in &c.sources {
                let _ = write!(s, " {src}");
            }
            for h in &c.inline {
                let _ = write!(s, " <<{}", h.name);
            }
            let _ = write!(s, " -> {}", c.dest);
            for (flag, v) in [
                ("chown", &c.chown),
                ("chmod", &c.chmod),
                ("checksum", &c.checksum),
            ] {
                if let Some(v) = v {
                    let _ = write!(s, " --{flag}={v}");
                }
            }
            if c.link {
                s.push_str(" --link");
            }
            if c.parents {
                s.push_str(" --parents");
            }
            for e in &c.exclude {
                let _ = write!(s, " --exclude={e}");
            }
            s
        }
        Op::Env { pairs } => format!("ENV {}", kv(pairs)),
        Op::Label { pairs } => format!("LABEL {}", kv(pairs)),
        Op::Arg { name, value, .. } => match value {
            Some(v) => format!("ARG {name}={v}"),
            None => format!("ARG {name}"),
        },
        Op::Expose { ports } => format!("EXPOSE {}", ports.join(" ")),
        Op::Volume { paths } => format!("VOLUME {}", quote_argv(paths)),
        Op::User { user } => format!("USER {user}"),
        Op::Workdir { path } => format!("WORKDIR {path}"),
        Op::Cmd { argv, .. } => format!("CMD {}", quote_argv(argv)),
        Op::Entrypoint { argv, .. } => format!("ENTRYPOINT {}", quote_argv(argv)),
        Op::Shell { argv } => format!("SHELL {}", quote_argv(argv)),
        Op::StopSignal { signal } => format!("STOPSIGNAL {signal}"),
        Op::Healthcheck(h) => format!("HEALTHCHECK {}", quote_argv(&h.test)),
        Op::Onbuild { expression } => format!("ONBUILD {expression}"),
        Op::Maintainer { name } => format!("MAINTAINER {name}"),
    }
}

fn kv(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(" ")
}
