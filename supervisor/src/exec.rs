//! The client side of the control socket: `exec`/`shell` into a running
//! session, `stop`, `audit`, the sandbox's root for `cp`/`mv`. Our stdio (or a
//! PTY we relay) travels to the session as fds, so the command reads and
//! writes our terminal directly — once we know the server is the session's
//! supervisor ([`connect`]).

#![forbid(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
use proto::broker::ProcEntry;
use proto::control::{ControlEvent, ControlRequest, Exec};
use proto::Channel;

use crate::{peer, runtime, session, supervise, terminal};

type Conn = Channel<ControlRequest, ControlEvent>;

/// How long a client waits for a session that is still starting.
const STARTING_WAIT: Duration = Duration::from_secs(5);

/// Connect to the session in `dir` and say hello.
pub(crate) fn connect(dir: &Path) -> Result<Conn> {
    let path = dir.join("control.sock");
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(&path)?;
    // A session that is alive but has no socket yet is still starting (its
    // chain is being built): give it a moment, then say so.
    let deadline = Instant::now() + STARTING_WAIT;
    loop {
        match socket::connect(fd.as_raw_fd(), &addr) {
            Ok(()) => break,
            Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ECONNREFUSED)
                if runtime::session_alive(dir) =>
            {
                if Instant::now() >= deadline {
                    bail!(
                        "the session is still starting (its network chain is being built; a tor hop can take minutes): try again once it is up, or interrupt its `pallium run` to abort it"
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot reach the session's control socket {}",
                        path.display()
                    )
                })
            }
        }
    }
    // No request, let alone a terminal, before we know the server is the
    // session's supervisor (not a socket a sandbox put in its place). A
    // server we cannot see at all means we are the one inside a sandbox: the
    // handshake (nothing but our role and version) lets it tell us so, and we
    // go no further whatever it answers.
    let service_uid = |pid: i32| {
        let id = proto::runtime::SessionRef::from_dir(dir)?.id(u32::try_from(pid).ok()?);
        Some(crate::identity::ServiceIds::supervisor(&id).uid)
    };
    let recorded = session::recorded_supervisor(dir);
    let verified = match peer::check_server(fd.as_fd(), recorded, service_uid) {
        Ok(()) => true,
        Err(peer::ServerError::Invisible) => false,
        Err(e) => {
            return Err(e)
                .with_context(|| format!("not using the control socket {}", path.display()))
        }
    };
    let mut chan = Channel::new(fd);
    chan.handshake("client", "supervisor")
        .context("session handshake")?;
    match chan.recv().context("session handshake")? {
        ControlEvent::Refused(why) => bail!("refused: {why}"),
        ControlEvent::Accepted if verified => Ok(chan),
        ControlEvent::Accepted => bail!(
            "not using the control socket {}: {}",
            path.display(),
            peer::ServerError::Invisible
        ),
        other => bail!("session sent {other:?} instead of accepting the connection"),
    }
}

/// Run `argv` in the session (`gvisor`: a gVisor session), in network
/// namespace `namespace` (`--namespace`); its exit code.
pub(crate) fn exec(
    dir: &Path,
    argv: Vec<String>,
    root: bool,
    pid_file: Option<&Path>,
    gvisor: bool,
    namespace: i64,
) -> Result<i32> {
    let signals = supervise::block_signals()?;
    let mut chan = connect(dir)?;
    let mut stdio = terminal::setup(if gvisor {
        terminal::Runner::GvisorJoin
    } else {
        terminal::Runner::Direct
    })?;
    chan.send(ControlRequest::Exec(Exec {
        argv,
        // All of it: the supervisor applies the session profile's policy.
        env: std::env::vars().collect(),
        cwd: std::env::current_dir()
            .ok()
            .map(|p| p.display().to_string()),
        stdio: stdio.take_fds(),
        tty: stdio.tty,
        root,
        namespace,
    }))?;
    let code = loop {
        let (sock, sig) = {
            let mut fds = [
                PollFd::new(chan.fd(), PollFlags::POLLIN),
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => return Err(e).context("poll"),
            }
            let r = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (r(&fds[0]), r(&fds[1]))
        };
        if sig {
            if let Ok(Some(info)) = signals.read_signal() {
                if info.ssi_signo as i32 == Signal::SIGWINCH as i32 {
                    stdio.resize();
                } else {
                    let _ = chan.send(ControlRequest::Signal(info.ssi_signo as i32));
                }
            }
        }
        if sock {
            match chan.recv() {
                Ok(ControlEvent::Started { pid }) => {
                    if let Some(p) = pid_file {
                        std::fs::write(p, format!("{pid}\n"))
                            .with_context(|| format!("writing {}", p.display()))?;
                    }
                }
                Ok(ControlEvent::Exited(status)) => break status.as_code(),
                Ok(ControlEvent::Failed(e)) => {
                    eprintln!("pallium: {}", e.chain.join(": "));
                    break supervise::exit_code_for_spawn_error(&e);
                }
                Ok(other) => bail!("session sent {other:?} unexpectedly"),
                Err(_) => bail!("the session ended before the command finished"),
            }
        }
    };
    stdio.finish();
    Ok(code)
}

/// Ask the session to end, and wait until it has.
pub(crate) fn stop(dir: &Path) -> Result<()> {
    let mut chan = connect(dir)?;
    chan.send(ControlRequest::Stop)?;
    let _ = chan.recv();
    let deadline = Instant::now() + Duration::from_secs(10);
    while runtime::session_alive(dir) {
        if Instant::now() > deadline {
            bail!("the session did not end within 10 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// The session's processes with their roles.
pub(crate) fn audit(dir: &Path) -> Result<Vec<ProcEntry>> {
    let mut chan = connect(dir)?;
    chan.send(ControlRequest::Audit)?;
    match chan.recv()? {
        ControlEvent::Audit(v) => Ok(v),
        ControlEvent::Failed(e) => Err(anyhow!("{e}")),
        other => bail!("session sent {other:?} instead of an audit"),
    }
}

/// An `O_PATH` descriptor of the sandbox's root directory, from the supervisor.
pub(crate) fn sandbox_root(dir: &Path) -> Result<(OwnedFd, Option<(u32, u32)>)> {
    let mut chan = connect(dir)?;
    chan.send(ControlRequest::SandboxRoot)?;
    match chan.recv()? {
        ControlEvent::SandboxRoot { root, owner } => Ok((root.into_inner(), owner)),
        ControlEvent::Failed(e) => Err(anyhow!("{}", e.chain.join(": "))),
        other => bail!("session sent {other:?} instead of the sandbox's root"),
    }
}
