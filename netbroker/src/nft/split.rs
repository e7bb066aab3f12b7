//! `network.routes`' wall in the application's network namespace: an owned
//! `inet` table whose `output` chain passes what leaves by `lo`, replies on
//! connections others opened to the application, IPv6 router and neighbour
//! discovery, the listed networks, and the session's resolvers on port 53
//! only — and drops everything else.
//!
//! The routes alone are not enough: a socket bound to a device
//! (`SO_BINDTODEVICE`, no privilege needed) sends to any address through
//! it, unrouted destinations being taken as on-link, and whatever reads the
//! device (the packet engine, a VPN client, pasta) carries it on. The
//! output hook sees every locally generated packet, bound or not. The table
//! is owned by the netbroker's socket, so nothing else in the namespace may
//! change or delete it, and it goes with the session.

#![forbid(unsafe_code)]

use std::io;
use std::net::IpAddr;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};
use proto::profile::Cidr;

use super::batch::*;
use super::{
    create, dns_to, icmpv6_type, load_daddr, octets, Chain, Expr, NftError, NftSession, Rule,
};

/// The table's name in the application's namespace (one per namespace).
pub const TABLE: &str = "pallium_routes";

/// Its one chain: every locally generated packet, after routing.
pub const OUTPUT: Chain = Chain {
    name: "output",
    kind: "filter",
    hook: NF_INET_LOCAL_OUT,
    priority: 0,
};

/// A nf_tables socket of the calling thread's network namespace.
pub fn socket() -> io::Result<Socket> {
    Socket::new(NETLINK_NETFILTER)
}

/// Create the wall through `sock` (a nf_tables socket of the application's
/// namespace) for the `allowed` networks and the `resolvers` (port 53).
pub fn wall(sock: Socket, allowed: &[Cidr], resolvers: &[IpAddr]) -> Result<NftSession, NftError> {
    create(sock, TABLE, &[OUTPUT], &rules(allowed, resolvers))
}

/// The chain's rules, in order; the last drops.
pub fn rules(allowed: &[Cidr], resolvers: &[IpAddr]) -> Vec<Rule> {
    use Expr::*;
    let rule = |what, exprs| Rule {
        chain: OUTPUT,
        what,
        exprs,
    };
    let mut out = vec![
        rule(
            "the loopback rule",
            vec![
                Meta(NFT_META_OIFNAME),
                Cmp(NFT_CMP_EQ, ifname_bytes("lo").to_vec()),
                Verdict(NF_ACCEPT),
            ],
        ),
        // A reply belongs to a connection someone else opened to the
        // application (a forwarded port, an onion service): it goes back
        // to that peer only.
        rule(
            "the rule passing replies",
            vec![
                CtDirection,
                Cmp(NFT_CMP_EQ, vec![IP_CT_DIR_REPLY]),
                Verdict(NF_ACCEPT),
            ],
        ),
    ];
    for (what, kind) in [
        ("the router solicitation rule", ND_ROUTER_SOLICIT),
        ("the neighbour solicitation rule", ND_NEIGHBOR_SOLICIT),
        ("the neighbour advertisement rule", ND_NEIGHBOR_ADVERT),
    ] {
        out.push(rule(
            what,
            [icmpv6_type(kind), vec![Verdict(NF_ACCEPT)]].concat(),
        ));
    }
    for c in allowed {
        let (first, last) = bounds(c);
        out.push(rule(
            "a listed network's rule",
            [
                load_daddr(&c.addr),
                vec![
                    Cmp(NFT_CMP_GTE, first),
                    Cmp(NFT_CMP_LTE, last),
                    Verdict(NF_ACCEPT),
                ],
            ]
            .concat(),
        ));
    }
    for r in resolvers {
        for (what, exprs) in dns_to(r) {
            out.push(rule(what, [exprs, vec![Verdict(NF_ACCEPT)]].concat()));
        }
    }
    out.push(rule("the rule dropping the rest", vec![Verdict(NF_DROP)]));
    out
}

/// The first and last address of `c`, in network byte order (nf_tables
/// compares register bytes with memcmp, so big-endian ranges order right).
fn bounds(c: &Cidr) -> (Vec<u8>, Vec<u8>) {
    let first = octets(&c.network());
    let mut last = first.clone();
    let bits = last.len() * 8;
    for bit in usize::from(c.prefix).min(bits)..bits {
        last[bit / 8] |= 0x80 >> (bit % 8);
    }
    (first, last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::assert_read_back;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn bounds_cover_the_network() {
        assert_eq!(
            bounds(&cidr("10.1.0.0/16")),
            (vec![10, 1, 0, 0], vec![10, 1, 255, 255])
        );
        assert_eq!(
            bounds(&cidr("203.0.113.10/32")),
            (vec![203, 0, 113, 10], vec![203, 0, 113, 10])
        );
        assert_eq!(bounds(&cidr("0.0.0.0/0")).1, vec![255; 4]);
        let (f, l) = bounds(&cidr("fd00:1::/33"));
        assert_eq!(&f[..6], &[0xfd, 0, 0, 1, 0, 0]);
        assert_eq!(&l[..6], &[0xfd, 0, 0, 1, 0x7f, 0xff]);
        assert!(l[6..].iter().all(|b| *b == 0xff));
    }

    #[test]
    fn resolvers_pass_on_port_53_only_and_the_rest_is_dropped() {
        let r = rules(
            &[cidr("203.0.113.0/24")],
            &["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
        );
        // lo, replies, 3 ND, 1 network, 2×2 resolvers, drop.
        assert_eq!(r.len(), 11);
        let dns: Vec<&Rule> = r
            .iter()
            .filter(|r| r.what.starts_with("a DNS rule"))
            .collect();
        assert_eq!(dns.len(), 4);
        for d in dns {
            assert!(d.exprs.contains(&Expr::Cmp(NFT_CMP_EQ, vec![0, 53])));
        }
        assert_eq!(r.last().unwrap().exprs, [Expr::Verdict(NF_DROP)]);
        assert!(r[..10]
            .iter()
            .all(|r| r.exprs.last() == Some(&Expr::Verdict(NF_ACCEPT))));
    }

    /// The kernel takes the batch and `nft` reads back the rules we meant.
    #[test]
    fn the_kernel_reads_back_the_wall() {
        assert_read_back(
            TABLE,
            || {
                let sock = socket().map_err(|e| e.to_string())?;
                wall(
                    sock,
                    &[cidr("203.0.113.0/24"), cidr("2001:db8::/32")],
                    &["10.0.0.1".parse().unwrap()],
                )
                .map_err(|e| format!("{e:?}"))
            },
            &[
                "type filter hook output priority filter; policy accept;",
                "oifname \"lo\" accept",
                "ct direction reply accept",
                "icmpv6 type nd-router-solicit accept",
                "icmpv6 type nd-neighbor-solicit accept",
                "icmpv6 type nd-neighbor-advert accept",
                "ip daddr 203.0.113.0-203.0.113.255 accept",
                "ip6 daddr 2001:db8::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff accept",
                "ip daddr 10.0.0.1 udp dport 53 accept",
                "ip daddr 10.0.0.1 tcp dport 53 accept",
                "drop",
            ],
        );
    }
}
