//! Kernel WireGuard's generic netlink family ("wireguard"), for the
//! wireguard hop's kernel device (`hops/wireguard.rs`): configure a device
//! (private key, peers) and read its peers' handshake times and byte
//! counters. A small synchronous client over one `NETLINK_GENERIC` socket,
//! which must live in the namespace of the device it talks about (the
//! kernel looks interfaces up in the socket's namespace); the messages are
//! `netlink-packet-wireguard`'s, the exchange is [`crate::rtnl::transact`].
//!
//! The pure halves ([`set_device_message`], [`PeerClock`]) are what the
//! unit tests cover: the machines this was written on have no WireGuard
//! module, so the socket half has never talked to a kernel there.

#![forbid(unsafe_code)]

use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use netlink_packet_core::NLM_F_DUMP;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::GenlMessage;
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardDeviceFlags, WireguardMessage, WireguardPeer, WireguardPeerAttribute,
    WireguardPeerFlags, WireguardTimeSpec,
};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket};

use proto::engine::{WgPeer, WgPeerState};

use crate::rtnl::transact;

/// The family's name, as the kernel registers it.
pub const FAMILY: &str = "wireguard";

/// A generic netlink socket that speaks the WireGuard family.
#[derive(Debug)]
pub struct WgGenl {
    sock: Socket,
    family: u16,
    seq: u32,
}

impl WgGenl {
    /// A socket in the calling thread's network namespace, with the
    /// family's id resolved (ENOENT: no WireGuard module is loaded).
    pub fn open() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_GENERIC)?;
        sock.bind_auto()?;
        let mut me = WgGenl {
            sock,
            family: 0,
            seq: 0,
        };
        me.family = me.resolve(FAMILY)?;
        Ok(me)
    }

    /// The id of the generic netlink family `name`.
    fn resolve(&mut self, name: &str) -> io::Result<u16> {
        let ask = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(name.into())],
        });
        self.seq = self.seq.wrapping_add(1);
        let replies = transact(&mut self.sock, self.seq, ask, 0)?;
        family_id(&replies).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the kernel's answer names no id for the {name} family"),
            )
        })
    }

    fn request(&mut self, msg: WireguardMessage, flags: u16) -> io::Result<Vec<WireguardMessage>> {
        let mut m = GenlMessage::from_payload(msg);
        m.set_resolved_family_id(self.family);
        self.seq = self.seq.wrapping_add(1);
        let replies = transact(&mut self.sock, self.seq, m, flags)?;
        Ok(replies.into_iter().map(|r| r.payload).collect())
    }

    /// Give the device `index` its private key, listen port 0 (any) and
    /// exactly `peers`.
    pub fn set_device(
        &mut self,
        index: u32,
        private_key: &[u8; 32],
        peers: &[WgPeer],
    ) -> io::Result<()> {
        self.request(set_device_message(index, private_key, peers), 0)
            .map(drop)
    }

    /// The device's peers as the kernel reports them (GET_DEVICE is a
    /// dump: a device with many peers comes in several messages, a peer's
    /// allowed IPs possibly continued in the next).
    pub fn get_device(&mut self, index: u32) -> io::Result<Vec<WireguardPeer>> {
        let ask = WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![WireguardAttribute::IfIndex(index)],
        };
        let replies = self.request(ask, NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .flat_map(|m| m.attributes)
            .filter_map(|a| match a {
                WireguardAttribute::Peers(p) => Some(p),
                _ => None,
            })
            .flatten()
            .collect())
    }
}

/// The family id in a CTRL_CMD_GETFAMILY answer.
fn family_id(replies: &[GenlMessage<GenlCtrl>]) -> Option<u16> {
    replies
        .iter()
        .flat_map(|m| &m.payload.nlas)
        .find_map(|a| match a {
            GenlCtrlAttrs::FamilyId(id) => Some(*id),
            _ => None,
        })
}

