//! Exporters: a finished image (and the target stage's filesystem) written
//! as an OCI layout tarball, a `docker load` archive, a directory, or a
//! filesystem tarball (`-o type=...,dest=...`, buildx syntax).
//!
//! Files are written to a temporary name beside the destination and
//! renamed when complete, so a failed export never leaves a partial file
//! under the destination's name. Archives are deterministic: sorted
//! entries, fixed times, numeric owners.

mod archive;

pub use archive::copy_dir;

use crate::image::{Blob, Image};
use crate::layer::compress::Compression;
use crate::layer::writer::{self, Entry, FileSource, WriteOptions};
use crate::store::Store;
use anyhow::{anyhow, bail, Context as _, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Oci,
    Docker,
    Local,
    Tar,
}

/// Where to write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    Stdout,
    Path(PathBuf),
}

/// One `--output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub kind: Kind,
    pub dest: Dest,
    /// `oci-mediatypes=`: OCI media types (the default for `oci`) or
    /// Docker's (the default for `docker`).
    pub oci_mediatypes: bool,
    /// `compression=`.
    pub compression: Option<Compression>,
    /// `name=`: image names, besides `-t`.
    pub names: Vec<String>,
    /// `platform-split=` (type=local): a multi-platform build's files go
    /// to a directory per platform (`linux_arm64/`), as by default, or
    /// all into one.
    pub platform_split: bool,
}

impl Output {
    /// Parses an `--output` value (`type=oci,dest=out.tar`, or a bare
    /// path meaning `type=local,dest=PATH`).
    pub fn parse(spec: &str) -> Result<Output, String> {
        // As buildx: `-o -` is a tarball of the filesystem on stdout.
        if spec == "-" {
            return Ok(Output {
                kind: Kind::Tar,
                dest: Dest::Stdout,
                oci_mediatypes: true,
                compression: None,
                names: Vec::new(),
                platform_split: true,
            });
        }
        if !spec.contains('=') {
            return Ok(Output {
                kind: Kind::Local,
                dest: dest_of(spec),
                oci_mediatypes: true,
                compression: None,
                names: Vec::new(),
                platform_split: true,
            });
        }
        let mut fields = BTreeMap::new();
        for f in spec.split(',') {
            let (k, v) = f
                .split_once('=')
                .ok_or_else(|| format!("--output {spec:?}: field {f:?} is not key=value"))?;
            fields.insert(k.trim().to_string(), v.trim().to_string());
        }
        let kind = match fields.remove("type").as_deref() {
            Some("oci") => Kind::Oci,
            Some("docker") => Kind::Docker,
            Some("local") => Kind::Local,
            Some("tar") => Kind::Tar,
            Some(t @ ("image" | "registry")) => {
                return Err(format!(
                    "--output type={t}: to push to a registry, use --push with -t NAME"
                ))
            }
            Some(t) => {
                return Err(format!(
                    "--output type {t:?} is not one of oci, docker, local, tar"
                ))
            }
            None => return Err(format!("--output {spec:?} needs type=...")),
        };
        let dest = match fields.remove("dest") {
            Some(d) if !d.is_empty() => dest_of(&d),
            _ => {
                return Err(format!(
                    "--output {spec:?} needs dest=PATH (or dest=- for stdout)"
                ))
            }
        };
        if kind == Kind::Local && dest == Dest::Stdout {
            return Err("--output type=local writes a directory; use type=tar for stdout".into());
        }
        let oci_mediatypes = match fields.remove("oci-mediatypes").as_deref() {
            None => kind != Kind::Docker,
            Some("true") => true,
            Some("false") => false,
            Some(v) => {
                return Err(format!(
                    "--output oci-mediatypes={v}: expected true or false"
                ))
            }
        };
        let mut compression = match fields.remove("compression") {
            Some(c) => {
                Some(Compression::parse(&c).map_err(|e| format!("--output compression={c}: {e}"))?)
            }
            None => None,
        };
        if let Some(l) = fields.remove("compression-level") {
            let level: i32 = l
                .parse()
                .map_err(|_| format!("--output compression-level={l}: expected a number"))?;
            let c = compression.unwrap_or_default();
            compression = Some(
                c.with_level(level)
                    .map_err(|e| format!("--output compression-level={l}: {e}"))?,
            );
        }
        let names: Vec<String> = fields
            .remove("name")
            .map(|n| n.split(';').map(str::to_string).collect())
            .unwrap_or_default();
        for n in &names {
            crate::image::reference::validate(n).map_err(|e| format!("--output name={n}: {e}"))?;
            if n.contains('@') {
                return Err(format!(
                    "--output name={n}: an image name cannot carry a digest"
                ));
            }
        }
        let platform_split = match fields.remove("platform-split").as_deref() {
            None | Some("true") => true,
            Some("false") if kind == Kind::Local => false,
            Some("false") => {
                return Err(format!(
                    "--output {spec:?}: platform-split=false is for type=local only"
                ))
            }
            Some(v) => {
                return Err(format!(
                    "--output platform-split={v}: expected true or false"
                ))
            }
        };
        // Attributes buildx has that change nothing here.
        for ignored in ["force-compression", "rewrite-timestamp", "annotation"] {
            fields.remove(ignored);
        }
        if let Some(k) = fields.keys().next() {
            return Err(format!("--output {spec:?}: unknown attribute {k:?}"));
        }
        Ok(Output {
            kind,
            dest,
            oci_mediatypes,
            compression,
            names,
            platform_split,
        })
    }
}

