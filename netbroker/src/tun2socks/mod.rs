//! The in-process tun2socks engine of a proxy hop: a userspace TCP/IP stack
//! (smoltcp, driven by our own loop in [`stack`]) serves a TUN device in the
//! hop's inner namespace, and every TCP connection and UDP flow the
//! application opens becomes a connection through the hop's proxy (SOCKS4,
//! SOCKS4a, SOCKS5 or HTTP CONNECT, [`proxy`]) made from a socket in the
//! outer ("dial") namespace. DNS is answered in process ([`dns`]): a virtual
//! pool of fake addresses whose names are handed to the proxy, or queries
//! forwarded through the proxy.
//!
//! In a session the engine runs in a process of its own, without privileges
//! ([`crate::engine`], which uses [`Serving`]); [`start`] runs it on a
//! thread of the caller (benchmarks and tests).
//!
//! Kill switch by construction: the only address the engine ever connects to
//! is the proxy's ([`proxy::Proxy`] holds it, and nothing else in the engine
//! creates sockets), so when the proxy dies, traffic stops.
//!
//! Direct mode ([`DirectConfig`], `stack/direct.rs`; the rootless empty
//! chain's uplink) has no proxy: the engine connects to the application's
//! destinations itself, from the namespace it runs in, never to that
//! host's own addresses.
//!
//! Bounded by design: the engine is one thread with one epoll loop; proxy
//! dials are non-blocking and their handshakes are state machines driven by
//! that loop (no thread per connection; the one other thread is the DNS
//! forwarder of `DnsConfig::Forward`, one per engine). What the application
//! can make it hold is capped by [`Limits`]; past a cap the new connection
//! is refused at `connect()` (a RST to its SYN), a new UDP flow's datagrams
//! are dropped, a new forwarded DNS query gets SERVFAIL — existing
//! connections never stall — and the refusals are logged once per burst.
//! A connection's buffers are allocated only once its proxy dial succeeded,
//! and freed memory goes back to the kernel (see [`Limits`]).

#![forbid(unsafe_code)]

pub mod dns;
#[doc(hidden)]
pub mod fuzzing;
pub mod proxy;
mod stack;
pub mod stream;
mod udp;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::tun::Tun;

/// The TUN device's own IPv4 address in the inner namespace (inside
/// 198.18.0.0/15, the benchmarking range the testbed keeps free).
pub const TUN_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Prefix length of [`TUN_V4`] on the device.
pub const TUN_V4_PREFIX: u8 = 15;
/// The virtual DNS server the application's resolv.conf names.
pub const DNS_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The TUN device's own IPv6 address (a unique local address).
pub const TUN_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x7061, 0x6c6c, 0, 0, 0, 0, 1);
/// Prefix length of [`TUN_V6`] on the device.
pub const TUN_V6_PREFIX: u8 = 64;
/// The virtual DNS server's IPv6 address.
pub const DNS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x7061, 0x6c6c, 0, 0, 0, 0, 2);
/// Allocations from this size up get a mapping of their own (see
/// [`crate::sys::malloc_release_freed`]): every connection buffer does.
const MMAP_THRESHOLD: usize = 32 * 1024;
/// The default pool of fake addresses handed out by the virtual DNS.
pub const FAKE_POOL: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 128, 0), 17);

/// The proxy protocol of a hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Socks4,
    Socks4a,
    Socks5,
    HttpConnect,
}

impl Protocol {
    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Socks4 => "SOCKS4",
            Protocol::Socks4a => "SOCKS4a",
            Protocol::Socks5 => "SOCKS5",
            Protocol::HttpConnect => "HTTP",
        }
    }

    /// Whether the proxy accepts host names as targets.
    pub fn takes_names(self) -> bool {
        self != Protocol::Socks4
    }
}

/// Where and how to reach the proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub protocol: Protocol,
    /// IP or host name, and port.
    pub address: proto::profile::Endpoint,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A hop daemon's listener on a unix stream socket (tor's `SocksPort
    /// unix:`, ssh's `-D PATH`): dialled instead of `address`.
    pub unix: Option<std::path::PathBuf>,
}

