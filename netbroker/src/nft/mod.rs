//! The session's host-side nftables table, written as raw nf_tables netlink:
//! one batch creating an `inet` table owned by our socket
//! (`NFT_TABLE_F_OWNER`) with three chains —
//!
//! - `postrouting` (nat): `iifname <veth> masquerade`, the way to the internet;
//! - `prerouting` (filter, before DNAT): from the veth, drop everything whose
//!   destination is the host itself (`fib daddr type` local, broadcast,
//!   anycast or multicast: every host address, also ones added later, and
//!   ports other software DNATs from them), except the session's DNS relay,
//!   IPv6 neighbour discovery, and replies (ICMP errors included) on
//!   connections the host opened to the application's own addresses. Left
//!   out when the profile sets `network.host_access`;
//! - `forward` (filter): from the veth, drop what would leave through another
//!   session's veth (`oifname "pallium*"`), and (unless `host_access`) IPv4
//!   link-local destinations (`169.254.0.0/16`: a cloud's metadata service).
//!
//! The rules are data ([`rules`]), encoded by one small expression encoder.
//! The kernel deletes an owned table when its socket closes, so the table
//! lives exactly as long as [`NftSession`] (and the netbroker process).

#![forbid(unsafe_code)]

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

pub use batch::batch;
use batch::*;

mod batch;
pub mod split;

/// Why the session's table could not be created.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("open nf_tables netlink socket")]
    Socket(#[source] io::Error),
    #[error("send nf_tables batch creating table {table}")]
    Send {
        table: String,
        #[source]
        source: io::Error,
    },
    #[error("kernel refused {what} of table {table}")]
    Refused {
        what: String,
        table: String,
        #[source]
        source: io::Error,
    },
    #[error("no answer from nf_tables for table {table}")]
    Receive {
        table: String,
        #[source]
        source: io::Error,
    },
}

/// A created table; dropping it (closing the socket) deletes the table.
#[derive(Debug)]
pub struct NftSession {
    _sock: Socket,
    pub table: String,
}

/// What the session's table lets the sandbox do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy<'a> {
    /// The host end of the session's veth pair.
    pub veth: &'a str,
    /// The application end's addresses.
    pub app_v4: Ipv4Addr,
    pub app_v6: Ipv6Addr,
    /// Where the session's DNS relay listens (port 53, UDP and TCP), if it has one.
    pub relay: Option<Ipv4Addr>,
    /// `network.host_access`: no `prerouting` chain, the host is reachable.
    pub host_access: bool,
}

/// Create `table` for `policy` in the calling thread's network namespace.
pub fn session_table(table: &str, policy: &Policy<'_>) -> Result<NftSession, NftError> {
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(NftError::Socket)?;
    sock.bind_auto().map_err(NftError::Socket)?;
    create(sock, table, &chains(policy), &rules(policy))
}

/// Create the owned `table` with `chains` and `rules` through `sock` (a
/// nf_tables socket of the namespace the table is for; unbound ones are
/// bound at the first send). The table lives as long as the returned value.
pub fn create(
    sock: Socket,
    table: &str,
    chains: &[Chain],
    rules: &[Rule],
) -> Result<NftSession, NftError> {
    set_recv_timeout(&sock, Duration::from_secs(5)).map_err(NftError::Socket)?;
    let (batch, what) = batch::table_batch(table, chains, rules, 1);
    sock.send_to(&batch, &SocketAddr::new(0, 0), 0)
        .map_err(|source| NftError::Send {
            table: table.into(),
            source,
        })?;
    // Messages 2 ..= what.len() + 1 asked for ACKs (table, chains, rules).
    let mut acked = vec![false; what.len()];
    while !acked.iter().all(|a| *a) {
        let (data, _) = sock.recv_from_full().map_err(|source| NftError::Receive {
            table: table.into(),
            source,
        })?;
        for (seq, code) in acks(&data) {
            let Some(i) = seq
                .checked_sub(2)
                .map(|i| i as usize)
                .filter(|i| *i < what.len())
            else {
                continue;
            };
            if code != 0 {
                return Err(NftError::Refused {
                    what: what[i].clone(),
                    table: table.into(),
                    source: io::Error::from_raw_os_error(-code),
                });
            }
            acked[i] = true;
        }
    }
    Ok(NftSession {
        _sock: sock,
        table: table.into(),
    })
}

