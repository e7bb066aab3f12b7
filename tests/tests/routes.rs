//! `network.routes` (split tunnelling), root, on the fake internet: the
//! listed destinations are reached through the chain (the exit address is
//! the chain's), every other one is unroutable in the application's
//! namespace (ENETUNREACH, not a timeout), names still resolve, and nothing
//! is left behind; rootless too (the direct uplink, pasta, and a socks
//! chain from the caller's namespace). Overlapping routes are refused before anything
//! is set up. An empty list is no network at all: not even the resolvers.
//! A socket bound to a device (`SO_BINDTODEVICE`) gets no further.

mod common;

use common::{curl, lines, one_shot_json, tun_usable, wait_clean, Mode};
use pallium_tests::{skip_unless_root, Testbed, WEB4_NAME};

/// A shell line printing what a TCP connect to `ip`:`port` gives: "connected"
/// or the errno's name (ENETUNREACH for a destination with no route).
fn connect(ip: &str, port: u16) -> String {
    format!(
        "python3 -c 'import socket,errno,sys\n\
         s=socket.socket(socket.AF_INET6 if \":\" in sys.argv[1] else socket.AF_INET)\n\
         s.settimeout(5)\n\
         try:\n  s.connect((sys.argv[1],{port})); print(\"connected\")\n\
         except OSError as e: print(errno.errorcode.get(e.errno,str(e)))' {ip}"
    )
}

#[test]
fn split_tunnelling_without_hops_routes_only_the_listed_networks() {
    skip_unless_root!();
    let tb = Testbed::new("routes0");
    let other = tb.start_microsocks();
    let script = [
        curl(&format!("http://{}/", tb.web_v4())),
        curl(&format!("http://{WEB4_NAME}/")),
        connect(&other.exit_v4().to_string(), other.port()),
        connect(&other.exit_v6().to_string(), other.port()),
    ]
    .join("; ");
    // Control: without routes the other host answers on both families.
    let (ok, so, se) = one_shot_json(&tb, Mode::Root, "routes-all", "{}", &script);
    assert!(ok, "{so}{se}");
    let host = tb.host_v4().to_string();
    assert_eq!(lines(&so), [&host, &host, "connected", "connected"], "{se}");

    let json = format!(r#"{{"network": {{"routes": ["{}/32"]}}}}"#, tb.web_v4());
    let (ok, so, se) = one_shot_json(&tb, Mode::Root, "routes-web", &json, &script);
    assert!(ok, "{so}{se}");
    // The web host (by address and by name: DNS still works), and nothing
    // else: IPv4 elsewhere and all of IPv6 have no route.
    assert_eq!(
        lines(&so),
        [&host, &host, "ENETUNREACH", "ENETUNREACH"],
        "{se}"
    );
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

#[test]
fn split_tunnelling_through_a_socks_hop_exits_at_the_proxy() {
    skip_unless_root!();
    let tb = Testbed::new("routes1");
    let proxy = tb.start_microsocks();
    let json = format!(
        r#"{{"network": {{"chain": [{{"type": "socks", "address": "{}"}}],
             "routes": ["{}/32", "{}/128"]}}}}"#,
        proxy.addr(),
        tb.web_v4(),
        tb.web_v6()
    );
    let script = [
        curl(&format!("http://{}/", tb.web_v4())),
        curl(&format!("http://[{}]/", tb.web_v6())),
        // The proxy's own host is not listed.
        connect(&proxy.exit_v4().to_string(), proxy.port()),
        connect(&proxy.exit_v6().to_string(), proxy.port()),
    ]
    .join("; ");
    let (ok, so, se) = one_shot_json(&tb, Mode::Root, "routes-socks", &json, &script);
    assert!(ok, "{so}{se}");
    assert_eq!(
        lines(&so),
        [
            proxy.exit_v4().to_string(),
            proxy.exit_v6().to_string(),
            "ENETUNREACH".into(),
            "ENETUNREACH".into()
        ],
        "{se}"
    );
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

