//! What a build reads from outside the context: named build contexts
//! (`--build-context NAME=DIR|oci-layout://PATH[:TAG]|docker-image://REF`),
//! images from an OCI layout, files that ADD downloads, and archives that
//! ADD extracts.
//!
//! Everything read here is untrusted: blobs are checked against their
//! digests (and layers against their diffIDs) while they are read, and
//! layers are unpacked by the applier, which never writes outside the
//! target directory.

use super::copy;
use crate::image::config::ImageConfig;
use crate::image::{Image, LayerBlob};
use crate::layer::apply::{self, ApplyOptions};
use crate::layer::compress::{Compression, HashingWriter};
use crate::plan::Platform;
use crate::store::{digest_hex, Store};
use anyhow::{anyhow, bail, Context as _, Result};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Largest JSON document (index, manifest, config) read from a layout.
const MAX_JSON: u64 = 8 << 20;

/// A `--build-context` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    Dir(PathBuf),
    OciLayout {
        path: PathBuf,
        reference: Option<String>,
    },
    DockerImage(String),
}

impl NamedContext {
    /// Parses the value after `NAME=`.
    pub fn parse(value: &str) -> Result<NamedContext, String> {
        if let Some(rest) = value.strip_prefix("oci-layout://") {
            // PATH[:TAG] or PATH@sha256:...
            let (path, reference) = if let Some((p, d)) = rest.rsplit_once('@') {
                (p, Some(d.to_string()))
            } else {
                match rest.rsplit_once(':') {
                    Some((p, t)) if !t.contains('/') && !t.is_empty() => (p, Some(t.to_string())),
                    _ => (rest, None),
                }
            };
            if path.is_empty() {
                return Err(format!("{value}: missing the layout path"));
            }
            return Ok(NamedContext::OciLayout {
                path: PathBuf::from(path),
                reference,
            });
        }
        if let Some(r) = value.strip_prefix("docker-image://") {
            crate::image::reference::validate(r).map_err(|e| format!("{value}: {e}"))?;
            return Ok(NamedContext::DockerImage(r.to_string()));
        }
        if value.contains("://") {
            return Err(format!(
                "{value}: unsupported build context; use a directory, oci-layout://PATH[:TAG] or docker-image://REF"
            ));
        }
        Ok(NamedContext::Dir(PathBuf::from(value)))
    }
}

/// An image ready to be a base or a COPY source.
pub struct Imported {
    pub image: Image,
    /// What identifies the image in cache keys: its manifest's digest (a
    /// directory context's: its layer's).
    pub digest: String,
    /// The image's files on disk (for a directory context: empty, and
    /// `entries` holds its one layer, not yet written out).
    pub rootfs: PathBuf,
    pub entries: Option<Vec<crate::layer::writer::Entry>>,
    /// Without root, the owners the image's layers give (the files on disk
    /// belong to the user running kiln).
    pub owners: Option<std::sync::Arc<Owners>>,
    /// With the overlay backend: the layers' snapshots, bottom first
    /// (`rootfs` is their overlay).
    pub snapshots: Option<Vec<PathBuf>>,
}

/// Images read during one build, each unpacked once. Shared by the
/// stages building in parallel: each image loads under its own lock, so
/// two stages never unpack the same image twice, nor wait on different
/// ones.
pub struct Images {
    dir: PathBuf,
    slots: std::sync::Mutex<BTreeMap<String, Slot>>,
    count: std::sync::atomic::AtomicUsize,
}

type Slot = std::sync::Arc<std::sync::Mutex<Option<std::sync::Arc<Imported>>>>;

impl Images {
    pub fn new(dir: PathBuf) -> Images {
        Images {
            dir,
            slots: std::sync::Mutex::new(BTreeMap::new()),
            count: 0.into(),
        }
    }

