//! The hop chain (doc/ARCHITECTURE.md, The hop chain): one [`HopType`] per hop type, one file each,
//! and [`build`], which brings the hops up in order, each in a network
//! namespace of its own.
//!
//! Namespaces: N0 is where the chain starts (the host as root, the pasta or
//! slirp4netns namespace otherwise); hop i gets Ni, whose only way out is the
//! hop's exit device, and the application runs in the last one. Hop i's
//! transport connections are opened in N(i−1), so they travel through hops
//! 1…i−1: the in-process tun2socks serves a TUN in Ni and dials in N(i−1); a
//! daemon hop (tor, ssh) runs in N(i−1) and is served into Ni by tun2socks.
//! No veth, no NAT and no forwarding per hop.

#![forbid(unsafe_code)]

mod daemon;
mod http;
mod openvpn;
mod ppp;
mod proxy;
mod script;
mod socks;
mod socksapp;
mod ssh;
mod tor;
mod tun2socks;
mod wgconf;
mod wireguard;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use proto::broker::ProcEntry;
use proto::profile::{Hop, HopKind};

use crate::netns::{self, Netns, NetnsError};

pub use script::{init_main as script_init_main, SCRIPT_INIT_ARG};

/// What failed while bringing a hop up. Messages name the hop's own terms
/// (proxy address, daemon); [`ChainError`] adds which hop it was.
#[derive(Debug, thiserror::Error)]
pub enum HopError {
    #[error("create the hop's network namespace")]
    Netns(#[source] NetnsError),
    #[error("create the hop's TUN device")]
    Tun(#[source] crate::tun::TunError),
    #[error(transparent)]
    Proxy(#[from] crate::tun2socks::Tun2socksError),
    /// A hop daemon or check failed; the message says what and how to fix it.
    #[error("{0}")]
    Failed(String),
    #[error("hop type '{0}' is not supported by this netbroker")]
    Unsupported(&'static str),
    /// The request breaks the netbroker's own rules (a hop daemon as root),
    /// whatever the supervisor says.
    #[error("{0}")]
    Refused(String),
    /// The supervisor went away (the user interrupted pallium) mid-setup.
    #[error("setup abandoned: pallium was interrupted")]
    Cancelled,
}

/// The packet engine failed: one line, its own words where it has them.
impl From<crate::engine::EngineError> for HopError {
    fn from(e: crate::engine::EngineError) -> HopError {
        match e {
            crate::engine::EngineError::Failed(why) => HopError::Failed(why),
            e => HopError::Failed(e.to_string()),
        }
    }
}

/// A hop that failed, with its position in the chain (1-based, as users count).
#[derive(Debug, thiserror::Error)]
#[error("hop {number} ({kind})")]
pub struct ChainError {
    pub number: usize,
    pub kind: &'static str,
    #[source]
    pub source: HopError,
}

/// What a hop type gets to bring itself up.
pub struct HopCx<'a> {
    /// The session's id ("<profile id>-<index>"): names its engine uid.
    pub session_id: &'a str,
    /// 0-based position in the chain.
    pub index: usize,
    pub hop: &'a Hop,
    /// N(i−1): where the hop's transport connections (and daemons) live.
    pub outer: BorrowedFd<'a>,
    /// Nameservers that answer in N(i−1) (to resolve a proxy's host name).
    pub outer_resolvers: &'a [SocketAddr],
    /// Ni: where the hop's exit device goes; `lo` is up, nothing else.
    /// Made on first use ([`Inner::get`]), after the hop's work in N(i−1).
    pub inner: &'a mut Inner,
    /// A private directory for the hop's state (daemon data, sockets, logs).
    pub work_dir: &'a Path,
    /// The netbroker runs rootless, inside the session's user namespace.
    pub rootless: bool,
    /// Suppress daemons' output (the hop's `quiet`, else the profile's).
    pub quiet: bool,
    /// Report a step to the user.
    pub progress: &'a mut dyn FnMut(String),
    /// Whether to give up: the supervisor has gone (pallium interrupted).
    /// Long waits ask it at each turn.
    pub cancelled: &'a dyn Fn() -> bool,
}

impl HopCx<'_> {
    /// [`HopError::Cancelled`] once the supervisor has gone.
    pub fn check_cancelled(&self) -> Result<(), HopError> {
        if (self.cancelled)() {
            Err(HopError::Cancelled)
        } else {
            Ok(())
        }
    }
}

impl fmt::Debug for HopCx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HopCx")
            .field("index", &self.index)
            .field("hop", &self.hop.kind.name())
            .field("work_dir", &self.work_dir)
            .finish_non_exhaustive()
    }
}

