//! Hop daemons (tor, ssh, socksapp programs): find the binary, start it in
//! N(i−1) as the right user with its output in a log file, wait until its
//! SOCKS port answers, serve that port into Ni ([`DaemonHop`]), and stop it
//! when the hop is dropped.

#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use proto::broker::ProcEntry;
use proto::profile::{Endpoint, Host};

use super::proxy::{self, Names, ProxyHop};
use super::{HopCx, HopError, RunningHop};
use crate::netns;
use crate::sys::{self, ChildPlacement, MapBack};
use crate::tun2socks::{Protocol, ProxyConfig};

/// A running hop daemon; dropping it stops it (SIGTERM, then SIGKILL).
#[derive(Debug)]
pub(super) struct Daemon {
    pub(super) child: Child,
    pub(super) log: PathBuf,
    pub(super) role: String,
    /// How long to wait after SIGTERM before SIGKILL.
    pub(super) grace: Duration,
}

impl Daemon {
    /// The last lines of its output (for error messages).
    pub(super) fn tail(&self) -> String {
        tail(&self.log, 3)
    }

    /// Some(status) if it has exited.
    pub(super) fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(s)) => Some(s.to_string()),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    pub(super) fn proc_entry(&self) -> ProcEntry {
        ProcEntry {
            pid: self.child.id() as i32,
            role: self.role.clone(),
        }
    }

    /// Stop it: SIGTERM, wait up to `grace`, then SIGKILL. Never blocks
    /// for long: a daemon that cannot be signalled is left to its
    /// parent-death signal, with a warning.
    pub(super) fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        for (signal, wait) in [
            (Signal::SIGTERM, self.grace),
            (Signal::SIGKILL, Duration::from_secs(1)),
        ] {
            if let Err(e) = nix::sys::signal::kill(pid, signal) {
                tracing::warn!("{}: {signal}: {e}", self.role);
            }
            let deadline = Instant::now() + wait;
            while Instant::now() < deadline {
                if self.exited().is_some() {
                    return;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        tracing::warn!(
            "{} (pid {pid}) did not exit; it dies with the netbroker",
            self.role
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The binary for `tool`: the hop's `<tool>_path`, else `$PATH` and the
/// system directories. `package` names the Debian package in the error.
pub(super) fn find_tool(cx: &HopCx<'_>, tool: &str, package: &str) -> Result<PathBuf, HopError> {
    if let Some(p) = cx.hop.options.tool_paths.get(tool) {
        let path = PathBuf::from(p);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(HopError::Failed(format!(
                "{tool}_path {p} does not exist; fix the path or remove the key"
            )))
        };
    }
    crate::rootless::find_in_path(tool).ok_or_else(|| {
        HopError::Failed(format!(
            "{tool} is not installed (Debian package \"{package}\"); install it or set \"{tool}_path\" in the hop"
        ))
    })
}

/// Who a daemon runs as: root mode — `user` (default `fallback`), never
/// uid 0 under any name (the profile parser refuses `root` and so does
/// decoding, but an alias such as `toor` is only known here); rootless —
/// the caller, mapped back to their own uid when `map_back` (see [`spawn`]).
/// A hop daemon talks to remote servers: as the host's root its compromise
/// would be the host's, and a compromised supervisor could ask for that.
pub(super) fn placement(
    cx: &HopCx<'_>,
    user: Option<&str>,
    fallback: &str,
    map_back: bool,
) -> Result<Placement, HopError> {
    let (user, map_back) = if cx.rootless {
        (None, if map_back { real_ids() } else { None })
    } else {
        let name = user.unwrap_or(fallback);
        let u = nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .ok_or_else(|| {
                HopError::Failed(format!(
                    "user '{name}' does not exist; set the hop's \"user\" to an existing account"
                ))
            })?;
        if u.uid.is_root() || u.gid.as_raw() == 0 {
            return Err(HopError::Refused(format!(
                "user '{name}' is root (uid or gid 0); a hop daemon never runs as root: set the hop's \"user\" to an unprivileged account"
            )));
        }
        (Some((u.uid.as_raw(), u.gid.as_raw())), None)
    };
    Ok(Placement {
        netns: if netns::is_current(cx.outer) {
            -1
        } else {
            cx.outer.as_raw_fd()
        },
        map_back,
        user,
        inherit: None,
    })
}

/// Where and as whom a daemon runs.
#[derive(Debug, Clone)]
pub(super) struct Placement {
    pub(super) netns: RawFd,
    /// Rootless: the caller's (uid, gid) on the host, to map back.
    pub(super) map_back: Option<(u32, u32)>,
    pub(super) user: Option<(u32, u32)>,
    pub(super) inherit: Option<(RawFd, RawFd)>,
}

/// Rootless: the caller's ids on the host, as the netbroker's user namespace
/// maps them (its uid_map says "0 <uid> 1").
/// None in the caller's own user namespace (hop 1 rootless, started before
/// the netbroker enters the session's): the daemon already is the caller.
fn real_ids() -> Option<(u32, u32)> {
    let first = |path: &str| -> Option<(u32, u32)> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut w = text.split_whitespace();
        let (inside, outside) = (w.next()?, w.next()?);
        Some((inside.parse().ok()?, outside.parse().ok()?))
    };
    let (inside, uid) = first("/proc/self/uid_map")?;
    let (_, gid) = first("/proc/self/gid_map")?;
    // The initial user namespace maps 0 to 0 (all of them); the session's
    // maps its root to the caller's uid.
    (!(inside == 0 && uid == 0)).then_some((uid, gid))
}

/// The netbroker's half of the map-back handshake: read the child's pid,
/// write its maps (the caller's ids inside → our root), let it go on.
fn map_child(tell: OwnedFd, wait: OwnedFd, ids: (u32, u32)) -> std::io::Result<()> {
    let mut tell = File::from(tell);
    let mut wait = File::from(wait);
    let mut pid = [0u8; 4];
    tell.read_exact(&mut pid)?;
    let pid = i32::from_ne_bytes(pid);
    let proc = PathBuf::from(format!("/proc/{pid}"));
    std::fs::write(proc.join("uid_map"), format!("{} 0 1\n", ids.0))?;
    std::fs::write(proc.join("setgroups"), "deny")?;
    std::fs::write(proc.join("gid_map"), format!("{} 0 1\n", ids.1))?;
    wait.write_all(&[1])
}

/// Start `cmd` placed as `p`, its stdout and stderr appended to `log`.
pub(super) fn spawn(
    cmd: Command,
    p: Placement,
    log: &Path,
    role: &str,
) -> Result<Daemon, HopError> {
    spawn_with(cmd, p, log, role, None)
}

/// [`spawn`], with `stdio` (when given) as the daemon's stdin and stdout
/// instead of /dev/null and the log: a connection handed to it (ssh's
/// `ProxyCommand=-`).
pub(super) fn spawn_with(
    mut cmd: Command,
    p: Placement,
    log: &Path,
    role: &str,
    stdio: Option<OwnedFd>,
) -> Result<Daemon, HopError> {
    let fail = |what: &str, e: std::io::Error| HopError::Failed(format!("{what}: {e}"));
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .map_err(|e| fail(&format!("create {}", log.display()), e))?;
    let err = file
        .try_clone()
        .map_err(|e| fail("duplicate the log descriptor", e))?;
    match stdio {
        Some(fd) => {
            let out = fd
                .try_clone()
                .map_err(|e| fail("duplicate the daemon's connection", e))?;
            cmd.stdin(Stdio::from(fd)).stdout(Stdio::from(out));
        }
        None => {
            cmd.stdin(Stdio::null()).stdout(Stdio::from(file));
        }
    }
    cmd.stderr(Stdio::from(err));
    // The map-back handshake runs on a thread: `spawn` returns only once the
    // child has exec'd, which it does only after we wrote its maps.
    let mut mapper = None;
    let mut child_ends = None;
    let map_back = match p.map_back {
        Some(ids) => {
            let (tell_r, tell_w) = UnixStream::pair().map_err(|e| fail("map-back pipe", e))?;
            let (wait_r, wait_w) = UnixStream::pair().map_err(|e| fail("map-back pipe", e))?;
            let m = MapBack {
                tell: tell_w.as_raw_fd(),
                wait: wait_r.as_raw_fd(),
            };
            let (tr, ww) = (OwnedFd::from(tell_r), OwnedFd::from(wait_w));
            mapper = Some(thread::spawn(move || map_child(tr, ww, ids)));
            child_ends = Some((tell_w, wait_r));
            Some(m)
        }
        None => None,
    };
    sys::place_child(
        &mut cmd,
        ChildPlacement {
            netns: p.netns,
            userns: -1,
            inherit: p.inherit,
            close_others: false,
            map_back,
            user: p.user,
            own_userns: false,
            death_signal: Signal::SIGKILL,
        },
    );
    let program = cmd.get_program().to_string_lossy().into_owned();
    let spawned = cmd.spawn();
    // Our copies of the child's ends: closing them ends a waiting mapper.
    drop(child_ends);
    if let Some(m) = mapper {
        if let Ok(Err(e)) = m.join() {
            if spawned.is_ok() {
                tracing::warn!("map {program}'s user back: {e}");
            }
        }
    }
    let child = spawned.map_err(|e| fail(&format!("start {program}"), e))?;
    Ok(Daemon {
        child,
        log: log.to_path_buf(),
        role: role.to_string(),
        grace: Duration::from_secs(2),
    })
}

/// Where a daemon's SOCKS listener is: a loopback port of N(i−1) (a
/// `socksapp` program's), or a unix socket in a directory only the
/// session's engine can enter ([`socket_dir`]).
#[derive(Debug, Clone)]
pub(super) enum Listener {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listener::Tcp(a) => write!(f, "{a}"),
            Listener::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A directory for a daemon's unix socket that only it and the hop's engine
/// can enter: rootless, 0700 (everything is the caller); root mode, owned
/// by the daemon's user, group the engine's, mode 2750 (the socket the
/// daemon makes there takes the engine's group, and no one else may even
/// look up its name). `daemon_user`: root mode's (uid, gid) of the daemon.
pub(super) fn socket_dir(
    cx: &HopCx<'_>,
    daemon_user: Option<(u32, u32)>,
) -> Result<PathBuf, HopError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = cx.work_dir.join("socks");
    let fail = |e: std::io::Error| HopError::Failed(format!("prepare {}: {e}", dir.display()));
    std::fs::create_dir_all(&dir).map_err(fail)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
    if let Some((uid, _)) = daemon_user {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let engine =
            proto::profile::service_uid(cx.session_id, proto::profile::Service::Engine, &passwd);
        traversable(cx.work_dir).map_err(fail)?;
        // The mode while it is still ours (no CAP_FOWNER after the chown);
        // a directory keeps its set-group-id bit through the chown.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o2750)).map_err(fail)?;
        nix::unistd::chown(&dir, Some(uid.into()), Some(engine.into()))
            .map_err(|e| fail(e.into()))?;
    }
    Ok(dir)
}

/// Root mode: the path down to a hop's directory becomes traversable (never
/// listable) by others, so a daemon's user and the engine's reach what is
/// theirs there; the session directory keeps its mode otherwise (0700, root
/// mode 0770: the supervisor's group writes there).
pub(super) fn traversable(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for dir in dir.ancestors().take(3) {
        let mode = std::fs::metadata(dir)?.permissions().mode();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o7777 | 0o011))?;
    }
    Ok(())
}

