//! Progress events and their renderers. Work that takes time (build
//! steps, registry transfers) reports events here; the command line picks
//! a renderer once, at start (`--progress`). Without one, events are
//! dropped.
//!
//! - [`plain::Plain`]: numbered lines as BuildKit prints them, for CI logs;
//! - [`tty::Tty`]: a live view on a terminal;
//! - [`json::RawJson`]: one JSON object per event, for tools;
//! - [`Quiet`]: nothing (with `--explain`, the cache-miss reasons).

pub mod json;
pub mod plain;
pub mod tty;

use std::io::Write as _;
use std::sync::OnceLock;

/// What moves bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pull,
    Push,
}

impl Action {
    pub fn verb(self) -> &'static str {
        match self {
            Action::Pull => "pulling",
            Action::Push => "pushing",
        }
    }
}

/// One progress event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<'a> {
    /// `done` of `total` bytes of blob `id` have moved.
    Bytes {
        action: Action,
        id: &'a str,
        done: u64,
        total: u64,
    },
    /// Blob `id` is finished: `how` is `done`, `exists` or `mounted`.
    Finished {
        action: Action,
        id: &'a str,
        total: u64,
        how: &'a str,
    },
    /// Build step `n` of `total` in the whole build; `index` of `count`
    /// in its stage, counting the FROM and the steps that make layers
    /// (`index` 0: a metadata step, which BuildKit does not show).
    Step {
        n: usize,
        total: usize,
        stage: &'a str,
        index: usize,
        count: usize,
        text: &'a str,
        what: StepEvent<'a>,
    },
}

/// What happened to a build step.
#[derive(Debug, Clone, PartialEq)]
pub enum StepEvent<'a> {
    /// It starts (a FROM, an instruction without a layer, or a miss).
    Start,
    /// The cache has it: nothing runs.
    Cached,
    /// It missed the cache, for this reason; it runs.
    Miss(&'a str),
    /// A dry run: it would run, for this reason.
    WouldRun(&'a str),
    /// A line of its output.
    Output(&'a str),
    /// It finished, after this many seconds.
    Done(f64),
    /// It failed.
    Error(&'a str),
}

/// Where events go.
pub trait Sink: Send + Sync {
    fn event(&self, e: &Event);
    /// The build is over (or interrupted): leave the terminal clean.
    fn finish(&self) {}
}

static SINK: OnceLock<Box<dyn Sink>> = OnceLock::new();

/// Sets the renderer for this process (the first call wins).
pub fn set(sink: Box<dyn Sink>) {
    let _ = SINK.set(sink);
}

/// Reports an event to the renderer, if there is one.
pub fn emit(e: &Event) {
    if let Some(s) = SINK.get() {
        s.event(e);
    }
}

/// Ends the renderer's display (a live view is cleared or frozen).
pub fn finish() {
    if let Some(s) = SINK.get() {
        s.finish();
    }
}

/// `-q`: nothing, or with `--explain` only why steps missed the cache.
pub struct Quiet {
    pub explain: bool,
}

impl Sink for Quiet {
    fn event(&self, e: &Event) {
        if let Event::Step {
            stage,
            index,
            count,
            text,
            what: StepEvent::Miss(why),
            ..
        } = e
        {
            if self.explain {
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "[{stage} {index}/{count}] {text}: cache miss: {why}"
                );
            }
        }
    }
}

/// Whether colors may be used: a terminal, and no `NO_COLOR`
/// (<https://no-color.org>: set and not empty).
pub fn colors() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `sha256:0123456789ab`, as docker shortens digests.
pub fn short(id: &str) -> &str {
    id.get(..19).unwrap_or(id)
}

/// Bytes as BuildKit prints them: `512B`, `1.05kB`, `3.40MB`.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.2}{}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_as_buildkit() {
        assert_eq!(human(0), "0B");
        assert_eq!(human(999), "999B");
        assert_eq!(human(1050), "1.05kB");
        assert_eq!(human(3_400_000), "3.40MB");
        assert_eq!(short("sha256:0123456789abcdef"), "sha256:0123456789ab");
    }
}
