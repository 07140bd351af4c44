//! Layer snapshots and the two ways a stage gets its files: as root, a
//! read-only overlay of per-layer snapshot directories kept in the store;
//! otherwise (or with `KILN_SNAPSHOTTER=copy`), layers unpacked into a
//! copy. Both must give the same files and the same image.

use crate::image::{listing, stderr};
use std::path::Path;
use std::process::Command;

/// A tar layer from `(path, kind)` entries: `f:content`, `d`, `l:target`
/// (symlink), `h:target` (hardlink), `p` (FIFO), `s:content` (setuid file).
fn layer(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, spec) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        let (kind, arg) = spec.split_once(':').unwrap_or((spec, ""));
        let mut data: &[u8] = &[];
        match kind {
            "f" | "s" => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(if kind == "s" { 0o4755 } else { 0o644 });
                h.set_size(arg.len() as u64);
                data = arg.as_bytes();
            }
            "d" => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
            }
            "l" | "h" => {
                h.set_entry_type(if kind == "l" {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_mode(0o777);
                h.set_size(0);
                h.set_link_name(arg).expect("link name");
            }
            "p" => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_mode(0o600);
                h.set_size(0);
            }
            other => panic!("unknown kind {other}"),
        }
        h.set_cksum();
        b.append_data(&mut h, path, data).expect("append");
    }
    b.into_inner().expect("tar")
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", kiln::layer::compress::sha256_hex(bytes))
}

/// Writes an OCI layout whose image has these (uncompressed) layers.
fn write_layout(dir: &Path, layers: &[Vec<u8>]) -> Vec<String> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("blobs");
    let put = |bytes: &[u8]| {
        let d = sha(bytes);
        std::fs::write(blobs.join(&d[7..]), bytes).expect("blob");
        d
    };
    let diff_ids: Vec<String> = layers.iter().map(|l| put(l)).collect();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
    .to_string();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": put(config.as_bytes()), "size": config.len()},
        "layers": layers.iter().zip(&diff_ids).map(|(l, d)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": l.len(),
        })).collect::<Vec<_>>(),
    })
    .to_string();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": put(manifest.as_bytes()), "size": manifest.len()}],
    })
    .to_string();
    std::fs::write(dir.join("index.json"), index).expect("index.json");
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("oci-layout");
    diff_ids
}

/// `kiln build -q --cache-dir STORE` with snapshotter `backend`
/// (`overlay`: kiln's choice; `copy`), SOURCE_DATE_EPOCH set; the caller
/// adds the rest.
fn kiln_with(backend: &str, store: &Path) -> Command {
    let mut cmd = Command::new(crate::util::kiln_bin());
    cmd.args(["build", "-q", "--cache-dir"])
        .arg(store)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env_remove("KILN_SNAPSHOTTER");
    if backend == "copy" {
        cmd.env("KILN_SNAPSHOTTER", "copy");
    }
    cmd
}

/// A context directory at `ctx` with `bin/busybox` (Debian's
/// busybox-static) and `bin/sh` linking to it.
fn busybox_context(ctx: &Path) {
    std::fs::create_dir_all(ctx.join("bin")).expect("ctx");
    std::fs::copy("/bin/busybox", ctx.join("bin/busybox")).expect("busybox");
    std::os::unix::fs::symlink("busybox", ctx.join("bin/sh")).expect("sh");
}

