//! The packet engine's process (doc/SECURITY.md): each proxy hop's tun2socks engine
//! runs in its own child of the netbroker, which re-executes its own binary
//! in a hidden mode ([`ENGINE_ARG`]). The code that parses the application's
//! packets so holds no capability, has no_new_privs and a seccomp allow-list
//! ([`filter`]), and in root mode runs as the session's engine uid.
//!
//! Between fork and exec ([`crate::sys::place_child`]) the child enters
//! the dial namespace N(i−1) (a process creates its sockets in the namespace
//! it is in), keeps only its control socket, empties its bounding set and,
//! in root mode, switches to the engine uid; so the engine binary starts
//! with no capability at all. After exec ([`child`]) it receives the TUN
//! descriptor and its configuration over the control socket (a
//! `SOCK_SEQPACKET` pair, [`proto::engine`]), resolves the proxy, sets its
//! resource limits and its seccomp filter, and only then reads a packet.
//!
//! In direct mode (the rootless empty chain, [`EngineProcess::launch_here`],
//! [`Launched::serve_direct`]) the child stays in the netbroker's network
//! namespace — the caller's — and, rootless, makes a user namespace of its
//! own first, where it can empty its bounding set.
//!
//! An engine whose proxy is a hop daemon's unix socket makes no unix socket
//! (its filter forbids them all): the netbroker dials for it over a second
//! channel sent with Start ([`dial`]).
//!
//! The netbroker side ([`EngineProcess`]) watches the child: its death while
//! the session runs is reported like a hop's (the kill switch holds: the TUN
//! device has no other reader, nothing leaves another way), and dropping it
//! kills the child. The child dies with the netbroker (`PR_SET_PDEATHSIG`,
//! and EOF on its control socket).

#![forbid(unsafe_code)]

pub mod cgroup;
pub mod child;
pub mod dial;
pub mod filter;
pub mod wireguard;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use proto::broker::ProcEntry;
use proto::engine::{
    DnsSpec, EngineEvent, EngineRequest, EngineStats, ProxyProtocol, ProxySpec, StartDirect,
    StartEngine,
};
use proto::{Channel, Fd, WireError};

use crate::tun::Tun;
use crate::tun2socks::{Config, DirectConfig, DnsConfig, Protocol, ProxyConfig, Stats};

/// The hidden first argument that makes `pallium-netbroker` an engine.
pub const ENGINE_ARG: &str = "--packet-engine";

/// RLIMIT_NOFILE of an engine: its TUN, epoll and eventfd, and one or two
/// sockets per connection or UDP flow it relays.
pub const MAX_FILES: u64 = 8192;
/// Root mode: RLIMIT_NPROC of the engine's uid, which is the session's own
/// ([`proto::profile::service_uid`]), so this caps the threads of all of the
/// session's engines together (the control thread, a DNS forwarder, and
/// any thread the engine starts per dial).
pub const MAX_TASKS: u64 = 512;

/// Why an engine could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("start the packet engine process: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("talk to the packet engine process: {0}")]
    Wire(#[from] WireError),
    /// The engine's own one-line reason (it could not reach the proxy, …).
    #[error("{0}")]
    Failed(String),
    #[error("the packet engine process {0} before it was ready")]
    Died(String),
    #[error(transparent)]
    Dial(#[from] dial::DialError),
}

/// How the engine process is placed.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    /// Root mode: the session's engine uid and gid.
    pub run_as: Option<(u32, u32)>,
}

impl Placement {
    /// Session `session_id`'s engine: root mode as its engine service uid
    /// (and gid, the same number); rootless as the caller, like the
    /// netbroker.
    pub fn session_engine(session_id: &str, rootless: bool) -> Placement {
        Placement {
            run_as: (!rootless).then(|| {
                let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
                let uid = proto::profile::service_uid(
                    session_id,
                    proto::profile::Service::Engine,
                    &passwd,
                );
                (uid, uid)
            }),
        }
    }
}

/// An engine process that has been started but serves nothing yet.
/// Dropping it kills the process.
#[derive(Debug)]
pub struct Launched {
    engine: EngineProcess,
    placement: Placement,
    began: std::time::Instant,
}

