//! Reading kiln's outputs back in the tests: OCI layout and docker
//! archives, their documents, and a listing of each layer in the format of
//! `fixtures/build/*/layers.txt` (path, type, mode, uid, gid, size,
//! content sha256, link target, mtime).

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output};

/// The files of an archive, by name.
pub fn tar_files(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut ar = tar::Archive::new(bytes);
    for e in ar.entries().expect("tar entries") {
        let mut e = e.expect("tar entry");
        let name = e.path().expect("entry path").to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("entry data");
        out.insert(name, data);
    }
    out
}

/// An image read from an archive.
pub struct ReadImage {
    pub index: Value,
    pub manifest: Value,
    pub manifest_digest: String,
    pub config: Value,
    pub config_raw: Vec<u8>,
    /// Uncompressed layer tars.
    pub layers: Vec<Vec<u8>>,
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(bytes))
}

fn blob<'a>(files: &'a BTreeMap<String, Vec<u8>>, digest: &str) -> &'a [u8] {
    let name = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    let b = files
        .get(&name)
        .unwrap_or_else(|| panic!("{name} missing from the archive"));
    assert_eq!(sha(b), digest, "blob {name} does not match its digest");
    b
}

/// Reads an OCI layout archive (also the layout inside a docker archive),
/// checking every digest and diffID.
pub fn read_oci(bytes: &[u8]) -> ReadImage {
    let files = tar_files(bytes);
    let layout: Value = serde_json::from_slice(&files["oci-layout"]).expect("oci-layout json");
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: Value = serde_json::from_slice(&files["index.json"]).expect("index json");
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .expect("manifest digest")
        .to_string();
    let manifest_raw = blob(&files, &manifest_digest);
    let manifest: Value = serde_json::from_slice(manifest_raw).expect("manifest json");
    let config_raw = blob(
        &files,
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest"),
    )
    .to_vec();
    let config: Value = serde_json::from_slice(&config_raw).expect("config json");
    let mut layers = Vec::new();
    let empty = Vec::new();
    let descs = manifest["layers"].as_array().unwrap_or(&empty);
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap_or(&empty);
    assert_eq!(descs.len(), diff_ids.len(), "layers vs diff_ids");
    for (d, diff) in descs.iter().zip(diff_ids) {
        let raw = blob(&files, d["digest"].as_str().expect("layer digest"));
        assert_eq!(d["size"].as_u64(), Some(raw.len() as u64), "layer size");
        let mt = d["mediaType"].as_str().expect("media type");
        let tar = decompress(raw, mt);
        assert_eq!(
            Some(sha(&tar).as_str()),
            diff.as_str(),
            "diffID of a {mt} layer"
        );
        layers.push(tar);
    }
    ReadImage {
        index,
        manifest,
        manifest_digest,
        config,
        config_raw,
        layers,
    }
}

pub fn decompress(raw: &[u8], media_type: &str) -> Vec<u8> {
    let mut out = Vec::new();
    if media_type.ends_with("gzip") {
        flate2::read::GzDecoder::new(raw)
            .read_to_end(&mut out)
            .expect("gunzip");
    } else if media_type.ends_with("zstd") {
        out = zstd::decode_all(raw).expect("unzstd");
    } else {
        out = raw.to_vec();
    }
    out
}

/// One line per tar entry, in tar order, as the fixtures have them.
pub fn listing(tar_bytes: &[u8]) -> Vec<String> {
    let mut ar = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        let h = e.header().clone();
        let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let kind = match h.entry_type() {
            tar::EntryType::Regular => "file",
            tar::EntryType::Directory => "dir",
            tar::EntryType::Symlink => "symlink",
            tar::EntryType::Link => "hardlink",
            tar::EntryType::Char => "char",
            tar::EntryType::Block => "block",
            tar::EntryType::Fifo => "fifo",
            other => panic!("unexpected entry type {other:?} for {path}"),
        };
        let link = e.link_name_bytes().map_or("-".to_string(), |l| {
            String::from_utf8_lossy(&l).into_owned()
        });
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("data");
        let hash = if kind == "file" {
            hex(&data)
        } else {
            "-".into()
        };
        out.push(format!(
            "{path}\t{kind}\t{:04o}\t{}\t{}\t{}\t{hash}\t{link}\t{}",
            h.mode().expect("mode") & 0o7777,
            h.uid().expect("uid"),
            h.gid().expect("gid"),
            data.len(),
            h.mtime().expect("mtime"),
        ));
    }
    out
}

