//! ICMP echo and IPv6 router advertisements, end to end on the fake internet:
//! `ping` (Debian's, whose file capability no_new_privs ignores) works in a
//! sandbox with the empty chain, IPv4 and IPv6, root and rootless; through a
//! SOCKS hop, which cannot carry ICMP, it is answered at once
//! "administratively prohibited" and no echo request reaches the internet;
//! and switching IPv6 forwarding on for a session keeps the host's
//! RA-learned default route (`accept_ra` 1 → 2, restored afterwards), with no
//! tentative address on the veth when the application starts.

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{
    modes, one_shot, out, pal, readable_profile, text, tun_usable, wait_clean, wait_clean_except,
    Mode,
};
use pallium_tests::{skip_unless_root, Testbed};

fn have_ping() -> bool {
    if std::path::Path::new("/usr/bin/ping").exists() {
        return true;
    }
    pallium_tests::skip("ping tests: iputils-ping is not installed (.ci/run installs it)");
    false
}

/// One echo request to each of the web host's addresses, its output.
fn ping_web(tb: &Testbed) -> String {
    format!(
        "ping -n -c1 -W10 {} 2>&1; ping -n -6 -c1 -W10 {} 2>&1",
        tb.web_v4(),
        tb.web_v6()
    )
}

/// Counters of the ICMP and ICMPv6 echo requests the web host receives,
/// from anyone.
struct EchoCounter<'a> {
    tb: &'a Testbed,
}

impl<'a> EchoCounter<'a> {
    fn install(tb: &'a Testbed) -> Self {
        let rules = "table inet pingcount {\n\
             counter v4 {}\n counter v6 {}\n\
             chain input { type filter hook input priority 0;\n\
             icmp type echo-request counter name \"v4\"\n\
             icmpv6 type echo-request counter name \"v6\"\n}\n}\n";
        let mut c = tb.exec_in(&tb.web_netns(), ["nft", "-f", "-"]);
        let mut child = c.stdin(Stdio::piped()).spawn().expect("run nft");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "nft counters");
        EchoCounter { tb }
    }

    /// (IPv4, IPv6) echo requests seen so far.
    fn seen(&self) -> (u64, u64) {
        let count = |name: &str| {
            let o = out(self.tb.exec_in(
                &self.tb.web_netns(),
                ["nft", "list", "counter", "inet", "pingcount", name],
            ));
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.split_whitespace()
                .skip_while(|w| *w != "packets")
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no packet count in {s:?}"))
        };
        (count("v4"), count("v6"))
    }
}

/// Echo replies from the web host, one per family.
fn assert_replies(tb: &Testbed, mode: Mode, stdout: &str, stderr: &str) {
    for addr in [tb.web_v4().to_string(), tb.web_v6().to_string()] {
        assert!(
            stdout.contains(&format!("bytes from {addr}: icmp_seq=1")),
            "{mode:?}: no echo reply from {addr}: {stdout}{stderr}"
        );
    }
}

/// The host namespace's `net.ipv4.ping_group_range`: rootless, the direct
/// uplink's engine opens its ping sockets there as the caller.
fn set_host_ping_range(tb: &Testbed, range: &str) {
    let o = out(tb.exec_in(
        &tb.host_netns(),
        [
            "sysctl",
            "-qw",
            &format!("net.ipv4.ping_group_range={range}"),
        ],
    ));
    assert!(o.status.success(), "{o:?}");
}

#[test]
fn ping_works_with_the_empty_chain_root_and_rootless() {
    skip_unless_root!();
    if !have_ping() {
        return;
    }
    let tb = Testbed::new("ping");
    let counter = EchoCounter::install(&tb);
    // Debian's (systemd's) value; a fresh namespace has "1 0".
    set_host_ping_range(&tb, "0 2147483647");
    let mut expect = (0, 0);
    for mode in modes("ping") {
        let (_, stdout, stderr) = one_shot(&tb, mode, "default", &ping_web(&tb));
        assert_replies(&tb, mode, &stdout, &stderr);
        expect = (expect.0 + 1, expect.1 + 1);
        assert_eq!(counter.seen(), expect, "{mode:?}: the requests went out");
        assert_eq!(wait_clean(&tb), Vec::<String>::new(), "{mode:?}");
    }
}

