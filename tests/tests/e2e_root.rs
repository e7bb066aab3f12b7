//! End to end, as root, on the fake internet: `pallium` started inside the
//! testbed's host namespace reaches the web host through its own namespace,
//! names resolve through the host's resolvers, sessions work, and nothing is
//! left behind — also when a pallium process is killed with SIGKILL.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    out, pal, pallium, profile_dir_name, profile_file, text, wait_clean, wait_clean_except, Mode,
};
use pallium_tests::{skip_unless_root, Resolver, Testbed, WEB4_NAME, WEB6_NAME};
use proto::policy::Role;

/// Wait until `pallium exec PROFILE -- true` works in session `index`.
fn wait_session(tb: &Testbed, profile: &str, index: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if out(pal(
            tb,
            Mode::Root,
            &["exec", "-s", index, profile, "--", "true"],
        ))
        .status
        .success()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    panic!("session {index} of {profile} never became ready");
}

/// A running session of a profile (named `name`) whose command sleeps: the
/// profile's path and the `pallium run`, once the session answers.
fn sleeping_session(tb: &Testbed, name: &str) -> (String, Child) {
    let prof = profile_file(name, r#"{"run": {"command": ["sleep", "infinity"]}}"#);
    let prof = prof.to_str().unwrap().to_string();
    let run = spawn_run(tb, &["run", &prof]);
    wait_session(tb, &prof, "0");
    (prof, run)
}

/// `pallium audit PROFILE`, which must find everything within policy, and
/// the pid it shows for `role`.
fn audit_pid(tb: &Testbed, prof: &str, role: &str) -> (String, i32) {
    let o = out(pal(tb, Mode::Root, &["audit", prof]));
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    let pid = stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(role))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {role} in the audit: {stdout}"));
    (stdout, pid)
}

