//! ICMP echo the engine cannot carry — every echo request on a proxy hop
//! (SOCKS, HTTP CONNECT, Tor and SSH carry TCP, at most UDP), and in direct
//! mode one the host refuses (no ping socket for the caller, a destination
//! that is the host itself, the flow cap) — is answered at once with
//! "destination unreachable, administratively prohibited" (ICMP type 3 code
//! 13, ICMPv6 type 1 code 1), quoting the request, so `ping` says "Packet
//! filtered" instead of waiting, and nothing leaves the chain.
//!
//! Why not an echo reply of our own, as hev-socks5-tunnel can: it would tell
//! the user that a host answers which nobody asked, with a round trip time of
//! the engine's; ping is mostly asked "is it reachable", and through a
//! proxy the honest answer is "ICMP does not go this way".

#![forbid(unsafe_code)]

use std::net::IpAddr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr};

use super::direct::{echo_request, ones};

/// The most of the request an ICMPv4 error quotes (RFC 1812: the error
/// fits 576 bytes); ICMPv6 errors fit the minimum MTU, 1280 (RFC 4443).
const V4_ERROR_MAX: usize = 576;
const V6_ERROR_MAX: usize = 1280;

/// Write into `buf` the "administratively prohibited" answer to `request`
/// if it is an ICMP or ICMPv6 echo request; its length, 0 for anything
/// else (other packets are dropped unanswered). Its source is the echo's
/// destination, the address the application asked about.
pub(super) fn prohibited(buf: &mut [u8], request: &[u8]) -> usize {
    let Some((src, dst, _, _)) = echo_request(request) else {
        return 0;
    };
    let caps = ChecksumCapabilities::default();
    let (off, total) = match (dst, src) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let quoted = request.len().min(V4_ERROR_MAX - 28);
            let total = 28 + quoted;
            if total > buf.len() {
                return 0;
            }
            let ip = Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Icmp,
                payload_len: 8 + quoted,
                hop_limit: 64,
            };
            ip.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..total]), &caps);
            buf[20..24].copy_from_slice(&[3, 13, 0, 0]);
            (20, total)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let quoted = request.len().min(V6_ERROR_MAX - 48);
            let total = 48 + quoted;
            if total > buf.len() {
                return 0;
            }
            let ip = Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Icmpv6,
                payload_len: 8 + quoted,
                hop_limit: 64,
            };
            ip.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..total]));
            buf[40..44].copy_from_slice(&[1, 1, 0, 0]);
            (40, total)
        }
        _ => return 0,
    };
    // Four unused bytes, then as much of the request as fits.
    buf[off + 4..off + 8].fill(0);
    buf[off + 8..total].copy_from_slice(&request[..total - off - 8]);
    let mut sum = ones(&buf[off..total]);
    if let (IpAddr::V6(s), IpAddr::V6(d)) = (dst, src) {
        sum += ones(&s.octets()) + ones(&d.octets()) + (total - off) as u32 + 58;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    buf[off + 2..off + 4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo request from `src` to `dst` with a payload of `len` bytes.
    fn request(src: IpAddr, dst: IpAddr, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; 40 + 8 + len];
        let kind = if src.is_ipv4() { 0 } else { 129 };
        let msg: Vec<u8> = [kind, 0, 0, 0, 0x12, 0x34, 0, 7]
            .into_iter()
            .chain((0..len).map(|i| i as u8))
            .collect();
        // emit_echo_reply writes a valid packet; make it a request.
        let n = super::super::direct::emit_echo_reply(&mut buf, src, dst, 0x1234, &msg);
        buf.truncate(n);
        let off = if src.is_ipv4() { 20 } else { 40 };
        buf[off] = if src.is_ipv4() { 8 } else { 128 };
        buf
    }

    #[test]
    fn an_echo_request_is_answered_with_admin_prohibited_quoting_it() {
        for (app, dst, err_off, kind) in [
            ("10.0.0.2", "203.0.113.10", 20, [3u8, 13]),
            ("fd00::2", "fd00:db8:1::10", 40, [1, 1]),
        ] {
            let (app, dst): (IpAddr, IpAddr) = (app.parse().unwrap(), dst.parse().unwrap());
            let req = request(app, dst, 56);
            let mut buf = [0u8; 2000];
            let n = prohibited(&mut buf, &req);
            assert_eq!(n, err_off + 8 + req.len());
            // From the destination asked about, to the application.
            let (s, d) = if app.is_ipv4() {
                let p = Ipv4Packet::new_checked(&buf[..n]).unwrap();
                assert!(p.verify_checksum());
                (IpAddr::V4(p.src_addr()), IpAddr::V4(p.dst_addr()))
            } else {
                let p = Ipv6Packet::new_checked(&buf[..n]).unwrap();
                (IpAddr::V6(p.src_addr()), IpAddr::V6(p.dst_addr()))
            };
            assert_eq!((s, d), (dst, app));
            assert_eq!(buf[err_off..err_off + 2], kind);
            assert_eq!(&buf[err_off + 8..n], &req[..]);
            let mut sum = ones(&buf[err_off..n]);
            if let (IpAddr::V6(a), IpAddr::V6(b)) = (s, d) {
                sum += ones(&a.octets()) + ones(&b.octets()) + (n - err_off) as u32 + 58;
            }
            while sum >> 16 != 0 {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            assert_eq!(sum, 0xffff, "checksum");
        }
    }

    #[test]
    fn a_large_request_is_quoted_only_in_part() {
        let (app, dst): (IpAddr, IpAddr) =
            ("10.0.0.2".parse().unwrap(), "192.0.2.1".parse().unwrap());
        let req = request(app, dst, 1400);
        let mut buf = [0u8; 2000];
        assert_eq!(prohibited(&mut buf, &req), V4_ERROR_MAX);
        let (app, dst): (IpAddr, IpAddr) = ("fd00::2".parse().unwrap(), "fd00::1".parse().unwrap());
        let req = request(app, dst, 1400);
        assert_eq!(prohibited(&mut buf, &req), V6_ERROR_MAX);
    }

    #[test]
    fn anything_but_an_echo_request_is_not_answered() {
        let (app, dst): (IpAddr, IpAddr) =
            ("10.0.0.2".parse().unwrap(), "192.0.2.1".parse().unwrap());
        let mut req = request(app, dst, 8);
        req[20] = 0; // an echo reply
        let mut buf = [0u8; 200];
        assert_eq!(prohibited(&mut buf, &req), 0);
        assert_eq!(prohibited(&mut buf, &[0x45, 0, 0]), 0);
    }
}
