//! `network.bridge` (root), on the fake internet: a "VM" — a network
//! namespace of the test's, plugged into the bridge — gets a DHCP lease
//! (busybox `udhcpc`) and an IPv6 address by SLAAC, resolves names through
//! the session's resolver that the lease names, and reaches the web host
//! through the chain (the exit address is the proxy's), IPv4 and IPv6.
//! Nothing is left behind after `stop` and after SIGKILL of the supervisor;
//! a bridge name that exists is refused with one line before anything is set
//! up (rootless refusal: `e2e_rootless.rs`).

mod common;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{curl, ok, out, pal, profile_file, text, wait_clean, Mode};
use pallium_tests::{skip_unless_root, Testbed, WEB4_NAME, WEB6_NAME};

/// `ip ARGS` in the testbed's host namespace.
fn host_ip(tb: &Testbed, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["-n", &tb.host_netns()]).args(args);
    c
}

/// `pallium run PROFILE` (its command sleeps), once the bridge is up and the
/// session answers `exec`.
fn start(tb: &Testbed, prof: &str, bridge: &str) -> Child {
    let mut run = pal(tb, Mode::Root, &["run", prof])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn run");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = run.try_wait().unwrap() {
            let o = run.wait_with_output().unwrap();
            panic!("pallium run ended ({st}): {}", text(&o).1);
        }
        let up = out(host_ip(tb, &["link", "show", bridge])).status.success();
        if up
            && out(pal(tb, Mode::Root, &["exec", prof, "--", "true"]))
                .status
                .success()
        {
            return run;
        }
        assert!(Instant::now() < deadline, "the session never came up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The test's virtual machine: a namespace whose `eth0` is a veth whose
/// other end is `vmh` in the host namespace. With `bridge`, `vmh` is a port
/// of the test's own Linux bridge `vmbr`, as libvirt would plug a VM in, and
/// the bridge link pallium made is the other port; without, `vmh` is left
/// for `eth_bridge` to enslave. Removed on drop.
struct Vm {
    netns: String,
    host_netns: String,
    etc: PathBuf,
    script: PathBuf,
    lease_file: PathBuf,
}

impl Vm {
    fn plug(tb: &Testbed, bridge: Option<&str>) -> Vm {
        let netns = format!("{}-vm", tb.name());
        let dir = std::env::temp_dir().join(format!("pallium-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let vm = Vm {
            etc: PathBuf::from("/etc/netns").join(&netns),
            script: dir.join(format!("{netns}-udhcpc.sh")),
            lease_file: dir.join(format!("{netns}-lease")),
            host_netns: tb.host_netns(),
            netns,
        };
        ok({
            let mut c = Command::new("ip");
            c.args(["netns", "add", &vm.netns]);
            c
        });
        // Addresses at once (no duplicate address detection), as the testbed's.
        vm.sh("sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0");
        let h = &vm.host_netns;
        let veth = vec![
            "link", "add", "vmh", "type", "veth", "peer", "name", "eth0", "netns", &vm.netns,
        ];
        let mut steps = vec![veth, vec!["link", "set", "vmh", "up"]];
        if let Some(bridge) = bridge {
            steps.extend([
                vec!["link", "add", "vmbr", "type", "bridge"],
                vec!["link", "set", "vmh", "master", "vmbr"],
                vec!["link", "set", bridge, "master", "vmbr"],
                vec!["link", "set", "vmbr", "up"],
            ]);
        }
        for args in steps {
            let mut c = Command::new("ip");
            c.args(["-n", h]).args(&args);
            ok(c);
        }
        vm.sh("ip link set lo up; ip link set eth0 up");
        std::fs::write(
            &vm.script,
            format!(
                "#!/bin/sh\n\
                 case \"$1\" in bound|renew)\n\
                   ip addr add \"$ip/$subnet\" dev \"$interface\"\n\
                   ip route add default via \"$router\" dev \"$interface\"\n\
                   echo \"$ip $router $dns\" > {}\n;;\nesac\n",
                vm.lease_file.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&vm.script, std::fs::Permissions::from_mode(0o755)).unwrap();
        vm
    }

    /// `sh -c SCRIPT` in the VM, with its own `/etc/resolv.conf` once
    /// [`Vm::use_dns`] wrote one; stdout.
    fn sh(&self, script: &str) -> String {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns, "sh", "-c", script]);
        ok(c)
    }

    /// Ask for a lease: (address, router, DNS servers).
    fn dhcp(&self) -> (Ipv4Addr, Ipv4Addr, String) {
        self.sh(&format!(
            "busybox udhcpc -f -q -n -t 10 -T 1 -i eth0 -s {} >/dev/null 2>&1",
            self.script.display()
        ));
        let lease = std::fs::read_to_string(&self.lease_file).expect("udhcpc ran the script");
        let mut w = lease.split_whitespace();
        let ip = w.next().unwrap().parse().unwrap();
        let router = w.next().unwrap().parse().unwrap();
        (ip, router, w.collect::<Vec<_>>().join(" "))
    }

    /// The VM's global IPv6 address, once SLAAC gave it one.
    fn slaac(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let a = self.sh("ip -6 -o addr show dev eth0 scope global | awk '{print $4}'");
            let r = self.sh("ip -6 route show default");
            if !a.trim().is_empty() && !r.trim().is_empty() {
                return a.trim().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no SLAAC address or default route"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A TCP server on `port` (both families) that accepts and closes.
    fn listen(&self, port: u16) -> Child {
        let code = format!(
            "import socket\n\
             s=socket.create_server(('::',{port}),family=socket.AF_INET6,dualstack_ipv6=True)\n\
             while True: s.accept()[0].close()"
        );
        let c = Command::new("ip")
            .args(["netns", "exec", &self.netns, "python3", "-c", &code])
            .stdin(Stdio::null())
            .spawn()
            .expect("start the VM's listener");
        // Listening once the VM connects to itself.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.sh(&connect("::1", port)).trim() != "connected" {
            assert!(
                Instant::now() < deadline,
                "the VM's listener never listened"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn use_dns(&self, server: &str) {
        std::fs::create_dir_all(&self.etc).unwrap();
        std::fs::write(
            self.etc.join("resolv.conf"),
            format!("nameserver {server}\n"),
        )
        .unwrap();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // The veth (both ends) goes with the namespace.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
        let _ = Command::new("ip")
            .args(["-n", &self.host_netns, "link", "del", "vmbr"])
            .output();
        let _ = std::fs::remove_dir_all(&self.etc);
        let _ = std::fs::remove_file(&self.script);
        let _ = std::fs::remove_file(&self.lease_file);
    }
}

/// A shell line printing what a TCP connect to `ip`:`port` gives within 3
/// seconds: "connected", "timeout" or the errno's name.
fn connect(ip: &str, port: u16) -> String {
    format!(
        "python3 -c 'import socket,errno,sys\n\
         s=socket.socket(socket.AF_INET6 if \":\" in sys.argv[1] else socket.AF_INET)\n\
         s.settimeout(3)\n\
         try:\n  s.connect((sys.argv[1],{port})); print(\"connected\")\n\
         except socket.timeout: print(\"timeout\")\n\
         except OSError as e: print(errno.errorcode.get(e.errno,str(e)))' {ip}"
    )
}

/// The session's resolver, as the application sees it.
fn session_resolver(tb: &Testbed, prof: &str) -> String {
    ok(pal(
        tb,
        Mode::Root,
        &["exec", prof, "--", "cat", "/etc/resolv.conf"],
    ))
    .lines()
    .find_map(|l| l.strip_prefix("nameserver ").map(|s| s.trim().to_string()))
    .expect("a nameserver")
}

/// A socks chain with a bridge named `name`, DHCP on, and `extra` keys.
fn socks_bridge_profile(
    tb: &Testbed,
    file: &str,
    name: &str,
    extra: &str,
) -> (pallium_tests::Proxy, String) {
    let proxy = tb.start_microsocks();
    let json = format!(
        r#"{{"network": {{"chain": [{{"type": "socks", "address": "{}"}}],
             "bridge": {{"name": "{name}", "dhcp": true{extra}}}}},
             "run": {{"command": ["sleep", "infinity"], "quiet": true}}}}"#,
        proxy.addr()
    );
    let prof = profile_file(file, &json).display().to_string();
    (proxy, prof)
}

#[test]
fn a_vm_on_the_bridge_gets_a_lease_and_leaves_through_the_chain() {
    skip_unless_root!();
    let tb = Testbed::new("bridge0");
    let (proxy, prof) = socks_bridge_profile(&tb, "bridge-vm", "pmtestbr0", "");
    let mut run = start(&tb, &prof, "pmtestbr0");
    let resolver = session_resolver(&tb, &prof);
    let vm = Vm::plug(&tb, Some("pmtestbr0"));

    let (ip, router, dns) = vm.dhcp();
    // Past the gateway (.1) and the host's own address on the bridge (.2).
    let net = u32::from(router) - 1;
    assert!(u32::from(ip) >= net + 3, "lease {ip}, router {router}");
    assert_eq!(dns, resolver, "the DNS server handed out");
    let v6 = vm.slaac();

    vm.use_dns(&dns);
    let script = [
        curl(&format!("http://{}/", tb.web_v4())),
        curl(&format!("http://[{}]/", tb.web_v6())),
        curl(&format!("http://{WEB4_NAME}/")),
        curl(&format!("http://{WEB6_NAME}/")),
    ]
    .join("; ");
    let so = vm.sh(&script);
    let e4 = proxy.exit_v4().to_string();
    let e6 = proxy.exit_v6().to_string();
    assert_eq!(
        so.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>(),
        [&e4, &e6, &e4, &e6],
        "VM {ip} {v6}"
    );

    // The bridge is no way around the chain for the application, not even
    // with capabilities over its namespace (exec --root): B lets nothing new
    // from it reach the VMs (or the host behind them).
    let mut listener = vm.listen(8080);
    let v6 = v6.split('/').next().unwrap();
    let probe = [connect(&ip.to_string(), 8080), connect(v6, 8080)].join("; ");
    assert_eq!(
        vm.sh(&probe).trim(),
        "connected\nconnected",
        "the VM's listener"
    );
    let so = ok(pal(
        &tb,
        Mode::Root,
        &["exec", "--root", &prof, "--", "sh", "-c", &probe],
    ));
    assert_eq!(
        so.trim(),
        "timeout\ntimeout",
        "the application reached the VM"
    );
    let _ = listener.kill();
    let _ = listener.wait();

    ok(pal(&tb, Mode::Root, &["stop", &prof]));
    let st = run.wait().unwrap();
    assert!(st.success() || st.code() == Some(143), "{st}");
    drop(vm);
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

#[test]
fn sigkill_of_the_supervisor_leaves_no_bridge_behind() {
    skip_unless_root!();
    let tb = Testbed::new("bridge1");
    let (_proxy, prof) = socks_bridge_profile(&tb, "bridge-kill", "pmtestbr1", "");
    let mut run = start(&tb, &prof, "pmtestbr1");
    let dnsmasq = dnsmasq_of(&tb);
    assert_eq!(dnsmasq.len(), 1, "one dnsmasq for the bridge");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    run.wait().unwrap();
    // Bridge link, B's dnsmasq, the application's namespace: all gone.
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
    assert!(!std::path::Path::new(&format!("/proc/{}", dnsmasq[0])).exists());
}

/// The dnsmasq processes pallium started for this testbed.
fn dnsmasq_of(tb: &Testbed) -> Vec<u32> {
    let tag = format!("{}={}", pallium_tests::TESTBED_ENV, tb.name());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "dnsmasq")
        })
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == tag.as_bytes()))
        })
        .collect()
}

