//! Bearer tokens: the registry's `WWW-Authenticate: Bearer` challenge, the
//! token service request, and a process-wide cache of tokens per scope, so
//! parallel downloads and uploads of one image share one token.

use super::auth::Credentials;
use anyhow::{anyhow, bail, Context as _, Result};
use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A parsed `Bearer realm=...,service=...,scope=...` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub service: Option<String>,
    /// Space-separated scopes, as the registry named them.
    pub scopes: Vec<String>,
}

impl Challenge {
    pub fn parse(header: &str) -> Result<Challenge> {
        let Some(params) = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
        else {
            bail!("an authentication scheme kiln does not know: {header:?}");
        };
        let (mut realm, mut service, mut scopes) = (None, None, Vec::new());
        for part in split_params(params) {
            let Some((k, v)) = part.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"').to_string();
            match k.trim() {
                "realm" => realm = Some(v),
                "service" => service = Some(v),
                "scope" => scopes.extend(v.split(' ').filter(|s| !s.is_empty()).map(String::from)),
                _ => {}
            }
        }
        let realm = realm.ok_or_else(|| anyhow!("the challenge has no realm: {header}"))?;
        Ok(Challenge {
            realm,
            service,
            scopes,
        })
    }
}

/// Scopes for a request: the challenge's, with `repo`'s actions widened
/// to `pull,push` when pushing (one token then serves the whole push, as
/// docker asks), plus extra ones (pull access to a repository a blob is
/// mounted from, which a registry's challenge does not name).
pub fn scopes_for(c: &Challenge, repo: &str, push: bool, extra: &[String]) -> Vec<String> {
    let own = format!("repository:{repo}:");
    let mut out: Vec<String> = c
        .scopes
        .iter()
        .map(|s| {
            if push && s.starts_with(&own) {
                format!("{own}pull,push")
            } else {
                s.clone()
            }
        })
        .collect();
    if out.is_empty() {
        out.push(format!("{own}{}", if push { "pull,push" } else { "pull" }));
    }
    for e in extra {
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    out
}

struct Cached {
    token: String,
    until: Instant,
}

/// Tokens by realm, service, scopes and user.
static CACHE: Mutex<Option<HashMap<String, Cached>>> = Mutex::new(None);

fn cache_key(c: &Challenge, scopes: &[String], creds: Option<&Credentials>) -> String {
    format!(
        "{}\n{}\n{}\n{}",
        c.realm,
        c.service.as_deref().unwrap_or(""),
        scopes.join(" "),
        creds.map_or("", |c| c.username.as_str())
    )
}

/// A token for `scopes`: a cached one unless it is `stale` (the one the
/// registry just refused) or expired, else a new one from the realm.
pub fn get(
    http: &reqwest::blocking::Client,
    c: &Challenge,
    scopes: &[String],
    creds: Option<&Credentials>,
    send_creds: bool,
    stale: Option<&str>,
) -> Result<String> {
    let key = cache_key(c, scopes, creds.filter(|_| send_creds));
    if let Ok(guard) = CACHE.lock() {
        if let Some(t) = guard.as_ref().and_then(|m| m.get(&key)) {
            if t.until > Instant::now() && Some(t.token.as_str()) != stale {
                return Ok(t.token.clone());
            }
        }
    }
    let (token, lifetime) = fetch(http, c, scopes, creds.filter(|_| send_creds))?;
    if let Ok(mut guard) = CACHE.lock() {
        guard.get_or_insert_with(HashMap::new).insert(
            key,
            Cached {
                token: token.clone(),
                until: Instant::now() + lifetime,
            },
        );
    }
    Ok(token)
}

/// Asks the token service; returns the token and how long to use it (the
/// `expires_in` it gives, 60 s by default as the spec says, less a margin).
fn fetch(
    http: &reqwest::blocking::Client,
    c: &Challenge,
    scopes: &[String],
    creds: Option<&Credentials>,
) -> Result<(String, Duration)> {
    let realm = &c.realm;
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(s) = &c.service {
        query.push(("service", s));
    }
    for s in scopes {
        query.push(("scope", s));
    }
    let mut req = http.get(realm).query(&query);
    if let Some(c) = creds {
        req = req.basic_auth(&c.username, Some(&c.password));
    }
    let resp = req
        .send()
        .map_err(|e| e.without_url())
        .with_context(|| format!("cannot reach the token service {realm}"))?;
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        bail!(
            "the token service {realm} refused {} (HTTP {status})",
            match creds {
                Some(c) => format!("the credentials of {}", c.username),
                None => "anonymous access".to_string(),
            }
        );
    }
    if !status.is_success() {
        bail!("the token service {realm} answered HTTP {status}");
    }
    let mut body = Vec::new();
    resp.take(1 << 20)
        .read_to_end(&mut body)
        .with_context(|| format!("cannot read the token from {realm}"))?;
    let v: serde_json::Value = serde_json::from_slice(&body)
        .with_context(|| format!("the token service {realm} sent no JSON"))?;
    let token = v
        .get("token")
        .or_else(|| v.get("access_token"))
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| anyhow!("the token service {realm} sent no token"))?;
    let secs = v
        .get("expires_in")
        .and_then(|e| e.as_u64())
        .unwrap_or(60)
        .clamp(1, 24 * 3600);
    // Renew a little early, so a token does not expire in flight.
    let lifetime = Duration::from_secs(secs).saturating_sub(Duration::from_secs(secs.min(30) / 3));
    Ok((token.to_string(), lifetime))
}

/// Splits `a="x,y",b=z` at the commas outside quotes.
pub fn split_params(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let c = Challenge::parse(
            r#"Bearer realm="https://a/token",service="reg",scope="repository:x:pull,push repository:y:pull""#,
        )
        .expect("ok");
        assert_eq!(c.realm, "https://a/token");
        assert_eq!(c.service.as_deref(), Some("reg"));
        assert_eq!(c.scopes, ["repository:x:pull,push", "repository:y:pull"]);
        assert!(Challenge::parse("Bearer service=x").is_err());
        assert!(Challenge::parse("Negotiate abc").is_err());
    }

    #[test]
    fn push_scopes_widen_and_mounts_add() {
        let c =
            Challenge::parse(r#"Bearer realm="r",service="s",scope="repository:team/app:pull""#)
                .expect("ok");
        assert_eq!(
            scopes_for(&c, "team/app", true, &["repository:team/base:pull".into()]),
            ["repository:team/app:pull,push", "repository:team/base:pull"]
        );
        assert_eq!(
            scopes_for(&c, "team/app", false, &[]),
            ["repository:team/app:pull"]
        );
        let bare = Challenge::parse(r#"Bearer realm="r""#).expect("ok");
        assert_eq!(
            scopes_for(&bare, "a/b", false, &[]),
            ["repository:a/b:pull"]
        );
    }

    #[test]
    fn quoted_commas_stay() {
        assert_eq!(
            split_params(r#"realm="https://a/token",scope="repository:x:pull,push""#),
            vec![
                r#"realm="https://a/token""#,
                r#"scope="repository:x:pull,push""#
            ]
        );
    }
}
