//! Who is on the other end of a control socket. The supervisor refuses a
//! client that runs inside a sandbox ([`Gate`]); a client refuses a server
//! that is not the session's recorded supervisor ([`check_server`]) before it
//! hands over its terminal. Both read the peer's namespaces through
//! `/proc/<pid>/ns` with the pid the kernel recorded at `connect`/`listen`.

#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sys::socket::{getsockopt, sockopt};
use proto::control::Refusal;

/// A namespace, as the kernel names it: the nsfs device and inode of
/// `/proc/<pid>/ns/<kind>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NsId {
    dev: u64,
    ino: u64,
}

impl NsId {
    /// The `kind` (`"pid"`, `"mnt"`) namespace of process `pid` (a number or
    /// `"self"`). Reading another process's needs ptrace-read access to it.
    pub(crate) fn of(pid: &str, kind: &str) -> io::Result<NsId> {
        let m = std::fs::metadata(Path::new("/proc").join(pid).join("ns").join(kind))?;
        Ok(NsId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// Why a control client was refused (the log line; the client only learns
/// the [`Refusal`]).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error("cannot read its credentials: {0}")]
    Credentials(nix::Error),
    #[error("it runs as uid {0}, neither ours nor root")]
    OtherUser(u32),
    #[error("its pid is not visible in our PID namespace")]
    Invisible,
    #[error("pid {pid}: cannot read its namespaces: {source}")]
    Unreadable {
        pid: i32,
        #[source]
        source: io::Error,
    },
    #[error("pid {pid} exited while it was being checked")]
    Gone { pid: i32 },
    #[error("pid {pid} runs in the sandbox's {what} namespace")]
    InSandbox { pid: i32, what: &'static str },
    #[error("pid {pid} runs in another PID namespace than the supervisor (a sandbox's or one nested in it)")]
    OtherPidNs { pid: i32 },
}

impl Refused {
    /// What the client is told.
    pub(crate) fn refusal(&self) -> Refusal {
        match self {
            Refused::OtherUser(_) => Refusal::OtherUser,
            _ => Refusal::InsideSandbox,
        }
    }
}

/// The supervisor's judge of control clients.
///
/// The rule: a client is accepted only if it runs in the supervisor's own
/// PID namespace (and not in the sandbox's mount namespace). Every process of
/// a sandbox lives in the sandbox's PID namespace, which the sandboxer created
/// as a child of ours, or in one nested below it (the application may
/// `unshare -p`), and setns(2) only ever moves a process into a *descendant*
/// of its PID namespace: no sandboxed process can get back into ours. The
/// legitimate clients — the user's `pallium exec/stop/audit/cp` — run beside
/// the supervisor, root or rootless alike (a rootless session puts only its
/// helpers and the sandbox in new namespaces, never the CLI). Equality is
/// simpler than walking `NS_GET_PARENT` and sound at any depth. The
/// mount-namespace comparison adds a second, independent signal (a process
/// started in the sandbox's mounts but not its PID namespace). A peer whose
/// namespaces cannot be read — its pid not visible to us (it lives in a PID
/// namespace we do not see), gone, or not ours to inspect — is refused.
#[derive(Debug)]
pub(crate) struct Gate {
    uid: u32,
    /// Our PID namespace; None (refuse everyone) if /proc cannot tell.
    own_pid_ns: Option<NsId>,
    /// The sandbox's namespaces, read from its init when it became ready.
    sandbox_pid_ns: Option<NsId>,
    sandbox_mnt_ns: Option<NsId>,
}

impl Gate {
    /// The gate of the session whose sandbox init is `init_pid`.
    pub(crate) fn new(init_pid: i32) -> Gate {
        let init = init_pid.to_string();
        let read = |pid: &str, kind: &str| match NsId::of(pid, kind) {
            Ok(ns) => Some(ns),
            Err(e) => {
                tracing::debug!("cannot read /proc/{pid}/ns/{kind}: {e}");
                None
            }
        };
        Gate {
            uid: nix::unistd::getuid().as_raw(),
            own_pid_ns: read("self", "pid"),
            sandbox_pid_ns: read(&init, "pid"),
            sandbox_mnt_ns: read(&init, "mnt"),
        }
    }

    /// Accept or refuse the client connected on `sock`.
    pub(crate) fn judge(&self, sock: BorrowedFd<'_>) -> Result<(), Refused> {
        let cred = getsockopt(&sock, sockopt::PeerCredentials).map_err(Refused::Credentials)?;
        if cred.uid() != self.uid && cred.uid() != 0 {
            return Err(Refused::OtherUser(cred.uid()));
        }
        let pid = cred.pid();
        if pid <= 0 {
            return Err(Refused::Invisible);
        }
        // The pidfd (kernel ≥ 6.5) pins the very process that connected: if
        // it is still alive after we read /proc/<pid>, its pid was not
        // reused in between, so what we read was its. Without it, the pid
        // alone leaves the (theoretical) window of a pid-space wrap.
        let pidfd: Option<OwnedFd> = getsockopt(&sock, sockopt::PeerPidfd).ok();
        let shown = pid.to_string();
        let unreadable = |source| Refused::Unreadable { pid, source };
        let peer_pid_ns = NsId::of(&shown, "pid").map_err(unreadable)?;
        let peer_mnt_ns = NsId::of(&shown, "mnt").map_err(unreadable)?;
        if let Some(fd) = &pidfd {
            crate::sys::pidfd_alive(fd.as_fd()).map_err(|_| Refused::Gone { pid })?;
        }
        self.decide(pid, peer_pid_ns, peer_mnt_ns)
    }

    /// The rule (see [`Gate`]) on namespaces already read.
    fn decide(&self, pid: i32, peer_pid_ns: NsId, peer_mnt_ns: NsId) -> Result<(), Refused> {
        if self.sandbox_pid_ns == Some(peer_pid_ns) {
            return Err(Refused::InSandbox { pid, what: "PID" });
        }
        if self.sandbox_mnt_ns == Some(peer_mnt_ns) {
            return Err(Refused::InSandbox { pid, what: "mount" });
        }
        if self.own_pid_ns != Some(peer_pid_ns) {
            return Err(Refused::OtherPidNs { pid });
        }
        Ok(())
    }
}

/// Why a client will not talk to a control socket's server.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServerError {
    #[error("cannot read the server's credentials: {0}")]
    Credentials(nix::Error),
    #[error("the session does not record its supervisor's pid (started by an older pallium?)")]
    NoRecord,
    #[error("it is served by uid {0}, neither you nor root")]
    OtherUser(u32),
    #[error("it is served by pid {got}, not the session's supervisor (pid {recorded})")]
    NotTheSupervisor { got: i32, recorded: i32 },
    #[error("its server runs in another PID namespace than this client (a sandbox?)")]
    OtherPidNs,
    #[error("cannot read the server's namespaces: {0}")]
    Unreadable(#[source] io::Error),
}

/// Is the server of the connected control socket `sock` the session's
/// supervisor, whose pid the session directory records (`recorded`)? Its
/// uid must be ours or root, and it must run in our PID namespace (a server
/// inside a sandbox does not).
pub(crate) fn check_server(sock: BorrowedFd<'_>, recorded: Option<i32>) -> Result<(), ServerError> {
    let cred = getsockopt(&sock, sockopt::PeerCredentials).map_err(ServerError::Credentials)?;
    let me = nix::unistd::getuid().as_raw();
    if cred.uid() != me && cred.uid() != 0 {
        return Err(ServerError::OtherUser(cred.uid()));
    }
    let recorded = recorded.ok_or(ServerError::NoRecord)?;
    if cred.pid() != recorded || cred.pid() <= 0 {
        return Err(ServerError::NotTheSupervisor {
            got: cred.pid(),
            recorded,
        });
    }
    let theirs = NsId::of(&cred.pid().to_string(), "pid").map_err(ServerError::Unreadable)?;
    let ours = NsId::of("self", "pid").map_err(ServerError::Unreadable)?;
    if theirs != ours {
        return Err(ServerError::OtherPidNs);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

    fn ns(ino: u64) -> NsId {
        NsId { dev: 4, ino }
    }

    fn gate() -> Gate {
        Gate {
            uid: 1000,
            own_pid_ns: Some(ns(1)),
            sandbox_pid_ns: Some(ns(2)),
            sandbox_mnt_ns: Some(ns(3)),
        }
    }

    #[test]
    fn a_client_beside_the_supervisor_is_accepted() {
        assert!(gate().decide(7, ns(1), ns(10)).is_ok());
    }

    #[test]
    fn a_client_in_the_sandbox_is_refused() {
        let e = gate().decide(7, ns(2), ns(3)).unwrap_err();
        assert!(matches!(e, Refused::InSandbox { what: "PID", .. }), "{e}");
        assert_eq!(e.refusal(), Refusal::InsideSandbox);
        // Its mounts alone give it away too.
        let e = gate().decide(7, ns(1), ns(3)).unwrap_err();
        assert!(matches!(e, Refused::InSandbox { what: "mount", .. }), "{e}");
    }

    #[test]
    fn a_client_in_a_nested_or_unknown_pid_namespace_is_refused() {
        let e = gate().decide(7, ns(9), ns(10)).unwrap_err();
        assert!(matches!(e, Refused::OtherPidNs { .. }), "{e}");
        // Without our own namespace we cannot tell: nobody is accepted.
        let g = Gate {
            own_pid_ns: None,
            ..gate()
        };
        assert!(g.decide(7, ns(1), ns(10)).is_err());
    }

    #[test]
    fn judging_a_connection_from_ourselves_reads_real_namespaces() {
        let (a, _b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        // Our own process as "the sandbox": refused by its PID namespace.
        let g = Gate::new(std::process::id() as i32);
        let e = g.judge(a.as_fd()).unwrap_err();
        assert!(matches!(e, Refused::InSandbox { what: "PID", .. }), "{e}");
        // A gate that could not read its sandbox's namespaces (no such init)
        // still judges by our own PID namespace: a client beside us passes.
        let g = Gate::new(-1);
        g.judge(a.as_fd()).unwrap();
    }

    #[test]
    fn a_server_that_is_not_the_recorded_pid_is_refused() {
        let (a, _b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let me = std::process::id() as i32;
        check_server(a.as_fd(), Some(me)).unwrap();
        let e = check_server(a.as_fd(), Some(me + 1)).unwrap_err();
        assert!(matches!(e, ServerError::NotTheSupervisor { .. }), "{e}");
        let e = check_server(a.as_fd(), None).unwrap_err();
        assert!(matches!(e, ServerError::NoRecord), "{e}");
    }
}
