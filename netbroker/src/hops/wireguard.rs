//! `wireguard`: a WireGuard tunnel from a wg-quick style file
//! ([`super::wgconf`]) on a device `wg0` in Ni that gets the interface's
//! addresses, a route per AllowedIPs prefix and the MTU; its UDP socket
//! lives in N(i−1), so the tunnel travels through hops 1…i−1. Endpoint host
//! names are resolved in N(i−1). Two devices do that:
//!
//! - **Kernel WireGuard** (root mode, module present, a hop that neither
//!   serves the application's namespace nor dials from the host's): the
//!   netbroker asks for a link of kind `wireguard` over a route socket in
//!   N(i−1), created straight in Ni (`IFLA_NET_NS_FD`). The kernel binds
//!   the device's socket in the namespace that asked, so the link never
//!   exists in N(i−1) and goes with Ni if the netbroker is killed. Key and
//!   peers are set over generic netlink ([`crate::wggenl`]); the peers'
//!   handshake times and byte counters come from GET_DEVICE. No process
//!   runs for it.
//! - **Userspace WireGuard** otherwise: the packet engine process
//!   ([`crate::engine::wireguard`]) runs gotatun's device, started in
//!   N(i−1) where it binds its UDP socket, serving a TUN `wg0` in Ni.
//!   Rootless always: the netbroker holds no privilege in the caller's own
//!   namespace, where hop 1's socket would be made, and cannot have the
//!   module loaded from a user namespace; the engine needs nothing. The
//!   last hop too: in the application's namespace a kernel device answers
//!   `exec --root`, which holds NET_ADMIN there and could read the private
//!   key or rebind the device's socket in N(i−1). Hop 1 dialing from the
//!   host's namespace too: a kernel socket has no owner uid, and
//!   `network.bridge.routes` tells the chain's own host traffic from the
//!   host's by socket uid (the tunnel would loop into the chain). And with
//!   no module (the kernel answers EOPNOTSUPP for the link kind); any other
//!   kernel error fails the hop, the link deleted.
//!
//! The hop's description and a debug line say which one runs and why.
//!
//! A WireGuard peer that dies says nothing: the hop counts it dead when it
//! stops answering while we send (nothing received for [`SILENCE`] after
//! bytes went out: a live peer answers any data within WireGuard's
//! 10 s passive keepalive), or when its last handshake is older than
//! WireGuard's reject-after time (180 s, no session key is valid then).
//! Both devices report the same counters, read by the same code.

#![forbid(unsafe_code)]

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsFd;
use std::time::{Duration, Instant, SystemTime};

use proto::broker::ProcEntry;
use proto::engine::{WgPeer, WgPeerState};
use proto::profile::HopKind;

use super::wgconf::{self, short_key, WgConfig};
use super::{HopCx, HopError, HopType, RunningHop};
use crate::engine::{EngineProcess, Placement};
use crate::netns::run_in;
use crate::rtnl::Rtnl;
use crate::tun::Tun;
use crate::wggenl::{PeerClock, WgGenl};

pub(super) struct WireguardHop;

/// The TUN device's name in Ni.
const TUN_NAME: &str = "wg0";
/// wg-quick's default MTU (1500 less WireGuard's IPv6 overhead).
const DEFAULT_MTU: u32 = 1420;
/// How long the first handshake with every peer may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Nothing heard from a peer this long after sending to it: it is gone.
pub(super) const SILENCE: Duration = Duration::from_secs(25);
/// Bytes sent since the peer was last heard that count as data (more than
/// the persistent keepalives of [`SILENCE`] at one a second).
const DATA_SENT: u64 = 1024;
/// WireGuard's REJECT_AFTER_TIME: a session older than this is dead.
const REJECT_AFTER: Duration = Duration::from_secs(180);

impl HopType for WireguardHop {
    fn start(&self, cx: &mut HopCx<'_>) -> Result<Box<dyn RunningHop>, HopError> {
        let HopKind::Wireguard(w) = &cx.hop.kind else {
            return Err(HopError::Unsupported(cx.hop.kind.name()));
        };
        let text = std::fs::read_to_string(&w.config).map_err(|e| {
            HopError::Failed(format!("read the WireGuard config {}: {e}", w.config))
        })?;
        let conf = wgconf::parse(&text)
            .map_err(|e| HopError::Failed(format!("WireGuard config {}: {e}", w.config)))?;
        if !conf.ignored.is_empty() {
            (cx.progress)(format!(
                "ignoring wg-quick settings that do not apply here: {}",
                conf.ignored.join(", ")
            ));
        }
        let peers = resolve_peers(cx, &conf)?;
        start(cx, conf, peers).map(|h| Box::new(h) as Box<dyn RunningHop>)
    }
}

