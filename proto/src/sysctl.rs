//! IP forwarding in the host namespace for root-mode veth links: switched on
//! only if off (and, before IPv6 forwarding is, `accept_ra` raised from 1 to
//! 2 on the host's interfaces, so that they keep accepting router
//! advertisements: a router ignores them at 1, and switching forwarding on
//! deletes the default routes learned from them unless it is 2 — a host
//! whose IPv6 default route came from an RA lost it, and the sandbox its
//! IPv6, with the first session), the original values recorded in
//! `/run/pallium/sysctl.<netns inode>.saved`, and restored once no pallium
//! session started in that network namespace is alive any more (sysctls are
//! per network namespace; each session directory records its namespace in a
//! `netns` file).
//!
//! Used by the netbroker (which switches forwarding on and restores it) and
//! by the supervisor's garbage collector (which restores after a netbroker
//! killed before it could): all reads and writes of the sysctls and of the
//! saved file happen under an exclusive flock on `/run/pallium/net.lock`; a
//! session is alive while some process holds an flock on its
//! `/run/pallium/**/lock` file ([`crate::runtime`]).

#![forbid(unsafe_code)]

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::runtime::{self, SessionRef};

pub use crate::runtime::current_netns;

/// Where root-mode sessions keep their state.
pub const RUN_DIR: &str = runtime::ROOT_RUN_DIR;
/// The sysctls a veth uplink needs, relative to `/proc/sys`.
pub const FORWARDING: [&str; 2] = ["net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"];
/// Where the per-interface IPv6 settings are, relative to `/proc/sys`.
const V6_CONF: &str = "net/ipv6/conf";
/// Interfaces whose `accept_ra` stays as it is: the settings for all and
/// for new interfaces (our own veths must never take a sandbox's RAs), and
/// loopback.
const RA_SKIP: [&str; 3] = ["all", "default", "lo"];

/// What failed while handling the host's forwarding sysctls.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("create state directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The exclusive lock serialising address choice and sysctl changes of all
/// root-mode sessions.
#[derive(Debug)]
pub struct NetLock {
    _lock: Flock<File>,
    run_dir: PathBuf,
    /// Inode of the calling thread's network namespace: the sysctls' scope.
    scope: u64,
}

impl NetLock {
    /// Take `<run_dir>/net.lock`, creating `run_dir` (0711) if needed. Blocks.
    pub fn acquire(run_dir: &Path) -> Result<Self, SysctlError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(run_dir)
            .map_err(|source| SysctlError::Dir {
                path: run_dir.into(),
                source,
            })?;
        let path = run_dir.join(runtime::NET_LOCK);
        let lock = runtime::open_lock(&path)
            .and_then(runtime::lock_exclusive)
            .map_err(|source| SysctlError::Lock { path, source })?;
        Ok(NetLock {
            _lock: lock,
            run_dir: run_dir.into(),
            scope: current_netns(),
        })
    }

    fn saved_path(&self) -> PathBuf {
        saved_path(&self.run_dir, self.scope)
    }
}

/// The record of the values changed in network namespace `scope`.
pub fn saved_path(run_dir: &Path, scope: u64) -> PathBuf {
    run_dir.join(format!("sysctl.{scope}.saved"))
}

impl NetLock {
    /// The scope of this lock's sysctls: the network namespace it was taken in.
    pub fn scope(&self) -> u64 {
        self.scope
    }
}

/// Switch forwarding on in the calling thread's network namespace (`proc_sys`
/// is `/proc/sys` outside tests), recording each value we change.
pub fn enable_forwarding(lock: &NetLock, proc_sys: &Path) -> Result<(), SysctlError> {
    let saved_path = lock.saved_path();
    let mut saved = read_saved(&saved_path)?;
    for key in FORWARDING {
        let path = proc_sys.join(key);
        let value = read_trimmed(&path)?;
        if value != "0" {
            continue;
        }
        if key == FORWARDING[1] {
            keep_accepting_ras(proc_sys, &saved_path, &mut saved)?;
        }
        record(&saved_path, &mut saved, key, value)?;
        write_value(&path, "1")?;
    }
    Ok(())
}

