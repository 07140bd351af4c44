//! `.dockerignore` matching and the build-context walker, with Docker's semantics.
//!
//! [`Matcher`] holds the patterns of a `.dockerignore` file ([`Matcher::parse`]) or of
//! `COPY --exclude` ([`Matcher::from_patterns`]) and decides whether a context path is
//! excluded; [`walk`] lists a context directory through a matcher as [`WalkEntry`]s.
//! [`IgnoreError`] is the error type of both.
//!
//! The behaviour is that of the Go code Docker runs, read for its semantics:
//! moby/patternmatcher (`ignorefile.ReadAll` reads the file, `New` cleans and checks each
//! pattern, `Pattern.compile` turns a glob into a regexp, `MatchesUsingParentResults` gives
//! the verdict) and the filter walker of BuildKit's fsutil, which evaluates paths from the
//! top of the tree down and decides which excluded directories it still descends into.
//!
//! Docker translates a glob into a Go regexp by text substitution, so some regexp syntax
//! leaks through: `^` anchors, `\d` is a digit, `\b` a word boundary, `[[:alpha:]]` a POSIX
//! class. This module compiles each pattern to the program of the regexp Docker would
//! write and runs it as a small NFA, so those cases answer as in Docker. Where Docker's
//! substitution garbles the pattern (`*` or `?` inside `[...]`) or relies on rarer regexp
//! syntax (octal, hex, `\Q`, `\p` escapes), the pattern is rejected with an error rather
//! than matched differently.

use std::collections::HashMap;
use std::fs::{self, FileType, Metadata};
use std::io;
use std::path::{Path, PathBuf};

/// Errors from reading patterns or walking a context.
#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    /// A pattern Docker rejects as well; `line` is its 1-based `.dockerignore` line.
    #[error("invalid pattern {pattern:?}{}: {reason}", at_line(.line))]
    Pattern {
        pattern: String,
        line: Option<usize>,
        reason: String,
    },
    /// Go's line scanner, and so Docker, fails on a line of 64 KiB or more.
    #[error(".dockerignore line {line}: line too long")]
    LineTooLong { line: usize },
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: file name is not valid UTF-8", .path.display())]
    NonUtf8Name { path: PathBuf },
    #[error("{}: not a directory", .path.display())]
    NotADirectory { path: PathBuf },
    #[error("invalid context sub-path {0:?}: expected a clean relative path")]
    BadSubPath(String),
}

fn at_line(line: &Option<usize>) -> String {
    line.map_or_else(String::new, |n| format!(" (.dockerignore line {n})"))
}

fn pattern_err(pattern: &str, line: Option<usize>) -> impl FnOnce(String) -> IgnoreError {
    let pattern = pattern.to_string();
    move |reason| IgnoreError::Pattern {
        pattern,
        line,
        reason,
    }
}

