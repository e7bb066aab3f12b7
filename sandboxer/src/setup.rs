//! `Setup`: join the session's user and network namespaces, unshare the
//! mount, PID, IPC and UTS namespaces, set the host name, build the default
//! file view and fork the sandbox's init.

#![forbid(unsafe_code)]

use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};
use proto::policy::{drop_to, PolicyError, Role};
use proto::sandbox::Setup;

use crate::gvisor::{Gvisor, GvisorError};
use crate::landlock::{self, Landlock, LandlockError};
use crate::mount::{self, MountError};
use crate::paths::{self, HostFs, HostKind};
use crate::plan::{self, EntryKind, HostEntry, PrivateFiles};
use crate::{init, sys, virtuser};

/// The sandbox as built by `Setup`.
#[derive(Debug)]
pub struct Sandbox {
    /// The init's pid as the host sees it.
    pub init: Pid,
    /// Polls readable when the init dies.
    pub init_pidfd: OwnedFd,
    /// Rootless: applications are mapped back to this uid/gid (unless `--root`).
    pub map_back: Option<(u32, u32)>,
    /// Root mode with a virtual user: applications run as its unprivileged
    /// uid/gid (unless `--root`).
    pub run_as: Option<(u32, u32)>,
    /// `sandbox.workdir`.
    pub workdir: Option<String>,
    /// The virtual user, if any.
    pub user: Option<virtuser::Prepared>,
    /// The application's user namespace (`Setup::app_userns`); None with
    /// `sandbox.unsafe_host_root` or where the chain has none.
    pub app_userns: Option<OwnedFd>,
    /// Root mode: the host uid that is uid 0 of `app_userns`.
    pub app_uid: Option<u32>,
    /// Root mode: the host uid/gid the application runs as (its user
    /// namespace's uid 0, a virtual user's, runsc's); None rootless and as
    /// the host's root.
    pub host_owner: Option<(u32, u32)>,
    /// The landlock ruleset that mirrors the file view.
    pub landlock: Landlock,
    /// `sandbox.gvisor`: runsc and its containers.
    pub gvisor: Option<Gvisor>,
    /// `sandbox.audio` under gVisor: a TCP listener on the application
    /// namespace's 127.0.0.1, for the supervisor's audio relay. gVisor's
    /// host Unix sockets refuse the credentials libpulse sends with its
    /// `AUTH` (`SCM_CREDENTIALS`: sendmsg fails with EINVAL), so the relay's
    /// Unix socket is of no use there. Taken by the `Ready` event.
    pub audio: Option<OwnedFd>,
}

