//! Direct mode: no proxy. The engine opens the application's connections
//! itself, from the namespace it runs in (rootless: the caller's own, as the
//! caller): a TCP connection is a dial with no handshake (the SYN is held
//! until the real connect succeeds, refused with a RST when it fails, as on
//! the proxy path), a UDP flow is one connected socket per (source,
//! destination) pair, an ICMP echo flow one ping socket
//! (`socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`, where the host's
//! `net.ipv4.ping_group_range` admits the caller; else answered
//! "administratively prohibited" (`icmp.rs`), said once),
//! and queries to the engine's DNS address are forwarded to the host's
//! resolvers over UDP with random ids.
//!
//! The host itself stays out of reach: a destination on loopback, an
//! unspecified, multicast or link-local address, or one of the host's own
//! addresses (the list the netbroker passes at start) is refused before any
//! socket exists; a route lookup (a UDP socket connected to the
//! destination, which sends nothing) catches local addresses added later —
//! the kernel picks the destination itself as the source of a local
//! route —, and a TCP connection whose local address is its peer's is
//! dropped once made.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant as StdInstant};

use nix::errno::Errno;
use nix::sys::epoll::{EpollEvent, EpollFlags};
use nix::sys::socket::{
    connect, socket, AddressFamily, SockFlag, SockProtocol, SockType, SockaddrStorage,
};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr};

use super::super::{dns, DirectConfig, Tun2socksError};
use super::relay::Reply;
use super::{token, Engine, KIND_UDP, UDP_IDLE};

/// An echo flow without a reply for this long is closed.
const ICMP_IDLE: Duration = Duration::from_secs(30);
/// A forwarded query without an answer for this long is forgotten.
const DNS_TTL: Duration = Duration::from_secs(10);

/// The state of direct mode.
pub(crate) struct Direct {
    refused: Vec<IpAddr>,
    timeout: Duration,
    /// One connected UDP socket per host resolver, by flow id.
    resolvers: Vec<(u64, UdpSocket)>,
    /// Rewritten query id -> (the application's id, where the answer goes).
    queries: HashMap<u16, (u16, Reply, StdInstant)>,
    flows: HashMap<u64, Flow>,
    by_key: HashMap<Key, u64>,
    /// Ping sockets were refused (`ping_group_range`): said once.
    no_ping: bool,
}

/// (protocol, the application's address, the destination): UDP by ports,
/// ICMP echo by the application's echo id (as the source "port").
type Key = (u8, SocketAddr, SocketAddr);

struct Flow {
    key: Key,
    sock: UdpSocket,
    last: StdInstant,
}

impl Direct {
    pub(crate) fn new(cfg: &DirectConfig) -> Direct {
        let mut refused: Vec<IpAddr> = cfg.refused.iter().map(|a| a.to_canonical()).collect();
        refused.sort();
        refused.dedup();
        Direct {
            refused,
            timeout: cfg.connect_timeout,
            resolvers: Vec::new(),
            queries: HashMap::new(),
            flows: HashMap::new(),
            by_key: HashMap::new(),
            no_ping: false,
        }
    }