/// The peers with their endpoints resolved in N(i−1).
fn resolve_peers(cx: &HopCx<'_>, conf: &WgConfig) -> Result<Vec<WgPeer>, HopError> {
    let mut out = Vec::new();
    for p in &conf.peers {
        let endpoint = match &p.endpoint {
            None => None,
            Some((host, port)) => Some(resolve(cx, host, *port)?),
        };
        out.push(WgPeer {
            public_key: p.public_key,
            preshared_key: p.preshared_key,
            endpoint,
            allowed_ips: p
                .allowed_ips
                .iter()
                .map(|(ip, l)| network(*ip, *l))
                .collect(),
            keepalive: p.keepalive,
        });
    }
    Ok(out)
}

fn resolve(cx: &HopCx<'_>, host: &str, port: u16) -> Result<SocketAddr, HopError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let servers = cx.outer_resolvers.to_vec();
    let found = crate::netns::run_in(cx.outer, || {
        if servers.is_empty() {
            (host, port)
                .to_socket_addrs()
                .map(|a| a.map(|a| a.ip()).collect::<Vec<_>>())
        } else {
            crate::tun2socks::dns::resolve_udp(&servers, host, Duration::from_secs(5))
        }
    })
    .and_then(|r| r);
    match found {
        // IPv4 first: the UDP path before the hop is more likely to have it.
        Ok(ips) => ips
            .iter()
            .find(|ip| ip.is_ipv4())
            .or(ips.first())
            .map(|ip| SocketAddr::new(*ip, port))
            .ok_or_else(|| {
                HopError::Failed(format!("resolve the WireGuard Endpoint {host}: no address"))
            }),
        Err(e) => Err(HopError::Failed(format!(
            "resolve the WireGuard Endpoint {host}: {}",
            crate::tun2socks::short_reason(&e)
        ))),
    }
}

/// `ip/len` with the host bits cleared (a route's destination).
fn network(ip: IpAddr, len: u8) -> (IpAddr, u8) {
    let masked = match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    };
    (masked, len)
}

/// Which WireGuard carries a hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavour {
    Kernel,
    /// The engine's, and why not the kernel's.
    Userspace(&'static str),
}

impl fmt::Display for Flavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Flavour::Kernel => write!(f, "kernel WireGuard"),
            Flavour::Userspace(why) => write!(f, "userspace WireGuard, {why}"),
        }
    }
}

/// Why the kernel said no to the link kind.
const NO_MODULE: &str = "no kernel module";

/// Why a hop runs userspace WireGuard whatever the kernel has (None: try
/// the kernel first). `from_host`: N(i−1) is the host's namespace (root
/// mode's hop 1 without an N0 of the session's own).
fn kernel_ruled_out(rootless: bool, last: bool, from_host: bool) -> Option<&'static str> {
    if rootless {
        Some("rootless")
    } else if last {
        Some("in the application's namespace")
    } else if from_host {
        Some("its socket would be in the host's namespace")
    } else {
        None
    }
}

/// What creating the kernel link said: made (true), no module (false:
/// userspace instead), or an error that fails the hop.
fn created(r: io::Result<()>) -> Result<bool, HopError> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(false),
        Err(e) => Err(HopError::Failed(format!(
            "create the kernel WireGuard device {TUN_NAME}: {e}"
        ))),
    }
}

/// The kernel device if it may be tried and `kernel` makes one (None from
/// it: no module), with the flavour that carries the hop.
fn select<K>(
    ruled_out: Option<&'static str>,
    kernel: impl FnOnce() -> Result<Option<K>, HopError>,
) -> Result<(Option<K>, Flavour), HopError> {
    if let Some(why) = ruled_out {
        return Ok((None, Flavour::Userspace(why)));
    }
    Ok(match kernel()? {
        Some(k) => (Some(k), Flavour::Kernel),
        None => (None, Flavour::Userspace(NO_MODULE)),
    })
}

