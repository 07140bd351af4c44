//! The `kiln` binary: exit codes, error rendering, `check`, `--dry-run`,
//! flag validation, and flags that are parsed but not implemented yet.

use crate::util::kiln_bin;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn kiln(dir: &Path, args: &[&str]) -> Output {
    Command::new(kiln_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("NO_COLOR")
        .output()
        .expect("running kiln")
}

fn kiln_stdin(dir: &Path, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(kiln_bin())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning kiln");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("writing stdin");
    child.wait_with_output().expect("waiting for kiln")
}

fn context(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).expect("writing Dockerfile");
    dir
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn version_is_printed() {
    let dir = context("FROM scratch\n");
    let o = kiln(dir.path(), &["--version"]);
    assert!(o.status.success());
    assert_eq!(
        stdout(&o).trim(),
        format!("kiln {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_reports_errors_with_file_line_col_and_caret() {
    let dir = context("FROM alpine\n  RUNN echo hi\n");
    let o = kiln(dir.path(), &["check"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("Dockerfile:2:3: error: unknown instruction: RUNN (did you mean RUN?)\n2 |   RUNN echo hi\n  |   ^\n"),
        "{err}"
    );
}

#[test]
fn caret_points_at_the_offending_flag_even_on_a_continuation_line() {
    let dir = context("FROM alpine\nCOPY --link \\\n     --form=build /a /b\n");
    let o = kiln(dir.path(), &["check"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("Dockerfile:3:6: error: unknown flag: --form (did you mean --from?)\n3 |      --form=build /a /b\n  |      ^\n"),
        "{err}"
    );
}

#[test]
fn check_passes_clean_files_and_prints_warnings() {
    let dir = context("FROM alpine AS build\nRUN echo hi\nCMD [\"sh\"]\n");
    let o = kiln(dir.path(), &["check"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("no problems found"));

    let dir = context("FROM alpine as Build\nMAINTAINER me\n");
    let o = kiln(dir.path(), &["check"]);
    assert_eq!(o.status.code(), Some(0));
    let err = stderr(&o);
    assert!(
        err.contains(
            "Dockerfile:1:16: warning [StageNameCasing]: Stage name 'Build' should be lowercase"
        ),
        "{err}"
    );
    assert!(err.contains("warning [MaintainerDeprecated]"), "{err}");
    assert!(err.contains("0 error(s), 3 warning(s)"), "{err}");
}

#[test]
fn check_error_directive_turns_warnings_into_failure() {
    let dir = context("# check=error=true\nFROM alpine\nMAINTAINER me\n");
    let o = kiln(dir.path(), &["check"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

#[test]
fn check_json_format_lists_diagnostics() {
    let dir = context("FROM alpine\nMAINTAINER me\n");
    let o = kiln(dir.path(), &["check", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["diagnostics"][0]["rule"], "MaintainerDeprecated");
    assert_eq!(v["diagnostics"][0]["pos"]["line"], 2);
}

#[test]
fn check_lints_every_stage_but_build_only_the_target() {
    let src = "FROM alpine AS unused\nMAINTAINER me\nCMD echo\nFROM alpine\nRUN true\n";
    let dir = context(src);
    let o = kiln(dir.path(), &["check"]);
    assert!(stderr(&o).contains("JSONArgsRecommended"), "{}", stderr(&o));
    let o = kiln(dir.path(), &["build", "--dry-run", "."]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("JSONArgsRecommended"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn dry_run_prints_the_plan_as_text_and_json() {
    let src = "ARG V=1\nFROM alpine AS build\nARG V\nRUN echo $V > /v\nFROM scratch\nCOPY --from=build /v /v\n";
    let dir = context(src);
    let o = kiln(
        dir.path(),
        &["build", "--dry-run", "--build-arg", "V=2", "."],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("stage 1 [stage-1] line 5: from scratch, needs build"),
        "{out}"
    );
    assert!(out.contains("COPY from stage build /v -> /v"), "{out}");
    let o = kiln(
        dir.path(),
        &["build", "--dry-run=json", "--build-arg", "V=2", "."],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["stages"][0]["steps"][0]["value"], "2");
    assert_eq!(v["global_args"][0], serde_json::json!(["V", "2"]));
}

#[test]
fn dockerfile_from_stdin_and_outside_the_context() {
    let dir = context("FROM scratch\n");
    let o = kiln_stdin(
        dir.path(),
        &["build", "--dry-run", "-f", "-", "."],
        "FROM alpine\nRUN echo from-stdin\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("echo from-stdin"));

    let other = tempfile::tempdir().expect("tempdir");
    let df = other.path().join("build.Dockerfile");
    std::fs::write(&df, "FROM alpine\nRUN echo elsewhere\n").expect("write");
    let o = kiln(
        dir.path(),
        &[
            "build",
            "--dry-run",
            "-f",
            df.to_str().expect("utf8 path"),
            ".",
        ],
    );
    assert!(stdout(&o).contains("echo elsewhere"), "{}", stderr(&o));
}

#[test]
fn build_arg_without_value_comes_from_the_environment() {
    let dir = context("FROM alpine\nARG FROM_ENV\nRUN echo\n");
    let o = Command::new(kiln_bin())
        .args(["build", "--dry-run=json", "--build-arg", "FROM_ENV", "."])
        .current_dir(dir.path())
        .env("FROM_ENV", "yes")
        .output()
        .expect("run");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["stages"][0]["steps"][0]["value"], "yes");
}

#[test]
fn dockerfile_errors_exit_1_and_usage_errors_exit_2() {
    let dir = context("FROM alpine\nCOPY --from=nowhere-stage\n");
    let o = kiln(dir.path(), &["build", "--dry-run", "."]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("Dockerfile:2:1: error: COPY requires at least two arguments"),
        "{}",
        stderr(&o)
    );

    let o = kiln(dir.path(), &["build", "--progress=fancy", "."]);
    assert_eq!(o.status.code(), Some(2));
    let o = kiln(
        dir.path(),
        &["build", "--dry-run", "--platform", "linux//x", "."],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("invalid platform"), "{}", stderr(&o));
    let o = kiln(
        dir.path(),
        &["build", "--dry-run", "-f", "missing.Dockerfile", "."],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("hint: pass the Dockerfile with -f PATH"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn flag_errors_are_usage_errors() {
    let dir = context("FROM alpine\n");
    for (flags, want) in [
        (["--secret", "id=a,bogus=1"], "unexpected key \"bogus\""),
        (["--ssh", "a=/x,"], "a path is empty"),
    ] {
        let mut args = vec!["build", "--dry-run"];
        args.extend(flags);
        args.push(".");
        let o = kiln(dir.path(), &args);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{flags:?}: {}", stderr(&o));
    }

    // A registry that cannot be reached: a clear error at the FROM line.
    let dir = context("FROM 127.0.0.1:1/alpine\n");
    let o = kiln(dir.path(), &["build", "--cache-dir", "store", "."]);
    assert_eq!(o.status.code(), Some(4));
    let err = stderr(&o);
    assert!(
        err.contains("cannot reach http://127.0.0.1:1/v2/alpine/manifests/latest"),
        "{err}"
    );
    assert!(err.contains("Dockerfile:1"), "{err}");
}

#[test]
fn flag_values_are_validated_before_anything_else() {
    let dir = context("FROM alpine\n");
    for (args, msg) in [
        (vec!["-t", "Registry/App"], "invalid reference"),
        (vec!["--output", "type=zip"], "--output type \"zip\""),
        (vec!["--secret", "id=x,bogus=1"], "unexpected key \"bogus\""),
        (vec!["--ssh", "=x"], "--ssh"),
        (vec!["--label", "=v"], "the key is empty"),
        (vec!["--build-arg", "=v"], "--build-arg needs a name"),
    ] {
        let mut all = vec!["build", "--dry-run"];
        all.extend(args.iter().copied());
        all.push(".");
        let o = kiln(dir.path(), &all);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains(msg), "{args:?}: {}", stderr(&o));
    }
    let o = kiln(dir.path(), &["build", "--network", "bridge", "."]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn garbage_input_never_panics_the_binary() {
    let dir = context("FROM scratch\n");
    let inputs = [
        "\u{0}\u{1}\u{2}",
        "FROM a\nRUN <<",
        "FROM ${",
        "# escape=`\nFROM a\nRUN x `",
        "FROM a\nONBUILD",
        "FROM a\nHEALTHCHECK --interval=99999999999999h CMD x",
        "FROM a\nEXPOSE 1-65535/udp\n",
        "\u{feff}\u{feff}FROM a",
        "FROM a\nCOPY [\"\\ud800\", \"/x\"]",
    ];
    for input in inputs {
        let o = kiln_stdin(dir.path(), &["check", "-f", "-"], input);
        let code = o.status.code();
        assert!(
            matches!(code, Some(0) | Some(1)),
            "{input:?} gave {code:?}: {}",
            stderr(&o)
        );
        assert!(
            !stderr(&o).contains("panicked"),
            "{input:?}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn lowercase_dockerfile_is_found_like_the_docker_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("dockerfile"),
        "FROM alpine\nRUN echo lower\n",
    )
    .expect("write");
    let o = kiln(dir.path(), &["build", "--dry-run", "."]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("echo lower"));
}

#[test]
fn progress_modes_are_accepted() {
    let dir = context("FROM alpine\n");
    for mode in ["plain", "auto", "tty", "quiet", "rawjson"] {
        let o = kiln(
            dir.path(),
            &["build", "--dry-run", &format!("--progress={mode}"), "."],
        );
        assert!(o.status.success(), "{mode}: {}", stderr(&o));
    }
    let o = kiln(dir.path(), &["build", "--dry-run", "--progress=loud", "."]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn build_honours_check_error_true() {
    let dir = context("# check=error=true\nFROM alpine\nMAINTAINER x\n");
    let o = kiln(dir.path(), &["build", "--dry-run", "."]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("lint violation found for rules: MaintainerDeprecated"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn thousands_of_nested_onbuilds_are_an_error_not_a_crash() {
    let dir = context("FROM scratch\n");
    let input = format!("FROM a\n{}RUN x\n", "ONBUILD ".repeat(20_000));
    let o = kiln_stdin(dir.path(), &["check", "-f", "-"], &input);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("Chaining ONBUILD"),
        "{}",
        &err[..err.len().min(300)]
    );
    assert!(
        err.len() < 2000,
        "the long line is shown as a window, got {} bytes",
        err.len()
    );
}

/// `kiln completion` prints a script for each shell; `kiln build --help`
/// groups its options by topic.
#[test]
fn completion_scripts_and_grouped_help() {
    for (shell, want) in [
        ("bash", "_kiln()"),
        ("zsh", "#compdef kiln"),
        ("fish", "complete -c kiln"),
    ] {
        let o = Command::new(crate::util::kiln_bin())
            .args(["completion", shell])
            .output()
            .expect("kiln");
        assert!(o.status.success(), "{}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains(want) && out.contains("no-cache"),
            "{shell}: {out}"
        );
    }
    let o = Command::new(crate::util::kiln_bin())
        .args(["build", "--help"])
        .output()
        .expect("kiln");
    let help = String::from_utf8_lossy(&o.stdout);
    for heading in [
        "Input:",
        "Output:",
        "Cache:",
        "Execution:",
        "Display:",
        "Compatibility:",
    ] {
        assert!(help.contains(heading), "no {heading} in:\n{help}");
    }
    // `kiln --help`: the commands by topic.
    let o = Command::new(crate::util::kiln_bin())
        .arg("--help")
        .output()
        .expect("kiln");
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{help}");
    let build = help.find("\nBuild:\n  build ").expect("Build topic");
    let images = help
        .find("\nImages and registries:\n  pull ")
        .expect("images topic");
    let store = help
        .find("\nThe store and its cache:\n  du ")
        .expect("store topic");
    assert!(build < images && images < store, "{help}");
}

/// Output to a reader that went away (`| head`) ends a command quietly:
/// exit 0, no panic, and a dry run (whose cache lines come from the
/// solver's threads) does not hang.
#[test]
fn a_closed_stdout_ends_output_quietly() {
    let c = crate::image::Ctx::new("FROM scratch\nCOPY f /f\nCOPY f /g\n", &[("f", "x")]);
    let o = c.kiln(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    for args in [
        vec!["build", "--dry-run"],
        vec!["images"],
        vec!["completion", "bash"],
    ] {
        let mut cmd = Command::new(crate::util::kiln_bin());
        cmd.args(&args).arg("--cache-dir").arg(c.path("store"));
        if args[0] == "build" {
            cmd.arg(c.ctx());
        }
        if args[0] == "completion" {
            cmd = Command::new(crate::util::kiln_bin());
            cmd.args(&args);
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kiln");
        // The reader goes away before kiln writes.
        drop(child.stdout.take());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{args:?} hung with its stdout closed");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
            .expect("stderr");
        assert!(status.success(), "{args:?}: {status}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
