//! Profile parser tests: the documented example profiles, defaults, every
//! error kind with its path and position, warnings, hops, the wire round trip
//! and a never-panics property.

use proptest::prelude::*;

use super::*;

/// The original pallium's documented example profiles, verbatim.
const EXAMPLES: &[(&str, &str)] = &[
    (
        "hardened-browser",
        r#"{
  "sandbox": {
    "gvisor": true,
    "gui": true,
    "audio": true,
    "virtuser": "browser",
    "paths": {
      "bind": [
        ["/home/browser/Downloads", "/home/you/Downloads"]
      ]
    }
  },
  "run": {
    "command": "chromium"
  }
}"#,
    ),
    (
        "network-chaining",
        r#"{
  "sandbox": {
    "virtuser": "janedoe",
    "gui": true,
    "audio": true
  },
  "network":{
    "chain": [
      {
        "type": "socks",
        "address": "10.8.0.3:1080",
        "username": "jane.doe",
        "password": "pass1234"
      },
      {
        "type": "tor"
      },
      {
        "type": "openvpn",
        "config": "/path/to/conf.ovpn"
      }
    ]
  },
  "run": {
    "command": "firefox"
  }
}"#,
    ),
    (
        "virtual-users",
        r#"{
  "sandbox": {
    "files": {
      "bind": [["/mnt", "/home/you/Downloads"]]
    },
    "virtuser": "johndoe"
  }
}"#,
    ),
    (
        "zoom",
        r#"{
  "sandbox": {
    "gui": true,
    "audio": true,
    "virtuser": "zoom",
    "paths": {
      "whitelist": [
        "/opt/zoom",
        "/dev/video*"
      ]
    }
  },
  "run": {
    "command": "zoom"
  }
}"#,
    ),
    (
        "bittorrent-vpn",
        r#"{
  "network": {
    "chain": [
      {
        "type": "openvpn",
        "config": "/home/you/openvpn.ovpn"
      }
    ]
  },
  "run": {
    "command": "transmission-gtk"
  }
}"#,
    ),
    (
        "vm-behind-tor",
        r#"{
  "network": {
    "chain": [
      {
        "type": "tor"
      }
    ],
    "bridge": {
      "name": "torbr",
      "dhcp": true
    }
  }
}"#,
    ),
    ("tor", r#"{"chain": [{"type": "tor"}]}"#),
    (
        "openconnect",
        r#"{ "chain": [{ "type": "script", "path": "/etc/pallium/scripts/openconnect",
    "destination": "server.example.com", "username": "john.doe", "foo": "bar" }] }"#,
    ),
    (
        "ppp",
        r#"{ "chain": [{ "type": "ppp", "device": "eth0" }],
  "run": { "command": "chromium --user-data-dir=\"$(mktemp -d)\"" } }"#,
    ),
    ("empty", "{}"),
];

fn ok(text: &str) -> Parsed {
    parse("p.json", text).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    parse("p.json", text).unwrap_err().to_string()
}

fn kind(text: &str) -> HopKind {
    ok(text).profile.network.chain.remove(0).kind
}

