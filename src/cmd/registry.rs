//! `kiln pull REF` and `kiln push OCI-ARCHIVE REF`.

use super::{exit, Failure};
use crate::cli::{DuArgs, LoginArgs, LogoutArgs, PruneArgs, PullArgs, PushArgs};
use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};
use std::io::Read;

/// A failure of a registry or store command: exit 4 when a registry
/// failed, with kiln's hint on a line of its own.
pub(super) fn failure(e: anyhow::Error) -> Failure {
    let mut message = super::chain(&e);
    if let Some(h) = crate::registry::hint(&e) {
        message.push_str(&format!("\nhint: {h}"));
    }
    Failure {
        code: if crate::registry::is_registry_error(&e) {
            exit::REGISTRY
        } else {
            exit::BUILD
        },
        message,
    }
}

fn open_store(dir: &Option<std::path::PathBuf>) -> Result<Store, Failure> {
    let root = dir.clone().unwrap_or_else(crate::store::default_root);
    Store::open(&root).map_err(|e| failure(e.into()))
}

/// The store at `dir` (or the default), if there is one; says so when
/// there is none (`kiln du`, `kiln images` create nothing).
pub(super) fn existing_store(dir: &Option<std::path::PathBuf>) -> Result<Option<Store>, Failure> {
    let root = dir.clone().unwrap_or_else(crate::store::default_root);
    if !root.join("blobs").is_dir() {
        outln!("{}: no store", root.display());
        return Ok(None);
    }
    open_store(dir).map(Some)
}

/// `kiln pull`: the image's manifest, config and layers into the store;
/// prints the manifest digest.
pub fn pull(args: &PullArgs) -> Result<i32, Failure> {
    crate::image::reference::validate(&args.reference)
        .map_err(|e| Failure::usage(format!("{}: {e}", args.reference)))?;
    let platform = match &args.platform {
        Some(p) => crate::plan::Platform::parse(p).map_err(Failure::usage)?,
        None => crate::plan::Platform::host(),
    };
    let store = open_store(&args.cache_dir)?;
    let digest =
        crate::build::pull_to_store(&args.reference, &store, &platform, true).map_err(failure)?;
    outln!("{digest}");
    Ok(0)
}

/// `kiln push`: the blobs of an OCI archive into the store (digests
/// checked), then to the registry.
pub fn push(args: &PushArgs) -> Result<i32, Failure> {
    crate::image::reference::validate(&args.reference)
        .map_err(|e| Failure::usage(format!("{}: {e}", args.reference)))?;
    if args.reference.contains('@') {
        return Err(Failure::usage("push to a name and tag, not a digest"));
    }
    let store = open_store(&args.cache_dir)?;
    let digest = push_archive(args, &store).map_err(failure)?;
    outln!("{digest}");
    Ok(0)
}

