//! kiln against BuildKit on the build corpus: every case in
//! `testdata/build/` is built by kiln and compared with what BuildKit 0.13
//! produced for it (`fixtures/build/`, recorded by
//! `scripts/record-buildkit-build`): the image config, and every layer
//! entry's path, type, mode, owner, size, content and link target, in tar
//! order. mtimes are compared where the case pinned them.
//!
//! Where kiln differs on purpose, the case is listed in [`DIFFERENCES`]
//! with the reason, and the test checks that the difference is the one
//! described.

use crate::image::{listing, read_oci, stderr};
use crate::util::{case_dirs, root};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Cases where kiln deliberately differs from BuildKit 0.13.
const DIFFERENCES: &[(&str, Diff, &str)] = &[
    (
        "copy-chmod-symbolic",
        Diff::Layers,
        "BuildKit 0.13 accepts a symbolic --chmod and ignores it; kiln applies it, as BuildKit 0.14+ does",
    ),
    (
        "copy-chown-unknown-name",
        Diff::KilnErrors("unable to find user"),
        "BuildKit silently uses 0:0 for a user /etc/passwd lacks (and the user's gid for a group /etc/group lacks); kiln says so",
    ),
    (
        "add-tar-unsafe-paths",
        Diff::KilnErrors("breakout"),
        "BuildKit silently moves `../` entries of an ADD archive inside the destination; kiln refuses the archive",
    ),
    (
        "copy-overwrite-same-size-mtime",
        Diff::Layers,
        "BuildKit leaves a rewritten file of the same size and mtime out of the layer (its diff compares size and mtime only); kiln writes it",
    ),
    (
        "run-no-stubs",
        Diff::Layers,
        "BuildKit 0.13 leaves the empty dev/, proc/ and sys/ it made as mount points in the first RUN layer of an image that lacks them; kiln removes them, as the RUN issue asks",
    ),
];