    /// The image a stage names, from the named contexts.
    pub fn get(
        &self,
        reference: &str,
        opts: &super::BuildOptions,
        store: &Store,
        platform: &Platform,
    ) -> Result<std::sync::Arc<Imported>> {
        let slot = {
            let mut slots = self
                .slots
                .lock()
                .map_err(|_| anyhow!("a stage failed while loading images"))?;
            let id = format!("{reference} {platform}");
            slots.entry(id).or_default().clone()
        };
        let mut loaded = slot
            .lock()
            .map_err(|_| anyhow!("a stage failed while loading {reference}"))?;
        if let Some(img) = loaded.as_ref() {
            return Ok(img.clone());
        }
        let named = &opts.named;
        {
            let n = self
                .count
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let rootfs = self.dir.join(format!("image-{n}"));
            let imported = match named.get(reference) {
                Some(NamedContext::Dir(d)) => {
                    if !d.is_dir() {
                        bail!(
                            "build context {reference}: {} is not a directory",
                            d.display()
                        );
                    }
                    let mut config = ImageConfig {
                        architecture: platform.arch.clone(),
                        os: platform.os.clone(),
                        ..ImageConfig::default()
                    };
                    // The directory becomes the image's one layer, owned by
                    // root as context files are; a stage based on it sees it
                    // as a pending layer over an empty directory.
                    let mut entries =
                        crate::layer::writer::entries_from_dir(d, "").with_context(|| {
                            format!("build context {reference}: cannot read {}", d.display())
                        })?;
                    for e in &mut entries {
                        e.uid = 0;
                        e.gid = 0;
                    }
                    let layer = super::layer::write(entries.clone(), opts, store)?;
                    config.rootfs.diff_ids = vec![layer.diff_id.clone()];
                    fs::create_dir_all(&rootfs)
                        .with_context(|| format!("cannot create {}", rootfs.display()))?;
                    Imported {
                        digest: layer.digest.clone(),
                        image: Image::new(config, vec![layer]),
                        rootfs,
                        entries: Some(entries),
                        owners: None,
                        snapshots: crate::snapshot::overlay::enabled().then(Vec::new),
                    }
                }
                Some(NamedContext::OciLayout { path, reference: r }) => {
                    fs::create_dir_all(&rootfs)
                        .with_context(|| format!("cannot create {}", rootfs.display()))?;
                    let context =
                        || format!("build context {reference}=oci-layout://{}", path.display());
                    let (image, digest) =
                        load_layout(path, r.as_deref(), store, platform).with_context(context)?;
                    imported(image, digest, rootfs, store).with_context(context)?
                }
                Some(NamedContext::DockerImage(r)) => {
                    fs::create_dir_all(&rootfs)
                        .with_context(|| format!("cannot create {}", rootfs.display()))?;
                    let context = || format!("build context {reference}=docker-image://{r}");
                    let (image, digest) =
                        pull(r, store, platform, opts.pull).with_context(context)?;
                    imported(image, digest, rootfs, store).with_context(context)?
                }
                None => {
                    fs::create_dir_all(&rootfs)
                        .with_context(|| format!("cannot create {}", rootfs.display()))?;
                    let (image, digest) = pull(reference, store, platform, opts.pull)?;
                    imported(image, digest, rootfs, store).with_context(|| reference.to_string())?
                }
            };
            let imported = std::sync::Arc::new(imported);
            *loaded = Some(imported.clone());
            Ok(imported)
        }
    }
}

/// An image's files at `rootfs`: an overlay of its layers' snapshots, or
/// (copy backend) its layers unpacked there; without root, with the
/// owners its layers give.
fn imported(image: Image, digest: String, rootfs: PathBuf, store: &Store) -> Result<Imported> {
    let snapshots = if crate::snapshot::overlay::enabled() {
        let mut chain = Vec::new();
        for l in &image.layers {
            chain.push(crate::snapshot::layers::ensure(
                store, &l.digest, &l.diff_id,
            )?);
        }
        mount(&chain, &rootfs)?;
        Some(chain)
    } else {
        for l in &image.layers {
            crate::snapshot::layers::unpack(
                &store.blob_path(&l.digest)?,
                &l.digest,
                &l.diff_id,
                &rootfs,
                false,
            )?;
        }
        None
    };
    let owners = if crate::userns::full_ids() {
        None
    } else {
        let mut o = Owners::new();
        for l in &image.layers {
            replay_owners(&store.blob_path(&l.digest)?, true, &mut o)?;
        }
        Some(std::sync::Arc::new(o))
    };
    Ok(Imported {
        image,
        digest,
        rootfs,
        entries: None,
        owners,
        snapshots,
    })
}