/// The device that carries the hop, asked the same questions either way.
#[derive(Debug)]
enum Device {
    Userspace(EngineProcess),
    Kernel(KernelDevice),
}

impl Device {
    /// Some(reason) once the device is gone.
    fn exited(&mut self) -> Option<String> {
        match self {
            Device::Userspace(engine) => engine.exited(),
            Device::Kernel(k) => k.gone.clone(),
        }
    }

    /// The peers' states in configuration order; None once it is gone.
    fn peers(&mut self) -> Option<Vec<WgPeerState>> {
        match self {
            Device::Userspace(engine) => engine.peers(),
            Device::Kernel(k) => k.peers(),
        }
    }

    fn pids(&self) -> Vec<ProcEntry> {
        match self {
            Device::Userspace(engine) => vec![engine.proc_entry()],
            Device::Kernel(_) => Vec::new(),
        }
    }
}

/// A kernel WireGuard device in Ni, with a generic netlink socket there.
#[derive(Debug)]
struct KernelDevice {
    genl: WgGenl,
    clock: PeerClock,
    /// Why it stopped answering, once it has.
    gone: Option<String>,
    /// Declared last: dropped (the link deleted) after the rest.
    link: KernelLink,
}

impl KernelDevice {
    fn peers(&mut self) -> Option<Vec<WgPeerState>> {
        if self.gone.is_some() {
            return None;
        }
        match self.genl.get_device(self.link.index) {
            Ok(reported) => Some(
                self.clock
                    .states(&reported, SystemTime::now(), Instant::now()),
            ),
            Err(e) => {
                self.gone = Some(format!("the kernel WireGuard device {TUN_NAME}: {e}"));
                None
            }
        }
    }
}

/// The kernel link, deleted when dropped (a failed setup, or the hop
/// stopping); were the netbroker killed, it goes with Ni.
#[derive(Debug)]
struct KernelLink {
    /// A route socket in Ni, where the link is.
    rtnl: Rtnl,
    index: u32,
}

impl Drop for KernelLink {
    fn drop(&mut self) {
        if let Err(e) = self.rtnl.delete_link(self.index) {
            tracing::warn!("delete the kernel WireGuard device {TUN_NAME}: {e}");
        }
    }
}

/// A WireGuard hop that is up.
#[derive(Debug)]
struct WgHop {
    device: Device,
    peers: Vec<Watched>,
    resolv_conf: String,
    resolvers: Vec<SocketAddr>,
    description: String,
}

/// What the hop remembers of a peer to tell when it has gone silent.
#[derive(Debug)]
struct Watched {
    name: String,
    has_endpoint: bool,
    rx: u64,
    /// `tx` when `rx` last grew (or the hop started).
    tx_then: u64,
    /// Since when data has gone out with nothing heard back.
    sent_since: Option<Instant>,
}

fn start(cx: &mut HopCx<'_>, conf: WgConfig, peers: Vec<WgPeer>) -> Result<WgHop, HopError> {
    let mtu = conf.mtu.unwrap_or(DEFAULT_MTU);
    let from_host = !cx.rootless && crate::netns::is_current(cx.outer);
    let ruled_out = kernel_ruled_out(cx.rootless, cx.inner.is_last(), from_host);
    let (kernel, flavour) = select(ruled_out, || kernel_device(cx, &conf, &peers, mtu))?;
    tracing::debug!("hop {} ({TUN_NAME}): {flavour}", cx.index + 1);
    let names: Vec<String> = peers
        .iter()
        .map(|p| match p.endpoint {
            Some(ep) => format!("peer {} at {ep}", short_key(&p.public_key)),
            None => format!("peer {}", short_key(&p.public_key)),
        })
        .collect();
    let with_endpoint: Vec<bool> = peers.iter().map(|p| p.endpoint.is_some()).collect();
    let handshaking = format!("handshaking with {} ({flavour})", names.join(", "));
    let mut device = match kernel {
        Some(k) => {
            (cx.progress)(handshaking);
            Device::Kernel(k)
        }
        None => {
            let placement = Placement::session_engine(cx.session_id, cx.rootless);
            let launched = EngineProcess::launch(cx.outer, placement)?;
            let tun = make_tun(cx.inner.get()?, &conf, &peers, mtu)?;
            (cx.progress)(handshaking);
            Device::Userspace(launched.serve_wireguard(tun, conf.private_key, peers)?)
        }
    };
    wait_for_handshakes(cx, &mut device, &names, &with_endpoint)?;
    (cx.progress)(format!(
        "{TUN_NAME} is up ({flavour}): WireGuard handshake done"
    ));
    let resolv_conf: String = conf
        .dns
        .iter()
        .map(|ip| format!("nameserver {ip}\n"))
        .collect();
    if conf.dns.is_empty() {
        (cx.progress)("the WireGuard config has no DNS: no name server behind this hop".into());
    }
    let addrs: Vec<String> = conf
        .addresses
        .iter()
        .map(|(ip, l)| format!("{ip}/{l}"))
        .collect();
    Ok(WgHop {
        device,
        peers: names
            .into_iter()
            .zip(with_endpoint)
            .map(|(name, has_endpoint)| Watched {
                name,
                has_endpoint,
                rx: 0,
                tx_then: 0,
                sent_since: None,
            })
            .collect(),
        resolvers: conf.dns.iter().map(|ip| SocketAddr::new(*ip, 53)).collect(),
        resolv_conf,
        description: format!(
            "{TUN_NAME} ({flavour}; MTU {mtu}) {} → {} peer(s)",
            addrs.join(" "),
            conf.peers.len()
        ),
    })
}

