//! Root mode: a pids cgroup for the netbroker and everything it starts after
//! (its packet engines, hop daemons), so no application can make the
//! session's privileged side take the host's pid space (CAP_SYS_ADMIN
//! ignores RLIMIT_NPROC; a cgroup's `pids.max` holds for everyone).
//!
//! Where: `<pids hierarchy>/pallium/<session hash>` — the cgroup v2 root
//! when it offers the pids controller to its children, else the cgroup v1
//! pids hierarchy at `/sys/fs/cgroup/pids`. A host that offers neither (or
//! a read-only one, or rootless mode) gets no cgroup, only the engines'
//! rlimits; that is logged, not an error.
//!
//! Off the critical path: moving a process between cgroups waits for an RCU
//! grace period (the kernel's cgroup_threadgroup_rwsem), 8–20 ms here for
//! each move, which made a root one-shot session behind a SOCKS hop take
//! 29.6 ms instead of 13.4. So a thread of its own does each move: on
//! creation it moves the netbroker in, then every child the netbroker
//! started meanwhile (hop 1's engine usually is one; children started after
//! the move are born inside); at teardown ([`SessionCgroup::leave_soon`],
//! called before the hops stop) it moves the netbroker back out while the
//! hops are torn down. Until the first move completes the engines' own
//! RLIMIT_NPROC is their bound.
//!
//! Removal: [`SessionCgroup`]'s drop waits for those moves and removes the
//! directory, at teardown after every hop has stopped. A
//! netbroker killed with SIGKILL cannot: its engines die with it
//! (PDEATHSIG) and leave an empty directory, which the next root session's
//! netbroker removes ([`sweep`], run on creation and on removal). The
//! `pallium` directory itself stays, like `/run/pallium`: removing it would
//! need CAP_DAC_OVERRIDE, which the netbroker does not keep.

#![forbid(unsafe_code)]

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

/// `pids.max` of a session's cgroup: the netbroker's threads, its engines
/// (each engine's own threads are capped by RLIMIT_NPROC too) and hop
/// daemons together.
pub const MAX_PIDS: u32 = 1024;

const V2_ROOT: &str = "/sys/fs/cgroup";
const V1_PIDS: &str = "/sys/fs/cgroup/pids";

/// Root mode, at the netbroker's start while it still holds every
/// capability: create `<pids hierarchy>/pallium` if it is missing (the
/// hierarchy's root is writable only with CAP_DAC_OVERRIDE, which the
/// netbroker then drops; inside `pallium`, which root owns, it needs none).
/// A stat when it exists.
pub fn prepare_base() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    if let Some((root, _)) = hierarchy() {
        let base = root.join("pallium");
        if !base.exists() {
            let _ = fs::create_dir(&base);
        }
    }
}

/// The session's cgroup; dropping it removes it.
#[derive(Debug)]
pub struct SessionCgroup {
    dir: PathBuf,
    /// The cgroup the netbroker came from (its `cgroup.procs` file).
    home: PathBuf,
    /// The thread moving the netbroker (and its children) in.
    joining: Option<JoinHandle<()>>,
    /// The thread moving the netbroker back out ([`SessionCgroup::leave_soon`]).
    leaving: Option<JoinHandle<()>>,
}

/// The pids hierarchy this host offers, and whether it is cgroup v2.
fn hierarchy() -> Option<(PathBuf, bool)> {
    let v2 = Path::new(V2_ROOT);
    if fs::read_to_string(v2.join("cgroup.subtree_control"))
        .is_ok_and(|s| s.split_whitespace().any(|c| c == "pids"))
    {
        return Some((v2.to_path_buf(), true));
    }
    let v1 = Path::new(V1_PIDS);
    v1.join("cgroup.procs")
        .exists()
        .then(|| (v1.to_path_buf(), false))
}

/// Our own cgroup in that hierarchy, from `/proc/self/cgroup`.
fn own_cgroup(v2: bool) -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let ours = if v2 {
            id == "0" && controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == "pids")
        };
        ours.then(|| path.to_string())
    })
}

