//! End-to-end tests of `pallium-netbroker` over its real protocol: each test
//! forks a child that makes a throwaway "host" network (and mount) namespace,
//! spawns the built binary with a socketpair on fd 3, speaks to it as the
//! supervisor, checks the application namespace from a forked grandchild, and
//! checks that `kill -9` of the broker leaves nothing behind. Root only.
#![allow(unsafe_code)] // Tests call raw syscalls to attack or inspect the sandbox.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::ForkResult;
use proto::broker::{BrokerEvent, BrokerRequest, BuildChain, ChainReady, Uplink};
use proto::Channel;

type Sup = Channel<BrokerRequest, BrokerEvent>;

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (network namespaces, veth, nftables)");
    false
}

/// Run `f` in a forked child; panics with the child's message on failure.
fn in_child(f: impl FnOnce() -> Result<(), String>) {
    let (r, w) = nix::unistd::pipe().unwrap();
    // SAFETY: the child only runs `f` and `_exit`s; tests accept that a forked
    // child of the multi-threaded harness may only use what fork preserves
    // (glibc resets its malloc locks at fork).
    match unsafe { nix::unistd::fork() }.unwrap() {
        ForkResult::Child => {
            drop(r);
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .unwrap_or_else(|_| Err("panicked".into()));
            let code = match res {
                Ok(()) => 0,
                Err(e) => {
                    let _ = std::fs::File::from(w).write_all(e.as_bytes());
                    1
                }
            };
            // SAFETY: leave the child without running the harness's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(w);
            let mut msg = String::new();
            let _ = std::fs::File::from(r).read_to_string(&mut msg);
            let st = waitpid(child, None).unwrap();
            // The child's throwaway host directory (a copy of the binaries
            // included): gone with the child, whatever happened.
            let _ = std::fs::remove_dir_all(
                std::env::temp_dir().join(format!("pallium-nb-test-{child}")),
            );
            assert!(matches!(st, WaitStatus::Exited(_, 0)), "{st:?}: {msg}");
        }
    }
}

fn sh(cmd: &str) -> Result<String, String> {
    let o = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!("`{cmd}`: {}", String::from_utf8_lossy(&o.stderr)));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Become a throwaway host: own network and mount namespace, lo up, and a
/// resolv.conf of our choosing.
fn throwaway_host(resolv_conf: &str) -> Result<PathBuf, String> {
    unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS).map_err(|e| e.to_string())?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("pallium-nb-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let rc = dir.join("resolv.conf");
    std::fs::write(&rc, resolv_conf).map_err(|e| e.to_string())?;
    mount(
        Some(&rc),
        "/etc/resolv.conf",
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("bind resolv.conf: {e}"))?;
    sh("ip link set lo up")?;
    Ok(dir)
}

/// Start the broker with our end of a socketpair on its fd 3 and shake hands.
fn spawn_broker(run_dir: &Path) -> Result<(Child, Sup), String> {
    let (ours, theirs) = Sup::pair().map_err(|e| e.to_string())?;
    let raw = theirs.as_raw_fd();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pallium-netbroker"));
    cmd.env("PALLIUM_RUN_DIR", run_dir)
        .env(
            "PALLIUM_LOG",
            std::env::var("PALLIUM_LOG").unwrap_or("info".into()),
        )
        .stdin(Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe dup2/prctl are called.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep FD_CLOEXEC.
            let r = if raw == 3 {
                libc::fcntl(raw, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| e.to_string())?;
    drop(theirs);
    let mut ours = ours;
    ours.handshake("supervisor", "netbroker")
        .map_err(|e| format!("handshake: {e}"))?;
    Ok((child, ours))
}

fn build(sup: &mut Sup, uplink: Uplink) -> Result<ChainReady, String> {
    sup.send(BrokerRequest::BuildChain(BuildChain {
        bridge: None,
        outbound_interface: None,
        session_id: format!("nbtest-{}", std::process::id()),
        rootless: false,
        uid: 0,
        gid: 0,
        uplink,
        chain: vec![],
        routes: None,
        host_access: false,
        quiet: true,
        port_forwarding: Vec::new(),
    }))
    .map_err(|e| e.to_string())?;
    loop {
        match sup.recv().map_err(|e| e.to_string())? {
            BrokerEvent::Progress(p) => eprintln!("progress: {}", p.message),
            BrokerEvent::ChainReady(r) => return Ok(r),
            BrokerEvent::Failed(e) => return Err(format!("build failed: {e}")),
            other => return Err(format!("unexpected {other:?}")),
        }
    }
}

/// Run `f` in a grandchild that has joined `netns`.
fn inside(netns: &OwnedFd, f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    let fd = netns.try_clone().map_err(|e| e.to_string())?;
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        in_child(move || {
            setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}"))?;
            f()
        })
    }));
    res.map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "inside: failed".into())
    })
}

