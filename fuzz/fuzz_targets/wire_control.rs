//! The control socket, both directions (a client's requests, the
//! supervisor's answers), and the hello every channel starts with.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::control::{ControlEvent, ControlRequest};
use proto::wire::Hello;

fuzz_target!(|data: &[u8]| {
    pallium_fuzz::frame::<ControlRequest>(data);
    pallium_fuzz::frame::<ControlEvent>(data);
    pallium_fuzz::frame::<Hello>(data);
});