impl Launched {
    /// Hand the engine its TUN device and configuration; returns once it is
    /// confined and serving, or with its one-line error.
    pub fn serve(mut self, tun: Tun, cfg: &Config) -> Result<EngineProcess, EngineError> {
        self.engine.start(tun, cfg, self.placement)?;
        tracing::debug!(
            pid = self.engine.pid(),
            took = ?self.began.elapsed(),
            "packet engine ready"
        );
        Ok(self.engine)
    }
}

impl Launched {
    /// Hand an engine launched with [`EngineProcess::launch_here`] its TUN
    /// device in direct mode ([`DirectConfig`]).
    pub fn serve_direct(
        mut self,
        tun: Tun,
        cfg: &DirectConfig,
    ) -> Result<EngineProcess, EngineError> {
        let start = EngineRequest::StartDirect(Box::new(StartDirect {
            tun: Fd(tun.fd),
            tun_name: tun.name,
            tun_index: tun.index,
            mtu: tun.mtu,
            max_files: MAX_FILES,
            max_tasks: self.placement.run_as.map(|_| MAX_TASKS),
            refused: cfg.refused.clone(),
            resolvers: cfg.resolvers.clone(),
            connect_timeout_ms: cfg.connect_timeout.as_millis() as u64,
        }));
        self.engine.start_with(start)?;
        tracing::debug!(
            pid = self.engine.pid(),
            took = ?self.began.elapsed(),
            "packet engine ready (direct)"
        );
        Ok(self.engine)
    }
}

impl Launched {
    /// Hand a forwarder launched with [`EngineProcess::launch_forwarder`]
    /// its bound host sockets; returns once it relays.
    pub fn serve_forward(
        mut self,
        rules: Vec<proto::engine::ForwardListener>,
        onions: Vec<proto::engine::OnionListener>,
    ) -> Result<EngineProcess, EngineError> {
        self.engine
            .start_with(EngineRequest::StartForward(Box::new(
                proto::engine::StartForward {
                    rules,
                    onions,
                    max_files: MAX_FILES,
                    max_tasks: self.placement.run_as.map(|_| MAX_TASKS),
                },
            )))?;
        tracing::debug!(pid = self.engine.pid(), "port forwarder ready");
        Ok(self.engine)
    }

    /// Hand a WireGuard engine ([`wireguard`]) its TUN device and
    /// configuration; returns once it is confined and its device built.
    pub fn serve_wireguard(
        mut self,
        tun: Tun,
        private_key: [u8; 32],
        peers: Vec<proto::engine::WgPeer>,
    ) -> Result<EngineProcess, EngineError> {
        let start = EngineRequest::StartWireguard(Box::new(proto::engine::StartWireguard {
            tun: Fd(tun.fd),
            tun_name: tun.name,
            mtu: tun.mtu,
            max_files: MAX_FILES,
            max_tasks: self.placement.run_as.map(|_| MAX_TASKS),
            private_key,
            peers,
        }));
        self.engine.start_with(start)?;
        Ok(self.engine)
    }
}

/// A running engine process. Dropping it kills the process.
#[derive(Debug)]
pub struct EngineProcess {
    child: Child,
    chan: Channel<EngineRequest, EngineEvent>,
    /// Set once the engine has stopped: why.
    exit: Option<String>,
    /// The thread that dials the proxy's unix socket for it, if it has one
    /// ([`dial`]); it ends when dropped, after `Drop` has killed the engine.
    dial: Option<dial::Server>,
}

impl EngineProcess {
    /// Start an engine serving `tun` and dialling in `dial_netns`; returns
    /// once it is confined and serving, or with its one-line error.
    pub fn spawn(
        tun: Tun,
        dial_netns: BorrowedFd<'_>,
        cfg: &Config,
        placement: Placement,
    ) -> Result<EngineProcess, EngineError> {
        Self::launch(dial_netns, placement)?.serve(tun, cfg)
    }

