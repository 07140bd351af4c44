//! The registry client, per the OCI distribution spec: references as
//! Docker normalizes them; manifests and indexes negotiated; blobs
//! streamed into the content store and verified; uploads (HEAD check,
//! cross-repository mount, resumable PATCH, closing PUT) in [`upload`].
//!
//! Every request goes through [`Client::send`]: 401 challenges answered
//! with basic auth or bearer tokens ([`token`], cached per scope),
//! credentials found as the docker CLI finds them ([`auth`]), transient
//! failures retried with backoff, and any other status a [`StatusError`]
//! naming the URL, the status and the registry's error body. This module
//! knows nothing of Dockerfiles or snapshots.

pub mod auth;
pub mod early;
mod token;
mod upload;
pub use early::EarlyPush;
pub use upload::push_blobs;

use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};
use std::io::{Read, Seek, Write};
use std::sync::OnceLock;

/// A normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io`, `ghcr.io`, `127.0.0.1:5000`.
    pub domain: String,
    /// `library/busybox`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalizes as Docker does: `busybox` is
    /// `docker.io/library/busybox:latest`.
    pub fn parse(r: &str) -> Result<Reference, String> {
        crate::image::reference::validate(r)?;
        let (name_tag, digest) = match r.split_once('@') {
            Some((n, d)) => (n, Some(d.to_string())),
            None => (r, None),
        };
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (
                &name_tag[..last_slash + i],
                Some(name_tag[last_slash + i + 1..].to_string()),
            ),
            None => (name_tag, None),
        };
        let first = name.split('/').next().unwrap_or(name);
        let has_domain = name.contains('/')
            && (first.contains('.') || first.contains(':') || first == "localhost");
        let (domain, repo) = if has_domain {
            let (d, p) = name.split_once('/').unwrap_or((name, ""));
            (
                if d == "index.docker.io" {
                    "docker.io"
                } else {
                    d
                },
                p.to_string(),
            )
        } else {
            ("docker.io", name.to_string())
        };
        let repository = if domain == "docker.io" && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo
        };
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(Reference {
            domain: domain.to_string(),
            repository,
            tag,
            digest,
        })
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn object(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// Loopback registries (localhost, 127.0.0.0/8, ::1), which Docker
    /// treats as insecure by default.
    pub fn is_loopback(&self) -> bool {
        let host = &self.domain;
        let h = if host.starts_with('[') {
            host.split(']').next().map_or(host.as_str(), |h| &h[1..])
        } else {
            host.split(':').next().unwrap_or(host)
        };
        h == "localhost"
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// The registry's base URL as kiln first tries it: plain HTTP for
    /// loopback registries, HTTPS for everything else.
    pub fn base_url(&self) -> String {
        let host = if self.domain == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.domain
        };
        let scheme = if self.is_loopback() { "http" } else { "https" };
        format!("{scheme}://{host}")
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.domain, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// What pushing a blob took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Exists,
    Mounted,
    Uploaded,
}

/// Media types a pull accepts for manifests.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or index read.
const MAX_MANIFEST: u64 = 4 << 20;

/// Registries named by `--insecure-registry` or kiln's config.
static INSECURE: OnceLock<Vec<String>> = OnceLock::new();

/// Sets the registries that may be reached over plain HTTP, or over HTTPS
/// without checking the certificate (the first call wins).
pub fn set_insecure(registries: Vec<String>) {
    let _ = INSECURE.set(registries);
}

fn is_insecure(domain: &str) -> bool {
    INSECURE
        .get()
        .is_some_and(|l| l.iter().any(|r| r == domain))
}

/// The insecure registries in kiln's config file
/// (`$KILN_CONFIG`, else `$XDG_CONFIG_HOME/kiln/config.json`, else
/// `~/.config/kiln/config.json`), named as in docker's `daemon.json`:
/// `{"insecure-registries": ["registry.local:5000"]}`.
pub fn configured_insecure() -> Result<Vec<String>> {
    let explicit = std::env::var_os("KILN_CONFIG").filter(|p| !p.is_empty());
    let path = match &explicit {
        Some(p) => std::path::PathBuf::from(p),
        None => match std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
            Some(d) => std::path::PathBuf::from(d).join("kiln/config.json"),
            None => match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
                Some(h) => std::path::PathBuf::from(h).join(".config/kiln/config.json"),
                None => return Ok(Vec::new()),
            },
        },
    };
    let bytes = match crate::snapshot::read_small(&path, 1 << 20) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        // A default path in a home kiln may not read (sudo -u keeps HOME):
        // there is no config for this user.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && explicit.is_none() => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(rename = "insecure-registries", default)]
        insecure: Vec<String>,
    }
    let c: Config = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not valid", path.display()))?;
    Ok(c.insecure)
}

