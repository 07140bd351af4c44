//! Image references: `[host[:port]/]path[:tag][@digest]`, checked for shape
//! as the distribution reference grammar defines it. Normalization
//! (`busybox` → `docker.io/library/busybox:latest`) comes with the registry.

/// Checks an image reference's shape (`[host[:port]/]path[:tag][@digest]`).
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
    }
    for p in parts {
        let ok = !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            && p.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && p.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
        if !ok {
            return Err(bad("repository path components are lower-case letters, digits and separators (., _, -)"));
        }
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
