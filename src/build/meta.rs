//! Metadata instructions: how each changes the image config, and the
//! history entry each leaves, worded as BuildKit's Dockerfile frontend
//! words them (`created_by`, with `empty_layer` for steps without a layer).

use crate::image::config::{Empty, Healthcheck, ImageConfig};
use crate::plan::Op;

/// What BuildKit writes in `comment` for every Dockerfile step.
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// Go's `%q` of a string, for `created_by` texts that BuildKit formats
/// with it.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A string slice as Go's `%q` prints `[]string`: `["a" "b"]`.
pub fn go_quote_list(v: &[String]) -> String {
    let inner: Vec<String> = v.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", inner.join(" "))
}

/// A string slice as Go's `%v` prints it: `[a b]`.
fn go_list(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

/// Go's `time.Duration` `String()`.
pub fn go_duration(nanos: u64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (unit, div) = if nanos < 1_000 {
            ("ns", 1)
        } else if nanos < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", trim_frac(nanos, div));
    }
    let total_secs = nanos / 1_000_000_000;
    let (h, m) = (total_secs / 3600, (total_secs % 3600) / 60);
    let secs = trim_frac(nanos % 60_000_000_000, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{secs}s"),
        (0, _) => format!("{m}m{secs}s"),
        _ => format!("{h}h{m}m{secs}s"),
    }
}

fn trim_frac(v: u64, div: u64) -> String {
    let whole = v / div;
    let frac = v % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let f = format!("{frac:0width$}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

/// Applies a metadata op to `config`. Returns the `created_by` text, or
/// `None` for ops that leave no history (ONBUILD).
/// `cmd_set` tracks whether this stage set CMD: ENTRYPOINT resets an
/// inherited CMD, as Docker does.
pub fn apply(op: &Op, config: &mut ImageConfig, cmd_set: &mut bool) -> Option<String> {
    let c = &mut config.config;
    Some(match op {
        Op::Env { pairs } => {
            for (k, v) in pairs {
                c.env_set(k, v);
            }
            let kv: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("ENV {}", kv.join(" "))
        }
        Op::Label { pairs } => {
            for (k, v) in pairs {
                c.labels.insert(k.clone(), v.clone());
            }
            let kv: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("LABEL {}", kv.join(" "))
        }
        Op::Arg { name, default, .. } => match default {
            Some(v) => format!("ARG {name}={v}"),
            None => format!("ARG {name}"),
        },
        Op::Expose { ports } => {
            for p in ports {
                c.exposed_ports.insert(p.clone(), Empty {});
            }
            // Go prints a map with its keys sorted.
            let mut m: Vec<String> = ports.iter().map(|p| format!("{p}:{{}}")).collect();
            m.sort();
            m.dedup();
            format!("EXPOSE map[{}]", m.join(" "))
        }
        Op::Volume { paths } => {
            for p in paths {
                c.volumes.insert(p.clone(), Empty {});
            }
            format!("VOLUME {}", go_list(paths))
        }
        Op::User { user } => {
            c.user = user.clone();
            format!("USER {user}")
        }
        Op::Workdir { path } => {
            c.working_dir = path.clone();
            format!("WORKDIR {path}")
        }
        Op::Cmd { argv, .. } => {
            c.cmd = Some(argv.clone());
            // BuildKit sets this for every CMD and ENTRYPOINT.
            c.args_escaped = true;
            *cmd_set = true;
            format!("CMD {}", go_quote_list(argv))
        }
        Op::Entrypoint { argv, .. } => {
            c.entrypoint = Some(argv.clone());
            c.args_escaped = true;
            if !*cmd_set {
                c.cmd = None;
            }
            format!("ENTRYPOINT {}", go_quote_list(argv))
        }
        Op::Shell { argv } => {
            c.shell = argv.clone();
            format!("SHELL {}", go_list(argv))
        }
        Op::StopSignal { signal } => {
            c.stop_signal = signal.clone();
            format!("STOPSIGNAL {signal}")
        }
        Op::Healthcheck(h) => {
            let hc = Healthcheck {
                test: h.test.clone(),
                interval: h.interval,
                timeout: h.timeout,
                start_period: h.start_period,
                start_interval: h.start_interval,
                retries: h.retries,
            };
            let text = format!(
                "HEALTHCHECK &{{{} {:?} {:?} {:?} {:?} '\\x{:02x}'}}",
                go_quote_list(&hc.test),
                go_duration(hc.interval),
                go_duration(hc.timeout),
                go_duration(hc.start_period),
                go_duration(hc.start_interval),
                hc.retries
            );
            c.healthcheck = Some(hc);
            text
        }
        Op::Onbuild { expression } => {
            // Recorded in the config, with no history entry (as BuildKit).
            c.on_build.push(expression.clone());
            return None;
        }
        Op::Maintainer { name } => {
            config.author = Some(name.clone());
            format!("MAINTAINER {name}")
        }
        Op::Run { .. } | Op::Copy(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_formatting() {
        assert_eq!(go_duration(30_000_000_000), "30s");
        assert_eq!(go_duration(300_000_000_000), "5m0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(500_000_000), "500ms");
        assert_eq!(
            go_quote_list(&["a b".into(), "\"q\"".into()]),
            r#"["a b" "\"q\""]"#
        );
    }

    #[test]
    fn entrypoint_resets_an_inherited_cmd_only() {
        let mut cfg = ImageConfig::default();
        cfg.config.cmd = Some(vec!["sh".into()]);
        let mut set = false;
        apply(
            &Op::Entrypoint {
                argv: vec!["/e".into()],
                shell_form: false,
            },
            &mut cfg,
            &mut set,
        );
        assert_eq!(cfg.config.cmd, None);
        apply(
            &Op::Cmd {
                argv: vec!["x".into()],
                shell_form: false,
            },
            &mut cfg,
            &mut set,
        );
        apply(
            &Op::Entrypoint {
                argv: vec!["/f".into()],
                shell_form: false,
            },
            &mut cfg,
            &mut set,
        );
        assert_eq!(cfg.config.cmd, Some(vec!["x".to_string()]));
    }
}
