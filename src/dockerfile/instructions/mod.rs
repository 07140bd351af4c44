//! Typed instructions: each parser node becomes an [`Instruction`] with its
//! flags validated and its arguments in the shape that instruction needs.
//! Variables are not expanded here (that needs ARG/ENV scope, which the
//! planner owns); words keep their quotes until expansion.

mod convert;

pub use convert::{from_node, valid_stage_name, validate_checksum};

use super::diag::{Diagnostic, Pos};
use super::heredoc::Heredoc;
use super::parser::Dockerfile;

/// A command line in exec (JSON) or shell form.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandLine {
    Exec(Vec<String>),
    Shell(String),
}

/// `FROM [--platform=P] IMAGE [AS NAME]`
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct From {
    pub image: String,
    /// The stage name, lower-cased.
    pub name: Option<String>,
    /// The stage name as written.
    pub name_raw: Option<String>,
    /// The `AS` keyword as written.
    pub as_keyword: Option<String>,
    pub platform: Option<String>,
}

/// `RUN`
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Run {
    pub cmd: CommandLine,
    pub heredocs: Vec<Heredoc>,
    /// `--mount` values, not yet expanded (checked for syntax already).
    pub mounts: Vec<String>,
    pub network: Option<String>,
    pub security: Option<String>,
}

/// A heredoc used as a COPY/ADD source.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InlineSource {
    pub name: String,
    pub data: String,
    pub expand: bool,
}

/// `COPY` and `ADD`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct CopyAdd {
    pub sources: Vec<String>,
    pub inline: Vec<InlineSource>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub exclude: Vec<String>,
    pub parents: bool,
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
    pub json: bool,
}

/// `HEALTHCHECK`
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Health {
    None,
    Cmd {
        cmd: CommandLine,
        /// Nanoseconds; 0 when not given.
        interval: u64,
        timeout: u64,
        start_period: u64,
        start_interval: u64,
        retries: u32,
    },
}

/// One `ARG` declaration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArgDecl {
    pub name: String,
    /// The default, unexpanded.
    pub default: Option<String>,
}

/// What an instruction does, with its arguments.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Kind {
    From(From),
    Run(Run),
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    Shell(Vec<String>),
    Env {
        pairs: Vec<(String, String)>,
        legacy: bool,
    },
    Label {
        pairs: Vec<(String, String)>,
        legacy: bool,
    },
    Arg(Vec<ArgDecl>),
    Copy(CopyAdd),
    Add(CopyAdd),
    Expose(Vec<String>),
    Volume(Vec<String>),
    User(String),
    Workdir(String),
    StopSignal(String),
    Maintainer(String),
    Healthcheck(Health),
    Onbuild {
        expression: String,
        /// The trigger, when it is a valid instruction. BuildKit stores any
        /// other trigger too and fails only when it runs.
        trigger: Option<Box<Instruction>>,
        /// Why the trigger is not valid, for a warning now.
        #[serde(skip_serializing_if = "Option::is_none")]
        trigger_error: Option<String>,
    },
}

/// One instruction with its position.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Instruction {
    pub pos: Pos,
    pub end_line: usize,
    /// The keyword as written.
    pub keyword_raw: String,
    /// The whole instruction text (continuations joined, no heredoc bodies).
    pub original: String,
    pub kind: Kind,
    /// Flags that BuildKit ignores on this instruction (ARG, STOPSIGNAL,
    /// HEALTHCHECK NONE): accepted, with a warning.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignored_flags: Vec<String>,
}

impl Instruction {
    /// The upper-case keyword.
    pub fn keyword(&self) -> &'static str {
        match &self.kind {
            Kind::From(_) => "FROM",
            Kind::Run(_) => "RUN",
            Kind::Cmd(_) => "CMD",
            Kind::Entrypoint(_) => "ENTRYPOINT",
            Kind::Shell(_) => "SHELL",
            Kind::Env { .. } => "ENV",
            Kind::Label { .. } => "LABEL",
            Kind::Arg(_) => "ARG",
            Kind::Copy(_) => "COPY",
            Kind::Add(_) => "ADD",
            Kind::Expose(_) => "EXPOSE",
            Kind::Volume(_) => "VOLUME",
            Kind::User(_) => "USER",
            Kind::Workdir(_) => "WORKDIR",
            Kind::StopSignal(_) => "STOPSIGNAL",
            Kind::Maintainer(_) => "MAINTAINER",
            Kind::Healthcheck(_) => "HEALTHCHECK",
            Kind::Onbuild { .. } => "ONBUILD",
        }
    }
}

/// Converts every node of a parsed Dockerfile. The first error stops.
pub fn from_dockerfile(df: &Dockerfile) -> Result<Vec<Instruction>, Diagnostic> {
    df.nodes.iter().map(from_node).collect()
}
