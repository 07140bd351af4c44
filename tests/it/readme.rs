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
    // The push line, to a local registry in example.com's place.
    let reg = Registry::start();
    let push = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("kiln build -t registry.example.com/demo:1.0.0 --push"))
        .expect("the push example");
    let push = push.replace("registry.example.com", &reg.addr);
    let args: Vec<&str> = push.split_whitespace().skip(1).collect();
    let o = kiln(&args);
    assert!(
        stderr(&o).contains(&format!("pushed to {}/demo:1.0.0", reg.addr)),
        "{}",
        stderr(&o)
    );
}

/// The lines of the README's fenced block that follows `title`.
fn block_after(text: &str, title: &str) -> Vec<String> {
    let start = text
        .find(title)
        .unwrap_or_else(|| panic!("no {title:?} in the README"));
    let rest = &text[start..];
    let open = rest.find("```").expect("a code block");
    let body = &rest[open..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    let close = body.find("```").expect("the end of the block");
    body[..close].lines().map(str::to_string).collect()
}

fn demo_copy(dir: &std::path::Path) -> std::path::PathBuf {
    let ctx = dir.join("app");
    let o = Command::new("cp")
        .arg("-a")
        .arg(crate::util::root().join("testdata/demo"))
        .arg(&ctx)
        .output()
        .expect("cp");
    assert!(o.status.success());
    ctx
}

/// Runs a shell script with bash, kiln first on the PATH.
fn bash(script: &str, dir: &std::path::Path, env: &[(&str, String)]) -> std::process::Output {
    let bin = crate::util::kiln_bin();
    let path = format!(
        "{}:{}",
        bin.parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .env("PATH", path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("bash")
}

/// The GitLab CI job's script, as written, against a registry that wants
/// a login: the first job logs in, builds and pushes; the second, with
/// the cache directory the first left, builds nothing.
#[test]
fn the_gitlab_example_runs() {
    let lines = block_after(&readme(), "GitLab CI (");
    let script: Vec<String> = lines
        .iter()
        .filter_map(|l| l.trim().strip_prefix("- ").map(str::to_string))
        .filter(|l| l.starts_with("kiln "))
        .collect();
    assert_eq!(script.len(), 2, "{lines:?}");
    let reg = Registry::start_with(Some(("ci", "ci-password")));
    let work = tempfile::tempdir().expect("tempdir");
    let ctx = demo_copy(work.path());
    let env = [
        ("CI_REGISTRY_USER", "ci".to_string()),
        ("CI_REGISTRY_PASSWORD", "ci-password".to_string()),
        ("CI_REGISTRY", reg.addr.clone()),
        ("CI_REGISTRY_IMAGE", format!("{}/group/app", reg.addr)),
        ("CI_COMMIT_SHA", "0123abc".to_string()),
        (
            "DOCKER_CONFIG",
            work.path().join("docker").display().to_string(),
        ),
    ];
    let mut outs = Vec::new();
    for job in 0..2 {
        let mut env = env.to_vec();
        env.push((
            "KILN_CACHE_DIR",
            work.path()
                .join(format!("store-{job}"))
                .display()
                .to_string(),
        ));
        let o = bash(&script.join("\n"), &ctx, &env);
        assert!(o.status.success(), "job {job}: {}", stderr(&o));
        outs.push(stderr(&o));
    }
    assert!(outs[1].contains("(4 steps cached, 0 ran)"), "{}", outs[1]);
    assert!(
        outs[1].contains(&format!("pushed to {}/group/app:0123abc", reg.addr)),
        "{}",
        outs[1]
    );
}

/// The GitHub Actions step's build line, and the Kubernetes Job's
/// container arguments, against a local registry.
#[test]
fn the_github_and_kubernetes_examples_run() {
    let text = readme();
    let reg = Registry::start();
    let work = tempfile::tempdir().expect("tempdir");
    let ctx = demo_copy(work.path());
    let github = block_after(&text, "GitHub Actions (")
        .iter()
        .find_map(|l| {
            l.trim()
                .strip_prefix("- run: kiln build")
                .map(str::to_string)
        })
        .expect("the build step");
    let github = format!("kiln build{github}")
        .replace(
            "ghcr.io/${{ github.repository }}",
            &format!("{}/team/app", reg.addr),
        )
        .replace("${{ github.sha }}", "0123abc")
        .replace(
            "~/.cache/kiln",
            &work.path().join("gh-cache").display().to_string(),
        );
    let o = bash(&github, &ctx, &[]);
    assert!(o.status.success(), "{github}: {}", stderr(&o));
    assert!(stderr(&o).contains(&format!("pushed to {}/team/app:0123abc", reg.addr)));

    let args = block_after(&text, "Kubernetes, a Job")
        .iter()
        .find_map(|l| l.trim().strip_prefix("args: [").map(str::to_string))
        .expect("the container's args");
    let args: Vec<String> = args
        .trim_end_matches(']')
        .split(", ")
        .map(|a| {
            a.replace("registry.example.com", &reg.addr)
                .replace("/workspace", &ctx.display().to_string())
        })
        .collect();
    let o = Command::new(crate::util::kiln_bin())
        .args(&args)
        .env("KILN_CACHE_DIR", work.path().join("k8s-store"))
        .output()
        .expect("kiln");
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    assert!(stderr(&o).contains(&format!("pushed to {}/app:1.4", reg.addr)));
}
