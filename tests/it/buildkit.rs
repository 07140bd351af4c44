//! Parity with BuildKit, against results recorded from a real
//! `docker buildx build` (BuildKit 0.13, Debian trixie) by
//! `scripts/record-buildkit` into `fixtures/buildkit/`.
//!
//! - Every negative case BuildKit rejects, kiln rejects at the same line
//!   with a message that contains BuildKit's (flags are written `--x` by
//!   kiln), unless it is listed below with the reason kiln differs.
//! - Every real-world Dockerfile BuildKit's frontend accepts, kiln plans;
//!   the ones it rejects are listed with the reason.

use crate::util::{read_text, root};
use kiln::plan::{plan_source, NoResolver, PlanOptions};

/// Negative cases where kiln deliberately says something else.
const DIFFERENT_MESSAGE: &[(&str, &str)] = &[
    ("bad-expansion", "BuildKit prints the end of input as `unsupported modifier (U+FFFD)`; kiln says `missing '}'`"),
    ("bad-security", "RUN --security is a labs flag in BuildKit 0.13; kiln accepts it and checks its value"),
    ("chmod-bad", "BuildKit 0.13 fails late, computing a cache key; kiln checks --chmod while planning"),
    ("copy-from-variable", "BuildKit 0.13 fails to parse `$S` as an image; kiln explains that --from is not expanded"),
    ("duplicate-stage-name", "BuildKit 0.13 accepts duplicate stage names (newer versions warn); the issue asks for an error"),
    ("from-bad-platform", "BuildKit resolves the base image before checking the platform"),
    ("only-args", "BuildKit 0.13 panics and takes dockerd down; kiln says there is no stage"),
];

/// Negative cases where BuildKit points at another line.
const DIFFERENT_LINE: &[(&str, &str)] = &[
    ("comments-only", "BuildKit points past the last line"),
    (
        "duplicate-escape-directive",
        "BuildKit reports a 0-based index, the first directive; kiln points at the duplicate",
    ),
];

/// Real-world files BuildKit 0.13's built-in frontend cannot take here.
const BUILDKIT_CANNOT: &[(&str, &str)] = &[
    (
        "copy-flags-galore",
        "COPY --exclude needs dockerfile syntax 1.19 (labs in 0.13)",
    ),
    (
        "node-pnpm-monorepo",
        "COPY --parents needs dockerfile syntax 1.20 (labs in 0.13)",
    ),
    (
        "security-insecure-labs",
        "RUN --security needs the labs frontend",
    ),
    (
        "pinned-digests-quoting",
        "a digest-pinned base cannot be faked offline",
    ),
];

fn rows(file: &str) -> Vec<Vec<String>> {
    read_text(&root().join("fixtures/buildkit").join(file))
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

fn normalize(s: &str) -> String {
    s.to_lowercase().replace("--", "")
}

#[test]
fn negative_cases_match_buildkit() {
    let rows = rows("parse-errors.tsv");
    assert!(rows.len() >= 60, "recorded cases: {}", rows.len());
    let mut failures = Vec::new();
    for row in &rows {
        let [case, status, line, message] = row.as_slice() else {
            panic!("bad row {row:?}");
        };
        let src = read_text(
            &root()
                .join("testdata/parse-errors")
                .join(case)
                .join("Dockerfile"),
        );
        let Err(err) = plan_source(&src, &PlanOptions::default(), &NoResolver) else {
            failures.push(format!(
                "{case}: kiln accepts it; BuildKit said {status}: {message}"
            ));
            continue;
        };
        let excused = |list: &[(&str, &str)]| list.iter().any(|(c, _)| c == case);
        if status == "ok" && !excused(DIFFERENT_MESSAGE) {
            failures.push(format!(
                "{case}: BuildKit accepts it but kiln says {}",
                err.message
            ));
        }
        if status != "error" || excused(DIFFERENT_MESSAGE) {
            continue;
        }
        let core = message
            .split_once(": ")
            .filter(|(p, _)| p.starts_with("dockerfile parse error"))
            .map_or(message.as_str(), |(_, m)| m);
        if !normalize(&err.message).contains(&normalize(core)) {
            failures.push(format!(
                "{case}: kiln says {:?}, BuildKit {core:?}",
                err.message
            ));
        }
        if line != "-"
            && line.parse::<usize>().ok() != Some(err.pos.line)
            && !excused(DIFFERENT_LINE)
        {
            failures.push(format!(
                "{case}: kiln points at line {}, BuildKit at {line}",
                err.pos.line
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn realworld_files_buildkit_accepts_are_planned() {
    let rows = rows("realworld.tsv");
    assert!(rows.len() >= 30, "recorded cases: {}", rows.len());
    let mut failures = Vec::new();
    let mut accepted = 0;
    for row in &rows {
        let [case, status, message] = row.as_slice() else {
            panic!("bad row {row:?}");
        };
        let known = BUILDKIT_CANNOT.iter().any(|(c, _)| c == case);
        match (status.as_str(), known) {
            ("ok", false) => accepted += 1,
            ("ok", true) => failures.push(format!(
                "{case}: BuildKit accepts it now; drop it from BUILDKIT_CANNOT"
            )),
            (_, true) => {}
            (_, false) => failures.push(format!("{case}: BuildKit rejected it: {message}")),
        }
        let src = read_text(
            &root()
                .join("testdata/realworld")
                .join(case)
                .join("Dockerfile"),
        );
        let opts = PlanOptions {
            all_stages: true,
            ..PlanOptions::default()
        };
        if let Err(e) = plan_source(&src, &opts, &NoResolver) {
            failures.push(format!(
                "{case}: kiln: {}:{}: {}",
                e.pos.line, e.pos.col, e.message
            ));
        }
    }
    assert!(accepted >= 40, "BuildKit accepted only {accepted}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
