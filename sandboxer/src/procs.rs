//! `ListPids`: the sandbox's processes with their host pids, found by
//! scanning the host's `/proc` (opened before the pivot) for processes in the
//! sandbox's PID namespace.

#![forbid(unsafe_code)]

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
    let Ok(pidns) = readlinkat(host_proc, format!("{init}/ns/pid").as_str()) else {
        return out;
    };
    let dir = Dir::openat(
        host_proc.as_fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    );
    let Ok(mut dir) = dir else { return out };
    let mut apps: Vec<i32> = dir
        .iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().ok()?.parse::<i32>().ok())
        .filter(|&pid| pid != init.as_raw() && pid != me)
        .filter(|pid| {
            readlinkat(host_proc, format!("{pid}/ns/pid").as_str()).is_ok_and(|ns| ns == pidns)
        })
        .collect();
    apps.sort_unstable();
    out.extend(apps.into_iter().map(|pid| entry(pid, "app")));
    out
}

fn entry(pid: i32, role: &str) -> ProcEntry {
    ProcEntry {
        pid,
        role: role.into(),
    }
}
