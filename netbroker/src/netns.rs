//! Network namespaces held by file descriptors: create one from the netbroker
//! itself (root mode; `unshare` then `setns` straight back), and remember the
//! namespace the netbroker started in ("the host").

#![forbid(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

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
