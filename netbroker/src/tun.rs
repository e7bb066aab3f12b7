//! TUN devices for proxy hops: create a layer-3 TUN device inside a given
//! network namespace, give it the tun2socks addresses and a large MTU, bring
//! it up and route everything (IPv4 and IPv6) through it. The descriptor is
//! what the in-process tun2socks engine reads and writes packets on.

#![forbid(unsafe_code)]

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::rtnl::Rtnl;
use crate::tun2socks::{TUN_V4, TUN_V4_PREFIX, TUN_V6, TUN_V6_PREFIX};

/// An open TUN device.
#[derive(Debug)]
pub struct Tun {
    /// The packet descriptor (non-blocking, close-on-exec); closing it
    /// removes the device.
    pub fd: OwnedFd,
    pub name: String,
    pub index: u32,
    pub mtu: u32,
}

/// What failed while creating a TUN device.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    #[error("open /dev/net/tun")]
    Open(#[source] io::Error),
    #[error("create TUN device {name}")]
    Create {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("configure TUN device {name}: {what}")]
    Configure {
        name: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Create TUN `name` inside the netns `netns` (a short-lived thread enters it
/// only for the open and the ioctl), set its MTU, the tun2socks addresses, up,
/// and default routes v4+v6 via it. `rtnl` is a route socket inside `netns`.
pub fn create(
    netns: BorrowedFd<'_>,
    rtnl: &mut Rtnl,
    name: &str,
    mtu: u32,
) -> Result<Tun, TunError> {
    let (fd, name) =
        crate::netns::run_in(netns, || open_here(name)).map_err(|source| TunError::Create {
            name: name.to_string(),
            source,
        })??;
    configure(rtnl, fd, name, mtu)
}

/// Create TUN `name` in the calling thread's network namespace (a holder
/// child's, rootless direct mode); its descriptor and actual name.
pub fn open_here(name: &str) -> Result<(OwnedFd, String), TunError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(TunError::Open)?;
    let fd = OwnedFd::from(file);
    let got = crate::sys::tun_set_iff(fd.as_fd(), name).map_err(|source| TunError::Create {
        name: name.to_string(),
        source,
    })?;
    Ok((fd, got))
}

/// Give the TUN device `name` (descriptor `fd`) its MTU, the tun2socks
/// addresses, bring it up and route everything through it; `rtnl` is a
/// route socket in its namespace.
pub fn configure(rtnl: &mut Rtnl, fd: OwnedFd, name: String, mtu: u32) -> Result<Tun, TunError> {
    let conf = |what: &'static str| {
        let name = name.clone();
        move |source| TunError::Configure { name, what, source }
    };
    let index = rtnl.link_index(&name).map_err(conf("find its index"))?;
    rtnl.set_mtu(index, mtu).map_err(conf("set the MTU"))?;
    rtnl.add_address(index, TUN_V4.into(), TUN_V4_PREFIX)
        .map_err(conf("add the IPv4 address"))?;
    rtnl.add_address(index, TUN_V6.into(), TUN_V6_PREFIX)
        .map_err(conf("add the IPv6 address"))?;
    rtnl.set_up(index).map_err(conf("bring it up"))?;
    rtnl.add_default_dev_route(false, index)
        .map_err(conf("add the IPv4 default route"))?;
    rtnl.add_default_dev_route(true, index)
        .map_err(conf("add the IPv6 default route"))?;
    Ok(Tun {
        fd,
        name,
        index,
        mtu,
    })
}
