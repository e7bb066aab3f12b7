//! VPN hops chained with proxy hops and with each other, against the testbed's real servers,
//! asserting the address each layer sees:
//! - socks → openvpn (TCP) → wireguard, root and rootless: dante sees the host's uplink, the
//!   OpenVPN server sees dante's address, wireguard-go sees the OpenVPN server's (its NAT), the
//!   web host and the DNS server see the WireGuard server's;
//! - tor → openvpn (TCP) and the original README's socks (with a password) → tor → openvpn,
//!   root and rootless: microsocks sees the host, the OpenVPN server sees a Tor exit, the web
//!   host sees the OpenVPN server.
//!
//! Rootless runs where the test user may open /dev/net/tun (the wireguard engine's TUN is made
//! by the netbroker, but the rootless netbroker is the user's).

mod common;

use std::process::Command;

use common::{modes, one_shot_output, text, wait_clean};
use pallium_tests::{
    skip_unless_root, Auth, OpenvpnServer, Socks, Testbed, VpnProto, WgServer, WEB4_NAME,
};

fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// The openvpn hop over TCP, its config and profile files readable by the test user.
fn openvpn_hop(vpn: &OpenvpnServer, name: &str) -> String {
    let auth = vpn.auth();
    let conf = vpn.config_file(
        &format!("{name}.ovpn"),
        &vpn.client_config_text(VpnProto::Tcp),
    );
    format!(
        r#"{{"type": "openvpn", "config": {}, "username": {}, "password": {}, "timeout": 60}}"#,
        json(&conf.display().to_string()),
        json(&auth.user),
        json(&auth.pass)
    )
}

fn wireguard_hop(tb: &Testbed, vpn: &OpenvpnServer, wg: &WgServer) -> String {
    let conf = vpn.config_file("chain.conf", &wg.client_config(&tb.dns_v4().to_string()));
    format!(
        r#"{{"type": "wireguard", "config": {}}}"#,
        json(&conf.display().to_string())
    )
}

/// The TCP clients the OpenVPN server accepted (`TCP connection established with
/// [AF_INET]198.51.100.10:41234`): their addresses.
fn openvpn_clients(vpn: &OpenvpnServer) -> Vec<String> {
    vpn.log()
        .lines()
        .filter_map(|l| l.split("TCP connection established with [AF_INET]").nth(1))
        .filter_map(|a| a.rsplit_once(':').map(|(ip, _)| ip.to_string()))
        .collect()
}

