//! `ListPids`: the sandbox's processes with their host pids, found by
//! scanning the host's `/proc` (opened before the pivot) for processes in the
//! sandbox's PID namespace or descended from the sandboxer or the init. The
//! second test needs only the world-readable `stat`: the namespace link of a
//! process of another uid (a root-mode virtual user, runsc) is out of the
//! sandboxer's reach without CAP_SYS_PTRACE.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};

use nix::dir::Dir;
use nix::fcntl::{readlinkat, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use proto::broker::ProcEntry;

/// The sandboxer, the init and every other process whose PID namespace is
/// the init's. Processes that vanish mid-scan are skipped.
pub fn list(host_proc: &OwnedFd, init: Option<Pid>) -> Vec<ProcEntry> {
    let me = nix::unistd::getpid().as_raw();
    let mut out = vec![entry(me, "sandboxer")];
    let Some(init) = init else { return out };
    out.push(entry(init.as_raw(), "init"));
    // The sandbox's PID namespace is the one our children are born in: read
    // from our own links, since the init's are closed to us (not dumpable).
    let Ok(pidns) = readlinkat(host_proc, format!("{me}/ns/pid_for_children").as_str()) else {
        return out;
    };
    let dir = Dir::openat(
        host_proc.as_fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    );
    let Ok(mut dir) = dir else { return out };
    let pids: Vec<i32> = dir
        .iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().ok()?.parse::<i32>().ok())
        .collect();
    let parents: HashMap<i32, i32> = pids
        .iter()
        .filter_map(|&pid| Some((pid, parent(host_proc, pid)?)))
        .collect();
    let roots = [me, init.as_raw()];
    let mut apps: Vec<i32> = pids
        .into_iter()
        .filter(|pid| !roots.contains(pid))
        .filter(|pid| {
            descends(&parents, *pid, &roots)
                || readlinkat(host_proc, format!("{pid}/ns/pid").as_str())
                    .is_ok_and(|ns| ns == pidns)
        })
        .collect();
    apps.sort_unstable();
    out.extend(apps.into_iter().map(|pid| entry(pid, "app")));
    out
}

/// The parent pid from `/proc/PID/stat` (the field after the state, which
/// follows the command name's closing parenthesis).
fn parent(host_proc: &OwnedFd, pid: i32) -> Option<i32> {
    let fd = nix::fcntl::openat(
        host_proc,
        format!("{pid}/stat").as_str(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut stat = String::new();
    std::fs::File::from(fd).read_to_string(&mut stat).ok()?;
    parse_ppid(&stat)
}

fn parse_ppid(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid`'s chain of parents reaches one of `roots`.
fn descends(parents: &HashMap<i32, i32>, mut pid: i32, roots: &[i32]) -> bool {
    // A chain is at most as long as the process table (no cycles in /proc,
    // but a racing scan must not loop).
    for _ in 0..parents.len() {
        match parents.get(&pid) {
            Some(p) if roots.contains(p) => return true,
            Some(&p) if p > 1 => pid = p,
            _ => return false,
        }
    }
    false
}

fn entry(pid: i32, role: &str) -> ProcEntry {
    ProcEntry {
        pid,
        role: role.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_pid_follows_a_command_name_with_parentheses() {
        assert_eq!(parse_ppid("42 (a) b) S 7 42 42 0"), Some(7));
        assert_eq!(parse_ppid("garbage"), None);
    }

    #[test]
    fn descendants_of_the_sandboxer_or_init_are_found() {
        let parents: HashMap<i32, i32> = [(10, 5), (11, 10), (12, 1), (13, 12)].into();
        assert!(descends(&parents, 11, &[5, 6]));
        assert!(!descends(&parents, 13, &[5, 6]));
        assert!(!descends(&parents, 99, &[5, 6]));
    }
}