    /// Whether the application may reach `dst` (see the module doc): not
    /// an address refused by kind or by the list the engine started with,
    /// and not one the kernel routes to this host now ([`routes_to_self`]:
    /// an address added since). Asked once per new connection or flow.
    pub(crate) fn admits(&self, dst: SocketAddr) -> bool {
        allowed(&self.refused, dst.ip()) && !routes_to_self(dst)
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// [`Direct::allowed`], for the list `refused` (canonical addresses).
pub(crate) fn allowed(refused: &[IpAddr], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    let special = match ip {
        // "This network", link-local (a cloud's metadata service), broadcast.
        IpAddr::V4(a) => a.octets()[0] == 0 || a.is_link_local() || a.is_broadcast(),
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
    };
    !special && !refused.contains(&ip)
}

/// Whether the kernel routes `dst` to this host. Two questions to the
/// kernel, neither of which sends anything: may a socket bind to `dst` (the
/// kernel allows that exactly for its local, broadcast and multicast
/// addresses — a secondary address added after the engine started too,
/// whose local route names the primary as source), and is the source it
/// would pick for `dst` the destination itself (a local destination's, and
/// the only question where `ip_nonlocal_bind` lets every bind succeed).
pub(crate) fn routes_to_self(dst: SocketAddr) -> bool {
    let any: SocketAddr = if dst.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    if !nonlocal_bind(dst.is_ipv4()) && UdpSocket::bind(SocketAddr::new(dst.ip(), 0)).is_ok() {
        return true;
    }
    let Ok(probe) = UdpSocket::bind(any) else {
        return true;
    };
    let port = if dst.port() == 0 { 9 } else { dst.port() };
    match probe
        .connect(SocketAddr::new(dst.ip(), port))
        .and_then(|()| probe.local_addr())
    {
        Ok(local) => local.ip().to_canonical() == dst.ip().to_canonical(),
        // Unreachable: not ours either, the connect will say so.
        Err(_) => false,
    }
}

/// Whether this host lets a socket bind to addresses that are not its own
/// (`net.ipv4.ip_nonlocal_bind`/`net.ipv6.ip_nonlocal_bind`), asked once per
/// family by binding to an address no host holds in practice (the last of
/// the shared address space, of the documentation prefix).
fn nonlocal_bind(v4: bool) -> bool {
    use std::sync::OnceLock;
    static V4: OnceLock<bool> = OnceLock::new();
    static V6: OnceLock<bool> = OnceLock::new();
    let (cell, probe): (&OnceLock<bool>, IpAddr) = if v4 {
        (&V4, std::net::Ipv4Addr::new(100, 127, 255, 254).into())
    } else {
        (
            &V6,
            Ipv6Addr::new(
                0x2001, 0xdb8, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xfffe,
            )
            .into(),
        )
    };
    *cell.get_or_init(|| UdpSocket::bind(SocketAddr::new(probe, 0)).is_ok())
}

/// Start a non-blocking TCP connection straight to `dst` (a direct dial,
/// and the engine's dial of a TCP proxy, [`super::super::proxy::Proxy::dial_nonblocking`]).
pub(crate) fn dial_tcp(dst: SocketAddr) -> io::Result<TcpStream> {
    let family = if dst.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    match connect(fd.as_raw_fd(), &SockaddrStorage::from(dst)) {
        Ok(()) | Err(Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let s = TcpStream::from(fd);
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Where a direct TCP dial stands: Ok(None) still connecting, Ok(Some)
/// connected (and not to this host), Err failed.
pub(crate) fn poll_tcp(s: &TcpStream) -> io::Result<Option<()>> {
    if let Some(e) = s.take_error()? {
        return Err(e);
    }
    match s.peer_addr() {
        Ok(peer) => {
            let local = s.local_addr()?;
            if local.ip().to_canonical() == peer.ip().to_canonical() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "an address of this host",
                ));
            }
            Ok(Some(()))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The error of a failed direct dial, for the debug log.
pub(crate) fn dial_error(dst: SocketAddr, e: &io::Error) -> Tun2socksError {
    Tun2socksError::Unreachable {
        proto: "direct",
        addr: dst.to_string(),
        reason: super::super::short_reason(e),
    }
}

impl Engine {
    /// Open the sockets to the host's resolvers (direct mode).
    pub(super) fn direct_resolvers(&mut self, servers: &[SocketAddr]) {
        let Some(d) = self.direct.as_mut() else {
            return;
        };
        for server in servers.iter().take(3) {
            let any: SocketAddr = if server.is_ipv4() {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let sock = match UdpSocket::bind(any)
                .and_then(|s| s.connect(server).map(|()| s))
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("tun2socks: DNS server {server}: {e}");
                    continue;
                }
            };
            let id = self.next_id;
            if self
                .epoll
                .add(
                    sock.as_fd(),
                    EpollEvent::new(EpollFlags::EPOLLIN, token(id, KIND_UDP)),
                )
                .is_ok()
            {
                self.next_id += 1;
                d.resolvers.push((id, sock));
            }
        }
    }

    /// A DNS query to the engine's address: to every host resolver, with a
    /// random id; the first answer wins.
    pub(super) fn direct_dns(&mut self, to: Reply, query: &[u8]) {
        let Some(d) = self.direct.as_mut() else {
            return;
        };
        if query.len() < 12 {
            return;
        }
        if d.queries.len() >= self.limits.dns_pending || d.resolvers.is_empty() {
            if !d.resolvers.is_empty() {
                self.refusals.note("pending DNS queries", &self.shared);
            }
            if let Some(r) = dns::servfail(query) {
                self.dns_reply(to, &r);
            }
            return;
        }
        let mut id = dns::random_id();
        while d.queries.contains_key(&id) {
            id = dns::random_id();
        }
        d.queries.insert(
            id,
            (
                u16::from_be_bytes([query[0], query[1]]),
                to,
                StdInstant::now(),
            ),
        );
        let mut q = query.to_vec();
        q[..2].copy_from_slice(&id.to_be_bytes());
        for (_, s) in &d.resolvers {
            let _ = s.send(&q);
        }
    }

    /// A UDP datagram of the application to `dst` (not DNS): on its flow's
    /// connected socket, made now if it is new.
    pub(super) fn direct_udp(&mut self, src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
        let key = (17, src, dst);
        let Some(id) = self.direct_flow(key) else {
            return;
        };
        let Some(f) = self.direct.as_mut().and_then(|d| d.flows.get_mut(&id)) else {
            return;
        };
        f.last = StdInstant::now();
        if f.sock.send(payload).is_ok() {
            self.shared
                .counters
                .udp_datagrams
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A packet that is neither TCP nor UDP, of length `n` in the receive
    /// buffer: an ICMP echo request goes out through a ping socket.
    pub(super) fn direct_other(&mut self, n: usize) {
        let Some((src, dst, id, msg)) = echo_request(&self.dev.rx[..n]) else {
            return;
        };
        let key = (1, SocketAddr::new(src, id), SocketAddr::new(dst, 0));
        let Some(fid) = self.direct_flow(key) else {
            // Refused (the host itself, no ping socket for the caller, the
            // flow cap): said at once rather than left to time out.
            return self.refuse_icmp(n);
        };
        let Some(f) = self.direct.as_mut().and_then(|d| d.flows.get_mut(&fid)) else {
            return;
        };
        f.last = StdInstant::now();
        // The kernel sets the id (the socket's) and the checksum.
        let _ = f.sock.send(&self.dev.rx[msg..n]);
    }

    /// The flow of `key`, opened if new; None if refused or past the cap.
    fn direct_flow(&mut self, key: Key) -> Option<u64> {
        let d = self.direct.as_mut()?;
        if let Some(id) = d.by_key.get(&key) {
            return Some(*id);
        }
        let (proto, _, dst) = key;
        if !d.admits(dst) {
            tracing::debug!("tun2socks: {dst}: refused, an address of this host");
            return None;
        }
        if d.flows.len() >= self.limits.udp_flows {
            self.refusals.note("UDP flows", &self.shared);
            return None;
        }
        let sock = match open_flow(proto, dst) {
            Ok(s) => s,
            Err(e)
                if proto == 1 && matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) =>
            {
                if !d.no_ping {
                    d.no_ping = true;
                    tracing::warn!("tun2socks: ping sockets are not allowed for this user (sysctl net.ipv4.ping_group_range); ICMP echo from the sandbox is answered \"administratively prohibited\"");
                }
                return None;
            }
            Err(e) => {
                tracing::debug!("tun2socks: {dst}: {e}");
                return None;
            }
        };
        // The route the kernel chose: a local destination is its own source.
        let local = sock.local_addr().ok()?;
        if local.ip().to_canonical() == dst.ip().to_canonical() {
            tracing::debug!("tun2socks: {dst}: refused, an address of this host");
            return None;
        }
        let id = self.next_id;
        self.epoll
            .add(
                sock.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, token(id, KIND_UDP)),
            )
            .ok()?;
        self.next_id += 1;
        self.trimmed = false;
        d.by_key.insert(key, id);
        d.flows.insert(
            id,
            Flow {
                key,
                sock,
                last: StdInstant::now(),
            },
        );
        Some(id)
    }

    /// Something to read on direct socket `id`: a resolver's answer or a
    /// flow's datagrams.
    pub(super) fn direct_readable(&mut self, id: u64) {
        let mut buf = std::mem::take(&mut self.frame);
        buf.resize(65536 + 300, 0);
        self.direct_drain(id, &mut buf);
        buf.clear();
        self.frame = buf;
    }

    fn direct_drain(&mut self, id: u64, buf: &mut [u8]) {
        let Some(d) = self.direct.as_mut() else {
            return;
        };
        if let Some(i) = d.resolvers.iter().position(|(r, _)| *r == id) {
            let mut answers = Vec::new();
            while let Ok(n) = d.resolvers[i].1.recv(buf) {
                if n < 12 {
                    continue;
                }
                let rid = u16::from_be_bytes([buf[0], buf[1]]);
                if let Some((orig, to, _)) = d.queries.remove(&rid) {
                    let mut a = buf[..n].to_vec();
                    a[..2].copy_from_slice(&orig.to_be_bytes());
                    answers.push((to, a));
                }
            }
            for (to, a) in answers {
                self.dns_reply(to, &a);
            }
            return;
        }
        let Some(f) = d.flows.get_mut(&id) else {
            return;
        };
        let (proto, app, dst) = f.key;
        let mut out = Vec::new();
        while let Ok(n) = f.sock.recv(buf) {
            f.last = StdInstant::now();
            out.push(buf[..n].to_vec());
        }
        for data in out {
            let n = if proto == 1 {
                emit_echo_reply(&mut self.scratch, dst.ip(), app.ip(), app.port(), &data)
            } else {
                super::udp::emit(&mut self.scratch, dst, app, &data)
            };
            if n > 0 {
                let _ = nix::unistd::write(&self.dev.fd, &self.scratch[..n]);
                self.shared
                    .counters
                    .udp_datagrams
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Close idle flows, forget unanswered queries.
    pub(super) fn direct_sweep(&mut self) {
        let Some(d) = self.direct.as_mut() else {
            return;
        };
        d.queries.retain(|_, (.., t)| t.elapsed() < DNS_TTL);
        let idle: Vec<u64> = d
            .flows
            .iter()
            .filter(|(_, f)| f.last.elapsed() > if f.key.0 == 1 { ICMP_IDLE } else { UDP_IDLE })
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            if let Some(f) = d.flows.remove(&id) {
                d.by_key.remove(&f.key);
            }
        }
    }
}

/// A connected UDP or ping socket to `dst` (non-blocking).
fn open_flow(proto: u8, dst: SocketAddr) -> io::Result<UdpSocket> {
    let (family, protocol) = match (dst.is_ipv4(), proto) {
        (true, 1) => (AddressFamily::Inet, Some(SockProtocol::Icmp)),
        (false, 1) => (AddressFamily::Inet6, Some(SockProtocol::IcmpV6)),
        (true, _) => (AddressFamily::Inet, None),
        (false, _) => (AddressFamily::Inet6, None),
    };
    let fd: OwnedFd = socket(
        family,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        protocol,
    )?;
    connect(fd.as_raw_fd(), &SockaddrStorage::from(dst))?;
    Ok(UdpSocket::from(fd))
}

/// An ICMP (v4) or ICMPv6 echo request: source, destination, echo id and
/// the offset of the ICMP message.
pub(super) fn echo_request(p: &[u8]) -> Option<(IpAddr, IpAddr, u16, usize)> {
    let (src, dst, off, want) = match p.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(p).ok()?;
            if ip.next_header() != IpProtocol::Icmp || ip.more_frags() || ip.frag_offset() != 0 {
                return None;
            }
            let off = usize::from(ip.header_len());
            (
                IpAddr::V4(ip.src_addr()),
                IpAddr::V4(ip.dst_addr()),
                off,
                8u8,
            )
        }
        6 => {
            let ip = Ipv6Packet::new_checked(p).ok()?;
            if ip.next_header() != IpProtocol::Icmpv6 {
                return None;
            }
            (
                IpAddr::V6(ip.src_addr()),
                IpAddr::V6(ip.dst_addr()),
                40,
                128u8,
            )
        }
        _ => return None,
    };
    let icmp = p.get(off..)?;
    if icmp.len() < 8 || icmp[0] != want || icmp[1] != 0 || src.is_unspecified() {
        return None;
    }
    Some((src, dst, u16::from_be_bytes([icmp[4], icmp[5]]), off))
}

/// Write the echo reply `msg` (as a ping socket returns it: the ICMP
/// message) from `src` to `dst` as an IP packet, its id set back to the
/// application's `id`; the packet's length (0 if it does not fit).
pub(super) fn emit_echo_reply(
    buf: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    id: u16,
    msg: &[u8],
) -> usize {
    if msg.len() < 8 {
        return 0;
    }
    let caps = ChecksumCapabilities::default();
    let (off, total) = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = 20 + msg.len();
            if total > buf.len() || total > 65535 {
                return 0;
            }
            let ip = Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Icmp,
                payload_len: msg.len(),
                hop_limit: 64,
            };
            ip.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..total]), &caps);
            (20, total)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let total = 40 + msg.len();
            if total > buf.len() || msg.len() > 65535 {
                return 0;
            }
            let ip = Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Icmpv6,
                payload_len: msg.len(),
                hop_limit: 64,
            };
            ip.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..total]));
            (40, total)
        }
        _ => return 0,
    };
    let icmp = &mut buf[off..total];
    icmp.copy_from_slice(msg);
    icmp[4..6].copy_from_slice(&id.to_be_bytes());
    icmp[2..4].copy_from_slice(&[0, 0]);
    let mut sum: u32 = 0;
    if let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst) {
        // The pseudo-header: addresses, length, next header.
        for a in [s.octets(), d.octets()] {
            sum += ones(&a);
        }
        sum += msg.len() as u32;
        sum += 58;
    }
    sum += ones(icmp);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    icmp[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    total
}

