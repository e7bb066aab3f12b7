//! The supervisor's only `unsafe`: the code that runs between fork and exec of
//! a helper, a few terminal ioctls and `pidfd_send_signal`. Each
//! function wraps one step.

#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};

/// Make `cmd`'s child receive `channel` as fd 3, get `death_signal` when we
/// die, run in its own process group (so a Ctrl-C meant for the command does
/// not hit it), and start with no blocked signals (we block some for our
/// signalfd).
pub(crate) fn prepare_helper(cmd: &mut Command, channel: RawFd, death_signal: Signal) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe functions (prctl, getppid, kill, sigprocmask, dup2);
    // it allocates nothing. `death_signal` is copied in.
    unsafe {
        cmd.pre_exec(move || {
            if death_signal == Signal::SIGTERM {
                // A helper that outlives us to clean up ignores its death
                // signal from before exec on, leaving no window where it
                // would still be fatal (SIG_IGN survives exec).
                libc::signal(libc::SIGTERM, libc::SIG_IGN);
            }
            nix::sys::prctl::set_pdeathsig(death_signal)?;
            // We may have died between fork and prctl: then nobody would signal.
            if nix::unistd::getppid() != parent {
                let _ = nix::sys::signal::raise(death_signal);
            }
            nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0))?;
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
            if inherit_as(channel, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Make `cmd`'s child (the GUI's xpra server and client) get SIGTERM when
/// we die (xpra then stops its X server itself), run in its own process
/// group, and start with no blocked signals (we block some for our
/// signalfd; a child that inherited that mask would not hear our SIGTERM).
pub(crate) fn prepare_desktop_child(cmd: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe functions (prctl, getppid, kill, setpgid,
    // sigprocmask); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
            if nix::unistd::getppid() != parent {
                let _ = nix::sys::signal::raise(Signal::SIGTERM);
            }
            nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0))?;
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
            Ok(())
        });
    }
}

/// Put `fd` on standard input.
pub(crate) fn dup_onto_stdin(fd: BorrowedFd<'_>) {
    // SAFETY: dup2 onto fd 0 only replaces our standard input, which no Rust
    // object owns exclusively (std's Stdin borrows fd 0 by number).
    unsafe {
        libc::dup2(fd.as_raw_fd(), 0);
    }
}

/// Standard input from /dev/null.
pub(crate) fn stdin_from_dev_null() {
    if let Ok(f) = std::fs::File::open("/dev/null") {
        use std::os::fd::AsFd;
        dup_onto_stdin(f.as_fd());
    }
}

nix::ioctl_read_bad!(tiocgwinsz, libc::TIOCGWINSZ, libc::winsize);
nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, libc::winsize);

/// The window size of terminal `fd`.
pub(crate) fn get_winsize(fd: BorrowedFd<'_>) -> Option<libc::winsize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the valid pointer we pass.
    unsafe { tiocgwinsz(fd.as_raw_fd(), &mut ws) }.ok()?;
    Some(ws)
}

/// Set the window size of terminal `fd` (a PTY master: the kernel then sends
/// SIGWINCH to the PTY's foreground process group).
pub(crate) fn set_winsize(fd: BorrowedFd<'_>, ws: &libc::winsize) {
    // SAFETY: TIOCSWINSZ reads one `winsize` from the valid pointer we pass.
    let _ = unsafe { tiocswinsz(fd.as_raw_fd(), ws) };
}

/// Own a descriptor a syscall just returned.
pub(crate) fn owned(fd: RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: `fd` was just returned by accept4/socket and has no other owner.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

/// In a child between fork and exec: make `fd` the descriptor `target`
/// that survives exec. `dup2` onto itself is a no-op that would leave
/// `FD_CLOEXEC` set (the descriptor vanished at exec when it happened to be
/// `target` already), so that case clears the flag instead.
/// Async-signal-safe: one `dup2` or `fcntl`.
pub(crate) fn inherit_as(fd: RawFd, target: RawFd) -> libc::c_int {
    if fd == target {
        // SAFETY: fcntl on an integer descriptor touches no memory of ours.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }
    } else {
        // SAFETY: dup2 on integer descriptors touches no memory of ours;
        // it replaces `target` atomically.
        unsafe { libc::dup2(fd, target) }
    }
}

/// Own fd 3, which our parent put there for us (`prepare_helper`): the
/// listener of `pallium audio-relay`. Call once.
pub(crate) fn inherited_fd3() -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: fd 3 was set up by our parent before exec (dup2 in
    // `prepare_helper`, without CLOEXEC) and nothing in this process has
    // opened or owns it; the single caller takes it once, at start.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(3) }
}

/// `pidfd_send_signal(pidfd, 0, NULL, 0)`: Ok while the process `pidfd`
/// refers to exists (its pid cannot have been reused), `ESRCH` once it is gone.
pub(crate) fn pidfd_alive(pidfd: BorrowedFd<'_>) -> std::io::Result<()> {
    // SAFETY: the syscall takes a descriptor borrowed for the call, signal 0
    // (only checks), a null `siginfo_t` pointer (allowed: the kernel fills in
    // its own) and no flags; it touches none of our memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Restore SIGPIPE's default action (Rust ignores it), so a report piped
/// into `head` ends quietly like any other command instead of panicking.
/// Only for commands that print and exit; a session's supervisor keeps it
/// ignored.
pub(crate) fn default_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_DFL installs no handler, so no code runs in signal context.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}