    /// [`EngineProcess::spawn`] from the netbroker binary `exe` (tests run
    /// it from their own executable).
    pub fn spawn_exe(
        exe: &Path,
        tun: Tun,
        dial_netns: BorrowedFd<'_>,
        cfg: &Config,
        placement: Placement,
    ) -> Result<EngineProcess, EngineError> {
        Self::launch_exe(exe, dial_netns, placement)?.serve(tun, cfg)
    }

    /// The first half of [`EngineProcess::spawn`]: start the process, which
    /// loads while the caller checks the proxy and makes the TUN device;
    /// [`Launched::serve`] hands it over.
    pub fn launch(
        dial_netns: BorrowedFd<'_>,
        placement: Placement,
    ) -> Result<Launched, EngineError> {
        Self::launch_exe(Path::new("/proc/self/exe"), dial_netns, placement)
    }

    /// [`EngineProcess::launch`] of the netbroker binary `exe`.
    pub fn launch_exe(
        exe: &Path,
        dial_netns: BorrowedFd<'_>,
        placement: Placement,
    ) -> Result<Launched, EngineError> {
        // Our own namespace (hop 1 rootless, or root's host): no setns,
        // which a rootless netbroker may not do even there.
        let netns = if crate::netns::is_current(dial_netns) {
            -1
        } else {
            dial_netns.as_raw_fd()
        };
        Self::launch_in(exe, netns, -1, placement)
    }

    /// Start an engine process that stays in the netbroker's own network
    /// namespace (direct mode: no setns, which a rootless netbroker could
    /// not do anyway); [`Launched::serve_direct`] hands it over.
    pub fn launch_here(exe: &Path, placement: Placement) -> Result<Launched, EngineError> {
        Self::launch_in(exe, -1, -1, placement)
    }

    /// Start the session's port forwarder ([`crate::forward`]) in the
    /// application's namespace `netns`, joining its owner `userns` first
    /// where the netbroker is not in it (rootless direct uplink);
    /// [`Launched::serve_forward`] hands it the host's sockets.
    pub fn launch_forwarder(
        exe: &Path,
        netns: BorrowedFd<'_>,
        userns: Option<BorrowedFd<'_>>,
        placement: Placement,
    ) -> Result<Launched, EngineError> {
        let userns = userns
            .filter(|u| !crate::netns::is_current_userns(*u))
            .map_or(-1, |u| u.as_raw_fd());
        let netns = if crate::netns::is_current(netns) {
            -1
        } else {
            netns.as_raw_fd()
        };
        Self::launch_in(exe, netns, userns, placement)
    }

    fn launch_in(
        exe: &Path,
        netns: i32,
        userns: i32,
        placement: Placement,
    ) -> Result<Launched, EngineError> {
        let began = std::time::Instant::now();
        let (chan, theirs) = Channel::<EngineRequest, EngineEvent>::pair()?;
        let mut cmd = Command::new(exe);
        cmd.arg0("pallium-netbroker")
            .arg(ENGINE_ARG)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if let Some(level) = std::env::var_os("PALLIUM_LOG") {
            cmd.env("PALLIUM_LOG", level);
        }
        // Its control socket becomes its fd 3 and nothing else of ours
        // reaches it; it dies with us (SIGKILL).
        crate::sys::place_child(
            &mut cmd,
            crate::sys::ChildPlacement {
                netns,
                userns,
                inherit: Some((theirs.as_raw_fd(), crate::sys::CHANNEL_FD)),
                close_others: true,
                map_back: None,
                user: placement.run_as,
                // Not root and not in a user namespace of the session's: the
                // caller's own (rootless hop 1, the direct uplink).
                own_userns: netns < 0
                    && userns < 0
                    && placement.run_as.is_none()
                    && !in_session_userns(),
                death_signal: nix::sys::signal::Signal::SIGKILL,
            },
        );
        let child = cmd.spawn().map_err(EngineError::Spawn)?;
        drop(theirs);
        Ok(Launched {
            engine: EngineProcess {
                child,
                chan,
                exit: None,
                dial: None,
            },
            placement,
            began,
        })
    }

