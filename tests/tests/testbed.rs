//! The fake internet itself: reachability over both families, DNS through the authoritative
//! server and through a loopback stub resolver, the test user, a clean teardown, the proxy
//! servers (microsocks, dante, tinyproxy, sshd), the UDP echo server and the private Tor network.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use pallium_tests::{
    skip_unless_root, Auth, Resolver, Socks, TestUser, Testbed, WEB4_NAME, WEB_NAME,
};

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
    // A proxy host, whose handle the failing test holds too.
    let socks = tb.start_microsocks();
    let socks_netns = socks.netns().to_owned();
    let socks_pid = socks.pid().to_string();
    assert_eq!(pids_in(&socks_netns), std::slice::from_ref(&socks_pid));
    let mut netns = netns;
    netns.push(socks_netns.clone());

    // A test thread that panics while holding the testbed, as a failing test does.
    let result = std::thread::spawn(move || {
        let _tb = tb;
        let _socks = socks;
        panic!("a failing test");
    })
    .join();
    assert!(result.is_err());
    for ns in &netns {
        assert!(!Path::new("/run/netns").join(ns).exists(), "{ns} remains");
    }
    assert!(!etc.exists());
    for pid in dns_pids.iter().chain([&socks_pid]) {
        assert!(
            !Path::new("/proc").join(pid).exists(),
            "server {pid} remains"
        );
    }
    assert!(!Path::new("/etc/netns").join(&socks_netns).exists());
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

