//! The [`Testbed`]: four network namespaces joined by a router, the servers in them, extra hosts
//! on demand (proxies, Tor nodes: see `hosts.rs`), and their teardown.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, Once};

use nix::fcntl::{Flock, FlockArg};

use crate::cmd::{self, netns_exec};
use crate::dns::{DnsQuery, Dnsmasq};
use crate::hosts::{DnsReload, Host, Pool, Registry, SERVICES_BRIDGE};
use crate::names::{self, Names, ETC_NETNS_DIR, NETNS_DIR};
use crate::udp::UdpEcho;
use crate::web::WebServer;
use crate::TestUser;

/// The zone the testbed's DNS server is authoritative for.
pub const ZONE: &str = "pallium.test";
/// The web server's name; resolves to [`Testbed::web_v4`] and [`Testbed::web_v6`].
///
/// Note that glibc's default address ordering (RFC 3484, without RFC 6724's demotion of ULAs)
/// ranks the ULA IPv6 address above IPv4, so a dual-stack client of the host connects over IPv6.
/// Tests that care about the family use [`WEB4_NAME`] / [`WEB6_NAME`] or `curl -4` / `-6`.
pub const WEB_NAME: &str = "web.pallium.test";
/// The web server's IPv4-only name (an A record, no AAAA).
pub const WEB4_NAME: &str = "web4.pallium.test";
/// The web server's IPv6-only name (an AAAA record, no A).
pub const WEB6_NAME: &str = "web6.pallium.test";
/// Set to [`Testbed::name`] in the environment of every command the testbed starts in the host
/// namespace, so the processes they leave behind can be attributed to their testbed.
pub const TESTBED_ENV: &str = "PALLIUM_TESTBED";

const HOST_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const HOST_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xdb8, 0, 0, 0, 0, 0, 2);
pub(crate) const WEB_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const WEB_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xdb8, 1, 0, 0, 0, 0, 0x10);
pub(crate) const DNS_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);
const DNS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xdb8, 2, 0, 0, 0, 0, 0x53);
const STUB_V4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 53);
/// Serialises testbeds that need the whole machine to themselves against all others, across
/// test processes (see [`TestbedBuilder::exclusive`]).
const LOCK_FILE: &str = "/run/ptestbed.lock";
/// The web host's UDP echo port.
const UDP_ECHO_PORT: u16 = 7;
/// The router's MAC on the services bridge, fixed so that adding a port never changes it (a
/// bridge otherwise takes its lowest port's MAC, invalidating its neighbours' ARP entries).
const BRIDGE_MAC: &str = "02:00:5e:00:64:01";

/// `ip netns add` makes /run/netns a shared mount on first use; serialise it so concurrent
/// first uses do not stack mounts.
pub(crate) static NETNS_ADD: Mutex<()> = Mutex::new(());

/// Which resolver the host namespace's `/etc/resolv.conf` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resolver {
    /// `nameserver 198.51.100.53`: the authoritative server on the dns host.
    #[default]
    Direct,
    /// `nameserver 127.0.0.53`: a stub resolver (dnsmasq, no cache) on loopback in the host
    /// namespace that forwards to the dns host, like systemd-resolved.
    Loopback,
}

/// Options for a [`Testbed`]; [`Testbed::builder`] makes one.
#[derive(Debug, Clone)]
pub struct TestbedBuilder {
    hint: String,
    resolver: Resolver,
    exclusive: bool,
}

impl TestbedBuilder {
    /// Which resolver the host's `/etc/resolv.conf` names (default [`Resolver::Direct`]).
    pub fn resolver(mut self, resolver: Resolver) -> Self {
        self.resolver = resolver;
        self
    }

    /// Waits until no other testbed exists (in any test process) and keeps others from starting
    /// while this one lives, so that machine-wide checks such as [`crate::leftovers`] see only
    /// this test's doing.
    pub fn exclusive(mut self) -> Self {
        self.exclusive = true;
        self
    }

    /// Builds the testbed; panics (after tearing down what was built) if that fails.
    pub fn build(self) -> Testbed {
        static CLEANUP: Once = Once::new();
        CLEANUP.call_once(|| {
            for what in names::cleanup_stale() {
                eprintln!("testbed: removed stale {what}");
            }
        });
        let lock = take_lock(self.exclusive);
        let names = Names::new(&self.hint);
        let mut tb = Testbed {
            names,
            resolver: self.resolver,
            netns_created: false,
            web: None,
            udp: None,
            dns: None,
            stub: None,
            hosts: Arc::default(),
            baseline: Baseline::default(),
            _lock: lock,
        };
        // A panic from here on drops `tb`, which removes whatever was created.
        tb.setup();
        tb
    }
}

