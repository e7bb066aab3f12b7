//! The harness the sandboxer's integration tests share: start the built
//! sandboxer with its channel on fd 3, handshake as the supervisor, set up,
//! spawn scripts, collect their output and status, shut down.
#![allow(unsafe_code)] // Tests call raw syscalls to attack or inspect the sandbox.
#![allow(dead_code, unreachable_pub)]

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

pub const BIN: &str = env!("CARGO_BIN_EXE_pallium-sandboxer");
pub const RESOLV: &str = "nameserver 192.0.2.53\noptions edns0\n";
pub const HOSTS: &str = "127.0.0.1 localhost\n192.0.2.80 pallium-test.example\n";

pub fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipping: the sandboxer tests need root");
    false
}

/// A running sandboxer and our end of its channel.
pub struct Sandboxer {
    pub chan: Channel<SandboxRequest, SandboxEvent>,
    pub proc: Child,
    /// `Exited` events that arrived while another answer was awaited: a
    /// command may end at any time, e.g. while the next one is spawned.
    early: Vec<(u32, ExitStatus)>,
}

impl Sandboxer {
    /// Start `cmd` (the sandboxer, maybe behind setpriv) with the channel on fd 3.
    pub fn start(mut cmd: Command) -> Sandboxer {
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
                // dup2 onto itself would keep FD_CLOEXEC.
                let r = if raw == 3 {
                    libc::fcntl(raw, libc::F_SETFD, 0)
                } else {
                    libc::dup2(raw, 3)
                };
                if r < 0 {
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
        Sandboxer {
            chan,
            proc,
            early: Vec::new(),
        }
    }

    pub fn root_mode() -> Sandboxer {
        Sandboxer::start(Command::new(BIN))
    }

    /// `Setup` with the default sandbox profile.
    pub fn setup(&mut self, netns: OwnedFd, userns: Option<OwnedFd>, uid: u32, gid: u32) -> i32 {
        self.setup_with(netns, userns, uid, gid, Default::default())
    }

    /// `Setup` in root mode in a fresh network namespace with `profile`.
    pub fn setup_profile(&mut self, profile: Sandbox) -> i32 {
        self.setup_with(new_netns(), None, 0, 0, profile)
    }

    pub fn setup_with(
        &mut self,
        netns: OwnedFd,
        userns: Option<OwnedFd>,
        uid: u32,
        gid: u32,
        profile: Sandbox,
    ) -> i32 {
        self.chan
            .send(SandboxRequest::Setup(Box::new(Setup {
                netns: Fd(netns),
                userns: userns.map(Fd),
                app_userns: None,
                app_uid: None,
                hostname: "pallium".into(),
                resolv_conf: RESOLV.into(),
                hosts: HOSTS.into(),
                uid,
                gid,
                runsc: profile.gvisor.then(|| "/usr/bin/runsc".to_string()),
                profile,
                hidden: vec![],
                binds: Vec::new(),
            })))
            .unwrap();
        match self.chan.recv().unwrap() {
            SandboxEvent::Ready { init_pid, .. } => init_pid,
            other => panic!("setup: {other:?}"),
        }
    }

    /// Spawn `sh -c script` with stdout+stderr to a pipe; returns the read end.
    pub fn spawn_sh(
        &mut self,
        id: u32,
        script: &str,
        root: bool,
    ) -> Result<(i32, OwnedFd), String> {
        let (r, w) = nix::unistd::pipe().unwrap();
        let null = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        self.chan
            .send(SandboxRequest::Spawn(Spawn {
                id,
                argv: vec!["sh".into(), "-c".into(), script.into()],
                env: vec![("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into())],
                cwd: Some("/does/not/exist".into()),
                stdio: [Fd(null), Fd(w.try_clone().unwrap()), Fd(w)],
                tty: false,
                root,
                netns: None,
            }))
            .unwrap();
        match self.answer() {
            SandboxEvent::Spawned { id: got, pid } if got == id => Ok((pid, r)),
            SandboxEvent::Failed {
                id: Some(got),
                error,
            } if got == id => Err(error.to_string()),
            other => panic!("spawn: {other:?}"),
        }
    }

    /// The next event that is not an `Exited`; those are kept for [`Self::exited`].
    fn answer(&mut self) -> SandboxEvent {
        loop {
            match self.chan.recv().unwrap() {
                SandboxEvent::Exited { id, status } => self.early.push((id, status)),
                other => return other,
            }
        }
    }

    pub fn exited(&mut self, id: u32) -> ExitStatus {
        if let Some(i) = self.early.iter().position(|(got, _)| *got == id) {
            return self.early.remove(i).1;
        }
        match self.chan.recv().unwrap() {
            SandboxEvent::Exited { id: got, status } if got != id => {
                self.early.push((got, status));
                self.exited(id)
            }
            SandboxEvent::Exited { id: got, status } if got == id => status,
            other => panic!("expected Exited({id}): {other:?}"),
        }
    }

    /// Run a script to completion: (status, output).
    pub fn run(&mut self, id: u32, script: &str) -> (ExitStatus, String) {
        self.try_run(id, script).unwrap()
    }

    /// Like [`Sandboxer::run`], but a failed spawn is the sandboxer's error.
    pub fn try_run(&mut self, id: u32, script: &str) -> Result<(ExitStatus, String), String> {
        let (_, r) = self.spawn_sh(id, script, false)?;
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        Ok((self.exited(id), out))
    }

    /// Run a script that must succeed; its output.
    pub fn ok(&mut self, id: u32, script: &str) -> String {
        let (status, out) = self.run(id, script);
        assert_eq!(status, ExitStatus::Code(0), "{script}: {out}");
        out
    }

    pub fn pids(&mut self) -> Vec<ProcEntry> {
        self.chan.send(SandboxRequest::ListPids).unwrap();
        match self.answer() {
            SandboxEvent::Pids(p) => p,
            other => panic!("pids: {other:?}"),
        }
    }

    /// `Shutdown`, and the exit status of the sandboxer.
    pub fn shutdown(mut self) -> std::process::ExitStatus {
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
pub fn new_netns() -> OwnedFd {
    std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET).unwrap();
        OwnedFd::from(std::fs::File::open("/proc/thread-self/ns/net").unwrap())
    })
    .join()
    .unwrap()
}

pub fn mountinfo_len() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        // Network namespaces other tests (or the testbed) create are bind
        // mounts too; they are not ours to count.
        .filter(|l| !l.contains(" /run/netns"))
        .count()
}

/// A `sandbox.paths` profile.
pub fn paths(
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
pub fn run_in(profile: Sandbox, script: &str) -> (i32, String) {
    let mounts = mountinfo_len();
    let mut sb = Sandboxer::root_mode();
    sb.setup_profile(profile);
    let (status, out) = sb.run(1, script);
    assert!(sb.shutdown().success());
    assert_eq!(mountinfo_len(), mounts, "the host's mounts changed");
    (status.as_code(), out)
}

pub const BASE_MIN: &[&str] = &["/usr", "/bin", "/lib64", "/lib", "/dev/null"];

/// An unprivileged user for the rootless test, created once.
pub fn test_user() -> (u32, u32) {
    const NAME: &str = "pallium-sbxtest";
    let id = |flag| {
        let out = Command::new("id").args([flag, NAME]).output().unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse::<u32>()
            .ok()
    };
    if id("-u").is_none() {
        let st = Command::new("useradd")
            .args(["-M", "-s", "/usr/sbin/nologin", NAME])
            .status()
            .unwrap();
        assert!(st.success() || id("-u").is_some(), "useradd failed");
    }
    (id("-u").unwrap(), id("-g").unwrap())
}

/// The user and network namespaces a rootless netbroker would hand over:
/// owned by `uid`, mapping it to 0.
pub fn user_owned_namespaces(uid: u32, gid: u32) -> (OwnedFd, OwnedFd) {
    let mut holder = Command::new("setpriv")
        .args([
            "--reuid",
            &uid.to_string(),
            "--regid",
            &gid.to_string(),
            "--clear-groups",
        ])
        .args(["--", "unshare", "--user", "--net", "sleep", "600"])
        .spawn()
        .unwrap();
    let pid = holder.id();
    let ours = std::fs::read_link("/proc/self/ns/user").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_link(format!("/proc/{pid}/ns/user"))
        .ok()
        .as_ref()
        == Some(&ours)
    {
        assert!(Instant::now() < deadline, "unshare did not happen");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::write(format!("/proc/{pid}/setgroups"), "deny").unwrap();
    std::fs::write(format!("/proc/{pid}/uid_map"), format!("0 {uid} 1")).unwrap();
    std::fs::write(format!("/proc/{pid}/gid_map"), format!("0 {gid} 1")).unwrap();
    let open =
        |ns: &str| OwnedFd::from(std::fs::File::open(format!("/proc/{pid}/ns/{ns}")).unwrap());
    let fds = (open("user"), open("net"));
    holder.kill().unwrap();
    holder.wait().unwrap();
    fds
}

/// Copy the sandboxer to `bin` in a child process (`install`): a copy made
/// in this multi-threaded test process could leave its writable descriptor
/// in a child another test forks meanwhile, and executing `bin` would fail
/// with ETXTBSY.
fn stage_sandboxer(bin: &std::path::Path) {
    let st = Command::new("install")
        .args(["-m", "755", "-T", BIN])
        .arg(bin)
        .status()
        .expect("run install");
    assert!(st.success(), "install {BIN} {}", bin.display());
}

/// A staged copy of the sandboxer (the test user cannot reach `target/`
/// under /root), run as `uid`/`gid` with the namespaces a rootless netbroker
/// hands over, set up with `profile`: it, the uid and gid, and the sandbox's
/// init pid. The staged copy is removed once set up.
pub fn rootless_sandboxer(profile: Sandbox) -> (Sandboxer, u32, u32, i32) {
    let (uid, gid) = test_user();
    let dir = std::env::temp_dir().join(format!(
        "pallium-test-bin-{}-{}",
        std::process::id(),
        profile.gvisor
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("pallium-sandboxer");
    stage_sandboxer(&bin);
    let (userns, netns) = user_owned_namespaces(uid, gid);
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        &uid.to_string(),
        "--regid",
        &gid.to_string(),
        "--init-groups",
        "--",
    ])
    .arg(&bin);
    let mut sb = Sandboxer::start(cmd);
    let init = sb.setup_with(netns, Some(userns), uid, gid, profile);
    let _ = std::fs::remove_dir_all(&dir);
    (sb, uid, gid, init)
}
