//! Session registry: take the lowest free index of a profile under a lock,
//! record what `pallium list` shows, and find running sessions.

use std::fs::{self, File};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::Flock;
use proto::control::SessionInfo;
use proto::runtime::{self as layout, SessionRef};

use crate::runtime;

/// Highest session index tried, as in the original.
const MAX_SESSIONS: u32 = 1024;

/// A session this process owns: alive while `_lock` is held.
#[derive(Debug)]
pub(crate) struct OwnedSession {
    pub(crate) index: u32,
    pub(crate) dir: PathBuf,
    /// The registry lock file, opened while we may (a root-mode supervisor
    /// switches to a uid that may not open root's), taken at removal.
    registry: Option<File>,
    _lock: Flock<File>,
}

impl OwnedSession {
    /// The session's id with `nonce` (`proto::runtime::SessionRef::id`).
    pub(crate) fn id(&self, nonce: u32) -> String {
        SessionRef::from_dir(&self.dir)
            .map(|r| r.id(nonce))
            .unwrap_or_default()
    }

    pub(crate) fn control_path(&self) -> PathBuf {
        self.dir.join(layout::CONTROL_SOCKET)
    }

    /// Record what `pallium list` shows without asking the supervisor.
    pub(crate) fn write_info(&self, info: &SessionInfo) -> Result<()> {
        let json = serde_json::json!({
            "profile": info.profile,
            "index": info.index,
            "supervisor_pid": info.supervisor_pid,
            "hops": info.hops,
            "started_unix": info.started_unix,
            "links": info.links,
            "init_pid": info.init_pid,
        });
        let tmp = self.dir.join("info.json.tmp");
        fs::write(&tmp, json.to_string()).context("writing session info")?;
        fs::rename(&tmp, self.dir.join(layout::INFO_FILE)).context("writing session info")?;
        Ok(())
    }
}

impl Drop for OwnedSession {
    fn drop(&mut self) {
        let Some(pdir) = self.dir.parent() else {
            return;
        };
        let Some(run) = pdir.parent() else { return };
        // Under the registry lock, so no other process is creating a session
        // in the profile directory we may remove. Root mode, as the
        // session's uid, we may only empty our directory: the netbroker
        // removes it once our lock is gone (netbroker/src/orphan.rs).
        let _guard = match self.registry.take() {
            Some(f) => layout::lock_exclusive(f).ok(),
            None => runtime::registry_lock(run).ok(),
        };
        let _ = fs::remove_dir_all(&self.dir);
        let _ = fs::remove_dir(pdir); // only succeeds when no other session is left
    }
}

/// Take a session of the profile `pseudo_path`: index 0 (failing if it is
/// running) or, with `new_session`, the lowest free index.
///
/// `before_claim` runs with the chosen directory before anything exists on
/// disk (it starts the netbroker, which removes the directory if we die), so
/// a SIGKILL at any moment leaves nothing behind.
pub(crate) fn create<T>(
    pseudo_path: &str,
    new_session: bool,
    before_claim: impl FnOnce(&Path) -> Result<T>,
) -> Result<(OwnedSession, T)> {
    let run = runtime::run_dir()?;
    let _guard = runtime::registry_lock(&run)?;
    runtime::collect_garbage(&run);
    let pdir = profile_dir(&run, pseudo_path);
    let range = if new_session { 0..MAX_SESSIONS } else { 0..1 };
    let free = range.into_iter().find(|i| {
        let dir = layout::session_dir(&pdir, *i);
        !dir.exists() || !runtime::session_alive(&dir)
    });
    if let Some(index) = free {
        let dir = layout::session_dir(&pdir, index);
        let extra = before_claim(&dir)?;
        runtime::ensure_private_dir(&pdir, 0o711)?;
        // A dead session's leftovers: reclaim the index.
        let _ = fs::remove_dir_all(&dir);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let lock = runtime::try_lock(runtime::open_lock(&dir.join(layout::SESSION_LOCK))?)?
            .context("session lock taken by another process")?;
        // The network namespace we run in: the scope of host sysctls the
        // netbroker may change for this session.
        fs::write(
            dir.join(layout::NETNS_RECORD),
            runtime::current_netns().to_string(),
        )
        .context("writing the session's netns record")?;
        // This process supervises the session: clients check that the
        // control socket's server is this pid before they use it (written
        // long before the socket is bound).
        fs::write(dir.join(layout::PID_FILE), std::process::id().to_string())
            .context("writing the session's supervisor pid")?;
        return Ok((
            OwnedSession {
                index,
                dir,
                registry: layout::open_lock(&run.join(layout::REGISTRY_LOCK)).ok(),
                _lock: lock,
            },
            extra,
        ));
    }
    if new_session {
        bail!("cannot create a new session: all {MAX_SESSIONS} session indexes are in use");
    }
    bail!("the profile is already running (session 0). To open another session, use --new-session; to enter it, use `pallium exec`/`pallium shell`")
}

