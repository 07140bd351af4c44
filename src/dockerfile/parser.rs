//! Dockerfile bytes to syntax nodes.
//!
//! This is the first stage of the frontend: it splits the text into
//! instructions (joining continuation lines, skipping comments, reading
//! heredoc bodies), reads the parser directives at the top, extracts the
//! `--flags` of each instruction and splits its arguments the way BuildKit's
//! `frontend/dockerfile/parser` does for that instruction. It does not
//! validate flags or expand variables; `instructions` does that.
//!
//! Main types: [`Dockerfile`] (the whole file) and [`Node`] (one instruction).

use super::diag::{Diagnostic, Pos};
use super::directives::Directives;
use super::heredoc::{self, Heredoc};

/// A parsed Dockerfile: directives, instruction nodes and parse warnings.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    pub directives: Directives,
    pub nodes: Vec<Node>,
    pub warnings: Vec<Diagnostic>,
}

/// How an instruction's arguments were split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    /// No arguments at all.
    Empty,
    /// A list of strings: JSON array elements (`json` is true), or words.
    List(Vec<String>),
    /// The rest of the line as one string (shell form, `USER x`, ...).
    Text(String),
    /// `KEY=VALUE` pairs (ENV, LABEL, and the legacy `ENV key value` form
    /// with `legacy` set). Keys and values are not yet unquoted.
    Pairs {
        pairs: Vec<(String, String)>,
        legacy: bool,
    },
    /// HEALTHCHECK: its type word (`CMD`, `NONE`) and the command.
    Health { kind: String, cmd: Box<Args> },
    /// ONBUILD: the wrapped instruction.
    Sub(Box<Node>),
}

/// One instruction, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The keyword as written (`run`, `RUN`, `Run`).
    pub keyword_raw: String,
    /// The keyword upper-cased (`RUN`).
    pub keyword: String,
    /// Flags in order, each `--name=value` or `--name`, quotes removed.
    pub flags: Vec<String>,
    pub args: Args,
    /// The arguments were a JSON array.
    pub json: bool,
    /// The whole instruction with continuation lines joined.
    pub original: String,
    /// Position of the keyword.
    pub pos: Pos,
    /// Last line of the instruction, heredoc bodies included.
    pub end_line: usize,
    pub heredocs: Vec<Heredoc>,
}

/// Error while parsing: a diagnostic (always an error).
pub type ParseError = Diagnostic;

const KNOWN: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// The instruction keywords BuildKit knows, upper-case.
pub fn known_instructions() -> &'static [&'static str] {
    KNOWN
}

/// One physical line of the input.
struct Line<'a> {
    /// The line with its ending (`\n` or `\r\n`), as in the input.
    raw: &'a str,
    /// Without trailing `\r`/`\n`.
    text: &'a str,
}

fn split_lines(src: &str) -> Vec<Line<'_>> {
    let mut lines = Vec::new();
    let mut rest = src;
    while !rest.is_empty() {
        let end = rest.find('\n').map_or(rest.len(), |i| i + 1);
        let (raw, tail) = rest.split_at(end);
        lines.push(Line {
            raw,
            text: raw.trim_end_matches(['\r', '\n']),
        });
        rest = tail;
    }
    lines
}

fn is_space(c: char) -> bool {
    c.is_whitespace()
}

fn is_comment(text: &str) -> bool {
    text.trim_start_matches(is_space).starts_with('#')
}

/// Removes a trailing escape character (and blanks after it). Returns the
/// line and whether the instruction ends here. As in BuildKit, an escape
/// character preceded by another one (`foo \\`) does not continue the line.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    match trimmed.strip_suffix(escape) {
        Some(rest) if !rest.ends_with(escape) => (rest, false),
        _ => (line, true),
    }
}

/// Parses a whole Dockerfile. Errors carry the line and column.
pub fn parse(src: &str) -> Result<Dockerfile, ParseError> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let lines = split_lines(src);
    let mut directives = Directives::default();
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line_no = i + 1;
        let first = lines[i].text;
        i += 1;
        let stripped = first.trim_start_matches(is_space);
        directives.feed(stripped, line_no)?;
        if stripped.is_empty() || stripped.starts_with('#') {
            continue;
        }
        let col = first[..first.len() - stripped.len()].chars().count() + 1;
        let escape = directives.escape;
        let (head, mut ended) = trim_continuation(stripped, escape);
        let mut joined = head.to_string();
        let mut empty_continuation = false;
        while !ended && i < lines.len() {
            let text = lines[i].text;
            i += 1;
            directives.done();
            if is_comment(text) {
                continue;
            }
            if text.trim_start_matches(is_space).is_empty() {
                empty_continuation = true;
                continue;
            }
            let (part, end) = trim_continuation(text, escape);
            joined.push_str(part);
            ended = end;
        }
        if empty_continuation {
            warnings.push(Diagnostic::warning(
                Pos::new(i, 1),
                "NoEmptyContinuation",
                "Empty continuation line",
            ));
        }
        let pos = Pos::new(line_no, col);
        let mut node = node_from_line(&joined, escape, pos)?;
        if heredoc::allowed(&node) && joined.contains("<<") {
            for mut doc in heredoc::from_line(&joined) {
                let mut terminated = false;
                while i < lines.len() {
                    let line = &lines[i];
                    i += 1;
                    let candidate = if doc.chomp {
                        line.text.trim_start_matches('\t')
                    } else {
                        line.text
                    };
                    if candidate == doc.name {
                        terminated = true;
                        break;
                    }
                    doc.content.push_str(line.raw);
                    if !line.raw.ends_with('\n') {
                        doc.content.push('\n');
                    }
                }
                if !terminated {
                    return Err(Diagnostic::error(
                        pos,
                        format!(
                            "unterminated heredoc <<{} (no line \"{}\" ends it)",
                            doc.name, doc.name
                        ),
                    ));
                }
                node.heredocs.push(doc);
            }
        }
        node.end_line = i.max(line_no);
        nodes.push(node);
    }
    Ok(Dockerfile {
        directives,
        nodes,
        warnings,
    })
}

