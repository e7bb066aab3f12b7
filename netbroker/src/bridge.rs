//! `network.bridge` (root): a link in the host namespace whose traffic goes
//! through the chain, for virtual machines and containers (the original's policy-routed bridge).
//!
//! ```text
//!  host (H)                 bridge namespace (B)              application namespace (A)
//!  <name> .2/28 ─── veth ─── vm0 .1/28 (dnsmasq)
//!  [in a Linux bridge                up0 .1/30 ─── veth ─── bridge0 .2/30
//!   with eth_bridge devices]          default via A           masquerade out of the chain
//! ```
//!
//! The bridge's end is never in A: an `exec --root` command holds
//! capabilities over A and could route through a device there straight to
//! the host. B is the netbroker's (owned by the initial user namespace): it
//! forwards what comes from the bridge to A, lets in from A only replies
//! (conntrack), and A's only way out stays the chain. DHCP (IPv4 leases from
//! `.3`, past the host's `.2`, which the original handed out too) and IPv6
//! router advertisements (SLAAC) come from dnsmasq in B, which runs as
//! `nobody` (started as that user, capabilities ambient); the DNS server
//! handed out is the session's.
//! Everything is tied to B: when the netbroker goes (even SIGKILL), dnsmasq
//! gets its parent-death signal, B is destroyed and both veth pairs with it.
//! The Linux bridge of `eth_bridge` is deleted on drop (its devices are
//! released with it).

#![forbid(unsafe_code)]

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::Signal;
use proto::profile::Bridge;

use crate::hostroute::{self, Gateway, HostRouteError, HostRoutes};
use crate::netns::{self, NetnsError};
use crate::pool::{self, LinkNets, V4_LEN, V6_LEN};
use crate::rtnl::{Prefix, Rtnl};
use crate::{names, sys};

/// The bridge's IPv4 network: room for 12 DHCP leases.
pub const BRIDGE_V4_LEN: u8 = 28;
/// B's end of the bridge link.
const B_VM: &str = "vm0";
/// B's end of the link to A.
const B_UP: &str = "up0";
/// A's end of the link to B.
pub const A_IFNAME: &str = "bridge0";

