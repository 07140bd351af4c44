//! `kiln inspect REF|ARCHIVE` and `kiln images`.

use super::Failure;
use crate::cli::{DuArgs, InspectArgs};
use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;

use super::registry::failure;

/// Prints, as JSON, an image's manifest digest, platform, config and
/// layers.
pub fn inspect(args: &InspectArgs) -> Result<i32, Failure> {
    let platform = match &args.platform {
        Some(p) => crate::plan::Platform::parse(p).map_err(Failure::usage)?,
        None => crate::plan::Platform::host(),
    };
    let path = Path::new(&args.target);
    let out = if path.is_file() {
        from_archive(path, &platform).map_err(failure)?
    } else {
        crate::image::reference::validate(&args.target)
            .map_err(|e| Failure::usage(format!("{}: {e} (and no such file)", args.target)))?;
        let root = args
            .cache_dir
            .clone()
            .unwrap_or_else(crate::store::default_root);
        let store = Store::open(&root).map_err(|e| failure(anyhow!("{e}")))?;
        let (digest, manifest, config) =
            crate::build::manifest_and_config(&args.target, &store, &platform).map_err(failure)?;
        describe(&args.target, &digest, &manifest, &config)
    };
    outln!(
        "{}",
        serde_json::to_string_pretty(&out).map_err(|e| failure(e.into()))?
    );
    Ok(0)
}

fn describe(name: &str, digest: &str, manifest: &Value, config: &Value) -> Value {
    let layers: Vec<Value> = manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(
            config["rootfs"]["diff_ids"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(std::iter::repeat(&Value::Null)),
        )
        .map(|(l, d)| {
            json!({"digest": l["digest"], "size": l["size"], "mediaType": l["mediaType"], "diffID": d})
        })
        .collect();
    let size: u64 = layers.iter().filter_map(|l| l["size"].as_u64()).sum();
    json!({
        "name": name,
        "digest": digest,
        "mediaType": manifest["mediaType"],
        "platform": format!(
            "{}/{}{}",
            config["os"].as_str().unwrap_or(""),
            config["architecture"].as_str().unwrap_or(""),
            config["variant"].as_str().map(|v| format!("/{v}")).unwrap_or_default()
        ),
        "created": config["created"],
        "size": size,
        "config": config["config"],
        "history": config["history"],
        "layers": layers,
        "annotations": manifest["annotations"],
    })
}

/// The small files of a tar archive (manifests, configs, index), by path.
fn small_files(path: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    const MAX: u64 = 8 << 20;
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut ar = tar::Archive::new(std::io::BufReader::new(f));
    let mut out = BTreeMap::new();
    for e in ar
        .entries()
        .with_context(|| format!("{} is not a tar archive", path.display()))?
    {
        let mut e = e.with_context(|| format!("cannot read {}", path.display()))?;
        let size = e.header().size().unwrap_or(u64::MAX);
        let name = e
            .path()
            .map(|p| p.to_string_lossy().trim_start_matches("./").to_string())
            .unwrap_or_default();
        if size <= MAX && e.header().entry_type().is_file() {
            let mut b = Vec::new();
            e.read_to_end(&mut b)
                .with_context(|| format!("cannot read {name} in {}", path.display()))?;
            out.insert(name, b);
        }
    }
    Ok(out)
}

fn json_of(files: &BTreeMap<String, Vec<u8>>, name: &str) -> Result<Value> {
    let b = files
        .get(name)
        .ok_or_else(|| anyhow!("the archive has no {name}"))?;
    serde_json::from_slice(b).with_context(|| format!("{name} is not JSON"))
}

fn blob_name(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// An OCI archive (index.json) or a docker archive (manifest.json).
fn from_archive(path: &Path, platform: &crate::plan::Platform) -> Result<Value> {
    let files = small_files(path)?;
    if files.contains_key("index.json") {
        let mut desc = json_of(&files, "index.json")?["manifests"][0].clone();
        for _ in 0..2 {
            let d = desc["digest"].as_str().unwrap_or("").to_string();
            let doc = json_of(&files, &blob_name(&d))?;
            if let Some(ms) = doc["manifests"].as_array() {
                desc = ms
                    .iter()
                    .find(|m| {
                        m["platform"]["architecture"] == platform.arch.as_str()
                            && m["platform"]["os"] == platform.os.as_str()
                    })
                    .or_else(|| ms.first())
                    .cloned()
                    .ok_or_else(|| anyhow!("an empty image index"))?;
                continue;
            }
            let config = json_of(
                &files,
                &blob_name(doc["config"]["digest"].as_str().unwrap_or("")),
            )?;
            let name = desc["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            return Ok(describe(&name, &d, &doc, &config));
        }
        bail!("nested image indexes in {}", path.display());
    }
    if files.contains_key("manifest.json") {
        let m = json_of(&files, "manifest.json")?;
        let first = &m[0];
        let config_name = first["Config"].as_str().unwrap_or("");
        let config = json_of(&files, config_name)?;
        let config_digest = format!(
            "sha256:{}",
            crate::layer::compress::sha256_hex(files.get(config_name).map_or(&[][..], |b| b))
        );
        let layers: Vec<Value> = first["Layers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| json!({"digest": l, "size": Value::Null, "mediaType": Value::Null}))
            .collect();
        let manifest = json!({"mediaType": "docker archive", "layers": layers});
        let name = first["RepoTags"][0].as_str().unwrap_or("").to_string();
        return Ok(describe(&name, &config_digest, &manifest, &config));
    }
    bail!(
        "{} is neither an OCI archive (index.json) nor a docker archive (manifest.json)",
        path.display()
    )
}

/// `kiln images`: the names the store knows, pulled or built, with their
/// digests and sizes.
pub fn images(args: &DuArgs) -> Result<i32, Failure> {
    let Some(store) = super::registry::existing_store(&args.cache_dir)? else {
        return Ok(0);
    };
    outln!(
        "{:<60} {:<8} {:<20} {:>10}",
        "NAME",
        "FROM",
        "DIGEST",
        "SIZE"
    );
    for (name, digest) in store.refs() {
        let (from, name) = match name.strip_prefix("built:") {
            Some(n) => ("built", n.to_string()),
            None => ("pulled", name),
        };
        let size = stored_size(&store, &digest, 0);
        outln!(
            "{name:<60} {from:<8} {:<20} {:>10}",
            crate::progress::short(&digest),
            crate::progress::human(size)
        );
    }
    Ok(0)
}

/// The bytes of an image's layers as its manifest gives them; for an
/// index, of every platform's image (as much as the store holds).
fn stored_size(store: &Store, digest: &str, depth: usize) -> u64 {
    let Some(doc) = store
        .read(digest)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    else {
        return 0;
    };
    let sizes = |key: &str| -> Vec<Value> { doc[key].as_array().cloned().unwrap_or_default() };
    let layers: u64 = sizes("layers")
        .iter()
        .filter_map(|l| l["size"].as_u64())
        .sum();
    let nested: u64 = if depth < 2 {
        sizes("manifests")
            .iter()
            .filter_map(|m| m["digest"].as_str())
            .map(|d| stored_size(store, d, depth + 1))
            .sum()
    } else {
        0
    };
    layers + nested
}
