//! The sandboxer binary driven over its fd-3 channel the way the supervisor
//! drives it. Needs root (namespaces, mounts); skips with a message otherwise.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use proto::policy::{Cap, Role};
use proto::sandbox::{ExitStatus, SandboxEvent, SandboxRequest, Spawn};
use proto::Fd;

mod common;

use common::*;

#[test]
fn setup_builds_namespaces_and_the_default_file_view() {
    if !root() {
        return;
    }
    let host_resolv = std::fs::read("/etc/resolv.conf").ok();
    let host_hosts = std::fs::read("/etc/hosts").ok();
    let mounts_before = mountinfo_len();
    let mut sb = Sandboxer::root_mode();
    let init = sb.setup(new_netns(), None, 0, 0);
    assert!(init > 1);
    let (status, out) = sb.run(
        1,
        "echo $$; hostname; pwd; cat /etc/resolv.conf; cat /etc/hosts; ls /sys/class/net; \
         ip -o link | wc -l; ls /proc | grep -c '^[0-9]'; test -d /usr/bin && echo usr-ok",
    );
    assert_eq!(status, ExitStatus::Code(0), "{out}");
    let mut lines = out.lines();
    let pid: i32 = lines.next().unwrap().parse().unwrap();
    assert!((2..10).contains(&pid), "pid in the sandbox: {pid}\n{out}");
    assert_eq!(lines.next(), Some("pallium"));
    assert_eq!(lines.next(), Some("/"), "missing cwd falls back to /");
    let rest: Vec<&str> = lines.collect();
    let rest = rest.join("\n") + "\n";
    assert!(
        rest.starts_with(&format!("{RESOLV}{HOSTS}lo\n1\n")),
        "{out}"
    );
    let procs: usize = rest.lines().nth(6).unwrap().parse().unwrap();
    assert!(procs <= 4, "/proc shows only the sandbox: {out}");
    assert!(rest.contains("usr-ok"), "{out}");
    // The host's files never change.
    assert_eq!(std::fs::read("/etc/resolv.conf").ok(), host_resolv);
    assert_eq!(std::fs::read("/etc/hosts").ok(), host_hosts);
    assert!(sb.shutdown().success());
    assert!(
        !Path::new(&format!("/proc/{init}")).exists(),
        "init survived"
    );
    assert_eq!(mountinfo_len(), mounts_before, "host mounts changed");
}

#[test]
fn exit_codes_and_signals_are_reported() {
    if !root() {
        return;
    }
    let mut sb = Sandboxer::root_mode();
    sb.setup(new_netns(), None, 0, 0);
    assert_eq!(sb.run(1, "exit 3").0, ExitStatus::Code(3));
    assert_eq!(sb.run(2, "kill -9 $$").0, ExitStatus::Signal(9));
    let (_pid, _r) = sb.spawn_sh(4, "sleep 100", false).unwrap();
    sb.chan
        .send(SandboxRequest::Signal { id: 4, signal: 15 })
        .unwrap();
    assert_eq!(sb.exited(4), ExitStatus::Signal(15));
    assert!(sb.shutdown().success());
}

#[test]
fn app_has_no_capabilities_no_new_privs_and_default_signals() {
    if !root() {
        return;
    }
    let mut sb = Sandboxer::root_mode();
    sb.setup(new_netns(), None, 0, 0);
    let (status, out) = sb.run(1, "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|SigBlk|SigIgn)' /proc/self/status");
    assert_eq!(status, ExitStatus::Code(0));
    for line in out.lines() {
        let (key, val) = line.split_once(':').unwrap();
        let want = if key == "NoNewPrivs" {
            "1"
        } else {
            "0000000000000000"
        };
        assert_eq!(val.trim(), want, "{out}");
    }
    assert!(sb.shutdown().success());
}

