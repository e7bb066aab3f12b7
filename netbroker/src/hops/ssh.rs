//! `ssh`: `ssh -N -D 127.0.0.1:PORT [ssh_args] destination` in N(i−1), as the
//! hop's `user` (default `nobody`, never root) in root mode or as the caller (mapped back to their own uid,
//! so ssh finds their keys and known hosts) rootless; then served into Ni by
//! tun2socks as a SOCKS5 proxy with remote name resolution. BatchMode means
//! it never waits on a host-key or password prompt: it fails, and its
//! message is shown.

#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

use proto::profile::HopKind;

use super::daemon;
use super::proxy::Names;
use super::{HopCx, HopError, HopType, RunningHop};

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
        // A TCP port: OpenSSH 9.2 takes `-D PATH` on its command line but
        // listens nowhere (tried in the testbed), so a rootless ssh hop 1
        // keeps pasta's namespace, whose loopback is the session's alone.
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
}