    fn start(&mut self, tun: Tun, cfg: &Config, placement: Placement) -> Result<(), EngineError> {
        // A hop daemon's unix socket: opened now, while the netbroker may
        // still take the engine's group (root mode the socket's directory
        // is the daemon's and the engine's group's), dialled for the engine
        // over its dial channel for the rest of the session.
        let dial = match &cfg.proxy.unix {
            Some(path) => {
                let group = placement.run_as.map(|(_, gid)| gid);
                let (server, theirs) = dial::Server::start(path, group)?;
                self.dial = Some(server);
                Some(Fd(theirs))
            }
            None => None,
        };
        self.start_with(EngineRequest::Start(Box::new(StartEngine {
            tun: Fd(tun.fd),
            tun_name: tun.name,
            tun_index: tun.index,
            mtu: tun.mtu,
            max_files: MAX_FILES,
            max_tasks: placement.run_as.map(|_| MAX_TASKS),
            proxy: proxy_spec(&cfg.proxy),
            dns: dns_spec(&cfg.dns),
            resolvers: cfg.resolvers.clone(),
            connect_timeout_ms: cfg.connect_timeout.as_millis() as u64,
            dial,
        })))
    }

    /// Send the start request and wait for the engine's answer.
    fn start_with(&mut self, start: EngineRequest) -> Result<(), EngineError> {
        let died = |e: &mut EngineProcess| {
            let why = e.wait_reason();
            EngineError::Died(why)
        };
        if let Err(e) = self.chan.handshake("netbroker", "engine") {
            return Err(match e {
                WireError::Closed => died(self),
                e => e.into(),
            });
        }
        self.chan.send(start)?;
        match self.chan.recv() {
            Ok(EngineEvent::Ready) => Ok(()),
            Ok(EngineEvent::Failed(why)) => Err(EngineError::Failed(why)),
            Ok(other) => Err(EngineError::Failed(format!(
                "the packet engine answered {other:?} to Start"
            ))),
            Err(WireError::Closed) => Err(died(self)),
            Err(e) => Err(e.into()),
        }
    }

    /// The engine's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// For `pallium audit`.
    pub fn proc_entry(&self) -> ProcEntry {
        ProcEntry {
            pid: self.pid() as i32,
            role: proto::policy::Role::Engine.name().into(),
        }
    }

    /// None while the engine runs; Some(why) once it has stopped or died.
    pub fn exited(&mut self) -> Option<String> {
        if self.exit.is_some() {
            return self.exit.clone();
        }
        // Its own last word, if it said one.
        while readable_now(self.chan.fd()) {
            match self.chan.recv() {
                Ok(EngineEvent::Exited(why)) => {
                    self.exit = Some(why);
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return self.exit.clone();
                }
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exit = Some(describe_exit(self.pid(), status));
                self.exit.clone()
            }
            _ => None,
        }
    }

