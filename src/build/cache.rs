//! Cache keys of steps, and why a step missed.
//!
//! A step's key is the sha256 of its named inputs, each name and value
//! length-prefixed, in name order, so no two different sets of inputs
//! encode alike:
//! - `parent`: the key of the step before it that made a layer, or the
//!   stage's base (a base image is keyed by its manifest digest, a base
//!   stage by its last key);
//! - `instruction`: the step with its arguments and flags expanded;
//! - `arg:NAME` and `env:NAME`: the build args and environment in scope
//!   that reach the step (proxy args never do, as in Docker);
//! - `src:N`: checksums of what COPY, ADD and bind mounts read: the files
//!   selected (after `.dockerignore`, from the context) with their names,
//!   contents, modes, owners and symlink targets, not times, whether they
//!   come from the context or another stage; an image's digest;
//! - `platform` and `format` (compression, SOURCE_DATE_EPOCH: they change
//!   the layer's bytes).
//!
//! Metadata instructions (ENV, LABEL, ...) make no layer and are not
//! cached: they are replayed on every build, costing nothing. What they
//! change reaches later steps through those steps' own inputs.
//!
//! Explanations: after each step that ran, the inputs are saved under the
//! step's place in the Dockerfile (`<store>/cache/explain/<slot>`), and
//! the per-file records of each source checksum under
//! `<store>/cache/files/<checksum>`. The next miss of that step compares
//! its inputs with them and says what changed, in one line.

use crate::store::Store;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fs;

/// The named inputs of a step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inputs {
    pub fields: BTreeMap<String, String>,
    /// What the parent is, in words: the instruction before, or
    /// `image REF@DIGEST`, or `stage NAME`.
    pub parent_text: String,
}

impl Inputs {
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.fields.insert(name.to_string(), value.into());
    }

    /// The key: length-prefixed names and values, in name order.
    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        let mut put = |b: &[u8]| {
            h.update((b.len() as u64).to_le_bytes());
            h.update(b);
        };
        put(b"kiln-cache");
        put(crate::store::index::VERSION.to_string().as_bytes());
        for (k, v) in &self.fields {
            put(k.as_bytes());
            put(v.as_bytes());
        }
        format!("sha256:{}", crate::layer::compress::hex(&h.finalize()))
    }
}

/// Where a step's explanation record lives: its place in the build (the
/// context, the Dockerfile, the stage, the step's number).
pub fn slot(context: &str, dockerfile: &str, stage: &str, step: usize) -> String {
    let mut h = Sha256::new();
    for part in [context, dockerfile, stage, &step.to_string()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    crate::layer::compress::hex(&h.finalize())
}

/// Saves what a step that ran was built from, for the next miss.
pub fn record(store: &Store, slot: &str, inputs: &Inputs) {
    let path = store.root().join("cache/explain").join(slot);
    if let Ok(bytes) = serde_json::to_vec(inputs) {
        let _ = store.write_small(&path, &bytes);
    }
}

/// Saves the per-file records of a source checksum (once).
pub fn record_files(store: &Store, checksum: &str, files: &[(String, String)]) {
    let Ok(hex) = crate::store::digest_hex(checksum) else {
        return;
    };
    let path = store.root().join("cache/files").join(hex);
    if path.exists() {
        return;
    }
    let mut text = String::new();
    for (name, rec) in files {
        if name.contains('\n') || rec.contains('\t') {
            continue;
        }
        text.push_str(rec);
        text.push('\t');
        text.push_str(name);
        text.push('\n');
    }
    let _ = store.write_small(&path, text.as_bytes());
}

pub fn load_files(store: &Store, checksum: &str) -> Option<Vec<(String, String)>> {
    let hex = crate::store::digest_hex(checksum).ok()?;
    let text = fs::read_to_string(store.root().join("cache/files").join(hex)).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(rec, name)| (name.to_string(), rec.to_string()))
            .collect(),
    )
}

/// The checksum of the files a step selects from a stage whose key is
/// known, remembered from when it was computed (`<store>/cache/derived/`):
/// a stage that comes from the cache need not be unpacked to key a COPY
/// from it.
pub fn derived_get(store: &Store, memo: &str) -> Option<String> {
    let text = fs::read_to_string(store.root().join("cache/derived").join(memo)).ok()?;
    let sum = text.trim().to_string();
    crate::store::digest_hex(&sum).is_ok().then_some(sum)
}

pub fn derived_put(store: &Store, memo: &str, checksum: &str) {
    let _ = store.write_small(
        &store.root().join("cache/derived").join(memo),
        checksum.as_bytes(),
    );
}

/// Current per-file records of this build's source checksums, by
/// checksum.
pub type Files = BTreeMap<String, Vec<(String, String)>>;

