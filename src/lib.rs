//! kiln: a daemonless, Dockerfile-compatible container image builder.
//!
//! The pipeline, each stage narrowing the representation:
//! `dockerfile` (bytes → typed instructions) → `plan` (stages and steps with
//! resolved arguments, a DAG) → later: solver, snapshots, layers, exporters.
pub mod check;
pub mod cli;
pub mod cmd;
pub mod context;
pub mod dockerfile;
pub mod image;
pub mod layer;
pub mod plan;