fn tcp_echo(addr: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut b = [0u8; 5];
    s.read_exact(&mut b)
        .map_err(|e| format!("read {addr}: {e}"))?;
    if &b != b"hello" {
        return Err(format!("{addr} said {b:?}"));
    }
    Ok(())
}

/// A listener that greets every connection with "hello".
fn greeter(addr: &str) -> Result<u16, String> {
    let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let mut c = c;
            let _ = c.write_all(b"hello");
        }
    });
    Ok(port)
}

/// The pid `ListPids` reports for `role`.
fn hop_pid(sup: &mut Sup, role: &str) -> Result<i32, String> {
    sup.send(BrokerRequest::ListPids)
        .map_err(|e| e.to_string())?;
    match sup.recv().map_err(|e| e.to_string())? {
        BrokerEvent::Pids(p) => p
            .into_iter()
            .find(|e| e.role == role)
            .map(|e| e.pid)
            .ok_or(format!("no {role} in ListPids")),
        other => Err(format!("ListPids answered {other:?}")),
    }
}

/// A fake resolver: answers every datagram with its bytes reversed.
fn udp_reverser(addr: &str) -> Result<(), String> {
    let dns = UdpSocket::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    std::thread::spawn(move || {
        let mut b = [0u8; 512];
        while let Ok((n, from)) = dns.recv_from(&mut b) {
            b[..n].reverse();
            let _ = dns.send_to(&b[..n], from);
        }
    });
    Ok(())
}

/// Send a datagram to `addr` and expect it back reversed.
fn udp_query(addr: &str) -> Result<(), String> {
    let u = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    u.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    u.send_to(b"abc", addr).map_err(|e| e.to_string())?;
    let mut b = [0u8; 16];
    let n = u.recv(&mut b).map_err(|e| format!("DNS via {addr}: {e}"))?;
    if &b[..n] != b"cba" {
        return Err(format!("DNS via {addr} answered {:?}", &b[..n]));
    }
    Ok(())
}

fn wait_gone(what: &str, check: impl Fn() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !check() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("{what} survived the broker"))
}