/// What enters the session's user namespace for a rootless chain whose
/// hop 1 starts in the caller's own network namespace: called once hop 1's
/// processes there are started, it returns the namespaces it made.
pub type EnterSession = Box<dyn FnOnce() -> Result<Entered, String>>;

/// The namespaces [`EnterSession`] made: the session's user namespace (which
/// the netbroker is now in), and the application's network namespace with
/// the user namespace that owns it.
#[derive(Debug)]
pub struct Entered {
    pub session_userns: OwnedFd,
    pub app_netns: Netns,
    pub app_userns: OwnedFd,
}

/// A hop's Ni, made when the hop first asks for it: a hop first starts what
/// runs in N(i−1) (its daemon, its engine, the proxy check), which for a
/// rootless hop 1 must happen before the netbroker leaves the caller's
/// namespaces ([`EnterSession`]).
pub struct Inner {
    ns: Option<Netns>,
    /// The last hop's: its namespace is owned by the application's user
    /// namespace.
    last: bool,
    app_ids: (u32, u32, u32),
    enter: Option<EnterSession>,
    /// The session's user namespace, once entered.
    session_userns: Option<OwnedFd>,
    /// The application's user namespace, once its namespace is made.
    app_userns: Option<OwnedFd>,
    /// Made by `enter` for the last hop while this one is not it.
    app: Option<(Netns, OwnedFd)>,
}

impl Inner {
    fn new(last: bool, app_ids: (u32, u32, u32), enter: Option<EnterSession>) -> Self {
        Inner {
            ns: None,
            last,
            app_ids,
            enter,
            session_userns: None,
            app_userns: None,
            app: None,
        }
    }

    /// Whether Ni is the application's namespace (the last hop's), owned by
    /// the application's user namespace: `exec --root` holds capabilities
    /// over it.
    pub fn is_last(&self) -> bool {
        self.last
    }

