//! Script hops end to end: a script that brings up a real tunnel (wireguard-go and `wg`, to a
//! wireguard-go peer the test starts on the fake internet) — the web host sees the peer's
//! address, names resolve through the tunnel with the nameserver the script wrote, `pallium
//! audit` passes, and teardown stops the script's daemons (wireguard-go, its control socket
//! gone, root and rootless, and after kill -9 of the supervisor or the netbroker); a script that
//! makes a plain device, root and rootless (the device is moved into the
//! hop's namespace with its address); and bad scripts (missing, not executable, failing,
//! never making the device, never exiting within its timeout, leaving a daemon behind) fail
//! with one line and leave nothing. The OpenConnect script against a real ocserv, root and
//! rootless, exits at the server with the DNS it pushed.

mod common;

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{
    assert_clean, audit_pid, modes, one_shot, out, pal, readable_profile, text, tun_usable, Mode,
};
use pallium_tests::{
    skip_unless_root, unique_ifname, TestUser, Testbed, WgPeer, WEB4_NAME, WG_CLIENT,
};

/// A directory everyone can read, for profiles and scripts.
fn shared_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pallium-script-hop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A shell script file with `mode`.
fn script(name: &str, body: &str, mode: u32) -> String {
    let p = shared_dir().join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p.display().to_string()
}

/// Pids whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!("{name}: {cmdline}"));
        }
    }
    found
}

/// Wait (the kernel reaps asynchronously) until no process has `needle` in its command line.
fn assert_gone(needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_with(needle);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left running: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The client side: wireguard-go (which backgrounds itself), `wg set`, the tunnel's address
/// and the nameserver, all from the hop's `PALLIUM_SCRIPT_*` keys.
const WG_CLIENT_SCRIPT: &str = r#"set -e
IF="$PALLIUM_SCRIPT_INTERFACE"
wireguard-go "$IF"
wg set "$IF" private-key "$PALLIUM_SCRIPT_KEY" peer "$PALLIUM_SCRIPT_PEER" \
    endpoint "$PALLIUM_SCRIPT_ENDPOINT" allowed-ips 0.0.0.0/0 persistent-keepalive 25
ip addr add "$PALLIUM_SCRIPT_ADDRESS/24" dev "$IF"
ip link set "$IF" up
echo "nameserver $PALLIUM_SCRIPT_DNS" > /etc/resolv.conf
echo "wireguard-go up on $IF"
"#;

/// The wireguard-go script's profile for `mode`: the client's key in a file that mode's
/// script can read.
fn wg_profile(tb: &Testbed, peer: &WgPeer, mode: Mode, ifname: &str) -> String {
    wg_profile_after(tb, peer, mode, ifname, "")
}

/// [`wg_profile`] with `before` (hops, each followed by a comma) ahead of the script hop.
fn wg_profile_after(tb: &Testbed, peer: &WgPeer, mode: Mode, ifname: &str, before: &str) -> String {
    // One file per session: rewriting a script another test's shell is reading would cut it.
    let path = script(&format!("wg-up-{ifname}"), WG_CLIENT_SCRIPT, 0o755);
    let key = shared_dir().join(format!("wg-key-{ifname}"));
    std::fs::copy(peer.client_key(), &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    if mode == Mode::Rootless {
        let u = TestUser::get();
        std::os::unix::fs::chown(&key, Some(u.uid()), Some(u.gid())).unwrap();
    }
    // Named after the interface: tests running at once must not share a profile (nor so a
    // session).
    readable_profile(
        &format!("wg-{ifname}"),
        &format!(
            r#"{{"chain": [{before} {{"type": "script", "path": "{path}", "interface": "{ifname}",
                "key": "{}", "peer": "{}", "endpoint": "{}", "address": "{WG_CLIENT}",
                "dns": "{}"}}],
              "run": {{"command": ["sleep", "600"]}}}}"#,
            key.display(),
            peer.public_key(),
            peer.endpoint(),
            tb.dns_v4()
        ),
    )
}