/// Runs curl in the host namespace and returns its exit code and stderr, for requests that must
/// fail.
fn curl_err(tb: &Testbed, args: &[&str]) -> (Option<i32>, String) {
    let mut argv = vec!["curl", "-sS", "--max-time", "10"];
    argv.extend_from_slice(args);
    let out = tb.host_exec(argv).output().expect("run curl");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

#[test]
fn microsocks_exit_is_its_own_address_over_both_families() {
    skip_unless_root!();
    let tb = Testbed::new("microsocks");
    let socks = tb.start_microsocks();
    assert_eq!(socks.name(), "microsocks.pallium.test");
    assert!(socks.auth().is_none());
    let by_ip = format!("socks5h://{}", socks.addr());
    assert_eq!(
        curl(&tb, &["-x", &by_ip, &tb.web4_url()]),
        socks.exit_v4().to_string()
    );
    // The proxy by name (the zone knows it) and over IPv6, to an IPv6-only name.
    let by_name = format!("socks5h://{}:{}", socks.name(), socks.port());
    assert_eq!(
        curl(&tb, &["-x", &by_name, &tb.web6_url()]),
        socks.exit_v6().to_string()
    );
    let by_v6 = format!("socks5h://{}", socks.addr_v6());
    assert_eq!(
        curl(&tb, &["-g", "-x", &by_v6, &tb.web4_url()]),
        socks.exit_v4().to_string()
    );
    assert_eq!(
        tb.web_seen(),
        [
            socks.exit_v4().to_string(),
            socks.exit_v6().to_string(),
            socks.exit_v4().to_string()
        ]
    );
    // The proxy resolved the web host's names, the host only the proxy's.
    let queries = tb.dns_queries();
    assert!(queries
        .iter()
        .any(|q| q.name == WEB4_NAME && q.client == socks.exit_v4()));
    assert!(!queries
        .iter()
        .any(|q| q.name == WEB4_NAME && q.client == tb.host_v4()));
    // A second server gets its own host, address and name.
    let second = tb.start_socks(Socks::MicrosocksAuth(Auth::new("u", "p")));
    assert_eq!(second.name(), "microsocks2.pallium.test");
    assert_ne!(second.exit_v4(), socks.exit_v4());
    let url = second.url().unwrap();
    assert_eq!(
        curl(&tb, &["-x", &url, &tb.web4_url()]),
        second.exit_v4().to_string()
    );
    let wrong = format!("socks5h://u:wrong@{}", second.addr());
    let (code, err) = curl_err(&tb, &["-x", &wrong, &tb.web4_url()]);
    assert_eq!(code, Some(97), "{err}");
    assert!(tb.leftovers().is_empty(), "{:?}", tb.leftovers());
}

#[test]
fn dante_requires_credentials_and_relays_udp() {
    skip_unless_root!();
    let tb = Testbed::new("dante");
    let dante = tb.start_dante();
    let auth = dante.auth().expect("dante authenticates").clone();
    let url = dante.url().unwrap();
    assert!(url.starts_with(&format!("socks5h://{}:{}@", auth.user, auth.pass)));
    assert_eq!(
        curl(&tb, &["-x", &url, &tb.web4_url()]),
        dante.exit_v4().to_string()
    );
    assert_eq!(
        curl(&tb, &["-x", &url, &tb.web6_url()]),
        dante.exit_v6().to_string()
    );
    let wrong = auth.wrong();
    let wrong = format!("socks5h://{}:{}@{}", wrong.user, wrong.pass, dante.addr());
    let (code, err) = curl_err(&tb, &["-x", &wrong, &tb.web4_url()]);
    assert_eq!(code, Some(97), "{err}");
    let (code, err) = curl_err(
        &tb,
        &["-x", &format!("socks5h://{}", dante.addr()), &tb.web4_url()],
    );
    assert_eq!(code, Some(97), "{err}");
    assert_eq!(tb.web_seen().len(), 2);

    // UDP ASSOCIATE from the host namespace to the web host's echo server.
    let target = std::net::SocketAddr::new(tb.web_v4().into(), tb.udp_echo_port());
    let reply = tb.in_netns(&tb.host_netns(), || {
        socks5_udp_echo(dante.addr(), Some(&auth), target, b"ping through dante")
    });
    assert_eq!(reply, b"ping through dante");
    assert_eq!(tb.udp_seen(), [dante.exit_v4().to_string()]);

    // Without authentication: TCP and UDP, no credentials asked.
    let open = tb.start_socks(Socks::DanteNoAuth);
    assert_eq!(open.name(), "dante2.pallium.test");
    assert!(open.auth().is_none());
    assert_eq!(
        curl(&tb, &["-x", &open.url().unwrap(), &tb.web4_url()]),
        open.exit_v4().to_string()
    );
    let reply = tb.in_netns(&tb.host_netns(), || {
        socks5_udp_echo(open.addr(), None, target, b"no auth")
    });
    assert_eq!(reply, b"no auth");
    assert_eq!(tb.udp_seen().last(), Some(&open.exit_v4().to_string()));
    assert!(tb.leftovers().is_empty(), "{:?}", tb.leftovers());
}

#[test]
fn tinyproxy_requires_basic_auth_and_connects_to_any_port() {
    skip_unless_root!();
    let tb = Testbed::new("tinyproxy");
    let http = tb.start_http_proxy(Some(Auth::new("user", "pass")));
    assert_eq!(http.name(), "tinyproxy.pallium.test");
    let url = http.url().unwrap();
    assert_eq!(url, format!("http://user:pass@{}", http.addr()));
    // CONNECT (-p; to port 80, which a default ConnectPort list would refuse) and plain
    // proxying, to the web host by name.
    assert_eq!(
        curl(&tb, &["-p", "-x", &url, &tb.web4_url()]),
        http.exit_v4().to_string()
    );
    assert_eq!(
        curl(&tb, &["-x", &url, &tb.web6_url()]),
        http.exit_v6().to_string()
    );
    // Wrong and missing credentials.
    for bad in [
        format!("http://user:wrong@{}", http.addr()),
        format!("http://{}", http.addr()),
    ] {
        let (code, err) = curl_err(&tb, &["-p", "-x", &bad, &tb.web4_url()]);
        assert_eq!(code, Some(56), "{err}");
        // 407 Proxy Authentication Required (tinyproxy answers 401 to some requests).
        assert!(err.contains("407") || err.contains("401"), "{err}");
    }
    assert_eq!(tb.web_seen().len(), 2);
    assert!(http.log().contains("CONNECT"), "{}", http.log());
}

#[test]
fn sshd_dynamic_forwarding_with_key_auth_as_root_and_as_the_test_user() {
    skip_unless_root!();
    let tb = Testbed::new("sshd");
    let sshd = tb.start_sshd();
    assert_eq!(sshd.name(), "sshd.pallium.test");
    let user = TestUser::get();
    let dest = format!("{}@{}", sshd.user(), sshd.name());
    for (port, as_user) in [(1081, false), (1082, true)] {
        let mut argv: Vec<String> = vec!["ssh".into()];
        argv.extend(sshd.ssh_options());
        argv.extend(["-N", "-D"].map(String::from));
        argv.push(format!("127.0.0.1:{port}"));
        argv.push(dest.clone());
        let mut cmd = if as_user {
            tb.host_exec_as(user, &argv)
        } else {
            tb.host_exec(&argv)
        };
        let mut ssh = cmd
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ssh");
        let proxy = format!("socks5h://127.0.0.1:{port}");
        let seen = poll_curl(&tb, &mut ssh, &["-x", &proxy, &tb.web4_url()]);
        assert_eq!(seen, sshd.exit_v4().to_string(), "as_user={as_user}");
        let _ = ssh.kill();
        let _ = ssh.wait();
    }
    // Another key is refused, without a prompt.
    let other = tb.state_dir().join("other_key");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success());
    let known = format!("UserKnownHostsFile={}", sshd.known_hosts().display());
    let mut argv = vec![
        "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-i",
    ];
    let other = other.display().to_string();
    argv.extend([
        other.as_str(),
        "-o",
        &known,
        "-o",
        "StrictHostKeyChecking=yes",
    ]);
    argv.extend([dest.as_str(), "true"]);
    let out = tb.host_exec(&argv).output().expect("ssh");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("Permission denied (publickey)"), "{err}");
    assert!(tb.leftovers().is_empty(), "{:?}", tb.leftovers());
}

