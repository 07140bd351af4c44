//! Real-world coverage: every Dockerfile under `testdata/realworld/` (the
//! kinds people write: multi-stage Go/Rust/Node/Python/Java builds,
//! heredoc-heavy and ARG-heavy files) parses and plans without error, and
//! its plan matches the golden JSON in `fixtures/realworld/`. Mutated
//! copies of each must never make the frontend panic.

use crate::util::{case_dirs, golden, read_text, root, Lcg};
use kiln::plan::{plan_source, NoResolver, PlanOptions, Platform};
use std::collections::BTreeMap;
use std::path::Path;

fn options(case: &Path) -> PlanOptions {
    let mut build_args = BTreeMap::new();
    if let Ok(text) = std::fs::read_to_string(case.join("build-args")) {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (k, v) = line.split_once('=').unwrap_or((line, ""));
            build_args.insert(k.to_string(), v.to_string());
        }
    }
    let target = std::fs::read_to_string(case.join("target"))
        .ok()
        .map(|t| t.trim().to_string());
    PlanOptions {
        build_args,
        target,
        // Fixed platforms so that the goldens do not depend on the host.
        platform: Platform::parse("linux/amd64").expect("platform"),
        build_platform: Platform::parse("linux/amd64").expect("platform"),
        ..PlanOptions::default()
    }
}

#[test]
fn realworld_dockerfiles_plan_without_errors() {
    let cases = case_dirs(&root().join("testdata/realworld"));
    assert!(
        cases.len() >= 30,
        "need at least 30 real-world Dockerfiles, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let name = case
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let src = read_text(&case.join("Dockerfile"));
        match plan_source(&src, &options(case), &NoResolver) {
            Err(e) => failures.push(format!(
                "{name}: {}:{}: {}",
                e.pos.line, e.pos.col, e.message
            )),
            Ok(plan) => {
                if plan.stages.is_empty() {
                    failures.push(format!("{name}: empty plan"));
                }
                // `kiln check` plans every stage, not only the target's.
                let all = PlanOptions {
                    all_stages: true,
                    ..options(case)
                };
                if let Err(e) = plan_source(&src, &all, &NoResolver) {
                    failures.push(format!(
                        "{name} (all stages): {}:{}: {}",
                        e.pos.line, e.pos.col, e.message
                    ));
                }
                let fixture = root()
                    .join("fixtures/realworld")
                    .join(format!("{name}.json"));
                let json = kiln::plan::render::to_json(&plan) + "\n";
                if let Some(f) = golden(&fixture, &json) {
                    failures.push(f);
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn mutated_dockerfiles_never_panic() {
    // Characters that matter to the lexer, parser and planner.
    const SPICE: &[&str] = &[
        "\\", "`", "\"", "'", "$", "${", "}", "<<", "<<-", "EOF", "\n", "\r\n", "[", "]", "=",
        "--", "#", ":", "/", " ", "\t", "é", "\u{feff}", "-", ",", "0",
    ];
    let cases = case_dirs(&root().join("testdata/realworld"));
    let mut rng = Lcg(0x6b69_6c6e);
    let mut runs = 0;
    for case in &cases {
        let src = read_text(&case.join("Dockerfile"));
        let chars: Vec<char> = src.chars().collect();
        for _ in 0..60 {
            let mut c = chars.clone();
            for _ in 0..(1 + rng.next() % 4) {
                if c.is_empty() {
                    break;
                }
                let at = (rng.next() as usize) % c.len();
                match rng.next() % 3 {
                    0 => {
                        c.remove(at);
                    }
                    1 => {
                        let s = SPICE[(rng.next() as usize) % SPICE.len()];
                        for (k, ch) in s.chars().enumerate() {
                            c.insert(at + k, ch);
                        }
                    }
                    _ => {
                        let end = (at + 1 + (rng.next() as usize) % 40).min(c.len());
                        c.drain(at..end);
                    }
                }
            }
            let text: String = c.into_iter().collect();
            let opts = PlanOptions {
                all_stages: true,
                ..options(case)
            };
            // Must return, Ok or Err, never panic.
            let _ = plan_source(&text, &opts, &NoResolver);
            let _ = kiln::dockerfile::dump::dump(&text);
            runs += 1;
        }
    }
    assert!(runs >= 1800, "ran {runs} mutations");
}