#[test]
fn veth_uplink_relays_dns_walls_off_the_host_and_vanishes_with_kill_9() {
    if !is_root() {
        return;
    }
    in_child(|| {
        // A loopback resolver in the host: the broker must relay to it.
        let dir = throwaway_host("nameserver 127.0.0.53\nsearch example.test\n")?;
        udp_reverser("127.0.0.53:53")?;
        let port = greeter("[::]:0")?;
        let (mut broker, mut sup) = spawn_broker(&dir.join("run"))?;
        let ready = build(&mut sup, Uplink::Veth)?;
        if ready.userns.is_some() {
            return Err("root mode must not return a user namespace".into());
        }
        let link = ready.links.first().cloned().unwrap_or_default();
        let host_if = link
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let host_v4 = link
            .split_whitespace()
            .nth(1)
            .and_then(|a| a.split('/').next())
            .unwrap_or_default()
            .to_string();
        let host_v6 = link
            .split_whitespace()
            .nth(2)
            .and_then(|a| a.split('/').next())
            .unwrap_or_default()
            .to_string();
        if !host_if.starts_with("pallium") || host_if.len() != 15 {
            return Err(format!("bad link description {link:?}"));
        }
        if ready.resolv_conf != format!("nameserver {host_v4}\nsearch example.test\n") {
            return Err(format!("resolv_conf {:?}", ready.resolv_conf));
        }
        let table = format!("pallium_{}", &host_if[7..]);
        if !sh("nft list tables")?.contains(&format!("table inet {table}")) {
            return Err(format!("no nft table {table}"));
        }
        let rules = sh(&format!("nft list table inet {table}"))?;
        if !rules.contains(&format!("iifname \"{host_if}\" masquerade")) {
            return Err(format!("rule missing: {rules}"));
        }
        if std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap_or_default()
            .trim()
            != "1"
        {
            return Err("forwarding not enabled".into());
        }

        if !rules.contains("fib daddr type 2-5 drop") {
            return Err(format!("no wall towards the host: {rules}"));
        }

        let (v4, v6) = (host_v4.clone(), host_v6.clone());
        inside(&ready.netns.0, move || {
            // The host's listener is behind the wall; its DNS relay is not.
            for addr in [format!("{v4}:{port}"), format!("[{v6}]:{port}")] {
                match tcp_echo(addr.parse().unwrap()) {
                    Err(e) if e.contains("timed out") => {}
                    other => return Err(format!("host listener {addr}: {other:?}")),
                }
            }
            udp_query(&format!("{v4}:53"))?;
            let routes = sh("ip -6 route show default")?;
            if !routes.contains(&v6) {
                return Err(format!("no IPv6 default route: {routes}"));
            }
            Ok(())
        })?;

        sup.send(BrokerRequest::ListPids)
            .map_err(|e| e.to_string())?;
        match sup.recv().map_err(|e| e.to_string())? {
            BrokerEvent::Pids(p)
                if p.iter()
                    .any(|e| e.pid == broker.id() as i32 && e.role == "netbroker") => {}
            other => return Err(format!("ListPids answered {other:?}")),
        }

        broker.kill().map_err(|e| e.to_string())?;
        broker.wait().map_err(|e| e.to_string())?;
        drop(ready);
        wait_gone("veth", || sh(&format!("ip link show {host_if}")).is_ok())?;
        wait_gone("nft table", || {
            sh("nft list tables")
                .map(|t| t.contains(&table))
                .unwrap_or(false)
        })?;
        Ok(())
    });
}

#[test]
fn a_second_build_chain_ends_the_netbroker_and_restores_everything() {
    if !is_root() {
        return;
    }
    in_child(|| {
        let dir = throwaway_host("nameserver 192.0.2.53\n")?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "0").map_err(|e| e.to_string())?;
        let (mut broker, mut sup) = spawn_broker(&dir.join("run"))?;
        let ready = build(&mut sup, Uplink::Veth)?;
        if ready.resolv_conf != "nameserver 192.0.2.53\n" {
            return Err(format!("resolv_conf {:?}", ready.resolv_conf));
        }
        // A second BuildChain is a protocol violation: refused, and the
        // netbroker ends, undoing what it built.
        sup.send(BrokerRequest::BuildChain(BuildChain {
            bridge: None,
            outbound_interface: None,
            session_id: "again-0".into(),
            rootless: false,
            uid: 0,
            gid: 0,
            uplink: Uplink::Veth,
            chain: vec![],
            routes: None,
            host_access: false,
            quiet: true,
            port_forwarding: Vec::new(),
        }))
        .map_err(|e| e.to_string())?;
        if !matches!(sup.recv(), Ok(BrokerEvent::Failed(_))) {
            return Err("second BuildChain was not refused".into());
        }
        let st = broker.wait().map_err(|e| e.to_string())?;
        if st.success() {
            return Err("the netbroker carried on after a protocol violation".into());
        }
        let fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
        if fwd.trim() != "0" {
            return Err("ip_forward not restored".into());
        }
        // The veth pair went with the shutdown itself, although this test
        // still holds the application's namespace open.
        let links = sh("ip -o link show")?;
        if links.contains("pallium") {
            return Err(format!("veth left after shutdown:\n{links}"));
        }
        drop(ready);
        Ok(())
    });
}

#[test]
fn list_pids_before_the_chain_is_a_protocol_violation() {
    if !is_root() {
        return;
    }
    in_child(|| {
        let dir = throwaway_host("nameserver 192.0.2.53\n")?;
        let (mut broker, mut sup) = spawn_broker(&dir.join("run"))?;
        sup.send(BrokerRequest::ListPids)
            .map_err(|e| e.to_string())?;
        match sup.recv() {
            Ok(BrokerEvent::Failed(e)) if e.to_string().contains("protocol violation") => {}
            other => return Err(format!("ListPids out of order was answered: {other:?}")),
        }
        let st = broker.wait().map_err(|e| e.to_string())?;
        if st.success() {
            return Err("the netbroker carried on after a protocol violation".into());
        }
        Ok(())
    });
}

