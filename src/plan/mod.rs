//! The build plan: typed instructions with ARG/ENV scope applied, turned
//! into stages whose steps carry fully resolved arguments, linked into a DAG
//! by `FROM <stage>`, `COPY --from` and `RUN --mount=from=`, and pruned to
//! what `--target` needs.
//!
//! The plan is plain data. It can be printed (`--dry-run`), serialized as
//! stable JSON, and tested without executing anything. Base-image configs
//! reach the planner through [`ImageResolver`], so the planner never imports
//! the registry. Later stages (solver, exporters) consume [`Plan`].

mod graph;
mod lower;
pub mod platform;
mod refs;
pub mod render;
mod scope;
mod stage;
pub mod values;

use crate::dockerfile::diag::{Diagnostic, Pos};
use crate::dockerfile::directives::CheckConfig;
use crate::dockerfile::instructions::{Health, InlineSource};
use crate::dockerfile::mount::Mount;
pub use platform::Platform;
use serde::Serialize;
use std::collections::BTreeMap;

/// What the planner needs to know of a base image's config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseConfig {
    pub env: Vec<(String, String)>,
    pub workdir: String,
    pub user: String,
    pub shell: Vec<String>,
    pub onbuild: Vec<String>,
}

/// Looks up base images' configs (BuildKit's `MetaResolver`). The planner
/// calls it for every image that a reachable stage is based on.
pub trait ImageResolver {
    /// The config of `reference` for `platform`; `Ok(None)` when unknown
    /// (the plan then assumes an empty config).
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<Option<BaseConfig>, String>;
}

/// A resolver that knows no images: every base starts with an empty config.
pub struct NoResolver;

impl ImageResolver for NoResolver {
    fn resolve(&self, _: &str, _: &Platform) -> Result<Option<BaseConfig>, String> {
        Ok(None)
    }
}

/// Inputs to planning besides the Dockerfile.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: a stage name; the last stage when absent.
    pub target: Option<String>,
    /// The platform being built for.
    pub platform: Platform,
    /// The platform doing the build.
    pub build_platform: Platform,
    /// Build-check settings from `# check=` (skips are applied to warnings).
    pub checks: CheckConfig,
    /// Plan every stage, not only those the target needs (`kiln check`).
    pub all_stages: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            build_args: BTreeMap::new(),
            target: None,
            platform: Platform::host(),
            build_platform: Platform::host(),
            checks: CheckConfig::default(),
            all_stages: false,
        }
    }
}

/// The finished plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Index of the target stage.
    pub target: usize,
    pub platform: Platform,
    /// Reachable stages, in Dockerfile order.
    pub stages: Vec<Stage>,
    /// Stage indices in an order where every stage follows its dependencies.
    pub order: Vec<usize>,
    /// Stages the target does not need (display names), left out.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<String>,
    /// Global ARGs (before the first FROM) and their values.
    pub global_args: Vec<(String, Option<String>)>,
    #[serde(skip)]
    pub warnings: Vec<Diagnostic>,
    /// The build-check settings in force (`# check=`, or the build-arg).
    #[serde(skip)]
    pub checks: CheckConfig,
}

impl Plan {
    /// With `error=true`, the warnings are a failure: the rule names, sorted.
    pub fn lint_violations(&self) -> Option<String> {
        self.lint_violations_in(&self.warnings)
    }

    /// As [`Plan::lint_violations`], for `warnings` (those of the plans
    /// of several platforms, say).
    pub fn lint_violations_in(&self, warnings: &[Diagnostic]) -> Option<String> {
        if !self.checks.error || warnings.is_empty() {
            return None;
        }
        let mut rules: Vec<&str> = warnings.iter().filter_map(|w| w.rule).collect();
        rules.sort_unstable();
        rules.dedup();
        Some(format!(
            "lint violation found for rules: {}",
            rules.join(", ")
        ))
    }
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Base {
    Scratch,
    Image { reference: String },
    Stage { index: usize },
}

/// One build stage.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub line: usize,
    pub base: Base,
    /// `FROM --platform`, expanded and normalized.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    pub steps: Vec<Step>,
    /// Stages this one needs, by index, sorted.
    pub deps: Vec<usize>,
    /// Images this one reads besides its base (`COPY --from=image`, mounts).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub image_deps: Vec<String>,
}

impl Stage {
    /// `name` or `stage-N`, as BuildKit names stages.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", self.index))
    }
}

/// One step of a stage, with resolved arguments.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub line: usize,
    pub end_line: usize,
    /// The instruction as written (continuations joined).
    pub text: String,
    #[serde(flatten)]
    pub op: Op,
    /// From an ONBUILD trigger of the base.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub onbuild: bool,
}

/// Where COPY/ADD or a bind mount read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    Context,
    Stage { index: usize },
    Image { reference: String },
}

/// A file that a RUN heredoc with a shebang is written to and executed from.
#[derive(Debug, Clone, Serialize)]
pub struct RunFile {
    pub path: String,
    pub data: String,
}

/// A RUN mount with its source resolved.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedMount {
    #[serde(flatten)]
    pub mount: Mount,
    /// Where `from=` points (bind and cache mounts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_source: Option<Source>,
}