#[test]
fn every_documented_example_parses() {
    for (name, text) in EXAMPLES {
        let parsed = parse(name, text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected_warnings = usize::from(*name == "virtual-users");
        assert_eq!(
            parsed.warnings.len(),
            expected_warnings,
            "{name}: {:?}",
            parsed.warnings
        );
    }
}

#[test]
fn examples_have_the_documented_meaning() {
    let p = ok(EXAMPLES[1].1).profile;
    assert_eq!(p.run.command, Some(Command::Shell("firefox".into())));
    let kinds: Vec<&str> = p.network.chain.iter().map(|h| h.kind.name()).collect();
    assert_eq!(kinds, ["socks", "tor", "openvpn"]);
    let HopKind::Socks(s) = &p.network.chain[0].kind else {
        panic!()
    };
    assert_eq!(s.address.to_string(), "10.8.0.3:1080");
    assert_eq!(s.version, SocksVersion::V5);
    assert_eq!(s.password.as_deref(), Some("pass1234"));
    let HopKind::Tor(t) = &p.network.chain[1].kind else {
        panic!()
    };
    assert_eq!(t.timeout.as_secs(), 300);
    assert!(t.builtin_dns && t.onion_support);

    let w = ok(EXAMPLES[2].1);
    assert_eq!(
        w.warnings,
        ["profile p.json: sandbox.files is ignored (did you mean sandbox.paths?)"]
    );
    assert!(w.profile.sandbox.paths.is_none());

    let HopKind::Script(s) = kind(EXAMPLES[7].1) else {
        panic!()
    };
    assert_eq!(s.path, ["/etc/pallium/scripts/openconnect"]);
    assert_eq!(s.interface.as_str(), "tun0");
    assert_eq!(s.env["PALLIUM_SCRIPT_DESTINATION"], "server.example.com");
    assert_eq!(s.env["PALLIUM_SCRIPT_USERNAME"], "john.doe");
    assert_eq!(s.env["PALLIUM_SCRIPT_FOO"], "bar");
    assert_eq!(s.env.len(), 3);
}

#[test]
fn empty_object_is_all_defaults() {
    let p = ok("{}");
    assert_eq!(p.profile, Profile::default());
    assert!(p.warnings.is_empty());
    assert!(p.profile.run.command.is_none() && !p.profile.run.quiet);
    assert!(p.profile.unsupported().is_empty());
}

#[test]
fn chain_shorthand_equals_network_chain() {
    let a = ok(r#"{"chain": [{"type": "tor"}]}"#).profile;
    let b = ok(r#"{"network": {"chain": [{"type": "tor"}]}}"#).profile;
    assert_eq!(a, b);
}

#[test]
fn chain_and_network_together_is_an_error() {
    let e = err("{\"network\": {},\n \"chain\": []}");
    assert_eq!(e, "profile p.json: chain: network and chain properties cannot be specified at the same time (move \"chain\" into \"network\") (line 2, column 11)");
}

#[test]
fn malformed_json_names_line_and_column() {
    let e = err("{\n  \"run\": {}\n  \"sandbox\": {}\n}");
    assert!(
        e.starts_with("profile p.json: malformed JSON at line 3, column 3: expected `,` or `}`"),
        "{e}"
    );
    let e = parse("<stdin>", "").unwrap_err().to_string();
    assert!(
        e.starts_with("profile <stdin>: malformed JSON at line 1"),
        "{e}"
    );
}

#[test]
fn deep_nesting_is_a_syntax_error_not_a_crash() {
    let text = format!(
        "{{\"run\": {}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let e = err(&text);
    assert!(e.contains("recursion limit exceeded"), "{e}");
}

#[test]
fn non_object_profile_is_an_error() {
    let e = err("[1]");
    assert_eq!(
        e,
        "profile p.json: a profile is a JSON object, found an array (line 1, column 1)"
    );
}

#[test]
fn wrong_type_names_path_and_position() {
    let text = "{\n  \"network\": {\n    \"chain\": [\n      {\"type\": \"socks\",\n       \"address\": 1080}]}}";
    let e = parse("/tmp/p.json", text).unwrap_err();
    assert_eq!(e.path(), Some("network.chain[0].address"));
    assert_eq!(e.position(), (5, 19));
    assert_eq!(e.to_string(), "profile /tmp/p.json: network.chain[0].address: expected a string, found an integer (line 5, column 19)");
    let e = err(r#"{"run": {"command": 5}}"#);
    assert_eq!(e, "profile p.json: run.command: expected a string or an array of strings, found an integer (line 1, column 21)");
    let e = err(r#"{"run": {"command": ["ls", 1]}}"#);
    assert!(
        e.contains("run.command[1]: expected a string, found an integer (line 1, column 28)"),
        "{e}"
    );
}

#[test]
fn an_unknown_hop_type_is_named_on_one_line() {
    // Found by fuzzing (fuzz/seeds/profile/regression-multiline-hop-type).
    let e = err(r#"{"chain": [{"type": "so\nrun\r\b"}]}"#);
    assert!(e.contains(r"unknown hop type 'so\nrun\r\u{8}'"), "{e}");
    assert!(!e.contains(['\n', '\r']), "{e:?}");
}

#[test]
fn unknown_hop_type_lists_known_types() {
    let e = err("{\"chain\": [{\"type\": \"tor\"},\n {\"type\": \"foo\"}]}");
    assert_eq!(e, "profile p.json: chain[1].type: unknown hop type 'foo' (known: socks, http, tor, openvpn, wireguard, ssh, socksapp, script, ppp, dummy, tun2socks) (line 2, column 11)");
    let e = err(r#"{"chain": [{"address": "1.2.3.4"}]}"#);
    assert!(
        e.contains("chain[0]: hop needs \"type\" (one of socks,"),
        "{e}"
    );
}

#[test]
fn missing_required_hop_key_says_what_to_add() {
    let e = err(r#"{"network": {"chain": [{"type": "socks"}]}}"#);
    assert_eq!(e, "profile p.json: network.chain[0]: socks hop needs \"address\" (e.g. \"192.0.2.1:1080\") (line 1, column 24)");
    for (t, key) in [
        ("openvpn", "config"),
        ("wireguard", "config"),
        ("ssh", "destination"),
        ("script", "path"),
        ("tun2socks", "protocol"),
    ] {
        let e = err(&format!(r#"{{"chain": [{{"type": "{t}"}}]}}"#));
        assert!(e.contains(&format!("{t} hop needs \"{key}\"")), "{e}");
    }
}

#[test]
fn malformed_address_is_an_error_at_the_address() {
    let e = err(r#"{"chain": [{"type": "http", "address": "1.2.3.4:99999"}]}"#);
    assert!(
        e.contains("chain[0].address: invalid port \"99999\""),
        "{e}"
    );
    assert!(e.ends_with("(line 1, column 40)"), "{e}");
}

#[test]
fn address_default_ports_per_type() {
    let HopKind::Socks(s) = kind(r#"{"chain": [{"type": "socks", "address": "192.0.2.1"}]}"#)
    else {
        panic!()
    };
    assert_eq!(s.address.port, 1080);
    let HopKind::Http(h) = kind(r#"{"chain": [{"type": "http", "address": "[2001:db8::1]"}]}"#)
    else {
        panic!()
    };
    assert_eq!(h.address.to_string(), "[2001:db8::1]:3128");
    let HopKind::Http(h) =
        kind(r#"{"chain": [{"type": "http", "address": "proxy.example:8080"}]}"#)
    else {
        panic!()
    };
    assert_eq!(h.address.host, Host::Name("proxy.example".into()));
    let e =
        err(r#"{"chain": [{"type": "tun2socks", "protocol": "socks5", "address": "192.0.2.1"}]}"#);
    assert!(e.contains("needs a port"), "{e}");
}

#[test]
fn hop_types_match_case_insensitively() {
    assert_eq!(kind(r#"{"chain": [{"type": "TOR"}]}"#).name(), "tor");
    assert_eq!(kind(r#"{"chain": [{"type": "Dummy"}]}"#), HopKind::Dummy);
    assert_eq!(
        kind(r#"{"chain": [{"type": "WireGuard", "config": "/wg.conf"}]}"#).name(),
        "wireguard"
    );
}

#[test]
fn socks_versions() {
    for (v, want) in [
        ("4", SocksVersion::V4),
        ("\"4a\"", SocksVersion::V4a),
        ("\"4A\"", SocksVersion::V4a),
        ("5", SocksVersion::V5),
        ("\"5\"", SocksVersion::V5),
    ] {
        let HopKind::Socks(s) = kind(&format!(
            r#"{{"chain": [{{"type": "socks", "address": "1.2.3.4", "version": {v}}}]}}"#
        )) else {
            panic!()
        };
        assert_eq!(s.version, want, "{v}");
    }
    let e = err(r#"{"chain": [{"type": "socks", "address": "1.2.3.4", "version": 6}]}"#);
    assert!(
        e.contains("chain[0].version: unknown SOCKS version 6"),
        "{e}"
    );
}

#[test]
fn hop_defaults_and_options() {
    let HopKind::Ssh(s) = kind(
        r#"{"chain": [{"type": "ssh", "destination": "me@host", "ssh_args": ["-p", "2222"]}]}"#,
    ) else {
        panic!()
    };
    assert_eq!((s.timeout.as_secs(), s.ssh_args.len()), (30, 2));
    let HopKind::Openvpn(o) =
        kind(r#"{"chain": [{"type": "openvpn", "config": "/c.ovpn", "timeout": 1.5}]}"#)
    else {
        panic!()
    };
    assert_eq!(o.timeout.as_millis(), 1500);
    let HopKind::Socksapp(a) =
        kind(r#"{"chain": [{"type": "socksapp", "user": "nobody", "cmd": ["prog", "-x"]}]}"#)
    else {
        panic!()
    };
    assert_eq!(a.cmd, ["prog", "-x"]);
    let HopKind::Ppp(p) = kind(r#"{"chain": [{"type": "ppp"}]}"#) else {
        panic!()
    };
    assert_eq!((p.provider.as_str(), p.device), ("provider", None));
    let HopKind::Tor(t) = kind(
        r#"{"chain": [{"type": "tor", "timeout": 10, "circuit_build_timeout": 5, "builtin_dns": false, "user": "debian-tor", "onion_support": false, "tor_args": ["--ClientOnly", "1"]}]}"#,
    ) else {
        panic!()
    };
    assert_eq!(
        (t.timeout.as_secs(), t.circuit_build_timeout.as_secs()),
        (10, 5)
    );
    assert!(!t.builtin_dns && !t.onion_support);
    let e = err(r#"{"chain": [{"type": "tor", "timeout": -1}]}"#);
    assert!(
        e.contains("chain[0].timeout: expected a non-negative number of seconds"),
        "{e}"
    );
    let e = err(r#"{"chain": [{"type": "ppp", "provider": "../x"}]}"#);
    assert!(e.contains("chain[0].provider: invalid ppp provider"), "{e}");
}

#[test]
fn onion_service_on_a_tor_hop() {
    let HopKind::Tor(t) =
        kind(r#"{"chain": [{"type": "tor", "onion_service": {"port": 80, "target": 8080}}]}"#)
    else {
        panic!()
    };
    assert_eq!(
        t.onion_service,
        Some(OnionService {
            port: 80,
            target: 8080
        })
    );
    // target defaults to port; none without the key.
    let HopKind::Tor(t) = kind(r#"{"chain": [{"type": "tor", "onion_service": {"port": 22}}]}"#)
    else {
        panic!()
    };
    assert_eq!(t.onion_service.map(|o| o.target), Some(22));
    let HopKind::Tor(t) = kind(r#"{"chain": [{"type": "tor"}]}"#) else {
        panic!()
    };
    assert_eq!(t.onion_service, None);
    // An unknown key inside is a warning naming it.
    let p = ok(r#"{"chain": [{"type": "tor", "onion_service": {"port": 80, "prot": 1}}]}"#);
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(
        p.warnings[0].contains("chain[0].onion_service.prot"),
        "{:?}",
        p.warnings
    );
    // `pallium check` says it.
    let d = p.profile.describe();
    assert!(
        d.iter()
            .any(|l| l.contains("onion service port 80 → port 80 in the sandbox")),
        "{d:?}"
    );
}

#[test]
fn onion_service_errors_name_the_key() {
    for (json, want) in [
        (
            r#"{"chain": [{"type": "tor", "onion_service": {"port": 0}}]}"#,
            "chain[0].onion_service.port: expected a TCP port (1 to 65535), found 0",
        ),
        (
            r#"{"chain": [{"type": "tor", "onion_service": {"port": 80, "target": 70000}}]}"#,
            "chain[0].onion_service.target: expected a TCP port (1 to 65535), found 70000",
        ),
        (
            r#"{"chain": [{"type": "tor", "onion_service": {"port": "80"}}]}"#,
            "chain[0].onion_service.port: expected a TCP port (1 to 65535), found \"80\"",
        ),
        (
            r#"{"chain": [{"type": "tor", "onion_service": {"target": 80}}]}"#,
            "chain[0].onion_service: onion_service needs \"port\"",
        ),
        (
            r#"{"chain": [{"type": "tor", "onion_service": 80}]}"#,
            "chain[0].onion_service: expected an object, found an integer",
        ),
        (
            r#"{"chain": [{"type": "socks", "address": "192.0.2.1:1080", "onion_service": {"port": 80}}]}"#,
            "chain[0].onion_service: onion_service is only for tor hops (a socks hop",
        ),
    ] {
        let e = err(json);
        assert!(e.contains(want), "{json}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}

#[test]
fn common_hop_options() {
    let h = ok(r#"{"chain": [{"type": "tor", "dns": ["1.1.1.1", "tcp://9.9.9.9"], "quiet": true, "tor_path": "/opt/tor", "tun2socks_path": "/opt/t2s"}]}"#)
        .profile
        .network
        .chain
        .remove(0);
    let dns: Vec<String> = h
        .options
        .dns
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(dns, ["1.1.1.1", "tcp://9.9.9.9:53"]);
    assert_eq!(h.options.quiet, Some(true));
    assert_eq!(h.options.tool_paths["tor"], "/opt/tor");
    assert_eq!(h.options.tool_paths["tun2socks"], "/opt/t2s");
    let e = err(r#"{"chain": [{"type": "tor", "dns": ["one.one"]}]}"#);
    assert!(e.contains("chain[0].dns[0]: malformed DNS server"), "{e}");
    let e = err(r#"{"chain": [{"type": "tor", "tor_path": 1}]}"#);
    assert!(
        e.contains("chain[0].tor_path: expected a string, found an integer"),
        "{e}"
    );
}

#[test]
fn script_hop_keys_become_env_and_must_be_strings() {
    let HopKind::Script(s) = kind(
        r#"{"chain": [{"type": "script", "path": ["/bin/x", "-v"], "interface": "tun7", "dns": "1.1.1.1", "x_path": "/p"}]}"#,
    ) else {
        panic!()
    };
    assert_eq!(s.path, ["/bin/x", "-v"]);
    assert_eq!(s.interface.as_str(), "tun7");
    let keys: Vec<&str> = s.env.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "PALLIUM_SCRIPT_DNS",
            "PALLIUM_SCRIPT_INTERFACE",
            "PALLIUM_SCRIPT_X_PATH"
        ]
    );
    let e = err(r#"{"chain": [{"type": "script", "path": "/x", "retries": 3}]}"#);
    assert!(
        e.contains(
            "chain[0].retries: expected a string (script hop options become environment variables"
        ),
        "{e}"
    );
    let e = err(r#"{"chain": [{"type": "script", "path": []}]}"#);
    assert!(e.contains("chain[0].path: the argv array is empty"), "{e}");
}

#[test]
fn unknown_keys_warn_with_their_path() {
    let p = ok(
        r#"{"netwrk": 1, "network": {"chian": [], "bridge": {"nmae": "x"}, "port_forwarding": {"remote": []}},
        "run": {"cmd": "x"}, "sandbox": {"gvsior": true, "paths": {"readonly": []}, "virtuser": {"name": "a", "home": "/h"}},
        "chain_": 0}"#,
    );
    let mut w = p.warnings;
    w.sort();
    let want = [
        ("chain_", Some("chain")),
        ("netwrk", Some("network")),
        ("network.bridge.nmae", Some("network.bridge.name")),
        ("network.chian", Some("network.chain")),
        ("network.port_forwarding.remote", None),
        ("run.cmd", None),
        ("sandbox.gvsior", Some("sandbox.gvisor")),
        ("sandbox.paths.readonly", None),
        ("sandbox.virtuser.home", None),
    ];
    let mut want: Vec<String> = want
        .iter()
        .map(|(k, hint)| match hint {
            Some(h) => format!("profile p.json: unknown key {k} (ignored; did you mean {h}?)"),
            None => format!("profile p.json: unknown key {k} (ignored)"),
        })
        .collect();
    want.sort();
    assert_eq!(w, want);
    let p = ok(
        r#"{"chain": [{"type": "socks", "address": "1.2.3.4", "adress": "x", "tun2socks_path": "/t"}]}"#,
    );
    assert_eq!(
        p.warnings,
        ["profile p.json: unknown key chain[0].adress (ignored; did you mean chain[0].address?)"]
    );
}

#[test]
fn nulls_mean_default() {
    let p = ok(r#"{"network": {"bridge": null, "routes": null, "kill_switch": null}, "run": {"command": null}, "sandbox": {"virtuser": null}}"#).profile;
    assert_eq!(p, Profile::default());
}

#[test]
fn unsupported_lists_each_feature_once() {
    assert!(ok(r#"{"run": {"command": ["true"], "quiet": true}, "network": {"force_slirp": true, "kill_switch": false}, "sandbox": {"hostname": "h", "workdir": "/", "virtuser": "$tmp", "paths": {"mode": "base"}, "seccomp": ["uname"], "unpriv_user_ns": false}}"#).profile.unsupported().is_empty());
    let u = ok(EXAMPLES[1].1).profile.unsupported();
    assert!(u.is_empty(), "{u:?}");
    let u = ok(r#"{"chain": [{"type": "dummy"}, {"type": "tor"}, {"type": "dummy"}]}"#)
        .profile
        .unsupported();
    assert_eq!(u, ["hop type 'dummy' is not supported yet"]);
}

#[test]
fn describe_shows_the_plan_without_passwords() {
    for (name, text) in EXAMPLES {
        let lines = ok(text).profile.describe();
        let all = lines.join("\n");
        assert!(!all.contains("pass1234"), "{name}: {all}");
        assert!(all.contains("run: "), "{name}: {all}");
    }
    let d = ok(EXAMPLES[1].1).profile.describe();
    assert_eq!(
        d[0],
        "hop 1: socks5 proxy 10.8.0.3:1080 as jane.doe (password set)"
    );
    assert!(d[1].starts_with("hop 2: tor (timeout 300s"), "{d:?}");
    assert_eq!(d[2], "hop 3: openvpn /path/to/conf.ovpn (timeout 60s)");
    assert!(
        d.contains(&"run: /bin/sh -c \"firefox\"".to_string()),
        "{d:?}"
    );
}

#[test]
fn describe_shows_the_environment_policy_without_values() {
    let d = ok(r#"{"sandbox": {"environment": {"pass": ["DISPLAY", "TMUX"], "set": {"TOKEN": "s3cret"}}}}"#)
        .profile
        .describe();
    let all = d.join("\n");
    assert!(all.contains("environment: the caller's, minus host-socket addresses (DBUS_SESSION_BUS_ADDRESS, SSH_AUTH_SOCK"), "{all}");
    assert!(all.contains("  pass DISPLAY, TMUX"), "{all}");
    assert!(all.contains("  set TOKEN"), "{all}");
    assert!(!all.contains("s3cret"), "{all}");
}

#[test]
fn every_example_round_trips_over_the_wire() {
    let extra = r#"{"network": {"chain": [
        {"type": "http", "address": "proxy.example:8080", "dns": ["tcp://[::1]:53"]},
        {"type": "ssh", "destination": "h", "timeout": 0.25},
        {"type": "tun2socks", "protocol": "socks4", "address": "[::1]:9"},
        {"type": "wireguard", "config": "/w"}, {"type": "dummy"},
        {"type": "socksapp", "user": "u", "cmd": "p"}],
      "routes": ["10.0.0.0/8"], "outbound_interface": "eth0",
      "bridge": {"routes": ["::/0"], "eth_bridge": {"devices": ["eth1"]}},
      "port_forwarding": {"local": ["udp://0.0.0.0:53:127.0.0.1:53"]}},
      "sandbox": {"virtuser": {"name": "$tmp", "skeleton": false}, "gui": "expose", "seccomp": ["ptrace"],
        "environment": {"pass": ["DISPLAY"], "set": {"LANG": "C.UTF-8"}},
        "paths": {"mode": "base", "fsmount": [["/tmp", "tmpfs"]], "blacklist": ["/home"]}},
      "run": {"command": ["a", "b"], "quiet": true}}"#;
    for text in EXAMPLES.iter().map(|(_, t)| *t).chain([extra]) {
        let p = ok(text).profile;
        let (buf, fds) = crate::wire::encode(&p).unwrap();
        assert!(fds.is_empty());
        let back: Profile = crate::wire::decode(&buf, vec![]).unwrap();
        assert_eq!(back, p);
    }
}

/// JSON-ish text: fragments of real profiles glued together.
fn jsonish() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"chain\"",
        "\"network\"",
        "\"type\"",
        "\"socks\"",
        "\"tor\"",
        "\"script\"",
        "\"address\"",
        "\"1.2.3.4:80\"",
        "\"[::1]\"",
        "\"sandbox\"",
        "\"paths\"",
        "\"bind\"",
        "\"virtuser\"",
        "\"$tmp\"",
        "\"run\"",
        "\"command\"",
        "\"local\"",
        "\"port_forwarding\"",
        "\"tcp://1.2.3.4:1:5.6.7.8:2\"",
        "\"routes\"",
        "\"10.0.0.0/8\"",
        "\"gui\"",
        "\"dns\"",
        "true",
        "false",
        "null",
        "0",
        "-1",
        "1e400",
        "4.5",
        "\"\\u0000\"",
        "\"\\\"\"",
        "\n",
        " ",
        "\"é\"",
    ]);
    prop::collection::vec(atoms, 0..60).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_text(s in ".{0,200}") {
        let _ = parse("fuzz", &s);
    }

    #[test]
    fn parse_never_panics_on_jsonish_text(s in jsonish()) {
        if let Err(ProfileError::Invalid { line, column, .. }) = parse("fuzz", &s) {
            prop_assert!(line >= 1 && column >= 1);
        }
    }

    #[test]
    fn parse_never_panics_on_valid_json(v in arb_json()) {
        let text = serde_json::to_string_pretty(&serde_json::json!({"network": {"chain": [v.clone()]}, "sandbox": v.clone(), "run": v})).unwrap();
        let _ = parse("fuzz", &text);
    }
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value as V;
    let leaf = prop_oneof![
        Just(V::Null),
        any::<bool>().prop_map(V::Bool),
        any::<i64>().prop_map(V::from),
        prop::sample::select(vec![
            "socks",
            "TOR",
            "script",
            "1.2.3.4",
            "/x",
            "$tmp",
            "xpra",
            "tcp://a:b:c:d",
            "base",
            ""
        ])
        .prop_map(V::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        let keys = prop::sample::select(vec![
            "type",
            "address",
            "path",
            "virtuser",
            "paths",
            "bind",
            "command",
            "gui",
            "dns",
            "version",
            "name",
            "whitelist",
            "skeleton",
            "timeout",
            "x",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(V::Array),
            prop::collection::vec((keys, inner), 0..5).prop_map(|kv| V::Object(
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

#[test]
fn comment_and_schema_are_accepted_and_change_nothing() {
    let p = ok(r#"{"comment": ["what this is for", "line 2"], "$schema": "x.json"}"#);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert_eq!(p.profile, Profile::default());
    let p = ok(r#"{"comment": "one line"}"#);
    assert_eq!(p.profile, Profile::default());
    let e = err(r#"{"comment": 3}"#);
    assert!(e.contains("comment"), "{e}");
}