/// `pallium run` of `p`, once a name resolves and the web host answers through the tunnel;
/// what the web host saw.
fn wg_session(tb: &Testbed, mode: Mode, p: &str) -> (Child, String) {
    let mut session = pal(tb, mode, &["run", p])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = out(pal(
            tb,
            mode,
            &[
                "exec",
                p,
                "--",
                "sh",
                "-c",
                &format!("curl -sS --max-time 10 http://{WEB4_NAME}/"),
            ],
        ));
        if o.status.success() {
            return (session, text(&o).0);
        }
        if Instant::now() >= deadline || session.try_wait().unwrap().is_some() {
            let _ = session.kill();
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(session.stderr.as_mut().unwrap(), &mut err);
            panic!("{mode:?}: the session never came up: {:?}\n{err}", text(&o));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn script_hop_brings_up_wireguard_go_and_exits_at_the_peer() {
    skip_unless_root!();
    let tb = Testbed::new("scriptwg");
    let peer = tb.start_wireguard_peer();
    for mode in modes("script hops") {
        let ifname = unique_ifname("pwc");
        let p = wg_profile(&tb, &peer, mode, &ifname);
        let before = tb.dns_queries().len();
        let (mut session, seen) = wg_session(&tb, mode, &p);
        assert_eq!(
            seen.trim(),
            peer.exit_v4().to_string(),
            "{mode:?}: exit address"
        );
        // The name was resolved through the tunnel, with the script's nameserver (dnsmasq
        // may log it a moment after it answered).
        let deadline = Instant::now() + Duration::from_secs(10);
        let q = loop {
            let q = tb.dns_queries().split_off(before);
            if q.iter().any(|q| q.client == IpAddr::from(peer.exit_v4())) {
                break q;
            }
            assert!(
                Instant::now() < deadline,
                "{mode:?}: no query through the tunnel: {q:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let host: [IpAddr; 2] = [tb.host_v4().into(), tb.host_v6().into()];
        assert!(
            q.iter().all(|q| !host.contains(&q.client)),
            "{mode:?}: a query from the host: {q:?}"
        );
        // The application's namespace has the tunnel with its address, and no other way out.
        let o = out(pal(&tb, mode, &["exec", &p, "--", "ip", "-o", "addr"]));
        let (addrs, _) = text(&o);
        assert!(
            addrs.contains(&ifname) && addrs.contains(&format!("{WG_CLIENT}/24")),
            "{mode:?}: {addrs}"
        );
        let audit = out(pal(&tb, mode, &["audit", &p]));
        assert!(
            audit.status.success(),
            "{mode:?}: audit: {:?}",
            text(&audit)
        );
        assert!(
            text(&audit).0.contains("hop:script"),
            "{mode:?}: the script's holder is audited: {:?}",
            text(&audit)
        );
        assert!(
            !processes_with(&format!("wireguard-go {ifname}")).is_empty(),
            "{mode:?}: the client runs"
        );
        // Its control socket is the script's own, not in the host's /run/wireguard.
        let sock = format!("/run/wireguard/{ifname}.sock");
        assert!(!std::path::Path::new(&sock).exists(), "{sock} on the host");
        let _ = out(pal(&tb, mode, &["stop", &p]));
        let _ = session.wait();
        assert_gone(&format!("wireguard-go {ifname}"));
        assert!(peer.is_running());
        assert_clean(&tb);
    }
}

/// A script hop after a SOCKS hop (dante, UDP ASSOCIATE): the script runs where hop 2
/// connects from, so the tunnel's UDP travels through the proxy — the WireGuard server hears
/// its client from the proxy's address, and the web host sees the server's.
#[test]
fn script_hop_behind_a_socks_hop_tunnels_through_it() {
    skip_unless_root!();
    let tb = Testbed::new("scriptchain");
    let peer = tb.start_wireguard_peer();
    let proxy = tb.start_dante();
    let auth = proxy.auth().expect("dante requires credentials").clone();
    let socks = format!(
        r#"{{"type": "socks", "address": "{}", "username": "{}", "password": "{}"}},"#,
        proxy.addr(),
        auth.user,
        auth.pass
    );
    for mode in modes("script hops") {
        let ifname = unique_ifname("pwx");
        let p = wg_profile_after(&tb, &peer, mode, &ifname, &socks);
        let (mut session, seen) = wg_session(&tb, mode, &p);
        assert_eq!(
            seen.trim(),
            peer.exit_v4().to_string(),
            "{mode:?}: exit address"
        );
        let from = peer
            .client_endpoint()
            .unwrap_or_else(|e| panic!("{mode:?}: the server never heard its client: {e}"));
        assert!(
            from.starts_with(&format!("{}:", proxy.exit_v4())),
            "{mode:?}: the tunnel came from {from}, not through the proxy {}",
            proxy.exit_v4()
        );
        let _ = out(pal(&tb, mode, &["stop", &p]));
        let _ = session.wait();
        assert_gone(&format!("wireguard-go {ifname}"));
        assert_clean(&tb);
    }
}

/// SIGKILL of the supervisor, then of the netbroker, of a session whose script left
/// wireguard-go running: the session ends and the script's daemons go with it, nothing left.
#[test]
fn kill_9_of_a_script_session_leaves_nothing() {
    skip_unless_root!();
    let tb = Testbed::new("scriptkill");
    let peer = tb.start_wireguard_peer();
    for victim in ["supervisor", "netbroker"] {
        let ifname = unique_ifname("pwk");
        let p = wg_profile(&tb, &peer, Mode::Root, &ifname);
        let (mut session, _) = wg_session(&tb, Mode::Root, &p);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(audit_pid(&tb, Mode::Root, &p, victim)),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while session.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "{victim} killed: the session did not end"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_gone(&format!("wireguard-go {ifname}"));
        let sock = format!("/run/wireguard/{ifname}.sock");
        assert!(!std::path::Path::new(&sock).exists(), "{sock} left behind");
        if victim == "netbroker" {
            // The host's forwarding sysctls (hop 1's veth uplink) are written back by the next
            // pallium command once no session may be alive, as in hops.rs's kill -9 test.
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

#[test]
fn script_hop_moves_the_device_with_its_address() {
    skip_unless_root!();
    let tb = Testbed::new("scriptdev");
    let path = script(
        "dummy-up",
        "set -e\nip tuntap add dev \"$PALLIUM_SCRIPT_INTERFACE\" mode tun\n\
         ip addr add 10.99.0.2/24 dev \"$PALLIUM_SCRIPT_INTERFACE\"\n\
         echo 'nameserver 192.0.2.99' > /etc/resolv.conf\n",
        0o755,
    );
    for mode in modes("script hops") {
        let ifname = unique_ifname("psd");
        let p = readable_profile(
            "dev",
            &format!(
                r#"{{"chain": [{{"type": "script", "path": ["{path}"], "interface": "{ifname}"}}]}}"#
            ),
        );
        let (ok, stdout, stderr) = one_shot(
            &tb,
            mode,
            &p,
            "ip -o -4 addr; ip route; cat /etc/resolv.conf",
        );
        assert!(ok, "{mode:?}: {stdout}{stderr}");
        assert!(
            stdout.contains(&ifname) && stdout.contains("10.99.0.2/24"),
            "{mode:?}: {stdout}"
        );
        assert!(
            stdout.contains(&format!("default dev {ifname}")),
            "{mode:?}: {stdout}"
        );
        assert!(
            stdout.contains("nameserver 192.0.2.99"),
            "{mode:?}: {stdout}"
        );
        // The host's resolv.conf is not the script's.
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        assert!(
            !host.contains("192.0.2.99"),
            "the script wrote the host's resolv.conf"
        );
        assert_clean(&tb);
    }
}

#[test]
fn bad_scripts_fail_with_one_line_and_leave_nothing() {
    skip_unless_root!();
    let tb = Testbed::new("scriptbad");
    let failing = script(
        "fails",
        "echo 'cannot reach the VPN server' >&2\nexit 3\n",
        0o755,
    );
    let not_exec = script("notexec", "exit 0\n", 0o644);
    let marker = format!("98{}", std::process::id());
    let no_device = script(
        "nodevice",
        &format!("setsid sleep {marker} </dev/null >/dev/null 2>&1 &\nexit 0\n"),
        0o755,
    );
    let hangs = script("hangs", &format!("sleep {marker}\n"), 0o755);
    // What the script holds: CAP_NET_ADMIN (bit 12) and nothing else, no_new_privs.
    let caps = script(
        "caps",
        "grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status >&2\nexit 5\n",
        0o755,
    );
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            r#""path": "/nonexistent/vpn-up""#.to_string(),
            vec!["hop 1 (script)", "/nonexistent/vpn-up", "No such file"],
        ),
        (
            format!(r#""path": "{not_exec}""#),
            vec!["hop 1 (script)", "not an executable file"],
        ),
        (
            format!(r#""path": ["{failing}", "arg"]"#),
            vec![
                "hop 1 (script)",
                "exited with status 3",
                "cannot reach the VPN server",
            ],
        ),
        (
            format!(r#""path": "{no_device}", "interface": "nosuchdev0""#),
            vec!["hop 1 (script)", "nosuchdev0 never appeared"],
        ),
        (
            format!(r#""path": "{caps}""#),
            vec![
                "hop 1 (script)",
                "exited with status 5",
                "CapEff:\t0000000000001000",
                "CapBnd:\t0000000000001000",
                "NoNewPrivs:\t1",
            ],
        ),
        (
            format!(r#""path": "{hangs}", "timeout": "1""#),
            vec!["hop 1 (script)", "did not exit within 1 s"],
        ),
    ];
    for mode in modes("script hops") {
        for (hop, needles) in &cases {
            let p = readable_profile(
                "bad",
                &format!(r#"{{"chain": [{{"type": "script", {hop}}}]}}"#),
            );
            let (ok, stdout, stderr) = one_shot(&tb, mode, &p, "echo ran");
            assert!(!ok, "{mode:?} {hop}: {stdout}{stderr}");
            assert!(!stdout.contains("ran"), "{mode:?} {hop}: the command ran");
            let last = stderr.lines().last().unwrap_or_default();
            for n in needles {
                assert!(
                    last.contains(n),
                    "{mode:?} {hop}: '{n}' not in the error: {stderr}"
                );
            }
            let others: Vec<&str> = stderr
                .lines()
                .filter(|l| *l != last && !l.starts_with("pallium: hop "))
                .collect();
            assert!(
                others.is_empty(),
                "{mode:?} {hop}: more than the error: {stderr}"
            );
            // The daemon the script left (in a session of its own) went with it.
            assert_gone(&format!("sleep {marker}"));
            assert_clean(&tb);
        }
    }
}

/// `extra/scripts/openconnect`, copied (once: tests run it at once) where the test user may
/// run it.
fn openconnect_script() -> String {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(copy_openconnect_script).clone()
}

fn copy_openconnect_script() -> String {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../extra/scripts/openconnect");
    let dst = shared_dir().join("openconnect");
    std::fs::copy(&src, &dst).unwrap();
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).unwrap();
    dst.display().to_string()
}

/// The OpenConnect script's own argument handling: `--help` lists the profile keys, and
/// without a `destination` it says so in one line (and runs no openconnect).
#[test]
fn openconnect_script_help_and_missing_destination() {
    let path = openconnect_script();
    let o = out({
        let mut c = Command::new(&path);
        c.arg("--help")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        c
    });
    let (stdout, _) = text(&o);
    assert!(o.status.success(), "{stdout}");
    for key in [
        "destination",
        "username",
        "password_file",
        "servercert",
        "protocol",
    ] {
        assert!(
            stdout.contains(key),
            "--help does not mention {key}: {stdout}"
        );
    }
    let o = out({
        let mut c = Command::new(&path);
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("PALLIUM_SCRIPT_INTERFACE", "tun0");
        c
    });
    let (stdout, stderr) = text(&o);
    assert!(!o.status.success());
    assert_eq!(stdout, "");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no \"destination\""), "{stderr}");
}

/// The OpenConnect script as a hop, root and rootless, against a testbed address where no VPN
/// server listens: one line naming the hop and openconnect's reason, nothing left behind.
#[test]
fn openconnect_script_hop_reports_an_unreachable_server() {
    skip_unless_root!();
    let tb = Testbed::new("scriptoc");
    let path = openconnect_script();
    for mode in modes("script hops") {
        let ifname = unique_ifname("poc");
        let p = readable_profile(
            "oc",
            &format!(
                r#"{{"chain": [{{"type": "script", "path": "{path}", "interface": "{ifname}",
                    "destination": "https://{}:9/", "username": "john.doe", "timeout": "5"}}]}}"#,
                tb.web_v4()
            ),
        );
        let (ok, stdout, stderr) = one_shot(&tb, mode, &p, "echo ran");
        assert!(!ok, "{mode:?}: {stdout}{stderr}");
        assert!(!stdout.contains("ran"), "{mode:?}: the command ran");
        let last = stderr.lines().last().unwrap_or_default();
        // Rootless, hop 1's upstream namespace is served by pasta, which leaves a connection
        // to a closed port unanswered (the web host refuses it): openconnect waits, and the
        // hop's timeout ends it, its error showing how far openconnect got.
        let needles: &[&str] = match mode {
            Mode::Root => &[
                "openconnect could not connect to https://",
                "Connection refused",
            ],
            Mode::Rootless => &["did not exit within 5 s", "POST https://"],
        };
        for n in ["hop 1 (script)"].iter().chain(needles) {
            assert!(
                last.contains(n),
                "{mode:?}: '{n}' not in the error: {stderr}"
            );
        }
        let others: Vec<&str> = stderr
            .lines()
            .filter(|l| *l != last && !l.starts_with("pallium: hop "))
            .collect();
        assert!(others.is_empty(), "{mode:?}: more than the error: {stderr}");
        assert_gone(&format!("--interface {ifname}"));
        assert_clean(&tb);
    }
}

/// The OpenConnect script as a hop against a real AnyConnect-protocol server (Debian's ocserv
/// on the testbed, password login, pinned certificate), root and rootless: the web host sees
/// the server's address, names resolve with the DNS server it pushed, and nothing is left
/// behind (openconnect stopped, its TUN gone).
#[test]
fn openconnect_script_hop_exits_at_a_real_ocserv() {
    skip_unless_root!();
    if pallium_tests::missing_program(&["ocserv", "ocpasswd", "openconnect"]).is_some() {
        pallium_tests::skip("ocserv or openconnect is not installed");
        return;
    }
    let tb = Testbed::new("scriptocs");
    let server = tb.start_ocserv();
    let path = openconnect_script();
    let (user, password) = server.user();
    for mode in modes("script hops") {
        // A password file only the hop's user reads (the caller rootless).
        let pw = shared_dir().join(format!("oc-password-{}", mode.name()));
        std::fs::write(&pw, format!("{password}\n")).unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        if mode == Mode::Rootless {
            let u = TestUser::get();
            std::os::unix::fs::chown(&pw, Some(u.uid()), Some(u.gid())).unwrap();
        }
        let ifname = unique_ifname("poc");
        let p = readable_profile(
            "ocs",
            &format!(
                r#"{{"chain": [{{"type": "script", "path": "{path}", "interface": "{ifname}",
                    "destination": "{}", "username": "{user}", "password_file": "{}",
                    "servercert": "{}", "timeout": "30"}}]}}"#,
                server.destination(),
                pw.display(),
                server.pin()
            ),
        );
        let script = format!(
            "curl -sS --max-time 10 http://{}/; echo; curl -sS --max-time 10 http://{WEB4_NAME}/; echo",
            tb.web_v4()
        );
        let (ok, stdout, stderr) = one_shot(&tb, mode, &p, &script);
        assert!(ok, "{mode:?}: {stdout}{stderr}\nocserv: {}", server.log());
        let exit = server.exit_v4().to_string();
        let seen: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(seen, [exit.as_str(), exit.as_str()], "{mode:?}: {stderr}");
        assert_gone(&format!("--interface {ifname}"));
        assert_clean(&tb);
        let _ = std::fs::remove_file(&pw);
    }
}

