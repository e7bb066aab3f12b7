//! The only `unsafe` in the netbroker: adopting inherited descriptors, forking
//! while single-threaded (and a forked helper that dies with us), the one
//! `pre_exec` hook of hop daemons and packet engines, getrandom,
//! the allocator tunables of the tun2socks engine, and the file-system group
//! of the thread that opens a hop daemon's socket for an engine's dials. Each function
//! wraps one operation and states the invariant that makes it sound.
#![allow(unsafe_code)] // The one module of this crate that may: see the module doc.

use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::signal::Signal;
use nix::unistd::{ForkResult, Pid};

/// The supervisor's channel socket, inherited on this descriptor.
pub const CHANNEL_FD: RawFd = 3;

/// Adopt the inherited channel socket on fd 3 and mark it close-on-exec so
/// hop daemons never see it.
pub fn take_channel_fd() -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD/F_SETFD on a possibly-closed descriptor number is
    // harmless; we only proceed if the kernel says fd 3 is open.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(CHANNEL_FD) };
    fcntl(borrowed, FcntlArg::F_GETFD).map_err(|e| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no channel socket on fd {CHANNEL_FD} (run by the pallium supervisor): {e}"),
        )
    })?;
    fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    // SAFETY: fd 3 is open (checked above) and was handed to this process by its
    // spawner for exactly this purpose; nothing else in the process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(CHANNEL_FD) })
}

/// Fork; the child runs `child` and exits with its return value without
/// unwinding or running the parent's destructors.
///
/// Must be called while the process is single-threaded.
pub fn fork_child(child: impl FnOnce() -> i32) -> nix::Result<Pid> {
    // SAFETY: the netbroker does all namespace work before it starts any thread
    // (the DNS relay thread is started after every fork), so the child is a
    // complete copy of a single-threaded process and may allocate freely. The
    // one exception, an engine's dial thread (`engine::dial`, a unix-socket
    // hop before this one), takes no lock but the allocator's, which glibc's
    // fork holds across the fork and resets in the child.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
            // SAFETY: `_exit` never returns and skips atexit handlers and buffered
            // stdio that belong to the parent.
            unsafe { libc::_exit(code) }
        }
    }
}

/// [`fork_child`] for a helper process that must not outlive the netbroker
/// nor keep anything of it: the child sets `PR_SET_PDEATHSIG` (SIGKILL),
/// exits at once if the netbroker died before that took effect, and closes
/// every inherited descriptor but stdio and `keep` before it runs `child`.
/// Above all the supervisor's channel: a child holding a copy would hide
/// the netbroker's death from the supervisor, which waits for that EOF
/// (and the network lock's, which other sessions wait for).
pub fn fork_dying_child(keep: RawFd, child: impl FnOnce() -> i32) -> nix::Result<Pid> {
    let parent = nix::unistd::getpid();
    fork_child(move || {
        // SAFETY: prctl and close_range take plain integers and touch no
        // memory of ours. The descriptors closed are copies in this child;
        // the Rust objects that own them in the parent's image are never
        // dropped here (the child ends with `_exit` in `fork_child`), and
        // `keep`, which `child` owns, stays open.
        unsafe {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return 1;
            }
            // The parent may have died before prctl: nobody would signal.
            if nix::unistd::getppid() != parent {
                return 1;
            }
            let closed = if keep > 3 {
                libc::close_range(3, keep as u32 - 1, 0) == 0
                    && libc::close_range(keep as u32 + 1, u32::MAX, 0) == 0
            } else {
                libc::close_range(keep.max(2) as u32 + 1, u32::MAX, 0) == 0
            };
            if !closed {
                return 1;
            }
        }
        child()
    })
}

