//! Failures as people read them: the Dockerfile around a failing step,
//! its last output and exit code; a missing COPY source and why; a
//! registry's answer with a hint; one exit code per kind of failure.

use crate::image::{stderr, Ctx};
use crate::registry::Registry;
use crate::run::busybox;

/// A failing RUN: the instruction's lines marked among their neighbours,
/// numbered, then its last 20 lines of output, then the exit code; exit 3.
#[test]
fn a_failing_run_shows_the_dockerfile_and_its_output() {
    let c = busybox(
        "# the step that fails\nRUN for i in $(busybox seq 1 30); do echo out-$i; done && \\\n    exit 9\nCMD [\"sh\"]\n",
        &[],
    );
    let o = c.kiln(&["-q"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    for want in [
        "Dockerfile:5\n--------------------\n",
        "   3 |     ENV PATH=/bin\n",
        "   4 |     # the step that fails\n",
        "   5 | >>> RUN for i in $(busybox seq 1 30); do echo out-$i; done && \\\n",
        "   6 | >>>     exit 9\n",
        "   7 |     CMD [\"sh\"]\n--------------------\n",
        "its last 20 lines of output:\n    out-11\n",
        "    out-30\nerror: process \"/bin/sh -c for i in",
        "did not complete successfully: exit code: 9\n",
    ] {
        assert!(e.contains(want), "no {want:?} in:\n{e}");
    }
    assert!(!e.contains("out-10\n"), "{e}");
}

/// A COPY source that is not there says why: excluded by .dockerignore,
/// outside the context, or simply missing.
#[test]
fn a_missing_copy_source_says_why() {
    let c = Ctx::new(
        "FROM scratch\nCOPY secret.txt /a\n",
        &[("secret.txt", "s"), (".dockerignore", "secret.txt\n")],
    );
    let o = c.kiln(&["-q"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o)
            .contains("error: secret.txt: excluded by .dockerignore, so not in the build context"),
        "{}",
        stderr(&o)
    );
    std::fs::write(
        c.ctx().join("Dockerfile"),
        "FROM scratch\nCOPY ../outside.txt /a\n",
    )
    .expect("Dockerfile");
    let o = c.kiln(&["-q"]);
    assert!(
        stderr(&o).contains(
            "../outside.txt: not found in the build context: the path points outside it, \
             which COPY cannot read (it looked for /outside.txt inside)"
        ),
        "{}",
        stderr(&o)
    );
    std::fs::write(
        c.ctx().join("Dockerfile"),
        "FROM scratch\nCOPY nothere /a\n",
    )
    .expect("Dockerfile");
    let o = c.kiln(&["-q"]);
    assert!(
        stderr(&o).contains("Dockerfile:2\n")
            && stderr(&o).contains("error: nothere: not found in the build context"),
        "{}",
        stderr(&o)
    );
}

/// A registry's failure is exit 4, names the reference and the HTTP
/// status with the registry's own code and message, and hints at what to
/// do: log in, or check the tag.
#[test]
fn registry_failures_have_their_own_exit_code_and_a_hint() {
    let reg = Registry::start();
    let c = Ctx::new(&format!("FROM {}/no/such:1\n", reg.addr), &[]);
    let o = c.kiln(&["-q"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(4), "{e}");
    for want in [
        "/v2/no/such/manifests/1",
        "HTTP 404",
        "MANIFEST_UNKNOWN",
        "hint: ",
        "has no such image or tag",
    ] {
        assert!(e.contains(want), "no {want:?} in:\n{e}");
    }

    let locked = Registry::start_with(Some(("user", "pw")));
    let c = Ctx::new("FROM scratch\nCOPY a /a\n", &[("a", "a")]);
    let o = c.kiln(&["--push", "-t", &format!("{}/team/app:1", locked.addr)]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(4), "{e}");
    assert!(e.contains("401"), "{e}");
    assert!(
        e.contains(&format!(
            "hint: the registry wants credentials that allow this: run `kiln login {}`",
            locked.addr
        )),
        "{e}"
    );
}

/// One exit code per kind: 1 a Dockerfile error, 2 a usage error, 3 a
/// failed step, 4 a registry.
#[test]
fn exit_codes_are_distinct() {
    let c = Ctx::new("FROM scratch\nRUNN x\n", &[]);
    assert_eq!(c.kiln(&["-q"]).status.code(), Some(1));
    assert_eq!(c.kiln(&["--no-such-flag"]).status.code(), Some(2));
    let c = busybox("RUN exit 1\n", &[]);
    assert_eq!(c.kiln(&["-q"]).status.code(), Some(3));
}