    /// Ni, made (and the session entered) on first use.
    pub fn get(&mut self) -> Result<&mut Netns, HopError> {
        if self.ns.is_none() {
            let ns = match (self.enter.take(), self.last) {
                (Some(enter), last) => {
                    let e = enter().map_err(HopError::Failed)?;
                    self.session_userns = Some(e.session_userns);
                    let (ns, userns) = (e.app_netns, e.app_userns);
                    if last {
                        self.app_userns = Some(userns);
                        ns
                    } else {
                        self.app = Some((ns, userns));
                        netns::create().map_err(HopError::Netns)?
                    }
                }
                (None, true) => {
                    let (uid, gid, count) = self.app_ids;
                    let (ns, userns) =
                        netns::create_owned(uid, gid, count).map_err(HopError::Netns)?;
                    self.app_userns = Some(userns);
                    ns
                }
                (None, false) => netns::create().map_err(HopError::Netns)?,
            };
            self.ns = Some(ns);
        }
        Ok(self.ns.as_mut().expect("made above"))
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner")
            .field("ns", &self.ns)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

/// One hop type: brings a hop up between N(i−1) and Ni.
pub trait HopType: Sync {
    fn start(&self, cx: &mut HopCx<'_>) -> Result<Box<dyn RunningHop>, HopError>;
}

/// A hop that is up. Dropping it stops the hop: its engine, its daemons.
pub trait RunningHop: fmt::Debug + Send {
    /// The `/etc/resolv.conf` for Ni.
    fn resolv_conf(&self) -> String;
    /// Nameservers that answer in Ni (for the next hop).
    fn resolvers(&self) -> Vec<SocketAddr>;
    /// One line for `pallium list` and `check`.
    fn describe(&self) -> String;
    /// The hop's processes, for `pallium audit`.
    fn pids(&self) -> Vec<ProcEntry> {
        Vec::new()
    }
    /// Some(reason) once the hop has stopped working on its own.
    fn exited(&mut self) -> Option<String> {
        None
    }
    /// The hop's onion service (tor's `onion_service`), once: its socket
    /// goes to the session's forwarder.
    fn onion(&mut self) -> Option<Onion> {
        None
    }
}

/// An onion service a hop published: Tor clients reach `address:port`,
/// tor connects to `listener`, the forwarder relays to `target` in the
/// application's namespace.
#[derive(Debug)]
pub struct Onion {
    pub address: String,
    pub port: u16,
    pub target: u16,
    pub listener: std::os::unix::net::UnixListener,
}

/// The registry: profile hop type → implementation. Adding a hop type adds a
/// file and an arm here; the match is exhaustive, so a new [`HopKind`]
/// does not compile until it has an arm (None: parsed, not built yet).
/// proto's table says the same for `run` and `check`
/// ([`HopKind::built`]); a test holds the two equal.
fn hop_type(kind: &HopKind) -> Option<&'static dyn HopType> {
    Some(match kind {
        HopKind::Socks(_) => &socks::SocksHop,
        HopKind::Http(_) => &http::HttpHop,
        HopKind::Tun2socks(_) => &tun2socks::Tun2socksHop,
        HopKind::Tor(_) => &tor::TorHop,
        HopKind::Ssh(_) => &ssh::SshHop,
        HopKind::Socksapp(_) => &socksapp::SocksappHop,
        HopKind::Openvpn(_) => &openvpn::OpenvpnHop,
        HopKind::Wireguard(_) => &wireguard::WireguardHop,
        HopKind::Script(_) => &script::ScriptHop,
        HopKind::Ppp(_) => &ppp::PppHop,
        HopKind::Dummy => return None,
    })
}

/// Whether a rootless chain may start with `kind` in the caller's own
/// network namespace ([`HopKind::rootless_starts_in_caller`]).
pub fn starts_in_caller(kind: &HopKind) -> bool {
    kind.rootless_starts_in_caller()
}

/// Whether this netbroker can build `kind` (the supervisor checks earlier
/// from proto's table; this is the last word).
pub fn supported(kind: &HopKind) -> bool {
    hop_type(kind).is_some()
}

/// One hop that is up, and the namespace it serves.
#[derive(Debug)]
pub struct BuiltHop {
    pub netns: OwnedFd,
    pub kind: &'static str,
    pub running: Box<dyn RunningHop>,
}

/// The chain, hops closest to N0 first. Dropping it stops the hops from the
/// application's end backwards, so no hop outlives one it depends on.
#[derive(Debug, Default)]
pub struct Chain {
    pub hops: Vec<BuiltHop>,
    /// The user namespace that owns the application's (last) namespace.
    pub app_userns: Option<OwnedFd>,
    /// Rootless with hop 1 in the caller's namespace: the session's user
    /// namespace, entered on the way ([`EnterSession`]).
    pub session_userns: Option<OwnedFd>,
    /// Root mode: the pids cgroup of the netbroker and what it starts for
    /// the chain; removed (a field: after [`Drop`] has stopped the hops).
    pub cgroup: Option<Box<crate::engine::cgroup::SessionCgroup>>,
}

impl Drop for Chain {
    fn drop(&mut self) {
        // The cgroup move overlaps with stopping the hops (it waits for an
        // RCU grace period); the cgroup's drop, after this, removes it.
        if let Some(cg) = &mut self.cgroup {
            cg.leave_soon();
        }
        while let Some(hop) = self.hops.pop() {
            drop(hop);
        }
    }
}

impl Chain {
    /// N1…Nk, each hop's namespace in order.
    pub fn hop_netns(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.hops.iter().map(|h| h.netns.as_fd())
    }

    /// The application's namespace: the last hop's.
    pub fn app_netns(&self) -> Option<BorrowedFd<'_>> {
        self.hops.last().map(|h| h.netns.as_fd())
    }

    pub fn resolv_conf(&self) -> String {
        self.hops
            .last()
            .map(|h| h.running.resolv_conf())
            .unwrap_or_default()
    }

    pub fn describe(&self) -> Vec<String> {
        self.hops
            .iter()
            .enumerate()
            .map(|(i, h)| format!("hop {} {}: {}", i + 1, h.kind, h.running.describe()))
            .collect()
    }

    pub fn pids(&self) -> Vec<ProcEntry> {
        self.hops.iter().flat_map(|h| h.running.pids()).collect()
    }

    /// The hops' onion services with their 1-based hop numbers, taken once.
    pub fn take_onions(&mut self) -> Vec<(usize, Onion)> {
        self.hops
            .iter_mut()
            .enumerate()
            .filter_map(|(i, h)| h.running.onion().map(|o| (i + 1, o)))
            .collect()
    }
}

/// Everything [`build`] needs besides the hops.
pub struct ChainStart<'a> {
    /// The session's id ("<profile id>-<index>").
    pub session_id: &'a str,
    /// N0.
    pub netns: BorrowedFd<'a>,
    /// Nameservers that answer in N0.
    pub resolvers: Vec<SocketAddr>,
    /// Parent of the hops' private directories (hop i uses `hop<i>`).
    pub work_dir: &'a Path,
    pub rootless: bool,
    pub quiet: bool,
    /// See [`HopCx::cancelled`].
    pub cancelled: &'a dyn Fn() -> bool,
    /// uid/gid 0 of the application's own user namespace, which owns the
    /// last hop's namespace, and how many ids it maps
    /// ([`netns::create_owned`]).
    pub app_ids: (u32, u32, u32),
}

