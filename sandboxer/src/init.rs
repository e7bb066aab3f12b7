//! The sandbox's PID 1: forked by the sandboxer right after it unshared the
//! PID namespace. It mounts the sandbox's `/proc` (only a process inside the
//! new PID namespace can), reports, then reaps every orphan until the
//! sandboxer's death (PR_SET_PDEATHSIG) or SIGKILL ends it and, with it, the
//! whole PID namespace.

#![forbid(unsafe_code)]

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use proto::policy::{drop_to, Role};

use crate::sys;

/// The byte the init writes when `/proc` is mounted; anything else is an
/// error message.
pub const READY: u8 = 0;

/// Body of the forked init; never returns.
pub fn run(proc_target: &Path, report: OwnedFd) -> ! {
    let result = prepare(proc_target);
    let mut report = std::fs::File::from(report);
    let written = match &result {
        Ok(()) => report.write_all(&[READY]),
        Err(e) => report.write_all(e.as_bytes()),
    };
    // Failing to report means the sandboxer is gone: so are we.
    if result.is_err() || written.is_err() {
        sys::exit_now(1);
    }
    drop(report);
    if sys::init_close_from(3).is_err() {
        sys::exit_now(1);
    }
    reap_forever()
}

fn prepare(proc_target: &Path) -> Result<(), String> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| format!("set parent-death signal: {e}"))?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), proc_target, Some("proc"), flags, None::<&str>)
        .map_err(|e| format!("mount proc at {}: {e}", proc_target.display()))?;
    // From here on the init only reaps: it keeps no capability at all.
    drop_to(Role::Init).map_err(|e| e.to_string())
}

/// Reap every child (orphans are re-parented to us); sleep on a blocked
/// SIGCHLD in between, so an exit between two checks is never missed.
fn reap_forever() -> ! {
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    if nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&chld), None).is_err() {
        sys::exit_now(1);
    }
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => {
                let _ = chld.wait();
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => {
                let _ = chld.wait();
            }
        }
    }
}
