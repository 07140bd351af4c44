//! The `kiln` binary: parse the command line and dispatch.

use kiln::cli::{Cli, Command};
use kiln::cmd;

fn main() {
    // The sandbox helper of a RUN step: single-threaded, before anything.
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() == Some(std::ffi::OsStr::new(kiln::exec::HELPER_ARG)) {
        let spec = args.next().unwrap_or_default();
        kiln::exec::sandbox::main(&spec.to_string_lossy());
    }
    // Before any thread exists: an unprivileged build re-runs itself as
    // root of a user namespace; then, as root, a mount namespace of kiln's
    // own.
    kiln::userns::maybe_enter();
    kiln::snapshot::overlay::init();
    let cli = Cli::parse_by_topic();
    match kiln::registry::configured_insecure() {
        Ok(mut insecure) => {
            insecure.extend(cli.insecure_registries.iter().cloned());
            kiln::registry::set_insecure(insecure);
        }
        Err(e) => {
            eprintln!("error: {}", kiln::error_chain(&e));
            std::process::exit(cmd::exit::USAGE);
        }
    }
    {
        use kiln::cli::Progress as P;
        use kiln::progress::{json::RawJson, plain::Plain, tty::Tty, Quiet};
        let sink: Option<Box<dyn kiln::progress::Sink>> = match &cli.command {
            Command::Build(a) => Some(match a.progress.resolve(a.quiet) {
                P::Quiet => Box::new(Quiet { explain: a.explain }),
                P::Tty => Box::new(Tty::new(a.explain)),
                P::Rawjson => Box::new(RawJson),
                P::Plain | P::Auto => Box::new(Plain::new()),
            }),
            // Pulls and pushes print transfers only when asked to, or on a
            // terminal.
            Command::Pull(kiln::cli::PullArgs { progress, .. })
            | Command::Push(kiln::cli::PushArgs { progress, .. }) => {
                match progress.resolve(false) {
                    P::Plain if *progress == P::Plain => Some(Box::new(Plain::new())),
                    P::Tty => Some(Box::new(Tty::new(false))),
                    P::Rawjson => Some(Box::new(RawJson)),
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(s) = sink {
            kiln::progress::set(s);
        }
    }
    let result = match &cli.command {
        Command::Build(args) => cmd::build::run(args),
        Command::Check(args) => cmd::check::run(args),
        Command::Pull(args) => cmd::registry::pull(args),
        Command::Push(args) => cmd::registry::push(args),
        Command::Login(args) => cmd::registry::login(args),
        Command::Logout(args) => cmd::registry::logout(args),
        Command::Prune(args) => cmd::registry::prune(args),
        Command::Du(args) => cmd::registry::du(args),
        Command::Inspect(args) => cmd::inspect::inspect(args),
        Command::Images(args) => cmd::inspect::images(args),
        Command::Completion(args) => {
            use clap::CommandFactory as _;
            let mut script = Vec::new();
            clap_complete::generate(
                args.shell,
                &mut kiln::cli::Cli::command(),
                "kiln",
                &mut script,
            );
            use std::io::Write as _;
            if let Err(e) = std::io::stdout().lock().write_all(&script) {
                kiln::cmd::stdout_failed(e);
            }
            Ok(0)
        }
    };
    let code = match result {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {}", f.message);
            f.code
        }
    };
    kiln::cleanup::wait_if_interrupted();
    std::process::exit(code);
}