fn dest_of(s: &str) -> Dest {
    if s == "-" {
        Dest::Stdout
    } else {
        Dest::Path(PathBuf::from(s))
    }
}

/// One image of an export, with its filesystem.
pub struct Part<'a> {
    pub image: &'a Image,
    /// The platform it was built for: what an index and a multi-platform
    /// directory name it by.
    pub platform: &'a crate::plan::Platform,
    /// The image's root filesystem (for `type=local` and `type=tar`).
    pub rootfs: &'a Path,
    /// Owner and mode by path, as the layers record them: they win over
    /// what the files on disk show (which, without root, is the user
    /// running kiln).
    pub owners: &'a BTreeMap<String, (u32, u32, Option<u32>)>,
}

impl Part<'_> {
    /// The directory a multi-platform export gives this image's files:
    /// `linux_arm64`, `linux_arm_v7` (as BuildKit names them). From the
    /// requested platform, which `Platform::parse` checked: never from a
    /// config a registry gave.
    pub fn platform_dir(&self) -> String {
        let p = self.platform;
        let mut d = format!("{}_{}", p.os, p.arch);
        if !p.variant.is_empty() {
            d.push('_');
            d.push_str(&p.variant);
        }
        d
    }
}

/// What an export needs besides the output spec.
pub struct Export<'a> {
    /// The images: one, or one per platform of a multi-platform build
    /// (which exports as an image index).
    pub parts: &'a [Part<'a>],
    pub store: &'a Store,
    /// `-t` values.
    pub tags: &'a [String],
    pub source_date_epoch: Option<i64>,
    /// The index's annotations (`--annotation index:K=V`).
    pub index_annotations: &'a BTreeMap<String, String>,
    /// Annotations of the index's descriptor in an OCI layout's
    /// index.json (`--annotation index-descriptor:K=V`).
    pub index_descriptor_annotations: &'a BTreeMap<String, String>,
}

impl Export<'_> {
    fn multi(&self) -> bool {
        self.parts.len() > 1
    }
}

/// The digest of the image's manifest, as `--iidfile` and registries see it.
pub fn image_digest(image: &Image, oci: bool) -> Result<String> {
    Ok(image.documents(oci)?.manifest.digest)
}

/// The documents of an export's images and, for several, their index.
pub struct Tree {
    pub images: Vec<crate::image::Documents>,
    pub index: Option<Blob>,
}

impl Tree {
    pub fn new(e: &Export, oci: bool) -> Result<Tree> {
        let images = e
            .parts
            .iter()
            .map(|p| p.image.documents(oci))
            .collect::<Result<Vec<_>>>()?;
        let index = if e.multi() {
            let docs: Vec<&crate::image::Documents> = images.iter().collect();
            let imgs: Vec<(&Image, &crate::plan::Platform)> =
                e.parts.iter().map(|p| (p.image, p.platform)).collect();
            Some(crate::image::index(&docs, &imgs, oci, e.index_annotations)?)
        } else {
            None
        };
        Ok(Tree { images, index })
    }

