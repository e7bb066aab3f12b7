//! A running session's supervisor: spawns the netbroker and the sandboxer,
//! drives the build (chain, then sandbox), runs the command, serves the
//! control socket, relays signals, and returns the command's exit code.
//!
//! It holds no capabilities once both helpers are up, and is the only process
//! that talks to clients; the helpers only ever hear from it.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{self, sockopt, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use proto::broker::{BrokerEvent, BrokerRequest, BuildChain, ChainReady, ProcEntry, Uplink};
use proto::control::{ControlEvent, ControlRequest, SessionInfo};
use proto::policy::Role;
use proto::sandbox::{SandboxEvent, SandboxRequest, Setup, Spawn};
use proto::{Channel, Fd};

use crate::profile_source::Loaded;
use crate::session::OwnedSession;
use crate::spawn::{self, Helper};
use crate::terminal;
use crate::{identity, peer};

/// Signals we relay to the command instead of dying of them.
const RELAYED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// What to run and how.
pub(crate) struct Plan {
    pub(crate) loaded: Loaded,
    pub(crate) session: OwnedSession,
    /// Started by [`spawn_broker`] before the session directory existed.
    pub(crate) broker: Broker,
    pub(crate) argv: Vec<String>,
    pub(crate) quiet: bool,
    pub(crate) root: bool,
    pub(crate) pid_file: Option<PathBuf>,
    /// `--namespace` of the first command (-1: the application's).
    pub(crate) namespace: i64,
}

/// The signals the supervisor and exec clients take through a signalfd.
pub(crate) fn block_signals() -> Result<SignalFd> {
    let mut set = SigSet::empty();
    for s in RELAYED {
        set.add(s);
    }
    set.add(Signal::SIGWINCH);
    set.thread_block().context("blocking signals")?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC).context("signalfd")
}

pub(crate) type Broker = Helper<BrokerRequest, BrokerEvent>;

/// Start the netbroker for the session that will live in `session_dir`. It
/// learns the directory at once: if we die at any point after this, it
/// removes the directory (netbroker/src/orphan.rs).
pub(crate) fn spawn_broker(session_dir: &Path) -> Result<Broker> {
    let dir = session_dir.display().to_string();
    spawn::spawn("pallium-netbroker", &[("PALLIUM_SESSION_DIR", &dir)])
}

/// [`Plan`] once the netbroker has been taken out of it.
struct Plan2 {
    loaded: Loaded,
    session: OwnedSession,
    argv: Vec<String>,
    quiet: bool,
    root: bool,
    pid_file: Option<PathBuf>,
    namespace: i64,
}
type Sandbox = Helper<SandboxRequest, SandboxEvent>;

/// Build the session, run the command, tear down; the command's exit code.
pub(crate) fn run(plan: Plan) -> Result<i32> {
    let signals = block_signals()?;
    let rootless = !nix::unistd::getuid().is_root();
    let uplink = choose_uplink(rootless, &plan.loaded.profile.network)?;
    // Both helpers start in parallel; the handshakes wait for both.
    let Plan {
        loaded,
        session,
        mut broker,
        argv,
        quiet,
        root,
        pid_file,
        namespace,
    } = plan;
    let plan = Plan2 {
        loaded,
        session,
        argv,
        quiet,
        root,
        pid_file,
        namespace,
    };
    let mut sandbox: Sandbox = spawn::spawn("pallium-sandboxer", &[])?;
    // Started while we are still the caller: the hooks run as the caller.
    let mut hooks = crate::hooks::HookRunner::start(&plan.loaded.profile.network.hooks)?;
    let result = run_with(
        &plan,
        &mut broker,
        &mut sandbox,
        signals,
        rootless,
        uplink,
        hooks.as_mut(),
    );
    // While the network is still up.
    if let Some(h) = hooks.as_mut() {
        h.pre_down();
    }
    let _ = broker.chan.send(BrokerRequest::Shutdown);
    let _ = sandbox.chan.send(SandboxRequest::Shutdown);
    // The sandbox must be gone before we return: its PID namespace ends with
    // the sandboxer. The netbroker finishes on its own: closing its
    // kernel-owned nftables table takes ~10 ms of RCU grace periods that the
    // user need not wait for, and it restores the host before it exits.
    reap(&mut sandbox.child, sandbox.chan.fd());
    let _ = broker.child.try_wait();
    // The session's lock goes before the netbroker's channel: on that
    // channel's end the netbroker removes the session directory if its lock
    // is free (root mode: we no longer may, crate::identity).
    drop(plan);
    drop(broker);
    result
}

