//! Node → [`Instruction`] conversion: flag specs per instruction, argument
//! shapes and BuildKit's argument-count rules and messages.

use super::*;
use crate::dockerfile::diag::suggest;
use crate::dockerfile::flags::{parse_duration, FlagKind, Flags};
use crate::dockerfile::heredoc;
use crate::dockerfile::mount;
use crate::dockerfile::parser::{known_instructions, Args, Node};

fn err(node: &Node, msg: impl Into<String>) -> Diagnostic {
    Diagnostic::error(node.pos, msg).spanning(node.end_line)
}

fn list(args: &Args) -> Vec<String> {
    match args {
        Args::Empty => Vec::new(),
        Args::List(v) => v.clone(),
        Args::Text(t) => vec![t.clone()],
        Args::Pairs { pairs, .. } => pairs
            .iter()
            .flat_map(|(k, v)| [k.clone(), v.clone()])
            .collect(),
        Args::Health { kind, .. } => vec![kind.clone()],
        Args::Sub(n) => vec![n.original.clone()],
    }
}

fn command_line(node: &Node, args: &Args) -> CommandLine {
    match args {
        Args::List(v) if node.json => CommandLine::Exec(v.clone()),
        Args::Empty if node.json => CommandLine::Exec(Vec::new()),
        Args::Empty => CommandLine::Shell(String::new()),
        other => CommandLine::Shell(list(other).join(" ")),
    }
}

fn one_arg(node: &Node) -> Result<String, Diagnostic> {
    match &node.args {
        Args::Text(t) => Ok(t.clone()),
        Args::Empty => Err(err(
            node,
            format!("{} requires exactly one argument", node.keyword),
        )),
        other => {
            let v = list(other);
            if v.len() == 1 {
                Ok(v[0].clone())
            } else {
                Err(err(
                    node,
                    format!("{} requires exactly one argument", node.keyword),
                ))
            }
        }
    }
}

fn flags(node: &Node, spec: &[(&str, FlagKind)]) -> Result<Flags, Diagnostic> {
    Flags::parse(&node.keyword, &node.flags, spec)
        .map_err(|e| err(node, e.message).with_token_nth(e.token, e.nth))
}