fn set_recv_timeout(sock: &Socket, d: Duration) -> io::Result<()> {
    let tv = nix::sys::time::TimeVal::new(d.as_secs() as _, 0);
    nix::sys::socket::setsockopt(sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
        .map_err(io::Error::from)
}

/// A base chain of the session's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    pub name: &'static str,
    /// "nat" or "filter".
    pub kind: &'static str,
    pub hook: u32,
    pub priority: i32,
}

/// The nat chain that masquerades the sandbox's traffic.
pub const POSTROUTING: Chain = Chain {
    name: "postrouting",
    kind: "nat",
    hook: NF_INET_POST_ROUTING,
    priority: 100,
};
/// Before conntrack's DNAT (-100), so a host port that other software
/// forwards elsewhere (docker's published ports) is judged by the address the
/// sandbox asked for.
pub const PREROUTING: Chain = Chain {
    name: "prerouting",
    kind: "filter",
    hook: NF_INET_PRE_ROUTING,
    priority: -150,
};
pub const FORWARD: Chain = Chain {
    name: "forward",
    kind: "filter",
    hook: NF_INET_FORWARD,
    priority: 0,
};

/// One step of a rule; every load goes to register 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `meta KEY` into register 1.
    Meta(u32),
    /// `payload load LEN @ BASE + OFFSET` into register 1.
    Payload {
        base: u32,
        offset: u32,
        len: u32,
    },
    /// `fib daddr type` (an `RTN_*` value, host byte order) into register 1.
    FibDaddrType,
    /// `ct direction` (one byte) into register 1.
    CtDirection,
    /// `ct original KEY` (`NFT_CT_DST_IP` or `NFT_CT_DST_IP6`) into register 1.
    CtOriginal(u32),
    /// Register 1's 4 bytes to network byte order, so `Cmp` orders them right.
    Hton4,
    /// Compare register 1 with `data` (its length is the compared length).
    Cmp(u32, Vec<u8>),
    Masquerade,
    /// `NF_ACCEPT` or `NF_DROP`.
    Verdict(u32),
}

/// A rule: its chain, its expressions, and a few words for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub chain: Chain,
    pub what: &'static str,
    pub exprs: Vec<Expr>,
}

/// The chains `policy` needs, in creation order.
pub fn chains(policy: &Policy<'_>) -> Vec<Chain> {
    if policy.host_access {
        vec![POSTROUTING, FORWARD]
    } else {
        vec![POSTROUTING, PREROUTING, FORWARD]
    }
}