/// Rootless, the direct uplink's engine pings from the host as the caller:
/// where the host admits no unprivileged ping socket, the answer still comes
/// at once, "administratively prohibited", and nothing is sent.
#[test]
fn rootless_ping_the_host_refuses_is_answered_prohibited() {
    skip_unless_root!();
    if !have_ping() || !tun_usable() {
        pallium_tests::skip("rootless ping: /dev/net/tun is not world read-write");
        return;
    }
    let tb = Testbed::new("pingno");
    let counter = EchoCounter::install(&tb);
    set_host_ping_range(&tb, "1 0");
    let (_, stdout, stderr) = one_shot(&tb, Mode::Rootless, "default", &ping_web(&tb));
    assert_prohibited(&tb, Mode::Rootless, &stdout, &stderr);
    assert_eq!(counter.seen(), (0, 0));
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

/// ping's words for "destination unreachable, administratively prohibited"
/// from the address asked about, once per family.
fn assert_prohibited(tb: &Testbed, mode: Mode, stdout: &str, stderr: &str) {
    for line in [
        format!("From {} icmp_seq=1 Packet filtered", tb.web_v4()),
        format!(
            "From {} icmp_seq=1 Destination unreachable: Administratively prohibited",
            tb.web_v6()
        ),
    ] {
        assert!(
            stdout.contains(&line),
            "{mode:?}: no {line:?}: {stdout}{stderr}"
        );
    }
}

#[test]
fn ping_through_a_socks_hop_is_answered_prohibited_and_never_leaves() {
    skip_unless_root!();
    if !have_ping() {
        return;
    }
    let tb = Testbed::new("pingsocks");
    let counter = EchoCounter::install(&tb);
    // The counter counts: the host's own ping arrives.
    let o = out(tb.host_exec(["sh", "-c", &ping_web(&tb)]));
    assert_replies(&tb, Mode::Root, &text(&o).0, "");
    assert_eq!(counter.seen(), (1, 1));
    let proxy = tb.start_microsocks();
    let p = readable_profile(
        "pingsocks",
        &format!(
            r#"{{"chain": [{{"type": "socks", "address": "{}"}}]}}"#,
            proxy.addr()
        ),
    );
    for mode in modes("ping") {
        let (_, stdout, stderr) = one_shot(&tb, mode, &p, &ping_web(&tb));
        assert_prohibited(&tb, mode, &stdout, &stderr);
        assert_eq!(counter.seen(), (1, 1), "{mode:?}: an echo request left");
        assert_eq!(wait_clean(&tb), Vec::<String>::new(), "{mode:?}");
    }
}

/// A router advertisement daemon on the router's link to the host.
struct Radvd(Child);

impl Radvd {
    fn start(tb: &Testbed) -> Radvd {
        let dir = tb.state_dir();
        let child = tb
            .exec_in(
                &tb.router_netns(),
                [
                    "dnsmasq".to_string(),
                    "--keep-in-foreground".into(),
                    "--conf-file=/dev/null".into(),
                    "--no-resolv".into(),
                    "--no-hosts".into(),
                    "--user=root".into(),
                    "--port=0".into(),
                    "--interface=veth-host".into(),
                    "--bind-interfaces".into(),
                    "--enable-ra".into(),
                    "--dhcp-range=::,constructor:veth-host,ra-only,64,10m".into(),
                    "--ra-param=veth-host,4,600".into(),
                    format!("--pid-file={}", dir.join("ra.pid").display()),
                    format!("--log-facility={}", dir.join("ra.log").display()),
                ],
            )
            .stdin(Stdio::null())
            .spawn()
            .expect("start dnsmasq for router advertisements");
        Radvd(child)
    }
}

impl Drop for Radvd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The host's default routes learned from router advertisements.
fn ra_routes(tb: &Testbed) -> Vec<String> {
    let o = out(tb.exec_in(
        &tb.host_netns(),
        ["ip", "-6", "route", "show", "default", "proto", "ra"],
    ));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.split(" expires").next().unwrap_or(l).to_string())
        .collect()
}

