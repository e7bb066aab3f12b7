//! The fake internet itself: reachability over both families, DNS through the authoritative
//! server and through a loopback stub resolver, the test user, and a clean teardown.

use std::path::Path;
use std::process::Output;

use pallium_tests::{skip_unless_root, Resolver, TestUser, Testbed, WEB4_NAME, WEB_NAME};

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn curl(tb: &Testbed, args: &[&str]) -> String {
    let mut argv = vec!["curl", "-sS", "--max-time", "10"];
    argv.extend_from_slice(args);
    stdout(&tb.host_exec(argv).output().expect("run curl"))
}

#[test]
fn web_by_name_sees_host_ipv4_and_dns_logs_the_query() {
    skip_unless_root!();
    let tb = Testbed::new("web_by_name");
    assert_eq!(curl(&tb, &["-4", &tb.web_url()]), tb.host_v4().to_string());
    assert_eq!(curl(&tb, &[&tb.web4_url()]), tb.host_v4().to_string());
    assert_eq!(
        tb.web_seen(),
        [tb.host_v4().to_string(), tb.host_v4().to_string()]
    );
    // Dual-stack: either family is fine (glibc happens to prefer the ULA).
    let both = [tb.host_v4().to_string(), tb.host_v6().to_string()];
    assert!(both.contains(&curl(&tb, &[&tb.web_url()])));
    let queries = tb.dns_queries();
    for name in [WEB_NAME, WEB4_NAME] {
        assert!(
            queries
                .iter()
                .any(|q| q.name == name && q.qtype == "A" && q.client == tb.host_v4()),
            "{name}: {queries:?}"
        );
    }
    assert!(tb.leftovers().is_empty(), "{:?}", tb.leftovers());
}

#[test]
fn web_over_ipv6_sees_host_ipv6() {
    skip_unless_root!();
    let tb = Testbed::new("web_over_ipv6");
    let url = format!("http://[{}]/", tb.web_v6());
    assert_eq!(curl(&tb, &["-6", "-g", &url]), tb.host_v6().to_string());
    assert_eq!(curl(&tb, &["-6", &tb.web_url()]), tb.host_v6().to_string());
    assert!(tb
        .dns_queries()
        .iter()
        .any(|q| q.name == WEB_NAME && q.qtype == "AAAA"));
}

#[test]
fn loopback_resolver_forwards_to_the_dns_host() {
    skip_unless_root!();
    let tb = Testbed::builder("loopback_resolver")
        .resolver(Resolver::Loopback)
        .build();
    let resolv = stdout(
        &tb.host_exec(["cat", "/etc/resolv.conf"])
            .output()
            .expect("cat"),
    );
    assert_eq!(resolv, "nameserver 127.0.0.53");
    assert_eq!(curl(&tb, &[&tb.web4_url()]), tb.host_v4().to_string());
    assert!(tb
        .stub_queries()
        .iter()
        .any(|q| q.name == WEB4_NAME && q.client.is_loopback()));
    // The stub forwards from the host's own address; it has no cache.
    assert!(tb
        .dns_queries()
        .iter()
        .any(|q| q.name == WEB4_NAME && q.client == tb.host_v4()));
    // The testbed's own stub resolver is not a leftover.
    assert!(tb.leftovers().is_empty(), "{:?}", tb.leftovers());
}

#[test]
fn leftovers_reports_links_tables_sysctls_and_processes() {
    skip_unless_root!();
    let tb = Testbed::new("leftovers_reports");
    let host = tb.host_netns();
    for argv in [
        &[
            "ip", "link", "add", "pallium0", "type", "veth", "peer", "pallium1",
        ][..],
        &["ip", "link", "set", "pallium0", "up"],
        &["nft", "add", "table", "inet", "pallium-x"],
        &["sysctl", "-qw", "net.ipv4.ip_forward=1"],
        &["ip", "route", "add", "198.18.0.0/15", "dev", "pallium0"],
    ] {
        stdout(&tb.exec_in(&host, argv).output().expect("run"));
    }
    let mut sleeper = tb.host_exec(["sleep", "600"]).spawn().expect("sleep");
    let found = tb.leftovers().join("\n");
    for expected in [
        "link pallium0",
        "link pallium1",
        "nft table inet pallium-x",
        "sysctl net/ipv4/ip_forward changed from 0 to 1",
        "route added: 198.18.0.0/15 dev pallium0",
        &format!("process {} sleep", sleeper.id()),
    ] {
        assert!(found.contains(expected), "{expected:?} not in:\n{found}");
    }
    drop(tb);
    // Teardown kills what was left in the host namespace.
    assert!(sleeper.wait().is_ok());
}

