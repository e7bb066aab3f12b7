//! The wireguard hop end to end, as root and rootless, against a real wireguard-go server on the
//! fake internet (keys made at test time): the web host sees the server's address over IPv4 and
//! IPv6, names resolve through the tunnel with the config's DNS, and a bad config, a missing key
//! or an unreachable endpoint fails with one line naming the hop, leaving nothing behind.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::{pallium, profile_file, text, wait_clean};
use pallium_tests::{skip_unless_root, TestUser, Testbed, WEB4_NAME, WEB6_NAME};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Root,
    Rootless,
}

fn staged() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| TestUser::get().stage_binaries(&common::binaries()))
}

fn modes() -> Vec<Mode> {
    use std::os::unix::fs::PermissionsExt;
    let tun = std::fs::metadata("/dev/net/tun").is_ok_and(|m| m.permissions().mode() & 0o006 == 0o006);
    if tun {
        vec![Mode::Root, Mode::Rootless]
    } else {
        pallium_tests::skip("rootless wireguard: /dev/net/tun is not world read-write");
        vec![Mode::Root]
    }
}

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
    shared_file(&format!("{name}.json"), &std::fs::read_to_string(p).unwrap())
}

fn one_shot(tb: &Testbed, mode: Mode, profile: &str, script: &str) -> Output {
    let args = ["exec", "--one-shot", profile, "--", "sh", "-c", script];
    let mut cmd: Command = match mode {
        Mode::Root => {
            let mut argv = vec![pallium().display().to_string()];
            argv.extend(args.iter().map(|s| s.to_string()));
            tb.host_exec(argv)
        }
        Mode::Rootless => {
            let mut argv = vec![staged().join("pallium").display().to_string()];
            argv.extend(args.iter().map(|s| s.to_string()));
            tb.host_exec_as(TestUser::get(), argv)
        }
    };
    cmd.stdin(Stdio::null()).output().expect("run pallium")
}

fn curl(url: &str) -> String {
    format!("curl -sS --max-time 10 {url}; echo")
}

#[test]
fn wireguard_hop_exits_at_the_server_over_v4_and_v6_with_its_dns() {
    skip_unless_root!();
    let tb = Testbed::new("hopwg");
    let server = tb.start_wireguard();
    let conf = shared_file("wg.conf", &server.client_config(&tb.dns_v4().to_string()));
    let p = profile("wg", &conf);
    for mode in modes() {
        let script = format!(
            "{}; {}; cat /etc/resolv.conf",
            curl(&format!("http://{WEB4_NAME}/")),
            curl(&format!("http://{WEB6_NAME}/"))
        );
        let o = one_shot(&tb, mode, &p, &script);
        let (stdout, stderr) = text(&o);
        assert!(o.status.success(), "{mode:?}: {stdout}{stderr}");
        let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(
            lines[..2],
            [server.exit_v4().to_string(), server.exit_v6().to_string()],
            "{mode:?}: {stderr}"
        );
        assert!(stdout.contains(&format!("nameserver {}", tb.dns_v4())), "{stdout}");
        assert!(stderr.contains("hop 1 (wireguard)"), "progress shown: {stderr}");
        assert_eq!(wait_clean(&tb), Vec::<String>::new(), "left behind");
    }
    // Names were resolved through the tunnel (the server's address), never from the host's.
    let q = tb.dns_queries();
    let host: [std::net::IpAddr; 2] = [tb.host_v4().into(), tb.host_v6().into()];
    assert!(
        q.iter().any(|q| q.name == WEB4_NAME && q.client == std::net::IpAddr::from(server.exit_v4())),
        "{q:?}"
    );
    assert!(
        q.iter().all(|q| q.name == server.name() || !host.contains(&q.client)),
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
            good.replace(&format!("PrivateKey = {}\n", server.client_private_key()), ""),
            "[Interface] has no PrivateKey",
        ),
        ("garbled", good.replace("[Peer]", "[Pear]"), "unknown section [Pear]"),
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
        for mode in modes() {
            let o = one_shot(&tb, mode, &p, "true");
            let (_, stderr) = text(&o);
            assert!(!o.status.success(), "{name} {mode:?} started");
            let line = stderr
                .lines()
                .find(|l| l.contains("error") || l.contains("hop 1 (wireguard)") && l.contains(expect))
                .unwrap_or("");
            assert!(stderr.contains(expect), "{name} {mode:?}: {stderr}");
            assert!(stderr.contains("hop 1 (wireguard)"), "{name} {mode:?}: {line} / {stderr}");
            if name == "wrong-key" || name == "unreachable" {
                assert!(stderr.contains("check Endpoint and keys"), "{stderr}");
            }
            assert_eq!(wait_clean(&tb), Vec::<String>::new(), "{name} {mode:?}: left behind");
        }
    }
}
