//! End to end as an ordinary user the test creates: pallium in rootless mode
//! (its own user namespace; the empty chain's uplink the packet engine in
//! direct mode, or pasta/slirp4netns by `network.uplink`) reaches the web
//! host, maps the command back to the caller's uid, runs sessions, and
//! cleans up; missing tools give one clear line. Direct mode: TCP, UDP and
//! DNS over both families reach the testbed, the host's own addresses (also
//! one added during the session) do not, and a killed engine blocks the
//! session's traffic and is reported.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{out, pal, profile_file, staged, text, tun_usable, wait_clean, Mode};
use pallium_tests::{skip_unless_root, Resolver, TestUser, Testbed, WEB4_NAME, WEB6_NAME};

macro_rules! rootless_prelude {
    () => {
        skip_unless_root!();
        if !tun_usable() {
            pallium_tests::skip(
                "/dev/net/tun is not world read-write (chmod 0666 /dev/net/tun; .ci/run does)",
            );
            return;
        }
    };
}

#[test]
fn rootless_exec_reaches_the_web_host_as_the_callers_uid() {
    rootless_prelude!();
    let tb = Testbed::new("rlweb");
    let script = format!(
        "id -u; hostname; curl -sS -4 --max-time 5 http://{WEB4_NAME}/; echo; curl -sS -6 --max-time 5 http://{WEB6_NAME}/"
    );
    let o = out(pal(
        &tb,
        Mode::Rootless,
        &["exec", "--one-shot", "default", "--", "sh", "-c", &script],
    ));
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines[0],
        TestUser::get().uid().to_string(),
        "mapped back to the caller's uid"
    );
    assert_eq!(lines[1], "pallium");
    // pasta/slirp4netns open the connections from the host namespace.
    assert_eq!(
        &lines[2..],
        [tb.host_v4().to_string(), tb.host_v6().to_string()],
        "{stderr}"
    );
    assert!(
        tb.dns_queries().iter().any(|q| q.name == WEB4_NAME),
        "{:?}",
        tb.dns_queries()
    );
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

#[test]
fn rootless_root_flag_stays_namespace_root() {
    rootless_prelude!();
    let tb = Testbed::new("rlroot");
    let o = out(pal(
        &tb,
        Mode::Rootless,
        &["exec", "--one-shot", "--root", "default", "--", "id", "-u"],
    ));
    assert_eq!(text(&o).0.trim(), "0", "{}", text(&o).1);
}

#[test]
fn rootless_loopback_resolver_works() {
    rootless_prelude!();
    let tb = Testbed::builder("rlstub")
        .resolver(Resolver::Loopback)
        .build();
    let url = format!("http://{WEB4_NAME}/");
    let o = out(pal(
        &tb,
        Mode::Rootless,
        &[
            "exec",
            "--one-shot",
            "default",
            "--",
            "curl",
            "-sS",
            "--max-time",
            "5",
            &url,
        ],
    ));
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), tb.host_v4().to_string());
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

