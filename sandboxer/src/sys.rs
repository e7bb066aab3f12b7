//! Every `unsafe` block of the sandboxer: small safe wrappers of one syscall
//! each. The sandboxer is single-threaded for its whole life (it enters user
//! and mount namespaces), which is the invariant most of these rely on.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::unistd::{ForkResult, Pid};

/// The descriptor the supervisor hands us the channel on.
pub(crate) const CHANNEL_FD: RawFd = 3;

/// Adopt the channel socket on fd 3. Call once.
pub(crate) fn take_channel_fd() -> io::Result<OwnedFd> {
    // Refuse early if nothing is there, rather than owning a closed number.
    nix::fcntl::fcntl(
        // SAFETY: borrowed only for this one call; fd 3 is checked, not used.
        unsafe { BorrowedFd::borrow_raw(CHANNEL_FD) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .map_err(|e| io::Error::new(io::Error::from(e).kind(), "no channel socket on fd 3"))?;
    // SAFETY: fd 3 is open (checked above) and, by the spawn protocol, ours
    // alone; this is called once, so it gets exactly one owner.
    Ok(unsafe { OwnedFd::from_raw_fd(CHANNEL_FD) })
}

/// `fork()`.
pub(crate) fn fork() -> nix::Result<ForkResult> {
    // SAFETY: the sandboxer never starts a second thread, so the child is a
    // complete copy: no lock is held by a thread that does not exist there,
    // and the child may allocate and run ordinary code.
    unsafe { nix::unistd::fork() }
}

/// `pidfd_open(pid, 0)`: a descriptor that polls readable when `pid` exits.
pub(crate) fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; no memory is shared.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success the kernel returned a new descriptor that nothing
    // else owns (pidfds are close-on-exec by default).
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `ioctl(fd, TIOCSCTTY, 0)`: make the terminal our controlling terminal.
pub(crate) fn set_controlling_tty(fd: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal), no pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
    Errno::result(r).map(drop)
}

/// Mark every descriptor from `first` up close-on-exec
/// (`close_range(first, ~0, CLOSE_RANGE_CLOEXEC)`).
pub(crate) fn cloexec_from(first: RawFd) -> nix::Result<()> {
    // SAFETY: only flags change; no descriptor is closed under an owner.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    Errno::result(r).map(drop)
}

/// Restore default dispositions for every signal, real-time ones included,
/// and unblock them all, so the application inherits neither Rust's ignored
/// SIGPIPE nor anything our own parent ignored.
pub(crate) fn reset_signals() -> nix::Result<()> {
    // The kernel's `struct sigaction` all zero: SIG_DFL, no flags, empty mask.
    // Raw rt_sigaction because glibc refuses the signals it reserves (32, 33).
    let dfl = [0u64; 4];
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `dfl` outlives the call and is at least as large as the
        // kernel's sigaction; no old action is requested (null). SIG_DFL
        // installs no handler, so no code of ours can run in signal context.
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                dfl.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            )
        };
        Errno::result(r)?;
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
}

/// `_exit(code)`: leave a forked child without running the parent's
/// destructors or atexit handlers.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// Close every descriptor from `first` up (`close_range(first, ~0, 0)`).
///
/// Only for the sandbox's init, right before its endless reaping loop: the
/// forked copy of the sandboxer's state (channel, pidfds) is never used or
/// dropped after this, so no owner is left holding a closed number.
pub(crate) fn init_close_from(first: RawFd) -> nix::Result<()> {
    // SAFETY: see above: the caller never touches descriptors >= `first`
    // again and never returns to code that would drop their owners.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        )
    };
    Errno::result(r).map(drop)
}

/// The kernel's `struct mount_attr` (include/uapi/linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `MOUNT_ATTR_*` flags (include/uapi/linux/mount.h).
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// Set `nosuid` (always), `nodev` and read-only (when asked) on the mount at
/// `path` and every mount below it (`mount_setattr(AT_FDCWD, path,
/// AT_RECURSIVE, …)`): bubblewrap's `--ro-bind`, plus the flags every bind
/// of ours carries.
pub(crate) fn restrict_mount_recursive(
    path: &std::path::Path,
    read_only: bool,
    nodev: bool,
) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut set = MOUNT_ATTR_NOSUID;
    if read_only {
        set |= MOUNT_ATTR_RDONLY;
    }
    if nodev {
        set |= MOUNT_ATTR_NODEV;
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `c` is a NUL-terminated path and `attr` a correctly laid out
    // `struct mount_attr`, both alive for the call, whose size is passed;
    // the kernel only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `MOUNT_ATTR_IDMAP`, `OPEN_TREE_CLONE`, `MOVE_MOUNT_F_EMPTY_PATH`
/// (include/uapi/linux/mount.h).
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// Stack an idmapped copy of the mount tree at `target` on it: a recursive
/// `open_tree(OPEN_TREE_CLONE)`, `mount_setattr(MOUNT_ATTR_IDMAP, userns)`
/// on the detached copy, `move_mount` onto `target` (systemd-nspawn's and
/// podman's way). Ids are seen through `userns`'s map: the host's uid 0 on
/// disk is that namespace's owner of uid 0, and back.
pub(crate) fn idmap_mount(target: &std::path::Path, userns: BorrowedFd<'_>) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(target.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a NUL-terminated path alive for the call; open_tree
    // returns a new descriptor or -1, which we own from here on.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by open_tree and is owned by nothing else.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let empty = c"";
    // SAFETY: `tree` is a valid descriptor, `empty` a NUL-terminated string
    // and `attr` a correctly laid out `struct mount_attr` whose size is
    // passed; all outlive the call, and the kernel only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: valid descriptors and NUL-terminated paths alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Empty the bounding set (`PR_CAPBSET_DROP` for every capability the kernel
/// knows), while CAP_SETPCAP is still effective: the application must not
/// keep a bounding set after it leaves uid 0 (which clears the rest).
pub(crate) fn drop_bounding_set() -> nix::Result<()> {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<libc::c_ulong>().ok())
        .unwrap_or(63);
    for cap in 0..=last {
        // SAFETY: PR_CAPBSET_DROP takes an integer capability number; no
        // memory is passed.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        match Errno::result(r) {
            Ok(_) | Err(Errno::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Ignore `sig` (`SIG_IGN`), which survives exec.
pub(crate) fn ignore_signal(sig: nix::sys::signal::Signal) -> nix::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler};
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: SIG_IGN installs no handler, so no code of ours can run in
    // signal context.
    unsafe { sigaction(sig, &ignore) }.map(drop)
}