#[test]
fn a_bridge_name_that_exists_is_refused_before_anything_is_set_up() {
    skip_unless_root!();
    let tb = Testbed::new("bridge2");
    let prof = profile_file(
        "bridge-exists",
        r#"{"network": {"bridge": {"name": "eth0"}}}"#,
    );
    let o = out(pal(
        &tb,
        Mode::Root,
        &["exec", "--one-shot", prof.to_str().unwrap(), "--", "true"],
    ));
    let (so, se) = text(&o);
    assert!(!o.status.success(), "{so}{se}");
    let errors: Vec<&str> = se.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(errors.len(), 1, "{se}");
    assert!(errors[0].contains("network.bridge.name"), "{se}");
    assert!(errors[0].contains("\"eth0\" already exists"), "{se}");
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

/// `curl` run in the testbed's host namespace (not in pallium): the address
/// the web host saw, IPv4 then IPv6.
fn host_curl(tb: &Testbed) -> Vec<String> {
    let script = [
        curl(&format!("http://{}/", tb.web_v4())),
        curl(&format!("http://[{}]/", tb.web_v6())),
    ]
    .join("; ");
    ok(tb.host_exec(["sh", "-c", &script]))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// A socks chain whose bridge routes all of the host's traffic.
fn routes_profile(
    tb: &Testbed,
    file: &str,
    name: &str,
    bypass: bool,
) -> (pallium_tests::Proxy, String) {
    let proxy = tb.start_microsocks();
    let json = format!(
        r#"{{"network": {{"chain": [{{"type": "socks", "address": "{}"}}],
             "bridge": {{"name": "{name}", "routes": ["0.0.0.0/0", "::/0"], "reserved_bypass": {bypass}}}}},
             "run": {{"command": ["sleep", "infinity"], "quiet": true}}}}"#,
        proxy.addr()
    );
    (proxy, profile_file(file, &json).display().to_string())
}

