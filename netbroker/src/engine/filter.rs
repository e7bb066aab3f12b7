//! The packet engine's seccomp filter: an allow-list, as data. Scope: the
//! engine process after it has resolved its proxy, for the rest of its life
//! (all its threads: they are started after the filter); and the port
//! forwarder's, the same list with `accept` (it serves listeners it was
//! given), from before it starts relaying.
//!
//! What the engine does after setup is an event loop on descriptors it
//! already holds (the TUN, an epoll, an eventfd, its control socket) plus
//! TCP/UDP sockets to the proxy: so sockets of the Internet families only
//! — never a unix socket, whose connect could name any path: an engine whose
//! proxy is a hop daemon's unix socket gets each connection from the
//! netbroker over the channel it was started with ([`super::dial`]) — no
//! file system, no process creation (a thread is a `clone` with
//! `CLONE_THREAD`), no namespaces, no ptrace, no `ioctl` but `FIONBIO`.
//!
//! Anything else kills the process (`SECCOMP_RET_KILL_PROCESS`), not
//! EPERM: the engine is the code most exposed to the application, a call
//! outside this list means it is either compromised or broken, and in both
//! cases it should stop rather than probe on. The netbroker sees the
//! SIGSYS and reports "killed by SIGSYS (a system call outside its seccomp
//! filter)"; the kill switch holds (the TUN has no other reader).
//!
//! `clone3` gets ENOSYS (its flags sit behind a pointer seccomp cannot
//! read), so libc falls back to `clone`, whose flags are checked.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Allowed without condition, by group.
const ALLOWED: &[(&str, &[libc::c_long])] = &[
    // The event loop: epoll, the eventfd that wakes it, poll for a
    // connect with a timeout, timers.
    (
        "event loop",
        &[
            libc::SYS_epoll_create1,
            libc::SYS_epoll_ctl,
            #[cfg(target_arch = "x86_64")]
            libc::SYS_epoll_wait,
            libc::SYS_epoll_pwait,
            libc::SYS_epoll_pwait2,
            libc::SYS_eventfd2,
            #[cfg(target_arch = "x86_64")]
            libc::SYS_poll,
            libc::SYS_ppoll,
            libc::SYS_clock_gettime,
            libc::SYS_clock_nanosleep,
            libc::SYS_nanosleep,
            libc::SYS_gettimeofday,
            libc::SYS_timerfd_create,
            libc::SYS_timerfd_settime,
            libc::SYS_timerfd_gettime,
        ],
    ),
    // Moving bytes on descriptors it holds: the TUN, sockets, the
    // control socket, stderr for logs.
    (
        "I/O",
        &[
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_readv,
            libc::SYS_writev,
            libc::SYS_recvfrom,
            libc::SYS_sendto,
            libc::SYS_recvmsg,
            libc::SYS_sendmsg,
            libc::SYS_recvmmsg,
            libc::SYS_sendmmsg,
            libc::SYS_close,
            libc::SYS_fcntl,
        ],
    ),
    // Sockets it made (socket() itself is below, by family): dial the
    // proxy, bind a UDP socket for SOCKS5 UDP ASSOCIATE, options.
    (
        "sockets",
        &[
            libc::SYS_connect,
            libc::SYS_bind,
            libc::SYS_getsockopt,
            libc::SYS_setsockopt,
            libc::SYS_getsockname,
            libc::SYS_getpeername,
            libc::SYS_shutdown,
        ],
    ),
    // Memory: the allocator and thread stacks.
    (
        "memory",
        &[
            libc::SYS_mmap,
            libc::SYS_munmap,
            libc::SYS_mremap,
            libc::SYS_mprotect,
            libc::SYS_madvise,
            libc::SYS_brk,
        ],
    ),
    // Threads (the control thread, the current engine's dial threads) and
    // their synchronisation; clone is below, by flags.
    (
        "threads",
        &[
            libc::SYS_futex,
            libc::SYS_set_robust_list,
            libc::SYS_rseq,
            libc::SYS_sched_yield,
            libc::SYS_sched_getaffinity,
            libc::SYS_getpid,
            libc::SYS_gettid,
            libc::SYS_clone3, // ENOSYS: see the module doc
        ],
    ),
    // Randomness (hash maps, DNS ids), signals for itself, the end.
    (
        "process",
        &[
            libc::SYS_getrandom,
            libc::SYS_rt_sigreturn,
            libc::SYS_rt_sigprocmask,
            // glibc sets its internal signals' handlers at the first
            // pthread_create.
            libc::SYS_rt_sigaction,
            libc::SYS_sigaltstack,
            libc::SYS_tgkill,
            libc::SYS_restart_syscall,
            libc::SYS_exit,
            libc::SYS_exit_group,
        ],
    ),
];

