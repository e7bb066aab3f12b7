//! `ssh`: `ssh -N -D 127.0.0.1:PORT [ssh_args] destination`, as the hop's
//! `user` (default `nobody`, never root) in root mode or as the caller
//! (mapped back to their own uid, so ssh finds their keys and known hosts)
//! rootless; then served into Ni by tun2socks as a SOCKS5 proxy with remote
//! name resolution. BatchMode means it never waits on a host-key or password
//! prompt: it fails, and its message is shown.
//!
//! Hop 1 (N0 is the netbroker's own namespace: the host, or rootless the
//! caller's): ssh's `-D` port must not be a loopback port there, which any
//! local user could use, and OpenSSH 9.2's `-D PATH` listens nowhere. So
//! ssh runs in a namespace of its own with only loopback, where the port is
//! the session's alone, and the hop's engine dials it there; the netbroker
//! asks ssh for the server's name and port (`ssh -G`), resolves and
//! connects from N0 (rootless before it enters the session's user
//! namespace) and hands the connection to ssh as its stdin and stdout
//! (`ProxyCommand=-`). Later hops run ssh in N(i−1), a namespace of the
//! session's, which dials the server itself.

#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use proto::profile::{HopKind, Ssh};

use super::daemon;
use super::proxy::Names;
use super::{HopCx, HopError, HopType, RunningHop};
use crate::netns;

pub(super) struct SshHop;

impl HopType for SshHop {
    fn start(&self, cx: &mut HopCx<'_>) -> Result<Box<dyn RunningHop>, HopError> {
        let HopKind::Ssh(ssh) = &cx.hop.kind else {
            return Err(HopError::Unsupported(cx.hop.kind.name()));
        };
        let ssh = ssh.clone();
        let exe = daemon::find_tool(cx, "ssh", "openssh-client")?;
        // Root mode: `nobody` unless the profile names an account (whose
        // keys ssh then uses); never root.
        let place = daemon::placement(cx, ssh.user.as_deref(), "nobody", true)?;
        if netns::is_current(cx.outer) {
            return handed_over(cx, &ssh, &exe, place.user);
        }
        let port = daemon::free_port(cx)?;
        let socks = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let cmd = command(&exe, &ssh, socks, false);
        (cx.progress)(format!("starting ssh to {}", ssh.destination));
        let daemon = daemon::spawn(cmd, place, &cx.work_dir.join("ssh.log"), "hop:ssh")?;
        listen_and_serve(cx, daemon, socks, &ssh)
    }
}

/// `ssh -N -D socks … destination`; `handed` adds `ProxyCommand=-` (the
/// connection is its stdin and stdout).
fn command(exe: &Path, ssh: &Ssh, socks: SocketAddr, handed: bool) -> Command {
    let timeout = ssh.timeout.as_secs().max(1);
    let mut cmd = Command::new(exe);
    cmd.args(["-N", "-D", &socks.to_string()])
        .args(["-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes"])
        .args(["-o", &format!("ConnectTimeout={timeout}")])
        .args(["-o", "ServerAliveInterval=15"]);
    if handed {
        cmd.args(["-o", "ProxyCommand=-"]);
    }
    cmd.args(&ssh.ssh_args).arg("--").arg(&ssh.destination);
    cmd
}

fn listen_and_serve(
    cx: &mut HopCx<'_>,
    mut daemon: daemon::Daemon,
    socks: SocketAddr,
    ssh: &Ssh,
) -> Result<Box<dyn RunningHop>, HopError> {
    let socks = daemon::Listener::Tcp(socks);
    daemon::wait_listening(cx, &mut daemon, &socks, ssh.timeout, "ssh")?;
    let what = format!("ssh {}", ssh.destination);
    Ok(Box::new(daemon::serve(
        cx,
        daemon,
        &socks,
        what,
        Names::REMOTE,
    )?))
}