#[test]
fn host_traffic_to_a_bridge_route_goes_through_the_chain_until_the_session_ends() {
    skip_unless_root!();
    let tb = Testbed::new("bridge4");
    let host = [tb.host_v4().to_string(), tb.host_v6().to_string()];
    assert_eq!(host_curl(&tb), host, "before the session");
    let (proxy, prof) = routes_profile(&tb, "bridge-routes", "pmtestbr4", false);
    let mut run = start(&tb, &prof, "pmtestbr4");
    let exit = [proxy.exit_v4().to_string(), proxy.exit_v6().to_string()];
    // The host's own traffic leaves at the proxy — and so does the
    // application's, whose engine dials the proxy from the host: its
    // packets are not routed back into the chain (no loop).
    assert_eq!(host_curl(&tb), exit, "the host's traffic");
    let app = ok(pal(
        &tb,
        Mode::Root,
        &[
            "exec",
            &prof,
            "--",
            "curl",
            "-sS",
            "--max-time",
            "10",
            &tb.web4_url(),
        ],
    ));
    assert_eq!(app.trim(), exit[0], "the application's traffic");
    ok(pal(&tb, Mode::Root, &["stop", &prof]));
    run.wait().unwrap();
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
    assert_eq!(host_curl(&tb), host, "after the session");
}

