//! The openvpn hop end to end, root and rootless, against the testbed's real
//! OpenVPN server: over UDP and TCP the web host sees the VPN server's
//! address for IPv4 and IPv6, the application's resolv.conf is the pushed
//! DNS server; a wrong password, a bad config, a missing binary and an
//! unreachable server fail with one line naming the hop; the server killed
//! mid-transfer blocks traffic and the run names the hop.

mod common;

use std::process::Stdio;

use common::{one_shot, out, pal, profile_file, text, wait_clean, Mode};
use pallium_tests::{skip_unless_root, Testbed, VpnProto, WEB4_NAME, WEB6_NAME};

fn hop(config: &std::path::Path, user: &str, pass: &str, timeout: u32) -> String {
    format!(
        r#"{{"chain": [{{"type": "openvpn", "config": {}, "username": {}, "password": {}, "timeout": {timeout}}}]}}"#,
        serde_json::to_string(&config.display().to_string()).unwrap(),
        serde_json::to_string(user).unwrap(),
        serde_json::to_string(pass).unwrap()
    )
}

#[test]
fn openvpn_udp_and_tcp_exit_at_the_vpn_server_with_its_dns() {
    skip_unless_root!();
    let tb = Testbed::new("ovpn");
    let vpn = tb.start_openvpn();
    let auth = vpn.auth();
    for proto in [VpnProto::Udp, VpnProto::Tcp] {
        let p = profile_file(
            "ovpn",
            &hop(&vpn.client_config(proto), &auth.user, &auth.pass, 30),
        );
        let script = format!(
            "curl -sS --max-time 10 http://{WEB4_NAME}/; echo; curl -sS --max-time 10 http://{WEB6_NAME}/; echo; grep nameserver /etc/resolv.conf"
        );
        let (ok, stdout, stderr) = one_shot(&tb, Mode::Root, &p.display().to_string(), &script);
        assert!(ok, "{proto:?}: {stdout}{stderr}\n{}", vpn.log());
        let l: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(
            l,
            [
                vpn.exit_v4().to_string(),
                vpn.exit_v6().to_string(),
                format!("nameserver {}", tb.dns_v4())
            ],
            "{proto:?}: {stderr}"
        );
        assert!(stderr.contains("hop 1 (openvpn)"), "{stderr}");
        assert_eq!(wait_clean(&tb), Vec::<String>::new(), "left behind");
    }
    let host: std::net::IpAddr = tb.host_v4().into();
    assert!(tb.dns_queries().iter().all(|q| q.client != host));
    assert!(!tb.web_seen().contains(&tb.host_v4().to_string()));
}

#[test]
fn a_wrong_openvpn_password_fails_with_one_line_naming_the_hop() {
    skip_unless_root!();
    let tb = Testbed::new("ovpnbad");
    let vpn = tb.start_openvpn();
    let auth = vpn.auth().wrong();
    let p = profile_file(
        "ovpnbad",
        &hop(
            &vpn.client_config(VpnProto::Udp),
            &auth.user,
            &auth.pass,
            30,
        ),
    );
    let (ok, stdout, stderr) = one_shot(&tb, Mode::Root, &p.display().to_string(), "echo ran");
    assert!(!ok && !stdout.contains("ran"), "{stdout}{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("hop 1 (openvpn)") && last.contains("AUTH_FAILED"),
        "{stderr}"
    );
    assert_eq!(wait_clean(&tb), Vec::<String>::new(), "left behind");
}

#[test]
fn rootless_openvpn_udp_and_tcp_exit_at_the_vpn_server_with_its_dns() {
    skip_unless_root!();
    let tb = Testbed::new("ovpnrl");
    let vpn = tb.start_openvpn();
    let auth = vpn.auth();
    for proto in [VpnProto::Udp, VpnProto::Tcp] {
        let json = hop(&vpn.client_config(proto), &auth.user, &auth.pass, 30);
        let p = vpn.config_file(&format!("rootless-{proto:?}.json"), &json);
        let script = format!(
            "curl -sS --max-time 10 http://{WEB4_NAME}/; echo; curl -sS --max-time 10 http://{WEB6_NAME}/; echo; grep nameserver /etc/resolv.conf"
        );
        let (ok, stdout, stderr) = one_shot(&tb, Mode::Rootless, &p.display().to_string(), &script);
        assert!(ok, "{proto:?}: {stdout}{stderr}");
        let l: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(
            l,
            [
                vpn.exit_v4().to_string(),
                vpn.exit_v6().to_string(),
                format!("nameserver {}", tb.dns_v4())
            ],
            "{proto:?}: {stderr}"
        );
        assert!(stderr.contains("as the caller"), "{proto:?}: {stderr}");
        assert_eq!(wait_clean(&tb), Vec::<String>::new(), "left behind");
    }
    // The names were resolved through the tunnel: the DNS server saw the VPN server only.
    let q = tb.dns_queries();
    assert!(
        q.iter()
            .any(|q| q.name == WEB4_NAME && q.client == std::net::IpAddr::from(vpn.exit_v4())),
        "{q:?}"
    );
    let host: std::net::IpAddr = tb.host_v4().into();
    assert!(q.iter().all(|q| q.client != host), "{q:?}");
    assert!(!tb.web_seen().contains(&tb.host_v4().to_string()));
}

