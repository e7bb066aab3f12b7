//! `Spawn`: fork a process into the sandbox, make it a session leader with
//! the given stdio, map it back to the caller's uid (rootless) or become the
//! virtual user's unprivileged uid (root mode), drop every
//! capability, enter the [`landlock`](crate::landlock) ruleset, install the
//! [`seccomp`](crate::seccomp) filter and exec it.
//! A failure before or at exec comes back through a
//! close-on-exec pipe, so the supervisor gets `Failed` instead of `Spawned`.

#![forbid(unsafe_code)]

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};
use proto::policy::{drop_to, Role};
use proto::sandbox::Spawn;

use crate::landlock::Landlock;
use crate::seccomp::Filter;
use crate::sys;

/// Searched when the application's environment has no `PATH` (glibc's
/// default plus `/usr/local/bin`, as a login shell would set).
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// A running spawned process.
#[derive(Debug)]
pub struct Child {
    pub id: u32,
    pub pid: Pid,
    /// Polls readable when the process exits.
    pub pidfd: OwnedFd,
    /// Root mode: the unprivileged uid it runs as (signalling it needs that
    /// uid, as the sandboxer holds no CAP_KILL).
    pub uid: Option<u32>,
}

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("empty command")]
    EmptyArgv,
    #[error("argument or environment entry contains a NUL byte: {0:?}")]
    Nul(String),
    #[error("cannot run '{cmd}': {}", .errno.desc())]
    Exec { cmd: String, errno: Errno },
    #[error("cannot start '{cmd}': {stage}: {}", .errno.desc())]
    Prepare {
        cmd: String,
        stage: &'static str,
        errno: Errno,
    },
    #[error("{step}: {source}")]
    Sys {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl SpawnError {
    /// The kind the supervisor acts on (127 for a command not found).
    pub fn kind(&self) -> proto::ErrorKind {
        match self {
            SpawnError::Exec { errno, .. } | SpawnError::Prepare { errno, .. } => {
                proto::ErrorKind::of_errno(*errno as i32)
            }
            SpawnError::Sys { source, .. } => proto::ErrorKind::of_io(source.kind()),
            SpawnError::EmptyArgv | SpawnError::Nul(_) => proto::ErrorKind::Refused,
        }
    }
}

/// Who a spawned process is (all None: whoever the sandboxer is — root
/// mode with `sandbox.unsafe_host_root`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity<'a> {
    /// The application's user namespace (`Setup::app_userns`), which owns
    /// its network namespace and nothing else: joined first, as its uid 0
    /// (root mode: the session's unprivileged host uid; rootless: the
    /// caller), without supplementary groups.
    pub app_userns: Option<BorrowedFd<'a>>,
    /// Root mode: the host uid that is uid 0 of [`Identity::app_userns`]
    /// (`Setup::app_uid`); None rootless, where it is ours.
    pub app_host_uid: Option<u32>,
    /// `--root` in [`Identity::app_userns`]: keep every capability there
    /// (over the application's network namespace only: `nft`, `tcpdump`).
    pub keep_caps: bool,
    /// Rootless, not `--root`: this uid/gid in a user namespace of its own.
    pub map_back: Option<(u32, u32)>,
    /// Root mode with a virtual user, not `--root`: this real unprivileged
    /// uid/gid (`setresuid`), without supplementary groups.
    pub run_as: Option<(u32, u32)>,
}

/// Under gVisor: runsc (opened at `Setup`) and its argv, which replace the
/// command (written into runsc's bundle).
#[derive(Debug)]
pub struct Runsc<'a> {
    pub fd: &'a OwnedFd,
    pub argv: Vec<String>,
}

/// runsc's own environment (the command's is in its bundle).
const RUNSC_ENV: &str = "PATH=/usr/local/bin:/usr/bin:/bin";

