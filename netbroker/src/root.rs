//! Root-mode uplink: a veth pair from the host namespace (where the netbroker
//! started) into the application namespace, addresses from the pool, default
//! routes, IP forwarding, an owner-bound nftables table (masquerade, and walls
//! towards the host and other sessions: `nft.rs`) and DNS.

#![forbid(unsafe_code)]

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::dns::{self, DnsPlan};
use crate::names;
use crate::netns::{self, NetnsError};
use crate::nft::{self, NftError, NftSession};
use crate::pool::{self, LinkNets, V4_LEN, V6_LEN};
use crate::rtnl::Rtnl;
use proto::sysctl::{self, NetLock, SysctlError};

/// What failed while building the veth uplink.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("take the address pool lock")]
    Lock(#[source] SysctlError),
    #[error("open a route netlink socket in the host namespace")]
    HostNetlink(#[source] io::Error),
    #[error("list the host namespace's addresses and routes")]
    HostDump(#[source] io::Error),
    #[error("no free private IPv4 /30 or IPv6 /64 is left for the link")]
    PoolExhausted,
    #[error("create the application network namespace")]
    Netns(#[source] NetnsError),
    #[error("create veth pair {host} ⇄ {app}")]
    Veth {
        host: String,
        app: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("find interface {iface}")]
    Link {
        iface: String,
        #[source]
        source: io::Error,
    },
    #[error("add address {addr} to {iface}")]
    Address {
        iface: String,
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("bring up {iface}")]
    Up {
        iface: String,
        #[source]
        source: io::Error,
    },
    #[error("add default route via {gateway} on {iface}")]
    Route {
        iface: String,
        gateway: IpAddr,
        #[source]
        source: io::Error,
    },
    #[error("write {path}")]
    Sysctl {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("enable IP forwarding in the host namespace")]
    Forwarding(#[source] SysctlError),
    #[error("create the session's nftables table")]
    Nft(#[source] NftError),
    #[error("start the DNS relay")]
    Relay(#[source] dns::RelayError),
}

/// Where the netbroker keeps shared state and which `/proc/sys` it changes.
#[derive(Debug, Clone)]
pub struct HostPaths {
    pub run_dir: PathBuf,
    pub proc_sys: PathBuf,
    pub resolv_conf: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            run_dir: sysctl::RUN_DIR.into(),
            proc_sys: "/proc/sys".into(),
            resolv_conf: "/etc/resolv.conf".into(),
        }
    }
}

/// A built veth uplink; the masquerade lives while `nft` is open. Dropping it
/// deletes the veth pair at once; should the netbroker die instead, the pair
/// goes when the kernel destroys the namespace (which it does asynchronously,
/// sometimes seconds later on a busy machine).
#[derive(Debug)]
pub struct VethUplink {
    pub netns: OwnedFd,
    /// The user namespace owning `netns` (uid 0 there: the session's uid).
    pub userns: OwnedFd,
    /// That uid.
    pub app_uid: u32,
    pub link: String,
    pub resolv_conf: String,
    _nft: NftSession,
    _host_end: HostEnd,
}

/// The host end of the veth pair, deleted (with its peer) on drop, also when
/// a later step of [`build`] fails.
#[derive(Debug)]
struct HostEnd {
    /// Bound to the host namespace, whichever namespace the dropping thread is in.
    rtnl: Rtnl,
    index: u32,
}

impl Drop for HostEnd {
    fn drop(&mut self) {
        if let Err(e) = self.rtnl.delete_link(self.index) {
            if e.raw_os_error() != Some(libc::ENODEV) {
                tracing::warn!("delete the host end of the veth pair: {e}");
            }
        }
    }
}

/// Build the uplink for `session_id`; `host_access` (`network.host_access`)
/// lets the sandbox reach the host's own addresses. `warn` receives non-fatal
/// problems.
pub fn build(
    session_id: &str,
    host_access: bool,
    paths: &HostPaths,
    warn: &mut dyn FnMut(String),
) -> Result<VethUplink, RootError> {
    let host_if = names::host_ifname(session_id);
    let mut host = Rtnl::open().map_err(RootError::HostNetlink)?;

    // Choose and assign under the lock, so concurrent sessions never collide.
    let lock = NetLock::acquire(&paths.run_dir).map_err(RootError::Lock)?;
    let mut seen = host.addresses().map_err(RootError::HostDump)?;
    seen.extend(host.routes(false).map_err(RootError::HostDump)?);
    seen.extend(host.routes(true).map_err(RootError::HostDump)?);
    let nets =
        pool::choose(&seen, names::session_hash(session_id)).ok_or(RootError::PoolExhausted)?;

    let uid = names::app_uid(session_id);
    let (mut app, userns) = netns::create_owned(uid, uid, proto::profile::SESSION_UID_BLOCK)
        .map_err(RootError::Netns)?;
    host.add_veth(&host_if, names::APP_IFNAME, app.fd.as_fd())
        .map_err(|source| RootError::Veth {
            host: host_if.clone(),
            app: names::APP_IFNAME,
            source,
        })?;
    let mut host_end = HostEnd {
        index: index(&mut host, &host_if)?,
        rtnl: host,
    };
    link_sysctls(&paths.proc_sys, &host_if, app.fd.as_fd())?;
    configure_end(
        &mut host_end.rtnl,
        &host_if,
        nets.host_v4().into(),
        nets.host_v6().into(),
    )?;
    configure_end(
        &mut app.rtnl,
        names::APP_IFNAME,
        nets.app_v4().into(),
        nets.app_v6().into(),
    )?;
    let app_idx = index(&mut app.rtnl, names::APP_IFNAME)?;
    for gateway in [IpAddr::from(nets.host_v4()), IpAddr::from(nets.host_v6())] {
        app.rtnl
            .add_default_route(gateway, app_idx)
            .map_err(|source| RootError::Route {
                iface: names::APP_IFNAME.into(),
                gateway,
                source,
            })?;
    }
    sysctl::enable_forwarding(&lock, &paths.proc_sys).map_err(RootError::Forwarding)?;
    drop(lock);

    let text = std::fs::read_to_string(&paths.resolv_conf).ok();
    let dns = dns::plan(text.as_deref());
    let relay = matches!(dns, DnsPlan::Relay { .. }).then(|| nets.host_v4());
    let policy = nft::Policy {
        veth: &host_if,
        app_v4: nets.app_v4(),
        app_v6: nets.app_v6(),
        relay,
        host_access,
    };
    // The table first: the relay's threads start once the wall is up.
    let nft = nft::session_table(&names::nft_table(session_id), &policy).map_err(RootError::Nft)?;
    let resolv_conf = resolv_conf(&nets, dns, &paths.resolv_conf, warn)?;
    Ok(VethUplink {
        netns: app.fd,
        userns,
        app_uid: uid,
        link: describe(&host_if, &nets),
        resolv_conf,
        _nft: nft,
        _host_end: host_end,
    })
}

/// Undo what outlives the netbroker: the forwarding sysctls, once no other
/// session is alive. Everything else goes with the process's descriptors.
pub fn teardown(session_id: &str, paths: &HostPaths) -> Result<bool, SysctlError> {
    let lock = NetLock::acquire(&paths.run_dir)?;
    let own = sysctl::session_lock_path(&paths.run_dir, session_id);
    sysctl::restore_if_idle(&lock, &paths.proc_sys, own.as_deref())
}

/// "pallium1a2b3c4d 10.0.0.1/30 fd…::1/64 ⇄ eth0 10.0.0.2/30 fd…::2/64".
pub fn describe(host_if: &str, n: &LinkNets) -> String {
    format!(
        "{host_if} {}/{V4_LEN} {}/{V6_LEN} ⇄ {} {}/{V4_LEN} {}/{V6_LEN}",
        n.host_v4(),
        n.host_v6(),
        names::APP_IFNAME,
        n.app_v4(),
        n.app_v6()
    )
}

fn index(rtnl: &mut Rtnl, iface: &str) -> Result<u32, RootError> {
    rtnl.link_index(iface).map_err(|source| RootError::Link {
        iface: iface.into(),
        source,
    })
}

/// Before the links go up: no duplicate address detection on either end
/// (our addresses skip it already, `IFA_F_NODAD`; this covers the
/// link-local ones, which would stay tentative for a second or two after
/// the application starts), and the host end never takes a router
/// advertisement from the sandbox, whatever the host's
/// `default/accept_ra` (2 on a router that learns its uplink from RAs would
/// let an application with `exec --root` route the host's traffic).
fn link_sysctls(
    proc_sys: &Path,
    host_if: &str,
    app_netns: BorrowedFd<'_>,
) -> Result<(), RootError> {
    let write = |path: PathBuf, value: &str| {
        std::fs::write(&path, value).map_err(|source| RootError::Sysctl {
            path: path.display().to_string(),
            source,
        })
    };
    let host = proc_sys.join("net/ipv6/conf").join(host_if);
    write(host.join("accept_dad"), "0")?;
    write(host.join("accept_ra"), "0")?;
    // /proc/sys/net is the calling thread's namespace's.
    let app = Path::new("/proc/sys/net/ipv6/conf")
        .join(names::APP_IFNAME)
        .join("accept_dad");
    netns::run_in(app_netns, || write(app.clone(), "0")).map_err(|source| RootError::Sysctl {
        path: app.display().to_string(),
        source,
    })?
}

fn configure_end(rtnl: &mut Rtnl, iface: &str, v4: IpAddr, v6: IpAddr) -> Result<(), RootError> {
    let idx = index(rtnl, iface)?;
    for (addr, len) in [(v4, V4_LEN), (v6, V6_LEN)] {
        rtnl.add_address(idx, addr, len)
            .map_err(|source| RootError::Address {
                iface: iface.into(),
                addr: format!("{addr}/{len}"),
                source,
            })?;
    }
    rtnl.set_up(idx).map_err(|source| RootError::Up {
        iface: iface.into(),
        source,
    })
}

fn resolv_conf(
    nets: &LinkNets,
    plan: DnsPlan,
    path: &Path,
    warn: &mut dyn FnMut(String),
) -> Result<String, RootError> {
    match plan {
        DnsPlan::Copy(s) => Ok(s),
        DnsPlan::Relay { upstream, extra } => {
            dns::start_relay(nets.host_v4(), upstream).map_err(RootError::Relay)?;
            Ok(format!("nameserver {}\n{extra}", nets.host_v4()))
        }
        DnsPlan::None => {
            warn(format!(
                "{} names no nameserver: the sandbox has no DNS",
                path.display()
            ));
            Ok(String::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_description_names_both_ends() {
        let nets = pool::choose(&[], 0xabcdef01).unwrap();
        assert_eq!(
            describe("pallium01234567", &nets),
            "pallium01234567 10.0.0.1/30 fdab:cdef:100::1/64 ⇄ eth0 10.0.0.2/30 fdab:cdef:100::2/64"
        );
    }
}