/// The largest hop file read for the netbroker (an .ovpn with its inline
/// keys is a few KiB).
const HOP_FILE_MAX: u64 = 1 << 20;

/// The chain with the files its hops name read in, as the caller (before we
/// drop our identity): the netbroker never opens a path a profile names, or
/// it would read for anyone what only it may.
fn with_hop_files(chain: &[proto::profile::Hop]) -> Result<Vec<proto::profile::Hop>> {
    use std::io::Read;
    let mut out = chain.to_vec();
    for (i, hop) in out.iter_mut().enumerate() {
        if let proto::profile::HopKind::Openvpn(o) = &mut hop.kind {
            let mut text = String::new();
            std::fs::File::open(&o.config)
                .and_then(|f| f.take(HOP_FILE_MAX + 1).read_to_string(&mut text))
                .with_context(|| {
                    format!("hop {} (openvpn): reading its config {}", i + 1, o.config)
                })?;
            if text.len() as u64 > HOP_FILE_MAX {
                bail!(
                    "hop {} (openvpn): its config {} is larger than 1 MiB; is it the right file?",
                    i + 1,
                    o.config
                );
            }
            o.config_text = Some(text);
        }
    }
    Ok(out)
}

fn run_with(
    plan: &Plan2,
    broker: &mut Broker,
    sandbox: &mut Sandbox,
    signals: SignalFd,
    rootless: bool,
    uplink: Uplink,
    hooks: Option<&mut crate::hooks::HookRunner>,
) -> Result<i32> {
    broker.handshake("netbroker")?;
    sandbox.handshake("sandboxer")?;
    // Both helpers hold what they need; we keep nothing. What needs the
    // caller's identity is read or opened first.
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let profile = &plan.loaded.profile;
    let hidden = crate::runtime::hidden_dirs();
    let runsc = profile
        .sandbox
        .gvisor
        .then(crate::cmd::find_runsc)
        .flatten()
        .map(|p| p.display().to_string());
    let mut pid_file = plan
        .pid_file
        .as_ref()
        .map(|p| {
            std::fs::File::create(p).with_context(|| format!("creating --pid-file {}", p.display()))
        })
        .transpose()?;
    let notifier =
        crate::notify::Notifier::from_env().context("connecting to systemd's NOTIFY_SOCKET")?;
    let hops = with_hop_files(&profile.network.chain)?;
    let ids = (!rootless).then(|| identity::ServiceIds::supervisor(&session_id(plan)));
    // The audio relay connects as the caller; the GUI reads its display.
    let mut desktop = crate::desktop::Desktop::prepare(
        &profile.sandbox,
        &plan.session.dir,
        ids.map(|i| (i.uid, i.gid)),
    )?;
    if let Some(ids) = ids {
        // Root mode: not even uid 0 from here on (crate::identity).
        identity::prepare(&plan.session.dir, ids)?;
        identity::become_service(ids)?;
    } else {
        proto::policy::drop_to(Role::Supervisor)
            .context("dropping the supervisor's capabilities")?;
    }
    // Xpra (no more privilege than the caller) comes up while the chain is
    // built.
    desktop.start(plan.quiet)?;

    broker.chan.send(BrokerRequest::BuildChain(BuildChain {
        session_id: session_id(plan),
        rootless,
        uid,
        gid,
        uplink,
        chain: hops,
        routes: profile
            .network
            .routes
            .as_ref()
            .map(|r| r.iter().map(ToString::to_string).collect()),
        bridge: profile.network.bridge.clone().map(Box::new),
        outbound_interface: profile.network.outbound_interface.clone(),
        host_access: profile.network.host_access,
        quiet: plan.quiet,
        port_forwarding: profile.network.port_forwarding.clone(),
    }))?;
    let chain = match wait_chain(broker, plan.quiet, &profile.network.chain, &signals)? {
        Chained::Ready(c) => c,
        Chained::Interrupted(sig) => {
            // Our exit hangs up on the netbroker, which abandons the build
            // at its next turn and tears down what it had.
            eprintln!(
                "pallium: interrupted ({}) while the network chain was being built",
                Signal::try_from(sig).map_or("a signal", |s| s.as_str())
            );
            return Ok(128 + sig);
        }
    };
    let outer = chain.outer;
    for o in &chain.onion_services {
        // The user's result, not a tool's chatter: shown even with --quiet.
        eprintln!(
            "pallium: onion service {}:{} (hop {}, tor) → port {} in the sandbox",
            o.address, o.port, o.hop, o.target
        );
    }
    let (binds, mut desktop_env) = desktop.finish()?;
    let hostname = profile.sandbox.hostname.clone();
    sandbox.chan.send(SandboxRequest::Setup(Box::new(Setup {
        netns: chain.netns,
        userns: chain.userns,
        app_userns: chain.app_userns,
        app_uid: chain.app_uid,
        hosts: hosts_file(&hostname),
        hostname,
        resolv_conf: chain.resolv_conf,
        uid,
        gid,
        profile: profile.sandbox.clone(),
        runsc,
        hidden,
        binds,
    })))?;
    let (init_pid, sandbox_root, app_owner, audio) =
        match sandbox.chan.recv().context("sandboxer")? {
            SandboxEvent::Ready {
                init_pid,
                root,
                owner,
                audio,
            } => (init_pid, root.0, owner, audio),
            SandboxEvent::Failed { error, .. } => return Err(anyhow!("{error}")),
            other => bail!("sandboxer sent {other:?} instead of Ready"),
        };

    // Read once, before the application runs: the namespaces control clients
    // are judged against, and the root `cp`/`mv` are handed.
    if let Some(listener) = audio {
        let tcp = desktop.audio_over_tcp(listener.0)?;
        desktop_env = crate::desktop::with(desktop_env, &tcp);
    }
    let gate = peer::Gate::new(init_pid, uid);
    let sandbox_root = checked_root(sandbox_root);
    let listener = listen(&plan.session.control_path())?;
    if !rootless {
        // Ours now, not root's: root without CAP_DAC_OVERRIDE would be
        // "others" and never reach the gate, which is what judges clients.
        // The directory (root's and our group's, 0770) is the wall.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            plan.session.control_path(),
            std::fs::Permissions::from_mode(0o666),
        )
        .context("opening the control socket to root")?;
    }
    let info = SessionInfo {
        profile: plan.loaded.display.clone(),
        index: plan.session.index,
        supervisor_pid: std::process::id() as i32,
        hops: profile
            .network
            .chain
            .iter()
            .map(|h| h.kind.name().to_string())
            .collect(),
        started_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        links: chain.links,
        init_pid,
    };
    plan.session.write_info(&info)?;
    if let (Some(f), Some(p)) = (pid_file.as_mut(), &plan.pid_file) {
        use std::io::Write;
        writeln!(f, "{init_pid}").with_context(|| format!("writing --pid-file {}", p.display()))?;
    }

    let mut session_env = crate::hooks::session_env(profile);
    session_env.extend(crate::hooks::onion_env(&chain.onion_services));
    if let Some(h) = hooks {
        let mut env = session_env.clone();
        env.push((
            "PALLIUM_SESSION_INDEX".into(),
            plan.session.index.to_string(),
        ));
        env.push(("PALLIUM_PROFILE".into(), plan.loaded.display.clone()));
        env.push(("PALLIUM_INIT_PID".into(), init_pid.to_string()));
        h.post_up(env)?;
    }
    if let Some(n) = &notifier {
        let status = format!(
            "session {} of {} up",
            plan.session.index, plan.loaded.display
        );
        if let Err(e) = n.ready(&status) {
            tracing::warn!("telling systemd the session is up: {e}");
        }
    }
    let mut stdio = terminal::setup(if plan.loaded.profile.sandbox.gvisor {
        terminal::Runner::GvisorFirst
    } else {
        terminal::Runner::Direct
    })?;
    sandbox.chan.send(SandboxRequest::Spawn(Spawn {
        id: 0,
        argv: plan.argv.clone(),
        env: with_session(
            crate::desktop::with(
                profile.sandbox.environment.apply(std::env::vars()),
                &desktop_env,
            ),
            &session_env,
        ),
        cwd: workdir(plan),
        stdio: stdio.take_fds(),
        tty: stdio.tty,
        root: plan.root,
        netns: netns_for(plan.namespace, &outer)?,
    }))?;
    let mut lp = Loop {
        broker,
        sandbox,
        listener,
        signals,
        info,
        clients: HashMap::new(),
        next_id: 1,
        audits: Vec::new(),
        stdio,
        outer,
        gate,
        refused_once: false,
        sandbox_root,
        app_owner,
        environment: profile.sandbox.environment.clone(),
        session_env,
        desktop_env,
    };
    let status = lp.serve();
    let Loop { stdio, .. } = lp;
    stdio.finish();
    status
}

