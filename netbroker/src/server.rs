//! The netbroker's side of the supervisor channel: one `match` over requests,
//! each arm a `handle_<verb>`, and the session state that makes the legal
//! order explicit (`BuildChain` once, then `ListPids`, then `Shutdown`/EOF).

#![forbid(unsafe_code)]

use proto::broker::{
    BrokerEvent, BrokerRequest, BuildChain, ChainReady, ProcEntry, Progress, Uplink,
};
use proto::{Channel, ErrorKind, Fd, RemoteError, WireError};

use std::os::fd::AsFd as _;

use crate::direct::{self, DirectUplink};
use crate::forward;
use crate::hops::{self, Chain, ChainStart};
use crate::netns;
use crate::root::{self, HostPaths, VethUplink};
use crate::rootless::{self, UserspaceUplink};
use crate::split;

/// What ends the serving loop abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("supervisor channel")]
    Wire(#[from] WireError),
    #[error("hand the namespace descriptors to the supervisor")]
    Dup(#[source] std::io::Error),
    /// A request out of order (OpenSSH's monitor: each request only in the
    /// states where it is legal): the supervisor is not what it should be,
    /// and the netbroker tears down and ends.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    #[error("drop the capabilities only the build needed")]
    Policy(#[source] proto::policy::PolicyError),
}

/// The session's uplink once built.
#[derive(Debug)]
enum Built {
    Veth(VethUplink),
    Userspace(UserspaceUplink),
    /// Boxed: it holds the engine process besides the namespaces.
    Direct(Box<DirectUplink>),
}

// One per netbroker, moved a handful of times: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum State {
    Configured,
    NetworkReady {
        /// The port forwarder, stopped first.
        forwarder: Option<crate::engine::EngineProcess>,
        session_id: String,
        /// `network.bridge`: goes first (it routes into the chain).
        bridge: Option<Box<crate::bridge::BridgeLink>>,
        /// Declared before the uplink: the hops stop first.
        chain: Option<Chain>,
        /// `network.outbound_interface`: the rules routing the veth's traffic.
        outbound: Option<crate::outbound::Outbound>,
        uplink: Option<Built>,
        /// `network.routes`' wall in the application's namespace.
        wall: Option<crate::nft::NftSession>,
        /// The hops' private directory, removed at teardown.
        work_dir: Option<std::path::PathBuf>,
    },
}

/// Serve the supervisor until `Shutdown` or EOF; tears everything down before
/// returning.
pub fn serve(
    chan: &mut Channel<BrokerEvent, BrokerRequest>,
    paths: &HostPaths,
) -> Result<(), ServeError> {
    let mut state = State::Configured;
    // Set by the supervisor at spawn: its session directory, which we remove
    // if it dies (EOF without Shutdown) — whenever that happens.
    let session_dir = std::env::var_os("PALLIUM_SESSION_DIR").map(std::path::PathBuf::from);
    // Without a Shutdown, the supervisor is gone (EOF, or a send that found
    // the channel closed): then we clean up after it too.
    let mut orphaned = true;
    // Hops whose death the supervisor has been told about.
    let mut reported = Vec::new();
    let result = loop {
        if !readable_within(chan, WATCH_INTERVAL) {
            watch_hops(chan, &mut state, &mut reported);
            continue;
        }
        let req = match chan.recv() {
            Ok(r) => r,
            Err(WireError::Closed) => {
                tracing::info!("supervisor closed the channel");
                break Ok(());
            }
            // A frame we cannot take (malformed, oversized, truncated, too
            // many descriptors, a field that breaks a rule): the supervisor
            // is not what it should be. Say so once, then end.
            Err(e) => {
                let msg = format!("malformed request: {e}");
                let err = RemoteError::msg("netbroker: protocol violation", msg)
                    .with_kind(ErrorKind::Protocol);
                let _ = chan.send(BrokerEvent::Failed(err));
                break Err(e.into());
            }
        };
        let step = match (req, &state) {
            (BrokerRequest::BuildChain(_), State::NetworkReady { .. }) => {
                violation(chan, "BuildChain is legal once")
            }
            (BrokerRequest::ListPids, State::Configured) => {
                violation(chan, "ListPids before the chain is built")
            }
            (BrokerRequest::BuildChain(b), _) => handle_build_chain(chan, &mut state, b, paths)
                .and_then(|()| after_chain_ready(&state)),
            (BrokerRequest::ListPids, _) => handle_list_pids(chan, &state),
            (BrokerRequest::Shutdown, _) => {
                orphaned = false;
                break Ok(());
            }
        };
        match step {
            Ok(()) => {}
            // The supervisor went away while we answered (pallium was
            // interrupted during the build): the end, not an error.
            Err(ServeError::Wire(WireError::Closed)) => {
                tracing::info!("supervisor closed the channel");
                break Ok(());
            }
            Err(e) => break Err(e),
        }
    };
    teardown(state, paths);
    if let Some(dir) = session_dir {
        // After a Shutdown the supervisor still holds the session's lock; it
        // lets go, then hangs up. A root-mode supervisor runs as an
        // unprivileged uid by then and cannot remove its directory from
        // root's runtime directory: we do, for it as for a dead one.
        if !orphaned {
            await_hangup(chan, HANGUP_WAIT);
        }
        crate::orphan::remove_dead_session(&dir);
    }
    result
}

/// How long a supervisor that sent `Shutdown` has to hang up.
const HANGUP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Wait until the supervisor closes the channel (what it still sends is
/// dropped), at most `limit`.
fn await_hangup(chan: &mut Channel<BrokerEvent, BrokerRequest>, limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || !readable_within(chan, left) || chan.recv().is_err() {
            return;
        }
    }
}

/// How often a running chain's hops are checked.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether the channel has a message (or EOF) within `timeout`.
fn readable_within(
    chan: &Channel<BrokerEvent, BrokerRequest>,
    timeout: std::time::Duration,
) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(chan.fd(), PollFlags::POLLIN)];
    let ms = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, ms) {
        Ok(0) => false,
        // Readable, hung up, or an error: let recv() tell which.
        _ => true,
    }
}