#[derive(Debug, Clone, Copy)]
enum Diff {
    /// kiln fails where BuildKit built; its message has this text.
    KilnErrors(&'static str),
    /// The layer listings differ; the config must still match.
    Layers,
}

/// Makes the build context as `fixtures/build/README.md` describes.
fn make_context(case: &Path, into: &Path) {
    let ctx = case.join("context");
    if ctx.is_dir() {
        let ok = Command::new("cp")
            .arg("-a")
            .arg(&ctx)
            .arg(into)
            .status()
            .expect("cp");
        assert!(ok.success());
    } else {
        std::fs::create_dir(into).expect("mkdir");
    }
    git_modes(into);
    if case.join("dockerignore").is_file() {
        std::fs::copy(case.join("dockerignore"), into.join(".dockerignore")).expect("dockerignore");
        set_mode(&into.join(".dockerignore"), 0o644);
    }
    let df = std::fs::read_to_string(case.join("Dockerfile")).expect("Dockerfile");
    let df: String = df
        .lines()
        .filter(|l| !l.trim_start().to_ascii_lowercase().starts_with("# syntax="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(into.join("Dockerfile"), df).expect("write Dockerfile");
    set_mode(&into.join("Dockerfile"), 0o644);
    if case.join("setup").is_file() {
        let o = Command::new("sh")
            .arg("-c")
            .arg("umask 022 && exec sh -eu \"$0\"")
            .arg(case.join("setup"))
            .current_dir(into)
            .output()
            .expect("setup");
        assert!(
            o.status.success(),
            "setup of {}: {}",
            case.display(),
            stderr(&o)
        );
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn git_modes(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    set_mode(dir, 0o755);
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let ft = e.file_type().expect("file type");
        if ft.is_dir() {
            git_modes(&e.path());
        } else if ft.is_file() {
            let m = e.metadata().expect("meta").permissions().mode();
            set_mode(&e.path(), if m & 0o111 != 0 { 0o755 } else { 0o644 });
        }
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Compares kiln's layers with the fixture's; mtimes only where pinned.
fn compare_layers(expected: &[String], layers: &[Vec<u8>]) -> Result<(), String> {
    let mut actual = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        actual.push(format!("# layer {i}"));
        actual.extend(listing(l));
    }
    if expected.len() != actual.len() {
        return Err(format!(
            "{} lines expected, {} produced:\nexpected:\n{}\nkiln:\n{}",
            expected.len(),
            actual.len(),
            expected.join("\n"),
            actual.join("\n")
        ));
    }
    for (e, a) in expected.iter().zip(&actual) {
        let ef: Vec<&str> = e.split('\t').collect();
        let af: Vec<&str> = a.split('\t').collect();
        let pinned = ef
            .get(8)
            .and_then(|t| t.parse::<i64>().ok())
            .is_some_and(|t| t <= 1_700_000_000);
        let n = if pinned { 9 } else { 8 };
        if ef.iter().take(n).ne(af.iter().take(n)) {
            return Err(format!("expected {e:?}\n    kiln {a:?}"));
        }
    }
    Ok(())
}

/// Drops what depends on unpinned mtimes (`diff_ids`), and treats a
/// `null` field as an absent one (Go writes `"history": null`).
fn strip_volatile(mut v: Value) -> Value {
    if let Some(r) = v.get_mut("rootfs") {
        r["diff_ids"] = Value::Null;
    }
    drop_nulls(&mut v);
    v
}

fn drop_nulls(v: &mut Value) {
    if let Value::Object(m) = v {
        m.retain(|_, x| !x.is_null());
        m.values_mut().for_each(drop_nulls);
    }
}

#[test]
fn kiln_builds_what_buildkit_builds() {
    let cases = case_dirs(&root().join("testdata/build"));
    assert!(cases.len() >= 80, "the corpus is missing");
    let mut failures = Vec::new();
    for case in &cases {
        let name = case
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let fix = root().join("fixtures/build").join(&name);
        let tmp = tempfile::tempdir().expect("tempdir");
        let ctx = tmp.path().join("ctx");
        make_context(case, &ctx);
        let out = tmp.path().join("out.tar");
        let mut cmd = Command::new(crate::util::kiln_bin());
        cmd.arg("build")
            .arg("--cache-dir")
            .arg(tmp.path().join("store"))
            .args(["--build-arg", "SOURCE_DATE_EPOCH=1700000000", "-q"])
            .arg("-o")
            .arg(format!("type=oci,dest={}", out.display()))
            .env_remove("SOURCE_DATE_EPOCH");
        for kv in lines(&case.join("build-args")) {
            cmd.arg("--build-arg").arg(kv);
        }
        if let Some(t) = lines(&case.join("target")).first() {
            cmd.arg("--target").arg(t);
        }
        let o = cmd.arg(&ctx).output().expect("kiln");
        let result = lines(&fix.join("result.txt"));
        let diff = DIFFERENCES.iter().find(|d| d.0 == name).map(|d| d.1);
        if result.first().map(String::as_str) == Some("error") {
            if o.status.success() {
                failures.push(format!(
                    "{name}: BuildKit failed ({}), kiln built it",
                    result.get(2).cloned().unwrap_or_default()
                ));
            } else if let Some(line) = result
                .get(1)
                .and_then(|l| l.strip_prefix("line "))
                .filter(|l| *l != "-")
            {
                if !stderr(&o).contains(&format!("Dockerfile:{line}")) {
                    failures.push(format!(
                        "{name}: BuildKit failed at line {line}; kiln said: {}",
                        stderr(&o)
                    ));
                }
            }
            continue;
        }
        if let Some(Diff::KilnErrors(text)) = diff {
            if o.status.success() || !stderr(&o).contains(text) {
                failures.push(format!(
                    "{name}: expected kiln to fail with {text:?}; status {:?}: {}",
                    o.status.code(),
                    stderr(&o)
                ));
            }
            continue;
        }
        if !o.status.success() {
            failures.push(format!("{name}: kiln failed: {}", stderr(&o)));
            continue;
        }
        let img = read_oci(&std::fs::read(&out).expect("out.tar"));
        let want: Value = serde_json::from_str(
            &std::fs::read_to_string(fix.join("config.json")).expect("config.json"),
        )
        .expect("json");
        let (want, got) = (strip_volatile(want), strip_volatile(img.config.clone()));
        if want != got {
            failures.push(format!(
                "{name}: config differs\n  BuildKit: {want}\n  kiln:     {got}"
            ));
        }
        let layers_result = compare_layers(&lines(&fix.join("layers.txt")), &img.layers);
        match (layers_result, diff) {
            (Err(e), None) => failures.push(format!("{name}: layers differ: {e}")),
            (Ok(()), Some(Diff::Layers)) => failures.push(format!("{name}: listed as differing in layers, but kiln now matches BuildKit; drop it from DIFFERENCES")),
            _ => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from BuildKit:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
