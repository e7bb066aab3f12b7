//! UDP for the tun2socks engine, outside the TCP stack: recognising the IP
//! packets the application sends (TCP SYNs that open connections, UDP
//! datagrams), writing UDP datagrams back as IP packets, and the SOCKS5 UDP
//! relay framing of datagrams sent through a UDP ASSOCIATE.

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, UdpPacket, UdpRepr,
};

use super::proxy::{decode_socks5_addr, encode_socks5_addr, Target};

/// What an IP packet from the application is, as far as the engine cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// TCP; `syn` is a connection request (SYN without ACK).
    Tcp {
        syn: bool,
    },
    /// UDP with its payload at `payload` (offset, length) in the packet.
    Udp {
        payload: (usize, usize),
    },
    Other,
}

/// Source, destination and kind of a packet (None: malformed or not IP).
pub(super) fn classify(p: &[u8]) -> Option<(SocketAddr, SocketAddr, Kind)> {
    let (src, dst, proto, off) = match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            if p.len() < 20 || ihl < 20 || p.len() < ihl {
                return None;
            }
            // Fragments other than the first carry no ports.
            let frag = u16::from_be_bytes([p[6], p[7]]) & 0x1fff;
            if frag != 0 {
                return Some((
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
                    Kind::Other,
                ));
            }
            let s = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
            let d = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
            (IpAddr::V4(s), IpAddr::V4(d), p[9], ihl)
        }
        6 => {
            if p.len() < 40 {
                return None;
            }
            let mut s = [0u8; 16];
            s.copy_from_slice(&p[8..24]);
            let mut d = [0u8; 16];
            d.copy_from_slice(&p[24..40]);
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                p[6],
                40,
            )
        }
        _ => return None,
    };
    // Nothing is sent from or to "no address": smoltcp would answer such a
    // segment with a reset to the unspecified address, and panics doing so.
    if src.is_unspecified() || dst.is_unspecified() {
        return None;
    }
    let l4 = &p[off..];
    let ports = |l4: &[u8]| -> Option<(u16, u16)> {
        Some((
            u16::from_be_bytes([*l4.first()?, *l4.get(1)?]),
            u16::from_be_bytes([*l4.get(2)?, *l4.get(3)?]),
        ))
    };
    match proto {
        6 if l4.len() >= 20 => {
            let (sp, dp) = ports(l4)?;
            let flags = l4[13];
            let syn = flags & 0x02 != 0 && flags & 0x10 == 0;
            Some((
                SocketAddr::new(src, sp),
                SocketAddr::new(dst, dp),
                Kind::Tcp { syn },
            ))
        }
        17 if l4.len() >= 8 => {
            let (sp, dp) = ports(l4)?;
            let len = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
            if len < 8 || len > l4.len() {
                return None;
            }
            Some((
                SocketAddr::new(src, sp),
                SocketAddr::new(dst, dp),
                Kind::Udp {
                    payload: (off + 8, len - 8),
                },
            ))
        }
        _ => Some((
            SocketAddr::new(src, 0),
            SocketAddr::new(dst, 0),
            Kind::Other,
        )),
    }
}

/// Write an IP+UDP packet from `src` to `dst` carrying `payload` into `buf`;
/// the packet's length (0 if the families differ or it does not fit).
pub(super) fn emit(buf: &mut [u8], src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> usize {
    let caps = ChecksumCapabilities::default();
    let udp = UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
    };
    let udp_len = 8 + payload.len();
    let fill = |b: &mut [u8]| b.copy_from_slice(payload);
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = 20 + udp_len;
            if total > buf.len() || total > 65535 {
                return 0;
            }
            let ip = Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Udp,
                payload_len: udp_len,
                hop_limit: 64,
            };
            let mut pkt = Ipv4Packet::new_unchecked(&mut buf[..total]);
            ip.emit(&mut pkt, &caps);
            let mut u = UdpPacket::new_unchecked(pkt.payload_mut());
            udp.emit(
                &mut u,
                &IpAddress::Ipv4(s),
                &IpAddress::Ipv4(d),
                payload.len(),
                fill,
                &caps,
            );
            total
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let total = 40 + udp_len;
            if total > buf.len() || udp_len > 65535 {
                return 0;
            }
            let ip = Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Udp,
                payload_len: udp_len,
                hop_limit: 64,
            };
            let mut pkt = Ipv6Packet::new_unchecked(&mut buf[..total]);
            ip.emit(&mut pkt);
            let mut u = UdpPacket::new_unchecked(pkt.payload_mut());
            udp.emit(
                &mut u,
                &IpAddress::Ipv6(s),
                &IpAddress::Ipv6(d),
                payload.len(),
                fill,
                &caps,
            );
            total
        }
        _ => 0,
    }
}