/// Tell the supervisor, once, about each hop that stopped working: its
/// traffic stops there (the kill switch is the missing route), and the user
/// should know why.
fn watch_hops(
    chan: &Channel<BrokerEvent, BrokerRequest>,
    state: &mut State,
    reported: &mut Vec<usize>,
) {
    // The rootless empty chain's engine (reported as the uplink, hop None).
    if let State::NetworkReady {
        uplink: Some(Built::Direct(d)),
        ..
    } = state
    {
        if !reported.contains(&usize::MAX) {
            if let Some(reason) = d.engine.exited() {
                reported.push(usize::MAX);
                let message = format!(
                    "the direct uplink stopped: {reason}; the application's traffic is blocked, nothing falls back to another path"
                );
                tracing::debug!("{message}");
                let _ = chan.send(BrokerEvent::Progress(Progress { hop: None, message }));
            }
        }
    }
    let State::NetworkReady {
        chain: Some(chain), ..
    } = state
    else {
        return;
    };
    for (i, hop) in chain.hops.iter_mut().enumerate() {
        if reported.contains(&i) {
            continue;
        }
        if let Some(reason) = hop.running.exited() {
            reported.push(i);
            let message = format!(
                "stopped: {reason}; traffic through this hop is blocked, nothing falls back to a direct path"
            );
            // The supervisor shows it; ours would say it twice.
            tracing::debug!("hop {}: {message}", i + 1);
            let _ = chan.send(BrokerEvent::Progress(Progress {
                hop: Some(i),
                message,
            }));
        }
    }
}

/// Once `ChainReady` is sent (the state is `NetworkReady`), drop what only
/// the build needed (`policy::after_setup`): from here on the netbroker
/// starts nothing, it only watches and tears down. This thread is the only
/// one that held those capabilities: the DNS relay's threads dropped all of
/// theirs when they started. A failed drop ends the session.
fn after_chain_ready(state: &State) -> Result<(), ServeError> {
    if !matches!(state, State::NetworkReady { .. }) {
        return Ok(());
    }
    proto::policy::drop_caps(&proto::policy::setup_only(proto::policy::Role::Netbroker))
        .map_err(ServeError::Policy)
}

/// Tell the supervisor why, then end (the caller tears down).
fn violation(
    chan: &mut Channel<BrokerEvent, BrokerRequest>,
    what: &'static str,
) -> Result<(), ServeError> {
    let e = RemoteError::msg("netbroker: protocol violation", what).with_kind(ErrorKind::Protocol);
    let _ = chan.send(BrokerEvent::Failed(e));
    Err(ServeError::Protocol(what))
}