#[test]
fn pasta_uplink_as_root_reaches_host_and_dies_with_broker() {
    if !is_root() {
        return;
    }
    if Command::new("pasta").arg("--version").output().is_err() {
        eprintln!("skipped: pasta not installed");
        return;
    }
    in_child(|| {
        let dir = throwaway_host("nameserver 127.0.0.53\n")?;
        udp_reverser("127.0.0.53:53")?;
        // pasta copies the host's default-route interface into the namespace.
        sh("ip link add up0 type veth peer name up1 && ip link set up1 up && ip addr add 192.0.2.10/24 dev up0 \
            && ip addr add 192.0.2.20/24 dev up0 && ip link set up0 up \
            && ip route add default via 192.0.2.1")?;
        let port = greeter("192.0.2.20:0")?;
        let (mut broker, mut sup) = spawn_broker(&dir.join("run"))?;
        let ready = build(&mut sup, Uplink::Pasta)?;
        let pasta = hop_pid(&mut sup, "hop:pasta")?;
        if ready.resolv_conf != "nameserver 169.254.1.1\n" {
            return Err(format!("resolv_conf {:?}", ready.resolv_conf));
        }
        inside(&ready.netns.0, move || {
            tcp_echo(format!("192.0.2.20:{port}").parse().unwrap())?;
            // DNS reaches the host's loopback resolver through pasta.
            udp_query("169.254.1.1:53")
        })?;
        broker.kill().map_err(|e| e.to_string())?;
        broker.wait().map_err(|e| e.to_string())?;
        wait_gone("pasta", || {
            Path::new(&format!("/proc/{pasta}/stat")).exists()
        })?;
        Ok(())
    });
}

/// The unprivileged account the rootless tests run as (created with `useradd`).
fn test_user() -> Option<(u32, u32)> {
    let name = std::env::var("PALLIUM_TEST_USER").unwrap_or("pallium-test".into());
    match nix::unistd::User::from_name(&name) {
        Ok(Some(u)) => Some((u.uid.as_raw(), u.gid.as_raw())),
        _ => {
            eprintln!("skipped: no user {name} (useradd {name}, or set PALLIUM_TEST_USER)");
            None
        }
    }
}

/// Stage the broker where the test user can execute it and switch to that user.
fn become_user(uid: u32, gid: u32, dir: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("pallium-netbroker");
    std::fs::copy(env!("CARGO_BIN_EXE_pallium-netbroker"), &bin).map_err(|e| e.to_string())?;
    for p in [dir, bin.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
    }
    nix::unistd::setgroups(&[]).map_err(|e| e.to_string())?;
    let (g, u) = (
        nix::unistd::Gid::from_raw(gid),
        nix::unistd::Uid::from_raw(uid),
    );
    nix::unistd::setresgid(g, g, g).map_err(|e| e.to_string())?;
    nix::unistd::setresuid(u, u, u).map_err(|e| e.to_string())?;
    Ok(bin)
}

