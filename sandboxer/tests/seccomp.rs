//! The application's seccomp filter, seen from inside the sandbox: the
//! sandboxer binary driven over its fd-3 channel with a profile's sandbox
//! section. Needs root (namespaces, mounts); skips with a message otherwise.

use proto::profile::Sandbox as Profile;
use proto::sandbox::ExitStatus;

mod common;

use common::*;

/// keyctl, bpf and clone3 on the running architecture.
#[cfg(target_arch = "x86_64")]
const NR: Option<(u32, u32, u32)> = Some((250, 321, 435));
#[cfg(target_arch = "aarch64")]
const NR: Option<(u32, u32, u32)> = Some((219, 280, 435));
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const NR: Option<(u32, u32, u32)> = None;

/// A raw system call from python3 ctypes printing "<return> <errno>", or
/// "no-python" when the sandbox has no python3.
fn pysyscall(nr: u32, args: &str) -> String {
    format!(
        "if command -v python3 >/dev/null; then python3 -c 'import ctypes; \
         libc = ctypes.CDLL(None, use_errno=True); r = libc.syscall({nr}{args}); \
         print(r, ctypes.get_errno())'; else echo no-python; fi"
    )
}

/// A root-mode sandboxer set up with `profile` in a fresh netns.
fn with(profile: Profile) -> Sandboxer {
    let mut sb = Sandboxer::root_mode();
    sb.setup_profile(profile);
    sb
}

const EPERM: &str = "-1 1\n";

#[test]
fn default_filter_denies_kernel_attack_surface_and_nothing_ordinary() {
    if !root() {
        return;
    }
    let mut sb = with(Profile::default());
    let status = sb.ok(1, "grep -E '^Seccomp:' /proc/self/status");
    assert_eq!(status.split_whitespace().nth(1), Some("2"), "{status}");
    assert_eq!(sb.ok(2, "ls / >/dev/null && echo ok"), "ok\n");
    // Forks, pipes and exec of another program still work.
    assert_eq!(sb.ok(3, "(echo a; true) | cat; uname -s"), "a\nLinux\n");
    if let Some((keyctl, bpf, _)) = NR {
        // keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)
        let out = sb.ok(4, &pysyscall(keyctl, ", 0, -3, 0"));
        if out != "no-python\n" {
            assert_eq!(out, EPERM, "keyctl");
            assert_eq!(sb.ok(5, &pysyscall(bpf, ", 0, 0, 0")), EPERM, "bpf");
        } else {
            eprintln!("skipping the raw system calls: no python3 in the sandbox");
        }
    }
    // Nesting a user namespace is allowed by default; mounting in it is not.
    assert_eq!(sb.ok(6, "unshare -U true && echo nested"), "nested\n");
    let (status, out) = sb.run(7, "unshare -Ur mount -t tmpfs none /tmp");
    assert_ne!(
        status,
        ExitStatus::Code(0),
        "mount in a nested userns: {out}"
    );
    assert!(out.contains("not permitted"), "{out}");
    assert!(sb.shutdown().success());
}

#[test]
fn unpriv_user_ns_false_denies_namespaces_like_the_original() {
    if !root() {
        return;
    }
    let mut sb = with(Profile {
        unpriv_user_ns: false,
        ..Profile::default()
    });
    for (id, cmd) in [(1, "unshare -U true"), (2, "unshare -n true")] {
        let (status, out) = sb.run(id, cmd);
        assert_ne!(status, ExitStatus::Code(0), "{cmd}: {out}");
        assert!(out.contains("not permitted"), "{cmd}: {out}");
    }
    // clone without CLONE_NEWUSER (fork) still works.
    assert_eq!(sb.ok(3, "(echo sub) | cat"), "sub\n");
    if let Some((_, _, clone3)) = NR {
        let out = sb.ok(4, &pysyscall(clone3, ", 0, 0"));
        if out != "no-python\n" {
            assert_eq!(out, "-1 38\n", "clone3: ENOSYS");
        }
    }
    assert!(sb.shutdown().success());
}

#[test]
fn profile_seccomp_names_are_denied() {
    if !root() {
        return;
    }
    let mut sb = with(Profile {
        seccomp: vec!["uname".into()],
        ..Profile::default()
    });
    let (status, out) = sb.run(1, "uname -s");
    assert_ne!(status, ExitStatus::Code(0), "uname: {out}");
    assert_eq!(sb.ok(2, "echo still-ok"), "still-ok\n");
    assert!(sb.shutdown().success());
}

#[test]
fn unknown_syscall_name_fails_the_spawn_naming_it() {
    if !root() {
        return;
    }
    let mut sb = with(Profile {
        seccomp: vec!["no_such_syscall".into()],
        ..Profile::default()
    });
    let err = sb.try_run(1, "true").unwrap_err();
    assert!(err.contains("\"no_such_syscall\""), "{err}");
    assert!(sb.shutdown().success());
}

