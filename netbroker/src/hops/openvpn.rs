//! `openvpn`: Debian's `openvpn` runs in N(i−1), so its UDP or TCP travels
//! through the hops before it, as an unprivileged user (root mode `nobody`,
//! rootless the caller) with no capability at all: the netbroker makes its
//! TUN device in N(i−1), persistent and owned by that user, and openvpn
//! attaches to it by name (`--dev`, `--persist-tun`); told not to configure
//! anything itself (`--ifconfig-noexec --route-noexec`), it hands the pushed
//! settings to an `--up` hook that writes them to a file, and once it says
//! CONNECTED the netbroker moves the device into Ni and gives it the pushed
//! addresses, the default routes and the pushed DNS (Ni's resolv.conf) over
//! netlink. openvpn keeps the device's descriptor across ping-restart and
//! SIGUSR1 restarts (the hook does not run again).
//!
//! The configuration reaches openvpn on a pipe (`--config /dev/fd/3`): the
//! supervisor read the file as the caller, and the netbroker never opens a
//! path a profile names. Username and password go over the management
//! interface, a unix socket in the hop's private directory that the
//! netbroker listens on and openvpn connects to (`--management-client`):
//! never on a command line or in a file.

#![forbid(unsafe_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use proto::broker::ProcEntry;
use proto::profile::{DnsServer, HopKind, Openvpn};

use super::daemon::{self, Daemon};
use super::{HopCx, HopError, HopType, RunningHop};
use crate::netns;
use crate::rtnl::Rtnl;

pub(super) struct OpenvpnHop;

