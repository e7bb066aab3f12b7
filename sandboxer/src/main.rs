//! `pallium-sandboxer`: started by the supervisor with the channel on fd 3;
//! see the library for what it does.

#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    proto::log::init();
    match pallium_sandboxer::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            let mut cur = std::error::Error::source(&e);
            while let Some(s) = cur {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                cur = s.source();
            }
            tracing::error!("sandboxer: {msg}");
            ExitCode::FAILURE
        }
    }
}