/// Wait until the listener accepts a connection (a TCP one from N(i−1)),
/// the daemon dies, or `timeout` passes. `what` names the daemon in errors.
pub(super) fn wait_listening(
    cx: &HopCx<'_>,
    daemon: &mut Daemon,
    addr: &Listener,
    timeout: Duration,
    what: &str,
) -> Result<(), HopError> {
    let deadline = Instant::now() + timeout;
    loop {
        cx.check_cancelled()?;
        if let Some(status) = daemon.exited() {
            return Err(HopError::Failed(format!(
                "{what} exited ({status}) before it listened on {addr}: {}",
                daemon.tail()
            )));
        }
        let up = match addr {
            Listener::Tcp(a) => netns::connect_in(cx.outer, *a, Duration::from_millis(200)).is_ok(),
            Listener::Unix(p) => UnixStream::connect(p).is_ok(),
        };
        if up {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(HopError::Failed(format!(
                "{what} did not listen on {addr} within {} s: {}",
                timeout.as_secs(),
                daemon.tail()
            )));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A free TCP port on 127.0.0.1 in N(i−1), for a daemon's SOCKS listener.
pub(super) fn free_port(cx: &HopCx<'_>) -> Result<u16, HopError> {
    netns::free_port_in(cx.outer)
        .map_err(|e| HopError::Failed(format!("find a free port for the hop's listener: {e}")))
}

/// The last `n` lines of a log, joined with " | " for a one-line error.
pub(super) fn tail(path: &Path, n: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(8192)));
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(n);
    let out = lines[start..].join(" | ");
    if out.is_empty() {
        "(no output)".into()
    } else {
        out
    }
}

/// A hop served by a local SOCKS daemon (ssh, or a socksapp program).
#[derive(Debug)]
pub(super) struct DaemonHop {
    pub(super) proxy: ProxyHop,
    pub(super) daemon: Daemon,
    pub(super) what: String,
    /// Asks the daemon to exit before it is signalled (tor: `SIGNAL HALT`).
    pub(super) halt: Option<Halt>,
}

/// A daemon's own way to stop.
pub(super) struct Halt(pub(super) Box<dyn FnMut() + Send>);

impl std::fmt::Debug for Halt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Halt")
    }
}

