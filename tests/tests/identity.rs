//! Who the application is: as root it is uid 0 of a user
//! namespace of its own, an unprivileged host uid of the session's — never
//! the host's root unless the profile opts in with `sandbox.unsafe_host_root`;
//! a writable bind stays writable for it (idmapped); `exec --root` holds
//! capabilities over the application's network namespace only, so the
//! original's `extra/scripts/wireshark` (nft and tcpdump on the application's
//! traffic) works, as root and rootless.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Output, Stdio};

use common::{out, pal, text, tun_usable, Mode};
use pallium_tests::{skip_unless_root, TestUser, Testbed};

/// `pallium ARGS` as root in the testbed's host namespace.
fn root(tb: &Testbed, args: &[&str]) -> Output {
    out(pal(tb, Mode::Root, args))
}

/// `pallium ARGS` as the test user.
fn user(tb: &Testbed, args: &[&str]) -> Output {
    out(pal(tb, Mode::Rootless, args))
}

/// The first line of `/proc/self/uid_map` inside: (inside, outside, count).
fn uid_map(stdout: &str) -> Option<(u64, u64, u64)> {
    let line = stdout.lines().find(|l| l.starts_with("MAP "))?;
    let v: Vec<u64> = line[4..]
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (v.len() == 3).then(|| (v[0], v[1], v[2]))
}

const WHO: &str = "id -u; echo MAP $(cat /proc/self/uid_map); \
    (cat /etc/shadow >/dev/null 2>&1 && echo shadow-read) || echo shadow-denied; \
    (echo '|/bin/true' > /proc/sys/kernel/core_pattern) 2>/dev/null && echo core-written || echo core-denied";

