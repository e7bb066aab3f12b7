//! After the supervisor is gone: remove its session directory, which it
//! could not — a supervisor killed with `kill -9`, or a root-mode one that
//! switched to its unprivileged uid and so may not remove its directory from
//! root's runtime directory — so no runtime file is left behind.
//!
//! Layout and liveness are `proto::runtime`'s: a session is alive exactly
//! while its `lock` is flocked, and `<run>/.lock` serialises creation and
//! removal.

#![forbid(unsafe_code)]

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use proto::runtime;

/// Remove `session_dir` (and its profile directory when empty) if no process
/// holds its lock any more. Best effort: the next pallium command's garbage
/// collection does the same.
pub fn remove_dead_session(session_dir: &Path) {
    let Some(session) = runtime::SessionRef::from_dir(session_dir) else {
        return; // not a layout we know: touch nothing
    };
    // The registry lock exists whenever a session directory does: never
    // create one (nor follow a link) on the supervisor's word.
    let Ok(reg) = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(session.run.join(runtime::REGISTRY_LOCK))
    else {
        return;
    };
    let Ok(_registry) = runtime::lock_exclusive(reg) else {
        return;
    };
    runtime::remove_if_dead(session_dir);
}