/// A failed step of `Setup`.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("join the session's {ns} namespace: {source}")]
    Join {
        ns: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("drop to the sandboxer's capabilities")]
    Policy(#[from] PolicyError),
    #[error("unshare the mount, PID, IPC and UTS namespaces: {0}")]
    Unshare(#[source] nix::Error),
    #[error("set host name {name:?}: {source}")]
    Hostname {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("list the host's root directory: {0}")]
    ListRoot(#[source] std::io::Error),
    #[error("plan the file view")]
    Paths(#[from] paths::PathsError),
    #[error("prepare the virtual user")]
    Virtuser(#[from] virtuser::VirtuserError),
    #[error("build the file view")]
    Mount(#[from] MountError),
    #[error("prepare the landlock ruleset")]
    Landlock(#[from] LandlockError),
    #[error("prepare gVisor")]
    Gvisor(#[from] GvisorError),
    #[error("listen on 127.0.0.1 for the audio relay (sandbox.audio under gVisor): {0}")]
    AudioListener(#[source] std::io::Error),
}

/// Run `Setup` in the calling (single-threaded) process.
pub fn setup(req: Setup) -> Result<Sandbox, SetupError> {
    let rootless = req.userns.is_some();
    // Before we leave the host's network namespace: its bound pathname
    // sockets, hidden below unless the profile names them.
    let host_sockets = host_sockets(&req.hidden);
    if let Some(userns) = &req.userns {
        setns(userns, CloneFlags::CLONE_NEWUSER)
            .map_err(|source| SetupError::Join { ns: "user", source })?;
        // Entering the user namespace granted every capability in it.
        drop_to(Role::Sandboxer)?;
    }
    setns(&req.netns, CloneFlags::CLONE_NEWNET).map_err(|source| SetupError::Join {
        ns: "network",
        source,
    })?;
    // In the application's namespace now: a socket made here stays there.
    let audio = (req.profile.gvisor && req.profile.audio)
        .then(|| std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).map(OwnedFd::from))
        .transpose()
        .map_err(SetupError::AudioListener)?;
    // The PID namespace comes last, right before the init is forked: its
    // first child is its PID 1 (a helper forked meanwhile, for an idmapped
    // bind, would take that place and end the namespace with it).
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)
        .map_err(SetupError::Unshare)?;
    nix::unistd::sethostname(&req.hostname).map_err(|source| SetupError::Hostname {
        name: req.hostname.clone(),
        source,
    })?;

    let files = PrivateFiles {
        resolv_conf: req.resolv_conf,
        hosts: req.hosts,
        hidden: req
            .hidden
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.is_absolute() && p.components().count() > 1)
            .chain(host_sockets)
            .collect(),
        masks: !req.profile.gvisor,
    };
    let sb = &req.profile;
    let mut user = match &sb.virtuser {
        Some(v) => Some(virtuser::prepare(
            v,
            (req.uid, req.gid),
            !rootless,
            &req.hostname,
        )?),
        None => None,
    };
    if let (true, Some(u)) = (sb.gvisor, user.as_mut()) {
        u.named_inside_as_root();
    }
    // Root mode: the application may be uid 0, which owns the host's files;
    // what the profile did not ask to be writable is bound read-only.
    let read_only = !rootless;
    // Root mode: runsc runs unprivileged, as the virtual user or as a uid of
    // its own (rootless needs no change of uid: the caller is mapped back).
    let gvisor = if sb.gvisor {
        let run_as = (!rootless).then(|| match &user {
            Some(u) => (u.uid, u.gid),
            None => {
                let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
                let uid = proto::profile::root_mode_uid("$gvisor", &passwd);
                (uid, uid)
            }
        });
        Some(Gvisor::open(req.runsc.as_deref(), run_as, &req.hostname)?)
    } else {
        None
    };
    let mut ops = if user.is_none() && sb.paths.is_none() {
        plan::default_view(
            &host_entries(Path::new("/")).map_err(SetupError::ListRoot)?,
            &files,
            read_only,
        )
    } else {
        let (extra, private, post) = user
            .as_ref()
            .map(|u| (&u.extra[..], &u.private[..], &u.post[..]))
            .unwrap_or_default();
        let tree = paths::tree(&sb.paths.clone().unwrap_or_default(), extra, &RealFs)?;
        paths::view(&tree, &files, private, post, read_only)
    };
    // Root mode, the application in its own user namespace: the profile's
    // writable binds stay writable for it.
    let app_userns = req
        .app_userns
        .map(|f| f.0)
        .filter(|_| rootless || !sb.unsafe_host_root);
    let app_uid = req.app_uid.filter(|_| app_userns.is_some() && !rootless);
    let idmap = app_uid.filter(|_| user.is_none() && gvisor.is_none());
    let host_owner = if rootless {
        None
    } else if let Some(g) = &gvisor {
        g.run_as
    } else if let Some(u) = &user {
        Some((u.uid, u.gid))
    } else {
        app_uid.map(|u| (u, u))
    };
    if idmap.is_some() {
        ops = plan::idmap_writable_binds(ops);
    }
    // While the host's root is still there to bind from.
    let at = ops
        .iter()
        .position(|op| matches!(op, plan::MountOp::Detach { target } if target == Path::new(plan::OLD_ROOT)))
        .unwrap_or(ops.len().saturating_sub(1));
    ops.splice(at..at, plan::session_binds(&req.binds));
    if let Some(g) = &gvisor {
        // Before the last step, which enters the view.
        let at = ops.len().saturating_sub(1);
        ops.splice(at..at, g.state_ops());
    }
    // Before the init is forked: the whole sandbox in one scoped domain.
    match landlock::scope_sandbox() {
        Ok(true) => {}
        Ok(false) => tracing::debug!("landlock scoping unavailable (Linux < 6.12)"),
        Err(e) => tracing::warn!("landlock scoping: {e}"),
    }
    let mut init = None;
    mount::execute(&ops, idmap, &mut |target| {
        init = Some(fork_init(target)?);
        Ok(())
    })?;
    let (init, init_pidfd) = init.ok_or(MountError::Proc("the plan mounts no /proc".into()))?;
    // We are in the sandbox's root now: the rules' paths resolve there.
    let landlock = Landlock::prepare(&landlock::rules(&ops))?;
    Ok(Sandbox {
        init,
        init_pidfd,
        map_back: rootless.then_some((req.uid, req.gid)),
        run_as: user.as_ref().filter(|_| !rootless).map(|u| (u.uid, u.gid)),
        workdir: req.profile.workdir.clone(),
        user,
        landlock,
        gvisor,
        app_userns,
        app_uid,
        host_owner,
        audio,
    })
}

/// At most this many host sockets are hidden one by one (each is a mount).
const MAX_HOST_SOCKETS: usize = 512;

/// The pathname Unix sockets bound in the calling process's network
/// namespace (`/proc/self/net/unix`) — an ssh ControlMaster in `~/.ssh`, a
/// screen or tmux session, an agent, a service's control socket — except
/// those under a directory every view hides anyway (`proto::hidden`,
/// `runtime`). Connecting to one needs only write access to it, which a
/// read-only bind does not take away, and it may run commands outside the
/// sandbox. Sockets bound later are not seen (documented).
fn host_sockets(runtime: &[String]) -> Vec<PathBuf> {
    let Ok(table) = fs::read_to_string("/proc/self/net/unix") else {
        return Vec::new();
    };
    let covered = |p: &Path| {
        proto::hidden::HIDDEN
            .iter()
            .map(|(h, _)| Path::new(*h))
            .chain(runtime.iter().map(Path::new))
            .any(|h| p.starts_with(h))
    };
    let mut out: Vec<PathBuf> = table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(7))
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from)
        .filter(|p| !covered(p))
        .collect();
    out.sort();
    out.dedup();
    if out.len() > MAX_HOST_SOCKETS {
        tracing::warn!(
            "{} host sockets: hiding the first {MAX_HOST_SOCKETS} only",
            out.len()
        );
        out.truncate(MAX_HOST_SOCKETS);
    }
    out
}

/// The host's file system as the planner sees it (before any mount).
struct RealFs;

impl HostFs for RealFs {
    fn lstat(&self, path: &Path) -> Option<HostKind> {
        let m = fs::symlink_metadata(path).ok()?;
        Some(if m.is_symlink() {
            HostKind::Symlink(fs::read_link(path).ok()?)
        } else if m.is_dir() {
            HostKind::Dir
        } else {
            HostKind::File
        })
    }

    fn list(&self, path: &Path) -> Vec<std::ffi::OsString> {
        fs::read_dir(path)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
            .unwrap_or_default()
    }

    fn canonicalize(&self, path: &Path) -> Option<std::path::PathBuf> {
        fs::canonicalize(path).ok()
    }
}

/// The entries of `root`, classified for the plan.
fn host_entries(root: &Path) -> std::io::Result<Vec<HostEntry>> {
    let mut out = Vec::new();
    for e in fs::read_dir(root)? {
        let e = e?;
        let ft = e.file_type()?;
        let kind = if ft.is_symlink() {
            EntryKind::Symlink(fs::read_link(e.path())?)
        } else if ft.is_dir() {
            EntryKind::Dir
        } else {
            EntryKind::File
        };
        out.push(HostEntry {
            name: e.file_name(),
            kind,
        });
    }
    Ok(out)
}

/// Fork the init (PID 1 of the new PID namespace) and wait until it has
/// mounted `/proc` at `target`.
fn fork_init(target: &Path) -> Result<(Pid, OwnedFd), String> {
    unshare(CloneFlags::CLONE_NEWPID).map_err(|e| format!("unshare the PID namespace: {e}"))?;
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let child = match sys::fork().map_err(|e| format!("fork the init: {e}"))? {
        ForkResult::Child => {
            drop(r);
            init::run(target, w)
        }
        ForkResult::Parent { child } => child,
    };
    drop(w);
    let mut report = Vec::new();
    let read = fs::File::from(r).read_to_end(&mut report);
    let fail = |msg: String| {
        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(child, None);
        Err(msg)
    };
    match (read, report.as_slice()) {
        (Ok(_), [init::READY]) => {}
        (Ok(_), []) => return fail("the init died before mounting /proc".into()),
        (Ok(_), msg) => return fail(String::from_utf8_lossy(msg).into_owned()),
        (Err(e), _) => return fail(format!("read the init's report: {e}")),
    }
    match sys::pidfd_open(child) {
        Ok(fd) => Ok((child, fd)),
        Err(e) => fail(format!("pidfd_open of the init: {e}")),
    }
}