/// A base whose upper layers delete (whiteouts), replace a directory's
/// contents (opaque) and turn a file into a directory; a two-stage build
/// on it exported as files and as an image. The overlay backend and the
/// copy backend give the same bytes; the overlay backend leaves one
/// snapshot per layer in the store, whiteouts in overlay form, and no
/// mount behind.
#[test]
fn overlay_and_copy_backends_agree() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = tmp.path().join("layout");
    let diff_ids = write_layout(
        &layout,
        &[
            layer(&[
                ("a/", "d"),
                ("a/x", "f:x"),
                ("a/y/", "d"),
                ("a/y/old", "f:old"),
                ("a/y/deep/", "d"),
                ("a/y/deep/f", "f:deep"),
                ("b/keep", "f:keep"),
                ("b/link", "l:keep"),
                ("b/hard", "h:b/keep"),
                ("c", "f:c was a file"),
                ("fifo", "p"),
                ("su", "s:setuid"),
            ]),
            layer(&[
                ("a/.wh.x", "f:"),
                ("a/y/", "d"),
                ("a/y/.wh..wh..opq", "f:"),
                ("a/y/new", "f:new"),
                (".wh.c", "f:"),
                ("b/added", "f:added"),
            ]),
            layer(&[
                ("c/", "d"),
                ("c/inside", "f:c is a dir"),
                ("b/.wh.link", "f:"),
            ]),
        ],
    );
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).expect("ctx");
    std::fs::write(ctx.join("app.txt"), "app\n").expect("app.txt");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM base AS one\nCOPY app.txt /a/y/app.txt\n\
         FROM one AS two\nCOPY --from=one /a /copied-a\nCOPY --from=base /b /copied-b\n",
    )
    .expect("Dockerfile");
    let build = |backend: &str, out: &str, store: &Path| {
        let o = kiln_with(backend, store)
            .arg("--build-context")
            .arg(format!("base=oci-layout://{}", layout.display()))
            .args(["-o", out])
            .arg(&ctx)
            .output()
            .expect("kiln");
        assert!(o.status.success(), "{backend}: {}", stderr(&o));
    };
    let mut results = Vec::new();
    for backend in ["overlay", "copy"] {
        let store = tmp.path().join(format!("store-{backend}"));
        let files = tmp.path().join(format!("{backend}.tar"));
        let image = tmp.path().join(format!("{backend}-oci.tar"));
        build(
            backend,
            &format!("type=tar,dest={}", files.display()),
            &store,
        );
        build(
            backend,
            &format!("type=oci,dest={}", image.display()),
            &store,
        );
        results.push((
            listing(&std::fs::read(&files).expect("files")),
            std::fs::read(&image).expect("image"),
        ));
    }
    let (overlay, copy) = (&results[0], &results[1]);
    assert_eq!(overlay.0, copy.0, "the backends' files differ");
    assert!(overlay.1 == copy.1, "the backends' images differ");
    let paths: Vec<&str> = overlay
        .0
        .iter()
        .map(|l| l.split('\t').next().unwrap_or(""))
        .collect();
    for present in [
        "a/y/new",
        "a/y/app.txt",
        "c/inside",
        "b/added",
        "b/hard",
        "fifo",
        "su",
        "copied-a/y/new",
        "copied-b/hard",
    ] {
        assert!(paths.contains(&present), "{present} missing: {paths:?}");
    }
    for absent in ["a/x", "a/y/old", "a/y/deep", "b/link", "copied-b/link"] {
        assert!(!paths.contains(&absent), "{absent} present: {paths:?}");
    }
    assert!(!paths.iter().any(|p| p.contains(".wh.")), "{paths:?}");
    // One snapshot per layer, made once; the second layer's whiteouts are
    // kept in overlay form.
    let snaps = tmp.path().join("store-overlay/snapshots/sha256");
    for d in &diff_ids {
        assert!(snaps.join(&d[7..]).is_dir(), "no snapshot for {d}");
    }
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let wh =
        std::fs::symlink_metadata(snaps.join(&diff_ids[1][7..]).join("a/x")).expect("whiteout");
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert!(!tmp.path().join("store-copy/snapshots").exists());
    // Mounts lived in kiln's own mount namespace: none is visible here.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(tmp.path().to_str().expect("utf-8")),
        "{mounts}"
    );
}