/// The script as openconnect's vpnc-script (`--vpnc-script`, run by openconnect on connect):
/// on a real TUN in a testbed namespace it puts the pushed addresses and MTU on the device and
/// writes the pushed nameservers and domain to /etc/resolv.conf (here a file bound over it in a
/// mount namespace of the test's own); on the other reasons it does nothing.
#[test]
fn openconnect_script_configures_the_tun_as_vpnc_script() {
    skip_unless_root!();
    let tb = Testbed::new("scriptvpnc");
    let path = openconnect_script();
    let ns = tb.web_netns();
    let tun = unique_ifname("pov");
    let ok = |c: Command| {
        let o = out(c);
        assert!(o.status.success(), "{:?}", text(&o));
        text(&o).0
    };
    ok(tb.exec_in(&ns, ["ip", "tuntap", "add", "dev", &tun, "mode", "tun"]));
    let resolv = shared_dir().join(format!("resolv-{tun}"));
    std::fs::write(&resolv, "nameserver 192.0.2.1\n").unwrap();
    let run = |reason: &str| {
        let mut c = Command::new("unshare");
        c.args([
            "-m",
            "sh",
            "-c",
            "mount --bind \"$0\" /etc/resolv.conf && shift && exec \"$@\"",
        ])
        .arg(&resolv)
        .arg("--")
        .args([
            "ip",
            "netns",
            "exec",
            &ns,
            "env",
            "-i",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        ])
        .arg(format!("reason={reason}"))
        .arg(format!("TUNDEV={tun}"))
        .args([
            "INTERNAL_IP4_ADDRESS=10.1.2.3",
            "INTERNAL_IP4_MTU=1300",
            "INTERNAL_IP6_NETMASK=fd00:5::5/64",
            "INTERNAL_IP4_DNS=10.1.0.53 10.1.0.54",
            "INTERNAL_IP6_DNS=fd00:5::53",
            "CISCO_DEF_DOMAIN=corp.example",
        ])
        .args([path.as_str(), "--vpnc-script"]);
        c
    };
    // pre-init and disconnect: nothing changes.
    ok(run("pre-init"));
    ok(run("disconnect"));
    assert_eq!(
        std::fs::read_to_string(&resolv).unwrap(),
        "nameserver 192.0.2.1\n"
    );
    assert!(!ok(tb.exec_in(&ns, ["ip", "-o", "addr", "show", "dev", &tun])).contains("10.1.2.3"));
    ok(run("connect"));
    let addrs = ok(tb.exec_in(&ns, ["ip", "-o", "addr", "show", "dev", &tun]));
    assert!(
        addrs.contains("10.1.2.3/32") && addrs.contains("fd00:5::5/64"),
        "{addrs}"
    );
    let link = ok(tb.exec_in(&ns, ["ip", "-o", "link", "show", "dev", &tun]));
    assert!(link.contains("mtu 1300") && link.contains(",UP"), "{link}");
    assert_eq!(
        std::fs::read_to_string(&resolv).unwrap(),
        "nameserver 10.1.0.53\nnameserver 10.1.0.54\nnameserver fd00:5::53\nsearch corp.example\n"
    );
    let _ = std::fs::remove_file(&resolv);
    ok(tb.exec_in(&ns, ["ip", "link", "del", "dev", &tun]));
}

