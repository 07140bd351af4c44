//! The Dockerfile frontend: text to typed instructions.
//!
//! `parser` turns bytes into nodes (directives, continuations, heredocs,
//! flags), `instructions` turns nodes into typed, validated instructions, and
//! `shell` expands words as BuildKit's shell lexer does. Nothing here touches
//! files, processes or the network.
pub mod diag;
pub mod directives;
pub mod dump;
pub mod flags;
pub mod heredoc;
pub mod instructions;
pub mod mount;
pub mod parser;
pub mod shell;