/// What failed while building the bridge.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("network.bridge.name: an interface named {0:?} already exists; choose another name or remove the key for a generated one")]
    Exists(String),
    #[error("network.bridge.eth_bridge.devices: no interface named {0:?} on the host")]
    NoDevice(String),
    #[error("open a route netlink socket in the host namespace")]
    HostNetlink(#[source] io::Error),
    #[error("list the addresses and routes in use")]
    Dump(#[source] io::Error),
    #[error("no free private IPv4 /28 or IPv6 /64 is left for the bridge")]
    PoolExhausted,
    #[error("create the bridge namespace")]
    Netns(#[source] NetnsError),
    #[error("{step} ({iface})")]
    Link {
        step: &'static str,
        iface: String,
        #[source]
        source: io::Error,
    },
    #[error("write the Linux bridge's marker {path}")]
    Marker {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("enable forwarding in the {0} namespace")]
    Forwarding(&'static str, #[source] io::Error),
    #[error("load the nftables rules of the {0} namespace")]
    Nft(&'static str, #[source] io::Error),
    #[error("start dnsmasq (Debian package: dnsmasq)")]
    Dnsmasq(#[source] io::Error),
    #[error(transparent)]
    Routes(HostRouteError),
}

/// A built bridge; dropping it stops dnsmasq, deletes the Linux bridge and
/// the host's veth end, and closes B (which takes the rest with it).
#[derive(Debug)]
pub struct BridgeLink {
    /// "<name> 10.0.0.18/28 … ⇄ bridge namespace ⇄ application (…)".
    pub link: String,
    /// `routes`: the host's traffic policy-routed into the bridge.
    routes: Option<HostRoutes>,
    dnsmasq: Option<Child>,
    host: HostLinks,
    _netns: OwnedFd,
}

impl BridgeLink {
    pub fn dnsmasq_pid(&self) -> Option<u32> {
        self.dnsmasq.as_ref().map(Child::id)
    }
}

impl Drop for BridgeLink {
    fn drop(&mut self) {
        // The host's traffic back to the main table first.
        drop(self.routes.take());
        if let Some(mut c) = self.dnsmasq.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.host.delete();
    }
}

/// Links created in the host namespace, deleted on drop (also when a later
/// step of [`build`] fails).
#[derive(Debug)]
struct HostLinks {
    rtnl: Rtnl,
    /// The Linux bridge (`eth_bridge`), then the veth end.
    made: Vec<u32>,
    /// The Linux bridge's marker ([`proto::runtime::bridge_marker`]),
    /// removed once the links are gone.
    marker: Option<std::path::PathBuf>,
}

impl HostLinks {
    fn delete(&mut self) {
        for idx in std::mem::take(&mut self.made).into_iter().rev() {
            if let Err(e) = self.rtnl.delete_link(idx) {
                if e.raw_os_error() != Some(libc::ENODEV) {
                    tracing::warn!("delete bridge link {idx}: {e}");
                }
            }
        }
        if let Some(m) = self.marker.take() {
            let _ = std::fs::remove_file(m);
        }
    }
}

impl Drop for HostLinks {
    fn drop(&mut self) {
        self.delete();
    }
}

/// The host-side name: the profile's, or `pmbr` + the session's 8 hex digits.
pub fn host_name(session_id: &str, b: &Bridge) -> String {
    match &b.name {
        Some(n) => n.to_string(),
        None => format!("pmbr{:08x}", names::session_hash(session_id)),
    }
}

/// The Linux bridge's name for `eth_bridge`.
fn eth_bridge_name(session_id: &str, b: &Bridge) -> Option<String> {
    let e = b.eth_bridge.as_ref()?;
    Some(match &e.name {
        Some(n) => n.to_string(),
        None => format!("pmeb{:08x}", names::session_hash(session_id)),
    })
}

/// Build the bridge for the session whose application namespace is `app`
/// and whose `/etc/resolv.conf` is `resolv_conf`; `skip_uids` are the
/// chain's processes in the host namespace, whose traffic `routes` never
/// takes. The calling thread is in the host namespace.
pub fn build(
    session_id: &str,
    b: &Bridge,
    app: BorrowedFd<'_>,
    resolv_conf: &str,
    quiet: bool,
    skip_uids: &[u32],
) -> Result<BridgeLink, BridgeError> {
    let name = host_name(session_id, b);
    let ebr = eth_bridge_name(session_id, b);
    let mut host = Rtnl::open().map_err(BridgeError::HostNetlink)?;
    for n in std::iter::once(&name).chain(ebr.iter()) {
        if host.link_index(n).is_ok() {
            return Err(BridgeError::Exists(n.clone()));
        }
    }
    let mut devices = Vec::new();
    for d in b.eth_bridge.iter().flat_map(|e| &e.devices) {
        let idx = host
            .link_index(&d.to_string())
            .map_err(|_| BridgeError::NoDevice(d.to_string()))?;
        devices.push(idx);
    }

    // Networks free in both the host's and the application's namespace.
    let mut seen = dump(&mut host).map_err(BridgeError::Dump)?;
    seen.extend(
        netns::run_in(app, || Rtnl::open().and_then(|mut r| dump(&mut r)))
            .and_then(|r| r)
            .map_err(BridgeError::Dump)?,
    );
    let seed = names::session_hash(session_id);
    let vm = pool::choose_sized(&seen, seed ^ 0x6272, BRIDGE_V4_LEN)
        .ok_or(BridgeError::PoolExhausted)?;
    seen.push(Prefix {
        addr: vm.v4.into(),
        len: BRIDGE_V4_LEN,
    });
    seen.push(Prefix {
        addr: vm.v6.into(),
        len: V6_LEN,
    });
    let up = pool::choose(&seen, seed ^ 0x7570).ok_or(BridgeError::PoolExhausted)?;

    let mut bns = netns::create().map_err(BridgeError::Netns)?;
    host.add_veth(&name, B_VM, bns.fd.as_fd())
        .map_err(|source| link_err("create the bridge's veth pair", &name, source))?;
    let mut hl = HostLinks {
        made: vec![index(&mut host, &name)?],
        rtnl: host,
        marker: None,
    };
    bns.rtnl.add_veth(B_UP, A_IFNAME, app).map_err(|source| {
        link_err(
            "create the veth pair to the application namespace",
            B_UP,
            source,
        )
    })?;

    // The host's end: on the veth, or on the Linux bridge that enslaves it.
    let host_if = match &ebr {
        Some(br) => {
            // Marked first, so that no kill leaves an unmarked bridge.
            let marker = proto::runtime::bridge_marker(
                std::path::Path::new(proto::runtime::ROOT_RUN_DIR),
                br,
            );
            std::fs::write(&marker, &name).map_err(|source| BridgeError::Marker {
                path: marker.clone(),
                source,
            })?;
            hl.marker = Some(marker);
            hl.rtnl
                .add_bridge(br)
                .map_err(|source| link_err("create the Linux bridge", br, source))?;
            let bidx = index(&mut hl.rtnl, br)?;
            hl.made.insert(0, bidx);
            let veth = hl.made[1];
            for idx in devices.iter().copied().chain([veth]) {
                hl.rtnl
                    .set_master(idx, bidx)
                    .map_err(|source| link_err("enslave to the Linux bridge", br, source))?;
                hl.rtnl
                    .set_up(idx)
                    .map_err(|source| link_err("bring up", br, source))?;
            }
            br.clone()
        }
        None => name.clone(),
    };
    address(
        &mut hl.rtnl,
        &host_if,
        &[
            (host_v4(&vm).into(), BRIDGE_V4_LEN),
            (host_v6(&vm).into(), V6_LEN),
        ],
    )?;
    address(
        &mut bns.rtnl,
        B_VM,
        &[
            (gw_v4(&vm).into(), BRIDGE_V4_LEN),
            (gw_v6(&vm).into(), V6_LEN),
        ],
    )?;
    address(
        &mut bns.rtnl,
        B_UP,
        &[(up.host_v4().into(), V4_LEN), (up.host_v6().into(), V6_LEN)],
    )?;
    let b_up = index(&mut bns.rtnl, B_UP)?;
    for gw in [IpAddr::from(up.app_v4()), IpAddr::from(up.app_v6())] {
        bns.rtnl.add_default_route(gw, b_up).map_err(|source| {
            link_err("route the bridge namespace into the chain", B_UP, source)
        })?;
    }
    let routes = [
        (
            (IpAddr::from(vm.v4), BRIDGE_V4_LEN),
            IpAddr::from(up.host_v4()),
        ),
        ((IpAddr::from(vm.v6), V6_LEN), IpAddr::from(up.host_v6())),
    ];
    netns::run_in(app, || -> io::Result<()> {
        let mut r = Rtnl::open()?;
        let idx = r.link_index(A_IFNAME)?;
        address_io(
            &mut r,
            idx,
            &[(up.app_v4().into(), V4_LEN), (up.app_v6().into(), V6_LEN)],
        )?;
        for (dst, gw) in routes {
            r.add_route(Some(dst), gw, idx)?;
        }
        Ok(())
    })
    .and_then(|r| r)
    .map_err(|source| link_err("address and route the bridge link", A_IFNAME, source))?;

    for (ns, what) in [(bns.fd.as_fd(), "bridge"), (app, "application")] {
        netns::run_in(ns, forwarding)
            .and_then(|r| r)
            .map_err(|e| BridgeError::Forwarding(what, e))?;
    }
    let b_rules = b_rules();
    netns::run_in(bns.fd.as_fd(), || nft(&b_rules))
        .and_then(|r| r)
        .map_err(|e| BridgeError::Nft("bridge", e))?;
    let a_rules = a_rules(&vm);
    netns::run_in(app, || nft(&a_rules))
        .and_then(|r| r)
        .map_err(|e| BridgeError::Nft("application", e))?;

    let dns: Vec<IpAddr> = crate::hops::nameservers(resolv_conf)
        .iter()
        .map(|a| a.ip())
        .collect();
    let dnsmasq = if b.dhcp {
        Some(dnsmasq(bns.fd.as_fd(), &vm, &dns, quiet).map_err(BridgeError::Dnsmasq)?)
    } else {
        None
    };
    let routes = if b.routes.is_empty() {
        None
    } else {
        let gw = Gateway {
            dev: &host_if,
            via_v4: gw_v4(&vm),
            via_v6: gw_v6(&vm),
            src_v4: host_v4(&vm),
            src_v6: host_v6(&vm),
        };
        Some(
            hostroute::install(&b.routes, b.reserved_bypass, &gw, skip_uids)
                .map_err(BridgeError::Routes)?,
        )
    };
    let link = format!(
        "{host_if} {}/{BRIDGE_V4_LEN} {}/{V6_LEN} ⇄ bridge namespace {}/{BRIDGE_V4_LEN}{} ⇄ application {A_IFNAME} {}/{V4_LEN}",
        host_v4(&vm),
        host_v6(&vm),
        gw_v4(&vm),
        if b.dhcp {
            format!(" (DHCP {}–{}, SLAAC)", lease_first(&vm), lease_last(&vm))
        } else {
            String::new()
        },
        up.app_v4(),
    );
    let link = match &routes {
        Some(r) => format!(
            "{link}; host routes {} via table {}",
            list(&b.routes),
            r.table()
        ),
        None => link,
    };
    Ok(BridgeLink {
        link,
        routes,
        dnsmasq,
        host: hl,
        _netns: bns.fd,
    })
}

/// B's side of the bridge (`.1`): the VMs' gateway and DHCP server.
pub fn gw_v4(n: &LinkNets) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(n.v4) + 1)
}
/// The host's side (`.2`).
pub fn host_v4(n: &LinkNets) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(n.v4) + 2)
}
/// The first DHCP lease: past both fixed addresses.
pub fn lease_first(n: &LinkNets) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(n.v4) + 3)
}
/// The last DHCP lease: below the broadcast address.
pub fn lease_last(n: &LinkNets) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(n.v4) + (1 << (32 - BRIDGE_V4_LEN)) - 2)
}
fn gw_v6(n: &LinkNets) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(n.v6) + 1)
}
fn host_v6(n: &LinkNets) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(n.v6) + 2)
}

