//! `pallium`: the CLI and the unprivileged supervisor of a session.
//!
//! Thin entry point: parse the command line, set up logging, run the
//! subcommand, turn its error into one clear line and an exit code.

#![deny(unsafe_code)]

mod audio;
mod cli;
mod cmd;
mod desktop;
mod error;
mod exec;
mod gui;
mod hooks;
mod identity;
mod notify;
mod peer;
mod profile_source;
mod progress;
mod runtime;
mod schema;
mod session;
mod spawn;
mod supervise;
mod sweep;
mod sys;
mod terminal;
mod transfer;
mod xauth;

use clap::Parser;

fn main() {
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(hooks::HOOK_RUNNER_ARG)) {
        std::process::exit(hooks::runner_main());
    }
    let args = cli::Cli::parse();
    // -v / --loglevel win over the environment; the helpers log at the
    // same level (they read the variable too).
    let filter = proto::log::directive(args.loglevel.as_deref(), args.verbose)
        .or_else(|| std::env::var(proto::log::ENV).ok())
        .unwrap_or_else(|| "warn".into());
    std::env::set_var(proto::log::ENV, &filter);
    proto::log::init();
    let code = match cmd::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pallium: {}", error::one_line(&e));
            1
        }
    };
    std::process::exit(code);
}