#[test]
fn reserved_destinations_bypass_the_bridge_routes() {
    skip_unless_root!();
    let tb = Testbed::new("bridge5");
    // The testbed's networks are documentation and ULA ranges: reserved.
    let (_proxy, prof) = routes_profile(&tb, "bridge-bypass", "pmtestbr5", true);
    let mut run = start(&tb, &prof, "pmtestbr5");
    let host = [tb.host_v4().to_string(), tb.host_v6().to_string()];
    assert_eq!(host_curl(&tb), host);
    ok(pal(&tb, Mode::Root, &["stop", &prof]));
    run.wait().unwrap();
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

#[test]
fn eth_bridge_enslaves_a_host_device_for_the_session_only() {
    skip_unless_root!();
    let tb = Testbed::new("bridge6");
    let vm = Vm::plug(&tb, None);
    let (proxy, prof) = socks_bridge_profile(
        &tb,
        "bridge-eth",
        "pmtestbr6",
        r#", "eth_bridge": {"devices": ["vmh"], "name": "pmtestebr6"}"#,
    );
    let master = || ok(host_ip(&tb, &["-o", "link", "show", "vmh"]));
    assert!(!master().contains(" master "), "{}", master());
    let mut run = start(&tb, &prof, "pmtestebr6");
    assert!(master().contains(" master pmtestebr6 "), "{}", master());
    // The VM on the host device reaches the chain through the Linux bridge.
    let (ip, _, _) = vm.dhcp();
    let so = vm.sh(&curl(&format!("http://{}/", tb.web_v4())));
    assert_eq!(so.trim(), proxy.exit_v4().to_string(), "VM {ip}");
    ok(pal(&tb, Mode::Root, &["stop", &prof]));
    run.wait().unwrap();
    // Released (the netbroker tears down after the supervisor exits), not
    // deleted.
    let deadline = Instant::now() + Duration::from_secs(10);
    while master().contains(" master ") {
        assert!(Instant::now() < deadline, "still enslaved: {}", master());
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(vm);
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

#[test]
fn sigkill_of_the_netbroker_releases_the_eth_bridge_devices_at_the_next_command() {
    skip_unless_root!();
    let tb = Testbed::new("bridge9");
    let vm = Vm::plug(&tb, None);
    let (_proxy, prof) = socks_bridge_profile(
        &tb,
        "bridge-ethkill",
        "pmtestbr9",
        r#", "eth_bridge": {"devices": ["vmh"], "name": "pmtestebr9"}"#,
    );
    let master = || ok(host_ip(&tb, &["-o", "link", "show", "vmh"]));
    let mut run = start(&tb, &prof, "pmtestebr9");
    assert!(master().contains(" master pmtestebr9 "), "{}", master());
    let nb = tagged(&tb, "pallium-netbrok");
    assert_eq!(nb.len(), 1, "{nb:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(nb[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    run.wait().unwrap();
    // The Linux bridge outlives the netbroker (it is the host's); the next
    // pallium command deletes it, which releases the host's device.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        ok(pal(&tb, Mode::Root, &["list"]));
        if !master().contains(" master ") || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !master().contains(" master "),
        "still enslaved: {}\nthe bridge's members: {}\nleft: {:?}",
        master(),
        ok(host_ip(
            &tb,
            &["-o", "link", "show", "master", "pmtestebr9"]
        )),
        tb.leftovers()
    );
    drop(vm);
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

/// Pids of this testbed's processes named `comm`.
fn tagged(tb: &Testbed, comm: &str) -> Vec<u32> {
    let tag = format!("{}={}", pallium_tests::TESTBED_ENV, tb.name());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == tag.as_bytes()))
        })
        .collect()
}