#[test]
fn killed_proxy_refuses_and_its_host_goes_with_the_testbed() {
    skip_unless_root!();
    let tb = Testbed::new("proxy_kill");
    let socks = tb.start_microsocks();
    let http = tb.start_http_proxy(None);
    let url = socks.url().unwrap();
    assert_eq!(
        curl(&tb, &["-x", &url, &tb.web4_url()]),
        socks.exit_v4().to_string()
    );
    socks.kill();
    assert!(!socks.is_running());
    // The host stays (it answers: connection refused, curl's 7), the daemon is gone.
    let (code, err) = curl_err(&tb, &["-x", &url, &tb.web4_url()]);
    assert_eq!(code, Some(7), "{err}");
    assert!(pids_in(socks.netns()).is_empty());
    assert_eq!(tb.web_seen().len(), 1);

    // Dropping a proxy removes its host and its name.
    let name = http.name().to_owned();
    let netns = http.netns().to_owned();
    drop(http);
    assert!(!Path::new("/run/netns").join(&netns).exists());
    assert!(!Path::new("/etc/netns").join(&netns).exists());
    let (code, err) = curl_err(&tb, &[&format!("http://{name}/")]);
    assert_eq!(code, Some(6), "{err}");

    // Dropping the testbed first removes the hosts of live handles too.
    let netns = socks.netns().to_owned();
    drop(tb);
    assert!(!Path::new("/run/netns").join(&netns).exists());
    drop(socks);
}

#[test]
fn udp_echo_answers_and_records_the_source() {
    skip_unless_root!();
    let tb = Testbed::new("udp_echo");
    for target in [
        std::net::SocketAddr::new(tb.web_v4().into(), tb.udp_echo_port()),
        std::net::SocketAddr::new(tb.web_v6().into(), tb.udp_echo_port()),
    ] {
        let reply = tb.in_netns(&tb.host_netns(), || {
            let bind = if target.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let sock = std::net::UdpSocket::bind(bind).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            sock.send_to(b"hello", target).unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = sock.recv_from(&mut buf).unwrap();
            assert_eq!(from, target);
            buf[..n].to_vec()
        });
        assert_eq!(reply, b"hello");
    }
    assert_eq!(
        tb.udp_seen(),
        [tb.host_v4().to_string(), tb.host_v6().to_string()]
    );
}