/// Mounts the overlay of `chain` (snapshot directories, bottom first) at
/// `target`, with an empty directory beside it as the bottom layer.
pub fn mount(chain: &[PathBuf], target: &Path) -> Result<()> {
    let empty = target.with_extension("empty");
    fs::create_dir_all(&empty).with_context(|| format!("cannot create {}", empty.display()))?;
    fs::create_dir_all(target).with_context(|| format!("cannot create {}", target.display()))?;
    let chain = crate::snapshot::layers::distinct(chain)?;
    crate::snapshot::overlay::mount_chain(&chain, &empty, target).with_context(|| {
        format!(
            "cannot mount the overlay of {} layers at {} (KILN_SNAPSHOTTER=copy builds by copying instead)",
            chain.len(),
            target.display()
        )
    })
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let buf = crate::snapshot::read_small(path, MAX_JSON)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    serde_json::from_slice(&buf)
        .with_context(|| format!("{what} {} is not valid JSON", path.display()))
}

/// Reads a blob of the layout, checking its digest and size.
fn layout_blob(layout: &Path, digest: &str, max: u64) -> Result<Vec<u8>> {
    let p = layout.join("blobs/sha256").join(digest_hex(digest)?);
    let buf = crate::snapshot::read_small(&p, max)
        .with_context(|| format!("cannot read blob {digest}"))?;
    let actual = format!("sha256:{}", crate::layer::compress::sha256_hex(&buf));
    if actual != digest {
        bail!("blob {digest} has digest {actual}: the layout is corrupt");
    }
    Ok(buf)
}

/// The manifest of an index for `platform` (a variant, when asked for,
/// must match too); the error lists the platforms the index has.
fn pick_platform<'a>(
    idx: &'a oci_spec::image::ImageIndex,
    platform: &Platform,
) -> Result<&'a oci_spec::image::Descriptor> {
    idx.manifests()
        .iter()
        .find(|d| {
            d.platform().as_ref().is_some_and(|p| {
                p.os().to_string() == platform.os
                    && p.architecture().to_string() == platform.arch
                    && (platform.variant.is_empty()
                        || p.variant().as_deref() == Some(platform.variant.as_str()))
            })
        })
        .ok_or_else(|| {
            let choices: Vec<String> = idx
                .manifests()
                .iter()
                .filter_map(|d| d.platform().as_ref())
                .map(|p| format!("{}/{}", p.os(), p.architecture()))
                .collect();
            anyhow!("no image for {platform}; it has: {}", choices.join(", "))
        })
}

/// Reads the manifest and config of the image a layout holds under
/// `reference` (a tag, a digest, or nothing when it holds one image).
fn layout_manifest(
    layout: &Path,
    reference: Option<&str>,
    platform: &Platform,
) -> Result<(oci_spec::image::ImageManifest, ImageConfig, String)> {
    use oci_spec::image::{ImageIndex, ImageManifest};
    let index: ImageIndex = read_json(&layout.join("index.json"), "index")?;
    let descs = index.manifests();
    let chosen = match reference {
        Some(r) if r.starts_with("sha256:") => descs.iter().find(|d| d.digest().to_string() == r),
        Some(tag) => descs.iter().find(|d| {
            d.annotations().as_ref().is_some_and(|a| {
                a.get("org.opencontainers.image.ref.name")
                    .is_some_and(|n| n == tag)
                    || a.get("io.containerd.image.name")
                        .is_some_and(|n| n.ends_with(&format!(":{tag}")))
            })
        }),
        None if descs.len() == 1 => descs.first(),
        None => bail!(
            "the layout holds {} images; name one with :TAG or @DIGEST",
            descs.len()
        ),
    }
    .ok_or_else(|| anyhow!("no image {} in the layout", reference.unwrap_or("")))?;
    let mut digest = chosen.digest().to_string();
    let mut media = chosen.media_type().to_string();
    // An index (multi-platform image): pick the platform's manifest.
    for _ in 0..4 {
        if !media.contains("index") && !media.contains("manifest.list") {
            break;
        }
        let bytes = layout_blob(layout, &digest, MAX_JSON)?;
        let idx: ImageIndex =
            serde_json::from_slice(&bytes).context("the image index is not valid")?;
        let m = pick_platform(&idx, platform).context("the image index")?;
        digest = m.digest().to_string();
        media = m.media_type().to_string();
    }
    let bytes = layout_blob(layout, &digest, MAX_JSON)?;
    let manifest: ImageManifest =
        serde_json::from_slice(&bytes).context("the image manifest is not valid")?;
    let cfg_digest = manifest.config().digest().to_string();
    let cfg_bytes = layout_blob(layout, &cfg_digest, MAX_JSON)?;
    let config = ImageConfig::from_slice(&cfg_bytes).context("the image config is not valid")?;
    if config.rootfs.diff_ids.len() != manifest.layers().len() {
        bail!(
            "the manifest lists {} layers but the config {} diffIDs",
            manifest.layers().len(),
            config.rootfs.diff_ids.len()
        );
    }
    Ok((manifest, config, digest))
}

