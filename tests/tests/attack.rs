//! The application as an attacker: it tries to make the packet engine or the
//! netbroker grow without bound, to get traffic around the hop chain, to reach
//! the host or other sessions, and to crash the engine. Each test is a finding
//! that failed on the code before its fix (or is ignored with the reason).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{audit_pid, curl, out, pal, pallium, readable_profile, staged, text, Mode};
use pallium_tests::{skip_unless_root, TestUser, Testbed, WEB4_NAME};

/// A running `pallium run PROFILE` (its command `sleep 3600`).
struct Session(std::process::Child);

impl Session {
    fn start(tb: &Testbed, mode: Mode, profile: &str) -> Session {
        let child = pal(tb, mode, &["run", profile])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn run");
        Session(child)
    }

    fn stop(mut self, tb: &Testbed, mode: Mode, profile: &str) {
        let _ = out(pal(tb, mode, &["stop", profile]));
        let _ = self.0.wait();
    }
}

/// Retry `curl URL` in the running session until it answers.
fn wait_up(tb: &Testbed, mode: Mode, profile: &str, url: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = out(pal(
            tb,
            mode,
            &["exec", profile, "--", "sh", "-c", &curl(url)],
        ));
        if o.status.success() && !text(&o).0.trim().is_empty() {
            return text(&o).0;
        }
        assert!(
            Instant::now() < deadline,
            "{mode:?}: never came up: {:?}",
            text(&o)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Not a test: a testbed with a SOCKS hop session, root and rootless, left
/// running until /tmp/attack-lab/stop exists, for attacking by hand.
#[test]
#[ignore = "interactive lab, run by hand"]
fn lab() {
    skip_unless_root!();
    let tb = Testbed::new("attacklab");
    let proxy = tb.start_microsocks();
    let dante = tb.start_dante();
    let auth = dante.auth().unwrap().clone();
    let ps = readable_profile(
        "labsocks",
        &format!(
            r#"{{"chain": [{{"type": "socks", "address": "{}"}}], "run": {{"command": ["sleep", "3600"]}}}}"#,
            proxy.addr()
        ),
    );
    let pd = readable_profile(
        "labdante",
        &format!(
            r#"{{"chain": [{{"type": "socks", "address": "{}", "username": "{}", "password": "{}"}}], "run": {{"command": ["sleep", "3600"]}}}}"#,
            dante.addr(),
            auth.user,
            auth.pass
        ),
    );
    let pe = readable_profile("labempty", r#"{"run": {"command": ["sleep", "3600"]}}"#);
    let s1 = Session::start(&tb, Mode::Root, &ps);
    let s2 = Session::start(&tb, Mode::Rootless, &ps);
    let s3 = Session::start(&tb, Mode::Root, &pd);
    let s4 = Session::start(&tb, Mode::Root, &pe);
    let s5 = Session::start(&tb, Mode::Rootless, &pe);
    for (m, p) in [(Mode::Root, &ps), (Mode::Rootless, &ps), (Mode::Root, &pd)] {
        eprintln!(
            "{m:?} {p}: {}",
            wait_up(&tb, m, p, &format!("http://{WEB4_NAME}/"))
        );
    }
    let info = format!(
        "host={}\nweb={}\nrouter={}\nproxy={} ({})\ndante={} {}:{}\nsocks_profile={ps}\ndante_profile={pd}\nempty_profile={pe}\npallium={}\nstaged={}\nuser={}\nudp_echo={}\n",
        tb.host_netns(), tb.web_netns(), tb.router_netns(), proxy.addr(), proxy.netns(),
        dante.addr(), auth.user, auth.pass,
        pallium().display(), staged().display(), TestUser::get().name(), tb.udp_echo_port()
    );
    std::fs::write("/tmp/attack-lab/info", info).unwrap();
    while !std::path::Path::new("/tmp/attack-lab/stop").exists() {
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = std::fs::remove_file("/tmp/attack-lab/stop");
    s1.stop(&tb, Mode::Root, &ps);
    s2.stop(&tb, Mode::Rootless, &ps);
    s3.stop(&tb, Mode::Root, &pd);
    s4.stop(&tb, Mode::Root, &pe);
    s5.stop(&tb, Mode::Rootless, &pe);
}

/// CPU time (user + system) `pid` has used, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which may hold spaces): utime is the 14th.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Resolves the names `n0.attack.example`… `n<NAMES-1>…` through the virtual
/// DNS (the same fake addresses every run), then sends datagrams `FROM`..`TO`
/// from UDP source port 40000 (one flow across runs), datagram `k` to
/// (address `k % NAMES`, port 1024 + `k / NAMES`): each a new fake
/// destination. A batch at a time, once the engine has read the one before
/// (tun0's `tx_packets`), so none is lost in the TUN's queue whatever the load.
const UDP_FAKE_FLOOD: &str = r#"
import socket, sys, time, struct
names, start, end = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ns = [l.split()[1] for l in open('/etc/resolv.conf') if l.startswith('nameserver')][0]
d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); d.settimeout(5)
addrs = []
for i in range(names):
    q = struct.pack('>HHHHHH', i, 0x100, 1, 0, 0, 0) + b''.join(bytes([len(p)]) + p.encode() for p in ('n%d' % i, 'attack', 'example')) + b'\0' + struct.pack('>HH', 1, 1)
    d.sendto(q, (ns, 53)); addrs.append(socket.inet_ntoa(d.recv(512)[-4:]))
def txp():
    return int(open('/sys/class/net/tun0/statistics/tx_packets').read())
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('0.0.0.0', 40000))
k = start; base = txp()
while k < end:
    for _ in range(min(128, end - k)):
        u.sendto(b'x', (addrs[k % names], 1024 + k // names)); k += 1
    while txp() - base < k - start:
        time.sleep(0.0005)
print('sent', k - start, 'read by the engine', txp() - base)
"#;

/// Finding: a UDP flow remembered every fake (address, port) it sent to in a
/// list searched for each datagram, so one socket sending to ever more fake
/// destinations grew it without bound and made each datagram cost a scan of
/// all the ones before: 200,000 datagrams took the engine 23.6 s of CPU
/// (50,000: 0.7 s), its one thread busy for every other connection. Fixed in
/// `tun2socks/stack/relay.rs` (a map by port, at most 1024 per flow).
///
/// What is compared is the engine's CPU time (not wall-clock time) for the
/// first 50,000 datagrams of one flow and for the 150,000 after them: about
/// 3 times as much when each costs the same, 15 times when each scans all
/// before it — a ratio, whatever the build profile and machine.
#[test]
fn udp_to_many_fake_destinations_costs_the_engine_time_linear_in_datagrams() {
    skip_unless_root!();
    let tb = Testbed::new("attackudpfake");
    let dante = tb.start_dante();
    let auth = dante.auth().expect("dante requires credentials").clone();
    let p = readable_profile(
        "udpfake",
        &format!(
            r#"{{"chain": [{{"type": "socks", "address": "{}", "username": "{}", "password": "{}"}}], "run": {{"command": ["sleep", "3600"]}}}}"#,
            dante.addr(),
            auth.user,
            auth.pass
        ),
    );
    let session = Session::start(&tb, Mode::Root, &p);
    wait_up(&tb, Mode::Root, &p, &format!("http://{WEB4_NAME}/"));
    let engine = audit_pid(&tb, Mode::Root, &p, "engine");
    let flood = |from: &str, to: &str| {
        let before = cpu_ticks(engine);
        let o = out(pal(
            &tb,
            Mode::Root,
            &[
                "exec",
                &p,
                "--",
                "python3",
                "-c",
                UDP_FAKE_FLOOD,
                "100",
                from,
                to,
            ],
        ));
        let used = cpu_ticks(engine) - before;
        let (stdout, stderr) = text(&o);
        assert!(o.status.success(), "{stdout}{stderr}");
        eprint!("{stdout}");
        used
    };
    let first = flood("0", "50000");
    let rest = flood("50000", "200000");
    eprintln!(
        "engine CPU: {first} ticks for the first 50,000 datagrams, {rest} for the next 150,000"
    );
    assert!(
        rest < 8 * first.max(2),
        "each datagram cost more than the one before: {first} ticks, then {rest}"
    );
    // The engine still serves a new connection.
    assert_eq!(
        wait_up(&tb, Mode::Root, &p, &format!("http://{WEB4_NAME}/")).trim(),
        dante.exit_v4().to_string()
    );
    session.stop(&tb, Mode::Root, &p);
}

/// A SOCKS5 proxy (no authentication) on port 1081 that answers the greeting
/// and a request only after `argv[1]` seconds, with "command not supported"
/// (never, if negative).
const STALLING_SOCKS5: &str = r#"
import socket, sys, threading, time
delay = float(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 1081)); s.listen(1024)
held = []
def serve(c):
    try:
        c.recv(64); c.sendall(b'\x05\x00'); c.recv(512); held.append(c)
        if delay >= 0:
            time.sleep(delay); c.sendall(b'\x05\x07\x00\x01' + bytes(6))
    except OSError:
        pass
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// The stalling proxy ([`STALLING_SOCKS5`]) in `netns`, once it listens.
fn start_stalling_proxy(tb: &Testbed, netns: &str, delay: &str) -> std::process::Child {
    let child = tb
        .exec_in(netns, ["python3", "-c", STALLING_SOCKS5, delay])
        .stdin(Stdio::null())
        .spawn()
        .expect("start the stalling proxy");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !text(&out(tb.exec_in(netns, ["ss", "-Hltn", "sport = :1081"])))
        .0
        .contains("1081")
    {
        assert!(
            Instant::now() < deadline,
            "the stalling proxy never listened"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// `pallium exec PROFILE -- true` until it works: the session is up.
fn wait_session(tb: &Testbed, profile: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !out(pal(tb, Mode::Root, &["exec", profile, "--", "true"]))
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "the session never came up");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `FLOWS` UDP sockets each send `PER` datagrams of `SIZE` bytes, each read
/// by the engine before the next is sent (tun0's `tx_packets`).
const UDP_PENDING_FLOOD: &str = r#"
import socket, sys, time
flows = int(sys.argv[1]); per = int(sys.argv[2]); size = int(sys.argv[3])
def txp(): return int(open('/sys/class/net/tun0/statistics/tx_packets').read())
base = txp(); socks = []; sent = 0; data = b'z' * size
for i in range(flows):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); socks.append(s)
    for j in range(per):
        s.sendto(data, ('203.0.113.10', 7)); sent += 1
        while txp() - base < sent:
            time.sleep(0.0002)
print('sent', sent, 'read by the engine', txp() - base)
"#;

/// The peak resident set of `pid` in KiB (`VmHWM`).
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM")
}

/// Finding: a UDP flow queued up to 32 datagrams while its association was
/// being set up, whatever their size, and the TUN's MTU lets one be 64 KiB:
/// 250 flows of 32 datagrams of 60,000 bytes made the engine's RSS 430 MiB
/// (with dante, whose associations are merely slow). Fixed in
/// `tun2socks/stack.rs` and `stack/relay.rs`: at most 64 KiB queued a flow.
/// A proxy that never answers UDP ASSOCIATE keeps every flow pending here.
#[test]
fn udp_queued_for_pending_associations_is_bounded_in_bytes() {
    skip_unless_root!();
    let tb = Testbed::new("attackudppending");
    let dante = tb.start_dante();
    let mut stall = start_stalling_proxy(&tb, dante.netns(), "-1");
    let addr = format!("{}:1081", dante.addr().ip());
    let p = readable_profile(
        "udppending",
        &format!(
            r#"{{"chain": [{{"type": "socks", "address": "{addr}"}}], "run": {{"command": ["sleep", "3600"]}}}}"#
        ),
    );
    let session = Session::start(&tb, Mode::Root, &p);
    wait_session(&tb, &p);
    let engine = audit_pid(&tb, Mode::Root, &p, "engine");
    let o = out(pal(
        &tb,
        Mode::Root,
        &[
            "exec",
            &p,
            "--",
            "python3",
            "-c",
            UDP_PENDING_FLOOD,
            "250",
            "32",
            "60000",
        ],
    ));
    let (stdout, stderr) = text(&o);
    let peak = peak_rss_kib(engine);
    session.stop(&tb, Mode::Root, &p);
    let _ = stall.kill();
    let _ = stall.wait();
    assert!(o.status.success(), "{stdout}{stderr}");
    eprintln!("{stdout}engine peak RSS {peak} KiB");
    // 250 flows of at most 64 KiB queued each: 16 MiB, plus the engine.
    assert!(
        peak < 48 * 1024,
        "the engine's resident set peaked at {peak} KiB"
    );
}

/// Finding: when a proxy refused UDP ASSOCIATE, every UDP flow already
/// waiting for its association logged the same warning to the user's
/// terminal: an application that opens 200 UDP sockets at once behind a far
/// proxy printed 200 lines. Fixed in `tun2socks/stack/relay.rs`: said once.
#[test]
fn a_proxy_refusing_udp_is_reported_once_however_many_flows_wait() {
    skip_unless_root!();
    let tb = Testbed::new("attackudpwarn");
    // A proxy that refuses UDP three seconds after each request, as a far
    // one would: every flow the application opened meanwhile is waiting.
    let dante = tb.start_dante();
    let mut stall = start_stalling_proxy(&tb, dante.netns(), "3");
    let addr = format!("{}:1081", dante.addr().ip());
    let p = readable_profile(
        "udpwarn",
        &format!(
            r#"{{"chain": [{{"type": "socks", "address": "{addr}"}}], "run": {{"command": ["sleep", "3600"]}}}}"#
        ),
    );
    let log =
        std::env::temp_dir().join(format!("pallium-attack-udpwarn-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).unwrap();
    let session = Session(
        pal(&tb, Mode::Root, &["run", &p])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn run"),
    );
    wait_session(&tb, &p);
    // 200 sockets, one datagram each, all read by the engine before the
    // proxy's first refusal comes back.
    let o = out(pal(
        &tb,
        Mode::Root,
        &[
            "exec",
            &p,
            "--",
            "python3",
            "-c",
            UDP_PENDING_FLOOD,
            "200",
            "1",
            "100",
        ],
    ));
    assert!(o.status.success(), "{:?}", text(&o));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("UDP other than DNS is dropped")
    {
        assert!(Instant::now() < deadline, "the refusal was never reported");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The other refusals follow within the time the 200 requests took (a
    // wait, not an assertion: with the fix nothing more is said).
    std::thread::sleep(Duration::from_secs(2));
    session.stop(&tb, Mode::Root, &p);
    let _ = stall.kill();
    let _ = stall.wait();
    let stderr = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    let warned = stderr
        .lines()
        .filter(|l| l.contains("UDP other than DNS is dropped"))
        .count();
    assert_eq!(warned, 1, "{stderr}");
}

/// A service on the host namespace's loopback (127.0.0.1:7778) and on all
/// its addresses (7777), each answering `host-secret`.
const HOST_SERVICE: &str = r#"
import socket, threading
def serve(addr):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(addr); s.listen(16)
    while True:
        c, _ = s.accept(); c.sendall(b'host-secret\n'); c.close()
threading.Thread(target=serve, args=(('0.0.0.0', 7777),), daemon=True).start()
serve(('127.0.0.1', 7778))
"#;

/// Asks the virtual DNS for each `name:port` argument, connects to the fake
/// address (the hop's proxy resolves the name) and prints what answered.
const CONNECT_BY_NAME: &str = r#"
import socket, struct, sys
ns = [l.split()[1] for l in open('/etc/resolv.conf') if l.startswith('nameserver')][0]
for arg in sys.argv[1:]:
    name, port = arg.rsplit(':', 1)
    d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); d.settimeout(5)
    q = struct.pack('>HHHHHH', 9, 0x100, 1, 0, 0, 0) + b''.join(bytes([len(p)]) + p.encode() for p in name.split('.')) + b'\0' + struct.pack('>HH', 1, 1)
    d.sendto(q, (ns, 53)); ip = socket.inet_ntoa(d.recv(512)[-4:])
    try:
        s = socket.create_connection((ip, int(port)), timeout=5)
        s.sendall(b'GET / HTTP/1.0\r\n\r\n'); print(arg, s.recv(64))
    except OSError as e:
        print(arg, 'failed:', e)
"#;

/// Finding (fixed): a daemon hop's SOCKS server ran in N(i-1), which for the
/// first hop in root mode was the host's own network namespace, and it
/// connects wherever the application names. With a `socksapp` hop (here
/// microsocks, as `hops.rs` runs it) the application asked the virtual DNS
/// for `localhost` (or `127.0.0.1`, or the host's address) and reached
/// services the host keeps to itself — which the empty chain's nftables
/// walls (`prerouting`, local destinations) deny. A check in the engine
/// cannot work, since the proxy resolves the names. Now a root chain whose
/// hop 1 is a daemon on a loopback TCP port (socksapp, ssh) starts in a
/// namespace of the session's with the empty chain's veth uplink and walls
/// (`server::handle_build_hops`). Tor and ssh make their connections
/// elsewhere (the exit, the server); a `socks`/`http` hop whose proxy runs
/// on the host is the same case by the user's choice.
#[test]
fn a_socksapp_hop_does_not_reach_the_hosts_own_services() {
    skip_unless_root!();
    let tb = Testbed::new("attacksocksapp");
    let mut service = tb
        .host_exec(["python3", "-c", HOST_SERVICE])
        .stdin(Stdio::null())
        .spawn()
        .expect("start the host service");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !text(&out(tb.host_exec(["ss", "-Hltn", "sport = :7778"])))
        .0
        .contains("7778")
    {
        assert!(Instant::now() < deadline, "the host service never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    let which = Command::new("sh")
        .args(["-c", "command -v microsocks"])
        .output()
        .expect("sh");
    let microsocks = String::from_utf8(which.stdout).unwrap();
    let p = readable_profile(
        "socksapp",
        &format!(
            r#"{{"chain": [{{"type": "socksapp", "user": "nobody", "cmd": ["{}", "-i", "127.0.0.1", "-p", "{{port}}"]}}]}}"#,
            microsocks.trim()
        ),
    );
    let o = out(pal(
        &tb,
        Mode::Root,
        &[
            "exec",
            "--one-shot",
            &p,
            "--",
            "python3",
            "-c",
            CONNECT_BY_NAME,
            "localhost:7778",
            "127.0.0.1:7778",
            &format!("{}:7777", tb.host_v4()),
            &format!("{WEB4_NAME}:80"),
        ],
    ));
    let _ = service.kill();
    let _ = service.wait();
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    eprintln!("{stdout}");
    assert!(
        stdout.contains(&format!("{WEB4_NAME}:80 b'HTTP")),
        "the hop works: {stdout}"
    );
    assert!(
        !stdout.contains("host-secret"),
        "the application reached the host's own services: {stdout}"
    );
}

/// Not a test: a testbed with a Tor-hop session (root), left running until
/// /tmp/attack-lab/stop-tor exists, for attacking by hand.
#[test]
#[ignore = "interactive lab, run by hand"]
fn lab_tor() {
    skip_unless_root!();
    let tb = Testbed::new("attacklabtor");
    let tor = tb.start_tor();
    let args = serde_json::to_string(&tor.client_args()).unwrap();
    let pt = readable_profile(
        "labtor",
        &format!(
            r#"{{"chain": [{{"type": "tor", "timeout": 120, "tor_args": {args}}}], "run": {{"command": ["sleep", "3600"]}}}}"#
        ),
    );
    let s = Session::start(&tb, Mode::Root, &pt);
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let o = out(pal(
            &tb,
            Mode::Root,
            &[
                "exec",
                &pt,
                "--",
                "sh",
                "-c",
                &curl(&format!("http://{WEB4_NAME}/")),
            ],
        ));
        if o.status.success() && !text(&o).0.trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "tor never came up");
        std::thread::sleep(Duration::from_secs(1));
    }
    let info = format!(
        "host={}\nweb={}\ntor_profile={pt}\nonion={}\n",
        tb.host_netns(),
        tb.web_netns(),
        tor.onion_url()
    );
    std::fs::write("/tmp/attack-lab/info-tor", info).unwrap();
    while !std::path::Path::new("/tmp/attack-lab/stop-tor").exists() {
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = std::fs::remove_file("/tmp/attack-lab/stop-tor");
    s.stop(&tb, Mode::Root, &pt);
}

/// Finding (fixed): the rootless direct uplink refused the host's own
/// addresses from a list made at start, and caught addresses added later by
/// a route lookup that expects a local destination to be its own source. For
/// a secondary address (a second address in a subnet the host already has)
/// the kernel's local route carries the primary address as its source, so
/// neither check fired: an address added to the host after the session
/// started (an alias, a VIP, a second DHCP lease) was reachable, TCP both
/// ways and UDP one way. Now `direct::routes_to_self` also asks whether a
/// socket may bind to the destination (only local addresses may), for every
/// new connection and UDP flow (`Direct::admits`).
#[test]
fn the_direct_uplink_does_not_reach_a_secondary_address_added_later() {
    skip_unless_root!();
    let tb = Testbed::new("attacksecondary");
    let mut service = tb
        .host_exec(["python3", "-c", HOST_SERVICE])
        .stdin(Stdio::null())
        .spawn()
        .expect("start the host service");
    let p = readable_profile("directsecondary", "{}");
    let app = pal(
        &tb,
        Mode::Rootless,
        &[
            "exec",
            "--one-shot",
            &p,
            "--",
            "python3",
            "-c",
            "import socket,time\ntime.sleep(10)\ntry:\n s=socket.create_connection(('192.0.2.77',7777),timeout=5); print(s.recv(64))\nexcept OSError as e: print('failed:', e)",
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start the session");
    std::thread::sleep(Duration::from_secs(5));
    let add = out(tb.host_exec(["ip", "addr", "add", "192.0.2.77/24", "dev", "eth0"]));
    assert!(add.status.success(), "{:?}", text(&add));
    let o = app.wait_with_output().expect("wait");
    let _ = service.kill();
    let _ = service.wait();
    let (stdout, stderr) = text(&o);
    eprintln!("{stdout}{stderr}");
    assert!(
        !stdout.contains("host-secret"),
        "the application reached the host's own services: {stdout}"
    );
}
