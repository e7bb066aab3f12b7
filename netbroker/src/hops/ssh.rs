//! `ssh`: `ssh -N -D 127.0.0.1:PORT [ssh_args] destination` in N(i−1), as the
//! hop's `user` in root mode or as the caller (mapped back to their own uid,
//! so ssh finds their keys and known hosts) rootless; then served into Ni by
//! tun2socks as a SOCKS5 proxy with remote name resolution. BatchMode means
//! it never waits on a host-key or password prompt: it fails, and its
//! message is shown.

#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

use proto::broker::ProcEntry;
use proto::profile::{Endpoint, HopKind, Host};

use super::daemon::{self, Daemon};
use super::proxy::{self, ProxyHop};
use super::{HopCx, HopError, HopType, RunningHop};
use crate::tun2socks::{Protocol, ProxyConfig};

pub(super) struct SshHop;

/// A hop served by a local SOCKS daemon (ssh, or a socksapp program).
#[derive(Debug)]
pub(super) struct DaemonHop {
    pub(super) proxy: ProxyHop,
    pub(super) daemon: Daemon,
    pub(super) what: String,
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
        vec![self.daemon.proc_entry()]
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

/// Serve a daemon's SOCKS5 listener on `socks` into Ni.
pub(super) fn serve(
    cx: &mut HopCx<'_>,
    daemon: Daemon,
    socks: SocketAddr,
    what: String,
) -> Result<DaemonHop, HopError> {
    let proxy = proxy::start(
        cx,
        ProxyConfig {
            protocol: Protocol::Socks5,
            address: Endpoint {
                host: Host::Ip(socks.ip()),
                port: socks.port(),
            },
            username: None,
            password: None,
        },
    )?;
    Ok(DaemonHop {
        proxy,
        daemon,
        what,
    })
}

impl HopType for SshHop {
    fn start(&self, cx: &mut HopCx<'_>) -> Result<Box<dyn RunningHop>, HopError> {
        let HopKind::Ssh(ssh) = &cx.hop.kind else {
            return Err(HopError::Unsupported(cx.hop.kind.name()));
        };
        let ssh = ssh.clone();
        let exe = daemon::find_tool(cx, "ssh", "openssh-client")?;
        let place = daemon::placement(cx, ssh.user.as_deref(), "root", true)?;
        let port = daemon::free_port(cx)?;
        let socks = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let timeout = ssh.timeout.as_secs().max(1);
        let mut cmd = Command::new(&exe);
        cmd.args(["-N", "-D", &socks.to_string()])
            .args(["-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes"])
            .args(["-o", &format!("ConnectTimeout={timeout}")])
            .args(["-o", "ServerAliveInterval=15"])
            .args(&ssh.ssh_args)
            .arg("--")
            .arg(&ssh.destination);
        (cx.progress)(format!("starting ssh to {}", ssh.destination));
        let mut daemon = daemon::spawn(cmd, place, &cx.work_dir.join("ssh.log"), "hop:ssh")?;
        daemon::wait_listening(cx, &mut daemon, socks, ssh.timeout, "ssh")?;
        let what = format!("ssh {}", ssh.destination);
        Ok(Box::new(serve(cx, daemon, socks, what)?))
    }
}