fn spawn_broker_at(exe: &Path, run_dir: &Path) -> Result<(Child, Sup), String> {
    let (ours, theirs) = Sup::pair().map_err(|e| e.to_string())?;
    let raw = theirs.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.env("PALLIUM_RUN_DIR", run_dir).stdin(Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe dup2/prctl are called.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep FD_CLOEXEC.
            let r = if raw == 3 {
                libc::fcntl(raw, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| e.to_string())?;
    drop(theirs);
    let mut ours = ours;
    ours.handshake("supervisor", "netbroker")
        .map_err(|e| format!("handshake: {e}"))?;
    Ok((child, ours))
}

fn build_rootless(sup: &mut Sup, uid: u32, gid: u32, uplink: Uplink) -> Result<ChainReady, String> {
    sup.send(BrokerRequest::BuildChain(BuildChain {
        bridge: None,
        outbound_interface: None,
        session_id: format!("nbrootless-{}", std::process::id()),
        rootless: true,
        uid,
        gid,
        uplink,
        chain: vec![],
        routes: None,
        host_access: false,
        quiet: true,
        port_forwarding: Vec::new(),
    }))
    .map_err(|e| e.to_string())?;
    loop {
        match sup.recv().map_err(|e| e.to_string())? {
            BrokerEvent::Progress(_) => {}
            BrokerEvent::ChainReady(r) => return Ok(r),
            BrokerEvent::Failed(e) => return Err(e.to_string()),
            other => return Err(format!("unexpected {other:?}")),
        }
    }
}

/// Host-like setup for pasta: an interface with a default route and a
/// second address to connect to.
fn pasta_host() -> Result<PathBuf, String> {
    let dir = throwaway_host("nameserver 127.0.0.53\n")?;
    sh(
        "ip link add up0 type veth peer name up1 && ip link set up1 up \
        && ip addr add 192.0.2.10/24 dev up0 && ip addr add 192.0.2.20/24 dev up0 \
        && ip link set up0 up && ip route add default via 192.0.2.1",
    )?;
    Ok(dir)
}

#[test]
fn rootless_pasta_uplink_with_user_namespace() {
    rootless_uplink(Uplink::Pasta, "hop:pasta", "169.254.1.1:53");
}

#[test]
fn rootless_slirp4netns_uplink_with_user_namespace() {
    rootless_uplink(Uplink::Slirp4netns, "hop:slirp4netns", "10.0.2.3:53");
}

fn rootless_uplink(uplink: Uplink, role: &'static str, dns: &'static str) {
    if !is_root() {
        return;
    }
    let Some((uid, gid)) = test_user() else {
        return;
    };
    in_child(|| {
        let dir = pasta_host()?;
        udp_reverser("127.0.0.53:53")?;
        let port = greeter("192.0.2.20:0")?;
        std::fs::create_dir_all(dir.join("bin")).map_err(|e| e.to_string())?;
        let bin = become_user(uid, gid, &dir.join("bin"))?;
        if std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .is_err()
        {
            eprintln!(
                "skipped: /dev/net/tun not accessible to uid {uid} (chmod 0666 /dev/net/tun)"
            );
            return Ok(());
        }
        let (mut broker, mut sup) = spawn_broker_at(&bin, &dir.join("run"))?;
        let ready = build_rootless(&mut sup, uid, gid, uplink)?;
        let userns = ready
            .userns
            .ok_or("rootless mode must return a user namespace")?;
        let (netns, userns2) = (ready.netns.0, userns.0);
        let fds = (netns.try_clone().unwrap(), userns2.try_clone().unwrap());
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            in_child(move || {
                setns(fds.1.as_fd(), CloneFlags::CLONE_NEWUSER)
                    .map_err(|e| format!("setns user: {e}"))?;
                setns(fds.0.as_fd(), CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("setns net: {e}"))?;
                tcp_echo(format!("192.0.2.20:{port}").parse().unwrap())?;
                udp_query(dns)
            })
        }));
        res.map_err(|_| "rootless namespace checks failed".to_string())?;
        let pasta = hop_pid(&mut sup, role)?;
        broker.kill().map_err(|e| e.to_string())?;
        broker.wait().map_err(|e| e.to_string())?;
        wait_gone("pasta", || {
            Path::new(&format!("/proc/{pasta}/stat")).exists()
        })?;
        Ok(())
    });
}

#[test]
fn rootless_without_tun_access_fails_with_one_clear_line() {
    if !is_root() {
        return;
    }
    let Some((uid, gid)) = test_user() else {
        return;
    };
    in_child(|| {
        let dir = pasta_host()?;
        // Shadow the tun device with a root-only file in our mount namespace.
        let fake = dir.join("tun");
        std::fs::write(&fake, "").map_err(|e| e.to_string())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
        mount(
            Some(&fake),
            "/dev/net/tun",
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("bind tun: {e}"))?;
        std::fs::create_dir_all(dir.join("bin")).map_err(|e| e.to_string())?;
        let bin = become_user(uid, gid, &dir.join("bin"))?;
        let (mut broker, mut sup) = spawn_broker_at(&bin, &dir.join("run"))?;
        let err = match build_rootless(&mut sup, uid, gid, Uplink::Pasta) {
            Ok(_) => return Err("build succeeded without tun access".into()),
            Err(e) => e,
        };
        let want = format!("/dev/net/tun is not accessible to uid {uid} (mode 0600); rootless networking needs it world read-write as Debian ships it: chmod 0666 /dev/net/tun");
        if !err.ends_with(&want) {
            return Err(format!("error was {err:?}"));
        }
        sup.send(BrokerRequest::Shutdown)
            .map_err(|e| e.to_string())?;
        broker.wait().map_err(|e| e.to_string())?;
        Ok(())
    });
}

