//! Blob uploads: existence check, cross-repository mount, then one
//! streamed `PATCH` and the closing `PUT ?digest=`. A failed transfer asks
//! the registry how much it kept (`GET` of the upload URL, its `Range`)
//! and goes on from there; a registry that forgot the upload gets a new
//! one. Nothing is buffered whole.

use super::{pause, Body, Client, Pushed, StatusError, ATTEMPTS};
use crate::progress::{emit, Action, Event};
use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};

/// An upload session: where the next bytes go, and how many the registry
/// has.
struct Session {
    location: String,
    offset: u64,
}

impl Client {
    /// Puts a blob from the store into the repository, unless it is there
    /// already: mounted from another repository of the same registry when
    /// kiln pulled it from there, else uploaded.
    pub fn push_blob(&mut self, digest: &str, store: &Store) -> Result<Pushed> {
        self.push_blob_inner(digest, store)
            .with_context(|| format!("pushing blob {digest} to {}", self.reference.domain))
    }

    fn push_blob_inner(&mut self, digest: &str, store: &Store) -> Result<Pushed> {
        self.push = true;
        let path = store.blob_path(digest)?;
        let total = std::fs::metadata(&path)
            .with_context(|| format!("cannot read blob {digest}"))?
            .len();
        let head = format!("{}/blobs/{digest}", self.repo_url());
        let exists = self.send(
            reqwest::Method::HEAD,
            &head,
            &[],
            &Body::Empty,
            &[200, 404],
            ATTEMPTS,
        )?;
        if exists.status() == reqwest::StatusCode::OK {
            finished(digest, total, "exists");
            return Ok(Pushed::Exists);
        }
        let from = store.source(digest).and_then(|s| {
            let (domain, repo) = s.split_once('/')?;
            (domain == self.reference.domain && repo != self.reference.repository)
                .then(|| repo.to_string())
        });
        let started = match from.as_deref() {
            // A mount the registry (or its token service) refuses outright
            // is only a missed shortcut: upload instead.
            Some(repo) => self
                .start(digest, Some(repo))
                .or_else(|_| self.start(digest, None))?,
            None => self.start(digest, None)?,
        };
        let mut session = match started {
            Some(s) => s,
            None => {
                finished(digest, total, "mounted");
                return Ok(Pushed::Mounted);
            }
        };
        let mut last: Option<anyhow::Error> = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                pause(attempt - 1);
                session = match self.status(&session) {
                    Some(s) => s,
                    None => self.start(digest, None)?.ok_or_else(|| {
                        anyhow!("the registry mounted {digest} without being asked")
                    })?,
                };
            }
            match self.transfer(&session, &path, digest, total) {
                Ok(()) => {
                    finished(digest, total, "done");
                    return Ok(Pushed::Uploaded);
                }
                Err(e) if fatal(&e) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("the upload failed")))
            .with_context(|| format!("the upload failed {ATTEMPTS} times"))
    }

    /// Starts an upload (asking to mount from `from` when given); `None`
    /// when the registry mounted the blob.
    fn start(&mut self, digest: &str, from: Option<&str>) -> Result<Option<Session>> {
        let base = self.repo_url();
        let url = match from {
            Some(repo) => {
                self.extra_scopes = vec![format!("repository:{repo}:pull")];
                format!("{base}/blobs/uploads/?mount={digest}&from={repo}")
            }
            None => format!("{base}/blobs/uploads/"),
        };
        let resp = self.send(
            reqwest::Method::POST,
            &url,
            &[("Content-Length", "0".to_string())],
            &Body::Empty,
            &[201, 202],
            ATTEMPTS,
        );
        self.extra_scopes.clear();
        let resp = resp?;
        if resp.status() == reqwest::StatusCode::CREATED {
            return Ok(None);
        }
        // 202: no mount (declined or not asked); upload where it says.
        Ok(Some(Session {
            location: self.location(&resp, &url)?,
            offset: 0,
        }))
    }

    /// The blob's bytes from the session's offset in one streamed PATCH,
    /// then the PUT that names the digest.
    fn transfer(
        &mut self,
        s: &Session,
        path: &std::path::Path,
        digest: &str,
        total: u64,
    ) -> Result<()> {
        let mut location = s.location.clone();
        if s.offset < total {
            let resp = self.send(
                reqwest::Method::PATCH,
                &location,
                &[
                    ("Content-Type", "application/octet-stream".to_string()),
                    (
                        "Content-Range",
                        format!("{}-{}", s.offset, total.saturating_sub(1)),
                    ),
                ],
                &Body::Blob {
                    path,
                    digest,
                    offset: s.offset,
                    total,
                },
                &[202, 204],
                1,
            )?;
            location = self.location(&resp, &location)?;
        }
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={digest}");
        self.send(
            reqwest::Method::PUT,
            &url,
            &[("Content-Length", "0".to_string())],
            &Body::Empty,
            &[201, 204],
            1,
        )?;
        Ok(())
    }

    /// Where an interrupted upload stands (`GET` of its URL answers 204
    /// with `Range: 0-<last byte>`); `None` when the registry no longer
    /// knows it.
    fn status(&mut self, s: &Session) -> Option<Session> {
        let resp = self
            .send(
                reqwest::Method::GET,
                &s.location,
                &[],
                &Body::Empty,
                &[204],
                ATTEMPTS,
            )
            .ok()?;
        let range = resp.headers().get(reqwest::header::RANGE)?.to_str().ok()?;
        let end: u64 = range
            .trim()
            .trim_start_matches("bytes=")
            .split_once('-')?
            .1
            .parse()
            .ok()?;
        // `0-0` means nothing or one byte; starting again is the only
        // safe reading.
        if end == 0 {
            return None;
        }
        let location = self.location(&resp, &s.location).ok()?;
        Some(Session {
            location,
            offset: end + 1,
        })
    }

    /// The absolute URL of a response's `Location` (relative ones are on
    /// the registry).
    fn location(&self, resp: &reqwest::blocking::Response, url: &str) -> Result<String> {
        let loc = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| anyhow!("{url}: the registry's answer has no Location"))?;
        Ok(
            if loc.starts_with("http://") || loc.starts_with("https://") {
                loc.to_string()
            } else if loc.starts_with('/') {
                format!("{}{loc}", self.base)
            } else {
                bail!("{url}: the registry's Location {loc:?} is not a URL or a path")
            },
        )
    }
}

/// Failures another attempt cannot mend: the registry refuses (401, 403),
/// or does not know the repository or the request (404, 405), or the blob
/// is too big (413).
fn fatal(e: &anyhow::Error) -> bool {
    e.downcast_ref::<StatusError>()
        .is_some_and(|s| matches!(s.status, 401 | 403 | 405 | 413))
}

fn finished(digest: &str, total: u64, how: &str) {
    emit(&Event::Finished {
        action: Action::Push,
        id: digest,
        total,
        how,
    });
}

/// Pushes blobs: the first one alone (so that credentials and a push token
/// are in hand), the rest up to 4 at a time, each on a clone of `client`.
/// Returns what each took, in order.
pub fn push_blobs(client: &mut Client, digests: &[String], store: &Store) -> Result<Vec<Pushed>> {
    let Some((first, rest)) = digests.split_first() else {
        return Ok(Vec::new());
    };
    let mut out = vec![client.push_blob(first, store)?];
    let shared: &Client = client;
    for r in super::parallel(rest, 4, |d| shared.clone().push_blob(d, store)) {
        out.push(r?);
    }
    Ok(out)
}
