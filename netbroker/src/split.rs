//! `network.routes` (split tunnelling): once the chain is built, the
//! application's namespace keeps routes to the listed networks only. Each
//! default route of the main table is replaced by one route per listed
//! network of its family, going where the default went (the chain's exit
//! device or the uplink's gateway); a family with no listed network is left
//! with no way out at all. The session's resolvers stay reachable. An empty
//! list is no network: every route of the main table goes, the link's own
//! subnet too (the resolvers are on it rootless).
//!
//! Routes only steer: a socket bound to a device reaches any address
//! through it. So the namespace also gets a wall ([`crate::nft::split`]):
//! nothing leaves but to the listed networks, and to the resolvers on port 53.

#![forbid(unsafe_code)]

use std::io;
use std::net::IpAddr;
use std::os::fd::BorrowedFd;

use proto::profile::Cidr;

use crate::netns;
use crate::nft::{self, NftError, NftSession};
use crate::rtnl::{Prefix, Rtnl};

/// What failed while narrowing the application's routes.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("network.routes entry {0:?} is not a network")]
    Malformed(String),
    #[error("enter the application's network namespace")]
    Enter(#[source] io::Error),
    #[error("list the application namespace's routes")]
    Dump(#[source] io::Error),
    #[error("replace the default route by a route to {dst}")]
    Add {
        dst: String,
        #[source]
        source: io::Error,
    },
    #[error("delete the application namespace's default route")]
    Delete(#[source] io::Error),
    #[error("open a nf_tables socket in the application's namespace")]
    Socket(#[source] io::Error),
    #[error("wall off what the routes leave out")]
    Wall(#[source] NftError),
}

/// Parse the supervisor's list (it is a peer's input: checked again here).
pub fn parse(routes: &[String]) -> Result<Vec<Cidr>, SplitError> {
    routes
        .iter()
        .map(|r| r.parse().map_err(|_| SplitError::Malformed(r.clone())))
        .collect()
}

/// Leave `netns` routes to `routes` (and the `resolvers`) only, behind the
/// wall, which lives as long as the returned table.
pub fn restrict(
    netns: BorrowedFd<'_>,
    routes: &[Cidr],
    resolvers: &[IpAddr],
) -> Result<NftSession, SplitError> {
    netns::run_in(netns, || {
        let mut rtnl = Rtnl::open().map_err(SplitError::Enter)?;
        let nft = nft::split::socket().map_err(SplitError::Socket)?;
        restrict_with(&mut rtnl, nft, routes, resolvers)
    })
    .map_err(SplitError::Enter)?
}

/// [`restrict`] through a route and a nf_tables socket already open in the
/// namespace (ones a rootless uplink's holder opened: the netbroker cannot
/// enter that namespace, which a user namespace it is not in owns).
pub fn restrict_with(
    rtnl: &mut Rtnl,
    nft: netlink_sys::Socket,
    routes: &[Cidr],
    resolvers: &[IpAddr],
) -> Result<NftSession, SplitError> {
    if routes.is_empty() {
        // No network: not even the link's own subnet (rootless, the
        // engine's DNS server is on it).
        for r in rtnl.main_routes(false).map_err(SplitError::Dump)? {
            rtnl.delete_route(&r).map_err(SplitError::Delete)?;
        }
        return nft::split::wall(nft, &[], &[]).map_err(SplitError::Wall);
    }
    let defaults = rtnl.default_routes().map_err(SplitError::Dump)?;
    let mut specific: Vec<Prefix> = Vec::new();
    for v6 in [false, true] {
        specific.extend(
            rtnl.routes(v6)
                .map_err(SplitError::Dump)?
                .into_iter()
                .filter(|p| p.len > 0),
        );
    }
    for d in &defaults {
        let v6 = d.header.address_family == netlink_packet_route::AddressFamily::Inet6;
        let mut targets: Vec<(IpAddr, u8)> = routes
            .iter()
            .filter(|c| c.addr.is_ipv6() == v6)
            .map(|c| (c.addr, c.prefix))
            .collect();
        // A resolver no listed or on-link route reaches gets a host route.
        for r in resolvers.iter().filter(|r| r.is_ipv6() == v6) {
            let host = Cidr {
                addr: *r,
                prefix: if v6 { 128 } else { 32 },
            };
            let listed = routes.iter().any(|c| c.overlaps(&host));
            let on_link = specific.iter().any(|p| {
                Cidr {
                    addr: cut(p.addr, p.len),
                    prefix: p.len,
                }
                .overlaps(&host)
            });
            if !listed && !on_link && !targets.contains(&(host.addr, host.prefix)) {
                targets.push((host.addr, host.prefix));
            }
        }
        for (dst, len) in targets {
            rtnl.add_route_like(d, dst, len)
                .map_err(|source| SplitError::Add {
                    dst: format!("{dst}/{len}"),
                    source,
                })?;
        }
        rtnl.delete_route(d).map_err(SplitError::Delete)?;
    }
    nft::split::wall(nft, routes, resolvers).map_err(SplitError::Wall)
}

fn cut(addr: IpAddr, len: u8) -> IpAddr {
    Cidr { addr, prefix: len }.network()
}