impl HopType for OpenvpnHop {
    fn start(&self, cx: &mut HopCx<'_>) -> Result<Box<dyn RunningHop>, HopError> {
        let HopKind::Openvpn(o) = &cx.hop.kind else {
            return Err(HopError::Unsupported(cx.hop.kind.name()));
        };
        let o = o.clone();
        let text = o.config_text.clone().ok_or_else(|| {
            HopError::Failed(format!(
                "the supervisor did not send the text of {}",
                o.config
            ))
        })?;
        let exe = daemon::find_tool(cx, "openvpn", "openvpn")?;
        let place = daemon::placement(cx, None, "nobody", false)?;
        let owner = place.user.unwrap_or_else(|| {
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )
        });
        let dir = private_dir(cx.work_dir, place.user)?;
        let mgmt_path = dir.join("mgmt");
        let listener = listen(&mgmt_path, place.user)?;
        let up = write_up_hook(&dir)?;
        let name = format!(
            "pv{:08x}{}",
            crate::names::session_hash(cx.session_id),
            cx.index + 1
        );
        let tun = OuterTun::create(cx.outer, &name, owner)?;
        let (config_r, config_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| HopError::Failed(format!("create openvpn's config pipe: {e}")))?;
        // openvpn opens /dev/fd/3 again, which checks the pipe's owner.
        if let Some((uid, gid)) = place.user {
            nix::unistd::fchown(&config_r, Some(uid.into()), Some(gid.into()))
                .map_err(|e| HopError::Failed(format!("hand openvpn its config pipe: {e}")))?;
        }
        let mut place = place;
        place.inherit = Some((config_r.as_raw_fd(), CONFIG_FD));
        let mut cmd = Command::new(&exe);
        let cd = cx.rootless || world_searchable(Path::new(&o.config).parent());
        cmd.args(openvpn_args(&o, &name, &up, &mgmt_path, cd));
        (cx.progress)(format!(
            "starting openvpn ({}) as {}",
            exe.display(),
            if cx.rootless { "the caller" } else { "nobody" }
        ));
        let log = cx.work_dir.join("openvpn.log");
        let spawned = daemon::spawn(cmd, place, &log, "hop:openvpn");
        drop(config_r);
        let mut daemon = spawned?;
        feed(config_w, text);
        let deadline = Instant::now() + o.timeout;
        let stream = accept(cx, &mut daemon, &listener, deadline, &o)?;
        drop(listener);
        let _ = std::fs::remove_file(&mgmt_path);
        let auth = o.username.clone().map(|u| (u, o.password.clone()));
        let mut mgmt = Mgmt::new(stream, auth)?;
        let remote = wait_connected(cx, &mut daemon, &mut mgmt, deadline, &o)?;
        let pushed = Pushed::read(&dir.join(UP_ENV)).map_err(|e| {
            HopError::Failed(format!(
                "openvpn connected but its --up hook left no settings ({e}): {}",
                daemon.tail()
            ))
        })?;
        let inner = cx.inner.get()?;
        tun.move_into(inner.fd.as_fd())?;
        let summary = configure(&mut inner.rtnl, &name, &pushed)?;
        let (resolv_conf, resolvers) = dns(&cx.hop.options.dns, &pushed);
        if resolvers.is_empty() {
            (cx.progress)(
                "the server pushed no DNS server and the hop has no \"dns\" list: \
                 the application gets no DNS (names do not resolve)"
                    .into(),
            );
        }
        let description = format!(
            "{name} {summary} via {remote}{}",
            if resolvers.is_empty() {
                String::new()
            } else {
                format!(
                    ", DNS {}",
                    resolvers
                        .iter()
                        .map(|r| r.ip().to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            }
        );
        (cx.progress)(format!("openvpn: connected; {description}"));
        let monitor = Monitor::start(mgmt);
        Ok(Box::new(OpenvpnRunning {
            monitor,
            daemon,
            resolv_conf,
            resolvers,
            description,
        }))
    }
}

/// The descriptor number openvpn reads its configuration from.
const CONFIG_FD: i32 = 3;
/// The file the `--up` hook writes openvpn's environment to.
const UP_ENV: &str = "up.env";

/// openvpn's command line: the profile's configuration first, then ours,
/// which win (the device, no configuration of its own, the hook, the
/// management interface); `auth-user-pass` without a file when the hop has
/// a username, so openvpn asks for it on the management interface.
/// `cd`: whether openvpn's user may enter the configuration's directory
/// (root mode, openvpn as `nobody` could not enter a 0700 home and would
/// stop there, though an inline configuration needs nothing of it).
fn openvpn_args(o: &Openvpn, dev: &str, up: &Path, mgmt: &Path, cd: bool) -> Vec<String> {
    let config = o.config.as_str();
    let mut a: Vec<String> = vec!["--config".into(), format!("/dev/fd/{CONFIG_FD}")];
    // Relative file names in the configuration (`ca ca.crt`) are the
    // configuration's directory's, as with `openvpn --config`.
    if let Some(parent) = Path::new(config).parent() {
        if !parent.as_os_str().is_empty() && cd {
            a.extend(["--cd".into(), parent.display().to_string()]);
        }
    }
    for s in [
        "--dev",
        dev,
        "--dev-type",
        "tun",
        "--persist-tun",
        "--ifconfig-noexec",
        "--route-noexec",
        "--disable-dco",
        "--script-security",
        "2",
        "--up",
        &format!("/bin/sh {}", up.display()),
        "--management",
        &mgmt.display().to_string(),
        "unix",
        "--management-client",
        "--management-hold",
        "--management-query-passwords",
        "--auth-retry",
        "none",
    ] {
        a.push(s.to_string());
    }
    if o.username.is_some() {
        a.push("--auth-user-pass".into());
    }
    a
}

/// Whether others may enter `dir` (its own mode; the path above it is
/// usually so).
fn world_searchable(dir: Option<&Path>) -> bool {
    dir.and_then(|d| std::fs::metadata(d).ok())
        .is_some_and(|m| m.permissions().mode() & 0o001 != 0)
}

/// The hop's private directory: root mode owned by openvpn's user and the
/// netbroker's group, mode 2770 (what openvpn's hook writes there takes our
/// group); rootless, 0700. The path down to it becomes traversable.
fn private_dir(work_dir: &Path, user: Option<(u32, u32)>) -> Result<PathBuf, HopError> {
    let dir = work_dir.join("openvpn");
    let fail = |e: std::io::Error| HopError::Failed(format!("prepare {}: {e}", dir.display()));
    std::fs::create_dir_all(&dir).map_err(fail)?;
    if dir.display().to_string().contains(char::is_whitespace) {
        return Err(HopError::Failed(format!(
            "the hop's directory {} has white space in its path, which openvpn's --up cannot take",
            dir.display()
        )));
    }
    let Some((uid, _)) = user else {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
        return Ok(dir);
    };
    daemon::traversable(work_dir).map_err(fail)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o2770)).map_err(fail)?;
    nix::unistd::chown(&dir, Some(uid.into()), Some(nix::unistd::getegid()))
        .map_err(|e| fail(e.into()))?;
    Ok(dir)
}