fn spawn_run(tb: &Testbed, args: &[&str]) -> Child {
    pal(tb, Mode::Root, args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn run")
}

#[test]
fn exec_reaches_the_web_host_by_name_over_ipv4_and_ipv6() {
    skip_unless_root!();
    let tb = Testbed::new("e2eweb");
    let url4 = format!("http://{WEB4_NAME}/");
    let url6 = format!("http://{WEB6_NAME}/");
    let script = format!("curl -sS -4 --max-time 5 {url4}; echo; curl -sS -6 --max-time 5 {url6}");
    let o = out(pal(
        &tb,
        Mode::Root,
        &["exec", "--one-shot", "default", "--", "sh", "-c", &script],
    ));
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    // Masqueraded: the web host sees the host namespace's addresses.
    assert_eq!(
        lines,
        [tb.host_v4().to_string(), tb.host_v6().to_string()],
        "{stderr}"
    );
    // The names were resolved through the host's resolver, from the host's address.
    let q = tb.dns_queries();
    assert!(
        q.iter()
            .any(|q| q.name == WEB4_NAME && q.client == std::net::IpAddr::V4(tb.host_v4())),
        "{q:?}"
    );
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

#[test]
fn a_loopback_resolver_on_the_host_is_relayed() {
    skip_unless_root!();
    let tb = Testbed::builder("e2estub")
        .resolver(Resolver::Loopback)
        .build();
    let url = format!("http://{WEB4_NAME}/");
    let o = out(pal(
        &tb,
        Mode::Root,
        &[
            "exec",
            "--one-shot",
            "default",
            "--",
            "curl",
            "-sS",
            "--max-time",
            "5",
            &url,
        ],
    ));
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), tb.host_v4().to_string());
    assert!(
        tb.stub_queries().iter().any(|q| q.name == WEB4_NAME),
        "{:?}",
        tb.stub_queries()
    );
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

/// The DNS relay's threads (and the per-query threads they start) hold no
/// capability, and once the chain is up the netbroker's main thread holds
/// only what teardown needs; teardown still leaves nothing.
#[test]
fn the_dns_relay_threads_hold_no_capability() {
    skip_unless_root!();
    let tb = Testbed::builder("e2erelaycaps")
        .resolver(Resolver::Loopback)
        .build();
    let (prof, mut s) = sleeping_session(&tb, "e2erelaycaps");
    let prof = prof.as_str();
    let url = format!("http://{WEB4_NAME}/");
    let o = out(pal(
        &tb,
        Mode::Root,
        &["exec", prof, "--", "curl", "-sS", "--max-time", "5", &url],
    ));
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    let (_, netbroker) = audit_pid(&tb, prof, "netbroker");
    let names: Vec<String> = proto::policy::thread_statuses(netbroker)
        .iter()
        .map(|t| t["Name"].clone())
        .collect();
    for relay in ["dns-udp", "dns-tcp"] {
        assert!(
            names.iter().any(|n| n == relay),
            "{relay} missing: {names:?}"
        );
    }
    common::assert_holds_after_setup(netbroker, Role::Netbroker, true);
    for t in proto::policy::thread_statuses(netbroker) {
        if t["Name"].starts_with("dns-") {
            for set in ["CapEff", "CapPrm", "CapBnd"] {
                assert_eq!(t[set], "0000000000000000", "{} {set}", t["Name"]);
            }
        }
    }
    assert!(out(pal(&tb, Mode::Root, &["stop", prof])).status.success());
    s.wait().unwrap();
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

#[test]
fn exit_codes_stdin_and_the_sandbox_basics() {
    skip_unless_root!();
    let tb = Testbed::new("e2ecodes");
    let code = |args: &[&str]| out(pal(&tb, Mode::Root, args)).status.code();
    assert_eq!(
        code(&["exec", "--one-shot", "default", "--", "sh", "-c", "exit 7"]),
        Some(7)
    );
    assert_eq!(
        code(&[
            "exec",
            "--one-shot",
            "default",
            "--",
            "sh",
            "-c",
            "kill -9 $$"
        ]),
        Some(137)
    );
    assert_eq!(
        code(&["exec", "--one-shot", "default", "--", "no-such-command-xyz"]),
        Some(127)
    );
    // stdin is piped through untouched.
    let mut c = pal(
        &tb,
        Mode::Root,
        &[
            "exec",
            "--one-shot",
            "default",
            "--",
            "sh",
            "-c",
            "tr a-z A-Z; echo $$; hostname; ls /sys/class/net",
        ],
    );
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let o = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "HELLO");
    assert!(
        lines[1].parse::<u32>().unwrap() < 10,
        "own PID namespace: {stdout}"
    );
    assert_eq!(lines[2], "pallium");
    assert_eq!(
        &lines[3..],
        ["eth0", "lo"],
        "own network namespace: {stdout}"
    );
    // An inline profile's hostname.
    let o = out(pal(
        &tb,
        Mode::Root,
        &[
            "exec",
            r#"{"sandbox": {"hostname": "box"}}"#,
            "--",
            "hostname",
        ],
    ));
    assert_eq!(text(&o).0.trim(), "box");
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

#[test]
fn run_exec_list_stop_and_two_concurrent_sessions() {
    skip_unless_root!();
    let tb = Testbed::new("e2esess");
    let prof = profile_file("e2esess", r#"{"run": {"command": ["sleep", "infinity"]}}"#);
    let prof = prof.to_str().unwrap();
    let mut s0 = spawn_run(&tb, &["run", prof]);
    wait_session(&tb, prof, "0");
    // A second `run` without --new-session is refused.
    let o = out(pal(&tb, Mode::Root, &["run", prof]));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("--new-session"), "{}", text(&o).1);
    let mut s1 = spawn_run(&tb, &["run", "--new-session", prof]);
    wait_session(&tb, prof, "1");

    let o = out(pal(
        &tb,
        Mode::Root,
        &["exec", prof, "--", "sh", "-c", "echo $$; hostname; exit 5"],
    ));
    assert_eq!(o.status.code(), Some(5));
    let (stdout, _) = text(&o);
    assert!(
        stdout.lines().next().unwrap().parse::<u32>().unwrap() < 20,
        "{stdout}"
    );
    let list = text(&out(pal(&tb, Mode::Root, &["list"]))).0;
    let mine: Vec<&str> = list.lines().filter(|l| l.starts_with(prof)).collect();
    assert_eq!(mine.len(), 2, "{list}");
    assert!(
        mine[0].contains("| 0 ") && mine[1].contains("| 1 "),
        "{list}"
    );
    // An index that does not exist.
    let o = out(pal(
        &tb,
        Mode::Root,
        &["exec", "-s", "7", prof, "--", "true"],
    ));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("session 7") && text(&o).1.contains("0, 1"),
        "{}",
        text(&o).1
    );

    assert!(out(pal(&tb, Mode::Root, &["stop", prof])).status.success());
    assert!(out(pal(&tb, Mode::Root, &["stop", "-s", "1", prof]))
        .status
        .success());
    assert_eq!(s0.wait().unwrap().code(), Some(143));
    assert_eq!(s1.wait().unwrap().code(), Some(143));
    let o = out(pal(&tb, Mode::Root, &["exec", prof, "--", "true"]));
    assert!(text(&o).1.contains("pallium run"), "{}", text(&o).1);
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
    assert!(!std::path::Path::new("/run/pallium")
        .join(profile_dir_name(std::path::Path::new(prof)))
        .exists());
}

/// Every process of a session, read from `/proc/PID/status` by the test itself.
#[test]
fn audit_matches_proc_status_and_the_policy() {
    skip_unless_root!();
    let tb = Testbed::new("e2eaudit");
    let prof = profile_file(
        "e2eaudit",
        r#"{"run": {"command": ["sh", "-c", "sleep infinity & wait"]}}"#,
    );
    let prof = prof.to_str().unwrap();
    let mut s = spawn_run(&tb, &["run", prof]);
    wait_session(&tb, prof, "0");
    let o = out(pal(&tb, Mode::Root, &["audit", prof]));
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("within policy"), "{stdout}");
    let procs: Vec<(u32, String)> = stdout
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.parse().ok()?, w.next()?.to_string()))
        })
        .collect();
    let roles: Vec<&str> = procs.iter().map(|(_, r)| r.as_str()).collect();
    for r in ["supervisor", "netbroker", "sandboxer", "init", "app"] {
        assert!(roles.contains(&r), "{r} missing: {stdout}");
    }
    assert!(
        roles.iter().filter(|r| **r == "app").count() >= 2,
        "the app's child too: {stdout}"
    );
    for (pid, role) in &procs {
        let status = common::proc_status(*pid as i32);
        let eff = proto::policy::status_mask(&status, "CapEff");
        let bnd = proto::policy::status_mask(&status, "CapBnd");
        assert_eq!(status["NoNewPrivs"], "1", "{role} {pid}");
        const NET_ADMIN: u64 = 1 << 12;
        match role.as_str() {
            "supervisor" | "init" | "app" => assert_eq!(eff, 0, "{role} holds {eff:#x}"),
            "sandboxer" => assert_eq!(
                eff & NET_ADMIN,
                0,
                "sandboxer must never hold CAP_NET_ADMIN"
            ),
            // Once the chain is up: what teardown needs, in every thread
            // (the DNS relay's threads hold nothing).
            "netbroker" => {
                assert_ne!(eff & NET_ADMIN, 0);
                common::assert_holds_after_setup(*pid as i32, Role::Netbroker, true);
            }
            _ => {}
        }
        if role == "app" {
            assert_eq!(bnd, 0, "the app can never regain a capability");
        }
    }
    assert!(out(pal(&tb, Mode::Root, &["stop", prof])).status.success());
    s.wait().unwrap();
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

