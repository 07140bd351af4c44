//! The command line: clap structs as the user types them (`*Args`), then
//! validated and resolved into settings the rest of kiln uses
//! ([`BuildSettings`]), in the spirit of ripgrep's LowArgs → HiArgs.
//!
//! Flags follow `docker buildx build`. Flags that are parsed and validated
//! but not implemented yet are rejected with an error that says so.

use crate::plan::Platform;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// kiln: build container images from Dockerfiles, without a daemon.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// A registry to reach over plain HTTP, or over HTTPS without checking
    /// its certificate (repeatable; also `insecure-registries` in
    /// ~/.config/kiln/config.json). Loopback registries are insecure already.
    #[arg(long = "insecure-registry", global = true, value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
}

/// The topics `kiln --help` lists the commands under, in order.
const COMMAND_TOPICS: &[(&str, &[&str])] = &[
    ("Build", &["build", "check"]),
    (
        "Images and registries",
        &["pull", "push", "inspect", "images", "login", "logout"],
    ),
    ("The store and its cache", &["du", "prune"]),
    ("Shell", &["completion", "help"]),
];

impl Cli {
    /// The command line, with `kiln --help` listing the commands by topic
    /// (clap lists them in one block).
    pub fn command_by_topic() -> clap::Command {
        let cmd = <Cli as clap::CommandFactory>::command();
        let mut text = String::from("{about-with-newline}\n{usage-heading} {usage}\n");
        for (topic, names) in COMMAND_TOPICS {
            text.push_str(&format!("\n{topic}:\n"));
            for name in *names {
                // Its first sentence: one line each.
                let about = match cmd.find_subcommand(name).and_then(|c| c.get_about()) {
                    Some(a) => {
                        let a = a.to_string();
                        a.split_once(". ")
                            .map_or(a.clone(), |(first, _)| first.to_string())
                    }
                    None => "Print this message or the help of the given command".to_string(),
                };
                text.push_str(&format!("  {name:<12}{about}\n"));
            }
        }
        text.push_str("\nOptions:\n{options}{after-help}");
        cmd.help_template(text)
    }

    /// Parses the process's arguments (exits on errors and `--help`, as
    /// clap does).
    pub fn parse_by_topic() -> Cli {
        let matches = Cli::command_by_topic().get_matches();
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile and a context directory.
    Build(Box<BuildArgs>),
    /// Parse, plan and lint a Dockerfile without building it.
    Check(CheckArgs),
    /// Pull an image into kiln's store (for offline builds later).
    Pull(PullArgs),
    /// Push an OCI image archive (from `-o type=oci`) to a registry.
    Push(PushArgs),
    /// Log in to a registry: check the credentials, then store them as docker does.
    Login(LoginArgs),
    /// Remove the stored credentials of a registry.
    Logout(LogoutArgs),
    /// Remove build cache that nothing uses, or more (rootless: from inside
    /// the user namespace that owns it). Waits for running builds.
    Prune(PruneArgs),
    /// Show the disk use of kiln's store and build cache.
    Du(DuArgs),
    /// Print an image's config and layers: from a registry, the store, or an OCI or docker archive.
    Inspect(InspectArgs),
    /// List the images kiln's store holds (pulled, and built with -t).
    Images(DuArgs),
    /// Print a shell completion script: bash, zsh or fish.
    Completion(CompletionArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// NAME[:TAG][@DIGEST], or the path of an OCI or docker archive.
    #[arg(value_name = "REF|ARCHIVE")]
    pub target: String,
    /// The platform, for a multi-platform image (default: this host's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// The store (default: as for `kiln build`).
    #[arg(long = "cache-dir", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The store (default: as for `kiln build`).
    #[arg(long = "cache-dir", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Remove everything: the build cache, pulled images, cache mounts.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Remove the least recently used cache entries until the store is at most this big (e.g. 10GB).
    #[arg(long = "keep-storage", value_name = "SIZE")]
    pub keep_storage: Option<String>,
    /// until=DURATION: remove cache entries not used for that long (e.g. until=24h).
    #[arg(long, value_name = "FILTER")]
    pub filter: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DuArgs {
    /// The store (default: as for `kiln build`).
    #[arg(long = "cache-dir", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry, e.g. ghcr.io or localhost:5000 (default: Docker Hub).
    #[arg(value_name = "REGISTRY", default_value = "docker.io")]
    pub registry: String,
    #[arg(short = 'u', long, value_name = "USER")]
    pub username: String,
    /// Read the password from standard input (the only way: a password on
    /// the command line would land in the shell history).
    #[arg(long = "password-stdin", required = true)]
    pub password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry (default: Docker Hub).
    #[arg(value_name = "REGISTRY", default_value = "docker.io")]
    pub registry: String,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image: NAME[:TAG][@DIGEST].
    #[arg(value_name = "REF")]
    pub reference: String,
    /// The platform to pull, e.g. linux/arm64 (default: this host's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Where kiln keeps its store (default: $KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else ~/.cache/kiln).
    #[arg(long = "cache-dir", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// How to show progress (plain: bytes per layer).
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: Progress,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// An OCI image layout tarball, as `kiln build -o type=oci,dest=FILE` writes it.
    #[arg(value_name = "OCI-ARCHIVE")]
    pub archive: PathBuf,
    /// Where to push it: NAME[:TAG].
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Where kiln keeps its store (default: $KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else ~/.cache/kiln).
    #[arg(long = "cache-dir", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// How to show progress (plain: bytes per layer).
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: Progress,
}

/// `--progress` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    Auto,
    Tty,
    Plain,
    Quiet,
    Rawjson,
}

impl Progress {
    /// What `auto` (and `-q`) mean here: `tty` when stderr is a terminal
    /// (and `TERM` is not `dumb`), else `plain`; `quiet` with `-q`.
    pub fn resolve(self, quiet: bool) -> Progress {
        use std::io::IsTerminal as _;
        if quiet {
            return Progress::Quiet;
        }
        match self {
            Progress::Auto => {
                let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
                if std::io::stderr().is_terminal() && !dumb {
                    Progress::Tty
                } else {
                    Progress::Plain
                }
            }
            other => other,
        }
    }
}

/// `--network` modes for RUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Network {
    Default,
    None,
    Host,
}

/// `--dry-run` output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DryRun {
    Text,
    Json,
}