/// How the application's DNS queries (to [`DNS_V4`]/[`DNS_V6`]) are answered.
#[derive(Debug, Clone)]
pub enum DnsConfig {
    /// Answer A queries with addresses from a fake pool ([`FAKE_POOL`]),
    /// AAAA with an empty NOERROR, and connect to the proxy by host name
    /// (SOCKS5/4a/HTTP); .onion names work this way through Tor. For SOCKS4
    /// (no names) names are resolved with DNS over TCP through the proxy to
    /// the `fallback` servers. Unless `onion`, `.onion` names get NXDOMAIN
    /// (RFC 7686) instead of an address.
    Virtual {
        fallback: Vec<SocketAddr>,
        onion: bool,
    },
    /// Forward the application's queries to these servers through the proxy:
    /// over UDP through SOCKS5 UDP ASSOCIATE to the first server whose flag
    /// (`tcp`) is false, when the proxy relays UDP; otherwise DNS over TCP,
    /// over one pooled connection per server, trying them in order.
    Forward(Vec<(SocketAddr, bool)>),
    /// No DNS: queries to the virtual DNS addresses are refused (REFUSED).
    Off,
}

/// Per-engine caps on what the application can make the engine hold, and
/// the behaviour past each (the defaults are [`Limits::default`]).
///
/// | cap | default | past it |
/// |---|---|---|
/// | `tcp_connections` (pending dials included) | 1024 | RST to the new SYN |
/// | `pending_dials` (proxy connections being made) | 256 | RST to the new SYN |
/// | `udp_flows` (SOCKS5 associations, by source) | 256 | the new flow's datagrams are dropped |
/// | `dns_pending` (forwarded queries awaiting an answer) | 1024 | SERVFAIL at once |
/// | `fake_names` (virtual DNS names remembered) | 16384 | the oldest name's address is reused |
///
/// Buffers: the first `large_buffer_connections` (32) connections get
/// 512 KiB each way (window scaling for full speed), later ones 64 KiB, so
/// the buffers of all connections together stay under ≈ 156 MiB even if
/// every one is full; they are calloc'd on their own mappings, so only the
/// pages a connection actually uses are resident, and they are returned to
/// the kernel when it closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub tcp_connections: usize,
    pub pending_dials: usize,
    pub udp_flows: usize,
    pub dns_pending: usize,
    pub fake_names: usize,
    pub large_buffer_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            tcp_connections: 1024,
            pending_dials: 256,
            udp_flows: 256,
            dns_pending: 1024,
            fake_names: 16384,
            large_buffer_connections: 32,
        }
    }
}

/// Everything the engine needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub proxy: ProxyConfig,
    pub dns: DnsConfig,
    /// Nameservers reachable in the dial namespace, to resolve a proxy host
    /// name (empty: the system resolver of the netbroker).
    pub resolvers: Vec<SocketAddr>,
    pub connect_timeout: Duration,
}

/// Direct mode (the rootless empty chain's uplink): no proxy; the engine
/// opens the application's TCP connections, UDP flows and ICMP echo flows
/// itself from the namespace it runs in, and forwards queries to
/// [`DNS_V4`]/[`DNS_V6`] to `resolvers`. Destinations on loopback, link-local,
/// multicast or unspecified addresses, in `refused`, or that the kernel
/// routes to this host are refused (a RST, a dropped datagram).
#[derive(Debug, Clone)]
pub struct DirectConfig {
    /// The host's own addresses (the netbroker lists them at start).
    pub refused: Vec<IpAddr>,
    /// The host's DNS servers (loopback ones too: the engine asks them,
    /// not the application).
    pub resolvers: Vec<SocketAddr>,
    pub connect_timeout: Duration,
}