/// wireguard-go's peers' endpoints (`wg show IF endpoints`).
fn wg_endpoints(wg: &WgServer) -> String {
    let o = Command::new("ip")
        .args(["netns", "exec", wg.netns(), "wg", "show", wg.ifname()])
        .arg("endpoints")
        .output()
        .expect("wg show");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn socks_then_openvpn_tcp_then_wireguard_each_layer_sees_the_one_before() {
    skip_unless_root!();
    let tb = Testbed::new("vpnchain");
    let dante = tb.start_socks(Socks::DanteNoAuth);
    let vpn = tb.start_openvpn();
    let wg = tb.start_wireguard();
    let hops = format!(
        r#"{{"type": "socks", "address": "{}"}}, {}, {}"#,
        dante.addr(),
        openvpn_hop(&vpn, "chain"),
        wireguard_hop(&tb, &vpn, &wg)
    );
    let p = vpn.config_file("chain.json", &format!(r#"{{"chain": [{hops}]}}"#));
    let p = p.display().to_string();
    let script = format!(
        "curl -sS --max-time 10 http://{WEB4_NAME}/; echo; grep nameserver /etc/resolv.conf"
    );
    for mode in modes("VPN chain") {
        let dns_before = tb.dns_queries().len();
        let o = one_shot_output(&tb, mode, &p, &script);
        let (stdout, stderr) = text(&o);
        assert!(
            o.status.success(),
            "{mode:?}: {stdout}{stderr}\n{}",
            vpn.log()
        );
        let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
        // The web host sees the last hop's server; the application's resolver is the
        // WireGuard config's DNS, reached through all three hops.
        assert_eq!(
            lines,
            [
                wg.exit_v4().to_string(),
                format!("nameserver {}", tb.dns_v4())
            ],
            "{mode:?}: {stderr}"
        );
        for (n, kind) in [(1, "socks"), (2, "openvpn"), (3, "wireguard")] {
            assert!(
                stderr.contains(&format!("hop {n} ({kind})")),
                "{mode:?}: hop {n} not shown: {stderr}"
            );
        }
        let q = tb.dns_queries();
        assert!(
            q[dns_before..]
                .iter()
                .any(|q| q.name == WEB4_NAME && q.client == std::net::IpAddr::from(wg.exit_v4())),
            "{mode:?}: the application's name was not resolved through the WireGuard server: {q:?}"
        );
        assert_eq!(
            wait_clean(&tb),
            Vec::<String>::new(),
            "{mode:?}: left behind"
        );
    }
    // Layer 1: dante's client was the host (its uplink address), connecting to the OpenVPN
    // server (`tcp/connect [: 192.0.2.2.55406 198.51.100.10.1080 -> … 198.51.100.11.443`).
    let connects: Vec<String> = dante
        .log()
        .lines()
        .filter_map(|l| l.split("tcp/connect [: ").nth(1).map(str::to_string))
        .collect();
    let (host, server) = (
        format!("{}.", tb.host_v4()),
        format!(" {}.443", vpn.exit_v4()),
    );
    assert!(
        !connects.is_empty()
            && connects
                .iter()
                .all(|c| c.starts_with(&host) && c.ends_with(&server)),
        "dante's connections: {connects:?}"
    );
    // Layer 2: the OpenVPN server's TCP clients were dante, never the host.
    let clients = openvpn_clients(&vpn);
    assert!(!clients.is_empty(), "no TCP client: {}", vpn.log());
    assert!(
        clients.iter().all(|c| *c == dante.exit_v4().to_string()),
        "OpenVPN's clients {clients:?}, not dante {}",
        dante.exit_v4()
    );
    // Layer 3: wireguard-go's peer came from the OpenVPN server's address (its NAT).
    let endpoints = wg_endpoints(&wg);
    assert!(
        endpoints.contains(&format!("{}:", vpn.exit_v4())),
        "wireguard-go's peer endpoint: {endpoints}"
    );
    // Nothing but the last layer reached the web host.
    let seen = tb.web_seen();
    assert!(
        !seen.is_empty() && seen.iter().all(|a| *a == wg.exit_v4().to_string()),
        "the web host saw {seen:?}"
    );
}

#[test]
fn tor_then_openvpn_tcp_and_the_readme_chain_exit_at_the_vpn_server() {
    skip_unless_root!();
    let tb = Testbed::new("vpntor");
    let tor = tb.start_tor();
    let socks = tb.start_socks(Socks::MicrosocksAuth(Auth::new("jane.doe", "pass1234")));
    let vpn = tb.start_openvpn();
    tor.wait_ready();
    let exits: Vec<String> = tor.exit_addrs().iter().map(|a| a.to_string()).collect();
    let args = serde_json::to_string(&tor.client_args()).unwrap();
    let tor_hop = format!(r#"{{"type": "tor", "timeout": 120, "tor_args": {args}}}"#);
    let ovpn = openvpn_hop(&vpn, "tor");
    let readme_socks = format!(
        r#"{{"type": "socks", "address": "{}", "username": "jane.doe", "password": "pass1234"}}"#,
        socks.addr()
    );
    let cases = [
        ("tor-openvpn", format!("{tor_hop}, {ovpn}"), 2),
        ("readme", format!("{readme_socks}, {tor_hop}, {ovpn}"), 3),
    ];
    let script = format!(
        "curl -sS --max-time 20 http://{WEB4_NAME}/; echo; grep nameserver /etc/resolv.conf"
    );
    for ((name, hops, n), mode) in cases
        .iter()
        .flat_map(|c| modes("VPN chain").into_iter().map(move |m| (c, m)))
    {
        let before = openvpn_clients(&vpn).len();
        let web_before = tb.web_seen().len();
        let p = vpn.config_file(
            &format!("{name}.json"),
            &format!(r#"{{"chain": [{hops}]}}"#),
        );
        let o = one_shot_output(&tb, mode, &p.display().to_string(), &script);
        let (stdout, stderr) = text(&o);
        let name = format!("{name} {mode:?}");
        assert!(
            o.status.success(),
            "{name}: {stdout}{stderr}\n{}",
            vpn.log()
        );
        let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(
            lines,
            [
                vpn.exit_v4().to_string(),
                format!("nameserver {}", tb.dns_v4())
            ],
            "{name}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("hop {n} (openvpn)")),
            "{name}: {stderr}"
        );
        // The OpenVPN server was reached from a Tor exit.
        let clients = openvpn_clients(&vpn);
        assert!(
            clients.len() > before && clients[before..].iter().all(|c| exits.contains(c)),
            "{name}: OpenVPN's clients {:?}, not Tor exits {exits:?}",
            &clients[before..]
        );
        let seen = tb.web_seen();
        assert!(
            seen[web_before..]
                .iter()
                .all(|a| *a == vpn.exit_v4().to_string()),
            "{name}: the web host saw {:?}",
            &seen[web_before..]
        );
        assert_eq!(wait_clean(&tb), Vec::<String>::new(), "{name}: left behind");
    }
    // The README chain's first layer: microsocks served the host.
    assert!(
        socks.log().contains(&tb.host_v4().to_string()),
        "microsocks never saw the host: {}",
        socks.log()
    );
}