/// B: forward from the bridge into the chain; from A only replies, and
/// neighbour discovery, nothing new (the application must not reach the
/// host or the VMs through B).
fn b_rules() -> String {
    format!(
        "table inet pallium_bridge {{
  chain input {{ type filter hook input priority 0; policy accept;
    iifname \"{B_UP}\" ct state established,related accept
    iifname \"{B_UP}\" icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert }} accept
    iifname \"{B_UP}\" drop
  }}
  chain forward {{ type filter hook forward priority 0; policy drop;
    iifname \"{B_VM}\" oifname \"{B_UP}\" accept
    iifname \"{B_UP}\" oifname \"{B_VM}\" ct state established,related accept
  }}
}}
"
    )
}

/// A: what comes from the bridge leaves by the chain as the application's
/// own traffic.
fn a_rules(vm: &LinkNets) -> String {
    format!(
        "table inet pallium_bridge {{
  chain postrouting {{ type nat hook postrouting priority 100;
    ip saddr {}/{BRIDGE_V4_LEN} oifname != \"{A_IFNAME}\" masquerade
    ip6 saddr {}/{V6_LEN} oifname != \"{A_IFNAME}\" masquerade
  }}
}}
",
        vm.v4, vm.v6
    )
}

/// `nft -f -` in the calling thread's namespace (B and A die with their
/// tables: no owner-bound table is needed there).
fn nft(rules: &str) -> io::Result<()> {
    let mut c = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    c.stdin.take().expect("piped").write_all(rules.as_bytes())?;
    let o = c.wait_with_output()?;
    if o.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "nft: {}",
        String::from_utf8_lossy(&o.stderr).trim()
    )))
}

