//! `--chown` values: numeric ids, or names looked up in the image's own
//! `/etc/passwd` and `/etc/group`, as BuildKit does (never the host's).

/// Reads a file of the image by absolute path; `Ok(None)` when absent.
pub type ReadFile<'a> = &'a dyn Fn(&str) -> Result<Option<Vec<u8>>, String>;

/// Resolves `user[:group]` against the filesystem at `root`.
///
/// A numeric user without a group gets the same number as its gid (the
/// Dockerfile reference); a user name without a group gets its primary
/// group from /etc/passwd (what BuildKit does).
pub fn resolve_chown(read: ReadFile, spec: &str) -> Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err(format!("invalid --chown {spec:?}: the user is empty"));
    }
    let (uid, primary) = match user.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) => match lookup(read, "etc/passwd", user) {
            Ok(ids) => ids,
            // `root` is uid 0 even in an image without /etc/passwd.
            Err(_) if user == "root" => (0, 0),
            Err(why) => return Err(format!("unable to find user {user:?}: {why}")),
        },
    };
    let gid = match group {
        None => primary,
        Some("") => return Err(format!("invalid --chown {spec:?}: the group is empty")),
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                lookup(read, "etc/group", g)
                    .map_err(|why| format!("unable to find group {g:?}: {why}"))?
                    .0
            }
        },
    };
    Ok((uid, gid))
}

/// The third and fourth fields of the line whose first field is `name`
/// (the fourth is the gid in /etc/passwd; 0 when absent or not a number).
fn lookup(read: ReadFile, file: &str, name: &str) -> Result<(u32, u32), String> {
    let text = match read(file)? {
        Some(t) => String::from_utf8_lossy(&t).into_owned(),
        None => return Err(format!("the image has no /{file}")),
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

    fn files(
        passwd: Option<&'static str>,
        group: Option<&'static str>,
    ) -> impl Fn(&str) -> Result<Option<Vec<u8>>, String> {
        move |p: &str| {
            Ok(match p {
                "etc/passwd" => passwd.map(|s| s.as_bytes().to_vec()),
                "etc/group" => group.map(|s| s.as_bytes().to_vec()),
                _ => None,
            })
        }
    }

    #[test]
    fn names_come_from_the_image() {
        let read = files(
            Some("root:x:0:0::/root:/bin/sh\napp:x:1001:1002::/app:/bin/sh\n"),
            Some("root:x:0:\nstaff:x:50:\n"),
        );
        assert_eq!(resolve_chown(&read, "app").expect("ok"), (1001, 1002));
        assert_eq!(resolve_chown(&read, "app:staff").expect("ok"), (1001, 50));
        assert_eq!(resolve_chown(&read, "7:8").expect("ok"), (7, 8));
        assert_eq!(resolve_chown(&read, "7").expect("ok"), (7, 7));
        let e = resolve_chown(&read, "nobody").expect_err("unknown");
        assert!(e.contains("no entry in /etc/passwd"), "{e}");
        let e = resolve_chown(&read, "app:nogroup").expect_err("unknown group");
        assert!(e.contains("unable to find group"), "{e}");
        let none = files(None, None);
        let e = resolve_chown(&none, "app").expect_err("no passwd");
        assert!(e.contains("the image has no /etc/passwd"), "{e}");
    }
}
