//! kiln: a daemonless, Dockerfile-compatible container image builder.
//!
//! The pipeline, each stage narrowing the representation:
//! `dockerfile` (bytes → typed instructions) → `plan` (stages and steps with
//! resolved arguments, a DAG) → `build` (steps executed into snapshot
//! directories and layers in the `store`) → `export` (OCI, docker, local, tar).
pub mod build;
pub mod check;
pub mod cleanup;
pub mod cli;
pub mod cmd;
pub mod context;
pub mod dockerfile;
pub mod exec;
pub mod export;
pub mod image;
pub mod layer;
pub mod plan;
pub mod progress;
pub mod registry;
pub mod snapshot;
pub mod store;
pub mod userns;

/// An error with its causes, on one line: `what: why: deeper why`.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut s = e.to_string();
    let mut last = s.clone();
    for c in e.chain().skip(1) {
        let c = c.to_string();
        // Wrappers (an io::Error around an HTTP error) often repeat their
        // cause's words.
        if c == last || last.ends_with(&c) {
            continue;
        }
        s.push_str(": ");
        s.push_str(&c);
        last = c;
    }
    s
}