impl fmt::Debug for ChainStart<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainStart")
            .field("session_id", &self.session_id)
            .field("netns", &self.netns)
            .field("resolvers", &self.resolvers)
            .field("work_dir", &self.work_dir)
            .field("rootless", &self.rootless)
            .field("quiet", &self.quiet)
            .field("app_ids", &self.app_ids)
            .finish_non_exhaustive()
    }
}

/// Bring `hops` up in order. On error everything built so far is stopped
/// (dropped) before returning.
///
/// `enter`: N0 is the caller's own namespace and the netbroker still in the
/// caller's user namespace (rootless): hop 1 starts what runs in N0 first,
/// then [`Inner::get`] calls `enter`, and hop 1's TUN and everything after
/// it are made inside the session's user namespace.
pub fn build(
    hops: &[Hop],
    start: &ChainStart<'_>,
    mut enter: Option<EnterSession>,
    progress: &mut dyn FnMut(usize, String),
) -> Result<Chain, ChainError> {
    let mut chain = Chain::default();
    if !start.rootless && !hops.is_empty() {
        let hash = crate::names::session_hash(start.session_id);
        chain.cgroup = crate::engine::cgroup::SessionCgroup::create(hash).map(Box::new);
    }
    let mut resolvers = start.resolvers.clone();
    // The application's namespace when hop 1's `enter` made it early.
    let mut app: Option<(Netns, OwnedFd)> = None;
    for (index, hop) in hops.iter().enumerate() {
        let fail = |source| ChainError {
            number: index + 1,
            kind: hop.kind.name(),
            source,
        };
        let ty = hop_type(&hop.kind).ok_or_else(|| fail(HopError::Unsupported(hop.kind.name())))?;
        let outer = match chain.hops.last() {
            Some(h) => h.netns.as_fd(),
            None => start.netns,
        };
        let last = index + 1 == hops.len();
        let mut inner = Inner::new(last, start.app_ids, enter.take());
        if last {
            if let Some((ns, userns)) = app.take() {
                inner.ns = Some(ns);
                inner.app_userns = Some(userns);
            }
        }
        let work_dir = start.work_dir.join(format!("hop{}", index + 1));
        std::fs::create_dir_all(&work_dir).map_err(|e| {
            fail(HopError::Failed(format!(
                "create {}: {e}",
                work_dir.display()
            )))
        })?;
        let mut report = |m: String| progress(index, m);
        let mut cx = HopCx {
            session_id: start.session_id,
            index,
            hop,
            outer,
            outer_resolvers: &resolvers,
            inner: &mut inner,
            work_dir: &work_dir,
            rootless: start.rootless,
            quiet: hop.options.quiet.unwrap_or(start.quiet),
            progress: &mut report,
            cancelled: start.cancelled,
        };
        let started = ty.start(&mut cx);
        // A hop that never asked for its namespace still gets one.
        let made = match started.is_ok() && inner.ns.is_none() {
            true => inner.get().map(drop),
            false => Ok(()),
        };
        // Whatever the hop made stays with the chain, to be dropped in order.
        if let Some(userns) = inner.app_userns.take() {
            chain.app_userns = Some(userns);
        }
        app = app.or(inner.app.take());
        if let Some(userns) = inner.session_userns.take() {
            chain.session_userns = Some(userns);
        }
        let running = started.map_err(fail)?;
        made.map_err(fail)?;
        let ns = inner.ns.take().expect("made above");
        resolvers = running.resolvers();
        chain.hops.push(BuiltHop {
            netns: ns.fd,
            kind: hop.kind.name(),
            running,
        });
    }
    Ok(chain)
}

