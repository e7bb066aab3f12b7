//! The engine loop: one thread, one epoll set over the TUN descriptor, the
//! proxy sockets and a wake-up eventfd; smoltcp terminates the application's
//! TCP connections, and each is spliced to a proxied stream by copying
//! straight between smoltcp's socket buffers and the kernel socket (no
//! per-packet allocation). Proxy dials are non-blocking and their handshakes
//! are driven by this loop ([`dial`]); a connection gets its smoltcp socket
//! and buffers only once its dial succeeded, so a pending dial costs a
//! socket and a few hundred bytes. Caps: [`super::Limits`].
//!
//! Why epoll and not tokio — measured. A current-thread tokio
//! variant of this loop (`extra/bench/tokio-loop.patch`: `AsyncFd` on the
//! TUN, the eventfd and every socket, `tokio::time` for the poll delay and
//! the dial deadlines; same stack, relay, dials and caps) passed the engine
//! (seccomp) and tun2socks tests unchanged. Release builds, run in
//! alternation (A B B A …) on a 2-core machine shared with four other
//! builds (load 1–15), medians (range):
//!
//! | | epoll | tokio |
//! |---|---|---|
//! | engine CPU per GB, up / down (`engine-cpu.sh`, n=4) | 0.481 / 0.438 s | 0.481 / 0.488 s |
//! | engine CPU per 1000 short connections (n=4) | 178 ms (165–200) | 230 ms (220–250) |
//! | throughput, in-process, MTU 65000, up / down (n=4) | 8.2 / 7.4 Gbit/s | 8.7 / 7.4 Gbit/s |
//! | throughput, session `engine-session.sh`, up / down (n=3) | 3.2 / 3.6 Gbit/s | 2.5 / 3.3 Gbit/s (noise) |
//! | idle engine process RSS (n=10) | 1.83 MiB (1.51–1.88) | 2.35 MiB (1.96–2.60) |
//! | idle session, all processes, RSS (n=3) | 13.7 MiB | 14.7 MiB |
//! | 10,000 pending connects: threads / RSS max (bounds bench, n=2) | 2 / 4.35 MiB | 2 / 4.55 MiB |
//! | after 20,000 short connections, RSS from idle (n=2) | +0.3 MiB | +0.45 MiB |
//! | spawn → Ready of the engine (n=10) | 5.4 ms | 5.1 ms (noise) |
//! | `exec --one-shot` through one SOCKS hop (`ab-startup.py`, n=40) | 45.1 ms | 44.3 ms (noise) |
//! | `pallium-netbroker` binary | 3.42 MB | +114 KiB |
//!
//! Throughput and start-up are the same within noise; tokio costs half a MiB
//! per idle engine, 30% more CPU per new connection (part of it the
//! prototype's registration shim) and 11% more per GB downloaded, and it
//! removes no code: smoltcp is polled, not async, so the tokio loop is this
//! loop with a registration layer under it. So the epoll loop stays.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};

use super::stream::ProxyStream;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpListenEndpoint};

use super::dns::FakePool;
use super::proxy::{Proxy, Target};
use super::udp::{self, Kind};
use super::{
    Config, DirectConfig, DnsConfig, Limits, Shared, Tun2socksError, DNS_V4, DNS_V6, FAKE_POOL,
};
use crate::tun::Tun;

mod dial;
mod direct;
pub(crate) use direct::dial_tcp;
mod icmp;
mod relay;

use dial::{Dial, Poll, Purpose};
use relay::{spawn_forwarder, Flow, Reply};

/// Per-connection buffer sizes (each way) of the first
/// `Limits::large_buffer_connections` connections: large enough for window
/// scaling to keep a loopback-speed path busy.
const TCP_BUF_LARGE: usize = 512 * 1024;
/// The same for connections beyond those.
const TCP_BUF_SMALL: usize = 64 * 1024;
/// Longest SYN held back while its dial is made (a SYN carrying data is
/// dropped instead: the application sends it again).
const SYN_HOLD_MAX: usize = 256;
/// Queries waiting for the DNS forwarder thread.
const FORWARD_QUEUE: usize = 256;
/// How long a forwarded query's id mapping is kept without an answer.
const DNS_PENDING_TTL: Duration = Duration::from_secs(10);
/// A connection whose handshake the application never completes.
const HANDSHAKE_IDLE: Duration = Duration::from_secs(30);
/// Packets read from the TUN per loop iteration before the sockets are
/// served again.
const TUN_BATCH: usize = 64;
/// Datagrams queued per UDP flow while its association is being set up,
/// and their bytes at most: the TUN's MTU lets a datagram be 64 KiB, and 32
/// of those in each of 256 flows made the engine hold 430 MiB while a proxy
/// was slow to associate.
const UDP_PENDING: usize = 32;
const UDP_PENDING_BYTES: usize = 64 * 1024;
const UDP_IDLE: Duration = Duration::from_secs(120);
/// smoltcp's own addresses: the "router" that AnyIP routes everything via.
const ROUTER_V4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 18, 0, 3);
const ROUTER_V6: std::net::Ipv6Addr =
    std::net::Ipv6Addr::new(0xfd00, 0x7061, 0x6c6c, 0, 0, 0, 0, 3);

