//! The application's seccomp filter, seen from inside the sandbox: the
//! sandboxer binary driven over its fd-3 channel with a profile's sandbox
//! section. Needs root (namespaces, mounts); skips with a message otherwise.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use nix::sched::{unshare, CloneFlags};
use nix::sys::socket::{setsockopt, socketpair, sockopt, AddressFamily, SockFlag, SockType};
use nix::sys::time::TimeVal;
use proto::profile::Sandbox as Profile;
use proto::sandbox::{ExitStatus, SandboxEvent, SandboxRequest, Setup, Spawn};
use proto::{Channel, Fd};

const BIN: &str = env!("CARGO_BIN_EXE_pallium-sandboxer");

/// keyctl, bpf and clone3 on the running architecture.
#[cfg(target_arch = "x86_64")]
const NR: Option<(u32, u32, u32)> = Some((250, 321, 435));
#[cfg(target_arch = "aarch64")]
const NR: Option<(u32, u32, u32)> = Some((219, 280, 435));
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const NR: Option<(u32, u32, u32)> = None;

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipping: the sandboxer tests need root");
    false
}

/// A raw system call from python3 ctypes printing "<return> <errno>", or
/// "no-python" when the sandbox has no python3.
fn pysyscall(nr: u32, args: &str) -> String {
    format!(
        "if command -v python3 >/dev/null; then python3 -c 'import ctypes; \
         libc = ctypes.CDLL(None, use_errno=True); r = libc.syscall({nr}{args}); \
         print(r, ctypes.get_errno())'; else echo no-python; fi"
    )
}

struct Sandboxer {
    chan: Channel<SandboxRequest, SandboxEvent>,
    proc: Child,
}

impl Sandboxer {
    /// A root-mode sandboxer set up with `profile` in a fresh netns.
    fn with(profile: Profile) -> Sandboxer {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        setsockopt(&ours, sockopt::ReceiveTimeout, &TimeVal::new(20, 0)).unwrap();
        let raw = theirs.as_raw_fd();
        let mut cmd = Command::new(BIN);
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
        let mut sb = Sandboxer { chan, proc };
        sb.chan
            .send(SandboxRequest::Setup(Box::new(Setup {
                netns: Fd(new_netns()),
                userns: None,
                hostname: "pallium".into(),
                resolv_conf: String::new(),
                hosts: String::new(),
                uid: 0,
                gid: 0,
                profile,
            })))
            .unwrap();
        match sb.chan.recv().unwrap() {
            SandboxEvent::Ready { .. } => sb,
            other => panic!("setup: {other:?}"),
        }
    }

    /// Run `sh -c script` to completion: (status, stdout+stderr), or the
    /// spawn's error.
    fn run(&mut self, id: u32, script: &str) -> Result<(ExitStatus, String), String> {
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
                root: false,
            }))
            .unwrap();
        match self.chan.recv().unwrap() {
            SandboxEvent::Spawned { id: got, .. } if got == id => {}
            SandboxEvent::Failed {
                id: Some(got),
                error,
            } if got == id => return Err(error.to_string()),
            other => panic!("spawn: {other:?}"),
        }
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        match self.chan.recv().unwrap() {
            SandboxEvent::Exited { id: got, status } if got == id => Ok((status, out)),
            other => panic!("expected Exited({id}): {other:?}"),
        }
    }

    fn ok(&mut self, id: u32, script: &str) -> String {
        let (status, out) = self.run(id, script).unwrap();
        assert_eq!(status, ExitStatus::Code(0), "{script}: {out}");
        out
    }

    fn shutdown(mut self) {
        self.chan.send(SandboxRequest::Shutdown).unwrap();
        assert!(self.proc.wait().unwrap().success());
    }
}

impl Drop for Sandboxer {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

fn new_netns() -> OwnedFd {
    std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET).unwrap();
        OwnedFd::from(std::fs::File::open("/proc/thread-self/ns/net").unwrap())
    })
    .join()
    .unwrap()
}

const EPERM: &str = "-1 1\n";

#[test]
fn default_filter_denies_kernel_attack_surface_and_nothing_ordinary() {
    if !root() {
        return;
    }
    let mut sb = Sandboxer::with(Profile::default());
    let status = sb.ok(1, "grep -E '^Seccomp:' /proc/self/status");
    assert_eq!(status.split_whitespace().nth(1), Some("2"), "{status}");
    assert_eq!(sb.ok(2, "ls / >/dev/null && echo ok"), "ok\n");
    // Forks, pipes and exec of another program still work.
    assert_eq!(sb.ok(3, "(echo a; true) | cat; uname -s"), "a\nLinux\n");
    if let Some((keyctl, bpf, _)) = NR {
        // keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)
        let out = sb.ok(4, &pysyscall(keyctl, ", 0, -3, 0"));
        if out != "no-python\n" {
            assert_eq!(out, EPERM, "keyctl");
            assert_eq!(sb.ok(5, &pysyscall(bpf, ", 0, 0, 0")), EPERM, "bpf");
        } else {
            eprintln!("skipping the raw system calls: no python3 in the sandbox");
        }
    }
    // Nesting a user namespace is allowed by default; mounting in it is not.
    assert_eq!(sb.ok(6, "unshare -U true && echo nested"), "nested\n");
    let (status, out) = sb.run(7, "unshare -Ur mount -t tmpfs none /tmp").unwrap();
    assert_ne!(
        status,
        ExitStatus::Code(0),
        "mount in a nested userns: {out}"
    );
    assert!(out.contains("not permitted"), "{out}");
    sb.shutdown();
}

#[test]
fn unpriv_user_ns_false_denies_namespaces_like_the_original() {
    if !root() {
        return;
    }
    let mut sb = Sandboxer::with(Profile {
        unpriv_user_ns: false,
        ..Profile::default()
    });
    for (id, cmd) in [(1, "unshare -U true"), (2, "unshare -n true")] {
        let (status, out) = sb.run(id, cmd).unwrap();
        assert_ne!(status, ExitStatus::Code(0), "{cmd}: {out}");
        assert!(out.contains("not permitted"), "{cmd}: {out}");
    }
    // clone without CLONE_NEWUSER (fork) still works.
    assert_eq!(sb.ok(3, "(echo sub) | cat"), "sub\n");
    if let Some((_, _, clone3)) = NR {
        let out = sb.ok(4, &pysyscall(clone3, ", 0, 0"));
        if out != "no-python\n" {
            assert_eq!(out, "-1 38\n", "clone3: ENOSYS");
        }
    }
    sb.shutdown();
}

#[test]
fn profile_seccomp_names_are_denied() {
    if !root() {
        return;
    }
    let mut sb = Sandboxer::with(Profile {
        seccomp: vec!["uname".into()],
        ..Profile::default()
    });
    let (status, out) = sb.run(1, "uname -s").unwrap();
    assert_ne!(status, ExitStatus::Code(0), "uname: {out}");
    assert_eq!(sb.ok(2, "echo still-ok"), "still-ok\n");
    sb.shutdown();
}

#[test]
fn unknown_syscall_name_fails_the_spawn_naming_it() {
    if !root() {
        return;
    }
    let mut sb = Sandboxer::with(Profile {
        seccomp: vec!["no_such_syscall".into()],
        ..Profile::default()
    });
    let err = sb.run(1, "true").unwrap_err();
    assert!(err.contains("\"no_such_syscall\""), "{err}");
    sb.shutdown();
}