/// Every rule of the table, in order.
pub fn rules(policy: &Policy<'_>) -> Vec<Rule> {
    use Expr::*;
    let veth = ifname_bytes(policy.veth).to_vec();
    let from_veth = || vec![Meta(NFT_META_IIFNAME), Cmp(NFT_CMP_EQ, veth.clone())];
    let rule = |chain, what, exprs| Rule { chain, what, exprs };
    let mut out = vec![rule(
        POSTROUTING,
        "the masquerade rule",
        [from_veth(), vec![Masquerade]].concat(),
    )];
    if !policy.host_access {
        out.push(rule(
            PREROUTING,
            "the rule passing other interfaces",
            vec![
                Meta(NFT_META_IIFNAME),
                Cmp(NFT_CMP_NEQ, veth.clone()),
                Verdict(NF_ACCEPT),
            ],
        ));
        if let Some(relay) = policy.relay {
            for (what, exprs) in dns_to(&relay.into()) {
                out.push(rule(
                    PREROUTING,
                    what,
                    [exprs, vec![Verdict(NF_ACCEPT)]].concat(),
                ));
            }
        }
        // Replies to connections the host opened to the application: their
        // original destination was the application's own address, so a
        // packet forged to look like a reply on one of the host's other
        // connections (the application may hold CAP_NET_RAW in its
        // namespace) does not match.
        for (what, key, addr) in [
            (
                "the rule passing replies to the host (IPv4)",
                NFT_CT_DST_IP,
                policy.app_v4.octets().to_vec(),
            ),
            (
                "the rule passing replies to the host (IPv6)",
                NFT_CT_DST_IP6,
                policy.app_v6.octets().to_vec(),
            ),
        ] {
            out.push(rule(
                PREROUTING,
                what,
                vec![
                    CtDirection,
                    Cmp(NFT_CMP_EQ, vec![IP_CT_DIR_REPLY]),
                    CtOriginal(key),
                    Cmp(NFT_CMP_EQ, addr),
                    Verdict(NF_ACCEPT),
                ],
            ));
        }
        // The link's own IPv6 needs these (ARP, IPv4's equivalent, is not IP).
        for (what, kind) in [
            ("the neighbour solicitation rule", ND_NEIGHBOR_SOLICIT),
            ("the neighbour advertisement rule", ND_NEIGHBOR_ADVERT),
        ] {
            out.push(rule(
                PREROUTING,
                what,
                [icmpv6_type(kind), vec![Verdict(NF_ACCEPT)]].concat(),
            ));
        }
        out.push(rule(
            PREROUTING,
            "the rule dropping traffic to the host",
            vec![
                FibDaddrType,
                Hton4,
                Cmp(NFT_CMP_GTE, RTN_LOCAL.to_be_bytes().to_vec()),
                Cmp(NFT_CMP_LTE, RTN_MULTICAST.to_be_bytes().to_vec()),
                Verdict(NF_DROP),
            ],
        ));
    }
    out.push(rule(
        FORWARD,
        "the rule dropping traffic to other sessions",
        [
            from_veth(),
            vec![
                Meta(NFT_META_OIFNAME),
                Cmp(
                    NFT_CMP_EQ,
                    crate::names::HOST_IFNAME_PREFIX.as_bytes().to_vec(),
                ),
                Verdict(NF_DROP),
            ],
        ]
        .concat(),
    ));
    // IPv4 link-local addresses past the host: a cloud's metadata service
    // (169.254.169.254) hands out the machine's credentials. (Forwarded:
    // the host's own link-local addresses are local, dropped above.)
    if !policy.host_access {
        out.push(rule(
            FORWARD,
            "the rule dropping link-local destinations",
            [
                from_veth(),
                vec![
                    Meta(NFT_META_NFPROTO),
                    Cmp(NFT_CMP_EQ, vec![NFPROTO_IPV4]),
                    Payload {
                        base: NFT_PAYLOAD_NETWORK_HEADER,
                        offset: 16,
                        len: 2,
                    },
                    Cmp(NFT_CMP_EQ, vec![169, 254]),
                    Verdict(NF_DROP),
                ],
            ]
            .concat(),
        ));
    }
    out
}