fn push_archive(args: &PushArgs, store: &Store) -> Result<String> {
    let f = std::fs::File::open(&args.archive)
        .with_context(|| format!("cannot open {}", args.archive.display()))?;
    let mut ar = tar::Archive::new(std::io::BufReader::new(f));
    let mut index = None;
    for e in ar
        .entries()
        .with_context(|| format!("cannot read {}", args.archive.display()))?
    {
        let mut e = e.with_context(|| format!("cannot read {}", args.archive.display()))?;
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let name = name.trim_start_matches("./");
        if name == "index.json" {
            let mut buf = Vec::new();
            (&mut e).take(4 << 20).read_to_end(&mut buf)?;
            index = Some(buf);
        } else if let Some(hex) = name
            .strip_prefix("blobs/sha256/")
            .filter(|h| !h.is_empty() && e.header().entry_type().is_file())
        {
            let digest = format!("sha256:{hex}");
            crate::store::digest_hex(&digest)?;
            if store.has(&digest) {
                continue;
            }
            let tmp = store.temp_file()?;
            let mut w = crate::layer::compress::HashingWriter::new(tmp.reopen()?);
            std::io::copy(&mut e, &mut w).with_context(|| format!("cannot read {name}"))?;
            let (_, actual, _) = w.finish();
            if actual != digest {
                bail!("{name} in the archive has digest {actual}: the archive is corrupt");
            }
            store.commit(tmp, &digest)?;
        }
    }
    let index = index.ok_or_else(|| {
        anyhow!(
            "{} has no index.json: not an OCI archive",
            args.archive.display()
        )
    })?;
    let raw_index = index;
    let index: oci_spec::image::ImageIndex =
        serde_json::from_slice(&raw_index).context("index.json is not valid")?;
    let r = crate::registry::Reference::parse(&args.reference)
        .map_err(|e| anyhow!("{}: {e}", args.reference))?;
    let mut client = crate::registry::Client::new(r.clone())?;
    let pushed = match index.manifests().as_slice() {
        [] => bail!("the archive holds no image"),
        [one] => push_tree(
            &mut client,
            one.digest().as_ref(),
            one.media_type().as_ref(),
            r.object(),
            store,
            0,
        )?,
        several => {
            // Several images with platforms: one multi-platform image,
            // pushed as the index the archive's index.json is.
            if several.iter().any(|d| d.platform().is_none()) {
                bail!(
                    "the archive holds {} images, not all for a platform; kiln push takes one image or one multi-platform index",
                    several.len()
                );
            }
            for d in several {
                let digest = d.digest().to_string();
                push_tree(
                    &mut client,
                    &digest,
                    d.media_type().as_ref(),
                    &digest,
                    store,
                    1,
                )?;
            }
            client.push_manifest(r.object(), crate::image::OCI_INDEX, &raw_index)?
        }
    };
    eprintln!("pushed {r}@{pushed}");
    Ok(pushed)
}

/// Pushes a manifest (its blobs first) or an index (its manifests first,
/// by digest), then the document itself under `tag`.
fn push_tree(
    client: &mut crate::registry::Client,
    digest: &str,
    listed_media: &str,
    tag: &str,
    store: &Store,
    depth: u32,
) -> Result<String> {
    if depth > 2 {
        bail!("{digest}: indexes nest too deeply");
    }
    let bytes = store.read(digest)?;
    let doc: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{digest} in the archive is not JSON"))?;
    // The document's own media type wins over what its parent says.
    let media = doc
        .get("mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or(listed_media)
        .to_string();
    if doc.get("manifests").is_some() {
        let index: oci_spec::image::ImageIndex = serde_json::from_slice(&bytes)
            .with_context(|| format!("the index {digest} is not valid"))?;
        for m in index.manifests() {
            let d = m.digest().to_string();
            push_tree(client, &d, m.media_type().as_ref(), &d, store, depth + 1)?;
        }
    } else {
        let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("the manifest {digest} is not valid"))?;
        let mut blobs = vec![manifest.config().digest().to_string()];
        blobs.extend(manifest.layers().iter().map(|l| l.digest().to_string()));
        crate::registry::push_blobs(client, &blobs, store)?;
    }
    client.push_manifest(tag, &media, &bytes)
}

/// The domain a `kiln login` argument names (`https://ghcr.io/` → `ghcr.io`).
fn domain_of(registry: &str) -> String {
    let d = registry
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let d = d.split('/').next().unwrap_or(d);
    if d == "index.docker.io" || d == "registry-1.docker.io" {
        "docker.io".to_string()
    } else {
        d.to_string()
    }
}

/// `kiln login`: checks the credentials against the registry, then stores
/// them in the docker config, as `docker login` does.
pub fn login(args: &LoginArgs) -> Result<i32, Failure> {
    let domain = domain_of(&args.registry);
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .map_err(|e| Failure::usage(format!("cannot read the password from stdin: {e}")))?;
    let password = password.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err(Failure::usage("the password on stdin is empty"));
    }
    let creds = crate::registry::auth::Credentials {
        username: args.username.clone(),
        password,
    };
    // Any repository will do to name the registry.
    let r = crate::registry::Reference::parse(&format!("{domain}/kiln/login-check"))
        .map_err(|e| Failure::usage(format!("{}: {e}", args.registry)))?;
    crate::registry::Client::check_login(r, creds.clone()).map_err(failure)?;
    let path = crate::registry::auth::store(&domain, &creds).map_err(|e| failure(anyhow!(e)))?;
    eprintln!("Login Succeeded ({} in {})", domain, path.display());
    Ok(0)
}

