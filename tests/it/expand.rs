//! Word expansion (`kiln::dockerfile::shell`), driven by the tables in
//! `testdata/expand/*.txt`.
//!
//! Table format, one case a line (blank lines and `#` comments skipped):
//!
//! ```text
//! env: NAME=value;OTHER=value      default variables for the rows below
//! MODE | INPUT | ENV | EXPECT [| MATCHED | UNMATCHED]
//! ```
//!
//! * MODE: `word` (check `process_word`'s value) or `words` (check
//!   `process_words`), plus options joined with `+`: `bt` (escape character
//!   `` ` ``), `rq` raw quotes, `re` raw escapes, `sq` skip processing
//!   quotes, `su` skip unset variables.
//! * ENV: empty for the default variables, `-` for none, or `K=V;K2=V2`
//!   (a name without `=` is set to the empty string).
//! * EXPECT: the value; for `words` the words separated by `¦` (empty for
//!   none); `! message` for an error whose message is
//!   `failed to process "<input>": message`; `!! message` for the exact
//!   whole error message.
//! * MATCHED / UNMATCHED (optional): names found / not found, separated by
//!   `,`, or `-` for none.
//!
//! Fields are trimmed, so characters that the layout would eat are written
//! as `«sp»` (space), `«tab»`, `«nl»`, `«cr»`, `«bar»` (`|`), `«semi»`
//! (`;`), `«brk»` (`¦`) or `«U+XXXX»` (any character).

use crate::util::Lcg;
use kiln::dockerfile::shell::{Env, Lexer};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Vars = Vec<(String, String)>;