/// Listen on the management socket; root mode the socket is openvpn's user's
/// (0600), so only it may connect.
fn listen(path: &Path, user: Option<(u32, u32)>) -> Result<UnixListener, HopError> {
    let fail = |e: std::io::Error| {
        HopError::Failed(format!(
            "listen on openvpn's management socket {}: {e}",
            path.display()
        ))
    };
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    if let Some((uid, gid)) = user {
        nix::unistd::chown(path, Some(uid.into()), Some(gid.into())).map_err(|e| fail(e.into()))?;
    }
    l.set_nonblocking(true).map_err(fail)?;
    Ok(l)
}

/// The `--up` hook: openvpn's environment (the pushed settings; no
/// secrets) into [`UP_ENV`], readable by the netbroker's group only.
fn write_up_hook(dir: &Path) -> Result<PathBuf, HopError> {
    let path = dir.join("up.sh");
    let env = dir.join(UP_ENV);
    let text = format!(
        "#!/bin/sh\n# pallium's openvpn hook: hand the pushed settings to the netbroker.\n\
         umask 027\nenv > '{0}.tmp' && mv '{0}.tmp' '{0}'\n",
        env.display()
    );
    std::fs::write(&path, text)
        .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)))
        .map_err(|e| HopError::Failed(format!("write {}: {e}", path.display())))?;
    Ok(path)
}

/// Write the configuration into openvpn's pipe (on a thread: a large one
/// would fill the pipe before openvpn reads it).
fn feed(pipe: OwnedFd, text: String) {
    thread::spawn(move || {
        let mut f = std::fs::File::from(pipe);
        let _ = f.write_all(text.as_bytes());
    });
}

/// openvpn's TUN device while it is in N(i−1); deleted on drop unless it was
/// moved into Ni (where it goes with the namespace).
#[derive(Debug)]
struct OuterTun {
    rtnl: Rtnl,
    index: u32,
    name: String,
    moved: bool,
}

impl OuterTun {
    fn create(
        outer: std::os::fd::BorrowedFd<'_>,
        name: &str,
        owner: (u32, u32),
    ) -> Result<Self, HopError> {
        let fail = |what: &str, e: std::io::Error| {
            HopError::Failed(format!("{what} TUN device {name}: {e}"))
        };
        let made = netns::run_in(outer, || -> Result<(Rtnl, OwnedFd), HopError> {
            let (fd, _) = crate::tun::open_here(name).map_err(HopError::Tun)?;
            let rtnl = Rtnl::open().map_err(|e| fail("open a route socket for", e))?;
            Ok((rtnl, fd))
        })
        .map_err(|e| fail("enter the hop's outer namespace for", e))??;
        let (mut rtnl, fd) = made;
        let index = rtnl
            .link_index(name)
            .map_err(|e| fail("find the index of", e))?;
        let mut tun = OuterTun {
            rtnl,
            index,
            name: name.to_string(),
            moved: false,
        };
        if let Err(e) = crate::sys::tun_persist_for(fd.as_fd(), owner.0, owner.1) {
            // Not persistent yet: closing the descriptor removes it.
            tun.moved = true;
            return Err(fail("hand openvpn's user the", e));
        }
        Ok(tun)
    }

    fn move_into(mut self, ns: std::os::fd::BorrowedFd<'_>) -> Result<(), HopError> {
        self.rtnl.move_link(self.index, ns).map_err(|e| {
            HopError::Failed(format!(
                "move TUN device {} into the hop's namespace: {e}",
                self.name
            ))
        })?;
        self.moved = true;
        Ok(())
    }
}

impl Drop for OuterTun {
    fn drop(&mut self) {
        if !self.moved {
            if let Err(e) = self.rtnl.delete_link(self.index) {
                tracing::warn!("delete TUN device {}: {e}", self.name);
            }
        }
    }
}

