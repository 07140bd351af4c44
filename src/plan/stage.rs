//! Planning one stage: walks its instructions with the stage's ARG/ENV
//! scope, expands words where Docker expands them, and emits resolved
//! steps. Also raises the build checks that need scope (UndefinedVar,
//! WorkdirRelativePath, JSONArgsRecommended, ...), as BuildKit does at
//! dispatch time.

use super::refs::{flag_token, Refs};
use super::scope::StageScope;
use super::values::{
    check_chmod, check_signal, clean_path, go_base, is_remote, parse_port, resolve_path,
};
use super::{error_at, health_op, CopyOp, Op, PlannedMount, RunFile, Source, Step};
use crate::dockerfile::diag::{suggest, Diagnostic, Pos};
use crate::dockerfile::heredoc;
use crate::dockerfile::instructions::{self, CommandLine, CopyAdd, Instruction, Kind};
use crate::dockerfile::mount::{self, MountType};
use crate::dockerfile::shell::{Env, Lexer};
use std::collections::{BTreeMap, BTreeSet};

/// Planning state for one stage.
pub struct StageCtx<'a> {
    pub lexer: Lexer,
    pub refs: Refs<'a>,
    /// Stages planned in this build (references must stay inside it).
    pub available: &'a BTreeSet<usize>,
    /// `--build-arg` values.
    pub build_args: &'a BTreeMap<String, String>,
    /// Global ARG values, automatic platform ARGs included.
    pub global_env: &'a Vec<(String, String)>,
    pub sc: StageScope,
    pub steps: Vec<Step>,
    pub image_deps: BTreeSet<String>,
    pub consumed: &'a mut BTreeSet<String>,
    pub warnings: &'a mut Vec<Diagnostic>,
    /// Last CMD / ENTRYPOINT / HEALTHCHECK position, for
    /// MultipleInstructionsDisallowed.
    pub seen_once: BTreeMap<&'static str, Pos>,
}

