//! `--chown` values: numeric ids, or names looked up in the image's own
//! `/etc/passwd` and `/etc/group`, as BuildKit does (never the host's).

use crate::snapshot::{host_path, resolve_in_root};
use std::path::Path;

/// Resolves `user[:group]` against the filesystem at `root`.
///
/// A numeric user without a group gets the same number as its gid (the
/// Dockerfile reference); a user name without a group gets its primary
/// group from /etc/passwd (what BuildKit does).
pub fn resolve_chown(root: &Path, spec: &str) -> Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err(format!("invalid --chown {spec:?}: the user is empty"));
    }
    let (uid, primary) = match user.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) => lookup(root, "etc/passwd", user)
            .map_err(|why| format!("unable to find user {user:?} for --chown: {why}"))?,
    };
    let gid = match group {
        None => primary,
        Some("") => return Err(format!("invalid --chown {spec:?}: the group is empty")),
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                lookup(root, "etc/group", g)
                    .map_err(|why| format!("unable to find group {g:?} for --chown: {why}"))?
                    .0
            }
        },
    };
    Ok((uid, gid))
}

/// The third and fourth fields of the line whose first field is `name`
/// (the fourth is the gid in /etc/passwd; 0 when absent or not a number).
fn lookup(root: &Path, file: &str, name: &str) -> Result<(u32, u32), String> {
    let rel = resolve_in_root(root, file, true).map_err(|e| e.to_string())?;
    let text = match std::fs::read(host_path(root, &rel)) {
        Ok(t) => String::from_utf8_lossy(&t).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("the image has no /{file}"))
        }
        Err(e) => return Err(format!("cannot read /{file}: {e}")),
    };
    for line in text.lines() {
        let mut fields = line.split(':');
        if fields.next() == Some(name) {
            let id = fields
                .nth(1)
                .and_then(|id| id.trim().parse::<u32>().ok())
                .ok_or_else(|| format!("/{file} has a malformed entry for {name:?}"))?;
            let second = fields
                .next()
                .and_then(|g| g.trim().parse::<u32>().ok())
                .unwrap_or(0);
            return Ok((id, second));
        }
    }
    Err(format!("no entry in /{file}"))
}

#[cfg(test)]
mod tests {
    use super::resolve_chown;

    #[test]
    fn names_come_from_the_image() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(d.path().join("etc")).expect("mkdir");
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1001:1002::/app:/bin/sh\n",
        )
        .expect("w");
        std::fs::write(d.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").expect("w");
        assert_eq!(resolve_chown(d.path(), "app").expect("ok"), (1001, 1002));
        assert_eq!(
            resolve_chown(d.path(), "app:staff").expect("ok"),
            (1001, 50)
        );
        assert_eq!(resolve_chown(d.path(), "7:8").expect("ok"), (7, 8));
        assert_eq!(resolve_chown(d.path(), "7").expect("ok"), (7, 7));
        let e = resolve_chown(d.path(), "nobody").expect_err("unknown");
        assert!(e.contains("no entry in /etc/passwd"), "{e}");
        let empty = tempfile::tempdir().expect("tempdir");
        let e = resolve_chown(empty.path(), "app").expect_err("no passwd");
        assert!(e.contains("the image has no /etc/passwd"), "{e}");
    }
}
