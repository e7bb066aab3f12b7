//! `wireguard`: a WireGuard tunnel from a wg-quick style file
//! ([`super::wgconf`]), in userspace: the packet engine process
//! ([`crate::engine::wireguard`]) runs the device, started in N(i−1) where
//! it binds its UDP socket, serving a TUN device `wg0` that the netbroker
//! made in Ni and gave the interface's addresses, a route per AllowedIPs
//! prefix and the MTU. Endpoint host names are resolved in N(i−1).
//!
//! Kernel WireGuard is not used: the hosts this was written on have no
//! module, and the userspace device needs no privilege at all.
//!
//! A WireGuard peer that dies says nothing: the hop counts it dead when it
//! stops answering while we send (nothing received for [`SILENCE`] after
//! bytes went out: a live peer answers any data within WireGuard's
//! 10 s passive keepalive), or when its last handshake is older than
//! WireGuard's reject-after time (180 s, no session key is valid then).

#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use proto::broker::ProcEntry;
use proto::engine::WgPeer;
use proto::profile::{HopKind, Service};

use super::wgconf::{self, short_key, WgConfig};
use super::{HopCx, HopError, HopType, RunningHop};
use crate::engine::{EngineError, EngineProcess, Placement};
use crate::tun::Tun;

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

/// A WireGuard hop that is up.
#[derive(Debug)]
struct WgHop {
    engine: EngineProcess,
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
    let placement = Placement {
        run_as: (!cx.rootless).then(|| {
            let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            let uid = proto::profile::service_uid(cx.session_id, Service::Engine, &passwd);
            (uid, uid)
        }),
    };
    let one_line = |e| match e {
        EngineError::Failed(why) => HopError::Failed(why),
        e => HopError::Failed(e.to_string()),
    };
    let launched = EngineProcess::launch(cx.outer, placement).map_err(one_line)?;
    let mtu = conf.mtu.unwrap_or(DEFAULT_MTU);
    let inner = cx.inner.get()?;
    let tun = make_tun(inner, &conf, &peers, mtu)?;
    let names: Vec<String> = peers
        .iter()
        .map(|p| match p.endpoint {
            Some(ep) => format!("peer {} at {ep}", short_key(&p.public_key)),
            None => format!("peer {}", short_key(&p.public_key)),
        })
        .collect();
    (cx.progress)(format!("handshaking with {}", names.join(", ")));
    let with_endpoint: Vec<bool> = peers.iter().map(|p| p.endpoint.is_some()).collect();
    let mut engine = launched
        .serve_wireguard(tun, conf.private_key, peers)
        .map_err(one_line)?;
    wait_for_handshakes(cx, &mut engine, &names, &with_endpoint)?;
    (cx.progress)(format!("{TUN_NAME} is up: WireGuard handshake done"));
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
        engine,
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
            "{TUN_NAME} (WireGuard, userspace, MTU {mtu}) {} → {} peer(s)",
            addrs.join(" "),
            conf.peers.len()
        ),
    })
}

/// Make `wg0` in Ni: MTU, addresses, up, a route per AllowedIPs prefix.
fn make_tun(
    inner: &mut crate::netns::Netns,
    conf: &WgConfig,
    peers: &[WgPeer],
    mtu: u32,
) -> Result<Tun, HopError> {
    let (fd, name) = crate::netns::run_in(inner.fd.as_fd(), || crate::tun::open_here(TUN_NAME))
        .map_err(|e| HopError::Failed(format!("create {TUN_NAME}: {e}")))?
        .map_err(HopError::Tun)?;
    let rtnl = &mut inner.rtnl;
    let fail = |what: String| {
        move |e: std::io::Error| HopError::Failed(format!("{TUN_NAME}: {what}: {e}"))
    };
    let index = rtnl
        .link_index(&name)
        .map_err(fail("find its index".into()))?;
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
    Ok(Tun {
        fd,
        name,
        index,
        mtu,
    })
}

/// Wait until every peer with an endpoint has completed a handshake.
fn wait_for_handshakes(
    cx: &HopCx<'_>,
    engine: &mut EngineProcess,
    names: &[String],
    with_endpoint: &[bool],
) -> Result<(), HopError> {
    let began = Instant::now();
    loop {
        cx.check_cancelled()?;
        if let Some(why) = engine.exited() {
            return Err(HopError::Failed(why));
        }
        let Some(states) = engine.peers() else {
            let why = engine
                .exited()
                .unwrap_or_else(|| "the WireGuard engine stopped".into());
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
        vec![self.engine.proc_entry()]
    }
    fn exited(&mut self) -> Option<String> {
        if let Some(why) = self.engine.exited() {
            return Some(why);
        }
        let Some(states) = self.engine.peers() else {
            return self.engine.exited();
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
