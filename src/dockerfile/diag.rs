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
    /// Last line of the instruction the diagnostic is about (0: `pos.line`).
    #[serde(skip)]
    pub end_line: usize,
    /// Text to point the caret at, and which occurrence (from 0), if it
    /// can be found in the instruction.
    #[serde(skip)]
    pub token: Option<Box<(String, usize)>>,
}

impl Diagnostic {
    pub fn error(pos: Pos, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            pos,
            rule: None,
            message: message.into(),
            hint: None,
            end_line: 0,
            token: None,
        }
    }

    pub fn warning(pos: Pos, rule: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            pos,
            rule: Some(rule),
            message: message.into(),
            hint: None,
            end_line: 0,
            token: None,
        }
    }

    /// Points the caret at `token` when [`Diagnostic::locate`] finds it.
    pub fn with_token(mut self, token: impl Into<String>) -> Diagnostic {
        self.token = Some(Box::new((token.into(), 0)));
        self
    }

    /// Points the caret at the `nth` occurrence (from 0) of `token`.
    pub fn with_token_nth(mut self, token: impl Into<String>, nth: usize) -> Diagnostic {
        self.token = Some(Box::new((token.into(), nth)));
        self
    }

    /// Records the instruction's last line, so that `locate` can search
    /// continuation lines.
    pub fn spanning(mut self, end_line: usize) -> Diagnostic {
        if self.end_line == 0 {
            self.end_line = end_line;
        }
        self
    }

    /// Moves the position onto the token, when it occurs in the
    /// instruction's lines (at or after the current column on the first).
    pub fn locate(&mut self, source: &str) {
        self.locate_in(&SourceLines::new(source));
    }

    /// [`Diagnostic::locate`] with the lines split once by the caller.
    pub fn locate_in(&mut self, lines: &SourceLines) {
        let Some((token, nth)) = self.token.as_deref().cloned() else {
            return;
        };
        if self.pos.line == 0 || token.is_empty() {
            return;
        }
        let mut alternatives = vec![token.clone()];
        if let Some(name) = token.strip_prefix('$') {
            alternatives.insert(0, format!("${{{name}"));
        }
        let last = self.end_line.max(self.pos.line);
        for alt in &alternatives {
            let mut seen = 0;
            for line in self.pos.line..=last {
                let Some(text) = lines.get(line) else {
                    break;
                };
                let skip = if line == self.pos.line {
                    self.pos.col.saturating_sub(1)
                } else {
                    0
                };
                let mut start = text.char_indices().nth(skip).map_or(text.len(), |(i, _)| i);
                while let Some(at) = text[start..].find(alt.as_str()) {
                    if seen == nth {
                        self.pos = Pos::new(line, text[..start + at].chars().count() + 1);
                        return;
                    }
                    seen += 1;
                    start += at + alt.len();
                }
            }
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    /// Renders `FILE:LINE:COL: error: message`, the source line with its
    /// number, and a caret under the column.
    pub fn render(&self, file: &str, source: &str) -> String {
        self.render_in(file, &SourceLines::new(source))
    }

    /// [`Diagnostic::render`] with the lines split once by the caller.
    pub fn render_in(&self, file: &str, lines: &SourceLines) -> String {
        let mut out = String::new();
        let what = match self.rule {
            Some(rule) => format!("{} [{}]", self.severity, rule),
            None => self.severity.to_string(),
        };
        out.push_str(&format!(
            "{}:{}:{}: {}: {}\n",
            file, self.pos.line, self.pos.col, what, self.message
        ));
        if let Some(text) = lines.get(self.pos.line) {
            let num = self.pos.line.to_string();
            let pad = " ".repeat(num.len());
            // Long lines are shown as a window around the column.
            let chars: Vec<char> = text.chars().collect();
            let col = self.pos.col.saturating_sub(1).min(chars.len());
            let start = col.saturating_sub(60);
            let end = (col + 60).min(chars.len());
            let lead = if start > 0 { "…" } else { "" };
            let tail = if end < chars.len() { "…" } else { "" };
            let shown: String = chars[start..end].iter().collect();
            out.push_str(&format!("{num} | {lead}{shown}{tail}\n"));
            let caret_at: String = chars[start..col]
                .iter()
                .map(|c| if *c == '\t' { '\t' } else { ' ' })
                .collect();
            let lead_pad = if start > 0 { " " } else { "" };
            out.push_str(&format!("{pad} | {lead_pad}{caret_at}^\n"));
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

/// A source split into lines once, for rendering many diagnostics.
pub struct SourceLines<'a> {
    lines: Vec<&'a str>,
}

impl<'a> SourceLines<'a> {
    pub fn new(source: &'a str) -> SourceLines<'a> {
        SourceLines {
            lines: source.split('\n').collect(),
        }
    }

    /// The text of 1-based line `line`, without its line ending and BOM.
    pub fn get(&self, line: usize) -> Option<&'a str> {
        let text = *self.lines.get(line.checked_sub(1)?)?;
        let text = text.strip_suffix('\r').unwrap_or(text);
        Some(text.strip_prefix('\u{feff}').unwrap_or(text))
    }
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
    fn locate_moves_the_caret_onto_the_token() {
        let src = "FROM x\nCOPY --link \\\n  --form=a b c\nRUN y\n";
        let mut d = Diagnostic::error(Pos::new(2, 1), "unknown flag")
            .with_token("--form")
            .spanning(3);
        d.locate(src);
        assert_eq!(d.pos, Pos::new(3, 3));
        let mut d = Diagnostic::error(Pos::new(2, 1), "x")
            .with_token("RUN")
            .spanning(3);
        d.locate(src);
        assert_eq!(
            d.pos,
            Pos::new(2, 1),
            "tokens past the instruction are not found"
        );
        let mut d = Diagnostic::warning(Pos::new(1, 1), "UndefinedVar", "x").with_token("$V");
        d.locate("ENV a=${V}\n");
        assert_eq!(d.pos, Pos::new(1, 7));
    }

    #[test]
    fn long_lines_show_a_window_around_the_caret() {
        let line = format!("RUN {}--bad {}", "a".repeat(200), "b".repeat(200));
        let d = Diagnostic::error(Pos::new(1, 205), "x");
        let out = d.render("Dockerfile", &line);
        let shown = out.lines().nth(1).expect("line");
        assert!(
            shown.starts_with("1 | …") && shown.ends_with('…'),
            "{shown}"
        );
        assert!(shown.chars().count() < 140, "{shown}");
        let caret = out.lines().nth(2).expect("caret");
        let at = caret.chars().position(|c| c == '^').expect("caret");
        assert_eq!(shown.chars().nth(at), Some('-'), "{shown}\n{caret}");
    }

    #[test]
    fn suggests_close_keywords_only() {
        let kws = ["RUN", "COPY", "ENTRYPOINT"];
        assert_eq!(suggest("RUNN", &kws), Some("RUN"));
        assert_eq!(suggest("entrypiont", &kws), Some("ENTRYPOINT"));
        assert_eq!(suggest("XYZZY", &kws), None);
    }
}