/// Start `req` in the sandbox as `ids`. `filter`: compiled once at `Setup`,
/// installed right before exec; `landlock`: created at `Setup`, entered
/// right before the filter — except under gVisor (`runsc`), where runsc's
/// own gofer, which serves only the view, stands in for it (runsc itself
/// lives outside the view, where a landlock domain would not let it run).
pub fn spawn(
    req: Spawn,
    ids: Identity<'_>,
    filter: &Filter,
    landlock: &Landlock,
    runsc: Option<Runsc<'_>>,
) -> Result<Child, SpawnError> {
    let id = req.id;
    let cmd = req.argv.first().ok_or(SpawnError::EmptyArgv)?.clone();
    let (argv, env, candidates) = match &runsc {
        Some(r) => (
            cstrings(r.argv.iter().cloned())?,
            cstrings(std::iter::once(RUNSC_ENV.to_string()))?,
            Vec::new(),
        ),
        None => (
            cstrings(req.argv.iter().cloned())?,
            cstrings(req.env.iter().map(|(k, v)| format!("{k}={v}")))?,
            cstrings(
                exec_candidates(&cmd, &req.env)
                    .into_iter()
                    .map(|p| p.to_string_lossy().into_owned()),
            )?,
        ),
    };
    let exec = match &runsc {
        Some(r) => Exec::Fd(r.fd),
        None => Exec::Path(&candidates),
    };
    let sys_err = |step| {
        move |e: nix::Error| SpawnError::Sys {
            step,
            source: e.into(),
        }
    };
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys_err("pipe"))?;

    let pid = match sys::fork().map_err(sys_err("fork"))? {
        ForkResult::Child => {
            drop(r);
            let (stage, errno) = child(&req, ids, (landlock, filter), exec, &argv, &env);
            let mut buf = [0u8; 5];
            buf[0] = stage as u8;
            buf[1..].copy_from_slice(&(errno as i32).to_le_bytes());
            let _ = std::fs::File::from(w).write_all(&buf);
            sys::exit_now(127)
        }
        ForkResult::Parent { child } => child,
    };
    drop(w);
    drop(req);
    let mut buf = Vec::with_capacity(5);
    let read = std::fs::File::from(r).read_to_end(&mut buf);
    if let (Ok(_), Some(&[stage, a, b, c, d])) = (&read, buf.first_chunk::<5>()) {
        let _ = waitpid(pid, None);
        let errno = Errno::from_raw(i32::from_le_bytes([a, b, c, d]));
        return Err(match Stage::from_u8(stage) {
            Stage::Exec => SpawnError::Exec { cmd, errno },
            s => SpawnError::Prepare {
                cmd,
                stage: s.name(),
                errno,
            },
        });
    }
    let pidfd = sys::pidfd_open(pid).map_err(|source| SpawnError::Sys {
        step: "pidfd_open",
        source,
    })?;
    Ok(Child {
        id,
        pid,
        pidfd,
        // The host uid it runs as when that is not ours (root mode).
        uid: ids
            .run_as
            .map(|(uid, _)| uid)
            .or(ids.app_userns.and(ids.app_host_uid)),
    })
}

/// Under gVisor runsc finds the command itself, and a missing one comes
/// back as runsc's own message and exit code: look first, as exec would
/// (the view is our root), so it is the same "cannot run" as without it.
pub fn check_command(req: &Spawn) -> Result<(), SpawnError> {
    use std::os::unix::fs::PermissionsExt;
    let cmd = req.argv.first().ok_or(SpawnError::EmptyArgv)?;
    let mut errno = Errno::ENOENT;
    for p in exec_candidates(cmd, &req.env) {
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => return Ok(()),
            Ok(_) => errno = Errno::EACCES,
            Err(_) => {}
        }
    }
    Err(SpawnError::Exec {
        cmd: cmd.clone(),
        errno,
    })
}

/// Where `execvpe` would look for `cmd`, with `PATH` taken from the
/// application's environment rather than ours.
pub fn exec_candidates(cmd: &str, env: &[(String, String)]) -> Vec<PathBuf> {
    if cmd.is_empty() {
        return Vec::new();
    }
    if cmd.contains('/') {
        return vec![PathBuf::from(cmd)];
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    path.split(':')
        .map(|dir| {
            if dir.is_empty() {
                Path::new(".")
            } else {
                Path::new(dir)
            }
        })
        .map(|dir| dir.join(cmd))
        .collect()
}

/// The steps in the child, in order; a failure reports its stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Stage {
    Setsid = 1,
    Netns,
    Stdio,
    Tty,
    AppUserNs,
    UserNs,
    IdMaps,
    SetUid,
    Caps,
    Signals,
    Landlock,
    Seccomp,
    Exec,
}

