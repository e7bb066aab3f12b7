//! The netbroker's channel, both directions: what a compromised supervisor
//! sends the netbroker, and what a compromised netbroker answers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::broker::{BrokerEvent, BrokerRequest};

fuzz_target!(|data: &[u8]| {
    pallium_fuzz::frame::<BrokerRequest>(data);
    pallium_fuzz::frame::<BrokerEvent>(data);
});
