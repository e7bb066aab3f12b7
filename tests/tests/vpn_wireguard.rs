//! The wireguard hop end to end, as root and rootless, against a real wireguard-go server on the
//! fake internet (keys made at test time): the web host sees the server's address over IPv4 and
//! IPv6, names resolve through the tunnel with the config's DNS, and a bad config, a missing key
//! or an unreachable endpoint fails with one line naming the hop, leaving nothing behind; a
//! socks → wireguard chain exits at the WireGuard server with its UDP through the SOCKS proxy
//! (dante's UDP ASSOCIATE); killing the server mid-transfer blocks everything, the user is told
//! hop 1 stopped, and `pallium audit` passes with the hop's engine. The progress names the device:
//! userspace in the application's namespace, and between two hops the kernel's where the machine
//! has the module, else userspace "no kernel module" (the fallback, on these machines).

mod common;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    curl, modes, one_shot_output, out, pal, profile_file, text, wait_clean, wait_up, Mode,
};
use pallium_tests::{skip_unless_root, Testbed, WEB4_NAME, WEB6_NAME};

/// A world-readable file in a world-readable directory (the test user reads it).
fn shared_file(name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("pallium-wg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    p.display().to_string()
}

fn profile(name: &str, config: &str) -> String {
    let p = profile_file(
        name,
        &format!(r#"{{"chain": [{{"type": "wireguard", "config": "{config}"}}]}}"#),
    );
    shared_file(
        &format!("{name}.json"),
        &std::fs::read_to_string(p).unwrap(),
    )
}

/// A `pallium run` in the background with its stderr collected.
struct Session {
    child: std::process::Child,
    stderr: Arc<Mutex<String>>,
}

impl Session {
    fn start(tb: &Testbed, mode: Mode, profile: &str) -> Session {
        let mut child = pal(tb, mode, &["run", profile])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pallium run");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (mut pipe, sink) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
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
        Session { child, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Until the session's stderr has a line with all of `needles`; that line.
    fn wait_line(&self, needles: &[&str], limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let all = self.stderr();
            if let Some(l) = all.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return l.to_string();
            }
            assert!(Instant::now() < deadline, "never saw {needles:?}: {all}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn stop(mut self, tb: &Testbed, mode: Mode, profile: &str) {
        let _ = out(pal(tb, mode, &["stop", profile]));
        let _ = self.child.wait();
    }
}

#[test]
fn wireguard_hop_exits_at_the_server_over_v4_and_v6_with_its_dns() {
    skip_unless_root!();
    let tb = Testbed::new("hopwg");
    let server = tb.start_wireguard();
    let conf = shared_file("wg.conf", &server.client_config(&tb.dns_v4().to_string()));
    let p = profile("wg", &conf);
    for mode in modes("wireguard") {
        let script = format!(
            "{}; {}; cat /etc/resolv.conf",
            curl(&format!("http://{WEB4_NAME}/")),
            curl(&format!("http://{WEB6_NAME}/"))
        );
        let o = one_shot_output(&tb, mode, &p, &script);
        let (stdout, stderr) = text(&o);
        assert!(o.status.success(), "{mode:?}: {stdout}{stderr}");
        let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(
            lines[..2],
            [server.exit_v4().to_string(), server.exit_v6().to_string()],
            "{mode:?}: {stderr}"
        );
        assert!(
            stdout.contains(&format!("nameserver {}", tb.dns_v4())),
            "{stdout}"
        );
        assert!(
            stderr.contains("hop 1 (wireguard)"),
            "progress shown: {stderr}"
        );
        // The application's namespace never gets a kernel device.
        let why = match mode {
            Mode::Root => "in the application's namespace",
            Mode::Rootless => "rootless",
        };
        assert!(
            stderr.contains(&format!("userspace WireGuard, {why}")),
            "{mode:?}: which WireGuard: {stderr}"
        );
        assert_eq!(wait_clean(&tb), Vec::<String>::new(), "left behind");
    }
    // Names were resolved through the tunnel (the server's address), never from the host's.
    let q = tb.dns_queries();
    let host: [std::net::IpAddr; 2] = [tb.host_v4().into(), tb.host_v6().into()];
    assert!(
        q.iter()
            .any(|q| q.name == WEB4_NAME && q.client == std::net::IpAddr::from(server.exit_v4())),
        "{q:?}"
    );
    assert!(
        q.iter()
            .all(|q| q.name == server.name() || !host.contains(&q.client)),
        "a query for the application left from the host: {q:?}"
    );
    assert!(tb.web_seen().iter().all(|a| a != &tb.host_v4().to_string()));
}

#[test]
fn bad_wireguard_configs_fail_in_one_line_and_leave_nothing() {
    skip_unless_root!();
    let tb = Testbed::new("hopwgbad");
    let server = tb.start_wireguard();
    let good = server.client_config(&tb.dns_v4().to_string());
    let (other_private, _) = pallium_tests::wg_keypair();
    let cases = [
        (
            "missing-key",
            good.replace(
                &format!("PrivateKey = {}\n", server.client_private_key()),
                "",
            ),
            "[Interface] has no PrivateKey",
        ),
        (
            "garbled",
            good.replace("[Peer]", "[Pear]"),
            "unknown section [Pear]",
        ),
        (
            "wrong-key",
            good.replace(server.client_private_key(), &other_private),
            "no handshake from peer",
        ),
        (
            "unreachable",
            good.replace(server.name(), "198.51.100.250"),
            "no handshake from peer",
        ),
    ];
    for (name, text_, expect) in cases {
        let conf = shared_file(&format!("{name}.conf"), &text_);
        let p = profile(name, &conf);
        for mode in modes("wireguard") {
            let o = one_shot_output(&tb, mode, &p, "true");
            let (_, stderr) = text(&o);
            assert!(!o.status.success(), "{name} {mode:?} started");
            let last = stderr.lines().last().unwrap_or_default();
            assert!(last.contains(expect), "{name} {mode:?}: {stderr}");
            assert!(
                last.contains("hop 1 (wireguard)"),
                "{name} {mode:?}: {stderr}"
            );
            if name == "wrong-key" || name == "unreachable" {
                assert!(
                    last.contains("within 10s: check Endpoint and keys"),
                    "{stderr}"
                );
            }
            // The error once: everything else is a hop's progress line.
            let others: Vec<&str> = stderr
                .lines()
                .filter(|l| *l != last && !l.starts_with("pallium: hop "))
                .collect();
            assert!(
                others.is_empty(),
                "{name} {mode:?}: more than the error: {stderr}"
            );
            assert_eq!(
                wait_clean(&tb),
                Vec::<String>::new(),
                "{name} {mode:?}: left behind"
            );
        }
    }
}

#[test]
fn killing_the_wireguard_server_mid_transfer_blocks_everything_and_names_the_hop() {
    skip_unless_root!();
    let tb = Testbed::new("hopwgkill");
    for mode in modes("wireguard") {
        let server = tb.start_wireguard();
        let conf = shared_file("kill.conf", &server.client_config(&tb.dns_v4().to_string()));
        let p = profile_with(
            "wgkill",
            &format!(r#"{{"type": "wireguard", "config": "{conf}"}}"#),
        );
        let session = Session::start(&tb, mode, &p);
        let url = format!("http://{}/", tb.web_v4());
        let first = wait_up(&tb, mode, &p, &url, Duration::from_secs(60));
        assert_eq!(first.trim(), server.exit_v4().to_string(), "{mode:?}");
        // Every process of the session, the WireGuard engine included, within its policy.
        let audit = out(pal(&tb, mode, &["audit", &p]));
        let (audit_out, audit_err) = text(&audit);
        assert!(audit.status.success(), "{mode:?}: {audit_out}{audit_err}");
        assert!(
            audit_out.contains("engine"),
            "{mode:?}: no engine in the audit: {audit_out}"
        );
        // A transfer that keeps going while the server dies.
        let mut transfer = pal(
            &tb,
            mode,
            &[
                "exec",
                &p,
                "--",
                "sh",
                "-c",
                &format!("while :; do curl -s --max-time 1 {url} >/dev/null; done"),
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the transfer");
        std::thread::sleep(Duration::from_secs(1));
        server.kill();
        let line = session.wait_line(&["hop 1", "stopped answering"], Duration::from_secs(120));
        assert!(
            line.contains(&server.exit_v4().to_string()),
            "{mode:?}: which peer: {line}"
        );
        let before = tb.web_seen().len();
        let o = out(pal(&tb, mode, &["exec", &p, "--", "sh", "-c", &curl(&url)]));
        assert!(
            !o.status.success() || text(&o).0.trim().is_empty(),
            "{mode:?}: traffic still flows"
        );
        let _ = transfer.kill();
        let _ = transfer.wait();
        assert_eq!(
            tb.web_seen().len(),
            before,
            "{mode:?}: something reached the web host"
        );
        session.stop(&tb, mode, &p);
        assert_eq!(
            wait_clean(&tb),
            Vec::<String>::new(),
            "{mode:?}: left behind"
        );
    }
    assert!(!tb.web_seen().contains(&tb.host_v4().to_string()));
}

#[test]
fn socks_then_wireguard_exits_at_the_wireguard_server() {
    skip_unless_root!();
    let tb = Testbed::new("hopwgchain");
    let dante = tb.start_socks(pallium_tests::Socks::DanteNoAuth);
    let server = tb.start_wireguard();
    let conf = shared_file(
        "chain.conf",
        &server.client_config(&tb.dns_v4().to_string()),
    );
    let p = profile_with(
        "wgchain",
        &format!(
            r#"{{"type": "socks", "address": "{}"}}, {{"type": "wireguard", "config": "{conf}"}}"#,
            dante.addr()
        ),
    );
    for mode in modes("wireguard") {
        let o = one_shot_output(&tb, mode, &p, &curl(&format!("http://{WEB4_NAME}/")));
        let (stdout, stderr) = text(&o);
        assert!(o.status.success(), "{mode:?}: {stdout}{stderr}");
        assert_eq!(
            stdout.trim(),
            server.exit_v4().to_string(),
            "{mode:?}: {stderr}"
        );
        assert!(stderr.contains("hop 2 (wireguard)"), "{stderr}");
        assert_eq!(
            wait_clean(&tb),
            Vec::<String>::new(),
            "{mode:?}: left behind"
        );
    }
    // The tunnel's UDP went through dante: wireguard-go saw its client at one of dante's
    // addresses (dante picks the family for the endpoint's name, resolved by the proxy).
    let peers = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            server.netns(),
            "wg",
            "show",
            server.ifname(),
            "endpoints",
        ])
        .output()
        .expect("wg show");
    let shown = String::from_utf8_lossy(&peers.stdout);
    assert!(
        shown.contains(&dante.exit_v4().to_string())
            || shown.contains(&format!("[{}]", dante.exit_v6())),
        "client endpoint: {shown}"
    );
    let seen = tb.web_seen();
    assert!(
        seen.len() == modes("wireguard").len()
            && seen.iter().all(|a| *a == server.exit_v4().to_string()),
        "the web host saw {seen:?}"
    );
}

/// Whether this kernel makes links of kind `wireguard` (tried in a throwaway namespace).
fn kernel_wireguard() -> bool {
    Command::new("unshare")
        .args(["-n", "ip", "link", "add", "pwgprobe", "type", "wireguard"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// WireGuard between two hops, as root the one position that tries kernel WireGuard: hop 3
/// reaches dante through the tunnel (dante sees the WireGuard server's address), and the
/// progress names the device used — the kernel's where it has the module, else userspace
/// ("no kernel module", the fallback these machines exercise).
#[test]
fn wireguard_between_two_hops_uses_the_kernel_or_says_why_not() {
    skip_unless_root!();
    let tb = Testbed::new("hopwgmid");
    let dante = tb.start_socks(pallium_tests::Socks::DanteNoAuth);
    let server = tb.start_wireguard();
    let conf = shared_file("mid.conf", &server.client_config(&tb.dns_v4().to_string()));
    let p = profile_with(
        "wgmid",
        &format!(
            r#"{{"type": "socks", "address": "{a}"}}, {{"type": "wireguard", "config": "{conf}"}}, {{"type": "socks", "address": "{a}"}}"#,
            a = dante.addr()
        ),
    );
    let kernel = kernel_wireguard();
    for mode in modes("wireguard") {
        let o = one_shot_output(&tb, mode, &p, &curl(&format!("http://{}/", tb.web_v4())));
        let (stdout, stderr) = text(&o);
        assert!(o.status.success(), "{mode:?}: {stdout}{stderr}");
        assert_eq!(
            stdout.trim(),
            dante.exit_v4().to_string(),
            "{mode:?}: {stderr}"
        );
        let flavour = match (mode, kernel) {
            (Mode::Root, true) => "(kernel WireGuard)",
            (Mode::Root, false) => "(userspace WireGuard, no kernel module)",
            (Mode::Rootless, _) => "(userspace WireGuard, rootless)",
        };
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("hop 2 (wireguard)") && l.contains(flavour)),
            "{mode:?}: expected {flavour}: {stderr}"
        );
        assert_eq!(
            wait_clean(&tb),
            Vec::<String>::new(),
            "{mode:?}: left behind"
        );
    }
    // Hop 3's connections to dante came out of the tunnel.
    assert!(
        dante
            .log()
            .contains(&format!("tcp/connect [: {}.", server.exit_v4())),
        "dante's clients: {}",
        dante.log()
    );
}

fn profile_with(name: &str, hops: &str) -> String {
    let p = profile_file(
        name,
        &format!(r#"{{"chain": [{hops}], "run": {{"command": ["sleep", "600"]}}}}"#),
    );
    shared_file(
        &format!("{name}.json"),
        &std::fs::read_to_string(p).unwrap(),
    )
}
