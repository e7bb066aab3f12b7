//! `pallium check` on every example profile of the original's documentation,
//! and the profile errors every command reports before setting anything up.

mod common;

use common::{profile_file, run, text};

/// The original pallium's documented example profiles, verbatim.
const EXAMPLES: &[(&str, &str)] = &[
    (
        "hardened-browser",
        r#"{"sandbox": {"gvisor": true, "gui": true, "audio": true, "virtuser": "browser",
        "paths": {"bind": [["/home/browser/Downloads", "/home/you/Downloads"]]}}, "run": {"command": "chromium"}}"#,
    ),
    (
        "network-chaining",
        r#"{"sandbox": {"virtuser": "janedoe", "gui": true, "audio": true},
        "network": {"chain": [{"type": "socks", "address": "10.8.0.3:1080", "username": "jane.doe", "password": "pass1234"},
        {"type": "tor"}, {"type": "openvpn", "config": "/path/to/conf.ovpn"}]}, "run": {"command": "firefox"}}"#,
    ),
    (
        "virtual-users",
        r#"{"sandbox": {"files": {"bind": [["/mnt", "/home/you/Downloads"]]}, "virtuser": "johndoe"}}"#,
    ),
    (
        "zoom",
        r#"{"sandbox": {"gui": true, "audio": true, "virtuser": "zoom", "paths": {"whitelist": ["/opt/zoom", "/dev/video*"]}}, "run": {"command": "zoom"}}"#,
    ),
    (
        "bittorrent",
        r#"{"network": {"chain": [{"type": "openvpn", "config": "/home/you/openvpn.ovpn"}]}, "run": {"command": "transmission-gtk"}}"#,
    ),
    (
        "vm-behind-tor",
        r#"{"network": {"chain": [{"type": "tor"}], "bridge": {"name": "torbr", "dhcp": true}}}"#,
    ),
    ("tor", r#"{"chain": [{"type": "tor"}]}"#),
    (
        "openconnect",
        r#"{ "chain": [{ "type": "script", "path": "/etc/pallium/scripts/openconnect",
        "destination": "server.example.com", "username": "john.doe", "foo": "bar" }] }"#,
    ),
    (
        "ppp",
        r#"{ "chain": [{ "type": "ppp", "device": "eth0" }], "run": { "command": "chromium --user-data-dir=\"$(mktemp -d)\"" } }"#,
    ),
];

#[test]
fn check_parses_every_documented_example() {
    for (name, json) in EXAMPLES {
        let p = profile_file(name, json);
        let out = run(&["check", p.to_str().unwrap()]);
        let (stdout, stderr) = text(&out);
        // Valid everywhere; features not built yet are listed and exit 1.
        assert!(stdout.contains("profile: "), "{name}: {stdout}{stderr}");
        assert!(
            !stderr.contains("malformed") && !stderr.contains("unknown hop type"),
            "{name}: {stderr}"
        );
        assert!(
            out.status.code() == Some(0) || stderr.contains("not supported yet"),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn check_of_the_empty_profile_is_ok() {
    let out = run(&["check", "{}"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("ok: the profile is valid"), "{stdout}");
}

#[test]
fn unsupported_hop_is_refused_before_anything_is_set_up() {
    // openvpn runs now; `dummy` (the original's plain routed namespace) is
    // still refused.
    let p = profile_file("dummy-refused", r#"{"chain": [{"type": "dummy"}]}"#);
    let out = run(&["exec", "--one-shot", p.to_str().unwrap(), "--", "true"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("hop type 'dummy' is not supported yet"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[test]
fn malformed_json_names_line_and_column() {
    let p = profile_file("malformed", "{\n  \"run\": {\"command\": \"x\",}\n}");
    let out = run(&["check", p.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("malformed.json") && stderr.contains("line 2"),
        "{stderr}"
    );
}

#[test]
fn wrong_type_names_the_json_path() {
    let p = profile_file(
        "wrongtype",
        r#"{"network": {"chain": [{"type": "socks", "address": 1080}]}}"#,
    );
    let out = run(&["check", p.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("network.chain[0].address"), "{stderr}");
}

#[test]
fn unknown_hop_type_is_an_error_with_path() {
    let p = profile_file("unknownhop", r#"{"chain": [{"type": "carrier-pigeon"}]}"#);
    let out = run(&["check", p.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("chain[0]") && stderr.contains("carrier-pigeon"),
        "{stderr}"
    );
}

#[test]
fn unknown_key_warns_but_works() {
    let p = profile_file(
        "unknownkey",
        r#"{"run": {"quiet": true, "colour": "blue"}}"#,
    );
    let out = run(&["check", p.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("run.colour"),
        "{stderr}"
    );
}

#[test]
fn missing_profile_says_where_it_looked() {
    let out = run(&["run", "no-such-profile-xyz"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("no-such-profile-xyz.json") && stderr.contains("looked for"),
        "{stderr}"
    );
}

#[test]
fn exec_without_a_session_says_how_to_start_one() {
    let p = profile_file("nosession", "{}");
    let out = run(&["exec", p.to_str().unwrap(), "--", "true"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("pallium run") && stderr.contains("--one-shot"),
        "{stderr}"
    );
}

#[test]
fn exec_requires_a_command() {
    let out = run(&["exec", "--one-shot", "{}"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("command is required"), "{stderr}");
}

#[test]
fn namespace_index_out_of_range_is_refused() {
    let out = run(&["exec", "--one-shot", "--namespace", "3", "{}", "--", "true"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("cannot be greater than 0"), "{stderr}");
}

#[test]
fn version_and_help_work() {
    let out = run(&["--version"]);
    assert!(text(&out).0.starts_with("pallium "), "{:?}", out);
    let out = run(&["exec", "--help"]);
    assert!(text(&out).0.contains("--one-shot"));
    let out = run(&["--help"]);
    assert!(text(&out).0.contains("Examples:"));
}

#[test]
fn namespace_index_out_of_range_is_refused_clearly() {
    let p = profile_file(
        "ns-index",
        r#"{"chain": [{"type": "socks", "address": "192.0.2.1:1080"}]}"#,
    );
    for (index, says) in [
        ("2", "cannot be greater than 1"),
        ("-3", "cannot be smaller than -2"),
    ] {
        let out = run(&[
            "exec",
            "--namespace",
            index,
            p.to_str().unwrap(),
            "--",
            "true",
        ]);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    // In range (hop 1's side) but no session: only the error, no note.
    let out = run(&[
        "exec",
        "--namespace",
        "0",
        p.to_str().unwrap(),
        "--",
        "true",
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no session of profile"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