impl Drop for DaemonHop {
    fn drop(&mut self) {
        if let Some(Halt(halt)) = &mut self.halt {
            halt();
        }
        // Then the fields: the engine stops, the daemon is reaped or killed.
    }
}

impl RunningHop for DaemonHop {
    fn resolv_conf(&self) -> String {
        self.proxy.resolv_conf()
    }
    fn resolvers(&self) -> Vec<SocketAddr> {
        self.proxy.resolvers()
    }
    fn describe(&self) -> String {
        format!(
            "{} (pid {}) ← {}",
            self.what,
            self.daemon.child.id(),
            self.proxy.describe()
        )
    }
    fn pids(&self) -> Vec<ProcEntry> {
        let mut pids = vec![self.daemon.proc_entry()];
        pids.extend(self.proxy.pids());
        pids
    }
    fn exited(&mut self) -> Option<String> {
        if let Some(status) = self.daemon.exited() {
            return Some(format!(
                "{} exited ({status}): {}",
                self.what,
                self.daemon.tail()
            ));
        }
        self.proxy.exited()
    }
}

/// Serve a daemon's SOCKS5 listener on `socks` into Ni, resolving names as
/// `names` says.
pub(super) fn serve(
    cx: &mut HopCx<'_>,
    daemon: Daemon,
    socks: &Listener,
    what: String,
    names: Names,
) -> Result<DaemonHop, HopError> {
    let (address, unix) = match socks {
        Listener::Tcp(a) => (*a, None),
        // A placeholder (port 0 is no valid endpoint on the wire): the
        // engine dials the path, and messages name it.
        Listener::Unix(p) => (SocketAddr::from(([127, 0, 0, 1], 1)), Some(p.clone())),
    };
    let proxy = proxy::start(
        cx,
        ProxyConfig {
            protocol: Protocol::Socks5,
            address: Endpoint {
                host: Host::Ip(address.ip()),
                port: address.port(),
            },
            username: None,
            password: None,
            unix,
        },
        names,
    )?;
    Ok(DaemonHop {
        proxy,
        daemon,
        what,
        halt: None,
    })
}