fn handle_build_chain(
    chan: &mut Channel<BrokerEvent, BrokerRequest>,
    state: &mut State,
    req: BuildChain,
    paths: &HostPaths,
) -> Result<(), ServeError> {
    if let Some(hop) = req.chain.iter().find(|h| !hops::supported(&h.kind)) {
        let e = RemoteError::msg(
            "netbroker: build chain",
            format!(
                "hop type '{}' is not supported by this netbroker",
                hop.kind.name()
            ),
        )
        .with_kind(ErrorKind::Refused);
        return chan.send(BrokerEvent::Failed(e)).map_err(Into::into);
    }
    // Before anything is built: a port in use is the whole answer.
    let bound = match forward::bind_all(&req.port_forwarding) {
        Ok(b) => b,
        Err(e) => {
            let e = RemoteError::new("netbroker", &e).with_kind(ErrorKind::Refused);
            return chan.send(BrokerEvent::Failed(e)).map_err(Into::into);
        }
    };
    if !req.chain.is_empty() {
        return handle_build_hops(chan, state, req, paths, bound);
    }
    let progress = |chan: &Channel<BrokerEvent, BrokerRequest>, message: String| {
        let _ = chan.send(BrokerEvent::Progress(Progress { hop: None, message }));
    };
    let use_veth = !req.rootless && req.uplink == Uplink::Veth;
    let built = if use_veth {
        progress(
            chan,
            "creating the application namespace and its veth uplink".into(),
        );
        let mut warnings = Vec::new();
        let r = root::build(&req.session_id, req.host_access, paths, &mut |w| {
            warnings.push(w)
        });
        for w in warnings {
            tracing::warn!("{w}");
            progress(chan, format!("warning: {w}"));
        }
        r.map(Built::Veth)
            .map_err(|e| RemoteError::new("netbroker: veth uplink", &e))
    } else if req.rootless && req.uplink == Uplink::Direct {
        progress(
            chan,
            "creating the application namespace and its direct uplink (packet engine)".into(),
        );
        direct::build(req.uid, req.gid, &paths.resolv_conf)
            .map(|d| Built::Direct(Box::new(d)))
            .map_err(|e| RemoteError::new("netbroker: direct uplink", &e))
    } else {
        userspace_uplink(chan, &req).map(Built::Userspace)
    };
    let uplink = match built {
        Ok(b) => b,
        Err(e) => {
            // Reported through the supervisor, once.
            tracing::debug!("{e}");
            // Everything built so far was dropped with the error.
            if use_veth {
                let _ = root::teardown(&req.session_id, paths);
            }
            return chan.send(BrokerEvent::Failed(e)).map_err(Into::into);
        }
    };
    let outbound = match outbound(&req, use_veth) {
        Ok(o) => o,
        Err(e) => {
            drop(uplink);
            if use_veth {
                let _ = root::teardown(&req.session_id, paths);
            }
            return chan.send(BrokerEvent::Failed(e)).map_err(Into::into);
        }
    };
    let mut uplink = uplink;
    let mut wall = None;
    if let Some(routes) = &req.routes {
        let target = match &mut uplink {
            Built::Veth(v) => (RouteTarget::Enter(v.netns.as_fd()), &v.resolv_conf),
            Built::Userspace(u) => (
                RouteTarget::Socket(&mut u.rtnl, u.nft.take()),
                &u.resolv_conf,
            ),
            Built::Direct(d) => (
                RouteTarget::Socket(&mut d.rtnl, d.nft.take()),
                &d.resolv_conf,
            ),
        };
        let (target, resolv) = (target.0, target.1.clone());
        match split_routes(target, routes, &resolv) {
            Ok(w) => wall = Some(w),
            Err(e) => {
                drop(uplink);
                if use_veth {
                    let _ = root::teardown(&req.session_id, paths);
                }
                return chan.send(BrokerEvent::Failed(e)).map_err(Into::into);
            }
        }
    }
    let mut ready = chain_ready(&uplink).map_err(ServeError::Dup)?;
    let extras = start_forwarder(bound, Vec::new(), &ready, &req).and_then(|f| {
        build_bridge(chan, &req, ready.netns.0.as_fd(), &ready.resolv_conf, &[]).map(|b| (f, b))
    });
    let (forwarder, bridge) = match extras {
        Ok(fb) => fb,
        Err(e) => {
            drop(uplink);
            if use_veth {
                let _ = root::teardown(&req.session_id, paths);
            }
            return chan.send(BrokerEvent::Failed(e)).map_err(Into::into);
        }
    };
    ready.links.extend(bridge.iter().map(|b| b.link.clone()));
    ready.links.extend(outbound.iter().map(|o| o.link.clone()));
    *state = State::NetworkReady {
        forwarder,
        session_id: req.session_id,
        bridge,
        chain: None,
        outbound,
        uplink: Some(uplink),
        wall,
        work_dir: None,
    };
    chan.send(BrokerEvent::ChainReady(ready))?;
    Ok(())
}