/// A temporary directory holding a build context and a store.
pub struct Ctx {
    pub dir: tempfile::TempDir,
}

impl Ctx {
    pub fn new(dockerfile: &str, files: &[(&str, &str)]) -> Ctx {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("ctx")).expect("mkdir ctx");
        std::fs::write(dir.path().join("ctx/Dockerfile"), dockerfile).expect("write Dockerfile");
        let c = Ctx { dir };
        for (name, body) in files {
            c.write(name, body);
        }
        c
    }

    pub fn ctx(&self) -> PathBuf {
        self.dir.path().join("ctx")
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn write(&self, name: &str, body: &str) {
        let p = self.ctx().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, body).expect("write context file");
    }

    /// Runs `kiln build` in this context with a private store.
    pub fn kiln(&self, args: &[&str]) -> Output {
        self.kiln_env(args, &[])
    }

    pub fn kiln_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(crate::util::kiln_bin());
        cmd.arg("build")
            .arg("--cache-dir")
            .arg(self.path("store"))
            .args(args)
            .arg(self.ctx())
            .env_remove("SOURCE_DATE_EPOCH");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("running kiln")
    }

    /// Builds to an OCI archive and reads it back.
    pub fn build_oci(&self, extra: &[&str]) -> ReadImage {
        let out = self.path("out.tar");
        let dest = format!("type=oci,dest={}", out.display());
        let mut args = vec!["-o", dest.as_str()];
        args.extend_from_slice(extra);
        let o = self.kiln(&args);
        assert!(
            o.status.success(),
            "kiln build failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        read_oci(&std::fs::read(&out).expect("reading out.tar"))
    }
}

/// Stderr of a run, for messages.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every path of every layer of the image, in order.
pub fn all_paths(img: &ReadImage) -> Vec<String> {
    img.layers
        .iter()
        .flat_map(|l| listing(l))
        .map(|l| l.split('\t').next().unwrap_or("").to_string())
        .collect()
}

/// The listing line of `path`, split into its fields (path, type, mode,
/// uid, gid, size, sha256, link, mtime).
pub fn entry<'a>(lines: &'a [String], path: &str) -> Vec<&'a str> {
    lines
        .iter()
        .find(|l| l.split('\t').next() == Some(path))
        .unwrap_or_else(|| panic!("{path} is not in the listing:\n{}", lines.join("\n")))
        .split('\t')
        .collect()
}

/// What a fake HTTP server answers: a status line, a content type, the
/// body, and the Content-Length it claims (more than the body: a body cut
/// short).
pub struct Reply {
    pub status: &'static str,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub declared: usize,
    /// A `Last-Modified` header, when set.
    pub last_modified: Option<&'static str>,
}

impl Reply {
    pub fn ok(content_type: &'static str, body: Vec<u8>) -> Reply {
        let declared = body.len();
        Reply {
            status: "200 OK",
            content_type,
            body,
            declared,
            last_modified: None,
        }
    }

    pub fn status(status: &'static str) -> Reply {
        Reply {
            status,
            content_type: "text/plain",
            body: Vec::new(),
            declared: 0,
            last_modified: None,
        }
    }
}

/// A raw HTTP/1.1 server on a free loopback port, answering each request
/// (by path) with `handler`; for servers that misbehave on purpose.
/// Returns `host:port`.
pub fn serve_http(handler: impl Fn(&str) -> Reply + Send + 'static) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let r = handler(&path);
            let mut s = stream;
            let lm = r
                .last_modified
                .map_or(String::new(), |t| format!("Last-Modified: {t}\r\n"));
            let _ = write!(
                s,
                "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{lm}Connection: close\r\n\r\n",
                r.status, r.content_type, r.declared
            );
            let _ = s.write_all(&r.body);
        }
    });
    addr
}
