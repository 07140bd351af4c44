//! Dockerfile word expansion: quote removal, escapes and `$` substitution.
//!
//! This is the lexer that turns the arguments of instructions such as `ENV`,
//! `COPY` or `WORKDIR` into their final text, following the behaviour of
//! BuildKit's `frontend/dockerfile/shell` package rather than a real shell:
//!
//! * `'...'` is literal, `"..."` only honours the escape character before
//!   `"`, `$` and the escape character itself (other escapes stay as typed);
//! * outside quotes the escape character (`\`, or `` ` `` after an
//!   `# escape=` directive) makes the next character literal and vanishes at
//!   the end of the input;
//! * `$name`, `${name}`, positional (`$1`) and special (`$@ $* $# $? $- $$ $!
//!   $0`) parameters, and the modifiers `-`, `+`, `?` (each also with `:`),
//!   `#`, `##`, `%`, `%%`, `/` and `//`, whose patterns use `*` and `?` only
//!   (`[` is an ordinary character);
//! * every modifier word is expanded even when its value ends up unused, so
//!   an error inside it is reported anyway.
//!
//! Word splitting ([`Lexer::process_words`]) splits on whitespace that was
//! typed unquoted or that came out of a `$` expansion (even a quoted
//! default such as `${x:-'a b'}`), never on quoted or escaped whitespace.
//!
//! Known deviations: Unicode tables follow Rust's version, some spacing
//! marks count as letters in names (Go's `unicode.IsLetter` says no), and
//! nesting deeper than [`MAX_DEPTH`] expansions is rejected instead of
//! recursing without bound.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// Variable lookup used by expansion.
pub trait Env {
    /// The value of `name`, or `None` when it is unset.
    fn get(&self, name: &str) -> Option<String>;
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

impl Env for Vec<(String, String)> {
    /// The last pair with the name wins, as in a Dockerfile's `ENV` history.
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

/// A failed expansion, worded like BuildKit's errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ShellError {
    pub message: String,
}

/// The outcome of expanding one word.
#[derive(Debug, Clone, Default)]
pub struct Expanded {
    /// The whole expansion, whitespace kept.
    pub value: String,
    /// The expansion split into words.
    pub words: Vec<String>,
    /// Names looked up and found.
    pub matched: BTreeSet<String>,
    /// Names looked up and not found.
    pub unmatched: BTreeSet<String>,
}

/// How deeply `${...}` and quotes may nest before expansion gives up.
pub const MAX_DEPTH: usize = 100;

/// The expansion settings; the flags serve heredoc delimiter detection.
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    /// The escape character, `\` or `` ` ``.
    pub escape: char,
    /// Keep quote characters in the result.
    pub raw_quotes: bool,
    /// Keep escape characters in the result.
    pub raw_escapes: bool,
    /// Treat quotes as ordinary characters.
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as they were written.
    pub skip_unset_env: bool,
}

