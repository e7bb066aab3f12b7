//! `network.outbound_interface` (root), on the fake internet with a second
//! uplink: the testbed's host gets `alt0`, a veth to a namespace of the
//! test's ("alt") that holds the web host's and the proxy's addresses too
//! and answers HTTP with "alt <client>". The host's default routes stay the
//! testbed's (a second default via `alt0` has a worse metric), so without
//! the key everything reaches the real web host; with it, the empty chain's
//! traffic and a socks hop's dials leave by `alt0`, IPv4 and IPv6, and after
//! the session the host is as it was. A missing interface and the key
//! rootless are refused with one line before anything is set up.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{lines, ok, one_shot_json, out, profile_file, staged, text, wait_clean, Mode};
use pallium_tests::{skip_unless_root, TestUser, Testbed};

const ALT_HOST_V4: &str = "100.64.7.2";
const ALT_HOST_V6: &str = "fd00:a17::2";

/// The second uplink; removed on drop (its routes go with `alt0`).
struct Alt {
    netns: String,
    procs: Vec<Child>,
}

const HTTP: &str = r#"
import http.server, socket
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(s):
        c = s.client_address[0].removeprefix("::ffff:")
        b = ("alt " + c + "\n").encode()
        s.send_response(200); s.send_header("Content-Length", str(len(b))); s.end_headers(); s.wfile.write(b)
    def log_message(s, *a): pass
class S(http.server.HTTPServer):
    address_family = socket.AF_INET6
    def server_bind(s):
        s.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0); super().server_bind()
S(("::", 80), H).serve_forever()
"#;

