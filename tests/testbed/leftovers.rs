//! "Nothing leaked": what pallium left behind, in one testbed's host namespace
//! ([`Testbed::leftovers`]) or anywhere on the machine ([`leftovers`]).

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::cmd::{self, netns_exec};
use crate::names::NETNS_DIR;
use crate::net::{read_sysctls, Baseline};
use crate::{Testbed, TESTBED_ENV};

/// Host-namespace sysctls pallium may need to change and must restore.
const WATCHED_SYSCTLS: &[&str] = &[
    "net/ipv4/ip_forward",
    "net/ipv6/conf/all/forwarding",
    "net/ipv4/conf/all/route_localnet",
    // Raised to 2 while IPv6 forwarding is on (proto::sysctl).
    "net/ipv6/conf/eth0/accept_ra",
];
/// The testbed's own links in the host namespace.
const OWN_LINKS: &[&str] = &["lo", "eth0"];
/// Process names that mark a pallium process anywhere on the machine (`comm` is cut at 15
/// characters; pasta may re-exec itself as `pasta.avx2`).
const PALLIUM_COMMS: &[&str] = &[
    "pallium",
    "pallium-netbrok",
    "pallium-sandbox",
    "pasta",
    "passt",
    "slirp4netns",
];

impl Testbed {
    /// What differs in the host namespace from right after setup, one line per finding; empty
    /// when pallium cleaned up. Scoped to this testbed, so parallel tests do not see each other:
    ///
    /// - links other than `lo` and `eth0`, routes and policy rules (IPv4 and IPv6) added or removed;
    /// - nftables tables (the testbed creates none);
    /// - the forwarding and `route_localnet` sysctls changed;
    /// - processes whose network namespace is the host namespace, or whose initial environment
    ///   carries this testbed's [`TESTBED_ENV`] tag (children of [`Testbed::host_exec`] wherever
    ///   they went), except the testbed's own servers. The proxy servers and Tor nodes run in
    ///   namespaces of their own and untagged, so they never count; processes pallium starts
    ///   (its own tor or ssh for a hop) inherit the tag and do.
    pub fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        let now = self.snapshot();
        found.extend(diff("route", &self.baseline.routes, &now.routes));
        found.extend(diff("rule", &self.baseline.rules, &now.rules));
        for ((key, was), (_, is)) in self.baseline.sysctls.iter().zip(&now.sysctls) {
            if was != is {
                found.push(format!("sysctl {key} changed from {was} to {is}"));
            }
        }
        let links =
            cmd::run(Command::new("ip").args(["-n", &self.host_netns(), "-o", "link", "show"]));
        for name in links.lines().filter_map(link_name) {
            if !OWN_LINKS.contains(&name) {
                found.push(format!("link {name}"));
            }
        }
        let tables = cmd::run(&mut netns_exec(
            &self.host_netns(),
            ["nft", "list", "tables"],
        ));
        found.extend(
            tables
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| format!("nft {l}")),
        );
        for (pid, why) in self.stray_processes() {
            found.push(format!("process {pid} {} ({why})", comm(pid)));
        }
        found
    }

    /// Processes attributed to this testbed (see [`Testbed::leftovers`]), other than its own.
    pub(crate) fn stray_processes(&self) -> Vec<(u32, &'static str)> {
        let host_ns = std::fs::metadata(Path::new(NETNS_DIR).join(self.host_netns()))
            .map(|m| (m.dev(), m.ino()))
            .ok();
        let tag = format!("{TESTBED_ENV}={}", self.name());
        let own = self.own_host_pids();
        let mut found = Vec::new();
        for pid in pids() {
            if pid == std::process::id() || own.contains(&pid) {
                continue;
            }
            let ns = std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .map(|m| (m.dev(), m.ino()))
                .ok();
            if ns.is_some() && ns == host_ns {
                found.push((pid, "in the host namespace"));
            } else if environ_has(pid, &tag) {
                found.push((pid, "started by this testbed"));
            }
        }
        found
    }

    /// The host namespace's routes, rules and watched sysctls.
    pub(crate) fn snapshot(&self) -> Baseline {
        let ns = self.host_netns();
        let show = |args: &[&str]| -> Vec<String> {
            let out = cmd::run(Command::new("ip").args(["-n", &ns]).args(args));
            // Drop volatile attributes (route expiry counts down).
            let mut lines: Vec<String> = out
                .lines()
                .map(|l| l.split(" expires ").next().unwrap_or(l).trim().to_owned())
                .collect();
            lines.sort();
            lines
        };
        let mut routes = show(&["-4", "route", "show", "table", "all"]);
        routes.extend(show(&["-6", "route", "show", "table", "all"]));
        let mut rules = show(&["-4", "rule", "show"]);
        rules.extend(show(&["-6", "rule", "show"]));
        Baseline {
            routes,
            rules,
            sysctls: read_sysctls(&ns, WATCHED_SYSCTLS),
        }
    }
}