/// An HTTP status the registry answered, with its error body.
#[derive(Debug)]
pub struct StatusError {
    pub url: String,
    pub status: u16,
    pub body: String,
}

impl std::fmt::Display for StatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reason = reqwest::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        write!(
            f,
            "{}: the registry answered HTTP {} {reason}",
            self.url, self.status
        )?;
        if !self.body.is_empty() {
            write!(f, ": {}", self.body)?;
        }
        Ok(())
    }
}

impl std::error::Error for StatusError {}

fn login_hint(host: &str) -> String {
    format!(
        "the registry wants credentials that allow this: run `kiln login {host}` \
         (kiln reads ~/.docker/config.json and its credential helpers, as docker does)"
    )
}

/// The network failed on the way to a registry (after the retries).
#[derive(Debug, thiserror::Error)]
#[error("cannot reach {url}")]
pub struct Unreachable {
    pub url: String,
    /// The registry's name, when it seems to answer TLS with plain HTTP.
    pub plain_http: Option<String>,
    #[source]
    pub source: reqwest::Error,
}

/// A registry sent something other than what it promised (a blob whose
/// digest is not the one asked for).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Lied(pub String);

/// A registry wants credentials kiln lacks, or refused those it sent.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {what} (HTTP 401)")]
pub struct AuthError {
    pub url: String,
    pub domain: String,
    pub what: String,
}

impl AuthError {
    fn new(url: &str, domain: &str, what: impl Into<String>) -> AuthError {
        AuthError {
            url: url.to_string(),
            domain: domain.to_string(),
            what: what.into(),
        }
    }
}

/// Whether a failure came from a registry: an HTTP status it answered, or
/// the network on the way to it.
pub fn is_registry_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<StatusError>() || c.is::<AuthError>() || c.is::<Lied>() || c.is::<reqwest::Error>()
    })
}

/// What to do about a registry's answer, for the common cases.
pub fn hint(e: &anyhow::Error) -> Option<String> {
    if let Some(a) = e.chain().find_map(|c| c.downcast_ref::<AuthError>()) {
        return Some(login_hint(&a.domain));
    }
    if let Some(d) = e
        .chain()
        .find_map(|c| c.downcast_ref::<Unreachable>())
        .and_then(|u| u.plain_http.as_ref())
    {
        return Some(format!(
            "{d} answers HTTPS with plain HTTP: if it is a plain-HTTP registry, pass --insecure-registry {d}"
        ));
    }
    let s = e.chain().find_map(|c| c.downcast_ref::<StatusError>())?;
    let rest = s.url.split("://").nth(1).unwrap_or(&s.url);
    let host = rest.split('/').next().unwrap_or(rest);
    let repo = rest
        .split_once("/v2/")
        .map(|(_, p)| p.split("/manifests/").next().unwrap_or(p))
        .map(|p| p.split("/blobs/").next().unwrap_or(p))
        .unwrap_or("");
    match s.status {
        401 | 403 => Some(login_hint(host)),
        404 if s.url.contains("/manifests/") => Some(format!(
            "{host} has no such image or tag: check the name and tag \
             (`skopeo list-tags docker://{host}/{repo}` lists its tags)"
        )),
        429 => Some("the registry limits requests: wait and retry, or log in".into()),
        _ => None,
    }
}

/// A request body that can be sent again.
pub(crate) enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// Blob `digest`'s bytes from `offset` to its end (`total`), read from
    /// `path` and counted as push progress.
    Blob {
        path: &'a std::path::Path,
        digest: &'a str,
        offset: u64,
        total: u64,
    },
}

