//! `--progress=plain`: BuildKit's numbered lines, for CI logs.
//!
//! ```text
//! #3 [builder 2/4] COPY . /src
//! #3 cache miss: 1 file changed: src/main.go
//! #3 DONE 0.4s
//! #4 [builder 3/4] RUN go build -o /app
//! #4 0.512 go: downloading ...
//! #4 DONE 12.1s
//! #5 [builder 4/4] RUN strip /app
//! #5 CACHED
//! ```
//!
//! Each step gets its number when it first shows; a step's output lines
//! carry its number and the seconds since it started, so the lines of
//! stages running at once can be told apart. Transfers print a line per
//! blob at most every half second, and one when done.

use super::{human, short, Event, Sink, StepEvent};
use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Writes what [`Lines`] renders to stderr.
#[derive(Default)]
pub struct Plain {
    lines: Lines,
}

#[derive(Default)]
struct State {
    /// Build step → (its number here, when it started).
    ids: HashMap<usize, (usize, Instant)>,
    next: usize,
    /// Last line printed per blob.
    last: HashMap<String, Instant>,
}

const EVERY: Duration = Duration::from_millis(500);

impl Plain {
    pub fn new() -> Plain {
        Plain::default()
    }
}

/// The lines an event prints, given the renderer's state.
fn lines(state: &mut State, e: &Event) -> Vec<String> {
    match e {
        Event::Step {
            n,
            stage,
            index,
            count,
            text,
            what,
            ..
        } => {
            if *index == 0 {
                // Metadata steps are no vertices; only their failure shows.
                return match what {
                    StepEvent::Error(msg) => vec![format!("ERROR: {text}: {msg}")],
                    _ => Vec::new(),
                };
            }
            let mut out = Vec::new();
            let (id, started) = match state.ids.get(n) {
                Some(v) => *v,
                None => {
                    state.next += 1;
                    let v = (state.next, Instant::now());
                    state.ids.insert(*n, v);
                    out.push(format!("#{} [{stage} {index}/{count}] {text}", v.0));
                    v
                }
            };
            match what {
                StepEvent::Start => {}
                StepEvent::Cached => out.push(format!("#{id} CACHED")),
                StepEvent::Miss(why) => out.push(format!("#{id} cache miss: {why}")),
                StepEvent::WouldRun(why) => out.push(format!("#{id} would run: {why}")),
                StepEvent::Output(line) => out.push(format!(
                    "#{id} {:.3} {line}",
                    started.elapsed().as_secs_f64()
                )),
                StepEvent::Done(secs) => out.push(format!("#{id} DONE {secs:.1}s")),
                StepEvent::Error(msg) => out.push(format!("#{id} ERROR: {msg}")),
            }
            out
        }
        Event::Bytes {
            action,
            id,
            done,
            total,
        } => {
            let now = Instant::now();
            let key = format!("{action:?}{id}");
            if state
                .last
                .get(&key)
                .is_some_and(|t| now.duration_since(*t) < EVERY)
            {
                return Vec::new();
            }
            state.last.insert(key, now);
            vec![format!(
                "{} {} {} / {}",
                action.verb(),
                short(id),
                human(*done),
                human(*total)
            )]
        }
        Event::Finished {
            action,
            id,
            total,
            how,
        } => vec![format!(
            "{} {} {} {how}",
            action.verb(),
            short(id),
            human(*total)
        )],
    }
}

impl Sink for Plain {
    fn event(&self, e: &Event) {
        let out = self.lines.render(e);
        if out.is_empty() {
            return;
        }
        let mut err = std::io::stderr().lock();
        for l in out {
            let _ = writeln!(err, "{l}");
        }
    }
}

/// Renders events into plain lines, numbering steps as they show
/// (`--dry-run` prints them on stdout).
#[derive(Default)]
pub struct Lines {
    state: Mutex<State>,
}

impl Lines {
    pub fn render(&self, e: &Event) -> Vec<String> {
        match self.state.lock() {
            Ok(mut s) => lines(&mut s, e),
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step<'a>(n: usize, index: usize, text: &'a str, what: StepEvent<'a>) -> Event<'a> {
        Event::Step {
            n,
            total: 9,
            stage: "builder",
            index,
            count: 3,
            text,
            what,
        }
    }

    #[test]
    fn steps_are_numbered_as_they_show() {
        let l = Lines::default();
        let mut out = Vec::new();
        out.extend(l.render(&step(4, 2, "RUN make", StepEvent::Start)));
        out.extend(l.render(&step(4, 2, "RUN make", StepEvent::Miss("parent changed"))));
        out.extend(l.render(&step(2, 1, "FROM x", StepEvent::Cached)));
        out.extend(l.render(&step(3, 0, "ENV A=1", StepEvent::Start)));
        out.extend(l.render(&step(4, 2, "RUN make", StepEvent::Done(2.34))));
        out.extend(l.render(&step(4, 2, "RUN make", StepEvent::Error("exit code: 2"))));
        assert_eq!(
            out,
            [
                "#1 [builder 2/3] RUN make",
                "#1 cache miss: parent changed",
                "#2 [builder 1/3] FROM x",
                "#2 CACHED",
                "#1 DONE 2.3s",
                "#1 ERROR: exit code: 2",
            ]
        );
        let o = l.render(&step(4, 2, "RUN make", StepEvent::Output("hello")));
        assert!(
            o[0].starts_with("#1 0.0") && o[0].ends_with(" hello"),
            "{o:?}"
        );
    }
}
