//! `kiln build`. For now it plans (`--dry-run`); executing the plan comes
//! with the solver.

use super::{exit, read_dockerfile, render_all, Failure};
use crate::cli::{BuildArgs, DryRun};
use crate::plan::render;
use crate::plan::{plan_source, NoResolver};

/// Runs `kiln build`; returns the exit code.
pub fn run(args: &BuildArgs) -> Result<i32, Failure> {
    let settings = args
        .plan
        .resolve(&args.context, &|k| std::env::var(k).ok())
        .map_err(|e| Failure::usage(e.0))?;
    let missing = args.unimplemented().map_err(|e| Failure::usage(e.0))?;
    if !missing.is_empty() {
        return Err(Failure::usage(format!(
            "{} {} parsed and validated but not implemented yet in kiln {}; \
             only --dry-run planning works so far",
            missing.join(", "),
            if missing.len() == 1 { "is" } else { "are" },
            env!("CARGO_PKG_VERSION")
        )));
    }
    if !args.context.is_dir() {
        return Err(Failure::usage(format!(
            "the build context {} is not a directory",
            args.context.display()
        )));
    }
    let src = read_dockerfile(&settings)?;
    let opts = settings.plan_options();
    let plan = match plan_source(&src, &opts, &NoResolver) {
        Ok(p) => p,
        Err(e) => {
            eprint!("{}", render_all(&[e], &settings.display_name, &src));
            return Ok(exit::DOCKERFILE);
        }
    };
    eprint!(
        "{}",
        render_all(&plan.warnings, &settings.display_name, &src)
    );
    if let Some(violations) = plan.lint_violations() {
        eprintln!("error: {violations} (the Dockerfile sets check=error=true)");
        return Ok(exit::DOCKERFILE);
    }
    match args.dry_run {
        Some(DryRun::Json) => println!("{}", render::to_json(&plan)),
        Some(DryRun::Text) => print!("{}", render::to_text(&plan)),
        None => {
            return Err(Failure::usage(
                "executing builds is not implemented yet in this version of kiln: \
                 use --dry-run (or --dry-run=json) to see the plan",
            ))
        }
    }
    Ok(0)
}