/// The nameservers of a resolv.conf text, on port 53.
pub fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One hop of each type, as a profile writes it.
    fn sample(name: &str) -> Option<&'static str> {
        Some(match name {
            "socks" | "http" => r#""address": "192.0.2.1:1080""#,
            "tun2socks" => r#""protocol": "socks5", "address": "192.0.2.1:1080""#,
            "tor" | "ppp" | "dummy" => "",
            "openvpn" | "wireguard" => r#""config": "/x.conf""#,
            "ssh" => r#""destination": "u@h""#,
            "socksapp" => r#""user": "nobody", "cmd": ["x"]"#,
            "script" => r#""path": "/x""#,
            _ => return None,
        })
    }

    #[test]
    fn the_registry_is_the_one_proto_tells_run_and_check() {
        for (name, built) in proto::profile::hop_types() {
            let extra =
                sample(name).unwrap_or_else(|| panic!("add a sample '{name}' hop to this test"));
            let sep = if extra.is_empty() { "" } else { ", " };
            let text = format!(r#"{{"chain": [{{"type": "{name}"{sep}{extra}}}]}}"#);
            let mut parsed = proto::profile::parse("p.json", &text).unwrap();
            let kind = parsed.profile.network.chain.remove(0).kind;
            assert_eq!(
                supported(&kind),
                built == proto::profile::Built::Yes,
                "hop type '{name}': netbroker/src/hops/mod.rs's hop_type and proto's HOP_TYPES disagree"
            );
            assert_eq!(kind.built(), supported(&kind), "{name}");
        }
    }

    #[test]
    fn nameservers_are_read_from_resolv_conf() {
        let text = "# c\nnameserver 192.0.2.53\nsearch x\nnameserver fd00::53\nnameserver bogus\n";
        assert_eq!(
            nameservers(text),
            vec![
                "192.0.2.53:53".parse().unwrap(),
                "[fd00::53]:53".parse().unwrap()
            ]
        );
    }
}
