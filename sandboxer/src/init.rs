//! The sandbox's PID 1: forked by the sandboxer right after it unshared the
//! PID namespace. It mounts the sandbox's `/proc` (only a process inside the
//! new PID namespace can), drops every capability, becomes non-dumpable and
//! enters the default seccomp filter, reports, then reaps every orphan until
//! the sandboxer's death (PR_SET_PDEATHSIG) or SIGKILL ends it and, with it,
//! the whole PID namespace.
//!
//! The application runs with the same uid as the init (root mode: uid 0;
//! rootless: the caller), and the init is outside its landlock domain and,
//! before, its seccomp filter: a dumpable init could be ptraced or have its
//! memory written through `/proc/1/mem` by the application, which would then
//! run code unconfined. Non-dumpable, it needs CAP_SYS_PTRACE over the
//! host's user namespace to be inspected; filtered, even code run in it
//! meets the application's default filter.

#![forbid(unsafe_code)]

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use proto::policy::{drop_to, Role};

use crate::seccomp::Filter;
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
    // This also sets NO_NEW_PRIVS, which the filter needs.
    drop_to(Role::Init).map_err(|e| e.to_string())?;
    // Not dumpable: nothing without CAP_SYS_PTRACE can ptrace it or read
    // its memory or /proc links. After the drop, which would not reset it,
    // but before anything in the sandbox could see it.
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("make the init non-dumpable: {e}"))?;
    // Compiled here, in the forked child: the sandboxer is single-threaded,
    // so the copy may allocate, and the init's filter depends on no profile.
    Filter::init()
        .map_err(|e| e.to_string())?
        .apply()
        .map_err(|e| format!("install the init's seccomp filter: {e}"))
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