/// Frame `payload` for a SOCKS5 UDP relay into `out` (cleared first).
pub(super) fn socks5_frame(out: &mut Vec<u8>, target: &Target, payload: &[u8]) -> bool {
    out.clear();
    out.extend_from_slice(&[0, 0, 0]);
    if encode_socks5_addr(out, target).is_err() {
        return false;
    }
    out.extend_from_slice(payload);
    true
}

/// Split a datagram from a SOCKS5 UDP relay: its source and the payload's
/// offset (None: malformed or fragmented).
pub(super) fn socks5_unframe(d: &[u8]) -> Option<(SocketAddr, usize)> {
    if d.len() < 4 || d[2] != 0 {
        return None;
    }
    let (addr, n) = decode_socks5_addr(&d[3..])?;
    Some((addr, 3 + n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emitted_udp_packets_classify_back() {
        let mut buf = vec![0u8; 2000];
        for (s, d) in [
            ("198.18.0.2:53", "198.18.0.1:4000"),
            ("[fd00:7061:6c6c::2]:53", "[fd00:7061:6c6c::1]:4000"),
        ] {
            let (s, d): (SocketAddr, SocketAddr) = (s.parse().unwrap(), d.parse().unwrap());
            let n = emit(&mut buf, s, d, b"hello");
            assert!(n > 0);
            let (cs, cd, k) = classify(&buf[..n]).unwrap();
            assert_eq!((cs, cd), (s, d));
            let Kind::Udp { payload: (o, l) } = k else {
                panic!("{k:?}")
            };
            assert_eq!(&buf[o..o + l], b"hello");
        }
    }

    #[test]
    fn a_syn_is_told_from_other_tcp_segments() {
        // IPv4 header (20 bytes) + TCP header (20 bytes), flags at byte 33.
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[9] = 6;
        p[12..16].copy_from_slice(&[198, 18, 0, 1]);
        p[16..20].copy_from_slice(&[203, 0, 113, 80]);
        p[20..22].copy_from_slice(&4000u16.to_be_bytes());
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
        p[33] = 0x02;
        let (src, dst, kind) = classify(&p).unwrap();
        assert_eq!(src, "198.18.0.1:4000".parse().unwrap());
        assert_eq!(dst, "203.0.113.80:80".parse().unwrap());
        assert_eq!(kind, Kind::Tcp { syn: true });
        p[33] = 0x12; // SYN+ACK
        assert_eq!(classify(&p).unwrap().2, Kind::Tcp { syn: false });
        assert!(classify(&p[..10]).is_none());
    }

    #[test]
    fn a_packet_from_or_to_the_unspecified_address_is_dropped() {
        // Found by fuzzing (fuzz/seeds/tun_packet/regression-unspecified-src):
        // a SYN from 0.0.0.0 made smoltcp assert while sending its reset.
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[9] = 6;
        p[16..20].copy_from_slice(&[203, 0, 113, 80]);
        p[33] = 0x02;
        assert!(classify(&p).is_none());
        p[12..16].copy_from_slice(&[198, 18, 0, 1]);
        assert!(classify(&p).is_some());
        p[16..20].copy_from_slice(&[0, 0, 0, 0]);
        assert!(classify(&p).is_none());
        let mut v6 = vec![0u8; 60];
        v6[0] = 0x60;
        v6[6] = 17;
        v6[24] = 0xfd;
        v6[44..46].copy_from_slice(&8u16.to_be_bytes());
        assert!(classify(&v6).is_none());
    }

    #[test]
    fn socks5_udp_framing_round_trips() {
        let mut out = Vec::new();
        let a: SocketAddr = "203.0.113.80:7".parse().unwrap();
        assert!(socks5_frame(&mut out, &Target::Ip(a), b"ping"));
        let (src, off) = socks5_unframe(&out).unwrap();
        assert_eq!((src, &out[off..]), (a, &b"ping"[..]));
    }
}