/// A throwaway fake internet; everything it created is removed when it is dropped.
///
/// | node   | namespace        | IPv4             | IPv6              |
/// |--------|------------------|------------------|-------------------|
/// | host   | [`host_netns`]   | 192.0.2.2/24     | fd00:db8::2/64    |
/// | router | `…-r`            | .1 on each link  | ::1 on each link  |
/// | web    | `…-w`            | 203.0.113.10/24  | fd00:db8:1::10/64 |
/// | dns    | `…-d`            | 198.51.100.53/24 | fd00:db8:2::53/64 |
/// | proxies| `…-<kind>`       | 198.51.100.10–99 | fd00:db8:2::10–99 |
/// | Tor    | `…-tor-…`        | 198.51.100.100–  | fd00:db8:2::100–  |
///
/// The dns host, the proxies ([`Testbed::start_socks`], …) and the Tor nodes
/// ([`Testbed::start_tor`]) share one LAN, a bridge in the router; the web host serves HTTP on
/// port 80 and UDP echo on port 7. The host has default routes (IPv4 and IPv6) via the router
/// and IP forwarding off, like an ordinary machine; the router forwards both families. IPv6 duplicate address detection is off,
/// so addresses work at once. `198.18.0.0/15` is left free for pallium's virtual-DNS pool.
///
/// [`host_netns`]: Testbed::host_netns
#[derive(Debug)]
pub struct Testbed {
    names: Names,
    resolver: Resolver,
    netns_created: bool,
    web: Option<WebServer>,
    udp: Option<UdpEcho>,
    dns: Option<Dnsmasq>,
    stub: Option<Dnsmasq>,
    hosts: Arc<Registry>,
    pub(crate) baseline: Baseline,
    _lock: Flock<File>,
}

/// The host namespace's state right after setup, for [`Testbed::leftovers`].
#[derive(Debug, Default)]
pub(crate) struct Baseline {
    pub(crate) routes: Vec<String>,
    pub(crate) rules: Vec<String>,
    pub(crate) sysctls: Vec<(String, String)>,
}

impl Testbed {
    /// Builds a testbed with default options; `name_hint` (typically the test's name) labels its
    /// state directory.
    pub fn new(name_hint: &str) -> Testbed {
        Testbed::builder(name_hint).build()
    }

    /// Options for a testbed; finish with [`TestbedBuilder::build`].
    pub fn builder(name_hint: &str) -> TestbedBuilder {
        TestbedBuilder {
            hint: name_hint.to_owned(),
            resolver: Resolver::Direct,
            exclusive: false,
        }
    }

    /// The unique prefix of this testbed's names (`pt<pid>-<n>`), also the value of
    /// [`TESTBED_ENV`] in its commands.
    pub fn name(&self) -> &str {
        &self.names.base
    }

    /// The namespace where pallium is started (`ip netns exec <host_netns> …`).
    pub fn host_netns(&self) -> String {
        self.names.netns('h')
    }

    /// The router's namespace.
    pub fn router_netns(&self) -> String {
        self.names.netns('r')
    }

    /// The web host's namespace.
    pub fn web_netns(&self) -> String {
        self.names.netns('w')
    }

    /// The dns host's namespace.
    pub fn dns_netns(&self) -> String {
        self.names.netns('d')
    }

    /// The directory holding this testbed's logs and configuration (kept after a panic for
    /// inspection, removed by a later [`crate::cleanup_stale`]).
    pub fn state_dir(&self) -> &Path {
        &self.names.state_dir
    }

    /// The host's IPv4 address, 192.0.2.2.
    pub fn host_v4(&self) -> Ipv4Addr {
        HOST_V4
    }

    /// The host's IPv6 address, fd00:db8::2.
    pub fn host_v6(&self) -> Ipv6Addr {
        HOST_V6
    }

    /// The web server's IPv4 address, 203.0.113.10.
    pub fn web_v4(&self) -> Ipv4Addr {
        WEB_V4
    }

    /// The web server's IPv6 address, fd00:db8:1::10.
    pub fn web_v6(&self) -> Ipv6Addr {
        WEB_V6
    }