/// Pids of processes named `comm` that carry this testbed's tag.
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

/// Pids of this testbed's pallium processes (and their application).
fn tagged_any(tb: &Testbed) -> Vec<u32> {
    ["pallium", "pallium-netbrok", "pallium-sandbox", "sleep"]
        .iter()
        .flat_map(|c| tagged(tb, c))
        .collect()
}

/// What each of `pids` is doing, for a failure message: its status lines
/// that say who it is (parent, namespaced pids, ids, capabilities), where it
/// sleeps, its kernel stack and what its descriptors are.
fn describe(pids: &[u32]) -> String {
    let mut s = String::new();
    for pid in pids {
        let read =
            |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap_or_default();
        let status: Vec<String> = read("status")
            .lines()
            .filter(|l| {
                [
                    "State", "PPid", "NSpid", "Uid", "Gid", "CapEff", "CapPrm", "CapBnd", "Threads",
                ]
                .iter()
                .any(|k| l.starts_with(&format!("{k}:")))
            })
            .map(str::to_string)
            .collect();
        let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.flatten()
                    .map(|e| {
                        let to = std::fs::read_link(e.path()).unwrap_or_default();
                        format!("{}->{}", e.file_name().to_string_lossy(), to.display())
                    })
                    .collect()
            })
            .unwrap_or_default();
        s += &format!(
            "pid {pid} {}: {}; wchan {}; syscall {}; fds {}\nstack:\n{}\n",
            read("cmdline").replace('\0', " ").trim(),
            status.join("; "),
            read("wchan"),
            read("syscall").trim(),
            fds.join(" "),
            read("stack")
        );
        let children: Vec<u32> = read(&format!("task/{pid}/children"))
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .collect();
        if !children.is_empty() {
            s += &format!("children of {pid}:\n{}", describe(&children));
        }
    }
    s
}

