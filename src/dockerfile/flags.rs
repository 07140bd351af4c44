//! Instruction flags (`--name=value`), with BuildKit's rules: every flag
//! needs `=value` except booleans, a flag may be given once unless it is a
//! list flag (`--mount`, `--exclude`), and unknown flags are errors that
//! suggest the closest known one.

use super::diag::suggest;
use std::collections::BTreeMap;

/// The type of one flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    Bool,
    String,
    /// May repeat; every value is kept.
    List,
}

/// A flag error: the message, and which flag (`--x`, its `nth` occurrence)
/// to point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagError {
    pub message: String,
    pub token: String,
    pub nth: usize,
}

/// The flags given to one instruction, checked against what it accepts.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    values: BTreeMap<String, Vec<String>>,
}

impl Flags {
    /// Parses `raw` flags against `spec`. `keyword` names the instruction
    /// in errors, which point at the failing flag's occurrence.
    pub fn parse(
        keyword: &str,
        raw: &[String],
        spec: &[(&str, FlagKind)],
    ) -> Result<Flags, FlagError> {
        let name_of = |arg: &str| -> String {
            let body = arg.strip_prefix("--").unwrap_or(arg);
            body.split_once('=').map_or(body, |(n, _)| n).to_string()
        };
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (idx, arg) in raw.iter().enumerate() {
            let fail = |message: String| {
                let name = name_of(arg);
                let nth = raw[..idx].iter().filter(|r| name_of(r) == name).count();
                FlagError {
                    message,
                    token: format!("--{name}"),
                    nth,
                }
            };
            let Some(body) = arg.strip_prefix("--") else {
                return Err(fail(format!("arg should start with -- : {arg}")));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(_, kind)) = spec.iter().find(|(n, _)| *n == name) else {
                let names: Vec<&str> = spec.iter().map(|(n, _)| *n).collect();
                let mut msg = format!("unknown flag: --{name}");
                if let Some(s) = suggest(name, &names) {
                    msg.push_str(&format!(" (did you mean --{s}?)"));
                } else if names.is_empty() {
                    msg.push_str(&format!(" ({keyword} takes no flags)"));
                } else {
                    let all: Vec<String> = names.iter().map(|n| format!("--{n}")).collect();
                    msg.push_str(&format!(" ({keyword} accepts {})", all.join(", ")));
                }
                return Err(fail(msg));
            };
            if kind != FlagKind::List && values.contains_key(name) {
                return Err(fail(format!("duplicate flag specified: --{name}")));
            }
            let value = match (kind, value) {
                (FlagKind::Bool, Some("")) => {
                    return Err(fail(format!("missing a value on flag: --{name}")))
                }
                (FlagKind::Bool, None) => "true".to_string(),
                (FlagKind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                    "true" => "true".to_string(),
                    "false" => "false".to_string(),
                    _ => {
                        return Err(fail(format!(
                            "expecting boolean value for flag --{name}, not: {v}"
                        )))
                    }
                },
                (_, Some(v)) => v.to_string(),
                (_, None) => return Err(fail(format!("missing a value on flag: --{name}"))),
            };
            values.entry(name.to_string()).or_default().push(value);
        }
        Ok(Flags { values })
    }

    /// The value of a string flag, if given.
    pub fn string(&self, name: &str) -> Option<String> {
        self.values.get(name).and_then(|v| v.last()).cloned()
    }

    /// A boolean flag: false when absent.
    pub fn bool(&self, name: &str) -> bool {
        self.string(name).is_some_and(|v| v == "true")
    }

    /// Every value of a list flag.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }
}

/// Parses a Go `time.ParseDuration` string (`1m30s`, `1.5h`, `300ms`,
/// `10us`) into nanoseconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || format!("time: invalid duration {text:?}");
    let mut rest = text;
    let negative = rest.starts_with('-');
    rest = rest.strip_prefix(['-', '+']).unwrap_or(rest);
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(bad());
        }
        let value: f64 = num.parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("time: missing unit in duration {text:?}")),
            _ => return Err(format!("time: unknown unit {unit:?} in duration {text:?}")),
        };
        total += value * scale;
    }
    if negative {
        return Err(format!("duration {text:?} cannot be negative"));
    }
    if total > u64::MAX as f64 / 2.0 {
        return Err(format!("time: invalid duration {text:?}"));
    }
    Ok(total.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_go() {
        assert_eq!(parse_duration("30s"), Ok(30_000_000_000));
        assert_eq!(parse_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_duration("300ms"), Ok(300_000_000));
        assert_eq!(parse_duration("0"), Ok(0));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn flag_rules() {
        let spec = [
            ("link", FlagKind::Bool),
            ("from", FlagKind::String),
            ("exclude", FlagKind::List),
        ];
        let f = Flags::parse(
            "COPY",
            &[
                "--link".into(),
                "--from=a".into(),
                "--exclude=x".into(),
                "--exclude=y".into(),
            ],
            &spec,
        )
        .unwrap();
        assert!(f.bool("link"));
        assert_eq!(f.string("from").as_deref(), Some("a"));
        assert_eq!(f.list("exclude"), vec!["x", "y"]);
        let e = Flags::parse("COPY", &["--frm=a".into()], &spec).unwrap_err();
        assert!(e.message.contains("did you mean --from?"), "{e:?}");
        assert_eq!((e.token.as_str(), e.nth), ("--frm", 0));
        let e = Flags::parse(
            "COPY",
            &["--link".into(), "--from=a".into(), "--from=b".into()],
            &spec,
        )
        .unwrap_err();
        assert_eq!((e.token.as_str(), e.nth), ("--from", 1));
        assert!(Flags::parse("COPY", &["--from".into()], &spec).is_err());
        assert!(Flags::parse("COPY", &["--from=a".into(), "--from=b".into()], &spec).is_err());
        assert!(Flags::parse("COPY", &["--link=maybe".into()], &spec).is_err());
    }
}
