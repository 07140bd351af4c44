//! Registry credentials, found as the docker CLI finds them: in
//! `$DOCKER_CONFIG/config.json` (else `~/.docker/config.json`), from
//! `auths` (base64 `user:password`, or `username`/`password`), or from a
//! credential helper (`credHelpers` per registry, else `credsStore`) run as
//! `docker-credential-<name> get`.

use base64::Engine as _;
use std::path::PathBuf;

/// A username and a password (or token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        write!(f, "Credentials({}, ***)", self.username)
    }
}

pub fn config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// The keys a registry may be filed under in `auths`.
fn keys_for(domain: &str) -> Vec<String> {
    let mut keys = vec![
        domain.to_string(),
        format!("https://{domain}"),
        format!("http://{domain}"),
    ];
    if domain == "docker.io" {
        keys.extend([
            "https://index.docker.io/v1/".to_string(),
            "index.docker.io".to_string(),
            "registry-1.docker.io".to_string(),
        ]);
    }
    keys
}

/// Credentials for `domain`, if the docker config has any. A config that
/// cannot be read or parsed is an error: silently pulling anonymously
/// would hide it.
pub fn lookup(domain: &str) -> Result<Option<Credentials>, String> {
    // One answer per registry per process: a credential helper may be
    // slow, or ask the user.
    static FOUND: std::sync::Mutex<Vec<(String, Option<Credentials>)>> =
        std::sync::Mutex::new(Vec::new());
    if let Ok(found) = FOUND.lock() {
        if let Some((_, c)) = found.iter().find(|(d, _)| d == domain) {
            return Ok(c.clone());
        }
    }
    let c = lookup_uncached(domain)?;
    if let Ok(mut found) = FOUND.lock() {
        found.push((domain.to_string(), c.clone()));
    }
    Ok(c)
}

fn lookup_uncached(domain: &str) -> Result<Option<Credentials>, String> {
    let Some(v) = read_config()? else {
        return Ok(None);
    };
    let path = config_path().unwrap_or_default();
    let keys = keys_for(domain);
    let helper = helper_for(&v, domain);
    if let Some(auths) = v.get("auths").and_then(|a| a.as_object()) {
        for k in &keys {
            let Some(entry) = auths.get(k) else { continue };
            if let Some(c) =
                from_entry(entry).map_err(|e| format!("{}: auths[{k:?}]: {e}", path.display()))?
            {
                return Ok(Some(c));
            }
        }
    }
    match helper {
        Some(h) => from_helper(&h, domain),
        None => Ok(None),
    }
}

/// The credential helper the config names for `domain`: its
/// `credHelpers` entry, else `credsStore`.
fn helper_for(config: &serde_json::Value, domain: &str) -> Option<String> {
    keys_for(domain)
        .iter()
        .find_map(|k| config.get("credHelpers")?.get(k)?.as_str())
        .or_else(|| config.get("credsStore").and_then(|s| s.as_str()))
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

/// The server URL helpers file a registry under (docker's own).
fn server_url(domain: &str) -> String {
    if domain == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        domain.to_string()
    }
}

/// Runs `docker-credential-<helper> <action>` with `input` on stdin;
/// returns its stdout, or its complaint.
fn run_helper(helper: &str, action: &str, input: &[u8]) -> Result<Result<Vec<u8>, String>, String> {
    use std::io::Write;
    let program = format!("docker-credential-{helper}");
    let mut child = std::process::Command::new(&program)
        .arg(action)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run the credential helper {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("the credential helper {program} failed: {e}"))?;
    if out.status.success() {
        return Ok(Ok(out.stdout));
    }
    // Helpers explain on stdout (`credentials not found in native
    // keychain`) or stderr.
    let why = String::from_utf8_lossy(if out.stdout.is_empty() {
        &out.stderr
    } else {
        &out.stdout
    })
    .trim()
    .chars()
    .take(300)
    .collect::<String>();
    Ok(Err(format!("{program} {action}: {why}")))
}

fn from_entry(entry: &serde_json::Value) -> Result<Option<Credentials>, String> {
    if let Some(auth) = entry
        .get("auth")
        .and_then(|a| a.as_str())
        .filter(|a| !a.is_empty())
    {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| format!("auth is not base64: {e}"))?;
        let text = String::from_utf8(raw).map_err(|_| "auth is not UTF-8".to_string())?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| "auth is not user:password".to_string())?;
        return Ok(Some(Credentials {
            username: u.to_string(),
            password: p.to_string(),
        }));
    }
    let user = entry.get("username").and_then(|u| u.as_str());
    let pass = entry.get("password").and_then(|p| p.as_str());
    Ok(match (user, pass) {
        (Some(u), Some(p)) => Some(Credentials {
            username: u.to_string(),
            password: p.to_string(),
        }),
        _ => None,
    })
}