fn handle_list_pids(
    chan: &mut Channel<BrokerEvent, BrokerRequest>,
    state: &State,
) -> Result<(), ServeError> {
    let mut pids = vec![ProcEntry {
        pid: std::process::id() as i32,
        role: "netbroker".into(),
    }];
    if let State::NetworkReady {
        uplink,
        chain,
        forwarder,
        ..
    } = state
    {
        if let Some(Built::Userspace(u)) = uplink {
            pids.push(ProcEntry {
                pid: u.daemon.id() as i32,
                role: u.role.into(),
            });
        }
        if let Some(Built::Direct(d)) = uplink {
            pids.push(d.engine.proc_entry());
        }
        if let Some(c) = chain {
            pids.extend(c.pids());
        }
        if let Some(f) = forwarder {
            pids.push(f.proc_entry());
        }
    }
    chan.send(BrokerEvent::Pids(pids)).map_err(Into::into)
}

/// The event for a built uplink. We keep our own descriptors: the chain lives
/// as long as the netbroker does.
fn chain_ready(uplink: &Built) -> std::io::Result<ChainReady> {
    Ok(match uplink {
        Built::Veth(v) => ChainReady {
            netns: Fd(v.netns.try_clone()?),
            userns: None,
            app_userns: Some(Fd(v.userns.try_clone()?)),
            app_uid: Some(v.app_uid),
            resolv_conf: v.resolv_conf.clone(),
            links: vec![v.link.clone()],
            outer: Vec::new(),
            onion_services: Vec::new(),
        },
        Built::Userspace(u) => ChainReady {
            netns: Fd(u.netns.try_clone()?),
            userns: dup_userns(u)?,
            app_userns: u
                .app_userns
                .as_ref()
                .map(|f| f.try_clone().map(Fd))
                .transpose()?,
            app_uid: None,
            resolv_conf: u.resolv_conf.clone(),
            links: vec![u.link.clone()],
            outer: Vec::new(),
            onion_services: Vec::new(),
        },
        Built::Direct(d) => ChainReady {
            netns: Fd(d.netns.try_clone()?),
            userns: Some(Fd(d.userns.try_clone()?)),
            app_userns: Some(Fd(d.app_userns.try_clone()?)),
            app_uid: None,
            resolv_conf: d.resolv_conf.clone(),
            links: vec![d.link.clone()],
            outer: Vec::new(),
            onion_services: Vec::new(),
        },
    })
}

fn teardown(state: State, paths: &HostPaths) {
    let State::NetworkReady {
        forwarder,
        session_id,
        bridge,
        chain,
        outbound,
        uplink,
        wall,
        work_dir,
    } = state
    else {
        return;
    };
    // The forwarder first (nothing reaches the application from outside
    // any more), then the bridge (it routes into the chain), then the hops
    // (engines, then their daemons), from the application's end backwards.
    drop(forwarder);
    drop(bridge);
    drop(chain);
    drop(outbound);
    if let Some(dir) = work_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    let veth = matches!(uplink, Some(Built::Veth(_)));
    // Deletes the veth pair, kills the daemon, closes the namespaces
    // and the nf_tables socket (the owner table goes with it).
    drop(uplink);
    // The routes' wall last: it held until nothing could send any more.
    drop(wall);
    if veth {
        match root::teardown(&session_id, paths) {
            Ok(true) => tracing::info!("restored the host's forwarding sysctls"),
            Ok(false) => {}
            Err(e) => tracing::warn!("restore forwarding sysctls: {e}"),
        }
    }
}