/// A leftover of the router advertisements: the route and the SLAAC
/// address's local route on the host's uplink.
// `wait_clean_except` takes a `fn(&String) -> bool`.
#[allow(clippy::ptr_arg)]
fn from_the_ra(finding: &String) -> bool {
    finding.starts_with("route added:")
        && (finding.contains(" proto ra ")
            || finding.contains(" dev eth0 table local proto kernel "))
}

fn host_sysctl(tb: &Testbed, key: &str) -> String {
    let o = out(tb.exec_in(&tb.host_netns(), ["sysctl", "-n", key]));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Switching IPv6 forwarding on used to delete the default route the host
/// had learned from router advertisements (the kernel purges them unless
/// `accept_ra` is 2) and made it ignore later ones: the first session took
/// the host's IPv6 and the sandbox's with it.
#[test]
fn ipv6_forwarding_keeps_the_hosts_router_advertisements() {
    skip_unless_root!();
    let tb = Testbed::new("ipv6ra");
    let _ra = Radvd::start(&tb);
    let deadline = Instant::now() + Duration::from_secs(30);
    while ra_routes(&tb).is_empty() {
        assert!(Instant::now() < deadline, "the host never took the RA");
        std::thread::sleep(Duration::from_millis(100));
    }
    let learned = ra_routes(&tb);
    assert_eq!(host_sysctl(&tb, "net.ipv6.conf.eth0.accept_ra"), "1");
    assert_eq!(host_sysctl(&tb, "net.ipv6.conf.all.forwarding"), "0");
    let p = readable_profile("ipv6ra", r#"{"run": {"command": ["sleep", "infinity"]}}"#);
    let mut run = pal(&tb, Mode::Root, &["run", &p])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn run");
    // The application's view once the session is up: no tentative address.
    let deadline = Instant::now() + Duration::from_secs(15);
    let inet6 = loop {
        let o = out(pal(
            &tb,
            Mode::Root,
            &["exec", &p, "--", "cat", "/proc/net/if_inet6"],
        ));
        if o.status.success() {
            break text(&o).0;
        }
        assert!(Instant::now() < deadline, "the session never came up");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(host_sysctl(&tb, "net.ipv6.conf.all.forwarding"), "1");
    assert_eq!(
        ra_routes(&tb),
        learned,
        "the RA-learned default route stays"
    );
    assert_eq!(host_sysctl(&tb, "net.ipv6.conf.eth0.accept_ra"), "2");
    // Its flags (the fifth column, hex): IFA_F_TENTATIVE is 0x40.
    let eth0: Vec<&str> = inet6.lines().filter(|l| l.ends_with(" eth0")).collect();
    assert_eq!(eth0.len(), 2, "{inet6}");
    for l in eth0 {
        let flags = u32::from_str_radix(l.split_whitespace().nth(4).unwrap(), 16).unwrap();
        assert_eq!(flags & 0x40, 0, "tentative: {l}");
    }
    let o = out(pal(&tb, Mode::Root, &["stop", &p]));
    assert!(o.status.success(), "{o:?}");
    let _ = run.wait();
    // Restored (the leftovers compare accept_ra and forwarding too); what
    // the RA gave the host is the test's own.
    let left: Vec<String> = wait_clean_except(&tb, from_the_ra)
        .into_iter()
        .filter(|f| !from_the_ra(f))
        .collect();
    assert_eq!(left, Vec::<String>::new());
    assert_eq!(host_sysctl(&tb, "net.ipv6.conf.eth0.accept_ra"), "1");
}