#[test]
fn slirp4netns_uplink_as_root() {
    if !is_root() {
        return;
    }
    if Command::new("slirp4netns")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: slirp4netns not installed");
        return;
    }
    in_child(|| {
        let dir = pasta_host()?;
        udp_reverser("127.0.0.53:53")?;
        let port = greeter("192.0.2.20:0")?;
        let (mut broker, mut sup) = spawn_broker(&dir.join("run"))?;
        let ready = build(&mut sup, Uplink::Slirp4netns)?;
        if ready.resolv_conf != "nameserver 10.0.2.3\n" {
            return Err(format!("resolv_conf {:?}", ready.resolv_conf));
        }
        let slirp = hop_pid(&mut sup, "hop:slirp4netns")?;
        inside(&ready.netns.0, move || {
            tcp_echo(format!("192.0.2.20:{port}").parse().unwrap())?;
            udp_query("10.0.2.3:53")
        })?;
        broker.kill().map_err(|e| e.to_string())?;
        broker.wait().map_err(|e| e.to_string())?;
        wait_gone("slirp4netns", || {
            Path::new(&format!("/proc/{slirp}/stat")).exists()
        })?;
        Ok(())
    });
}

// ---- A compromised supervisor: the netbroker refuses
// what no profile could say, requests out of order and frames it cannot
// take, with nothing left on the host.

/// One SEQPACKET message of raw bytes with `fds` attached.
fn send_raw(sup: &Sup, bytes: &[u8], fds: &[std::os::fd::RawFd]) -> Result<(), String> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let iov = [std::io::IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(sup.fd().as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)
        .map(drop)
        .map_err(|e| format!("sendmsg: {e}"))
}

/// The netbroker answered with one `Failed` of `kind` and exited non-zero.
fn ends_with(broker: &mut Child, sup: &mut Sup, kind: proto::ErrorKind) -> Result<(), String> {
    match sup.recv() {
        Ok(BrokerEvent::Failed(e)) if e.kind == kind => {}
        other => return Err(format!("expected a {kind:?} failure, got {other:?}")),
    }
    let st = broker.wait().map_err(|e| e.to_string())?;
    if st.success() {
        return Err("the netbroker carried on".into());
    }
    Ok(())
}

fn build_request(session_id: &str, chain: Vec<proto::profile::Hop>) -> BrokerRequest {
    BrokerRequest::BuildChain(BuildChain {
        bridge: None,
        outbound_interface: None,
        session_id: session_id.into(),
        rootless: false,
        uid: 0,
        gid: 0,
        uplink: Uplink::Veth,
        chain,
        routes: None,
        host_access: false,
        quiet: true,
        port_forwarding: Vec::new(),
    })
}

fn socksapp(user: &str) -> proto::profile::Hop {
    proto::profile::Hop {
        kind: proto::profile::HopKind::Socksapp(proto::profile::Socksapp {
            user: user.into(),
            cmd: vec!["/bin/sleep".into(), "77".into()],
            timeout: Duration::from_secs(5),
        }),
        options: Default::default(),
    }
}

#[test]
fn a_hop_user_root_and_a_traversal_session_id_are_refused_when_decoded() {
    if !is_root() {
        return;
    }
    in_child(|| {
        let dir = throwaway_host("nameserver 192.0.2.53\n")?;
        for req in [
            build_request("hostile-0", vec![socksapp("root")]),
            build_request("../../etc", vec![]),
        ] {
            let (mut broker, mut sup) = spawn_broker(&dir.join("run"))?;
            sup.send(req).map_err(|e| e.to_string())?;
            ends_with(&mut broker, &mut sup, proto::ErrorKind::Protocol)?;
        }
        let links = sh("ip -o link show")?;
        if links.lines().count() != 1 {
            return Err(format!("links left:\n{links}"));
        }
        Ok(())
    });
}