/// RUN steps give the same layers with overlay snapshots (the layer read
/// from the upper directory) and with the copy snapshotter (a full copy
/// diffed by walking): deletions, a directory replaced, hardlinks, mode
/// and owner changes, a file turned into a directory, a copy-up that
/// changes nothing, under SOURCE_DATE_EPOCH.
#[test]
fn run_layers_agree_between_backends() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ctx = tmp.path().join("ctx");
    busybox_context(&ctx);
    std::fs::create_dir_all(ctx.join("tree/dir/sub")).expect("tree");
    for (p, d) in [
        ("tree/gone", "g"),
        ("tree/keep", "k"),
        ("tree/mode", "m"),
        ("tree/becomes-dir", "f"),
        ("tree/dir/old", "o"),
        ("tree/dir/sub/deep", "d"),
    ] {
        std::fs::write(ctx.join(p), d).expect("file");
    }
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY bin /bin\nCOPY tree /tree\nENV PATH=/bin\n\
         RUN busybox rm /tree/gone && busybox rm -r /tree/dir && busybox mkdir -p /tree/dir/sub \
         && echo new > /tree/dir/sub/new && busybox chmod 600 /tree/mode && busybox chown 5:6 /tree/keep\n\
         RUN busybox rm /tree/becomes-dir && busybox mkdir /tree/becomes-dir && echo in > /tree/becomes-dir/f \
         && busybox ln /tree/becomes-dir/f /tree/link && busybox mkfifo /tree/fifo\n\
         RUN busybox cat /tree/keep > /dev/null && busybox chmod 600 /tree/mode\n",
    )
    .expect("Dockerfile");
    let mut images = Vec::new();
    for backend in ["overlay", "copy"] {
        let out = tmp.path().join(format!("{backend}.tar"));
        let o = kiln_with(backend, &tmp.path().join(format!("store-{backend}")))
            .arg("-o")
            .arg(format!("type=oci,dest={}", out.display()))
            .arg(&ctx)
            .output()
            .expect("kiln");
        assert!(o.status.success(), "{backend}: {}", stderr(&o));
        images.push(crate::image::read_oci(&std::fs::read(&out).expect("image")));
    }
    for (n, (a, b)) in images[0].layers.iter().zip(&images[1].layers).enumerate() {
        assert_eq!(listing(a), listing(b), "layer {n}");
    }
    assert_eq!(images[0].manifest_digest, images[1].manifest_digest);
    // The last step changed nothing: its layer is empty.
    assert!(listing(images[0].layers.last().expect("layer")).is_empty());
}

/// Unmounts a test's own mount when dropped.
struct MountGuard(std::path::PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Where overlayfs is refused (here: a store on overlayfs, which cannot
/// hold an upper directory, as in many CI containers), kiln says so and
/// builds with copies; RUN steps still work.
#[test]
fn refused_overlayfs_falls_back_to_copies() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for d in ["l", "u", "w", "m"] {
        std::fs::create_dir(tmp.path().join(d)).expect("dir");
    }
    let m = tmp.path().join("m");
    let o = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            tmp.path().join("l").display(),
            tmp.path().join("u").display(),
            tmp.path().join("w").display()
        ))
        .arg(&m)
        .output()
        .expect("mount");
    assert!(o.status.success(), "{}", stderr(&o));
    let _guard = MountGuard(m.clone());
    let ctx = tmp.path().join("ctx");
    busybox_context(&ctx);
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch AS other\nCOPY data.txt /sub/data.txt\n\
         FROM scratch\nCOPY bin /bin\nENV PATH=/bin\nRUN echo hi > /hi\n\
         RUN --mount=target=/ctx busybox ls /ctx > /ctx-list\n\
         RUN --mount=type=bind,from=other,target=/w,rw echo x > /w/sub/data.txt && busybox cat /w/sub/data.txt > /rw\n\
         RUN --mount=type=bind,from=other,target=/w busybox cat /w/sub/data.txt > /after\n",
    )
    .expect("Dockerfile");
    std::fs::write(ctx.join("data.txt"), "data\n").expect("data");
    std::fs::write(ctx.join("hidden.txt"), "hidden\n").expect("hidden");
    std::fs::write(ctx.join(".dockerignore"), "hidden.txt\n").expect("ignore");
    let o = Command::new(crate::util::kiln_bin())
        .args(["build", "--cache-dir"])
        .arg(m.join("store"))
        .args(["-o", "type=tar,dest=-"])
        .arg(&ctx)
        .env_remove("KILN_SNAPSHOTTER")
        .output()
        .expect("kiln");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("overlayfs cannot be used") && stderr(&o).contains("full copies"),
        "{}",
        stderr(&o)
    );
    let files = crate::image::tar_files(&o.stdout);
    assert_eq!(String::from_utf8_lossy(&files["hi"]), "hi\n");
    // Without overlayfs, bind mounts still see the context as
    // .dockerignore leaves it, and rw binds still lose their writes.
    let listed = String::from_utf8_lossy(&files["ctx-list"]).into_owned();
    assert!(
        listed.contains("data.txt") && !listed.contains("hidden.txt"),
        "{listed}"
    );
    assert_eq!(String::from_utf8_lossy(&files["rw"]), "x\n");
    assert_eq!(String::from_utf8_lossy(&files["after"]), "data\n");
    assert!(!m.join("store/snapshots").exists());
}
