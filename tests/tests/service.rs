//! Running as a systemd service (`extra/systemd/pallium@.service`,
//! `Type=notify`): readiness reaches `NOTIFY_SOCKET` once the session is up,
//! after the supervisor dropped root, and the application never sees the
//! socket's address.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

#[test]
fn ready_is_sent_and_the_application_does_not_see_notify_socket() {
    if !pallium_tests::is_root() {
        pallium_tests::skip("needs root (the root-mode supervisor drops to a service uid)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("pallium-sdnotify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify");
    let server = UnixDatagram::bind(&path).unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let out = Command::new(common::pallium())
        .args(["exec", "--one-shot", "--quiet", "default", "--"])
        .args(["sh", "-c", "echo ${NOTIFY_SOCKET:-unset}"])
        .env("NOTIFY_SOCKET", &path)
        .output()
        .unwrap();
    let (stdout, stderr) = common::text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "unset", "the application saw NOTIFY_SOCKET");
    let mut buf = [0u8; 512];
    let n = server.recv(&mut buf).expect("READY=1 within 30 s");
    let msg = String::from_utf8_lossy(&buf[..n]);
    assert!(msg.starts_with("READY=1\n"), "{msg}");
    assert!(msg.contains("STATUS=session 0 of default up"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_unit_runs_and_stops_the_profile_named_by_the_instance() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../extra/systemd/pallium@.service"),
    )
    .unwrap();
    for line in [
        "Type=notify",
        "NotifyAccess=all",
        "ExecStart=/usr/bin/pallium run --quiet %i",
        "ExecStop=/usr/bin/pallium stop %i",
        "Restart=on-failure",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing: {line}");
    }
    // The command lines parse as the CLI spells them.
    let out = common::run(&["run", "--quiet", "--help"]);
    assert!(out.status.success());
}
