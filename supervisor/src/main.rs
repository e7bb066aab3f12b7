//! `pallium`: the CLI and the unprivileged supervisor of a session.
//!
//! Thin entry point: parse the command line, set up logging, run the
//! subcommand, turn its error into one clear line and an exit code.

#![deny(unsafe_code)]

mod cli;
mod cmd;
mod error;
mod exec;
mod identity;
mod peer;
mod profile_source;
mod runtime;
mod session;
mod spawn;
mod supervise;
mod sweep;
mod sys;
mod terminal;
mod transfer;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    let level = args.loglevel.as_deref().map(str::to_ascii_lowercase);
    let filter = std::env::var("PALLIUM_LOG")
        .ok()
        .or(level)
        .unwrap_or_else(|| "warn".into());
    // The helpers log at the same level.
    std::env::set_var("PALLIUM_LOG", &filter);
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let code = match cmd::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pallium: {}", error::one_line(&e));
            1
        }
    };
    std::process::exit(code);
}
