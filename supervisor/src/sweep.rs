//! Root: what a netbroker killed with SIGKILL left in the host's routing —
//! the policy rules and routing table of `network.outbound_interface` or
//! `network.bridge.routes`, and the latter's nft table, and the Linux
//! bridge of `network.bridge.eth_bridge`. Everything else of
//! a session goes with its processes and namespaces; these cannot, so each
//! is reserved by a marker file in the runtime directory
//! (`proto::runtime::ROUTE_MARKER_PREFIX`, one per network namespace and
//! table; `BRIDGE_MARKER_PREFIX`, one per Linux bridge) and the next pallium
//! command in that namespace (under the registry lock) removes what belongs
//! to no live session: an `iif` rule whose interface (the session's veth) is
//! gone, a `fwmark` rule whose table lost its routes (they went via the
//! bridge's veth), a Linux bridge without the session's veth. With no
//! marker, nothing runs: starting a session costs a directory read.

#![forbid(unsafe_code)]

use std::path::Path;
use std::process::{Command, Stdio};

use proto::runtime::{BRIDGE_MARKER_PREFIX, ROUTE_MARKER_PREFIX};

/// Delete the Linux bridges (`network.bridge.eth_bridge`) of this network
/// namespace's markers whose session veth is gone, which releases the host
/// devices they enslaved; remove the markers of bridges that are gone.
pub(crate) fn eth_bridges(run: &Path) {
    if !nix::unistd::getuid().is_root() {
        return;
    }
    let prefix = format!("{BRIDGE_MARKER_PREFIX}{}-", proto::runtime::current_netns());
    for e in std::fs::read_dir(run).into_iter().flatten().flatten() {
        let name = e.file_name();
        let Some(bridge) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Ok(veth) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        if !ip(&["-o", "link", "show", "dev", bridge]).is_empty() {
            let members = ip(&["-o", "link", "show", "master", bridge]);
            if members.lines().any(|l| link_name(l) == Some(veth.trim())) {
                continue; // its session is alive
            }
            ip(&["link", "delete", "dev", bridge]);
            if !ip(&["-o", "link", "show", "dev", bridge]).is_empty() {
                continue; // try again next time
            }
            tracing::debug!("removed a dead session's Linux bridge {bridge}");
        }
        let _ = std::fs::remove_file(e.path());
    }
}

/// The name in a line of `ip -o link show`: "7: veth0@if6: <…" → "veth0".
fn link_name(line: &str) -> Option<&str> {
    let name = line.split(": ").nth(1)?;
    Some(name.split('@').next().unwrap_or(name))
}

/// Sweep the tables of `run`'s markers; remove the markers no rule uses.
pub(crate) fn host_routing(run: &Path) {
    if !nix::unistd::getuid().is_root() {
        return;
    }
    let netns = proto::runtime::current_netns();
    let tables: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(run)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (ns, t) = name.strip_prefix(ROUTE_MARKER_PREFIX)?.split_once('-')?;
            // Only this network namespace's: its rules are the ones we see.
            (ns.parse::<u64>().ok()? == netns).then_some(())?;
            Some((t.parse().ok()?, e.path()))
        })
        .collect();
    if tables.is_empty() {
        return;
    }
    for (t, marker) in tables {
        let mut used = false;
        for family in ["-4", "-6"] {
            for rule in ip(&[family, "rule", "show"]).lines() {
                if !rule.trim_end().ends_with(&format!("lookup {t}")) {
                    continue;
                }
                if dead(family, rule, t) {
                    delete(family, rule, t);
                } else {
                    used = true;
                }
            }
        }
        if !used {
            let _ = std::fs::remove_file(&marker);
        }
    }
}

/// Whether `rule` (a line of `ip rule show`) looking up table `t` belongs
/// to a session that is gone.
fn dead(family: &str, rule: &str, t: u32) -> bool {
    if rule.contains(" iif ") {
        return rule.contains("[detached]");
    }
    rule.contains(" fwmark ")
        && ip(&[family, "route", "show", "table", &t.to_string()])
            .trim()
            .is_empty()
}

/// Delete `rule`, its table and (bridge routes) its nft table.
fn delete(family: &str, rule: &str, t: u32) {
    // "32765:	from all iif pallium1a2b3c4d [detached] lookup 7367533": the
    // selector words between "from all" and "lookup".
    let words: Vec<&str> = rule
        .split_whitespace()
        .skip_while(|w| *w != "all")
        .skip(1)
        .take_while(|w| *w != "lookup")
        .filter(|w| *w != "[detached]")
        .collect();
    let ts = t.to_string();
    let mut args = vec![family, "rule", "del"];
    args.extend(&words);
    args.extend(["lookup", &ts]);
    ip(&args);
    ip(&[family, "route", "flush", "table", &ts]);
    ip(&[
        family,
        "route",
        "del",
        "unreachable",
        "default",
        "metric",
        "4294967295",
        "table",
        &ts,
    ]);
    if rule.contains(" fwmark ") {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &format!("pallium_br{t}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    tracing::debug!("removed a dead session's routing: {rule}");
}

/// `ip ARGS`' standard output ("" when it fails: this is best effort).
fn ip(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}
