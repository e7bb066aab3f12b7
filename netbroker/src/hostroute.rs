//! `network.bridge.routes` (root): the host's own traffic to the listed
//! networks goes through the chain, over the bridge (the original's
//! "routing table trick").
//!
//! An nft `route` chain on the host's output hook marks what locally
//! originated packets to a listed network carry (reserved ranges first
//! return when `reserved_bypass`), a policy rule sends that mark to a table
//! of the session's own whose routes lead to the bridge's gateway in B, and
//! a NAT chain gives such packets the host's bridge address as source (they
//! were addressed for the main table's interface). No loop for the chain's
//! own traffic: only the output hook marks, so what pallium's namespaces
//! forward keeps the main table, and hop 1's processes in the host's
//! namespace — the session's packet-engine uid and the chain's daemons'
//! uids — are never marked. Dropping a [`HostRoutes`] deletes the rules, the
//! table's routes and the nft table.

#![forbid(unsafe_code)]

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

use proto::profile::Cidr;

use proto::runtime::{ROUTE_TABLES as TRIES, ROUTE_TABLE_BASE as BASE};

/// Ranges not routed on the internet, which bypass the bridge when
/// `reserved_bypass` (the original's list: IANA special-purpose registries).
pub const RESERVED_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
];
/// IPv6's reserved ranges (loopback, documentation, ULA, link-local, multicast…).
pub const RESERVED_V6: &[&str] = &[
    "::/127",
    "::ffff:0:0/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// What failed while routing host traffic through the bridge.
#[derive(Debug, thiserror::Error)]
pub enum HostRouteError {
    #[error("network.bridge.routes: no free routing table in {BASE:#x}–{:#x}", BASE + TRIES - 1)]
    NoTable,
    #[error("network.bridge.routes: {step}")]
    Step {
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Where marked packets go.
pub struct Gateway<'a> {
    /// The host's bridge interface (the veth end or the Linux bridge).
    pub dev: &'a str,
    /// B's addresses on the bridge.
    pub via_v4: Ipv4Addr,
    pub via_v6: Ipv6Addr,
    /// The host's addresses on the bridge (the source of marked packets).
    pub src_v4: Ipv4Addr,
    pub src_v6: Ipv6Addr,
}

/// The installed routing; removed on drop.
#[derive(Debug)]
pub struct HostRoutes {
    table: Reserved,
    /// Once loaded.
    nft_table: Option<String>,
}

/// A host routing table reserved by its marker file
/// ([`proto::runtime::ROUTE_MARKER_PREFIX`]); dropping it (last) removes
/// the marker.
#[derive(Debug)]
pub struct Reserved {
    pub table: u32,
    marker: std::path::PathBuf,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.marker);
    }
}

impl HostRoutes {
    pub fn table(&self) -> u32 {
        self.table.table
    }
}

/// Route the host's traffic to `routes` through `gw`, except sockets of
/// `skip_uids`.
pub fn install(
    routes: &[Cidr],
    reserved_bypass: bool,
    gw: &Gateway<'_>,
    skip_uids: &[u32],
) -> Result<HostRoutes, HostRouteError> {
    let reserved = free_table().map_err(|source| HostRouteError::Step {
        step: "list the host's routing tables",
        source,
    })?;
    let reserved = reserved.ok_or(HostRouteError::NoTable)?;
    let table = reserved.table;
    // From here a failure drops `made`, which deletes what exists.
    let mut made = HostRoutes {
        table: reserved,
        nft_table: None,
    };
    let step = |step| move |source| HostRouteError::Step { step, source };
    ip_batch(&route_script(table, routes, gw)).map_err(step("add the routes"))?;
    for family in ["-4", "-6"] {
        let (t, m) = (table.to_string(), format!("{table:#x}"));
        output(&[family, "rule", "add", "fwmark", &m, "lookup", &t])
            .map_err(step("add the policy rules"))?;
    }
    let name = nft_table_name(table);
    nft(&nft_rules(
        &name,
        table,
        routes,
        reserved_bypass,
        gw,
        skip_uids,
    ))
    .map_err(step("load the host's marking rules"))?;
    made.nft_table = Some(name);
    Ok(made)
}

impl Drop for HostRoutes {
    fn drop(&mut self) {
        let (t, m) = (self.table().to_string(), format!("{:#x}", self.table()));
        // Whatever exists: a failed install may have stopped half-way.
        for family in ["-4", "-6"] {
            let _ = output(&[family, "rule", "del", "fwmark", &m, "lookup", &t]);
            let _ = output(&[family, "route", "flush", "table", &t]);
        }
        if let Some(name) = &self.nft_table {
            if let Err(e) = nft(&format!("delete table inet {name}\n")) {
                tracing::warn!("delete the host's nft table {name}: {e}");
            }
        }
    }
}

/// The host nft table of `bridge.routes` using routing table `t`.
pub fn nft_table_name(t: u32) -> String {
    format!("pallium_br{t}")
}