/// An address's bytes, in network order.
fn octets(ip: &std::net::IpAddr) -> Vec<u8> {
    match ip {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Matches packets of `addr`'s family and loads their destination address
/// (as long as `addr`) for a comparison to follow (an `inet` table).
fn load_daddr(addr: &std::net::IpAddr) -> Vec<Expr> {
    let (proto, offset) = match addr {
        std::net::IpAddr::V4(_) => (NFPROTO_IPV4, 16),
        std::net::IpAddr::V6(_) => (NFPROTO_IPV6, 24),
    };
    vec![
        Expr::Meta(NFT_META_NFPROTO),
        Expr::Cmp(NFT_CMP_EQ, vec![proto]),
        Expr::Payload {
            base: NFT_PAYLOAD_NETWORK_HEADER,
            offset,
            len: octets(addr).len() as u32,
        },
    ]
}

/// Matches packets to `addr`.
fn daddr_is(addr: &std::net::IpAddr) -> Vec<Expr> {
    [load_daddr(addr), vec![Expr::Cmp(NFT_CMP_EQ, octets(addr))]].concat()
}

/// Matches transport protocol `l4` whose header holds `value` at `offset`.
fn transport_is(l4: u8, offset: u32, value: Vec<u8>) -> Vec<Expr> {
    vec![
        Expr::Meta(NFT_META_L4PROTO),
        Expr::Cmp(NFT_CMP_EQ, vec![l4]),
        Expr::Payload {
            base: NFT_PAYLOAD_TRANSPORT_HEADER,
            offset,
            len: value.len() as u32,
        },
        Expr::Cmp(NFT_CMP_EQ, value),
    ]
}

/// Matches DNS to `addr`: UDP and TCP port 53, one match each (with what
/// the kernel should call the rule if it refuses it).
fn dns_to(addr: &std::net::IpAddr) -> [(&'static str, Vec<Expr>); 2] {
    [
        ("a DNS rule (udp)", IPPROTO_UDP),
        ("a DNS rule (tcp)", IPPROTO_TCP),
    ]
    .map(|(what, l4)| {
        let port = transport_is(l4, 2, 53u16.to_be_bytes().to_vec());
        (what, [daddr_is(addr), port].concat())
    })
}

/// Matches ICMPv6 messages of type `kind` (neighbour discovery).
fn icmpv6_type(kind: u8) -> Vec<Expr> {
    transport_is(IPPROTO_ICMPV6, 0, vec![kind])
}

/// Test helper: in a forked child's own network namespace (root only),
/// `make` a table there and check that `nft list table inet TABLE` shows
/// the `want` lines, in that order, among its own.
#[cfg(test)]
pub(crate) fn assert_read_back<T>(
    table: &str,
    make: impl FnOnce() -> Result<T, String>,
    want: &[&str],
) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let status = crate::testutil::in_child(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())?;
        let t = make()?;
        let o = std::process::Command::new("nft")
            .args(["list", "table", "inet", table])
            .output()
            .map_err(|e| e.to_string())?;
        drop(t);
        let text = String::from_utf8_lossy(&o.stdout);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| want.contains(l))
            .collect();
        if lines != want {
            return Err(format!("got:\n{text}"));
        }
        Ok(())
    });
    assert_eq!(status, Ok(()));
}

#[cfg(test)]
mod tests {
    use super::*;

    const VETH: &str = "pallium0123abcd";