impl Alt {
    /// `alt0` on the host, the alt namespace behind it answering HTTP for
    /// the web host's addresses and for `extra` addresses.
    fn new(tb: &Testbed, extra: &[String]) -> Alt {
        let netns = format!("{}-alt", tb.name());
        let ip = |ns: &str, args: &[&str]| {
            let mut c = Command::new("ip");
            c.args(["-n", ns]).args(args);
            ok(c);
        };
        ok({
            let mut c = Command::new("ip");
            c.args(["netns", "add", &netns]);
            c
        });
        let alt = Alt {
            netns: netns.clone(),
            procs: Vec::new(),
        };
        alt.sh("sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0");
        let h = tb.host_netns();
        ip(
            &h,
            &[
                "link", "add", "alt0", "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ],
        );
        ip(
            &h,
            &["addr", "add", &format!("{ALT_HOST_V4}/24"), "dev", "alt0"],
        );
        ip(
            &h,
            &["addr", "add", &format!("{ALT_HOST_V6}/64"), "dev", "alt0"],
        );
        ip(&h, &["link", "set", "alt0", "up"]);
        let web = [tb.web_v4().to_string(), tb.web_v6().to_string()];
        let mut script = "ip link set lo up; ip link set eth0 up; \
             ip addr add 100.64.7.1/24 dev eth0; ip addr add fd00:a17::1/64 dev eth0; \
             ip route add default via 100.64.7.2; ip -6 route add default via fd00:a17::2"
            .to_string();
        for a in web.iter().chain(extra) {
            script += &format!("; ip addr add {a} dev lo");
        }
        alt.sh(&script);
        // Worse than the testbed's default routes (IPv6: 1024).
        ip(
            &h,
            &[
                "route",
                "add",
                "default",
                "via",
                "100.64.7.1",
                "dev",
                "alt0",
                "metric",
                "5000",
            ],
        );
        ip(
            &h,
            &[
                "-6",
                "route",
                "add",
                "default",
                "via",
                "fd00:a17::1",
                "dev",
                "alt0",
                "metric",
                "5000",
            ],
        );
        let mut alt = alt;
        alt.spawn(&["python3", "-c", HTTP]);
        let probe = format!("curl -s --max-time 2 http://{}/", tb.web_v4());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !alt.sh(&format!("{probe} || true")).starts_with("alt ") {
            assert!(
                Instant::now() < deadline,
                "the alt web server never answered"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        alt
    }

    fn spawn(&mut self, argv: &[&str]) {
        let c = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a process in the alt namespace");
        self.procs.push(c);
    }

    fn sh(&self, script: &str) -> String {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns, "sh", "-c", script]);
        ok(c)
    }
}

impl Drop for Alt {
    fn drop(&mut self) {
        for c in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        // alt0 (and the routes via it) goes with the namespace.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

fn curl_both(tb: &Testbed) -> String {
    format!(
        "curl -sS --max-time 10 http://{}/; echo; curl -sS --max-time 10 http://[{}]/; echo",
        tb.web_v4(),
        tb.web_v6()
    )
}

/// Wait until the netbroker (which tears down after the supervisor exits)
/// removed the session's rules and table, then until the test's own uplink
/// is gone too.
fn clean_after(tb: &Testbed, alt: Alt) {
    // The test's uplink, but no route of a session table (7367533…).
    let baseline_plus_alt = |l: &String| l.contains("alt0") && !l.contains("table 7367");
    let left = common::wait_clean_except(tb, baseline_plus_alt);
    assert!(left.iter().all(baseline_plus_alt), "{left:?}");
    drop(alt);
    assert_eq!(wait_clean(tb), Vec::<String>::new());
}

#[test]
fn the_empty_chain_leaves_by_the_outbound_interface() {
    skip_unless_root!();
    let tb = Testbed::new("oif0");
    let alt = Alt::new(&tb, &[]);
    let script = curl_both(&tb);
    let (ok0, so, se) = one_shot_json(&tb, Mode::Root, "oif-none", "{}", &script);
    assert!(ok0, "{so}{se}");
    let host = [tb.host_v4().to_string(), tb.host_v6().to_string()];
    assert_eq!(lines(&so), host, "without the key: the testbed's uplink");

    let json = r#"{"network": {"outbound_interface": "alt0"}}"#;
    let (ok1, so, se) = one_shot_json(&tb, Mode::Root, "oif-alt", json, &script);
    assert!(ok1, "{so}{se}");
    assert_eq!(
        lines(&so),
        [format!("alt {ALT_HOST_V4}"), format!("alt {ALT_HOST_V6}")],
        "{se}"
    );
    clean_after(&tb, alt);
    // The host's own traffic was never affected.
    let so = ok(tb.host_exec(["sh", "-c", &script]));
    assert_eq!(lines(&so), host);
}

#[test]
fn a_socks_hop_dials_its_proxy_by_the_outbound_interface() {
    skip_unless_root!();
    let tb = Testbed::new("oif1");
    let proxy = tb.start_microsocks();
    // The alt namespace answers for the proxy's address too, with a
    // microsocks of its own whose exits are the alt web server.
    let mut alt = Alt::new(&tb, &[proxy.addr().ip().to_string()]);
    let port = proxy.port().to_string();
    alt.spawn(&["microsocks", "-i", "0.0.0.0", "-p", &port]);
    let json = format!(
        r#"{{"network": {{"chain": [{{"type": "socks", "address": "{}"}}],
             "outbound_interface": "alt0"}}}}"#,
        proxy.addr()
    );
    let script = format!("curl -sS --max-time 10 http://{}/; echo", tb.web_v4());
    let deadline = Instant::now() + Duration::from_secs(10);
    // (alt's microsocks may still be starting)
    let so = loop {
        let (ok1, so, se) = one_shot_json(&tb, Mode::Root, "oif-socks", &json, &script);
        if ok1 && so.starts_with("alt ") {
            break so;
        }
        assert!(Instant::now() < deadline, "{so}{se}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(so.starts_with("alt "), "{so}");
    assert!(
        proxy.log().trim().is_empty(),
        "the testbed's proxy was used: {}",
        proxy.log()
    );
    clean_after(&tb, alt);
}

#[test]
fn a_missing_outbound_interface_is_refused_before_anything_is_set_up() {
    skip_unless_root!();
    let tb = Testbed::new("oif2");
    let json = r#"{"network": {"outbound_interface": "nosuch0"}}"#;
    let (ok0, so, se) = one_shot_json(&tb, Mode::Root, "oif-missing", json, "true");
    assert!(!ok0, "{so}{se}");
    let errors: Vec<&str> = se.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(errors.len(), 1, "{se}");
    assert!(
        errors[0].contains("network.outbound_interface: no interface named \"nosuch0\""),
        "{se}"
    );
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

#[test]
fn rootless_refuses_the_outbound_interface_in_one_line() {
    skip_unless_root!();
    let tb = Testbed::new("oif3");
    let user = TestUser::get();
    let bin = staged();
    let prof = profile_file(
        "oif-rootless",
        r#"{"network": {"outbound_interface": "eth0"}}"#,
    );
    let o = out(tb.host_exec_as(
        user,
        [
            bin.join("pallium").display().to_string(),
            "exec".into(),
            "--one-shot".into(),
            prof.display().to_string(),
            "--".into(),
            "true".into(),
        ],
    ));
    let (so, se) = text(&o);
    assert!(!o.status.success(), "{so}{se}");
    let errors: Vec<&str> = se.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(errors.len(), 1, "{se}");
    assert!(
        errors[0].contains("network.outbound_interface needs root"),
        "{se}"
    );
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

#[test]
fn sigkill_of_the_netbroker_leaves_no_rule_after_the_next_command() {
    skip_unless_root!();
    let tb = Testbed::new("oif4");
    let alt = Alt::new(&tb, &[]);
    let prof = profile_file(
        "oif-kill",
        r#"{"network": {"outbound_interface": "alt0"}, "run": {"command": ["sleep", "infinity"]}}"#,
    );
    let prof = prof.display().to_string();
    let mut run = tb
        .host_exec([
            common::pallium().display().to_string(),
            "run".into(),
            prof.clone(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pal = |args: &[&str]| {
        let mut argv = vec![common::pallium().display().to_string()];
        argv.extend(args.iter().map(|s| s.to_string()));
        out(tb.host_exec(argv))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pal(&["exec", &prof, "--", "true"]).status.success() {
        assert!(Instant::now() < deadline, "the session never came up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let tag = format!("{}={}", pallium_tests::TESTBED_ENV, tb.name());
    let nb: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "pallium-netbrok")
                && std::fs::read(format!("/proc/{p}/environ"))
                    .is_ok_and(|e| e.split(|b| *b == 0).any(|kv| kv == tag.as_bytes()))
        })
        .collect();
    assert_eq!(nb.len(), 1, "{nb:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(nb[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    run.wait().unwrap();
    // The policy rules outlive the netbroker; the next pallium command
    // (here `list`, which also restores the forwarding sysctls) removes them.
    let only_alt = |l: &String| l.contains("alt0") && !l.contains("table 7367");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(pal(&["list"]).status.success());
        if tb.leftovers().iter().all(only_alt) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    clean_after(&tb, alt);
}
