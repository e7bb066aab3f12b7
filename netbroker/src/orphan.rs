//! After the supervisor died (we saw EOF on our channel, not `Shutdown`):
//! remove its session directory, which it could not, so even `kill -9` of the
//! supervisor leaves no runtime file behind.
//!
//! Layout shared with the supervisor (supervisor/src/runtime.rs):
//! `<run>/profile_<id>/session_<N>/lock`, a session alive exactly while its
//! `lock` is flocked, and `<run>/.lock` serialising creation and removal.

#![forbid(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// Remove `session_dir` (and its profile directory when empty) if no process
/// holds its lock any more. Best effort: the next pallium command's garbage
/// collection does the same.
pub fn remove_dead_session(session_dir: &Path) {
    let Some(name) = session_dir.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let Some(pdir) = session_dir.parent() else {
        return;
    };
    let Some(run) = pdir.parent() else { return };
    let profile_ok = pdir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("profile_"));
    if !name.starts_with("session_") || !profile_ok {
        return; // not a layout we know: touch nothing
    }
    let Ok(reg) = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(run.join(".lock"))
    else {
        return;
    };
    let Ok(_registry) = Flock::lock(reg, FlockArg::LockExclusive) else {
        return;
    };
    let Ok(lock) = File::open(session_dir.join("lock")) else {
        return;
    };
    if Flock::lock(lock, FlockArg::LockExclusiveNonblock).is_err() {
        return; // someone holds it: alive
    }
    let _ = fs::remove_dir_all(session_dir);
    let _ = fs::remove_dir(pdir); // only when no other session is left
}