impl SessionCgroup {
    /// Create the session's cgroup (named by `hash`) and move the netbroker
    /// into it. None (logged) when the host offers no place for it.
    pub fn create(hash: u32) -> Option<SessionCgroup> {
        let (root, v2) = hierarchy()?;
        let home = root
            .join(own_cgroup(v2)?.trim_start_matches('/'))
            .join("cgroup.procs");
        match Self::try_create(&root, v2, hash, home) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::info!("no pids cgroup for this session: {e}");
                None
            }
        }
    }

    fn try_create(root: &Path, v2: bool, hash: u32, home: PathBuf) -> io::Result<SessionCgroup> {
        let base = root.join("pallium");
        sweep(&base);
        if v2 {
            fs::write(base.join("cgroup.subtree_control"), "+pids")?;
        }
        let dir = base.join(format!("{hash:08x}"));
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let mut cg = SessionCgroup {
            dir,
            home,
            joining: None,
            leaving: None,
        };
        fs::write(cg.dir.join("pids.max"), MAX_PIDS.to_string())?;
        let procs = cg.dir.join("cgroup.procs");
        cg.joining = Some(mover("pallium-cg-join", move || {
            move_in(&procs);
        })?);
        Ok(cg)
    }

    /// Start moving the netbroker back to its own cgroup, in the background
    /// (teardown calls this before stopping the hops, so the move overlaps
    /// with that work); the drop waits for it.
    pub fn leave_soon(&mut self) {
        if self.leaving.is_some() {
            return;
        }
        if let Some(j) = self.joining.take() {
            let _ = j.join();
        }
        let home = self.home.clone();
        self.leaving = match mover("pallium-cg-leave", move || {
            if let Err(e) = fs::write(&home, std::process::id().to_string()) {
                tracing::warn!("leave the session's cgroup: {e}");
            }
        }) {
            Ok(j) => Some(j),
            Err(e) => {
                tracing::warn!("leave the session's cgroup: {e}");
                None
            }
        };
    }

    /// The cgroup's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SessionCgroup {
    fn drop(&mut self) {
        // Move out first: a cgroup with a process in it cannot be removed.
        self.leave_soon();
        if let Some(j) = self.leaving.take() {
            let _ = j.join();
        }
        if let Err(e) = fs::remove_dir(&self.dir) {
            tracing::warn!("remove {}: {e}", self.dir.display());
        }
        if let Some(base) = self.dir.parent() {
            sweep(base);
        }
    }
}

/// A short-lived thread for one cgroup move. It needs no capability (the
/// cgroup files are root's, and so is the netbroker's uid), so it drops them
/// all first: `pallium audit` checks every thread's sets.
fn mover(name: &str, work: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Err(e) = proto::policy::drop_thread_caps() {
                tracing::warn!("cgroup mover: {e}");
            }
            work();
        })
}

/// Move the netbroker into the cgroup whose `cgroup.procs` is `procs`, then
/// each child it started before that move (children started after it are
/// born inside).
fn move_in(procs: &Path) {
    let me = std::process::id();
    if let Err(e) = fs::write(procs, me.to_string()) {
        tracing::info!("no pids cgroup for this session: {e}");
        return;
    }
    let Ok(tasks) = fs::read_dir(format!("/proc/{me}/task")) else {
        return;
    };
    for task in tasks.flatten() {
        let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in children.split_whitespace() {
            // A child that has exited meanwhile: ESRCH, nothing to move.
            if let Err(e) = fs::write(procs, child) {
                tracing::debug!("move child {child} into the session's cgroup: {e}");
            }
        }
    }
}

/// Remove every empty session cgroup under `base` (left by a netbroker that
/// was killed); a cgroup still in use refuses (EBUSY) and stays.
pub fn sweep(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let is_session = name.len() == 8
            && name
                .to_str()
                .is_some_and(|n| n.chars().all(|c| c.is_ascii_hexdigit()));
        if is_session && e.path().is_dir() {
            let _ = fs::remove_dir(e.path());
        }
    }
}