#[test]
fn teardown_removes_everything_even_on_panic() {
    skip_unless_root!();
    let tb = Testbed::builder("teardown")
        .resolver(Resolver::Loopback)
        .build();
    let netns: Vec<String> = [
        tb.host_netns(),
        tb.router_netns(),
        tb.web_netns(),
        tb.dns_netns(),
    ]
    .into();
    let state = tb.state_dir().to_owned();
    let etc = Path::new("/etc/netns").join(tb.host_netns());
    assert!(etc.join("resolv.conf").exists());
    let dns_pids: Vec<String> = netns.iter().flat_map(|ns| pids_in(ns)).collect();
    assert_eq!(dns_pids.len(), 2, "two dnsmasq: {dns_pids:?}");

    // A test thread that panics while holding the testbed, as a failing test does.
    let result = std::thread::spawn(move || {
        let _tb = tb;
        panic!("a failing test");
    })
    .join();
    assert!(result.is_err());
    for ns in &netns {
        assert!(!Path::new("/run/netns").join(ns).exists(), "{ns} remains");
    }
    assert!(!etc.exists());
    for pid in dns_pids {
        assert!(
            !Path::new("/proc").join(&pid).exists(),
            "dnsmasq {pid} remains"
        );
    }
    // Kept for inspection after a panic; a later cleanup_stale() removes it.
    assert!(state.exists());
    std::fs::remove_dir_all(state).unwrap();
}

#[test]
fn test_user_runs_staged_binaries_in_the_host_namespace() {
    skip_unless_root!();
    let user = TestUser::get();
    assert!(std::ptr::eq(user, TestUser::get()));
    let dir = user.stage_binaries(&["/usr/bin/id"]);
    let tb = Testbed::new("test_user");
    let id = dir.join("id");
    let out = stdout(
        &tb.host_exec_as(user, [id.as_os_str()])
            .arg("-u")
            .output()
            .expect("id"),
    );
    assert_eq!(out, user.uid().to_string());
    let env = stdout(&tb.host_exec_as(user, ["env"]).output().expect("env"));
    let xdg = format!("XDG_RUNTIME_DIR={}", user.runtime_dir().display());
    assert!(env.lines().any(|l| l == xdg), "{env}");
    assert!(
        env.lines()
            .any(|l| l == format!("PALLIUM_TESTBED={}", tb.name())),
        "{env}"
    );
    // The user reaches the fake internet too.
    let out = tb
        .host_exec_as(user, ["curl", "-sS", "--max-time", "10", &tb.web4_url()])
        .output()
        .expect("curl");
    assert_eq!(stdout(&out), tb.host_v4().to_string());
}

fn pids_in(netns: &str) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", netns])
        .output()
        .expect("ip netns pids");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn cleanup_stale_removes_what_a_dead_test_process_left() {
    skip_unless_root!();
    let mut child = std::process::Command::new("true").spawn().expect("true");
    let dead = child.id();
    child.wait().expect("wait");
    let netns = format!("pt{dead}-0-h");
    let out = std::process::Command::new("ip")
        .args(["netns", "add", &netns])
        .output()
        .expect("ip netns add");
    assert!(out.status.success(), "{out:?}");
    let removed = pallium_tests::cleanup_stale();
    assert!(removed.contains(&format!("netns {netns}")), "{removed:?}");
    assert!(!Path::new("/run/netns").join(&netns).exists());
}

#[test]
fn global_leftovers_sees_a_pallium_netns() {
    skip_unless_root!();
    // Exclusive: no other testbed (so no pallium under test) runs meanwhile.
    let _tb = Testbed::builder("global_leftovers").exclusive().build();
    let name = format!("pallium-t{}", std::process::id());
    let ip = |verb: &str| {
        let out = std::process::Command::new("ip")
            .args(["netns", verb, &name])
            .output()
            .expect("ip netns");
        assert!(out.status.success(), "{out:?}");
    };
    ip("add");
    let found = pallium_tests::leftovers();
    ip("del");
    assert!(found.contains(&format!("netns {name}")), "{found:?}");
    assert!(!pallium_tests::leftovers().contains(&format!("netns {name}")));
}
