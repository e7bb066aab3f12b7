//! Proxy hops end to end, as root and rootless, on the fake internet with real
//! proxies (microsocks, dante, tinyproxy, sshd): the web host sees the hop's
//! exit address, names resolve through the hop (the DNS host never hears
//! from the host's address), UDP goes through dante, chains nest, the kill
//! switch holds when a proxy dies, and bad hops fail with one clear line and
//! nothing left behind.

mod common;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    assert_clean, audit_pid, curl, modes, one_shot, out, pal, pallium, proc_status,
    readable_profile, text, tun_usable, wait_up, Mode,
};
use pallium_tests::{skip_unless_root, Auth, Socks, TestUser, Testbed, WEB4_NAME, WEB6_NAME};

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// A `pallium run PROFILE` in the background, its stderr collected.
struct Session {
    child: std::process::Child,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Session {
    fn start(tb: &Testbed, mode: Mode, profile: &str) -> Session {
        Session::spawn(pal(tb, mode, &["run", profile]))
    }

    /// `cmd` (a `pallium run`) in the background.
    fn spawn(mut cmd: Command) -> Session {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn run");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Session {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Wait until the session's stderr shows `needle` (a warning).
    fn wait_stderr(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "never saw {needle:?}: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `pallium stop`, then wait for the run to end.
    fn stop(mut self, tb: &Testbed, mode: Mode, profile: &str) {
        let _ = out(pal(tb, mode, &["stop", profile]));
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// `curl http://web4.pallium.test/` in a one-shot session of `profile` works
/// and the web host saw `exit`; then nothing is left behind.
fn exits_at(tb: &Testbed, mode: Mode, profile: &str, exit: std::net::Ipv4Addr) {
    let (ok, stdout, stderr) = one_shot(tb, mode, profile, &curl(&format!("http://{WEB4_NAME}/")));
    assert!(ok, "{mode:?}: {stdout}{stderr}");
    assert_eq!(lines(&stdout), [exit.to_string()], "{mode:?}: {stderr}");
    assert_clean(tb);
}

/// `script` in the running session fails, and nothing it tried reached the
/// web host.
fn assert_blocked(tb: &Testbed, mode: Mode, profile: &str, script: &str) {
    let before = tb.web_seen().len();
    let o = out(pal(tb, mode, &["exec", profile, "--", "sh", "-c", script]));
    assert!(
        !o.status.success(),
        "{mode:?}: traffic still flows: {:?}",
        text(&o)
    );
    let seen = tb.web_seen();
    assert_eq!(
        seen.len(),
        before,
        "{mode:?}: something reached the web host: {seen:?}"
    );
}

/// A running root session (`sleep 600`) behind `tor_hop`, up once `web`
/// answers through it.
fn running_tor(tb: &Testbed, name: &str, tor_hop: &str, web: &str) -> (String, Session) {
    let p = readable_profile(
        name,
        &format!(r#"{{"chain": [{tor_hop}], "run": {{"command": ["sleep", "600"]}}}}"#),
    );
    let session = Session::start(tb, Mode::Root, &p);
    wait_up(tb, Mode::Root, &p, web, Duration::from_secs(150));
    (p, session)
}

/// No query reached the DNS host from the host namespace's own addresses.
fn assert_no_dns_from_host(tb: &Testbed) {
    let q = tb.dns_queries();
    let host: [IpAddr; 2] = [tb.host_v4().into(), tb.host_v6().into()];
    assert!(
        q.iter().all(|q| !host.contains(&q.client)),
        "a DNS query left from the host's address: {q:?}"
    );
}

#[test]
fn socks5_hop_exits_at_the_proxy_and_resolves_names_there() {
    skip_unless_root!();
    let tb = Testbed::new("hopsocks");
    let proxy = tb.start_microsocks();
    for mode in modes("hops") {
        let p = readable_profile(
            "socks5",
            &format!(
                r#"{{"chain": [{{"type": "socks", "address": "{}"}}]}}"#,
                proxy.addr()
            ),
        );
        let script = format!(
            "{}; {}; {}",
            curl(&format!("http://{WEB4_NAME}/")),
            curl(&format!("http://{WEB6_NAME}/")),
            curl(&format!("http://{}/", tb.web_v4()))
        );
        let (ok, stdout, stderr) = one_shot(&tb, mode, &p, &script);
        assert!(ok, "{mode:?}: {stdout}{stderr}");
        assert_eq!(
            lines(&stdout),
            [
                proxy.exit_v4().to_string(),
                proxy.exit_v6().to_string(),
                proxy.exit_v4().to_string()
            ],
            "{mode:?}: {stderr}"
        );
        assert!(stderr.contains("hop 1 (socks)"), "progress shown: {stderr}");
        assert_clean(&tb);
    }
    // The names were resolved by the proxy, never from the host.
    let q = tb.dns_queries();
    let proxy_ip: IpAddr = proxy.exit_v4().into();
    let proxy_ip6: IpAddr = proxy.exit_v6().into();
    assert!(
        q.iter()
            .any(|q| q.name == WEB4_NAME && (q.client == proxy_ip || q.client == proxy_ip6)),
        "{q:?}"
    );
    assert_no_dns_from_host(&tb);
    assert!(tb.web_seen().iter().all(|a| a != &tb.host_v4().to_string()));
}

#[test]
fn socks_version_4_and_a_proxy_given_by_name() {
    skip_unless_root!();
    let tb = Testbed::new("hopsocks4");
    // microsocks speaks only SOCKS5; dante speaks 4 (not 4a: Tor's SOCKS
    // port carries the 4a case in the Tor test).
    let proxy = tb.start_socks(Socks::DanteNoAuth);
    let web = tb.web_v4();
    let (version, target) = ("4", format!("http://{web}/"));
    {
        let p = readable_profile(
            "socks4",
            &format!(
                r#"{{"chain": [{{"type": "socks", "version": {version}, "address": "{}:{}"}}]}}"#,
                proxy.name(),
                proxy.port()
            ),
        );
        let (ok, stdout, stderr) = one_shot(&tb, Mode::Root, &p, &curl(&target));
        assert!(ok, "socks {version}: {stdout}{stderr}");
        assert_eq!(lines(&stdout), [proxy.exit_v4().to_string()], "{stderr}");
    }
    assert_clean(&tb);
}

#[test]
fn dante_with_credentials_carries_tcp_and_udp() {
    skip_unless_root!();
    let tb = Testbed::new("hopdante");
    let proxy = tb.start_dante();
    let auth = proxy.auth().expect("dante requires credentials").clone();
    let echo = tb.udp_echo_port();
    let udp = format!(
        "python3 -c \"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5); s.sendto(b'ping-pallium', ('{}', {echo})); print(s.recvfrom(100)[0].decode())\"",
        tb.web_v4()
    );
    for mode in modes("hops") {
        let p = readable_profile(
            "dante",
            &format!(
                r#"{{"chain": [{{"type": "socks", "address": "{}", "username": "{}", "password": "{}"}}]}}"#,
                proxy.addr(),
                auth.user,
                auth.pass
            ),
        );
        let script = format!("{}; {udp}", curl(&format!("http://{WEB4_NAME}/")));
        let (ok, stdout, stderr) = one_shot(&tb, mode, &p, &script);
        assert!(ok, "{mode:?}: {stdout}{stderr}");
        let l = lines(&stdout);
        assert_eq!(l[0], proxy.exit_v4().to_string(), "{mode:?}: {stderr}");
        assert!(
            l.iter().any(|l| l.contains("ping-pallium")),
            "{mode:?}: UDP echo came back: {stdout}{stderr}"
        );
        assert_clean(&tb);
    }
    let seen = tb.udp_seen();
    assert!(
        seen.iter().any(|a| a == &proxy.exit_v4().to_string()),
        "UDP left through dante: {seen:?}"
    );
    assert!(
        !seen.iter().any(|a| a == &tb.host_v4().to_string()),
        "UDP leaked: {seen:?}"
    );
    assert_no_dns_from_host(&tb);
}

#[test]
fn http_connect_hop_with_basic_auth() {
    skip_unless_root!();
    let tb = Testbed::new("hophttp");
    let auth = Auth::new("alice", "s3cret");
    let proxy = tb.start_http_proxy(Some(auth.clone()));
    for mode in modes("hops") {
        let p = readable_profile(
            "http",
            &format!(
                r#"{{"chain": [{{"type": "http", "address": "{}", "username": "{}", "password": "{}"}}]}}"#,
                proxy.addr(),
                auth.user,
                auth.pass
            ),
        );
        exits_at(&tb, mode, &p, proxy.exit_v4());
    }
    assert_no_dns_from_host(&tb);
}

#[test]
fn two_hops_nest_socks_then_http() {
    skip_unless_root!();
    let tb = Testbed::new("hopchain");
    let socks = tb.start_microsocks();
    let http = tb.start_http_proxy(None);
    for mode in modes("hops") {
        let p = readable_profile(
            "chain2",
            &format!(
                r#"{{"chain": [{{"type": "socks", "address": "{}"}}, {{"type": "http", "address": "{}"}}]}}"#,
                socks.addr(),
                http.addr()
            ),
        );
        let (ok, stdout, stderr) = one_shot(&tb, mode, &p, &curl(&format!("http://{WEB4_NAME}/")));
        assert!(ok, "{mode:?}: {stdout}{stderr}");
        // The web host sees the last hop; the last hop was reached through the first.
        assert_eq!(lines(&stdout), [http.exit_v4().to_string()], "{stderr}");
        let log = http.log();
        assert!(
            log.contains(&socks.exit_v4().to_string()),
            "tinyproxy saw the SOCKS proxy as its client: {log}"
        );
        assert_clean(&tb);
        // `--namespace 1`: where hop 2 connects from, behind hop 1 only
        // (names still resolve, through hop 1); `--namespace 0`: where hop 1
        // connects from, this namespace as root, leaving from the host's
        // address (rootless it is the caller's own: refused).
        for (ns, url, exit) in [
            ("1", format!("http://{WEB4_NAME}/"), socks.exit_v4()),
            ("0", format!("http://{}/", tb.web_v4()), tb.host_v4()),
        ] {
            let o = out(pal(
                &tb,
                mode,
                &[
                    "exec",
                    "--one-shot",
                    "--namespace",
                    ns,
                    &p,
                    "--",
                    "sh",
                    "-c",
                    &curl(&url),
                ],
            ));
            let (stdout, stderr) = text(&o);
            if mode == Mode::Rootless && ns == "0" {
                // Rootless, N0 is the caller's own namespace: one clear
                // line, nothing started.
                assert!(!o.status.success(), "{stdout}{stderr}");
                assert!(
                    stderr.contains("namespace 0 is your own network namespace")
                        && stderr.lines().count() == 1,
                    "{stderr}"
                );
                assert_clean(&tb);
                continue;
            }
            assert!(
                o.status.success(),
                "{mode:?} --namespace {ns}: {stdout}{stderr}"
            );
            assert_eq!(
                lines(&stdout),
                [exit.to_string()],
                "{mode:?} --namespace {ns}: {stderr}"
            );
            let skips = if ns == "1" {
                "traffic skips hop 2"
            } else {
                "traffic skips hops 1–2"
            };
            assert!(stderr.contains(skips), "{stderr}");
            assert_clean(&tb);
        }
    }
    // Out of range: one clear line, nothing started.
    let p = readable_profile(
        "chain2run",
        &format!(
            r#"{{"chain": [{{"type": "socks", "address": "{}"}}, {{"type": "http", "address": "{}"}}], "run": {{"command": ["sleep", "600"]}}}}"#,
            socks.addr(),
            http.addr()
        ),
    );
    let o = out(pal(
        &tb,
        Mode::Root,
        &["exec", "--one-shot", "--namespace", "-4", &p, "--", "true"],
    ));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("cannot be smaller than -3"),
        "{:?}",
        text(&o)
    );
    // Into a running session.
    let session = Session::start(&tb, Mode::Root, &p);
    wait_up(
        &tb,
        Mode::Root,
        &p,
        &format!("http://{WEB4_NAME}/"),
        Duration::from_secs(30),
    );
    let o = out(pal(
        &tb,
        Mode::Root,
        &[
            "exec",
            "--namespace",
            "-2",
            &p,
            "--",
            "sh",
            "-c",
            &curl(&format!("http://{WEB4_NAME}/")),
        ],
    ));
    assert_eq!(
        lines(&text(&o).0),
        [socks.exit_v4().to_string()],
        "{:?}",
        text(&o)
    );
    session.stop(&tb, Mode::Root, &p);
    assert_clean(&tb);
    assert_no_dns_from_host(&tb);
}

#[test]
fn hop_dns_list_is_forwarded_through_the_proxy_over_tcp() {
    skip_unless_root!();
    let tb = Testbed::new("hopdns");
    let proxy = tb.start_microsocks();
    let p = readable_profile(
        "socksdns",
        &format!(
            r#"{{"chain": [{{"type": "socks", "address": "{}", "dns": ["tcp://{}"]}}]}}"#,
            proxy.addr(),
            tb.dns_v4()
        ),
    );
    let script = format!(
        "cat /etc/resolv.conf; {}",
        curl(&format!("http://{WEB4_NAME}/"))
    );
    let (ok, stdout, stderr) = one_shot(&tb, Mode::Root, &p, &script);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("nameserver {}", tb.dns_v4())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&proxy.exit_v4().to_string()),
        "{stdout}{stderr}"
    );
    // The query reached the listed server from the proxy's address.
    let q = tb.dns_queries();
    assert!(
        q.iter()
            .any(|q| q.name == WEB4_NAME && q.client == IpAddr::from(proxy.exit_v4())),
        "{q:?}"
    );
    assert_no_dns_from_host(&tb);
    assert_clean(&tb);
}

#[test]
fn killing_the_proxy_stops_traffic_and_nothing_leaks() {
    skip_unless_root!();
    let tb = Testbed::new("hopkill");
    for mode in modes("hops") {
        let proxy = tb.start_microsocks();
        let p = readable_profile(
            "kill",
            &format!(
                r#"{{"chain": [{{"type": "socks", "address": "{}"}}], "run": {{"command": ["sleep", "600"]}}}}"#,
                proxy.addr()
            ),
        );
        let session = Session::start(&tb, mode, &p);
        let url = format!("http://{}/", tb.web_v4());
        let first = wait_up(&tb, mode, &p, &url, Duration::from_secs(20));
        assert_eq!(lines(&first), [proxy.exit_v4().to_string()]);
        // Every process of the session, the netbroker serving the hop
        // included, stays within its capability policy.
        let audit = out(pal(&tb, mode, &["audit", &p]));
        assert!(audit.status.success(), "{mode:?}: {:?}", text(&audit));
        proxy.kill();
        assert_blocked(
            &tb,
            mode,
            &p,
            "curl -sS --max-time 3 http://203.0.113.10/ ; curl -sS --max-time 3 http://web4.pallium.test/",
        );
        session.stop(&tb, mode, &p);
        assert_clean(&tb);
    }
    assert!(!tb.web_seen().contains(&tb.host_v4().to_string()));
}

#[test]
fn ssh_hop_exits_at_the_ssh_server() {
    skip_unless_root!();
    let tb = Testbed::new("hopssh");
    let sshd = tb.start_sshd();
    let args: Vec<String> = sshd.ssh_options();
    let args_json = serde_json::to_string(&args).unwrap();
    for mode in modes("hops") {
        // Root: ssh runs as the account that owns the key.
        let user = match mode {
            Mode::Root => format!(r#", "user": "{}""#, TestUser::NAME),
            Mode::Rootless => String::new(),
        };
        let p = readable_profile(
            "ssh",
            &format!(
                r#"{{"chain": [{{"type": "ssh", "destination": "{}@{}", "ssh_args": {args_json}{user}}}]}}"#,
                sshd.user(),
                sshd.addr().ip()
            ),
        );
        exits_at(&tb, mode, &p, sshd.exit_v4());
    }
    assert_no_dns_from_host(&tb);
}

#[test]
fn bad_hops_fail_with_one_clear_line_and_leave_nothing() {
    skip_unless_root!();
    let tb = Testbed::new("hopbad");
    let dante = tb.start_dante();
    let auth = dante.auth().unwrap().wrong();
    let sshd = tb.start_sshd();
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!(
                r#"{{"chain": [{{"type": "socks", "address": "{}", "username": "{}", "password": "{}"}}]}}"#,
                dante.addr(),
                auth.user,
                auth.pass
            ),
            vec!["hop 1 (socks)", "rejected"],
        ),
        (
            // Nothing listens there.
            format!(
                r#"{{"chain": [{{"type": "socks", "address": "{}:9"}}]}}"#,
                tb.web_v4()
            ),
            vec!["hop 1 (socks)", "203.0.113.10:9"],
        ),
        (
            r#"{"chain": [{"type": "tor", "tor_path": "/nonexistent/tor"}]}"#.to_string(),
            vec!["hop 1 (tor)", "tor_path"],
        ),
        (
            // No key: BatchMode fails at once instead of prompting.
            format!(
                r#"{{"chain": [{{"type": "ssh", "destination": "nobody@{}", "ssh_args": ["-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "IdentityFile=/nonexistent"], "timeout": 10}}]}}"#,
                sshd.addr().ip()
            ),
            vec!["hop 1 (ssh)", "ssh exited"],
        ),
    ];
    for (json, needles) in cases {
        let p = readable_profile("bad", &json);
        let (ok, stdout, stderr) = one_shot(&tb, Mode::Root, &p, "echo ran");
        assert!(!ok, "{json}: {stdout}{stderr}");
        assert!(!stdout.contains("ran"), "{json}: the command ran");
        let last = stderr.lines().last().unwrap_or_default();
        for n in needles {
            assert!(last.contains(n), "{json}: '{n}' not in the error: {stderr}");
        }
        // The error once: everything else is a hop's progress line.
        let others: Vec<&str> = stderr
            .lines()
            .filter(|l| *l != last && !l.starts_with("pallium: hop "))
            .collect();
        assert!(others.is_empty(), "{json}: more than the error: {stderr}");
        assert_clean(&tb);
    }
}

/// One Tor network for every Tor case (it takes ~25 s to come up): the exit
/// address, names resolved by Tor, `.onion`, SOCKS4a to a Tor SOCKS port,
/// socks → tor → http, rootless, a bootstrap timeout, and the kill switch.
#[test]
fn tor_hop_end_to_end() {
    skip_unless_root!();
    let tb = Testbed::new("hoptor");
    let tor = tb.start_tor();
    let socks = tb.start_microsocks();
    let http = tb.start_http_proxy(None);
    tor.wait_ready();
    let exits: Vec<String> = tor.exit_addrs().iter().map(|a| a.to_string()).collect();
    let args = serde_json::to_string(&tor.client_args()).unwrap();
    let tor_hop = format!(r#"{{"type": "tor", "timeout": 120, "tor_args": {args}}}"#);
    let web = format!("http://{WEB4_NAME}/");

    for mode in modes("hops") {
        let p = readable_profile("tor", &format!(r#"{{"chain": [{tor_hop}]}}"#));
        let script = format!("{}; {}", curl(&web), curl(&tor.onion_url()));
        let (ok, stdout, stderr) = one_shot(&tb, mode, &p, &script);
        assert!(ok, "{mode:?}: {stdout}{stderr}");
        let l = lines(&stdout);
        assert!(
            exits.contains(&l[0]),
            "{mode:?}: exit {l:?} not in {exits:?}: {stderr}"
        );
        assert_eq!(
            l.get(1),
            Some(&tor.onion_service_addr().to_string()),
            "{mode:?}: the .onion URL: {stderr}"
        );
        assert!(
            stderr.contains("hop 1 (tor): tor: bootstrapped 100%"),
            "bootstrap progress shown: {stderr}"
        );
        assert_clean(&tb);
    }

    // SOCKS4a: the name travels to the proxy (here the network's own Tor client).
    let p = readable_profile(
        "socks4a",
        &format!(
            r#"{{"chain": [{{"type": "socks", "version": "4a", "address": "{}"}}]}}"#,
            tor.socks_addr()
        ),
    );
    // The network's own Tor client may still be building its first circuit
    // (a CI run under load saw curl's 10 s pass with no answer): try again.
    let exit_of = |out: &str| lines(out).first().filter(|l| exits.contains(l)).cloned();
    let mut attempt = one_shot(&tb, Mode::Root, &p, &curl(&web));
    for _ in 0..2 {
        if attempt.0 && exit_of(&attempt.1).is_some() {
            break;
        }
        eprintln!("socks4a: retrying after {:?}", attempt);
        attempt = one_shot(&tb, Mode::Root, &p, &curl(&web));
    }
    let (ok, stdout, stderr) = attempt;
    assert!(ok, "socks4a: {stdout}{stderr}");
    assert!(exit_of(&stdout).is_some(), "socks4a: {stdout}{stderr}");

    // socks → tor → http: tor reaches the network through microsocks, and
    // tinyproxy is reached through Tor.
    let p = readable_profile(
        "tor3",
        &format!(
            r#"{{"chain": [{{"type": "socks", "address": "{}"}}, {tor_hop}, {{"type": "http", "address": "{}"}}]}}"#,
            socks.addr(),
            http.addr()
        ),
    );
    let (ok, stdout, stderr) = one_shot(&tb, Mode::Root, &p, &curl(&web));
    assert!(ok, "three hops: {stdout}{stderr}");
    assert_eq!(lines(&stdout), [http.exit_v4().to_string()], "{stderr}");
    let log = http.log();
    assert!(
        exits.iter().any(|e| log.contains(e.as_str())),
        "tinyproxy's client was a Tor exit: {log}"
    );
    assert_clean(&tb);

    // onion_support: false answers .onion names with NXDOMAIN while other
    // names still resolve through Tor; builtin_dns: false leaves no DNS at
    // all, while addresses still go through Tor.
    let fails = |url: &str| format!("curl -sS --max-time 10 {url}; echo \"rc=$?\"");
    for (key, script) in [
        (
            "onion_support",
            format!("{}; {}", curl(&web), fails(&tor.onion_url())),
        ),
        (
            "builtin_dns",
            format!(
                "{}; {}",
                curl(&format!("http://{}/", tb.web_v4())),
                fails(&web)
            ),
        ),
    ] {
        let p = readable_profile(
            &format!("tor-no-{key}"),
            &format!(
                r#"{{"chain": [{{"type": "tor", "timeout": 120, "{key}": false, "tor_args": {args}}}]}}"#
            ),
        );
        let (ok, stdout, stderr) = one_shot(&tb, Mode::Root, &p, &script);
        assert!(ok, "{key}: {stdout}{stderr}");
        let l = lines(&stdout);
        assert!(exits.contains(&l[0]), "{key}: {l:?}: {stderr}");
        // curl's exit code 6: "Could not resolve host".
        assert_eq!(
            l.get(1).map(String::as_str),
            Some("rc=6"),
            "{key}: {stderr}"
        );
        assert_clean(&tb);
    }

    // A bootstrap that cannot finish in time says how far it got.
    let p = readable_profile(
        "tor-timeout",
        &format!(r#"{{"chain": [{{"type": "tor", "timeout": 1, "tor_args": {args}}}]}}"#),
    );
    let (ok, stdout, stderr) = one_shot(&tb, Mode::Root, &p, "echo ran");
    assert!(!ok && !stdout.contains("ran"), "{stdout}{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("hop 1 (tor)") && last.contains("within 1 s") && last.contains("got to"),
        "{stderr}"
    );
    assert_clean(&tb);

    // The hop's own tor dies mid-session: the user is told, and the
    // application's traffic stops.
    let (p, session) = running_tor(&tb, "tordead", &tor_hop, &web);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(audit_pid(&tb, Mode::Root, &p, "hop:tor")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    session.wait_stderr("hop 1: stopped: tor", Duration::from_secs(30));
    assert_blocked(
        &tb,
        Mode::Root,
        &p,
        "curl -sS --max-time 5 http://203.0.113.10/",
    );
    session.stop(&tb, Mode::Root, &p);
    assert_clean(&tb);

    // The kill switch: with the exits gone nothing reaches the web host.
    let (p, session) = running_tor(&tb, "torkill", &tor_hop, &web);
    // tor runs as its own user with nothing: audit finds no excess.
    let audit = out(pal(&tb, Mode::Root, &["audit", &p]));
    let (a_out, a_err) = text(&audit);
    assert!(audit.status.success(), "{a_out}{a_err}");
    assert!(a_out.contains("hop:tor"), "{a_out}");
    // The hop's engine served the application through tor's unix socket
    // with no unix socket of its own: its seccomp filter, the one every
    // engine has, kills it for any (netbroker engine::filter's tests); the
    // netbroker connected each one for it over its dial channel.
    let engine = audit_pid(&tb, Mode::Root, &p, "engine");
    let st = proc_status(engine);
    assert_eq!(st["Seccomp"], "2", "the tor hop's engine is filtered");
    assert_eq!(st["NoNewPrivs"], "1");
    assert_eq!(st["CapEff"], "0000000000000000");
    tor.kill_exit();
    assert_blocked(
        &tb,
        Mode::Root,
        &p,
        "curl -sS --max-time 10 http://203.0.113.10/",
    );
    session.stop(&tb, Mode::Root, &p);
    assert_clean(&tb);
    assert_no_dns_from_host(&tb);
    assert!(!tb.web_seen().contains(&tb.host_v4().to_string()));
}

#[test]
fn a_dead_hop_daemon_is_reported_and_its_traffic_stops() {
    skip_unless_root!();
    let tb = Testbed::new("hopdead");
    let sshd = tb.start_sshd();
    let args_json = serde_json::to_string(&sshd.ssh_options()).unwrap();
    let p = readable_profile(
        "sshdead",
        &format!(
            r#"{{"chain": [{{"type": "ssh", "destination": "{}@{}", "user": "{}", "ssh_args": {args_json}}}], "run": {{"command": ["sleep", "600"]}}}}"#,
            sshd.user(),
            sshd.addr().ip(),
            TestUser::NAME
        ),
    );
    let session = Session::start(&tb, Mode::Root, &p);
    let url = format!("http://{}/", tb.web_v4());
    let first = wait_up(&tb, Mode::Root, &p, &url, Duration::from_secs(30));
    assert_eq!(lines(&first), [sshd.exit_v4().to_string()]);
    // `pallium list` names the session's hops.
    let list = text(&out(pal(&tb, Mode::Root, &["list"]))).0;
    assert!(
        list.lines().any(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            cells.first().is_some_and(|p| p.ends_with("sshdead.json"))
                && cells.get(3) == Some(&"ssh")
        }),
        "{list}"
    );
    // The server goes away: ssh exits, and the user is told.
    sshd.kill();
    session.wait_stderr("hop 1: stopped: ssh", Duration::from_secs(60));
    assert_blocked(
        &tb,
        Mode::Root,
        &p,
        "curl -sS --max-time 3 http://203.0.113.10/",
    );
    session.stop(&tb, Mode::Root, &p);
    assert_clean(&tb);
}

#[test]
fn socksapp_hop_runs_the_program_and_a_proxy_at_an_ipv6_address_works() {
    skip_unless_root!();
    let tb = Testbed::new("hopapp");
    let proxy = tb.start_microsocks();
    let microsocks = ["/usr/bin/microsocks", "/usr/local/bin/microsocks"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("microsocks is installed (.ci/run installs it)");
    for mode in modes("hops") {
        // microsocks as the "SOCKS app": it runs where the chain starts (the
        // testbed's host namespace), so the web host sees the host's address.
        let p = readable_profile(
            "socksapp",
            &format!(
                r#"{{"chain": [{{"type": "socksapp", "user": "nobody", "cmd": ["{microsocks}", "-i", "127.0.0.1", "-p", "{{port}}"]}}]}}"#
            ),
        );
        // By address: see socksapp_then_a_name_stalls below for names.
        let script = curl(&format!("http://{}/", tb.web_v4()));
        let (ok, stdout, stderr) = one_shot(&tb, mode, &p, &script);
        assert!(ok, "{mode:?}: {stdout}{stderr}");
        assert_eq!(lines(&stdout), [tb.host_v4().to_string()], "{stderr}");
        assert_clean(&tb);
        // A proxy given as [v6]:port.
        let p = readable_profile(
            "socks-v6",
            &format!(
                r#"{{"chain": [{{"type": "socks", "address": "{}"}}]}}"#,
                proxy.addr_v6()
            ),
        );
        exits_at(&tb, mode, &p, proxy.exit_v4());
    }
}

/// Known problem, kept as a reproduction: through a socksapp hop (microsocks
/// run by pallium as `nobody` in the host namespace), a request by name right
/// after one by address stalls until curl's timeout — the name works alone in
/// a running session, and the same sequence works through a socks hop to the
/// same microsocks started by hand. Not understood yet.
#[test]
#[ignore]
fn socksapp_then_a_name_stalls() {
    skip_unless_root!();
    let tb = Testbed::new("hopappname");
    let p = readable_profile(
        "socksapp-name",
        r#"{"chain": [{"type": "socksapp", "user": "nobody", "cmd": ["/usr/bin/microsocks", "-i", "127.0.0.1", "-p", "{port}"]}]}"#,
    );
    let script = format!(
        "{}; {}",
        curl(&format!("http://{}/", tb.web_v4())),
        curl(&format!("http://{WEB4_NAME}/"))
    );
    let (ok, stdout, stderr) = one_shot(&tb, Mode::Root, &p, &script);
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(
        lines(&stdout),
        [tb.host_v4().to_string(), tb.host_v4().to_string()],
        "{stderr}"
    );
}

/// SIGKILL of the supervisor or of the netbroker of a session whose hop runs
/// a daemon (socksapp: microsocks) ends the session and leaves nothing: no
/// daemon, namespace, link, table or process.
#[test]
fn kill_9_of_a_session_with_a_daemon_hop_leaves_nothing() {
    skip_unless_root!();
    let tb = Testbed::new("hopkill9");
    let p = readable_profile(
        "socksapp-kill9",
        r#"{"chain": [{"type": "socksapp", "user": "nobody", "cmd": ["/usr/bin/microsocks", "-i", "127.0.0.1", "-p", "{port}"]}], "run": {"command": ["sleep", "600"]}}"#,
    );
    let url = format!("http://{}/", tb.web_v4());
    for victim in ["supervisor", "netbroker"] {
        let mut session = Session::start(&tb, Mode::Root, &p);
        wait_up(&tb, Mode::Root, &p, &url, Duration::from_secs(30));
        // The hop's daemon is there, then gone with the session.
        audit_pid(&tb, Mode::Root, &p, "hop:socksapp");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(audit_pid(&tb, Mode::Root, &p, victim)),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while session.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "{victim} killed: the session did not end"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        if victim == "netbroker" {
            // A root socksapp hop 1 has an N0 of its own with a veth uplink,
            // so the host's forwarding sysctls are on; only a privileged
            // process can write them back, and the netbroker was it: the
            // next pallium command (here `list`) restores them, once no
            // session of this namespace may be alive (as in e2e_root's
            // kill -9 test).
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                assert!(out(pal(&tb, Mode::Root, &["list"])).status.success());
                if tb.leftovers().is_empty() || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        assert_clean(&tb);
    }
}

/// Ctrl-C while a hop is still being set up (here a socksapp hop whose
/// program never listens, with a 120 s timeout) ends pallium at once with
/// 130, and the netbroker abandons the setup: nothing is left behind.
#[test]
fn ctrl_c_during_hop_setup_ends_at_once_and_leaves_nothing() {
    skip_unless_root!();
    let tb = Testbed::new("hopint");
    let p = readable_profile(
        "socksapp-int",
        r#"{"chain": [{"type": "socksapp", "user": "nobody", "cmd": ["sleep", "600"], "timeout": 120}]}"#,
    );
    let session = Session::start(&tb, Mode::Root, &p);
    session.wait_stderr("starting sleep", Duration::from_secs(30));
    let mut session = session;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(session.child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    // Far sooner than the hop's timeout.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = session.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "pallium waited for the hop: {}",
            session.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130), "{}", session.stderr());
    assert_clean(&tb);
    let stderr = session.stderr();
    assert!(
        stderr
            .lines()
            .last()
            .is_some_and(|l| l.contains("interrupted (SIGINT)")),
        "{stderr}"
    );
}

#[test]
fn the_packet_engine_runs_unprivileged_and_its_death_stops_traffic() {
    skip_unless_root!();
    let tb = Testbed::new("hopengine");
    for mode in modes("hops") {
        let proxy = tb.start_microsocks();
        let p = readable_profile(
            "engine",
            &format!(
                r#"{{"chain": [{{"type": "socks", "address": "{}"}}], "run": {{"command": ["sleep", "600"]}}}}"#,
                proxy.addr()
            ),
        );
        let session = Session::start(&tb, mode, &p);
        let url = format!("http://{}/", tb.web_v4());
        let first = wait_up(&tb, mode, &p, &url, Duration::from_secs(20));
        assert_eq!(lines(&first), [proxy.exit_v4().to_string()]);
        // The engine is a process of its own, listed by audit with its
        // role, within its policy.
        let audit = out(pal(&tb, mode, &["audit", &p]));
        let shown = text(&audit).0;
        assert!(audit.status.success(), "{mode:?}: {shown}");
        assert!(shown.contains(" engine (pallium-engine)"), "{shown}");
        let engine = audit_pid(&tb, mode, &p, "engine");
        let netbroker = audit_pid(&tb, mode, &p, "netbroker");
        assert_ne!(engine, netbroker);
        // The netbroker serving the hop keeps only what teardown needs
        // (rootless: inside the session's user namespace, which it entered).
        common::assert_holds_after_setup(netbroker, proto::policy::Role::Netbroker, true);
        let st = proc_status(engine);
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(st[set], "0000000000000000", "{mode:?}: {set} of the engine");
        }
        assert_eq!(st["NoNewPrivs"], "1", "{mode:?}");
        assert_eq!(st["Seccomp"], "2", "{mode:?}");
        let uids: Vec<&str> = st["Uid"].split_whitespace().collect();
        assert!(
            uids.iter().all(|u| *u != "0"),
            "{mode:?}: engine uids {uids:?}"
        );
        if mode == Mode::Rootless {
            // The caller's own uid, inside the session's namespace.
            assert_eq!(uids[0], TestUser::get().uid().to_string());
        }
        // It holds its TUN, its control socket and nothing of the
        // netbroker's (no namespace descriptor, no netlink socket).
        let fds: Vec<String> = std::fs::read_dir(format!("/proc/{engine}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .map(|l| l.display().to_string())
            .collect();
        assert!(fds.iter().any(|f| f == "/dev/net/tun"), "{fds:?}");
        assert!(!fds.iter().any(|f| f.starts_with("net:[")), "{fds:?}");
        // Killing the engine stops the hop's traffic; nothing falls back,
        // and the user is told.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(engine),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        session.wait_stderr("the packet engine (pid", Duration::from_secs(10));
        assert!(
            session.stderr().contains("killed by SIGKILL"),
            "{}",
            session.stderr()
        );
        assert_blocked(
            &tb,
            mode,
            &p,
            "curl -sS --max-time 3 http://203.0.113.10/ ; curl -sS --max-time 3 http://web4.pallium.test/",
        );
        session.stop(&tb, mode, &p);
        assert_clean(&tb);
    }
    assert!(!tb.web_seen().contains(&tb.host_v4().to_string()));
}

/// The pids cgroup hierarchy the netbroker uses (v2 root offering pids, else
/// v1's pids hierarchy), and whether it is v2.
fn pids_hierarchy() -> Option<(PathBuf, bool)> {
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/cgroup.subtree_control")
        .is_ok_and(|s| s.split_whitespace().any(|c| c == "pids"));
    if v2 {
        return Some(("/sys/fs/cgroup".into(), true));
    }
    let v1 = PathBuf::from("/sys/fs/cgroup/pids");
    v1.join("cgroup.procs").exists().then_some((v1, false))
}

/// The pids cgroup directory of `pid`.
fn pids_cgroup(pid: i32, (root, v2): &(PathBuf, bool)) -> PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = text
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (id, ctl, path) = (parts.next()?, parts.next()?, parts.next()?);
            let ours = if *v2 {
                id == "0" && ctl.is_empty()
            } else {
                ctl.split(',').any(|c| c == "pids")
            };
            ours.then(|| path.to_string())
        })
        .unwrap_or_else(|| panic!("no pids cgroup for {pid}: {text}"));
    root.join(path.trim_start_matches('/'))
}

#[test]
fn a_root_session_has_a_pids_cgroup_that_goes_with_it() {
    skip_unless_root!();
    let Some(hierarchy) = pids_hierarchy() else {
        pallium_tests::skip("pids cgroup: this host offers no pids hierarchy");
        return;
    };
    let tb = Testbed::new("hopcgroup");
    let proxy = tb.start_microsocks();
    let url = format!("http://{}/", tb.web_v4());
    let make = |name: &str| {
        readable_profile(
            name,
            &format!(
                r#"{{"chain": [{{"type": "socks", "address": "{}"}}], "run": {{"command": ["sleep", "600"]}}}}"#,
                proxy.addr()
            ),
        )
    };
    // `ip netns exec`, the testbed's way in, mounts a /sys without the
    // cgroup hierarchies; nsenter keeps the host's.
    let run = |p: &str| {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", tb.host_netns()))
            .arg(pallium())
            .args(["run", p])
            .env(pallium_tests::TESTBED_ENV, tb.name());
        Session::spawn(c)
    };
    let up = |p: &str| -> (i32, i32, PathBuf) {
        wait_up(&tb, Mode::Root, p, &url, Duration::from_secs(20));
        let netbroker = audit_pid(&tb, Mode::Root, p, "netbroker");
        let engine = audit_pid(&tb, Mode::Root, p, "engine");
        let dir = pids_cgroup(netbroker, &hierarchy);
        assert!(
            dir.parent().is_some_and(|d| d.ends_with("pallium")),
            "{}",
            dir.display()
        );
        assert_eq!(pids_cgroup(engine, &hierarchy), dir, "the engine is in it");
        let max = std::fs::read_to_string(dir.join("pids.max")).unwrap();
        assert_eq!(max.trim(), "1024");
        (netbroker, engine, dir)
    };

    // Stopped: the cgroup is removed.
    let p = make("cgroup");
    let session = run(&p);
    let (_, _, dir) = up(&p);
    session.stop(&tb, Mode::Root, &p);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert_clean(&tb);

    // The netbroker killed: its engine dies with it, and the next root
    // session's netbroker removes the empty cgroup it left.
    let mut session = run(&p);
    let (netbroker, engine, dir) = up(&p);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(netbroker),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while session.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the session did not end");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_clean(&tb);
    // Gone (or a zombie its new parent has yet to reap).
    let deadline = Instant::now() + Duration::from_secs(10);
    while proc_status(engine)
        .get("State")
        .is_some_and(|s| !s.starts_with('Z'))
    {
        assert!(
            Instant::now() < deadline,
            "the engine outlived the netbroker"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let other = make("cgroup-next");
    let session = run(&other);
    let (_, _, next) = up(&other);
    assert_ne!(next, dir);
    assert!(!dir.exists(), "{} was not swept", dir.display());
    session.stop(&tb, Mode::Root, &other);
    assert!(!next.exists());
    assert_clean(&tb);
}

/// The processes of `uid` whose name is `comm`.
fn procs_named(comm: &str, uid: u32) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let owner = std::fs::metadata(format!("/proc/{pid}")).map(|m| m.uid());
            name.trim() == comm && owner.is_ok_and(|u| u == uid)
        })
        .collect()
}

/// The network namespace of `pid` (its inode), as root sees it.
fn netns_of(pid: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .map(|l| l.display().to_string())
        .unwrap_or_default()
}

#[test]
fn a_rootless_socks_chain_starts_in_the_callers_namespace_without_pasta() {
    skip_unless_root!();
    if !tun_usable() {
        pallium_tests::skip("rootless hops: /dev/net/tun is not world read-write");
        return;
    }
    let tb = Testbed::new("hopnopasta");
    let proxy = tb.start_microsocks();
    let p = readable_profile(
        "nopasta",
        &format!(
            r#"{{"chain": [{{"type": "socks", "address": "{}"}}], "run": {{"command": ["sleep", "600"]}}}}"#,
            proxy.addr()
        ),
    );
    let uid = TestUser::get().uid();
    let pastas_before = procs_named("pasta", uid);
    let session = Session::start(&tb, Mode::Rootless, &p);
    let exit = wait_up(
        &tb,
        Mode::Rootless,
        &p,
        &format!("http://{WEB4_NAME}/"),
        Duration::from_secs(30),
    );
    assert_eq!(lines(&exit), [proxy.exit_v4().to_string()]);
    // No pasta of the caller's, none in the audit.
    assert_eq!(procs_named("pasta", uid), pastas_before, "a pasta started");
    let audit = text(&out(pal(&tb, Mode::Rootless, &["audit", &p]))).0;
    assert!(!audit.contains("pasta"), "{audit}");
    // Hop 1's engine dials from where pallium runs, as the caller.
    let engine = audit_pid(&tb, Mode::Rootless, &p, "engine");
    let supervisor = audit_pid(&tb, Mode::Rootless, &p, "supervisor");
    assert_eq!(netns_of(engine), netns_of(supervisor));
    let st = proc_status(engine);
    assert_eq!(
        st["Uid"].split_whitespace().next(),
        Some(uid.to_string().as_str())
    );
    assert_eq!(st["CapBnd"], "0000000000000000");
    assert!(!audit.contains("!!"), "{audit}");
    // Killing hop 1's engine stops traffic: nothing falls back.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(engine),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    session.wait_stderr("stopped", Duration::from_secs(10));
    assert_blocked(
        &tb,
        Mode::Rootless,
        &p,
        &format!("curl -sS --max-time 3 http://{}/", tb.web_v4()),
    );
    session.stop(&tb, Mode::Rootless, &p);
    assert_clean(&tb);
}

/// The listening TCP sockets (local address:port, hex as the kernel shows
/// them) of the testbed's host namespace, where pallium starts.
fn tcp_listeners(tb: &Testbed) -> std::collections::BTreeSet<String> {
    let o = out(tb.host_exec(["cat", "/proc/net/tcp", "/proc/net/tcp6"]));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // st 0A: LISTEN.
            (f.len() > 3 && f[3] == "0A").then(|| f[1].to_string())
        })
        .collect()
}

#[test]
fn an_ssh_hop_1_runs_without_pasta_and_listens_on_no_tcp_port_where_pallium_runs() {
    skip_unless_root!();
    let tb = Testbed::new("hopsshfd");
    let sshd = tb.start_sshd();
    let args = serde_json::to_string(&sshd.ssh_options()).unwrap();
    let uid = TestUser::get().uid();
    for mode in modes("hops") {
        let user = match mode {
            Mode::Root => format!(r#", "user": "{}""#, TestUser::NAME),
            Mode::Rootless => String::new(),
        };
        let p = readable_profile(
            "sshfd",
            &format!(
                r#"{{"chain": [{{"type": "ssh", "destination": "{}@{}", "ssh_args": {args}{user}}}], "run": {{"command": ["sleep", "600"]}}}}"#,
                sshd.user(),
                sshd.addr().ip()
            ),
        );
        let before = tcp_listeners(&tb);
        let pastas_before = procs_named("pasta", uid);
        let session = Session::start(&tb, mode, &p);
        let exit = wait_up(
            &tb,
            mode,
            &p,
            &format!("http://{WEB4_NAME}/"),
            Duration::from_secs(30),
        );
        assert_eq!(lines(&exit), [sshd.exit_v4().to_string()], "{mode:?}");
        // ssh's SOCKS port is in a namespace of its own, not where pallium runs.
        assert_eq!(tcp_listeners(&tb), before, "{mode:?}: a new TCP listener");
        assert_eq!(procs_named("pasta", uid), pastas_before, "a pasta started");
        let audit = text(&out(pal(&tb, mode, &["audit", &p]))).0;
        assert!(!audit.contains("pasta"), "{audit}");
        assert!(!audit.contains("!!"), "{audit}");
        let ssh = audit_pid(&tb, mode, &p, "hop:ssh");
        let engine = audit_pid(&tb, mode, &p, "engine");
        let supervisor = audit_pid(&tb, mode, &p, "supervisor");
        assert_eq!(netns_of(ssh), netns_of(engine), "{mode:?}");
        assert_ne!(netns_of(ssh), netns_of(supervisor), "{mode:?}");
        // ssh runs as the key's owner: rootless the caller, mapped back.
        let st = proc_status(ssh);
        assert_eq!(
            st["Uid"].split_whitespace().next(),
            Some(uid.to_string().as_str()),
            "{mode:?}"
        );
        session.stop(&tb, mode, &p);
        assert_clean(&tb);
    }
}

#[test]
fn a_tor_hop_1_listens_on_no_tcp_port_and_only_the_session_reaches_its_socket() {
    skip_unless_root!();
    let tb = Testbed::new("hoptorsock");
    let tor = tb.start_tor();
    tor.wait_ready();
    let args = serde_json::to_string(&tor.client_args()).unwrap();
    let tor_hop = format!(r#"{{"type": "tor", "timeout": 120, "tor_args": {args}}}"#);
    for mode in modes("hops") {
        let p = readable_profile(
            "torsock",
            &format!(r#"{{"chain": [{tor_hop}], "run": {{"command": ["sleep", "600"]}}}}"#),
        );
        let before = tcp_listeners(&tb);
        let session = Session::start(&tb, mode, &p);
        wait_up(
            &tb,
            mode,
            &p,
            &format!("http://{WEB4_NAME}/"),
            Duration::from_secs(150),
        );
        // Nothing of the session listens on TCP where pallium runs.
        assert_eq!(tcp_listeners(&tb), before, "{mode:?}: a new TCP listener");
        // tor's SOCKS socket, from its command line.
        let tor_pid = audit_pid(&tb, mode, &p, "hop:tor");
        let cmdline = std::fs::read(format!("/proc/{tor_pid}/cmdline")).unwrap();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let at = args.iter().position(|a| a == "--SocksPort").unwrap();
        let path = args[at + 1]
            .strip_prefix("unix:\"")
            .and_then(|s| s.split('"').next())
            .unwrap_or_else(|| panic!("{mode:?}: SocksPort {}", args[at + 1]))
            .to_string();
        let connect = |who: Option<&str>| {
            let script = format!(
                "import socket; s = socket.socket(socket.AF_UNIX); s.connect({path:?}); s.send(b'\\x05\\x01\\x00'); print(s.recv(2).hex())"
            );
            let mut c = match who {
                Some(user) => {
                    let mut c = Command::new("setpriv");
                    c.args([
                        "--reuid",
                        user,
                        "--regid",
                        user,
                        "--clear-groups",
                        "python3",
                    ]);
                    c
                }
                None => Command::new("python3"),
            };
            let o = out({
                c.args(["-c", &script]);
                c
            });
            (o.status.success(), text(&o).0.trim().to_string())
        };
        // The host's root gets a SOCKS5 answer there (the path is right) …
        assert_eq!(connect(None), (true, "0500".to_string()), "{mode:?}");
        // … another local user not even a connection.
        let other = TestUser::get().uid() + 1;
        assert!(!connect(Some(&other.to_string())).0, "{mode:?}: {path}");
        session.stop(&tb, mode, &p);
        assert_clean(&tb);
    }
}

#[test]
fn kill_9_of_a_rootless_session_with_hop_1_in_the_callers_namespace_leaves_nothing() {
    skip_unless_root!();
    if !tun_usable() {
        pallium_tests::skip("rootless hops: /dev/net/tun is not world read-write");
        return;
    }
    let tb = Testbed::new("hopkill9rl");
    let proxy = tb.start_microsocks();
    let p = readable_profile(
        "socks-kill9",
        &format!(
            r#"{{"chain": [{{"type": "socks", "address": "{}"}}], "run": {{"command": ["sleep", "600"]}}}}"#,
            proxy.addr()
        ),
    );
    let url = format!("http://{}/", tb.web_v4());
    for victim in ["supervisor", "netbroker"] {
        let mut session = Session::start(&tb, Mode::Rootless, &p);
        wait_up(&tb, Mode::Rootless, &p, &url, Duration::from_secs(30));
        // Hop 1's engine runs outside the session's user namespace, in the
        // caller's: it goes with the session all the same.
        let engine = audit_pid(&tb, Mode::Rootless, &p, "engine");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(audit_pid(&tb, Mode::Rootless, &p, victim)),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while session.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "{victim} killed: the session did not end"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_clean(&tb);
        // Gone, or a zombie its new parent has yet to reap.
        let alive = || {
            std::fs::read_to_string(format!("/proc/{engine}/stat"))
                .ok()
                .and_then(|s| Some(s.rsplit_once(") ")?.1.starts_with('Z')))
                .is_some_and(|zombie| !zombie)
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive() {
            assert!(
                Instant::now() < deadline,
                "{victim} killed: the engine {engine} lives on"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
