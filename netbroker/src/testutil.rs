//! Test helper: run a closure in a forked child so namespace changes never
//! touch the test process; the child's error message comes back over a pipe.

#![forbid(unsafe_code)]

use std::io::{Read, Write};

use nix::sys::wait::{waitpid, WaitStatus};

/// Run `f` in a forked child; `Ok(())` if it returned `Ok` and exited 0.
pub(crate) fn in_child(f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    let (r, w) = nix::unistd::pipe().map_err(|e| e.to_string())?;
    // The closure owns `w`; the parent's copy closes when fork returns.
    let pid = crate::sys::fork_child(move || {
        let mut w = std::fs::File::from(w);
        match f() {
            Ok(()) => 0,
            Err(e) => {
                let _ = w.write_all(e.as_bytes());
                1
            }
        }
    })
    .map_err(|e| e.to_string())?;
    let mut msg = String::new();
    let _ = std::fs::File::from(r).read_to_string(&mut msg);
    match waitpid(pid, None).map_err(|e| e.to_string())? {
        WaitStatus::Exited(_, 0) => Ok(()),
        other => Err(format!("{other:?}: {msg}")),
    }
}
