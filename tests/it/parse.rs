//! Parser goldens and negative cases.
//!
//! `testdata/parse/<case>/Dockerfile` is dumped and compared with
//! `fixtures/parse/<case>.txt`; `testdata/parse-errors/<case>/Dockerfile`
//! must fail (parse or plan) at the line in `expect`'s first line with a
//! message containing its second line.

use crate::util::{case_dirs, golden, read_text, root};
use kiln::dockerfile::dump::dump;
use kiln::plan::{plan_source, NoResolver, PlanOptions};

#[test]
fn parse_goldens() {
    let cases = case_dirs(&root().join("testdata/parse"));
    assert!(
        cases.len() >= 15,
        "expected the parser cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let name = case
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let src = read_text(&case.join("Dockerfile"));
        let fixture = root().join("fixtures/parse").join(format!("{name}.txt"));
        if let Some(f) = golden(&fixture, &dump(&src)) {
            failures.push(f);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn negative_cases_fail_at_the_right_line() {
    let cases = case_dirs(&root().join("testdata/parse-errors"));
    assert!(
        cases.len() >= 40,
        "expected the negative cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let name = case
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let src = read_text(&case.join("Dockerfile"));
        let expect = read_text(&case.join("expect"));
        let mut lines = expect.lines();
        // `LINE` or `LINE:COL`.
        let at = lines.next().unwrap_or_default().trim().to_string();
        let (line, col) = match at.split_once(':') {
            Some((l, c)) => (
                l.parse::<usize>().expect("line"),
                Some(c.parse::<usize>().expect("col")),
            ),
            None => (at.parse::<usize>().expect("line"), None),
        };
        let msg = lines.next().unwrap_or_default();
        match plan_source(&src, &PlanOptions::default(), &NoResolver) {
            Ok(_) => failures.push(format!(
                "{name}: planned without error, expected {msg:?} at line {line}"
            )),
            Err(e) => {
                if e.pos.line != line
                    || col.is_some_and(|c| c != e.pos.col)
                    || !e.message.contains(msg)
                {
                    failures.push(format!(
                        "{name}: got {}:{} {:?}, expected {at} containing {msg:?}",
                        e.pos.line, e.pos.col, e.message
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