impl Lexer {
    /// A lexer with the given escape character and every flag off.
    pub fn new(escape: char) -> Lexer {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// Expand as one word (BuildKit ProcessWord / ProcessWordWithMatches):
    /// quote removal, escapes, $ expansion; unquoted whitespace kept.
    ///
    /// # Errors
    /// A [`ShellError`] worded as BuildKit's, `failed to process "<word>": ...`.
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<Expanded, ShellError> {
        let mut walker = Walker {
            lex: self,
            env,
            scan: Scanner::new(word),
            raw_escapes: self.raw_escapes,
            depth: 0,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        match walker.until(None, self.raw_escapes) {
            Ok((value, words)) => Ok(Expanded {
                value,
                words,
                matched: walker.matched,
                unmatched: walker.unmatched,
            }),
            Err(e) => Err(ShellError {
                message: format!("failed to process {}: {e}", go_quote(word)),
            }),
        }
    }

    /// Expand and split into words (BuildKit ProcessWords); result in Expanded.words too.
    ///
    /// # Errors
    /// As [`Lexer::process_word`].
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ShellError> {
        self.process_word(word, env).map(|e| e.words)
    }
}

/// What Go prints for `string(rune)` of the end of input.
const REPLACEMENT: char = '\u{FFFD}';

/// A character reader with one character of look-ahead, like Go's
/// `text/scanner` (which also drops a leading byte order mark).
struct Scanner {
    chars: Vec<char>,
    pos: usize,
}

impl Scanner {
    fn new(text: &str) -> Scanner {
        let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
        Scanner {
            chars: text.chars().collect(),
            pos: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek();
        if ch.is_some() {
            self.pos += 1;
        }
        ch
    }
}

/// Collects the split words while the value is built.
#[derive(Default)]
struct Words {
    done: Vec<String>,
    current: String,
    in_word: bool,
}

impl Words {
    /// An unquoted character: whitespace ends the current word.
    fn add_char(&mut self, ch: char) {
        if !ch.is_whitespace() {
            self.add_raw_char(ch);
        } else if self.in_word && !self.current.is_empty() {
            self.done.push(std::mem::take(&mut self.current));
            self.in_word = false;
        }
    }

    /// A quoted or escaped character: always part of the word.
    fn add_raw_char(&mut self, ch: char) {
        self.current.push(ch);
        self.in_word = true;
    }

    fn add_str(&mut self, text: &str) {
        text.chars().for_each(|ch| self.add_char(ch));
    }

    fn add_raw_str(&mut self, text: &str) {
        self.current.push_str(text);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }
}

/// One expansion in progress; errors are bare messages until wrapped.
struct Walker<'a> {
    lex: &'a Lexer,
    env: &'a dyn Env,
    scan: Scanner,
    raw_escapes: bool,
    depth: usize,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

const MISSING_BRACE: &str = "syntax error: missing '}'";

fn unterminated(what: &str) -> String {
    format!("unexpected end of statement while looking for matching {what}")
}

fn unsupported(modifier: &str) -> String {
    format!("unsupported modifier ({modifier}) in substitution")
}

impl Walker<'_> {
    /// Expands up to `stop` (consumed) or the end of input when `stop` is
    /// `None`, with escapes kept when `raw` is set.
    fn until(&mut self, stop: Option<char>, raw: bool) -> Result<(String, Vec<String>), String> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw);
        let out = self.until_inner(stop);
        self.raw_escapes = saved;
        out
    }