/// Base-image configs for the planner, from the named contexts: what an
/// OCI layout's image sets (ENV, WORKDIR, USER, SHELL, ONBUILD) shapes the
/// plan of a stage built on it. Images from registries come with the
/// registry client.
pub struct NamedResolver<'a> {
    pub named: &'a BTreeMap<String, NamedContext>,
    /// Where registry images' configs are fetched to; `None` plans
    /// without asking registries (`--dry-run`).
    pub store: Option<&'a Store>,
    /// `--pull`: ask the registry what a tag names now.
    pub pull: bool,
    /// Use only what the store has (`--dry-run`): never ask a registry.
    pub offline: bool,
}

impl crate::plan::ImageResolver for NamedResolver<'_> {
    fn resolve(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<Option<crate::plan::BaseConfig>, String> {
        match self.named.get(reference) {
            Some(NamedContext::OciLayout { path, reference: r }) => {
                let (_, c, _) = layout_manifest(path, r.as_deref(), platform).map_err(|e| {
                    format!(
                        "build context {reference}=oci-layout://{}: {e:#}",
                        path.display()
                    )
                })?;
                let c = c.config;
                Ok(Some(crate::plan::BaseConfig {
                    env: c.env_pairs(),
                    workdir: c.working_dir.clone(),
                    user: c.user.clone(),
                    shell: c.shell.clone(),
                    onbuild: c.on_build.clone(),
                }))
            }
            Some(NamedContext::Dir(_)) => Ok(Some(crate::plan::BaseConfig::default())),
            other => {
                let Some(store) = self.store else {
                    return Ok(None);
                };
                let name = match other {
                    Some(NamedContext::DockerImage(r)) => r.as_str(),
                    _ => reference,
                };
                // A registry that cannot be reached here fails the pull
                // later, with the reason; planning goes on without it.
                let config = if self.offline {
                    resolve_offline(name, store, platform).map(|(_, c)| c)
                } else {
                    pull_config(name, store, platform, self.pull).ok()
                };
                Ok(config.map(|c| {
                    let c = c.config;
                    crate::plan::BaseConfig {
                        env: c.env_pairs(),
                        workdir: c.working_dir.clone(),
                        user: c.user.clone(),
                        shell: c.shell.clone(),
                        onbuild: c.on_build.clone(),
                    }
                }))
            }
        }
    }
}

fn load_layout(
    layout: &Path,
    reference: Option<&str>,
    store: &Store,
    platform: &Platform,
) -> Result<(Image, String)> {
    let (manifest, config, manifest_digest) = layout_manifest(layout, reference, platform)?;
    let mut layers = Vec::new();
    for (desc, diff_id) in manifest.layers().iter().zip(&config.rootfs.diff_ids) {
        let digest = desc.digest().to_string();
        let src = layout.join("blobs/sha256").join(digest_hex(&digest)?);
        let stored = store.import_file(&src, &digest)?;
        layers.push(layer_blob(&stored, &digest, desc.size(), diff_id)?);
    }
    Ok((Image::new(config, layers), manifest_digest))
}