fn secret_like(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    let tokens: Vec<&str> = lower.split('_').collect();
    let sensitive = [
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    tokens.iter().any(|t| sensitive.contains(t)) && !tokens.contains(&"public")
}

impl StageCtx<'_> {
    /// Expands one word against the stage env, reporting undefined variables.
    fn x(&mut self, word: &str, pos: Pos) -> Result<String, Diagnostic> {
        let exp = self
            .lexer
            .process_word(word, &self.sc.run_env)
            .map_err(|e| error_at(pos, e.message))?;
        self.report_undefined(&exp.unmatched, pos);
        Ok(exp.value)
    }

    fn report_undefined(&mut self, unmatched: &BTreeSet<String>, pos: Pos) {
        // Without the base image's config, its ENV is unknown: stay quiet.
        if !self.sc.env_known {
            return;
        }
        for var in unmatched {
            if self.sc.declared.iter().any(|d| d == var) {
                continue;
            }
            let mut msg = format!("Usage of undefined variable '${var}'");
            let known: Vec<&str> = self.sc.run_env.iter().map(|(k, _)| k.as_str()).collect();
            if let Some(s) = suggest(var, &known) {
                msg.push_str(&format!(" (did you mean ${s}?)"));
            }
            self.warnings
                .push(Diagnostic::warning(pos, "UndefinedVar", msg));
        }
    }

    fn opt_x(&mut self, word: &Option<String>, pos: Pos) -> Result<Option<String>, Diagnostic> {
        match word {
            Some(w) => self.x(w, pos).map(Some),
            None => Ok(None),
        }
    }

    fn with_shell(&self, cmd: &CommandLine) -> (Vec<String>, bool) {
        match cmd {
            CommandLine::Exec(v) => (v.clone(), false),
            CommandLine::Shell(s) => {
                let mut argv = self.sc.shell.clone();
                argv.push(s.clone());
                (argv, true)
            }
        }
    }

    fn source(&mut self, value: &str, what: &str, pos: Pos) -> Result<Source, Diagnostic> {
        let token = flag_token(what);
        let s = self
            .refs
            .resolve(value, what, pos, self.warnings)
            .map_err(|d| d.with_token(token))?;
        match &s {
            Source::Image { reference } => {
                self.image_deps.insert(reference.clone());
            }
            Source::Stage { index } if !self.available.contains(index) => {
                // Only an ONBUILD trigger of a base image can get here.
                return Err(error_at(
                    pos,
                    format!("{what} stage {value:?}: that stage is not part of this build"),
                )
                .with_token(token));
            }
            _ => {}
        }
        Ok(s)
    }

    fn once(&mut self, kw: &'static str, ins: &Instruction) {
        if let Some(prev) = self.seen_once.insert(kw, ins.pos) {
            self.warnings.push(Diagnostic::warning(
                prev,
                "MultipleInstructionsDisallowed",
                format!("Multiple {kw} instructions should not be used in the same stage because only the last one will be used"),
            ));
        }
    }

    fn secrets_check(&mut self, kw: &str, key: &str, pos: Pos) {
        if secret_like(key) {
            self.warnings.push(Diagnostic::warning(
                pos,
                "SecretsUsedInArgOrEnv",
                format!("Do not use ARG or ENV instructions for sensitive data ({kw} {key:?})"),
            ));
        }
    }

    fn push(&mut self, ins: &Instruction, op: Op, onbuild: bool) {
        self.steps.push(Step {
            line: ins.pos.line,
            end_line: ins.end_line,
            text: ins.original.clone(),
            op,
            onbuild,
        });
    }

    /// Plans one instruction. Errors and warnings span its lines.
    pub fn lower(&mut self, ins: &Instruction, onbuild: bool) -> Result<(), Diagnostic> {
        let before = self.warnings.len();
        let out = self
            .lower_inner(ins, onbuild)
            .map_err(|d| d.spanning(ins.end_line));
        for w in &mut self.warnings[before..] {
            w.end_line = ins.end_line;
        }
        out
    }

    fn lower_inner(&mut self, ins: &Instruction, onbuild: bool) -> Result<(), Diagnostic> {
        let pos = ins.pos;
        let op = match &ins.kind {
            Kind::From(_) => return Err(error_at(pos, "FROM is not allowed here")),
            Kind::Run(r) => self.lower_run(r, pos)?,
            Kind::Copy(c) => Op::Copy(self.lower_copy(c, false, pos)?),
            Kind::Add(c) => Op::Copy(self.lower_copy(c, true, pos)?),
            Kind::Env { pairs, legacy } | Kind::Label { pairs, legacy } => {
                let kw = ins.keyword();
                if *legacy {
                    self.warnings.push(Diagnostic::warning(
                        pos,
                        "LegacyKeyValueFormat",
                        format!("\"{kw} key=value\" should be used instead of legacy \"{kw} key value\" format"),
                    ));
                }
                // Every pair sees the env from before the instruction.
                let mut out = Vec::new();
                for (k, v) in pairs {
                    let k = self.x(k, pos)?;
                    if k.is_empty() {
                        return Err(error_at(pos, format!("{kw} names can not be blank")));
                    }
                    out.push((k, self.x(v, pos)?));
                }
                if kw == "ENV" {
                    for (k, v) in &out {
                        self.secrets_check("ENV", k, pos);
                        self.sc.set_env(k, v);
                    }
                    Op::Env { pairs: out }
                } else {
                    Op::Label { pairs: out }
                }
            }
            Kind::Arg(decls) => {
                for d in decls {
                    let name = d.name.clone();
                    self.consumed.insert(name.clone());
                    self.secrets_check("ARG", &name, pos);
                    let default = match &d.default {
                        Some(def) => Some(self.x(def, pos)?),
                        None => None,
                    };
                    let value = if let Some(v) = self.build_args.get(&name) {
                        Some(v.clone())
                    } else if default.is_some() {
                        default.clone()
                    } else {
                        Env::get(self.global_env, &name)
                    };
                    self.sc.set_arg(&name, value.as_deref());
                    self.push(
                        ins,
                        Op::Arg {
                            name,
                            value,
                            default,
                        },
                        onbuild,
                    );
                }
                return Ok(());
            }
            Kind::Expose(ports) => {
                let mut out = Vec::new();
                for p in ports {
                    let words = self
                        .lexer
                        .process_words(p, &self.sc.run_env)
                        .map_err(|e| error_at(pos, e.message))?;
                    for w in words {
                        out.extend(
                            parse_port(&w).map_err(|m| error_at(pos, m).with_token(w.clone()))?,
                        );
                    }
                }
                Op::Expose { ports: out }
            }
            Kind::Volume(v) => {
                let mut paths = Vec::new();
                for p in v {
                    let p = self.x(p, pos)?;
                    if p.trim().is_empty() {
                        return Err(error_at(pos, "VOLUME specified can not be an empty string"));
                    }
                    paths.push(p);
                }
                Op::Volume { paths }
            }
            Kind::User(u) => {
                let user = self.x(u, pos)?;
                self.sc.user = user.clone();
                Op::User { user }
            }
            Kind::Workdir(w) => {
                let w = self.x(w, pos)?;
                if w.is_empty() {
                    return Err(error_at(pos, "WORKDIR requires exactly one argument"));
                }
                if !self.sc.workdir_set && !w.starts_with('/') {
                    self.warnings.push(Diagnostic::warning(
                        pos,
                        "WorkdirRelativePath",
                        format!("Relative workdir {w:?} can have unexpected results if the base image changes"),
                    ));
                }
                let path = resolve_path(&self.sc.workdir, &w, false);
                self.sc.workdir = path.clone();
                self.sc.workdir_set = true;
                Op::Workdir { path }
            }
            Kind::Cmd(c) | Kind::Entrypoint(c) => {
                let kw = ins.keyword();
                self.once(kw, ins);
                if matches!(c, CommandLine::Shell(_)) && !self.sc.shell_set {
                    self.warnings.push(Diagnostic::warning(
                        pos,
                        "JSONArgsRecommended",
                        format!("JSON arguments recommended for {} to prevent unintended behavior related to OS signals", ins.keyword_raw),
                    ));
                }
                let (argv, shell_form) = self.with_shell(c);
                if kw == "CMD" {
                    Op::Cmd { argv, shell_form }
                } else {
                    Op::Entrypoint { argv, shell_form }
                }
            }
            Kind::Shell(argv) => {
                self.sc.shell = argv.clone();
                self.sc.shell_set = true;
                Op::Shell { argv: argv.clone() }
            }
            Kind::StopSignal(s) => {
                let signal = self.x(s, pos)?;
                check_signal(&signal).map_err(|m| error_at(pos, m).with_token(s.clone()))?;
                Op::StopSignal { signal }
            }
            Kind::Healthcheck(h) => {
                self.once("HEALTHCHECK", ins);
                Op::Healthcheck(health_op(h))
            }
            Kind::Onbuild { expression, .. } => {
                self.sc.onbuild.push(expression.clone());
                Op::Onbuild {
                    expression: expression.clone(),
                }
            }
            Kind::Maintainer(m) => Op::Maintainer { name: m.clone() },
        };
        self.push(ins, op, onbuild);
        Ok(())
    }

    fn lower_run(&mut self, r: &instructions::Run, pos: Pos) -> Result<Op, Diagnostic> {
        let mut files = Vec::new();
        let (argv, shell_form) = match (&r.cmd, r.heredocs.first()) {
            (CommandLine::Shell(cmd), Some(first)) => {
                let single = heredoc::parse_word(cmd).filter(|h| h.name == first.name);
                let mut argv = self.sc.shell.clone();
                if single.is_some() {
                    // `RUN <<EOF`: the body is the command, or, with a
                    // shebang, a file under /dev/pipes/ that is executed.
                    // BuildKit tests the raw body (before `<<-` tab
                    // stripping) for the shebang.
                    let body = first.body();
                    if first.content.starts_with("#!") {
                        // The name becomes a file name: nothing that could
                        // name another place.
                        if first.name.contains('/') || first.name == "." || first.name == ".." {
                            return Err(error_at(
                                pos,
                                format!(
                                    "heredoc name {:?} cannot name a script file (no '/', '.' or '..')",
                                    first.name
                                ),
                            ));
                        }
                        let path = format!("/dev/pipes/{}", first.name);
                        files.push(RunFile {
                            path: path.clone(),
                            data: body,
                        });
                        argv.push(path);
                    } else {
                        argv.push(body);
                    }
                } else {
                    // Anything else goes to the shell with the bodies
                    // reattached, as a shell heredoc.
                    let mut full = cmd.clone();
                    for h in &r.heredocs {
                        full.push('\n');
                        full.push_str(&h.content);
                        full.push_str(&h.name);
                    }
                    argv.push(full);
                }
                (argv, true)
            }
            (cmd, _) => self.with_shell(cmd),
        };
        let mut mounts = Vec::new();
        let mut ssh_n = 0;
        for (n, m) in r.mounts.iter().enumerate() {
            let run_env = self.sc.run_env.clone();
            let lexer = self.lexer;
            let unmatched = std::cell::RefCell::new(BTreeSet::new());
            let exp = |w: &str| {
                lexer
                    .process_word(w, &run_env)
                    .map(|e| {
                        unmatched.borrow_mut().extend(e.unmatched);
                        e.value
                    })
                    .map_err(|e| e.message)
            };
            let mut parsed =
                mount::parse(m, &exp).map_err(|e| error_at(pos, e).with_token_nth("--mount", n))?;
            self.report_undefined(&unmatched.into_inner(), pos);
            let from_source = match &parsed.from {
                Some(f) => Some(self.source(f, "mount from", pos)?),
                None => None,
            };
            match parsed.kind {
                MountType::Secret => {
                    let id = parsed
                        .source
                        .clone()
                        .or_else(|| parsed.id.clone())
                        .or_else(|| parsed.target.as_deref().map(go_base))
                        .or_else(|| parsed.env.clone());
                    let Some(id) = id.filter(|i| !i.is_empty()) else {
                        return Err(error_at(
                            pos,
                            "invalid secret mount: one of id, source, target or env is required",
                        ));
                    };
                    if parsed.target.is_none() && parsed.env.is_none() {
                        parsed.target = Some(format!("/run/secrets/{}", go_base(&id)));
                    }
                    parsed.id = Some(id);
                }
                MountType::Ssh => {
                    if parsed.source.is_some() {
                        return Err(error_at(pos, "ssh does not support source"));
                    }
                    if parsed.id.is_none() {
                        parsed.id = Some("default".into());
                    }
                    if parsed.target.is_none() {
                        parsed.target = Some(format!("/run/buildkit/ssh_agent.{ssh_n}"));
                        ssh_n += 1;
                    }
                }
                MountType::Cache if parsed.id.is_none() => {
                    // BuildKit keys an id-less cache by its target as written.
                    parsed.id = Some(clean_path(parsed.target.as_deref().unwrap_or_default()));
                }
                _ => {}
            }
            // Secret and ssh targets are absolute, cleaned (no `..` can
            // climb above the root); the others are taken against WORKDIR
            // and may not cover `/`.
            if matches!(parsed.kind, MountType::Secret | MountType::Ssh) {
                if let Some(t) = &parsed.target {
                    parsed.target = Some(resolve_path("/", t, false));
                }
            } else {
                let t = parsed.target.clone().unwrap_or_default();
                let abs = resolve_path(&self.sc.workdir, &t, false);
                if abs == "/" {
                    return Err(error_at(
                        pos,
                        format!("invalid mount target {t:?}: a mount cannot cover / (set target=/some/path)"),
                    )
                    .with_token_nth("--mount", n));
                }
                parsed.target = Some(abs);
            }
            mounts.push(PlannedMount {
                mount: parsed,
                from_source,
            });
        }
        Ok(Op::Run {
            argv,
            shell_form,
            files,
            mounts,
            network: r.network.clone().unwrap_or_else(|| "default".into()),
            security: r.security.clone().unwrap_or_else(|| "sandbox".into()),
            env: self.sc.run_env.clone(),
            args: self.sc.args.clone(),
            proxy: self
                .build_args
                .iter()
                .filter(|(k, _)| {
                    super::scope::PROXY_ARGS
                        .iter()
                        .any(|p| p.eq_ignore_ascii_case(k))
                })
                .filter(|(k, _)| !self.sc.declared.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            workdir: if self.sc.workdir.is_empty() {
                "/".into()
            } else {
                self.sc.workdir.clone()
            },
            user: self.sc.user.clone(),
        })
    }

    fn lower_copy(&mut self, c: &CopyAdd, add: bool, pos: Pos) -> Result<CopyOp, Diagnostic> {
        let kw = if add { "ADD" } else { "COPY" };
        let mut sources = Vec::new();
        for s in &c.sources {
            let v = self.x(s, pos)?;
            if v.is_empty() {
                return Err(error_at(
                    pos,
                    format!("{kw} source {s:?} expands to an empty string"),
                ));
            }
            if !add && c.from.is_none() && (v.starts_with("http://") || v.starts_with("https://")) {
                return Err(error_at(
                    pos,
                    format!("source can't be a URL for COPY ({v}): use ADD to download it"),
                ));
            }
            if !add && c.from.is_none() && v.starts_with("git@") {
                return Err(error_at(
                    pos,
                    format!("source can't be a git ref for COPY ({v}): use ADD"),
                ));
            }
            sources.push(v);
        }
        // Heredoc bodies expand with `\` as the escape whatever the
        // Dockerfile's escape directive says, and keep their quotes.
        let heredoc_lexer = Lexer {
            skip_process_quotes: true,
            ..Lexer::new('\\')
        };
        let mut inline = Vec::new();
        for src in &c.inline {
            let mut s = src.clone();
            if s.expand {
                let exp = heredoc_lexer
                    .process_word(&s.data, &self.sc.run_env)
                    .map_err(|e| error_at(pos, e.message))?;
                self.report_undefined(&exp.unmatched, pos);
                s.data = exp.value;
            }
            inline.push(s);
        }
        let dest_raw = self.x(&c.dest, pos)?;
        let dest = resolve_path(&self.sc.workdir, &dest_raw, true);
        let source = match &c.from {
            Some(f) => self.source(f, "copy from", pos)?,
            None => Source::Context,
        };
        let chmod = self.opt_x(&c.chmod, pos)?;
        if let Some(m) = &chmod {
            check_chmod(m).map_err(|e| error_at(pos, e).with_token("--chmod"))?;
        }
        let checksum = self.opt_x(&c.checksum, pos)?;
        if let Some(sum) = &checksum {
            instructions::validate_checksum(sum)
                .map_err(|m| error_at(pos, m).with_token("--checksum"))?;
            if sources.len() > 1 {
                return Err(error_at(
                    pos,
                    "checksum can't be specified for multiple sources",
                ));
            }
            if let Some(s) = sources.iter().find(|s| !is_remote(s)) {
                return Err(error_at(
                    pos,
                    format!("checksum can't be specified for non-HTTP sources ({s:?} is a local path; URLs and git sources take one)"),
                ));
            }
        }
        let mut exclude = Vec::new();
        for e in &c.exclude {
            exclude.push(self.x(e, pos)?);
        }
        Ok(CopyOp {
            add,
            source,
            sources,
            inline,
            dest,
            dest_raw,
            chown: self.opt_x(&c.chown, pos)?,
            chmod,
            link: c.link,
            exclude,
            parents: c.parents,
            checksum,
            keep_git_dir: c.keep_git_dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        assert!(secret_like("DB_PASSWORD"));
        assert!(secret_like("api_key"));
        assert!(secret_like("GITHUB_TOKEN"));
        assert!(!secret_like("PUBLIC_KEY"));
        assert!(!secret_like("KEYBOARD"));
        assert!(!secret_like("NODE_ENV"));
    }
}
