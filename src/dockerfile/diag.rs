//! Diagnostics for Dockerfiles: errors and warnings that carry a position,
//! and the renderer that shows them as `Dockerfile:LINE:COL: error: message`
//! followed by the source line and a caret.
//!
//! This module knows nothing of files on disk: callers hand it the file name
//! to print and the source text.

use std::fmt;

/// A position in a Dockerfile: 1-based line and column (column in chars).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, serde::Serialize)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    pub fn new(line: usize, col: usize) -> Pos {
        Pos { line, col }
    }
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Severity::Error => f.write_str("error"),
            Severity::Warning => f.write_str("warning"),
        }
    }
}

/// An error or warning about a Dockerfile, at a position.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub pos: Pos,
    /// The build-check rule name for warnings (`StageNameCasing`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'static str>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(pos: Pos, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            pos,
            rule: None,
            message: message.into(),
            hint: None,
        }
    }

    pub fn warning(pos: Pos, rule: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            pos,
            rule: Some(rule),
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    /// Renders `FILE:LINE:COL: error: message`, the source line with its
    /// number, and a caret under the column.
    pub fn render(&self, file: &str, source: &str) -> String {
        let mut out = String::new();
        let what = match self.rule {
            Some(rule) => format!("{} [{}]", self.severity, rule),
            None => self.severity.to_string(),
        };
        out.push_str(&format!(
            "{}:{}:{}: {}: {}\n",
            file, self.pos.line, self.pos.col, what, self.message
        ));
        if let Some(text) = source_line(source, self.pos.line) {
            let num = self.pos.line.to_string();
            let pad = " ".repeat(num.len());
            out.push_str(&format!("{num} | {text}\n"));
            let caret_at: String = text
                .chars()
                .take(self.pos.col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            out.push_str(&format!("{pad} | {caret_at}^\n"));
        }
        if let Some(hint) = &self.hint {
            out.push_str(&format!("hint: {hint}\n"));
        }
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}:{}: {}",
            self.pos.line, self.pos.col, self.message
        )
    }
}

impl std::error::Error for Diagnostic {}

/// The text of 1-based line `line`, without its line ending and BOM.
pub fn source_line(source: &str, line: usize) -> Option<&str> {
    if line == 0 {
        return None;
    }
    let text = source.split('\n').nth(line - 1)?;
    let text = text.strip_suffix('\r').unwrap_or(text);
    Some(text.strip_prefix('\u{feff}').unwrap_or(text))
}

/// Levenshtein distance, for "did you mean" suggestions.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The candidate closest to `word` (case-insensitive), if it is close enough
/// to be a plausible typo.
pub fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    let mut best: Option<(usize, &'a str)> = None;
    for cand in candidates {
        let d = edit_distance(&lower, &cand.to_ascii_lowercase());
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, cand));
        }
    }
    let len = lower.chars().count();
    let limit = match len {
        0..=2 => 1,
        3..=8 => 2,
        _ => 3,
    };
    best.filter(|(d, _)| *d > 0 && *d <= limit).map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_caret_under_column() {
        let d = Diagnostic::error(Pos::new(2, 3), "unknown instruction: RUNN");
        let out = d.render("Dockerfile", "FROM x\n  RUNN y\n");
        assert_eq!(
            out,
            "Dockerfile:2:3: error: unknown instruction: RUNN\n2 |   RUNN y\n  |   ^\n"
        );
    }

    #[test]
    fn suggests_close_keywords_only() {
        let kws = ["RUN", "COPY", "ENTRYPOINT"];
        assert_eq!(suggest("RUNN", &kws), Some("RUN"));
        assert_eq!(suggest("entrypiont", &kws), Some("ENTRYPOINT"));
        assert_eq!(suggest("XYZZY", &kws), None);
    }
}