/// What a stored layer blob is: its size (checked against the manifest's)
/// and its compression, read from its first bytes.
fn layer_blob(stored: &Path, digest: &str, expected_size: u64, diff_id: &str) -> Result<LayerBlob> {
    let size = fs::metadata(stored)
        .with_context(|| format!("cannot read layer {digest}"))?
        .len();
    if size != expected_size {
        bail!("layer {digest} is {size} bytes, but the manifest says {expected_size}");
    }
    let mut head = [0u8; 8];
    let mut f = File::open(stored).with_context(|| format!("cannot open layer {digest}"))?;
    let n = f
        .read(&mut head)
        .with_context(|| format!("cannot read layer {digest}"))?;
    let compression = match apply::detect(&head[..n]) {
        apply::Format::Gzip => Compression::Gzip { level: 6 },
        apply::Format::Zstd => Compression::Zstd { level: 3 },
        apply::Format::Plain => Compression::None,
        other => bail!("layer {digest} is {other:?}-compressed, which image layers cannot be"),
    };
    Ok(LayerBlob {
        digest: digest.to_string(),
        diff_id: diff_id.to_string(),
        size,
        compression,
    })
}

/// The platform's manifest of `r` and its config, from the registry.
fn fetch_manifest(
    client: &mut crate::registry::Client,
    r: &crate::registry::Reference,
    store: &Store,
    platform: &Platform,
    refresh: bool,
) -> Result<(oci_spec::image::ImageManifest, ImageConfig, String)> {
    use oci_spec::image::{ImageIndex, ImageManifest};
    let (mut bytes, mut media, mut digest) = client.manifest_cached(r.object(), store, refresh)?;
    for _ in 0..2 {
        let is_index = media.contains("index") || media.contains("manifest.list");
        if !is_index {
            break;
        }
        let idx: ImageIndex = serde_json::from_slice(&bytes)
            .with_context(|| format!("{r}: the image index is not valid"))?;
        let m = pick_platform(&idx, platform).with_context(|| format!("{r}"))?;
        let d = m.digest().to_string();
        (bytes, media, digest) = client.manifest_cached(&d, store, refresh)?;
    }
    let manifest: ImageManifest = serde_json::from_slice(&bytes)
        .with_context(|| format!("{r}: the manifest is not valid"))?;
    let cfg = manifest.config();
    if cfg.size() > MAX_JSON {
        bail!("{r}: the config is larger than {MAX_JSON} bytes");
    }
    let cfg_path = client.blob(cfg.digest().as_ref(), cfg.size(), store)?;
    let cfg_bytes = fs::read(&cfg_path).with_context(|| format!("{r}: cannot read the config"))?;
    let config = ImageConfig::from_slice(&cfg_bytes)
        .with_context(|| format!("{r}: the config is not valid"))?;
    if config.rootfs.diff_ids.len() != manifest.layers().len() {
        bail!(
            "{r}: the manifest lists {} layers but the config {} diffIDs",
            manifest.layers().len(),
            config.rootfs.diff_ids.len()
        );
    }
    Ok((manifest, config, digest))
}

/// A client for the repository `reference` names.
fn open_registry(reference: &str) -> Result<(crate::registry::Reference, crate::registry::Client)> {
    let r =
        crate::registry::Reference::parse(reference).map_err(|e| anyhow!("{reference}: {e}"))?;
    let client = crate::registry::Client::new(r.clone())?;
    Ok((r, client))
}

/// Downloads the manifest's layers the store lacks, up to 4 at a time
/// (on clones of `client`, which share its credentials).
fn download_layers(
    r: &crate::registry::Reference,
    client: &crate::registry::Client,
    manifest: &oci_spec::image::ImageManifest,
    store: &Store,
) -> Result<()> {
    let wanted: Vec<(String, u64)> = manifest
        .layers()
        .iter()
        .map(|d| (d.digest().to_string(), d.size()))
        .filter(|(d, _)| !store.has(d))
        .collect();
    for res in crate::registry::parallel(&wanted, 4, |(digest, size)| {
        client.clone().blob(digest, *size, store)
    }) {
        res.with_context(|| format!("{r}"))?;
    }
    Ok(())
}