    fn policy(relay: Option<Ipv4Addr>, host_access: bool) -> Policy<'static> {
        Policy {
            veth: VETH,
            app_v4: Ipv4Addr::new(10, 0, 0, 2),
            app_v6: "fd00::2".parse().unwrap(),
            relay,
            host_access,
        }
    }

    fn in_chain(rules: &[Rule], chain: Chain) -> Vec<&Rule> {
        rules.iter().filter(|r| r.chain == chain).collect()
    }

    #[test]
    fn default_policy_drops_what_goes_to_the_host_last() {
        let r = rules(&policy(None, false));
        let pre = in_chain(&r, PREROUTING);
        // Pass other interfaces, replies (2), NS, NA, then drop.
        assert_eq!(pre.len(), 6, "{pre:?}");
        assert_eq!(
            pre[0].exprs[1],
            Expr::Cmp(NFT_CMP_NEQ, ifname_bytes(VETH).to_vec())
        );
        let last = &pre[5].exprs;
        assert_eq!(last[0], Expr::FibDaddrType);
        assert_eq!(last.last(), Some(&Expr::Verdict(NF_DROP)));
        assert!(pre[..5]
            .iter()
            .all(|r| r.exprs.last() == Some(&Expr::Verdict(NF_ACCEPT))));
        assert_eq!(
            chains(&policy(None, false)),
            [POSTROUTING, PREROUTING, FORWARD]
        );
    }

    #[test]
    fn the_relay_is_let_through_on_its_address_and_port_only() {
        let r = rules(&policy(Some(Ipv4Addr::new(10, 0, 0, 1)), false));
        let pre = in_chain(&r, PREROUTING);
        assert_eq!(pre.len(), 8);
        for (rule, proto) in pre[1..3].iter().zip([IPPROTO_UDP, IPPROTO_TCP]) {
            assert!(rule
                .exprs
                .contains(&Expr::Cmp(NFT_CMP_EQ, vec![10, 0, 0, 1])));
            assert!(rule.exprs.contains(&Expr::Cmp(NFT_CMP_EQ, vec![proto])));
            assert!(rule.exprs.contains(&Expr::Cmp(NFT_CMP_EQ, vec![0, 53])));
        }
    }

    #[test]
    fn host_access_keeps_masquerade_and_the_wall_between_sessions() {
        let p = policy(Some(Ipv4Addr::new(10, 0, 0, 1)), true);
        assert_eq!(chains(&p), [POSTROUTING, FORWARD]);
        let r = rules(&p);
        assert!(in_chain(&r, PREROUTING).is_empty());
        assert_eq!(in_chain(&r, POSTROUTING).len(), 1);
        let fwd = in_chain(&r, FORWARD);
        assert_eq!(fwd.len(), 1);
        assert!(fwd[0]
            .exprs
            .contains(&Expr::Cmp(NFT_CMP_EQ, b"pallium".to_vec())));
        assert_eq!(fwd[0].exprs.last(), Some(&Expr::Verdict(NF_DROP)));
    }

    /// The kernel accepts the whole batch and `nft` reads back the rules we
    /// meant.
    #[test]
    fn the_kernel_reads_back_the_rules_we_meant() {
        let p = policy(Some(Ipv4Addr::new(10, 0, 0, 1)), false);
        assert_read_back(
            "pallium_test0002",
            || session_table("pallium_test0002", &p).map_err(|e| format!("{e:?}")),
            &[
                "type nat hook postrouting priority srcnat; policy accept;",
                "iifname \"pallium0123abcd\" masquerade",
                "type filter hook prerouting priority mangle; policy accept;",
                "iifname != \"pallium0123abcd\" accept",
                "ip daddr 10.0.0.1 udp dport 53 accept",
                "ip daddr 10.0.0.1 tcp dport 53 accept",
                "ct direction reply ct original ip daddr 10.0.0.2 accept",
                "ct direction reply ct original ip6 daddr fd00::2 accept",
                "icmpv6 type nd-neighbor-solicit accept",
                "icmpv6 type nd-neighbor-advert accept",
                "fib daddr type 2-5 drop",
                "type filter hook forward priority filter; policy accept;",
                "iifname \"pallium0123abcd\" oifname \"pallium*\" drop",
                "iifname \"pallium0123abcd\" ip daddr 169.254.0.0/16 drop",
            ],
        );
    }

    /// In a fresh network namespace (forked child, root only): the table shows
    /// up in `nft list tables` and disappears when the socket is dropped.
    #[test]
    fn owner_table_lives_with_its_socket() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let status = crate::testutil::in_child(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())?;
            let list = || {
                let o = std::process::Command::new("nft")
                    .args(["list", "tables"])
                    .output()
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(String::from_utf8_lossy(&o.stdout).into_owned())
            };
            let p = Policy {
                veth: "pallium0test0001",
                app_v4: Ipv4Addr::new(10, 0, 0, 2),
                app_v6: Ipv6Addr::LOCALHOST,
                relay: None,
                host_access: false,
            };
            let t = session_table("pallium_test0001", &p).map_err(|e| format!("{e:?}"))?;
            let before = list()?;
            if !before.contains("table inet pallium_test0001") {
                return Err(format!("table missing: {before}"));
            }
            drop(t);
            // Release is processed synchronously on close, but allow a moment.
            for _ in 0..50 {
                if !list()?.contains("pallium_test0001") {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err("table survived its socket".into())
        });
        assert_eq!(status, Ok(()));
    }
}