    /// The engine's counters (for tests and benchmarks); None once it is gone.
    pub fn stats(&mut self) -> Option<Stats> {
        self.chan.send(EngineRequest::Stats).ok()?;
        loop {
            match self.chan.recv() {
                Ok(EngineEvent::Stats(s)) => return Some(stats_from(s)),
                Ok(EngineEvent::Exited(why)) => self.exit = Some(why),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// A WireGuard engine's peers, in configuration order; None once it
    /// is gone.
    pub fn peers(&mut self) -> Option<Vec<proto::engine::WgPeerState>> {
        self.chan.send(EngineRequest::Peers).ok()?;
        loop {
            match self.chan.recv() {
                Ok(EngineEvent::Peers(p)) => return Some(p),
                Ok(EngineEvent::Exited(why)) => self.exit = Some(why),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Wait for the child that closed its end; what ended it.
    fn wait_reason(&mut self) -> String {
        match self.child.wait() {
            Ok(status) => describe_exit(self.pid(), status),
            Err(e) => format!("could not be waited for: {e}"),
        }
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the netbroker runs in a user namespace that maps its uid 0 (the
/// session's, rootless), rather than the caller's own or the host's.
fn in_session_userns() -> bool {
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let mut w = map.split_whitespace();
    // The initial user namespace maps 0 to 0; the session's, 0 to the caller.
    !(w.next() == Some("0") && w.next() == Some("0"))
}

/// "was killed by SIGSYS (a system call outside its seccomp filter)", "exited with status 1".
fn describe_exit(pid: u32, status: std::process::ExitStatus) -> String {
    if let Some(sig) = status.signal() {
        let name = nix::sys::signal::Signal::try_from(sig)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| format!("signal {sig}"));
        let why = if sig == libc::SIGSYS {
            " (a system call outside its seccomp filter)"
        } else {
            ""
        };
        format!("the packet engine (pid {pid}) was killed by {name}{why}")
    } else {
        format!(
            "the packet engine (pid {pid}) exited with status {}",
            status.code().unwrap_or(-1)
        )
    }
}

/// Whether `fd` has a message (or EOF) right now.
fn readable_now(fd: BorrowedFd<'_>) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

fn proxy_spec(p: &ProxyConfig) -> ProxySpec {
    ProxySpec {
        protocol: match p.protocol {
            Protocol::Socks4 => ProxyProtocol::Socks4,
            Protocol::Socks4a => ProxyProtocol::Socks4a,
            Protocol::Socks5 => ProxyProtocol::Socks5,
            Protocol::HttpConnect => ProxyProtocol::HttpConnect,
        },
        address: p.address.clone(),
        username: p.username.clone(),
        password: p.password.clone(),
        unix_path: p.unix.as_ref().map(|u| u.display().to_string()),
    }
}

fn dns_spec(d: &DnsConfig) -> DnsSpec {
    match d {
        DnsConfig::Virtual { fallback, onion } => DnsSpec::Virtual {
            fallback: fallback.clone(),
            onion: *onion,
        },
        DnsConfig::Forward(v) => DnsSpec::Forward(v.clone()),
        DnsConfig::Off => DnsSpec::Off,
    }
}

/// The engine's configuration from its Start message.
pub(crate) fn config_from(s: &StartEngine) -> Config {
    Config {
        proxy: ProxyConfig {
            protocol: match s.proxy.protocol {
                ProxyProtocol::Socks4 => Protocol::Socks4,
                ProxyProtocol::Socks4a => Protocol::Socks4a,
                ProxyProtocol::Socks5 => Protocol::Socks5,
                ProxyProtocol::HttpConnect => Protocol::HttpConnect,
            },
            address: s.proxy.address.clone(),
            username: s.proxy.username.clone(),
            password: s.proxy.password.clone(),
            unix: s.proxy.unix_path.as_ref().map(std::path::PathBuf::from),
        },
        dns: match &s.dns {
            DnsSpec::Virtual { fallback, onion } => DnsConfig::Virtual {
                fallback: fallback.clone(),
                onion: *onion,
            },
            DnsSpec::Forward(v) => DnsConfig::Forward(v.clone()),
            DnsSpec::Off => DnsConfig::Off,
        },
        resolvers: s.resolvers.clone(),
        connect_timeout: std::time::Duration::from_millis(s.connect_timeout_ms),
    }
}

pub(crate) fn stats_to(s: Stats) -> EngineStats {
    EngineStats {
        connections: s.connections,
        bytes_up: s.bytes_up,
        bytes_down: s.bytes_down,
        dns_queries: s.dns_queries,
        udp_datagrams: s.udp_datagrams,
        refused: s.refused,
    }
}

fn stats_from(s: EngineStats) -> Stats {
    Stats {
        connections: s.connections,
        bytes_up: s.bytes_up,
        bytes_down: s.bytes_down,
        dns_queries: s.dns_queries,
        udp_datagrams: s.udp_datagrams,
        refused: s.refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seccomp_kill_is_named() {
        let status = std::process::ExitStatus::from_raw(libc::SIGSYS);
        let s = describe_exit(7, status);
        assert!(s.contains("SIGSYS") && s.contains("seccomp"), "{s}");
        let status = std::process::ExitStatus::from_raw(1 << 8);
        assert_eq!(
            describe_exit(7, status),
            "the packet engine (pid 7) exited with status 1"
        );
    }
}