/// The application's environment with the session's variables, which win.
fn with_session(
    mut env: Vec<(String, String)>,
    session: &[(String, String)],
) -> Vec<(String, String)> {
    env.retain(|(k, _)| !session.iter().any(|(s, _)| s == k));
    env.extend(session.iter().cloned());
    env
}

/// The network namespace `--namespace index` names, given the chain's
/// N0…N(k−1): None for the application's own (the last, -1).
fn netns_for(index: i64, outer: &[Fd]) -> Result<Option<Fd>> {
    let n = outer.len() as i64 + 1;
    let j = if index < 0 { index + n } else { index };
    if !(0..n).contains(&j) {
        bail!(
            "--namespace {index}: this session has {n} network namespace(s) (0…{})",
            n - 1
        );
    }
    outer
        .get(j as usize)
        .map(|fd| fd.0.try_clone().map(Fd))
        .transpose()
        .context("duplicating a namespace descriptor")
}

/// The sandbox's root directory as the sandboxer sent it with `Ready` (it
/// lives there; the init's `/proc/PID/root` is closed to us, the init being
/// non-dumpable); None (and `cp`/`mv` say why) if it is not a directory.
fn checked_root(root: OwnedFd) -> Option<OwnedFd> {
    match nix::sys::stat::fstat(&root) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => Some(root),
        other => {
            tracing::debug!("the sandboxer's root is not a directory: {other:?}");
            None
        }
    }
}

