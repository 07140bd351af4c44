//! Image types shared by the planner, the solver and the exporters: the
//! config document, canonical JSON, references, and a finished image with
//! its manifest.
pub mod canonical;
pub mod config;
pub mod reference;

use crate::layer::compress::Compression;
use config::ImageConfig;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// A stored layer blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// Digest of the blob as stored (compressed).
    pub digest: String,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    pub size: u64,
    pub compression: Compression,
}

impl LayerBlob {
    /// The layer's media type; Docker has no zstd type, so zstd layers
    /// keep the OCI one in Docker manifests too (as BuildKit does).
    pub fn media_type(&self, oci: bool) -> &'static str {
        match (self.compression, oci) {
            (Compression::Gzip { .. }, true) => "application/vnd.oci.image.layer.v1.tar+gzip",
            (Compression::Gzip { .. }, false) => {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            }
            (Compression::Zstd { .. }, _) => "application/vnd.oci.image.layer.v1.tar+zstd",
            (Compression::None, true) => "application/vnd.oci.image.layer.v1.tar",
            (Compression::None, false) => "application/vnd.docker.image.rootfs.diff.tar",
        }
    }
}

/// A finished image: its config and layers, bottom first.
#[derive(Debug, Clone)]
pub struct Image {
    pub config: ImageConfig,
    pub layers: Vec<LayerBlob>,
    /// Annotations of the manifest (`--annotation`).
    pub annotations: std::collections::BTreeMap<String, String>,
    /// Annotations of the descriptor that names the manifest: in the
    /// index, or for one image in an OCI layout's index.json
    /// (`--annotation manifest-descriptor:`).
    pub descriptor_annotations: std::collections::BTreeMap<String, String>,
}

/// A JSON document with its digest.
#[derive(Debug, Clone)]
pub struct Blob {
    pub media_type: &'static str,
    pub bytes: Vec<u8>,
    pub digest: String,
}

impl Blob {
    fn new(media_type: &'static str, bytes: Vec<u8>) -> Blob {
        let digest = format!("sha256:{}", crate::layer::compress::sha256_hex(&bytes));
        Blob {
            media_type,
            bytes,
            digest,
        }
    }
}

/// The config and manifest documents of an image, in OCI or Docker media
/// types.
pub struct Documents {
    pub config: Blob,
    pub manifest: Blob,
}

/// An OCI descriptor (oci-spec's type): media type, size and digest.
pub fn descriptor(
    media_type: &str,
    size: u64,
    digest: &str,
) -> anyhow::Result<oci_spec::image::Descriptor> {
    let d: oci_spec::image::Digest = digest
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid digest {digest:?}: {e}"))?;
    Ok(oci_spec::image::Descriptor::new(
        oci_spec::image::MediaType::from(media_type),
        size,
        d,
    ))
}

impl Image {
    /// An image without annotations.
    pub fn new(config: ImageConfig, layers: Vec<LayerBlob>) -> Image {
        Image {
            config,
            layers,
            annotations: Default::default(),
            descriptor_annotations: Default::default(),
        }
    }

    /// Serializes the config and the manifest (canonical JSON; the
    /// manifest is oci-spec's type).
    pub fn documents(&self, oci: bool) -> anyhow::Result<Documents> {
        let config = Blob::new(
            if oci { OCI_CONFIG } else { DOCKER_CONFIG },
            canonical::to_vec(&self.config)?,
        );
        let layers = self
            .layers
            .iter()
            .map(|l| descriptor(l.media_type(oci), l.size, &l.digest))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let manifest = oci_spec::image::ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(oci_spec::image::MediaType::from(if oci {
                OCI_MANIFEST
            } else {
                DOCKER_MANIFEST
            }))
            .config(descriptor(
                config.media_type,
                config.bytes.len() as u64,
                &config.digest,
            )?)
            .layers(layers)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot make the manifest: {e}"))?;
        let mut manifest = manifest;
        if !self.annotations.is_empty() {
            manifest.set_annotations(Some(
                self.annotations
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ));
        }
        let manifest = Blob::new(
            if oci { OCI_MANIFEST } else { DOCKER_MANIFEST },
            canonical::to_vec(&manifest)?,
        );
        Ok(Documents { config, manifest })
    }
}

/// The index of a multi-platform image: one manifest per image, each
/// descriptor naming the platform it was built for (canonical JSON;
/// oci-spec's type). With `oci` false, Docker's manifest list.
pub fn index(
    manifests: &[&Documents],
    images: &[(&Image, &crate::plan::Platform)],
    oci: bool,
    annotations: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<Blob> {
    let mut descs = Vec::new();
    for (docs, (image, platform)) in manifests.iter().zip(images) {
        let mut d = descriptor(
            docs.manifest.media_type,
            docs.manifest.bytes.len() as u64,
            &docs.manifest.digest,
        )?;
        let mut p = oci_spec::image::PlatformBuilder::default()
            .architecture(oci_spec::image::Arch::from(platform.arch.as_str()))
            .os(oci_spec::image::Os::from(platform.os.as_str()));
        if !platform.variant.is_empty() {
            p = p.variant(platform.variant.clone());
        }
        d.set_platform(Some(
            p.build()
                .map_err(|e| anyhow::anyhow!("cannot describe the platform: {e}"))?,
        ));
        if !image.descriptor_annotations.is_empty() {
            d.set_annotations(Some(
                image
                    .descriptor_annotations
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ));
        }
        descs.push(d);
    }
    let media_type = if oci { OCI_INDEX } else { DOCKER_MANIFEST_LIST };
    let mut index = oci_spec::image::ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(oci_spec::image::MediaType::from(media_type))
        .manifests(descs)
        .build()
        .map_err(|e| anyhow::anyhow!("cannot make the image index: {e}"))?;
    if !annotations.is_empty() {
        index.set_annotations(Some(
            annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ));
    }
    Ok(Blob::new(media_type, canonical::to_vec(&index)?))
}