/// Make a spawned hop daemon die with the netbroker: `PR_SET_PDEATHSIG` is set
/// in the child between fork and exec, and SIGTERM, which we ignore, is
/// given back its default action.
pub fn die_with_parent(cmd: &mut Command, sig: Signal) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec in the child; it only calls
    // the async-signal-safe `signal`, `prctl` and `getppid` and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            nix::sys::prctl::set_pdeathsig(Some(sig))?;
            // The parent may have died before prctl took effect.
            if nix::unistd::getppid() != parent {
                // An OS error code: nothing may allocate between fork and exec.
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Start a spawned command in the network namespace `netns` (a descriptor
/// the caller keeps open until the spawn returns) as `uid`/`gid` holding
/// only the capabilities `caps` (numbers), ambient so they survive exec:
/// for dnsmasq, which then has no user to switch to. A program that drops
/// root itself would clear its parent-death signal with its uid change and
/// outlive a netbroker killed with SIGKILL; this one is already unprivileged
/// when `sig` is armed (last, as in [`place_child`]), with no_new_privs.
pub fn place_unprivileged(
    cmd: &mut Command,
    netns: RawFd,
    uid: u32,
    gid: u32,
    caps: &[u32],
    sig: Signal,
) {
    let parent = nix::unistd::getpid();
    let mask: u64 = caps.iter().fold(0, |m, c| m | (1u64 << c));
    // SAFETY: the closure runs between fork and exec in the child and makes
    // only async-signal-safe system calls (signal, setns, prctl, setgroups,
    // setresgid, setresuid, capset, getppid) on data prepared before the
    // fork (plain integers); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            if libc::setns(netns, libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            for cap in 0..64u64 {
                if mask & (1 << cap) == 0 {
                    libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
                }
            }
            if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0
                || libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                return Err(io::Error::last_os_error());
            }
            #[repr(C)]
            struct Header {
                version: u32,
                pid: libc::c_int,
            }
            #[repr(C)]
            #[derive(Clone, Copy)]
            struct Data {
                effective: u32,
                permitted: u32,
                inheritable: u32,
            }
            let header = Header {
                version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
                pid: 0,
            };
            let half = |shift: u32| {
                let m = (mask >> shift) as u32;
                Data {
                    effective: m,
                    permitted: m,
                    inheritable: m,
                }
            };
            let data = [half(0), half(32)];
            if libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            for cap in 0..64u64 {
                if mask & (1 << cap) != 0
                    && libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE, cap, 0, 0) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The netbroker died before the signal was armed (ESRCH: no
            // allocation between fork and exec).
            if nix::unistd::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Wrap a netlink socket descriptor (received from a namespace holder) as a
/// `netlink_sys::Socket`.
pub fn netlink_socket_from(fd: OwnedFd) -> netlink_sys::Socket {
    // SAFETY: ownership of the descriptor moves into the socket, which closes it
    // on drop; the caller gives up its `OwnedFd`.
    unsafe { netlink_sys::Socket::from_raw_fd(fd.into_raw_fd()) }
}

/// A netlink socket as an `OwnedFd` (to send it over SCM_RIGHTS).
pub fn netlink_socket_into_fd(sock: netlink_sys::Socket) -> OwnedFd {
    // SAFETY: `into_raw_fd` hands over sole ownership of an open descriptor.
    unsafe { OwnedFd::from_raw_fd(sock.into_raw_fd()) }
}

/// Take ownership of a descriptor received with SCM_RIGHTS.
pub fn owned_from_received(fd: RawFd) -> OwnedFd {
    // SAFETY: the kernel installed `fd` in our table for this one message;
    // nothing else in the process refers to it, so it has exactly one owner.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Ignore SIGTERM (our parent-death signal; see `run`).
pub fn ignore_sigterm() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_IGN installs no handler, so no code runs in signal context.
    let _ = unsafe { signal(Signal::SIGTERM, SigHandler::SigIgn) };
}

/// `TUNSETIFF`: attach the open `/dev/net/tun` descriptor `fd` to a new TUN
/// device (layer 3, no packet-information header) called `name`. Returns the
/// name the kernel gave it.
pub fn tun_set_iff(fd: std::os::fd::BorrowedFd<'_>, name: &str) -> io::Result<String> {
    use std::os::fd::AsRawFd;
    nix::ioctl_readwrite_bad!(tunsetiff, libc::TUNSETIFF, libc::ifreq);
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {name:?}"),
        ));
    }
    // SAFETY: ifreq is a plain C struct (a name array and a union of integers
    // and pointers); all-zero bytes are a valid value of it.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: `fd` is an open descriptor borrowed for the call, and `req` is a
    // properly initialised ifreq that outlives it; TUNSETIFF reads it and
    // writes the final name back into it.
    unsafe { tunsetiff(fd.as_raw_fd(), &mut req) }.map_err(io::Error::from)?;
    let end = req
        .ifr_name
        .iter()
        .position(|c| *c == 0)
        .unwrap_or(req.ifr_name.len());
    Ok(req.ifr_name[..end]
        .iter()
        .map(|c| *c as u8 as char)
        .collect())
}