/// Pulls `reference` from its registry: the manifest (the platform's, from
/// an index), the config and the layers, verified into the store and
/// applied to `rootfs`.
fn pull(
    reference: &str,
    store: &Store,
    platform: &Platform,
    refresh: bool,
) -> Result<(Image, String)> {
    let (r, mut client) = open_registry(reference)?;
    let (manifest, config, manifest_digest) =
        fetch_manifest(&mut client, &r, store, platform, refresh)?;
    download_layers(&r, &client, &manifest, store)?;
    let mut layers = Vec::new();
    for (desc, diff_id) in manifest.layers().iter().zip(&config.rootfs.diff_ids) {
        let digest = desc.digest().to_string();
        let stored = store.blob_path(&digest)?;
        layers.push(
            layer_blob(&stored, &digest, desc.size(), diff_id).with_context(|| format!("{r}"))?,
        );
    }
    Ok((Image::new(config, layers), manifest_digest))
}

/// Pulls an image's manifest, config and layers into the store without
/// unpacking them (`kiln pull`); returns the manifest's digest.
pub fn pull_to_store(
    reference: &str,
    store: &Store,
    platform: &Platform,
    refresh: bool,
) -> Result<String> {
    let (r, mut client) = open_registry(reference)?;
    let (manifest, _, digest) = fetch_manifest(&mut client, &r, store, platform, refresh)?;
    download_layers(&r, &client, &manifest, store)?;
    Ok(digest)
}

/// The config of a registry image, for the planner.
pub fn pull_config(
    reference: &str,
    store: &Store,
    platform: &Platform,
    refresh: bool,
) -> Result<ImageConfig> {
    let (r, mut client) = open_registry(reference)?;
    Ok(fetch_manifest(&mut client, &r, store, platform, refresh)?.1)
}

