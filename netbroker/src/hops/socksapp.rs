//! `socksapp`: any program that opens a SOCKS5 listener, run in N(i−1) as
//! `user` (root mode) or as the caller (rootless, mapped back to their uid),
//! then served into Ni by tun2socks. The original waited for a listener on
//! `<namespace address>:1080`; here the program is told where to listen in
//! `PALLIUM_SOCKS_ADDRESS`/`PALLIUM_SOCKS_PORT` (127.0.0.1 and a free port
//! of N(i−1)), and `{port}` in its argv is replaced by that port.

#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

use proto::profile::HopKind;

use super::daemon;
use super::proxy::Names;
use super::{HopCx, HopError, HopType, RunningHop};

pub(super) struct SocksappHop;

impl HopType for SocksappHop {
    fn start(&self, cx: &mut HopCx<'_>) -> Result<Box<dyn RunningHop>, HopError> {
        let HopKind::Socksapp(app) = &cx.hop.kind else {
            return Err(HopError::Unsupported(cx.hop.kind.name()));
        };
        let app = app.clone();
        let Some((program, args)) = app.cmd.split_first() else {
            return Err(HopError::Failed(
                "socksapp \"cmd\" is empty; give the program and its arguments".into(),
            ));
        };
        let place = daemon::placement(cx, Some(&app.user), &app.user, true)?;
        let port = daemon::free_port(cx)?;
        let socks = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut cmd = Command::new(program);
        cmd.args(args.iter().map(|a| a.replace("{port}", &port.to_string())))
            .env("PALLIUM_SOCKS_ADDRESS", socks.ip().to_string())
            .env("PALLIUM_SOCKS_PORT", port.to_string());
        (cx.progress)(format!("starting {program}"));
        let mut daemon = daemon::spawn(
            cmd,
            place,
            &cx.work_dir.join("socksapp.log"),
            "hop:socksapp",
        )?;
        let socks = daemon::Listener::Tcp(socks);
        daemon::wait_listening(cx, &mut daemon, &socks, app.timeout, program)?;
        Ok(Box::new(daemon::serve(
            cx,
            daemon,
            &socks,
            program.clone(),
            Names::REMOTE,
        )?))
    }
}
