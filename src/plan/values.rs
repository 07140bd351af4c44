//! Value checks and conversions used while planning: paths against
//! WORKDIR, EXPOSE port specs, `--chmod` modes and STOPSIGNAL names.

/// Joins `p` onto `dir` and cleans the result; keeps a trailing slash when
/// `keep_slash` and `p` names a directory.
pub fn resolve_path(dir: &str, p: &str, keep_slash: bool) -> String {
    let joined = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{dir}/{p}")
    };
    let mut out = clean_path(&joined);
    let dir_like =
        p.ends_with('/') || p == "." || p.ends_with("/.") || p == ".." || p.ends_with("/..");
    if keep_slash && dir_like && !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// Go's `path.Clean`: lexical cleaning; `""` becomes `"."`.
pub fn clean_path(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let body = parts.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_string(),
        (false, false) => body,
    }
}

/// Go's `path.Base`: the last element, trailing slashes ignored; `"."`
/// for an empty path and `"/"` for the root.
pub fn go_base(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".into();
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
}

/// Whether an ADD source is fetched rather than read from the context: a
/// URL or a git remote. A local file named `repo.git` is local.
pub fn is_remote(s: &str) -> bool {
    s.starts_with("http://")
        || s.starts_with("https://")
        || s.starts_with("git@")
        || s.starts_with("git://")
        || s.starts_with("ssh://")
}

/// `--chmod`: octal (`755`, `0644`) or symbolic (`u+x,go-w`, `a=rX`).
pub fn check_chmod(mode: &str) -> Result<(), String> {
    if !mode.is_empty() && mode.chars().all(|c| c.is_ascii_digit()) {
        return match u32::from_str_radix(mode, 8) {
            Ok(v) if v <= 0o7777 => Ok(()),
            _ => Err(format!(
                "invalid --chmod {mode:?}: octal modes are at most 7777"
            )),
        };
    }
    let ok = !mode.is_empty()
        && mode.split(',').all(|clause| {
            let who_len = clause.len() - clause.trim_start_matches(['u', 'g', 'o', 'a']).len();
            let rest = &clause[who_len..];
            let mut chars = rest.chars().peekable();
            let mut ops = 0;
            while let Some(op) = chars.next() {
                if !matches!(op, '+' | '-' | '=') {
                    return false;
                }
                ops += 1;
                while chars.peek().is_some_and(|c| "rwxXstugo".contains(*c)) {
                    chars.next();
                }
            }
            ops > 0
        });
    if ok {
        Ok(())
    } else {
        Err(format!("invalid --chmod {mode:?}: expected an octal mode such as 0755 or a symbolic one such as u+x,go-w"))
    }
}

/// EXPOSE values, read as docker's `nat.ParsePortSpecs` reads them:
/// `[ip:][hostPort:]port[-end][/proto]`; only the container ports count.
/// `80` → `["80/tcp"]`, `8000-8002/udp` → three ports.
pub fn parse_port(spec: &str) -> Result<Vec<String>, String> {
    let mut parts = spec.split('/');
    let port_part = parts.next().unwrap_or_default();
    if port_part.is_empty() {
        return Err(format!("no port specified: {spec}<empty>"));
    }
    let proto = match parts.next() {
        Some(p) if !p.is_empty() => p.to_ascii_lowercase(),
        _ => "tcp".to_string(),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!(
            "Invalid proto: {proto} (EXPOSE takes tcp, udp or sctp)"
        ));
    }
    let fields: Vec<&str> = port_part.split(':').collect();
    let container = fields[fields.len() - 1];
    let range = |s: &str, what: &str| -> Result<(u16, u16), String> {
        let num = |x: &str| x.parse::<u16>().map_err(|_| format!("Invalid {what}: {s}"));
        let (lo, hi) = match s.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let p = num(s)?;
                (p, p)
            }
        };
        if hi < lo {
            return Err(format!(
                "invalid {what}: {s} (the range ends before it starts)"
            ));
        }
        Ok((lo, hi))
    };
    if fields.len() >= 2 {
        let host = fields[fields.len() - 2];
        if !host.is_empty() {
            range(host, "hostPort")?;
        }
    }
    let (lo, hi) = range(container, "containerPort")?;
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// STOPSIGNAL: a number or a signal name, `SIG` optional.
pub fn check_signal(sig: &str) -> Result<(), String> {
    // As moby's ParseSignal: any non-zero number is taken as is.
    if let Ok(n) = sig.parse::<i64>() {
        return if n != 0 {
            Ok(())
        } else {
            Err(format!("invalid signal: {sig}"))
        };
    }
    let upper = sig.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "UNUSED", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU",
        "XFSZ", "RTMIN", "RTMAX",
    ];
    if NAMES.contains(&name) {
        return Ok(());
    }
    let rt = |prefix: &str, sep: char| {
        name.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix(sep))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (1..=15).contains(&n))
    };
    if rt("RTMIN", '+') || (rt("RTMAX", '-') && !name.ends_with("-15")) {
        return Ok(());
    }
    Err(format!("invalid signal: {sig}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_against_workdir() {
        assert_eq!(resolve_path("/app", "src/", true), "/app/src/");
        assert_eq!(resolve_path("/app", ".", true), "/app/");
        assert_eq!(resolve_path("", ".", true), "/");
        assert_eq!(resolve_path("/app", "../x", false), "/x");
        assert_eq!(resolve_path("/app", "/abs//y/", true), "/abs/y/");
        assert_eq!(resolve_path("/a", "b", false), "/a/b");
    }

    #[test]
    fn clean_like_go() {
        assert_eq!(clean_path(""), ".");
        assert_eq!(clean_path("/root/.cache/"), "/root/.cache");
        assert_eq!(clean_path("a/../../b"), "../b");
        assert_eq!(clean_path("/../x"), "/x");
        assert_eq!(clean_path("cache//go"), "cache/go");
    }

    #[test]
    fn base_like_go() {
        assert_eq!(go_base("a/b/"), "b");
        assert_eq!(go_base("/run/secrets/x"), "x");
        assert_eq!(go_base(""), ".");
        assert_eq!(go_base("///"), "/");
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(parse_port("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(parse_port("8000-8002/sctp").unwrap().len(), 3);
        assert!(parse_port("80/icmp").is_err());
        assert_eq!(parse_port("127.0.0.1:8080:80").unwrap(), vec!["80/tcp"]);
        assert_eq!(parse_port("80/").unwrap(), vec!["80/tcp"]);
        assert!(parse_port("x:80").is_err());
        assert!(parse_port("/tcp").is_err());
        assert!(parse_port("99999").is_err());
        assert!(parse_port("x").is_err());
    }

    #[test]
    fn chmod_forms() {
        assert!(check_chmod("0755").is_ok());
        assert!(check_chmod("u+x,go-w").is_ok());
        assert!(check_chmod("a=rX").is_ok());
        assert!(check_chmod("888").is_err());
        assert!(check_chmod("u*x").is_err());
        assert!(check_chmod("").is_err());
    }

    #[test]
    fn signals() {
        assert!(check_signal("SIGTERM").is_ok());
        assert!(check_signal("term").is_ok());
        assert!(check_signal("9").is_ok());
        assert!(check_signal("SIGRTMIN+3").is_ok());
        assert!(check_signal("SIGFOO").is_err());
        assert!(check_signal("0").is_err());
        assert!(check_signal("100").is_ok());
        assert!(check_signal("SIGRTMAX-14").is_ok());
        assert!(check_signal("SIGRTMAX-15").is_err());
    }
}