/// An image's manifest digest, manifest and config as JSON (`kiln
/// inspect`): from the store when it was pulled (or built with -t)
/// before, else from its registry.
pub fn manifest_and_config(
    reference: &str,
    store: &Store,
    platform: &Platform,
) -> Result<(String, serde_json::Value, serde_json::Value)> {
    // The registry's answer first; offline, what the store recorded.
    let remote = open_registry(reference)
        .and_then(|(r, mut client)| Ok(fetch_manifest(&mut client, &r, store, platform, true)?.2));
    let digest = match remote {
        Ok(d) => d,
        Err(e) => {
            let built = store.get_ref(&format!(
                "built:{}",
                crate::export::normalize_name(reference)
            ));
            match (built, resolve_offline(reference, store, platform)) {
                (Some(d), _) | (None, Some((d, _))) => d,
                (None, None) => return Err(e),
            }
        }
    };
    let mut digest = digest;
    let mut manifest: serde_json::Value = serde_json::from_slice(&store.read(&digest)?)
        .with_context(|| format!("{reference}: the manifest is not JSON"))?;
    // A multi-platform image kiln built: its index names the platform's
    // manifest.
    if manifest["manifests"].is_array() {
        let index: oci_spec::image::ImageIndex = serde_json::from_value(manifest)
            .with_context(|| format!("{reference}: the index is not valid"))?;
        digest = pick_platform(&index, platform)
            .with_context(|| reference.to_string())?
            .digest()
            .to_string();
        manifest = serde_json::from_slice(&store.read(&digest)?)
            .with_context(|| format!("{reference}: the manifest is not JSON"))?;
    }
    let cfg = manifest["config"]["digest"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let config: serde_json::Value = serde_json::from_slice(&store.read(&cfg)?)
        .with_context(|| format!("{reference}: the config is not JSON"))?;
    Ok((digest, manifest, config))
}

/// What `reference` resolved to when it was last pulled, from the store
/// alone: the platform's manifest digest and the config.
pub fn resolve_offline(
    reference: &str,
    store: &Store,
    platform: &Platform,
) -> Option<(String, ImageConfig)> {
    use oci_spec::image::{ImageIndex, ImageManifest};
    let r = crate::registry::Reference::parse(reference).ok()?;
    let object = r.object();
    let mut digest = if object.starts_with("sha256:") {
        object.to_string()
    } else {
        store.get_ref(&format!("{}/{}:{object}", r.domain, r.repository))?
    };
    let mut bytes = store.read(&digest).ok()?;
    for _ in 0..2 {
        let Ok(idx) = serde_json::from_slice::<ImageIndex>(&bytes) else {
            break;
        };
        digest = pick_platform(&idx, platform).ok()?.digest().to_string();
        bytes = store.read(&digest).ok()?;
    }
    let manifest: ImageManifest = serde_json::from_slice(&bytes).ok()?;
    let cfg = store.read(manifest.config().digest().as_ref()).ok()?;
    Some((digest, ImageConfig::from_slice(&cfg).ok()?))
}

/// A file ADD downloaded.
pub struct Download {
    /// Kept until the build's work directory is removed: the layer reads
    /// it.
    pub path: PathBuf,
    pub size: u64,
    pub name: String,
    pub mtime: Option<i64>,
}

/// Downloads `url` into `work`, checking `--checksum` when given.
pub fn download(url: &str, checksum: Option<&str>, work: &Path) -> Result<Download> {
    if url.starts_with("git@")
        || url.starts_with("git://")
        || url.starts_with("ssh://")
        || url.ends_with(".git")
        || url.contains(".git#")
    {
        bail!("ADD of a git repository ({url}) is not implemented yet in this version of kiln");
    }
    let client = reqwest::blocking::Client::builder()
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot start the HTTP client")?;
    let mut resp = client
        .get(url)
        .send()
        .with_context(|| format!("cannot download {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        bail!("cannot download {url}: the server answered HTTP {status}");
    }
    let mtime = resp
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date);
    let tmp = tempfile::Builder::new()
        .prefix("download-")
        .tempfile_in(work)
        .context("cannot create a temporary file")?;
    let (file, path) = tmp.into_parts();
    let mut w = HashingWriter::new(io::BufWriter::new(file));
    io::copy(&mut resp, &mut w).with_context(|| format!("cannot download {url}"))?;
    let (mut inner, digest, size) = w.finish();
    inner
        .flush()
        .with_context(|| format!("cannot write the download of {url}"))?;
    if let Some(want) = checksum {
        if want != digest {
            bail!("the download of {url} has digest {digest}, but --checksum expects {want}");
        }
    }
    let name = url_basename(url);
    let path = path.keep().context("cannot keep the download")?;
    Ok(Download {
        path,
        size,
        name,
        mtime,
    })
}

/// The owner of every entry of an archive, by cleaned relative path.
fn archive_owners(archive: &Path) -> Result<Owners> {
    let mut out = Owners::new();
    replay_owners(archive, false, &mut out)?;
    Ok(out)
}

/// Owners by cleaned relative path.
pub type Owners = std::collections::HashMap<String, (u32, u32)>;

/// Records the owner of every entry of the (possibly compressed) tar at
/// `path` into `out`; with `whiteouts`, `.wh.` markers remove what they
/// hide, as applying the layer does.
fn replay_owners(path: &Path, whiteouts: bool, out: &mut Owners) -> Result<()> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let (reader, _) = apply::decompressed(io::BufReader::new(f))
        .with_context(|| format!("cannot decompress {}", path.display()))?;
    let mut ar = tar::Archive::new(reader);
    let entries = ar
        .entries()
        .with_context(|| format!("cannot read {}", path.display()))?;
    for e in entries {
        let e = e.with_context(|| format!("cannot read {}", path.display()))?;
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let rel = crate::plan::values::clean_path(&format!("/{name}"))
            .trim_start_matches('/')
            .to_string();
        let (dir, base) = rel.rsplit_once('/').unwrap_or(("", rel.as_str()));
        if whiteouts {
            if let Some(hidden) = base.strip_prefix(".wh.") {
                let gone = if hidden == ".wh..opq" {
                    dir.to_string()
                } else {
                    crate::snapshot::join_rel(dir, hidden)
                };
                let prefix = format!("{gone}/");
                out.retain(|k, _| !k.starts_with(&prefix) && (hidden == ".wh..opq" || *k != gone));
                continue;
            }
        }
        let h = e.header();
        let (uid, gid) = (h.uid().unwrap_or(0), h.gid().unwrap_or(0));
        out.insert(
            rel,
            (
                u32::try_from(uid).unwrap_or(0),
                u32::try_from(gid).unwrap_or(0),
            ),
        );
    }
    Ok(())
}