/// Why the engine could not be started or a proxy check failed. Each
/// message is one line a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Tun2socksError {
    #[error("cannot reach the {proto} proxy {addr}: {reason}")]
    Unreachable {
        proto: &'static str,
        addr: String,
        reason: String,
    },
    #[error("the {proto} proxy {addr} rejected username '{user}'")]
    BadCredentials {
        proto: &'static str,
        addr: String,
        user: String,
    },
    #[error("the {proto} proxy {addr} {what}")]
    Protocol {
        proto: &'static str,
        addr: String,
        what: String,
    },
    #[error("cannot resolve the proxy's host name {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("tun2socks: {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Counters of a running engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// TCP connections accepted from the application.
    pub connections: u64,
    /// Bytes from the application to the proxy (TCP payload).
    pub bytes_up: u64,
    /// Bytes from the proxy to the application (TCP payload).
    pub bytes_down: u64,
    /// DNS queries answered.
    pub dns_queries: u64,
    /// UDP datagrams relayed (both ways).
    pub udp_datagrams: u64,
    /// Connections, flows and DNS queries refused at a [`Limits`] cap.
    pub refused: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connections: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    pub dns_queries: AtomicU64,
    pub udp_datagrams: AtomicU64,
    pub refused: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Stats {
        Stats {
            connections: self.connections.load(Ordering::Relaxed),
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
            dns_queries: self.dns_queries.load(Ordering::Relaxed),
            udp_datagrams: self.udp_datagrams.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// State shared between the engine thread and its owner.
#[derive(Debug)]
pub(crate) struct Shared {
    pub stop: AtomicBool,
    pub wake: EventFd,
    pub counters: Counters,
    pub exit: Mutex<Option<String>>,
}

/// A running engine. Dropping it stops the engine (its connections are
/// closed, the TUN descriptor too) and joins its thread.
#[derive(Debug)]
pub struct Engine {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// None while running; Some(reason) once the engine thread has ended.
    pub fn exited(&self) -> Option<String> {
        self.shared
            .exit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counters for tests and benchmarks.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.shared.wake.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Check the proxy before declaring the hop up: reach it within
/// `connect_timeout` and authenticate (SOCKS5 greeting and username/password
/// sub-negotiation; HTTP: a CONNECT whose 407 means bad credentials).
pub fn probe(dial_netns: BorrowedFd<'_>, cfg: &Config) -> Result<(), Tun2socksError> {
    crate::netns::run_in(dial_netns, || {
        let proxy = proxy::Proxy::resolve(cfg)?;
        proxy.check()
    })
    .map_err(|source| Tun2socksError::Io {
        what: "enter the dial namespace",
        source,
    })?
}

/// An engine set up on the calling thread, in the calling thread's network
/// namespace, that has not read a packet yet: the engine process confines
/// itself between [`proxy::Proxy::resolve`] and [`Serving::new`], then calls
/// [`Serving::run`] on the same thread.
pub struct Serving {
    engine: stack::Engine,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving").finish_non_exhaustive()
    }
}

/// Stops a [`Serving`] engine and reads its counters from another thread.
#[derive(Debug, Clone)]
pub struct Control {
    shared: Arc<Shared>,
}

impl Serving {
    /// Set the engine up on `tun` with an already resolved `proxy`.
    pub fn new(tun: Tun, proxy: proxy::Proxy, cfg: &Config) -> Result<Serving, Tun2socksError> {
        // As in [`start_with_limits`]: freed buffers go back to the kernel.
        crate::sys::malloc_release_freed(MMAP_THRESHOLD);
        let shared = Arc::new(Shared::new()?);
        let engine = stack::Engine::new(tun, proxy, cfg, Limits::default(), shared.clone())?;
        Ok(Serving { engine, shared })
    }

    /// Set an engine in direct mode up on `tun` ([`DirectConfig`]).
    pub fn direct(tun: Tun, cfg: &DirectConfig) -> Result<Serving, Tun2socksError> {
        crate::sys::malloc_release_freed(MMAP_THRESHOLD);
        let shared = Arc::new(Shared::new()?);
        let engine = stack::Engine::new_direct(tun, cfg, Limits::default(), shared.clone())?;
        Ok(Serving { engine, shared })
    }

    pub fn control(&self) -> Control {
        Control {
            shared: self.shared.clone(),
        }
    }

    /// Serve until stopped ("stopped") or the TUN device fails (why).
    pub fn run(mut self) -> String {
        match self.engine.run() {
            Ok(()) => "stopped".to_string(),
            Err(e) => e.to_string(),
        }
    }
}

impl Control {
    /// Make [`Serving::run`] return.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.shared.wake.write(1);
    }

    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }
}

impl Shared {
    fn new() -> Result<Shared, Tun2socksError> {
        let wake = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .map_err(|e| Tun2socksError::Io {
                what: "create an eventfd",
                source: e.into(),
            })?;
        Ok(Shared {
            stop: AtomicBool::new(false),
            wake,
            counters: Counters::default(),
            exit: Mutex::new(None),
        })
    }
}

/// Start the engine on its own thread, which enters `dial_netns` first so
/// every socket it creates belongs there; with the default [`Limits`].
pub fn start(tun: Tun, dial_netns: OwnedFd, cfg: Config) -> Result<Engine, Tun2socksError> {
    start_with_limits(tun, dial_netns, cfg, Limits::default())
}

/// An engine in direct mode ([`DirectConfig`]) on its own thread, which
/// enters `dial_netns` first (tests and benchmarks; in a session the engine
/// process runs it, [`Serving::direct`]).
pub fn start_direct(
    tun: Tun,
    dial_netns: OwnedFd,
    cfg: DirectConfig,
    limits: Limits,
) -> Result<Engine, Tun2socksError> {
    let name = format!("direct-{}", tun.name);
    start_thread(name, dial_netns, move |sh| {
        stack::Engine::new_direct(tun, &cfg, limits, sh)
    })
}

/// [`start`] with other caps (tests, benchmarks).
pub fn start_with_limits(
    tun: Tun,
    dial_netns: OwnedFd,
    cfg: Config,
    limits: Limits,
) -> Result<Engine, Tun2socksError> {
    let name = format!("tun2socks-{}", tun.name);
    start_thread(name, dial_netns, move |sh| {
        let proxy = proxy::Proxy::resolve(&cfg)?;
        stack::Engine::new(tun, proxy, &cfg, limits, sh)
    })
}

/// Run an engine on a thread of its own called `name`, which enters
/// `dial_netns` and then builds the engine with `make`; returns once it is
/// set up (or why it could not be).
fn start_thread(
    name: String,
    dial_netns: OwnedFd,
    make: impl FnOnce(Arc<Shared>) -> Result<stack::Engine, Tun2socksError> + Send + 'static,
) -> Result<Engine, Tun2socksError> {
    // Large buffers on mappings of their own, so that freed ones go back to
    // the kernel instead of staying in the heap (glibc otherwise raises its
    // mmap threshold after the first free and keeps them all).
    crate::sys::malloc_release_freed(MMAP_THRESHOLD);
    let shared = Arc::new(Shared::new()?);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let sh = shared.clone();
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let result = (|| {
                nix::sched::setns(&dial_netns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                    |e| Tun2socksError::Io {
                        what: "enter the dial namespace",
                        source: e.into(),
                    },
                )?;
                drop(dial_netns);
                make(sh.clone())
            })();
            let mut engine = match result {
                Ok(e) => {
                    let _ = ready_tx.send(Ok(()));
                    e
                }
                Err(e) => {
                    *sh.exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let reason = match engine.run() {
                Ok(()) => "stopped".to_string(),
                Err(e) => e.to_string(),
            };
            drop(engine);
            *sh.exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
        })
        .map_err(|source| Tun2socksError::Io {
            what: "spawn the engine thread",
            source,
        })?;
    let mut engine = Engine {
        shared,
        thread: Some(thread),
    };
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(engine),
        Ok(Err(e)) => {
            if let Some(t) = engine.thread.take() {
                let _ = t.join();
            }
            Err(e)
        }
        Err(_) => Err(Tun2socksError::Io {
            what: "start the engine thread",
            source: io::Error::other("it ended before it was ready"),
        }),
    }
}

/// A short, lower-case description of an I/O error for one-line messages
/// ("connection refused", "timed out").
pub(crate) fn short_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out".into(),
        io::ErrorKind::UnexpectedEof => "it closed the connection".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        _ => {
            let s = e.to_string();
            let s = match s.find(" (os error") {
                Some(i) => s[..i].to_string(),
                None => s,
            };
            let mut c = s.chars();
            match c.next() {
                Some(f) => f.to_lowercase().chain(c).collect(),
                None => s,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_short_and_lower_case() {
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(short_reason(&refused), "connection refused");
        let unreach = io::Error::from_raw_os_error(libc::ENETUNREACH);
        assert_eq!(short_reason(&unreach), "network is unreachable");
        assert_eq!(
            short_reason(&io::Error::from(io::ErrorKind::TimedOut)),
            "timed out"
        );
    }
}