    /// What names the result: the index, or the one manifest.
    pub fn top(&self) -> Result<&Blob> {
        match (&self.index, self.images.first()) {
            (Some(i), _) => Ok(i),
            (None, Some(d)) => Ok(&d.manifest),
            (None, None) => bail!("no image was built"),
        }
    }
}

/// Writes one output.
pub fn write(out: &Output, e: &Export) -> Result<()> {
    let mut tags: Vec<String> = e.tags.to_vec();
    tags.extend(out.names.iter().cloned());
    match out.kind {
        Kind::Local => {
            let Dest::Path(dir) = &out.dest else {
                bail!("type=local needs a directory");
            };
            for p in e.parts {
                if e.multi() && out.platform_split {
                    archive::copy_dir(p.rootfs, &dir.join(p.platform_dir()))?;
                } else {
                    archive::copy_dir(p.rootfs, dir)?;
                }
            }
            Ok(())
        }
        Kind::Tar => to_dest(&out.dest, |w| {
            let mut all = Vec::new();
            for p in e.parts {
                let prefix = if e.multi() {
                    all.push(archive::dir(&p.platform_dir()));
                    format!("{}/", p.platform_dir())
                } else {
                    String::new()
                };
                let mut entries = writer::entries_from_dir(p.rootfs, "")?;
                for entry in &mut entries {
                    if let Some(&(uid, gid, mode)) = p.owners.get(&entry.path) {
                        entry.uid = uid;
                        entry.gid = gid;
                        if let Some(m) = mode {
                            entry.mode = m;
                        }
                    }
                    entry.path.insert_str(0, &prefix);
                }
                all.extend(entries);
            }
            let opts = WriteOptions {
                source_date_epoch: e.source_date_epoch,
                ..Default::default()
            };
            writer::write_tar(all, w, &opts)?;
            Ok(())
        }),
        Kind::Oci => to_dest(&out.dest, |w| write_oci(w, e, &tags, out.oci_mediatypes)),
        Kind::Docker => {
            if e.multi() {
                bail!(
                    "a docker archive holds one platform's image (docker load takes no index, \
                     as buildx's docker exporter does not): build one --platform, or use \
                     -o type=oci or --push for several"
                );
            }
            to_dest(&out.dest, |w| write_docker(w, e, &tags, out.oci_mediatypes))
        }
    }
}

/// Runs `f` on the destination: stdout, or a temporary file renamed into
/// place when `f` succeeds and removed when it fails.
fn to_dest(dest: &Dest, f: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    match dest {
        Dest::Stdout => {
            let stdout = std::io::stdout();
            let mut lock = std::io::BufWriter::new(stdout.lock());
            f(&mut lock)?;
            lock.flush().context("cannot write to stdout")
        }
        Dest::Path(p) => {
            let dir = match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let name = p
                .file_name()
                .ok_or_else(|| anyhow!("{} is not a file name", p.display()))?;
            let tmp = tempfile::Builder::new()
                .prefix(&format!(".{}.", name.to_string_lossy()))
                .suffix(".partial")
                .tempfile_in(&dir)
                .with_context(|| format!("cannot write {}", p.display()))?;
            let tmp_path = tmp.path().to_path_buf();
            crate::cleanup::register(&tmp_path);
            let result = write_and_persist(tmp, p, f);
            crate::cleanup::forget(&tmp_path);
            result
        }
    }
}

/// Writes the temporary file through `f` and renames it to `p`.
fn write_and_persist(
    tmp: tempfile::NamedTempFile,
    p: &Path,
    f: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp);
    f(&mut w).with_context(|| format!("cannot write {}", p.display()))?;
    let tmp = w
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("cannot write {}", p.display()))?;
    // A temporary file is 0600; an output is an ordinary file.
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    tmp.persist(p)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", p.display()))?;
    Ok(())
}

