//! Network namespaces held by file descriptors: create one from the netbroker
//! itself (root mode; `unshare` then `setns` straight back), and remember the
//! namespace the netbroker started in ("the host").

#![forbid(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sched::{setns, unshare, CloneFlags};

use crate::rtnl::Rtnl;

/// What failed while creating a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("open {path}")]
    Open {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("unshare a new network namespace")]
    Unshare(#[source] io::Error),
    #[error("open a route netlink socket in the new network namespace")]
    Netlink(#[source] io::Error),
    #[error("bring up lo in the new network namespace")]
    Loopback(#[source] io::Error),
    #[error("enter the session's {what} namespace")]
    Enter {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("create the application's user and network namespaces")]
    Owned(#[source] Box<crate::rootless::RootlessError>),
    /// Fatal: the thread is stuck in the wrong namespace.
    #[error("return to the original network namespace")]
    Return(#[source] io::Error),
}

const SELF_NET: &str = "/proc/thread-self/ns/net";

/// A fresh network namespace, `lo` up, with a route socket inside it.
#[derive(Debug)]
pub struct Netns {
    pub fd: OwnedFd,
    pub rtnl: Rtnl,
}

/// The calling thread's network namespace.
pub fn current() -> Result<OwnedFd, NetnsError> {
    File::open(SELF_NET)
        .map(OwnedFd::from)
        .map_err(|source| NetnsError::Open {
            path: SELF_NET,
            source,
        })
}

/// Create a network namespace without entering it for longer than it takes to
/// open it and a netlink socket inside it.
pub fn create() -> Result<Netns, NetnsError> {
    let home = current()?;
    unshare(CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Unshare(e.into()))?;
    let inside = (|| {
        let fd = current()?;
        let mut rtnl = Rtnl::open().map_err(NetnsError::Netlink)?;
        let lo = rtnl.link_index("lo").map_err(NetnsError::Loopback)?;
        rtnl.set_up(lo).map_err(NetnsError::Loopback)?;
        Ok(Netns { fd, rtnl })
    })();
    setns(home.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Return(e.into()))?;
    inside
}

/// The application's network namespace, owned by a user namespace of its
/// own in which uid/gid 0…`count`−1 are our `uid`/`gid` on
/// ([`crate::rootless::owned_netns`]); with that user namespace.
pub fn create_owned(uid: u32, gid: u32, count: u32) -> Result<(Netns, OwnedFd), NetnsError> {
    crate::rootless::owned_netns(uid, gid, count).map_err(|e| NetnsError::Owned(Box::new(e)))
}

/// Move the whole (single-threaded) netbroker into the session's user
/// namespace and its first network namespace, so it may create the hops'
/// namespaces and devices there. Rootless only: the netbroker holds no
/// capability outside, so nothing is given up; it must happen before any
/// thread starts (the kernel refuses `setns` into a user namespace otherwise).
pub fn enter_session(userns: BorrowedFd<'_>, netns: BorrowedFd<'_>) -> Result<(), NetnsError> {
    // A worker thread that has just been joined (a hop started in the
    // caller's namespace may have used one) can still count as a thread of
    // ours for a moment: the kernel then says EINVAL. Try a few times.
    let mut tries = 0;
    loop {
        match setns(userns, CloneFlags::CLONE_NEWUSER) {
            Err(nix::Error::EINVAL) if tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            r => {
                r.map_err(|e| NetnsError::Enter {
                    what: "user",
                    source: e.into(),
                })?;
                break;
            }
        }
    }
    setns(netns, CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Enter {
        what: "network",
        source: e.into(),
    })
}

/// Whether `netns` is the calling thread's own network namespace.
pub fn is_current(netns: BorrowedFd<'_>) -> bool {
    same_ns(netns, SELF_NET)
}

/// Is `userns` the user namespace we are in?
pub fn is_current_userns(userns: BorrowedFd<'_>) -> bool {
    same_ns(userns, "/proc/thread-self/ns/user")
}

fn same_ns(ns: BorrowedFd<'_>, ours: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |m: std::fs::Metadata| (m.dev(), m.ino());
    let theirs = File::from(match ns.try_clone_to_owned() {
        Ok(fd) => fd,
        Err(_) => return false,
    })
    .metadata()
    .map(id);
    let ours = std::fs::metadata(ours).map(id);
    matches!((theirs, ours), (Ok(a), Ok(b)) if a == b)
}

/// Run `f` on a short-lived thread inside `netns`: the sockets it creates
/// belong there. (`setns` is per thread; the caller's thread stays put.)
/// In our own namespace `f` runs right here: no `setns` (which needs
/// CAP_SYS_ADMIN over the namespace even to stay in it: a rootless
/// netbroker in the caller's namespace has none) and no thread (which
/// would stand in the way of entering the session's user namespace).
pub fn run_in<T: Send>(netns: BorrowedFd<'_>, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    if is_current(netns) {
        return Ok(f());
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(netns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace worker thread panicked")))
    })
}

/// Connect to `addr` from inside `netns` (to check a daemon listens).
pub fn connect_in(
    netns: BorrowedFd<'_>,
    addr: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> io::Result<std::net::TcpStream> {
    run_in(netns, || {
        std::net::TcpStream::connect_timeout(&addr, timeout)
    })?
}

/// A TCP port on 127.0.0.1 that is free in `netns` right now.
pub fn free_port_in(netns: BorrowedFd<'_>) -> io::Result<u16> {
    run_in(netns, || {
        std::net::TcpListener::bind(("127.0.0.1", 0)).and_then(|l| Ok(l.local_addr()?.port()))
    })?
}