/// Builds a node from one joined instruction line (also used for ONBUILD).
fn node_from_line(line: &str, escape: char, pos: Pos) -> Result<Node, ParseError> {
    let trimmed = line.trim_matches(is_space);
    let (keyword_raw, rest) = match trimmed.find(is_space) {
        Some(at) => (&trimmed[..at], trimmed[at..].trim_start_matches(is_space)),
        None => (trimmed, ""),
    };
    let (rest, flags) = extract_flags(rest);
    let rest = rest.trim_matches(is_space);
    let keyword = keyword_raw.to_ascii_uppercase();
    let mut json = false;
    let args = match keyword.as_str() {
        "ADD" | "COPY" | "VOLUME" => match parse_json(rest, pos)? {
            Some(list) => {
                json = true;
                Args::List(list)
            }
            None => whitespace_list(rest),
        },
        "CMD" | "ENTRYPOINT" | "RUN" | "SHELL" => {
            let (args, is_json) = maybe_json(rest, pos)?;
            json = is_json;
            args
        }
        "ENV" | "LABEL" => name_values(rest, &keyword, escape, pos)?,
        "ARG" => {
            let words = split_words(rest, escape);
            if words.is_empty() {
                Args::Empty
            } else {
                Args::List(words)
            }
        }
        "EXPOSE" | "FROM" => whitespace_list(rest),
        "HEALTHCHECK" => {
            let (kind, cmd) = match rest.find(is_space) {
                Some(at) => (&rest[..at], rest[at..].trim_start_matches(is_space)),
                None => (rest, ""),
            };
            if kind.is_empty() {
                Args::Empty
            } else {
                let (cmd, is_json) = maybe_json(cmd, pos)?;
                json = is_json;
                Args::Health {
                    kind: kind.to_string(),
                    cmd: Box::new(cmd),
                }
            }
        }
        "ONBUILD" => {
            let first = rest.split(is_space).next().unwrap_or_default();
            if rest.is_empty() {
                Args::Empty
            } else if first.eq_ignore_ascii_case("ONBUILD") {
                // Refused here, before recursing: a line of thousands of
                // ONBUILDs must not exhaust the stack.
                return Err(Diagnostic::error(
                    pos,
                    "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                ));
            } else {
                let offset = line.find(rest).unwrap_or(0);
                let sub_col = pos.col + line[..offset].chars().count();
                let sub = node_from_line(rest, escape, Pos::new(pos.line, sub_col))?;
                Args::Sub(Box::new(sub))
            }
        }
        _ => {
            if rest.is_empty() {
                Args::Empty
            } else {
                Args::Text(rest.to_string())
            }
        }
    };
    Ok(Node {
        keyword_raw: keyword_raw.to_string(),
        keyword,
        flags,
        args,
        json,
        original: trimmed.to_string(),
        pos,
        end_line: pos.line,
        heredocs: Vec::new(),
    })
}

fn whitespace_list(rest: &str) -> Args {
    let words: Vec<String> = rest
        .split(['\t', '\u{b}', '\u{c}', '\r', ' '])
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    if words.is_empty() {
        Args::Empty
    } else {
        Args::List(words)
    }
}

/// JSON exec form, or the text as is (shell form) when it is not JSON.
fn maybe_json(rest: &str, pos: Pos) -> Result<(Args, bool), ParseError> {
    if rest.is_empty() {
        return Ok((Args::Empty, false));
    }
    match parse_json(rest, pos)? {
        Some(list) => Ok((Args::List(list), true)),
        None => Ok((Args::Text(rest.to_string()), false)),
    }
}

/// A JSON array of strings. `Ok(None)` when the text is not a JSON array
/// at all (the caller falls back to shell form, as Docker does); an error
/// when it is a JSON array holding something other than strings.
fn parse_json(rest: &str, pos: Pos) -> Result<Option<Vec<String>>, ParseError> {
    let text = rest.trim_start_matches(is_space);
    if !text.starts_with('[') {
        return Ok(None);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(text) else {
        return Ok(None);
    };
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(Diagnostic::error(
                pos,
                "when using JSON array syntax, arrays must be comprised of strings only",
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// ENV and LABEL: `k=v k2="v 2"`, or the legacy `KEY value with spaces`.
fn name_values(rest: &str, keyword: &str, escape: char, pos: Pos) -> Result<Args, ParseError> {
    let words = split_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Args::Empty);
    };
    if !first.contains('=') {
        let is_ws = |c: char| " \t\r\u{b}\u{c}".contains(c);
        let Some(at) = rest.find(is_ws) else {
            return Err(Diagnostic::error(
                pos,
                format!("{keyword} must have two arguments"),
            ));
        };
        let value = rest[at..].trim_start_matches(is_ws);
        return Ok(Args::Pairs {
            pairs: vec![(rest[..at].to_string(), value.to_string())],
            legacy: true,
        });
    }
    let mut pairs = Vec::new();
    for word in words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(Diagnostic::error(
                pos,
                format!("Syntax error - can't find = in {word:?}. Must be of the form: name=value"),
            ));
        };
        pairs.push((k.to_string(), v.to_string()));
    }
    Ok(Args::Pairs {
        pairs,
        legacy: false,
    })
}

/// Splits on unquoted whitespace, keeping quotes and escapes in the words
/// (BuildKit's `parseWords`): the words are unquoted later, by expansion.
pub fn split_words(rest: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut blank_ok = false;
    let mut quote: Option<char> = None;
    let mut chars = rest.chars().peekable();
    while let Some(ch) = chars.next() {
        match quote {
            None => {
                if is_space(ch) {
                    if in_word && (blank_ok || !word.is_empty()) {
                        words.push(std::mem::take(&mut word));
                    }
                    word.clear();
                    in_word = false;
                    blank_ok = false;
                    continue;
                }
                in_word = true;
                if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                    blank_ok = true;
                    word.push(ch);
                } else if ch == escape {
                    match chars.next() {
                        Some(next) => {
                            word.push(ch);
                            word.push(next);
                        }
                        None => continue,
                    }
                } else {
                    word.push(ch);
                }
            }
            Some(q) => {
                if ch == q {
                    quote = None;
                    word.push(ch);
                } else if ch == escape && q != '\'' {
                    match chars.next() {
                        Some(next) => {
                            word.push(ch);
                            word.push(next);
                        }
                        None => quote = None,
                    }
                } else {
                    word.push(ch);
                }
            }
        }
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// Extracts the leading `--flag[=value]` words (BuildKit's
/// `extractBuilderFlags`): quotes are removed and `\` escapes the next char.
/// A lone `--` ends the flags. Returns the rest of the line and the flags.
fn extract_flags(line: &str) -> (&str, Vec<String>) {
    let mut flags = Vec::new();
    let mut idx = 0;
    let bytes = line.as_bytes();
    loop {
        while idx < line.len() && line[idx..].starts_with(is_space) {
            idx += line[idx..].chars().next().map_or(1, char::len_utf8);
        }
        if idx >= line.len() {
            return ("", flags);
        }
        if !(bytes[idx] == b'-' && bytes.get(idx + 1) == Some(&b'-')) {
            return (&line[idx..], flags);
        }
        let mut word = String::new();
        let mut blank_ok = false;
        let mut quote: Option<char> = None;
        let mut chars = line[idx..].char_indices();
        let mut end = line.len();
        while let Some((off, ch)) = chars.next() {
            match quote {
                None if is_space(ch) => {
                    end = idx + off;
                    break;
                }
                None if ch == '\'' || ch == '"' => {
                    quote = Some(ch);
                    blank_ok = true;
                }
                Some(q) if ch == q => quote = None,
                _ if ch == '\\' => match chars.next() {
                    Some((_, next)) => word.push(next),
                    None => quote = None,
                },
                _ => word.push(ch),
            }
        }
        idx = end;
        if word == "--" {
            return (line[idx..].trim_start_matches(is_space), flags);
        }
        if blank_ok || !word.is_empty() {
            flags.push(word);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_extracted_with_quotes_removed() {
        let (rest, flags) = extract_flags(r#"--mount=type=cache,target="/a b" --link echo --x"#);
        assert_eq!(flags, vec!["--mount=type=cache,target=/a b", "--link"]);
        assert_eq!(rest, "echo --x");
        let (rest, flags) = extract_flags("-- --not-a-flag x");
        assert!(flags.is_empty());
        assert_eq!(rest, "--not-a-flag x");
    }

    #[test]
    fn words_keep_quotes() {
        assert_eq!(
            split_words(r#"a="b c" d=e\ f 'g h'"#, '\\'),
            vec![r#"a="b c""#, r"d=e\ f", "'g h'"]
        );
    }
}