#[test]
fn rootless_sessions_exit_codes_audit_and_stop() {
    rootless_prelude!();
    let tb = Testbed::new("rlsess");
    let prof = profile_file("rlsess", r#"{"run": {"command": ["sleep", "infinity"]}}"#);
    let prof = prof.to_str().unwrap();
    let mut run = pal(&tb, Mode::Rootless, &["run", prof])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !out(pal(&tb, Mode::Rootless, &["exec", prof, "--", "true"]))
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "session never became ready");
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(
        out(pal(
            &tb,
            Mode::Rootless,
            &["exec", prof, "--", "sh", "-c", "exit 9"]
        ))
        .status
        .code(),
        Some(9)
    );
    let o = out(pal(&tb, Mode::Rootless, &["exec", prof, "--", "id", "-u"]));
    assert_eq!(text(&o).0.trim(), TestUser::get().uid().to_string());
    let list = text(&out(pal(&tb, Mode::Rootless, &["list"]))).0;
    assert!(list.lines().any(|l| l.starts_with(prof)), "{list}");
    let o = out(pal(&tb, Mode::Rootless, &["audit", prof]));
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    // The empty chain's direct uplink: its packet engine.
    assert!(stdout.contains("engine"), "{stdout}");
    assert!(out(pal(&tb, Mode::Rootless, &["stop", prof]))
        .status
        .success());
    assert_eq!(run.wait().unwrap().code(), Some(143));
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

#[test]
fn rootless_kill_9_of_the_supervisor_leaves_nothing() {
    rootless_prelude!();
    let tb = Testbed::new("rlkill");
    let prof = profile_file("rlkill", r#"{"run": {"command": ["sleep", "infinity"]}}"#);
    let prof = prof.to_str().unwrap();
    for delay_ms in [0u64, 5, 20, 300] {
        let mut run = pal(&tb, Mode::Rootless, &["run", prof])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        // `ip netns exec` and `setpriv` exec, so this is pallium's pid.
        run.kill().unwrap();
        run.wait().unwrap();
        assert_eq!(
            wait_clean(&tb),
            Vec::<String>::new(),
            "killed after {delay_ms} ms"
        );
    }
    let o = out(pal(
        &tb,
        Mode::Rootless,
        &["exec", "--one-shot", prof, "--", "true"],
    ));
    assert!(o.status.success(), "{}", text(&o).1);
}

#[test]
fn rootless_without_pasta_or_slirp4netns_names_the_package() {
    rootless_prelude!();
    let tb = Testbed::new("rlnopasta");
    let p = staged().join("pallium").display().to_string();
    // The empty chain needs neither (direct); forcing the userspace uplink does.
    let prof = profile_file("rlnopasta", r#"{"network": {"force_slirp": true}}"#);
    // A PATH without either tool.
    let o = out(tb.host_exec_as(
        TestUser::get(),
        [
            "/usr/bin/env",
            "PATH=/nonexistent",
            p.as_str(),
            "exec",
            "--one-shot",
            prof.to_str().unwrap(),
            "--",
            "true",
        ],
    ));
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr.contains("passt") && stderr.contains("slirp4netns"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn rootless_refuses_a_root_only_key_before_setting_anything_up() {
    rootless_prelude!();
    let tb = Testbed::new("rlbridge");
    let prof = profile_file("rlbridge", r#"{"network": {"bridge": {"name": "br0"}}}"#);
    let o = out(pal(
        &tb,
        Mode::Rootless,
        &["exec", "--one-shot", prof.to_str().unwrap(), "--", "true"],
    ));
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr.contains("network.bridge needs root"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

/// A python3 one-liner run in the sandbox: UDP to the web host's echo port
/// over both families, then TCP to each `host:port` given, printing one
/// line per attempt ("udp4 ok", "tcp 192.0.2.1:8099 refused", …).
const PROBE: &str = r#"
import socket, sys
def udp(fam, host, port, tag):
    s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(3)
    try:
        s.sendto(b"ping", (host, port)); d, _ = s.recvfrom(100)
        print(tag, "ok" if d == b"ping" else "bad")
    except OSError as e:
        print(tag, "failed", e)
udp(socket.AF_INET, sys.argv[1], int(sys.argv[3]), "udp4")
udp(socket.AF_INET6, sys.argv[2], int(sys.argv[3]), "udp6")
for t in sys.argv[4:]:
    h, p = t.rsplit(":", 1)
    try:
        socket.create_connection((h.strip("[]"), int(p)), timeout=5).close(); print("tcp", t, "connected")
    except ConnectionRefusedError:
        print("tcp", t, "refused")
    except OSError as e:
        print("tcp", t, "failed", e)
"#;

/// A TCP listener as root in the testbed's host namespace on `addr`, which
/// counts accepted connections into `log` (one line each).
fn host_listener(tb: &Testbed, addr: &str, log: &std::path::Path) -> std::process::Child {
    let code = format!(
        "import socket\ns = socket.create_server(('{addr}', 8099), family=socket.AF_INET6 if ':' in '{addr}' else socket.AF_INET)\nprint('ready', flush=True)\nwhile True:\n    c, _ = s.accept(); open('{}', 'a').write('x\\n'); c.close()\n",
        log.display()
    );
    let mut child = tb
        .host_exec(["python3", "-c", &code])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for it to listen.
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    child
}

#[test]
fn rootless_direct_uplink_reaches_the_testbed_but_not_the_host() {
    rootless_prelude!();
    let tb = Testbed::new("rldirect");
    let prof = profile_file(
        "rldirect",
        r#"{"run": {"command": ["sleep", "infinity"]}, "network": {"uplink": "direct"}}"#,
    );
    let prof = prof.to_str().unwrap();
    let dir = tempdir_for("rldirect");
    let log = dir.join("accepted");
    std::fs::write(&log, "").unwrap();
    let mut listeners = vec![
        host_listener(&tb, &tb.host_v4().to_string(), &log),
        host_listener(&tb, &tb.host_v6().to_string(), &log),
    ];
    // Ping sockets for the caller in the host namespace (the testbed's own).
    assert!(tb
        .host_exec(["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"])
        .status()
        .unwrap()
        .success());
    let mut run = pal(&tb, Mode::Rootless, &["run", prof])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !out(pal(&tb, Mode::Rootless, &["exec", prof, "--", "true"]))
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "session never became ready");
        std::thread::sleep(Duration::from_millis(30));
    }
    // An address the host gets after the session started: not in the list
    // the engine was given, caught by its route check.
    let late = "203.0.113.99";
    assert!(tb
        .host_exec(["ip", "addr", "add", &format!("{late}/32"), "dev", "lo"])
        .status()
        .unwrap()
        .success());
    listeners.push(host_listener(&tb, late, &log));
    let web4 = tb.web_v4().to_string();
    let web6 = tb.web_v6().to_string();
    let port = tb.udp_echo_port().to_string();
    let own4 = format!("{}:8099", tb.host_v4());
    let own6 = format!("[{}]:8099", tb.host_v6());
    let late_t = format!("{late}:8099");
    let o = out(pal(
        &tb,
        Mode::Rootless,
        &[
            "exec", prof, "--", "python3", "-c", PROBE, &web4, &web6, &port, &own4, &own6, &late_t,
        ],
    ));
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "udp4 ok".to_string(),
            "udp6 ok".to_string(),
            format!("tcp {own4} refused"),
            format!("tcp {own6} refused"),
            format!("tcp {late_t} refused"),
        ],
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "",
        "a host listener was reached"
    );
    // The web host saw the caller's own address (the engine's sockets are
    // the caller's, in the host namespace), names resolved by the testbed's DNS.
    let script = format!("curl -sS -4 --max-time 5 http://{WEB4_NAME}/; echo; curl -sS -6 --max-time 5 http://{WEB6_NAME}/");
    let o = out(pal(
        &tb,
        Mode::Rootless,
        &["exec", prof, "--", "sh", "-c", &script],
    ));
    let (stdout, stderr) = text(&o);
    assert_eq!(
        stdout.lines().filter(|l| !l.is_empty()).collect::<Vec<_>>(),
        [tb.host_v4().to_string(), tb.host_v6().to_string()],
        "{stderr}"
    );
    // ICMP echo through the engine's ping sockets, both families.
    // (No ping binary needed: python's ping socket, as ping itself uses.)
    let ping = r#"
import socket, sys
v6 = ":" in sys.argv[1]
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM,
                  socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
s.settimeout(3)
s.sendto(bytes([128 if v6 else 8, 0, 0, 0, 0, 0, 0, 1]) + b"pallium", (sys.argv[1], 0))
d = s.recv(100)
print("reply" if d[0] == (129 if v6 else 0) and d.endswith(b"pallium") else "bad")
"#;
    for target in [web4.as_str(), web6.as_str()] {
        let o = out(pal(
            &tb,
            Mode::Rootless,
            &["exec", prof, "--", "python3", "-c", ping, target],
        ));
        assert_eq!(text(&o).0.trim(), "reply", "ping {target}: {:?}", text(&o));
    }
    assert!(out(pal(&tb, Mode::Rootless, &["stop", prof]))
        .status
        .success());
    let _ = run.wait();
    for mut l in listeners {
        let _ = l.kill();
        let _ = l.wait();
    }
    let _ = tb
        .host_exec(["ip", "addr", "del", &format!("{late}/32"), "dev", "lo"])
        .status();
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

#[test]
fn rootless_direct_engine_killed_blocks_traffic_and_is_reported() {
    rootless_prelude!();
    let tb = Testbed::new("rldkill");
    let prof = profile_file("rldkill", r#"{"run": {"command": ["sleep", "infinity"]}}"#);
    let prof = prof.to_str().unwrap();
    let mut run = pal(&tb, Mode::Rootless, &["run", prof])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !out(pal(&tb, Mode::Rootless, &["exec", prof, "--", "true"]))
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "session never became ready");
        std::thread::sleep(Duration::from_millis(30));
    }
    let url = tb.web4_url();
    let curl = [
        "exec",
        prof,
        "--",
        "curl",
        "-sS",
        "--max-time",
        "3",
        url.as_str(),
    ];
    assert!(out(pal(&tb, Mode::Rootless, &curl)).status.success());
    // `pallium audit` lists the engine; kill it.
    let audit = text(&out(pal(&tb, Mode::Rootless, &["audit", prof]))).0;
    let pid: i32 = audit
        .lines()
        .find(|l| l.contains("engine"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.parse().ok()))
        .unwrap_or_else(|| panic!("no engine in the audit:\n{audit}"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let seen_before = tb.web_seen().len();
    let o = out(pal(&tb, Mode::Rootless, &curl));
    assert!(!o.status.success(), "{:?}", text(&o));
    assert_eq!(
        tb.web_seen().len(),
        seen_before,
        "a request left without the engine"
    );
    // The supervisor says so (the netbroker checks once a second).
    std::thread::sleep(Duration::from_millis(1500));
    assert!(out(pal(&tb, Mode::Rootless, &["stop", prof]))
        .status
        .success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let _ = run.wait();
    assert!(
        stderr.contains("direct uplink stopped") && stderr.contains("SIGKILL"),
        "{stderr}"
    );
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

#[test]
fn rootless_pasta_stays_selectable() {
    rootless_prelude!();
    let tb = Testbed::new("rlpasta");
    let prof = profile_file("rlpasta", r#"{"network": {"uplink": "pasta"}}"#);
    let script = format!("curl -sS -4 --max-time 5 http://{WEB4_NAME}/");
    let o = out(pal(
        &tb,
        Mode::Rootless,
        &[
            "exec",
            "--one-shot",
            prof.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            &script,
        ],
    ));
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), tb.host_v4().to_string());
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

/// A directory the test (root) writes and the listeners append to.
fn tempdir_for(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pallium-rl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
