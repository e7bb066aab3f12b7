//! End-to-end tests of the in-process tun2socks engine against real proxies
//! (microsocks, dante, tinyproxy). Each test makes its own pair of network
//! namespaces with `ip netns`: a "dial" namespace holding the proxy and a web
//! server on a veth interface (203.0.113.80, 2001:db8::80), and an "app"
//! namespace whose only routes lead into the engine's TUN device. Clients run
//! in the app namespace with `ip netns exec`. Root only; the namespaces and
//! processes are removed even when a test panics.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pallium_netbroker::rtnl::Rtnl;
use pallium_netbroker::tun2socks::{
    self, Config, DnsConfig, Engine, Limits, Protocol, ProxyConfig, Tun2socksError,
};
use pallium_netbroker::{netns, tun};
use proto::profile::{Endpoint, Host};

const WEB_V4: &str = "203.0.113.80";
const WEB_V6: &str = "2001:db8::80";

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (network namespaces, TUN devices)");
    false
}

/// The servers of the dial namespace: `http` answers every request with the
/// peer's address and logs it; `sink` reads until EOF, answers with the
/// SHA-256 of what it read and then sends `N` bytes of seeded random data;
/// `udp` echoes datagrams reversed.
const SERVER_PY: &str = r#"
import hashlib, random, socket, sys, threading
mode, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def note(peer):
    with open(log, "a") as f:
        f.write(peer + "\n")
if mode == "udp":
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    while True:
        d, a = s.recvfrom(65535)
        note(a[0])
        s.sendto(d[::-1], a)
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", port))
s.listen(64)
def serve(c, a):
    note(a[0])
    if mode == "http":
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = c.recv(4096)
            if not d:
                break
            buf += d
        body = ("peer=%s\n" % a[0]).encode()
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    elif mode == "echo":
        while True:
            d = c.recv(4096)
            if not d:
                break
            c.sendall(d)
    elif mode.startswith("first:"):
        c.sendall(random.Random(3).randbytes(int(mode.split(":")[1])))
        c.shutdown(socket.SHUT_WR)
        h = hashlib.sha256()
        while True:
            d = c.recv(1 << 20)
            if not d:
                break
            h.update(d)
        note("sha " + h.hexdigest())
    else:
        h = hashlib.sha256()
        while True:
            d = c.recv(1 << 20)
            if not d:
                break
            h.update(d)
        c.sendall(h.hexdigest().encode() + b"\n")
        c.sendall(random.Random(2).randbytes(int(mode.split(":")[1])))
    c.close()
while True:
    c, a = s.accept()
    threading.Thread(target=serve, args=(c, a), daemon=True).start()
"#;

/// Client of the `sink` server: sends N seeded random bytes, shuts down its
/// write side, then checks the digest and the N bytes that come back.
const SINK_CLIENT_PY: &str = r#"
import hashlib, random, socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
up = random.Random(1).randbytes(n)
c = socket.create_connection((host, port), timeout=60)
c.sendall(up)
c.shutdown(socket.SHUT_WR)
got = bytearray()
while True:
    d = c.recv(1 << 20)
    if not d:
        break
    got += d
line, _, rest = bytes(got).partition(b"\n")
assert line.decode() == hashlib.sha256(up).hexdigest(), "upload digest differs"
assert len(rest) == n, "downloaded %d of %d bytes" % (len(rest), n)
assert rest == random.Random(2).randbytes(n), "download differs"
print("ok")
"#;

/// Client of the `first` server: reads until the server's FIN, checks it,
/// then uploads N bytes over its still-open half and prints their SHA-256.
const FIRST_CLIENT_PY: &str = r#"
import hashlib, random, socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = socket.create_connection((host, port), timeout=60)
got = bytearray()
while True:
    d = c.recv(1 << 20)
    if not d:
        break
    got += d
assert bytes(got) == random.Random(3).randbytes(n), "download differs"
up = random.Random(4).randbytes(n)
c.sendall(up)
c.shutdown(socket.SHUT_WR)
print(hashlib.sha256(up).hexdigest())
"#;

const UDP_CLIENT_PY: &str = r#"
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.settimeout(3)
for i in range(5):
    s.sendto(b"hello-%d" % i, (host, port))
    try:
        d, a = s.recvfrom(2048)
        print(d.decode(), a[0])
        break
    except socket.timeout:
        continue
"#;

/// A DNS server on port 53 (UDP and TCP) answering every A query with the
/// address given for the name ("name=ip" arguments) or 203.0.113.80, and
/// AAAA with nothing; it logs "conn" per TCP connection and "q NAME" per query.
const DNS_PY: &str = r#"
import socket, struct, sys, threading
log = sys.argv[1]
table = dict(a.split("=") for a in sys.argv[2:])
def note(s):
    with open(log, "a") as f:
        f.write(s + "\n")
def answer(q):
    i, labels = 12, []
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode()); i += 1 + q[i]
    name, qtype = ".".join(labels).lower(), struct.unpack(">H", q[i + 1:i + 3])[0]
    note("q " + name)
    head = q[:2] + b"\x81\x80" + b"\x00\x01" + (b"\x00\x01" if qtype == 1 else b"\x00\x00") + b"\x00\x00\x00\x00"
    r = head + q[12:i + 5]
    if qtype == 1:
        r += b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + socket.inet_aton(table.get(name, "203.0.113.80"))
    return r
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("203.0.113.80", 53))
    while True:
        q, a = s.recvfrom(4096); s.sendto(answer(q), a)
