//! `kiln check`: parse, plan every stage and lint, without building.

use super::{exit, read_dockerfile, render_all, Failure};
use crate::cli::{CheckArgs, DryRun};
use crate::dockerfile::diag::Severity;
use crate::plan::{plan_source, NoResolver, PlanOptions};

/// Runs `kiln check`; returns the exit code.
pub fn run(args: &CheckArgs) -> Result<i32, Failure> {
    let settings = args
        .plan
        .resolve(&args.context, &|k| std::env::var(k).ok())
        .map_err(|e| Failure::usage(e.0))?;
    let src = read_dockerfile(&settings)?;
    // Lint every stage, as BuildKit's check does, unless a target is named.
    let opts = PlanOptions {
        all_stages: settings.target.is_none(),
        ..settings.plan_options()
    };
    let (diags, checks_are_errors) = match plan_source(&src, &opts, &NoResolver) {
        Ok(plan) => (plan.warnings, plan.checks.error),
        Err(e) => (vec![e], false),
    };
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = diags.len() - errors;
    match args.format {
        DryRun::Json => {
            let doc = serde_json::json!({
                "file": settings.display_name,
                "diagnostics": diags,
            });
            outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        DryRun::Text => {
            eprint!("{}", render_all(&diags, &settings.display_name, &src));
            if diags.is_empty() {
                eprintln!("{}: no problems found", settings.display_name);
            } else {
                eprintln!(
                    "{}: {errors} error(s), {warnings} warning(s)",
                    settings.display_name
                );
            }
        }
    }
    if errors > 0 || (checks_are_errors && warnings > 0) {
        Ok(exit::DOCKERFILE)
    } else {
        Ok(0)
    }
}
