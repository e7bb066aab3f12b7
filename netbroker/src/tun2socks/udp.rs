//! UDP for the tun2socks engine, outside the TCP stack: recognising the IP
//! packets the application sends (TCP SYNs that open connections, UDP
//! datagrams), writing UDP datagrams back as IP packets, and the SOCKS5 UDP
//! relay framing of datagrams sent through a UDP ASSOCIATE.

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpPacket, UdpPacket,
    UdpRepr,
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
/// The headers are read through `smoltcp::wire`, which checks every length
/// field against the buffer.
pub(super) fn classify(p: &[u8]) -> Option<(SocketAddr, SocketAddr, Kind)> {
    let unspecified = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
    // The transport header and payload, and its offset in `p`.
    let (src, dst, proto, off, l4): (IpAddr, IpAddr, IpProtocol, usize, &[u8]) =
        match p.first()? >> 4 {
            4 => {
                let ip = Ipv4Packet::new_checked(p).ok()?;
                // Fragments other than the first carry no ports.
                if ip.frag_offset() != 0 {
                    return Some((unspecified, unspecified, Kind::Other));
                }
                let off = usize::from(ip.header_len());
                let end = usize::from(ip.total_len());
                (
                    IpAddr::V4(ip.src_addr()),
                    IpAddr::V4(ip.dst_addr()),
                    ip.next_header(),
                    off,
                    p.get(off..end)?,
                )
            }
            6 => {
                let ip = Ipv6Packet::new_checked(p).ok()?;
                let off = ip.header_len();
                (
                    IpAddr::V6(ip.src_addr()),
                    IpAddr::V6(ip.dst_addr()),
                    ip.next_header(),
                    off,
                    p.get(off..off + usize::from(ip.payload_len()))?,
                )
            }
            _ => return None,
        };
    // Nothing is sent from or to "no address": smoltcp would answer such a
    // segment with a reset to the unspecified address, and panics doing so.
    if src.is_unspecified() || dst.is_unspecified() {
        return None;
    }
    match proto {
        IpProtocol::Tcp => match TcpPacket::new_checked(l4) {
            Ok(t) => Some((
                SocketAddr::new(src, t.src_port()),
                SocketAddr::new(dst, t.dst_port()),
                Kind::Tcp {
                    syn: t.syn() && !t.ack(),
                },
            )),
            // Too short for a TCP header: smoltcp's to drop.
            Err(_) => Some((
                SocketAddr::new(src, 0),
                SocketAddr::new(dst, 0),
                Kind::Other,
            )),
        },
        IpProtocol::Udp if l4.len() >= 8 => {
            // A length field shorter than the header or past the packet.
            let u = UdpPacket::new_checked(l4).ok()?;
            let len = usize::from(u.len());
            Some((
                SocketAddr::new(src, u.src_port()),
                SocketAddr::new(dst, u.dst_port()),
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
        p[2..4].copy_from_slice(&40u16.to_be_bytes()); // total length
        p[9] = 6;
        p[32] = 0x50; // TCP data offset: 5 words
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
        // A total length past the buffer is malformed, not a SYN.
        p[2..4].copy_from_slice(&41u16.to_be_bytes());
        assert!(classify(&p).is_none());
    }

    #[test]
    fn a_packet_from_or_to_the_unspecified_address_is_dropped() {
        // Found by fuzzing (fuzz/seeds/tun_packet/regression-unspecified-src):
        // a SYN from 0.0.0.0 made smoltcp assert while sending its reset.
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&40u16.to_be_bytes()); // total length
        p[9] = 6;
        p[32] = 0x50; // TCP data offset: 5 words
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
