//! The supervisor's use of the runtime directory (`proto::runtime` holds its
//! layout and session liveness for every crate): creating it, the registry
//! lock, and stale-session garbage collection.

use std::fs::{self, File};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::Flock;
use proto::runtime;

pub(crate) use proto::runtime::{current_netns, profile_id, session_alive};

/// The per-user runtime directory, created 0700 (0711 as root) if needed.
pub(crate) fn run_dir() -> Result<PathBuf> {
    let dir = runtime::run_dir_path();
    let root = nix::unistd::getuid().is_root();
    ensure_private_dir(&dir, if root { 0o711 } else { 0o700 })?;
    Ok(dir)
}

/// Host directories the sandbox must not see: pallium's runtime directory
/// (every session's control socket) first, then the caller's
/// `$XDG_RUNTIME_DIR` (session bus, agents, Wayland, audio). Nothing is
/// created (`pallium check` calls it too).
pub(crate) fn hidden_dirs() -> Vec<String> {
    let mut dirs = vec![runtime::run_dir_path().display().to_string()];
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR") {
        let x = PathBuf::from(x);
        if x.is_absolute() && x != Path::new("/") {
            dirs.push(x.display().to_string());
        }
    }
    dirs
}

/// Create `dir` with `mode` if missing; refuse one owned by someone else.
pub(crate) fn ensure_private_dir(dir: &Path, mode: u32) -> Result<()> {
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
    let meta =
        fs::symlink_metadata(dir).with_context(|| format!("cannot stat {}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != nix::unistd::getuid().as_raw() {
        bail!(
            "{} is not a directory owned by you; remove it and retry",
            dir.display()
        );
    }
    Ok(())
}

/// Open `path` for locking (created 0600).
pub(crate) fn open_lock(path: &Path) -> Result<File> {
    runtime::open_lock(path).with_context(|| format!("cannot open lock {}", path.display()))
}

/// Try to take an exclusive lock; None when someone holds it.
pub(crate) fn try_lock(f: File) -> Result<Option<Flock<File>>> {
    runtime::try_lock(f).context("flock")
}

/// The registry lock (`<run>/.lock`, never removed): held briefly while a
/// session directory is created or removed, so index allocation and garbage
/// collection never race.
pub(crate) fn registry_lock(run: &Path) -> Result<Flock<File>> {
    let path = run.join(runtime::REGISTRY_LOCK);
    runtime::registry_lock(run).with_context(|| format!("cannot lock {}", path.display()))
}

/// Remove the directories of sessions whose supervisor is gone (e.g. it was
/// killed with SIGKILL: the kernel already removed its namespaces, links,
/// tables and processes; only these files remain), and restore the host's
/// forwarding sysctls and remove the routing rules and tables and the Linux
/// bridge of a netbroker killed before it could. The caller holds the registry lock.
pub(crate) fn collect_garbage(run: &Path) {
    runtime::remove_dead_sessions(run);
    restore_forwarding_if_idle(run);
    crate::sweep::host_routing(run);
    crate::sweep::eth_bridges(run);
}

/// As root, when no session started in our network namespace is alive, the
/// forwarding sysctls a dead netbroker left on go back to what they were
/// (`proto::sysctl`, the netbroker's own restore).
fn restore_forwarding_if_idle(run: &Path) {
    if !nix::unistd::getuid().is_root() || !has_saved_records(run) {
        return;
    }
    let restored = proto::sysctl::NetLock::acquire(run).and_then(|lock| {
        let gone = proto::sysctl::forget_gone_scopes(&lock);
        if gone > 0 {
            tracing::debug!(
                "dropped {gone} forwarding records of network namespaces that are gone"
            );
        }
        if proto::sysctl::saved_path(run, current_netns()).exists() {
            proto::sysctl::restore_if_idle(&lock, Path::new("/proc/sys"), None)?;
        }
        Ok(())
    });
    if let Err(e) = restored {
        tracing::debug!("restoring the forwarding sysctls: {e}");
    }
}

/// Whether any `sysctl.<netns>.saved` record exists (one readdir).
fn has_saved_records(run: &Path) -> bool {
    std::fs::read_dir(run)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("sysctl.") && name.ends_with(".saved")
        })
}
