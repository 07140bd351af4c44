//! `RUN --mount=...` values: comma-separated `key=value` fields (CSV, as
//! BuildKit reads them) for the mount types bind, cache, tmpfs, secret and
//! ssh, with each type's options and defaults.

use serde::Serialize;

/// The kind of a RUN mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    #[default]
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl MountType {
    fn name(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// Cache mount sharing mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

/// One parsed `--mount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: MountType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub readonly: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sharing: Option<Sharing>,
    pub required: bool,
    /// tmpfs size limit in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// secret: also (or instead) expose the secret as this env variable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

const KEYS: &[&str] = &[
    "type",
    "from",
    "source",
    "src",
    "target",
    "dst",
    "destination",
    "readonly",
    "ro",
    "readwrite",
    "rw",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "env",
];

/// Splits one CSV record (Go's encoding/csv rules: a field that starts with
/// `"` is quoted and `""` inside it is a quote).
fn csv_fields(val: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = val.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => {
                        return Err(
                            "failed to parse csv mounts: extraneous or missing \" in quoted-field"
                                .into(),
                        )
                    }
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => {
                    return Err(
                        "failed to parse csv mounts: extraneous or missing \" in quoted-field"
                            .into(),
                    )
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => {
                        return Err("failed to parse csv mounts: bare \" in non-quoted-field".into())
                    }
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid value for {key}: {value}")),
    }
}

/// Parses a size like `64m`, `1g`, `512k`, `1024` (docker's RAMInBytes:
/// binary units, optional `b`/`ib` suffix).
pub fn parse_size(value: &str) -> Option<u64> {
    let lower = value.trim().to_ascii_lowercase();
    let num_len = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let num: f64 = lower[..num_len].parse().ok()?;
    let unit = lower[num_len..].trim();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return None,
    };
    let bytes = num * mult as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Parses one `--mount` value. `expand` is applied to every value except
/// `from`, which BuildKit resolves before expansion and so refuses
/// variables in.
/// The parse-time check BuildKit makes before variables are known: the
/// CSV must split, and `from=` may not use a variable. Returns `from`.
/// Everything else is checked by [`parse`] once values are expanded.
pub fn scan(val: &str) -> Result<Option<String>, String> {
    let mut from = None;
    for field in csv_fields(val)? {
        if let Some((key, value)) = field.split_once('=') {
            if key.eq_ignore_ascii_case("from") {
                check_from(value)?;
                from = Some(value.to_string());
            }
        }
    }
    Ok(from)
}

fn check_from(value: &str) -> Result<(), String> {
    if value.find('$').is_some_and(|i| i + 1 != value.len()) {
        return Err("'from' doesn't support variable expansion, define alias stage instead".into());
    }
    Ok(())
}

pub fn parse(val: &str, expand: &dyn Fn(&str) -> Result<String, String>) -> Result<Mount, String> {
    let fields = csv_fields(val)?;
    let mut m = Mount::default();
    let mut ro_auto = true;
    for field in fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
            None => (field.to_ascii_lowercase(), None),
        };
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" => {
                    m.readonly = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = false;
                    ro_auto = false;
                }
                "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                    m.required = true
                }
                "required" => {
                    return Err(format!(
                        "unexpected key 'required' for mount type '{}'",
                        m.kind.name()
                    ))
                }
                _ => return Err(unexpected(&key, &field)),
            }
            continue;
        };
        if key == "from" {
            if value.find('$').is_some_and(|i| i + 1 != value.len()) {
                return Err(
                    "'from' doesn't support variable expansion, define alias stage instead".into(),
                );
            }
            m.from = Some(value.to_string());
            continue;
        }
        let value = expand(value)?;
        match key.as_str() {
            "type" => {
                m.kind = match value.to_ascii_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => {
                        let mut msg = format!("unsupported mount type {value:?}");
                        let types = ["bind", "cache", "tmpfs", "secret", "ssh"];
                        if let Some(s) = super::diag::suggest(&value, &types) {
                            msg.push_str(&format!(" (did you mean {s}?)"));
                        }
                        return Err(msg);
                    }
                }
            }
            "source" | "src" => m.source = Some(value),
            "target" | "dst" | "destination" => m.target = Some(value),
            "readonly" | "ro" => {
                m.readonly = parse_bool(&key, &value)?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.readonly = !parse_bool(&key, &value)?;
                ro_auto = false;
            }
            "required" => {
                if !matches!(m.kind, MountType::Secret | MountType::Ssh) {
                    return Err(format!(
                        "unexpected key 'required' for mount type '{}'",
                        m.kind.name()
                    ));
                }
                m.required = parse_bool(&key, &value)?;
            }
            "size" => {
                if m.kind != MountType::Tmpfs {
                    return Err(format!(
                        "unexpected key 'size' for mount type '{}'",
                        m.kind.name()
                    ));
                }
                m.size = Some(
                    parse_size(&value).ok_or_else(|| format!("invalid value for size: {value}"))?,
                );
            }
            "id" => m.id = Some(value),
            "sharing" => {
                if m.kind != MountType::Cache {
                    return Err(format!(
                        "invalid cache sharing set for {} mount",
                        m.kind.name()
                    ));
                }
                m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => {
                        return Err(format!(
                            "unsupported sharing value {value:?} (use shared, private or locked)"
                        ))
                    }
                });
            }
            "mode" => {
                m.mode = Some(
                    u32::from_str_radix(&value, 8)
                        .map_err(|_| format!("invalid value {value} for mode"))?,
                )
            }
            "uid" => {
                m.uid = Some(
                    value
                        .parse()
                        .map_err(|_| format!("invalid value {value} for uid"))?,
                )
            }
            "gid" => {
                m.gid = Some(
                    value
                        .parse()
                        .map_err(|_| format!("invalid value {value} for gid"))?,
                )
            }
            "env" => m.env = Some(value),
            _ => return Err(unexpected(&key, &field)),
        }
    }
    let file_info_ok = matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    if !file_info_ok {
        for (name, set) in [
            ("mode", m.mode.is_some()),
            ("uid", m.uid.is_some()),
            ("gid", m.gid.is_some()),
        ] {
            if set {
                return Err(format!(
                    "{name} not allowed for {:?} type mounts",
                    m.kind.name()
                ));
            }
        }
    }
    if ro_auto {
        m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.kind == MountType::Secret {
        if m.from.is_some() {
            return Err("secret mount should not have a from".into());
        }
        if m.source.is_some() && m.id.is_some() {
            return Err("both source and id can't be set".into());
        }
    }
    Ok(m)
}