#[test]
fn overlapping_routes_are_refused_before_anything_is_set_up() {
    skip_unless_root!();
    let tb = Testbed::new("routes2");
    let (ok, so, se) = one_shot_json(
        &tb,
        Mode::Root,
        "routes-overlap",
        r#"{"network": {"routes": ["10.0.0.0/8", "10.1.0.0/16"]}}"#,
        "true",
    );
    assert!(!ok, "{so}{se}");
    let errors: Vec<&str> = se.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(errors.len(), 1, "{se}");
    assert!(errors[0].contains("network.routes[1]"), "{se}");
    assert!(errors[0].contains("overlaps route 10.0.0.0/8"), "{se}");
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

#[test]
fn rootless_split_tunnelling_routes_only_the_listed_networks() {
    skip_unless_root!();
    if !tun_usable() {
        pallium_tests::skip("/dev/net/tun is not world read-write (chmod 0666 /dev/net/tun)");
        return;
    }
    let tb = Testbed::new("routes3");
    let proxy = tb.start_microsocks();
    let script = |v4: String, v6: String| {
        [
            curl(&format!("http://{}/", tb.web_v4())),
            curl(&format!("http://{WEB4_NAME}/")),
            connect(&v4, proxy.port()),
            connect(&v6, proxy.port()),
        ]
        .join("; ")
    };
    // The direct uplink (rootless's default for the empty chain).
    let json = format!(r#"{{"network": {{"routes": ["{}/32"]}}}}"#, tb.web_v4());
    let direct = script(proxy.exit_v4().to_string(), proxy.exit_v6().to_string());
    let (ok, so, se) = one_shot_json(&tb, Mode::Rootless, "routes-rl", &json, &direct);
    assert!(ok, "{so}{se}");
    let host = tb.host_v4().to_string();
    assert_eq!(
        lines(&so),
        [&host, &host, "ENETUNREACH", "ENETUNREACH"],
        "{se}"
    );

    // pasta's uplink: its holder's route socket too.
    let json = format!(
        r#"{{"network": {{"uplink": "pasta", "routes": ["{}/32"]}}}}"#,
        tb.web_v4()
    );
    let (ok, so, se) = one_shot_json(&tb, Mode::Rootless, "routes-rl-pasta", &json, &direct);
    assert!(ok, "{so}{se}");
    assert_eq!(
        lines(&so),
        [&host, &host, "ENETUNREACH", "ENETUNREACH"],
        "{se}"
    );

    // A socks chain, hop 1 dialling from the caller's namespace.
    let json = format!(
        r#"{{"network": {{"chain": [{{"type": "socks", "address": "{}"}}],
             "routes": ["{}/32", "{}/128"]}}}}"#,
        proxy.addr(),
        tb.web_v4(),
        tb.web_v6()
    );
    let chained = [
        curl(&format!("http://{}/", tb.web_v4())),
        curl(&format!("http://[{}]/", tb.web_v6())),
        connect(&proxy.exit_v4().to_string(), proxy.port()),
        connect(&proxy.exit_v6().to_string(), proxy.port()),
    ]
    .join("; ");
    let (ok, so, se) = one_shot_json(&tb, Mode::Rootless, "routes-rl-socks", &json, &chained);
    assert!(ok, "{so}{se}");
    assert_eq!(
        lines(&so),
        [
            proxy.exit_v4().to_string(),
            proxy.exit_v6().to_string(),
            "ENETUNREACH".into(),
            "ENETUNREACH".into()
        ],
        "{se}"
    );
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

/// A shell line printing, for each nameserver of the sandbox's resolv.conf,
/// what a DNS query to it gives: "answered" or the errno's name.
fn dns_queries() -> String {
    "python3 -c 'import socket,errno\n\
     q=bytes.fromhex(\"123401000001000000000000076578616d706c6503636f6d0000010001\")\n\
     for l in open(\"/etc/resolv.conf\"):\n  \
       if not l.startswith(\"nameserver\"): continue\n  \
       a=l.split()[1]; s=socket.socket(socket.AF_INET6 if \":\" in a else socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)\n  \
       try:\n    s.sendto(q,(a,53)); s.recv(512); print(\"answered\")\n  \
       except OSError as e: print(errno.errorcode.get(e.errno,str(e)))'"
        .to_string()
}

