//! `--chmod` values: octal (`0755`) or symbolic (`u+x,go-w`, `a=rX`), as
//! chmod(1) reads them. The planner has already checked the syntax.

/// A parsed `--chmod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    Octal(u32),
    Symbolic(Vec<Clause>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// The bits the clause may touch (`u`, `g`, `o`, `a` → masks); empty who
    /// means `a`.
    who: u32,
    ops: Vec<(char, String)>,
}

impl Chmod {
    pub fn parse(s: &str) -> Result<Chmod, String> {
        crate::plan::values::check_chmod(s)?;
        if s.chars().all(|c| c.is_ascii_digit()) {
            return u32::from_str_radix(s, 8)
                .map(Chmod::Octal)
                .map_err(|e| format!("invalid --chmod {s:?}: {e}"));
        }
        let mut clauses = Vec::new();
        for clause in s.split(',') {
            let who_part: String = clause.chars().take_while(|c| "ugoa".contains(*c)).collect();
            let mut who = 0;
            for c in who_part.chars() {
                who |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    _ => 0o7777,
                };
            }
            let mut ops = Vec::new();
            let mut current: Option<(char, String)> = None;
            for c in clause[who_part.len()..].chars() {
                if matches!(c, '+' | '-' | '=') {
                    if let Some(op) = current.take() {
                        ops.push(op);
                    }
                    current = Some((c, String::new()));
                } else if let Some((_, perms)) = current.as_mut() {
                    perms.push(c);
                }
            }
            ops.extend(current);
            clauses.push(Clause { who, ops });
        }
        Ok(Chmod::Symbolic(clauses))
    }

    /// The new permission bits for a file that has `mode` now.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let mode = mode & 0o7777;
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(clauses) => {
                let mut m = mode;
                for cl in clauses {
                    // With no `who`, chmod(1) applies the umask; kiln has none
                    // (as BuildKit), so it is `a`.
                    let who = if cl.who == 0 { 0o7777 } else { cl.who };
                    for (op, perms) in &cl.ops {
                        let mut bits = 0;
                        for p in perms.chars() {
                            bits |= match p {
                                'r' => 0o444,
                                'w' => 0o222,
                                'x' => 0o111,
                                'X' if is_dir || m & 0o111 != 0 => 0o111,
                                's' => 0o6000,
                                't' => 0o1000,
                                'u' => copy_class((m >> 6) & 7),
                                'g' => copy_class((m >> 3) & 7),
                                'o' => copy_class(m & 7),
                                _ => 0,
                            };
                        }
                        let bits = bits & who;
                        m = match op {
                            '+' => m | bits,
                            '-' => m & !bits,
                            _ => (m & !(who & 0o7777 & !special_kept(who))) | bits,
                        };
                    }
                }
                m
            }
        }
    }
}

/// `u`, `g`, `o` as a source: the three bits copied to every class.
fn copy_class(bits: u32) -> u32 {
    bits | (bits << 3) | (bits << 6)
}

/// `=` clears the permission bits of the classes named, but a plain `u=`
/// keeps setuid on directories in GNU chmod; kiln clears what it names,
/// except the sticky bit when `o` is not named.
fn special_kept(who: u32) -> u32 {
    if who & 0o007 == 0 {
        0o1000
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::Chmod;

    fn sym(s: &str, mode: u32, dir: bool) -> u32 {
        Chmod::parse(s).expect("parses").apply(mode, dir)
    }

    #[test]
    fn octal_and_symbolic_modes() {
        assert_eq!(sym("755", 0o600, false), 0o755);
        assert_eq!(sym("4755", 0o600, false), 0o4755);
        assert_eq!(sym("u+x", 0o644, false), 0o744);
        assert_eq!(sym("go-w", 0o666, false), 0o644);
        assert_eq!(sym("a=rX", 0o700, true), 0o555);
        assert_eq!(sym("a=rX", 0o600, false), 0o444);
        assert_eq!(sym("a=rX", 0o700, false), 0o555);
        assert_eq!(sym("u=rw,g=r,o=", 0o777, false), 0o640);
        assert_eq!(sym("+x", 0o644, false), 0o755);
        assert_eq!(sym("u+s", 0o755, false), 0o4755);
        assert_eq!(sym("g=u", 0o740, false), 0o770);
        assert!(Chmod::parse("u+q").is_err());
    }
}
