//! `network.port_forwarding.local` and `network.hooks` end to end, root and
//! rootless: a server in the sandbox (on its loopback addresses) is reached
//! from the testbed's host namespace over forwarded TCP and UDP ports, IPv4
//! and IPv6; the application and the hooks see the `PALLIUM_FORWARD*`
//! variables; a host port in use is one line naming the rule; the original's
//! `test_port_forwarding` (nc in the sandbox); the same behind a socks hop;
//! nothing is left behind after `stop` and after `kill -9` of the
//! supervisor, and the ports are free again.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{out, pal, profile_file, text, wait_clean, Mode};
use pallium_tests::{skip_unless_root, TestUser, Testbed};

/// The four rules: v4 and v6, TCP and UDP, to the sandbox's loopback.
const RULES: [&str; 4] = [
    "tcp://127.0.0.1:1337:127.0.0.1:8000",
    "tcp://[::1]:1338:[::1]:8001",
    "udp://127.0.0.1:1339:127.0.0.1:8002",
    "udp://[::1]:1340:[::1]:8003",
];

/// The application: answers each TCP line and UDP datagram with what it got,
/// its protocol and the ports pallium told it about.
const SERVER: &str = r#"
import os, socket, threading
ports = os.environ.get("PALLIUM_FORWARD_PORTS", "-")
def tcp(fam, addr):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(addr); s.listen(16)
    while True:
        c, _ = s.accept()
        line = c.makefile().readline().strip()
        c.sendall(("tcp %s ports=%s\n" % (line, ports)).encode()); c.close()
def udp(fam, addr):
    s = socket.socket(fam, socket.SOCK_DGRAM); s.bind(addr)
    while True:
        d, peer = s.recvfrom(2048)
        s.sendto(b"udp " + d, peer)
ts = [threading.Thread(target=tcp, args=(socket.AF_INET, ("127.0.0.1", 8000))),
      threading.Thread(target=tcp, args=(socket.AF_INET6, ("::1", 8001))),
      threading.Thread(target=udp, args=(socket.AF_INET, ("127.0.0.1", 8002))),
      threading.Thread(target=udp, args=(socket.AF_INET6, ("::1", 8003)))]
for t in ts: t.start()
for t in ts: t.join()
"#;

/// The host side: `proto host port message`; retries (a forwarded TCP
/// connection is accepted at once and closed while nothing listens in the
/// sandbox yet) until an answer comes or 60 s pass, prints the answer.
const CLIENT: &str = r#"
import socket, sys, time
proto, host, port, msg = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
deadline = time.time() + 60
while time.time() < deadline:
    try:
        if proto == "tcp":
            s = socket.create_connection((host, port), timeout=5)
            s.sendall((msg + "\n").encode())
            got = s.makefile().read().strip()
        else:
            s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(1)
            s.sendto(msg.encode(), (host, port))
            got = s.recvfrom(2048)[0].decode()
        if got:
            print(got); sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
print("no answer"); sys.exit(1)
"#;

/// `CLIENT proto host port msg` in the testbed's host namespace.
fn ask(tb: &Testbed, proto: &str, host: &str, port: u16, msg: &str) -> String {
    let o = out(tb.host_exec([
        "/usr/bin/python3",
        "-c",
        CLIENT,
        proto,
        host,
        &port.to_string(),
        msg,
    ]));
    text(&o).0.trim().to_string()
}

/// Can the host namespace bind `port` (TCP on 127.0.0.1 and ::1) again?
fn free(tb: &Testbed, port: u16) -> bool {
    let script = "import socket,sys\nfor f,h in ((socket.AF_INET,'127.0.0.1'),(socket.AF_INET6,'::1')):\n s=socket.socket(f); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((h,int(sys.argv[1])))";
    out(tb.host_exec(["/usr/bin/python3", "-c", script, &port.to_string()]))
        .status
        .success()
}

