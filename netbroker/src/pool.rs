//! The address pool of root-mode veth links: the first IPv4 /30 of 10/8,
//! 172.16/12, 192.168/16 and an IPv6 /64 in fd00::/8 that overlap nothing the
//! host namespace already has (addresses and routes of every table, which
//! include the links of other sessions). A pure function over what was seen.

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::rtnl::Prefix;

/// Prefix length of a session's IPv4 link.
pub const V4_LEN: u8 = 30;
/// Prefix length of a session's IPv6 link.
pub const V6_LEN: u8 = 64;

/// The networks of one veth link; host end `.1`, application end `.2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkNets {
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

impl LinkNets {
    pub fn host_v4(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.v4) + 1)
    }
    pub fn app_v4(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.v4) + 2)
    }
    pub fn host_v6(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.v6) + 1)
    }
    pub fn app_v6(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.v6) + 2)
    }
}

const V4_RANGES: [(Ipv4Addr, u8); 3] = [
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
];

/// Choose free networks given everything the host namespace has. `seed`
/// (the session hash) spreads IPv6 networks over fd00::/8 like an RFC 4193
/// global ID; IPv4 takes the lowest free /30. `None` if a pool is exhausted.
pub fn choose(existing: &[Prefix], seed: u32) -> Option<LinkNets> {
    choose_sized(existing, seed, V4_LEN)
}

/// [`choose`] with an IPv4 network of `v4_len` bits (a bridge's /28 has
/// room for DHCP leases).
pub fn choose_sized(existing: &[Prefix], seed: u32, v4_len: u8) -> Option<LinkNets> {
    let v4s: Vec<(u128, u8)> = existing
        .iter()
        .filter(|p| p.len > 0)
        .filter_map(|p| match p.addr {
            IpAddr::V4(a) => Some((u128::from(u32::from(a)), p.len)),
            IpAddr::V6(_) => None,
        })
        .collect();
    let v6s: Vec<(u128, u8)> = existing
        .iter()
        .filter(|p| p.len > 0)
        .filter_map(|p| match p.addr {
            IpAddr::V6(a) => Some((u128::from(a), p.len)),
            IpAddr::V4(_) => None,
        })
        .collect();
    let v4 = V4_RANGES
        .iter()
        .find_map(|&(base, len)| first_free(u128::from(u32::from(base)), len, v4_len, 32, &v4s))?;
    // fdXX:XXXX:XXXX::/48 from the seed, then the first free /64 from there.
    let global = (0xfdu128 << 120) | (u128::from(seed) << 88);
    let v6 = first_free(global, 48, V6_LEN, 128, &v6s)
        .or_else(|| first_free(0xfdu128 << 120, 8, V6_LEN, 128, &v6s))?;
    Some(LinkNets {
        v4: Ipv4Addr::from(v4 as u32),
        v6: Ipv6Addr::from(v6),
    })
}

/// First `want`-sized block inside `base/range_len` that overlaps none of
/// `taken`, in a `bits`-wide address space. Skips whole taken prefixes, so it
/// is fast even when the range is crowded.
fn first_free(base: u128, range_len: u8, want: u8, bits: u8, taken: &[(u128, u8)]) -> Option<u128> {
    let size = |len: u8| 1u128 << (bits - len);
    let end = base + size(range_len);
    let mut cand = base;
    while cand + size(want) <= end {
        let hit = taken.iter().find(|&&(net, len)| {
            let net = net & !(size(len) - 1);
            overlaps(cand, want, net, len, bits)
        });
        match hit {
            None => return Some(cand),
            Some(&(net, len)) => {
                let net = net & !(size(len) - 1);
                let next = (net + size(len)).max(cand + size(want));
                // Round up to the next `want`-aligned block.
                cand = (next + size(want) - 1) & !(size(want) - 1);
            }
        }
    }
    None
}

fn overlaps(a: u128, alen: u8, b: u128, blen: u8, bits: u8) -> bool {
    let len = alen.min(blen);
    // Values of a 32-bit space have no high bits, so one u128 mask serves both.
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (bits - len)
    };
    a & mask == b & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        let (a, l) = s.split_once('/').unwrap();
        Prefix {
            addr: a.parse().unwrap(),
            len: l.parse().unwrap(),
        }
    }

    #[test]
    fn empty_host_gets_first_networks() {
        let n = choose(&[], 0x1234_5678).unwrap();
        assert_eq!(n.v4, Ipv4Addr::new(10, 0, 0, 0));
        assert_eq!(n.host_v4(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(n.app_v4(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(n.v6, "fd12:3456:7800::".parse::<Ipv6Addr>().unwrap());
        assert_eq!(n.app_v6(), "fd12:3456:7800::2".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn default_routes_are_ignored() {
        let n = choose(&[p("0.0.0.0/0"), p("::/0")], 0).unwrap();
        assert_eq!(n.v4, Ipv4Addr::new(10, 0, 0, 0));
    }

    #[test]
    fn other_sessions_links_are_skipped() {
        let n = choose(&[p("10.0.0.0/30"), p("10.0.0.1/32"), p("10.0.0.4/30")], 0).unwrap();
        assert_eq!(n.v4, Ipv4Addr::new(10, 0, 0, 8));
    }

    #[test]
    fn a_host_address_inside_a_candidate_excludes_it() {
        let n = choose(&[p("10.0.0.2/32")], 0).unwrap();
        assert_eq!(n.v4, Ipv4Addr::new(10, 0, 0, 4));
    }

    #[test]
    fn whole_ten_slash_eight_taken_falls_through_to_172() {
        let n = choose(&[p("10.0.0.0/8")], 0).unwrap();
        assert_eq!(n.v4, Ipv4Addr::new(172, 16, 0, 0));
        let n = choose(&[p("10.0.0.0/8"), p("172.16.0.0/12")], 0).unwrap();
        assert_eq!(n.v4, Ipv4Addr::new(192, 168, 0, 0));
    }

    #[test]
    fn exhausted_pool_is_none() {
        let all = [p("10.0.0.0/8"), p("172.16.0.0/12"), p("192.168.0.0/16")];
        assert_eq!(choose(&all, 0), None);
    }

    #[test]
    fn ipv6_skips_used_subnets() {
        let n = choose(&[p("fd00:0:0::/64"), p("fd00:0:0:1::5/128")], 0).unwrap();
        assert_eq!(n.v6, "fd00:0:0:2::".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn supernet_route_excludes_everything_inside() {
        let n = choose(&[p("fc00::/7")], 0);
        assert_eq!(n, None);
    }
}