#[test]
fn empty_routes_are_no_network_at_all_root_and_rootless() {
    skip_unless_root!();
    let tb = Testbed::new("routes4");
    let proxy = tb.start_microsocks();
    let script = [
        connect(&tb.web_v4().to_string(), 80),
        connect(&tb.web_v6().to_string(), 80),
        dns_queries(),
    ]
    .join("; ");
    // Control: with the default routes the resolvers answer.
    let (ok, so, se) = one_shot_json(&tb, Mode::Root, "routes-none-ctl", "{}", &dns_queries());
    assert!(ok, "{so}{se}");
    assert!(lines(&so).iter().all(|l| l == "answered"), "{so}{se}");

    let chain = format!(
        r#"{{"network": {{"chain": [{{"type": "socks", "address": "{}"}}], "routes": []}}}}"#,
        proxy.addr()
    );
    let mut cases = vec![
        (
            "routes-none",
            r#"{"network": {"routes": []}}"#.to_string(),
            Mode::Root,
        ),
        ("routes-none-socks", chain, Mode::Root),
    ];
    if tun_usable() {
        cases.push((
            "routes-none-rl",
            r#"{"network": {"routes": []}}"#.into(),
            Mode::Rootless,
        ));
    } else {
        pallium_tests::skip("/dev/net/tun is not world read-write: rootless half not run");
    }
    for (name, json, mode) in cases {
        let (ok, so, se) = one_shot_json(&tb, mode, name, &json, &script);
        assert!(ok, "{name}: {so}{se}");
        let got = lines(&so);
        assert!(got.len() >= 3, "{name}: {so}{se}");
        assert!(
            got.iter().all(|l| l == "ENETUNREACH"),
            "{name}: everything must be unroutable: {got:?}\n{se}"
        );
    }
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

/// A shell line printing what a TCP connect to `ip`:`port` gives from a
/// socket bound to each of the namespace's devices but `lo`
/// (`SO_BINDTODEVICE`, which needs no privilege: the kernel then takes an
/// unrouted destination as on-link): "connected" if any got through, else
/// "blocked".
fn bound_connect(ip: &str, port: u16) -> String {
    format!(
        "python3 -c 'import socket,sys\n\
         ip=sys.argv[1]; r=\"blocked\"\n\
         for _,d in socket.if_nameindex():\n  \
           if d==\"lo\": continue\n  \
           s=socket.socket(socket.AF_INET6 if \":\" in ip else socket.AF_INET); s.settimeout(2)\n  \
           try:\n    \
             s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, d.encode()); s.connect((ip,{port})); r=\"connected\"\n  \
           except OSError: pass\n  \
           s.close()\n\
         print(r)' {ip}"
    )
}

#[test]
fn routes_hold_against_a_socket_bound_to_the_device() {
    skip_unless_root!();
    let tb = Testbed::new("routes5");
    let proxy = tb.start_microsocks();
    let web = tb.web_v4().to_string();
    let other = proxy.exit_v4().to_string();
    let script = [bound_connect(&web, 80), bound_connect(&other, proxy.port())].join("; ");
    let listed = format!(r#""routes": ["{web}/32"]"#);
    let socks = format!(
        r#""chain": [{{"type": "socks", "address": "{}"}}]"#,
        proxy.addr()
    );
    // (name, network keys, rootless, what the two connects give)
    let mut cases = vec![
        (
            "bound-socks",
            format!("{socks}, {listed}"),
            false,
            ["connected", "blocked"],
        ),
        (
            "bound-none-socks",
            format!(r#"{socks}, "routes": []"#),
            false,
            ["blocked"; 2],
        ),
        (
            "bound-veth",
            listed.clone(),
            false,
            ["connected", "blocked"],
        ),
    ];
    if tun_usable() {
        cases.extend([
            ("bound-rl", listed.clone(), true, ["connected", "blocked"]),
            (
                "bound-rl-pasta",
                format!(r#""uplink": "pasta", {listed}"#),
                true,
                ["connected", "blocked"],
            ),
            (
                "bound-rl-socks",
                format!("{socks}, {listed}"),
                true,
                ["connected", "blocked"],
            ),
            (
                "bound-rl-none",
                r#""routes": []"#.into(),
                true,
                ["blocked"; 2],
            ),
        ]);
    } else {
        pallium_tests::skip("/dev/net/tun is not world read-write: rootless half not run");
    }
    for (name, keys, rootless, want) in cases {
        let mode = if rootless { Mode::Rootless } else { Mode::Root };
        let json = format!(r#"{{"network": {{{keys}}}}}"#);
        let (ok, so, se) = one_shot_json(&tb, mode, name, &json, &script);
        assert!(ok, "{name}: {so}{se}");
        assert_eq!(lines(&so), want, "{name}: {json}\n{se}");
    }
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}
