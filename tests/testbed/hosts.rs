//! Extra hosts on the testbed's services LAN (198.51.100.0/24 and fd00:db8:2::/64, a bridge in
//! the router that the dns host sits on too): one network namespace per proxy server or Tor node,
//! each with its own addresses and, for proxies, a name in the test zone. Created on demand,
//! removed when their handle drops or with the testbed, whichever comes first.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::cmd;
use crate::names::{self, ETC_NETNS_DIR, NETNS_DIR};
use crate::net::{DNS_V4, NETNS_ADD, ZONE};

/// The bridge in the router that joins the dns host and the extra hosts.
pub(crate) const SERVICES_BRIDGE: &str = "br-svc";
/// The router's address on the services LAN, the extra hosts' gateway.
const GATEWAY_V4: &str = "198.51.100.1";
const GATEWAY_V6: &str = "fd00:db8:2::1";

/// Which part of the services LAN a host's address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pool {
    /// 198.51.100.10–99: proxy servers.
    Proxy,
    /// 198.51.100.100–199: the Tor network's nodes.
    Tor,
}

impl Pool {
    fn first_last(self) -> (u8, u8) {
        match self {
            Pool::Proxy => (10, 99),
            Pool::Tor => (100, 199),
        }
    }
}

/// A testbed's bookkeeping of its extra hosts, shared with their handles.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Set by the testbed's teardown: the namespaces are gone and the dnsmasq pid is stale.
    torn_down: bool,
    /// Slots ever handed out; never reused, so a router-side veth or neighbour entry of a
    /// removed host can never collide with a new one.
    used: BTreeSet<u8>,
    /// How many hosts of each kind were made, for unique labels.
    kinds: BTreeMap<String, u32>,
    /// Namespaces of the hosts that still exist.
    live: BTreeSet<String>,
    /// The zone's dynamic records: name → addresses.
    records: BTreeMap<String, (Ipv4Addr, Ipv6Addr)>,
    dns: Option<DnsReload>,
}

/// How to make the authoritative dnsmasq re-read its extra hosts file.
#[derive(Debug, Clone)]
pub(crate) struct DnsReload {
    pub(crate) pid: u32,
    pub(crate) log: PathBuf,
    pub(crate) hosts_file: PathBuf,
}

/// One extra host: its namespace, addresses and state directory.
#[derive(Debug)]
pub(crate) struct Host {
    pub(crate) netns: String,
    pub(crate) label: String,
    pub(crate) v4: Ipv4Addr,
    pub(crate) v6: Ipv6Addr,
    /// The host's name in the test zone, if it has one.
    pub(crate) fqdn: Option<String>,
    /// `<testbed state dir>/<label>/`: configuration, keys, logs.
    pub(crate) dir: PathBuf,
    registry: Arc<Registry>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records where the dns host's dnsmasq is, once it runs.
    pub(crate) fn set_dns(&self, dns: DnsReload) {
        self.lock().dns = Some(dns);
    }

    /// Marks the registry torn down and returns the namespaces still to delete (their
    /// processes killed already).
    pub(crate) fn teardown(&self) -> Vec<String> {
        let mut state = self.lock();
        state.torn_down = true;
        let live: Vec<String> = std::mem::take(&mut state.live).into_iter().collect();
        for ns in &live {
            names::kill_netns_pids(ns);
            let _ = std::fs::remove_dir_all(Path::new(ETC_NETNS_DIR).join(ns));
        }
        live
    }
}