/// Root: the veth. Rootless: the engine's direct mode for the empty chain
/// (measured fastest, `extra/bench/uplinks.sh`; a chain with hops starts from
/// pasta's namespace), unless `network.uplink` or `force_slirp` names a
/// userspace tool; `force_slirp`: pasta, else slirp4netns.
pub(crate) fn choose_uplink(rootless: bool, net: &proto::profile::Network) -> Result<Uplink> {
    use proto::profile::UplinkChoice;
    if !rootless && !net.force_slirp {
        return Ok(Uplink::Veth);
    }
    let tool = |name: &str| proto::runtime::find_program(name).is_some();
    match net.uplink {
        Some(UplinkChoice::Direct) if !rootless => {
            bail!("network.uplink \"direct\" is for rootless mode; as root the empty chain has its veth (drop network.force_slirp)")
        }
        Some(UplinkChoice::Direct) => return Ok(Uplink::Direct),
        Some(UplinkChoice::Pasta) if tool("pasta") => return Ok(Uplink::Pasta),
        Some(UplinkChoice::Slirp4netns) if tool("slirp4netns") => return Ok(Uplink::Slirp4netns),
        Some(UplinkChoice::Pasta) => {
            bail!("network.uplink \"pasta\" needs pasta, which is not installed: apt-get install passt")
        }
        Some(UplinkChoice::Slirp4netns) => {
            bail!("network.uplink \"slirp4netns\" needs slirp4netns, which is not installed: apt-get install slirp4netns")
        }
        None if rootless && !net.force_slirp && net.chain.is_empty() => return Ok(Uplink::Direct),
        None => {}
    }
    if proto::runtime::find_program("pasta").is_some() {
        return Ok(Uplink::Pasta);
    }
    if proto::runtime::find_program("slirp4netns").is_some() {
        return Ok(Uplink::Slirp4netns);
    }
    let why = if rootless {
        "rootless mode"
    } else {
        "network.force_slirp"
    };
    bail!("{why} needs pasta or slirp4netns, and neither is installed: apt-get install passt (or slirp4netns)")
}