#[test]
fn exec_failure_is_reported_as_failed() {
    if !root() {
        return;
    }
    let mut sb = Sandboxer::root_mode();
    sb.setup(new_netns(), None, 0, 0);
    let (r, w) = nix::unistd::pipe().unwrap();
    drop(r);
    sb.chan
        .send(SandboxRequest::Spawn(Spawn {
            id: 7,
            argv: vec!["pallium-no-such-command".into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: None,
            stdio: [
                Fd(w.try_clone().unwrap()),
                Fd(w.try_clone().unwrap()),
                Fd(w),
            ],
            tty: false,
            root: false,
            netns: None,
        }))
        .unwrap();
    match sb.chan.recv().unwrap() {
        SandboxEvent::Failed { id: Some(7), error } => assert_eq!(
            error.chain,
            vec!["cannot run 'pallium-no-such-command': No such file or directory"]
        ),
        other => panic!("{other:?}"),
    }
    // The sandbox is still usable afterwards.
    assert_eq!(sb.run(8, "true").0, ExitStatus::Code(0));
    assert!(sb.shutdown().success());
}

#[test]
fn list_pids_and_shutdown_leave_nothing_behind() {
    if !root() {
        return;
    }
    let mut sb = Sandboxer::root_mode();
    let init = sb.setup(new_netns(), None, 0, 0);
    let (app, _r) = sb.spawn_sh(1, "sleep 100 & sleep 100", false).unwrap();
    // Until the shell has started both sleeps (and exec'd into the second).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let pids = loop {
        let pids = sb.pids();
        let apps = pids.iter().filter(|p| p.role == "app").count();
        if apps == 3 || std::time::Instant::now() > deadline {
            break pids;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let role = |r: &str| {
        pids.iter()
            .filter(|p| p.role == r)
            .map(|p| p.pid)
            .collect::<Vec<_>>()
    };
    assert_eq!(role("sandboxer"), vec![sb.proc.id() as i32]);
    assert_eq!(role("init"), vec![init]);
    let apps = role("app");
    assert!(apps.contains(&app) && apps.len() == 3, "{pids:?}");
    let st = sb.shutdown();
    assert!(st.success());
    for pid in apps.iter().chain([&init]) {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{pid} survived"
        );
    }
}

#[test]
fn eof_on_the_channel_ends_the_sandbox() {
    if !root() {
        return;
    }
    let mut sb = Sandboxer::root_mode();
    let init = sb.setup(new_netns(), None, 0, 0);
    nix::sys::socket::shutdown(sb.chan.fd().as_raw_fd(), nix::sys::socket::Shutdown::Both).unwrap();
    assert!(sb.proc.wait().unwrap().success());
    assert!(!Path::new(&format!("/proc/{init}")).exists());
}

/// A supervisor that dies right after asking for a spawn (in root mode its
/// parent-death signal cannot reach the root sandboxer): the answer cannot
/// be sent, and the sandboxer must still end the sandbox. It used to record
/// the child only after the answer, so the dying init waited for that child
/// to be reaped and the sandboxer for the init, for ever.
#[test]
fn a_supervisor_gone_before_the_spawn_answer_leaves_nothing() {
    if !root() {
        return;
    }
    let mut sb = Sandboxer::root_mode();
    let init = sb.setup(new_netns(), None, 0, 0);
    let null = || Fd(std::fs::File::open("/dev/null").unwrap().into());
    sb.chan
        .send(SandboxRequest::Spawn(Spawn {
            id: 1,
            argv: vec!["sleep".into(), "100".into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: None,
            stdio: [null(), null(), null()],
            tty: false,
            root: false,
            netns: None,
        }))
        .unwrap();
    // The request stays readable; every answer to it fails (EPIPE).
    nix::sys::socket::shutdown(sb.chan.fd().as_raw_fd(), nix::sys::socket::Shutdown::Both).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while sb.proc.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the sandboxer did not end: {}",
            std::fs::read_to_string(format!("/proc/{}/stack", sb.proc.id())).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !Path::new(&format!("/proc/{init}")).exists(),
        "the init survived"
    );
}

#[test]
fn rootless_app_runs_as_the_callers_uid() {
    if !root() {
        return;
    }
    if !proto::policy::allowed(Role::Sandboxer).contains(&Cap::Setfcap) {
        // The kernel lets a new user namespace map the parent's uid 0 only if
        // its creator held CAP_SETFCAP: the sandboxer's policy must allow it.
        eprintln!("skipping: rootless map-back needs CAP_SETFCAP in the sandboxer's policy");
        return;
    }
    let (mut sb, uid, gid, init) = rootless_sandboxer(Default::default());
    let (status, out) = sb.run(
        1,
        "id -u; id -g; hostname; cat /etc/resolv.conf; ls /sys/class/net; echo $$",
    );
    assert_eq!(status, ExitStatus::Code(0), "{out}");
    let expected = format!("{uid}\n{gid}\npallium\n{RESOLV}lo\n");
    assert!(out.starts_with(&expected), "{out}");
    let (_, r) = sb.spawn_sh(2, "id -u", true).unwrap();
    let mut root_out = String::new();
    std::fs::File::from(r)
        .read_to_string(&mut root_out)
        .unwrap();
    assert_eq!(sb.exited(2), ExitStatus::Code(0));
    assert_eq!(
        root_out, "0\n",
        "--root stays uid 0 in the session's user namespace"
    );
    let sandboxer_uid = std::fs::read_to_string(format!("/proc/{}/status", sb.proc.id())).unwrap();
    assert!(
        sandboxer_uid
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains(&uid.to_string())),
        "the sandboxer runs as the user"
    );
    assert!(sb.shutdown().success());
    assert!(!Path::new(&format!("/proc/{init}")).exists());
}

#[test]
fn root_mode_virtual_user_is_unprivileged_and_can_be_signalled() {
    if !root() {
        return;
    }
    let mut sb = Sandboxer::root_mode();
    sb.setup_profile(proto::profile::Sandbox {
        virtuser: Some(proto::profile::Virtuser {
            name: proto::profile::VirtuserName::Temporary,
            skeleton: None,
        }),
        ..Default::default()
    });
    let out = sb.ok(
        1,
        "id -u; id -G; stat -c %u $HOME; grep -E '^Cap(Eff|Bnd)' /proc/self/status",
    );
    let lines: Vec<&str> = out.lines().collect();
    let uid: u32 = lines[0].parse().unwrap();
    assert_ne!(uid, 0, "{out}");
    assert_eq!(lines[1], uid.to_string(), "no supplementary groups: {out}");
    assert_eq!(
        lines[2],
        uid.to_string(),
        "the tmpfs home is the user's: {out}"
    );
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("CapBnd:\t0000000000000000"), "{out}");
    // The sandboxer signals it under its uid, and keeps its capabilities:
    // the next spawn (which needs CAP_SETUID) works.
    let (_pid, _r) = sb.spawn_sh(2, "sleep 100", false).unwrap();
    sb.chan
        .send(SandboxRequest::Signal { id: 2, signal: 15 })
        .unwrap();
    assert_eq!(sb.exited(2), ExitStatus::Signal(15));
    assert_eq!(sb.ok(3, "id -u"), format!("{uid}\n"));
    // `--root` stays root.
    let (_, r) = sb.spawn_sh(4, "id -u", true).unwrap();
    let mut root_out = String::new();
    std::fs::File::from(r)
        .read_to_string(&mut root_out)
        .unwrap();
    assert_eq!(sb.exited(4), ExitStatus::Code(0));
    assert_eq!(root_out, "0\n");
    assert!(sb.shutdown().success());
}