#[test]
fn a_hop_daemon_never_runs_as_an_account_of_uid_0() {
    if !is_root() {
        return;
    }
    in_child(|| {
        let dir = throwaway_host("nameserver 192.0.2.53\n")?;
        // `toor`: another name of uid 0, which only the netbroker's own
        // lookup can tell (decoding sees a valid name).
        let passwd = dir.join("passwd");
        let mut text = std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string())?;
        text.push_str("toor:x:0:0:alias:/root:/bin/sh\n");
        std::fs::write(&passwd, text).map_err(|e| e.to_string())?;
        mount(
            Some(&passwd),
            "/etc/passwd",
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("bind passwd: {e}"))?;
        let (mut broker, mut sup) = spawn_broker(&dir.join("run"))?;
        sup.send(build_request("hostile-1", vec![socksapp("toor")]))
            .map_err(|e| e.to_string())?;
        loop {
            match sup.recv() {
                Ok(BrokerEvent::Progress(_)) => continue,
                Ok(BrokerEvent::Failed(e))
                    if e.kind == proto::ErrorKind::Refused
                        && e.to_string().contains("user 'toor' is root") =>
                {
                    break
                }
                other => return Err(format!("a uid-0 hop user was not refused: {other:?}")),
            }
        }
        if sh("pgrep -x sleep -a").is_ok_and(|p| p.contains("sleep 77")) {
            return Err("the hop's command ran".into());
        }
        sup.send(BrokerRequest::Shutdown)
            .map_err(|e| e.to_string())?;
        broker.wait().map_err(|e| e.to_string())?;
        let links = sh("ip -o link show")?;
        if links.lines().count() != 1 {
            return Err(format!("links left:\n{links}"));
        }
        Ok(())
    });
}

#[test]
fn malformed_frames_end_the_netbroker() {
    if !is_root() {
        return;
    }
    in_child(|| {
        let dir = throwaway_host("nameserver 192.0.2.53\n")?;
        let max = proto::wire::MAX_FRAME as u32;
        let frame = |len: u32, body: &[u8]| {
            let mut f = len.to_le_bytes().to_vec();
            f.extend_from_slice(body);
            f
        };
        for bytes in [
            frame(2 * max, &[0; 8]),
            frame(100, &[1, 2, 3]),
            frame(8, &[0xff; 8]),
            vec![9],
        ] {
            let (mut broker, mut sup) = spawn_broker(&dir.join("run"))?;
            send_raw(&sup, &bytes, &[])?;
            ends_with(&mut broker, &mut sup, proto::ErrorKind::Protocol)?;
        }
        Ok(())
    });
}

#[test]
fn stray_descriptors_are_closed_not_kept() {
    if !is_root() {
        return;
    }
    in_child(|| {
        let dir = throwaway_host("nameserver 192.0.2.53\n")?;
        let (mut broker, mut sup) = spawn_broker(&dir.join("run"))?;
        let ready = build(&mut sup, Uplink::Veth)?;
        // A descriptor attached to ListPids, which takes none.
        let (r, w) = nix::unistd::pipe().map_err(|e| e.to_string())?;
        let (bytes, _) =
            proto::wire::encode(&BrokerRequest::ListPids).map_err(|e| e.to_string())?;
        send_raw(&sup, &bytes, &[w.as_raw_fd()])?;
        drop(w);
        match sup.recv() {
            Ok(BrokerEvent::Pids(_)) => {}
            other => return Err(format!("ListPids with a stray fd: {other:?}")),
        }
        // EOF only once the netbroker's copy of the write end is closed
        // too; it is still running.
        let mut r = std::fs::File::from(r);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut b = [0u8; 1];
            let _ = tx.send(r.read(&mut b).map(|n| n == 0));
        });
        if !matches!(rx.recv_timeout(Duration::from_secs(10)), Ok(Ok(true))) {
            return Err("the netbroker kept a stray descriptor".into());
        }
        if broker.try_wait().map_err(|e| e.to_string())?.is_some() {
            return Err("the netbroker ended".into());
        }
        sup.send(BrokerRequest::Shutdown)
            .map_err(|e| e.to_string())?;
        broker.wait().map_err(|e| e.to_string())?;
        drop(ready);
        Ok(())
    });
}
