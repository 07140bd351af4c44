//! Progress events and their renderers. Work that takes time (registry
//! transfers now; build steps later) reports events here; the command
//! line picks a renderer once, at start. Without one, events are dropped.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What moves bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pull,
    Push,
}

impl Action {
    fn verb(self) -> &'static str {
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
    /// Build step `n` of `total` (a stage's FROM counts as one).
    Step {
        n: usize,
        total: usize,
        stage: &'a str,
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

impl Event<'_> {
    /// The line a step event shows as, in plain text (`None`: nothing).
    pub fn step_line(&self) -> Option<String> {
        let Event::Step {
            n,
            total,
            stage,
            text,
            what,
        } = self
        else {
            return None;
        };
        match what {
            StepEvent::Start => Some(format!("[{n}/{total}] {stage} {text}")),
            StepEvent::Cached => Some(format!("[{n}/{total}] {stage} {text}  CACHED")),
            StepEvent::Miss(why) => Some(format!("  cache miss: {why}")),
            StepEvent::WouldRun(why) => Some(format!("  would run: {why}")),
            StepEvent::Output(line) => Some(line.to_string()),
            StepEvent::Done(_) | StepEvent::Error(_) => None,
        }
    }
}

/// Where events go.
pub trait Sink: Send + Sync {
    fn event(&self, e: &Event);
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

/// `--progress=plain`: build steps as they start (with the reason of each
/// cache miss) and their output; a line per blob at most every half
/// second, and one when it is finished; on stderr.
#[derive(Default)]
pub struct Plain {
    last: Mutex<HashMap<String, Instant>>,
    /// Leave out transfers (`auto` on a terminal, until a live view).
    pub steps_only: bool,
}

impl Plain {
    /// Steps only, or steps and transfers.
    pub fn new(steps_only: bool) -> Plain {
        Plain {
            steps_only,
            ..Default::default()
        }
    }
}

/// `-q`: nothing, or with `--explain` only why steps missed the cache.
pub struct Quiet {
    pub explain: bool,
}

impl Sink for Quiet {
    fn event(&self, e: &Event) {
        if let Event::Step {
            n,
            total,
            stage,
            text,
            what: StepEvent::Miss(why),
        } = e
        {
            if self.explain {
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "[{n}/{total}] {stage} {text}: cache miss: {why}"
                );
            }
        }
    }
}

const EVERY: Duration = Duration::from_millis(500);

impl Sink for Plain {
    fn event(&self, e: &Event) {
        let line = match e {
            Event::Step { .. } => match e.step_line() {
                Some(l) => l,
                None => return,
            },
            Event::Bytes { .. } | Event::Finished { .. } if self.steps_only => return,
            Event::Bytes {
                action,
                id,
                done,
                total,
            } => {
                let now = Instant::now();
                let Ok(mut last) = self.last.lock() else {
                    return;
                };
                let key = format!("{action:?}{id}");
                match last.get(&key) {
                    Some(t) if now.duration_since(*t) < EVERY => return,
                    _ => {}
                }
                last.insert(key, now);
                format!(
                    "{} {} {} / {}",
                    action.verb(),
                    short(id),
                    human(*done),
                    human(*total)
                )
            }
            Event::Finished {
                action,
                id,
                total,
                how,
            } => format!("{} {} {} {how}", action.verb(), short(id), human(*total)),
        };
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

/// `sha256:0123456789ab`, as docker shortens digests.
fn short(id: &str) -> &str {
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
