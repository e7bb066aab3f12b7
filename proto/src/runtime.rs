//! Where sessions live, for every crate: the runtime directory's layout, a
//! profile's id, a session's id, and whether a session is alive.
//!
//! Layout: `<run>/profile_<id>/session_<N>/{lock, netns, supervisor.pid,
//! control.sock, info.json, hops/}`, `<run>/.lock` (the registry lock) and,
//! as root, `<run>/net.lock` and `<run>/sysctl.<netns inode>.saved`
//! ([`crate::sysctl`]); `<run>` is `/run/pallium` as root, else
//! `$XDG_RUNTIME_DIR/pallium` (or `/tmp/pallium-<uid>` without one). A
//! session is alive exactly while its supervisor holds an exclusive flock on
//! its `lock` file: no pid guessing.

#![forbid(unsafe_code)]

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Root's runtime directory.
pub const ROOT_RUN_DIR: &str = "/run/pallium";
/// The registry lock in `<run>`: held while a session directory is created
/// or removed, so index allocation and garbage collection never race.
pub const REGISTRY_LOCK: &str = ".lock";
/// The lock serialising root-mode address choice and sysctl changes.
pub const NET_LOCK: &str = "net.lock";
/// A session's lock: flocked by its supervisor for the session's lifetime.
pub const SESSION_LOCK: &str = "lock";
/// A session's record of the network namespace it started in.
pub const NETNS_RECORD: &str = "netns";
/// A session's record of its supervisor's pid.
pub const PID_FILE: &str = "supervisor.pid";
/// A session's control socket.
pub const CONTROL_SOCKET: &str = "control.sock";
/// What `pallium list` shows of a session.
pub const INFO_FILE: &str = "info.json";
/// The hops' private directory in a session directory.
pub const HOPS_DIR: &str = "hops";
/// Root: `<run>/.route-<netns>-<table>` ([`route_marker`]) reserves routing
/// table `<table>` of network namespace `<netns>` (its inode, as
/// [`current_netns`]) and the policy rules that look it up, for a netbroker's
/// `network.outbound_interface` or `network.bridge.routes`. Created with
/// O_EXCL before the table is used, removed after teardown; the next pallium
/// command sweeps what a netbroker killed with SIGKILL left.
pub const ROUTE_MARKER_PREFIX: &str = ".route-";
/// The marker reserving `table` in the calling thread's network namespace.
pub fn route_marker(run: &Path, table: u32) -> PathBuf {
    run.join(format!("{ROUTE_MARKER_PREFIX}{}-{table}", current_netns()))
}

/// Root: `<run>/.ethbridge-<netns>-<bridge>` ([`bridge_marker`]) marks the
/// Linux bridge of a netbroker's `network.bridge.eth_bridge` in network
/// namespace `<netns>`; it holds the name of the session's veth on that
/// bridge. Written before the bridge is made, removed after it is deleted;
/// the next pallium command deletes a marked bridge whose veth is gone (its
/// netbroker was killed with SIGKILL), which releases the host's devices.
pub const BRIDGE_MARKER_PREFIX: &str = ".ethbridge-";
/// The marker of Linux bridge `bridge` in the calling thread's network
/// namespace.
pub fn bridge_marker(run: &Path, bridge: &str) -> PathBuf {
    run.join(format!(
        "{BRIDGE_MARKER_PREFIX}{}-{bridge}",
        current_netns()
    ))
}

/// The first host routing table (and fwmark) sessions take: the original's.
pub const ROUTE_TABLE_BASE: u32 = 0x706c6d;
/// How many tables from [`ROUTE_TABLE_BASE`] sessions may take.
pub const ROUTE_TABLES: u32 = 256;

/// The runtime directory of the calling user (see the module doc), not created.
pub fn run_dir_path() -> PathBuf {
    let xdg = std::env::var_os("XDG_RUNTIME_DIR");
    run_dir_for(nix::unistd::getuid().as_raw(), xdg.as_deref())
}

