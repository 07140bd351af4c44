//! `--progress=tty`: a live view on a terminal (indicatif).
//!
//! A running step shows a spinner, its timer and its last lines of
//! output; a finished one collapses into a single line with its duration
//! or `CACHED`; pulls and pushes show a byte bar per blob. indicatif
//! redraws only what changed, at most 10 times a second, and
//! [`Sink::finish`] clears what is live (the Ctrl-C handler calls it), so
//! the terminal is left clean.

use super::{colors, human, short, Action, Event, Sink, StepEvent};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// How many lines of a running step's output stay on screen.
const TAIL: usize = 3;

pub struct Tty {
    mp: MultiProgress,
    explain: bool,
    color: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    steps: HashMap<usize, Running>,
    blobs: HashMap<String, ProgressBar>,
}

struct Running {
    bar: ProgressBar,
    tail: VecDeque<String>,
}

impl Tty {
    /// `explain`: print why each step missed the cache.
    pub fn new(explain: bool) -> Tty {
        let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        Tty {
            mp,
            explain,
            color: colors(),
            state: Mutex::new(State::default()),
        }
    }

    fn paint(&self, s: &str, code: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    fn step_style(&self) -> ProgressStyle {
        let t = if self.color {
            "{spinner:.cyan} {prefix} \x1b[2m{elapsed}\x1b[0m{msg}"
        } else {
            "{spinner} {prefix} {elapsed}{msg}"
        };
        ProgressStyle::with_template(t)
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
    }

    fn blob_style(&self) -> ProgressStyle {
        ProgressStyle::with_template(
            "  {prefix} [{bar:30}] {bytes:>9}/{total_bytes:9} {bytes_per_sec:>11}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
    }

    /// Takes a finished bar off the live view.
    fn close(&self, bar: Option<ProgressBar>) {
        if let Some(b) = bar {
            b.finish_and_clear();
            self.mp.remove(&b);
        }
    }

    /// The lines under a running step's header: its last output.
    fn message(r: &Running) -> String {
        let mut m = String::new();
        for l in &r.tail {
            m.push_str("\n    ");
            // A line as wide as the terminal would wrap and break redraws.
            m.extend(l.chars().take(120));
        }
        m
    }
}

impl Sink for Tty {
    fn event(&self, e: &Event) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
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
                let head = format!("[{stage} {index}/{count}] {text}");
                if *index == 0 {
                    if let StepEvent::Error(msg) = what {
                        let _ = self
                            .mp
                            .println(format!("{} {head}: {msg}", self.paint("✗", "31")));
                    }
                    return;
                }
                match what {
                    StepEvent::Start => {
                        let bar = self.mp.add(ProgressBar::new_spinner());
                        bar.set_style(self.step_style());
                        bar.enable_steady_tick(Duration::from_millis(100));
                        bar.set_prefix(head.clone());
                        let r = Running {
                            bar,
                            tail: VecDeque::new(),
                        };
                        st.steps.insert(*n, r);
                    }
                    StepEvent::Cached => {
                        self.close(st.steps.remove(n).map(|r| r.bar));
                        let _ = self.mp.println(format!(
                            "{} {head} {}",
                            self.paint("✔", "32"),
                            self.paint("CACHED", "2")
                        ));
                    }
                    StepEvent::Miss(why) | StepEvent::WouldRun(why) => {
                        if self.explain {
                            let _ = self.mp.println(format!(
                                "  {} {head}: {why}",
                                self.paint("cache miss", "33")
                            ));
                        }
                    }
                    StepEvent::Output(line) => {
                        if let Some(r) = st.steps.get_mut(n) {
                            if r.tail.len() == TAIL {
                                r.tail.pop_front();
                            }
                            r.tail.push_back(line.to_string());
                            r.bar.set_message(Tty::message(r));
                        }
                    }
                    StepEvent::Done(secs) => {
                        self.close(st.steps.remove(n).map(|r| r.bar));
                        let _ = self.mp.println(format!(
                            "{} {head} {}",
                            self.paint("✔", "32"),
                            self.paint(&format!("{secs:.1}s"), "2")
                        ));
                    }
                    StepEvent::Error(msg) => {
                        self.close(st.steps.remove(n).map(|r| r.bar));
                        let first = msg.lines().next().unwrap_or("");
                        let _ = self
                            .mp
                            .println(format!("{} {head}: {first}", self.paint("✗", "31")));
                    }
                }
            }
            Event::Bytes {
                action,
                id,
                done,
                total,
            } => {
                let key = format!("{action:?}{id}");
                let bar = st.blobs.entry(key).or_insert_with(|| {
                    let b = self.mp.add(ProgressBar::new(*total));
                    b.set_style(self.blob_style());
                    b.set_prefix(format!("{} {}", action.verb(), short(id)));
                    // Redrawn on a timer too: an update the draw-rate
                    // limit skipped is shown even if the network then
                    // stalls (no later update would draw it).
                    b.enable_steady_tick(std::time::Duration::from_millis(200));
                    b
                });
                bar.set_length(*total);
                bar.set_position(*done);
            }
            Event::Finished {
                action,
                id,
                total,
                how,
            } => {
                self.close(st.blobs.remove(&format!("{action:?}{id}")));
                let verb = match action {
                    Action::Pull => "pulled",
                    Action::Push => "pushed",
                };
                if *how == "done" {
                    let _ = self.mp.println(format!(
                        "{} {verb} {} {}",
                        self.paint("✔", "32"),
                        short(id),
                        human(*total)
                    ));
                }
            }
        }
    }

    fn finish(&self) {
        if let Ok(mut st) = self.state.lock() {
            for (_, r) in st.steps.drain() {
                r.bar.finish_and_clear();
            }
            for (_, b) in st.blobs.drain() {
                b.finish_and_clear();
            }
        }
        let _ = self.mp.clear();
    }
}
