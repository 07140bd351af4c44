//! Build checks that need only the instructions (BuildKit runs these at
//! parse time): StageNameCasing, FromAsCasing, ReservedStageName,
//! MaintainerDeprecated and ConsistentInstructionCasing. Checks that need
//! ARG/ENV scope are raised by the planner.

use crate::dockerfile::diag::Diagnostic;
use crate::dockerfile::instructions::{Instruction, Kind};

fn is_lower(s: &str) -> bool {
    s.chars().all(|c| !c.is_uppercase())
}

fn is_upper(s: &str) -> bool {
    s.chars().all(|c| !c.is_lowercase())
}

/// Parse-time build checks, in source order.
pub fn lint(instrs: &[Instruction]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for ins in instrs {
        match &ins.kind {
            Kind::From(f) => {
                if let Some(raw) = &f.name_raw {
                    if raw.to_lowercase() != *raw {
                        out.push(
                            Diagnostic::warning(
                                ins.pos,
                                "StageNameCasing",
                                format!("Stage name '{raw}' should be lowercase"),
                            )
                            .with_token(raw.clone()),
                        );
                    }
                    if let Some(name) = &f.name {
                        if name == "scratch" || name == "context" {
                            out.push(Diagnostic::warning(
                                ins.pos,
                                "ReservedStageName",
                                format!("Stage name should not use the same name as reserved stage {name:?}"),
                            ));
                        }
                    }
                }
                if let Some(as_kw) = &f.as_keyword {
                    let from_kw = &ins.keyword_raw;
                    let mismatch = (is_lower(from_kw) && !is_lower(as_kw))
                        || (is_upper(from_kw) && !is_upper(as_kw));
                    if mismatch {
                        out.push(Diagnostic::warning(
                            ins.pos,
                            "FromAsCasing",
                            format!("'{as_kw}' and '{from_kw}' keywords' casing do not match"),
                        ));
                    }
                }
            }
            Kind::Onbuild {
                trigger_error: Some(e),
                expression,
                ..
            } => out.push(Diagnostic::warning(
                ins.pos,
                "InvalidOnbuildTrigger",
                format!("ONBUILD trigger {expression:?} will fail when it runs: {e}"),
            )),
            Kind::Maintainer(_) => out.push(Diagnostic::warning(
                ins.pos,
                "MaintainerDeprecated",
                "Maintainer instruction is deprecated in favor of using label",
            )),
            _ => {}
        }
    }
    for ins in instrs {
        for (n, f) in ins.ignored_flags.iter().enumerate() {
            let name = f.split_once('=').map_or(f.as_str(), |(n, _)| n).to_string();
            out.push(
                Diagnostic::warning(
                    ins.pos,
                    "IgnoredFlag",
                    format!(
                        "{name} has no effect on {}: BuildKit ignores it, and so does kiln",
                        ins.keyword()
                    ),
                )
                .with_token_nth(name.clone(), n),
            );
        }
    }
    out.extend(consistent_casing(instrs));
    out
}

/// ConsistentInstructionCasing: keywords (from the first FROM on) should
/// all be upper-case or all lower-case; the majority decides, a tie means
/// upper-case.
fn consistent_casing(instrs: &[Instruction]) -> Vec<Diagnostic> {
    let Some(first) = instrs.iter().position(|i| matches!(i.kind, Kind::From(_))) else {
        return Vec::new();
    };
    let body = &instrs[first..];
    let lower = body.iter().filter(|i| is_lower(&i.keyword_raw)).count();
    let upper = body.iter().filter(|i| is_upper(&i.keyword_raw)).count();
    let majority_lower = lower > upper;
    let (word, want): (&str, fn(&str) -> bool) = if majority_lower {
        ("lowercase", is_lower)
    } else {
        ("uppercase", is_upper)
    };
    body.iter()
        .filter(|i| !want(&i.keyword_raw))
        .map(|i| {
            Diagnostic::warning(
                i.pos,
                "ConsistentInstructionCasing",
                format!(
                    "Command '{}' should match the case of the command majority ({word})",
                    i.keyword_raw
                ),
            )
        })
        .collect()
}