    fn until_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), String> {
        let mut result = String::new();
        let mut words = Words::default();
        let quotes = !self.lex.skip_process_quotes;
        while let Some(ch) = self.scan.peek() {
            if Some(ch) == stop {
                self.scan.next();
                return Ok((result, words.finish()));
            }
            if ch == '$' {
                let text = self.nested(Self::dollar)?;
                result.push_str(&text);
                words.add_str(&text);
            } else if quotes && (ch == '\'' || ch == '"') {
                let text = if ch == '\'' {
                    self.single_quoted()?
                } else {
                    self.nested(Self::double_quoted)?
                };
                result.push_str(&text);
                words.add_raw_str(&text);
            } else {
                self.scan.next();
                if ch != self.lex.escape {
                    words.add_char(ch);
                    result.push(ch);
                    continue;
                }
                if self.raw_escapes {
                    words.add_raw_char(ch);
                    result.push(ch);
                }
                // A trailing escape character is dropped.
                let Some(escaped) = self.scan.next() else {
                    break;
                };
                words.add_raw_char(escaped);
                result.push(escaped);
            }
        }
        match stop {
            Some(stop) => Err(unterminated(&stop.to_string())),
            None => Ok((result, words.finish())),
        }
    }

    /// Runs one nesting level, refusing to go deeper than [`MAX_DEPTH`].
    fn nested(&mut self, step: fn(&mut Self) -> Result<String, String>) -> Result<String, String> {
        if self.depth >= MAX_DEPTH {
            return Err(format!("expansion nested more than {MAX_DEPTH} deep"));
        }
        self.depth += 1;
        let out = step(self);
        self.depth -= 1;
        out
    }

    fn single_quoted(&mut self) -> Result<String, String> {
        let mut out = String::new();
        let quote = self.scan.next();
        if self.lex.raw_quotes {
            out.extend(quote);
        }
        loop {
            match self.scan.next() {
                None => return Err(unterminated("single-quote")),
                Some('\'') => {
                    if self.lex.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(ch) => out.push(ch),
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String, String> {
        let mut out = String::new();
        let quote = self.scan.next();
        if self.lex.raw_quotes {
            out.extend(quote);
        }
        loop {
            let Some(ch) = self.scan.peek() else {
                return Err(unterminated("double-quote"));
            };
            if ch == '"' {
                self.scan.next();
                if self.lex.raw_quotes {
                    out.push(ch);
                }
                return Ok(out);
            }
            if ch == '$' {
                out.push_str(&self.dollar()?);
                continue;
            }
            self.scan.next();
            let mut ch = ch;
            if ch == self.lex.escape {
                if self.raw_escapes {
                    out.push(ch);
                }
                match self.scan.peek() {
                    // A trailing escape is dropped; the missing quote is reported next.
                    None => continue,
                    Some(next) if next == '"' || next == '$' || next == self.lex.escape => {
                        self.scan.next();
                        ch = next;
                    }
                    // Anything else keeps the escape character itself.
                    Some(_) => {}
                }
            }
            out.push(ch);
        }
    }

    /// Expands one `$...` reference; the scanner is on the `$`.
    fn dollar(&mut self) -> Result<String, String> {
        self.scan.next();
        if self.scan.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.scan.next();
        match self.scan.peek() {
            None => return Err(MISSING_BRACE.into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.name();
        match self.scan.next() {
            Some('}') => Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':') => {
                // Whatever follows the colon is the modifier, even `}` or the end.
                let Some(modifier) = self.scan.next() else {
                    return Err(MISSING_BRACE.to_string());
                };
                self.modifier(&name, modifier, true)
            }
            Some(modifier @ ('+' | '-' | '?' | '#' | '%')) => self.modifier(&name, modifier, false),
            Some('/') => self.replace(&name),
            // BuildKit reports the end of input as the modifier U+FFFD;
            // kiln names the real problem.
            None => Err(MISSING_BRACE.to_string()),
            Some(other) => Err(unsupported(&other.to_string())),
        }
    }

    /// `${name<modifier>word}` and `${name:<modifier>word}`.
    fn modifier(&mut self, name: &str, modifier: char, colon: bool) -> Result<String, String> {
        let spelled = if colon {
            format!(":{modifier}")
        } else {
            modifier.to_string()
        };
        let pattern = modifier == '#' || modifier == '%';
        if colon && pattern {
            return Err(unsupported(&spelled));
        }
        let word = self.until_brace('}', pattern, MISSING_BRACE)?;
        let value = self.lookup(name);
        if value.is_none() && self.lex.skip_unset_env {
            return Ok(format!("${{{name}{spelled}{word}}}"));
        }
        let set = value.is_some();
        let value = value.unwrap_or_default();
        let null = !set || (colon && value.is_empty());
        match modifier {
            '-' => Ok(if null { word } else { value }),
            '+' => Ok(if null { String::new() } else { word }),
            '?' if null => {
                let default = if set { "empty" } else { "unset" };
                Err(if word.is_empty() {
                    format!("{name}: is not allowed to be {default}")
                } else {
                    format!("{name}: {word}")
                })
            }
            '?' => Ok(value),
            '#' | '%' => {
                // A doubled modifier (after expansion!) asks for the longest match.
                let (pattern, longest) = match word.strip_prefix(modifier) {
                    Some(rest) => (rest, true),
                    None => (word.as_str(), false),
                };
                if modifier == '%' {
                    trim_suffix(pattern, &value, longest)
                } else {
                    trim_prefix(pattern, &value, longest)
                }
            }
            _ => Err(unsupported(&spelled)),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`.
    fn replace(&mut self, name: &str) -> Result<String, String> {
        let all = self.scan.peek() == Some('/');
        if all {
            self.scan.next();
        }
        let pattern = self.until_brace('/', true, "syntax error: missing '/' in ${}")?;
        let replacement = self.until_brace('}', true, MISSING_BRACE)?;
        let value = self.lookup(name);
        if value.is_none() && self.lex.skip_unset_env {
            // BuildKit writes a single slash back, even for `//`.
            return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
        }
        let value: Vec<char> = value.unwrap_or_default().chars().collect();
        let glob = Glob::parse(&pattern).map_err(|e| invalid(&pattern, e))?;
        let ends = glob.match_ends(&value, true);
        if all {
            return Ok(replace_all(&value, &ends, &replacement));
        }
        Ok(match first_match(&ends, 0) {
            Some((start, end)) => {
                collect(&value, 0, start) + &replacement + &collect(&value, end, value.len())
            }
            None => value.iter().collect(),
        })
    }

    /// A nested word ending at `stop`; running out of input there is
    /// reported as `at_end` instead of the inner error.
    fn until_brace(&mut self, stop: char, raw: bool, at_end: &str) -> Result<String, String> {
        match self.until(Some(stop), raw) {
            Ok((word, _)) => Ok(word),
            Err(_) if self.scan.peek().is_none() => Err(at_end.into()),
            Err(e) => Err(e),
        }
    }

    /// Reads a parameter name: a run of digits, one special character, or
    /// letters, digits and underscores.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.scan.peek() {
            if name.is_empty() && is_go_digit(ch) {
                while let Some(digit) = self.scan.peek().filter(|c| is_go_digit(*c)) {
                    self.scan.next();
                    name.push(digit);
                }
                return name;
            }
            if name.is_empty() && "@*#?-$!0".contains(ch) {
                self.scan.next();
                return ch.to_string();
            }
            if !is_name_char(ch) {
                break;
            }
            self.scan.next();
            name.push(ch);
        }
        name
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        let value = self.env.get(name);
        let set = if value.is_some() {
            &mut self.matched
        } else {
            &mut self.unmatched
        };
        set.insert(name.to_string());
        value
    }
}

/// Starts of the Unicode 15 decimal digit (Nd) blocks, ten digits each,
/// which is what Go's `unicode.IsDigit` accepts.
const DIGIT_BLOCKS: [u32; 68] = [
    0x30, 0x660, 0x6f0, 0x7c0, 0x966, 0x9e6, 0xa66, 0xae6, 0xb66, 0xbe6, 0xc66, 0xce6, 0xd66,
    0xde6, 0xe50, 0xed0, 0xf20, 0x1040, 0x1090, 0x17e0, 0x1810, 0x1946, 0x19d0, 0x1a80, 0x1a90,
    0x1b50, 0x1bb0, 0x1c40, 0x1c50, 0xa620, 0xa8d0, 0xa900, 0xa9d0, 0xa9f0, 0xaa50, 0xabf0, 0xff10,
    0x104a0, 0x10d30, 0x11066, 0x110f0, 0x11136, 0x111d0, 0x112f0, 0x11450, 0x114d0, 0x11650,
    0x116c0, 0x11730, 0x118e0, 0x11950, 0x11c50, 0x11d50, 0x11da0, 0x11f50, 0x16a60, 0x16ac0,
    0x16b50, 0x1d7ce, 0x1d7d8, 0x1d7e2, 0x1d7ec, 0x1d7f6, 0x1e140, 0x1e2f0, 0x1e4f0, 0x1e950,
    0x1fbf0,
];

fn is_go_digit(ch: char) -> bool {
    let c = u32::from(ch);
    let at = DIGIT_BLOCKS.partition_point(|start| *start <= c);
    at > 0 && DIGIT_BLOCKS.get(at - 1).is_some_and(|start| c - start < 10)
}

/// Go's `unicode.IsLetter` (category L), from Rust's `Alphabetic` less
/// numbers, circled letters and combining marks (spotted as the characters
/// `escape_debug` escapes only at the start of a string). Spacing marks
/// (Mc) of some scripts still pass.
fn is_go_letter(ch: char) -> bool {
    if ch.is_ascii() {
        return ch.is_ascii_alphabetic();
    }
    let code = u32::from(ch);
    let circled = matches!(code, 0x24b6..=0x24e9 | 0x1f130..=0x1f149 | 0x1f150..=0x1f189);
    let combining =
        ch.escape_debug().count() > 1 && is_printable(ch) && !(0xff9e..=0xff9f).contains(&code);
    ch.is_alphabetic() && !ch.is_numeric() && !circled && !combining
}

fn is_name_char(ch: char) -> bool {
    is_go_letter(ch) || is_go_digit(ch) || ch == '_'
}

/// One element of a BuildKit glob: only `*`, `?` and escaped literals.
#[derive(Clone, Copy)]
enum Piece {
    Literal(char),
    /// `?`: any character but a newline (Go's regexp `.`).
    One,
    /// `*`: any run of characters without a newline.
    Star,
}

struct Glob(Vec<Piece>);

impl Glob {
    /// Reads a pattern the way BuildKit turns it into a regular expression:
    /// `\` may only precede `*`, `?` or `\`, and is dropped before `}` or `/`.
    fn parse(pattern: &str) -> Result<Glob, String> {
        let mut scan = Scanner::new(pattern);
        let mut pieces = Vec::new();
        while let Some(ch) = scan.next() {
            pieces.push(match ch {
                '*' => Piece::Star,
                '?' => Piece::One,
                '\\' if matches!(scan.peek(), Some('}' | '/')) => continue,
                '\\' => match scan.next() {
                    Some(c @ ('*' | '?' | '\\')) => Piece::Literal(c),
                    other => {
                        return Err(format!(
                            "invalid escape '\\{}'",
                            other.unwrap_or(REPLACEMENT)
                        ))
                    }
                },
                other => Piece::Literal(other),
            });
        }
        Ok(Glob(pieces))
    }

    /// For every start offset, where the match that Go's leftmost-first
    /// regexp would pick ends (`*` longest first when `greedy`), if any.
    fn match_ends(&self, text: &[char], greedy: bool) -> Vec<Option<usize>> {
        // Dynamic programming from the last piece backwards: `after[t]` is
        // the preferred end when the remaining pieces start at offset `t`.
        let mut after: Vec<Option<usize>> = (0..=text.len()).map(Some).collect();
        for piece in self.0.iter().rev() {
            let mut here = vec![None; text.len() + 1];
            for t in (0..=text.len()).rev() {
                let ch = text.get(t).copied();
                let step = |next: Option<&Option<usize>>| next.copied().flatten();
                let end = match *piece {
                    Piece::Literal(c) if ch == Some(c) => step(after.get(t + 1)),
                    Piece::One if ch.is_some_and(|c| c != '\n') => step(after.get(t + 1)),
                    Piece::Literal(_) | Piece::One => None,
                    Piece::Star => {
                        let longer = match ch {
                            Some(c) if c != '\n' => step(here.get(t + 1)),
                            _ => None,
                        };
                        let stop = step(after.get(t));
                        if greedy {
                            longer.or(stop)
                        } else {
                            stop.or(longer)
                        }
                    }
                };
                if let Some(slot) = here.get_mut(t) {
                    *slot = end;
                }
            }
            after = here;
        }
        after
    }
}

/// The leftmost match starting at or after `from`, as (start, end).
fn first_match(ends: &[Option<usize>], from: usize) -> Option<(usize, usize)> {
    let mut starts = ends.iter().enumerate().skip(from);
    starts.find_map(|(start, end)| end.map(|end| (start, end)))
}

fn collect(text: &[char], from: usize, to: usize) -> String {
    text.get(from..to).unwrap_or_default().iter().collect()
}

fn invalid(pattern: &str, e: String) -> String {
    format!("invalid pattern ({pattern}) in substitution: {e}")
}

/// `${v#p}` / `${v##p}`: drop the shortest / longest matching prefix.
fn trim_prefix(pattern: &str, value: &str, longest: bool) -> Result<String, String> {
    let glob = Glob::parse(pattern).map_err(|e| invalid(pattern, e))?;
    let text: Vec<char> = value.chars().collect();
    let end = glob.match_ends(&text, longest).first().copied().flatten();
    Ok(end.map_or_else(|| value.to_string(), |end| collect(&text, end, text.len())))
}

/// `${v%p}` / `${v%%p}`: BuildKit reverses value and pattern (keeping
/// `\x` pairs in order) and trims a prefix instead.
fn trim_suffix(pattern: &str, value: &str, longest: bool) -> Result<String, String> {
    let mut units: Vec<String> = Vec::new();
    let mut chars = pattern.chars();
    while let Some(ch) = chars.next() {
        let mut unit = ch.to_string();
        if ch == '\\' {
            unit.extend(chars.next());
        }
        units.push(unit);
    }
    let reversed_pattern: String = units.iter().rev().map(String::as_str).collect();
    let reversed_value: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reversed_pattern, &reversed_value, longest)?;
    Ok(trimmed.chars().rev().collect())
}

/// Go's `Regexp.ReplaceAllString` for a pattern without groups: empty
/// matches right after a match are skipped, and the replacement is a
/// template where `$0`/`${0}` is the match, `$$` a dollar, any other name
/// empty, and a malformed reference a literal `$`.
fn replace_all(text: &[char], ends: &[Option<usize>], template: &str) -> String {
    let mut out = String::new();
    let (mut last, mut search) = (0, 0);
    while search <= text.len() {
        let Some((start, end)) = first_match(ends, search) else {
            break;
        };
        out.push_str(&collect(text, last, start));
        if end > last || start == 0 {
            expand_template(&mut out, template, &collect(text, start, end));
        }
        last = end;
        search = if search + 1 > end { search + 1 } else { end };
    }
    out + &collect(text, last, text.len())
}

fn expand_template(out: &mut String, template: &str, matched: &str) {
    let mut rest = template;
    while let Some((before, after)) = rest.split_once('$') {
        out.push_str(before);
        rest = after;
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let (braced, body) = match rest.strip_prefix('{') {
            Some(body) => (true, body),
            None => (false, rest),
        };
        let len = body
            .char_indices()
            .find(|(_, c)| !is_name_char(*c))
            .map_or(body.len(), |(i, _)| i);
        let (name, tail) = body.split_at(len);
        let tail = match (braced, tail.strip_prefix('}')) {
            (false, _) => Some(tail),
            (true, closed) => closed,
        };
        match tail {
            Some(tail) if !name.is_empty() => {
                if name == "0" {
                    out.push_str(matched);
                }
                rest = tail;
            }
            _ => out.push('$'),
        }
    }
    out.push_str(rest);
}

/// Go's `%q`: a double-quoted string with Go escapes.
fn go_quote(text: &str) -> String {
    let mut out = String::from("\"");
    for ch in text.chars() {
        let code = u32::from(ch);
        let named = match ch {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\x07' => "\\a",
            '\x08' => "\\b",
            '\x0c' => "\\f",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            '\x0b' => "\\v",
            _ => "",
        };
        // Writing to a String cannot fail.
        let _ = if !named.is_empty() {
            out.write_str(named)
        } else if (' '..='~').contains(&ch) || (code >= 0x80 && is_printable(ch)) {
            out.write_char(ch)
        } else if code < 0x80 {
            write!(out, "\\x{code:02x}")
        } else if code < 0x10000 {
            write!(out, "\\u{code:04x}")
        } else {
            write!(out, "\\U{code:08x}")
        };
    }
    out.push('"');
    out
}

/// Go's `strconv.IsPrint` for non-ASCII characters: Rust's `escape_debug`
/// leaves exactly the same classes alone (letters, marks, numbers,
/// punctuation, symbols) when the character does not start the string.
fn is_printable(ch: char) -> bool {
    let probe: String = ['a', ch].iter().collect();
    probe.escape_debug().nth(1) == Some(ch)
}