/// The first table number from [`BASE`] that no route and no rule uses
/// and no other netbroker reserved, reserved.
pub(crate) fn free_table() -> io::Result<Option<Reserved>> {
    let mut used = output(&["-4", "rule", "show"])? + &output(&["-6", "rule", "show"])?;
    used += &output(&["-4", "route", "show", "table", "all"])?;
    used += &output(&["-6", "route", "show", "table", "all"])?;
    let taken = |t: u32| {
        used.lines().any(|l| {
            let mut w = l.split_whitespace();
            while let Some(k) = w.next() {
                let v = w.clone().next().unwrap_or("");
                let hit = match k {
                    "table" | "lookup" => v == t.to_string(),
                    "fwmark" => v.split('/').next() == Some(&format!("{t:#x}")),
                    _ => false,
                };
                if hit {
                    return true;
                }
            }
            false
        })
    };
    let run = std::path::Path::new(proto::runtime::ROOT_RUN_DIR);
    for t in (BASE..BASE + TRIES).filter(|t| !taken(*t)) {
        let marker = proto::runtime::route_marker(run, t);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
        {
            Ok(_) => return Ok(Some(Reserved { table: t, marker })),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// `ip -batch` lines: the table's routes.
fn route_script(t: u32, routes: &[Cidr], gw: &Gateway<'_>) -> String {
    let mut s = String::new();
    for r in routes {
        let via = match r.addr {
            IpAddr::V4(_) => IpAddr::from(gw.via_v4),
            IpAddr::V6(_) => IpAddr::from(gw.via_v6),
        };
        s += &format!("route add {r} via {via} dev {} table {t}\n", gw.dev);
    }
    s
}

fn nft_rules(
    name: &str,
    mark: u32,
    routes: &[Cidr],
    reserved_bypass: bool,
    gw: &Gateway<'_>,
    skip_uids: &[u32],
) -> String {
    let set = |v: Vec<String>| format!("{{ {} }}", v.join(", "));
    let of = |v6: bool| -> Vec<String> {
        routes
            .iter()
            .filter(|r| r.addr.is_ipv6() == v6)
            .map(ToString::to_string)
            .collect()
    };
    let mut out = String::new();
    if !skip_uids.is_empty() {
        let uids = skip_uids.iter().map(ToString::to_string).collect();
        out += &format!("    meta skuid {} return\n", set(uids));
    }
    if reserved_bypass {
        let v4 = RESERVED_V4.iter().map(ToString::to_string).collect();
        let v6 = RESERVED_V6.iter().map(ToString::to_string).collect();
        out += &format!("    ip daddr {} return\n", set(v4));
        out += &format!("    ip6 daddr {} return\n", set(v6));
    }
    let (v4, v6) = (of(false), of(true));
    if !v4.is_empty() {
        out += &format!("    ip daddr {} meta mark set {mark:#x}\n", set(v4));
    }
    if !v6.is_empty() {
        out += &format!("    ip6 daddr {} meta mark set {mark:#x}\n", set(v6));
    }
    format!(
        "table inet {name} {{
  chain output {{ type route hook output priority -150; policy accept;
{out}  }}
  chain postrouting {{ type nat hook postrouting priority 100; policy accept;
    oifname \"{dev}\" meta mark {mark:#x} meta nfproto ipv4 snat ip to {v4src}
    oifname \"{dev}\" meta mark {mark:#x} meta nfproto ipv6 snat ip6 to {v6src}
  }}
}}
",
        dev = gw.dev,
        v4src = gw.src_v4,
        v6src = gw.src_v6,
    )
}

pub(crate) fn output(args: &[&str]) -> io::Result<String> {
    let o = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if !o.status.success() {
        return Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn ip_batch(script: &str) -> io::Result<()> {
    run_stdin("ip", &["-batch", "-"], script)
}

fn nft(rules: &str) -> io::Result<()> {
    run_stdin("nft", &["-f", "-"], rules)
}

fn run_stdin(tool: &str, args: &[&str], input: &str) -> io::Result<()> {
    let mut c = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    c.stdin.take().expect("piped").write_all(input.as_bytes())?;
    let o = c.wait_with_output()?;
    if o.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{tool}: {}",
        String::from_utf8_lossy(&o.stderr).trim()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw() -> Gateway<'static> {
        Gateway {
            dev: "pmbr1",
            via_v4: Ipv4Addr::new(10, 0, 0, 1),
            via_v6: "fd00::1".parse().unwrap(),
            src_v4: Ipv4Addr::new(10, 0, 0, 2),
            src_v6: "fd00::2".parse().unwrap(),
        }
    }

    fn cidrs(s: &[&str]) -> Vec<Cidr> {
        s.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn the_chains_own_uids_return_before_anything_is_marked() {
        let r = nft_rules(
            "t",
            BASE,
            &cidrs(&["0.0.0.0/0"]),
            true,
            &gw(),
            &[4000, 4001],
        );
        let skip = r.find("meta skuid { 4000, 4001 } return").unwrap();
        let bypass = r.find("ip daddr { 0.0.0.0/8").unwrap();
        let mark = r
            .find("ip daddr { 0.0.0.0/0 } meta mark set 0x706c6d")
            .unwrap();
        assert!(skip < bypass && bypass < mark, "{r}");
        let v6_mark = r
            .lines()
            .any(|l| l.contains("ip6 daddr") && l.contains("mark set"));
        assert!(!v6_mark, "no IPv6 route, no IPv6 mark: {r}");
    }

    #[test]
    fn without_reserved_bypass_reserved_ranges_are_marked_too() {
        let r = nft_rules("t", BASE, &cidrs(&["::/0"]), false, &gw(), &[]);
        assert!(!r.contains("fc00::/7") && !r.contains("skuid"), "{r}");
        assert!(
            r.contains("ip6 daddr { ::/0 } meta mark set 0x706c6d"),
            "{r}"
        );
    }

    #[test]
    fn routes_go_via_the_bridge_gateway_of_their_family() {
        let s = route_script(7, &cidrs(&["0.0.0.0/0", "2001:db8::/32"]), &gw());
        assert!(s.contains("route add 0.0.0.0/0 via 10.0.0.1 dev pmbr1 table 7\n"));
        assert!(s.contains("route add 2001:db8::/32 via fd00::1 dev pmbr1 table 7\n"));
    }
}