/// Entries for the blobs of the images, plus their documents.
fn blob_entries(e: &Export, docs: &[&Blob], entries: &mut Vec<Entry>) -> Result<()> {
    entries.push(archive::dir("blobs"));
    entries.push(archive::dir("blobs/sha256"));
    let mut seen = std::collections::BTreeSet::new();
    for d in docs {
        if seen.insert(d.digest.clone()) {
            entries.push(archive::file(
                &blob_name(&d.digest)?,
                FileSource::Bytes(d.bytes.clone()),
                d.bytes.len() as u64,
            ));
        }
    }
    for l in e.parts.iter().flat_map(|p| &p.image.layers) {
        if seen.insert(l.digest.clone()) {
            let p = e.store.blob_path(&l.digest)?;
            let size = std::fs::metadata(&p)
                .with_context(|| format!("layer {} is missing from the store", l.digest))?
                .len();
            entries.push(archive::file(
                &blob_name(&l.digest)?,
                FileSource::Path(p),
                size,
            ));
        }
    }
    Ok(())
}

fn blob_name(digest: &str) -> Result<String> {
    Ok(format!(
        "blobs/sha256/{}",
        crate::store::digest_hex(digest)?
    ))
}

fn layout_file() -> Vec<u8> {
    br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()
}

/// The index.json of a layout holding one image.
fn index_json(
    manifest: &Blob,
    tags: &[String],
    created: Option<&str>,
    extra: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let mut descs = Vec::new();
    let names: Vec<Option<&String>> = if tags.is_empty() {
        vec![None]
    } else {
        tags.iter().map(Some).collect()
    };
    for name in names {
        let mut ann: std::collections::HashMap<String, String> =
            extra.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if let Some(n) = name {
            let full = normalize_name(n);
            ann.insert(
                "org.opencontainers.image.ref.name".to_string(),
                tag_of(&full),
            );
            ann.insert("io.containerd.image.name".to_string(), full);
        }
        if let Some(c) = created {
            ann.insert(
                "org.opencontainers.image.created".to_string(),
                c.to_string(),
            );
        }
        let mut d = crate::image::descriptor(
            manifest.media_type,
            manifest.bytes.len() as u64,
            &manifest.digest,
        )?;
        if !ann.is_empty() {
            d.set_annotations(Some(ann));
        }
        descs.push(d);
    }
    let index = oci_spec::image::ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(oci_spec::image::MediaType::ImageIndex)
        .manifests(descs)
        .build()
        .map_err(|e| anyhow!("cannot make the image index: {e}"))?;
    // oci-spec keeps annotations in a HashMap; canonical JSON sorts them.
    Ok(crate::image::canonical::to_vec(&index)?)
}

/// `app` → `docker.io/library/app:latest`, as Docker names images.
pub fn normalize_name(r: &str) -> String {
    // The registry client's reference parser is the one normalization;
    // names were validated before a build, so a parse failure only keeps
    // the name as given.
    crate::registry::Reference::parse(r).map_or_else(|_| r.to_string(), |r| r.to_string())
}

/// The tag of a normalized name (`latest` when it only has a digest).
fn tag_of(full: &str) -> String {
    let name = full.split('@').next().unwrap_or(full);
    let last = name.rsplit('/').next().unwrap_or(name);
    last.rsplit_once(':')
        .map_or("latest".to_string(), |(_, t)| t.to_string())
}

/// The short form Docker shows: `app:1.4`, `ghcr.io/o/app:1.4`.
fn familiar_name(full: &str) -> String {
    full.strip_prefix("docker.io/library/")
        .or_else(|| full.strip_prefix("docker.io/"))
        .unwrap_or(full)
        .to_string()
}