/// Build a non-empty chain. N0 is the namespace the netbroker started in:
/// root with the veth uplink, the host (no veth needed: hop 1 dials from
/// there); rootless, the caller's own namespace: hop 1's processes start
/// there as ordinary children of ours, as the caller, and the netbroker
/// enters the session's user namespace only then ([`enter_session`]), with
/// no pasta at all. Otherwise (root with `force_slirp`, or a rootless hop 1
/// that listens on a TCP port, [`hops::starts_in_caller`]) N0 is the
/// pasta/slirp4netns namespace, which the netbroker enters together with its
/// user namespace when rootless.
fn handle_build_hops(
    chan: &mut Channel<BrokerEvent, BrokerRequest>,
    state: &mut State,
    req: BuildChain,
    paths: &HostPaths,
    bound: forward::Bound,
) -> Result<(), ServeError> {
    let progress = |chan: &Channel<BrokerEvent, BrokerRequest>, hop: Option<usize>, message| {
        let _ = chan.send(BrokerEvent::Progress(Progress { hop, message }));
    };
    let fail = |chan: &mut Channel<BrokerEvent, BrokerRequest>, e: RemoteError| {
        // Reported through the supervisor, once.
        tracing::debug!("{e}");
        chan.send(BrokerEvent::Failed(e)).map_err(ServeError::from)
    };
    let in_caller = req.rootless
        && req
            .chain
            .first()
            .is_some_and(|h| hops::starts_in_caller(&h.kind));
    // Root, and hop 1 a daemon on a loopback TCP port (socksapp): in the
    // host's namespace any local user could use that port, and a socksapp
    // program would connect the application to the host's own services;
    // so N0 is a namespace of the session's with the empty chain's veth
    // uplink and wall (the host's addresses refused). An ssh hop 1 needs
    // none: its port is in a namespace of its own (`hops/ssh.rs`).
    // So, too, with `outbound_interface`: hop 1's traffic is then forwarded
    // from the veth, which one policy rule routes by that interface.
    let own_n0 = !req.rootless
        && req.uplink == Uplink::Veth
        && (req.outbound_interface.is_some()
            || req
                .chain
                .first()
                .is_some_and(|h| !h.kind.rootless_starts_in_caller()));
    let use_host = in_caller || (!req.rootless && req.uplink == Uplink::Veth && !own_n0);
    let veth = if own_n0 {
        progress(
            chan,
            Some(0),
            "creating hop 1's namespace and its veth uplink (its daemon's port stays off the host)"
                .into(),
        );
        let mut warnings = Vec::new();
        let r = root::build(&req.session_id, false, paths, &mut |w| warnings.push(w));
        for w in warnings {
            tracing::warn!("{w}");
        }
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                let _ = root::teardown(&req.session_id, paths);
                return fail(chan, RemoteError::new("netbroker: hop 1's veth uplink", &e));
            }
        }
    } else {
        None
    };
    let outbound = match outbound(&req, veth.is_some()) {
        Ok(o) => o,
        Err(e) => {
            if veth.is_some() {
                drop(veth);
                let _ = root::teardown(&req.session_id, paths);
            }
            return fail(chan, e);
        }
    };
    let uplink = if use_host || veth.is_some() {
        None
    } else {
        match userspace_uplink(chan, &req) {
            Ok(u) => Some(u),
            Err(e) => return fail(chan, e),
        }
    };
    let n0 = match (&uplink, &veth) {
        (Some(u), _) => u.netns.try_clone(),
        (None, Some(v)) => v.netns.try_clone(),
        (None, None) => netns::current().map_err(std::io::Error::other),
    }
    .map_err(ServeError::Dup)?;
    let resolvers = match (&uplink, &veth) {
        (Some(u), _) => hops::nameservers(&u.resolv_conf),
        (None, Some(v)) => hops::nameservers(&v.resolv_conf),
        (None, None) => {
            hops::nameservers(&std::fs::read_to_string(&paths.resolv_conf).unwrap_or_default())
        }
    };
    if let Some(UserspaceUplink {
        userns: Some(userns),
        netns,
        ..
    }) = &uplink
    {
        use std::os::fd::AsFd;
        if let Err(e) = netns::enter_session(userns.as_fd(), netns.as_fd()) {
            return fail(chan, RemoteError::new("netbroker: rootless chain", &e));
        }
        // Entering a user namespace grants every capability in it: back to
        // the netbroker's row, now relative to the session's namespace.
        if let Err(e) = proto::policy::drop_to(proto::policy::Role::Netbroker) {
            return fail(chan, RemoteError::new("netbroker: rootless chain", &e));
        }
    }
    let work_dir = hop_work_dir(&req.session_id);
    // The supervisor sends nothing while it waits for the chain: anything
    // readable on the channel is its hang-up (pallium was interrupted).
    let link = chan.fd();
    let cancelled = move || {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(link, PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    };
    let start = {
        use std::os::fd::AsFd;
        ChainStart {
            session_id: &req.session_id,
            netns: n0.as_fd(),
            resolvers,
            work_dir: &work_dir,
            rootless: req.rootless,
            quiet: req.quiet,
            cancelled: &cancelled,
            app_ids: if req.rootless {
                // The session namespace's root, the caller: its only id.
                (0, 0, 1)
            } else {
                let uid = crate::names::app_uid(&req.session_id);
                (uid, uid, proto::profile::SESSION_UID_BLOCK)
            },
        }
    };
    let enter = in_caller.then(|| enter_session(req.uid, req.gid));
    let built = hops::build(&req.chain, &start, enter, &mut |i, m| {
        progress(chan, Some(i), m)
    });
    let mut chain = match built {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&work_dir);
            if veth.is_some() {
                drop(veth);
                let _ = root::teardown(&req.session_id, paths);
            }
            let mut remote = RemoteError::new("netbroker", &e);
            if matches!(e.source, hops::HopError::Refused(_)) {
                remote = remote.with_kind(ErrorKind::Refused);
            }
            return fail(chan, remote);
        }
    };
    let mut wall = None;
    if let (Some(routes), Some(netns)) = (&req.routes, chain.app_netns()) {
        match split_routes(RouteTarget::Enter(netns), routes, &chain.resolv_conf()) {
            Ok(w) => wall = Some(w),
            Err(e) => {
                drop(chain);
                let _ = std::fs::remove_dir_all(&work_dir);
                if veth.is_some() {
                    drop(veth);
                    let _ = root::teardown(&req.session_id, paths);
                }
                return fail(chan, e);
            }
        }
    }
    let onions = chain.take_onions();
    let onion_services = onions
        .iter()
        .map(|(hop, o)| proto::broker::OnionReady {
            hop: *hop,
            address: o.address.clone(),
            port: o.port,
            target: o.target,
        })
        .collect();
    let onions = onions.into_iter().map(|(_, o)| o).collect();
    let mut links: Vec<String> = uplink.iter().map(|u| u.link.clone()).collect();
    links.extend(veth.iter().map(|v| v.link.clone()));
    links.extend(chain.describe());
    let ready = ChainReady {
        netns: Fd(chain
            .app_netns()
            .expect("a non-empty chain has a last hop")
            .try_clone_to_owned()
            .map_err(ServeError::Dup)?),
        userns: match (&uplink, &chain.session_userns) {
            (Some(u), _) => dup_userns(u).map_err(ServeError::Dup)?,
            (None, Some(s)) => Some(Fd(s.try_clone().map_err(ServeError::Dup)?)),
            (None, None) => None,
        },
        app_userns: chain
            .app_userns
            .as_ref()
            .map(|u| u.try_clone().map(Fd))
            .transpose()
            .map_err(ServeError::Dup)?,
        app_uid: (!req.rootless).then_some(start.app_ids.0),
        resolv_conf: chain.resolv_conf(),
        links,
        outer: std::iter::once(std::os::fd::AsFd::as_fd(&n0))
            .chain(chain.hop_netns().take(req.chain.len() - 1))
            .map(|fd| fd.try_clone_to_owned().map(Fd))
            .collect::<Result<_, _>>()
            .map_err(ServeError::Dup)?,
        onion_services,
    };
    let skip = chain_uids(&req.session_id, &chain);
    // Started before the state holds the chain: on failure the chain's
    // drop here tears it down (the veth's host side after it).
    let extras = start_forwarder(bound, onions, &ready, &req).and_then(|f| {
        build_bridge(chan, &req, ready.netns.0.as_fd(), &ready.resolv_conf, &skip).map(|b| (f, b))
    });
    let (forwarder, bridge) = match extras {
        Ok(fb) => fb,
        Err(e) => {
            drop(chain);
            drop(uplink);
            let _ = std::fs::remove_dir_all(&work_dir);
            if veth.is_some() {
                drop(veth);
                let _ = root::teardown(&req.session_id, paths);
            }
            return fail(chan, e);
        }
    };
    let mut ready = ready;
    ready.links.extend(bridge.iter().map(|b| b.link.clone()));
    ready.links.extend(outbound.iter().map(|o| o.link.clone()));
    *state = State::NetworkReady {
        forwarder,
        session_id: req.session_id,
        bridge,
        chain: Some(chain),
        outbound,
        uplink: uplink.map(Built::Userspace).or(veth.map(Built::Veth)),
        wall,
        work_dir: Some(work_dir),
    };
    chan.send(BrokerEvent::ChainReady(ready))?;
    Ok(())
}