/// The session's id (`proto::runtime::SessionRef::id`, our pid the nonce).
fn session_id(plan: &Plan2) -> String {
    plan.session.id(std::process::id())
}

fn hosts_file(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    )
}

fn workdir(plan: &Plan2) -> Option<String> {
    match plan.loaded.profile.sandbox.workdir.as_deref() {
        Some(w) if !w.is_empty() => Some(w.to_string()),
        _ => std::env::current_dir()
            .ok()
            .map(|p| p.display().to_string()),
    }
}

/// How waiting for the chain ended.
enum Chained {
    Ready(ChainReady),
    /// A relayed signal (the user's Ctrl-C) came first.
    Interrupted(i32),
}

fn wait_chain(
    broker: &mut Broker,
    quiet: bool,
    hops: &[proto::profile::Hop],
    signals: &SignalFd,
) -> Result<Chained> {
    let kinds: Vec<&str> = hops.iter().map(|h| h.kind.name()).collect();
    let mut display = crate::progress::Display::stderr(&kinds, quiet);
    let result = wait_chain_events(broker, &mut display, signals);
    match &result {
        Ok(Chained::Ready(_)) => display.finish(),
        _ => display.abandon(),
    }
    result
}

fn wait_chain_events(
    broker: &mut Broker,
    display: &mut crate::progress::Display<std::io::Stderr>,
    signals: &SignalFd,
) -> Result<Chained> {
    loop {
        let mut fds = [
            PollFd::new(broker.chan.fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        // A live display redraws its elapsed times while nothing happens.
        let timeout = if display.is_live() {
            PollTimeout::from(crate::progress::TICK.as_millis() as u16)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Ok(0) => {
                display.tick();
                continue;
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("waiting for the netbroker"),
        }
        let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
        if ready(&fds[1]) {
            if let Ok(Some(info)) = signals.read_signal() {
                if info.ssi_signo as i32 != Signal::SIGWINCH as i32 {
                    return Ok(Chained::Interrupted(info.ssi_signo as i32));
                }
            }
        }
        if !ready(&fds[0]) {
            continue;
        }
        match broker.chan.recv().context("netbroker")? {
            // The empty chain's one step is not worth a line; hops' progress is.
            BrokerEvent::Progress(p) => {
                if let Some(i) = p.hop {
                    display.report(i, &p.message);
                }
            }
            BrokerEvent::ChainReady(c) => return Ok(Chained::Ready(c)),
            BrokerEvent::Failed(e) => return Err(anyhow!("{e}")),
            other => bail!("netbroker sent {other:?} while building the chain"),
        }
    }
}

fn listen(path: &Path) -> Result<OwnedFd> {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::bind(fd.as_raw_fd(), &UnixAddr::new(path)?)
        .with_context(|| format!("binding {}", path.display()))?;
    socket::listen(&fd, Backlog::new(16)?)?;
    Ok(fd)
}

/// Wait for a helper told to shut down: its channel hangs up when it exits;
/// one that is still there after 2 s is killed.
fn reap(child: &mut std::process::Child, chan: std::os::fd::BorrowedFd<'_>) {
    let mut fds = [PollFd::new(chan, PollFlags::POLLIN)];
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while child.try_wait().ok().flatten().is_none() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            if child.kill().is_err() {
                // Root mode: the helper is root's and we are the session's
                // uid by now, so neither our kill nor our death's signal
                // reaches it (the kernel checks a parent-death signal as a
                // kill from us). Our exit closes its channel, and on that
                // EOF it ends; waiting for it here could wait forever.
                return;
            }
            break;
        }
        // Readable data (a late event) is discarded by the helper's exit anyway;
        // poll returns on it or on the hang-up, then we check again.
        let ms = u16::try_from(left.as_millis().min(50)).unwrap_or(50);
        let _ = poll(&mut fds, PollTimeout::from(ms));
        if fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP))
        {
            break;
        }
    }
    let _ = child.wait();
}

