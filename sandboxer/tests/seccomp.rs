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