/// Make the TUN device attached to `fd` persistent (it outlives the
/// descriptor) and owned by `uid`/`gid`, so that a process of that user
/// without CAP_NET_ADMIN may attach to it by name (`TUNSETIFF`): an openvpn
/// hop's daemon.
pub fn tun_persist_for(fd: std::os::fd::BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    nix::ioctl_write_int_bad!(tunsetowner, libc::TUNSETOWNER);
    nix::ioctl_write_int_bad!(tunsetgroup, libc::TUNSETGROUP);
    nix::ioctl_write_int_bad!(tunsetpersist, libc::TUNSETPERSIST);
    // SAFETY: `fd` is an open descriptor borrowed for the calls; these
    // ioctls take a plain integer argument (no pointer) and only change the
    // attached device's owner, group and persistence.
    unsafe {
        tunsetowner(fd.as_raw_fd(), uid as libc::c_int).map_err(io::Error::from)?;
        tunsetgroup(fd.as_raw_fd(), gid as libc::c_int).map_err(io::Error::from)?;
        tunsetpersist(fd.as_raw_fd(), 1).map_err(io::Error::from)?;
    }
    Ok(())
}

/// Fill `buf` with random bytes from the kernel (getrandom(2); DNS query
/// ids). Falls back to the clock and pid mixed if the call fails, which it
/// only does before the kernel's pool is initialised.
pub fn random_bytes(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the pointer and length describe `rest`, a live, writable
        // slice; getrandom writes at most `rest.len()` bytes into it.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n > 0 {
            filled += n as usize;
        } else if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    if filled < buf.len() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default()
            ^ u64::from(std::process::id()).rotate_left(32);
        for (i, b) in buf[filled..].iter_mut().enumerate() {
            *b = (t.rotate_left(8 * (i as u32 % 8)) ^ (i as u64 * 0x9e37_79b9)) as u8;
        }
    }
}

/// Make freed memory go back to the kernel (the engine's per-connection
/// buffers): allocations from `threshold` bytes up are mmapped of their own
/// (setting the threshold also stops glibc from raising it after each free,
/// which is what kept 40+ MiB of freed buffers in the heap), and the heap is
/// trimmed beyond 1 MiB of free top. Process-wide and idempotent.
pub fn malloc_release_freed(threshold: usize) {
    let threshold = i32::try_from(threshold).unwrap_or(i32::MAX);
    // SAFETY: mallopt only changes glibc's allocator tunables; any value is
    // accepted or refused with a 0 return, never undefined behaviour.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, threshold);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
    }
}

