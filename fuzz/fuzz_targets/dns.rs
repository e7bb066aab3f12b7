//! DNS parsers: a query the application sends the engine's virtual resolver,
//! an answer a hostile proxy or resolver sends back, and the host's
//! resolv.conf the netbroker reads for the empty chain.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use netbroker::dns::{plan, DnsPlan};
use netbroker::tun2socks::{dns, fuzzing};

fuzz_target!(|data: &[u8]| {
    let _ = fuzzing::dns_query(data);
    let _ = dns::servfail(data);
    let _ = dns::refused(data);
    // Each answer record is at least 11 bytes.
    let addrs = dns::answer_addrs(data);
    assert!(addrs.len() <= data.len() / 11);
    if let Ok(text) = std::str::from_utf8(data) {
        match plan(Some(text)) {
            DnsPlan::Relay { upstream, .. } => assert!(upstream.is_loopback()),
            DnsPlan::Copy(lines) => {
                // (search/options lines are copied as they are, whatever they hold.)
                for server in lines.lines().filter_map(|l| l.strip_prefix("nameserver ")) {
                    let ip: IpAddr = server.split('%').next().unwrap_or("").parse().unwrap();
                    assert!(!ip.is_loopback(), "{lines:?} copies a loopback resolver");
                }
            }
            DnsPlan::None => {}
        }
    }
});