/// A peers file in /etc/ppp/peers, unique to this test process, removed on drop.
struct Peers(PathBuf);

impl Peers {
    fn new(tag: &str, text: &str) -> Peers {
        let p = PathBuf::from(format!(
            "/etc/ppp/peers/pallium-test-{tag}-{}",
            std::process::id()
        ));
        std::fs::write(&p, text).unwrap();
        Peers(p)
    }
    fn provider(&self) -> String {
        self.0.file_name().unwrap().to_string_lossy().into_owned()
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// ppp hops, everything around pppd (this machine's kernel has no PPP, see below): refused
/// rootless and after the first hop, a missing peers file, a device that is not there, and no
/// kernel PPP support — each one line naming the hop, nothing left behind.
#[test]
fn ppp_hop_errors_are_one_line() {
    skip_unless_root!();
    let tb = Testbed::new("ppperr");
    // The testbed host's uplink, the device a PPPoE peers file names.
    let links = text(&out(tb.host_exec(["ip", "-o", "link", "show"]))).0;
    let uplink = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap())
        .find(|n| *n != "lo")
        .expect("the testbed host has an uplink")
        .to_string();
    let good = Peers::new(
        "good",
        &format!("pty \"/usr/sbin/pppoe -I {uplink} -T 80\"\nnoauth\nusepeerdns\n"),
    );
    let nodev = Peers::new("nodev", "pty \"/usr/sbin/pppoe -I nosuchdev9 -T 80\"\n");
    let tun_script = script(
        "tun-up",
        "ip tuntap add dev \"$PALLIUM_SCRIPT_INTERFACE\" mode tun\n",
        0o755,
    );
    let ppp = |peers: &str| format!(r#"{{"type": "ppp", "provider": "{peers}"}}"#);
    let missing = format!("pallium-test-none-{}", std::process::id());
    let mut cases: Vec<(Mode, String, Vec<String>)> = vec![
        (
            Mode::Root,
            format!(
                r#"{{"type": "script", "path": "{tun_script}", "interface": "{}"}}, {}"#,
                unique_ifname("ppt"),
                ppp(&good.provider())
            ),
            vec!["hop 2 (ppp)".into(), "must be the chain's first hop".into()],
        ),
        (
            Mode::Root,
            ppp(&missing),
            vec![
                "hop 1 (ppp)".into(),
                format!("/etc/ppp/peers/{missing}"),
                "No such file".into(),
            ],
        ),
        (
            Mode::Root,
            ppp(&nodev.provider()),
            vec!["hop 1 (ppp)".into(), "ppp device nosuchdev9".into()],
        ),
    ];
    if tun_usable() {
        cases.push((
            Mode::Rootless,
            ppp(&good.provider()),
            vec!["hop 1 (ppp)".into(), "needs root mode".into()],
        ));
    }
    // Here: a Firecracker kernel without CONFIG_PPP (no ppp_generic: /dev/ppp is missing, and
    // a node made for it, c 108 0, answers ENXIO) nor CONFIG_PPPOE, and no modules to load.
    let ppp_dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/ppp");
    if ppp_dev.is_err() {
        cases.push((
            Mode::Root,
            ppp(&good.provider()),
            vec![
                "hop 1 (ppp)".into(),
                "this kernel has no PPP support (/dev/ppp".into(),
            ],
        ));
    } else {
        pallium_tests::skip("ppp: this kernel has PPP support; the no-support error is untested");
    }
    for (mode, chain, needles) in &cases {
        let p = readable_profile("ppp", &format!(r#"{{"chain": [{chain}]}}"#));
        let (ok, stdout, stderr) = one_shot(&tb, *mode, &p, "echo ran");
        assert!(!ok, "{mode:?} {chain}: {stdout}{stderr}");
        assert!(!stdout.contains("ran"), "{mode:?} {chain}: the command ran");
        let last = stderr.lines().last().unwrap_or_default();
        for n in needles {
            assert!(
                last.contains(n.as_str()),
                "{mode:?} {chain}: '{n}' not in the error: {stderr}"
            );
        }
        let others: Vec<&str> = stderr
            .lines()
            .filter(|l| *l != last && !l.starts_with("pallium: hop "))
            .collect();
        assert!(
            others.is_empty(),
            "{mode:?} {chain}: more than the error: {stderr}"
        );
        assert_clean(&tb);
    }
}