/// `network.port_forwarding.local` and tor hops' `onion_service`: the
/// forwarder in the application's namespace of `ready`, with the sockets
/// bound before the build and the onion services' sockets; None without
/// either. Root mode it runs as the session's engine uid.
fn start_forwarder(
    bound: forward::Bound,
    onions: Vec<hops::Onion>,
    ready: &ChainReady,
    req: &BuildChain,
) -> Result<Option<crate::engine::EngineProcess>, RemoteError> {
    use std::os::fd::AsFd;
    if bound.is_empty() && onions.is_empty() {
        return Ok(None);
    }
    let placement = crate::engine::Placement::session_engine(&req.session_id, req.rootless);
    let userns = ready.userns.as_ref().map(|u| u.0.as_fd());
    forward::start(bound, onions, ready.netns.0.as_fd(), userns, placement)
        .map(Some)
        .map_err(|e| RemoteError::new("netbroker", &e))
}

/// `network.outbound_interface` (root), once the session's veth exists
/// (`veth`); without one (pasta or slirp4netns as root) it is refused.
fn outbound(
    req: &BuildChain,
    veth: bool,
) -> Result<Option<crate::outbound::Outbound>, RemoteError> {
    let Some(iface) = &req.outbound_interface else {
        return Ok(None);
    };
    if req.rootless || !veth {
        return Err(RemoteError::msg(
            "netbroker: network.outbound_interface",
            "network.outbound_interface needs root and the veth uplink (not network.force_slirp or uplink pasta/slirp4netns)",
        )
        .with_kind(ErrorKind::Refused));
    }
    let veth = crate::names::host_ifname(&req.session_id);
    crate::outbound::install(iface.as_str(), &veth)
        .map(Some)
        .map_err(|e| RemoteError::new("netbroker", &e))
}