/// Wait for openvpn to connect to its management socket.
fn accept(
    cx: &HopCx<'_>,
    daemon: &mut Daemon,
    listener: &UnixListener,
    deadline: Instant,
    o: &Openvpn,
) -> Result<UnixStream, HopError> {
    loop {
        cx.check_cancelled()?;
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)
                    .map_err(|e| HopError::Failed(format!("openvpn's management socket: {e}")))?;
                return Ok(s);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => {
                return Err(HopError::Failed(format!(
                    "accept openvpn's management connection: {e}"
                )))
            }
        }
        if let Some(status) = daemon.exited() {
            return Err(exited_early(daemon, &status, o));
        }
        if Instant::now() >= deadline {
            return Err(HopError::Failed(format!(
                "openvpn did not start within {} s (\"timeout\"): {}",
                o.timeout.as_secs(),
                daemon.tail()
            )));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// One line for openvpn's exit before it connected: a refused password, a
/// bad configuration (openvpn's own words), or whatever it said last.
fn exited_early(daemon: &Daemon, status: &str, o: &Openvpn) -> HopError {
    let log = std::fs::read_to_string(&daemon.log).unwrap_or_default();
    if log.contains("AUTH_FAILED") || log.contains("auth-failure") {
        return auth_failed();
    }
    if let Some(l) = log.lines().find(|l| l.contains("Options error")) {
        let what = l.split_once("Options error:").map_or(l, |(_, w)| w).trim();
        return HopError::Failed(format!("openvpn refused the config {}: {what}", o.config));
    }
    HopError::Failed(format!("openvpn exited ({status}): {}", daemon.tail()))
}

fn auth_failed() -> HopError {
    HopError::Failed(
        "the server refused the username or password (AUTH_FAILED); fix the hop's \"username\" and \"password\""
            .into(),
    )
}

/// Release openvpn's hold and follow its state until CONNECTED, answering
/// its password query; the server's address it connected to.
fn wait_connected(
    cx: &mut HopCx<'_>,
    daemon: &mut Daemon,
    mgmt: &mut Mgmt,
    deadline: Instant,
    o: &Openvpn,
) -> Result<String, HopError> {
    let io = |e: std::io::Error| HopError::Failed(format!("openvpn's management socket: {e}"));
    mgmt.send("state on").map_err(io)?;
    mgmt.send("hold release").map_err(io)?;
    let mut last = String::from("starting");
    let mut closed_at: Option<Instant> = None;
    loop {
        cx.check_cancelled()?;
        if let Some(status) = daemon.exited() {
            return Err(exited_early(daemon, &status, o));
        }
        if Instant::now() >= deadline {
            return Err(HopError::Failed(format!(
                "openvpn did not connect within {} s (\"timeout\"); it got to {last}: {}",
                o.timeout.as_secs(),
                daemon.tail()
            )));
        }
        if closed_at.is_some() {
            thread::sleep(Duration::from_millis(20));
            continue;
        }
        let line = match mgmt.line() {
            Ok(Some(l)) => l,
            Ok(None) => continue,
            Err(_) => {
                closed_at = Some(Instant::now());
                continue;
            }
        };
        match mgmt.handle(&line) {
            Event::State { name, remote } => {
                if name == "CONNECTED" {
                    return Ok(remote);
                }
                if name == "EXITING" && line.contains("auth-failure") {
                    return Err(auth_failed());
                }
                if name != last {
                    (cx.progress)(format!(
                        "openvpn: {}",
                        name.to_lowercase().replace('_', " ")
                    ));
                    last = name;
                }
            }
            Event::AuthFailed => return Err(auth_failed()),
            Event::Failed(why) => return Err(HopError::Failed(why)),
            Event::Other => {}
        }
    }
}

/// What a management line meant.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// `>STATE:`: the state's name and the server's address ("ip:port").
    State {
        name: String,
        remote: String,
    },
    AuthFailed,
    Failed(String),
    Other,
}

/// The management connection: lines in, commands out; answers password
/// queries with the hop's username and password.
#[derive(Debug)]
struct Mgmt {
    stream: UnixStream,
    buf: Vec<u8>,
    auth: Option<(String, Option<String>)>,
}

impl Mgmt {
    fn new(stream: UnixStream, auth: Option<(String, Option<String>)>) -> Result<Self, HopError> {
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(|e| HopError::Failed(format!("openvpn's management socket: {e}")))?;
        Ok(Mgmt {
            stream,
            buf: Vec::new(),
            auth,
        })
    }

    fn send(&mut self, line: &str) -> std::io::Result<()> {
        self.stream.write_all(format!("{line}\n").as_bytes())
    }