/// Converts one node.
pub fn from_node(node: &Node) -> Result<Instruction, Diagnostic> {
    use FlagKind::*;
    let kw = node.keyword.as_str();
    let mut ignored_flags = Vec::new();
    let needs_args = |node: &Node| -> Result<(), Diagnostic> {
        if node.args == Args::Empty {
            Err(err(node, format!("{kw} requires at least one argument")))
        } else {
            Ok(())
        }
    };
    let kind = match kw {
        "FROM" => {
            let f = flags(node, &[("platform", String)])?;
            let words = list(&node.args);
            let (image, name_raw, as_keyword) = match words.as_slice() {
                [image] => (image.clone(), None, None),
                [image, kw_as, name] if kw_as.eq_ignore_ascii_case("as") => {
                    (image.clone(), Some(name.clone()), Some(kw_as.clone()))
                }
                _ => {
                    return Err(err(node, "FROM requires either one or three arguments"));
                }
            };
            let name = match &name_raw {
                Some(raw) => {
                    let lower = raw.to_lowercase();
                    if !valid_stage_name(&lower) {
                        return Err(err(
                            node,
                            format!("invalid name for build stage: {raw:?}, name can't start with a number or contain symbols"),
                        ));
                    }
                    Some(lower)
                }
                None => None,
            };
            Kind::From(From {
                image,
                name,
                name_raw,
                as_keyword,
                platform: f.string("platform"),
            })
        }
        "RUN" => {
            let f = flags(
                node,
                &[("mount", List), ("network", String), ("security", String)],
            )?;
            // A bare `RUN` runs `/bin/sh -c ""`, as in BuildKit.
            let mounts = f.list("mount");
            for (n, m) in mounts.iter().enumerate() {
                mount::scan(m).map_err(|e| err(node, e).with_token_nth("--mount", n))?;
            }
            let network = f.string("network");
            if let Some(n) = &network {
                if !matches!(n.as_str(), "default" | "none" | "host") {
                    return Err(err(
                        node,
                        format!("invalid network mode {n:?} (use default, none or host)"),
                    )
                    .with_token("--network"));
                }
            }
            let security = f.string("security");
            if let Some(s) = &security {
                if !matches!(s.as_str(), "sandbox" | "insecure") {
                    return Err(err(
                        node,
                        format!("security mode {s:?} not supported (use sandbox or insecure)"),
                    )
                    .with_token("--security"));
                }
            }
            Kind::Run(Run {
                cmd: command_line(node, &node.args),
                heredocs: node.heredocs.clone(),
                mounts,
                network,
                security,
            })
        }
        "CMD" | "ENTRYPOINT" => {
            flags(node, &[])?;
            let cmd = command_line(node, &node.args);
            if kw == "CMD" {
                Kind::Cmd(cmd)
            } else {
                Kind::Entrypoint(cmd)
            }
        }
        "SHELL" => {
            flags(node, &[])?;
            needs_args(node)?;
            match (&node.args, node.json) {
                (Args::List(v), true) if !v.is_empty() => Kind::Shell(v.clone()),
                (_, true) => return Err(err(node, "SHELL requires at least one argument")),
                _ => return Err(err(node, "SHELL requires the arguments to be in JSON form")),
            }
        }
        "ENV" | "LABEL" => {
            flags(node, &[])?;
            let (pairs, legacy) = match &node.args {
                Args::Pairs { pairs, legacy } => (pairs.clone(), *legacy),
                _ => return Err(err(node, format!("{kw} requires at least one argument"))),
            };
            if pairs.iter().any(|(k, _)| k.is_empty()) {
                return Err(err(node, format!("{kw} names can not be blank")));
            }
            if kw == "ENV" {
                Kind::Env { pairs, legacy }
            } else {
                Kind::Label { pairs, legacy }
            }
        }
        "ARG" => {
            ignored_flags = node.flags.clone();
            needs_args(node)?;
            let mut decls = Vec::new();
            for word in list(&node.args) {
                let decl = match word.split_once('=') {
                    Some((k, v)) => ArgDecl {
                        name: k.to_string(),
                        default: Some(v.to_string()),
                    },
                    None => ArgDecl {
                        name: word.clone(),
                        default: None,
                    },
                };
                if decl.name.is_empty() {
                    return Err(err(node, "ARG names can not be blank"));
                }
                decls.push(decl);
            }
            Kind::Arg(decls)
        }
        "COPY" | "ADD" => {
            let is_copy = kw == "COPY";
            let spec: &[(&str, FlagKind)] = if is_copy {
                &[
                    ("from", String),
                    ("chown", String),
                    ("chmod", String),
                    ("link", Bool),
                    ("exclude", List),
                    ("parents", Bool),
                ]
            } else {
                &[
                    ("chown", String),
                    ("chmod", String),
                    ("link", Bool),
                    ("exclude", List),
                    ("checksum", String),
                    ("keep-git-dir", Bool),
                ]
            };
            let f = flags(node, spec)?;
            let args = list(&node.args);
            if args.len() < 2 {
                return Err(err(
                    node,
                    if args.is_empty() {
                        format!("{kw} requires at least two arguments")
                    } else {
                        format!("{kw} requires at least two arguments, but only one was provided. Destination could not be determined")
                    },
                ));
            }
            let (srcs, dest) = args.split_at(args.len() - 1);
            let dest = dest[0].clone();
            if !node.json && heredoc::parse_word(&dest).is_some() {
                return Err(err(
                    node,
                    format!("{kw} cannot accept a heredoc as a destination"),
                ));
            }
            let mut c = CopyAdd {
                dest,
                from: f.string("from"),
                chown: f.string("chown"),
                chmod: f.string("chmod"),
                link: f.bool("link"),
                exclude: f.list("exclude"),
                parents: f.bool("parents"),
                checksum: f.string("checksum"),
                keep_git_dir: f.bool("keep-git-dir"),
                json: node.json,
                ..CopyAdd::default()
            };
            // With variables, the value is checked after expansion.
            if let Some(sum) = c.checksum.as_ref().filter(|s| !s.contains('$')) {
                validate_checksum(sum).map_err(|m| err(node, m).with_token("--checksum"))?;
            }
            // An empty --from means the build context, as in BuildKit.
            if c.from.as_deref() == Some("") {
                c.from = None;
            }
            for src in srcs {
                match (!node.json).then(|| heredoc::parse_word(src)).flatten() {
                    Some(doc) => {
                        let found = node.heredocs.iter().find(|h| h.name == doc.name);
                        let data = found.map(Heredoc::body).unwrap_or_default();
                        c.inline.push(InlineSource {
                            name: doc.name,
                            data,
                            expand: doc.expand,
                        });
                    }
                    None => c.sources.push(src.clone()),
                }
            }
            if is_copy {
                Kind::Copy(c)
            } else {
                Kind::Add(c)
            }
        }
        "EXPOSE" => {
            flags(node, &[])?;
            needs_args(node)?;
            Kind::Expose(list(&node.args))
        }
        "VOLUME" => {
            flags(node, &[])?;
            needs_args(node)?;
            let v: Vec<std::string::String> = list(&node.args)
                .iter()
                .map(|s| s.trim().to_string())
                .collect();
            if v.iter().any(|s| s.is_empty()) {
                return Err(err(node, "VOLUME specified can not be an empty string"));
            }
            Kind::Volume(v)
        }
        "USER" => {
            flags(node, &[])?;
            Kind::User(one_arg(node)?)
        }
        "WORKDIR" => {
            flags(node, &[])?;
            Kind::Workdir(one_arg(node)?)
        }
        "STOPSIGNAL" => {
            ignored_flags = node.flags.clone();
            Kind::StopSignal(one_arg(node)?)
        }
        "MAINTAINER" => {
            flags(node, &[])?;
            Kind::Maintainer(one_arg(node)?)
        }
        "HEALTHCHECK" => {
            let none = matches!(&node.args, Args::Health { kind, .. } if kind.eq_ignore_ascii_case("NONE"));
            if none {
                ignored_flags = node.flags.clone();
            }
            let no_flags = Node {
                flags: Vec::new(),
                ..node.clone()
            };
            let f = flags(
                if none { &no_flags } else { node },
                &[
                    ("interval", String),
                    ("timeout", String),
                    ("start-period", String),
                    ("start-interval", String),
                    ("retries", String),
                ],
            )?;
            let Args::Health { kind, cmd } = &node.args else {
                return Err(err(node, "HEALTHCHECK requires at least one argument"));
            };
            match kind.to_ascii_uppercase().as_str() {
                "NONE" => {
                    if **cmd != Args::Empty {
                        return Err(err(node, "HEALTHCHECK NONE takes no arguments"));
                    }
                    Kind::Healthcheck(Health::None)
                }
                "CMD" => {
                    let cmd = command_line(node, cmd);
                    let empty = match &cmd {
                        CommandLine::Exec(v) => v.is_empty(),
                        CommandLine::Shell(s) => s.is_empty(),
                    };
                    if empty {
                        return Err(err(node, "Missing command after HEALTHCHECK CMD"));
                    }
                    let dur = |name: &str| -> Result<u64, Diagnostic> {
                        let Some(v) = f.string(name) else {
                            return Ok(0);
                        };
                        let ns =
                            parse_duration(&v).map_err(|m| err(node, format!("--{name}: {m}")))?;
                        if ns != 0 && ns < 1_000_000 {
                            return Err(err(
                                node,
                                format!("Interval \"{name}\" cannot be less than 1ms"),
                            ));
                        }
                        Ok(ns)
                    };
                    let retries = match f.string("retries") {
                        None => 0,
                        Some(v) => match v.parse::<i64>() {
                            Ok(n) if n < 0 => {
                                return Err(err(
                                    node,
                                    format!("--retries cannot be negative ({n})"),
                                ))
                            }
                            Ok(n) => u32::try_from(n).map_err(|_| {
                                err(node, format!("--retries value {n} is out of range"))
                            })?,
                            Err(_) => {
                                return Err(err(node, format!("--retries: invalid number {v:?}")))
                            }
                        },
                    };
                    Kind::Healthcheck(Health::Cmd {
                        cmd,
                        interval: dur("interval")?,
                        timeout: dur("timeout")?,
                        start_period: dur("start-period")?,
                        start_interval: dur("start-interval")?,
                        retries,
                    })
                }
                _ => {
                    return Err(err(
                        node,
                        format!("Unknown type {kind:?} in HEALTHCHECK (try CMD)"),
                    ))
                }
            }
        }
        "ONBUILD" => {
            flags(node, &[])?;
            let Args::Sub(sub) = &node.args else {
                return Err(err(node, "ONBUILD requires at least one argument"));
            };
            match sub.keyword.as_str() {
                "ONBUILD" => {
                    return Err(err(
                        node,
                        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                    ))
                }
                "FROM" | "MAINTAINER" => {
                    return Err(err(
                        node,
                        format!("{} isn't allowed as an ONBUILD trigger", sub.keyword),
                    ))
                }
                _ => {}
            }
            // Heredoc bodies were read for the ONBUILD line; they belong to
            // the trigger, and its stored expression carries them.
            let mut sub = (**sub).clone();
            sub.heredocs = node.heredocs.clone();
            let (trigger, trigger_error) = match from_node(&sub) {
                Ok(t) => (Some(Box::new(t)), None),
                Err(e) => (None, Some(e.message)),
            };
            let mut expression = strip_keyword(&node.original).to_string();
            for h in &node.heredocs {
                expression.push('\n');
                expression.push_str(&h.content);
                expression.push_str(&h.name);
            }
            Kind::Onbuild {
                expression,
                trigger,
                trigger_error,
            }
        }
        _ => {
            let mut msg = format!("unknown instruction: {}", node.keyword_raw);
            let mut d = err(node, "");
            if let Some(s) = suggest(&node.keyword, known_instructions()) {
                // Suggest in the case the user writes in.
                let all_lower = node.keyword_raw.chars().all(|c| !c.is_uppercase());
                let s = if all_lower {
                    s.to_lowercase()
                } else {
                    s.to_string()
                };
                msg.push_str(&format!(" (did you mean {s}?)"));
            }
            d.message = msg;
            return Err(d);
        }
    };
    Ok(Instruction {
        pos: node.pos,
        end_line: node.end_line,
        keyword_raw: node.keyword_raw.clone(),
        original: node.original.clone(),
        kind,
        ignored_flags,
    })
}

/// `ONBUILD RUN x` → `RUN x`.
fn strip_keyword(original: &str) -> &str {
    let t = original.trim_start();
    match t.find(char::is_whitespace) {
        Some(at) => t[at..].trim_start(),
        None => "",
    }
}

/// Stage names: a lower-case letter, then letters, digits, `-`, `_`, `.`.
pub fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

pub fn validate_checksum(sum: &str) -> Result<(), String> {
    let Some((alg, hex)) = sum.split_once(':') else {
        return Err(format!(
            "invalid checksum digest format {sum:?} (expected sha256:<hex>)"
        ));
    };
    let want = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            return Err(format!(
                "unsupported digest algorithm {alg:?} in --checksum (use sha256, sha384 or sha512)"
            ))
        }
    };
    if hex.len() != want
        || !hex
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    {
        return Err(format!(
            "invalid checksum digest {sum:?}: expected {want} lower-case hex digits"
        ));
    }
    Ok(())
}
