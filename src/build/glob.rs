//! Go's `filepath.Match`, which BuildKit uses to expand wildcards in COPY
//! and ADD sources: `*` and `?` never match `/`, `[...]` classes take
//! ranges and a leading `^` to negate, and `\` escapes the next character.

/// Whether `pattern` has a wildcard that makes it a glob.
pub fn has_meta(pattern: &str) -> bool {
    pattern.contains(['*', '?', '[', '\\'])
}

/// Matches one path component (or a whole path: `*` stops at `/`).
/// A malformed pattern is an error, as Go's `ErrBadPattern`.
pub fn matches(pattern: &str, name: &str) -> Result<bool, String> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    validate(&p).map_err(|()| format!("syntax error in pattern {pattern:?}"))?;
    Ok(match_from(&p, &n))
}

/// Iterative matching with one backtracking point (the last `*`), so a
/// pattern with many stars costs O(pattern × name), not exponential time.
/// A star never consumes `/`, so an earlier star never needs to grow.
fn match_from(p: &[char], n: &[char]) -> bool {
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if let Some(&pc) = p.get(pi) {
            let c = n[ni];
            let step = match pc {
                '*' => {
                    star = Some((pi + 1, ni));
                    pi += 1;
                    continue;
                }
                '?' => (c != '/').then_some(1),
                '[' => class(&p[pi + 1..])
                    .filter(|(set, _)| c != '/' && set.matches(c))
                    .map(|(_, len)| 1 + len),
                '\\' => (p.get(pi + 1) == Some(&c)).then_some(2),
                lit => (lit == c).then_some(1),
            };
            if let Some(k) = step {
                pi += k;
                ni += 1;
                continue;
            }
        }
        match star {
            Some((sp, sn)) if n[sn] != '/' => {
                star = Some((sp, sn + 1));
                pi = sp;
                ni = sn + 1;
            }
            _ => return false,
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

struct Class {
    negate: bool,
    ranges: Vec<(char, char)>,
}

impl Class {
    fn matches(&self, c: char) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negate
    }
}

/// Parses a class body after `[`; returns it and the chars consumed
/// including the closing `]`.
fn class(p: &[char]) -> Option<(Class, usize)> {
    let mut i = 0;
    let negate = p.first() == Some(&'^');
    if negate {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = *p.get(i)?;
        if c == ']' && !first {
            return Some((Class { negate, ranges }, i + 1));
        }
        first = false;
        let (lo, used) = class_char(&p[i..])?;
        i += used;
        let mut hi = lo;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|c| *c != ']') {
            let (h, used) = class_char(&p[i + 1..])?;
            hi = h;
            i += 1 + used;
        }
        if lo > hi {
            return None;
        }
        ranges.push((lo, hi));
    }
}

fn class_char(p: &[char]) -> Option<(char, usize)> {
    match p.first()? {
        '\\' => p.get(1).map(|c| (*c, 2)),
        '-' | ']' => None,
        c => Some((*c, 1)),
    }
}

/// Go checks the whole pattern even when the name fails early.
fn validate(p: &[char]) -> Result<(), ()> {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' => {
                if i + 1 >= p.len() {
                    return Err(());
                }
                i += 2;
            }
            '[' => {
                let (_, used) = class(&p[i + 1..]).ok_or(())?;
                i += 1 + used;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn go_filepath_match_semantics() {
        let ok = |p: &str, n: &str| matches(p, n).expect("valid pattern");
        assert!(ok("*.txt", "a.txt"));
        assert!(!ok("*.txt", "d/a.txt"));
        assert!(ok("a?c", "abc"));
        assert!(!ok("a?c", "a/c"));
        assert!(ok("[ab]*", "beta"));
        assert!(!ok("[^ab]*", "beta"));
        assert!(ok("[a-c]x", "bx"));
        assert!(ok("\\*", "*"));
        assert!(!ok("\\*", "x"));
        assert!(ok("*", ".hidden"));
        assert!(matches("[]a]", "]").is_err());
        assert!(ok("a*b*c", "aXbYc"));
        assert!(!ok("a*b*c", "aXbY"));
        assert!(ok("*x*", "xx"));
        // Many stars against a long name that does not match: linear, not
        // exponential (this took minutes with naive recursion).
        let name = "a".repeat(200);
        assert!(!ok("*a*a*a*a*a*a*a*a*a*a*b", &name));
        assert!(matches("[", "x").is_err());
        assert!(matches("a[", "b").is_err());
        assert!(matches("x\\", "x").is_err());
    }
}