    /// The authoritative DNS server's IPv4 address, 198.51.100.53.
    pub fn dns_v4(&self) -> Ipv4Addr {
        DNS_V4
    }

    /// The authoritative DNS server's IPv6 address, fd00:db8:2::53.
    pub fn dns_v6(&self) -> Ipv6Addr {
        DNS_V6
    }

    /// `http://web.pallium.test/` (dual-stack; see [`WEB_NAME`]).
    pub fn web_url(&self) -> String {
        format!("http://{WEB_NAME}/")
    }

    /// `http://web4.pallium.test/` (IPv4 only).
    pub fn web4_url(&self) -> String {
        format!("http://{WEB4_NAME}/")
    }

    /// `http://web6.pallium.test/` (IPv6 only).
    pub fn web6_url(&self) -> String {
        format!("http://{WEB6_NAME}/")
    }

    /// Which resolver the host's `/etc/resolv.conf` names.
    pub fn resolver(&self) -> Resolver {
        self.resolver
    }

    /// The `nameserver` in the host's `/etc/resolv.conf`.
    pub fn resolver_addr(&self) -> IpAddr {
        match self.resolver {
            Resolver::Direct => IpAddr::V4(DNS_V4),
            Resolver::Loopback => IpAddr::V4(STUB_V4),
        }
    }

    /// `argv` run as root in the host namespace (with the host's `/etc/resolv.conf`), tagged
    /// with [`TESTBED_ENV`].
    pub fn host_exec<S: AsRef<OsStr>>(&self, argv: impl IntoIterator<Item = S>) -> Command {
        let mut cmd = netns_exec(&self.host_netns(), argv);
        cmd.env(TESTBED_ENV, self.name());
        cmd
    }

    /// `argv` run as `user` in the host namespace, with the environment of
    /// [`TestUser::command`] plus [`TESTBED_ENV`].
    pub fn host_exec_as<S: AsRef<OsStr>>(
        &self,
        user: &TestUser,
        argv: impl IntoIterator<Item = S>,
    ) -> Command {
        let tag = OsString::from(format!("{TESTBED_ENV}={}", self.name()));
        let mut inner = user.argv_prefix();
        inner.push(tag);
        inner.extend(argv.into_iter().map(|a| a.as_ref().to_owned()));
        netns_exec(&self.host_netns(), inner)
    }

    /// `argv` run as root in any of this testbed's namespaces (e.g. [`Testbed::web_netns`]).
    pub fn exec_in<S: AsRef<OsStr>>(
        &self,
        netns: &str,
        argv: impl IntoIterator<Item = S>,
    ) -> Command {
        netns_exec(netns, argv)
    }

    /// Client addresses of the requests the web server answered, in order (`192.0.2.2`,
    /// `fd00:db8::2`, …).
    pub fn web_seen(&self) -> Vec<String> {
        self.web.as_ref().map(WebServer::seen).unwrap_or_default()
    }

    /// The web host's UDP echo port (7, both families): every datagram comes back unchanged.
    pub fn udp_echo_port(&self) -> u16 {
        UDP_ECHO_PORT
    }

    /// Source addresses of the datagrams the web host's UDP echo server answered, in order.
    pub fn udp_seen(&self) -> Vec<String> {
        self.udp.as_ref().map(UdpEcho::seen).unwrap_or_default()
    }

    /// Runs `f` on a thread in network namespace `netns` (e.g. [`Testbed::host_netns`]): the
    /// sockets it creates belong to that namespace, as if a program there had made them.
    pub fn in_netns<T: Send>(&self, netns: &str, f: impl FnOnce() -> T + Send) -> T {
        in_netns(netns, f)
    }

    /// A new extra host on the services LAN (see `hosts.rs`).
    pub(crate) fn add_host(&self, kind: &str, pool: Pool, dns: bool) -> Host {
        Host::create(
            &self.hosts,
            &self.names.base,
            &self.names.state_dir,
            kind,
            pool,
            dns,
        )
    }

    /// The queries the authoritative DNS server received.
    pub fn dns_queries(&self) -> Vec<DnsQuery> {
        self.dns.as_ref().map(Dnsmasq::queries).unwrap_or_default()
    }

    /// The queries the loopback stub resolver received (empty with [`Resolver::Direct`]).
    pub fn stub_queries(&self) -> Vec<DnsQuery> {
        self.stub.as_ref().map(Dnsmasq::queries).unwrap_or_default()
    }