/// A client for one repository. Clones share the HTTP connections and
/// the credentials found so far.
#[derive(Clone)]
pub struct Client {
    http: reqwest::blocking::Client,
    reference: Reference,
    /// `http://host` or `https://host`.
    base: String,
    /// Insecure: HTTPS without verification, and plain HTTP; whichever
    /// is tried first (HTTP for loopback, HTTPS for named registries),
    /// the other is tried once when the registry does not speak it.
    insecure: bool,
    /// The scheme was switched already.
    switched: bool,
    token: Option<String>,
    /// Send basic auth (the registry asked for it).
    basic: bool,
    creds: Option<auth::Credentials>,
    /// Ask tokens for push access too.
    push: bool,
    /// Scopes a token needs beyond the challenge's (a mount's source).
    extra_scopes: Vec<String>,
}

impl Client {
    /// A client with the credentials the docker config has for the
    /// registry.
    pub fn new(reference: Reference) -> Result<Client> {
        let creds = auth::lookup(&reference.domain).map_err(|e| anyhow!(e))?;
        Client::with_credentials(reference, creds)
    }

    fn with_credentials(reference: Reference, creds: Option<auth::Credentials>) -> Result<Client> {
        let insecure = is_insecure(&reference.domain) || reference.is_loopback();
        let mut builder = reqwest::blocking::Client::builder()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(30))
            // No limit on a whole request: a big upload takes what it
            // takes. A stalled upload ends when the peer stops taking
            // bytes (TCP_USER_TIMEOUT); GET and HEAD set their own limit,
            // which also bounds each read of a download.
            .timeout(None)
            .tcp_keepalive(std::time::Duration::from_secs(30))
            .tcp_user_timeout(std::time::Duration::from_secs(60))
            .danger_accept_invalid_certs(insecure);
        // A private CA, as OpenSSL-based tools take it.
        if let Some(path) = std::env::var_os("SSL_CERT_FILE").filter(|p| !p.is_empty()) {
            let pem = crate::snapshot::read_small(std::path::Path::new(&path), 16 << 20)
                .with_context(|| format!("cannot read SSL_CERT_FILE {}", path.to_string_lossy()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .unwrap_or_default();
            if certs.is_empty() {
                bail!(
                    "SSL_CERT_FILE {} holds no PEM certificates",
                    path.to_string_lossy()
                );
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        // HTTP_PROXY, HTTPS_PROXY and NO_PROXY apply (reqwest reads them),
        // but never to loopback registries: Go's clients (docker, skopeo)
        // go straight there too.
        if reference.is_loopback() {
            builder = builder.no_proxy();
        }
        let http = builder.build().context("cannot start the HTTP client")?;
        let base = reference.base_url();
        Ok(Client {
            http,
            reference,
            base,
            insecure,
            switched: false,
            token: None,
            basic: false,
            creds,
            push: false,
            extra_scopes: Vec::new(),
        })
    }

    /// `https://host/v2/<repository>`.
    fn repo_url(&self) -> String {
        format!("{}/v2/{}", self.base, self.reference.repository)
    }

    /// Adds credentials, but only for the registry itself: never for
    /// another host (or scheme) an upload Location or redirect names.
    fn authorize(
        &self,
        url: &str,
        req: reqwest::blocking::RequestBuilder,
    ) -> reqwest::blocking::RequestBuilder {
        if !url.starts_with(&format!("{}/", self.base)) {
            return req;
        }
        if let Some(t) = &self.token {
            req.bearer_auth(t)
        } else if let (true, Some(c)) = (self.basic, &self.creds) {
            req.basic_auth(&c.username, Some(&c.password))
        } else {
            req
        }
    }

    fn build(
        &self,
        method: &reqwest::Method,
        url: &str,
        headers: &[(&str, String)],
        body: &Body,
    ) -> Result<reqwest::blocking::RequestBuilder> {
        let mut req = self.http.request(method.clone(), url);
        // reqwest's timeout covers the whole response, body included: a
        // blob download gets an hour (dead peers end sooner, through TCP
        // keepalives), everything else a minute.
        let blob_get = method == reqwest::Method::GET && url.contains("/blobs/sha256:");
        if blob_get {
            req = req.timeout(BLOB_GET);
        } else if method == reqwest::Method::GET || method == reqwest::Method::HEAD {
            req = req.timeout(IDLE);
        }
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        req = match body {
            Body::Empty => req,
            Body::Bytes(b) => req.body(b.to_vec()),
            Body::Blob {
                path,
                digest,
                offset,
                total,
            } => {
                let mut f = std::fs::File::open(path)
                    .with_context(|| format!("cannot open blob {digest}"))?;
                f.seek(std::io::SeekFrom::Start(*offset))
                    .with_context(|| format!("cannot read blob {digest}"))?;
                let len = total.saturating_sub(*offset);
                let meter = Meter {
                    inner: f.take(len),
                    action: crate::progress::Action::Push,
                    digest: digest.to_string(),
                    done: *offset,
                    total: *total,
                };
                req.body(reqwest::blocking::Body::sized(meter, len))
            }
        };
        Ok(self.authorize(url, req))
    }

    /// Sends a request, answering the registry's 401 challenges (basic
    /// auth, or a bearer token for the scope it names; once more when a
    /// token has expired) and trying again up to `attempts` times after
    /// connection failures, timeouts, HTTP 429 and 5xx. A status outside
    /// `ok` is a [`StatusError`].
    pub(crate) fn send(
        &mut self,
        method: reqwest::Method,
        url: &str,
        headers: &[(&str, String)],
        body: &Body,
        ok: &[u16],
        attempts: u32,
    ) -> Result<reqwest::blocking::Response> {
        let mut url = url.to_string();
        let (mut attempt, mut reauth) = (0, 0);
        loop {
            let req = self.build(&method, &url, headers, body)?;
            let resp = match req.send() {
                Ok(r) => r,
                Err(e) => {
                    if self.insecure
                        && !self.switched
                        && e.is_connect()
                        && self.base.starts_with("https://")
                        && url.starts_with(&self.base)
                    {
                        // An insecure registry that does not speak TLS.
                        url = self.switch_scheme(&url);
                        continue;
                    }
                    attempt += 1;
                    let transient = (e.is_connect()
                        || e.is_timeout()
                        || e.is_request()
                        || e.is_body())
                        && !chain_mentions(&e, &["certificate", "dns error", "failed to lookup"]);
                    if !transient || attempt >= attempts {
                        let plain = chain_mentions(&e, &["InvalidContentType", "corrupt message"])
                            && url.starts_with("https://");
                        return Err(Unreachable {
                            url: url.clone(),
                            plain_http: plain.then(|| self.reference.domain.clone()),
                            source: e.without_url(),
                        }
                        .into());
                    }
                    pause(attempt - 1);
                    continue;
                }
            };
            let status = resp.status();
            if status == reqwest::StatusCode::BAD_REQUEST
                && self.insecure
                && !self.switched
                && self.base.starts_with("http://")
                && url.starts_with(&self.base)
            {
                // Go's TLS servers answer plain HTTP with a 400 that says
                // so (in a body, which a HEAD answer lacks: ask again).
                let mut text = String::new();
                let _ = resp.take(512).read_to_string(&mut text);
                let tls_only = text.contains("HTTPS server")
                    || (method == reqwest::Method::HEAD && self.speaks_only_tls());
                if tls_only {
                    url = self.switch_scheme(&url);
                    continue;
                }
                return Err(StatusError {
                    url,
                    status: status.as_u16(),
                    body: text.trim().to_string(),
                }
                .into());
            }
            if status == reqwest::StatusCode::UNAUTHORIZED && reauth < 2 {
                self.answer_challenge(&resp, reauth, &url)?;
                reauth += 1;
                continue;
            }
            if status == reqwest::StatusCode::UNAUTHORIZED {
                bail!("{url}: the registry refused the credentials (HTTP 401)");
            }
            let transient =
                status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
            if transient && attempt + 1 < attempts {
                // A 429 (or 503) may say how long to wait; kiln waits up
                // to 30 s.
                let wait = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                match wait {
                    Some(secs) => std::thread::sleep(std::time::Duration::from_secs(secs.min(30))),
                    None => pause(attempt),
                }
                attempt += 1;
                continue;
            }
            if !ok.contains(&status.as_u16()) {
                let mut text = String::new();
                let _ = resp.take(2048).read_to_string(&mut text);
                return Err(StatusError {
                    url,
                    status: status.as_u16(),
                    body: text.trim().to_string(),
                }
                .into());
            }
            return Ok(resp);
        }
    }

    /// Whether the registry answers a plain-HTTP `GET /v2/` with Go's
    /// "client sent an HTTP request to an HTTPS server".
    fn speaks_only_tls(&self) -> bool {
        let Ok(resp) = self
            .http
            .get(format!("{}/v2/", self.base))
            .timeout(IDLE)
            .send()
        else {
            return false;
        };
        let mut text = String::new();
        let _ = resp.take(512).read_to_string(&mut text);
        text.contains("HTTPS server")
    }

    /// Swaps HTTP and HTTPS for this registry (once); returns `url` in
    /// the other scheme.
    fn switch_scheme(&mut self, url: &str) -> String {
        self.switched = true;
        let (from, to) = if self.base.starts_with("https://") {
            ("https://", "http://")
        } else {
            ("http://", "https://")
        };
        self.base = self.base.replacen(from, to, 1);
        url.replacen(from, to, 1)
    }

    fn get(&mut self, url: &str, accept: Option<&str>) -> Result<reqwest::blocking::Response> {
        let headers: Vec<(&str, String)> = accept
            .map(|a| vec![("Accept", a.to_string())])
            .unwrap_or_default();
        self.send(
            reqwest::Method::GET,
            url,
            &headers,
            &Body::Empty,
            &[200],
            ATTEMPTS,
        )
    }

    /// Answers a 401: basic auth when the registry asks for it, else a
    /// bearer token (a new one when the registry refused the last).
    fn answer_challenge(
        &mut self,
        resp: &reqwest::blocking::Response,
        reauth: u32,
        url: &str,
    ) -> Result<()> {
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let domain = &self.reference.domain;
        if challenge.to_ascii_lowercase().starts_with("basic") {
            if self.creds.is_none() {
                return Err(AuthError::new(
                    url,
                    domain,
                    format!(
                        "the registry asks for credentials and none are configured for {domain}"
                    ),
                )
                .into());
            }
            if self.basic {
                return Err(
                    AuthError::new(url, domain, "the registry refused the credentials").into(),
                );
            }
            self.basic = true;
            return Ok(());
        }
        let c = token::Challenge::parse(&challenge)
            .with_context(|| format!("{url}: the registry answered HTTP 401 with"))?;
        let scopes = token::scopes_for(
            &c,
            &self.reference.repository,
            self.push,
            &self.extra_scopes,
        );
        // A password travels to the token service only over HTTPS (or to
        // a plain-HTTP registry's own plain-HTTP service).
        let send_creds = c.realm.starts_with("https://") || self.base.starts_with("http://");
        let stale = self.token.take();
        let t = token::get(
            &self.http,
            &c,
            &scopes,
            self.creds.as_ref(),
            send_creds,
            stale.as_deref(),
        )
        .with_context(|| format!("{url}: the registry asks for a token (HTTP 401)"))?;
        if reauth > 0 && stale.as_deref() == Some(t.as_str()) {
            return Err(AuthError::new(url, domain, "the registry refused the token").into());
        }
        if reauth > 0 && self.creds.is_none() {
            return Err(AuthError::new(
                url,
                domain,
                format!("the registry asks for credentials and none are configured for {domain}"),
            )
            .into());
        }
        self.token = Some(t);
        Ok(())
    }

    /// Puts a manifest under `tag` (or its digest); returns the digest
    /// the registry reports (checked against the bytes' own).
    pub fn push_manifest(&mut self, tag: &str, media_type: &str, bytes: &[u8]) -> Result<String> {
        self.push = true;
        let url = format!("{}/manifests/{tag}", self.repo_url());
        let resp = self.send(
            reqwest::Method::PUT,
            &url,
            &[("Content-Type", media_type.to_string())],
            &Body::Bytes(bytes),
            &[201],
            ATTEMPTS,
        )?;
        let digest = format!("sha256:{}", crate::layer::compress::sha256_hex(bytes));
        if let Some(d) = resp
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
        {
            if d != digest {
                bail!("{url}: the registry says the manifest is {d}, but it is {digest}");
            }
        }
        Ok(digest)
    }

    /// Fetches a manifest or index by tag or digest: its bytes, media type
    /// and digest (checked when asked for by digest).
    pub fn manifest(&mut self, object: &str) -> Result<(Vec<u8>, String, String)> {
        if object.contains(':') {
            crate::store::digest_hex(object).map_err(|_| {
                anyhow!(
                    "{}: only sha256 digests are supported, not {object}",
                    self.reference
                )
            })?;
        }
        let url = format!("{}/manifests/{object}", self.repo_url());
        let resp = self.get(&url, Some(ACCEPT))?;
        let media = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let mut bytes = Vec::new();
        resp.take(MAX_MANIFEST + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("{url}: the body was cut short"))?;
        if bytes.len() as u64 > MAX_MANIFEST {
            bail!("{url}: the manifest is larger than {MAX_MANIFEST} bytes");
        }
        let digest = format!("sha256:{}", crate::layer::compress::sha256_hex(&bytes));
        if object.starts_with("sha256:") && digest != object {
            bail!("{url}: the registry sent a manifest with digest {digest}");
        }
        // A registry that labels a manifest `application/json` (or not at
        // all): the document says what it is.
        let known = ACCEPT.split(',').any(|a| a.trim() == media);
        let media = if known { media } else { media_type_of(&bytes) };
        Ok((bytes, media, digest))
    }

    /// Checks that the registry accepts these credentials (`GET /v2/`,
    /// answering its challenge with them).
    pub fn check_login(reference: Reference, creds: auth::Credentials) -> Result<()> {
        let mut c = Client::with_credentials(reference, Some(creds))?;
        let url = format!("{}/v2/", c.base);
        c.send(
            reqwest::Method::GET,
            &url,
            &[],
            &Body::Empty,
            &[200],
            ATTEMPTS,
        )?;
        Ok(())
    }

    /// A manifest or index from the store when it is there (by digest, or
    /// by the digest the tag was last pulled as, unless `refresh`), else
    /// from the registry, then kept in the store: a second build needs no
    /// network, and an image pinned by digest is never fetched again.
    pub fn manifest_cached(
        &mut self,
        object: &str,
        store: &Store,
        refresh: bool,
    ) -> Result<(Vec<u8>, String, String)> {
        let name = format!(
            "{}/{}:{object}",
            self.reference.domain, self.reference.repository
        );
        let known = if object.starts_with("sha256:") {
            Some(object.to_string())
        } else if refresh {
            None
        } else {
            store.get_ref(&name)
        };
        if let Some(d) = known.filter(|d| store.has(d)) {
            let bytes = store.read(&d)?;
            let media = media_type_of(&bytes);
            return Ok((bytes, media, d));
        }
        let (bytes, media, digest) = self.manifest(object)?;
        store.put_bytes(&bytes)?;
        if !object.starts_with("sha256:") {
            store.set_ref(&name, &digest)?;
        }
        Ok((bytes, media, digest))
    }

    /// Streams a blob into the store, checking its digest and size; does
    /// nothing when the store has it. A body cut short is fetched again; a
    /// wrong digest is not (the registry would only lie again).
    pub fn blob(&mut self, digest: &str, size: u64, store: &Store) -> Result<std::path::PathBuf> {
        if store.has(digest) {
            return Ok(store.blob_path(digest)?);
        }
        // One download of a blob at a time (the builds of several
        // platforms often share a base's blobs, and so do concurrent
        // builds): whoever waited finds it in the store.
        let _lock = store.cache_lock(digest)?;
        if store.has(digest) {
            return Ok(store.blob_path(digest)?);
        }
        let url = format!("{}/blobs/{digest}", self.repo_url());
        let mut attempt = 0;
        let (tmp, mut inner, actual, got) = loop {
            let resp = self
                .get(&url, None)
                .with_context(|| format!("cannot download blob {digest}"))?;
            let tmp = store.temp_file()?;
            let file = tmp.reopen().context("cannot open a temporary file")?;
            let mut w = crate::layer::compress::HashingWriter::new(std::io::BufWriter::new(file));
            let mut meter = Meter {
                inner: resp.take(size.saturating_add(1)),
                action: crate::progress::Action::Pull,
                digest: digest.to_string(),
                done: 0,
                total: size,
            };
            match std::io::copy(&mut meter, &mut w) {
                Ok(_) => {
                    let (inner, actual, got) = w.finish();
                    break (tmp, inner, actual, got);
                }
                Err(e) if attempt + 1 < ATTEMPTS => {
                    let _ = e;
                    pause(attempt);
                    attempt += 1;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("{url}: the download of blob {digest} failed {ATTEMPTS} times")
                    })
                }
            }
        };
        inner.flush().context("cannot write a blob")?;
        if got != size {
            return Err(Lied(format!(
                "{url}: blob {digest} is {got} bytes, the manifest says {size}"
            ))
            .into());
        }
        if actual != digest {
            return Err(Lied(format!("{url}: blob {digest} arrived with digest {actual}")).into());
        }
        let path = store.commit(tmp, digest)?;
        crate::progress::emit(&crate::progress::Event::Finished {
            action: crate::progress::Action::Pull,
            id: digest,
            total: size,
            how: "done",
        });
        let _ = store.set_source(
            digest,
            &format!("{}/{}", self.reference.domain, self.reference.repository),
        );
        Ok(path)
    }
}

/// A reader that reports the bytes it passes as transfer progress.
struct Meter<R> {
    inner: R,
    action: crate::progress::Action,
    digest: String,
    done: u64,
    total: u64,
}

impl<R: Read> Read for Meter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        crate::progress::emit(&crate::progress::Event::Bytes {
            action: self.action,
            id: &self.digest,
            done: self.done,
            total: self.total,
        });
        Ok(n)
    }
}

