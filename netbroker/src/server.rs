//! The netbroker's side of the supervisor channel: one `match` over requests,
//! each arm a `handle_<verb>`, and the session state that makes the legal
//! order explicit (`BuildChain` once, then `ListPids`, then `Shutdown`/EOF).

#![forbid(unsafe_code)]

use proto::broker::{
    BrokerEvent, BrokerRequest, BuildChain, ChainReady, ProcEntry, Progress, Uplink,
};
use proto::{Channel, Fd, RemoteError, WireError};

use crate::root::{self, HostPaths, VethUplink};
use crate::rootless::{self, UserspaceUplink};

/// What ends the serving loop abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("supervisor channel")]
    Wire(#[from] WireError),
    #[error("hand the namespace descriptors to the supervisor")]
    Dup(#[source] std::io::Error),
}

/// The session's uplink once built.
#[derive(Debug)]
enum Built {
    Veth(VethUplink),
    Userspace(UserspaceUplink),
}

#[derive(Debug)]
enum State {
    Configured,
    NetworkReady { session_id: String, uplink: Built },
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
    let result = loop {
        let req = match chan.recv() {
            Ok(r) => r,
            Err(WireError::Closed) => {
                tracing::info!("supervisor closed the channel");
                break Ok(());
            }
            Err(e) => break Err(e.into()),
        };
        let step = match req {
            BrokerRequest::BuildChain(b) => handle_build_chain(chan, &mut state, b, paths),
            BrokerRequest::ListPids => handle_list_pids(chan, &state),
            BrokerRequest::Shutdown => {
                orphaned = false;
                break Ok(());
            }
        };
        if let Err(e) = step {
            break Err(e);
        }
    };
    teardown(state, paths);
    if let (true, Some(dir)) = (orphaned, session_dir) {
        crate::orphan::remove_dead_session(&dir);
    }
    result
}

fn handle_build_chain(
    chan: &mut Channel<BrokerEvent, BrokerRequest>,
    state: &mut State,
    req: BuildChain,
    paths: &HostPaths,
) -> Result<(), ServeError> {
    if let State::NetworkReady { .. } = state {
        let e = RemoteError::msg("netbroker: build chain", "the chain is already built");
        return chan.send(BrokerEvent::Failed(e)).map_err(Into::into);
    }
    if !req.chain.is_empty() {
        let e = RemoteError::msg(
            "netbroker: build chain",
            format!(
                "{} hop(s) requested; this netbroker only builds the empty chain",
                req.chain.len()
            ),
        );
        return chan.send(BrokerEvent::Failed(e)).map_err(Into::into);
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
        let r = root::build(&req.session_id, paths, &mut |w| warnings.push(w));
        for w in warnings {
            tracing::warn!("{w}");
            progress(chan, format!("warning: {w}"));
        }
        r.map(Built::Veth)
            .map_err(|e| RemoteError::new("netbroker: veth uplink", &e))
    } else {
        let uplink = if req.uplink == Uplink::Veth {
            Uplink::Pasta
        } else {
            req.uplink
        };
        progress(chan, format!("starting {}", tool_name(uplink)));
        rootless::build(uplink, req.rootless, req.uid, req.gid)
            .map(Built::Userspace)
            .map_err(|e| RemoteError::new(format!("netbroker: {} uplink", tool_name(uplink)), &e))
    };
    let uplink = match built {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("{e}");
            // Everything built so far was dropped with the error.
            if use_veth {
                let _ = root::teardown(&req.session_id, paths);
            }
            return chan.send(BrokerEvent::Failed(e)).map_err(Into::into);
        }
    };
    let ready = chain_ready(&uplink).map_err(ServeError::Dup)?;
    *state = State::NetworkReady {
        session_id: req.session_id,
        uplink,
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
        uplink: Built::Userspace(u),
        ..
    } = state
    {
        pids.push(ProcEntry {
            pid: u.daemon.id() as i32,
            role: u.role.into(),
        });
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
            resolv_conf: v.resolv_conf.clone(),
            links: vec![v.link.clone()],
        },
        Built::Userspace(u) => ChainReady {
            netns: Fd(u.netns.try_clone()?),
            userns: u
                .userns
                .as_ref()
                .map(|f| f.try_clone())
                .transpose()?
                .map(Fd),
            resolv_conf: u.resolv_conf.clone(),
            links: vec![u.link.clone()],
        },
    })
}

fn teardown(state: State, paths: &HostPaths) {
    let State::NetworkReady { session_id, uplink } = state else {
        return;
    };
    let veth = matches!(uplink, Built::Veth(_));
    // Kills the daemon, closes the namespaces (the veth pair goes with them)
    // and the nf_tables socket (the owner table goes with it).
    drop(uplink);
    if veth {
        match root::teardown(&session_id, paths) {
            Ok(true) => tracing::info!("restored the host's forwarding sysctls"),
            Ok(false) => {}
            Err(e) => tracing::warn!("restore forwarding sysctls: {e}"),
        }
    }
}

fn tool_name(u: Uplink) -> &'static str {
    match u {
        Uplink::Slirp4netns => "slirp4netns",
        _ => "pasta",
    }
}