fn forwarding() -> io::Result<()> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
    std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1")
}

/// dnsmasq in B: DHCPv4 leases `.3`–`.14`, router advertisements for SLAAC,
/// no DNS service of its own (`port=0`), no lease file, started as `nobody`
/// with only the capabilities DHCP and RA need; it dies with the netbroker
/// (also SIGKILL: it never changes user, which would clear its
/// parent-death signal).
fn dnsmasq(b: BorrowedFd<'_>, vm: &LinkNets, dns: &[IpAddr], quiet: bool) -> io::Result<Child> {
    let mut args = vec![
        "--keep-in-foreground".to_string(),
        "--conf-file=/dev/null".into(),
        "--pid-file=".into(),
        "--port=0".into(),
        "--leasefile-ro".into(),
        "--user=nobody".into(),
        "--group=nogroup".into(),
        format!("--interface={B_VM}"),
        "--bind-interfaces".into(),
        "--log-facility=-".into(),
        format!(
            "--dhcp-range={},{},255.255.255.240,12h",
            lease_first(vm),
            lease_last(vm)
        ),
        format!("--dhcp-option=option:router,{}", gw_v4(vm)),
        "--enable-ra".into(),
        format!("--dhcp-range={},ra-only,{V6_LEN}", vm.v6),
    ];
    let v4: Vec<String> = dns
        .iter()
        .filter(|a| a.is_ipv4())
        .map(ToString::to_string)
        .collect();
    if !v4.is_empty() {
        args.push(format!("--dhcp-option=option:dns-server,{}", v4.join(",")));
    }
    let v6: Vec<String> = dns
        .iter()
        .filter(|a| a.is_ipv6())
        .map(|a| format!("[{a}]"))
        .collect();
    if !v6.is_empty() {
        args.push(format!("--dhcp-option=option6:dns-server,{}", v6.join(",")));
    }
    let mut cmd = Command::new("dnsmasq");
    cmd.args(&args).stdin(Stdio::null());
    // Its log (each lease, each advert) only with -vv: a user's terminal
    // sees pallium's lines only.
    if quiet || !tracing::enabled!(tracing::Level::DEBUG) {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    } else {
        cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
    }
    let uid = nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .map_or(65534, |u| u.uid.as_raw());
    let gid = nix::unistd::Group::from_name("nogroup")
        .ok()
        .flatten()
        .map_or(65534, |g| g.gid.as_raw());
    // DHCP's port 67, its raw sockets (and ARP), ICMPv6 router adverts.
    // CAP_NET_BIND_SERVICE, CAP_NET_ADMIN, CAP_NET_RAW.
    let caps = [10, 12, 13];
    sys::place_unprivileged(&mut cmd, b.as_raw_fd(), uid, gid, &caps, Signal::SIGKILL);
    let mut child = cmd.spawn()?;
    // dnsmasq checks its options before it serves: a bad one ends it at once.
    std::thread::sleep(std::time::Duration::from_millis(50));
    if let Some(status) = child.try_wait()? {
        return Err(io::Error::other(format!("dnsmasq exited: {status}")));
    }
    Ok(child)
}