    /// The next whole line; None when none came within the read timeout.
    fn line(&mut self) -> std::io::Result<Option<String>> {
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return Ok(Some(String::from_utf8_lossy(&line).trim_end().to_string()));
            }
            if self.buf.len() > 64 * 1024 {
                return Err(std::io::Error::other("an overlong management line"));
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(std::io::Error::other("openvpn closed it")),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(None)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Act on one line (answer a password query) and say what it meant.
    fn handle(&mut self, line: &str) -> Event {
        let event = parse(line);
        if let Some(query) = line.strip_prefix(">PASSWORD:Need 'Auth'") {
            let _ = query;
            return match self.auth.clone() {
                Some((user, pass)) => {
                    let a = self.send(&format!("username \"Auth\" \"{}\"", escape(&user)));
                    let b = self.send(&format!(
                        "password \"Auth\" \"{}\"",
                        escape(pass.as_deref().unwrap_or(""))
                    ));
                    match a.and(b) {
                        Ok(()) => Event::Other,
                        Err(e) => Event::Failed(format!("answer openvpn's password query: {e}")),
                    }
                }
                None => Event::Failed(
                    "the server wants a username and password: set \"username\" and \"password\" in the hop"
                        .into(),
                ),
            };
        }
        event
    }
}

/// A management line's meaning, without acting on it.
fn parse(line: &str) -> Event {
    if let Some(rest) = line.strip_prefix(">STATE:") {
        let f: Vec<&str> = rest.split(',').collect();
        let name = f.get(1).copied().unwrap_or_default().to_string();
        let remote = match (f.get(4), f.get(5)) {
            (Some(ip), Some(port)) if !ip.is_empty() => {
                let ip = if ip.contains(':') {
                    format!("[{ip}]")
                } else {
                    ip.to_string()
                };
                format!("{ip}:{port}")
            }
            _ => String::from("the server"),
        };
        return Event::State { name, remote };
    }
    if line.starts_with(">PASSWORD:Verification Failed") {
        return Event::AuthFailed;
    }
    if line.starts_with(">PASSWORD:Need") {
        let what = line.split('\'').nth(1).unwrap_or("a");
        return Event::Failed(format!(
            "openvpn asks for {what} password, which pallium cannot give (an encrypted key?): use a key without a passphrase"
        ));
    }
    if let Some(why) = line.strip_prefix(">FATAL:") {
        return Event::Failed(format!("openvpn: {why}"));
    }
    Event::Other
}

/// A management command's quoted argument.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The settings openvpn's `--up` hook saw (pushed by the server).
#[derive(Debug, Default, PartialEq, Eq)]
struct Pushed {
    mtu: Option<u32>,
    v4: Option<(Ipv4Addr, u8)>,
    v6: Option<(std::net::Ipv6Addr, u8)>,
    dns: Vec<IpAddr>,
}

impl Pushed {
    fn read(path: &Path) -> std::io::Result<Pushed> {
        Ok(Pushed::parse(&std::fs::read_to_string(path)?))
    }

    fn parse(env: &str) -> Pushed {
        let vars: std::collections::HashMap<&str, &str> =
            env.lines().filter_map(|l| l.split_once('=')).collect();
        let v4 = vars
            .get("ifconfig_local")
            .and_then(|a| a.parse::<Ipv4Addr>().ok())
            .map(|a| {
                // topology subnet: a netmask; net30/p2p: a peer, no netmask.
                let len = vars
                    .get("ifconfig_netmask")
                    .and_then(|m| m.parse::<Ipv4Addr>().ok())
                    .map(|m| u32::from(m).leading_ones() as u8)
                    .unwrap_or(32);
                (a, len)
            });
        let v6 = vars
            .get("ifconfig_ipv6_local")
            .and_then(|a| a.parse().ok())
            .map(|a| {
                let len = vars
                    .get("ifconfig_ipv6_netbits")
                    .and_then(|b| b.parse().ok())
                    .filter(|b| *b <= 128)
                    .unwrap_or(128);
                (a, len)
            });
        let mut options: Vec<(u32, &str)> = vars
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("foreign_option_")?.parse().ok()?, *v)))
            .collect();
        options.sort();
        let dns = options
            .iter()
            .filter_map(|(_, v)| {
                let mut w = v.split_whitespace();
                match (w.next(), w.next(), w.next()) {
                    (Some("dhcp-option"), Some("DNS" | "DNS6"), Some(ip)) => ip.parse().ok(),
                    _ => None,
                }
            })
            .collect();
        Pushed {
            mtu: vars.get("tun_mtu").and_then(|m| m.parse().ok()),
            v4,
            v6,
            dns,
        }
    }
}

