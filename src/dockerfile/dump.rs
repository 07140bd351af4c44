//! A canonical text dump of a parsed Dockerfile, used by the parser's
//! golden tests (`testdata/parse/*` against `fixtures/parse/*`) and handy
//! when debugging: the directives, each instruction on one line as JSON
//! with its line range, and the parse warnings.

use super::instructions;
use super::parser;

/// Dumps `src`, or the error that stops it, as text.
pub fn dump(src: &str) -> String {
    let mut out = String::new();
    let df = match parser::parse(src) {
        Ok(df) => df,
        Err(e) => {
            return format!(
                "parse error at {}:{}: {}\n",
                e.pos.line, e.pos.col, e.message
            )
        }
    };
    let d = &df.directives;
    out.push_str(&format!(
        "directives: escape={:?} syntax={:?} check={:?}\n",
        d.escape,
        d.syntax.as_ref().map(|x| x.value.as_str()),
        d.check.as_ref().map(|x| x.value.as_str()),
    ));
    for node in &df.nodes {
        match instructions::from_node(node) {
            Ok(ins) => {
                let json = serde_json::to_string(&ins.kind).unwrap_or_default();
                out.push_str(&format!(
                    "{}:{}-{} {} {}\n",
                    ins.pos.line, ins.pos.col, ins.end_line, ins.keyword_raw, json
                ));
            }
            Err(e) => out.push_str(&format!(
                "error at {}:{}: {}\n",
                e.pos.line, e.pos.col, e.message
            )),
        }
    }
    for w in &df.warnings {
        out.push_str(&format!(
            "warning at {}:{} [{}]: {}\n",
            w.pos.line,
            w.pos.col,
            w.rule.unwrap_or("-"),
            w.message
        ));
    }
    out
}