/// The kernel device, set up in Ni with its socket in N(i−1); None if the
/// kernel has no WireGuard (EOPNOTSUPP for the link kind). Past the link's
/// creation, any failure deletes it and fails the hop.
fn kernel_device(
    cx: &mut HopCx<'_>,
    conf: &WgConfig,
    peers: &[WgPeer],
    mtu: u32,
) -> Result<Option<KernelDevice>, HopError> {
    let fail = |what: &str, e: io::Error| {
        HopError::Failed(format!("kernel WireGuard device {TUN_NAME}: {what}: {e}"))
    };
    let mut outer = run_in(cx.outer, Rtnl::open)
        .and_then(|r| r)
        .map_err(|e| fail("open a route socket where the hop connects from", e))?;
    let inner = cx.inner.get()?;
    let ns = inner.fd.as_fd();
    let mut rtnl = run_in(ns, Rtnl::open)
        .and_then(|r| r)
        .map_err(|e| fail("open a route socket in the hop's namespace", e))?;
    if !created(outer.add_wireguard(TUN_NAME, ns))? {
        return Ok(None);
    }
    let index = rtnl
        .link_index(TUN_NAME)
        .map_err(|e| fail("find its index", e))?;
    let mut link = KernelLink { rtnl, index };
    let mut genl = run_in(ns, WgGenl::open)
        .and_then(|r| r)
        .map_err(|e| fail("open the wireguard generic netlink family", e))?;
    genl.set_device(index, &conf.private_key, peers)
        .map_err(|e| fail("set its key and peers", e))?;
    configure(&mut link.rtnl, index, conf, peers, mtu)?;
    Ok(Some(KernelDevice {
        genl,
        clock: PeerClock::new(peers.iter().map(|p| p.public_key).collect()),
        gone: None,
        link,
    }))
}

/// Make the TUN `wg0` in Ni for the engine, [`configure`]d.
fn make_tun(
    inner: &mut crate::netns::Netns,
    conf: &WgConfig,
    peers: &[WgPeer],
    mtu: u32,
) -> Result<Tun, HopError> {
    let (fd, name) = run_in(inner.fd.as_fd(), || crate::tun::open_here(TUN_NAME))
        .map_err(|e| HopError::Failed(format!("create {TUN_NAME}: {e}")))?
        .map_err(HopError::Tun)?;
    let index = inner
        .rtnl
        .link_index(&name)
        .map_err(|e| HopError::Failed(format!("{TUN_NAME}: find its index: {e}")))?;
    configure(&mut inner.rtnl, index, conf, peers, mtu)?;
    Ok(Tun {
        fd,
        name,
        index,
        mtu,
    })
}