const TOKEN_TUN: u64 = 0;
const TOKEN_WAKE: u64 = 1;
const KIND_TCP: u64 = 0;
const KIND_UDP: u64 = 1;
const KIND_CTL: u64 = 2;
const KIND_DIAL: u64 = 3;

fn token(id: u64, kind: u64) -> u64 {
    (id << 2) | kind
}

/// What the DNS forwarder thread reports.
enum Done {
    Dns(Reply, Vec<u8>),
}

/// The TUN descriptor as a smoltcp device holding one received packet.
struct TunDevice {
    fd: OwnedFd,
    rx: Vec<u8>,
    rx_len: usize,
    tx: Vec<u8>,
    mtu: usize,
}

struct Rx<'a>(&'a [u8]);
struct Tx<'a> {
    fd: &'a OwnedFd,
    buf: &'a mut [u8],
}

impl smoltcp::phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl smoltcp::phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let buf = &mut self.buf[..len];
        let r = f(buf);
        // A packet the kernel cannot take now is lost; TCP retransmits.
        let _ = nix::unistd::write(self.fd, buf);
        r
    }
}

impl Device for TunDevice {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        if self.rx_len == 0 {
            return None;
        }
        let len = std::mem::take(&mut self.rx_len);
        Some((
            Rx(&self.rx[..len]),
            Tx {
                fd: &self.fd,
                buf: &mut self.tx,
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx {
            fd: &self.fd,
            buf: &mut self.tx,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        device_capabilities(self.mtu)
    }
}

/// The engine's device: IP packets of up to `mtu` bytes. The kernel hands
/// the TUN complete, verified packets: checksums are computed for what we
/// send but not checked again on receipt.
pub(super) fn device_capabilities(mtu: usize) -> DeviceCapabilities {
    let mut caps = DeviceCapabilities::default();
    caps.medium = Medium::Ip;
    caps.max_transmission_unit = mtu;
    let mut ck = ChecksumCapabilities::default();
    ck.ipv4 = Checksum::Tx;
    ck.tcp = Checksum::Tx;
    ck.udp = Checksum::Tx;
    ck.icmpv4 = Checksum::Tx;
    ck.icmpv6 = Checksum::Tx;
    caps.checksum = ck;
    caps
}

/// One TCP connection of the application.
struct Conn {
    /// Its smoltcp socket: None while the proxy dial is being made.
    handle: Option<SocketHandle>,
    /// Its buffers are of the large kind (counted in `Engine::large`).
    large: bool,
    key: (SocketAddr, SocketAddr),
    stream: Option<ProxyStream>,
    readable: bool,
    writable: bool,
    /// We shut down the proxy stream's write side (the app sent FIN).
    shut_wr: bool,
    /// The proxy stream reached EOF (we closed the app side).
    eof: bool,
    /// The handshake failed or the stream broke: reap once the RST is out.
    failed: bool,
    born: StdInstant,
    /// A DNS-over-TCP connection to the virtual DNS address, served here:
    /// the bytes received so far.
    dns: Option<Vec<u8>>,
    /// The application's SYN, held back while the proxy connects: fed to
    /// the stack once it has, so the application's connect() completes only
    /// then — or is refused (RST) when the proxy cannot connect, as it would
    /// be without a proxy.
    syn: Option<Vec<u8>>,
}

pub(crate) struct Engine {
    dev: TunDevice,
    iface: Interface,
    sockets: SocketSet<'static>,
    conns: HashMap<u64, Conn>,
    by_key: HashMap<(SocketAddr, SocketAddr), u64>,
    flows: HashMap<u64, Flow>,
    flow_by_app: HashMap<SocketAddr, u64>,
    udp_refused: bool,
    next_id: u64,
    epoll: Epoll,
    /// The proxy; None in direct mode.
    proxy: Option<Arc<Proxy>>,
    /// Direct mode: the engine connects to the destinations itself.
    direct: Option<direct::Direct>,
    shared: Arc<Shared>,
    limits: Limits,
    /// Proxy dials in progress, by the id of their connection or flow.
    dials: HashMap<u64, Dial>,
    /// Connections that hold large buffers.
    large: usize,
    refusals: Refusals,
    /// Whether the heap was trimmed since the engine last held anything.
    trimmed: bool,
    done_rx: Receiver<Done>,
    pool: Option<FakePool>,
    forwarder: Option<SyncSender<(Reply, Vec<u8>)>>,
    /// Forwarded DNS over UDP through the SOCKS5 relay to this server.
    udp_dns: Option<SocketAddr>,
    /// The forwarded servers' own addresses, answered like the virtual one.
    forward_addrs: Vec<SocketAddr>,
    /// The flow all UDP-forwarded queries share.
    dns_flow: Option<u64>,
    /// Rewritten (random) query id -> (the application's id, its address,
    /// the DNS address it asked, when it was sent).
    dns_ids: HashMap<u16, (u16, SocketAddr, SocketAddr, StdInstant)>,
    scratch: Vec<u8>,
    frame: Vec<u8>,
    last_sweep: StdInstant,
    last_expiry: StdInstant,
}

/// What was refused at a cap since the last warning: logged once per burst
/// (at most every 10 s), never per packet.
#[derive(Default)]
struct Refusals {
    count: u64,
    what: &'static str,
    last_log: Option<StdInstant>,
}

impl Refusals {
    fn note(&mut self, what: &'static str, shared: &Shared) {
        shared.counters.refused.fetch_add(1, Ordering::Relaxed);
        self.count += 1;
        self.what = what;
        if self
            .last_log
            .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
        {
            tracing::warn!(
                "tun2socks: {} refused at the engine's cap of {what}",
                self.count
            );
            self.count = 0;
            self.last_log = Some(StdInstant::now());
        }
    }
}

fn io_err(what: &'static str) -> impl FnOnce(Errno) -> Tun2socksError {
    move |e| Tun2socksError::Io {
        what,
        source: e.into(),
    }
}

fn now() -> Instant {
    Instant::now()
}

impl Engine {
    pub(crate) fn new(
        tun: Tun,
        proxy: Proxy,
        cfg: &Config,
        limits: Limits,
        shared: Arc<Shared>,
    ) -> Result<Engine, Tun2socksError> {
        Engine::build(
            tun,
            Some(proxy),
            &cfg.dns,
            cfg.connect_timeout,
            None,
            limits,
            shared,
        )
    }

    /// An engine in direct mode: no proxy, the application's connections
    /// are opened from the engine's own namespace ([`direct`]), DNS goes
    /// to `cfg.resolvers`.
    pub(crate) fn new_direct(
        tun: Tun,
        cfg: &DirectConfig,
        limits: Limits,
        shared: Arc<Shared>,
    ) -> Result<Engine, Tun2socksError> {
        let mut e = Engine::build(
            tun,
            None,
            &DnsConfig::Off,
            cfg.connect_timeout,
            Some(direct::Direct::new(cfg)),
            limits,
            shared,
        )?;
        e.direct_resolvers(&cfg.resolvers);
        Ok(e)
    }

    fn build(
        tun: Tun,
        proxy: Option<Proxy>,
        dns: &DnsConfig,
        connect_timeout: Duration,
        direct: Option<direct::Direct>,
        limits: Limits,
        shared: Arc<Shared>,
    ) -> Result<Engine, Tun2socksError> {
        let mtu = tun.mtu as usize;
        let mut dev = TunDevice {
            fd: tun.fd,
            rx: vec![0; mtu.max(1500)],
            rx_len: 0,
            tx: vec![0; mtu.max(1500)],
            mtu,
        };
        let mut iface = Interface::new(IfaceConfig::new(HardwareAddress::Ip), &mut dev, now());
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(ROUTER_V4), 32));
            let _ = a.push(IpCidr::new(IpAddress::Ipv6(ROUTER_V6), 128));
        });
        let routes = iface.routes_mut();
        let _ = routes.add_default_ipv4_route(ROUTER_V4);
        let _ = routes.add_default_ipv6_route(ROUTER_V6);
        iface.set_any_ip(true);

        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(io_err("create epoll"))?;
        epoll
            .add(
                dev.fd.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_TUN),
            )
            .map_err(io_err("watch the TUN device"))?;
        epoll
            .add(
                shared.wake.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_WAKE),
            )
            .map_err(io_err("watch the eventfd"))?;
        let (done_tx, done_rx) = sync_channel(FORWARD_QUEUE);
        let proxy = proxy.map(Arc::new);
        let udp_dns = match dns {
            DnsConfig::Forward(servers)
                if proxy
                    .as_ref()
                    .is_some_and(|p| p.protocol == super::Protocol::Socks5) =>
            {
                servers.iter().find(|(_, tcp)| !tcp).map(|(a, _)| *a)
            }
            _ => None,
        };
        let (pool, forwarder) = match dns {
            DnsConfig::Virtual { onion, .. } => {
                let mut pool = FakePool::new(FAKE_POOL.0, FAKE_POOL.1);
                pool.set_onion(*onion);
                pool.set_capacity(limits.fake_names);
                (Some(pool), None)
            }
            DnsConfig::Off => (None, None),
            DnsConfig::Forward(servers) => {
                let servers: Vec<SocketAddr> = servers.iter().map(|(a, _)| *a).collect();
                let Some(proxy) = proxy.clone() else {
                    return Err(Tun2socksError::Io {
                        what: "forward DNS",
                        source: io::Error::other("no proxy"),
                    });
                };
                (
                    None,
                    Some(spawn_forwarder(
                        proxy,
                        servers,
                        connect_timeout,
                        done_tx.clone(),
                        shared.clone(),
                    )?),
                )
            }
        };
        Ok(Engine {
            dev,
            iface,
            sockets: SocketSet::new(vec![]),
            conns: HashMap::new(),
            by_key: HashMap::new(),
            flows: HashMap::new(),
            flow_by_app: HashMap::new(),
            udp_refused: false,
            next_id: 1,
            epoll,
            proxy,
            direct,
            shared,
            limits,
            dials: HashMap::new(),
            large: 0,
            refusals: Refusals::default(),
            trimmed: true,
            done_rx,
            pool,
            forwarder,
            udp_dns,
            forward_addrs: match dns {
                DnsConfig::Forward(servers) => servers.iter().map(|(a, _)| *a).collect(),
                DnsConfig::Virtual { .. } | DnsConfig::Off => Vec::new(),
            },
            dns_flow: None,
            dns_ids: HashMap::new(),
            scratch: vec![0; 65536 + 64],
            frame: Vec::with_capacity(65536 + 300),
            last_sweep: StdInstant::now(),
            last_expiry: StdInstant::now(),
        })
    }

    /// Run until stopped (Ok) or the TUN device fails (Err).
    pub(crate) fn run(&mut self) -> Result<(), Tun2socksError> {
        let mut events = vec![EpollEvent::empty(); 256];
        let mut busy = true;
        loop {
            let timeout = if busy {
                EpollTimeout::ZERO
            } else {
                let d = self
                    .iface
                    .poll_delay(now(), &self.sockets)
                    .map(|d| d.total_millis())
                    .unwrap_or(1000)
                    .min(if self.dials.is_empty() { 1000 } else { 250 });
                EpollTimeout::from(d as u16)
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => return Err(io_err("wait for events")(e)),
            };
            if self.shared.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            for ev in &events[..n] {
                let t = ev.data();
                let f = ev.events();
                match t {
                    TOKEN_TUN => {}
                    TOKEN_WAKE => {
                        let _ = self.shared.wake.read();
                    }
                    _ => self.on_event(t >> 2, t & 3, f),
                }
            }
            self.finish_helpers();
            let more_tun = self.read_tun()?;
            let ts = now();
            let pumped = self.pump();
            while self.iface.poll_egress(ts, &mut self.dev, &mut self.sockets)
                != smoltcp::iface::PollResult::None
            {}
            self.reap();
            if !self.dials.is_empty() && self.last_expiry.elapsed() > Duration::from_millis(200) {
                self.expire_dials();
            }
            if self.last_sweep.elapsed() > Duration::from_secs(5) {
                self.sweep();
            }
            busy = more_tun || pumped;
        }
    }

    fn on_event(&mut self, id: u64, kind: u64, f: EpollFlags) {
        let rd = f.intersects(
            EpollFlags::EPOLLIN
                | EpollFlags::EPOLLHUP
                | EpollFlags::EPOLLERR
                | EpollFlags::EPOLLRDHUP,
        );
        let wr = f.intersects(EpollFlags::EPOLLOUT | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR);
        match kind {
            KIND_TCP => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.readable |= rd;
                    c.writable |= wr;
                }
            }
            KIND_UDP if self.direct.is_some() => self.direct_readable(id),
            KIND_UDP => self.udp_from_relay(id),
            KIND_DIAL => self.drive_dial(id),
            KIND_CTL => {
                // The association's control connection: any data or EOF ends it.
                let dead = match self.flows.get_mut(&id).and_then(|fl| fl.ready.as_mut()) {
                    Some((ctl, _)) => {
                        let mut b = [0u8; 64];
                        !matches!((&*ctl).read(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
                    }
                    None => false,
                };
                if dead {
                    self.drop_flow(id);
                }
            }
            _ => {}
        }
    }

    /// Read up to a batch of packets from the TUN; true if more may wait.
    fn read_tun(&mut self) -> Result<bool, Tun2socksError> {
        for _ in 0..TUN_BATCH {
            let n = match nix::unistd::read(&self.dev.fd, &mut self.dev.rx) {
                Ok(0) => return Err(io_err("read the TUN device")(Errno::EIO)),
                Ok(n) => n,
                Err(Errno::EAGAIN) => return Ok(false),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(io_err("read the TUN device")(e)),
            };
            match udp::classify(&self.dev.rx[..n]) {
                Some((src, dst, Kind::Tcp { syn })) => {
                    if syn {
                        self.on_syn(src, dst);
                        if self.hold_syn(src, dst, n) {
                            continue;
                        }
                    }
                    self.dev.rx_len = n;
                    let _ = self
                        .iface
                        .poll_ingress_single(now(), &mut self.dev, &mut self.sockets);
                    self.dev.rx_len = 0;
                }
                Some((
                    src,
                    dst,
                    Kind::Udp {
                        payload: (off, len),
                    },
                )) => {
                    let rx = std::mem::take(&mut self.dev.rx);
                    self.on_udp(src, dst, &rx[off..off + len]);
                    self.dev.rx = rx;
                }
                // ICMP echo in direct mode; on a proxy hop it is answered
                // "prohibited" (icmp.rs); anything else is not relayed.
                _ if self.direct.is_some() => self.direct_other(n),
                _ => self.refuse_icmp(n),
            }
        }
        Ok(true)
    }

    /// Answer an ICMP echo request of length `n` in the receive buffer
    /// "administratively prohibited" ([`icmp`]); drop anything else.
    fn refuse_icmp(&mut self, n: usize) {
        let k = icmp::prohibited(&mut self.scratch, &self.dev.rx[..n]);
        if k > 0 {
            let _ = nix::unistd::write(&self.dev.fd, &self.scratch[..k]);
        }
    }

    /// Keep the SYN of length `n` in the receive buffer back if its proxy
    /// connection is still being made (a retransmission replaces it).
    fn hold_syn(&mut self, src: SocketAddr, dst: SocketAddr, n: usize) -> bool {
        let Some(c) = self
            .by_key
            .get(&(src, dst))
            .and_then(|id| self.conns.get_mut(id))
        else {
            return false;
        };
        if c.dns.is_some() || c.stream.is_some() || c.failed {
            return false;
        }
        if n > SYN_HOLD_MAX {
            // Dropped: its retransmission is answered once the dial is done.
            return true;
        }
        let held = c.syn.get_or_insert_with(Vec::new);
        held.clear();
        held.extend_from_slice(&self.dev.rx[..n]);
        true
    }

    /// Feed a held SYN to the stack: answered with SYN-ACK by the
    /// connection's listening socket, or with RST once that is closed.
    fn release_syn(&mut self, syn: &[u8]) {
        let n = syn.len().min(self.dev.rx.len());
        self.dev.rx[..n].copy_from_slice(&syn[..n]);
        self.dev.rx_len = n;
        let _ = self
            .iface
            .poll_ingress_single(now(), &mut self.dev, &mut self.sockets);
        self.dev.rx_len = 0;
    }

    fn target_for(&self, dst: SocketAddr) -> Option<Target> {
        match (dst.ip(), &self.pool) {
            (IpAddr::V4(ip), Some(pool)) if pool.contains(ip) => pool
                .name_of(ip)
                .map(|n| Target::Name(n.to_string(), dst.port())),
            _ => Some(Target::Ip(dst)),
        }
    }

    /// Whether `dst` is a DNS service answered here: Some(true) for port 53
    /// of the virtual DNS addresses and the forwarded servers themselves
    /// (the application's resolv.conf may name either), Some(false) for any
    /// other port of the virtual DNS addresses (refused).
    fn dns_service(&self, dst: SocketAddr) -> Option<bool> {
        if dst.ip() == IpAddr::V4(DNS_V4) || dst.ip() == IpAddr::V6(DNS_V6) {
            Some(dst.port() == 53)
        } else if self.forward_addrs.contains(&dst) {
            Some(true)
        } else {
            None
        }
    }

    /// A connection request: the proxy dial is started at once (its SYN is
    /// held back meanwhile); a connection to the DNS service gets its
    /// listening socket at once. Past a cap, nothing is made and the SYN is
    /// answered with a RST (no socket listens for it).
    fn on_syn(&mut self, src: SocketAddr, dst: SocketAddr) {
        if self.by_key.contains_key(&(src, dst)) {
            return;
        }
        // Only port 53 of the DNS address is served; a fake address nobody
        // was given has no target. smoltcp answers both with a reset.
        let dns = match self.dns_service(dst) {
            Some(false) => return,
            Some(true) => true,
            None => false,
        };
        let Some(target) = self.target_for(dst) else {
            return;
        };
        if self.conns.len() >= self.limits.tcp_connections {
            return self.refusals.note("TCP connections", &self.shared);
        }
        if !dns && self.dials.len() >= self.limits.pending_dials {
            return self.refusals.note("pending proxy dials", &self.shared);
        }
        let id = self.next_id;
        let mut conn = Conn {
            handle: None,
            large: false,
            key: (src, dst),
            stream: None,
            readable: false,
            writable: false,
            shut_wr: false,
            eof: false,
            failed: false,
            born: StdInstant::now(),
            dns: dns.then(Vec::new),
            syn: None,
        };
        if dns {
            if !self.listen(&mut conn, 4096, 65536 + 2) {
                return;
            }
        } else {
            let started = match (&self.direct, &self.proxy) {
                (Some(d), _) => {
                    if !d.admits(dst) {
                        tracing::debug!("tun2socks: {dst}: refused, an address of this host");
                        return;
                    }
                    Dial::direct(dst, d.timeout())
                }
                (None, Some(p)) => Dial::start(p, Purpose::Tcp(target)),
                (None, None) => return,
            };
            let dial = match started {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!("tun2socks: {src} -> {dst}: {e}");
                    return;
                }
            };
            if !self.watch_dial(id, dial) {
                return;
            }
            self.shared
                .counters
                .connections
                .fetch_add(1, Ordering::Relaxed);
        }
        self.next_id += 1;
        self.trimmed = false;
        self.by_key.insert((src, dst), id);
        self.conns.insert(id, conn);
        if !dns {
            // It may be done already (or failed at once).
            self.drive_dial(id);
        }
    }

    /// A listening smoltcp socket for exactly the connection's destination,
    /// with buffers of `rx` and `tx` bytes.
    fn listen(&mut self, c: &mut Conn, rx: usize, tx: usize) -> bool {
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; rx]),
            tcp::SocketBuffer::new(vec![0; tx]),
        );
        sock.set_nagle_enabled(false);
        sock.set_ack_delay(None);
        sock.set_keep_alive(Some(smoltcp::time::Duration::from_secs(60)));
        let ep = IpListenEndpoint {
            addr: Some(IpAddress::from(c.key.1.ip())),
            port: c.key.1.port(),
        };
        if sock.listen(ep).is_err() {
            return false;
        }
        c.handle = Some(self.sockets.add(sock));
        true
    }

    /// Register a dial's (new) socket with the epoll set.
    fn watch_dial(&mut self, id: u64, mut dial: Dial) -> bool {
        dial.fresh = false;
        let ok = self
            .epoll
            .add(
                dial.stream(),
                EpollEvent::new(
                    EpollFlags::EPOLLIN
                        | EpollFlags::EPOLLOUT
                        | EpollFlags::EPOLLRDHUP
                        | EpollFlags::EPOLLET,
                    token(id, KIND_DIAL),
                ),
            )
            .is_ok();
        if ok {
            self.dials.insert(id, dial);
        }
        ok
    }

    /// Make progress on the dial `id` and hand over its result when done.
    fn drive_dial(&mut self, id: u64) {
        let Some(dial) = self.dials.get_mut(&id) else {
            return;
        };
        let poll = match &self.proxy {
            Some(p) => dial.drive(p),
            None => dial.drive_direct(),
        };
        if let Poll::Pending = poll {
            if dial.fresh {
                if let Some(d) = self.dials.remove(&id) {
                    if !self.watch_dial(id, d) {
                        self.dial_done(id, Err(None));
                    }
                }
            }
            return;
        }
        let Some(dial) = self.dials.remove(&id) else {
            return;
        };
        match poll {
            Poll::Ready(udp) => {
                let stream = dial.into_stream();
                self.dial_done(id, Ok((stream, udp)));
            }
            Poll::Failed(e) => self.dial_done(id, Err(Some(e))),
            Poll::Pending => {}
        }
    }

    /// Dials past their deadline fail ("timed out").
    fn expire_dials(&mut self) {
        self.last_expiry = StdInstant::now();
        let now = StdInstant::now();
        let late: Vec<u64> = self
            .dials
            .iter()
            .filter(|(_, d)| d.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.dials.remove(&id);
            let timed_out = io::Error::from(io::ErrorKind::TimedOut);
            let e = match &self.proxy {
                Some(p) => p.unreachable_error(&timed_out),
                None => direct::dial_error(
                    self.conns
                        .get(&id)
                        .map(|c| c.key.1)
                        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
                    &timed_out,
                ),
            };
            self.dial_done(id, Err(Some(e)));
        }
    }

    /// A dial ended: to its connection or UDP flow.
    fn dial_done(
        &mut self,
        id: u64,
        r: Result<(ProxyStream, Option<UdpSocket>), Option<Tun2socksError>>,
    ) {
        if self.flows.contains_key(&id) {
            let r = match r {
                Ok((ctl, Some(udp))) => Ok((ctl, udp)),
                Ok((_, None)) | Err(None) => Err(None),
                Err(Some(e)) => Err(Some(e)),
            };
            return self.finish_udp(id, r);
        }
        self.finish_tcp(id, r.map(|(s, _)| s));
    }

    fn finish_helpers(&mut self) {
        while let Ok(done) = self.done_rx.try_recv() {
            match done {
                Done::Dns(to, reply) => self.dns_reply(to, &reply),
            }
        }
    }

    /// The proxy connection of `id` is open (its socket now listens and
    /// the held SYN is answered with SYN-ACK), or could not be made (the
    /// SYN is answered with RST, and the connection forgotten).
    fn finish_tcp(&mut self, id: u64, r: Result<ProxyStream, Option<Tun2socksError>>) {
        let Some(mut c) = self.conns.remove(&id) else {
            return;
        };
        let stream = match r {
            Ok(stream) => Some(stream),
            Err(e) => {
                if let Some(e) = e {
                    tracing::debug!("tun2socks: {} -> {}: {e}", c.key.0, c.key.1);
                }
                None
            }
        };
        let large = self.large < self.limits.large_buffer_connections;
        let size = if large { TCP_BUF_LARGE } else { TCP_BUF_SMALL };
        let registered = stream.is_some_and(|s| {
            let ok = self
                .epoll
                .modify(
                    s.as_fd(),
                    &mut EpollEvent::new(
                        EpollFlags::EPOLLIN
                            | EpollFlags::EPOLLOUT
                            | EpollFlags::EPOLLRDHUP
                            | EpollFlags::EPOLLET,
                        token(id, KIND_TCP),
                    ),
                )
                .is_ok();
            if ok && self.listen(&mut c, size, size) {
                c.stream = Some(s);
                true
            } else {
                false
            }
        });
        let syn = c.syn.take();
        if registered {
            c.large = large;
            self.large += usize::from(large);
            c.readable = true;
            c.writable = true;
            self.conns.insert(id, c);
        } else {
            self.by_key.remove(&c.key);
        }
        if let Some(syn) = syn {
            self.release_syn(&syn);
        }
    }

    /// Move data both ways for every connection; true if some could move
    /// further right away.
    fn pump(&mut self) -> bool {
        let mut more = false;
        let mut up = 0u64;
        let mut down = 0u64;
        let mut queries = Vec::new();
        for (id, c) in self.conns.iter_mut() {
            let Some(handle) = c.handle else {
                continue;
            };
            if let Some(buf) = c.dns.as_mut() {
                let sock = self.sockets.get_mut::<tcp::Socket>(handle);
                while sock.can_recv() {
                    let _ = sock.recv(|b| {
                        buf.extend_from_slice(b);
                        (b.len(), ())
                    });
                }
                while buf.len() >= 2 {
                    let l = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                    if buf.len() < 2 + l {
                        break;
                    }
                    queries.push((*id, buf[2..2 + l].to_vec()));
                    buf.drain(..2 + l);
                }
                if !c.shut_wr && !sock.may_recv() && sock.state() == tcp::State::CloseWait {
                    sock.close();
                    c.shut_wr = true;
                }
                continue;
            }
            let Some(stream) = c.stream.as_ref() else {
                continue;
            };
            let sock = self.sockets.get_mut::<tcp::Socket>(handle);
            let mut broken = false;
            // Application -> proxy.
            let mut rounds = 0;
            while c.writable && sock.can_recv() && rounds < 4 {
                rounds += 1;
                let r = sock.recv(|buf| match (&*stream).write(buf) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                });
                match r {
                    Ok(Ok(n)) => up += n as u64,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => c.writable = false,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(_)) | Err(_) => {
                        broken = true;
                        break;
                    }
                }
            }
            if c.writable && sock.can_recv() {
                more = true;
            }
            // The application's FIN, once everything before it is delivered.
            if !c.shut_wr
                && sock.recv_queue() == 0
                && matches!(
                    sock.state(),
                    tcp::State::CloseWait
                        | tcp::State::LastAck
                        | tcp::State::Closing
                        | tcp::State::TimeWait
                )
            {
                let _ = stream.shutdown(std::net::Shutdown::Write);
                c.shut_wr = true;
            }
            // Proxy -> application.
            let mut rounds = 0;
            while !broken && c.readable && !c.eof && sock.can_send() && rounds < 4 {
                rounds += 1;
                let r = sock.send(|buf| match (&*stream).read(buf) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                });
                match r {
                    Ok(Ok(0)) => {
                        c.eof = true;
                        sock.close();
                    }
                    Ok(Ok(n)) => down += n as u64,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => c.readable = false,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(_)) | Err(_) => broken = true,
                }
            }
            if c.readable && !c.eof && sock.can_send() {
                more = true;
            }
            if broken {
                c.failed = true;
                sock.abort();
            }
        }
        let ctr = &self.shared.counters;
        ctr.bytes_up.fetch_add(up, Ordering::Relaxed);
        ctr.bytes_down.fetch_add(down, Ordering::Relaxed);
        for (id, q) in queries {
            self.dns_query(Reply::Tcp(id), &q);
        }
        more
    }

    /// Forget connections whose application side is gone.
    fn reap(&mut self) {
        let mut gone = Vec::new();
        for (id, c) in &self.conns {
            // A connection still dialling ends with its dial.
            let Some(handle) = c.handle else {
                continue;
            };
            let sock = self.sockets.get::<tcp::Socket>(handle);
            let state = sock.state();
            let done = match state {
                tcp::State::Closed => c.stream.is_some() || c.failed || c.dns.is_some(),
                tcp::State::TimeWait => c.shut_wr,
                // A SYN that smoltcp never took (it dropped the segment), or
                // a handshake the application never completed.
                tcp::State::Listen | tcp::State::SynReceived => c.born.elapsed() > HANDSHAKE_IDLE,
                _ => false,
            };
            if done {
                gone.push(*id);
            }
        }
        for id in gone {
            if let Some(c) = self.conns.remove(&id) {
                self.by_key.remove(&c.key);
                if let Some(h) = c.handle {
                    self.sockets.remove(h);
                }
                self.large -= usize::from(c.large);
                self.trimmed = false;
                // Dropping the stream closes it (and removes it from epoll).
            }
        }
    }

    fn sweep(&mut self) {
        self.last_sweep = StdInstant::now();
        // Freed buffers are unmapped at once; what the heap keeps of the
        // rest goes back once things were freed.
        if !self.trimmed {
            crate::sys::malloc_trim();
            self.trimmed = true;
        }
        self.dns_ids
            .retain(|_, (.., sent)| sent.elapsed() < DNS_PENDING_TTL);
        self.direct_sweep();
        let idle: Vec<u64> = self
            .flows
            .iter()
            .filter(|(_, f)| f.last.elapsed() > UDP_IDLE)
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            self.drop_flow(id);
        }
    }
}