fn io_err(path: &Path, source: io::Error) -> IgnoreError {
    IgnoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The patterns of a `.dockerignore` file or of `COPY --exclude`, in order.
#[derive(Clone, Debug)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

impl Matcher {
    /// Parse the contents of a .dockerignore file.
    pub fn parse(text: &str) -> Result<Matcher, IgnoreError> {
        let mut patterns = Vec::new();
        for (line, raw, pattern) in read_lines(text)? {
            patterns.extend(Pattern::new(&pattern).map_err(pattern_err(raw.trim(), Some(line)))?);
        }
        Ok(Matcher { patterns })
    }

    /// From explicit patterns (used for COPY --exclude, where each pattern is already one pattern).
    ///
    /// Like patternmatcher's `New`, this only trims and cleans: unlike [`Matcher::parse`] it
    /// keeps a leading `/` (such a pattern never matches) and cleans `!` together with the
    /// rest of the pattern.
    pub fn from_patterns<S: AsRef<str>>(patterns: &[S]) -> Result<Matcher, IgnoreError> {
        let mut out = Vec::new();
        for p in patterns {
            out.extend(Pattern::new(p.as_ref()).map_err(pattern_err(p.as_ref(), None))?);
        }
        Ok(Matcher { patterns: out })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether the slash-separated, relative, clean path (no leading `/` or `./`) is excluded.
    ///
    /// The answer is the one [`walk`] gives: the verdict is computed from the top of the path
    /// down, and a path under an excluded directory that the walker does not descend into
    /// (see [`Matcher::may_reinclude_under`]) is excluded. A directory can be excluded here
    /// and still be yielded by [`walk`] as the parent of a re-included path.
    pub fn excluded(&self, rel_path: &str) -> bool {
        let path = clean(rel_path);
        let path = path.trim_start_matches('/');
        path != "." && self.reach(path).is_none_or(|(excluded, _)| excluded)
    }

    /// Whether an excluded directory must still be walked because an exception may re-include something under it.
    ///
    /// This is fsutil's shortcut, kept for fidelity: without exceptions, never; if an
    /// exception has a glob character once a trailing `/**` or `/*` is cut off, always;
    /// otherwise only when such an exception names the directory or a path below it.
    pub fn may_reinclude_under(&self, dir_rel: &str) -> bool {
        let dir_slash = format!("{dir_rel}/");
        self.patterns.iter().filter(|p| p.exception).any(|p| {
            let stem = p.text.strip_suffix("/**").unwrap_or(&p.text);
            let stem = stem.strip_suffix("/*").unwrap_or(stem);
            stem.contains(['*', '[', ']', '?', '^', '\\'])
                || format!("{stem}/").starts_with(&dir_slash)
        })
    }

    /// The verdict for `path` and the patterns that matched it, computed from the top down
    /// as the walker does; `None` if the walker never gets there.
    fn reach(&self, path: &str) -> Option<(bool, Vec<bool>)> {
        let mut parent: Option<Vec<bool>> = None;
        for (end, _) in path.match_indices('/') {
            let (excluded, info) = self.verdict(&path[..end], parent.as_deref());
            if excluded && !self.may_reinclude_under(&path[..end]) {
                return None;
            }
            parent = Some(info);
        }
        Some(self.verdict(path, parent.as_deref()))
    }

    /// `MatchesUsingParentResults`: the verdict for `path`, and which patterns matched it,
    /// given which ones matched its parent (`None` at the top level). A pattern that matched
    /// the parent counts as matching the child; the others are tried on the path only.
    fn verdict(&self, path: &str, parent: Option<&[bool]>) -> (bool, Vec<bool>) {
        let mut excluded = false;
        let mut info = vec![false; self.patterns.len()];
        for (i, p) in self.patterns.iter().enumerate() {
            let mut hit = parent.is_some_and(|m| m.get(i) == Some(&true));
            if !hit {
                // Docker skips a pattern that cannot change the verdict, and so records no
                // match for it; children see that, which is observable (see the cases file).
                if p.exception != excluded {
                    continue;
                }
                hit = p.matches(path);
            }
            info[i] = hit;
            if hit {
                excluded = !p.exception;
            }
        }
        (excluded, info)
    }
}

/// `ignorefile.ReadAll`: the 1-based line number, the raw line and the pattern it yields.
fn read_lines(text: &str) -> Result<Vec<(usize, &str, String)>, IgnoreError> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut number = 0;
    while !rest.is_empty() {
        let (raw, tail) = rest.split_once('\n').unwrap_or((rest, ""));
        rest = tail;
        number += 1;
        // bufio.Scanner's buffer tops out at 64 KiB, which must hold the line and its `\n`.
        if raw.len() >= 64 * 1024 {
            return Err(IgnoreError::LineTooLong { line: number });
        }
        let mut line = raw.strip_suffix('\r').unwrap_or(raw);
        if number == 1 {
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        // A comment is recognised before trimming: ` # x` is the pattern `# x`.
        if line.starts_with('#') {
            continue;
        }
        // Go's TrimSpace and Rust's trim both strip Unicode White_Space.
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let exception = pattern.starts_with('!');
        if exception {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = String::new();
        if !pattern.is_empty() {
            cleaned = clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        out.push((
            number,
            raw,
            format!("{}{cleaned}", if exception { "!" } else { "" }),
        ));
    }
    Ok(out)
}

/// Go's `filepath.Clean` for `/`-separated paths: lexical, `..` kept when it cannot be undone.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            ".." if rooted => {}
            _ => parts.push(part),
        }
    }
    match (rooted, parts.is_empty()) {
        (true, _) => format!("/{}", parts.join("/")),
        (false, true) => ".".to_string(),
        (false, false) => parts.join("/"),
    }
}

/// One cleaned pattern.
#[derive(Clone, Debug)]
struct Pattern {
    /// The cleaned pattern without its `!`, as patternmatcher keeps it.
    text: String,
    /// A `!` pattern, which re-includes what it matches.
    exception: bool,
    kind: Kind,
}

/// patternmatcher's match types: it only builds a regexp when string tests will not do.
#[derive(Clone, Debug)]
enum Kind {
    Exact,
    Prefix(String),
    Suffix(String),
    Regex(Prog),
}

impl Pattern {
    /// patternmatcher's `New` for one pattern: `None` for a blank one.
    fn new(raw: &str) -> Result<Option<Pattern>, String> {
        let p = raw.trim();
        if p.is_empty() {
            return Ok(None);
        }
        let p = clean(p);
        let (exception, text) = match p.strip_prefix('!') {
            Some("") => return Err("illegal exclusion pattern: \"!\"".to_string()),
            Some(rest) => (true, rest.to_string()),
            None => (false, p),
        };
        check_glob_syntax(&text)?;
        let kind = compile(&text)?;
        Ok(Some(Pattern {
            text,
            exception,
            kind,
        }))
    }

    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Kind::Suffix(suffix) => {
                path.ends_with(suffix.as_str()) || suffix.strip_prefix('/') == Some(path)
            }
            Kind::Regex(prog) => prog.is_match(path),
        }
    }
}

