//! The integration test binary: one binary, one module per area.
mod cli;
mod expand;
mod parse;
mod plan;
mod realworld;
mod util;