/// The file name ADD gives a download: the last segment of the URL's
/// path, percent-decoded, or `__unnamed__` when there is none (BuildKit's
/// rule).
pub fn url_basename(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    let last = path.rsplit('/').next().unwrap_or("");
    let bytes = last.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    let name = String::from_utf8_lossy(&out).into_owned();
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        "__unnamed__".to_string()
    } else {
        name
    }
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110's IMF-fixdate).
pub fn parse_http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, mon, year, hms, "GMT"] = parts.as_slice() else {
        return None;
    };
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = months.iter().position(|x| x == mon)? as i64 + 1;
    let d: i64 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    // Years are four digits in an IMF-fixdate; anything else is refused
    // rather than allowed to overflow.
    let y: i64 = year.parse().ok().filter(|y| (1..=9999).contains(y))?;
    let t: Vec<i64> = hms
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [hh, mm, ss] = t.as_slice() else {
        return None;
    };
    if !(0..24).contains(hh) || !(0..60).contains(mm) || !(0..=60).contains(ss) {
        return None;
    }
    // days_from_civil (Howard Hinnant).
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Extracts the archive at `archive` into the target directory `dest`,
/// keeping the archive's owners and modes (`--chown` overrides owners).
pub fn extract_into(
    archive: &Path,
    t: &mut copy::Target,
    dest: &str,
    s: &copy::Settings,
    work: &Path,
) -> Result<()> {
    // Kept until the build's work directory is removed: the layer reads
    // the extracted files.
    let scratch = tempfile::Builder::new()
        .prefix("extract-")
        .tempdir_in(work)
        .context("cannot create a scratch directory")?
        .keep();
    let f = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let (reader, _) = apply::decompressed(io::BufReader::new(f))
        .with_context(|| format!("cannot decompress {}", archive.display()))?;
    // The archive's own owners are kept; --chown only owns the
    // destination directory when ADD creates it (as BuildKit does).
    let opts = ApplyOptions {
        whiteouts: false,
        same_owner: true,
        chown: None,
        devices: true,
        overlay: false,
    };
    apply::apply(reader, &scratch, "", &opts)
        .with_context(|| format!("cannot extract {}", archive.display()))?;
    t.ensure_dir(dest, s.chown.unwrap_or((0, 0)), s.now)?;
    // Without root the extracted files belong to the user running kiln;
    // the owners the archive gives are read from its headers.
    let owners = if crate::userns::full_ids() {
        None
    } else {
        Some(archive_owners(archive)?)
    };
    let owner_of = owners
        .as_ref()
        .map(|m| move |rel: &str| m.get(rel).copied());
    let src = copy::Src {
        root: &scratch,
        matcher: None,
        reset_owner: false,
        what: "archive".into(),
        owners: owner_of.as_ref().map(|f| f as &copy::OwnerOf<'_>),
    };
    let keep = copy::Settings {
        chown: None,
        chmod: None,
        now: s.now,
        exclude: None,
    };
    for item in copy::expand(&src, "/")? {
        copy::copy_dir_contents(&src, &item, &keep, t, dest, false)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_names() {
        assert_eq!(url_basename("http://example.com/"), "__unnamed__");
        assert_eq!(url_basename("http://example.com"), "__unnamed__");
        assert_eq!(
            url_basename("http://localhost:8080/dl/a%20b.txt?x=1#f"),
            "a b.txt"
        );
        assert_eq!(url_basename("https://h/x/tool-1.2:3.tgz"), "tool-1.2:3.tgz");
        assert_eq!(url_basename("https://h/x/%2F"), "__unnamed__");
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Tue, 14 Nov 2023 22:13:20 GMT"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(
            parse_http_date("Tue, 14 Nov 99999999999999999 22:13:20 GMT"),
            None
        );
        assert_eq!(parse_http_date("Tue, 14 Nov 2023 99:13:20 GMT"), None);
    }

    #[test]
    fn named_context_values() {
        assert_eq!(
            NamedContext::parse("./dir"),
            Ok(NamedContext::Dir("./dir".into()))
        );
        assert_eq!(
            NamedContext::parse("oci-layout:///tmp/l:v1"),
            Ok(NamedContext::OciLayout {
                path: "/tmp/l".into(),
                reference: Some("v1".into())
            })
        );
        assert_eq!(
            NamedContext::parse("oci-layout://l@sha256:abc"),
            Ok(NamedContext::OciLayout {
                path: "l".into(),
                reference: Some("sha256:abc".into())
            })
        );
        assert!(NamedContext::parse("git://x").is_err());
    }
}