/// Before IPv6 forwarding goes on: `accept_ra` 1 → 2 on every interface
/// of the namespace but [`RA_SKIP`], each recorded first.
fn keep_accepting_ras(
    proc_sys: &Path,
    saved_path: &Path,
    saved: &mut Vec<(String, String)>,
) -> Result<(), SysctlError> {
    let dir = proc_sys.join(V6_CONF);
    let entries = fs::read_dir(&dir).map_err(|source| SysctlError::Read {
        path: dir.clone(),
        source,
    })?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !RA_SKIP.contains(&n.as_str()))
        .collect();
    names.sort();
    for name in names {
        let key = format!("{V6_CONF}/{name}/accept_ra");
        let path = proc_sys.join(&key);
        // An interface that went away meanwhile has nothing to keep.
        let Ok(value) = read_trimmed(&path) else {
            continue;
        };
        if value == "1" {
            record(saved_path, saved, &key, value)?;
            write_value(&path, "2")?;
        }
    }
    Ok(())
}

/// Record `key`'s original `value` (the first one only) before it changes:
/// a crash in between leaves nothing unrestorable.
fn record(
    saved_path: &Path,
    saved: &mut Vec<(String, String)>,
    key: &str,
    value: String,
) -> Result<(), SysctlError> {
    if !saved.iter().any(|(k, _)| k == key) {
        saved.push((key.to_string(), value));
        write_saved(saved_path, saved)?;
    }
    Ok(())
}

/// Whether `key` is one we change, so may write back: the file is root's,
/// but never write arbitrary sysctls.
fn restorable(key: &str) -> bool {
    if FORWARDING.contains(&key) {
        return true;
    }
    let Some(name) = key
        .strip_prefix(V6_CONF)
        .and_then(|k| k.strip_prefix('/'))
        .and_then(|k| k.strip_suffix("/accept_ra"))
    else {
        return false;
    };
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !RA_SKIP.contains(&name)
}

/// If no session is alive (ignoring the lock file `own_lock`, the caller's own
/// session, which its supervisor may still hold), restore every saved value
/// and remove the record. Returns whether it restored. Call under [`NetLock`].
///
/// The supervisor's garbage collector calls it too (`own_lock` None), for a
/// netbroker killed before it could restore.
pub fn restore_if_idle(
    lock: &NetLock,
    proc_sys: &Path,
    own_lock: Option<&Path>,
) -> Result<bool, SysctlError> {
    if any_session_alive(&lock.run_dir, own_lock, lock.scope) {
        return Ok(false);
    }
    let saved_path = lock.saved_path();
    let saved = read_saved(&saved_path)?;
    // Last changed, first restored: forwarding goes off before accept_ra
    // goes back to 1.
    for (key, value) in saved.iter().rev() {
        if !restorable(key) || !matches!(value.as_str(), "0" | "1" | "2") {
            continue;
        }
        let path = proc_sys.join(key);
        // An interface gone since has nothing to restore.
        if key.ends_with("/accept_ra") && !path.exists() {
            continue;
        }
        write_value(&path, value)?;
    }
    match fs::remove_file(&saved_path) {
        Ok(()) => Ok(!saved.is_empty()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(SysctlError::Write {
            path: saved_path,
            source,
        }),
    }
}

/// Remove the saved records of network namespaces that are gone: sessions
/// started inside a namespace that was deleted before their netbroker could
/// restore (a test's namespace, a container's) leave a record nothing can
/// ever restore. A record is dropped only when no session of its scope is
/// alive and no process is in that namespace (nor is it mounted under
/// `/run/netns`). Returns how many were removed. Call under [`NetLock`];
/// cheap when every record is the caller's own scope (nothing to scan).
pub fn forget_gone_scopes(lock: &NetLock) -> usize {
    let Ok(entries) = fs::read_dir(&lock.run_dir) else {
        return 0;
    };
    let others: Vec<u64> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("sysctl.")?
                .strip_suffix(".saved")?
                .parse()
                .ok()
        })
        .filter(|&scope| scope != lock.scope)
        .collect();
    if others.is_empty() {
        return 0;
    }
    let live = live_netns();
    let mut removed = 0;
    for scope in others {
        if live.contains(&scope) || any_session_alive(&lock.run_dir, None, scope) {
            continue;
        }
        if fs::remove_file(saved_path(&lock.run_dir, scope)).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The inodes of every network namespace some process (or thread) is in,
/// or that is mounted under `/run/netns`.
fn live_netns() -> std::collections::HashSet<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let mut live = std::collections::HashSet::new();
    let inode = |p: &Path| fs::metadata(p).map(|m| m.ino()).ok();
    for dir in ["/run/netns", "/var/run/netns"] {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            live.extend(inode(&e.path()));
        }
    }
    for p in fs::read_dir("/proc").into_iter().flatten().flatten() {
        if !p
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        for t in fs::read_dir(p.path().join("task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            live.extend(inode(&t.path().join("ns/net")));
        }
    }
    live
}