#[test]
fn as_root_the_application_is_an_unprivileged_host_uid() {
    skip_unless_root!();
    let tb = Testbed::new("idroot");
    let core_before = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    for profile in ["default", r#"{"sandbox": {"paths": {}}}"#] {
        let o = root(&tb, &["exec", "--one-shot", profile, "--", "sh", "-c", WHO]);
        let (stdout, stderr) = text(&o);
        assert!(o.status.success(), "{profile}: {stdout}{stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines[0], "0", "uid 0 inside ({profile}): {stdout}");
        let (inside, outside, count) = uid_map(&stdout).expect("uid_map");
        assert_eq!((inside, count), (0, 65536), "{stdout}");
        assert!(
            outside >= 0x5000_0000,
            "uid 0 inside is an unprivileged host uid of pallium's range, not {outside}"
        );
        assert!(stdout.contains("shadow-denied"), "{profile}: {stdout}");
        assert!(stdout.contains("core-denied"), "{profile}: {stdout}");
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        core_before
    );

    // The opt-in: the host's real root again, named loudly by check.
    let opt = r#"{"sandbox": {"unsafe_host_root": true}}"#;
    let o = root(&tb, &["check", opt]);
    let (stdout, _) = text(&o);
    assert!(o.status.success() && stdout.contains("UNSAFE"), "{stdout}");
    let o = root(&tb, &["exec", "--one-shot", opt, "--", "sh", "-c", WHO]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    assert_eq!(
        uid_map(&stdout),
        Some((0, 0, 4294967295)),
        "the opt-in runs in the host's user namespace: {stdout}"
    );
    // Without capabilities even then, and /proc/sys stays read-only.
    assert!(stdout.contains("core-denied"), "{stdout}");
}

#[test]
fn unsafe_host_root_rootless_is_one_line_error() {
    skip_unless_root!();
    let tb = Testbed::new("idoptin");
    let opt = r#"{"sandbox": {"unsafe_host_root": true}}"#;
    for args in [
        vec!["exec", "--one-shot", opt, "--", "true"],
        vec!["check", opt],
    ] {
        let o = user(&tb, &args);
        let (stdout, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {stdout}{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(
            lines[0].contains("sandbox.unsafe_host_root needs root"),
            "{stderr}"
        );
    }
}

#[test]
fn a_writable_bind_is_the_owners_never_roots() {
    skip_unless_root!();
    let tb = Testbed::new("ididmap");
    let user = TestUser::get();
    let dir = std::env::temp_dir().join(format!("pallium-idmap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("theirs")).unwrap();
    std::fs::write(dir.join("old"), "old\n").unwrap();
    std::fs::write(dir.join("theirs/secret"), "other user's\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("theirs/secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    nix::unistd::chown(
        &dir.join("theirs/secret"),
        Some(4242.into()),
        Some(4242.into()),
    )
    .unwrap();
    // A directory of the test user's: the application writes there as it.
    for p in [dir.clone(), dir.join("old"), dir.join("theirs")] {
        nix::unistd::chown(&p, Some(user.uid().into()), Some(user.uid().into())).unwrap();
    }
    let prof = format!(
        r#"{{"sandbox": {{"paths": {{"bind": [["/data", "{}"]]}}}}}}"#,
        dir.display()
    );
    let o = root(
        &tb,
        &[
            "exec",
            "--one-shot",
            &prof,
            "--",
            "sh",
            "-c",
            "echo more >> /data/old && echo new > /data/new && stat -c '%u %n' /data/old /data/new",
        ],
    );
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    // Inside, the owner is the application's uid 0.
    assert_eq!(stdout, "0 /data/old\n0 /data/new\n", "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.join("old")).unwrap(),
        "old\nmore\n"
    );
    // On the host the new file is the directory owner's, never root's.
    assert_eq!(
        std::fs::metadata(dir.join("new")).unwrap().uid(),
        user.uid()
    );
    // Another user's file in the tree stays theirs, even for `--root`.
    let o = root(
        &tb,
        &[
            "exec",
            "--one-shot",
            "--root",
            &prof,
            "--",
            "sh",
            "-c",
            "cat /data/theirs/secret; echo x >> /data/theirs/secret; touch /data/mine && chown 42:42 /data/mine; echo done",
        ],
    );
    let (stdout, stderr) = text(&o);
    assert!(!stdout.contains("other user's"), "{stdout}{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.join("theirs/secret")).unwrap(),
        "other user's\n"
    );
    if let Ok(m) = std::fs::metadata(dir.join("mine")) {
        assert_eq!(
            m.uid(),
            user.uid(),
            "chown reached the disk: {stdout}{stderr}"
        );
    }

    // A directory the host's root owns is not the application's to write.
    let rootdir = dir.join("rootdir");
    std::fs::create_dir_all(&rootdir).unwrap();
    let rprof = format!(
        r#"{{"sandbox": {{"paths": {{"bind": [["/data", "{}"]]}}}}}}"#,
        rootdir.display()
    );
    let o = root(
        &tb,
        &[
            "exec",
            "--one-shot",
            &rprof,
            "--",
            "sh",
            "-c",
            "echo x > /data/f; echo rc=$?",
        ],
    );
    let (stdout, stderr) = text(&o);
    assert!(
        stdout.contains("rc=1") || stdout.contains("rc=2"),
        "{stdout}{stderr}"
    );
    assert!(!rootdir.join("f").exists());
    assert!(stderr.contains("owned by root"), "{stderr}");
    let check = root(&tb, &["check", &rprof]);
    assert!(
        text(&check).0.contains("owned by root, so not writable"),
        "{:?}",
        text(&check)
    );

    // What is root's on disk must never become a set-user-ID root program
    // for the host: chmod, creation with the bit, and `--root` (whose
    // capabilities could keep the bit or write file capabilities) all fail.
    let plant = "cp /bin/true /data/t;         chmod 4755 /data/t 2>&1 | tail -1; chmod g+s /data/t 2>&1 | tail -1;         /usr/bin/python3 -c \"import os; os.open('/data/c', os.O_CREAT | os.O_WRONLY, 0o4755)\" 2>&1 | tail -1;         setcap cap_sys_admin+ep /data/t 2>&1 | tail -1; true";
    for root_flag in [false, true] {
        let mut args = vec!["exec", "--one-shot"];
        if root_flag {
            args.push("--root");
        }
        args.extend([prof.as_str(), "--", "sh", "-c", plant]);
        let o = root(&tb, &args);
        let (stdout, stderr) = text(&o);
        for f in ["t", "c"] {
            if let Ok(m) = std::fs::metadata(dir.join(f)) {
                assert_eq!(
                    m.mode() & 0o6000,
                    0,
                    "--root {root_flag}: {f} has a set-ID bit on the host: {stdout}{stderr}"
                );
            }
        }
        let caps = std::process::Command::new("getfattr")
            .args(["-n", "security.capability"])
            .arg(dir.join("t"))
            .output();
        if let Ok(c) = caps {
            assert!(
                !String::from_utf8_lossy(&c.stdout).contains("security.capability"),
                "--root {root_flag}: file capabilities on the host: {stdout}{stderr}"
            );
        }
        assert!(
            stdout.contains("Operation not permitted"),
            "--root {root_flag}: {stdout}{stderr}"
        );
        let _ = std::fs::remove_file(dir.join("t"));
        let _ = std::fs::remove_file(dir.join("c"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The original's `extra/scripts/wireshark`, with `wireshark` replaced by a
/// `tcpdump -r` of the capture.
const WIRESHARK: &str = r#"#!/bin/sh
nft add table filter
nft add chain filter input \{ type filter hook input priority 0\; \}
nft add chain filter output \{ type filter hook output priority 0\; \}
nft add rule filter output skuid == 0 ct mark set 1
nft add rule filter input ct mark 1 log group 1337
nft add rule filter output ct mark 1 log group 1337

f="$(mktemp --suffix=.pcap)"
echo "Starting capture ..."
tcpdump --immediate-mode -Uni nflog:1337 -w "$f" &
sleep 2 # Give tcpdump some time to start
t=$!
echo "Running command ..."
$@
echo "Finalizing capture ..."
sleep 2
kill $t;
tcpdump -nr "$f" 2>/dev/null | grep -c 'IP .* > .*'
"#;

/// `echo '{}' | pallium exec --root - ./wireshark curl …`: the capture shows
/// the application's packets; the same `--root` cannot touch the host.
fn wireshark(tb: &Testbed, as_user: bool, profile: &str) {
    // Not /tmp: the sandbox's /tmp is its own.
    let dir = std::path::Path::new("/var/tmp").join(format!(
        "pallium-wireshark-{}-{}",
        std::process::id(),
        as_user
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("wireshark");
    std::fs::write(&script, WIRESHARK).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = script.display().to_string();
    let url = format!("http://{}/", tb.web_v4());
    let inner = format!(
        "{s} curl -s -m 10 {url}; echo; echo MOUNT $(mount -t tmpfs none /mnt 2>&1 | head -1)"
    );
    let args = [
        "exec",
        "--one-shot",
        "--root",
        profile,
        "--",
        "sh",
        "-c",
        &inner,
    ];
    // `-`: the profile comes from standard input, as in the original's docs.
    let mode = if as_user { Mode::Rootless } else { Mode::Root };
    let mut cmd = pal(tb, mode, &args);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pallium");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(if profile == "-" { b"{}" } else { b"" });
    }
    let o = child.wait_with_output().expect("wait");
    let _ = std::fs::remove_dir_all(&dir);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "user {as_user}: {stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let captured: usize = lines
        .iter()
        .rev()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        captured >= 3,
        "user {as_user}: the capture holds the application's packets: {stdout}{stderr}"
    );
    // The web host answered (with the address it saw).
    assert!(
        lines.iter().any(|l| l.parse::<std::net::IpAddr>().is_ok()),
        "user {as_user}: {stdout}"
    );
    // Capabilities over its own namespaces only: no mount.
    let mount = lines.iter().find(|l| l.starts_with("MOUNT")).unwrap();
    assert!(
        mount.contains("ermission denied") || mount.contains("not permitted"),
        "user {as_user}: {mount}"
    );
}

#[test]
fn wireshark_script_root_and_rootless() {
    skip_unless_root!();
    if Command::new("tcpdump").arg("--version").output().is_err() {
        panic!("tcpdump is missing: .ci/run installs it");
    }
    let tb = Testbed::new("idwire");
    let proxy = tb.start_microsocks();
    let prof = format!(
        r#"{{"network": {{"chain": [{{"type": "socks", "address": "{}"}}]}}}}"#,
        proxy.addr()
    );
    // The original script as the original documents it, and behind a hop.
    wireshark(&tb, false, "-");
    wireshark(&tb, false, &prof);
    if !tun_usable() {
        pallium_tests::skip("rootless half: /dev/net/tun is not world read-write");
        return;
    }
    // Rootless: Debian's tcpdump, as uid 0, drops to its `tcpdump` user
    // (`setgroups`, `chown` of the capture), which no rootless user
    // namespace has (`unshare -r tcpdump -w f` fails the same way); the
    // script's nft half is what needs the capabilities: its rules count
    // the application's packets.
    let inner = format!(
        "nft add table filter && \
         nft add chain filter output '{{ type filter hook output priority 0; }}' && \
         nft add rule filter output skuid == 0 counter && \
         curl -s -m 10 http://{}/ && echo && nft list chain filter output",
        tb.web_v4()
    );
    // The empty chain (pasta's namespace, owned by the application's user
    // namespace) and behind a hop.
    for p in ["{}", prof.as_str()] {
        let args = ["exec", "--one-shot", "--root", p, "--", "sh", "-c", &inner];
        let o = user(&tb, &args);
        let (stdout, stderr) = text(&o);
        assert!(o.status.success(), "{p}: {stdout}{stderr}");
        let packets: u64 = stdout
            .split("counter packets ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        assert!(
            packets >= 3,
            "{p}: the rule counted the curl: {stdout}{stderr}"
        );
    }
}

/// "A profile that asks for a hidden path explicitly gets it (and `check`
/// says what it exposes)": a socket under `/run/user`, hidden in every view,
/// is there when the profile whitelists it by name.
#[test]
fn a_hidden_path_named_by_the_profile_is_exposed_and_check_says_so() {
    skip_unless_root!();
    let tb = Testbed::new("idexpose");
    let dir = std::path::PathBuf::from(format!("/run/user/{}", 4_000_000 + std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("bus");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let s = sock.display().to_string();
    let probe = format!("test -S {s} && echo present || echo absent");
    let plain = root(&tb, &["exec", "--one-shot", "{}", "--", "sh", "-c", &probe]);
    let named = format!(r#"{{"sandbox": {{"paths": {{"whitelist": ["{s}"]}}}}}}"#);
    let shown = root(
        &tb,
        &["exec", "--one-shot", &named, "--", "sh", "-c", &probe],
    );
    let check = root(&tb, &["check", &named]);
    drop(listener);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(text(&plain).0, "absent\n", "{:?}", text(&plain));
    assert_eq!(text(&shown).0, "present\n", "{:?}", text(&shown));
    let (stdout, _) = text(&check);
    assert!(
        stdout.contains("exposes /run/user (") && stdout.contains(&format!("whitelist {s}")),
        "{stdout}"
    );
}

/// Host Unix sockets outside the directories every view hides — an ssh
/// ControlMaster in `~/.ssh`, a world-writable service socket in `/var/lib`
/// — are hidden too (they were bound when the sandbox was set up), root and
/// rootless; the profile can still name one.
#[test]
fn bound_host_sockets_anywhere_are_hidden() {
    skip_unless_root!();
    let tb = Testbed::new("idsock");
    let dir = std::path::PathBuf::from(format!("/var/lib/pallium-sock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.join("control");
    // Bound in the testbed's host namespace, where pallium starts.
    let s = sock.display().to_string();
    let mut listener = tb
        .host_exec([
            "/usr/bin/python3",
            "-c",
            &format!(
                "import socket, os, time\ns = socket.socket(socket.AF_UNIX)\ns.bind('{s}')\nos.chmod('{s}', 0o777)\ns.listen(4)\nprint('ready', flush=True)\ntime.sleep(60)\n"
            ),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(listener.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let probe = format!(
        "/usr/bin/python3 -c \"import socket; s = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect('{s}'); print('connected')\nexcept OSError as e:\n    print('refused', e.errno)\""
    );
    let named =
        format!(r#"{{"sandbox": {{"paths": {{"mode": "append", "whitelist": ["{s}"]}}}}}}"#);
    let outs: Vec<(String, Output)> = vec![
        (
            "root default".into(),
            root(&tb, &["exec", "--one-shot", "{}", "--", "sh", "-c", &probe]),
        ),
        (
            "root binds".into(),
            root(
                &tb,
                &[
                    "exec",
                    "--one-shot",
                    r#"{"sandbox": {"paths": {"whitelist": ["/var/lib"]}}}"#,
                    "--",
                    "sh",
                    "-c",
                    &probe,
                ],
            ),
        ),
        (
            "root named".into(),
            root(
                &tb,
                &["exec", "--one-shot", &named, "--", "sh", "-c", &probe],
            ),
        ),
    ];
    let mut outs = outs;
    if tun_usable() {
        outs.push((
            "rootless default".into(),
            user(&tb, &["exec", "--one-shot", "{}", "--", "sh", "-c", &probe]),
        ));
    }
    let _ = listener.kill();
    let _ = listener.wait();
    let _ = std::fs::remove_dir_all(&dir);
    for (what, o) in &outs {
        let (stdout, stderr) = text(o);
        let want = if what.ends_with("named") {
            "connected"
        } else {
            "refused"
        };
        assert!(stdout.starts_with(want), "{what}: {stdout}{stderr}");
    }
}