/// The sum of `b` as big-endian 16-bit words (odd length: zero-padded).
pub(super) fn ones(b: &[u8]) -> u32 {
    b.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_itself_is_refused() {
        let own: Vec<IpAddr> = vec!["192.0.2.7".parse().unwrap(), "2001:db8::7".parse().unwrap()];
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "::",
            "192.0.2.7",
            "::ffff:192.0.2.7",
            "2001:db8::7",
            "169.254.169.254",
            "fe80::1",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
        ] {
            assert!(!allowed(&own, ip.parse().unwrap()), "{ip}");
        }
        for ip in ["192.0.2.8", "10.1.2.3", "2001:db8::8", "::ffff:10.1.2.3"] {
            assert!(allowed(&own, ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn loopback_routes_to_self() {
        // 127.0.0.1's source is itself; a documentation address is not ours.
        assert!(routes_to_self("127.0.0.1:80".parse().unwrap()));
    }

    #[test]
    fn echo_replies_round_trip_with_valid_checksums() {
        for (s, d) in [("192.0.2.1", "10.0.0.2"), ("2001:db8::1", "fd00::2")] {
            let (s, d): (IpAddr, IpAddr) = (s.parse().unwrap(), d.parse().unwrap());
            // A reply as the ping socket gives it, id already the kernel's.
            let reply_type = if s.is_ipv4() { 0 } else { 129 };
            let msg = [reply_type, 0, 0, 0, 0x12, 0x34, 0, 1, b'p', b'i', b'n'];
            let mut buf = [0u8; 200];
            let n = emit_echo_reply(&mut buf, s, d, 0xbeef, &msg);
            assert!(n > 0);
            let off = if s.is_ipv4() { 20 } else { 40 };
            assert_eq!(&buf[off + 4..off + 6], &0xbeefu16.to_be_bytes());
            // The checksum verifies: the ones' complement sum is all ones.
            let mut sum = ones(&buf[off..n]);
            if let (IpAddr::V6(a), IpAddr::V6(b)) = (s, d) {
                sum += ones(&a.octets()) + ones(&b.octets()) + msg.len() as u32 + 58;
            }
            while sum >> 16 != 0 {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            assert_eq!(sum, 0xffff);
            // The request direction: an echo request is recognised.
            let mut req = buf;
            req[off] = if s.is_ipv4() { 8 } else { 128 };
            let (rs, rd, id, o) = echo_request(&req[..n]).unwrap();
            assert_eq!((rs, rd, id, o), (s, d, 0xbeef, off));
        }
    }
}
