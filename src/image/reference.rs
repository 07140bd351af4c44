//! Image references: `[host[:port]/]path[:tag][@digest]`, checked for shape
//! as the distribution reference grammar defines it. Normalization
//! (`busybox` → `docker.io/library/busybox:latest`) comes with the registry.

/// Checks an image reference's shape (`[host[:port]/]path[:tag][@digest]`)
/// against the distribution reference grammar: a domain of DNS labels (or
/// `localhost`, or an IPv4 address) with an optional port, path components
/// of lower-case alphanumerics joined by `.`, `_`, `__` or dashes, a tag of
/// at most 128 characters, a sha256 digest, and a name of at most 255
/// characters.
pub fn validate(r: &str) -> Result<(), String> {
    let bad = |why: &str| why.to_string();
    let (name_tag, digest) = match r.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (r, None),
    };
    if let Some(d) = digest {
        let ok = d.strip_prefix("sha256:").is_some_and(|h| {
            h.len() == 64
                && h.chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        });
        if !ok {
            return Err(bad(
                "digest must be sha256: followed by 64 lower-case hex digits",
            ));
        }
    }
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if name.is_empty() {
        return Err(bad("missing repository name"));
    }
    if name.len() > 255 {
        return Err(bad("repository name must not be more than 255 characters"));
    }
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return Err(bad("tags are up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'"));
        }
    }
    let mut parts = name.split('/').collect::<Vec<_>>();
    let first = parts[0];
    let has_host =
        parts.len() > 1 && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_host {
        parts.remove(0);
        valid_domain(first)?;
    }
    for p in parts {
        if !valid_component(p) {
            return Err(bad("repository path components are lower-case letters and digits, joined by '.', '_', '__' or dashes"));
        }
    }
    Ok(())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn valid_component(p: &str) -> bool {
    let b = p.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &p[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A registry host: DNS labels joined by dots, with an optional port.
fn valid_domain(d: &str) -> Result<(), String> {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) || p.len() > 5 {
            return Err(format!("registry {d:?}: the port must be a number"));
        }
    }
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
    };
    if host.is_empty() || !host.split('.').all(label_ok) {
        return Err(format!(
            "registry {d:?} is not a host name: labels of letters, digits and '-', joined by '.'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        for ok in ["app", "app:1.4", "registry.example.com/app:1.4", "localhost:5000/a/b", "127.0.0.1:5000/x@sha256:0000000000000000000000000000000000000000000000000000000000000000", "a__b/c-d.e"] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a..b",
            "a._b",
            "ex ample.com/x",
            "a.com:port/x",
            "a.com:/x",
            "-a.com/x",
            "App",
            "app:",
            "app:-x",
            "/app",
            "a//b",
            "x@sha256:12",
            "a/",
        ] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }
}
