//! The packet engine's process (`engine::EngineProcess`) against a real
//! proxy: started from the netbroker binary, it serves a TUN device in an
//! "app" namespace through microsocks in a "dial" namespace, confined (no
//! capability, no_new_privs, seccomp, the engine uid); its counters come
//! over the control socket; its death is noticed and named; a setup error
//! comes back as the engine's one line. Root only; namespaces and processes
//! are removed even when a test panics.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pallium_netbroker::engine::{EngineError, EngineProcess, Placement};
use pallium_netbroker::rtnl::Rtnl;
use pallium_netbroker::tun2socks::{Config, DnsConfig, Protocol, ProxyConfig};
use pallium_netbroker::{netns, tun};
use proto::profile::{Endpoint, Host, Service};

const EXE: &str = env!("CARGO_BIN_EXE_pallium-netbroker");

/// Two namespaces: "dial" with 203.0.113.80 on lo, a web server there and
/// microsocks on 127.0.0.1:1080; "app", empty but for lo.
struct Net {
    dial: String,
    app: String,
    dir: PathBuf,
    children: Vec<Child>,
}

impl Net {
    fn new(tag: &str) -> Net {
        let tag = format!("eng{}{tag}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("pallium-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut net = Net {
            dial: format!("{tag}d"),
            app: format!("{tag}a"),
            dir,
            children: Vec::new(),
        };
        for ns in [&net.dial, &net.app] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&[
            "-n",
            &net.dial,
            "addr",
            "add",
            "203.0.113.80/32",
            "dev",
            "lo",
        ]);
        let www = net.dir.join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("index.html"), "hello through the engine\n").unwrap();
        let dial = net.dial.clone();
        net.spawn(
            &dial,
            &[
                "python3",
                "-m",
                "http.server",
                "8080",
                "--bind",
                "203.0.113.80",
                "-d",
            ],
            Some(&www),
        );
        net.spawn(
            &dial,
            &["microsocks", "-i", "127.0.0.1", "-p", "1080"],
            None,
        );
        for addr in ["127.0.0.1:1080", "203.0.113.80:8080"] {
            let fd = net.fd(&net.dial);
            let deadline = Instant::now() + Duration::from_secs(10);
            while netns::connect_in(fd.as_fd(), addr.parse().unwrap(), Duration::from_secs(1))
                .is_err()
            {
                assert!(Instant::now() < deadline, "nothing listens on {addr}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        net
    }

    fn spawn(&mut self, ns: &str, argv: &[&str], dir: Option<&Path>) {
        let mut args: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        if let Some(d) = dir {
            args.push(d.display().to_string());
        }
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    fn fd(&self, ns: &str) -> OwnedFd {
        std::fs::File::open(format!("/run/netns/{ns}"))
            .unwrap()
            .into()
    }

    fn config(&self, host: Host) -> Config {
        Config {
            proxy: ProxyConfig {
                protocol: Protocol::Socks5,
                address: Endpoint { host, port: 1080 },
                username: None,
                password: None,
                unix: None,
            },
            dns: DnsConfig::Virtual {
                fallback: Vec::new(),
                onion: true,
            },
            // Nothing answers there: a name fails at once.
            resolvers: vec!["127.0.0.1:53".parse().unwrap()],
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// An engine process serving a new TUN in the app namespace, as the
    /// engine uid of session `id`.
    fn engine(&self, cfg: &Config, id: &str) -> Result<EngineProcess, EngineError> {
        let app = self.fd(&self.app);
        let mut rtnl = netns::run_in(app.as_fd(), Rtnl::open).unwrap().unwrap();
        let tun = tun::create(app.as_fd(), &mut rtnl, "t2s0", 65000).unwrap();
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        let uid = proto::profile::service_uid(id, Service::Engine, &passwd);
        let placement = Placement {
            run_as: Some((uid, uid)),
        };
        EngineProcess::spawn_exe(
            Path::new(EXE),
            tun,
            self.fd(&self.dial).as_fd(),
            cfg,
            placement,
        )
    }

    fn curl(&self, url: &str) -> Result<String, String> {
        let o = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.app,
                "curl",
                "-sS",
                "--max-time",
                "5",
                url,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.dial, &self.app] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ip(args: &[&str]) {
    let s = Command::new("ip").args(args).status().unwrap();
    assert!(s.success(), "ip {args:?}");
}

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (network namespaces, TUN devices)");
    false
}

fn status(pid: u32) -> std::collections::BTreeMap<String, String> {
    proto::policy::proc_status(pid as i32, None).unwrap_or_default()
}

#[test]
fn an_engine_process_serves_confined_counts_and_its_death_is_named() {
    if !is_root() {
        return;
    }
    let net = Net::new("a");
    let cfg = net.config(Host::Ip("127.0.0.1".parse().unwrap()));
    let mut engine = net.engine(&cfg, "engine-test-0").unwrap();
    assert_eq!(engine.exited(), None);
    let body = net.curl("http://203.0.113.80:8080/").unwrap();
    assert_eq!(body, "hello through the engine\n");

    let st = status(engine.pid());
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let uid = proto::profile::service_uid("engine-test-0", Service::Engine, &passwd);
    assert_eq!(st["Uid"], format!("{uid}\t{uid}\t{uid}\t{uid}"));
    assert_eq!(st["Groups"], "");
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(st[set], "0000000000000000", "{set}");
    }
    assert_eq!(st["NoNewPrivs"], "1");
    assert_eq!(st["Seccomp"], "2");
    assert_eq!(st["Name"], "pallium-engine");

    let s = engine.stats().expect("stats");
    assert!(s.connections >= 1, "{s:?}");
    assert!(s.bytes_down >= body.len() as u64, "{s:?}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(engine.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let why = loop {
        if let Some(why) = engine.exited() {
            break why;
        }
        assert!(
            Instant::now() < deadline,
            "the engine's death went unnoticed"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(why.contains("killed by SIGKILL"), "{why}");
    // Nothing else serves the TUN: the application's traffic stops.
    assert!(net.curl("http://203.0.113.80:8080/").is_err());
    assert_eq!(engine.stats(), None);
}

#[test]
fn a_setup_error_comes_back_as_the_engines_one_line() {
    if !is_root() {
        return;
    }
    let net = Net::new("b");
    let cfg = net.config(Host::Name("proxy.invalid".into()));
    match net.engine(&cfg, "engine-test-1") {
        Err(EngineError::Failed(why)) => {
            assert!(
                why.starts_with("cannot resolve the proxy's host name proxy.invalid"),
                "{why}"
            );
            assert!(!why.contains('\n'), "{why}");
        }
        other => panic!("{other:?}"),
    }
}

/// A proxy on a unix socket, as a hop daemon's (tor's `SocksPort unix:`),
/// here a relay to microsocks: the engine, whose filter allows no unix
/// socket, is served through it by the netbroker's dials. Its directory is
/// another user's and the engine's group's (2750), as in root mode.
#[test]
fn an_engine_reaches_a_unix_socket_proxy_through_the_netbrokers_dials() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    if !is_root() {
        return;
    }
    let net = Net::new("c");
    let id = "engine-test-2";
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let uid = proto::profile::service_uid(id, Service::Engine, &passwd);
    let dir = net.dir.join("socks");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("socks");
    let listener = UnixListener::bind(&path).unwrap();
    let mode = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    mode(&path, 0o666).unwrap();
    mode(&dir, 0o2750).unwrap();
    nix::unistd::chown(&dir, Some(65534.into()), Some(uid.into())).unwrap();
    // Each connection to the socket is relayed to microsocks.
    let relayed = Arc::new(AtomicUsize::new(0));
    let dial_ns = net.fd(&net.dial);
    let count = relayed.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { break };
            let Ok(tcp) = netns::connect_in(
                dial_ns.as_fd(),
                "127.0.0.1:1080".parse().unwrap(),
                Duration::from_secs(5),
            ) else {
                continue;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let (mut c2, mut t2) = (conn.try_clone().unwrap(), tcp.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut t2);
                let _ = t2.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let (mut conn, mut tcp) = (conn, tcp);
                let _ = std::io::copy(&mut tcp, &mut conn);
                let _ = conn.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    let mut cfg = net.config(Host::Ip("127.0.0.1".parse().unwrap()));
    cfg.proxy.unix = Some(path.clone());
    let engine = net.engine(&cfg, id).unwrap();
    let body = net.curl("http://203.0.113.80:8080/").unwrap();
    assert_eq!(body, "hello through the engine\n");
    assert!(
        relayed.load(Ordering::SeqCst) >= 1,
        "not through the socket"
    );
    let st = status(engine.pid());
    assert_eq!(st["Seccomp"], "2");
    assert_eq!(st["Uid"], format!("{uid}\t{uid}\t{uid}\t{uid}"));
    drop(engine);

    // A socket that is not there: the engine is not started, one line says
    // which.
    cfg.proxy.unix = Some(dir.join("gone"));
    match net.engine(&cfg, id) {
        Err(e @ EngineError::Dial(_)) => {
            let why = e.to_string();
            assert!(why.contains("gone") && !why.contains('\n'), "{why}");
        }
        other => panic!("{other:?}"),
    }
}