/// Whether an error or one of its causes says one of `words`: rustls
/// and the resolver tell their failures apart only in words.
fn chain_mentions(e: &reqwest::Error, words: &[&str]) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        let text = s.to_string();
        if words.iter().any(|w| text.contains(w)) {
            return true;
        }
        source = s.source();
    }
    false
}

/// How long a GET (but a blob's) or HEAD may take, body included.
const IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a blob download may take.
const BLOB_GET: std::time::Duration = std::time::Duration::from_secs(3600);

/// Attempts per request: connection failures, timeouts, HTTP 429 and 5xx
/// are tried again after a pause (0.2 s, 0.8 s, then 3.2 s).
pub(crate) const ATTEMPTS: u32 = 4;

pub(crate) fn pause(attempt: u32) {
    std::thread::sleep(std::time::Duration::from_millis(
        200 * 4u64.pow(attempt.min(4)),
    ));
}

/// Runs `f` on every item, `workers` at a time; after a failure no new
/// item starts. Results come in the items' order (those never started
/// are errors saying so).
pub fn parallel<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Vec<Result<R>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Vec<Mutex<Option<Result<R>>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, items.len().max(1)) {
            scope.spawn(|| loop {
                if failed.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                if r.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                if let Ok(mut slot) = results[i].lock() {
                    *slot = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .ok()
                .flatten()
                .unwrap_or_else(|| Err(anyhow!("not started: an earlier transfer failed")))
        })
        .collect()
}

/// The media type a stored manifest declares (or implies: an index has
/// `manifests`).
fn media_type_of(bytes: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    match v.get("mediaType").and_then(|m| m.as_str()) {
        Some(m) => m.to_string(),
        None if v.get("manifests").is_some() => crate::image::OCI_INDEX.to_string(),
        None => crate::image::OCI_MANIFEST.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalize_as_docker() {
        let r = Reference::parse("busybox").expect("ok");
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.base_url(), "https://registry-1.docker.io");
        let r = Reference::parse("127.0.0.1:5000/a/b:1").expect("ok");
        assert_eq!(
            (r.domain.as_str(), r.repository.as_str(), r.object()),
            ("127.0.0.1:5000", "a/b", "1")
        );
        assert_eq!(r.base_url(), "http://127.0.0.1:5000");
        assert_eq!(
            Reference::parse("127.1.2.3:80/x").expect("ok").base_url(),
            "http://127.1.2.3:80"
        );
        assert_eq!(
            Reference::parse("example.com/x").expect("ok").base_url(),
            "https://example.com"
        );
        assert_eq!(
            Reference::parse("127.example.com/x")
                .expect("ok")
                .base_url(),
            "https://127.example.com"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("ghcr.io/o/x:2@{d}")).expect("ok");
        assert_eq!(r.object(), d);
        assert!(Reference::parse("Upper/case").is_err());
    }
}
