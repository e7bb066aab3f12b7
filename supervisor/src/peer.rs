//! Who is on the other end of a control socket. The supervisor refuses a
//! client that runs inside a sandbox ([`Gate`]); a client refuses a server
//! that is not the session's recorded supervisor ([`check_server`]) before it
//! hands over its terminal. Both place the peer's PID namespace with the pid
//! the kernel recorded at `connect`/`listen` and the `NSpid` line of
//! `/proc/<pid>/status`, which anyone may read (`/proc/<pid>/ns/*` needs
//! ptrace access, which a supervisor without capabilities lacks over a root
//! client that has them).

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

/// Process `pid`'s pids from /proc's PID namespace down to its own (the
/// `NSpid` line of its status): one entry per namespace level.
pub(crate) fn ns_pids(pid: &str) -> io::Result<Vec<i32>> {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid).join("status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no NSpid line"))?;
    line.split_whitespace()
        .map(|n| {
            n.parse()
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
        })
        .collect()
}

/// Where a peer's PID namespace is relative to ours.
#[derive(Debug, PartialEq, Eq)]
enum Place {
    /// Ours.
    Beside,
    /// Nested below ours (a sandbox's, or one inside it).
    Below,
    /// `/proc/<pid>` is not the peer (our /proc numbers pids in another
    /// namespace, or the pid was reused), or not visible at all.
    Unknown,
}

/// Place the peer whose pid in our namespace is `pid`, given its `NSpid`
/// list and ours. A pid the kernel translated into our namespace (non-zero)
/// belongs to a process in our namespace or one below it; the length of
/// `NSpid` is its depth. The entry at our depth must be `pid` itself, or what
/// we read is another process.
fn place(pid: i32, peer: &[i32], own: &[i32]) -> Place {
    let level = own.len().wrapping_sub(1);
    if pid <= 0 || own.is_empty() || peer.get(level) != Some(&pid) {
        return Place::Unknown;
    }
    if peer.len() == own.len() {
        Place::Beside
    } else {
        Place::Below
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
    #[error("pid {pid}: cannot read its status: {source}")]
    Unreadable {
        pid: i32,
        #[source]
        source: io::Error,
    },
    #[error("pid {pid}: /proc/{pid} is not that process")]
    NotThePeer { pid: i32 },
    #[error("pid {pid} exited while it was being checked")]
    Gone { pid: i32 },
    #[error(
        "pid {pid} runs in a PID namespace below the supervisor's (the sandbox's or one inside it)"
    )]
    Below { pid: i32 },
    #[error("pid {pid} runs in the sandbox's mount namespace")]
    SandboxMounts { pid: i32 },
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
/// PID namespace. Every process of a sandbox lives in the sandbox's PID
/// namespace, which the sandboxer created as a child of ours, or in one
/// nested below it (the application may `unshare -p`), and setns(2) only
/// ever moves a process into a *descendant* of its PID namespace: no
/// sandboxed process can get back into ours. The legitimate clients — the
/// user's `pallium exec/stop/audit/cp` — run beside the supervisor, root or
/// rootless alike (a rootless session puts only its helpers and the sandbox
/// in new namespaces, never the CLI). Equality is simpler than walking
/// `NS_GET_PARENT` and sound at any depth; it is read from `NSpid` (see
/// [`place`]), which needs no privilege, so a root client with all
/// capabilities is judged as well as a rootless one. A peer that cannot be
/// placed — not visible in our PID namespace, its status unreadable, gone
/// while we looked — is refused.
///
/// A second, independent signal: a peer in the sandbox's mount namespace is
/// refused. It is best effort — reading another process's namespaces needs
/// ptrace access, which the supervisor (without capabilities) lacks over
/// the sandbox's init and over a root client as root — so when either side
/// cannot be read the PID rule alone decides.
#[derive(Debug)]
pub(crate) struct Gate {
    uid: u32,
    /// Our `NSpid`; empty (refuse everyone) if /proc cannot tell.
    own: Vec<i32>,
    /// The sandbox's mount namespace, read from its init when it became
    /// ready, if we may.
    sandbox_mnt_ns: Option<NsId>,
}

