//! What every proxy-served hop shares: check the proxy, put a TUN in Ni and
//! serve it with a tun2socks engine dialling in N(i−1), in an unprivileged
//! process of its own ([`crate::engine`]). socks,
//! http and tun2socks hops are this with their own [`ProxyConfig`]; tor and
//! ssh hops start their daemon first and then serve it the same way.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::Duration;

use proto::broker::ProcEntry;
use proto::profile::{DnsServer, HopOptions};

use super::{HopCx, HopError, RunningHop};
use crate::engine::{EngineProcess, Placement};
use crate::tun;
use crate::tun2socks::{self, Config, DnsConfig, ProxyConfig};

/// The TUN's MTU: it never meets a physical link, and large segments are
/// what make a userspace stack fast.
pub(super) const TUN_MTU: u32 = 65000;
/// The TUN device's name in every hop namespace.
pub(super) const TUN_NAME: &str = "tun0";
/// How long reaching and authenticating with a proxy may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A hop served by tun2socks.
#[derive(Debug)]
pub(super) struct ProxyHop {
    engine: EngineProcess,
    resolv_conf: String,
    resolvers: Vec<SocketAddr>,
    description: String,
}

/// "SOCKS5 proxy 192.0.2.9:1080", for progress lines and errors.
fn proxy_name(p: &ProxyConfig) -> String {
    match &p.unix {
        Some(path) => format!("{} proxy unix:{}", p.protocol.name(), path.display()),
        None => format!("{} proxy {}", p.protocol.name(), p.address),
    }
}

/// How names resolve behind a hop that has no `dns` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Names {
    /// Virtual DNS: the proxy resolves every name; `.onion` names too
    /// unless `onion` is false (then NXDOMAIN).
    Remote { onion: bool },
    /// No DNS at all (tor's `builtin_dns: false`): an empty resolv.conf.
    Off,
}

impl Names {
    /// Every hop's default.
    pub(super) const REMOTE: Names = Names::Remote { onion: true };
}

/// The DNS the application gets behind this hop: the hop's `dns` list if
/// given (forwarded through the proxy), else as `names` says, and what its
/// resolv.conf says.
fn dns_plan(
    options: &HopOptions,
    names: Names,
    outer_resolvers: &[SocketAddr],
) -> (DnsConfig, String, Vec<SocketAddr>) {
    match &options.dns {
        Some(list) if !list.is_empty() => {
            let servers: Vec<(SocketAddr, bool)> = list
                .iter()
                .map(|d| match d {
                    DnsServer::Udp(ip) => (SocketAddr::new(*ip, 53), false),
                    DnsServer::Tcp(sa) => (*sa, true),
                })
                .collect();
            let mut text = String::new();
            for (sa, _) in &servers {
                text += &format!("nameserver {}\n", sa.ip());
            }
            let resolvers = servers.iter().map(|(sa, _)| *sa).collect();
            (DnsConfig::Forward(servers), text, resolvers)
        }
        _ if names == Names::Off => (DnsConfig::Off, String::new(), Vec::new()),
        _ => (
            DnsConfig::Virtual {
                fallback: outer_resolvers.to_vec(),
                onion: names != (Names::Remote { onion: false }),
            },
            format!(
                "nameserver {}\nnameserver {}\n",
                tun2socks::DNS_V4,
                tun2socks::DNS_V6
            ),
            vec![SocketAddr::new(tun2socks::DNS_V4.into(), 53)],
        ),
    }
}

/// Check the proxy from N(i−1), then bring up the TUN in Ni and serve it.
pub(super) fn start(
    cx: &mut HopCx<'_>,
    proxy: ProxyConfig,
    names: Names,
) -> Result<ProxyHop, HopError> {
    let name = proxy_name(&proxy);
    let (dns, resolv_conf, resolvers) = dns_plan(&cx.hop.options, names, cx.outer_resolvers);
    let config = Config {
        proxy,
        dns,
        resolvers: cx.outer_resolvers.to_vec(),
        connect_timeout: CONNECT_TIMEOUT,
    };
    let placement = Placement::session_engine(cx.session_id, cx.rootless);
    // The engine process loads while the proxy is checked and the TUN made.
    let launched = EngineProcess::launch(cx.outer, placement)?;
    // A hop daemon's unix socket is checked by its hop (tor lists its
    // listeners; root mode the netbroker may not reach it at all).
    if config.proxy.unix.is_none() {
        (cx.progress)(format!("connecting to the {name}"));
        tun2socks::probe(cx.outer, &config)?;
    }
    let inner = cx.inner.get()?;
    let tun =
        tun::create(inner.fd.as_fd(), &mut inner.rtnl, TUN_NAME, TUN_MTU).map_err(HopError::Tun)?;
    let engine = launched.serve(tun, &config)?;
    (cx.progress)(format!("{TUN_NAME} is served through the {name}"));
    Ok(ProxyHop {
        engine,
        resolv_conf,
        resolvers,
        description: format!("{TUN_NAME} (tun2socks, MTU {TUN_MTU}) → {name}"),
    })
}

impl RunningHop for ProxyHop {
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
        self.engine.exited()
    }
}