/// `network.bridge` (root), once the application's namespace is built.
fn build_bridge(
    chan: &Channel<BrokerEvent, BrokerRequest>,
    req: &BuildChain,
    app: std::os::fd::BorrowedFd<'_>,
    resolv_conf: &str,
    skip_uids: &[u32],
) -> Result<Option<Box<crate::bridge::BridgeLink>>, RemoteError> {
    let Some(b) = &req.bridge else {
        return Ok(None);
    };
    if req.rootless {
        return Err(
            RemoteError::msg("netbroker: network.bridge", "network.bridge needs root")
                .with_kind(ErrorKind::Refused),
        );
    }
    let _ = chan.send(BrokerEvent::Progress(Progress {
        hop: None,
        message: format!(
            "creating the bridge {}{}",
            crate::bridge::host_name(&req.session_id, b),
            if b.dhcp { " with DHCP" } else { "" }
        ),
    }));
    crate::bridge::build(&req.session_id, b, app, resolv_conf, req.quiet, skip_uids)
        .map(|b| Some(Box::new(b)))
        .map_err(|e| RemoteError::new("netbroker: network.bridge", &e))
}

/// Root mode: the uids whose sockets carry the chain's own traffic from the
/// host's namespace — the session's packet engines and the hops' daemons —
/// which `bridge.routes` must never send back into the chain (a loop).
fn chain_uids(session_id: &str, chain: &Chain) -> Vec<u32> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let engine = proto::profile::service_uid(session_id, proto::profile::Service::Engine, &passwd);
    let mut uids = vec![engine];
    for p in chain.pids() {
        let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid)).unwrap_or_default();
        // "Uid: real effective saved fs": sockets carry the effective uid.
        let euid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u32>().ok());
        if let Some(u) = euid.filter(|u| *u != 0 && !uids.contains(u)) {
            uids.push(u);
        }
    }
    uids
}