impl Gate {
    /// The gate of the session whose sandbox init is `init_pid`, started by
    /// `caller_uid` (root mode: root, whatever uid the supervisor switched to).
    pub(crate) fn new(init_pid: i32, caller_uid: u32) -> Gate {
        let own = ns_pids("self").unwrap_or_else(|e| {
            tracing::warn!(
                "cannot read /proc/self/status ({e}): every control client will be refused"
            );
            Vec::new()
        });
        let sandbox_mnt_ns = NsId::of(&init_pid.to_string(), "mnt")
            .inspect_err(|e| tracing::debug!("cannot read the sandbox's mount namespace: {e}"))
            .ok();
        Gate {
            uid: caller_uid,
            own,
            sandbox_mnt_ns,
        }
    }

    /// Accept or refuse the client connected on `sock`.
    pub(crate) fn judge(&self, sock: BorrowedFd<'_>) -> Result<(), Refused> {
        let cred = getsockopt(&sock, sockopt::PeerCredentials).map_err(Refused::Credentials)?;
        let other_user = cred.uid() != self.uid && cred.uid() != 0;
        let pid = cred.pid();
        if pid <= 0 {
            return Err(if other_user {
                Refused::OtherUser(cred.uid())
            } else {
                Refused::Invisible
            });
        }
        // A peer inside a sandbox is told so whatever its uid (as root the
        // application is an unprivileged uid of the session's own).
        if other_user {
            let below = ns_pids(&pid.to_string())
                .is_ok_and(|peer| matches!(place(pid, &peer, &self.own), Place::Below));
            return Err(if below {
                Refused::Below { pid }
            } else {
                Refused::OtherUser(cred.uid())
            });
        }
        // The pidfd (kernel ≥ 6.5) pins the very process that connected: if
        // it is still alive after we read /proc/<pid>, its pid was not
        // reused in between, so what we read was its. Without it, the pid
        // alone leaves the (theoretical) window of a pid-space wrap.
        let pidfd: Option<OwnedFd> = getsockopt(&sock, sockopt::PeerPidfd).ok();
        let shown = pid.to_string();
        let peer = ns_pids(&shown).map_err(|source| Refused::Unreadable { pid, source })?;
        let mnt = NsId::of(&shown, "mnt").ok();
        if let Some(fd) = &pidfd {
            // EPERM says it exists: a root-mode supervisor runs as the
            // session's uid and may not signal its root clients.
            match crate::sys::pidfd_alive(fd.as_fd()) {
                Err(e) if e.raw_os_error() != Some(libc::EPERM) => {
                    return Err(Refused::Gone { pid })
                }
                _ => {}
            }
        }
        self.decide(pid, &peer, mnt)
    }

