//! Where sessions live: the runtime directory, profile ids, and stale-session
//! garbage collection.
//!
//! Layout: `<run>/profile_<id>/session_<N>/{lock, netns, supervisor.pid,
//! control.sock, info.json}`
//! with `<run>` = `/run/pallium` as root, else `$XDG_RUNTIME_DIR/pallium` (or
//! `/tmp/pallium-<uid>` without one). A session is alive exactly while its
//! supervisor holds an exclusive flock on its `lock` file: no pid guessing.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};

/// The per-user runtime directory, created 0700 (0711 as root) if needed.
pub(crate) fn run_dir() -> Result<PathBuf> {
    let dir = run_dir_path();
    let root = nix::unistd::getuid().is_root();
    ensure_private_dir(&dir, if root { 0o711 } else { 0o700 })?;
    Ok(dir)
}

/// Where [`run_dir`] is, without creating it.
fn run_dir_path() -> PathBuf {
    let uid = nix::unistd::getuid();
    if uid.is_root() {
        PathBuf::from("/run/pallium")
    } else {
        match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
            Some(d) if d.is_dir() => d.join("pallium"),
            _ => PathBuf::from(format!("/tmp/pallium-{uid}")),
        }
    }
}

/// Host directories the sandbox must not see: pallium's runtime directory
/// (every session's control socket) first, then the caller's
/// `$XDG_RUNTIME_DIR` (session bus, agents, Wayland, audio). Nothing is
/// created (`pallium check` calls it too).
pub(crate) fn hidden_dirs() -> Vec<String> {
    let mut dirs = vec![run_dir_path().display().to_string()];
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

/// Short stable id of a profile identity (FNV-1a, hex): names its directory.
pub(crate) fn profile_id(pseudo_path: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in pseudo_path.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// Open `path` for locking (created 0600).
pub(crate) fn open_lock(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("cannot open lock {}", path.display()))
}

/// Exclusive lock, blocking.
pub(crate) fn lock_exclusive(f: File) -> Result<Flock<File>> {
    Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| anyhow::anyhow!("flock: {e}"))
}

/// Try to take an exclusive lock; None when someone holds it.
pub(crate) fn try_lock(f: File) -> Result<Option<Flock<File>>> {
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::Error::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(anyhow::anyhow!("flock: {e}")),
    }
}

/// Is the session in `dir` alive (its lock held by a supervisor)?
pub(crate) fn session_alive(dir: &Path) -> bool {
    let Ok(f) = File::open(dir.join("lock")) else {
        return false;
    };
    matches!(try_lock(f), Ok(None))
}

/// The registry lock (`<run>/.lock`, never removed): held briefly while a
/// session directory is created or removed, so index allocation and garbage
/// collection never race.
pub(crate) fn registry_lock(run: &Path) -> Result<Flock<File>> {
    lock_exclusive(open_lock(&run.join(".lock"))?)
}

/// Remove the directories of sessions whose supervisor is gone (e.g. it was
/// killed with SIGKILL: the kernel already removed its namespaces, links,
/// tables and processes; only these files remain). The caller holds the
/// registry lock.
pub(crate) fn collect_garbage(run: &Path) {
    let Ok(profiles) = fs::read_dir(run) else {
        return;
    };
    for p in profiles.flatten() {
        let pdir = p.path();
        if !p.file_name().to_string_lossy().starts_with("profile_") {
            continue;
        }
        for s in fs::read_dir(&pdir).into_iter().flatten().flatten() {
            let sdir = s.path();
            if s.file_name().to_string_lossy().starts_with("session_") && !session_alive(&sdir) {
                let _ = fs::remove_dir_all(&sdir);
            }
        }
        let _ = fs::remove_dir(&pdir); // only succeeds when empty
    }
    restore_forwarding_if_idle(run);
}

/// The sysctls the netbroker may have switched on for the host, and only these.
const FORWARDING: [&str; 2] = ["net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"];

/// Inode of our network namespace: the scope of the forwarding sysctls.
pub(crate) fn current_netns() -> u64 {
    fs::metadata("/proc/thread-self/ns/net")
        .map(|m| m.ino())
        .unwrap_or(0)
}

/// Mirror of the netbroker's restore (netbroker/src/sysctl.rs) for a broker
/// that was killed before it could restore: when no session started in our
/// network namespace is alive, write back the values recorded in
/// `sysctl.<netns>.saved` and remove the record.
fn restore_forwarding_if_idle(run: &Path) {
    let scope = current_netns();
    let saved = run.join(format!("sysctl.{scope}.saved"));
    if !saved.exists() || !nix::unistd::getuid().is_root() {
        return;
    }
    let Ok(lock) = open_lock(&run.join("net.lock")) else {
        return;
    };
    let Ok(_guard) = lock_exclusive(lock) else {
        return;
    };
    if any_session_alive(run, scope) {
        return;
    }
    let Ok(text) = fs::read_to_string(&saved) else {
        return;
    };
    for line in text.lines() {
        if let Some((key, value)) = line.split_once(' ') {
            if FORWARDING.contains(&key) && matches!(value, "0" | "1") {
                let _ = fs::write(Path::new("/proc/sys").join(key), format!("{value}\n"));
            }
        }
    }
    let _ = fs::remove_file(&saved);
}

/// A live session started in network namespace `scope` (one without a
/// `netns` record counts, to be safe).
fn any_session_alive(run: &Path, scope: u64) -> bool {
    fs::read_dir(run).into_iter().flatten().flatten().any(|p| {
        fs::read_dir(p.path())
            .into_iter()
            .flatten()
            .flatten()
            .any(|s| {
                let recorded = fs::read_to_string(s.path().join("netns")).ok();
                recorded.is_none_or(|r| r.trim() == scope.to_string()) && session_alive(&s.path())
            })
    })
}
