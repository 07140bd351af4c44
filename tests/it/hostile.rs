//! Regression tests from review: hostile contexts must not leak host files
//! or hang the build, and COPY's less common forms behave as BuildKit's.

use crate::image::{all_paths, listing, stderr, Ctx};
use std::os::unix::fs::symlink;

/// A symlink chain through a missing directory and `..` (`a ->
/// nope/../evil/...` with `evil -> /`) resolves inside the context, never
/// to the host's files.
#[test]
fn symlinks_through_missing_dirs_stay_in_the_context() {
    let c = Ctx::new("FROM scratch\nCOPY a /leak\n", &[]);
    let secret = c.path("host-secret.txt");
    std::fs::write(&secret, "host secret\n").expect("write");
    symlink("/", c.ctx().join("evil")).expect("symlink");
    let target = format!("nope/../evil{}", secret.display());
    symlink(&target, c.ctx().join("a")).expect("symlink");
    let o = c.kiln(&["-o", "type=tar,dest=-"]);
    assert!(!o.status.success(), "the host file was read");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("host secret"));
    assert!(
        stderr(&o).contains("a: not found in the build context"),
        "{}",
        stderr(&o)
    );
}

/// A wildcard that matches a symlink to an ignored file does not copy the
/// ignored file.
#[test]
fn wildcards_do_not_bypass_dockerignore_through_symlinks() {
    let c = Ctx::new(
        "FROM scratch\nCOPY envl* /out/\n",
        &[(".dockerignore", ".env\n"), (".env", "SECRET=1\n")],
    );
    symlink(".env", c.ctx().join("envlink")).expect("symlink");
    let img = c.build_oci(&[]);
    assert!(
        !all_paths(&img).iter().any(|p| p.starts_with("out/envl")),
        "{:?}",
        all_paths(&img)
    );
}

/// A `.dockerignore` that is a FIFO is refused at once instead of hanging
/// the build.
#[test]
fn a_fifo_dockerignore_does_not_hang() {
    let c = Ctx::new("FROM scratch\nCOPY a /a\n", &[("a", "a\n")]);
    let fifo = c.ctx().join(".dockerignore");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let o = c.kiln(&["-o", "type=tar,dest=-"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a regular file"), "{}", stderr(&o));
}

/// `COPY target/*.jar app.jar` with one match writes the file `app.jar`
/// (BuildKit), not a directory holding it; several sources go into `dir/`.
#[test]
fn a_single_wildcard_match_copies_to_the_file_name() {
    let c = Ctx::new(
        "FROM scratch\nWORKDIR /app\nCOPY target/*.jar app.jar\nCOPY target/*.txt notes/\n",
        &[
            ("target/app-1.0.jar", "jar\n"),
            ("target/a.txt", "a"),
            ("target/b.txt", "b"),
        ],
    );
    let img = c.build_oci(&[]);
    let p = all_paths(&img);
    assert!(p.iter().any(|x| x == "app/app.jar"), "{p:?}");
    assert!(
        p.iter().any(|x| x == "app/notes/a.txt") && p.iter().any(|x| x == "app/notes/b.txt"),
        "{p:?}"
    );
}

/// A heredoc whose destination is an existing directory lands inside it,
/// named after the delimiter.
#[test]
fn heredoc_into_an_existing_directory() {
    let c = Ctx::new(
        "FROM scratch\nCOPY f /d/f\nCOPY <<EOF /d\nhello\nEOF\n",
        &[("f", "f\n")],
    );
    let img = c.build_oci(&[]);
    let last = listing(img.layers.last().expect("layer"));
    assert!(
        last.iter().any(|l| l.starts_with("d/EOF\tfile\t")),
        "{last:?}"
    );
}

/// `--exclude` applies to what a wildcard matches at the top, as in the
/// Dockerfile reference's example.
#[test]
fn exclude_applies_to_top_level_matches() {
    let c = Ctx::new(
        "FROM scratch\nCOPY --exclude=*.txt hom* /mydir/\n",
        &[("home.txt", "t"), ("homer.md", "m")],
    );
    let p = all_paths(&c.build_oci(&[]));
    assert!(p.iter().any(|x| x == "mydir/homer.md"), "{p:?}");
    assert!(!p.iter().any(|x| x == "mydir/home.txt"), "{p:?}");
}

/// A file re-included under an ignored directory is copied, whether the
/// directory is named or matched by a wildcard.
#[test]
fn reincluded_files_under_an_ignored_directory() {
    let c = Ctx::new(
        "FROM scratch\nCOPY build /x/\nCOPY buil[d] /y/\n",
        &[
            (".dockerignore", "build\n!build/keep.txt\n"),
            ("build/keep.txt", "k"),
            ("build/drop.txt", "d"),
        ],
    );
    let p = all_paths(&c.build_oci(&[]));
    for want in ["x/keep.txt", "y/keep.txt"] {
        assert!(p.iter().any(|x| x == want), "{want} missing: {p:?}");
    }
    assert!(!p.iter().any(|x| x.ends_with("drop.txt")), "{p:?}");
}

/// `COPY --parents` keeps the path after a `/./` pivot only, as BuildKit.
#[test]
fn parents_pivot() {
    let c = Ctx::new(
        "FROM scratch\nCOPY --parents x/./y/z/f /p1/\nCOPY --parents x/y/z/f /p2/\n",
        &[("x/y/z/f", "f")],
    );
    let p = all_paths(&c.build_oci(&[]));
    assert!(p.iter().any(|x| x == "p1/y/z/f"), "{p:?}");
    assert!(p.iter().any(|x| x == "p2/x/y/z/f"), "{p:?}");
}

/// An ADD source named like a git repository but present in the context
/// is a local file.
#[test]
fn local_dot_git_file_is_local() {
    let c = Ctx::new(
        "FROM scratch\nADD repo.git /f/\n",
        &[("repo.git", "not a repo\n")],
    );
    let p = all_paths(&c.build_oci(&[]));
    assert!(p.iter().any(|x| x == "f/repo.git"), "{p:?}");
}