struct Client {
    chan: Channel<ControlEvent, ControlRequest>,
    /// The spawn this client started, if any.
    exec_id: Option<u32>,
}

struct Loop<'a> {
    broker: &'a mut Broker,
    sandbox: &'a mut Sandbox,
    listener: OwnedFd,
    signals: SignalFd,
    info: SessionInfo,
    clients: HashMap<u64, Client>,
    next_id: u32,
    /// Clients waiting for an audit, with the entries gathered so far and how
    /// many answers (broker, sandboxer) are still due.
    audits: Vec<(u64, Vec<ProcEntry>, u8)>,
    stdio: terminal::Stdio,
    /// N0…N(k−1) of the chain, for `exec --namespace`.
    outer: Vec<Fd>,
    /// Who may use the control socket.
    gate: peer::Gate,
    /// A refusal has been logged: later ones are only debug lines, so a
    /// sandbox that keeps trying cannot fill the user's terminal.
    refused_once: bool,
    /// The sandbox's root for `cp`/`mv` (see [`checked_root`]).
    sandbox_root: Option<OwnedFd>,
    /// Who the application runs as on the host, which `cp`/`mv` act as in
    /// the sandbox (`SandboxEvent::Ready::owner`).
    app_owner: Option<(u32, u32)>,
    /// The session profile's environment policy, applied to every `exec`.
    environment: proto::profile::Environment,
    /// The session's own variables ([`crate::hooks::session_env`]), given
    /// to every `exec` too.
    session_env: Vec<(String, String)>,
    /// The GUI's and audio relay's variables, set for every `exec` too.
    desktop_env: Vec<(String, String)>,
}

enum Next {
    Continue,
    Exit(i32),
}

