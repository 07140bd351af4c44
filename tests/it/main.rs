//! The integration test binary: one binary, one module per area.
mod buildkit;
mod cli;
mod expand;
mod parse;
mod plan;
mod realworld;
mod util;
