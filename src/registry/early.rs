//! Pushing layers while the build goes on: with `--push`, each layer of
//! the final image that a step makes is uploaded in the background at
//! once, so the upload of a big COPY overlaps the steps after it. This is
//! best effort: the push at the end checks every blob again (a HEAD) and
//! uploads whatever is missing, and reports the errors.

use super::{push_blobs, Client, Pushed, Reference};
use crate::store::Store;
use std::collections::BTreeMap;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// What the early uploads did, by tag, then by blob digest; and the
/// first failure per tag (after it, that tag gets no more early uploads:
/// the push at the end reports it without trying again).
#[derive(Default)]
pub struct Done {
    pub pushed: BTreeMap<String, BTreeMap<String, Pushed>>,
    pub failed: BTreeMap<String, anyhow::Error>,
}

/// A background uploader of blobs to the repositories of some tags.
pub struct EarlyPush {
    tx: Option<mpsc::Sender<String>>,
    handle: Option<JoinHandle<Done>>,
}

impl EarlyPush {
    /// Starts the uploader for `tags` (those that do not parse are left to
    /// the final push to report).
    pub fn start(tags: &[String], store: Store) -> EarlyPush {
        let (tx, rx) = mpsc::channel::<String>();
        let tags: Vec<String> = tags.to_vec();
        let handle = std::thread::spawn(move || {
            let mut clients: Vec<(String, Client)> = tags
                .into_iter()
                .filter_map(|t| {
                    let r = Reference::parse(&t).ok()?;
                    Some((t, Client::new(r).ok()?))
                })
                .collect();
            let mut done = Done::default();
            for digest in rx {
                for (tag, c) in &mut clients {
                    if done.failed.contains_key(tag.as_str()) {
                        continue;
                    }
                    match push_blobs(c, std::slice::from_ref(&digest), &store) {
                        Ok(p) => {
                            if let Some(p) = p.first() {
                                // The first push of a digest says what
                                // happened (a layer two platforms share
                                // "exists" the second time).
                                done.pushed
                                    .entry(tag.clone())
                                    .or_default()
                                    .entry(digest.clone())
                                    .or_insert(*p);
                            }
                        }
                        Err(e) => {
                            done.failed.insert(tag.clone(), e);
                        }
                    }
                }
            }
            done
        });
        EarlyPush {
            tx: Some(tx),
            handle: Some(handle),
        }
    }

    /// A function that queues a blob for upload.
    pub fn queue(&self) -> impl Fn(&str) + Send + Sync + 'static {
        let tx = self.tx.clone();
        move |digest: &str| {
            if let Some(tx) = &tx {
                let _ = tx.send(digest.to_string());
            }
        }
    }

    /// Waits for the queued uploads to end; says what they did.
    pub fn finish(mut self) -> Done {
        self.tx = None;
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}