impl Loop<'_> {
    fn serve(&mut self) -> Result<i32> {
        let mut next_client = 0u64;
        loop {
            let keys: Vec<u64> = self.clients.keys().copied().collect();
            let ready: Vec<bool> = {
                let mut fds = vec![
                    PollFd::new(self.broker.chan.fd(), PollFlags::POLLIN),
                    PollFd::new(self.sandbox.chan.fd(), PollFlags::POLLIN),
                    PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                ];
                fds.extend(
                    keys.iter()
                        .map(|k| PollFd::new(self.clients[k].chan.fd(), PollFlags::POLLIN)),
                );
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(nix::Error::EINTR) => {}
                    Err(e) => return Err(e).context("poll"),
                }
                fds.iter()
                    .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                    .collect()
            };
            if ready[3] {
                self.on_signal();
            }
            if ready[0] {
                self.on_broker()?;
            }
            if ready[1] {
                if let Next::Exit(c) = self.on_sandbox()? {
                    return Ok(c);
                }
            }
            if ready[2] {
                if let Some(c) = self.accept() {
                    self.clients.insert(next_client, c);
                    next_client += 1;
                }
            }
            for (k, _) in keys.iter().zip(&ready[4..]).filter(|(_, r)| **r) {
                if let Next::Exit(c) = self.on_client(*k)? {
                    return Ok(c);
                }
            }
        }
    }

    fn on_signal(&mut self) {
        let Ok(Some(info)) = self.signals.read_signal() else {
            return;
        };
        let signo = info.ssi_signo as i32;
        if signo == Signal::SIGWINCH as i32 {
            self.stdio.resize();
        } else {
            let _ = self.sandbox.chan.send(SandboxRequest::Signal {
                id: 0,
                signal: signo,
            });
        }
    }

    fn on_broker(&mut self) -> Result<()> {
        match self.broker.chan.recv() {
            Ok(BrokerEvent::Pids(p)) => self.audit_part(p),
            // After the build, a hop's progress is news of its death:
            // always shown.
            Ok(BrokerEvent::Progress(p)) => match p.hop {
                Some(i) => eprintln!("pallium: warning: hop {}: {}", i + 1, p.message),
                // The uplink's (the direct uplink's engine died).
                None => eprintln!("pallium: warning: {}", p.message),
            },
            Ok(BrokerEvent::Failed(e)) => bail!("{e}"),
            Ok(other) => bail!("netbroker sent {other:?} unexpectedly"),
            Err(e) => bail!("the netbroker ended ({e}); the session is torn down so no traffic can leave unprotected"),
        }
        Ok(())
    }

    fn on_sandbox(&mut self) -> Result<Next> {
        let ev = self
            .sandbox
            .chan
            .recv()
            .map_err(|e| anyhow!("the sandboxer ended ({e}); the session is torn down"))?;
        match ev {
            SandboxEvent::Spawned { id, pid } => {
                self.tell_client(id, ControlEvent::Started { pid })
            }
            SandboxEvent::Exited { id: 0, status } => return Ok(Next::Exit(status.as_code())),
            SandboxEvent::Exited { id, status } => {
                self.tell_client(id, ControlEvent::Exited(status))
            }
            SandboxEvent::Failed { id: Some(0), error } => {
                eprintln!("pallium: {}", error.chain.join(": "));
                return Ok(Next::Exit(exit_code_for_spawn_error(&error)));
            }
            SandboxEvent::Failed {
                id: Some(id),
                error,
            } => self.tell_client(id, ControlEvent::Failed(error)),
            SandboxEvent::Failed { id: None, error } => bail!("{error}"),
            SandboxEvent::Pids(p) => self.audit_part(p),
            SandboxEvent::Ready { .. } => bail!("sandboxer sent Ready twice"),
        }
        Ok(Next::Continue)
    }

    fn tell_client(&self, id: u32, ev: ControlEvent) {
        if let Some((_, c)) = self.clients.iter().find(|(_, c)| c.exec_id == Some(id)) {
            let _ = c.chan.send(ev);
        }
    }

    fn accept(&mut self) -> Option<Client> {
        let fd = crate::sys::owned(
            socket::accept4(self.listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC).ok()?,
        );
        let verdict = self.gate.judge(fd.as_fd());
        // A refused peer gets a short wait for its hello: it must not hold
        // the loop for long, however often it connects.
        let wait = match verdict {
            Ok(()) => nix::sys::time::TimeVal::new(2, 0),
            Err(_) => nix::sys::time::TimeVal::new(0, 200_000),
        };
        let _ = socket::setsockopt(&fd, sockopt::ReceiveTimeout, &wait);
        let mut chan: Channel<ControlEvent, ControlRequest> = Channel::new(fd);
        if let Err(why) = verdict {
            if self.refused_once {
                tracing::debug!("refused a control connection: {why}");
            } else {
                tracing::warn!("refused a control connection: {why}");
                self.refused_once = true;
            }
            // Its one line: it reads our hello, then this, then the end.
            let _ = chan.handshake("supervisor", "client");
            let _ = chan.send(ControlEvent::Refused(why.refusal()));
            return None;
        }
        chan.handshake("supervisor", "client").ok()?;
        let _ = socket::setsockopt(
            &chan.fd(),
            sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(0, 0),
        );
        chan.send(ControlEvent::Accepted).ok()?;
        Some(Client {
            chan,
            exec_id: None,
        })
    }

    fn on_client(&mut self, key: u64) -> Result<Next> {
        let Some(client) = self.clients.get_mut(&key) else {
            return Ok(Next::Continue);
        };
        let req = match client.chan.recv() {
            Ok(r) => r,
            Err(_) => {
                // The client went away: its command gets SIGHUP, as a closed terminal would.
                if let Some(id) = client.exec_id {
                    let _ = self.sandbox.chan.send(SandboxRequest::Signal {
                        id,
                        signal: libc::SIGHUP,
                    });
                }
                self.clients.remove(&key);
                return Ok(Next::Continue);
            }
        };
        match req {
            ControlRequest::Exec(e) => {
                if client.exec_id.is_some() {
                    let _ = client
                        .chan
                        .send(ControlEvent::Failed(proto::RemoteError::msg(
                            "session",
                            "one command per connection",
                        )));
                    return Ok(Next::Continue);
                }
                let netns = match netns_for(e.namespace, &self.outer) {
                    Ok(n) => n,
                    Err(err) => {
                        let _ = client
                            .chan
                            .send(ControlEvent::Failed(proto::RemoteError::msg(
                                "session",
                                format!("{err:#}"),
                            )));
                        return Ok(Next::Continue);
                    }
                };
                let id = self.next_id;
                self.next_id += 1;
                client.exec_id = Some(id);
                self.sandbox.chan.send(SandboxRequest::Spawn(Spawn {
                    id,
                    argv: e.argv,
                    // Filtered here, on the trusted side: the client sent
                    // its whole environment.
                    env: with_session(
                        crate::desktop::with(self.environment.apply(e.env), &self.desktop_env),
                        &self.session_env,
                    ),
                    cwd: e.cwd,
                    stdio: e.stdio,
                    tty: e.tty,
                    root: e.root,
                    netns,
                }))?;
            }
            ControlRequest::Signal(sig) => {
                if let Some(id) = client.exec_id {
                    self.sandbox
                        .chan
                        .send(SandboxRequest::Signal { id, signal: sig })?;
                }
            }
            ControlRequest::Stop => {
                let _ = client.chan.send(ControlEvent::Stopping);
                return Ok(Next::Exit(128 + libc::SIGTERM));
            }
            ControlRequest::Info => {
                let _ = client.chan.send(ControlEvent::Info(self.info.clone()));
            }
            ControlRequest::SandboxRoot => {
                let ev = match self.sandbox_root.as_ref().map(OwnedFd::try_clone) {
                    Some(Ok(fd)) => ControlEvent::SandboxRoot {
                        root: Fd(fd),
                        owner: self.app_owner,
                    },
                    Some(Err(e)) => ControlEvent::Failed(proto::RemoteError::new(
                        "session: duplicating the sandbox's root",
                        &e,
                    )),
                    None => ControlEvent::Failed(proto::RemoteError::msg(
                        "session",
                        "the supervisor could not open the sandbox's root when it started",
                    )),
                };
                let _ = client.chan.send(ev);
            }
            ControlRequest::Audit => {
                let me = ProcEntry {
                    pid: std::process::id() as i32,
                    role: "supervisor".into(),
                };
                self.audits.push((key, vec![me], 2));
                self.broker.chan.send(BrokerRequest::ListPids)?;
                self.sandbox.chan.send(SandboxRequest::ListPids)?;
            }
        }
        Ok(Next::Continue)
    }

    /// One helper's process list arrived: add it to the oldest pending audit.
    fn audit_part(&mut self, pids: Vec<ProcEntry>) {
        let Some(first) = self.audits.first_mut() else {
            return;
        };
        first.1.extend(pids);
        first.2 -= 1;
        if first.2 == 0 {
            let (key, entries, _) = self.audits.remove(0);
            if let Some(c) = self.clients.get(&key) {
                let _ = c.chan.send(ControlEvent::Audit(entries));
            }
        }
    }
}

/// 127 when the command was not found, 126 when it could not be run, as shells do.
pub(crate) fn exit_code_for_spawn_error(e: &proto::RemoteError) -> i32 {
    if e.kind == proto::ErrorKind::NotFound {
        127
    } else {
        126
    }
}