/// Replaces the `«...»` escapes of the table format.
fn decode(field: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = field;
    while let Some((before, after)) = rest.split_once('«') {
        out.push_str(before);
        let (name, tail) = after
            .split_once('»')
            .ok_or_else(|| format!("unclosed « in {field:?}"))?;
        out.push(match name {
            "sp" => ' ',
            "tab" => '\t',
            "nl" => '\n',
            "cr" => '\r',
            "bar" => '|',
            "semi" => ';',
            "brk" => '¦',
            _ => name
                .strip_prefix("U+")
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .and_then(char::from_u32)
                .ok_or_else(|| format!("unknown escape «{name}»"))?,
        });
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

fn parse_env(field: &str) -> Result<Vars, String> {
    let mut vars = Vars::new();
    for pair in field.split(';').filter(|p| !p.trim().is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        vars.push((decode(name.trim())?, decode(value)?));
    }
    Ok(vars)
}

fn parse_names(field: &str) -> Result<BTreeSet<String>, String> {
    if field == "-" {
        return Ok(BTreeSet::new());
    }
    field.split(',').map(|n| decode(n.trim())).collect()
}

fn lexer_for(mode: &str) -> Result<(Lexer, bool), String> {
    let mut parts = mode.split('+');
    let words = match parts.next() {
        Some("word") => false,
        Some("words") => true,
        other => return Err(format!("unknown mode {other:?}")),
    };
    let mut lexer = Lexer::new('\\');
    for option in parts {
        match option {
            "bt" => lexer.escape = '`',
            "rq" => lexer.raw_quotes = true,
            "re" => lexer.raw_escapes = true,
            "sq" => lexer.skip_process_quotes = true,
            "su" => lexer.skip_unset_env = true,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok((lexer, words))
}

/// Runs one table row; `Err` describes the mismatch.
fn check_row(line: &str, default_env: &Vars) -> Result<(), String> {
    let fields: Vec<&str> = line.split('|').map(str::trim).collect();
    let [mode, input, env, expect, sets @ ..] = fields.as_slice() else {
        return Err("expected at least 4 fields".into());
    };
    let (lexer, split) = lexer_for(mode)?;
    let input = decode(input)?;
    let vars = match *env {
        "" => default_env.clone(),
        "-" => Vars::new(),
        list => parse_env(list)?,
    };
    let got = lexer.process_word(&input, &vars);
    let words = lexer.process_words(&input, &vars);
    let context = format!("input {input:?}");
    if let Some(whole) = expect.strip_prefix("!!") {
        let want = decode(whole.trim())?;
        return match got {
            Err(e) if e.message == want && e.to_string() == want => Ok(()),
            other => Err(format!("{context}: want error {want:?}, got {other:?}")),
        };
    }
    if let Some(inner) = expect.strip_prefix('!') {
        let want = decode(inner.trim())?;
        return match got {
            Err(e)
                if e.message.starts_with("failed to process \"")
                    && e.message.ends_with(&format!("\": {want}")) =>
            {
                Ok(())
            }
            other => Err(format!("{context}: want error {want:?}, got {other:?}")),
        };
    }
    let got = got.map_err(|e| format!("{context}: unexpected error {:?}", e.message))?;
    if words.as_ref() != Ok(&got.words) {
        return Err(format!(
            "{context}: process_words {words:?} != {:?}",
            got.words
        ));
    }
    if split {
        let want: Vec<String> = match *expect {
            "" => Vec::new(),
            list => list.split('¦').map(decode).collect::<Result<_, _>>()?,
        };
        if got.words != want {
            return Err(format!(
                "{context}: want words {want:?}, got {:?}",
                got.words
            ));
        }
    } else if got.value != decode(expect)? {
        return Err(format!(
            "{context}: want {:?}, got {:?}",
            decode(expect)?,
            got.value
        ));
    }
    for (field, (what, actual)) in sets
        .iter()
        .zip([("matched", &got.matched), ("unmatched", &got.unmatched)])
    {
        let want = parse_names(field)?;
        if &want != actual {
            return Err(format!("{context}: want {what} {want:?}, got {actual:?}"));
        }
    }
    Ok(())
}

#[test]
fn expansion_tables() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/expand");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("testdata/expand exists")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
        .collect();
    files.sort();
    let (mut rows, mut failures) = (0, Vec::new());
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable table");
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let mut default_env = Vars::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            let result = if line.is_empty() || line.starts_with('#') {
                continue;
            } else if let Some(list) = line.strip_prefix("env:") {
                parse_env(list).map(|vars| default_env = vars)
            } else {
                rows += 1;
                check_row(line, &default_env)
            };
            if let Err(e) = result {
                failures.push(format!("{name}:{}: {e}", index + 1));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {rows} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(rows >= 150, "only {rows} rows in {}", dir.display());
}

#[test]
fn env_implementations() {
    let map: BTreeMap<String, String> = [("A".to_string(), "1".to_string())].into();
    assert_eq!(Env::get(&map, "A"), Some("1".to_string()));
    assert_eq!(Env::get(&map, "B"), None);
    let list: Vars = vec![
        ("A".into(), "first".into()),
        ("B".into(), String::new()),
        ("A".into(), "last".into()),
    ];
    assert_eq!(Env::get(&list, "A"), Some("last".to_string()));
    assert_eq!(Env::get(&list, "B"), Some(String::new()));
    let lexer = Lexer::new('\\');
    let out = lexer.process_word("$A-${B:-x}-$C", &map).expect("expands");
    assert_eq!(out.value, "1-x-");
    assert_eq!(out.words, ["1-x-"]);
    assert_eq!(out.matched, ["A".to_string()].into());
    assert_eq!(out.unmatched, ["B".to_string(), "C".to_string()].into());
}

#[test]
fn lexer_defaults_and_error_display() {
    let lexer = Lexer::new('`');
    assert_eq!(lexer.escape, '`');
    assert!(!(lexer.raw_quotes || lexer.raw_escapes));
    assert!(!(lexer.skip_process_quotes || lexer.skip_unset_env));
    let err = lexer.process_word("${}", &Vars::new()).expect_err("bad");
    assert_eq!(
        err.to_string(),
        "failed to process \"${}\": syntax error: bad substitution"
    );
}

#[test]
fn deep_nesting_is_refused_not_crashed() {
    let vars = Vars::new();
    let lexer = Lexer::new('\\');
    for unit in ["${a:-", "\"${a:-"] {
        let close = if unit.starts_with('"') { "}\"" } else { "}" };
        let ok = format!("{}x{}", unit.repeat(90), close.repeat(90));
        assert_eq!(lexer.process_word(&ok, &vars).expect("90 deep").value, "x");
        let deep = format!("{}x{}", unit.repeat(100_000), close.repeat(100_000));
        assert!(lexer.process_word(&deep, &vars).is_err());
    }
}

#[test]
fn garbage_never_panics() {
    const PIECES: [&str; 24] = [
        "$", "{", "}", ":", "-", "+", "?", "#", "%", "/", "*", "\\", "`", "'", "\"", " ", "\n",
        "a", "A", "1", "é", "😀", "\u{FEFF}", "${A",
    ];
    let vars: Vars = vec![
        ("A".into(), "a*b/c\n}é".into()),
        ("B".into(), String::new()),
        ("1".into(), "$0\\".into()),
    ];
    let mut rng = Lcg(0x5eed);
    for round in 0..4000 {
        let len = rng.below(40);
        let input = if round % 2 == 0 {
            let bytes: Vec<u8> = (0..len).map(|_| (rng.next() & 0xff) as u8).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            (0..len).map(|_| PIECES[rng.below(PIECES.len())]).collect()
        };
        let mut lexer = Lexer::new(if rng.below(2) == 0 { '\\' } else { '`' });
        let flags = rng.below(16);
        lexer.raw_quotes = flags & 1 != 0;
        lexer.raw_escapes = flags & 2 != 0;
        lexer.skip_process_quotes = flags & 4 != 0;
        lexer.skip_unset_env = flags & 8 != 0;
        let word = lexer.process_word(&input, &vars);
        let words = lexer.process_words(&input, &vars);
        assert_eq!(word.map(|e| e.words), words, "input {input:?}");
    }
}