/// Polls a curl through a proxy that `daemon` is setting up until it answers (or the daemon
/// exits, or two minutes pass) and returns the body.
fn poll_curl(tb: &Testbed, daemon: &mut std::process::Child, args: &[&str]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let mut argv = vec!["curl", "-sS", "--max-time", "10"];
        argv.extend_from_slice(args);
        let out = tb.host_exec(&argv).output().expect("run curl");
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).trim().to_owned();
        }
        if let Some(status) = daemon.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = daemon.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("{status}: {err}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One datagram to `target` through a SOCKS5 server's UDP ASSOCIATE (RFC 1928 §7, with RFC 1929
/// username/password authentication if `auth` is given) and the payload of the reply.
fn socks5_udp_echo(
    server: std::net::SocketAddr,
    auth: Option<&Auth>,
    target: std::net::SocketAddr,
    payload: &[u8],
) -> Vec<u8> {
    let std::net::SocketAddr::V4(target) = target else {
        panic!("IPv4 targets only");
    };
    let timeout = Some(Duration::from_secs(10));
    let mut tcp = TcpStream::connect(server).unwrap();
    tcp.set_read_timeout(timeout).unwrap();
    let mut reply = [0u8; 2];
    let method = if auth.is_some() { 2 } else { 0 };
    tcp.write_all(&[5, 1, method]).unwrap();
    tcp.read_exact(&mut reply).unwrap();
    assert_eq!(reply, [5, method], "method accepted");
    if let Some(auth) = auth {
        let mut login = vec![1, auth.user.len() as u8];
        login.extend(auth.user.as_bytes());
        login.push(auth.pass.len() as u8);
        login.extend(auth.pass.as_bytes());
        tcp.write_all(&login).unwrap();
        tcp.read_exact(&mut reply).unwrap();
        assert_eq!(reply, [1, 0], "login accepted");
    }

    let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
    udp.set_read_timeout(timeout).unwrap();
    let std::net::SocketAddr::V4(local) = tcp.local_addr().unwrap() else {
        unreachable!()
    };
    let mut req = vec![5, 3, 0, 1];
    req.extend(local.ip().octets());
    req.extend(udp.local_addr().unwrap().port().to_be_bytes());
    tcp.write_all(&req).unwrap();
    let mut head = [0u8; 10];
    tcp.read_exact(&mut head).unwrap();
    assert_eq!(
        &head[..4],
        &[5, 0, 0, 1],
        "UDP ASSOCIATE granted (IPv4 relay)"
    );
    let relay = std::net::SocketAddrV4::new(
        [head[4], head[5], head[6], head[7]].into(),
        u16::from_be_bytes([head[8], head[9]]),
    );

    let mut datagram = vec![0, 0, 0, 1];
    datagram.extend(target.ip().octets());
    datagram.extend(target.port().to_be_bytes());
    datagram.extend(payload);
    udp.send_to(&datagram, relay).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = udp.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..10], &datagram[..10], "reply header names the target");
    buf[10..n].to_vec()
}

#[test]
fn private_tor_network_carries_a_client_to_the_web_host_and_the_onion_service() {
    skip_unless_root!();
    let tb = Testbed::new("tor_network");
    let tor = tb.start_tor();
    tor.wait_ready();
    let exits: Vec<String> = tor.exit_addrs().iter().map(|a| a.to_string()).collect();
    let onion = tor.onion_url();
    assert!(onion.ends_with(".onion/"), "{onion}");

    // The network's own client, from the host namespace.
    let socks = format!("socks5h://{}", tor.socks_addr());
    assert!(exits.contains(&curl(&tb, &["-x", &socks, &tb.web4_url()])));

    // A client of our own in the host namespace, configured by client_args() alone.
    let data = tb.state_dir().join("host-tor");
    std::fs::create_dir_all(&data).unwrap();
    let mut argv: Vec<String> = [
        "tor",
        "--defaults-torrc",
        "/dev/null",
        "-f",
        "/dev/null",
        "--ignore-missing-torrc",
        "--SocksPort",
        "127.0.0.1:9150",
        "--DataDirectory",
    ]
    .map(String::from)
    .into();
    argv.push(data.display().to_string());
    argv.extend(tor.client_args());
    let mut client = tb
        .host_exec(&argv)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tor");
    let proxy = "socks5h://127.0.0.1:9150";
    let seen = poll_curl(&tb, &mut client, &["-x", proxy, &tb.web4_url()]);
    assert!(exits.contains(&seen), "{seen} not in {exits:?}");
    // A first visit to an onion service builds three circuits: allow for retries.
    assert_eq!(
        poll_curl(&tb, &mut client, &["-x", proxy, &onion]),
        tor.onion_service_addr().to_string()
    );
    // The exits resolved the web host's name, the host never did.
    let queries = tb.dns_queries();
    assert!(queries
        .iter()
        .any(|q| q.name == WEB4_NAME && exits.contains(&q.client.to_string())));
    assert!(!queries.iter().any(|q| q.client == tb.host_v4()));

    // Without exits, nothing leaves the network; the onion service still answers.
    tor.kill_exit();
    let (code, err) = curl_err(&tb, &["-x", proxy, &tb.web4_url()]);
    assert_ne!(code, Some(0), "{err}");
    let _ = client.kill();
    let _ = client.wait();
    // The network's daemons are the testbed's own, not leftovers.
    assert!(tb.leftovers().is_empty(), "{:?}", tb.leftovers());
}
