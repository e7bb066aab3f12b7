#![allow(dead_code)]
//! `sandbox.paths` and virtual users through the built sandboxer (ORIGINAL.md
//! §4.1, §4.2 tests). Needs root; skips with a message otherwise.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::{unshare, CloneFlags};
use nix::sys::socket::{setsockopt, socketpair, sockopt, AddressFamily, SockFlag, SockType};
use nix::sys::time::TimeVal;
use proto::broker::ProcEntry;

use proto::profile::{BindMount, Paths, PathsMode, Sandbox, Virtuser, VirtuserName};
use proto::sandbox::{ExitStatus, SandboxEvent, SandboxRequest, Setup, Spawn};
use proto::{Channel, Fd};

const BIN: &str = env!("CARGO_BIN_EXE_pallium-sandboxer");
const RESOLV: &str = "nameserver 192.0.2.53\noptions edns0\n";
const HOSTS: &str = "127.0.0.1 localhost\n192.0.2.80 pallium-test.example\n";

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipping: the sandboxer tests need root");
    false
}

/// A running sandboxer and our end of its channel.
struct Sandboxer {
    chan: Channel<SandboxRequest, SandboxEvent>,
    proc: Child,
}

impl Sandboxer {
    /// Start `cmd` (the sandboxer, maybe behind setpriv) with the channel on fd 3.
    fn start(mut cmd: Command) -> Sandboxer {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        // A hung sandboxer fails the test instead of hanging it.
        setsockopt(&ours, sockopt::ReceiveTimeout, &TimeVal::new(20, 0)).unwrap();
        let raw = theirs.as_raw_fd();
        // SAFETY: between fork and exec the closure only calls dup2 and prctl,
        // both async-signal-safe, and allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(raw, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let proc = cmd.stdin(Stdio::null()).spawn().unwrap();
        drop(theirs);
        let mut chan = Channel::new(ours);
        chan.handshake("supervisor", "sandboxer").unwrap();
        Sandboxer { chan, proc }
    }

    fn root_mode() -> Sandboxer {
        Sandboxer::start(Command::new(BIN))
    }

    fn setup(&mut self, profile: proto::profile::Sandbox) -> i32 {
        let (netns, userns, uid, gid) = (new_netns(), None::<OwnedFd>, 0, 0);
        self.chan
            .send(SandboxRequest::Setup(Box::new(Setup {
                netns: Fd(netns),
                userns: userns.map(Fd),
                hostname: "pallium".into(),
                resolv_conf: RESOLV.into(),
                hosts: HOSTS.into(),
                uid,
                gid,
                profile,
            })))
            .unwrap();
        match self.chan.recv().unwrap() {
            SandboxEvent::Ready { init_pid } => init_pid,
            other => panic!("setup: {other:?}"),
        }
    }

    /// Spawn `sh -c script` with stdout+stderr to a pipe; returns the read end.
    fn spawn_sh(&mut self, id: u32, script: &str, root: bool) -> Result<(i32, OwnedFd), String> {
        let (r, w) = nix::unistd::pipe().unwrap();
        let null = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        self.chan
            .send(SandboxRequest::Spawn(Spawn {
                id,
                argv: vec!["sh".into(), "-c".into(), script.into()],
                env: vec![("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into())],
                cwd: None,
                stdio: [Fd(null), Fd(w.try_clone().unwrap()), Fd(w)],
                tty: false,
                root,
            }))
            .unwrap();
        match self.chan.recv().unwrap() {
            SandboxEvent::Spawned { id: got, pid } if got == id => Ok((pid, r)),
            SandboxEvent::Failed {
                id: Some(got),
                error,
            } if got == id => Err(error.to_string()),
            other => panic!("spawn: {other:?}"),
        }
    }

    fn exited(&mut self, id: u32) -> ExitStatus {
        match self.chan.recv().unwrap() {
            SandboxEvent::Exited { id: got, status } if got == id => status,
            other => panic!("expected Exited({id}): {other:?}"),
        }
    }

    /// Run a script to completion: (status, output).
    fn run(&mut self, id: u32, script: &str) -> (ExitStatus, String) {
        let (_, r) = self.spawn_sh(id, script, false).unwrap();
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        (self.exited(id), out)
    }

    fn pids(&mut self) -> Vec<ProcEntry> {
        self.chan.send(SandboxRequest::ListPids).unwrap();
        match self.chan.recv().unwrap() {
            SandboxEvent::Pids(p) => p,
            other => panic!("pids: {other:?}"),
        }
    }

    /// `Shutdown`, and the exit status of the sandboxer.
    fn shutdown(mut self) -> std::process::ExitStatus {
        self.chan.send(SandboxRequest::Shutdown).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.proc.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "sandboxer did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sandboxer {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

/// A fresh network namespace, made on a throwaway thread (unshare is per thread).
fn new_netns() -> OwnedFd {
    std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET).unwrap();
        OwnedFd::from(std::fs::File::open("/proc/thread-self/ns/net").unwrap())
    })
    .join()
    .unwrap()
}

fn mountinfo_len() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        // Network namespaces other tests (or the testbed) create are bind
        // mounts too; they are not ours to count.
        .filter(|l| !l.contains(" /run/netns"))
        .count()
}