/// Give `wg0` (either device; `rtnl` in Ni) its MTU and addresses, bring it
/// up and route each AllowedIPs prefix to it.
fn configure(
    rtnl: &mut Rtnl,
    index: u32,
    conf: &WgConfig,
    peers: &[WgPeer],
    mtu: u32,
) -> Result<(), HopError> {
    let fail = |what: String| {
        move |e: std::io::Error| HopError::Failed(format!("{TUN_NAME}: {what}: {e}"))
    };
    rtnl.set_mtu(index, mtu)
        .map_err(fail(format!("set the MTU {mtu}")))?;
    for (ip, len) in &conf.addresses {
        rtnl.add_address(index, *ip, *len)
            .map_err(fail(format!("add the address {ip}/{len}")))?;
    }
    rtnl.set_up(index).map_err(fail("bring it up".into()))?;
    let mut routes: Vec<(IpAddr, u8)> = peers.iter().flat_map(|p| p.allowed_ips.clone()).collect();
    routes.sort();
    routes.dedup();
    for (ip, len) in routes {
        match rtnl.add_dev_route(ip, len, index) {
            // The interface's own prefix already routes there.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            r => r.map_err(fail(format!("add the route to {ip}/{len}")))?,
        }
    }
    Ok(())
}

/// Wait until every peer with an endpoint has completed a handshake.
fn wait_for_handshakes(
    cx: &HopCx<'_>,
    device: &mut Device,
    names: &[String],
    with_endpoint: &[bool],
) -> Result<(), HopError> {
    let began = Instant::now();
    loop {
        cx.check_cancelled()?;
        if let Some(why) = device.exited() {
            return Err(HopError::Failed(why));
        }
        let Some(states) = device.peers() else {
            let why = device
                .exited()
                .unwrap_or_else(|| "the WireGuard device stopped".into());
            return Err(HopError::Failed(why));
        };
        let waiting = states
            .iter()
            .zip(with_endpoint)
            .position(|(s, e)| *e && s.handshake_age_ms.is_none());
        let Some(i) = waiting else {
            return Ok(());
        };
        if began.elapsed() >= HANDSHAKE_TIMEOUT {
            return Err(HopError::Failed(format!(
                "no handshake from {} within {}s: check Endpoint and keys",
                names[i],
                HANDSHAKE_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl RunningHop for WgHop {
    fn resolv_conf(&self) -> String {
        self.resolv_conf.clone()
    }
    fn resolvers(&self) -> Vec<SocketAddr> {
        self.resolvers.clone()
    }
    fn describe(&self) -> String {
        self.description.clone()
    }
    fn pids(&self) -> Vec<ProcEntry> {
        self.device.pids()
    }
    fn exited(&mut self) -> Option<String> {
        if let Some(why) = self.device.exited() {
            return Some(why);
        }
        let Some(states) = self.device.peers() else {
            return self.device.exited();
        };
        let now = Instant::now();
        for (w, s) in self.peers.iter_mut().zip(states) {
            if !w.has_endpoint {
                continue;
            }
            if s.rx_bytes != w.rx {
                w.rx = s.rx_bytes;
                w.tx_then = s.tx_bytes;
                w.sent_since = None;
                continue;
            }
            // Data, not persistent keepalives (32 bytes each, unanswered
            // by design), went out since we last heard from it.
            if s.tx_bytes < w.tx_then + DATA_SENT {
                w.sent_since = None;
            } else if now.duration_since(*w.sent_since.get_or_insert(now)) >= SILENCE {
                return Some(format!(
                    "{} stopped answering: nothing received for {} s while sending to it",
                    w.name,
                    SILENCE.as_secs()
                ));
            }
            if s.handshake_age_ms
                .is_some_and(|ms| ms >= REJECT_AFTER.as_millis() as u64)
            {
                return Some(format!(
                    "no handshake with {} for {} s: its session expired",
                    w.name,
                    REJECT_AFTER.as_secs()
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_is_tried_only_as_root_between_the_host_and_the_application() {
        assert_eq!(kernel_ruled_out(false, false, false), None);
        for (last, host) in [(false, false), (true, false), (false, true), (true, true)] {
            assert_eq!(kernel_ruled_out(true, last, host), Some("rootless"));
        }
        assert!(kernel_ruled_out(false, true, false).is_some());
        assert!(kernel_ruled_out(false, false, true).is_some());
        assert!(kernel_ruled_out(false, true, true).is_some());
    }

    /// The kernel attempt as the hop makes it, with the link's creation
    /// answering `made`.
    fn attempt(made: io::Result<()>) -> Result<(Option<&'static str>, Flavour), HopError> {
        select(None, || Ok(created(made)?.then_some("kernel device")))
    }

    #[test]
    fn no_module_falls_back_to_userspace() {
        let (k, f) = attempt(Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))).unwrap();
        assert_eq!(k, None);
        assert_eq!(f, Flavour::Userspace(NO_MODULE));
        assert_eq!(f.to_string(), "userspace WireGuard, no kernel module");
    }

    #[test]
    fn a_made_link_is_the_kernel_device() {
        let (k, f) = attempt(Ok(())).unwrap();
        assert_eq!(k, Some("kernel device"));
        assert_eq!(f, Flavour::Kernel);
        assert_eq!(f.to_string(), "kernel WireGuard");
    }

    #[test]
    fn any_other_kernel_error_fails_the_hop() {
        for errno in [libc::EPERM, libc::EEXIST, libc::ENOMEM] {
            let e = attempt(Err(io::Error::from_raw_os_error(errno))).unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains("create the kernel WireGuard device wg0"),
                "{text}"
            );
        }
        // And a failure past the link's creation is the hop's error, not
        // a fallback.
        let e = select::<()>(None, || Err(HopError::Failed("set its key".into()))).unwrap_err();
        assert_eq!(e.to_string(), "set its key");
    }

    #[test]
    fn a_ruled_out_kernel_is_not_even_tried() {
        let (k, f) = select::<()>(Some("rootless"), || panic!("tried the kernel")).unwrap();
        assert!(k.is_none());
        assert_eq!(f.to_string(), "userspace WireGuard, rootless");
    }

    /// The real kernel, root only, in a forked child's own namespaces (never
    /// the host's): a link of kind `wireguard` asked for from one namespace
    /// into another. Without the module (these machines) the kernel's
    /// answer must be the fallback's EOPNOTSUPP; with it, the link must be
    /// in the inner namespace only, take a key and a peer over generic
    /// netlink and report that peer back.
    #[test]
    fn the_kernel_makes_the_link_in_ni_or_says_it_has_no_module() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let status = crate::testutil::in_child(|| {
            let s = |e: &dyn fmt::Display| e.to_string();
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| s(&e))?;
            let mut outer = Rtnl::open().map_err(|e| s(&e))?;
            let mut ni = crate::netns::create().map_err(|e| s(&e))?;
            let made = created(outer.add_wireguard(TUN_NAME, ni.fd.as_fd())).map_err(|e| s(&e))?;
            if !made {
                eprintln!("no WireGuard module: only the fallback's errno was checked");
                return match WgGenl::open() {
                    Err(_) => Ok(()),
                    Ok(_) => Err("no link kind but a wireguard genl family".into()),
                };
            }
            if outer.link_index(TUN_NAME).is_ok() {
                return Err("the link is in the namespace that asked for it".into());
            }
            let index = ni.rtnl.link_index(TUN_NAME).map_err(|e| s(&e))?;
            let peer = WgPeer {
                public_key: [7; 32],
                preshared_key: None,
                endpoint: Some("192.0.2.1:51820".parse().unwrap()),
                allowed_ips: vec![("10.9.0.0".parse().unwrap(), 16)],
                keepalive: Some(25),
            };
            let mut genl = run_in(ni.fd.as_fd(), WgGenl::open)
                .and_then(|r| r)
                .map_err(|e| s(&e))?;
            genl.set_device(index, &[1; 32], std::slice::from_ref(&peer))
                .map_err(|e| s(&e))?;
            let got = genl.get_device(index).map_err(|e| s(&e))?;
            let states =
                PeerClock::new(vec![[7; 32]]).states(&got, SystemTime::now(), Instant::now());
            if got.len() != 1 || states[0].handshake_age_ms.is_some() {
                return Err(format!("{got:?}"));
            }
            ni.rtnl.delete_link(index).map_err(|e| s(&e))?;
            Ok(())
        });
        assert_eq!(status, Ok(()));
    }

    #[test]
    fn routes_clear_host_bits() {
        assert_eq!(
            network("10.1.2.3".parse().unwrap(), 16),
            ("10.1.0.0".parse().unwrap(), 16)
        );
        assert_eq!(
            network("10.1.2.3".parse().unwrap(), 0),
            ("0.0.0.0".parse().unwrap(), 0)
        );
        assert_eq!(
            network("fd00::1:2".parse().unwrap(), 112),
            ("fd00::1:0".parse().unwrap(), 112)
        );
    }
}