/// The runtime directory of `uid` with `$XDG_RUNTIME_DIR` = `xdg`.
pub fn run_dir_for(uid: u32, xdg: Option<&OsStr>) -> PathBuf {
    if uid == 0 {
        return PathBuf::from(ROOT_RUN_DIR);
    }
    match xdg.map(PathBuf::from) {
        Some(d) if d.is_dir() => d.join("pallium"),
        _ => PathBuf::from(format!("/tmp/pallium-{uid}")),
    }
}

/// Short stable id of a profile identity (its pseudo path): 64-bit FNV-1a in hex.
pub fn profile_id(pseudo_path: &str) -> String {
    format!("{:016x}", crate::ids::fnv1a64(pseudo_path))
}

/// The directory of a profile's sessions.
pub fn profile_dir(run: &Path, profile_id: &str) -> PathBuf {
    run.join(format!("profile_{profile_id}"))
}

/// Session `index`'s directory in a profile directory.
pub fn session_dir(profile_dir: &Path, index: u32) -> PathBuf {
    profile_dir.join(format!("session_{index}"))
}

/// A session, as its directory names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRef {
    pub run: PathBuf,
    pub profile_id: String,
    pub index: u32,
}

impl SessionRef {
    /// `<run>/profile_<id>/session_<index>`; None for any other shape.
    pub fn from_dir(dir: &Path) -> Option<SessionRef> {
        let index = dir.file_name()?.to_str()?.strip_prefix("session_")?;
        let pdir = dir.parent()?;
        let profile_id = pdir.file_name()?.to_str()?.strip_prefix("profile_")?;
        Some(SessionRef {
            run: pdir.parent()?.to_path_buf(),
            profile_id: profile_id.to_string(),
            index: index.parse().ok()?,
        })
    }

    /// The session of session id `id` (see [`SessionRef::id`]) below `run`.
    pub fn from_id(run: &Path, id: &str) -> Option<SessionRef> {
        let mut parts = id.rsplitn(3, '-');
        let _nonce = parts.next()?;
        let index = parts.next()?.parse().ok()?;
        Some(SessionRef {
            run: run.to_path_buf(),
            profile_id: parts.next()?.to_string(),
            index,
        })
    }

    /// The session's id, `<profile id>-<index>-<nonce>`, the nonce being its
    /// supervisor's pid: it keeps link names unique while the kernel still
    /// tears down a previous session of the index (asynchronously), and the
    /// netbroker derives the session's lock from the rest.
    pub fn id(&self, nonce: u32) -> String {
        format!("{}-{}-{nonce}", self.profile_id, self.index)
    }

    pub fn dir(&self) -> PathBuf {
        session_dir(&profile_dir(&self.run, &self.profile_id), self.index)
    }

    pub fn lock_path(&self) -> PathBuf {
        self.dir().join(SESSION_LOCK)
    }
}

/// Open `path` for locking (created 0600, never through a symlink).
pub fn open_lock(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

/// Exclusive lock, blocking.
pub fn lock_exclusive(f: File) -> io::Result<Flock<File>> {
    Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| e.into())
}

/// Try to take an exclusive lock; None when someone holds it.
pub fn try_lock(f: File) -> io::Result<Option<Flock<File>>> {
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::Error::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

/// The registry lock of `run` (never removed), blocking.
pub fn registry_lock(run: &Path) -> io::Result<Flock<File>> {
    lock_exclusive(open_lock(&run.join(REGISTRY_LOCK))?)
}

/// Is the session in `dir` alive (its lock held by a supervisor)?
pub fn session_alive(dir: &Path) -> bool {
    let Ok(f) = File::open(dir.join(SESSION_LOCK)) else {
        return false;
    };
    matches!(try_lock(f), Ok(None))
}

/// Remove session directory `dir` (and its profile directory when empty)
/// unless its session is alive. The caller holds the registry lock; a path
/// not of the layout is left alone.
pub fn remove_if_dead(dir: &Path) {
    if SessionRef::from_dir(dir).is_none() || session_alive(dir) {
        return;
    }
    let _ = fs::remove_dir_all(dir);
    if let Some(pdir) = dir.parent() {
        let _ = fs::remove_dir(pdir); // only succeeds when empty
    }
}

/// Remove the directories of sessions whose supervisor is gone, under `run`
/// (the caller holds the registry lock).
pub fn remove_dead_sessions(run: &Path) {
    let Ok(profiles) = fs::read_dir(run) else {
        return;
    };
    for p in profiles.flatten() {
        let pdir = p.path();
        if !p.file_name().to_string_lossy().starts_with("profile_") {
            continue;
        }
        for s in fs::read_dir(&pdir).into_iter().flatten().flatten() {
            remove_if_dead(&s.path());
        }
        let _ = fs::remove_dir(&pdir); // only succeeds when empty
    }
}

/// Inode of the calling thread's network namespace (0 if unknown): the
/// scope of the forwarding sysctls.
pub fn current_netns() -> u64 {
    fs::metadata("/proc/thread-self/ns/net")
        .map(|m| m.ino())
        .unwrap_or(0)
}

/// Where `program` is: the first executable regular file of that name in
/// `$PATH` (the usual system directories when it is unset). A `PATH`
/// without it means it is not there: the caller names the package.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into());
    find_in(program, std::env::split_paths(&path))
}