def serve(c):
    note("conn")
    f = c.makefile("rb")
    while True:
        l = f.read(2)
        if len(l) < 2: break
        r = answer(f.read(struct.unpack(">H", l)[0]))
        c.sendall(struct.pack(">H", len(r)) + r)
threading.Thread(target=udp, daemon=True).start()
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("203.0.113.80", 53)); t.listen(16)
while True:
    c, _ = t.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// Client for the caps: keeps `keep` connections to the echo server open,
/// starts `pending` non-blocking connects to the black hole (whose dials
/// stay pending), then tries one more connection to `last` (web or black)
/// and prints how it ended and how long that took, then whether the kept
/// connections still echo.
const CAPS_PY: &str = r#"
import errno, socket, sys, time
keep, pending, last = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
web, black = ("203.0.113.80", 7070), ("192.0.2.66", 80)
kept = []
for i in range(keep):
    c = socket.create_connection(web, timeout=10); c.sendall(b"a"); assert c.recv(1) == b"a"
    kept.append(c)
held = []
for i in range(pending):
    s = socket.socket(); s.setblocking(False); s.connect_ex(black); held.append(s)
time.sleep(0.5)
t0 = time.time()
s = socket.socket(); s.settimeout(8)
r = s.connect_ex(web if last == "web" else black)
print("refused" if r == errno.ECONNREFUSED else "connected" if r == 0 else "error %d" % r,
      "%.1f" % (time.time() - t0))
for c in kept:
    c.sendall(b"b"); assert c.recv(1) == b"b"