/// Give free heap memory back to the kernel now (malloc_trim(0)); the
/// engine calls it when it goes idle.
pub fn malloc_trim() {
    // SAFETY: malloc_trim walks glibc's own free lists under its locks; it
    // touches no memory the program owns.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How a child of the netbroker — a hop daemon or a packet engine — is
/// placed between fork and exec (see [`place_child`]).
#[derive(Debug, Clone, Copy)]
pub struct ChildPlacement {
    /// The network namespace to run in (an fd kept open by the caller until
    /// the spawn returns); negative: stay in the netbroker's (a direct-mode
    /// engine).
    pub netns: RawFd,
    /// A user namespace to join before `netns` (negative: none): the one
    /// that owns it, when the netbroker is not in it (the rootless port
    /// forwarder of a direct uplink, [`crate::forward`]).
    pub userns: RawFd,
    /// A descriptor the child inherits: `(ours, its number)`.
    pub inherit: Option<(RawFd, RawFd)>,
    /// Close every descriptor above the inherited one (above stderr without
    /// one), whatever its close-on-exec flag: nothing else of the
    /// netbroker's (namespace, netlink or supervisor descriptors) reaches it.
    pub close_others: bool,
    /// Rootless: enter a nested user namespace whose maps the netbroker
    /// writes (see [`MapBack`]), so the daemon sees the caller's own uid,
    /// name and home (ssh needs that).
    pub map_back: Option<MapBack>,
    /// Root: the unprivileged user (uid, gid) to run as.
    pub user: Option<(u32, u32)>,
    /// Rootless direct mode: a user namespace of its own first (it owns
    /// nothing), where it may empty its bounding set — in the caller's it
    /// could not, without CAP_SETPCAP; its sockets stay in its netns.
    pub own_userns: bool,
    /// Signal on the netbroker's death.
    pub death_signal: Signal,
}

/// The handshake for a nested user namespace: a map that covers the parent
/// namespace's root may only be written from the parent (with CAP_SETFCAP
/// there), so the child unshares, sends its pid on `tell`, and waits for one
/// byte on `wait` while the netbroker writes its maps.
#[derive(Debug, Clone, Copy)]
pub struct MapBack {
    pub tell: RawFd,
    pub wait: RawFd,
}

/// In a child between fork and exec: make `fd` the descriptor `target`
/// that survives exec. `dup2` onto itself is a no-op that would leave
/// `FD_CLOEXEC` set (the descriptor would vanish at exec when it happened to
/// be `target` already), so that case clears the flag instead.
/// Async-signal-safe: one `dup2` or `fcntl`.
fn inherit_as(fd: RawFd, target: RawFd) -> libc::c_int {
    if fd == target {
        // SAFETY: fcntl on an integer descriptor touches no memory of ours.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }
    } else {
        // SAFETY: dup2 on integer descriptors touches no memory of ours; it
        // replaces `target` atomically.
        unsafe { libc::dup2(fd, target) }
    }
}

/// Place a child between fork and exec: SIGTERM, which we ignore (and an
/// ignored signal stays ignored across exec), gets its default action back
/// so stopping it works; enter its network namespace; take its inherited
/// descriptor (and close the others if asked); map back (rootless) or drop
/// to its user; empty the bounding set (so nothing it execs gains a
/// capability, whatever its uid); then, after the last change of
/// credentials (which clears it), the parent-death signal, no_new_privs,
/// and a check that the netbroker did not die before the signal was armed.
/// (std's own `uid()` would switch users before our hook runs, and then
/// `setns` would no longer be allowed.)
pub fn place_child(cmd: &mut Command, p: ChildPlacement) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec in the child and makes
    // only async-signal-safe system calls (signal, setns (user, net), dup2, close_range,
    // unshare, getpid, read/write, prctl, setgroups/setresgid/setresuid,
    // getppid) on data prepared before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            if p.userns >= 0 && libc::setns(p.userns, libc::CLONE_NEWUSER) != 0 {
                return Err(io::Error::last_os_error());
            }
            if p.netns >= 0 && libc::setns(p.netns, libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            if p.own_userns && libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return Err(io::Error::last_os_error());
            }
            // dup2 leaves the copy without FD_CLOEXEC, so it survives exec.
            if let Some((ours, theirs)) = p.inherit {
                if inherit_as(ours, theirs) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if p.close_others {
                let above = p.inherit.map_or(2, |(_, theirs)| theirs) as u32;
                if libc::close_range(above + 1, u32::MAX, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(m) = p.map_back {
                if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                    return Err(io::Error::last_os_error());
                }
                let pid = libc::getpid().to_ne_bytes();
                if libc::write(m.tell, pid.as_ptr().cast(), pid.len()) != pid.len() as isize {
                    return Err(io::Error::last_os_error());
                }
                let mut ok = 0u8;
                if libc::read(m.wait, (&mut ok as *mut u8).cast(), 1) != 1 || ok != 1 {
                    // The netbroker did not map the hop's user (an OS error
                    // code: nothing may allocate between fork and exec).
                    return Err(io::Error::from_raw_os_error(libc::EPERM));
                }
            }
            for cap in 0..64 {
                libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            }
            if let Some((uid, gid)) = p.user {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setresgid(gid, gid, gid) != 0
                    || libc::setresuid(uid, uid, uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                p.death_signal as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
                || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The netbroker died before the signal was armed: nobody would
            // send it, and nobody reads this error (ESRCH: no allocation
            // between fork and exec).
            if nix::unistd::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Unmap this process's view of the resident pages in `[start, end)`
/// (`MADV_DONTNEED`); they come back from the file on the next access.
///
/// Only for read-only private file mappings whose resident pages are all
/// clean file pages (no anonymous copy-on-write page, as `smaps` shows):
/// then nothing is lost. The engine calls it once set up, so its resident
/// set holds only the code its event loop runs, not its startup's.
pub fn forget_file_pages(start: usize, end: usize) -> io::Result<()> {
    // SAFETY: the caller names a mapping that is not writable and holds no
    // anonymous page, so no Rust object and no written byte lives there:
    // dropping the page-table entries only makes the next access fault the
    // same bytes back in from the file.
    let r = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An `O_PATH` descriptor of `path` (a hop daemon's socket: connecting to
/// `/proc/self/fd/N` later reaches it without looking its name up again,
/// so without permission on its directory), looked up with `group` as the
/// file-system group when given. Root mode, the socket's directory belongs
/// to the daemon's user and the engine's group (mode 2750), which the
/// netbroker — root without CAP_DAC_OVERRIDE — is refused otherwise; it
/// takes the group with CAP_SETGID, which it holds until `ChainReady`.
pub fn open_path_as_group(path: &std::path::Path, group: Option<u32>) -> io::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    let open = || {
        nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(io::Error::from)
    };
    let Some(gid) = group else {
        return open();
    };
    // Any change of a thread's file-system ids makes the whole process
    // non-dumpable, and so its later children too: we could no longer open
    // their /proc entries (a later hop's namespace holder). Restored once
    // the thread that held the group is gone.
    let dumpable = nix::sys::prctl::get_dumpable().unwrap_or(false);
    // On a thread of its own, which ends right after the open: no other
    // thread's credentials change.
    let opened = std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setfsgid takes a plain integer and changes the calling
            // thread's file-system gid only (the kernel keeps credentials
            // per thread and glibc does not broadcast this call), and this
            // thread ends after the one open below.
            unsafe { libc::setfsgid(gid) };
            // It returns the previous value whether it worked or not; -1 is
            // refused and answers the current one.
            // SAFETY: as above; -1 changes nothing.
            let now = unsafe { libc::setfsgid(u32::MAX) };
            if now as u32 != gid {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("could not take group {gid} to look it up (no CAP_SETGID?)"),
                ));
            }
            open()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("its lookup thread panicked")))
    });
    if dumpable {
        nix::sys::prctl::set_dumpable(true)?;
    }
    opened
}