/// Options shared by `build` and `check` that choose what gets planned.
#[derive(Debug, Args, Clone)]
pub struct PlanArgs {
    /// Name of the Dockerfile (default: CONTEXT/Dockerfile); `-` reads stdin.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        help_heading = "Input"
    )]
    pub file: Option<String>,
    /// Set a build-time variable: KEY=VALUE, or KEY to take it from the environment.
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]", help_heading = "Input")]
    pub build_args: Vec<String>,
    /// Build only up to this stage.
    #[arg(long, value_name = "STAGE", help_heading = "Input")]
    pub target: Option<String>,
    /// Target platform(s), e.g. linux/amd64 or linux/amd64,linux/arm64 (an
    /// image per platform, and an index of them).
    #[arg(long, value_name = "PLATFORM[,PLATFORM]", help_heading = "Input")]
    pub platform: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Name and optionally tag the image (registry/repo:tag); repeatable.
    #[arg(short = 't', long = "tag", value_name = "REF", help_heading = "Output")]
    pub tags: Vec<String>,
    /// Set an image label (KEY=VALUE); repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE", help_heading = "Output")]
    pub labels: Vec<String>,
    /// Output destination: type=oci|docker|local|tar|image|registry,dest=PATH,...
    #[arg(
        short = 'o',
        long = "output",
        value_name = "SPEC",
        help_heading = "Output"
    )]
    pub outputs: Vec<String>,
    /// Push the image to its registry (shorthand for --output=type=registry).
    #[arg(long, help_heading = "Output")]
    pub push: bool,
    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub iidfile: Option<PathBuf>,
    /// Write build result metadata (JSON) to this file.
    #[arg(long = "metadata-file", value_name = "FILE", help_heading = "Output")]
    pub metadata_file: Option<PathBuf>,
    /// Do not use the build cache.
    #[arg(long = "no-cache", help_heading = "Cache")]
    pub no_cache: bool,
    /// Do not use the build cache for these stages (by name); repeatable or comma-separated.
    #[arg(
        long = "no-cache-filter",
        value_name = "STAGE",
        value_delimiter = ',',
        help_heading = "Cache"
    )]
    pub no_cache_filter: Vec<String>,
    /// Always re-resolve base images from their registries.
    #[arg(long, help_heading = "Cache")]
    pub pull: bool,
    /// Say why each step that runs missed the cache (always on with --progress=plain).
    #[arg(long, help_heading = "Cache")]
    pub explain: bool,
    /// How many stages may build at once (default: the number of CPUs).
    #[arg(long = "max-parallelism", value_name = "N", help_heading = "Execution")]
    pub max_parallelism: Option<usize>,
    /// Where kiln keeps its store and build cache (default: $KILN_CACHE_DIR, else /var/lib/kiln for root, else $XDG_CACHE_HOME/kiln or ~/.cache/kiln).
    #[arg(long = "cache-dir", value_name = "DIR", help_heading = "Cache")]
    pub cache_dir: Option<PathBuf>,
    /// Secret for RUN --mount=type=secret: id=ID,src=PATH or id=ID,env=VAR.
    #[arg(long = "secret", value_name = "SPEC", help_heading = "Execution")]
    pub secrets: Vec<String>,
    /// SSH agent socket or keys for RUN --mount=type=ssh: default or ID=PATH[,PATH].
    #[arg(long = "ssh", value_name = "SPEC", help_heading = "Execution")]
    pub ssh: Vec<String>,
    /// Networking for RUN steps.
    #[arg(long, value_enum, value_name = "MODE", help_heading = "Execution")]
    pub network: Option<Network>,
    /// Add a host to RUN's /etc/hosts: NAME:IP; repeatable.
    #[arg(
        long = "add-host",
        value_name = "NAME:IP",
        value_delimiter = ',',
        help_heading = "Execution"
    )]
    pub add_hosts: Vec<String>,
    /// Size of RUN's /dev/shm (e.g. 128m; default 64m).
    #[arg(long = "shm-size", value_name = "SIZE", help_heading = "Execution")]
    pub shm_size: Option<String>,
    /// A resource limit for RUN: NAME=SOFT[:HARD] (e.g. nofile=1024:4096); repeatable.
    #[arg(
        long = "ulimit",
        value_name = "NAME=SOFT[:HARD]",
        help_heading = "Execution"
    )]
    pub ulimits: Vec<String>,
    /// Allow an extra privilege (kiln grants network.host; security.insecure is refused).
    #[arg(
        long = "allow",
        value_name = "ENTITLEMENT",
        value_delimiter = ',',
        help_heading = "Execution"
    )]
    pub allow: Vec<String>,
    /// Accepted for docker compatibility and ignored: kiln has no builder instances.
    #[arg(long = "builder", value_name = "NAME", help_heading = "Compatibility")]
    pub builder: Option<String>,
    /// Accepted for docker compatibility: kiln writes no provenance attestation (a warning says so unless false).
    #[arg(long = "provenance", value_name = "VALUE", num_args = 0..=1, require_equals = true, default_missing_value = "true", help_heading = "Compatibility")]
    pub provenance: Option<String>,
    /// Accepted for docker compatibility: kiln writes no SBOM attestation (a warning says so unless false).
    #[arg(long = "sbom", value_name = "VALUE", num_args = 0..=1, require_equals = true, default_missing_value = "true", help_heading = "Compatibility")]
    pub sbom: Option<String>,
    /// Accepted for docker compatibility: kiln writes no attestations (a warning says so).
    #[arg(long = "attest", value_name = "SPEC", help_heading = "Compatibility")]
    pub attest: Vec<String>,
    /// Add an OCI annotation to the image manifest: KEY=VALUE, or manifest:KEY=VALUE / index:KEY=VALUE; repeatable.
    #[arg(long = "annotation", value_name = "KEY=VALUE", help_heading = "Output")]
    pub annotations: Vec<String>,
    /// Load the image into the running Docker daemon (`docker load`); shorthand for a docker output.
    #[arg(long, help_heading = "Output")]
    pub load: bool,
    /// Import build cache: type=local,src=DIR (a directory --cache-to wrote).
    #[arg(long = "cache-from", value_name = "SPEC", help_heading = "Cache")]
    pub cache_from: Vec<String>,
    /// Export the build cache this build used: type=local,dest=DIR.
    #[arg(long = "cache-to", value_name = "SPEC", help_heading = "Cache")]
    pub cache_to: Vec<String>,
    /// How to show progress.
    #[arg(long, value_enum, default_value = "auto", help_heading = "Display")]
    pub progress: Progress,
    /// Print only the image ID (the config digest), on stdout.
    #[arg(short = 'q', long, help_heading = "Display")]
    pub quiet: bool,
    /// Print the build plan without building (text, or json).
    #[arg(long = "dry-run", value_enum, num_args = 0..=1, require_equals = true, default_missing_value = "text", value_name = "FORMAT", help_heading = "Display")]
    pub dry_run: Option<DryRun>,
    /// The build context directory.
    #[arg(value_name = "CONTEXT")]
    pub context: PathBuf,
    /// Extra named contexts: NAME=DIR, NAME=oci-layout://PATH[:TAG] or NAME=docker-image://REF.
    #[arg(
        long = "build-context",
        value_name = "NAME=VALUE",
        help_heading = "Input"
    )]
    pub build_contexts: Vec<String>,
    /// Layer compression: gzip (the default), zstd or uncompressed.
    #[arg(long, value_name = "ALGORITHM", help_heading = "Output")]
    pub compression: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Print diagnostics as JSON.
    #[arg(long, value_enum, default_value = "text")]
    pub format: DryRun,
    /// The build context directory.
    #[arg(value_name = "CONTEXT", default_value = ".")]
    pub context: PathBuf,
}

