//! One packet the application writes to its TUN, through the engine's
//! per-packet path (classification, TCP into smoltcp, UDP to the virtual DNS).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    netbroker::tun2socks::fuzzing::tun_packet(data);
});