impl Stage {
    fn from_u8(b: u8) -> Stage {
        [
            Stage::Setsid,
            Stage::Netns,
            Stage::Stdio,
            Stage::Tty,
            Stage::AppUserNs,
            Stage::UserNs,
            Stage::IdMaps,
            Stage::SetUid,
            Stage::Caps,
            Stage::Signals,
            Stage::Landlock,
            Stage::Seccomp,
        ]
        .into_iter()
        .find(|s| *s as u8 == b)
        .unwrap_or(Stage::Exec)
    }

    fn name(self) -> &'static str {
        match self {
            Stage::Setsid => "setsid",
            Stage::Netns => "enter the network namespace --namespace names",
            Stage::Stdio => "set up stdin/stdout/stderr",
            Stage::Tty => "acquire the controlling terminal",
            Stage::AppUserNs => "join the application's user namespace",
            Stage::UserNs => "create the application's user namespace",
            Stage::IdMaps => "map back to the caller's uid and gid",
            Stage::SetUid => "switch to the virtual user's uid and gid",
            Stage::Caps => "drop capabilities",
            Stage::Signals => "reset signal handling",
            Stage::Landlock => "enter the landlock ruleset",
            Stage::Seccomp => "install the seccomp filter",
            Stage::Exec => "exec",
        }
    }
}