/// Where the Dockerfile comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerfileSource {
    Stdin,
    Path(PathBuf),
}

/// Validated planning settings.
#[derive(Debug, Clone)]
pub struct PlanSettings {
    pub dockerfile: DockerfileSource,
    /// The name shown in diagnostics.
    pub display_name: String,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// The first of `platforms`.
    pub platform: Platform,
    /// Every platform asked for, in order, each once (this host's when
    /// none was): a multi-platform build makes one image per platform
    /// and an index of them.
    pub platforms: Vec<Platform>,
}

impl PlanSettings {
    /// The planner's options for these settings, on this host.
    pub fn plan_options(&self) -> crate::plan::PlanOptions {
        self.plan_options_for(&self.platform)
    }

    /// The planner's options for one of the platforms.
    pub fn plan_options_for(&self, platform: &Platform) -> crate::plan::PlanOptions {
        crate::plan::PlanOptions {
            build_args: self.build_args.clone(),
            target: self.target.clone(),
            platform: platform.clone(),
            build_platform: Platform::host(),
            ..crate::plan::PlanOptions::default()
        }
    }
}

/// A usage error: bad flag values. Exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

impl PlanArgs {
    /// Validates and resolves. `env` looks up `--build-arg KEY` values.
    pub fn resolve(
        &self,
        context: &std::path::Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<PlanSettings, UsageError> {
        let (dockerfile, display_name) = match self.file.as_deref() {
            Some("-") => (DockerfileSource::Stdin, "Dockerfile".to_string()),
            Some(f) => (DockerfileSource::Path(PathBuf::from(f)), f.to_string()),
            None => {
                // As the docker CLI: `Dockerfile`, else `dockerfile`.
                let mut name = "Dockerfile";
                if !context.join(name).exists() && context.join("dockerfile").exists() {
                    name = "dockerfile";
                }
                let p = context.join(name);
                let shown = if context == std::path::Path::new(".") {
                    name.to_string()
                } else {
                    p.display().to_string()
                };
                (DockerfileSource::Path(p), shown)
            }
        };
        let mut build_args = BTreeMap::new();
        for a in &self.build_args {
            match a.split_once('=') {
                Some((k, v)) => {
                    validate_arg_name(k)?;
                    build_args.insert(k.to_string(), v.to_string());
                }
                None => {
                    validate_arg_name(a)?;
                    if let Some(v) = env(a) {
                        build_args.insert(a.clone(), v);
                    }
                }
            }
        }
        // `--platform a,b` and `--platform a --platform b` alike; the same
        // platform twice is one image.
        let mut platforms: Vec<Platform> = Vec::new();
        for p in self
            .platform
            .iter()
            .flat_map(|p| p.split(','))
            .map(str::trim)
        {
            if p.is_empty() {
                continue;
            }
            let p = Platform::parse(p).map_err(usage)?;
            if !platforms.contains(&p) {
                platforms.push(p);
            }
        }
        if platforms.is_empty() {
            if !self.platform.is_empty() {
                return Err(usage("--platform needs a value such as linux/amd64"));
            }
            platforms.push(Platform::host());
        }
        let platform = platforms[0].clone();
        if let Some(t) = &self.target {
            if t.is_empty() {
                return Err(usage("--target needs a stage name"));
            }
        }
        Ok(PlanSettings {
            dockerfile,
            display_name,
            build_args,
            target: self.target.clone(),
            platform,
            platforms,
        })
    }
}

fn validate_arg_name(k: &str) -> Result<(), UsageError> {
    if k.is_empty() {
        return Err(usage("--build-arg needs a name: --build-arg KEY=VALUE"));
    }
    if k.chars().any(char::is_whitespace) {
        return Err(usage(format!("--build-arg name {k:?} contains whitespace")));
    }
    Ok(())
}

/// Checks an image reference's shape (`[host[:port]/]path[:tag][@digest]`).
pub fn validate_reference(r: &str) -> Result<(), UsageError> {
    crate::image::reference::validate(r)
        .map_err(|why| usage(format!("invalid reference {r:?}: {why}")))
}

/// Checks a `--output` value.
pub fn validate_output(spec: &str) -> Result<(), UsageError> {
    if !spec.contains('=') {
        return if spec.is_empty() {
            Err(usage("--output needs a value"))
        } else {
            Ok(())
        };
    }
    let mut kind = None;
    for field in spec.split(',') {
        let Some((k, v)) = field.split_once('=') else {
            return Err(usage(format!(
                "--output {spec:?}: field {field:?} is not key=value"
            )));
        };
        if k == "type" {
            kind = Some(v.to_string());
        }
    }
    match kind.as_deref() {
        Some("local" | "tar" | "oci" | "docker" | "image" | "registry") => Ok(()),
        Some(other) => Err(usage(format!(
            "--output type {other:?} is not one of local, tar, oci, docker, image, registry"
        ))),
        None => Err(usage(format!("--output {spec:?} needs type=..."))),
    }
}

/// Checks a `--secret` value.
pub fn validate_secret(spec: &str) -> Result<(), UsageError> {
    crate::build::mounts::parse_secret(spec)
        .map(|_| ())
        .map_err(usage)
}

/// Checks a `--ssh` value.
pub fn validate_ssh(spec: &str) -> Result<(), UsageError> {
    crate::build::mounts::parse_ssh(spec)
        .map(|_| ())
        .map_err(usage)
}

impl BuildArgs {
    /// Validates every flag.
    pub fn validate(&self) -> Result<(), UsageError> {
        for t in &self.tags {
            validate_reference(t)?;
            if t.contains('@') {
                return Err(usage(format!(
                    "-t {t:?}: a tag names an image by name and tag; it cannot carry a digest"
                )));
            }
        }
        for l in &self.labels {
            if l.split_once('=').map_or(l.as_str(), |(k, _)| k).is_empty() {
                return Err(usage(format!("--label {l:?}: the key is empty")));
            }
        }
        for o in &self.outputs {
            validate_output(o)?;
        }
        for s in &self.secrets {
            validate_secret(s)?;
        }
        for s in &self.ssh {
            validate_ssh(s)?;
        }
        for c in &self.build_contexts {
            let (name, value) = c
                .split_once('=')
                .ok_or_else(|| usage(format!("--build-context {c:?}: expected NAME=VALUE")))?;
            if name.is_empty() {
                return Err(usage(format!("--build-context {c:?}: the name is empty")));
            }
            crate::build::NamedContext::parse(value)
                .map_err(|e| usage(format!("--build-context {e}")))?;
        }
        if let Some(c) = &self.compression {
            crate::layer::compress::Compression::parse(c)
                .map_err(|e| usage(format!("--compression {c:?}: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// Every command is under a topic in `kiln --help`, once.
    #[test]
    fn help_lists_every_command_by_topic() {
        let cmd = <super::Cli as clap::CommandFactory>::command();
        let listed: Vec<&str> = super::COMMAND_TOPICS
            .iter()
            .flat_map(|(_, names)| names.iter().copied())
            .collect();
        for sub in cmd.get_subcommands() {
            let n = sub.get_name();
            assert_eq!(listed.iter().filter(|l| **l == n).count(), 1, "{n}");
        }
        assert_eq!(
            listed.len(),
            cmd.get_subcommands().count() + 1,
            "{listed:?}"
        );
        let help = super::Cli::command_by_topic().render_help().to_string();
        for (topic, _) in super::COMMAND_TOPICS {
            assert!(help.contains(&format!("\n{topic}:\n")), "{help}");
        }
        assert!(
            help.contains("  build       Build an image from a Dockerfile"),
            "{help}"
        );
        assert!(help.contains("--insecure-registry"), "{help}");
    }

    use super::*;

    #[test]
    fn references() {
        for ok in ["app", "app:1.4", "registry.example.com/app:1.4", "localhost:5000/a/b", "127.0.0.1:5000/x@sha256:0000000000000000000000000000000000000000000000000000000000000000"] {
            assert!(validate_reference(ok).is_ok(), "{ok}");
        }
        for bad in ["App", "app:", "app:-x", "/app", "a//b", "x@sha256:12"] {
            assert!(validate_reference(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn outputs_and_secrets() {
        assert!(validate_output("type=oci,dest=out.tar").is_ok());
        assert!(validate_output("./out").is_ok());
        assert!(validate_output("type=zip").is_err());
        assert!(validate_secret("id=npm,src=/x").is_ok());
        assert!(validate_secret("id=tok,env=TOKEN").is_ok());
        assert!(validate_secret("id=x,foo=y").is_err());
        assert!(validate_ssh("default=/run/agent.sock").is_ok());
        assert!(validate_ssh("=x").is_err());
        assert!(validate_ssh("a=/x,/y").is_ok());
        assert!(validate_ssh("a=/x,").is_err());
    }
}