/// How to reach the application namespace's routes: by entering it (root,
/// or a rootless chain the netbroker has entered the session of), or
/// through a rootless uplink holder's route socket.
enum RouteTarget<'a> {
    Enter(std::os::fd::BorrowedFd<'a>),
    /// A route socket and a nf_tables socket in the namespace.
    Socket(&'a mut crate::rtnl::Rtnl, Option<netlink_sys::Socket>),
}

/// `network.routes`: narrow the application namespace's routes to the list
/// (and the session's resolvers, unless the list is empty: `[]` is no
/// network at all, and a resolver that answered would be a way out by DNS).
fn split_routes(
    target: RouteTarget<'_>,
    routes: &[String],
    resolv_conf: &str,
) -> Result<crate::nft::NftSession, RemoteError> {
    let resolvers: Vec<std::net::IpAddr> = hops::nameservers(resolv_conf)
        .iter()
        .map(|a| a.ip())
        .collect();
    split::parse(routes)
        .and_then(|r| match target {
            RouteTarget::Enter(netns) => split::restrict(netns, &r, &resolvers),
            RouteTarget::Socket(rtnl, Some(nft)) => split::restrict_with(rtnl, nft, &r, &resolvers),
            RouteTarget::Socket(_, None) => Err(split::SplitError::Socket(std::io::Error::other(
                "the uplink's nf_tables socket was used already",
            ))),
        })
        .map_err(|e| RemoteError::new("netbroker: network.routes", &e))
}

/// Rootless, hop 1 in the caller's namespace: once hop 1's processes there
/// are started, make the session's user namespace (the caller as root) and
/// the application's network namespace inside it, and move the
/// (single-threaded) netbroker into both, so it may make the hops' namespaces
/// and devices; then back to the netbroker's capability row, now relative
/// to the session's namespace (entering a user namespace grants them all).
fn enter_session(uid: u32, gid: u32) -> hops::EnterSession {
    Box::new(move || {
        use std::os::fd::AsFd;
        let chained = |e: &(dyn std::error::Error + 'static)| {
            RemoteError::new("enter the session's namespaces", e).to_string()
        };
        let (session_userns, app_userns, app_netns) =
            rootless::session_namespaces(uid, gid).map_err(|e| chained(&e))?;
        netns::enter_session(session_userns.as_fd(), app_netns.fd.as_fd())
            .map_err(|e| chained(&e))?;
        proto::policy::drop_to(proto::policy::Role::Netbroker).map_err(|e| chained(&e))?;
        Ok(hops::Entered {
            session_userns,
            app_netns,
            app_userns,
        })
    })
}

/// The hops' private directory: inside the session directory when the
/// supervisor named one, else in the temporary directory.
fn hop_work_dir(session_id: &str) -> std::path::PathBuf {
    match std::env::var_os("PALLIUM_SESSION_DIR") {
        Some(dir) => std::path::PathBuf::from(dir).join("hops"),
        None => std::env::temp_dir().join(format!("pallium-hops-{session_id}")),
    }
}

/// Start pasta or slirp4netns (pasta where the request names the veth: as
/// root with `force_slirp`, or rootless), telling the supervisor.
fn userspace_uplink(
    chan: &Channel<BrokerEvent, BrokerRequest>,
    req: &BuildChain,
) -> Result<UserspaceUplink, RemoteError> {
    // Direct serves the empty chain only; hops start from pasta's namespace.
    let tool = match req.uplink {
        Uplink::Veth | Uplink::Direct => Uplink::Pasta,
        t => t,
    };
    let _ = chan.send(BrokerEvent::Progress(Progress {
        hop: None,
        message: format!("starting {}", tool_name(tool)),
    }));
    rootless::build(tool, req.rootless, req.uid, req.gid)
        .map_err(|e| RemoteError::new(format!("netbroker: {} uplink", tool_name(tool)), &e))
}

/// A copy of the uplink's user namespace descriptor (rootless), for the
/// supervisor; we keep ours.
fn dup_userns(u: &UserspaceUplink) -> std::io::Result<Option<Fd>> {
    u.userns
        .as_ref()
        .map(|f| f.try_clone())
        .transpose()
        .map(|f| f.map(Fd))
}

fn tool_name(u: Uplink) -> &'static str {
    match u {
        Uplink::Slirp4netns => "slirp4netns",
        _ => "pasta",
    }
}