/// Whether any session's `lock` (`<run_dir>/profile_*/session_*/lock`, other
/// than `except`) is flocked by someone and belongs to a session started in
/// network namespace `scope` (a session directory without a `netns` record
/// counts, to be safe): that is a live session using these sysctls. Only
/// session directories count: a hop's data directory inside one may hold a
/// `lock` of its own (tor's, flocked while tor runs, with no record beside
/// it), which kept every restore away while any tor hop ran anywhere.
pub fn any_session_alive(run_dir: &Path, except: Option<&Path>, scope: u64) -> bool {
    let mut stack = vec![run_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        // The run directory and its profile directories hold directories
        // to search; a session directory holds the lock.
        let is_session = SessionRef::from_dir(&dir).is_some_and(|s| s.run == run_dir);
        for e in entries.flatten() {
            let path = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() && !is_session {
                stack.push(path);
            } else if is_session
                && ft.is_file()
                && e.file_name() == runtime::SESSION_LOCK
                && Some(path.as_path()) != except
            {
                let recorded = fs::read_to_string(dir.join(runtime::NETNS_RECORD)).ok();
                if recorded.is_some_and(|r| r.trim() != scope.to_string()) {
                    continue;
                }
                let Ok(f) = File::open(&path) else { continue };
                if Flock::lock(f, FlockArg::LockExclusiveNonblock).is_err() {
                    return true;
                }
            }
        }
    }
    false
}

/// The lock file of session `session_id` ("<profile id>-<index>"), as the
/// supervisor lays it out: `<run_dir>/<profile id>/session_<index>/lock`.
pub fn session_lock_path(run_dir: &Path, session_id: &str) -> Option<PathBuf> {
    SessionRef::from_id(run_dir, session_id).map(|s| s.lock_path())
}

fn read_trimmed(path: &Path) -> Result<String, SysctlError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| SysctlError::Read {
            path: path.into(),
            source,
        })
}

fn write_value(path: &Path, value: &str) -> Result<(), SysctlError> {
    fs::write(path, format!("{value}\n")).map_err(|source| SysctlError::Write {
        path: path.into(),
        source,
    })
}

fn read_saved(path: &Path) -> Result<Vec<(String, String)>, SysctlError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(parse_saved(&s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(SysctlError::Read {
            path: path.into(),
            source,
        }),
    }
}

fn write_saved(path: &Path, saved: &[(String, String)]) -> Result<(), SysctlError> {
    let text: String = saved.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text)
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|source| SysctlError::Write {
            path: path.into(),
            source,
        })
}

