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

/// A RUN step's user: ids, supplementary groups and home directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// From /etc/passwd; `/` when the user has no entry (runc's default).
    pub home: String,
}

/// The uid, gid, supplementary groups and home of a RUN step, for USER
/// `user[:group]`, the way runc resolves them (moby/sys/user's
/// `GetExecUser`, which BuildKit uses): a name must be in /etc/passwd; a
/// number need not be (its gid is then 0); without an explicit group,
/// the primary group is the passwd entry's and the supplementary groups
/// are those in /etc/group that list the user's name.
pub fn exec_user(read: ReadFile, spec: &str) -> Result<ExecUser, String> {
    if spec.is_empty() {
        // No USER: root, whatever the image's files say (BuildKit does
        // not look); supplementary groups and home still come from the
        // image's files.
        return exec_user(read, "0").map(|u| ExecUser {
            uid: 0,
            gid: 0,
            ..u
        });
    }
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read("etc/passwd")?.map(|b| String::from_utf8_lossy(&b).into_owned());
    let entry = passwd.as_deref().and_then(|text| {
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let (name, uid, gid) = (f.first()?, f.get(2)?, f.get(3)?);
            let (uid, gid) = (
                uid.trim().parse::<u32>().ok()?,
                gid.trim().parse::<u32>().ok()?,
            );
            let home = f
                .get(5)
                .filter(|h| !h.is_empty())
                .unwrap_or(&"/")
                .to_string();
            (*name == user || user.parse::<u32>().ok() == Some(uid))
                .then(|| (name.to_string(), uid, gid, home))
        })
    });
    let (name, uid, mut gid, home) = match (entry, user.parse::<u32>()) {
        (Some(e), _) => (Some(e.0), e.1, e.2, e.3),
        (None, Ok(n)) => (None, n, 0, "/".to_string()),
        (None, Err(_)) => {
            return Err(format!(
                "unable to find user {user}: no matching entries in passwd file"
            ))
        }
    };
    let groups_text = read("etc/group")?.map(|b| String::from_utf8_lossy(&b).into_owned());
    let groups: Vec<(String, u32, Vec<String>)> = groups_text
        .as_deref()
        .unwrap_or("")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let gid = f.get(2)?.trim().parse::<u32>().ok()?;
            let members = f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .filter(|x| !x.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            Some((f[0].to_string(), gid, members))
        })
        .collect();
    let mut sgids = Vec::new();
    match group {
        Some(g) if !g.is_empty() => {
            gid = match groups.iter().find(|(n, _, _)| n == g) {
                Some((_, id, _)) => *id,
                None => g.parse::<u32>().map_err(|_| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?,
            };
        }
        _ => {
            if let Some(name) = &name {
                for (_, id, members) in &groups {
                    if members.iter().any(|m| m == name) && !sgids.contains(id) {
                        sgids.push(*id);
                    }
                }
            }
        }
    }
    // BuildKit's executor gives the process its primary group too.
    let mut groups = vec![gid];
    groups.extend(sgids.into_iter().filter(|g| *g != gid));
    Ok(ExecUser {
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::{exec_user, resolve_chown, ReadFile};

    fn resolve_exec_user(read: ReadFile, spec: &str) -> Result<(u32, u32, Vec<u32>), String> {
        exec_user(read, spec).map(|u| (u.uid, u.gid, u.groups))
    }

    #[test]
    fn exec_users_resolve_as_runc() {
        let read = files(
            Some("root:x:0:0::/root:/bin/sh\nwww-data:x:33:33::/var/www:/bin/sh\n"),
            Some("root:x:0:\nstaff:x:50:www-data\nwww-data:x:33:\nadm:x:4:www-data,root\n"),
        );
        assert_eq!(
            resolve_exec_user(&read, "").expect("root"),
            (0, 0, vec![0, 4])
        );
        assert_eq!(
            resolve_exec_user(&read, "www-data").expect("named"),
            (33, 33, vec![33, 50, 4])
        );
        assert_eq!(
            resolve_exec_user(&read, "www-data:staff").expect("group"),
            (33, 50, vec![50])
        );
        assert_eq!(
            resolve_exec_user(&read, "33").expect("numeric"),
            (33, 33, vec![33, 50, 4])
        );
        assert_eq!(
            resolve_exec_user(&read, "1234:7").expect("unknown"),
            (1234, 7, vec![7])
        );
        assert_eq!(
            resolve_exec_user(&read, "1234").expect("unknown"),
            (1234, 0, vec![0])
        );
        assert!(resolve_exec_user(&read, "nobody").is_err());
        assert!(resolve_exec_user(&read, "root:nogroup").is_err());
    }

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
