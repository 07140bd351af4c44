//! The integration test binary: one binary, one module per area.
mod build;
mod buildkit;
mod buildkit_build;
mod cli;
mod consumers;
mod debian;
mod expand;
mod hostile;
mod image;
mod inputs;
mod outputs;
mod parse;
mod plan;
mod realworld;
mod registry;
mod util;
