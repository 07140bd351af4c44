//! The README's examples, run as written (with a local registry in place
//! of the CI systems' ones).

use crate::image::stderr;
use crate::registry::Registry;
use std::process::Command;

fn readme() -> String {
    std::fs::read_to_string(crate::util::root().join("README.md")).expect("README.md")
}

/// The quick start's command gives the digest the README shows, and the
/// commands after it work.
#[test]
fn quick_start_digest() {
    let text = readme();
    let want = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("built sha256:"))
        .and_then(|l| l.split(' ').next())
        .expect("the quick start's digest");
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("store");
    let kiln = |args: &[&str]| {
        let o = Command::new(crate::util::kiln_bin())
            .args(args)
            .current_dir(crate::util::root())
            .env("KILN_CACHE_DIR", &store)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .expect("kiln");
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        o
    };
    let archive = tmp.path().join("demo.tar");
    let dest = format!("type=oci,dest={}", archive.display());
    let o = kiln(&["build", "-t", "demo:1.0.0", "-o", &dest, "testdata/demo"]);
    assert!(
        stderr(&o).contains(&format!("built sha256:{want} ")),
        "README says {want}:\n{}",
        stderr(&o)
    );
    let o = kiln(&["inspect", &archive.to_string_lossy()]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("kiln demo site"));
    let o = kiln(&["build", "--dry-run", "testdata/demo"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("CACHED"));
}

/// The GitLab CI example's build line, twice against a local registry:
/// the second job restores the cache directory and builds nothing.
#[test]
fn the_ci_example_pushes_and_reuses_its_cache() {
    let text = readme();
    let line = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("- kiln build --progress=plain --cache-from"))
        .expect("the GitLab example's build line");
    let reg = Registry::start();
    let work = tempfile::tempdir().expect("tempdir");
    let ctx = work.path().join("app");
    let o = Command::new("cp")
        .arg("-a")
        .arg(crate::util::root().join("testdata/demo"))
        .arg(&ctx)
        .output()
        .expect("cp");
    assert!(o.status.success());
    let line = format!("--cache-from{line}").replace(
        "\"$CI_REGISTRY_IMAGE:$CI_COMMIT_SHA\"",
        &format!("{}/app:abc", reg.addr),
    );
    let args: Vec<&str> = line.split_whitespace().collect();
    let mut outs = Vec::new();
    for job in 0..2 {
        let o = Command::new(crate::util::kiln_bin())
            .arg("build")
            .args(&args)
            .current_dir(&ctx)
            .env("KILN_CACHE_DIR", work.path().join(format!("store-{job}")))
            .output()
            .expect("kiln");
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        outs.push(stderr(&o));
    }
    assert!(outs[1].contains("(4 steps cached, 0 ran)"), "{}", outs[1]);
    assert!(
        outs[1].contains(&format!("pushed to {}/app:abc", reg.addr)),
        "{}",
        outs[1]
    );
}