/// Calls whose first (or, for ioctl, second) argument must be one of these.
fn conditional() -> Vec<(libc::c_long, u8, Vec<u64>)> {
    vec![
        // Internet sockets only: the proxy is reached over TCP or UDP.
        (
            libc::SYS_socket,
            0,
            vec![libc::AF_INET as u64, libc::AF_INET6 as u64],
        ),
        // std sets non-blocking mode with FIONBIO.
        (libc::SYS_ioctl, 1, vec![libc::FIONBIO]),
        // Naming its own threads.
        (libc::SYS_prctl, 0, vec![libc::PR_SET_NAME as u64]),
    ]
}

/// Why the filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("unsupported architecture")]
    Arch,
    #[error("compile: {0}")]
    Compile(String),
    #[error("install: {0}")]
    Install(#[from] seccompiler::Error),
}

/// What the port forwarder ([`crate::forward`]) needs beyond an engine's
/// list: taking connections on the listeners it was given (host TCP
/// ports, an onion service's unix socket). It makes no unix socket
/// either: accepting on one it holds needs no `socket()`.
const FORWARDER_EXTRA: &[libc::c_long] = &[libc::SYS_accept4, libc::SYS_accept];

/// The two programs: clone3 → ENOSYS, then the allow-list. The same for
/// every engine: one whose proxy is a hop daemon's unix socket gets its
/// connections from the netbroker ([`super::dial`]) and makes no unix
/// socket either.
pub fn programs() -> Result<[BpfProgram; 2], FilterError> {
    programs_with(&[])
}

/// The forwarder's programs: the engine's and [`FORWARDER_EXTRA`].
pub fn forwarder_programs() -> Result<[BpfProgram; 2], FilterError> {
    programs_with(FORWARDER_EXTRA)
}

fn programs_with(extra: &[libc::c_long]) -> Result<[BpfProgram; 2], FilterError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|_| FilterError::Arch)?;
    let compile = |e: seccompiler::BackendError| FilterError::Compile(e.to_string());
    let enosys = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(compile)?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED
        .iter()
        .flat_map(|(_, calls)| calls.iter())
        .chain(extra)
        .map(|n| (*n, Vec::new()))
        .collect();
    let cond = |arg: u8, op: SeccompCmpOp, v: u64| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, v)
            .and_then(|c| SeccompRule::new(vec![c]))
    };
    for (call, arg, values) in conditional() {
        let r = values
            .into_iter()
            .map(|v| cond(arg, SeccompCmpOp::Eq, v))
            .collect::<Result<Vec<_>, _>>()
            .map_err(compile)?;
        rules.insert(call, r);
    }
    // A thread, never a new process.
    let thread = libc::CLONE_THREAD as u64;
    rules.insert(
        libc::SYS_clone,
        vec![cond(0, SeccompCmpOp::MaskedEq(thread), thread).map_err(compile)?],
    );
    let allow = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        arch,
    )
    .map_err(compile)?;
    Ok([
        BpfProgram::try_from(enosys).map_err(compile)?,
        BpfProgram::try_from(allow).map_err(compile)?,
    ])
}