/// `key value` per line; anything else is ignored.
fn parse_saved(s: &str) -> Vec<(String, String)> {
    s.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(' ')?;
            Some((k.to_string(), v.trim().to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pallium-sysctl-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("proc/net/ipv4")).unwrap();
        fs::create_dir_all(d.join("proc/net/ipv6/conf/all")).unwrap();
        fs::write(d.join("proc/net/ipv4/ip_forward"), "0\n").unwrap();
        fs::write(d.join("proc/net/ipv6/conf/all/forwarding"), "1\n").unwrap();
        d
    }

    #[test]
    fn records_of_namespaces_that_are_gone_are_forgotten() {
        let d = scratch("gone");
        let run = d.join("run");
        let lock = NetLock::acquire(&run).unwrap();
        let own = saved_path(&run, lock.scope());
        fs::write(&own, "net/ipv4/ip_forward 0\n").unwrap();
        // Inode 1 is no network namespace anyone is in.
        let gone = saved_path(&run, 1);
        fs::write(&gone, "net/ipv4/ip_forward 0\n").unwrap();
        // init's namespace is alive whatever ours is.
        let init = fs::metadata("/proc/1/ns/net").map(|m| {
            use std::os::unix::fs::MetadataExt as _;
            m.ino()
        });
        let alive = init
            .ok()
            .filter(|&i| i != lock.scope())
            .map(|i| saved_path(&run, i));
        if let Some(a) = &alive {
            fs::write(a, "net/ipv4/ip_forward 0\n").unwrap();
        }
        assert_eq!(forget_gone_scopes(&lock), 1);
        assert!(!gone.exists() && own.exists());
        if let Some(a) = &alive {
            assert!(a.exists(), "a live namespace's record was dropped");
        }
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn enables_only_what_was_off_and_restores_it() {
        let d = scratch("restore");
        let proc_sys = d.join("proc");
        let run = d.join("run");
        let lock = NetLock::acquire(&run).unwrap();
        enable_forwarding(&lock, &proc_sys).unwrap();
        let v4 = proc_sys.join(FORWARDING[0]);
        assert_eq!(fs::read_to_string(&v4).unwrap(), "1\n");
        let saved =
            fs::read_to_string(run.join(format!("sysctl.{}.saved", current_netns()))).unwrap();
        assert_eq!(saved, "net/ipv4/ip_forward 0\n");
        // A second session finds it on and records nothing new.
        enable_forwarding(&lock, &proc_sys).unwrap();
        assert_eq!(
            fs::read_to_string(run.join(format!("sysctl.{}.saved", current_netns()))).unwrap(),
            saved
        );
        assert!(restore_if_idle(&lock, &proc_sys, None).unwrap());
        assert_eq!(fs::read_to_string(&v4).unwrap(), "0\n");
        assert_eq!(
            fs::read_to_string(proc_sys.join(FORWARDING[1])).unwrap(),
            "1\n"
        );
        assert!(!run
            .join(format!("sysctl.{}.saved", current_netns()))
            .exists());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn ipv6_forwarding_keeps_interfaces_accepting_router_advertisements() {
        let d = scratch("ra");
        let proc_sys = d.join("proc");
        let run = d.join("run");
        let conf = proc_sys.join(V6_CONF);
        fs::write(conf.join("all/forwarding"), "0\n").unwrap();
        for (name, ra) in [
            ("all", "1"),
            ("default", "1"),
            ("lo", "1"),
            ("eth0", "1"),
            ("wlan0", "0"),
            ("eth1", "2"),
            ("pallium01234567", "0"),
        ] {
            fs::create_dir_all(conf.join(name)).unwrap();
            fs::write(conf.join(name).join("accept_ra"), format!("{ra}\n")).unwrap();
        }
        let ra = |name: &str| {
            fs::read_to_string(conf.join(name).join("accept_ra"))
                .unwrap()
                .trim()
                .to_string()
        };
        let lock = NetLock::acquire(&run).unwrap();
        enable_forwarding(&lock, &proc_sys).unwrap();
        let now: Vec<String> = [
            "all",
            "default",
            "lo",
            "eth0",
            "wlan0",
            "eth1",
            "pallium01234567",
        ]
        .map(ra)
        .to_vec();
        assert_eq!(now, ["1", "1", "1", "2", "0", "2", "0"]);
        // Recorded before forwarding went on.
        let saved = fs::read_to_string(saved_path(&run, lock.scope())).unwrap();
        assert_eq!(
            saved,
            "net/ipv4/ip_forward 0\nnet/ipv6/conf/eth0/accept_ra 1\nnet/ipv6/conf/all/forwarding 0\n"
        );
        assert!(restore_if_idle(&lock, &proc_sys, None).unwrap());
        assert_eq!(ra("eth0"), "1");
        assert_eq!(
            fs::read_to_string(conf.join("all/forwarding")).unwrap(),
            "0\n"
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn only_our_own_keys_are_restored() {
        for key in [
            "net/ipv4/ip_forward",
            "net/ipv6/conf/all/forwarding",
            "net/ipv6/conf/eth0/accept_ra",
        ] {
            assert!(restorable(key), "{key}");
        }
        for key in [
            "kernel/core_pattern",
            "net/ipv6/conf/all/accept_ra",
            "net/ipv6/conf/default/accept_ra",
            "net/ipv6/conf/../../../kernel/accept_ra",
            "net/ipv6/conf/eth0/forwarding",
            "net/ipv6/conf//accept_ra",
        ] {
            assert!(!restorable(key), "{key}");
        }
    }

    #[test]
    fn a_held_session_lock_defers_restore() {
        let d = scratch("live");
        let proc_sys = d.join("proc");
        let run = d.join("run");
        let lock = NetLock::acquire(&run).unwrap();
        enable_forwarding(&lock, &proc_sys).unwrap();
        let other = session_lock_path(&run, "web-1-77").unwrap();
        fs::create_dir_all(other.parent().unwrap()).unwrap();
        let held = Flock::lock(File::create(&other).unwrap(), FlockArg::LockExclusive).unwrap();
        assert!(!restore_if_idle(&lock, &proc_sys, None).unwrap());
        assert_eq!(
            fs::read_to_string(proc_sys.join(FORWARDING[0])).unwrap(),
            "1\n"
        );
        // Our own session's lock does not count.
        assert!(restore_if_idle(&lock, &proc_sys, Some(&other)).unwrap());
        drop(held);
        let _ = fs::remove_dir_all(&d);
    }

    /// A `lock` a hop keeps in its data directory inside a session (tor's,
    /// flocked while tor runs, no `netns` record beside it) is not a
    /// session's: it used to defer every restore while any tor hop ran.
    #[test]
    fn a_hops_own_lock_is_no_session() {
        let d = scratch("torlock");
        let proc_sys = d.join("proc");
        let run = d.join("run");
        let lock = NetLock::acquire(&run).unwrap();
        enable_forwarding(&lock, &proc_sys).unwrap();
        let session = session_lock_path(&run, "web-1-77").unwrap();
        let tor = session.parent().unwrap().join("hops/hop1/tor/lock");
        fs::create_dir_all(tor.parent().unwrap()).unwrap();
        // The session itself is of another network namespace.
        fs::write(session.parent().unwrap().join(runtime::NETNS_RECORD), "1\n").unwrap();
        let held = Flock::lock(File::create(&tor).unwrap(), FlockArg::LockExclusive).unwrap();
        let session_held =
            Flock::lock(File::create(&session).unwrap(), FlockArg::LockExclusive).unwrap();
        assert!(restore_if_idle(&lock, &proc_sys, None).unwrap());
        assert_eq!(
            fs::read_to_string(proc_sys.join(FORWARDING[0])).unwrap(),
            "0\n"
        );
        drop((held, session_held));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn session_lock_path_splits_at_last_dash() {
        let p = session_lock_path(Path::new("/run/pallium"), "my-profile-3-4242").unwrap();
        assert_eq!(
            p,
            Path::new("/run/pallium/profile_my-profile/session_3/lock")
        );
        assert!(session_lock_path(Path::new("/r"), "noindex").is_none());
        assert!(session_lock_path(Path::new("/r"), "p-x-1").is_none());
    }
}
