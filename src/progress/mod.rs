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
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// `--progress=plain`: a line per blob at most every half second, and one
/// when it is finished, on stderr.
#[derive(Default)]
pub struct Plain {
    last: Mutex<HashMap<String, Instant>>,
}

const EVERY: Duration = Duration::from_millis(500);

impl Sink for Plain {
    fn event(&self, e: &Event) {
        let line = match e {
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