/// [`find_program`], then the usual system directories (the netbroker's
/// daemons: `tor` or `openvpn` in `/usr/sbin` whatever the caller's `PATH`).
pub fn find_program_or_system(program: &str) -> Option<PathBuf> {
    const SYSTEM: [&str; 4] = ["/usr/bin", "/usr/sbin", "/bin", "/sbin"];
    find_program(program).or_else(|| find_in(program, SYSTEM.map(PathBuf::from)))
}

fn find_in(program: &str, dirs: impl IntoIterator<Item = PathBuf>) -> Option<PathBuf> {
    dirs.into_iter()
        .filter(|d| d.is_absolute())
        .map(|d| d.join(program))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_and_directories_name_each_other() {
        let s = SessionRef::from_id(Path::new("/run/pallium"), "0123abcd-3-4242").unwrap();
        assert_eq!(
            s.lock_path(),
            Path::new("/run/pallium/profile_0123abcd/session_3/lock")
        );
        assert_eq!(s.id(4242), "0123abcd-3-4242");
        assert_eq!(SessionRef::from_dir(&s.dir()), Some(s));
        // A profile id may hold dashes: the index is the second field from the end.
        let s = SessionRef::from_id(Path::new("/r"), "my-profile-3-1").unwrap();
        assert_eq!(s.profile_id, "my-profile");
        assert!(SessionRef::from_id(Path::new("/r"), "noindex").is_none());
        assert!(SessionRef::from_id(Path::new("/r"), "p-x-1").is_none());
        assert!(SessionRef::from_dir(Path::new("/r/profile_a/other")).is_none());
        assert!(SessionRef::from_dir(Path::new("/r/x/session_1")).is_none());
    }

    #[test]
    fn run_dirs_are_the_documented_ones() {
        assert_eq!(run_dir_for(0, None), Path::new(ROOT_RUN_DIR));
        assert_eq!(
            run_dir_for(1000, Some(OsStr::new("/nonexistent/xdg"))),
            Path::new("/tmp/pallium-1000")
        );
        assert_eq!(
            run_dir_for(1000, Some(OsStr::new("/tmp"))),
            Path::new("/tmp/pallium")
        );
        assert_eq!(profile_id("file:///p.json").len(), 16);
    }

    #[test]
    fn a_held_lock_is_a_live_session() {
        let d = std::env::temp_dir().join(format!("pallium-rt-{}", std::process::id()));
        let s = session_dir(&profile_dir(&d, "ab"), 0);
        fs::create_dir_all(&s).unwrap();
        assert!(!session_alive(&s));
        let held = try_lock(open_lock(&s.join(SESSION_LOCK)).unwrap())
            .unwrap()
            .unwrap();
        assert!(session_alive(&s));
        remove_dead_sessions(&d);
        assert!(s.exists());
        drop(held);
        remove_dead_sessions(&d);
        assert!(!s.parent().unwrap().exists());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn finds_sh() {
        assert!(find_program("sh").is_some());
        assert!(find_program_or_system("sh").is_some());
        assert!(find_program("pallium-no-such-program").is_none());
    }
}