/// COPY and ADD, resolved.
#[derive(Debug, Clone, Serialize)]
pub struct CopyOp {
    pub add: bool,
    pub source: Source,
    pub sources: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inline: Vec<InlineSource>,
    /// Absolute; ends with `/` when it names a directory.
    pub dest: String,
    /// The destination as written (expanded, not resolved against
    /// WORKDIR), for the history entry.
    #[serde(skip)]
    pub dest_raw: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chown: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chmod: Option<String>,
    pub link: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    pub parents: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
}

/// HEALTHCHECK, resolved into the image-config shape.
#[derive(Debug, Clone, Serialize)]
pub struct HealthOp {
    /// `["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", cmd]`.
    pub test: Vec<String>,
    pub interval: u64,
    pub timeout: u64,
    pub start_period: u64,
    pub start_interval: u64,
    pub retries: u32,
}

/// What a step does.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    Run {
        /// The argv to execute (SHELL applied to the shell form).
        argv: Vec<String>,
        shell_form: bool,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        files: Vec<RunFile>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        mounts: Vec<PlannedMount>,
        network: String,
        security: String,
        /// The environment: the image's ENV plus the ARGs in scope.
        env: Vec<(String, String)>,
        /// The ARGs in scope with values (for history and cache keys).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        args: Vec<(String, String)>,
        /// Proxy build-args (`HTTP_PROXY`, ...): given to the step without an
        /// ARG, and kept out of history and cache keys, as Docker does.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        proxy: Vec<(String, String)>,
        workdir: String,
        user: String,
    },
    Copy(CopyOp),
    Env {
        pairs: Vec<(String, String)>,
    },
    Label {
        pairs: Vec<(String, String)>,
    },
    Arg {
        name: String,
        value: Option<String>,
        /// The default the Dockerfile gives, expanded (history shows it).
        #[serde(skip)]
        default: Option<String>,
    },
    Expose {
        ports: Vec<String>,
    },
    Volume {
        paths: Vec<String>,
    },
    User {
        user: String,
    },
    Workdir {
        path: String,
    },
    Cmd {
        argv: Vec<String>,
        shell_form: bool,
    },
    Entrypoint {
        argv: Vec<String>,
        shell_form: bool,
    },
    Shell {
        argv: Vec<String>,
    },
    StopSignal {
        signal: String,
    },
    Healthcheck(HealthOp),
    Onbuild {
        expression: String,
    },
    Maintainer {
        name: String,
    },
}

/// A planning failure: a diagnostic with position.
pub type PlanError = Diagnostic;

/// Plans a Dockerfile source text: parse, convert, plan.
pub fn plan_source(
    src: &str,
    opts: &PlanOptions,
    resolver: &dyn ImageResolver,
) -> Result<Plan, PlanError> {
    let lines = crate::dockerfile::diag::SourceLines::new(src);
    plan_unlocated(src, opts, resolver)
        .map(|mut plan| {
            for w in &mut plan.warnings {
                w.locate_in(&lines);
            }
            plan
        })
        .map_err(|mut e| {
            e.locate_in(&lines);
            e
        })
}

fn plan_unlocated(
    src: &str,
    opts: &PlanOptions,
    resolver: &dyn ImageResolver,
) -> Result<Plan, PlanError> {
    if src.is_empty() {
        return Err(error_at(Pos::new(1, 1), "the Dockerfile cannot be empty"));
    }
    let df = crate::dockerfile::parser::parse(src)?;
    if df.nodes.is_empty() {
        return Err(error_at(Pos::new(1, 1), "file with no instructions"));
    }
    let instructions = crate::dockerfile::instructions::from_dockerfile(&df)?;
    let mut opts = opts.clone();
    // The BUILDKIT_DOCKERFILE_CHECK build-arg replaces the directive.
    opts.checks = match opts.build_args.get("BUILDKIT_DOCKERFILE_CHECK") {
        Some(v) => crate::dockerfile::directives::parse_check_value(v)
            .map_err(|m| error_at(Pos::new(0, 0), format!("BUILDKIT_DOCKERFILE_CHECK: {m}")))?,
        None => df.directives.check_config.clone(),
    };
    let mut plan = lower::plan(&instructions, df.directives.escape, &opts, resolver)?;
    let mut warnings = df.warnings.clone();
    warnings.extend(crate::check::lint(&instructions));
    warnings.append(&mut plan.warnings);
    warnings.retain(|w| w.rule.is_none_or(|r| !opts.checks.skips(r)));
    warnings.sort_by_key(|w| w.pos);
    warnings.dedup();
    plan.warnings = warnings;
    plan.checks = opts.checks.clone();
    Ok(plan)
}

/// Helper for errors at an instruction.
pub(crate) fn error_at(pos: Pos, msg: impl Into<String>) -> Diagnostic {
    Diagnostic::error(pos, msg)
}

/// Health from the instruction form to the plan form.
pub(crate) fn health_op(h: &Health) -> HealthOp {
    match h {
        Health::None => HealthOp {
            test: vec!["NONE".into()],
            interval: 0,
            timeout: 0,
            start_period: 0,
            start_interval: 0,
            retries: 0,
        },
        Health::Cmd {
            cmd,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        } => {
            use crate::dockerfile::instructions::CommandLine;
            let test = match cmd {
                CommandLine::Exec(v) => std::iter::once("CMD".to_string())
                    .chain(v.iter().cloned())
                    .collect(),
                CommandLine::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
            };
            HealthOp {
                test,
                interval: *interval,
                timeout: *timeout,
                start_period: *start_period,
                start_interval: *start_interval,
                retries: *retries,
            }
        }
    }
}