/// Give the device in Ni its MTU, the pushed addresses, bring it up and
/// route everything through it (Ni has no other way out, so pushed routes
/// add nothing); a summary of the addresses.
fn configure(rtnl: &mut Rtnl, name: &str, p: &Pushed) -> Result<String, HopError> {
    let fail = |what: &str, e: std::io::Error| {
        HopError::Failed(format!(
            "configure {name} in the hop's namespace: {what}: {e}"
        ))
    };
    let index = rtnl
        .link_index(name)
        .map_err(|e| fail("find its index", e))?;
    if let Some(mtu) = p.mtu {
        rtnl.set_mtu(index, mtu)
            .map_err(|e| fail("set the MTU", e))?;
    }
    let mut summary = Vec::new();
    if let Some((a, len)) = p.v4 {
        rtnl.add_address(index, a.into(), len)
            .map_err(|e| fail("add the pushed IPv4 address", e))?;
        summary.push(format!("{a}/{len}"));
    }
    if let Some((a, len)) = p.v6 {
        rtnl.add_address(index, a.into(), len)
            .map_err(|e| fail("add the pushed IPv6 address", e))?;
        summary.push(format!("{a}/{len}"));
    }
    if summary.is_empty() {
        return Err(HopError::Failed(
            "the server pushed no address (no ifconfig / ifconfig-ipv6)".into(),
        ));
    }
    rtnl.set_up(index).map_err(|e| fail("bring it up", e))?;
    if p.v4.is_some() {
        rtnl.add_default_dev_route(false, index)
            .map_err(|e| fail("add the IPv4 default route", e))?;
    }
    if p.v6.is_some() {
        rtnl.add_default_dev_route(true, index)
            .map_err(|e| fail("add the IPv6 default route", e))?;
    }
    Ok(summary.join(" "))
}

/// Ni's resolv.conf and nameservers: the hop's `dns` list if it has one,
/// else what the server pushed.
fn dns(list: &Option<Vec<DnsServer>>, p: &Pushed) -> (String, Vec<SocketAddr>) {
    let servers: Vec<SocketAddr> = match list {
        Some(l) if !l.is_empty() => l
            .iter()
            .map(|d| match d {
                DnsServer::Udp(ip) => SocketAddr::new(*ip, 53),
                DnsServer::Tcp(sa) => *sa,
            })
            .collect(),
        _ => p.dns.iter().map(|ip| SocketAddr::new(*ip, 53)).collect(),
    };
    let text = servers
        .iter()
        .map(|s| format!("nameserver {}\n", s.ip()))
        .collect();
    (text, servers)
}

/// Follows openvpn's state once connected (and answers a password query on
/// a reconnection): the first loss of the connection is reported once.
#[derive(Debug)]
struct Monitor {
    lost: Arc<Mutex<Option<String>>>,
    stream: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    fn start(mut mgmt: Mgmt) -> Monitor {
        let lost = Arc::new(Mutex::new(None));
        let stream = mgmt.stream.try_clone().ok();
        let seen = lost.clone();
        let thread = thread::spawn(move || {
            // It only reads and answers openvpn: it holds no capability
            // (`pallium audit` counts every thread's).
            if let Err(e) = proto::policy::drop_thread_caps() {
                tracing::warn!("openvpn monitor: drop its capabilities: {e}; it stops");
                return;
            }
            while let Some(why) = next_loss(&mut mgmt) {
                let mut l = seen.lock().unwrap_or_else(|e| e.into_inner());
                l.get_or_insert(why);
            }
        });
        Monitor {
            lost,
            stream,
            thread: Some(thread),
        }
    }