/// What the child executes.
#[derive(Clone, Copy)]
enum Exec<'a> {
    /// The first of these that exists (`execvpe`).
    Path(&'a [CString]),
    /// This open file (runsc), without landlock.
    Fd(&'a OwnedFd),
}

/// The forked child up to exec; returns only on failure.
fn child(
    req: &Spawn,
    ids: Identity<'_>,
    (landlock, filter): (&Landlock, &Filter),
    exec: Exec<'_>,
    argv: &[CString],
    env: &[CString],
) -> (Stage, Errno) {
    let at = |stage| move |e: Errno| (stage, e);
    let run = || -> Result<(), (Stage, Errno)> {
        nix::unistd::setsid().map_err(at(Stage::Setsid))?;
        // While every capability is still held (before any user namespace
        // of the application's own).
        if let Some(netns) = &req.netns {
            nix::sched::setns(&netns.0, CloneFlags::CLONE_NEWNET).map_err(at(Stage::Netns))?;
        }
        // Copy above 2 first so no stdio descriptor is overwritten by another.
        let mut high = Vec::with_capacity(3);
        for fd in &req.stdio {
            // try_clone: F_DUPFD_CLOEXEC with a minimum of 3.
            high.push(
                fd.0.try_clone()
                    .map_err(|e| (Stage::Stdio, Errno::from_raw(e.raw_os_error().unwrap_or(0))))?,
            );
        }
        nix::unistd::dup2_stdin(&high[0]).map_err(at(Stage::Stdio))?;
        nix::unistd::dup2_stdout(&high[1]).map_err(at(Stage::Stdio))?;
        nix::unistd::dup2_stderr(&high[2]).map_err(at(Stage::Stdio))?;
        if req.tty {
            sys::set_controlling_tty(std::io::stdin().as_fd()).map_err(at(Stage::Tty))?;
        }
        if let Some(userns) = ids.app_userns {
            join_app_userns(userns)?;
        }
        if let Some((uid, gid)) = ids.map_back {
            map_back_real(uid, gid)?;
        }
        if let Some((uid, gid)) = ids.run_as {
            become_user(uid, gid)?;
        }
        if ids.keep_caps && ids.app_userns.is_some() {
            // `--root`: the capabilities of the application's own user
            // namespace, which owns its network namespace and nothing else
            // (the policy's row; `no_new_privs` too).
            drop_to(Role::RootCommand).map_err(|_| (Stage::Caps, Errno::EPERM))?;
        } else {
            drop_to(Role::App).map_err(|_| (Stage::Caps, Errno::EPERM))?;
        }
        if let Exec::Fd(_) = exec {
            runsc_user_namespace()?;
        }
        let cwd = req.cwd.as_deref().unwrap_or("/");
        if nix::unistd::chdir(cwd).is_err() {
            let _ = nix::unistd::chdir("/");
        }
        sys::reset_signals().map_err(at(Stage::Signals))?;
        // runsc and its gofer share the terminal's process group, and die of
        // the signals its keys raise (^C, ^\) or stop at ^Z: they ignore them.
        // `runsc exec` relays what it gets regardless (Go's handlers replace
        // SIG_IGN); for `runsc run` the supervisor relays the keys itself.
        if let (Exec::Fd(_), true) = (exec, req.tty) {
            use nix::sys::signal::Signal;
            for sig in [Signal::SIGINT, Signal::SIGQUIT, Signal::SIGTSTP] {
                sys::ignore_signal(sig).map_err(at(Stage::Signals))?;
            }
        }

        sys::cloexec_from(3).map_err(at(Stage::Signals))?;
        // After NO_NEW_PRIVS (set by the capability drop), before seccomp,
        // which would otherwise have to allow landlock_restrict_self.
        if let Exec::Path(_) = exec {
            landlock.restrict().map_err(at(Stage::Landlock))?;
        }
        // Last: after NO_NEW_PRIVS (the capability drop), so no capability
        // is needed, and after everything above that the filter may deny.
        filter.apply().map_err(at(Stage::Seccomp))?;
        Err((
            Stage::Exec,
            match exec {
                Exec::Path(candidates) => exec_path(candidates, argv, env),
                Exec::Fd(fd) => match nix::unistd::fexecve(fd, argv, env) {
                    Err(e) => e,
                    Ok(never) => match never {},
                },
            },
        ))
    };
    match run() {
        Ok(()) => (Stage::Exec, Errno::UnknownErrno),
        Err(e) => e,
    }
}

/// Try each candidate like `execvpe`: a missing file moves on, a permission
/// error is remembered, anything else stops. Returns only on failure. A
/// candidate in a directory we may not search (the caller's `PATH` naming
/// `/root/bin`, say, for an application that is not the host's root) is
/// one we cannot see: missing, not "permission denied".
fn exec_path(candidates: &[CString], argv: &[CString], env: &[CString]) -> Errno {
    let mut result = Errno::ENOENT;
    for path in candidates {
        let Err(e) = nix::unistd::execve(path, argv, env);
        match e {
            Errno::ENOENT | Errno::ENOTDIR | Errno::ESTALE | Errno::ENODEV | Errno::ETIMEDOUT => {}
            Errno::EACCES
                if nix::unistd::access(path.as_c_str(), nix::unistd::AccessFlags::F_OK)
                    .is_err() => {}
            Errno::EACCES => result = Errno::EACCES,
            other => return other,
        }
    }
    result
}

/// Join the application's user namespace as its uid and gid 0: root mode,
/// the session's unprivileged host uid; rootless, the caller. The
/// supplementary groups go first, while we may still change them (the host's
/// root groups must not come along; rootless they are not ours to change).
/// Joining grants every capability in that namespace — which owns the
/// application's network namespace and nothing else — and none outside.
fn join_app_userns(userns: BorrowedFd<'_>) -> Result<(), (Stage, Errno)> {
    let at = |e| (Stage::AppUserNs, e);
    match nix::unistd::setgroups(&[]) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(e) => return Err(at(e)),
    }
    nix::sched::setns(userns, CloneFlags::CLONE_NEWUSER).map_err(at)?;
    let g = nix::unistd::Gid::from_raw(0);
    nix::unistd::setresgid(g, g, g).map_err(at)?;
    let u = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresuid(u, u, u).map_err(at)?;
    // A change of uid made us non-dumpable, giving our /proc files to the
    // host's root; an ordinary process of this uid is dumpable.
    nix::sys::prctl::set_dumpable(true).map_err(at)
}

/// The original's `map_back_real`: a user namespace of our own in which the
/// caller's uid/gid map to the sandbox's root, so the command runs as the
/// caller and cannot touch the sandbox's mounts or network.
///
/// Mapping the parent's uid 0 needs CAP_SETFCAP when the namespace is
/// created (kernel `verify_root_map`), hence that capability in the
/// sandboxer's policy.
fn map_back_real(uid: u32, gid: u32) -> Result<(), (Stage, Errno)> {
    new_user_namespace(format!("{uid} 0 1"), format!("{gid} 0 1"))
}