#[test]
fn bad_openvpn_hops_fail_with_one_line_naming_the_hop_and_leave_nothing() {
    skip_unless_root!();
    let tb = Testbed::new("ovpnbad2");
    let vpn = tb.start_openvpn();
    let auth = vpn.auth();
    let good = vpn.client_config_text(VpnProto::Udp);
    let bad = vpn.config_file("bad.ovpn", &format!("{good}no-such-directive 1\n"));
    // Nothing answers there: openvpn keeps trying until the hop's timeout.
    let web = tb.web_v4().to_string();
    let unreachable = vpn.config_file(
        "unreachable.ovpn",
        &good.replace(&vpn.exit_v4().to_string(), &web),
    );
    let udp = vpn.client_config(VpnProto::Udp);
    let missing = hop(&udp, &auth.user, &auth.pass, 30).replace(
        r#""timeout": 30"#,
        r#""timeout": 30, "openvpn_path": "/nonexistent/openvpn""#,
    );
    let cases = [
        (hop(&bad, &auth.user, &auth.pass, 30), "no-such-directive"),
        (
            hop(&unreachable, &auth.user, &auth.pass, 3),
            "did not connect within 3 s",
        ),
        (missing, "openvpn_path"),
    ];
    for (json, needle) in cases {
        let p = profile_file("ovpnbad2", &json);
        let (ok, stdout, stderr) = one_shot(&tb, Mode::Root, &p.display().to_string(), "echo ran");
        assert!(!ok && !stdout.contains("ran"), "{json}: {stdout}{stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.contains("hop 1 (openvpn)") && last.contains(needle),
            "{json}: '{needle}' not in the error: {stderr}"
        );
        assert_eq!(wait_clean(&tb), Vec::<String>::new(), "{json}: left behind");
    }
}

#[test]
fn killing_the_openvpn_server_blocks_traffic_and_names_the_hop() {
    skip_unless_root!();
    let tb = Testbed::new("ovpnkill");
    for mode in [Mode::Root, Mode::Rootless] {
        killing_the_openvpn_server_in(&tb, mode);
    }
    assert!(!tb.web_seen().contains(&tb.host_v4().to_string()));
}

/// One run of the kill-switch test: a new server, a session, a transfer,
/// the server killed.
fn killing_the_openvpn_server_in(tb: &Testbed, mode: Mode) {
    let vpn = tb.start_openvpn();
    let auth = vpn.auth();
    let json = hop(
        &vpn.client_config(VpnProto::Tcp),
        &auth.user,
        &auth.pass,
        30,
    )
    .replace(r#"}]}"#, r#"}], "run": {"command": ["sleep", "600"]}}"#);
    let p = vpn.config_file("kill.json", &json).display().to_string();
    let mut run = pal(tb, mode, &["run", &p])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let url = format!("http://{}/", tb.web_v4());
    let curl = format!("curl -sS --max-time 3 {url}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let o = out(pal(tb, mode, &["exec", &p, "--", "sh", "-c", &curl]));
        if o.status.success() {
            assert_eq!(text(&o).0.trim(), vpn.exit_v4().to_string());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never up: {:?}",
            text(&o)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let audit = out(pal(tb, mode, &["audit", &p]));
    assert!(audit.status.success(), "audit: {:?}", text(&audit));
    assert!(text(&audit).0.contains("hop:openvpn"), "{:?}", text(&audit));
    // A transfer in flight when the server dies.
    let mut transfer = pal(
        tb,
        mode,
        &[
            "exec",
            &p,
            "--",
            "sh",
            "-c",
            &format!("while :; do {curl}; sleep 0.1; done"),
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("transfer");
    std::thread::sleep(std::time::Duration::from_millis(500));
    vpn.kill();
    let mut stderr = run.stderr.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    use std::io::Read;
    while !seen.contains("hop 1: stopped: openvpn lost its connection") {
        let n = stderr.read(&mut buf).expect("read run's stderr");
        assert!(n > 0, "run ended without naming the hop: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let before = tb.web_seen().len();
    let o = out(pal(tb, mode, &["exec", &p, "--", "sh", "-c", &curl]));
    assert!(!o.status.success(), "traffic still flows: {:?}", text(&o));
    let _ = transfer.kill();
    let _ = transfer.wait();
    let _ = out(pal(tb, mode, &["stop", &p]));
    let _ = run.wait();
    assert_eq!(
        tb.web_seen().len(),
        before,
        "{mode:?}: something reached the web host after the server died"
    );
    assert_eq!(
        wait_clean(tb),
        Vec::<String>::new(),
        "{mode:?}: left behind"
    );
}
