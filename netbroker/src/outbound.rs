//! `network.outbound_interface` (root): the chain's traffic leaves the host
//! by that interface only.
//!
//! Everything the session sends to the outside crosses the host on its veth
//! (the empty chain's application namespace, or with hops an N0 of the
//! session's own, as for socksapp: hop 1's dials are then forwarded, not
//! the host's own). So one policy rule per family, `iif <veth> lookup T`,
//! routes it by a table of the session's holding copies of the interface's
//! routes from the main table and an `unreachable default` below them, so
//! nothing falls back to the main table's other uplinks. The veth's
//! masquerade picks the interface's address. Dropping an [`Outbound`]
//! deletes the rules and the table's routes.

#![forbid(unsafe_code)]

use std::io;

use crate::hostroute::{free_table, output, Reserved};

/// Below every copied route.
const UNREACHABLE_METRIC: &str = "4294967295";

/// What failed while routing the session by its outbound interface.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("network.outbound_interface: no free routing table for the session's rules")]
    NoTable,
    #[error("network.outbound_interface: {step} ({iface})")]
    Step {
        step: &'static str,
        iface: String,
        #[source]
        source: io::Error,
    },
}

/// The installed rules and table; removed on drop.
#[derive(Debug)]
pub struct Outbound {
    table: Reserved,
    veth: String,
    /// "leaves by eth1 (table 7367790)", for `pallium list`.
    pub link: String,
}

/// Route what enters the host from `veth` by `iface`'s routes only.
pub fn install(iface: &str, veth: &str) -> Result<Outbound, OutboundError> {
    let err = |step, source| OutboundError::Step {
        step,
        iface: iface.into(),
        source,
    };
    let reserved = free_table()
        .map_err(|e| err("list the host's routing tables", e))?
        .ok_or(OutboundError::NoTable)?;
    let table = reserved.table;
    // From here a failure drops `made`, which deletes what exists.
    let made = Outbound {
        table: reserved,
        veth: veth.into(),
        link: format!("leaves by {iface} (table {table})"),
    };
    let t = table.to_string();
    for family in ["-4", "-6"] {
        let routes = output(&[family, "-o", "route", "show", "table", "main", "dev", iface])
            .map_err(|e| err("list the interface's routes", e))?;
        for line in routes.lines().filter_map(copyable) {
            let mut args = vec![family, "route", "add"];
            args.extend(line.iter().map(String::as_str));
            args.extend(["dev", iface, "table", &t]);
            output(&args).map_err(|e| err("copy the interface's routes", e))?;
        }
        output(&[
            family,
            "route",
            "add",
            "unreachable",
            "default",
            "metric",
            "4294967295",
            "table",
            &t,
        ])
        .map_err(|e| err("close the session's table", e))?;
        output(&[family, "rule", "add", "iif", veth, "lookup", &t])
            .map_err(|e| err("add the policy rule", e))?;
    }
    Ok(made)
}

impl Drop for Outbound {
    fn drop(&mut self) {
        let t = self.table.table.to_string();
        // Whatever exists: a failed install may have stopped half-way.
        for family in ["-4", "-6"] {
            let _ = output(&[family, "rule", "del", "iif", &self.veth, "lookup", &t]);
            let _ = output(&[family, "route", "flush", "table", &t]);
            // IPv6's flush leaves the unreachable route.
            let _ = output(&[
                family,
                "route",
                "del",
                "unreachable",
                "default",
                "metric",
                UNREACHABLE_METRIC,
                "table",
                &t,
            ]);
        }
    }
}

/// The words of a main-table route (`ip -o route show dev IF`) that a copy
/// needs: the destination and `via`, `src`, `metric`, `proto`, `scope`,
/// `pref`, `onlink`; not what the kernel keeps for itself (`expires`,
/// `linkdown`). None for kinds a copy cannot take (multipath, broadcast).
fn copyable(line: &str) -> Option<Vec<String>> {
    let mut w = line.split_whitespace();
    let dst = w.next()?;
    if ["broadcast", "local", "multicast", "anycast", "nexthop"].contains(&dst) {
        return None;
    }
    let mut out = vec![dst.to_string()];
    while let Some(k) = w.next() {
        match k {
            "via" | "src" | "metric" | "proto" | "scope" | "pref" => {
                out.push(k.into());
                out.push(w.next()?.into());
            }
            "onlink" => out.push(k.into()),
            "nexthop" => return None,
            _ => {}
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copied_route_keeps_its_gateway_and_drops_what_the_kernel_counts() {
        let r = copyable(
            "default via fe80::1 proto ra metric 1024 expires 1798sec hoplimit 64 pref medium",
        )
        .unwrap();
        assert_eq!(
            r,
            ["default", "via", "fe80::1", "proto", "ra", "metric", "1024", "pref", "medium"]
        );
        let r = copyable("192.0.2.0/24 proto kernel scope link src 192.0.2.2 linkdown").unwrap();
        assert_eq!(
            r,
            [
                "192.0.2.0/24",
                "proto",
                "kernel",
                "scope",
                "link",
                "src",
                "192.0.2.2"
            ]
        );
        assert!(copyable("broadcast 192.0.2.255 proto kernel").is_none());
    }
}