/// A python3 ctypes script printing what `syscall(...)` returned and its
/// errno for each call, one "<return> <errno>" line each; "no-python" when
/// the sandbox has none. Arguments are passed as C longs, as the kernel
/// reads registers.
fn pycalls(calls: &[(i64, &[i64])]) -> String {
    let calls: Vec<String> = calls
        .iter()
        .map(|(nr, args)| {
            let args: Vec<String> = std::iter::once(nr)
                .chain(args.iter())
                .map(|a| format!("ctypes.c_long({a})"))
                .collect();
            format!("({},)", args.join(", "))
        })
        .collect();
    format!(
        "if command -v python3 >/dev/null; then python3 -c '
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
for c in [{}]:
    ctypes.set_errno(0)
    r = libc.syscall(*c)
    print(r, ctypes.get_errno() if r == -1 else 0)
'; else echo no-python; fi",
        calls.join(", ")
    )
}

/// System call numbers the tests below make, on the running architecture.
struct Nrs {
    io_uring_setup: i64,
    socket: i64,
    socketpair: i64,
    personality: i64,
    ioctl: i64,
    ptrace: i64,
}

#[cfg(target_arch = "x86_64")]
const NRS: Option<Nrs> = Some(Nrs {
    io_uring_setup: 425,
    socket: 41,
    socketpair: 53,
    personality: 135,
    ioctl: 16,
    ptrace: 101,
});
#[cfg(target_arch = "aarch64")]
const NRS: Option<Nrs> = Some(Nrs {
    io_uring_setup: 425,
    socket: 198,
    socketpair: 199,
    personality: 92,
    ioctl: 29,
    ptrace: 117,
});
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const NRS: Option<Nrs> = None;

/// An invalid socket type: the kernel checks it before the family, so a
/// family that reaches the kernel fails with EINVAL and one the filter
/// stops with EAFNOSUPPORT — whether or not the kernel has that family.
const BAD_TYPE: i64 = 99;
const EINVAL: &str = "-1 22";
const EAFNOSUPPORT: &str = "-1 97";
const ENOSYS: &str = "-1 38";

/// Lines of a run of `pycalls`, or None (with a note) without python3.
fn lines(sb: &mut Sandboxer, id: u32, calls: &[(i64, &[i64])]) -> Option<Vec<String>> {
    let out = sb.ok(id, &pycalls(calls));
    if out == "no-python\n" {
        eprintln!("skipping the raw system calls: no python3 in the sandbox");
        return None;
    }
    Some(out.lines().map(str::to_string).collect())
}

