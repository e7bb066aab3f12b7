#![allow(dead_code)]
//! Landlock behind the mount sandbox (issue 5, item 3), through the built
//! sandboxer: the application's landlock domain mirrors its file view, so a
//! place the mount view leaves writable by file permissions but grants
//! nothing (the sandbox's root tmpfs, a stand-in tmpfs) is still denied.
//! Needs root; the landlock checks skip where the kernel has no landlock.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::{unshare, CloneFlags};
use nix::sys::socket::{setsockopt, socketpair, sockopt, AddressFamily, SockFlag, SockType};
use nix::sys::time::TimeVal;
use proto::broker::ProcEntry;

use proto::profile::{BindMount, Paths, PathsMode, Sandbox};
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

/// Whether the running kernel has landlock (its ABI version, or an error).
fn landlock_available() -> bool {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a null attribute and size
    // 0 only returns the ABI version; nothing is read or written.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32,
        )
    };
    if v <= 0 {
        eprintln!("skipping the landlock checks: the kernel has no landlock");
    }
    v > 0
}

#[test]
fn landlock_mirrors_the_file_view() {
    if !root() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("pallium-landlock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f"), "hello\n").unwrap();
    let d = dir.to_str().unwrap();
    let mut whitelist = BASE_MIN.to_vec();
    whitelist.push(d);
    let script = format!(
        "cat {d}/f; \
         echo w > {d}/w && echo bound-dir-writable; \
         ls / >/dev/null && echo root-listable; \
         mkdir /probe 2>/dev/null || echo root-tmpfs-denied; \
         touch /tmp/probe 2>/dev/null || echo stand-in-tmpfs-denied"
    );
    let (code, out) = run_in(paths(PathsMode::Base, &whitelist, &[], &[]), &script);
    let written = std::fs::read_to_string(dir.join("w"));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 0, "{out}");
    // The view itself: a whitelisted file is readable, its writable host
    // directory stays writable, the root lists.
    assert!(
        out.starts_with("hello\nbound-dir-writable\nroot-listable\n"),
        "{out}"
    );
    assert_eq!(written.unwrap(), "w\n");
    if !landlock_available() {
        return;
    }
    // The second wall: root owns these tmpfs (mode 0755), so only landlock
    // denies writing to them.
    assert!(out.contains("root-tmpfs-denied\n"), "{out}");
    assert!(out.contains("stand-in-tmpfs-denied\n"), "{out}");
}