/// SIGKILL of the supervisor, the netbroker or the sandboxer, at several
/// points of startup and once the session runs, leaves nothing behind; the
/// next run of the same profile works.
#[test]
fn kill_9_of_any_process_at_any_time_leaves_nothing() {
    skip_unless_root!();
    let tb = Testbed::new("e2ekill");
    let prof = profile_file("e2ekill", r#"{"run": {"command": ["sleep", "infinity"]}}"#);
    let prof = prof.to_str().unwrap();
    let mut rounds = 0;
    for victim in ["pallium", "pallium-netbrok", "pallium-sandbox"] {
        for delay_ms in [0u64, 2, 5, 10, 25, 200] {
            let mut run = spawn_run(&tb, &["run", prof]);
            let pid = if victim == "pallium" {
                Some(run.id())
            } else {
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    // The sandboxer's init shares its name: the oldest is the sandboxer.
                    if let Some(p) = tagged(&tb, victim).into_iter().min() {
                        break Some(p);
                    }
                    if Instant::now() > deadline || run.try_wait().unwrap().is_some() {
                        break None;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            };
            std::thread::sleep(Duration::from_millis(delay_ms));
            if let Some(pid) = pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            // The supervisor notices and tears down (or was the victim).
            let deadline = Instant::now() + Duration::from_secs(10);
            while run.try_wait().unwrap().is_none() {
                assert!(
                    Instant::now() < deadline,
                    "{victim} killed after {delay_ms} ms: the session did not end\n{}",
                    describe(&tagged_any(&tb))
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            if victim == "pallium-netbrok" {
                // The supervisor runs as the session's unprivileged uid by
                // now and may not remove its directory from root's runtime
                // directory; the netbroker, which would, is the victim: the
                // next pallium command (here `list`) sweeps it.
                assert!(out(pal(&tb, Mode::Root, &["list"])).status.success());
            }
            // The session's directory: removed by whoever survives.
            let sdir = Path::new("/run/pallium").join(profile_dir_name(Path::new(prof)));
            let deadline = Instant::now() + Duration::from_secs(5);
            while sdir.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(
                !sdir.exists(),
                "{} left after killing {victim} at {delay_ms} ms",
                sdir.display()
            );
            if victim == "pallium-netbrok" {
                // Only a privileged process can write the host's forwarding
                // sysctls back, and the netbroker was it: the next pallium
                // command (here `list`) restores them.
                let sysctl_only = |l: &String| {
                    l.contains("forwarding") || l.contains("ip_forward") || l.contains("anycast")
                };
                let left = wait_clean_except(&tb, sysctl_only);
                assert!(left.iter().all(sysctl_only), "{left:?}");
                // `list` leaves them while a session of this network
                // namespace may be alive, and one whose directory has no
                // namespace record yet counts, to be safe: another test's
                // session starting meanwhile (the tests run in parallel
                // and share /run/pallium). Then the next command restores.
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    assert!(out(pal(&tb, Mode::Root, &["list"])).status.success());
                    if tb.leftovers().is_empty() || Instant::now() > deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            let left = wait_clean(&tb);
            assert!(
                left.is_empty(),
                "{victim} killed after {delay_ms} ms: {left:?}\n{}",
                describe(&tagged_any(&tb))
            );
            for comm in ["pallium", "pallium-netbrok", "pallium-sandbox", "sleep"] {
                let left = tagged(&tb, comm);
                assert!(
                    left.is_empty(),
                    "{comm} left after killing {victim} at {delay_ms} ms:\n{}",
                    describe(&left)
                );
            }
            rounds += 1;
        }
    }
    // And the profile runs again.
    let o = out(pal(
        &tb,
        Mode::Root,
        &["exec", "--one-shot", prof, "--", "true"],
    ));
    assert!(o.status.success(), "{}", text(&o).1);
    assert_eq!(rounds, 18);
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

#[test]
fn the_setuid_bit_is_refused() {
    skip_unless_root!();
    let dir = std::env::temp_dir().join(format!("pallium-suid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for b in common::binaries() {
        let mode = if b.ends_with("pallium") {
            0o4755
        } else {
            0o755
        };
        pallium_tests::copy_executable(&b, &dir.join(b.file_name().unwrap()), mode);
    }
    let exe = dir.join("pallium");
    let o = Command::new(&exe)
        .args(["exec", "--one-shot", "default", "--", "true"])
        .output()
        .unwrap();
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr.contains("setuid"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// SIGTERM and SIGINT sent to pallium reach the command, whose death by that
/// signal becomes pallium's exit code (128+N).
#[test]
fn signals_reach_the_command() {
    skip_unless_root!();
    let tb = Testbed::new("e2esig");
    for (sig, code) in [
        (nix::sys::signal::Signal::SIGTERM, 143),
        (nix::sys::signal::Signal::SIGINT, 130),
    ] {
        let mut c = pal(
            &tb,
            Mode::Root,
            &["exec", "--one-shot", "default", "--", "sleep", "30"],
        );
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Signal once the command runs (its sleep carries the testbed's tag).
        let deadline = Instant::now() + Duration::from_secs(10);
        while tagged(&tb, "sleep").is_empty() {
            assert!(Instant::now() < deadline, "the command never started");
            std::thread::sleep(Duration::from_millis(5));
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(code), "{sig:?}: {}", text(&o).1);
    }
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

/// A missing helper binary is named, with where pallium looked for it.
#[test]
fn a_missing_helper_is_named() {
    skip_unless_root!();
    let dir = std::env::temp_dir().join(format!("pallium-nohelper-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    pallium_tests::copy_executable(&pallium(), &dir.join("pallium"), 0o755);
    let o = Command::new(dir.join("pallium"))
        .args(["exec", "--one-shot", "default", "--", "true"])
        .output()
        .unwrap();
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr.contains("pallium-netbroker is missing") && stderr.contains(dir.to_str().unwrap()),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Root mode without root: once the session runs, its supervisor is the
/// session's own unprivileged uid (all four uids, no groups, not dumpable),
/// `audit` says so, and root's exec and stop still reach it; its directory
/// goes when it ends.
#[test]
fn the_root_mode_supervisor_drops_uid_0() {
    skip_unless_root!();
    let tb = Testbed::new("e2esupuid");
    let (prof, mut s) = sleeping_session(&tb, "e2esupuid");
    let prof = prof.as_str();
    let (stdout, sup) = audit_pid(&tb, prof, "supervisor");
    let uids = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("uids real/effective/saved/fs: "))
        .unwrap_or_else(|| panic!("no supervisor uids in {stdout}"));
    let uids: Vec<u32> = uids.split('/').map(|u| u.parse().unwrap()).collect();
    assert_eq!(uids.len(), 4, "{stdout}");
    assert!(uids.iter().all(|u| *u == uids[0] && *u != 0), "{stdout}");
    // What the kernel says, read by the test itself.
    let status = common::proc_status(sup);
    let field =
        |k: &str| -> Vec<String> { status[k].split_whitespace().map(String::from).collect() };
    let want = vec![uids[0].to_string(); 4];
    assert_eq!(field("Uid"), want, "{status:?}");
    assert_eq!(field("Gid"), want, "{status:?}");
    assert_eq!(field("Groups"), Vec::<String>::new(), "{status:?}");
    assert_eq!(field("CapEff"), vec!["0000000000000000"], "{status:?}");
    // Not dumpable: the files of its /proc directory are root's, not its uid's.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(format!("/proc/{sup}/fd")).unwrap().uid(),
        0
    );
    // Root's clients still get through; the sandbox's view is unchanged.
    let o = out(pal(&tb, Mode::Root, &["exec", prof, "--", "id", "-u"]));
    assert_eq!(text(&o).0.trim(), "0", "{:?}", text(&o));
    assert!(out(pal(&tb, Mode::Root, &["stop", prof])).status.success());
    assert_eq!(s.wait().unwrap().code(), Some(143));
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
    assert!(!Path::new("/run/pallium")
        .join(profile_dir_name(Path::new(prof)))
        .exists());
}
