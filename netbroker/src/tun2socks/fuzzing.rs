//! Entry points for the fuzz targets in `fuzz/` (doc/FUZZING.md): the
//! engine's per-packet code path for one packet from the TUN, without a TUN
//! device, epoll or proxy. Each asserts the invariants the engine relies on,
//! so a fuzzer finds the inputs that break them as crashes.

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use smoltcp::iface::{Config as IfaceConfig, Interface, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpListenEndpoint};

use super::dns::{self, FakePool};
use super::udp::{self, Kind};
use super::{DNS_V4, DNS_V6, FAKE_POOL};

/// The engine's stack's own addresses (as in `stack.rs`).
const ROUTER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
const ROUTER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x7061, 0x6c6c, 0, 0, 0, 0, 3);

/// One packet the application wrote to the TUN, as the engine's read loop
/// handles it: classified; a TCP segment (after a SYN has set up its
/// listening socket, as `on_syn` does) fed to a smoltcp interface configured
/// like the engine's; a UDP datagram to the virtual DNS answered from the
/// fake pool and the answer written back as an IP packet.
pub fn tun_packet(p: &[u8]) {
    let Some((src, dst, kind)) = udp::classify(p) else {
        return;
    };
    assert_eq!(src.is_ipv4(), dst.is_ipv4(), "one packet, one family");
    match kind {
        Kind::Tcp { syn } => tcp_segment(p, dst, syn),
        Kind::Udp {
            payload: (off, len),
        } => {
            let end = off.checked_add(len).expect("payload range overflows");
            assert!(end <= p.len(), "payload {off}+{len} beyond {}", p.len());
            udp_datagram(src, dst, &p[off..end]);
        }
        Kind::Other => {}
    }
}

/// An IP+UDP packet as the engine writes one (for seed corpora and tests).
pub fn udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 40 + 8 + payload.len()];
    let n = udp::emit(&mut buf, src, dst, payload);
    buf.truncate(n);
    buf
}

fn udp_datagram(src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
    let is_dns = dst.port() == 53 && (dst.ip() == IpAddr::V4(DNS_V4) || dst.ip() == DNS_V6);
    if !is_dns {
        return;
    }
    let Some(reply) = dns_query(payload) else {
        return;
    };
    // The answer goes back to the application as an IP packet, which must
    // read back as the same datagram.
    let mut buf = vec![0u8; 65536 + 64];
    let n = udp::emit(&mut buf, dst, src, &reply);
    if n == 0 {
        return;
    }
    let (s, d, k) = udp::classify(&buf[..n]).expect("an emitted packet classifies");
    assert_eq!((s, d), (dst, src));
    let Kind::Udp { payload: (o, l) } = k else {
        panic!("an emitted UDP packet classified as {k:?}");
    };
    assert_eq!(&buf[o..o + l], &reply[..]);
}

/// A DNS message the application sends the virtual resolver: its question
/// parsed within bounds, and the pool's answer (returned) checked against it.
pub fn dns_query(query: &[u8]) -> Option<Vec<u8>> {
    if let Some(q) = dns::parse_question(query) {
        assert!(
            q.end <= query.len(),
            "question ends at {} of {}",
            q.end,
            query.len()
        );
        assert!(q.name.len() <= 253, "a name of {} bytes", q.name.len());
        assert!(q
            .name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"-_.".contains(&c)));
    }
    let mut pool = FakePool::new(FAKE_POOL.0, FAKE_POOL.1);
    let reply = pool.answer(query)?;
    answer_matches_pool(&pool, query, &reply);
    Some(reply)
}

/// A virtual answer carries the query's question and, for an A query, the
/// pool address that now maps back to the asked name.
fn answer_matches_pool(pool: &FakePool, query: &[u8], reply: &[u8]) {
    let q = dns::parse_question(query).expect("an answered query parses");
    assert_eq!(&reply[..2], &query[..2], "the answer keeps the query's id");
    assert_eq!(
        &reply[12..q.end],
        &query[12..q.end],
        "the question is echoed"
    );
    for ip in dns::answer_addrs(reply) {
        let IpAddr::V4(v4) = ip else {
            panic!("the pool answered {ip}");
        };
        assert!(pool.contains(v4), "{v4} is outside the pool");
        assert_eq!(pool.name_of(v4), Some(q.name.as_str()));
    }
}

fn tcp_segment(p: &[u8], dst: SocketAddr, syn: bool) {
    let mut dev = OnePacket {
        rx: p.to_vec(),
        taken: false,
        tx: vec![0; 65536],
    };
    let now = Instant::from_millis(0);
    let mut iface = Interface::new(IfaceConfig::new(HardwareAddress::Ip), &mut dev, now);
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(IpAddress::Ipv4(ROUTER_V4), 32));
        let _ = a.push(IpCidr::new(IpAddress::Ipv6(ROUTER_V6), 128));
    });
    let _ = iface.routes_mut().add_default_ipv4_route(ROUTER_V4);
    let _ = iface.routes_mut().add_default_ipv6_route(ROUTER_V6);
    iface.set_any_ip(true);
    let mut sockets = SocketSet::new(vec![]);
    if syn {
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 4096]),
            tcp::SocketBuffer::new(vec![0; 4096]),
        );
        let ep = IpListenEndpoint {
            addr: Some(IpAddress::from(dst.ip())),
            port: dst.port(),
        };
        if sock.listen(ep).is_ok() {
            sockets.add(sock);
        }
    }
    let _ = iface.poll_ingress_single(now, &mut dev, &mut sockets);
    let _ = iface.poll_egress(now, &mut dev, &mut sockets);
}

/// A smoltcp device that receives one packet and discards what it sends.
struct OnePacket {
    rx: Vec<u8>,
    taken: bool,
    tx: Vec<u8>,
}

struct Rx<'a>(&'a [u8]);
struct Tx<'a>(&'a mut [u8]);

impl smoltcp::phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl smoltcp::phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        f(&mut self.0[..len])
    }
}

impl Device for OnePacket {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        if std::mem::replace(&mut self.taken, true) {
            return None;
        }
        Some((Rx(&self.rx), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        // The engine's own device: received checksums are not checked (the
        // kernel verified them), so the fuzzer reaches past them.
        super::stack::device_capabilities(self.tx.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dns_query_to_the_virtual_resolver_is_answered_and_checked() {
        let q = dns::build_query(7, "example.com", dns::TYPE_A);
        let mut buf = vec![0u8; 2000];
        let app: SocketAddr = "198.18.0.1:4000".parse().unwrap();
        let n = udp::emit(&mut buf, app, SocketAddr::new(DNS_V4.into(), 53), &q);
        tun_packet(&buf[..n]);
    }

    #[test]
    fn a_syn_from_the_unspecified_address_does_not_reach_smoltcp() {
        // The first crash the fuzzer found: smoltcp asserted while answering.
        tun_packet(include_bytes!(
            "../../../fuzz/seeds/tun_packet/regression-unspecified-src"
        ));
    }

    #[test]
    fn garbage_and_truncated_headers_pass_quietly() {
        for p in [&[][..], &[0x45][..], &[0x60; 39][..], &[0x4f; 20][..]] {
            tun_packet(p);
        }
    }
}
