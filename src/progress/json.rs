//! `--progress=rawjson`: one JSON object per event and per line, on
//! stderr, for tools. Every object has `type` (`step`, `pull`, `push`,
//! `result`) and `time` (seconds since the Unix epoch).
//!
//! ```text
//! {"type":"step","time":…,"n":4,"stage":"builder","index":2,"count":3,"text":"RUN make","event":"miss","reason":"parent changed (COPY . /src)"}
//! {"type":"pull","time":…,"blob":"sha256:…","done":1048576,"total":52428800}
//! ```

use super::{Action, Event, Sink, StepEvent};
use serde_json::{json, Value};
use std::io::Write as _;

#[derive(Default)]
pub struct RawJson;

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The JSON object of an event.
pub fn object(e: &Event) -> Value {
    let kind = |a: &Action| match a {
        Action::Pull => "pull",
        Action::Push => "push",
    };
    match e {
        Event::Bytes {
            action,
            id,
            done,
            total,
        } => json!({"type": kind(action), "time": now(), "blob": id, "done": done, "total": total}),
        Event::Finished {
            action,
            id,
            total,
            how,
        } => {
            json!({"type": kind(action), "time": now(), "blob": id, "done": total, "total": total, "status": how})
        }
        Event::Step {
            n,
            total,
            stage,
            index,
            count,
            text,
            what,
        } => {
            let mut o = json!({
                "type": "step", "time": now(), "n": n, "total": total, "stage": stage,
                "index": index, "count": count, "text": text,
            });
            let (event, key, value): (&str, &str, Value) = match what {
                StepEvent::Start => ("start", "", Value::Null),
                StepEvent::Cached => ("cached", "", Value::Null),
                StepEvent::Miss(r) => ("miss", "reason", json!(r)),
                StepEvent::WouldRun(r) => ("would-run", "reason", json!(r)),
                StepEvent::Output(l) => ("output", "line", json!(l)),
                StepEvent::Done(s) => ("done", "seconds", json!(s)),
                StepEvent::Error(m) => ("error", "error", json!(m)),
            };
            o["event"] = json!(event);
            if !key.is_empty() {
                o[key] = value;
            }
            o
        }
    }
}

impl Sink for RawJson {
    fn event(&self, e: &Event) {
        let line = object(e).to_string();
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

/// Writes the build's result as the last object.
pub fn result(fields: Value) {
    let mut o = json!({"type": "result", "time": now()});
    if let (Some(m), Value::Object(f)) = (o.as_object_mut(), fields) {
        m.extend(f);
    }
    let _ = writeln!(std::io::stderr().lock(), "{o}");
}