/// Hop 1: connect to the server from N0, then start ssh (and the hop's
/// engine) in a loopback-only namespace with that connection. `user`: root
/// mode's account for ssh.
fn handed_over(
    cx: &mut HopCx<'_>,
    ssh: &Ssh,
    exe: &Path,
    user: Option<(u32, u32)>,
) -> Result<Box<dyn RunningHop>, HopError> {
    let server = server(exe, ssh, user)?;
    (cx.progress)(format!(
        "connecting to ssh server {} port {}",
        server.host, server.port
    ));
    let conn = connect(&server, ssh.timeout)?;
    // Rootless: this enters the session's user namespace, where the
    // netbroker may make ssh's namespace.
    cx.inner.get()?;
    let own = netns::create().map_err(HopError::Netns)?;
    let mut cx = HopCx {
        session_id: cx.session_id,
        index: cx.index,
        hop: cx.hop,
        outer: own.fd.as_fd(),
        outer_resolvers: cx.outer_resolvers,
        inner: &mut *cx.inner,
        work_dir: cx.work_dir,
        rootless: cx.rootless,
        quiet: cx.quiet,
        progress: &mut *cx.progress,
        cancelled: cx.cancelled,
    };
    let place = daemon::placement(&cx, ssh.user.as_deref(), "nobody", true)?;
    let port = daemon::free_port(&cx)?;
    let socks = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let cmd = command(exe, ssh, socks, true);
    (cx.progress)(format!("starting ssh to {}", ssh.destination));
    let daemon = daemon::spawn_with(
        cmd,
        place,
        &cx.work_dir.join("ssh.log"),
        "hop:ssh",
        Some(OwnedFd::from(conn)),
    )?;
    listen_and_serve(&mut cx, daemon, socks, ssh)
}

/// The server's host name and port as ssh itself would dial them (`ssh -G`:
/// its configuration, the hop's `ssh_args` included), run as the account
/// ssh will run as.
fn server(exe: &Path, ssh: &Ssh, user: Option<(u32, u32)>) -> Result<Server, HopError> {
    let mut cmd = Command::new(exe);
    cmd.arg("-G")
        .args(&ssh.ssh_args)
        .arg("--")
        .arg(&ssh.destination);
    if let Some((uid, gid)) = user {
        // std drops the supplementary groups when root sets a uid.
        cmd.uid(uid).gid(gid);
        if let Ok(Some(u)) = nix::unistd::User::from_uid(uid.into()) {
            cmd.env("HOME", u.dir);
        }
    }
    let out = cmd
        .output()
        .map_err(|e| HopError::Failed(format!("run {} -G: {e}", exe.display())))?;
    if !out.status.success() {
        return Err(HopError::Failed(format!(
            "ssh cannot read its configuration for {}: {}",
            ssh.destination,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    parse_config(&String::from_utf8_lossy(&out.stdout))
}

/// Where ssh would connect: host name, port, and `addressfamily` (`any`,
/// `inet`, `inet6`).
#[derive(Debug, PartialEq, Eq)]
struct Server {
    host: String,
    port: u16,
    family: String,
}

/// The server from `ssh -G`'s output; refuses a ProxyCommand or ProxyJump
/// (the netbroker opens the connection itself).
fn parse_config(text: &str) -> Result<Server, HopError> {
    let (mut host, mut port, mut family) = (None, None, String::from("any"));
    for line in text.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "hostname" => host = Some(value.to_string()),
            "port" => port = value.parse().ok(),
            "addressfamily" => family = value.to_string(),
            "proxycommand" | "proxyjump" if value != "none" => {
                return Err(HopError::Failed(format!(
                    "an ssh hop 1 cannot use {key} ({value}): pallium opens its connection itself; make the jump host a hop of its own"
                )))
            }
            _ => {}
        }
    }
    match (host, port) {
        (Some(host), Some(port)) => Ok(Server { host, port, family }),
        _ => Err(HopError::Failed(
            "ssh -G named no hostname and port for the destination; check the hop's destination"
                .into(),
        )),
    }
}

/// A TCP connection to the server, trying each of its addresses of the
/// family ssh would use.
fn connect(server: &Server, timeout: Duration) -> Result<TcpStream, HopError> {
    let Server { host, port, family } = server;
    let addrs: Vec<SocketAddr> = (host.as_str(), *port)
        .to_socket_addrs()
        .map_err(|e| {
            HopError::Failed(format!(
                "resolve ssh server {host}: {e}; check the hop's destination"
            ))
        })?
        .filter(|a: &SocketAddr| match family.as_str() {
            "inet" => a.is_ipv4(),
            "inet6" => a.is_ipv6(),
            _ => true,
        })
        .collect();
    let mut last = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(format!("{a}: {e}")),
        }
    }
    Err(HopError::Failed(format!(
        "connect to ssh server {host} port {port}: {}; check the destination and that the server runs",
        last.unwrap_or_else(|| "no address".into())
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_is_read_from_ssh_g() {
        let text = "user alice\nhostname 192.0.2.7\nport 2222\naddressfamily any\n";
        let want = Server {
            host: "192.0.2.7".into(),
            port: 2222,
            family: "any".into(),
        };
        assert_eq!(parse_config(text).unwrap(), want);
        assert!(parse_config("hostname h\n").is_err());
        let jump = "hostname h\nport 22\nproxyjump bastion\n";
        assert!(parse_config(jump)
            .unwrap_err()
            .to_string()
            .contains("proxyjump"));
        let none = "hostname h\nport 22\nproxycommand none\n";
        assert!(parse_config(none).is_ok());
    }
}