/// Traces of pallium anywhere on the machine, one line per finding: network namespace names,
/// links (root namespace) and nftables tables (root namespace) named `pallium*`, mounts of the
/// test process mentioning pallium, and pallium, pasta and slirp4netns processes.
///
/// Machine-wide, so only meaningful when no other pallium test runs at the same time: call it
/// from a testbed built with [`crate::TestbedBuilder::exclusive`], or outside the test suite.
pub fn leftovers() -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(NETNS_DIR) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("pallium") {
                found.push(format!("netns {name}"));
            }
        }
    }
    let links = cmd::run(Command::new("ip").args(["-o", "link", "show"]));
    for name in links.lines().filter_map(link_name) {
        if name.starts_with("pallium") {
            found.push(format!("link {name}"));
        }
    }
    let tables = cmd::run(Command::new("nft").args(["list", "tables"]));
    for line in tables.lines() {
        if line
            .split_whitespace()
            .last()
            .is_some_and(|t| t.starts_with("pallium"))
        {
            found.push(format!("nft {line}"));
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    found.extend(
        mounts
            .lines()
            .filter(|l| l.contains("pallium"))
            .map(|l| format!("mount {l}")),
    );
    for pid in pids() {
        let comm = comm(pid);
        if PALLIUM_COMMS
            .iter()
            .any(|c| comm == *c || comm.starts_with(&format!("{c}.")))
        {
            found.push(format!("process {pid} {comm}"));
        }
    }
    found
}

fn diff(what: &str, before: &[String], after: &[String]) -> Vec<String> {
    let (before, after): (BTreeSet<_>, BTreeSet<_>) =
        (before.iter().collect(), after.iter().collect());
    let added = after
        .difference(&before)
        .map(|l| format!("{what} added: {l}"));
    let removed = before
        .difference(&after)
        .map(|l| format!("{what} removed: {l}"));
    added.chain(removed).collect()
}

/// The name in a line of `ip -o link show`: `2: eth0@if5: <BROADCAST,…`.
fn link_name(line: &str) -> Option<&str> {
    let name = line.split(": ").nth(1)?;
    Some(name.split('@').next().unwrap_or(name))
}

fn pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn environ_has(pid: u32, entry: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|&b| b == 0).any(|e| e == entry.as_bytes()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_name_strips_peer_suffix() {
        assert_eq!(
            link_name("2: eth0@if5: <BROADCAST,MULTICAST,UP> mtu 1500"),
            Some("eth0")
        );
        assert_eq!(
            link_name("1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536"),
            Some("lo")
        );
    }

    #[test]
    fn diff_reports_both_directions() {
        let before = vec!["a".to_owned(), "b".to_owned()];
        let after = vec!["b".to_owned(), "c".to_owned()];
        assert_eq!(
            diff("route", &before, &after),
            ["route added: c", "route removed: a"]
        );
    }
}