#[test]
fn default_filter_closes_io_uring_foreign_socket_families_and_unsafe_personas() {
    let (true, Some(n)) = (root(), NRS) else {
        return;
    };
    let mut sb = with(Profile::default());
    let af = |f: i32| i64::from(f);
    let calls: &[(i64, &[i64])] = &[
        // io_uring_setup(8, NULL): EPERM (the kernel would say EFAULT).
        (n.io_uring_setup, &[8, 0]),
        // Denied families: EAFNOSUPPORT before the kernel's EINVAL for the
        // type, so the errno is the filter's even where vsock exists.
        (n.socket, &[af(libc::AF_VSOCK), BAD_TYPE, 0]),
        (n.socket, &[af(libc::AF_VSOCK), af(libc::SOCK_STREAM), 0]),
        (n.socket, &[af(libc::AF_ALG), BAD_TYPE, 0]),
        (n.socket, &[af(libc::AF_BLUETOOTH), BAD_TYPE, 0]),
        (n.socketpair, &[af(libc::AF_VSOCK), BAD_TYPE, 0, 0]),
        // Namespaced families reach the kernel.
        (n.socket, &[af(libc::AF_INET), BAD_TYPE, 0]),
        (n.socket, &[af(libc::AF_INET6), BAD_TYPE, 0]),
        (n.socket, &[af(libc::AF_UNIX), BAD_TYPE, 0]),
        (n.socket, &[af(libc::AF_NETLINK), BAD_TYPE, 0]),
        (n.socket, &[af(libc::AF_PACKET), BAD_TYPE, 0]),
        // personality: ADDR_NO_RANDOMIZE and READ_IMPLIES_EXEC refused, the
        // query answered.
        (n.personality, &[0x0040000]),
        (n.personality, &[0x0400000]),
        (n.personality, &[0xffff_ffff]),
    ];
    let Some(out) = lines(&mut sb, 1, calls) else {
        assert!(sb.shutdown().success());
        return;
    };
    let expect = [
        EPERM.trim_end(),
        EAFNOSUPPORT,
        EAFNOSUPPORT,
        EAFNOSUPPORT,
        EAFNOSUPPORT,
        EAFNOSUPPORT,
        EINVAL,
        EINVAL,
        EINVAL,
        EINVAL,
        EINVAL,
        EPERM.trim_end(),
        EPERM.trim_end(),
    ];
    assert_eq!(out.len(), calls.len(), "{out:?}");
    for (i, want) in expect.iter().enumerate() {
        assert_eq!(out[i], *want, "call {i} {:?}: {out:?}", calls[i]);
    }
    let query = &out[expect.len()];
    assert!(!query.starts_with("-1"), "personality query: {query}");
    // Ordinary sockets of each allowed family work for real.
    let py = "python3 -c 'import socket as s
for f, t in ((s.AF_INET, s.SOCK_STREAM), (s.AF_INET6, s.SOCK_DGRAM), (s.AF_UNIX, s.SOCK_STREAM), (s.AF_NETLINK, s.SOCK_RAW)):
    s.socket(f, t).close()
a, b = s.socketpair()
a.send(b\"x\"); print(b.recv(1).decode())'";
    assert_eq!(sb.ok(2, py), "x\n");
    // And ip reads the namespace's links over netlink.
    assert!(sb.ok(3, "ip -o link show lo").contains("lo"));
    assert!(sb.shutdown().success());
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_whole_x32_abi_fails() {
    if !root() {
        return;
    }
    let mut sb = with(Profile::default());
    let x32 = 0x4000_0000i64;
    // getpid, an x32-only number (rt_sigaction), the last one, beyond.
    let calls: &[(i64, &[i64])] = &[
        (x32 | 39, &[]),
        (x32 + 512, &[]),
        (x32 + 547, &[]),
        (x32 + 4000, &[]),
    ];
    if let Some(out) = lines(&mut sb, 1, calls) {
        assert_eq!(out, vec![ENOSYS; 4]);
    }
    assert!(sb.shutdown().success());
}

#[test]
fn tiocsti_and_tioclinux_fail_with_eperm_on_any_descriptor() {
    let (true, Some(n)) = (root(), NRS) else {
        return;
    };
    let mut sb = with(Profile::default());
    let (sti, linux) = (0x5412i64, 0x541ci64);
    // stdin is /dev/null, stdout a pipe: the kernel would say ENOTTY.
    let calls: &[(i64, &[i64])] = &[
        (n.ioctl, &[0, sti, 0]),
        (n.ioctl, &[1, sti, 0]),
        (n.ioctl, &[1, linux, 0]),
        (n.ioctl, &[2, linux, 0]),
        // High bits the kernel ignores do not get past the filter.
        (n.ioctl, &[1, sti | (1 << 32), 0]),
        // Other requests reach the kernel: TIOCGWINSZ on a pipe.
        (n.ioctl, &[1, 0x5413, 0]),
    ];
    if let Some(out) = lines(&mut sb, 1, calls) {
        let enotty = "-1 25";
        let e = EPERM.trim_end();
        assert_eq!(out, vec![e, e, e, e, e, enotty]);
    }
    assert!(sb.shutdown().success());
}

/// The init, seen from the application: filtered, and out of its reach.
fn check_init_from_inside(sb: &mut Sandboxer, ptrace: Option<i64>) {
    let status = sb.ok(101, "grep -E '^Seccomp:' /proc/1/status");
    assert_eq!(status.split_whitespace().nth(1), Some("2"), "{status}");
    // Its links and memory are closed to the application, which has its
    // uid: it is not dumpable. Our own are open, so /proc works.
    let (st, out) = sb.run(102, "readlink -v /proc/1/ns/net");
    assert_ne!(st, ExitStatus::Code(0), "init's ns/net readable: {out}");
    assert!(out.contains("denied"), "{out}");
    let (st, out) = sb.run(103, "head -c1 /proc/1/environ");
    assert_ne!(st, ExitStatus::Code(0), "init's environ readable: {out}");
    assert!(sb
        .ok(104, "readlink /proc/self/ns/net")
        .starts_with("net:["));
    if let Some(ptrace) = ptrace {
        // PTRACE_ATTACH to PID 1.
        if let Some(out) = lines(sb, 105, &[(ptrace, &[16, 1, 0, 0])]) {
            assert_eq!(out, vec![EPERM.trim_end()], "ptrace of the init");
        }
    }
}

#[test]
fn init_is_filtered_and_not_dumpable_root_mode() {
    if !root() {
        return;
    }
    let mut sb = Sandboxer::root_mode();
    let init = sb.setup_profile(Profile::default());
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    assert!(status.contains("\nSeccomp:\t2\n"), "{status}");
    assert!(status.contains("\nNoNewPrivs:\t1\n"), "{status}");
    check_init_from_inside(&mut sb, NRS.map(|n| n.ptrace));
    // ListPids still finds the application without reading the init's links.
    let (pid, r) = sb.spawn_sh(200, "sleep 30", false).unwrap();
    let pids = sb.pids();
    assert!(
        pids.iter().any(|p| p.pid == pid && p.role == "app"),
        "{pids:?}"
    );
    drop(r);
    assert!(sb.shutdown().success());
}

#[test]
fn init_is_filtered_and_not_dumpable_rootless() {
    if !root() {
        return;
    }
    let (mut sb, _, _, init) = rootless_sandboxer(Profile::default());
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    assert!(status.contains("\nSeccomp:\t2\n"), "{status}");
    check_init_from_inside(&mut sb, NRS.map(|n| n.ptrace));
    assert!(sb.shutdown().success());
}