print("kept %d" % len(kept))
"#;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A dial namespace with servers and an app namespace, removed on drop.
struct Net {
    dial: String,
    app: String,
    dir: PathBuf,
    children: Vec<(String, Child)>,
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let o = run(cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ip(args: &str) {
    ok(Command::new("ip").args(args.split_whitespace()));
}

impl Net {
    fn new() -> Net {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let tag = format!("t2s{}x{n}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("pallium-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        let net = Net {
            dial: format!("{tag}d"),
            app: format!("{tag}a"),
            dir,
            children: Vec::new(),
        };
        ip(&format!("netns add {}", net.dial));
        ip(&format!("netns add {}", net.app));
        let d = &net.dial;
        ip(&format!("-n {d} link set lo up"));
        ip(&format!("-n {} link set lo up", net.app));
        ip(&format!("-n {d} link add web0 type veth peer name web1"));
        ip(&format!("-n {d} link set web1 up"));
        ip(&format!("-n {d} addr add {WEB_V4}/24 dev web0"));
        ip(&format!("-n {d} addr add {WEB_V6}/64 dev web0 nodad"));
        ip(&format!("-n {d} link set web0 up"));
        // Names known only in the dial namespace (the proxy resolves them).
        let etc = Path::new("/etc/netns").join(d);
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("hosts"),
            format!("127.0.0.1 localhost\n{WEB_V4} web.test\n"),
        )
        .unwrap();
        let etc = Path::new("/etc/netns").join(&net.app);
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("resolv.conf"),
            format!("nameserver {}\n", tun2socks::DNS_V4),
        )
        .unwrap();
        std::fs::write(etc.join("hosts"), "127.0.0.1 localhost\n").unwrap();
        std::fs::write(net.dir.join("server.py"), SERVER_PY).unwrap();
        std::fs::write(net.dir.join("sink_client.py"), SINK_CLIENT_PY).unwrap();
        std::fs::write(net.dir.join("udp_client.py"), UDP_CLIENT_PY).unwrap();
        std::fs::write(net.dir.join("dns.py"), DNS_PY).unwrap();
        std::fs::write(net.dir.join("first_client.py"), FIRST_CLIENT_PY).unwrap();
        net
    }

    fn fd(&self, ns: &str) -> OwnedFd {
        std::fs::File::open(format!("/run/netns/{ns}"))
            .unwrap()
            .into()
    }

    /// Start `prog args` in namespace `ns` as a child named `name`.
    fn spawn(&mut self, name: &str, ns: &str, prog: &str, args: &[&str]) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, prog])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push((name.to_string(), child));
    }

    fn kill(&mut self, name: &str) {
        for (n, c) in &mut self.children {
            if n == name {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// Wait until something listens on `addr` in the dial namespace.
    fn wait_listening(&self, addr: SocketAddr) {
        let fd = self.fd(&self.dial);
        for _ in 0..100 {
            if netns::connect_in(fd.as_fd(), addr, Duration::from_secs(1)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nothing listens on {addr} in the dial namespace");
    }

    fn server(&mut self, mode: &str, port: u16) -> PathBuf {
        let log = self.dir.join(format!("peers-{port}.log"));
        std::fs::write(&log, "").unwrap();
        let script = self.dir.join("server.py");
        let (dial, p, l) = (
            self.dial.clone(),
            port.to_string(),
            log.display().to_string(),
        );
        self.spawn(
            &format!("server-{port}"),
            &dial,
            "/usr/bin/python3",
            &[script.to_str().unwrap(), mode, &p, &l],
        );
        if mode != "udp" {
            self.wait_listening(format!("{WEB_V4}:{port}").parse().unwrap());
        }
        log
    }

    /// The DNS server of [`DNS_PY`] on 203.0.113.80:53; returns its log.
    fn dns_server(&mut self, table: &[&str]) -> PathBuf {
        let log = self.dir.join("dns.log");
        std::fs::write(&log, "").unwrap();
        let script = self.dir.join("dns.py");
        let dial = self.dial.clone();
        let mut args = vec![
            script.to_str().unwrap().to_string(),
            log.display().to_string(),
        ];
        args.extend(table.iter().map(|t| t.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.spawn("dns", &dial, "/usr/bin/python3", &args);
        self.wait_listening(format!("{WEB_V4}:53").parse().unwrap());
        log
    }

    fn microsocks(&mut self, port: u16) {
        let dial = self.dial.clone();
        self.spawn(
            "microsocks",
            &dial,
            "microsocks",
            &["-i", "127.0.0.1", "-p", &port.to_string()],
        );
        self.wait_listening(format!("127.0.0.1:{port}").parse().unwrap());
    }

    /// dante on 127.0.0.1:`port`, `method` "none" or "username".
    fn dante(&mut self, port: u16, method: &str) {
        let conf = self.dir.join("danted.conf");
        std::fs::write(
            &conf,
            format!(
                "logoutput: {log}\n\
                 internal: 127.0.0.1 port = {port}\n\
                 external: web0\n\
                 socksmethod: {method}\n\
                 clientmethod: none\n\
                 user.privileged: root\n\
                 user.unprivileged: nobody\n\
                 client pass {{ from: 0/0 to: 0/0 }}\n\
                 socks pass {{ from: 0/0 to: 0/0 command: bind connect udpassociate bindreply udpreply }}\n",
                log = self.dir.join("danted.out").display()
            ),
        )
        .unwrap();
        let dial = self.dial.clone();
        let pid = self.dir.join("danted.pid");
        self.spawn(
            "danted",
            &dial,
            "/usr/sbin/danted",
            &[
                "-f",
                conf.to_str().unwrap(),
                "-p",
                pid.to_str().unwrap(),
                "-N",
                "1",
            ],
        );
        self.wait_listening(format!("127.0.0.1:{port}").parse().unwrap());
    }

    /// tinyproxy on 127.0.0.1:`port` with basic auth alice:s3cret.
    fn tinyproxy(&mut self, port: u16) {
        let conf = self.dir.join("tinyproxy.conf");
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 50\n\
                 BasicAuth alice s3cret\nLogLevel Info\n"
            ),
        )
        .unwrap();
        let dial = self.dial.clone();
        self.spawn(
            "tinyproxy",
            &dial,
            "/usr/bin/tinyproxy",
            &["-d", "-c", conf.to_str().unwrap()],
        );
        self.wait_listening(format!("127.0.0.1:{port}").parse().unwrap());
    }

    fn config(&self, protocol: Protocol, port: u16, user: Option<(&str, &str)>) -> Config {
        Config {
            proxy: ProxyConfig {
                protocol,
                address: Endpoint {
                    host: Host::Ip("127.0.0.1".parse().unwrap()),
                    port,
                },
                username: user.map(|u| u.0.to_string()),
                password: user.map(|u| u.1.to_string()),
                unix: None,
            },
            dns: DnsConfig::Virtual {
                fallback: Vec::new(),
                onion: true,
            },
            resolvers: Vec::new(),
            connect_timeout: Duration::from_secs(5),
        }
    }

    fn probe(&self, cfg: &Config) -> Result<(), Tun2socksError> {
        tun2socks::probe(self.fd(&self.dial).as_fd(), cfg)
    }

    /// The TUN device in the app namespace and the engine serving it.
    fn engine(&self, cfg: Config) -> Engine {
        self.engine_with(cfg, Limits::default())
    }

    fn engine_with(&self, cfg: Config, limits: Limits) -> Engine {
        let app = self.fd(&self.app);
        let mut rtnl = netns::run_in(app.as_fd(), Rtnl::open).unwrap().unwrap();
        // A test that makes a second engine after dropping the first reuses
        // the name: until every copy of the old TUN descriptor is closed
        // (a child another test thread forks holds one until its exec) the
        // kernel answers EBUSY, for a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let tun = loop {
            match tun::create(app.as_fd(), &mut rtnl, "t2s0", 65000) {
                Err(tun::TunError::Create { source, .. })
                    if source.raw_os_error() == Some(libc::EBUSY)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                r => break r.unwrap(),
            }
        };
        tun2socks::start_with_limits(tun, self.fd(&self.dial), cfg, limits).unwrap()
    }

    /// 192.0.2.66 in the dial namespace: routed out of web0 to a neighbour
    /// that never answers, so a connect to it stays pending.
    fn black_hole(&self) {
        let d = &self.dial;
        ip(&format!("-n {d} route add 192.0.2.0/24 dev web0"));
        ip(&format!(
            "-n {d} neigh add 192.0.2.66 lladdr 02:00:00:00:00:66 dev web0 nud permanent"
        ));
    }

    /// Run [`CAPS_PY`] in the app namespace: its two lines of output.
    fn caps(&self, keep: usize, pending: usize, last: &str) -> (String, String) {
        let script = self.dir.join("caps.py");
        std::fs::write(&script, CAPS_PY).unwrap();
        let o = self.app_run(
            "/usr/bin/python3",
            &[
                script.to_str().unwrap(),
                &keep.to_string(),
                &pending.to_string(),
                last,
            ],
        );
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let mut lines = out.lines().map(str::to_string);
        let a = lines.next().unwrap_or_default();
        let b = lines.next().unwrap_or_default();
        assert!(!b.is_empty(), "{out}{}", String::from_utf8_lossy(&o.stderr));
        (a, b)
    }

    /// Run a command in the app namespace.
    fn app_run(&self, prog: &str, args: &[&str]) -> Output {
        run(Command::new("ip")
            .args(["netns", "exec", &self.app, prog])
            .args(args))
    }

    fn curl(&self, url: &str) -> Result<String, String> {
        let o = self.app_run("curl", &["-sS", "--max-time", "10", url]);
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    }

    fn script(&self, name: &str, args: &[&str]) -> Output {
        let s = self.dir.join(name);
        let mut a = vec![s.to_str().unwrap()];
        a.extend_from_slice(args);
        self.app_run("/usr/bin/python3", &a)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.dial, &self.app] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn peers(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| l.trim_start_matches("::ffff:").to_string())
        .collect()
}

#[test]
fn socks5_carries_http_names_and_ipv6() {
    if !is_root() {
        return;
    }
    let mut net = Net::new();
    let log = net.server("http", 8080);
    net.microsocks(1080);
    let cfg = net.config(Protocol::Socks5, 1080, None);
    net.probe(&cfg).unwrap();
    let engine = net.engine(cfg);

    let body = net.curl(&format!("http://{WEB_V4}:8080/")).unwrap();
    // The web server sees the proxy's address, never the application's.
    assert_eq!(body.trim(), format!("peer=::ffff:{WEB_V4}"));

    // A name only the dial namespace knows: resolved by the proxy.
    let body = net.curl("http://web.test:8080/").unwrap();
    assert!(body.starts_with("peer="), "{body}");
    let s = engine.stats();
    assert!(s.dns_queries >= 1, "{s:?}");

    let body = net.curl(&format!("http://[{WEB_V6}]:8080/")).unwrap();
    assert_eq!(body.trim(), format!("peer={WEB_V6}"));

    // The proxy cannot connect (nothing listens): the application's
    // connect() fails (curl: (7), not a reset after connecting: 56, or a
    // timeout: 28), as without a proxy — its SYN was held until the
    // proxy answered — not accepted and then reset, nor left hanging.
    let e = net.curl(&format!("http://{WEB_V4}:9/")).unwrap_err();
    assert!(e.contains("curl: (7)"), "{e}");

    let s = engine.stats();
    assert_eq!(s.connections, 4, "{s:?}");
    assert!(s.bytes_down > 0 && s.bytes_up > 0, "{s:?}");
    for p in peers(&log) {
        assert!(p == WEB_V4 || p == WEB_V6, "the server saw {p}");
    }
    assert!(engine.exited().is_none());
}

#[test]
fn half_close_and_large_transfers_keep_every_byte() {
    if !is_root() {
        return;
    }
    let mut net = Net::new();
    let n = 50 * 1024 * 1024;
    net.server(&format!("sink:{n}"), 9000);
    net.dante(1081, "none");
    let engine = net.engine(net.config(Protocol::Socks5, 1081, None));
    for host in [WEB_V4, WEB_V6] {
        let o = net.script("sink_client.py", &[host, "9000", &n.to_string()]);
        assert!(
            o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "ok",
            "{host}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let s = engine.stats();
    assert!(
        s.bytes_up >= 2 * n as u64 && s.bytes_down >= 2 * n as u64,
        "{s:?}"
    );
}

#[test]
fn udp_goes_through_dante_and_is_dropped_by_microsocks() {
    if !is_root() {
        return;
    }
    let mut net = Net::new();
    let log = net.server("udp", 9999);
    net.dante(1082, "none");
    net.microsocks(1083);
    {
        let engine = net.engine(net.config(Protocol::Socks5, 1082, None));
        for host in [WEB_V4, WEB_V6] {
            let o = net.script("udp_client.py", &[host, "9999"]);
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(
                out.starts_with("0-olleh ") && out.trim().ends_with(host),
                "{host}: {out}{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        assert!(engine.stats().udp_datagrams >= 4);
        for p in peers(&log) {
            assert!(p == WEB_V4 || p == WEB_V6, "the server saw {p}");
        }
    }
    // microsocks has no UDP ASSOCIATE: datagrams are dropped, never sent
    // another way.
    let before = peers(&log).len();
    let _engine = net.engine(net.config(Protocol::Socks5, 1083, None));
    let o = net.script("udp_client.py", &[WEB_V4, "9999"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "");
    assert_eq!(peers(&log).len(), before);
}

#[test]
fn http_connect_through_tinyproxy_with_basic_auth() {
    if !is_root() {
        return;
    }
    let mut net = Net::new();
    net.server("http", 8081);
    net.tinyproxy(3128);
    let good = net.config(Protocol::HttpConnect, 3128, Some(("alice", "s3cret")));
    net.probe(&good).unwrap();
    let bad = net.config(Protocol::HttpConnect, 3128, Some(("alice", "wrong")));
    assert_eq!(
        net.probe(&bad).unwrap_err().to_string(),
        "the HTTP proxy 127.0.0.1:3128 rejected username 'alice'"
    );
    let _engine = net.engine(good);
    let body = net.curl(&format!("http://{WEB_V4}:8081/")).unwrap();
    assert_eq!(body.trim(), format!("peer=::ffff:{WEB_V4}"));
    let body = net.curl("http://web.test:8081/").unwrap();
    assert!(body.starts_with("peer="), "{body}");
}

#[test]
fn socks4_through_dante() {
    if !is_root() {
        return;
    }
    let mut net = Net::new();
    net.server("http", 8082);
    net.dante(1084, "none");
    let _engine = net.engine(net.config(Protocol::Socks4, 1084, None));
    let body = net.curl(&format!("http://{WEB_V4}:8082/")).unwrap();
    assert_eq!(body.trim(), format!("peer=::ffff:{WEB_V4}"));
}

#[test]
fn probe_names_the_proxy_and_the_problem() {
    if !is_root() {
        return;
    }
    let mut net = Net::new();
    net.dante(1085, "username");
    // Nothing listens on 1086.
    let e = net
        .probe(&net.config(Protocol::Socks5, 1086, None))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot reach the SOCKS5 proxy 127.0.0.1:1086: connection refused"
    );
    // dante checks the system's users; this one does not exist.
    let e = net
        .probe(&net.config(Protocol::Socks5, 1085, Some(("alice", "nope"))))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "the SOCKS5 proxy 127.0.0.1:1085 rejected username 'alice'"
    );
    let e = net
        .probe(&net.config(Protocol::Socks5, 1085, None))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "the SOCKS5 proxy 127.0.0.1:1085 requires authentication, and no username is configured"
    );
}

#[test]
fn killing_the_proxy_stops_traffic() {
    if !is_root() {
        return;
    }
    let mut net = Net::new();
    let log = net.server("http", 8083);
    net.microsocks(1087);
    let engine = net.engine(net.config(Protocol::Socks5, 1087, None));
    net.curl(&format!("http://{WEB_V4}:8083/")).unwrap();
    let before = peers(&log);
    net.kill("microsocks");
    let r = net.curl(&format!("http://{WEB_V4}:8083/"));
    assert!(r.is_err(), "reached the server without the proxy: {r:?}");
    assert!(net.curl("http://web.test:8083/").is_err());
    assert_eq!(peers(&log), before, "something reached the server");
    // The engine itself keeps running and serves again once a proxy is back.
    assert!(engine.exited().is_none());
    net.microsocks(1087);
    net.curl(&format!("http://{WEB_V4}:8083/")).unwrap();
}

#[test]
fn dropping_the_engine_removes_the_tun_device() {
    if !is_root() {
        return;
    }
    let mut net = Net::new();
    net.microsocks(1088);
    let engine = net.engine(net.config(Protocol::Socks5, 1088, None));
    let links = ok(Command::new("ip").args(["-n", &net.app, "-o", "link"]));
    assert!(links.contains("t2s0"), "{links}");
    drop(engine);
    let links = ok(Command::new("ip").args(["-n", &net.app, "-o", "link"]));
    assert!(!links.contains("t2s0"), "{links}");
}

#[test]
fn forwarded_dns_uses_one_pooled_connection_through_the_proxy() {
    if !is_root() {
        return;
    }
    let mut net = Net::new();
    let dns_log = net.dns_server(&["one.test=192.0.2.1", "two.test=192.0.2.2"]);
    net.microsocks(1089);
    let mut cfg = net.config(Protocol::Socks5, 1089, None);
    cfg.dns = DnsConfig::Forward(vec![(format!("{WEB_V4}:53").parse().unwrap(), true)]);
    let engine = net.engine(cfg);
    for (name, want) in [
        ("one.test", "192.0.2.1"),
        ("two.test", "192.0.2.2"),
        ("one.test", "192.0.2.1"),
    ] {
        let o = net.app_run("getent", &["ahostsv4", name]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.starts_with(want), "{name}: {out}");
    }
    // A resolv.conf naming the server itself is served the same way.
    assert_eq!(dns_ask(&net, WEB_V4, "two.test", "udp"), "192.0.2.2");
    assert_eq!(dns_ask(&net, WEB_V4, "two.test", "tcp"), "192.0.2.2");
    let log = std::fs::read_to_string(&dns_log).unwrap();
    // One connection was the readiness check before the engine started.
    assert_eq!(log.lines().filter(|l| *l == "conn").count(), 1 + 1, "{log}");
    assert!(
        log.lines().filter(|l| l.starts_with("q ")).count() >= 3,
        "{log}"
    );
    assert!(engine.stats().dns_queries >= 3);
}

#[test]
fn proxy_host_name_is_resolved_with_the_given_resolvers() {
    if !is_root() {
        return;
    }
    let mut net = Net::new();
    net.server("http", 8084);
    net.dns_server(&["proxy.test=127.0.0.1"]);
    net.microsocks(1090);
    let mut cfg = net.config(Protocol::Socks5, 1090, None);
    cfg.proxy.address = Endpoint::parse("proxy.test:1090", None).unwrap();
    cfg.resolvers = vec![format!("{WEB_V4}:53").parse().unwrap()];
    net.probe(&cfg).unwrap();
    let _engine = net.engine(cfg.clone());
    let body = net.curl(&format!("http://{WEB_V4}:8084/")).unwrap();
    assert!(body.starts_with("peer="), "{body}");
    cfg.proxy.address = Endpoint::parse("nowhere.invalid:1090", None).unwrap();
    cfg.resolvers = vec!["127.0.0.1:53".parse().unwrap()];
    let e = net.probe(&cfg).unwrap_err().to_string();
    assert!(
        e.starts_with("cannot resolve the proxy's host name nowhere.invalid: "),
        "{e}"
    );
}

#[test]
fn socks4_resolves_names_over_tcp_through_the_proxy() {
    if !is_root() {
        return;
    }
    let mut net = Net::new();
    net.server("http", 8085);
    let dns_log = net.dns_server(&[]);
    net.dante(1091, "none");
    let mut cfg = net.config(Protocol::Socks4, 1091, None);
    cfg.dns = DnsConfig::Virtual {
        fallback: vec![format!("{WEB_V4}:53").parse().unwrap()],
        onion: true,
    };
    let _engine = net.engine(cfg);
    let body = net.curl("http://far.test:8085/").unwrap();
    assert_eq!(body.trim(), format!("peer=::ffff:{WEB_V4}"));
    let log = std::fs::read_to_string(&dns_log).unwrap();
    assert!(log.contains("conn\nq far.test"), "{log}");
}

#[test]
fn the_server_may_half_close_first() {
    if !is_root() {
        return;
    }
    let mut net = Net::new();
    let n = 4 * 1024 * 1024;
    let log = net.server(&format!("first:{n}"), 9001);
    // dante keeps the other half open (microsocks closes both on one EOF).
    net.dante(1092, "none");
    let _engine = net.engine(net.config(Protocol::Socks5, 1092, None));
    let o = net.script("first_client.py", &[WEB_V4, "9001", &n.to_string()]);
    let sent = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(
        o.status.success() && sent.len() == 64,
        "{sent}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The server writes its line once it has read to the client's FIN, which
    // the client cannot wait for (its read side already ended).
    let want = format!("sha {sent}");
    let mut seen = String::new();
    for _ in 0..200 {
        seen = std::fs::read_to_string(&log).unwrap();
        if seen.contains("sha ") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(seen.contains(&want), "{seen}");
}

/// Ask `name` (type A) of `server` over TCP (`tcp`) or UDP from the app
/// namespace; the addresses in the answer, as text.
const DNS_CLIENT_PY: &str = r#"
import socket, struct, sys
server, name, tcp = sys.argv[1], sys.argv[2], sys.argv[3] == "tcp"
q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\x00\x00\x01\x00\x01"
fam = socket.AF_INET6 if ":" in server else socket.AF_INET
if tcp:
    c = socket.socket(fam, socket.SOCK_STREAM); c.settimeout(5); c.connect((server, 53))
    c.sendall(struct.pack(">H", len(q)) + q)
    f = c.makefile("rb"); r = f.read(struct.unpack(">H", f.read(2))[0])
else:
    c = socket.socket(fam, socket.SOCK_DGRAM); c.settimeout(5); c.sendto(q, (server, 53))
    r = c.recv(4096)
assert r[:2] == b"\x12\x34", r
an = struct.unpack(">H", r[6:8])[0]
print(" ".join(socket.inet_ntoa(r[-4:]) for _ in range(an)))
"#;

fn dns_ask(net: &Net, server: &str, name: &str, how: &str) -> String {
    let script = net.dir.join("dns_client.py");
    std::fs::write(&script, DNS_CLIENT_PY).unwrap();
    let o = net.app_run(
        "/usr/bin/python3",
        &[script.to_str().unwrap(), server, name, how],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn virtual_dns_answers_over_udp_and_tcp_on_both_families() {
    if !is_root() {
        return;
    }
    let mut net = Net::new();
    net.microsocks(1093);
    let _engine = net.engine(net.config(Protocol::Socks5, 1093, None));
    let v4 = tun2socks::DNS_V4.to_string();
    let v6 = tun2socks::DNS_V6.to_string();
    let a = dns_ask(&net, &v4, "a.test", "udp");
    assert!(a.starts_with("198.18."), "{a}");
    assert_eq!(dns_ask(&net, &v4, "a.test", "tcp"), a);
    assert_eq!(dns_ask(&net, &v6, "a.test", "udp"), a);
    assert_eq!(dns_ask(&net, &v6, "a.test", "tcp"), a);
    assert_ne!(dns_ask(&net, &v4, "b.test", "tcp"), a);
}

#[test]
fn forwarded_dns_over_udp_through_dante() {
    if !is_root() {
        return;
    }
    let mut net = Net::new();
    let dns_log = net.dns_server(&["one.test=192.0.2.1"]);
    net.dante(1094, "none");
    let mut cfg = net.config(Protocol::Socks5, 1094, None);
    cfg.dns = DnsConfig::Forward(vec![(format!("{WEB_V4}:53").parse().unwrap(), false)]);
    let engine = net.engine(cfg);
    let v4 = tun2socks::DNS_V4.to_string();
    for _ in 0..3 {
        assert_eq!(dns_ask(&net, &v4, "one.test", "udp"), "192.0.2.1");
    }
    assert_eq!(
        dns_ask(&net, &tun2socks::DNS_V6.to_string(), "two.test", "udp"),
        "203.0.113.80"
    );
    assert_eq!(dns_ask(&net, WEB_V4, "one.test", "udp"), "192.0.2.1");
    // Queries from many source ports share one association.
    let assoc = ok(Command::new("ip").args([
        "netns",
        "exec",
        &net.dial,
        "ss",
        "-Htn",
        "state",
        "established",
        "dport",
        "=",
        ":1094",
    ]));
    assert_eq!(assoc.lines().count(), 1, "{assoc}");
    // No TCP connection but the readiness check: the queries went over UDP.
    let log = std::fs::read_to_string(&dns_log).unwrap();
    assert_eq!(log.lines().filter(|l| *l == "conn").count(), 1, "{log}");
    assert!(log.contains("q one.test"), "{log}");
    // DNS over TCP from the application is forwarded over TCP.
    assert_eq!(dns_ask(&net, &v4, "one.test", "tcp"), "192.0.2.1");
    assert!(engine.stats().udp_datagrams >= 2);
}

#[test]
fn many_parallel_connections_all_complete() {
    if !is_root() {
        return;
    }
    let mut net = Net::new();
    net.server("http", 8086);
    net.microsocks(1095);
    let engine = net.engine(net.config(Protocol::Socks5, 1095, None));
    let script = net.dir.join("parallel.py");
    std::fs::write(
        &script,
        r#"
import concurrent.futures, urllib.request
def get(i):
    host = "203.0.113.80" if i % 2 else "[2001:db8::80]"
    return urllib.request.urlopen("http://%s:8086/%d" % (host, i), timeout=30).read()
with concurrent.futures.ThreadPoolExecutor(100) as ex:
    bodies = list(ex.map(get, range(300)))
print(sum(b.startswith(b"peer=") for b in bodies))
"#,
    )
    .unwrap();
    let o = net.app_run("/usr/bin/python3", &[script.to_str().unwrap()]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "300",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(engine.stats().connections, 300);
}

#[test]
fn the_engine_reports_when_its_tun_device_is_deleted() {
    if !is_root() {
        return;
    }
    let mut net = Net::new();
    net.microsocks(1096);
    let engine = net.engine(net.config(Protocol::Socks5, 1096, None));
    assert_eq!(engine.exited(), None);
    ip(&format!("-n {} link del t2s0", net.app));
    let mut why = None;
    for _ in 0..100 {
        why = engine.exited();
        if why.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let why = why.expect("the engine noticed nothing");
    assert!(why.contains("TUN"), "{why}");
}

#[test]
fn forwarded_dns_falls_back_to_tcp_when_the_proxy_relays_no_udp() {
    if !is_root() {
        return;
    }
    let mut net = Net::new();
    let dns_log = net.dns_server(&["one.test=192.0.2.1"]);
    net.microsocks(1097);
    let mut cfg = net.config(Protocol::Socks5, 1097, None);
    cfg.dns = DnsConfig::Forward(vec![(format!("{WEB_V4}:53").parse().unwrap(), false)]);
    let _engine = net.engine(cfg);
    let v4 = tun2socks::DNS_V4.to_string();
    for _ in 0..2 {
        assert_eq!(dns_ask(&net, &v4, "one.test", "udp"), "192.0.2.1");
    }
    let log = std::fs::read_to_string(&dns_log).unwrap();
    assert_eq!(log.lines().filter(|l| *l == "conn").count(), 1 + 1, "{log}");
}

/// Threads of this process whose name says they belong to an engine (the
/// dial threads of old inherited the engine thread's name).
fn engine_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|c| c.starts_with("tun2socks"))
        .count()
}

/// The refusal's time in a `caps` line ("refused 0.0").
fn took(line: &str) -> f64 {
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn past_the_pending_dial_cap_a_new_connection_is_refused_and_open_ones_keep_working() {
    if !is_root() {
        return;
    }
    let mut net = Net::new();
    net.server("echo", 7070);
    net.microsocks(1096);
    net.black_hole();
    let limits = Limits {
        pending_dials: 4,
        ..Limits::default()
    };
    let engine = net.engine_with(net.config(Protocol::Socks5, 1096, None), limits);
    let (last, kept) = net.caps(2, 4, "web");
    // Refused at connect(), at once: not accepted and reset, not left hanging.
    assert!(last.starts_with("refused") && took(&last) < 1.0, "{last}");
    assert_eq!(kept, "kept 2");
    assert!(engine.stats().refused >= 1, "{:?}", engine.stats());
}

#[test]
fn past_the_connection_cap_a_new_connection_is_refused_and_open_ones_keep_working() {
    if !is_root() {
        return;
    }
    let mut net = Net::new();
    net.server("echo", 7070);
    net.microsocks(1097);
    let limits = Limits {
        tcp_connections: 3,
        ..Limits::default()
    };
    let engine = net.engine_with(net.config(Protocol::Socks5, 1097, None), limits);
    let (last, kept) = net.caps(3, 0, "web");
    assert!(last.starts_with("refused") && took(&last) < 1.0, "{last}");
    assert_eq!(kept, "kept 3");
    assert!(engine.stats().refused >= 1, "{:?}", engine.stats());
    // Below the cap again, connections are accepted.
    let (last, _) = net.caps(2, 0, "web");
    assert!(last.starts_with("connected"), "{last}");
}

#[test]
fn a_dial_to_an_unreachable_target_times_out_without_a_thread() {
    if !is_root() {
        return;
    }
    let mut net = Net::new();
    net.server("echo", 7070);
    net.microsocks(1098);
    net.black_hole();
    let mut cfg = net.config(Protocol::Socks5, 1098, None);
    cfg.connect_timeout = Duration::from_secs(2);
    let _engine = net.engine(cfg);
    let before = engine_threads();
    let script = net.dir.join("pending.py");
    std::fs::write(
        &script,
        r#"
import errno, select, socket, sys, time
socks = []
for i in range(40):
    s = socket.socket(); s.setblocking(False); s.connect_ex(("192.0.2.66", 80 + i)); socks.append(s)
open(sys.argv[1], "w").close()
t0 = time.time(); done = {}
while len(done) < len(socks) and time.time() - t0 < 15:
    _, w, _ = select.select([], [s for s in socks if s not in done], [], 1)
    for s in w:
        done[s] = (s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), time.time() - t0)
refused = sum(e == errno.ECONNREFUSED for e, _ in done.values())
print(refused, "%.1f" % max([t for _, t in done.values()] or [99]))
"#,
    )
    .unwrap();
    let started = net.dir.join("started");
    let (app, script_s, started_s) = (
        net.app.clone(),
        script.display().to_string(),
        started.display().to_string(),
    );
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &app,
            "/usr/bin/python3",
            &script_s,
            &started_s,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if started.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let during = engine_threads();
    let out = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    // 40 pending dials, and no thread for them (a thread per dial made 40
    // more; the slack is for another test's engine starting meanwhile).
    assert!(
        during < before + 8,
        "{before} engine threads before, {during} during"
    );
    // Each dial ended at the 2 s timeout: the application's connect() was
    // refused then (the proxy never answered), none left hanging.
    let mut f = out.split_whitespace();
    let refused: usize = f.next().unwrap().parse().unwrap();
    let last: f64 = f.next().unwrap().parse().unwrap();
    assert_eq!(refused, 40, "{out}");
    assert!((1.5..6.0).contains(&last), "{out}");
    // The connections that timed out are forgotten: a new one works.
    let (line, _) = net.caps(0, 0, "web");
    assert!(line.starts_with("connected"), "{line}");
}

#[test]
fn past_the_udp_flow_cap_a_new_flow_is_dropped_and_the_open_one_keeps_working() {
    if !is_root() {
        return;
    }
    let mut net = Net::new();
    net.server("udp", 9998);
    net.dante(1099, "none");
    let limits = Limits {
        udp_flows: 1,
        ..Limits::default()
    };
    let engine = net.engine_with(net.config(Protocol::Socks5, 1099, None), limits);
    let script = net.dir.join("flows.py");
    std::fs::write(
        &script,
        r#"
import socket
def ask(s, what):
    for _ in range(3):
        s.sendto(what, ("203.0.113.80", 9998))
        try:
            return s.recvfrom(2048)[0].decode()
        except socket.timeout:
            continue
    return "-"
a, b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
a.settimeout(2); b.settimeout(1)
print(ask(a, b"one"), ask(b, b"two"), ask(a, b"three"))
"#,
    )
    .unwrap();
    let o = net.app_run("/usr/bin/python3", &[script.to_str().unwrap()]);
    // The first flow's association answers; the second source is over the
    // cap (its datagrams dropped, never sent another way); the first keeps
    // working.
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "eno - eerht",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(engine.stats().refused >= 1, "{:?}", engine.stats());
}

#[test]
fn direct_mode_never_connects_to_its_own_namespace() {
    if !is_root() {
        return;
    }
    // The web server's address is the dial namespace's own: in direct mode
    // (the rootless empty chain's uplink) that is "the host", refused even
    // when the list of refused addresses does not name it (the route check)
    // — and loopback, which no list needs to name.
    let mut net = Net::new();
    let log = net.server("http", 8080);
    // The check that it listens is a connection of its own: logged once.
    wait_for_peers(&log, 1);
    let app = net.fd(&net.app);
    let mut rtnl = netns::run_in(app.as_fd(), Rtnl::open).unwrap().unwrap();
    let tun = tun::create(app.as_fd(), &mut rtnl, "t2s0", 65000).unwrap();
    let cfg = tun2socks::DirectConfig {
        refused: Vec::new(),
        resolvers: Vec::new(),
        connect_timeout: Duration::from_secs(5),
    };
    let engine = tun2socks::start_direct(tun, net.fd(&net.dial), cfg, Limits::default()).unwrap();
    for url in [
        format!("http://{WEB_V4}:8080/"),
        format!("http://[{WEB_V6}]:8080/"),
    ] {
        let e = net.curl(&url).unwrap_err();
        assert!(e.contains("curl: (7)"), "{url}: {e}");
    }
    // A marker connection from the dial namespace: any connection the
    // engine made was accepted (and logged) before it.
    let fd = net.fd(&net.dial);
    netns::connect_in(
        fd.as_fd(),
        format!("{WEB_V4}:8080").parse().unwrap(),
        Duration::from_secs(5),
    )
    .unwrap();
    wait_for_peers(&log, 2);
    assert_eq!(
        peers(&log).len(),
        2,
        "a connection reached the server: {:?}",
        peers(&log)
    );
    assert!(engine.exited().is_none());
}

/// Wait until the server's log holds at least `n` peers.
fn wait_for_peers(log: &Path, n: usize) {
    for _ in 0..200 {
        if peers(log).len() >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("the server never logged {n} connections");
}