fn unexpected(key: &str, field: &str) -> String {
    let mut msg = format!("unexpected key '{key}' in '{field}'");
    if let Some(s) = super::diag::suggest(key, KEYS) {
        msg.push_str(&format!(" (did you mean {s}?)"));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &str) -> Result<Mount, String> {
        parse(v, &|w: &str| Ok(w.to_string()))
    }

    #[test]
    fn mount_types_and_defaults() {
        let m =
            p("type=cache,target=/root/.cache,sharing=locked,id=go,mode=0755,uid=1000").unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.sharing, Some(Sharing::Locked));
        assert_eq!(m.mode, Some(0o755));
        assert!(!m.readonly);
        let b = p("source=go.sum,target=go.sum").unwrap();
        assert_eq!(b.kind, MountType::Bind);
        assert!(b.readonly);
        assert!(!p("type=bind,target=/x,rw").unwrap().readonly);
        assert_eq!(
            p("type=tmpfs,target=/t,size=64m").unwrap().size,
            Some(64 << 20)
        );
        assert!(p("type=secret,id=a,required").unwrap().required);
    }

    #[test]
    fn mount_errors() {
        assert!(p("type=volume,target=/x")
            .unwrap_err()
            .contains("unsupported mount type"));
        assert!(p("type=bind,target=/x,sharing=locked").is_err());
        assert!(p("type=bind,target=/x,mode=0755").is_err());
        assert!(p("type=cache,target=/x,taget=/y")
            .unwrap_err()
            .contains("did you mean target"));
        assert!(p("type=tmpfs,target=/x,size=lots").is_err());
        assert!(p("type=bind,from=$STAGE,target=/x").is_err());
        assert!(p("type=bind,target=\"/x").is_err());
    }
}