/// The directory of a profile's sessions.
pub(crate) fn profile_dir(run: &Path, pseudo_path: &str) -> PathBuf {
    layout::profile_dir(run, &runtime::profile_id(pseudo_path))
}

/// The directory of a running session, or a clear error saying how to start one.
pub(crate) fn find(pseudo_path: &str, display: &str, index: u32) -> Result<PathBuf> {
    let run = runtime::run_dir()?;
    let dir = layout::session_dir(&profile_dir(&run, pseudo_path), index);
    if runtime::session_alive(&dir) {
        return Ok(dir);
    }
    let running = running_indexes(&run, pseudo_path);
    // Born between the two looks (its lock taken just now): it is there.
    if running.contains(&index) {
        return Ok(dir);
    }
    if running.is_empty() {
        bail!("no session of profile {display} is running; start one with `pallium run {display}`, or use `pallium exec --one-shot {display} -- CMD`")
    }
    let list: Vec<String> = running.iter().map(u32::to_string).collect();
    bail!("session {index} of profile {display} does not exist; running sessions: {} (choose one with -s N)", list.join(", "))
}

fn running_indexes(run: &Path, pseudo_path: &str) -> Vec<u32> {
    let pdir = profile_dir(run, pseudo_path);
    let mut out: Vec<u32> = fs::read_dir(&pdir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("session_")?
                .parse()
                .ok()
        })
        .filter(|i| runtime::session_alive(&layout::session_dir(&pdir, *i)))
        .collect();
    out.sort_unstable();
    out
}

/// Every running session's recorded info, sorted by profile then index.
pub(crate) fn list_all() -> Result<Vec<SessionInfo>> {
    let run = runtime::run_dir()?;
    {
        let _guard = runtime::registry_lock(&run)?;
        runtime::collect_garbage(&run);
    }
    let mut out = Vec::new();
    for p in fs::read_dir(&run).into_iter().flatten().flatten() {
        for s in fs::read_dir(p.path()).into_iter().flatten().flatten() {
            let dir = s.path();
            if !runtime::session_alive(&dir) {
                continue;
            }
            if let Some(info) = read_info(&dir) {
                out.push(info);
            }
        }
    }
    out.sort_by(|a, b| (&a.profile, a.index).cmp(&(&b.profile, b.index)));
    Ok(out)
}

/// The pid of the session's supervisor, as it recorded it when it claimed
/// the directory.
pub(crate) fn recorded_supervisor(dir: &Path) -> Option<i32> {
    fs::read_to_string(dir.join(layout::PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
}

pub(crate) fn read_info(dir: &Path) -> Option<SessionInfo> {
    let v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join(layout::INFO_FILE)).ok()?).ok()?;
    let strings = |k: &str| -> Vec<String> {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    Some(SessionInfo {
        profile: v["profile"].as_str()?.to_string(),
        index: v["index"].as_u64()? as u32,
        supervisor_pid: v["supervisor_pid"].as_i64()? as i32,
        hops: strings("hops"),
        started_unix: v["started_unix"].as_u64()?,
        links: strings("links"),
        init_pid: v["init_pid"].as_i64().unwrap_or(0) as i32,
    })
}
