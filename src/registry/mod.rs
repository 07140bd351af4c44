//! The registry client: references as Docker normalizes them, and pulls
//! per the OCI distribution spec (manifest negotiation, platform
//! selection, blobs streamed into the content store and verified).
//!
//! Anonymous access, basic auth and bearer tokens from the registry's
//! challenge are supported, with credentials found as the docker CLI finds
//! them ([`auth`]); pushes and retries come with the rest of the registry
//! issue. This module knows nothing of Dockerfiles or snapshots.

pub mod auth;

use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};
use std::io::{Read, Write};

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

    /// The registry's base URL. Loopback registries speak plain HTTP, as
    /// Docker treats them as insecure by default; everything else HTTPS.
    pub fn base_url(&self) -> String {
        let host = if self.domain == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.domain
        };
        let h = if host.starts_with('[') {
            host.split(']').next().map_or(host, |h| &h[1..])
        } else {
            host.split(':').next().unwrap_or(host)
        };
        // As Docker: loopback registries (localhost, 127.0.0.0/8, ::1) are
        // insecure by default.
        let plain = h == "localhost" || h.starts_with("127.") || h == "::1";
        format!("{}://{host}", if plain { "http" } else { "https" })
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

/// A client for one repository.
pub struct Client {
    http: reqwest::blocking::Client,
    reference: Reference,
    token: Option<String>,
    /// Send basic auth (the registry asked for it).
    basic: bool,
    creds: Option<auth::Credentials>,
}

