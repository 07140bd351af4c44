//! The `kiln` binary: parse the command line and dispatch.

use clap::Parser;
use kiln::cli::{Cli, Command};
use kiln::cmd;

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Build(args) => cmd::build::run(args),
        Command::Check(args) => cmd::check::run(args),
        Command::Pull(args) => cmd::registry::pull(args),
        Command::Push(args) => cmd::registry::push(args),
        Command::Login(args) => cmd::registry::login(args),
        Command::Logout(args) => cmd::registry::logout(args),
    };
    let code = match result {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {}", f.message);
            f.code
        }
    };
    std::process::exit(code);
}
