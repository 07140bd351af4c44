//! The subcommands: each reads its inputs, runs the library, and prints.
//! Exit codes are documented in the README and in [`exit`].

/// `println!` for a command's output: a reader that went away (`| head`)
/// ends the output quietly, where `println!` would panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::cmd::stdout_failed(e);
        }
    }};
}

/// `print!` for a command's output (see `outln!`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout().lock(), $($arg)*) {
            $crate::cmd::stdout_failed(e);
        }
    }};
}

pub mod build;
pub mod check;
pub mod inspect;
pub mod registry;

/// Output could not be written: a closed pipe ends the command quietly
/// (as `head` expects of what feeds it); anything else is an error.
pub fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to stdout: {e}");
    std::process::exit(exit::BUILD);
}

use crate::cli::{DockerfileSource, PlanSettings};
use crate::dockerfile::diag::{Diagnostic, SourceLines};
use std::io::Read;

/// Process exit codes, distinct per kind of failure.
pub mod exit {
    /// A Dockerfile error (parse, plan, or `kiln check` findings).
    pub const DOCKERFILE: i32 = 1;
    /// A usage error: bad flags, a flag not implemented yet, unreadable input.
    pub const USAGE: i32 = 2;
    /// The build failed: a step, reading an input, or writing an output.
    pub const BUILD: i32 = 3;
    /// A registry failed: pulling, pushing, logging in (an HTTP error
    /// status, or the network).
    pub const REGISTRY: i32 = 4;
}

/// A failure with its exit code, already worded for the user.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: exit::USAGE,
            message: message.into(),
        }
    }
}

pub use crate::error_chain as chain;

/// Reads the Dockerfile named by the settings.
pub fn read_dockerfile(settings: &PlanSettings) -> Result<String, Failure> {
    let bytes = match &settings.dockerfile {
        DockerfileSource::Stdin => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Failure::usage(format!("reading the Dockerfile from stdin: {e}")))?;
            buf
        }
        DockerfileSource::Path(p) => std::fs::read(p).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                "\nhint: pass the Dockerfile with -f PATH, or run kiln in the directory that holds it"
            } else {
                ""
            };
            Failure::usage(format!("reading the Dockerfile {}: {e}{hint}", p.display()))
        })?,
    };
    // Docker accepts any bytes; invalid UTF-8 is replaced, not refused.
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Renders diagnostics against the source.
pub fn render_all(diags: &[Diagnostic], file: &str, src: &str) -> String {
    let lines = SourceLines::new(src);
    diags.iter().map(|d| render(d, file, &lines)).collect()
}

/// Renders one diagnostic; position 0 means "no position".
pub fn render(d: &Diagnostic, file: &str, lines: &SourceLines) -> String {
    if d.pos.line == 0 {
        let what = match d.rule {
            Some(rule) => format!("{} [{}]", d.severity, rule),
            None => d.severity.to_string(),
        };
        let mut s = format!("{file}: {what}: {}\n", d.message);
        if let Some(h) = &d.hint {
            s.push_str(&format!("hint: {h}\n"));
        }
        return s;
    }
    d.render_in(file, lines)
}
