//! The supervisor ⇄ netbroker channel: build the network chain, report on it,
//! tear it down. The supervisor sends [`BrokerRequest`]s, the netbroker answers
//! with [`BrokerEvent`]s.
//!
//! Legal order: `BuildChain` once, then any number of `ListPids`, then
//! `Shutdown` (or the supervisor's death, which the netbroker sees as EOF or
//! its parent-death signal). The netbroker enforces it: anything else gets
//! one `Failed` and ends it, after a full teardown.

use serde::{Deserialize, Serialize};

use crate::profile::{check, Hop};
use crate::{error::RemoteError, wire::Fd};

/// Requests from the supervisor to the netbroker.
// BuildChain is sent once per session: boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize, Deserialize)]
pub enum BrokerRequest {
    /// Create the application's network namespace and its uplink.
    BuildChain(BuildChain),
    /// Report the processes the netbroker owns (itself and hop daemons).
    ListPids,
    /// Tear everything down and exit.
    Shutdown,
}

/// Events from the netbroker to the supervisor.
#[derive(Debug, Serialize, Deserialize)]
pub enum BrokerEvent {
    /// A step of the build, shown to the user unless `--quiet`.
    Progress(Progress),
    /// The chain is up; the namespaces travel as fds.
    ChainReady(ChainReady),
    /// Answer to `ListPids`.
    Pids(Vec<ProcEntry>),
    /// The build or a later step failed; the netbroker has undone its work.
    Failed(RemoteError),
}

/// How the first namespace reaches the outside world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Uplink {
    /// Root: a veth pair to the namespace pallium started in, masqueraded by a
    /// kernel-owned nftables table.
    Veth,
    /// pasta (passt), userspace; no host change at all.
    Pasta,
    /// slirp4netns, userspace; used when pasta is not installed.
    Slirp4netns,
    /// Rootless empty chain: the packet engine in direct mode serves the
    /// application's TUN and opens its connections from the caller's own
    /// namespace, as the caller (`proto::engine::EngineRequest::StartDirect`).
    /// A non-empty chain gets pasta in its place.
    Direct,
}

/// Everything the netbroker needs to build one session's network.
#[derive(Debug, Serialize, Deserialize)]
pub struct BuildChain {
    /// Unique per running session: "<profile id>-<index>-<nonce>"; names
    /// links, tables and directories ([`check::session_id`]).
    #[serde(deserialize_with = "check::de::session_id")]
    pub session_id: String,
    /// Rootless: create a user namespace owned by `uid` and map it to root inside.
    pub rootless: bool,
    /// The caller's real uid and gid (mapped to 0 in the rootless user namespace).
    pub uid: u32,
    pub gid: u32,
    /// How the first namespace is linked to the outside.
    pub uplink: Uplink,
    /// Hops in order, closest to the host first. Empty in the spine.
    pub chain: Vec<Hop>,
    /// `network.routes`: destinations routed through the chain (None = all).
    pub routes: Option<Vec<String>>,
    /// `network.bridge` (root): a host link routed through the chain.
    pub bridge: Option<Box<crate::profile::Bridge>>,
    /// `network.outbound_interface` (root): the host interface the chain's
    /// traffic leaves by.
    pub outbound_interface: Option<crate::profile::IfName>,
    /// `network.host_access`: root's veth uplink lets the application reach
    /// the host's own addresses (by default the session's table drops that).
    pub host_access: bool,
    /// Suppress helper tools' output.
    pub quiet: bool,
    /// `network.port_forwarding.local`: the netbroker binds each host
    /// address before it builds anything and relays into the application's
    /// namespace (an unprivileged forwarder process).
    pub port_forwarding: Vec<crate::profile::PortForward>,
}

/// A progress line from the build.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Progress {
    /// Hop index, or None for the uplink and the application namespace.
    pub hop: Option<usize>,
    pub message: String,
}

/// The finished chain.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChainReady {
    /// The application's network namespace.
    pub netns: Fd,
    /// Rootless: the session's user namespace, which owns the chain's
    /// namespaces (the sandboxer joins it).
    pub userns: Option<Fd>,
    /// The user namespace that owns `netns` and nothing else, in which uid 0
    /// is the session's unprivileged uid (root mode) or the caller (rootless):
    /// the application joins it, so `exec --root` holds capabilities over its
    /// own network namespace only. None where the application's network
    /// namespace is the uplink's (rootless or slirp empty chain).
    pub app_userns: Option<Fd>,
    /// Root mode: the host uid (and gid) that is uid 0 of `app_userns`,
    /// which files `pallium cp` puts into the sandbox are given.
    pub app_uid: Option<u32>,
    /// The `/etc/resolv.conf` the application must see.
    pub resolv_conf: String,
    /// Human-readable description of each link, for `pallium list` and `check`.
    pub links: Vec<String>,
    /// With hops: N0…N(k−1), where each hop connects from (N0: the namespace
    /// pallium started in, or pasta's), for `exec --namespace`. Empty
    /// without hops.
    pub outer: Vec<Fd>,
    /// Onion services the chain's tor hops publish (`onion_service`), in
    /// chain order.
    pub onion_services: Vec<OnionReady>,
}

/// A published onion service: where Tor clients reach the application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnionReady {
    /// 1-based hop number (as users count).
    pub hop: usize,
    /// `<56 base32 characters>.onion`.
    pub address: String,
    /// The port at that address.
    pub port: u16,
    /// The TCP port in the application's namespace it reaches.
    pub target: u16,
}

/// One process of a session, for `pallium audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcEntry {
    pub pid: i32,
    /// "supervisor", "netbroker", "sandboxer", "init", "app", or "hop:<type>".
    pub role: String,
}