/// Register an owned descriptor (the WireGuard engine's TUN) with the
/// current tokio runtime's reactor.
pub fn async_fd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is a valid open descriptor that it alone closes,
    // and its as_raw_fd() always returns that same descriptor; moved into
    // the AsyncFd, it stays open for the AsyncFd's whole life.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(io::Error::from)
}

/// Place a script hop's holder (the netbroker binary in its script-init
/// mode, see `hops::script`) between fork and exec: SIGTERM back to its
/// default action, into the network namespace `netns`, `status` on fd 3
/// and every other descriptor above stderr closed, the parent-death signal
/// armed (SIGKILL), and a check that the netbroker did not die before that.
/// Capabilities stay: the holder itself makes the script's mount and pid
/// namespaces, then narrows what the script may hold.
pub fn place_script_init(cmd: &mut Command, netns: RawFd, status: RawFd) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec in the child and makes
    // only async-signal-safe system calls (signal, setns, dup2, close_range,
    // prctl, getppid) on integers prepared before the fork; it allocates
    // nothing.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            if netns >= 0 && libc::setns(netns, libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            if inherit_as(status, 3) < 0 || libc::close_range(4, u32::MAX, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if nix::unistd::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// The script-init holder's status descriptor (fd 3, see
/// [`place_script_init`]), adopted once.
pub fn take_script_status_fd() -> io::Result<OwnedFd> {
    // SAFETY: as in `take_channel_fd`: F_GETFD on a possibly-closed number
    // is harmless, and fd 3 was handed to this process for this purpose.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(3) };
    fcntl(borrowed, FcntlArg::F_GETFD)?;
    fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    // SAFETY: fd 3 is open (checked above) and owned by nothing else here.
    Ok(unsafe { OwnedFd::from_raw_fd(3) })
}
