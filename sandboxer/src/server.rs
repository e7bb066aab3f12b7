//! The sandboxer's side of the supervisor channel: handshake, the request
//! state machine (`Setup` once, first; then `Spawn`/`Signal`/`ListPids`;
//! `Shutdown` or EOF ends it) and the poll loop over the channel and the
//! pidfds of the init and every spawned process.

#![forbid(unsafe_code)]

use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use proto::policy::{drop_caps, drop_to, setup_only, PolicyError, Role, SANDBOXER_GVISOR_ONLY};
use proto::sandbox::{ExitStatus, SandboxEvent, SandboxRequest};
use proto::{Channel, ErrorKind, RemoteError, WireError};

use crate::seccomp::{Filter, SeccompError};
use crate::setup::{self, Sandbox, SetupError};
use crate::spawn::{self, Child};
use crate::{procs, sys};

/// Why the sandboxer stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("take the channel socket: {0}")]
    ChannelFd(#[source] std::io::Error),
    #[error("open the host's /proc: {0}")]
    HostProc(#[source] nix::Error),
    #[error("drop to the sandboxer's capabilities")]
    Policy(#[from] PolicyError),
    #[error("supervisor channel")]
    Wire(#[from] WireError),
    #[error("setup failed")]
    Setup(#[from] SetupError),
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    #[error("poll: {0}")]
    Poll(#[source] nix::Error),
    #[error("the sandbox's init died")]
    InitDied,
    #[error("open the sandbox's root: {0}")]
    Root(#[source] nix::Error),
    #[error("the supervisor is gone")]
    Orphaned,
}

type SupervisorChannel = Channel<SandboxEvent, SandboxRequest>;

/// Serve the supervisor on fd 3 until `Shutdown` or EOF.
pub fn run() -> Result<(), ServerError> {
    let sock = sys::take_channel_fd().map_err(ServerError::ChannelFd)?;
    // Nothing we start may inherit the channel.
    fcntl(&sock, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|e| ServerError::ChannelFd(e.into()))?;
    // Kept open across the pivot: `ListPids` needs host pids.
    let host_proc = nix::fcntl::open(
        "/proc",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(ServerError::HostProc)?;
    // Our parent, the supervisor: its death must end us (its parent-death
    // signal, set before exec, is re-armed after each credential change,
    // which may clear it; see `Server::still_supervised`).
    let parent = nix::unistd::getppid();
    drop_to(Role::Sandboxer)?;
    let mut chan = SupervisorChannel::new(sock);
    chan.handshake("sandboxer", "supervisor")?;
    let server = Server {
        chan,
        parent,
        host_proc,
        sandbox: None,
        seccomp: None,
        children: Vec::new(),
    };
    if !server.still_supervised() {
        return Err(ServerError::Orphaned);
    }
    server.serve()
}

struct Server {
    chan: SupervisorChannel,
    /// The supervisor's pid, our parent.
    parent: nix::unistd::Pid,
    host_proc: OwnedFd,
    /// `None` until `Setup` succeeded.
    sandbox: Option<Sandbox>,
    /// The application's seccomp filter, compiled at `Setup`; an error
    /// (an unknown system call name) fails every `Spawn`.
    seccomp: Option<Result<Filter, SeccompError>>,
    children: Vec<Child>,
}

enum Flow {
    Continue,
    Exit,
}

impl Server {
    /// Re-arm the parent-death signal (a change of euid, egid, fsuid or
    /// fsgid clears it: `as_uid`, and `Setup`'s reads as the caller) and
    /// check the supervisor is still our parent: false once it died,
    /// whenever that was.
    ///
    /// The signal only helps while the supervisor may signal us: in root
    /// mode it switches to its session's uid before `Setup`, and the kernel
    /// checks a parent-death signal like a `kill` from the dying parent, so
    /// ours (root's) is never delivered from then on. What ends us then is
    /// the channel's EOF, or a failed send to the dead supervisor, and
    /// every such exit goes through `shutdown`: anything we started must be
    /// ours (in `sandbox`/`children`) before the supervisor hears of it.
    fn still_supervised(&self) -> bool {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_ok()
            && nix::unistd::getppid() == self.parent
    }

    fn serve(mut self) -> Result<(), ServerError> {
        loop {
            let (chan_ready, init_dead, exited) = self.wait()?;
            for pid in exited {
                self.reap(pid);
            }
            if init_dead {
                tracing::error!("the sandbox's init died; ending the session");
                self.shutdown();
                return Err(ServerError::InitDied);
            }
            if !chan_ready {
                continue;
            }
            let flow = match self.chan.recv() {
                Ok(req) => self.handle(req),
                Err(WireError::Closed) => Ok(Flow::Exit),
                // Malformed, oversized, truncated, too many descriptors, or
                // a field that breaks a rule: say so once, then end.
                Err(e) => {
                    let _ = self.chan.send(SandboxEvent::Failed {
                        id: None,
                        error: RemoteError::msg("sandboxer", format!("malformed request: {e}"))
                            .with_kind(ErrorKind::Protocol),
                    });
                    Err(e.into())
                }
            };
            match flow {
                Ok(Flow::Continue) => {}
                Ok(Flow::Exit) => {
                    self.shutdown();
                    return Ok(());
                }
                Err(e) => {
                    self.shutdown();
                    return Err(e);
                }
            }
        }
    }

    /// Block until the channel or a pidfd is ready: (channel readable, init
    /// exited, pids of exited children).
    fn wait(&self) -> Result<(bool, bool, Vec<Pid>), ServerError> {
        let flags = PollFlags::POLLIN;
        let mut fds = vec![PollFd::new(self.chan.fd(), flags)];
        if let Some(sb) = &self.sandbox {
            fds.push(PollFd::new(sb.init_pidfd.as_fd(), flags));
        }
        fds.extend(
            self.children
                .iter()
                .map(|c| PollFd::new(c.pidfd.as_fd(), flags)),
        );
        loop {
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => break,
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(ServerError::Poll(e)),
            }
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        let offset = 1 + usize::from(self.sandbox.is_some());
        let exited = self
            .children
            .iter()
            .zip(&ready[offset..])
            .filter(|(_, r)| **r)
            .map(|(c, _)| c.pid)
            .collect();
        Ok((ready[0], self.sandbox.is_some() && ready[1], exited))
    }

    fn handle(&mut self, req: SandboxRequest) -> Result<Flow, ServerError> {
        match req {
            SandboxRequest::Setup(s) => self.handle_setup(*s),
            SandboxRequest::Spawn(s) => self.handle_spawn(s),
            SandboxRequest::Signal { id, signal } => self.handle_signal(id, signal),
            SandboxRequest::ListPids => self.handle_list_pids(),
            SandboxRequest::Shutdown => Ok(Flow::Exit),
        }
    }

    fn handle_setup(&mut self, req: proto::sandbox::Setup) -> Result<Flow, ServerError> {
        if self.sandbox.is_some() {
            return self.violation(None, "Setup is legal once");
        }
        let seccomp = Filter::compile(&req.profile);
        match setup::setup(req) {
            Ok(mut sb) => {
                tracing::info!(init = sb.init.as_raw(), "sandbox ready");
                // The view is built: what only that needed goes now, before
                // the supervisor hears of it.
                let mut drop = setup_only(Role::Sandboxer);
                if sb.gvisor.is_none() {
                    drop.extend_from_slice(SANDBOXER_GVISOR_ONLY);
                }
                if let Err(e) = drop_caps(&drop) {
                    let _ = kill(sb.init, Signal::SIGKILL);
                    let _ = waitpid(sb.init, None);
                    return Err(e.into());
                }
                // A supervisor killed while we built the view must not
                // leave the sandbox behind.
                if !self.still_supervised() {
                    let _ = kill(sb.init, Signal::SIGKILL);
                    let _ = waitpid(sb.init, None);
                    return Err(ServerError::Orphaned);
                }
                // We live in the sandbox's root since Setup entered it.
                let root = nix::fcntl::open(
                    "/",
                    nix::fcntl::OFlag::O_PATH
                        | nix::fcntl::OFlag::O_DIRECTORY
                        | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(ServerError::Root);
                let (init_pid, owner) = (sb.init.as_raw(), sb.host_owner);
                let audio = sb.audio.take().map(proto::Fd);
                // Ours before the supervisor hears of it, so that a failed
                // send (the supervisor died) still ends it in `shutdown`.
                self.sandbox = Some(sb);
                self.seccomp = Some(seccomp);
                self.chan.send(SandboxEvent::Ready {
                    init_pid,
                    root: proto::Fd(root?),
                    owner,
                    audio,
                })?;
                Ok(Flow::Continue)
            }
            Err(e) => {
                let _ = self.chan.send(SandboxEvent::Failed {
                    id: None,
                    error: RemoteError::new("sandboxer: setup", &e),
                });
                Err(e.into())
            }
        }
    }

    fn handle_spawn(&mut self, req: proto::sandbox::Spawn) -> Result<Flow, ServerError> {
        let id = req.id;
        let (Some(sb), Some(seccomp)) = (&mut self.sandbox, &self.seccomp) else {
            return self.violation(Some(id), "Spawn before Setup");
        };
        if self.children.iter().any(|c| c.id == id) {
            return self.violation(Some(id), "Spawn id already in use");
        }
        let mut map_back = sb.map_back.filter(|_| !req.root);
        let mut run_as = sb.run_as.filter(|_| !req.root);
        if let Some(g) = &sb.gvisor {
            // runsc always runs unprivileged; inside gVisor the command is
            // gVisor's root either way, so `--root` changes nothing there.
            map_back = sb.map_back;
            run_as = g.run_as;
        }
        let mut req = req;
        crate::virtuser::apply(
            sb.user.as_ref(),
            sb.workdir.as_deref(),
            &mut req.env,
            &mut req.cwd,
        );
        let filter = match seccomp {
            Ok(f) => f,
            Err(e) => {
                tracing::info!(id, "spawn refused: {e}");
                self.chan.send(SandboxEvent::Failed {
                    id: Some(id),
                    error: RemoteError::msg("sandboxer: spawn", e.to_string()),
                })?;
                return Ok(Flow::Continue);
            }
        };
        // The application's user namespace: every process but a root-mode
        // virtual user's (a real unprivileged uid of its own) and gVisor's
        // runsc (which makes its own) joins it; `--root` keeps its
        // capabilities there.
        let app_userns = sb
            .app_userns
            .as_ref()
            .filter(|_| sb.gvisor.is_none() && run_as.is_none())
            .map(|f| f.as_fd());
        let ids = spawn::Identity {
            app_userns,
            app_host_uid: sb.app_uid,
            keep_caps: req.root,
            map_back,
            run_as,
        };
        if let (Some(_), Err(e)) = (&sb.gvisor, spawn::check_command(&req)) {
            tracing::info!(id, "spawn failed: {e}");
            self.chan.send(SandboxEvent::Failed {
                id: Some(id),
                error: RemoteError::msg("sandboxer: spawn", e.to_string()).with_kind(e.kind()),
            })?;
            return Ok(Flow::Continue);
        }
        let runsc = match sb.gvisor.as_mut().map(|g| g.command(&req)) {
            None => None,
            Some(Ok(argv)) => sb
                .gvisor
                .as_ref()
                .map(|g| spawn::Runsc { fd: &g.runsc, argv }),
            Some(Err(e)) => {
                tracing::info!(id, "spawn refused: {e}");
                self.chan.send(SandboxEvent::Failed {
                    id: Some(id),
                    error: RemoteError::new("sandboxer: gVisor", &e),
                })?;
                return Ok(Flow::Continue);
            }
        };
        let result = spawn::spawn(req, ids, filter, &sb.landlock, runsc);
        if result.is_err() {
            if let Some(g) = sb.gvisor.as_mut() {
                g.failed(id);
            }
        }
        match result {
            Ok(child) => {
                tracing::info!(id, pid = child.pid.as_raw(), "spawned");
                tracing::debug!(
                    id,
                    landlock = sb.landlock.enforced(),
                    "file view confinement"
                );
                // Ours before the supervisor hears of it: if that send
                // fails (the supervisor died), `shutdown` must still reap
                // it, or the dying init would wait for it forever and we
                // for the init.
                let pid = child.pid.as_raw();
                self.children.push(child);
                self.chan.send(SandboxEvent::Spawned { id, pid })?;
            }
            Err(e) => {
                tracing::info!(id, "spawn failed: {e}");
                self.chan.send(SandboxEvent::Failed {
                    id: Some(id),
                    error: RemoteError::msg("sandboxer: spawn", e.to_string()).with_kind(e.kind()),
                })?;
            }
        }
        Ok(Flow::Continue)
    }

    fn handle_signal(&mut self, id: u32, signal: i32) -> Result<Flow, ServerError> {
        if self.sandbox.is_none() {
            return self.violation(None, "Signal before Setup");
        }
        let Some(child) = self.children.iter().find(|c| c.id == id) else {
            tracing::debug!(id, "signal for a process that has already exited");
            return Ok(Flow::Continue);
        };
        let Ok(sig) = Signal::try_from(signal) else {
            tracing::warn!(id, signal, "ignoring an invalid signal number");
            return Ok(Flow::Continue);
        };
        let gvisor = self.sandbox.as_ref().is_some_and(|s| s.gvisor.is_some());
        let (pid, uid) = (child.pid, child.uid);
        // Under gVisor the process is runsc, which does not forward signals:
        // `runsc kill` delivers it to the command inside.
        if gvisor && self.gvisor_kill(id, uid, signal) {
            return Ok(Flow::Continue);
        }
        as_uid(uid, || {
            // Not running yet under gVisor: the runsc process alone (its
            // group holds gVisor's own processes).
            if gvisor {
                return kill(pid, sig);
            }
            // The process leads its own session and group (setsid): signal
            // the group so a shell's children get it too; the process alone
            // if it moved to another group.
            kill(Pid::from_raw(-pid.as_raw()), sig).or_else(|_| kill(pid, sig))
        });
        // The euid change cleared the parent-death signal.
        if uid.is_some() && !self.still_supervised() {
            return Err(ServerError::Orphaned);
        }
        Ok(Flow::Continue)
    }

    /// Deliver `signal` to spawn `id` inside gVisor with `runsc kill` (as
    /// the same user, under the same filter): to the first command's whole
    /// process tree (read with `runsc ps`), or to an exec'd command; false
    /// when there is nothing to address yet.
    fn gvisor_kill(&mut self, id: u32, uid: Option<u32>, signal: i32) -> bool {
        let Some(g) = self.sandbox.as_ref().and_then(|sb| sb.gvisor.as_ref()) else {
            return false;
        };
        let kills = match g.ps_command(id) {
            Some(ps) => match self.runsc(ps, uid, true) {
                Some((true, table)) => g.tree_kill_commands(&table, signal),
                _ => Vec::new(),
            },
            None => Vec::new(),
        };
        if kills.is_empty() {
            let Some(argv) = g.kill_command(id, signal) else {
                return false;
            };
            return self.runsc(argv, uid, false).is_some_and(|(ok, _)| ok);
        }
        // Each may race the process's exit: success if any arrived.
        let mut any = false;
        for argv in kills {
            any |= self.runsc(argv, uid, false).is_some_and(|(ok, _)| ok);
        }
        any
    }

    /// Run runsc with `argv` as `uid` under the application's filter and
    /// wait: whether it succeeded and, if `capture`, its standard output.
    /// Its error messages are dropped, not shown on the user's terminal: the
    /// usual one is a process that exited meanwhile. None if it could not
    /// be started.
    fn runsc(&self, argv: Vec<String>, uid: Option<u32>, capture: bool) -> Option<(bool, String)> {
        let (Some(sb), Some(Ok(filter))) = (&self.sandbox, &self.seccomp) else {
            return None;
        };
        let g = sb.gvisor.as_ref()?;
        let err: OwnedFd = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            Ok(null) => null.into(),
            Err(_) => std::io::stderr().as_fd().try_clone_to_owned().ok()?,
        };
        let (out_r, out_w) = if capture {
            let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).ok()?;
            (Some(r), w)
        } else {
            (None, err.try_clone().ok()?)
        };
        let req = proto::sandbox::Spawn {
            id: u32::MAX,
            argv: vec!["runsc".into()],
            env: Vec::new(),
            cwd: None,
            stdio: [
                proto::Fd(err.try_clone().ok()?),
                proto::Fd(out_w),
                proto::Fd(err),
            ],
            tty: false,
            root: false,
            netns: None,
        };
        let ids = spawn::Identity {
            map_back: sb.map_back,
            run_as: uid.zip(g.run_as.map(|(_, gid)| gid)),
            ..Default::default()
        };
        // The subcommand and its arguments, for the log.
        let what: Vec<String> = argv
            .iter()
            .skip_while(|a| a.starts_with('-') || *a == "runsc")
            .cloned()
            .collect();
        let runsc = spawn::Runsc { fd: &g.runsc, argv };
        let child = match spawn::spawn(req, ids, filter, &sb.landlock, Some(runsc)) {
            Ok(child) => child,
            Err(e) => {
                tracing::warn!("runsc: {e}");
                return None;
            }
        };
        let mut out = String::new();
        if let Some(r) = out_r {
            use std::io::Read;
            let _ = std::fs::File::from(r).read_to_string(&mut out);
        }
        let ok = matches!(waitpid(child.pid, None), Ok(WaitStatus::Exited(_, 0)));
        if !ok {
            tracing::debug!("runsc {} failed", what.join(" "));
        }
        Some((ok, out))
    }

    fn handle_list_pids(&mut self) -> Result<Flow, ServerError> {
        if self.sandbox.is_none() {
            return self.violation(None, "ListPids before Setup");
        }
        let init = self.sandbox.as_ref().map(|s| s.init);
        self.chan
            .send(SandboxEvent::Pids(procs::list(&self.host_proc, init)))?;
        Ok(Flow::Continue)
    }

    /// An out-of-order request: tell the peer, then end.
    fn violation(&mut self, id: Option<u32>, what: &'static str) -> Result<Flow, ServerError> {
        let _ = self.chan.send(SandboxEvent::Failed {
            id,
            error: RemoteError::msg("sandboxer", format!("protocol violation: {what}"))
                .with_kind(ErrorKind::Protocol),
        });
        Err(ServerError::Protocol(what))
    }

    /// Reap an exited child and report it.
    fn reap(&mut self, pid: Pid) {
        let Some(pos) = self.children.iter().position(|c| c.pid == pid) else {
            return;
        };
        let child = self.children.remove(pos);
        if let Some(g) = self.sandbox.as_mut().and_then(|s| s.gvisor.as_mut()) {
            g.exited(child.id);
        }
        let status = match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => ExitStatus::Code(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => ExitStatus::Signal(sig as i32),
            other => {
                tracing::warn!(pid = pid.as_raw(), "unexpected wait result {other:?}");
                ExitStatus::Code(255)
            }
        };
        tracing::info!(id = child.id, ?status, "exited");
        let _ = self.chan.send(SandboxEvent::Exited {
            id: child.id,
            status,
        });
    }

    /// Kill the init, which ends every process of the PID namespace, and
    /// reap everything. Our own children first: the dying init waits until
    /// every other process of its namespace has been reaped by its parent.
    fn shutdown(&mut self) {
        let sandbox = self.sandbox.take();
        if let Some(sb) = &sandbox {
            let _ = kill(sb.init, Signal::SIGKILL);
        }
        for pid in self.children.iter().map(|c| c.pid).collect::<Vec<_>>() {
            // Killed with the namespace already; without one, by us.
            let _ = kill(pid, Signal::SIGKILL);
            self.reap(pid);
        }
        if let Some(sb) = sandbox {
            let _ = waitpid(sb.init, None);
        }
    }
}

/// Run `f` (a `kill`) with the effective uid `uid` when given: a root-mode
/// virtual user's processes may be signalled by their own uid only, as the
/// sandboxer holds no CAP_KILL. Going back to euid 0 restores the effective
/// capabilities from the permitted set, which an euid change keeps.
fn as_uid(uid: Option<u32>, f: impl FnOnce() -> nix::Result<()>) {
    let Some(uid) = uid else {
        let _ = f();
        return;
    };
    let root = nix::unistd::geteuid();
    if let Err(e) = nix::unistd::seteuid(nix::unistd::Uid::from_raw(uid)) {
        tracing::warn!(uid, "cannot take the application's uid to signal it: {e}");
        return;
    }
    if let Err(e) = f() {
        tracing::debug!(uid, "signal: {e}");
    }
    if let Err(e) = nix::unistd::seteuid(root) {
        // Without its effective uid back the sandboxer cannot go on safely.
        tracing::error!("cannot restore the sandboxer's uid: {e}");
        std::process::abort();
    }
}