/// Why a step with `inputs` missed, in one line, from the record of its
/// last run at `slot`. `parent_missed` says whether the step before it
/// ran in this build.
pub fn explain(store: &Store, slot: &str, inputs: &Inputs, files: &Files) -> String {
    let path = store.root().join("cache/explain").join(slot);
    let old: Inputs = match fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        Some(o) => o,
        None => return "no earlier build of this step".to_string(),
    };
    let new = inputs;
    if old.key() == new.key() {
        return "its cache entry is gone (pruned)".to_string();
    }
    let get = |m: &Inputs, k: &str| m.fields.get(k).cloned();
    if get(&old, "parent") != get(new, "parent") {
        let image = |t: &str| t.strip_prefix("image ").map(str::to_string);
        return match (image(&old.parent_text), image(&new.parent_text)) {
            (Some(o), Some(n)) => {
                let (oref, odig) = o.rsplit_once('@').unwrap_or((&o, ""));
                let (nref, ndig) = n.rsplit_once('@').unwrap_or((&n, ""));
                if oref == nref {
                    format!("base image {nref} now resolves to {ndig} (was {odig})")
                } else {
                    format!("base image changed: {oref} -> {nref}")
                }
            }
            _ => format!("parent changed ({})", new.parent_text),
        };
    }
    for prefix in ["arg:", "env:"] {
        let what = if prefix == "arg:" { "ARG" } else { "ENV" };
        let names: std::collections::BTreeSet<&String> = old
            .fields
            .keys()
            .chain(new.fields.keys())
            .filter(|k| k.starts_with(prefix))
            .collect();
        for name in names {
            let (o, n) = (get(&old, name), get(new, name));
            if o == n {
                continue;
            }
            let short = &name[prefix.len()..];
            return match (o, n) {
                (Some(o), Some(n)) => format!("{what} {short} changed: {o} -> {n}"),
                (None, Some(n)) => format!("{what} {short} is new: {n}"),
                (Some(o), None) => format!("{what} {short} is gone (was {o})"),
                (None, None) => continue,
            };
        }
    }
    if get(&old, "instruction") != get(new, "instruction") {
        return "the instruction changed".to_string();
    }
    let srcs: std::collections::BTreeSet<&String> = old
        .fields
        .keys()
        .chain(new.fields.keys())
        .filter(|k| k.starts_with("src:"))
        .collect();
    for name in srcs {
        let (o, n) = (get(&old, name), get(new, name));
        if o == n {
            continue;
        }
        let (Some(o), Some(n)) = (o, n) else {
            return "its sources changed".to_string();
        };
        if let (Some(of), Some(nf)) = (load_files(store, &o), files.get(&n)) {
            return crate::context::checksum::describe_changes(&of, nf);
        }
        if let Some(ni) = n.strip_prefix("image ") {
            return format!("source image now resolves to {ni}");
        }
        return "its sources changed".to_string();
    }
    for name in ["run:network", "run:add-host", "run:shm-size", "run:ulimit"] {
        let (o, n) = (get(&old, name), get(new, name));
        if o != n {
            let flag = name.trim_start_matches("run:");
            return format!(
                "--{flag} changed: {} -> {}",
                o.unwrap_or_else(|| "(not given)".into()),
                n.unwrap_or_else(|| "(not given)".into())
            );
        }
    }
    if get(&old, "platform") != get(new, "platform") {
        return format!(
            "the platform changed: {} -> {}",
            get(&old, "platform").unwrap_or_default(),
            get(new, "platform").unwrap_or_default()
        );
    }
    if get(&old, "format") != get(new, "format") {
        return format!(
            "the layer format changed: {} -> {}",
            get(&old, "format").unwrap_or_default(),
            get(new, "format").unwrap_or_default()
        );
    }
    "its inputs changed".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(pairs: &[(&str, &str)], parent_text: &str) -> Inputs {
        let mut i = Inputs {
            parent_text: parent_text.into(),
            ..Inputs::default()
        };
        for (k, v) in pairs {
            i.set(k, *v);
        }
        i
    }

    #[test]
    fn keys_are_unambiguous() {
        let a = inputs(&[("a", "bc")], "");
        let b = inputs(&[("ab", "c")], "");
        assert_ne!(a.key(), b.key());
        let c = inputs(&[("a", "b"), ("c", "")], "");
        let d = inputs(&[("a", "bc")], "");
        assert_ne!(c.key(), d.key());
        // The parent's description is not an input.
        assert_eq!(a.key(), inputs(&[("a", "bc")], "other").key());
    }

    #[test]
    fn misses_are_explained() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let old = inputs(
            &[
                ("parent", "p1"),
                ("instruction", "RUN make"),
                ("arg:VERSION", "1.2"),
            ],
            "COPY . /app",
        );
        let files = Files::new();
        assert_eq!(
            explain(&store, "s", &old, &files),
            "no earlier build of this step"
        );
        record(&store, "s", &old);
        assert_eq!(
            explain(&store, "s", &old, &files),
            "its cache entry is gone (pruned)"
        );
        let mut new = old.clone();
        new.set("arg:VERSION", "1.3");
        assert_eq!(
            explain(&store, "s", &new, &files),
            "ARG VERSION changed: 1.2 -> 1.3"
        );
        new.set("parent", "p2");
        assert_eq!(
            explain(&store, "s", &new, &files),
            "parent changed (COPY . /app)"
        );
        let base = inputs(&[("parent", "k1")], "image r:1@sha256:aa");
        record(&store, "b", &base);
        let moved = inputs(&[("parent", "k2")], "image r:1@sha256:bb");
        assert_eq!(
            explain(&store, "b", &moved, &files),
            "base image r:1 now resolves to sha256:bb (was sha256:aa)"
        );
        let old_files = vec![("src/app.py".to_string(), "file 1".to_string())];
        let sum1 = format!("sha256:{}", "1".repeat(64));
        let sum2 = format!("sha256:{}", "2".repeat(64));
        record_files(&store, &sum1, &old_files);
        record(&store, "c", &inputs(&[("src:0", &sum1)], ""));
        let mut now = Files::new();
        now.insert(
            sum2.clone(),
            vec![("src/app.py".to_string(), "file 2".to_string())],
        );
        assert_eq!(
            explain(&store, "c", &inputs(&[("src:0", &sum2)], ""), &now),
            "1 file changed: src/app.py"
        );
    }
}