#[test]
fn sigkill_of_the_netbroker_leaves_no_host_routing_after_the_next_command() {
    skip_unless_root!();
    let tb = Testbed::new("bridge7");
    let (_proxy, prof) = routes_profile(&tb, "bridge-nbkill", "pmtestbr7", false);
    let mut run = start(&tb, &prof, "pmtestbr7");
    let nb = tagged(&tb, "pallium-netbrok");
    assert_eq!(nb.len(), 1, "{nb:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(nb[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    run.wait().unwrap();
    // The rules and the host's nft table outlive the netbroker; the next
    // pallium command (here `list`) removes them.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        ok(pal(&tb, Mode::Root, &["list"]));
        if tb.leftovers().is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
    assert_eq!(
        host_curl(&tb),
        [tb.host_v4().to_string(), tb.host_v6().to_string()]
    );
}

#[test]
fn a_vm_on_the_bridge_of_the_empty_chain_leaves_by_the_veth_uplink() {
    skip_unless_root!();
    let tb = Testbed::new("bridge8");
    let prof = profile_file(
        "bridge-empty",
        r#"{"network": {"bridge": {"name": "pmtestbr8", "dhcp": true}},
            "run": {"command": ["sleep", "infinity"], "quiet": true}}"#,
    )
    .display()
    .to_string();
    let mut run = start(&tb, &prof, "pmtestbr8");
    let vm = Vm::plug(&tb, Some("pmtestbr8"));
    let (ip, _, _) = vm.dhcp();
    let so = vm.sh(&curl(&format!("http://{}/", tb.web_v4())));
    // Masqueraded in the application's namespace, then by the host.
    assert_eq!(so.trim(), tb.host_v4().to_string(), "VM {ip}");
    ok(pal(&tb, Mode::Root, &["stop", &prof]));
    run.wait().unwrap();
    drop(vm);
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}
