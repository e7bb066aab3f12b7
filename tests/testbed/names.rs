//! Names of everything a testbed creates, and removal of what dead test processes left behind.
//!
//! Every name embeds the pid of the test process (`pt<pid>-<n>-<role>`), which is what makes
//! parallel tests safe and stale leftovers recognisable.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::cmd;

/// Where network namespace names live (`ip netns`).
pub(crate) const NETNS_DIR: &str = "/run/netns";
/// `ip netns exec NAME` bind-mounts the files of `/etc/netns/NAME/` over those of `/etc/`.
pub(crate) const ETC_NETNS_DIR: &str = "/etc/netns";
/// Where [`crate::TestUser::stage_binaries`] puts copies, one directory per test process.
pub(crate) const STAGE_DIR: &str = "/opt/pallium-test-bin";

/// The unique names of one testbed.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    /// `pt<pid>-<n>`: ≤ 13 characters for pids up to 7 digits and n < 1000, so a role suffix
    /// keeps every name a valid interface name (15 characters) too.
    pub(crate) base: String,
    /// The directory for logs and configuration files.
    pub(crate) state_dir: PathBuf,
}

impl Names {
    /// Fresh names for a testbed of this process; `hint` (the test's name) only labels the
    /// state directory.
    pub(crate) fn new(hint: &str) -> Names {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("pt{}-{n}", std::process::id());
        let hint: String = hint
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let state_dir = state_root().join(format!("{base}-{hint}"));
        Names { base, state_dir }
    }

    /// The namespace name of a role: `h`ost, `r`outer, `w`eb, `d`ns.
    pub(crate) fn netns(&self, role: char) -> String {
        format!("{}-{role}", self.base)
    }
}

/// The parent of every testbed's state directory.
pub(crate) fn state_root() -> PathBuf {
    std::env::temp_dir().join("ptestbed")
}

/// Removes what test processes that no longer run left behind — namespaces (and the processes
/// still in them), `/etc/netns` entries, state directories, staged binaries — and returns what
/// it removed. [`crate::Testbed::new`] calls it once per process; safe to run in parallel.
pub fn cleanup_stale() -> Vec<String> {
    let mut removed = Vec::new();
    for name in dir_names(Path::new(NETNS_DIR)) {
        if stale_pid(&name).is_some() {
            kill_netns_pids(&name);
            let _ = cmd::output(Command::new("ip").args(["netns", "del", &name]), None);
            removed.push(format!("netns {name}"));
        }
    }
    for (dir, what) in [
        (PathBuf::from(ETC_NETNS_DIR), "/etc/netns entry"),
        (state_root(), "state dir"),
        (PathBuf::from(STAGE_DIR), "staged binaries"),
    ] {
        for name in dir_names(&dir) {
            let stale = match what {
                "staged binaries" => name.parse::<u32>().ok().filter(|p| !alive(*p)).is_some(),
                _ => stale_pid(&name).is_some(),
            };
            if stale && std::fs::remove_dir_all(dir.join(&name)).is_ok() {
                removed.push(format!("{what} {}", dir.join(&name).display()));
            }
        }
    }
    // The tests' own profile directories (`<prefix><pid>`; `pallium-hop-profiles-` from runs
    // before the readable profiles were shared).
    let tmp = std::env::temp_dir();
    for name in dir_names(&tmp) {
        let pid = [
            "pallium-tests-",
            "pallium-readable-profiles-",
            "pallium-hop-profiles-",
        ]
        .iter()
        .find_map(|p| name.strip_prefix(p)?.parse::<u32>().ok());
        if pid.is_some_and(|p| !alive(p)) && std::fs::remove_dir_all(tmp.join(&name)).is_ok() {
            removed.push(format!("test profiles {}", tmp.join(&name).display()));
        }
    }
    removed
}

/// Kills every process whose network namespace is `netns` (`ip netns pids`).
pub(crate) fn kill_netns_pids(netns: &str) -> Vec<u32> {
    let out = cmd::output(Command::new("ip").args(["netns", "pids", netns]), None);
    let pids: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    for &pid in &pids {
        kill(pid);
    }
    pids
}

/// SIGKILL, ignoring a process that is already gone.
pub(crate) fn kill(pid: u32) {
    signal(pid, nix::sys::signal::Signal::SIGKILL);
}

/// Sends `sig` to `pid`, ignoring a process that is already gone.
pub(crate) fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

/// The pid in a testbed name (`pt<pid>-…`) if that process no longer exists.
fn stale_pid(name: &str) -> Option<u32> {
    let digits: String = name
        .strip_prefix("pt")?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let rest = &name[2 + digits.len()..];
    if !rest.starts_with('-') {
        return None;
    }
    let pid: u32 = digits.parse().ok()?;
    (!alive(pid)).then_some(pid)
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn dir_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_interface_name_limit() {
        let names = Names::new("some test/with odd chars");
        assert!(names.netns('h').len() <= 15, "{}", names.netns('h'));
        assert!(names
            .state_dir
            .to_string_lossy()
            .contains("some_test_with_odd_chars"));
    }

    #[test]
    fn stale_pid_ignores_live_and_foreign_names() {
        let me = std::process::id();
        assert_eq!(stale_pid(&format!("pt{me}-0-h")), None);
        assert_eq!(stale_pid("ptx-0-h"), None);
        assert_eq!(stale_pid("pallium-0"), None);
        assert_eq!(stale_pid("pt99999999-0-h"), Some(99_999_999));
    }
}
