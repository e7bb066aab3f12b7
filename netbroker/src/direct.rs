//! The rootless empty chain's uplink "direct": no pasta, no slirp4netns. A
//! holder child makes the application's namespaces and its TUN device
//! ([`crate::rootless::direct`]), and the packet engine, in direct mode
//! ([`crate::tun2socks::DirectConfig`]), serves that TUN from the
//! netbroker's own network namespace — the caller's — as the caller, so
//! the application's connections are the caller's own sockets, at the
//! engine's speed. The host's own addresses (listed here at start, plus
//! the engine's route check for ones added later) and loopback are refused.
//!
//! Kill switch: the application's namespace has no route but `tun0`, and
//! the TUN has no reader but the engine; if the engine dies, nothing leaves
//! (the netbroker reports it like a hop's death).

#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use crate::engine::{EngineError, EngineProcess, Placement};
use crate::rootless::{self, RootlessError};
use crate::rtnl::Rtnl;
use crate::tun2socks::{self, DirectConfig};

/// The TUN device in the application's namespace.
const TUN_NAME: &str = "tun0";
/// Its MTU (as a proxy hop's).
const TUN_MTU: u32 = 65000;
/// How long a direct connect may take before the application's SYN gets a RST.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// What failed while building the direct uplink.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    #[error(transparent)]
    Namespace(#[from] RootlessError),
    #[error("list the host's own addresses (to keep the sandbox off them): {0}")]
    Addresses(#[source] std::io::Error),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A running direct uplink. Dropping it stops the engine; the namespaces
/// go with their last descriptor.
#[derive(Debug)]
pub struct DirectUplink {
    pub netns: OwnedFd,
    pub userns: OwnedFd,
    pub app_userns: OwnedFd,
    pub engine: EngineProcess,
    pub resolv_conf: String,
    pub link: String,
    /// The holder's route socket in `netns` ([`rootless::DirectUplink::rtnl`]).
    pub rtnl: Rtnl,
    /// Its nf_tables socket there ([`rootless::DirectUplink::nft`]).
    pub nft: Option<netlink_sys::Socket>,
}

/// Build it: the engine process starts first (it loads while the holder
/// makes the namespaces), then gets the TUN.
pub fn build(uid: u32, gid: u32, host_resolv_conf: &Path) -> Result<DirectUplink, DirectError> {
    let launched =
        EngineProcess::launch_here(Path::new("/proc/self/exe"), Placement { run_as: None })?;
    let refused = host_addresses().map_err(DirectError::Addresses)?;
    let resolvers =
        crate::hops::nameservers(&std::fs::read_to_string(host_resolv_conf).unwrap_or_default());
    let ns = rootless::direct(uid, gid, TUN_NAME, TUN_MTU)?;
    let cfg = DirectConfig {
        refused,
        resolvers,
        connect_timeout: CONNECT_TIMEOUT,
    };
    let engine = launched.serve_direct(ns.tun, &cfg)?;
    Ok(DirectUplink {
        rtnl: ns.rtnl,
        nft: ns.nft,
        netns: ns.netns,
        userns: ns.userns,
        app_userns: ns.app_userns,
        engine,
        resolv_conf: format!(
            "nameserver {}\nnameserver {}\n",
            tun2socks::DNS_V4,
            tun2socks::DNS_V6
        ),
        link:
            "direct: packet engine ⇄ tun0 (the caller's network, the host's own addresses refused)"
                .into(),
    })
}

/// Every address of the namespace we run in (the host's), loopback included.
pub fn host_addresses() -> std::io::Result<Vec<IpAddr>> {
    let mut rtnl = Rtnl::open()?;
    Ok(rtnl.addresses()?.into_iter().map(|p| p.addr).collect())
}