/// The check `filepath.Match(pattern, ".")` makes (recent Go checks the whole pattern): a
/// `\` needs a following character, and a `[...]` class needs a closing `]`, at least one
/// item, and no bare `-` or `]` as an item.
fn check_glob_syntax(pattern: &str) -> Result<(), String> {
    // One class item, `c` or `\c`, which Go wants followed by something, if only the `]`.
    fn item(p: &[char], i: usize) -> Option<usize> {
        let len = match p.get(i..)? {
            [] | ['-' | ']', ..] => return None,
            ['\\', ..] => 2,
            _ => 1,
        };
        (i + len < p.len()).then_some(i + len)
    }
    let bad = || "syntax error in pattern".to_string();
    let p: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < p.len() {
        i = match p[i] {
            '\\' if i + 1 < p.len() => i + 2,
            '\\' => return Err(bad()),
            '[' => {
                let start = i + 1 + usize::from(p.get(i + 1) == Some(&'^'));
                let mut j = start;
                while p.get(j) != Some(&']') || j == start {
                    j = item(&p, j).ok_or_else(bad)?;
                    if p[j] == '-' {
                        j = item(&p, j + 1).ok_or_else(bad)?;
                    }
                }
                j + 1
            }
            _ => i + 1,
        };
    }
    Ok(())
}

