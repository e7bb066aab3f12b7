//! A small synchronous rtnetlink client: one `NETLINK_ROUTE` socket, bound to
//! the network namespace it was created in, and the handful of link, address
//! and route operations the chain needs.

#![forbid(unsafe_code)]

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoMacVlan, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
    MacVlanMode,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// An IP prefix seen in a namespace (an address or a route destination).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

/// A route netlink socket in one network namespace.
#[derive(Debug)]
pub struct Rtnl {
    sock: Socket,
    seq: u32,
}

impl Rtnl {
    /// A socket in the calling thread's current network namespace.
    pub fn open() -> io::Result<Self> {
        let sock = Socket::new(NETLINK_ROUTE)?;
        Ok(Self::from_socket(sock))
    }

    /// Use a socket created elsewhere (e.g. by a namespace holder process).
    pub fn from_socket(mut sock: Socket) -> Self {
        // Binding is idempotent for sockets that are already bound; an error
        // here only means the kernel autobinds on first send.
        let _ = sock.bind_auto();
        let _ = sock.set_ext_ack(true);
        Rtnl { sock, seq: 0 }
    }

    /// The raw socket (to hand to another process).
    pub fn into_socket(self) -> Socket {
        self.sock
    }

    /// Index of the interface called `name`.
    pub fn link_index(&mut self, name: &str) -> io::Result<u32> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        let replies = self.request(RouteNetlinkMessage::GetLink(msg), 0)?;
        replies
            .into_iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no link {name}")))
    }

    /// Create a veth pair: `name` here, `peer` directly in the namespace `peer_ns`.
    pub fn add_veth(&mut self, name: &str, peer: &str, peer_ns: BorrowedFd<'_>) -> io::Result<()> {
        let mut peer_msg = LinkMessage::default();
        peer_msg
            .attributes
            .push(LinkAttribute::IfName(peer.to_string()));
        peer_msg
            .attributes
            .push(LinkAttribute::NetNsFd(peer_ns.as_raw_fd()));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
    }

    /// Create a Linux bridge called `name`.
    pub fn add_bridge(&mut self, name: &str) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
    }

    /// Create a macvlan (bridge mode) of interface `parent` called `name`
    /// directly in the namespace `ns` (the name only has to be free there).
    pub fn add_macvlan(&mut self, name: &str, parent: u32, ns: BorrowedFd<'_>) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::Link(parent));
        msg.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::MacVlan),
            LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                MacVlanMode::Bridge,
            )])),
        ]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
    }

    /// Create a kernel WireGuard interface called `name` directly in the
    /// namespace `ns`. The device's UDP socket belongs to the namespace of
    /// this route socket, the one that asked (the kernel's "creating
    /// namespace"), wherever the device itself lives. Without the module
    /// the kernel answers EOPNOTSUPP.
    pub fn add_wireguard(&mut self, name: &str, ns: BorrowedFd<'_>) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Wireguard,
            )]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
    }

    /// Enslave interface `index` to the bridge `master` (0: release it).
    pub fn set_master(&mut self, index: u32, master: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Controller(master));
        self.request(RouteNetlinkMessage::SetLink(msg), 0).map(drop)
    }

    /// Delete interface `index` (for a veth, both ends go at once).
    pub fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(msg), 0).map(drop)
    }

    /// Move interface `index` into the network namespace `ns` (it arrives
    /// down, without addresses; its name stays). Hops that get their exit
    /// device made in N(i−1) (openvpn's TUN, a script's interface) use it.
    pub fn move_link(&mut self, index: u32, ns: BorrowedFd<'_>) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        self.request(RouteNetlinkMessage::SetLink(msg), 0).map(drop)
    }

    /// Bring interface `index` up.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(msg), 0).map(drop)
    }

    /// Add `addr/len` to interface `index`; IPv6 addresses skip duplicate
    /// address detection so they are usable at once.
    pub fn add_address(&mut self, index: u32, addr: IpAddr, len: u8) -> io::Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        msg.header.prefix_len = len;
        msg.header.family = family(addr);
        msg.attributes.push(AddressAttribute::Local(addr));
        msg.attributes.push(AddressAttribute::Address(addr));
        if addr.is_ipv6() {
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Add a default route via `gateway` out of interface `oif`.
    pub fn add_default_route(&mut self, gateway: IpAddr, oif: u32) -> io::Result<()> {
        self.add_route(None, gateway, oif)
    }

    /// Add a route to `dst` (`(network, prefix length)`; None: the default
    /// route) via `gateway` out of interface `oif`, in the main table.
    pub fn add_route(
        &mut self,
        dst: Option<(IpAddr, u8)>,
        gateway: IpAddr,
        oif: u32,
    ) -> io::Result<()> {
        let mut msg = RouteMessage::default();
        if let Some((net, len)) = dst {
            msg.header.destination_prefix_length = len;
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(net)));
        }
        msg.header.address_family = family(gateway);
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Static;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gateway)));
        msg.attributes.push(RouteAttribute::Oif(oif));
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Set the MTU of interface `index`.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        self.request(RouteNetlinkMessage::SetLink(msg), 0).map(drop)
    }

    /// Add a default route (IPv6 if `v6`) straight out of interface `oif`,
    /// with no gateway (a point-to-point device such as a TUN).
    pub fn add_default_dev_route(&mut self, v6: bool, oif: u32) -> io::Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Static;
        msg.header.scope = RouteScope::Link;
        msg.header.kind = RouteType::Unicast;
        msg.attributes.push(RouteAttribute::Oif(oif));
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Add a route to `dst/len` straight out of interface `oif` (a
    /// point-to-point device), no gateway.
    pub fn add_dev_route(&mut self, dst: IpAddr, len: u8, oif: u32) -> io::Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(dst);
        msg.header.destination_prefix_length = len;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Static;
        msg.header.scope = RouteScope::Link;
        msg.header.kind = RouteType::Unicast;
        if len > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        }
        msg.attributes.push(RouteAttribute::Oif(oif));
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// The main table's default routes (both families), as the kernel
    /// reports them: templates for [`Rtnl::add_route_like`].
    pub fn default_routes(&mut self) -> io::Result<Vec<RouteMessage>> {
        self.main_routes(true)
    }

    /// The unicast routes of the main table, IPv4 and IPv6 (only the
    /// default ones with `only_default`).
    pub fn main_routes(&mut self, only_default: bool) -> io::Result<Vec<RouteMessage>> {
        let mut out = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = RouteMessage::default();
            msg.header.address_family = fam;
            for m in self.request(RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP)? {
                if let RouteNetlinkMessage::NewRoute(r) = m {
                    let main = r.header.table == RouteHeader::RT_TABLE_MAIN;
                    if main
                        && (!only_default || r.header.destination_prefix_length == 0)
                        && r.header.kind == RouteType::Unicast
                    {
                        out.push(r);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Delete the route `r` (as dumped).
    pub fn delete_route(&mut self, r: &RouteMessage) -> io::Result<()> {
        self.request(RouteNetlinkMessage::DelRoute(r.clone()), 0)
            .map(drop)
    }

    /// Add a route to `dst/len` going where `template` (a dumped default
    /// route of the same family) goes: same gateway, device and table.
    pub fn add_route_like(
        &mut self,
        template: &RouteMessage,
        dst: IpAddr,
        len: u8,
    ) -> io::Result<()> {
        let mut msg = template.clone();
        msg.header.destination_prefix_length = len;
        msg.header.protocol = RouteProtocol::Static;
        msg.attributes.retain(|a| {
            matches!(
                a,
                RouteAttribute::Gateway(_) | RouteAttribute::Oif(_) | RouteAttribute::Priority(_)
            )
        });
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Every address configured in this namespace.
    pub fn addresses(&mut self) -> io::Result<Vec<Prefix>> {
        let replies = self.request(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => {
                    let len = a.header.prefix_len;
                    a.attributes.into_iter().find_map(|at| match at {
                        AddressAttribute::Local(addr) | AddressAttribute::Address(addr) => {
                            Some(Prefix { addr, len })
                        }
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// The addresses of interface `index` (its local address and prefix
    /// length each).
    pub fn link_addresses(&mut self, index: u32) -> io::Result<Vec<Prefix>> {
        let replies = self.request(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                    let len = a.header.prefix_len;
                    let local = a.attributes.iter().find_map(|at| match at {
                        AddressAttribute::Local(addr) => Some(*addr),
                        _ => None,
                    });
                    let addr = local.or_else(|| {
                        a.attributes.iter().find_map(|at| match at {
                            AddressAttribute::Address(addr) => Some(*addr),
                            _ => None,
                        })
                    })?;
                    Some(Prefix { addr, len })
                }
                _ => None,
            })
            .collect())
    }

    /// Destinations of every route of `family` in every table (a default
    /// route appears as a zero-length prefix).
    pub fn routes(&mut self, v6: bool) -> io::Result<Vec<Prefix>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let replies = self.request(RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => {
                    let len = r.header.destination_prefix_length;
                    let dest = r.attributes.iter().find_map(|at| match at {
                        RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
                        RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
                        _ => None,
                    });
                    let unspec: IpAddr = if v6 {
                        std::net::Ipv6Addr::UNSPECIFIED.into()
                    } else {
                        std::net::Ipv4Addr::UNSPECIFIED.into()
                    };
                    Some(Prefix {
                        addr: dest.unwrap_or(unspec),
                        len,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Send one request and collect the replies ([`transact`]).
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        transact(&mut self.sock, self.seq, msg, flags)
    }
}

/// Send one request of sequence number `seq` on `sock` and collect the
/// replies until the ACK (or, for a dump, `NLMSG_DONE`). A netlink error
/// becomes an `io::Error` with its errno. Shared by the route socket and
/// the generic netlink one ([`crate::wggenl`]).
pub(crate) fn transact<M>(sock: &mut Socket, seq: u32, msg: M, flags: u16) -> io::Result<Vec<M>>
where
    M: NetlinkSerializable + NetlinkDeserializable + std::fmt::Debug,
{
    let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags | if dump { 0 } else { NLM_F_ACK };
    header.sequence_number = seq;
    let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    nl.finalize();
    let mut buf = vec![0u8; nl.buffer_len()];
    nl.serialize(&mut buf);
    sock.send_to(&buf, &SocketAddr::new(0, 0), 0)?;

    let mut out = Vec::new();
    loop {
        let (data, _) = sock.recv_from_full()?;
        let mut off = 0;
        while off + 16 <= data.len() {
            let len =
                u32::from_ne_bytes(data[off..off + 4].try_into().unwrap_or_default()) as usize;
            if len < 16 || off + len > data.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "malformed netlink reply",
                ));
            }
            let part = &data[off..off + len];
            off += (len + 3) & !3;
            let kind = u16::from_ne_bytes([part[4], part[5]]);
            let reply_seq = u32::from_ne_bytes([part[8], part[9], part[10], part[11]]);
            if reply_seq != seq {
                continue;
            }
            match kind {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR if part.len() >= 20 => {
                    let code = i32::from_ne_bytes([part[16], part[17], part[18], part[19]]);
                    return if code == 0 {
                        Ok(out)
                    } else {
                        Err(io::Error::from_raw_os_error(-code))
                    };
                }
                _ => {}
            }
            // A message this crate cannot parse (a newer kernel's attribute)
            // is skipped rather than failing the whole dump.
            match NetlinkMessage::<M>::deserialize(part) {
                Ok(NetlinkMessage {
                    payload: NetlinkPayload::InnerMessage(m),
                    ..
                }) => out.push(m),
                Ok(_) => {}
                Err(e) => tracing::debug!("skipping unparsable netlink message: {e}"),
            }
        }
    }
}

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}
