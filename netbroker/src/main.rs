//! `pallium-netbroker`: started by the supervisor with its channel on fd 3.
//! Logs to stderr at the level in `PALLIUM_LOG` (default `warn`). With the
//! hidden first argument `--packet-engine` it is a packet engine instead,
//! started by the netbroker itself ([`pallium_netbroker::engine`]); with
//! `--script-init` it is a script hop's holder ([`pallium_netbroker::hops`]).

use std::process::ExitCode;

fn main() -> ExitCode {
    proto::log::init();
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(pallium_netbroker::engine::ENGINE_ARG))
    {
        return report(pallium_netbroker::engine::child::run());
    }
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(
            pallium_netbroker::hops::SCRIPT_INIT_ARG,
        ))
    {
        return ExitCode::from(pallium_netbroker::hops::script_init_main().clamp(0, 255) as u8);
    }
    report(pallium_netbroker::run())
}

/// The exit code of `result`, its error logged as one line.
fn report<E: std::error::Error>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = e.source();
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            tracing::error!("{msg}");
            ExitCode::FAILURE
        }
    }
}