    /// Pids of the processes the testbed itself runs in the host namespace.
    pub(crate) fn own_host_pids(&self) -> Vec<u32> {
        self.stub.iter().map(Dnsmasq::pid).collect()
    }

    fn setup(&mut self) {
        std::fs::create_dir_all(&self.names.state_dir).expect("create testbed state dir");
        let [h, r, w, d] = ['h', 'r', 'w', 'd'].map(|role| self.names.netns(role));

        // Namespaces and the veth pairs, each end created directly in its namespace so that no
        // name ever exists in the root namespace.
        {
            let _guard = NETNS_ADD.lock().unwrap_or_else(|e| e.into_inner());
            self.netns_created = true;
            cmd::ip_batch(
                None,
                &format!("netns add {h}\nnetns add {r}\nnetns add {w}\nnetns add {d}\n"),
                false,
            );
        }
        for ns in [&h, &r, &w, &d] {
            write_sysctls(
                ns,
                &[
                    ("net/ipv6/conf/all/accept_dad", "0"),
                    ("net/ipv6/conf/default/accept_dad", "0"),
                ],
            );
        }
        write_sysctls(
            &r,
            &[
                ("net/ipv4/ip_forward", "1"),
                ("net/ipv6/conf/all/forwarding", "1"),
            ],
        );
        // A new namespace copies the root namespace's IPv4 settings
        // (net.core.devconf_inherit_init_net=0), which another test may have changed: pin the
        // host's to those of an ordinary machine, so leftovers() compares against known values.
        write_sysctls(
            &h,
            &[
                ("net/ipv4/ip_forward", "0"),
                ("net/ipv6/conf/all/forwarding", "0"),
                ("net/ipv4/conf/all/route_localnet", "0"),
            ],
        );
        cmd::ip_batch(
            None,
            &format!(
                "link add name veth-host netns {r} type veth peer name eth0 netns {h}\n\
                 link add name veth-web netns {r} type veth peer name eth0 netns {w}\n\
                 link add name veth-dns netns {r} type veth peer name eth0 netns {d}\n"
            ),
            false,
        );
        // The dns host's link is a port of the services bridge, which extra hosts join later.
        cmd::ip_batch(
            Some(&r),
            &format!(
                "link set lo up\nlink set veth-host up\nlink set veth-web up\n\
                 link add {SERVICES_BRIDGE} address {BRIDGE_MAC} type bridge\n\
                 link set veth-dns master {SERVICES_BRIDGE}\nlink set veth-dns up\n\
                 link set {SERVICES_BRIDGE} up\n\
                 addr add 192.0.2.1/24 dev veth-host\naddr add fd00:db8::1/64 dev veth-host nodad\n\
                 addr add 203.0.113.1/24 dev veth-web\naddr add fd00:db8:1::1/64 dev veth-web nodad\n\
                 addr add 198.51.100.1/24 dev {SERVICES_BRIDGE}\n\
                 addr add fd00:db8:2::1/64 dev {SERVICES_BRIDGE} nodad\n"
            ),
            false,
        );
        for (ns, v4, v6, gw4, gw6) in [
            (
                &h,
                "192.0.2.2/24",
                "fd00:db8::2/64",
                "192.0.2.1",
                "fd00:db8::1",
            ),
            (
                &w,
                "203.0.113.10/24",
                "fd00:db8:1::10/64",
                "203.0.113.1",
                "fd00:db8:1::1",
            ),
            (
                &d,
                "198.51.100.53/24",
                "fd00:db8:2::53/64",
                "198.51.100.1",
                "fd00:db8:2::1",
            ),
        ] {
            cmd::ip_batch(
                Some(ns),
                &format!(
                    "link set lo up\nlink set eth0 up\naddr add {v4} dev eth0\n\
                     addr add {v6} dev eth0 nodad\nroute add default via {gw4}\n\
                     route add ::/0 via {gw6}\n"
                ),
                false,
            );
        }

        self.web = Some(WebServer::start(&w, 80));
        self.udp = Some(UdpEcho::start(&w, UDP_ECHO_PORT));
        // Extra hosts' names go into this file, which dnsmasq re-reads on SIGHUP.
        let hosts_file = self.names.state_dir.join("dns-extra-hosts");
        std::fs::write(&hosts_file, "").expect("create the extra hosts file");
        let dns = Dnsmasq::start(
            &d,
            &self.names.state_dir,
            "dns",
            &[
                format!("--addn-hosts={}", hosts_file.display()),
                format!("--local=/{ZONE}/"),
                format!("--host-record={WEB_NAME},{WEB_V4},{WEB_V6}"),
                format!("--host-record={WEB4_NAME},{WEB_V4}"),
                format!("--host-record={WEB6_NAME},{WEB_V6}"),
                format!("--host-record=dns.{ZONE},{DNS_V4},{DNS_V6}"),
            ],
        );
        self.hosts.set_dns(DnsReload {
            pid: dns.pid(),
            log: dns.log_path().to_owned(),
            hosts_file,
        });
        self.dns = Some(dns);
        if self.resolver == Resolver::Loopback {
            self.stub = Some(Dnsmasq::start(
                &h,
                &self.names.state_dir,
                "stub",
                &[
                    format!("--listen-address={STUB_V4}"),
                    "--bind-interfaces".into(),
                    format!("--server={DNS_V4}"),
                    "--cache-size=0".into(),
                ],
            ));
        }
        let etc = self.etc_netns_dir();
        std::fs::create_dir_all(&etc).expect("create /etc/netns entry");
        std::fs::write(
            etc.join("resolv.conf"),
            format!("nameserver {}\n", self.resolver_addr()),
        )
        .expect("write the host's resolv.conf");
        self.baseline = self.snapshot();
    }