/// A directory both root and the test user may write the hooks' files to.
fn hook_dir(name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let d = std::env::temp_dir().join(format!("pallium-fwd-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

fn profile(name: &str, dir: &Path) -> String {
    let json = serde_json::json!({
        "network": {
            "port_forwarding": {"local": RULES},
            "hooks": {
                "post_up": format!("env | grep ^PALLIUM_ | sort > {}/up; id -u >> {}/up", dir.display(), dir.display()),
                "pre_down": ["/bin/sh", "-c", format!("echo $PALLIUM_HOOK $PALLIUM_FORWARD_PORTS > {}/down", dir.display())],
            },
        },
        "run": {"command": ["/usr/bin/python3", "-c", SERVER]},
    });
    let p = profile_file(name, &json.to_string());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    p.display().to_string()
}

fn spawn_run(tb: &Testbed, mode: Mode, prof: &str) -> Child {
    pal(tb, mode, &["run", prof])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn run")
}

/// All four forwards answer, with the ports in the application's
/// environment.
fn assert_forwards(tb: &Testbed, run: &mut Child) {
    let want_ports = "ports=8000 8001 8002 8003";
    for (proto, host, port) in [
        ("tcp", "127.0.0.1", 1337),
        ("tcp", "::1", 1338),
        ("udp", "127.0.0.1", 1339),
        ("udp", "::1", 1340),
    ] {
        let got = ask(tb, proto, host, port, &format!("hello-{port}"));
        let want = match proto {
            "tcp" => format!("tcp hello-{port} {want_ports}"),
            _ => format!("udp hello-{port}"),
        };
        if got != want {
            let _ = run.kill();
            let mut err = String::new();
            if let Some(mut e) = run.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            panic!("{proto} {host}:{port}: got {got:?}, want {want:?}; pallium said: {err}");
        }
    }
}

fn forwards_and_hooks(mode: Mode, name: &str) {
    let tb = Testbed::new(name);
    let dir = hook_dir(name);
    let prof = profile(name, &dir);
    let mut run = spawn_run(&tb, mode, &prof);
    assert_forwards(&tb, &mut run);
    // A second UDP datagram from another client is a flow of its own.
    assert_eq!(ask(&tb, "udp", "127.0.0.1", 1339, "again"), "udp again");

    let up = std::fs::read_to_string(dir.join("up")).expect("post_up ran");
    for line in [
        "PALLIUM_FORWARDS=tcp://127.0.0.1:1337:127.0.0.1:8000 tcp://[::1]:1338:[::1]:8001 udp://127.0.0.1:1339:127.0.0.1:8002 udp://[::1]:1340:[::1]:8003",
        "PALLIUM_FORWARD_PORTS=8000 8001 8002 8003",
        "PALLIUM_FORWARD_TCP_PORTS=8000 8001",
        "PALLIUM_FORWARD_UDP_PORTS=8002 8003",
        "PALLIUM_HOOK=post_up",
        "PALLIUM_SESSION_INDEX=0",
    ] {
        assert!(up.lines().any(|l| l == line), "{line} missing in {up}");
    }
    assert!(up.contains("PALLIUM_INIT_PID="), "{up}");
    // As the caller.
    let uid = match mode {
        Mode::Root => "0".to_string(),
        Mode::Rootless => TestUser::get().uid().to_string(),
    };
    assert_eq!(up.lines().last(), Some(uid.as_str()), "{up}");
    assert!(!dir.join("down").exists());

    assert!(out(pal(&tb, mode, &["stop", &prof])).status.success());
    assert_eq!(run.wait().unwrap().code(), Some(143));
    assert_eq!(
        std::fs::read_to_string(dir.join("down")).expect("pre_down ran"),
        "pre_down 8000 8001 8002 8003\n"
    );
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
    for port in [1337, 1338] {
        assert!(free(&tb, port), "port {port} still bound after stop");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn root_forwards_tcp_and_udp_over_ipv4_and_ipv6_and_runs_the_hooks() {
    skip_unless_root!();
    forwards_and_hooks(Mode::Root, "fwdroot");
}

#[test]
fn rootless_forwards_tcp_and_udp_over_ipv4_and_ipv6_and_runs_the_hooks() {
    skip_unless_root!();
    forwards_and_hooks(Mode::Rootless, "fwdrl");
}

/// Rootless with a userspace uplink (pasta) instead of the direct one.
#[test]
fn rootless_forwards_through_the_pasta_uplink() {
    skip_unless_root!();
    let tb = Testbed::new("fwdpasta");
    let json = serde_json::json!({
        "network": {"uplink": "pasta", "port_forwarding": {"local": RULES}},
        "run": {"command": ["/usr/bin/python3", "-c", SERVER]},
    });
    let p = profile_file("fwdpasta", &json.to_string());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let prof = p.display().to_string();
    let mut run = spawn_run(&tb, Mode::Rootless, &prof);
    assert_forwards(&tb, &mut run);
    assert!(out(pal(&tb, Mode::Rootless, &["stop", &prof]))
        .status
        .success());
    assert_eq!(run.wait().unwrap().code(), Some(143));
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

/// Forwarded ports reach an application behind a hop (socks, microsocks):
/// the forwarder sits in the application's namespace, not the hop's, root
/// and rootless.
#[test]
fn forwards_reach_an_application_behind_a_socks_hop() {
    skip_unless_root!();
    let tb = Testbed::new("fwdsocks");
    let socks = tb.start_microsocks();
    let json = serde_json::json!({
        "network": {
            "chain": [{"type": "socks", "address": socks.addr().to_string()}],
            "port_forwarding": {"local": RULES},
        },
        "run": {"command": ["/usr/bin/python3", "-c", SERVER]},
    });
    let p = profile_file("fwdsocks", &json.to_string());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let prof = p.display().to_string();
    let mut modes = vec![Mode::Root];
    if std::fs::metadata("/dev/net/tun").is_ok_and(|m| m.permissions().mode() & 0o006 == 0o006) {
        modes.push(Mode::Rootless);
    } else {
        pallium_tests::skip(
            "rootless forwarding behind a hop: /dev/net/tun is not world read-write",
        );
    }
    for mode in modes {
        let mut run = spawn_run(&tb, mode, &prof);
        assert_forwards(&tb, &mut run);
        assert!(out(pal(&tb, mode, &["stop", &prof])).status.success());
        assert_eq!(run.wait().unwrap().code(), Some(143));
        assert_eq!(wait_clean(&tb), Vec::<String>::new());
    }
}

/// The original's `test_port_forwarding`: `nc -l -p 8000` in the sandbox,
/// the host connects to 127.0.0.1:1337 and the data arrives.
#[test]
fn the_originals_test_port_forwarding() {
    skip_unless_root!();
    let tb = Testbed::new("fwdorig");
    let prof = profile_file(
        "fwdorig",
        r#"{"network": {"port_forwarding": {"local": ["tcp://127.0.0.1:1337:127.0.0.1:8000"]}},
            "run": {"command": ["busybox", "nc", "-l", "-p", "8000"]}}"#,
    );
    let mut run = pal(&tb, Mode::Root, &["run", prof.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Send until nc has it and ends (before it listens, the forwarder
    // closes each connection at once and the data goes nowhere).
    let send = "import socket\ntry:\n s = socket.create_connection(('127.0.0.1', 1337), timeout=5)\n s.sendall(b'Hello World\\n'); s.shutdown(socket.SHUT_WR); s.recv(100)\nexcept OSError:\n pass";
    let deadline = Instant::now() + Duration::from_secs(60);
    while run.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "nc never got the data");
        out(tb.host_exec(["/usr/bin/python3", "-c", send]));
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = run.wait_with_output().unwrap();
    let (stdout, stderr) = text(&o);
    assert!(
        stdout.contains("Hello World"),
        "stdout {stdout:?}, stderr {stderr}"
    );
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

/// A host port already bound: one line naming the rule, before anything
/// is set up, and nothing left behind.
#[test]
fn a_host_port_in_use_is_one_line_naming_the_rule() {
    skip_unless_root!();
    let tb = Testbed::new("fwdbusy");
    let mut holder = tb
        .host_exec([
            "/usr/bin/python3",
            "-c",
            "import socket,time\ns=socket.socket(); s.bind(('127.0.0.1',1337)); s.listen(1); print('held', flush=True); time.sleep(600)",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");
    let prof = profile_file(
        "fwdbusy",
        r#"{"network": {"port_forwarding": {"local": ["udp://127.0.0.1:1339:127.0.0.1:53", "tcp://127.0.0.1:1337:127.0.0.1:8000"]}}}"#,
    );
    let o = out(pal(
        &tb,
        Mode::Root,
        &["exec", "--one-shot", prof.to_str().unwrap(), "--", "true"],
    ));
    let _ = holder.kill();
    let _ = holder.wait();
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("network.port_forwarding.local[1] (tcp://127.0.0.1:1337:127.0.0.1:8000): the host address 127.0.0.1:1337 is already in use"),
        "{stderr}"
    );
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
    // A malformed rule: the parser's line, naming the key.
    let bad = profile_file(
        "fwdbad",
        r#"{"network": {"port_forwarding": {"local": ["tcp://[::1]:1:[::1]"]}}}"#,
    );
    let o = out(pal(
        &tb,
        Mode::Root,
        &["exec", "--one-shot", bad.to_str().unwrap(), "--", "true"],
    ));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("network.port_forwarding.local[0]"),
        "{}",
        text(&o).1
    );
}

/// `kill -9` of the supervisor: the netbroker tears down (the forwarder
/// with it, so the ports are free), and the hook runner still runs
/// `pre_down`.
#[test]
fn kill_9_of_the_supervisor_frees_the_ports_and_runs_pre_down() {
    skip_unless_root!();
    let tb = Testbed::new("fwdkill");
    let dir = hook_dir("fwdkill");
    let prof = profile("fwdkill", &dir);
    let mut run = spawn_run(&tb, Mode::Root, &prof);
    assert_forwards(&tb, &mut run);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = run.wait();
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(free(&tb, 1337) && dir.join("down").exists()) {
        assert!(
            Instant::now() < deadline,
            "port 1337 still bound or pre_down never ran after kill -9"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("down")).unwrap(),
        "pre_down 8000 8001 8002 8003\n"
    );
    let _ = std::fs::remove_dir_all(dir);
}
