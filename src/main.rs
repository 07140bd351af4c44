//! The `kiln` binary: parse the command line and dispatch.

use clap::Parser;
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
    let cli = Cli::parse();
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
    let progress = match &cli.command {
        Command::Build(a) => Some(a.progress),
        Command::Pull(a) => Some(a.progress),
        Command::Push(a) => Some(a.progress),
        _ => None,
    };
    match &cli.command {
        // A build shows its steps; transfers only with --progress=plain.
        Command::Build(a) if a.quiet || a.progress == kiln::cli::Progress::Quiet => {
            kiln::progress::set(Box::new(kiln::progress::Quiet { explain: a.explain }));
        }
        Command::Build(a) => kiln::progress::set(Box::new(kiln::progress::Plain::new(
            a.progress != kiln::cli::Progress::Plain,
        ))),
        _ if progress == Some(kiln::cli::Progress::Plain) => {
            kiln::progress::set(Box::new(kiln::progress::Plain::default()));
        }
        _ => {}
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