/// Unshare a user namespace with these one-line uid and gid maps (setgroups
/// denied).
fn new_user_namespace(uid_map: String, gid_map: String) -> Result<(), (Stage, Errno)> {
    unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| (Stage::UserNs, e))?;
    let write = |file: &str, s: String| {
        std::fs::write(file, s).map_err(|e| {
            (
                Stage::IdMaps,
                Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            )
        })
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", uid_map)?;
    write("/proc/self/gid_map", gid_map)
}

/// Root mode: become `uid`/`gid` for real. The bounding set goes first,
/// while CAP_SETPCAP is effective; leaving uid 0 then clears the permitted
/// and effective sets, and [`drop_to`] the rest.
fn become_user(uid: u32, gid: u32) -> Result<(), (Stage, Errno)> {
    let at = |e| (Stage::SetUid, e);
    sys::drop_bounding_set().map_err(at)?;
    nix::unistd::setgroups(&[]).map_err(at)?;
    let g = nix::unistd::Gid::from_raw(gid);
    nix::unistd::setresgid(g, g, g).map_err(at)?;
    let u = nix::unistd::Uid::from_raw(uid);
    nix::unistd::setresuid(u, u, u).map_err(at)?;
    // Changing uid made us non-dumpable, which gives our /proc files to
    // root: runsc could not write its user namespace's maps. An ordinary
    // process of this uid is dumpable; exec decides anew.
    nix::sys::prctl::set_dumpable(true).map_err(at)
}

/// runsc `--rootless` as anything but uid 0 re-executes itself in a user
/// namespace mapping its uid to 0, as a second process that does not get
/// the terminal's signals (^C would end the outer one, and the command with
/// it). Make that namespace here instead, after every capability of ours is
/// gone, so runsc starts as its root and stays one process: this uid and gid
/// mapped to 0, nothing else, the namespace's capabilities only.
fn runsc_user_namespace() -> Result<(), (Stage, Errno)> {
    let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
    new_user_namespace(format!("0 {uid} 1"), format!("0 {gid} 1"))
}

fn cstrings(items: impl Iterator<Item = String>) -> Result<Vec<CString>, SpawnError> {
    items
        .map(|s| {
            CString::new(s)
                .map_err(|e| SpawnError::Nul(String::from_utf8_lossy(&e.into_vec()).into_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(path: &str) -> Vec<(String, String)> {
        vec![("PATH".into(), path.into())]
    }

    #[test]
    fn command_with_slash_is_used_as_is() {
        assert_eq!(
            exec_candidates("./x", &env("/bin")),
            vec![PathBuf::from("./x")]
        );
        assert_eq!(
            exec_candidates("/bin/sh", &[]),
            vec![PathBuf::from("/bin/sh")]
        );
    }

    #[test]
    fn path_comes_from_the_applications_environment() {
        assert_eq!(
            exec_candidates("sh", &env("/opt/a:/opt/b")),
            vec![PathBuf::from("/opt/a/sh"), PathBuf::from("/opt/b/sh")]
        );
    }

    #[test]
    fn empty_path_component_means_current_directory() {
        assert_eq!(
            exec_candidates("sh", &env(":/bin")),
            vec![PathBuf::from("./sh"), PathBuf::from("/bin/sh")]
        );
    }

    #[test]
    fn missing_path_uses_the_default() {
        assert_eq!(exec_candidates("sh", &[]).len(), 3);
        assert!(exec_candidates("", &[]).is_empty());
    }

    #[test]
    fn exec_error_names_the_command() {
        let e = SpawnError::Exec {
            cmd: "foo".into(),
            errno: Errno::ENOENT,
        };
        assert_eq!(e.to_string(), "cannot run 'foo': No such file or directory");
    }

    #[test]
    fn stages_round_trip_through_the_report_byte() {
        for s in [
            Stage::Setsid,
            Stage::Netns,
            Stage::Tty,
            Stage::UserNs,
            Stage::Seccomp,
            Stage::Exec,
        ] {
            assert_eq!(Stage::from_u8(s as u8), s);
        }
    }
}