/// An OCI image layout archive: `oci-layout`, `index.json` (naming the
/// image, or the index of several), the blobs, and any `extra` files.
fn write_layout(
    w: &mut dyn Write,
    e: &Export,
    tree: &Tree,
    tags: &[String],
    extra: Vec<Entry>,
) -> Result<()> {
    let layout = layout_file();
    let created = e
        .parts
        .first()
        .and_then(|p| p.image.config.created.as_deref());
    // The descriptor index.json gives the image (or the index) carries
    // the descriptor annotations asked for.
    let described = match (&tree.index, e.parts) {
        (None, [one]) => &one.image.descriptor_annotations,
        _ => e.index_descriptor_annotations,
    };
    let index = index_json(tree.top()?, tags, created, described)?;
    let mut entries = vec![
        archive::file(
            "oci-layout",
            FileSource::Bytes(layout.clone()),
            layout.len() as u64,
        ),
        archive::file(
            "index.json",
            FileSource::Bytes(index.clone()),
            index.len() as u64,
        ),
    ];
    entries.extend(extra);
    let mut docs: Vec<&Blob> = Vec::new();
    for d in &tree.images {
        docs.push(&d.config);
        docs.push(&d.manifest);
    }
    docs.extend(tree.index.as_ref());
    blob_entries(e, &docs, &mut entries)?;
    writer::write_tar(entries, w, &WriteOptions::default())?;
    Ok(())
}

fn write_oci(w: &mut dyn Write, e: &Export, tags: &[String], oci: bool) -> Result<()> {
    write_layout(w, e, &Tree::new(e, oci)?, tags, Vec::new())
}

/// A `docker load` archive: `manifest.json` (what Docker 20.10 reads) and
/// an OCI layout (what Docker 25+ also reads), sharing one set of blobs.
fn write_docker(w: &mut dyn Write, e: &Export, tags: &[String], oci: bool) -> Result<()> {
    let tree = Tree::new(e, oci)?;
    let (Some(part), Some(docs)) = (e.parts.first(), tree.images.first()) else {
        bail!("no image was built");
    };
    let repo_tags: Vec<String> = tags
        .iter()
        .map(|t| familiar_name(&normalize_name(t)))
        .filter(|t| !t.contains('@'))
        .collect();
    let layers: Vec<String> = part
        .image
        .layers
        .iter()
        .map(|l| blob_name(&l.digest))
        .collect::<Result<_>>()?;
    let manifest = serde_json::json!([{
        "Config": blob_name(&docs.config.digest)?,
        "RepoTags": repo_tags,
        "Layers": layers,
    }]);
    let manifest = serde_json::to_vec(&manifest)?;
    let len = manifest.len() as u64;
    let extra = vec![archive::file(
        "manifest.json",
        FileSource::Bytes(manifest),
        len,
    )];
    write_layout(w, e, &tree, tags, extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize_as_docker_does() {
        assert_eq!(normalize_name("app"), "docker.io/library/app:latest");
        assert_eq!(normalize_name("me/app:1"), "docker.io/me/app:1");
        assert_eq!(
            normalize_name("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(
            normalize_name("registry.example.com/app:1.4"),
            "registry.example.com/app:1.4"
        );
        assert_eq!(familiar_name(&normalize_name("app:2")), "app:2");
        assert_eq!(tag_of("registry.example.com:5000/app:1.4"), "1.4");
        assert_eq!(
            normalize_name("docker.io/app"),
            "docker.io/library/app:latest"
        );
        assert_eq!(
            normalize_name("index.docker.io/library/y:2"),
            "docker.io/library/y:2"
        );
        assert_eq!(
            familiar_name(&normalize_name("docker.io/me/x")),
            "me/x:latest"
        );
    }

    #[test]
    fn output_specs() {
        let o = Output::parse("type=docker,dest=-").expect("ok");
        assert_eq!(
            (o.kind, o.dest, o.oci_mediatypes),
            (Kind::Docker, Dest::Stdout, false)
        );
        let o = Output::parse("out").expect("ok");
        assert_eq!(o.kind, Kind::Local);
        assert!(Output::parse("type=oci").is_err());
        assert!(Output::parse("type=local,dest=-").is_err());
        assert!(Output::parse("type=oci,dest=x,bogus=1").is_err());
        let o = Output::parse("type=oci,dest=x,compression=zstd,oci-mediatypes=false").expect("ok");
        assert!(!o.oci_mediatypes);
        assert!(matches!(o.compression, Some(Compression::Zstd { .. })));
    }
}
