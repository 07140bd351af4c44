//! Parser directives: `# syntax=`, `# escape=` and `# check=`, which are
//! read only at the very top of a Dockerfile, before any blank line,
//! ordinary comment or instruction (Dockerfile reference, "Parser directives").

use super::diag::{Diagnostic, Pos};

/// One directive's value and the line it was on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Directive {
    pub value: String,
    pub line: usize,
}

/// The `# check=` directive: which build checks to skip, and whether
/// warnings are errors.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CheckConfig {
    /// Rule names to skip; `all` skips every rule.
    pub skip: Vec<String>,
    /// Experimental rules to enable (recorded; kiln has none yet).
    pub experimental: Vec<String>,
    pub error: bool,
}

impl CheckConfig {
    pub fn skips(&self, rule: &str) -> bool {
        self.skip
            .iter()
            .any(|s| s.eq_ignore_ascii_case("all") || s == rule)
    }
}

/// The directives of one Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    /// The escape character: `\` (default) or a backtick.
    pub escape: char,
    pub syntax: Option<Directive>,
    pub escape_directive: Option<Directive>,
    pub check: Option<Directive>,
    pub check_config: CheckConfig,
    done: bool,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            escape: '\\',
            syntax: None,
            escape_directive: None,
            check: None,
            check_config: CheckConfig::default(),
            done: false,
        }
    }
}

/// Matches `#` blanks name blanks `=` blanks value: the name is a letter
/// then letters and digits. Returns the lower-cased name and the trimmed value.
fn match_directive(line: &str) -> Option<(String, &str)> {
    let rest = line.strip_prefix('#')?.trim_start();
    let name_len = rest
        .char_indices()
        .find(|(_, c)| !c.is_ascii_alphanumeric())
        .map_or(rest.len(), |(i, _)| i);
    let name = &rest[..name_len];
    if !name.chars().next()?.is_ascii_alphabetic() {
        return None;
    }
    let value = rest[name_len..].trim_start().strip_prefix('=')?.trim();
    if value.is_empty() {
        return None;
    }
    Some((name.to_ascii_lowercase(), value))
}

impl Directives {
    /// Stops directive scanning: later lines are never directives.
    pub fn done(&mut self) {
        self.done = true;
    }

    /// Feeds one line (leading blanks already removed). A line that is not
    /// a known directive ends the directive section.
    pub fn feed(&mut self, line: &str, line_no: usize) -> Result<(), Diagnostic> {
        if self.done {
            return Ok(());
        }
        let Some((name, value)) = match_directive(line) else {
            self.done = true;
            return Ok(());
        };
        let pos = Pos::new(line_no, 1);
        let slot = match name.as_str() {
            "syntax" => &mut self.syntax,
            "escape" => &mut self.escape_directive,
            "check" => &mut self.check,
            _ => {
                self.done = true;
                return Ok(());
            }
        };
        if slot.is_some() {
            return Err(Diagnostic::error(
                pos,
                format!("only one {name} parser directive can be used"),
            ));
        }
        *slot = Some(Directive {
            value: value.to_string(),
            line: line_no,
        });
        match name.as_str() {
            "escape" => {
                self.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(Diagnostic::error(
                            pos,
                            format!("invalid escape token '{value}' does not match ` or \\"),
                        ))
                    }
                }
            }
            "check" => self.check_config = parse_check(value, pos)?,
            _ => {}
        }
        Ok(())
    }
}

/// Parses a `check` value (`skip=Rule1,Rule2;error=true`), from the
/// directive or the BUILDKIT_DOCKERFILE_CHECK build-arg. As in BuildKit, the
/// value ends at the first blank.
pub fn parse_check_value(value: &str) -> Result<CheckConfig, String> {
    let value = value.split(char::is_whitespace).next().unwrap_or_default();
    let mut config = CheckConfig::default();
    for part in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, val)) = part.split_once('=') else {
            return Err(format!("invalid check option {part:?}: expected key=value"));
        };
        let list = || {
            val.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        match key.trim() {
            "skip" => config.skip.extend(list()),
            "experimental" => config.experimental.extend(list()),
            "error" => {
                config.error = match val.trim() {
                    "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
                    "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
                    other => {
                        return Err(format!(
                            "invalid check option: error={other:?} is not a boolean"
                        ))
                    }
                }
            }
            other => {
                return Err(format!(
                    "invalid check option {other:?} (expected skip, error or experimental)"
                ))
            }
        }
    }
    Ok(config)
}

fn parse_check(value: &str, pos: Pos) -> Result<CheckConfig, Diagnostic> {
    parse_check_value(value).map_err(|m| Diagnostic::error(pos, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_matching() {
        assert_eq!(
            match_directive("# Escape = `"),
            Some(("escape".into(), "`"))
        );
        assert_eq!(
            match_directive("#syntax=docker/dockerfile:1"),
            Some(("syntax".into(), "docker/dockerfile:1"))
        );
        assert_eq!(match_directive("# just a comment"), None);
        assert_eq!(match_directive("# 1x=y"), None);
    }

    #[test]
    fn check_directive() {
        let c = parse_check(
            "skip=JSONArgsRecommended,StageNameCasing;error=true",
            Pos::default(),
        )
        .unwrap();
        assert!(c.error);
        assert!(c.skips("StageNameCasing"));
        assert!(!c.skips("FromAsCasing"));
    }
}