    /// The rule (see [`Gate`]) on what was read.
    fn decide(&self, pid: i32, peer: &[i32], mnt: Option<NsId>) -> Result<(), Refused> {
        match place(pid, peer, &self.own) {
            Place::Beside => {}
            Place::Below => return Err(Refused::Below { pid }),
            Place::Unknown => return Err(Refused::NotThePeer { pid }),
        }
        if mnt.is_some() && mnt == self.sandbox_mnt_ns {
            return Err(Refused::SandboxMounts { pid });
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
    /// The server is not visible in our PID namespace: we run in one below
    /// it (inside a sandbox), so we cannot check it — and it will refuse us.
    #[error("its server is outside this client's PID namespace")]
    Invisible,
    #[error("it is served by uid {0}, neither you nor root")]
    OtherUser(u32),
    #[error("it is served by pid {got}, not the session's supervisor (pid {recorded})")]
    NotTheSupervisor { got: i32, recorded: i32 },
    #[error("its server (pid {0}) does not run in this client's PID namespace (a sandbox?)")]
    OtherPidNs(i32),
    #[error("cannot read the server's status: {0}")]
    Unreadable(#[source] io::Error),
}

/// Is the server of the connected control socket `sock` the session's
/// supervisor, whose pid the session directory records (`recorded`)? Its
/// uid must be ours, root, or — for a root client — the unprivileged uid a
/// root-mode supervisor of pid `recorded` switches to (`service_uid` of the
/// session's id with that pid, see `crate::identity`); and it must run in
/// our PID namespace (a server inside a sandbox does not).
pub(crate) fn check_server(
    sock: BorrowedFd<'_>,
    recorded: Option<i32>,
    service_uid: impl FnOnce(i32) -> Option<u32>,
) -> Result<(), ServerError> {
    let cred = getsockopt(&sock, sockopt::PeerCredentials).map_err(ServerError::Credentials)?;
    if cred.pid() == 0 {
        return Err(ServerError::Invisible);
    }
    let me = nix::unistd::getuid().as_raw();
    let recorded = recorded.ok_or(ServerError::NoRecord)?;
    let known = cred.uid() == me
        || cred.uid() == 0
        || (me == 0 && service_uid(recorded) == Some(cred.uid()));
    if !known {
        return Err(ServerError::OtherUser(cred.uid()));
    }
    if cred.pid() != recorded {
        return Err(ServerError::NotTheSupervisor {
            got: cred.pid(),
            recorded,
        });
    }
    let theirs = ns_pids(&cred.pid().to_string()).map_err(ServerError::Unreadable)?;
    let ours = ns_pids("self").map_err(ServerError::Unreadable)?;
    match place(cred.pid(), &theirs, &ours) {
        Place::Beside => Ok(()),
        _ => Err(ServerError::OtherPidNs(cred.pid())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

    fn gate(own: &[i32], mnt: Option<NsId>) -> Gate {
        Gate {
            uid: 1000,
            own: own.to_vec(),
            sandbox_mnt_ns: mnt,
        }
    }

    const SANDBOX_MNT: NsId = NsId { dev: 4, ino: 3 };

    #[test]
    fn a_client_beside_the_supervisor_is_accepted() {
        assert!(gate(&[100], None).decide(7, &[7], None).is_ok());
        // In a container: /proc and we are two levels down alike.
        assert!(gate(&[900, 100], None).decide(7, &[907, 7], None).is_ok());
        let other_mnt = NsId { dev: 4, ino: 9 };
        assert!(gate(&[100], Some(SANDBOX_MNT))
            .decide(7, &[7], Some(other_mnt))
            .is_ok());
    }

    #[test]
    fn a_client_in_a_nested_pid_namespace_is_refused() {
        // The sandbox's namespace, and one the application made inside it.
        for peer in [&[7, 1][..], &[7, 5, 1]] {
            let e = gate(&[100], None).decide(7, peer, None).unwrap_err();
            assert!(matches!(e, Refused::Below { .. }), "{e}");
            assert_eq!(e.refusal(), Refusal::InsideSandbox);
        }
    }

    #[test]
    fn a_client_in_the_sandbox_mounts_is_refused() {
        let e = gate(&[100], Some(SANDBOX_MNT))
            .decide(7, &[7], Some(SANDBOX_MNT))
            .unwrap_err();
        assert!(matches!(e, Refused::SandboxMounts { .. }), "{e}");
    }

    #[test]
    fn a_status_that_is_not_the_peer_is_refused() {
        // /proc numbers pids in an ancestor namespace: what /proc/7 shows
        // is some other process.
        let e = gate(&[900, 100], None).decide(7, &[7], None).unwrap_err();
        assert!(matches!(e, Refused::NotThePeer { .. }), "{e}");
        let e = gate(&[100], None).decide(7, &[8], None).unwrap_err();
        assert!(matches!(e, Refused::NotThePeer { .. }), "{e}");
        // Without our own NSpid we cannot tell: nobody is accepted.
        assert!(gate(&[], None).decide(7, &[7], None).is_err());
    }

    #[test]
    fn judging_a_connection_from_ourselves_reads_real_status() {
        let (a, _b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        // A gate whose sandbox init does not exist judges by our own PID
        // namespace: a client beside us passes.
        let me = nix::unistd::getuid().as_raw();
        Gate::new(-1, me).judge(a.as_fd()).unwrap();
        // Our own process as "the sandbox's init": refused by its mounts,
        // if this test may read them (it may: it is the same process).
        let e = Gate::new(std::process::id() as i32, me)
            .judge(a.as_fd())
            .unwrap_err();
        assert!(matches!(e, Refused::SandboxMounts { .. }), "{e}");
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
        let none = |_| None;
        check_server(a.as_fd(), Some(me), none).unwrap();
        let e = check_server(a.as_fd(), Some(me + 1), none).unwrap_err();
        assert!(matches!(e, ServerError::NotTheSupervisor { .. }), "{e}");
        let e = check_server(a.as_fd(), None, none).unwrap_err();
        assert!(matches!(e, ServerError::NoRecord), "{e}");
    }
}