impl Client {
    pub fn new(reference: Reference) -> Result<Client> {
        let mut builder = reqwest::blocking::Client::builder()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(30));
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
        let http = builder.build().context("cannot start the HTTP client")?;
        let creds = auth::lookup(&reference.domain).map_err(|e| anyhow!(e))?;
        Ok(Client {
            http,
            reference,
            token: None,
            basic: false,
            creds,
        })
    }

    fn get(&mut self, url: &str, accept: Option<&str>) -> Result<reqwest::blocking::Response> {
        let headers: Vec<(&str, String)> = accept
            .map(|a| vec![("Accept", a.to_string())])
            .unwrap_or_default();
        self.request(reqwest::Method::GET, url, &headers, None, &[200])
    }

    fn authorize(
        &self,
        req: reqwest::blocking::RequestBuilder,
    ) -> reqwest::blocking::RequestBuilder {
        if let Some(t) = &self.token {
            req.bearer_auth(t)
        } else if let (true, Some(c)) = (self.basic, &self.creds) {
            req.basic_auth(&c.username, Some(&c.password))
        } else {
            req
        }
    }

    /// Sends a request whose body (if any) can be sent twice, answering
    /// one 401 challenge (basic auth, or a bearer token for the scope the
    /// registry names). Statuses other than `ok` are errors naming the URL.
    fn request(
        &mut self,
        method: reqwest::Method,
        url: &str,
        headers: &[(&str, String)],
        body: Option<&[u8]>,
        ok: &[u16],
    ) -> Result<reqwest::blocking::Response> {
        for attempt in 0..2 {
            let mut req = self.http.request(method.clone(), url);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            if let Some(b) = body {
                req = req.body(b.to_vec());
            }
            let resp = send_with_retries(self.authorize(req), url)?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                let challenge = resp
                    .headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                if challenge.starts_with("Basic") {
                    if self.creds.is_none() {
                        bail!(
                            "{url}: the registry asks for credentials (HTTP 401) and none are configured for {} \
                             (docker login, or auths in $DOCKER_CONFIG/config.json)",
                            self.reference.domain
                        );
                    }
                    self.basic = true;
                } else {
                    self.token = Some(self.fetch_token(&challenge)?);
                }
                continue;
            }
            let status = resp.status();
            if status == reqwest::StatusCode::UNAUTHORIZED {
                bail!("{url}: the registry refused the credentials (HTTP 401)");
            }
            if !ok.contains(&status.as_u16()) {
                let mut text = String::new();
                let _ = resp.take(2048).read_to_string(&mut text);
                bail!(
                    "{url}: the registry answered HTTP {status}: {}",
                    text.trim()
                );
            }
            return Ok(resp);
        }
        bail!("{url}: the registry refused the credentials (HTTP 401)")
    }

    /// Puts a blob from the store into the repository, unless it is there
    /// already: mounted from another repository of the same registry when
    /// kiln pulled it from there, else uploaded in one streamed request.
    pub fn push_blob(&mut self, digest: &str, store: &Store) -> Result<Pushed> {
        let base = format!(
            "{}/v2/{}",
            self.reference.base_url(),
            self.reference.repository
        );
        let head = format!("{base}/blobs/{digest}");
        let exists = self.request(reqwest::Method::HEAD, &head, &[], None, &[200, 404])?;
        if exists.status() == reqwest::StatusCode::OK {
            return Ok(Pushed::Exists);
        }
        let from = store.source(digest).and_then(|s| {
            let (domain, repo) = s.split_once('/')?;
            (domain == self.reference.domain && repo != self.reference.repository)
                .then(|| repo.to_string())
        });
        let start_url = match &from {
            Some(repo) => format!("{base}/blobs/uploads/?mount={digest}&from={repo}"),
            None => format!("{base}/blobs/uploads/"),
        };
        let start = self.request(
            reqwest::Method::POST,
            &start_url,
            &[("Content-Length", "0".to_string())],
            None,
            &[201, 202],
        )?;
        if start.status() == reqwest::StatusCode::CREATED {
            return Ok(Pushed::Mounted);
        }
        // 202: no mount (declined or not asked); upload where it says.
        let location = start
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| anyhow!("{base}: the upload has no Location"))?
            .to_string();
        let mut url = if location.starts_with("http://") || location.starts_with("https://") {
            location
        } else {
            format!("{}{location}", self.reference.base_url())
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={digest}"));
        let path = store.blob_path(digest)?;
        let file =
            std::fs::File::open(&path).with_context(|| format!("cannot open blob {digest}"))?;
        let len = file
            .metadata()
            .with_context(|| format!("cannot read blob {digest}"))?
            .len();
        let req = self
            .http
            .put(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::blocking::Body::sized(file, len));
        // Credentials go only to the registry itself, never to another
        // host (or scheme) an upload Location points at.
        let same_origin = url.starts_with(&format!("{}/", self.reference.base_url()));
        let req = if same_origin {
            self.authorize(req)
        } else {
            req
        };
        let resp = req
            .send()
            .map_err(|e| e.without_url())
            .with_context(|| format!("cannot upload blob {digest}"))?;
        if resp.status() != reqwest::StatusCode::CREATED {
            bail!(
                "uploading blob {digest}: the registry answered HTTP {}",
                resp.status()
            );
        }
        Ok(Pushed::Uploaded)
    }

    /// Puts a manifest under `tag`; returns the digest the registry
    /// reports (checked against the bytes' own).
    pub fn push_manifest(&mut self, tag: &str, media_type: &str, bytes: &[u8]) -> Result<String> {
        let url = format!(
            "{}/v2/{}/manifests/{tag}",
            self.reference.base_url(),
            self.reference.repository
        );
        let resp = self.request(
            reqwest::Method::PUT,
            &url,
            &[("Content-Type", media_type.to_string())],
            Some(bytes),
            &[201],
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

    /// Anonymous bearer token for a `Bearer realm=...,service=...,scope=...`
    /// challenge.
    fn fetch_token(&self, challenge: &str) -> Result<String> {
        let Some(params) = challenge.strip_prefix("Bearer ") else {
            bail!(
                "{}: the registry answered HTTP 401 with an authentication scheme kiln does not know: {challenge:?}",
                self.reference
            );
        };
        let mut realm = None;
        let mut query = Vec::new();
        for part in split_params(params) {
            let Some((k, v)) = part.split_once('=') else {
                continue;
            };
            let v = v.trim_matches('"').to_string();
            match k.trim() {
                "realm" => realm = Some(v),
                k => query.push((k.to_string(), v)),
            }
        }
        let realm =
            realm.ok_or_else(|| anyhow!("the registry's challenge has no realm: {challenge}"))?;
        if !query.iter().any(|(k, _)| k == "scope") {
            query.push((
                "scope".into(),
                format!("repository:{}:pull,push", self.reference.repository),
            ));
        }
        let mut req = self.http.get(&realm).query(&query);
        // A password travels to the token service only over HTTPS (or to
        // a loopback registry's own plain-HTTP service).
        let safe =
            realm.starts_with("https://") || self.reference.base_url().starts_with("http://");
        if let (Some(c), true) = (&self.creds, safe) {
            req = req.basic_auth(&c.username, Some(&c.password));
        }
        let resp = req
            .send()
            .with_context(|| format!("cannot reach the token service {realm}"))?;
        if !resp.status().is_success() {
            bail!("the token service {realm} answered HTTP {}", resp.status());
        }
        let mut body = Vec::new();
        resp.take(MAX_MANIFEST)
            .read_to_end(&mut body)
            .context("cannot read the token")?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).context("the token service sent no JSON")?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the token service sent no token"))
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
        let url = format!(
            "{}/v2/{}/manifests/{object}",
            self.reference.base_url(),
            self.reference.repository
        );
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
        let mut c = Client::new(reference)?;
        c.creds = Some(creds);
        let url = format!("{}/v2/", c.reference.base_url());
        c.request(reqwest::Method::GET, &url, &[], None, &[200])?;
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
    /// nothing when the store has it.
    pub fn blob(&mut self, digest: &str, size: u64, store: &Store) -> Result<std::path::PathBuf> {
        if store.has(digest) {
            return Ok(store.blob_path(digest)?);
        }
        let url = format!(
            "{}/v2/{}/blobs/{digest}",
            self.reference.base_url(),
            self.reference.repository
        );
        // A body cut short is tried again; a wrong digest is not (the
        // registry would only lie again).
        let mut attempt = 0;
        let (tmp, mut inner, actual, got) = loop {
            let mut resp = self.get(&url, None)?;
            let tmp = store.temp_file()?;
            let file = tmp.reopen().context("cannot open a temporary file")?;
            let mut w = crate::layer::compress::HashingWriter::new(std::io::BufWriter::new(file));
            match std::io::copy(&mut (&mut resp).take(size.saturating_add(1)), &mut w) {
                Ok(_) => {
                    let (inner, actual, got) = w.finish();
                    break (tmp, inner, actual, got);
                }
                Err(e) if attempt + 1 < ATTEMPTS => {
                    let _ = e;
                    pause(attempt);
                    attempt += 1;
                }
                Err(e) => return Err(e).with_context(|| format!("{url}: the download failed")),
            }
        };
        inner.flush().context("cannot write a blob")?;
        if got != size {
            bail!("{url}: blob {digest} is {got} bytes, the manifest says {size}");
        }
        if actual != digest {
            bail!("{url}: blob {digest} arrived with digest {actual}");
        }
        let path = store.commit(tmp, digest)?;
        let _ = store.set_source(
            digest,
            &format!("{}/{}", self.reference.domain, self.reference.repository),
        );
        Ok(path)
    }
}

/// Attempts per request: connection failures, timeouts, HTTP 429 and 5xx
/// are tried again after a pause (0.2 s, then 0.8 s).
const ATTEMPTS: u32 = 3;

fn pause(attempt: u32) {
    std::thread::sleep(std::time::Duration::from_millis(200 * 4u64.pow(attempt)));
}

/// Sends a request (whose body can be cloned), retrying transient failures.
fn send_with_retries(
    req: reqwest::blocking::RequestBuilder,
    url: &str,
) -> Result<reqwest::blocking::Response> {
    let mut last = None;
    for attempt in 0..ATTEMPTS {
        let Some(r) = req.try_clone() else {
            return req
                .send()
                .map_err(|e| e.without_url())
                .with_context(|| format!("cannot reach {url}"));
        };
        match r.send() {
            Ok(resp) => {
                let s = resp.status();
                let transient = s.is_server_error() || s == reqwest::StatusCode::TOO_MANY_REQUESTS;
                if !transient || attempt + 1 == ATTEMPTS {
                    return Ok(resp);
                }
                // A 429 says how long to wait; kiln waits up to 30 s.
                let wait = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if let Some(secs) = wait {
                    std::thread::sleep(std::time::Duration::from_secs(secs.min(30)));
                    continue;
                }
            }
            Err(e) => {
                let transient = e.is_connect() || e.is_timeout() || e.is_request();
                if !transient || attempt + 1 == ATTEMPTS {
                    return Err(anyhow::Error::new(e.without_url()))
                        .with_context(|| format!("cannot reach {url}"));
                }
                last = Some(e);
            }
        }
        pause(attempt);
    }
    Err(anyhow!(
        "cannot reach {url}: {}",
        last.map_or_else(String::new, |e| e.to_string())
    ))
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

/// Splits `a="x,y",b=z` at the commas outside quotes.
fn split_params(s: &str) -> Vec<&str> {
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
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("ghcr.io/o/x:2@{d}")).expect("ok");
        assert_eq!(r.object(), d);
        assert!(Reference::parse("Upper/case").is_err());
    }

    #[test]
    fn challenge_params() {
        assert_eq!(
            split_params(r#"realm="https://a/token",service="reg",scope="repository:x:pull,push""#),
            vec![
                r#"realm="https://a/token""#,
                r#"service="reg""#,
                r#"scope="repository:x:pull,push""#
            ]
        );
    }
}