/// `kiln logout`: removes the registry's stored credentials.
pub fn logout(args: &LogoutArgs) -> Result<i32, Failure> {
    let domain = domain_of(&args.registry);
    let removed = crate::registry::auth::erase(&domain).map_err(|e| failure(anyhow!(e)))?;
    if removed {
        eprintln!("Removing login credentials for {domain}");
    } else {
        eprintln!("Not logged in to {domain}");
    }
    Ok(0)
}

/// `kiln prune`: removes the store, once it is clear it is one.
pub fn prune(args: &PruneArgs) -> Result<i32, Failure> {
    use crate::store::gc;
    let root = args
        .cache_dir
        .clone()
        .unwrap_or_else(crate::store::default_root);
    let mut opts = gc::PruneOptions {
        all: args.all,
        ..Default::default()
    };
    if let Some(s) = &args.keep_storage {
        opts.keep_storage =
            Some(gc::parse_size(s).map_err(|e| Failure::usage(format!("--keep-storage: {e}")))?);
    }
    for f in &args.filter {
        match f.split_once('=') {
            Some(("until", d)) => {
                opts.until = Some(
                    gc::parse_duration(d)
                        .map_err(|e| Failure::usage(format!("--filter until: {e}")))?,
                );
            }
            _ => {
                return Err(Failure::usage(format!(
                    "--filter {f:?}: the only filter is until=DURATION (e.g. until=24h)"
                )))
            }
        }
    }
    if !root.exists() {
        eprintln!("nothing to remove: {} does not exist", root.display());
        return Ok(0);
    }
    if !root.join("blobs").is_dir() {
        return Err(Failure::usage(format!(
            "{} is not a kiln store (it has no blobs/): not pruning it",
            root.display()
        )));
    }
    let waiting = || eprintln!("waiting for the builds using {} to finish", root.display());
    let store = crate::store::Store::open_exclusive(&root, &waiting)
        .map_err(|e| failure(anyhow!("{e}")))?;
    let p = gc::prune(&store, &opts);
    if args.all {
        drop(store);
        std::fs::remove_dir_all(&root)
            .map_err(|e| failure(anyhow!("cannot remove {}: {e}", root.display())))?;
    }
    eprintln!(
        "removed {} cache entries, {} blobs and {} snapshots: {} freed",
        p.entries,
        p.blobs,
        p.snapshots,
        crate::progress::human(p.bytes)
    );
    Ok(0)
}

/// `kiln du`: the store's disk use by kind.
pub fn du(args: &DuArgs) -> Result<i32, Failure> {
    use crate::store::gc;
    let Some(store) = existing_store(&args.cache_dir)? else {
        return Ok(0);
    };
    let root = store.root().to_path_buf();
    let u = gc::usage(&store);
    outln!("{}", root.display());
    outln!("  cache entries  {:>6}", u.entries);
    outln!(
        "  blobs          {:>6}  {:>10}",
        u.blobs.0,
        crate::progress::human(u.blobs.1)
    );
    outln!(
        "  snapshots      {:>6}  {:>10}",
        u.snapshots.0,
        crate::progress::human(u.snapshots.1)
    );
    outln!(
        "  cache mounts   {:>6}  {:>10}",
        u.cache_mounts.0,
        crate::progress::human(u.cache_mounts.1)
    );
    outln!(
        "  other                  {:>10}",
        crate::progress::human(u.other)
    );
    outln!(
        "  total                  {:>10}",
        crate::progress::human(u.blobs.1 + u.snapshots.1 + u.cache_mounts.1 + u.other)
    );
    outln!(
        "  reclaimable            {:>10}  (kiln prune)",
        crate::progress::human(u.reclaimable)
    );
    Ok(0)
}