fn list(routes: &[proto::profile::Cidr]) -> String {
    routes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn dump(r: &mut Rtnl) -> io::Result<Vec<Prefix>> {
    let mut seen = r.addresses()?;
    seen.extend(r.routes(false)?);
    seen.extend(r.routes(true)?);
    Ok(seen)
}

fn index(r: &mut Rtnl, iface: &str) -> Result<u32, BridgeError> {
    r.link_index(iface)
        .map_err(|source| link_err("find the interface", iface, source))
}

fn address(r: &mut Rtnl, iface: &str, addrs: &[(IpAddr, u8)]) -> Result<(), BridgeError> {
    let idx = index(r, iface)?;
    address_io(r, idx, addrs).map_err(|source| link_err("address and bring up", iface, source))
}

fn address_io(r: &mut Rtnl, idx: u32, addrs: &[(IpAddr, u8)]) -> io::Result<()> {
    for (a, len) in addrs {
        r.add_address(idx, *a, *len)?;
    }
    r.set_up(idx)
}

fn link_err(step: &'static str, iface: &str, source: io::Error) -> BridgeError {
    BridgeError::Link {
        step,
        iface: iface.into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_never_include_the_host_or_the_gateway() {
        let n = pool::choose_sized(&[], 1, BRIDGE_V4_LEN).unwrap();
        assert_eq!(n.v4, Ipv4Addr::new(10, 0, 0, 0));
        assert_eq!(gw_v4(&n), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(host_v4(&n), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(lease_first(&n), Ipv4Addr::new(10, 0, 0, 3));
        // .15 is the broadcast address of the /28.
        assert_eq!(lease_last(&n), Ipv4Addr::new(10, 0, 0, 14));
    }

    #[test]
    fn the_application_gets_replies_only_from_the_bridge_namespace() {
        let r = b_rules();
        assert!(r.contains("policy drop"));
        assert!(r.contains("iifname \"up0\" oifname \"vm0\" ct state established,related accept"));
        assert!(r.contains("iifname \"up0\" drop"));
    }
}