/// Runs `docker-credential-<helper> get` with the registry on stdin.
fn from_helper(helper: &str, domain: &str) -> Result<Option<Credentials>, String> {
    let program = format!("docker-credential-{helper}");
    let Ok(stdout) = run_helper(helper, "get", server_url(domain).as_bytes())? else {
        // Helpers say "credentials not found" with a failure status.
        return Ok(None);
    };
    let v: serde_json::Value = serde_json::from_slice(&stdout)
        .map_err(|_| format!("the credential helper {program} did not answer JSON"))?;
    let user = v.get("Username").and_then(|u| u.as_str()).unwrap_or("");
    let secret = v.get("Secret").and_then(|s| s.as_str()).unwrap_or("");
    Ok((!secret.is_empty()).then(|| Credentials {
        username: user.to_string(),
        password: secret.to_string(),
    }))
}

/// The key docker files a registry under in `auths`.
pub fn auths_key(domain: &str) -> String {
    if domain == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        domain.to_string()
    }
}

/// Stores credentials as `docker login` does: through the credential
/// helper the config names for the registry (leaving an empty `auths`
/// entry, as docker does), else in `auths` (base64). Every other field
/// is kept; the file is written 0600 through a rename.
pub fn store(domain: &str, creds: &Credentials) -> Result<PathBuf, String> {
    let helper = read_config()?.and_then(|v| helper_for(&v, domain));
    if let Some(h) = &helper {
        let input = serde_json::json!({
            "ServerURL": server_url(domain),
            "Username": creds.username,
            "Secret": creds.password,
        });
        run_helper(h, "store", input.to_string().as_bytes())??;
    }
    edit(|auths| {
        let entry = match &helper {
            Some(_) => serde_json::json!({}),
            None => {
                let auth = base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", creds.username, creds.password));
                serde_json::json!({ "auth": auth })
            }
        };
        auths.insert(auths_key(domain), entry);
    })
}

/// Removes a registry's credentials: from its credential helper, if the
/// config names one, and from `auths`; true when there were any.
pub fn erase(domain: &str) -> Result<bool, String> {
    let mut removed = false;
    if let Some(h) = read_config()?.and_then(|v| helper_for(&v, domain)) {
        // A helper that has nothing for the registry fails; that is
        // "not logged in", not an error.
        removed |= run_helper(&h, "erase", server_url(domain).as_bytes())?.is_ok();
    }
    edit(|auths| {
        for k in keys_for(domain) {
            removed |= auths.remove(&k).is_some();
        }
    })?;
    Ok(removed)
}

/// The docker config, if there is one.
fn read_config() -> Result<Option<serde_json::Value>, String> {
    let Some(path) = config_path() else {
        return Ok(None);
    };
    match crate::snapshot::read_small(&path, 4 << 20) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| format!("{} is not valid JSON: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn edit(
    f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> Result<PathBuf, String> {
    let path = config_path().ok_or("neither DOCKER_CONFIG nor HOME is set")?;
    let mut v = read_config()?.unwrap_or_else(|| serde_json::json!({}));
    let obj = v
        .as_object_mut()
        .ok_or_else(|| format!("{} is not a JSON object", path.display()))?;
    let auths = obj
        .entry("auths")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()
        .ok_or_else(|| format!("{}: auths is not an object", path.display()))?;
    f(auths);
    let dir = path
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".config.json.")
        .tempfile_in(&dir)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let text = serde_json::to_vec_pretty(&v).map_err(|e| e.to_string())?;
    std::io::Write::write_all(&mut tmp, &text)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    tmp.persist(&path)
        .map_err(|e| format!("cannot write {}: {}", path.display(), e.error))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auths_entries() {
        let e = serde_json::json!({"auth": "YWxpY2U6czNjcjp0"});
        assert_eq!(
            from_entry(&e).expect("ok"),
            Some(Credentials {
                username: "alice".into(),
                password: "s3cr:t".into()
            })
        );
        let e = serde_json::json!({"username": "u", "password": "p"});
        assert_eq!(
            from_entry(&e).expect("ok").map(|c| c.username),
            Some("u".to_string())
        );
        assert!(from_entry(&serde_json::json!({"auth": "!!"})).is_err());
        assert_eq!(
            format!(
                "{:?}",
                Credentials {
                    username: "a".into(),
                    password: "secret".into()
                }
            ),
            "Credentials(a, ***)"
        );
    }
}