/// WG_CMD_SET_DEVICE for a fresh device: key, port 0, the peers replacing
/// any (there are none), each with its key, optional preshared key,
/// endpoint and persistent keepalive, and its allowed IPs.
pub fn set_device_message(
    index: u32,
    private_key: &[u8; 32],
    peers: &[WgPeer],
) -> WireguardMessage {
    let peers = peers
        .iter()
        .map(|p| {
            let mut a = vec![
                WireguardPeerAttribute::PublicKey(p.public_key),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
            ];
            if let Some(psk) = p.preshared_key {
                a.push(WireguardPeerAttribute::PresharedKey(psk));
            }
            if let Some(ep) = p.endpoint {
                a.push(WireguardPeerAttribute::Endpoint(ep));
            }
            if let Some(k) = p.keepalive {
                a.push(WireguardPeerAttribute::PersistentKeepalive(k));
            }
            a.push(WireguardPeerAttribute::AllowedIps(
                p.allowed_ips
                    .iter()
                    .map(|(ip, len)| {
                        WireguardAllowedIp(vec![
                            WireguardAllowedIpAttr::Family(if ip.is_ipv4() {
                                WireguardAddressFamily::Ipv4
                            } else {
                                WireguardAddressFamily::Ipv6
                            }),
                            WireguardAllowedIpAttr::IpAddr(*ip),
                            WireguardAllowedIpAttr::Cidr(*len),
                        ])
                    })
                    .collect(),
            ));
            WireguardPeer(a)
        })
        .collect();
    WireguardMessage {
        cmd: WireguardCmd::SetDevice,
        attributes: vec![
            WireguardAttribute::IfIndex(index),
            WireguardAttribute::PrivateKey(*private_key),
            WireguardAttribute::ListenPort(0),
            WireguardAttribute::Flags(WireguardDeviceFlags::ReplacePeers),
            WireguardAttribute::Peers(peers),
        ],
    }
}

/// Turns the kernel's per-peer reports into [`WgPeerState`]s in the
/// configuration's order. The kernel stamps a handshake with the wall
/// clock; an age is counted on the monotonic clock from when a new stamp
/// was first seen, so a change of the system time cannot make a live
/// session look expired.
#[derive(Debug)]
pub struct PeerClock {
    keys: Vec<[u8; 32]>,
    seen: Vec<Option<Seen>>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    stamp: (i64, i64),
    at: Instant,
    /// How old the handshake was when its stamp was first seen.
    age_then: Duration,
}

impl PeerClock {
    /// For the peers with these public keys, in this order.
    pub fn new(keys: Vec<[u8; 32]>) -> Self {
        let seen = vec![None; keys.len()];
        PeerClock { keys, seen }
    }

    /// The states of our peers from a GET_DEVICE's peers, at `now` (wall
    /// clock) and `mono` (monotonic). A peer the kernel does not report
    /// has no handshake and no bytes.
    pub fn states(
        &mut self,
        reported: &[WireguardPeer],
        now: SystemTime,
        mono: Instant,
    ) -> Vec<WgPeerState> {
        let mut out = vec![
            WgPeerState {
                handshake_age_ms: None,
                rx_bytes: 0,
                tx_bytes: 0,
            };
            self.keys.len()
        ];
        let mut stamps: Vec<Option<WireguardTimeSpec>> = vec![None; self.keys.len()];
        for peer in reported {
            let Some(i) = peer.iter().find_map(|a| match a {
                WireguardPeerAttribute::PublicKey(k) => self.keys.iter().position(|o| o == k),
                _ => None,
            }) else {
                continue;
            };
            // A continuation (allowed IPs only) carries no counters.
            for a in peer.iter() {
                match a {
                    WireguardPeerAttribute::RxBytes(n) => out[i].rx_bytes = *n,
                    WireguardPeerAttribute::TxBytes(n) => out[i].tx_bytes = *n,
                    WireguardPeerAttribute::LastHandshake(t) => stamps[i] = Some(*t),
                    _ => {}
                }
            }
        }
        for (i, stamp) in stamps.into_iter().enumerate() {
            let Some(t) = stamp.filter(|t| t.seconds != 0 || t.nano_seconds != 0) else {
                continue;
            };
            let key = (t.seconds, t.nano_seconds);
            let seen = match self.seen[i] {
                Some(s) if s.stamp == key => s,
                _ => {
                    let s = Seen {
                        stamp: key,
                        at: mono,
                        age_then: wall_age(t, now),
                    };
                    self.seen[i] = Some(s);
                    s
                }
            };
            let age = seen.age_then + mono.saturating_duration_since(seen.at);
            out[i].handshake_age_ms = Some(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
        }
        out
    }
}

/// How long before `now` the kernel's stamp `t` is (zero if after it).
fn wall_age(t: WireguardTimeSpec, now: SystemTime) -> Duration {
    let secs = u64::try_from(t.seconds).unwrap_or(0);
    let nanos = u32::try_from(t.nano_seconds.clamp(0, 999_999_999)).unwrap_or(0);
    let then = UNIX_EPOCH + Duration::new(secs, nanos);
    now.duration_since(then).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_generic::GenlHeader;

    fn peer(n: u8) -> WgPeer {
        WgPeer {
            public_key: [n; 32],
            preshared_key: (n == 1).then_some([9; 32]),
            endpoint: Some(if n == 1 {
                "192.0.2.7:51820".parse().unwrap()
            } else {
                "[2001:db8::7]:443".parse().unwrap()
            }),
            allowed_ips: vec![
                ("0.0.0.0".parse().unwrap(), 0),
                ("fd00::".parse().unwrap(), 64),
            ],
            keepalive: (n == 2).then_some(25),
        }
    }

    /// The whole netlink message as the kernel receives it.
    fn wire(msg: WireguardMessage, family: u16) -> Vec<u8> {
        let mut m = GenlMessage::from_payload(msg);
        m.set_resolved_family_id(family);
        let mut header = NetlinkHeader::default();
        header.sequence_number = 7;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(m));
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        buf
    }