impl Host {
    /// Makes this host a gateway for a VPN server's clients: it forwards
    /// (IPv4 and IPv6) and masquerades what leaves by `eth0`, so the web
    /// host sees this host's address.
    pub(crate) fn masquerade_out(&self) {
        for s in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            cmd::run(&mut cmd::netns_exec(&self.netns, ["sysctl", "-qw", s]));
        }
        let nft =
            "table inet ptnat {\n chain post {\n  type nat hook postrouting priority srcnat;\n  \
                   oifname \"eth0\" masquerade\n }\n}\n";
        let out = cmd::output(
            &mut cmd::netns_exec(&self.netns, ["nft", "-f", "-"]),
            Some(nft),
        );
        assert!(
            out.status.success(),
            "NAT on {}: {}",
            self.label,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates a host of `kind` (which names it: `microsocks`, `microsocks2`, …) on the services
    /// LAN with the next free address of `pool`; with `dns`, also `<label>.pallium.test`.
    pub(crate) fn create(
        registry: &Arc<Registry>,
        base: &str,
        state_dir: &Path,
        kind: &str,
        pool: Pool,
        dns: bool,
    ) -> Host {
        let (slot, label) = {
            let mut state = registry.lock();
            assert!(!state.torn_down, "testbed {base} is torn down");
            let (first, last) = pool.first_last();
            let slot = (first..=last)
                .find(|s| !state.used.contains(s))
                .unwrap_or_else(|| panic!("testbed {base}: no address left in {pool:?}"));
            state.used.insert(slot);
            let n = state.kinds.entry(kind.to_owned()).or_insert(0);
            *n += 1;
            let label = if *n == 1 {
                kind.to_owned()
            } else {
                format!("{kind}{n}")
            };
            let netns = format!("{base}-{label}");
            // Registered before it exists, so a panic below still has it removed.
            state.live.insert(netns);
            (slot, label)
        };
        let v4 = Ipv4Addr::new(198, 51, 100, slot);
        let v6: Ipv6Addr = format!("fd00:db8:2::{slot}")
            .parse()
            .expect("slot makes a valid IPv6 address");
        let host = Host {
            netns: format!("{base}-{label}"),
            fqdn: dns.then(|| format!("{label}.{ZONE}")),
            dir: state_dir.join(&label),
            label,
            v4,
            v6,
            registry: registry.clone(),
        };
        host.build(&format!("{base}-r"), slot);
        if let Some(fqdn) = &host.fqdn {
            let mut state = registry.lock();
            state.records.insert(fqdn.clone(), (v4, v6));
            reload_dns(&state);
        }
        host
    }

    fn build(&self, router: &str, slot: u8) {
        std::fs::create_dir_all(&self.dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", self.dir.display()));
        let ns = &self.netns;
        {
            let _guard = NETNS_ADD.lock().unwrap_or_else(|e| e.into_inner());
            cmd::ip_batch(None, &format!("netns add {ns}\n"), false);
        }
        let veth = format!("vh{slot}");
        cmd::ip_batch(
            None,
            &format!("link add name {veth} netns {router} type veth peer name eth0 netns {ns}\n"),
            false,
        );
        cmd::ip_batch(
            Some(router),
            &format!("link set {veth} master {SERVICES_BRIDGE}\nlink set {veth} up\n"),
            false,
        );
        cmd::ip_batch(
            Some(ns),
            &format!(
                "link set lo up\nlink set eth0 up\naddr add {}/24 dev eth0\n\
                 addr add {}/64 dev eth0 nodad\nroute add default via {GATEWAY_V4}\n\
                 route add ::/0 via {GATEWAY_V6}\n",
                self.v4, self.v6
            ),
            false,
        );
        // What `ip netns exec` bind-mounts over /etc/resolv.conf: the daemons resolve names
        // (a SOCKS5 host-name connect, a CONNECT to a name) with the zone's server.
        let etc = Path::new(ETC_NETNS_DIR).join(ns);
        std::fs::create_dir_all(&etc).unwrap_or_else(|e| panic!("create {}: {e}", etc.display()));
        std::fs::write(etc.join("resolv.conf"), format!("nameserver {DNS_V4}\n"))
            .unwrap_or_else(|e| panic!("write {}/resolv.conf: {e}", etc.display()));
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let mut state = self.registry.lock();
        if state.torn_down || !state.live.remove(&self.netns) {
            return;
        }
        names::kill_netns_pids(&self.netns);
        if Path::new(NETNS_DIR).join(&self.netns).exists() {
            let _ = cmd::output(Command::new("ip").args(["netns", "del", &self.netns]), None);
        }
        let _ = std::fs::remove_dir_all(Path::new(ETC_NETNS_DIR).join(&self.netns));
        if let Some(fqdn) = &self.fqdn {
            state.records.remove(fqdn);
            if !std::thread::panicking() {
                reload_dns(&state);
            }
        }
    }
}

/// Rewrites the extra hosts file and waits until dnsmasq has re-read it (it logs
/// `read <file> - N names` after each SIGHUP).
fn reload_dns(state: &State) {
    let Some(dns) = &state.dns else {
        return;
    };
    let mut text = String::new();
    for (name, (v4, v6)) in &state.records {
        text.push_str(&format!("{v4} {name}\n{v6} {name}\n"));
    }
    let tmp = dns.hosts_file.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write the extra hosts file");
    std::fs::rename(&tmp, &dns.hosts_file).expect("replace the extra hosts file");
    let marker = format!("read {} - ", dns.hosts_file.display());
    let reads = || {
        std::fs::read_to_string(&dns.log)
            .unwrap_or_default()
            .matches(&marker)
            .count()
    };
    let before = reads();
    names::signal(dns.pid, nix::sys::signal::Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while reads() <= before {
        assert!(
            Instant::now() < deadline,
            "dnsmasq did not re-read {}",
            dns.hosts_file.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