/// Install the filter on the calling thread (the engine's only thread at
/// that point). The ENOSYS program first: installing the allow-list ends
/// the use of `seccomp` itself.
pub fn install() -> Result<(), FilterError> {
    apply(programs()?)
}

/// [`install`] for the port forwarder, before it starts its threads.
pub fn install_forwarder() -> Result<(), FilterError> {
    apply(forwarder_programs()?)
}

fn apply(programs: [BpfProgram; 2]) -> Result<(), FilterError> {
    for p in programs {
        seccompiler::apply_filter(&p)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_compiles_for_this_architecture() {
        let [a, b] = programs().unwrap();
        assert!(!a.is_empty() && !b.is_empty());
    }

    /// Fork a child that installs the (prebuilt) filter and runs `then`;
    /// how it ended.
    fn filtered(then: fn() -> i32) -> nix::sys::wait::WaitStatus {
        filtered_by(programs().unwrap(), then)
    }

    fn filtered_by(programs: [BpfProgram; 2], then: fn() -> i32) -> nix::sys::wait::WaitStatus {
        let pid = crate::sys::fork_child(move || {
            for p in &programs {
                if seccompiler::apply_filter(p).is_err() {
                    return 2;
                }
            }
            then()
        })
        .unwrap();
        nix::sys::wait::waitpid(pid, None).unwrap()
    }

    fn killed_by_sigsys(s: nix::sys::wait::WaitStatus) -> bool {
        matches!(
            s,
            nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGSYS, _)
        )
    }

    #[test]
    fn an_internet_socket_is_allowed_and_a_unix_socket_or_a_file_kills() {
        use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
        let inet = filtered(|| {
            match socket(
                AddressFamily::Inet,
                SockType::Datagram,
                SockFlag::empty(),
                None,
            ) {
                Ok(_) => 0,
                Err(_) => 3,
            }
        });
        assert_eq!(
            inet,
            nix::sys::wait::WaitStatus::Exited(inet.pid().unwrap(), 0)
        );
        let unix = filtered(|| {
            let _ = socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::empty(),
                None,
            );
            0
        });
        assert!(killed_by_sigsys(unix), "{unix:?}");
        let open = filtered(|| {
            let _ = nix::fcntl::open(
                "/etc/passwd",
                nix::fcntl::OFlag::O_RDONLY,
                nix::sys::stat::Mode::empty(),
            );
            0
        });
        assert!(killed_by_sigsys(open), "{open:?}");
    }

    /// No engine may make a unix socket of any type, not even one whose
    /// proxy is a hop daemon's unix socket (the netbroker dials for it): a
    /// connect's path is out of seccomp's sight, so one allowed unix socket
    /// would reach every socket the engine's uid reaches. Its dial channel
    /// works under the filter: a request out, a descriptor in.
    #[test]
    fn a_unix_socket_of_any_type_kills_every_engine_and_the_dial_channel_works() {
        use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
        for kind in [SockType::Stream, SockType::Datagram, SockType::SeqPacket] {
            for flags in [
                SockFlag::empty(),
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            ] {
                static CASE: std::sync::Mutex<Option<(SockType, SockFlag)>> =
                    std::sync::Mutex::new(None);
                *CASE.lock().unwrap() = Some((kind, flags));
                let s = filtered(|| {
                    let (kind, flags) = CASE.lock().unwrap().unwrap();
                    let _ = socket(AddressFamily::Unix, kind, flags, None);
                    0
                });
                assert!(killed_by_sigsys(s), "{kind:?} {flags:?}: {s:?}");
            }
        }
        // socketpair is no way around it either.
        assert!(!ALLOWED
            .iter()
            .flat_map(|(_, c)| c.iter())
            .any(|c| *c == libc::SYS_socketpair));
        // The dial channel: the engine's end, made before the filter.
        let dir = std::env::temp_dir().join(format!("pallium-filter-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("socks");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let (server, theirs) = super::super::dial::Server::start(&path, None).unwrap();
        let client = super::super::dial::Client::new(theirs).unwrap();
        static CLIENT: std::sync::Mutex<Option<super::super::dial::Client>> =
            std::sync::Mutex::new(None);
        *CLIENT.lock().unwrap() = Some(client);
        let dialled = filtered(|| {
            let c = CLIENT.lock().unwrap();
            match c.as_ref().map(|c| c.dial()) {
                Some(Ok(_)) => 0,
                _ => 3,
            }
        });
        CLIENT.lock().unwrap().take();
        drop(server);
        assert_eq!(
            dialled,
            nix::sys::wait::WaitStatus::Exited(dialled.pid().unwrap(), 0)
        );
        listener.set_nonblocking(true).unwrap();
        assert!(
            listener.accept().is_ok(),
            "the connection reached the socket"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The forwarder accepts on a unix listener it holds and dials TCP,
    /// but may make no unix socket; an engine may not even accept.
    #[test]
    fn the_forwarder_accepts_on_what_it_holds_and_makes_no_unix_socket() {
        use std::os::unix::net::{UnixListener, UnixStream};
        let dir = std::env::temp_dir().join(format!("pallium-fwdfilter-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("s");
        static LISTENER: std::sync::Mutex<Option<UnixListener>> = std::sync::Mutex::new(None);
        *LISTENER.lock().unwrap() = Some(UnixListener::bind(&path).unwrap());
        let _client = UnixStream::connect(&path).unwrap();
        let accept = || match LISTENER.lock().unwrap().as_ref().map(|l| l.accept()) {
            Some(Ok(_)) => 0,
            _ => 3,
        };
        let s = filtered_by(forwarder_programs().unwrap(), accept);
        assert_eq!(s, nix::sys::wait::WaitStatus::Exited(s.pid().unwrap(), 0));
        let s = filtered(accept);
        assert!(killed_by_sigsys(s), "an engine accepted: {s:?}");
        let s = filtered_by(forwarder_programs().unwrap(), || {
            let _ = UnixStream::connect("/nonexistent");
            0
        });
        assert!(killed_by_sigsys(s), "{s:?}");
        // A TCP dial into the application's namespace (the listener is the
        // test's, made before the filter: the forwarder never listens).
        static TARGET: std::sync::Mutex<Option<std::net::SocketAddr>> = std::sync::Mutex::new(None);
        let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        *TARGET.lock().unwrap() = Some(target.local_addr().unwrap());
        let s = filtered_by(forwarder_programs().unwrap(), || {
            let a = TARGET.lock().unwrap().unwrap();
            match std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(5)) {
                Ok(_) => 0,
                Err(_) => 3,
            }
        });
        assert_eq!(s, nix::sys::wait::WaitStatus::Exited(s.pid().unwrap(), 0));
        LISTENER.lock().unwrap().take();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_thread_can_be_started_under_the_filter() {
        // clone3 answers ENOSYS, glibc falls back to clone with
        // CLONE_THREAD, which the filter allows.
        let t = filtered(|| match std::thread::spawn(|| 7).join() {
            Ok(7) => 0,
            _ => 3,
        });
        assert_eq!(t, nix::sys::wait::WaitStatus::Exited(t.pid().unwrap(), 0));
    }

    #[test]
    fn no_file_or_process_call_is_allowed() {
        let all: Vec<_> = ALLOWED.iter().flat_map(|(_, c)| c.iter()).collect();
        for forbidden in [
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_setns,
            libc::SYS_unshare,
            libc::SYS_ptrace,
            libc::SYS_kill,
            libc::SYS_socketpair,
        ] {
            assert!(!all.contains(&&forbidden), "{forbidden}");
        }
    }
}