    #[test]
    fn set_device_round_trips_through_the_wire() {
        let msg = set_device_message(5, &[3; 32], &[peer(1), peer(2)]);
        let buf = wire(msg.clone(), 0x1c);
        // The netlink header: our family id as the type, then genl's command.
        assert_eq!(u16::from_ne_bytes([buf[4], buf[5]]), 0x1c);
        assert_eq!(buf[16], 1, "WG_CMD_SET_DEVICE");
        assert_eq!(buf[17], 1, "WG_GENL_VERSION");
        let back = NetlinkMessage::<GenlMessage<WireguardMessage>>::deserialize(&buf).unwrap();
        let NetlinkPayload::InnerMessage(m) = back.payload else {
            panic!("not a family message: {back:?}")
        };
        assert_eq!(m.payload, msg);
    }

    #[test]
    fn set_device_carries_what_the_config_says_and_nothing_else() {
        let msg = set_device_message(5, &[3; 32], &[peer(1), peer(2)]);
        assert_eq!(msg.cmd, WireguardCmd::SetDevice);
        assert!(msg.attributes.contains(&WireguardAttribute::IfIndex(5)));
        assert!(msg
            .attributes
            .contains(&WireguardAttribute::PrivateKey([3; 32])));
        assert!(msg.attributes.contains(&WireguardAttribute::ListenPort(0)));
        let peers = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                WireguardAttribute::Peers(p) => Some(p.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(peers.len(), 2);
        let one = &peers[0].0;
        assert!(one.contains(&WireguardPeerAttribute::PresharedKey([9; 32])));
        assert!(one.contains(&WireguardPeerAttribute::Endpoint(
            "192.0.2.7:51820".parse().unwrap()
        )));
        assert!(!one
            .iter()
            .any(|a| matches!(a, WireguardPeerAttribute::PersistentKeepalive(_))));
        let two = &peers[1].0;
        assert!(two.contains(&WireguardPeerAttribute::PersistentKeepalive(25)));
        assert!(!two
            .iter()
            .any(|a| matches!(a, WireguardPeerAttribute::PresharedKey(_))));
        let allowed = two
            .iter()
            .find_map(|a| match a {
                WireguardPeerAttribute::AllowedIps(v) => Some(v.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            allowed[1].0,
            vec![
                WireguardAllowedIpAttr::Family(WireguardAddressFamily::Ipv6),
                WireguardAllowedIpAttr::IpAddr("fd00::".parse().unwrap()),
                WireguardAllowedIpAttr::Cidr(64),
            ]
        );
    }

    /// The first bytes of the IPv6 endpoint attribute are a `sockaddr_in6`:
    /// AF_INET6 in host order, the port in network order.
    #[test]
    fn an_ipv6_endpoint_is_a_sockaddr_in6() {
        let msg = set_device_message(1, &[0; 32], &[peer(2)]);
        let buf = wire(msg, 0x1c);
        let port = 443u16.to_be_bytes();
        let af = (libc::AF_INET6 as u16).to_ne_bytes();
        let needle = [af[0], af[1], port[0], port[1]];
        assert!(buf.windows(4).any(|w| w == needle), "{buf:?}");
    }

    /// A GET_DEVICE answer as the kernel sends it, built from the crate's
    /// types and parsed back through the genl header.
    fn reply(peers: Vec<WireguardPeer>) -> Vec<WireguardPeer> {
        let msg = WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![
                WireguardAttribute::IfIndex(5),
                WireguardAttribute::IfName("wg0".into()),
                WireguardAttribute::Peers(peers),
            ],
        };
        let buf = wire(msg, 0x1c);
        let back = NetlinkMessage::<GenlMessage<WireguardMessage>>::deserialize(&buf).unwrap();
        let NetlinkPayload::InnerMessage(m) = back.payload else {
            panic!()
        };
        // The genl header survives too.
        let h = GenlHeader::parse(&buf[16..]).unwrap();
        assert_eq!(h.cmd, 0);
        m.payload
            .attributes
            .into_iter()
            .filter_map(|a| match a {
                WireguardAttribute::Peers(p) => Some(p),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn stats(key: u8, secs: i64, rx: u64, tx: u64) -> WireguardPeer {
        WireguardPeer(vec![
            WireguardPeerAttribute::PublicKey([key; 32]),
            WireguardPeerAttribute::LastHandshake(WireguardTimeSpec {
                seconds: secs,
                nano_seconds: 0,
            }),
            WireguardPeerAttribute::RxBytes(rx),
            WireguardPeerAttribute::TxBytes(tx),
        ])
    }

    #[test]
    fn peer_states_come_in_config_order_with_ages_on_the_monotonic_clock() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mono = Instant::now();
        let mut clock = PeerClock::new(vec![[1; 32], [2; 32], [4; 32]]);
        // Reported out of order, one unknown peer, one of ours missing,
        // one continuation message with only allowed IPs.
        let got = reply(vec![
            stats(2, 0, 0, 148),
            stats(8, 999_990, 5, 5),
            stats(1, 999_995, 92, 180),
            WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey([1; 32]),
                WireguardPeerAttribute::AllowedIps(vec![]),
            ]),
        ]);
        let s = clock.states(&got, now, mono);
        assert_eq!(s[0].handshake_age_ms, Some(5000));
        assert_eq!((s[0].rx_bytes, s[0].tx_bytes), (92, 180));
        assert_eq!(s[1].handshake_age_ms, None, "never handshaken: stamp 0");
        assert_eq!(s[1].tx_bytes, 148);
        assert_eq!(
            s[2],
            WgPeerState {
                handshake_age_ms: None,
                rx_bytes: 0,
                tx_bytes: 0
            }
        );
        // Ten seconds on, the wall clock set back an hour: the same stamp
        // has aged ten seconds, not gone negative.
        let later = clock.states(
            &got,
            now - Duration::from_secs(3600),
            mono + Duration::from_secs(10),
        );
        assert_eq!(later[0].handshake_age_ms, Some(15_000));
        // A new handshake starts a new age.
        let again = clock.states(
            &reply(vec![stats(1, 1_000_019, 100, 200)]),
            now + Duration::from_secs(20),
            mono + Duration::from_secs(20),
        );
        assert_eq!(again[0].handshake_age_ms, Some(1000));
    }

    /// The exchange with the real kernel's controller (no privilege
    /// needed): its own family resolves to its fixed id, and WireGuard's
    /// is ENOENT where there is no module (as on the machines this was
    /// written on) or an id where there is.
    #[test]
    fn the_kernel_controller_answers_family_lookups() {
        let mut g = WgGenl {
            sock: Socket::new(NETLINK_GENERIC).unwrap(),
            family: 0,
            seq: 0,
        };
        g.sock.bind_auto().unwrap();
        assert_eq!(g.resolve("nlctrl").unwrap(), 0x10);
        match g.resolve(FAMILY) {
            Ok(id) => assert!(id > 0x10, "{id}"),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}"),
        }
    }

    #[test]
    fn the_family_id_is_read_from_the_controller_reply() {
        let m = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::NewFamily,
            nlas: vec![
                GenlCtrlAttrs::FamilyName(FAMILY.into()),
                GenlCtrlAttrs::FamilyId(0x1c),
            ],
        });
        assert_eq!(family_id(&[m]), Some(0x1c));
        assert_eq!(family_id(&[]), None);
    }
}
