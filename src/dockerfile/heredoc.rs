//! Heredocs (`<<EOF`) in RUN, COPY and ADD: finding the heredoc words of an
//! instruction line and deciding, from the delimiter's quoting, whether the
//! body is expanded and whether leading tabs are stripped (`<<-`).

use super::parser::Node;
use super::shell::Lexer;
use std::collections::BTreeMap;

/// One heredoc: its delimiter and its body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Heredoc {
    /// The delimiter word, quotes removed.
    pub name: String,
    /// The body, each line with its line ending.
    pub content: String,
    /// Variables in the body are expanded (the delimiter was not quoted).
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the body's lines.
    pub chomp: bool,
    /// A file descriptor written before `<<` (`3<<EOF`), 0 when absent.
    pub fd: u32,
}

impl Heredoc {
    /// The body with `<<-` chomping applied.
    pub fn body(&self) -> String {
        if self.chomp {
            chomp(&self.content)
        } else {
            self.content.clone()
        }
    }
}

/// Strips leading tabs from every line.
pub fn chomp(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

/// Whether an instruction may carry heredocs: RUN, COPY and ADD, not in
/// JSON form.
pub fn allowed(node: &Node) -> bool {
    match (&node.keyword[..], &node.args) {
        ("ONBUILD", super::parser::Args::Sub(sub)) => allowed(sub),
        (kw, _) => matches!(kw, "RUN" | "COPY" | "ADD") && !node.json,
    }
}

/// The heredocs that an instruction line opens, in order.
pub fn from_line(line: &str) -> Vec<Heredoc> {
    let lexer = Lexer {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset_env: true,
        ..Lexer::new('\\')
    };
    let env: BTreeMap<String, String> = BTreeMap::new();
    let words = lexer.process_words(line, &env).unwrap_or_default();
    words.iter().filter_map(|w| parse_word(w)).collect()
}

/// Parses one word as a heredoc opener: `[N]<<[-]DELIM`, where DELIM is a
/// single shell word with no `<`. The body is expanded unless some part of
/// the delimiter is quoted.
pub fn parse_word(word: &str) -> Option<Heredoc> {
    let digits = word.len() - word.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let rest = word[digits..].strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let fd = word[..digits].parse().unwrap_or(0);
    let env: BTreeMap<String, String> = BTreeMap::new();
    let plain = Lexer {
        skip_unset_env: true,
        ..Lexer::new('\\')
    };
    let words = plain.process_words(rest, &env).ok()?;
    if words.len() != 1 {
        return None;
    }
    let raw = Lexer {
        raw_quotes: true,
        ..plain
    };
    let raw_words = raw.process_words(rest, &env).ok()?;
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    let expand = raw_words.len() == 1 && quotes(&words[0]) == quotes(&raw_words[0]);
    Some(Heredoc {
        name: words[0].clone(),
        content: String::new(),
        expand,
        chomp,
        fd,
    })
}