    fn etc_netns_dir(&self) -> PathBuf {
        Path::new(ETC_NETNS_DIR).join(self.host_netns())
    }

    fn teardown(&mut self) {
        let strays = self.stray_processes();
        if !strays.is_empty() {
            eprintln!(
                "testbed {}: killing leftover processes: {strays:?}",
                self.name()
            );
        }
        for (pid, _) in &strays {
            names::kill(*pid);
        }
        let extra = self.hosts.teardown();
        self.web = None;
        self.udp = None;
        self.dns = None;
        self.stub = None;
        if self.netns_created {
            let mut script = String::new();
            for ns in extra {
                if Path::new(NETNS_DIR).join(&ns).exists() {
                    script.push_str(&format!("netns del {ns}\n"));
                }
            }
            for role in ['h', 'r', 'w', 'd'] {
                let ns = self.names.netns(role);
                if Path::new(NETNS_DIR).join(&ns).exists() {
                    names::kill_netns_pids(&ns);
                    script.push_str(&format!("netns del {ns}\n"));
                }
            }
            let out = cmd::ip_batch(None, &script, true);
            if !out.status.success() {
                eprintln!(
                    "testbed {}: {}",
                    self.name(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let _ = std::fs::remove_dir_all(self.etc_netns_dir());
        if std::thread::panicking() {
            eprintln!(
                "testbed {}: logs kept in {}",
                self.name(),
                self.names.state_dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.names.state_dir);
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // Never panic here: this runs while unwinding from a failed assertion.
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.teardown())) {
            eprintln!("testbed {}: teardown failed: {e:?}", self.names.base);
        }
    }
}

/// Runs `f` on a thread that has joined network namespace `netns`; sockets it creates stay in
/// that namespace, and `/proc/sys/net` is that namespace's.
pub(crate) fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = Path::new(NETNS_DIR).join(netns);
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// Writes `/proc/sys/<key>` values inside `netns`.
pub(crate) fn write_sysctls(netns: &str, kv: &[(&str, &str)]) {
    let kv: Vec<(String, String)> = kv
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    in_netns(netns, move || {
        for (k, v) in kv {
            let path = Path::new("/proc/sys").join(&k);
            std::fs::write(&path, &v)
                .unwrap_or_else(|e| panic!("write {v} to {}: {e}", path.display()));
        }
    })
}

/// Reads `/proc/sys/<key>` values inside `netns`.
pub(crate) fn read_sysctls(netns: &str, keys: &[&str]) -> Vec<(String, String)> {
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    in_netns(netns, move || {
        keys.into_iter()
            .map(|k| {
                let v =
                    std::fs::read_to_string(Path::new("/proc/sys").join(&k)).unwrap_or_default();
                (k, v.trim().to_owned())
            })
            .collect()
    })
}

fn take_lock(exclusive: bool) -> Flock<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .unwrap_or_else(|e| panic!("open {LOCK_FILE}: {e}"));
    let arg = if exclusive {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockShared
    };
    Flock::lock(file, arg).unwrap_or_else(|(_, e)| panic!("flock {LOCK_FILE}: {e}"))
}