    fn lost(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Read management lines until one says the connection is lost (its
/// reason) or the connection ends (None).
fn next_loss(mgmt: &mut Mgmt) -> Option<String> {
    loop {
        let line = match mgmt.line() {
            Ok(Some(l)) => l,
            Ok(None) => continue,
            Err(_) => return None,
        };
        match mgmt.handle(&line) {
            Event::State { name, .. } if name == "RECONNECTING" || name == "EXITING" => {
                let reason = line.split(',').nth(2).unwrap_or_default().to_string();
                return Some(format!(
                    "openvpn lost its connection ({} {reason}); traffic is blocked until it reconnects",
                    name.to_lowercase()
                ));
            }
            Event::AuthFailed => {
                return Some("the server refused the password on reconnection".into())
            }
            Event::Failed(why) => return Some(why),
            _ => {}
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(s) = &self.stream {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A connected openvpn hop. Dropping it stops openvpn; its device goes
/// with Ni.
#[derive(Debug)]
struct OpenvpnRunning {
    monitor: Monitor,
    daemon: Daemon,
    resolv_conf: String,
    resolvers: Vec<SocketAddr>,
    description: String,
}

impl RunningHop for OpenvpnRunning {
    fn resolv_conf(&self) -> String {
        self.resolv_conf.clone()
    }
    fn resolvers(&self) -> Vec<SocketAddr> {
        self.resolvers.clone()
    }
    fn describe(&self) -> String {
        format!(
            "openvpn (pid {}) {}",
            self.daemon.child.id(),
            self.description
        )
    }
    fn pids(&self) -> Vec<ProcEntry> {
        vec![self.daemon.proc_entry()]
    }
    fn exited(&mut self) -> Option<String> {
        if let Some(status) = self.daemon.exited() {
            return Some(format!("openvpn exited ({status}): {}", self.daemon.tail()));
        }
        self.monitor.lost()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENV: &str = "dev=pv1\ntun_mtu=1500\nifconfig_local=10.8.0.2\n\
        ifconfig_netmask=255.255.255.0\nifconfig_ipv6_local=fd00:8::1000\n\
        ifconfig_ipv6_netbits=64\nforeign_option_2=dhcp-option DNS6 fd00:db8:2::53\n\
        foreign_option_1=dhcp-option DNS 198.51.100.53\nforeign_option_3=dhcp-option DOMAIN x\n";

    #[test]
    fn pushed_settings_are_read_from_the_hook_environment() {
        let p = Pushed::parse(ENV);
        assert_eq!(p.mtu, Some(1500));
        assert_eq!(p.v4, Some(("10.8.0.2".parse().unwrap(), 24)));
        assert_eq!(p.v6, Some(("fd00:8::1000".parse().unwrap(), 64)));
        assert_eq!(
            p.dns,
            vec![
                "198.51.100.53".parse::<IpAddr>().unwrap(),
                "fd00:db8:2::53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn net30_address_without_netmask_is_a_host_address() {
        let p = Pushed::parse("ifconfig_local=10.8.0.6\nifconfig_remote=10.8.0.5\n");
        assert_eq!(p.v4, Some(("10.8.0.6".parse().unwrap(), 32)));
        assert_eq!(p.v6, None);
    }

    #[test]
    fn hop_dns_list_overrides_pushed_dns() {
        let p = Pushed::parse(ENV);
        let (text, servers) = dns(
            &Some(vec![DnsServer::Udp("192.0.2.1".parse().unwrap())]),
            &p,
        );
        assert_eq!(text, "nameserver 192.0.2.1\n");
        assert_eq!(servers.len(), 1);
        let (text, _) = dns(&None, &p);
        assert_eq!(
            text,
            "nameserver 198.51.100.53\nnameserver fd00:db8:2::53\n"
        );
    }

    #[test]
    fn state_lines_give_the_state_and_the_server() {
        assert_eq!(
            parse(">STATE:1796462295,CONNECTED,SUCCESS,10.8.0.2,198.51.100.10,1194,,,fd00:8::1000"),
            Event::State {
                name: "CONNECTED".into(),
                remote: "198.51.100.10:1194".into()
            }
        );
        assert_eq!(
            parse(">PASSWORD:Verification Failed: 'Auth'"),
            Event::AuthFailed
        );
        assert!(matches!(
            parse(">PASSWORD:Need 'Private Key' password"),
            Event::Failed(_)
        ));
    }

    #[test]
    fn credentials_are_escaped_for_the_management_interface() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
    }

    #[test]
    fn our_options_come_after_the_profile_config() {
        let o = Openvpn {
            config: "/etc/vpn/c.ovpn".into(),
            config_text: None,
            username: Some("u".into()),
            password: Some("p".into()),
            timeout: Duration::from_secs(60),
        };
        let a = openvpn_args(&o, "pv1", Path::new("/w/up.sh"), Path::new("/w/m"), true);
        assert_eq!(&a[..4], ["--config", "/dev/fd/3", "--cd", "/etc/vpn"]);
        assert!(a.windows(2).any(|w| w == ["--dev", "pv1"]));
        assert_eq!(a.last().map(String::as_str), Some("--auth-user-pass"));
        assert!(
            !a.iter().any(|s| s == "p"),
            "no password on the command line"
        );
    }
}