/// `Pattern.compile`: Docker's match type and, for a regexp, the program of the regexp it
/// writes: `*` is `[^/]*`, `?` is `[^/]`, `**` is `(.*/)?` (or `.*` at the end), `.+()|{}$`
/// are escaped, and `\x`, `[...]`, `]` and `^` go in as typed, so they mean what Go's
/// regexp makes of them (`^` is an anchor, `\d` a digit).
fn compile(pattern: &str) -> Result<Kind, String> {
    #[derive(PartialEq)]
    enum Ty {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let p: Vec<char> = pattern.chars().collect();
    let not_slash = complement(one('/'));
    let any = complement(one('\n')); // Go's `.` does not match a newline
    let (mut prog, mut ty, mut i) = (Prog(Vec::new()), Ty::Exact, 0);
    while let Some(&c) = p.get(i) {
        let first = i == 0;
        i += 1;
        let inst = match c {
            '*' if p.get(i) == Some(&'*') => {
                i += 1 + usize::from(p.get(i + 1) == Some(&'/'));
                if i == p.len() && ty == Ty::Exact {
                    ty = Ty::Prefix;
                } else if i == p.len() {
                    prog.star(any.clone());
                    ty = Ty::Regex;
                } else {
                    // `(.*/)?`
                    let s = prog.0.len();
                    prog.0.push(Inst::Split(s + 1, s + 5));
                    prog.star(any.clone());
                    prog.0.push(Inst::Set(one('/')));
                    ty = Ty::Regex;
                }
                if first {
                    ty = Ty::Suffix;
                }
                continue;
            }
            '*' => {
                prog.star(not_slash.clone());
                ty = Ty::Regex;
                continue;
            }
            '?' => Inst::Set(not_slash.clone()),
            '\\' => match p.get(i).copied() {
                None => return Err("syntax error in pattern".into()),
                Some(e) => {
                    i += 1;
                    match e {
                        'A' => Inst::Look(Look::Begin),
                        'z' => Inst::Look(Look::End),
                        'b' => Inst::Look(Look::WordBoundary),
                        'B' => Inst::Look(Look::NotWordBoundary),
                        _ => Inst::Set(perl_class(e).map_or_else(|| escape_char(e).map(one), Ok)?),
                    }
                }
            },
            '[' => {
                let (set, next) = class(&p, i)?;
                i = next;
                Inst::Set(set)
            }
            ']' => Inst::Set(one(']')),
            // Without a wildcard Docker compares the text, `^` included; only a regexp makes
            // `^` an anchor, so it does not change the type.
            '^' => {
                prog.0.push(Inst::Look(Look::Begin));
                continue;
            }
            c => {
                prog.0.push(Inst::Set(one(c)));
                continue;
            }
        };
        prog.0.push(inst);
        ty = Ty::Regex;
    }
    Ok(match ty {
        Ty::Exact => Kind::Exact,
        Ty::Prefix => Kind::Prefix(pattern.strip_suffix("**").unwrap_or(pattern).to_string()),
        Ty::Suffix => Kind::Suffix(pattern.get(2..).unwrap_or("").to_string()),
        Ty::Regex => {
            prog.0.extend([Inst::Look(Look::End), Inst::Match]);
            Kind::Regex(prog)
        }
    })
}

/// A `[...]` class read with the rules of Go's regexp, which is what Docker hands it to,
/// from just after the `[`: the set, and the index after the closing `]`.
fn class(p: &[char], mut i: usize) -> Result<(Ranges, usize), String> {
    let negated = p.get(i) == Some(&'^');
    i += usize::from(negated);
    let (start, mut set) = (i, Ranges::new());
    loop {
        let rest = p.get(i..).unwrap_or_default();
        match rest {
            [] => return Err("missing closing ]".into()),
            // A `]` right after `[` or `[^` is a member.
            [']', ..] if i > start => break,
            // Docker writes `[^/]*` or `[^/]` inside the class, which garbles it.
            ['*' | '?', ..] => return Err("unsupported `*` or `?` inside [...]".into()),
            ['[', ':', tail @ ..] => {
                if let Some(len) = tail.windows(2).position(|w| w == [':', ']']) {
                    let name: String = tail[..len].iter().collect();
                    set.extend(posix_class(&name).ok_or(format!("invalid class `[:{name}:]`"))?);
                    i += len + 4;
                    continue;
                }
            }
            ['\\', e, ..] if perl_class(*e).is_some() => {
                set.extend(perl_class(*e).unwrap_or_default());
                i += 2;
                continue;
            }
            _ => {}
        }
        let lo = class_char(p, &mut i)?;
        let mut hi = lo;
        if p.get(i) == Some(&'-') && !matches!(p.get(i + 1), None | Some(']')) {
            i += 1;
            hi = class_char(p, &mut i)?;
            if hi < lo {
                return Err("invalid character class range".into());
            }
        }
        set.push((lo, hi));
    }
    Ok((negate_if(negated, set), i + 1))
}

fn class_char(p: &[char], i: &mut usize) -> Result<u32, String> {
    let (c, escaped) = match p.get(*i..).unwrap_or_default() {
        ['\\', e, ..] => (*e, true),
        [c, ..] => (*c, false),
        [] => return Err("missing closing ]".into()),
    };
    *i += 1 + usize::from(escaped);
    if escaped {
        escape_char(c)
    } else {
        Ok(c.into())
    }
}

/// Go's `parseEscape`, as far as supported: the code point that `\c` stands for.
fn escape_char(c: char) -> Result<u32, String> {
    let controls = [
        ('a', 7),
        ('f', 12),
        ('n', 10),
        ('r', 13),
        ('t', 9),
        ('v', 11),
    ];
    match c {
        _ if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok(c.into()),
        // Go's octal, hex, quoting and Unicode-class escapes: rejected rather than emulated.
        '0'..='7' | 'x' | 'Q' | 'p' | 'P' => Err(format!("unsupported regexp escape `\\{c}`")),
        _ => controls
            .iter()
            .find(|(name, _)| *name == c)
            .map(|&(_, code)| code)
            .ok_or(format!("invalid escape sequence: `\\{c}`")),
    }
}

/// Character ranges, inclusive, as code points.
type Ranges = Vec<(u32, u32)>;

fn one(c: impl Into<u32>) -> Ranges {
    let c = c.into();
    vec![(c, c)]
}

fn negate_if(negate: bool, set: Ranges) -> Ranges {
    if negate {
        complement(set)
    } else {
        set
    }
}

fn complement(mut ranges: Ranges) -> Ranges {
    ranges.sort_unstable();
    let (mut out, mut next) = (Vec::new(), 0u32);
    for (lo, hi) in ranges {
        if lo > next {
            out.push((next, lo - 1));
        }
        next = next.max(hi.saturating_add(1));
    }
    out.extend((next <= 0x10FFFF).then_some((next, 0x10FFFF)));
    out
}

/// Go's `\d \s \w` (ASCII) and their negations `\D \S \W`.
fn perl_class(c: char) -> Option<Ranges> {
    let bounds = match c.to_ascii_lowercase() {
        'd' => "09",
        's' => "\t\n\x0c\r  ",
        'w' => "09AZ__az",
        _ => return None,
    };
    Some(negate_if(c.is_ascii_uppercase(), bound_pairs(bounds)))
}

/// Go's ASCII `[:name:]` classes, and `[:^name:]` for their complements.
fn posix_class(name: &str) -> Option<Ranges> {
    let (negated, base) = name.strip_prefix('^').map_or((false, name), |b| (true, b));
    let bounds = match base {
        "alnum" => "09AZaz",
        "alpha" => "AZaz",
        "ascii" => "\0\x7f",
        "blank" => "\t\t  ",
        "cntrl" => "\0\x1f\x7f\x7f",
        "digit" => "09",
        "graph" => "!~",
        "lower" => "az",
        "print" => " ~",
        "punct" => "!/:@[`{~",
        "space" => "\t\r  ",
        "upper" => "AZ",
        "word" => "09AZ__az",
        "xdigit" => "09AFaf",
        _ => return None,
    };
    Some(negate_if(negated, bound_pairs(bounds)))
}

/// Ranges from a string of bound pairs: `"09az"` is 0-9 and a-z.
fn bound_pairs(bounds: &str) -> Ranges {
    let b: Vec<u32> = bounds.chars().map(u32::from).collect();
    b.chunks(2).map(|r| (r[0], r[r.len() - 1])).collect()
}

#[derive(Clone, Copy, Debug)]
enum Look {
    Begin,
    End,
    WordBoundary,
    NotWordBoundary,
}

impl Look {
    fn holds(self, chars: &[char], pos: usize) -> bool {
        // Go's `\b` is ASCII-only.
        let word = |i: usize| {
            chars
                .get(i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
        };
        let boundary = pos.checked_sub(1).is_some_and(word) != word(pos);
        match self {
            Look::Begin => pos == 0,
            Look::End => pos == chars.len(),
            Look::WordBoundary => boundary,
            Look::NotWordBoundary => !boundary,
        }
    }
}

#[derive(Clone, Debug)]
enum Inst {
    Set(Ranges),
    Look(Look),
    Split(usize, usize),
    Jmp(usize),
    Match,
}

/// A regexp program run as a Thompson NFA: linear in the path, whatever the pattern.
#[derive(Clone, Debug)]
struct Prog(Vec<Inst>);

impl Prog {
    /// Appends `set*`.
    fn star(&mut self, set: Ranges) {
        let s = self.0.len();
        self.0
            .extend([Inst::Split(s + 1, s + 3), Inst::Set(set), Inst::Jmp(s)]);
    }

    /// Go's `MatchString` is a search, but Docker's regexps start with `^`: threads start at 0.
    fn is_match(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        let mut seen = vec![usize::MAX; self.0.len()];
        // Adds the threads reachable from `pc` at `pos` without reading; true on a match.
        let mut add = |pos: usize, pc: usize, list: &mut Vec<usize>| {
            let mut stack = vec![pc];
            while let Some(pc) = stack.pop() {
                if std::mem::replace(&mut seen[pc], pos) == pos {
                    continue;
                }
                match &self.0[pc] {
                    Inst::Match => return true,
                    Inst::Jmp(to) => stack.push(*to),
                    Inst::Split(a, b) => stack.extend([*b, *a]),
                    Inst::Set(_) => list.push(pc),
                    Inst::Look(look) if look.holds(&chars, pos) => stack.push(pc + 1),
                    Inst::Look(_) => {}
                }
            }
            false
        };
        let (mut cur, mut next) = (Vec::new(), Vec::new());
        if add(0, 0, &mut cur) {
            return true;
        }
        for (pos, &c) in chars.iter().enumerate() {
            for &pc in &cur {
                let Inst::Set(set) = &self.0[pc] else {
                    continue;
                };
                let hit = set
                    .iter()
                    .any(|&(lo, hi)| (lo..=hi).contains(&u32::from(c)));
                if hit && add(pos + 1, pc + 1, &mut next) {
                    return true;
                }
            }
            std::mem::swap(&mut cur, &mut next);
            next.clear();
        }
        false
    }
}

/// One entry of the context, as the walker yields it.
#[derive(Clone, Debug)]
pub struct WalkEntry {
    pub rel_path: String,
    pub file_type: FileType,
    pub metadata: Metadata,
}

/// Walks `root` (or `root/sub` when `sub` is not empty; rel_path stays relative to root), yielding the entries not excluded, sorted by path bytes, directories before their contents. Does not follow symlinks. Errors name the path.
///
/// `sub` is a clean relative path whose components must be real directories; neither it
/// nor its parents are yielded, but their verdicts apply below them, so the result is the
/// part under `sub` of a walk of `root`. As in BuildKit, an excluded directory is descended
/// into when [`Matcher::may_reinclude_under`] says so, and is then yielded (with its
/// excluded parents) only if something under it is. Errors reading such a directory are
/// ignored if they are permission errors, and paths that vanish during the walk are skipped.
///
/// The order is plain byte order of `rel_path`, not Go's per-directory order: `a-b` comes
/// before `a/x` here, after it in `filepath.WalkDir`.
pub fn walk(root: &Path, sub: &str, matcher: &Matcher) -> Result<Vec<WalkEntry>, IgnoreError> {
    let sub = if sub == "." { "" } else { sub };
    if !sub.is_empty() && sub.split('/').any(|c| matches!(c, "" | "." | "..")) {
        return Err(IgnoreError::BadSubPath(sub.to_string()));
    }
    // Each component must be a real directory: a symlink could lead out of the context.
    for (end, _) in sub
        .match_indices('/')
        .chain([(sub.len(), "")])
        .filter(|_| !sub.is_empty())
    {
        let path = root.join(&sub[..end]);
        if !fs::symlink_metadata(&path)
            .map_err(|e| io_err(&path, e))?
            .is_dir()
        {
            return Err(IgnoreError::NotADirectory { path });
        }
    }
    let info = match matcher.reach(sub) {
        _ if sub.is_empty() => None,
        Some((excluded, info)) if !excluded || matcher.may_reinclude_under(sub) => Some(info),
        _ => return Ok(Vec::new()),
    };
    let mut out = Vec::new();
    // Excluded directories walked for possible re-inclusions, yielded once something under
    // them is (fsutil does the same, so that the re-included path has its parents).
    let mut pending: HashMap<String, WalkEntry> = HashMap::new();
    let mut stack = vec![(sub.to_string(), info, false)];
    while let Some((dir, info, dir_excluded)) = stack.pop() {
        let dir_path = root.join(&dir);
        let entries = match fs::read_dir(&dir_path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.is_empty() => continue,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied && dir_excluded => continue,
            Err(e) => return Err(io_err(&dir_path, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_err(&dir_path, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(IgnoreError::NonUtf8Name { path: entry.path() });
            };
            let rel_path = format!("{dir}{}{name}", if dir.is_empty() { "" } else { "/" });
            let (file_type, metadata) =
                match entry.file_type().and_then(|t| Ok((t, entry.metadata()?))) {
                    Ok(found) => found,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err(&entry.path(), e)),
                };
            let (excluded, child_info) = matcher.verdict(&rel_path, info.as_deref());
            let descend =
                file_type.is_dir() && (!excluded || matcher.may_reinclude_under(&rel_path));
            if descend {
                stack.push((rel_path.clone(), Some(child_info), excluded));
            }
            let entry = WalkEntry {
                rel_path,
                file_type,
                metadata,
            };
            if excluded {
                if descend {
                    pending.insert(entry.rel_path.clone(), entry);
                }
                continue;
            }
            if !pending.is_empty() {
                for (i, _) in entry.rel_path.match_indices('/') {
                    out.extend(pending.remove(&entry.rel_path[..i]));
                }
            }
            out.push(entry);
        }
    }
    out.sort_unstable_by(|a, b| a.rel_path.cmp(&b.rel_path));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Runs `testdata/dockerignore/cases.txt`; its header documents the format.
    #[test]
    fn cases_file() {
        let text = include_str!("../../testdata/dockerignore/cases.txt");
        let (mut failures, mut count) = (Vec::new(), 0);
        for case in text.split("\ncase ").skip(1) {
            let (reason, body) = case.split_once('\n').unwrap_or((case, ""));
            let (mut lines, mut excludes, mut checks) = (Vec::new(), Vec::new(), Vec::new());
            for l in body
                .lines()
                .filter(|l| !l.is_empty() && !l.starts_with("# "))
            {
                match l.split_once(' ').unwrap_or((l, "")) {
                    ("line", text) => lines.push(text),
                    ("exclude", text) => excludes.push(text),
                    check => checks.push(check),
                }
            }
            count += 1;
            let built = match excludes.is_empty() {
                true => Matcher::parse(&lines.join("\n")),
                false => Matcher::from_patterns(&excludes),
            };
            let m = match (built, checks.first()) {
                (Err(_), Some(("error", _))) => continue,
                (Ok(m), Some((key, _))) if *key != "error" => m,
                (got, _) => {
                    failures.push(format!("{reason}: built {got:?}, checks {checks:?}"));
                    continue;
                }
            };
            for &(key, arg) in &checks {
                let holds = match key {
                    "yes" => m.excluded(arg),
                    "no" => !m.excluded(arg),
                    "descend" => m.may_reinclude_under(arg),
                    "nodescend" => !m.may_reinclude_under(arg),
                    _ => false,
                };
                if !holds {
                    failures.push(format!("{reason}: `{key} {arg}` does not hold"));
                }
            }
        }
        assert!(count > 70, "only {count} cases read");
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn read_all_trims_and_cleans_like_docker() {
        let text = "\u{feff}a\r\n  b \t\n\n \t \n# c\n #d\n!  e/\n!/f\n/g/../h/\n./i\n\u{a0}j\u{3000}\nk l\n/\n!";
        let read = |t| {
            read_lines(t)
                .unwrap()
                .into_iter()
                .map(|(_, _, p)| p)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            read(text),
            ["a", "b", "#d", "!e", "!f", "h", "i", "j", "k l", "/", "!"]
        );
        // Only the first line loses a byte-order mark.
        assert_eq!(read("x\n\u{feff}y"), ["x", "\u{feff}y"]);
        let m = Matcher::parse("\t foo  \n").unwrap();
        assert!(
            m.excluded("foo") && m.excluded("./foo/x") && !m.excluded(" foo") && !m.excluded(".")
        );
    }

    #[test]
    fn errors_name_the_pattern() {
        let err = Matcher::parse("ok\n  foo[  \n").unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid pattern \"foo[\" (.dockerignore line 2): syntax error in pattern"
        );
        let err = Matcher::parse("!").unwrap_err().to_string();
        assert!(err.contains("illegal exclusion pattern"), "{err}");
        let err = Matcher::from_patterns(&["\\pL"]).unwrap_err().to_string();
        assert!(
            err.contains(r#""\\pL""#) && err.contains("unsupported"),
            "{err}"
        );
        let long = "a".repeat(64 * 1024);
        let err = Matcher::parse(&format!("x\n{long}")).unwrap_err();
        assert!(matches!(err, IgnoreError::LineTooLong { line: 2 }));
        assert!(Matcher::parse(&long[1..]).is_ok_and(|m| !m.is_empty()));
        assert!(Matcher::parse("# only\n\n").unwrap().is_empty());
    }

    fn tree(paths: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for p in paths {
            let full = dir.path().join(p.trim_end_matches('/'));
            fs::create_dir_all(if p.ends_with('/') {
                &full
            } else {
                full.parent().unwrap()
            })
            .unwrap();
            if !p.ends_with('/') {
                fs::write(full, p).unwrap();
            }
        }
        dir
    }

    fn names(root: &Path, sub: &str, ignore: &str) -> Vec<String> {
        let entries = walk(root, sub, &Matcher::parse(ignore).unwrap()).unwrap();
        entries.into_iter().map(|e| e.rel_path).collect()
    }

    const TREE: &[&str] = &[
        "a-b",
        "a/x",
        "a/y/z",
        "d/keep.md",
        "d/drop.md",
        "d/s/deep.md",
        "e/",
    ];

    #[test]
    fn walk_order_and_symlinks() {
        let t = tree(TREE);
        symlink(t.path().join("a"), t.path().join("link")).unwrap();
        let all = [
            "a",
            "a-b",
            "a/x",
            "a/y",
            "a/y/z",
            "d",
            "d/drop.md",
            "d/keep.md",
            "d/s",
            "d/s/deep.md",
            "e",
            "link",
        ];
        assert_eq!(
            names(t.path(), "", ""),
            all,
            "byte order, link listed but not followed"
        );
        let entries = walk(t.path(), "", &Matcher::parse("").unwrap()).unwrap();
        assert!(
            entries[11].file_type.is_symlink() && entries[11].metadata.file_type().is_symlink()
        );
        let err = walk(t.path(), "link", &Matcher::parse("").unwrap());
        assert!(matches!(err, Err(IgnoreError::NotADirectory { .. })));
        assert!(matches!(
            walk(t.path(), "../x", &Matcher::parse("").unwrap()),
            Err(IgnoreError::BadSubPath(_))
        ));
        let err = walk(t.path(), "nope", &Matcher::parse("").unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn walk_reincludes_with_excluded_parents() {
        let t = tree(TREE);
        let got = names(t.path(), "", "d\n!d/s/deep.md\na/y\ne");
        assert_eq!(got, ["a", "a-b", "a/x", "d", "d/s", "d/s/deep.md"]);
        assert_eq!(
            names(t.path(), "", "*\n!**/*.md\nd/drop.md"),
            ["d", "d/keep.md", "d/s", "d/s/deep.md"]
        );
        // A sub-walk gives the part of the full walk below `sub`, `sub` itself left out.
        assert_eq!(
            names(t.path(), "d", "d\n!d/s\nd/s/x"),
            ["d/s", "d/s/deep.md"]
        );
        assert!(names(t.path(), "a/y", "a").is_empty());
    }

    /// The walk yields exactly the paths `excluded` lets through, plus their parents.
    #[test]
    fn walk_agrees_with_excluded() {
        let t = tree(TREE);
        let all = names(t.path(), "", "");
        for ignore in [
            "a/y\n!a",
            "a\n!a/*/**",
            "*\n!d/*.md\nd/drop*",
            "**/*.md\n!d/s",
            "d\n!d/s/deep.md",
        ] {
            let m = Matcher::parse(ignore).unwrap();
            let kept: Vec<_> = all.iter().filter(|p| !m.excluded(p)).collect();
            let under = |p: &String| {
                kept.iter()
                    .any(|k| *k == p || k.starts_with(&format!("{p}/")))
            };
            let want: Vec<_> = all.iter().filter(|p| under(p)).cloned().collect();
            assert_eq!(names(t.path(), "", ignore), want, "patterns {ignore:?}");
        }
    }
}
