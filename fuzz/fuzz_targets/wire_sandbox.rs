//! The sandboxer's channel, both directions: what a compromised supervisor
//! sends the sandboxer, and what a compromised sandboxer answers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::sandbox::{SandboxEvent, SandboxRequest};

fuzz_target!(|data: &[u8]| {
    pallium_fuzz::frame::<SandboxRequest>(data);
    pallium_fuzz::frame::<SandboxEvent>(data);
});