fn paths(
    mode: PathsMode,
    whitelist: &[&str],
    blacklist: &[&str],
    bind: &[(&str, &str)],
) -> Sandbox {
    Sandbox {
        paths: Some(Paths {
            mode,
            whitelist: whitelist.iter().map(|s| s.to_string()).collect(),
            blacklist: blacklist.iter().map(|s| s.to_string()).collect(),
            bind: bind
                .iter()
                .map(|(d, s)| BindMount {
                    dst: d.to_string(),
                    src: s.to_string(),
                })
                .collect(),
            ..Paths::default()
        }),
        ..Sandbox::default()
    }
}

/// Run `script` in a sandbox built from `profile`: (exit code, output).
fn run_in(profile: Sandbox, script: &str) -> (i32, String) {
    let mounts = mountinfo_len();
    let mut sb = Sandboxer::root_mode();
    sb.setup(profile);
    let (status, out) = sb.run(1, script);
    assert!(sb.shutdown().success());
    assert_eq!(mountinfo_len(), mounts, "the host's mounts changed");
    (status.as_code(), out)
}

const BASE_MIN: &[&str] = &["/usr", "/bin", "/lib64", "/lib", "/dev/null"];

#[test]
fn base_mode_with_a_minimal_whitelist_has_no_tmp() {
    if !root() {
        return;
    }
    let (code, out) = run_in(paths(PathsMode::Base, BASE_MIN, &[], &[]), "ls /tmp");
    assert_eq!(code, 2, "{out}");
}

#[test]
fn explicit_blacklist_beats_a_glob_whitelist() {
    if !root() {
        return;
    }
    let (code, out) = run_in(
        paths(PathsMode::Base, &["/*"], &["/tmp"], &[]),
        "ls /tmp/* 2>/dev/null | head -1; test -e /etc/passwd && echo etc-ok",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "etc-ok\n");
}

#[test]
fn bound_files_are_readable_at_new_paths() {
    if !root() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("pallium-paths-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("f");
    std::fs::write(&file, "hello\n").unwrap();
    let f = file.to_str().unwrap();
    for dst in [
        "/pallium-test",
        "/doesnotexist/pallium-test",
        "/etc/pallium-test",
        "/etc/x/pallium-test",
    ] {
        let (code, out) = run_in(
            paths(PathsMode::Append, &[], &[], &[(dst, f)]),
            &format!("cat {dst}; test -e /etc/passwd && echo etc-ok"),
        );
        assert_eq!((code, out.as_str()), (0, "hello\netc-ok\n"), "{dst}");
    }
    assert!(!Path::new("/etc/x").exists() && !Path::new("/etc/pallium-test").exists());
    assert!(!Path::new("/doesnotexist").exists() && !Path::new("/pallium-test").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_file_not_whitelisted_is_invisible() {
    if !root() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("pallium-hidden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret"), "s").unwrap();
    let (code, out) = run_in(
        Sandbox {
            paths: Some(Paths::default()),
            ..Sandbox::default()
        },
        &format!("cat {}/secret", dir.display()),
    );
    assert_ne!(code, 0, "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resolver_and_bus_sockets_are_hidden_in_the_full_view() {
    if !root() {
        return;
    }
    // Whatever of these exists on the host shows up empty and read-only.
    let script = "for p in /run/nscd /run/systemd/resolve /var/run/dbus; do \
                  [ -d $p ] && [ -n \"$(ls -A $p 2>/dev/null)\" ] && echo visible $p; \
                  [ -d $p ] && touch $p/x 2>/dev/null && echo writable $p; done; \
                  s=/run/dbus/system_bus_socket; [ -S $s ] && echo socket $s; true";
    let (code, out) = run_in(Sandbox::default(), script);
    assert_eq!((code, out.as_str()), (0, ""));
}

#[test]
fn virtual_user_has_its_name_and_home() {
    if !root() {
        return;
    }
    let profile = Sandbox {
        virtuser: Some(Virtuser {
            name: VirtuserName::Temporary,
            skeleton: None,
        }),
        ..Sandbox::default()
    };
    let (code, out) = run_in(
        profile,
        "grep -c . /etc/passwd; cut -d: -f1,6 /etc/passwd; echo $HOME $USER; pwd; hostname; cat /etc/hostname",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        "1\ntmp:/home/tmp\n/home/tmp tmp\n/home/tmp\npallium\npallium\n"
    );
}
