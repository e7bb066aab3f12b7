//! The default seccomp filter: which system calls fail, as data.
//!
//! Scope: every process `Spawn` starts (the application, `--root` ones too;
//! under gVisor, `runsc`: see [`GVISOR_NEEDS`]) and the sandbox's init (its
//! PID 1, which gets [`Filter::init`]: the default part alone, whatever the
//! profile adds). Not the sandboxer. Everything not listed here is allowed —
//! a deny list of kernel attack surface an application has no business
//! with, not an allow list; only socket address families are an allow list
//! ([`SOCKET_FAMILIES`]), as each family is a kernel subsystem of its own,
//! loaded on demand. Denied calls fail with an errno rather than killing
//! the caller, so programs that probe for a feature degrade gracefully.
//! `doc/SECCOMP.md` lists every entry and compares it with Docker's default
//! profile.
//!
//! The filter is [`Filter::compile`]d once, in the sandboxer, when `Setup`
//! arrives; the forked child only [`Filter::apply`]s the prebuilt programs
//! (no allocation after fork) as its last step before exec, after
//! `NO_NEW_PRIVS`, so no capability is needed.
//!
//! Sources, merged:
//! * [`DEFAULT_DENY`], always (EPERM);
//! * arguments, always: `socket`/`socketpair` with a family not in
//!   [`SOCKET_FAMILIES`] (EAFNOSUPPORT, as a kernel without that family
//!   answers), `personality` with a value not in [`PERSONALITIES`] (EPERM),
//!   `ioctl` with a request in [`IOCTL_DENY`] (EPERM);
//! * on x86_64, the whole x32 ABI (ENOSYS, see below);
//! * `sandbox.unpriv_user_ns: false`: [`NO_USER_NS`] — the original's rules
//!   (`setns`, `unshare`, `clone` with `CLONE_NEWUSER` fail with EPERM;
//!   `clone3`, whose flags sit behind a pointer seccomp cannot read, fails
//!   with ENOSYS so libc falls back to `clone`, where the flag is checked);
//! * `sandbox.seccomp`: the profile's extra names (EPERM). A name unknown on
//!   the running architecture makes every `Spawn` fail with an error naming
//!   it.
//!
//! Architectures: x86_64 and aarch64. System calls of another ABI (i386
//! through `int 0x80` on x86_64, arm32 compat on aarch64) kill the process:
//! the numbers differ there, so letting them through would bypass the list.
//! x86_64's x32 ABI shares the arch value but sets bit 30 of the number
//! (512–547 are x32-only numbers): every number from `0x4000_0000` up to
//! `0x7fff_ffff` fails with ENOSYS, what a kernel built without x32 answers,
//! so nothing of the x32 ABI is reachable, listed or not.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::str::FromStr;

use nix::errno::Errno;
use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

/// Denied for every application (EPERM), with why. Scope: kernel interfaces
/// that are attack surface or host-wide state, that the application (without
/// capabilities, but perhaps root of a user namespace of its own) has no
/// business with. Names not on the running architecture are skipped.
pub const DEFAULT_DENY: &[(&str, &str)] = &[
    // Kernel keyring: not namespaced; a long list of kernel bugs.
    ("add_key", "kernel keyring is not namespaced"),
    ("request_key", "kernel keyring is not namespaced"),
    ("keyctl", "kernel keyring is not namespaced"),
    // Powerful in-kernel machinery, a frequent source of exploits.
    (
        "bpf",
        "eBPF programs: in-kernel code, frequent exploit vector",
    ),
    (
        "perf_event_open",
        "performance events leak host activity, frequent exploit vector",
    ),
    (
        "userfaultfd",
        "lets an exploit stall the kernel at will (race widening)",
    ),
    // io_uring performs reads, writes, connects, opens… in kernel workers:
    // seccomp never sees those operations, so the ring would bypass this
    // filter, and it has been the largest single source of kernel exploits
    // of recent years (Docker, Android and ChromeOS deny it too).
    (
        "io_uring_setup",
        "io_uring: its operations bypass seccomp, top exploit source",
    ),
    (
        "io_uring_enter",
        "io_uring: its operations bypass seccomp, top exploit source",
    ),
    (
        "io_uring_register",
        "io_uring: its operations bypass seccomp, top exploit source",
    ),
    // Host-wide operations; the capabilities are gone, this is depth.
    ("kexec_load", "replaces the running kernel"),
    ("kexec_file_load", "replaces the running kernel"),
    ("init_module", "loads kernel modules"),
    ("finit_module", "loads kernel modules"),
    ("delete_module", "unloads kernel modules"),
    ("iopl", "raw I/O port access"),
    ("ioperm", "raw I/O port access"),
    ("swapon", "host swap configuration"),
    ("swapoff", "host swap configuration"),
    ("reboot", "reboots the host"),
    ("syslog", "kernel log: leaks host addresses and activity"),
    ("acct", "host-wide process accounting"),
    ("quotactl", "host file system quotas"),
    ("quotactl_fd", "host file system quotas"),
    ("lookup_dcookie", "profiling interface, leaks host paths"),
    (
        "uselib",
        "obsolete a.out library loader, exploited before; nothing uses it",
    ),
    // Escapes by file handle: opens any inode of a mounted file system,
    // bypassing the sandbox's file view (the "shocker" container escape).
    ("open_by_handle_at", "bypasses the file view by file handle"),
    // Mounting: the application has no capabilities, but with
    // `unpriv_user_ns` it may create a user namespace of its own and be
    // root there, able to mount over and reshape its file view. Nesting
    // namespaces stays allowed; changing mounts does not.
    (
        "mount",
        "reshapes the file view from a nested user namespace",
    ),
    ("umount2", "could uncover what the file view hides"),
    (
        "pivot_root",
        "reshapes the file view from a nested user namespace",
    ),
    ("fsopen", "new mount API: creates file system contexts"),
    ("fsconfig", "new mount API: configures file system contexts"),
    ("fsmount", "new mount API: turns a context into a mount"),
    ("fspick", "new mount API: reconfigures an existing mount"),
    ("move_mount", "new mount API: attaches mounts"),
    ("open_tree", "new mount API: clones mount trees"),
    ("mount_setattr", "changes mount flags of the file view"),
];

/// Under gVisor the filter confines `runsc`, not the application (whose
/// system calls gVisor's kernel serves): these [`DEFAULT_DENY`] entries are
/// left out, as runsc's gofer and sandbox build their own mount namespaces
/// (and then install much stricter filters of their own). The profile's
/// `seccomp` and `unpriv_user_ns: false` are refused with gVisor when the
/// profile is read. Everything else, the argument rules and x32 included,
/// applies to runsc too (it is a Go program: it uses none of them).
pub const GVISOR_NEEDS: &[&str] = &[
    "mount",
    "umount2",
    "pivot_root",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
];

/// The only address families `socket` and `socketpair` accept; any other
/// fails with EAFNOSUPPORT, the answer of a kernel without that family, so
/// programs fall back. Each of these is isolated by the session's network
/// namespace (or, for AF_UNIX, by the file view). Denied, notably: AF_VSOCK
/// (not network-namespaced: it reaches the hypervisor and the host's vsock
/// services), AF_ALG (the kernel's crypto API, no network at all, a steady
/// source of exploits; Docker denies both), AF_BLUETOOTH, AF_NFC, AF_CAN and
/// other hardware buses, AF_KEY (superseded by netlink's XFRM), AF_TIPC,
/// AF_RDS, AF_SMC and other cluster protocols, and every legacy family
/// (X.25, AX.25, AppleTalk, LLC, …): each is a kernel module an unprivileged
/// `socket()` call would load and expose, the usual way old protocol bugs
/// became local root exploits.
pub const SOCKET_FAMILIES: &[(i32, &str, &str)] = &[
    (
        libc::AF_UNIX,
        "AF_UNIX",
        "local sockets: paths are subject to the file view, abstract names to the network namespace",
    ),
    (
        libc::AF_INET,
        "AF_INET",
        "IPv4 in the session's network namespace: its only way out is the chain",
    ),
    (
        libc::AF_INET6,
        "AF_INET6",
        "IPv6 in the session's network namespace: its only way out is the chain",
    ),
    (
        libc::AF_NETLINK,
        "AF_NETLINK",
        "routes, links, nftables, sock_diag of the namespace's own network (ip, nft, ss)",
    ),
    (
        libc::AF_PACKET,
        "AF_PACKET",
        "frames of the namespace's own interfaces (tcpdump; CAP_NET_RAW there)",
    ),
];

/// The only `personality` values allowed (those Docker allows); any other
/// fails with EPERM. Denied, notably: ADDR_NO_RANDOMIZE (turns off address
/// space randomisation for everything the process execs next),
/// READ_IMPLIES_EXEC (makes readable memory executable), MMAP_PAGE_ZERO
/// (maps page zero, which turns kernel NULL dereferences into exploits),
/// and every foreign persona. Compared as the kernel reads it, an unsigned
/// 32-bit value.
pub const PERSONALITIES: &[(u32, &str)] = &[
    (0x0000_0000, "PER_LINUX: the default persona"),
    (
        0x0000_0008,
        "PER_LINUX32: uname reports a 32-bit machine (linux32, setarch i686)",
    ),
    (
        0x0002_0000,
        "UNAME26: uname reports a 2.6 kernel, for old build scripts",
    ),
    (0x0002_0008, "PER_LINUX32 | UNAME26"),
    (
        0xffff_ffff,
        "query: returns the current persona, changes nothing",
    ),
];

/// `ioctl` requests denied (EPERM) on any descriptor, compared as the kernel
/// reads them (an unsigned 32-bit value: higher bits are ignored by it, so
/// they must be by the filter too).
pub const IOCTL_DENY: &[(u32, &str, &str)] = &[
    (
        0x5412,
        "TIOCSTI",
        "pushes input into a terminal: types commands into the user's shell when the sandbox shares its terminal",
    ),
    (
        0x541c,
        "TIOCLINUX",
        "virtual console services: pastes the selection as input, reads the console",
    ),
];

/// System calls that set a file's mode, with the index of their mode
/// argument: setting the set-user-ID or set-group-ID bit fails (EPERM).
/// Why: in root mode a writable bind is idmapped, so what the application
/// (uid 0 of its own user namespace) creates there belongs to the host's
/// root on disk — a set-user-ID file it made would run as the host's root
/// for whoever executes it outside the sandbox. Inside, such bits are dead
/// anyway (every mount is `nosuid`, `no_new_privs` holds). `openat2` carries
/// its mode in a structure seccomp cannot read: it fails with ENOSYS, and
/// libc and programs fall back to `openat`. Under gVisor the mode rules
/// confine runsc's gofer, which writes the application's files on the host
/// (as runsc's uid, which a set-ID file would hand to whoever runs it).
pub const SETID_MODE: &[(&str, u8)] = &[
    ("chmod", 1),
    ("fchmod", 1),
    ("fchmodat", 2),
    ("fchmodat2", 2),
    ("open", 2),
    ("openat", 3),
    ("creat", 1),
    ("mknod", 1),
    ("mknodat", 2),
];

/// `S_ISUID`, `S_ISGID`.
const SETID_BITS: [u64; 2] = [0o4000, 0o2000];

/// With `sandbox.unpriv_user_ns: false`, unconditionally denied (EPERM):
/// no joining or creating namespaces. `clone` is handled by
/// [`CLONE_NEWUSER`] on its first argument, `clone3` by ENOSYS.
pub const NO_USER_NS: &[(&str, &str)] = &[
    ("setns", "joins namespaces"),
    ("unshare", "creates namespaces, a user namespace among them"),
];

/// `CLONE_NEWUSER`, checked in `clone`'s flags (argument 0 on every
/// supported architecture).
const CLONE_NEWUSER: u64 = libc::CLONE_NEWUSER as u64;

/// x32 system calls: x86_64's numbers with this bit set.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// `AUDIT_ARCH_X86_64` (linux/audit.h): the arch of x86_64 and x32 calls.
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;

/// Why the filter cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("sandbox.seccomp: unknown system call {name:?} on {arch}")]
    UnknownSyscall { name: String, arch: &'static str },
    #[error("seccomp: unsupported architecture {0}")]
    UnsupportedArch(&'static str),
    #[error("seccomp: compile the filter: {0}")]
    Compile(#[from] seccompiler::BackendError),
}

/// The compiled filter: BPF programs to install, in order.
#[derive(Debug)]
pub struct Filter {
    programs: Vec<BpfProgram>,
}

/// The system call numbers of one architecture, by name: the kernel's
/// tables as the `syscalls` crate generates them.
type Table = fn(&str) -> Option<i64>;

/// x86_64's numbers.
fn x86_64(name: &str) -> Option<i64> {
    syscalls::x86_64::Sysno::from_str(name)
        .ok()
        .map(|s| i64::from(s.id()))
}

/// aarch64's numbers; `newfstatat` is the kernel's (and libc's) name for what
/// the crate calls `fstatat` there.
fn aarch64(name: &str) -> Option<i64> {
    let name = if name == "newfstatat" {
        "fstatat"
    } else {
        name
    };
    syscalls::aarch64::Sysno::from_str(name)
        .ok()
        .map(|s| i64::from(s.id()))
}

/// The running architecture: its name, seccompiler's arch and its table.
fn native() -> Result<(&'static str, TargetArch, Table), SeccompError> {
    if cfg!(target_arch = "x86_64") {
        Ok(("x86_64", TargetArch::x86_64, x86_64))
    } else if cfg!(target_arch = "aarch64") {
        Ok(("aarch64", TargetArch::aarch64, aarch64))
    } else {
        Err(SeccompError::UnsupportedArch(std::env::consts::ARCH))
    }
}

/// The number of system call `name` in `table`.
pub fn lookup(table: Table, name: &str) -> Option<i64> {
    table(name)
}

/// Rules per system call number; an empty list means "always".
type Rules = BTreeMap<i64, Vec<SeccompRule>>;

/// Deny `nr` always: drops any conditional rules it had.
fn deny_always(rules: &mut Rules, nr: i64) {
    rules.insert(nr, Vec::new());
}

/// Deny `nr` when `rule` matches, unless it is denied always already.
fn deny_when(rules: &mut Rules, nr: i64, rule: SeccompRule) {
    match rules.get_mut(&nr) {
        Some(v) if v.is_empty() => {}
        Some(v) => v.push(rule),
        None => {
            rules.insert(nr, vec![rule]);
        }
    }
}

/// A rule that matches when the low 32 bits of argument `arg` are none of
/// `allowed` (an AND of not-equal conditions).
fn none_of(arg: u8, allowed: impl Iterator<Item = u32>) -> Result<SeccompRule, SeccompError> {
    let conditions = allowed
        .map(|v| {
            SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, u64::from(v))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SeccompRule::new(conditions)?)
}

/// A rule that matches when the low 32 bits of argument `arg` are `value`.
fn equals(arg: u8, value: u32) -> Result<SeccompRule, SeccompError> {
    let c = SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        u64::from(value),
    )?;
    Ok(SeccompRule::new(vec![c])?)
}

/// The argument rules of the default filter: socket families
/// (EAFNOSUPPORT), personality values and ioctl requests (EPERM).
fn argument_rules(
    table: Table,
    eperm: &mut Rules,
    eafnosupport: &mut Rules,
) -> Result<(), SeccompError> {
    for name in ["socket", "socketpair"] {
        if let Some(nr) = lookup(table, name) {
            let families = SOCKET_FAMILIES.iter().map(|(af, _, _)| *af as u32);
            deny_when(eafnosupport, nr, none_of(0, families)?);
        }
    }
    if let Some(nr) = lookup(table, "personality") {
        deny_when(
            eperm,
            nr,
            none_of(0, PERSONALITIES.iter().map(|(p, _)| *p))?,
        );
    }
    if let Some(nr) = lookup(table, "ioctl") {
        for (request, _, _) in IOCTL_DENY {
            deny_when(eperm, nr, equals(1, *request)?);
        }
    }
    Ok(())
}

/// [`SETID_MODE`]: a mode with either bit fails (EPERM); `openat2` ENOSYS
/// (not under gVisor, where runsc's gofer makes the application's files and
/// may use it; the mode rules hold there too: the gofer's `fchmod` is what
/// the application's `chmod` becomes).
fn setid_rules(
    table: Table,
    eperm: &mut Rules,
    enosys: Option<&mut Rules>,
) -> Result<(), SeccompError> {
    for (name, arg) in SETID_MODE {
        let Some(nr) = lookup(table, name) else {
            continue;
        };
        for bit in SETID_BITS {
            let c = SeccompCondition::new(
                *arg,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(bit),
                bit,
            )?;
            deny_when(eperm, nr, SeccompRule::new(vec![c])?);
        }
    }
    if let (Some(enosys), Some(nr)) = (enosys, lookup(table, "openat2")) {
        deny_always(enosys, nr);
    }
    Ok(())
}

/// A classic BPF statement or jump.
const fn bpf(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// x86_64 only: every x32 system call (arch x86_64, number in
/// `0x4000_0000..0x8000_0000`) fails with ENOSYS. Other arches pass (the
/// main program kills them); numbers with bit 31 set (-1: a tracer skipping
/// a call) are left to the kernel, which answers ENOSYS itself.
fn x32_program() -> BpfProgram {
    // linux/bpf_common.h: BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K,
    // BPF_JMP|BPF_JGE|BPF_K, BPF_RET|BPF_K.
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JGE_K: u16 = 0x35;
    const RET_K: u16 = 0x06;
    // struct seccomp_data: nr at 0, arch at 4.
    vec![
        bpf(LD_W_ABS, 0, 0, 4),
        bpf(JEQ_K, 0, 4, AUDIT_ARCH_X86_64),
        bpf(LD_W_ABS, 0, 0, 0),
        bpf(JGE_K, 2, 0, 0x8000_0000),
        bpf(JGE_K, 0, 1, X32_SYSCALL_BIT),
        bpf(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        bpf(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

impl Filter {
    /// Build the filter the profile's sandbox section asks for.
    pub fn compile(profile: &proto::profile::Sandbox) -> Result<Filter, SeccompError> {
        let (arch_name, arch, table) = native()?;
        let mut eperm = Rules::new();
        let mut enosys = Rules::new();
        let mut eafnosupport = Rules::new();
        for (name, _why) in DEFAULT_DENY {
            if profile.gvisor && GVISOR_NEEDS.contains(name) {
                continue;
            }
            if let Some(nr) = lookup(table, name) {
                deny_always(&mut eperm, nr);
            }
        }
        for name in profile.seccomp.iter().filter(|_| !profile.gvisor) {
            let nr = lookup(table, name).ok_or_else(|| SeccompError::UnknownSyscall {
                name: name.clone(),
                arch: arch_name,
            })?;
            deny_always(&mut eperm, nr);
        }
        argument_rules(table, &mut eperm, &mut eafnosupport)?;
        setid_rules(table, &mut eperm, (!profile.gvisor).then_some(&mut enosys))?;
        if !profile.unpriv_user_ns && !profile.gvisor {
            for (name, _why) in NO_USER_NS {
                if let Some(nr) = lookup(table, name) {
                    deny_always(&mut eperm, nr);
                }
            }
            if let Some(nr) = lookup(table, "clone") {
                let flag = SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(CLONE_NEWUSER),
                    CLONE_NEWUSER,
                )?;
                deny_when(&mut eperm, nr, SeccompRule::new(vec![flag])?);
            }
            if let Some(nr) = lookup(table, "clone3") {
                deny_always(&mut enosys, nr);
            }
        }
        let mut programs = Vec::with_capacity(4);
        for (rules, errno) in [
            (eperm, libc::EPERM),
            (enosys, libc::ENOSYS),
            (eafnosupport, libc::EAFNOSUPPORT),
        ] {
            if rules.is_empty() {
                continue;
            }
            let filter = SeccompFilter::new(
                rules,
                SeccompAction::Allow,
                SeccompAction::Errno(errno as u32),
                arch,
            )?;
            programs.push(BpfProgram::try_from(filter)?);
        }
        if matches!(arch, TargetArch::x86_64) {
            programs.push(x32_program());
        }
        Ok(Filter { programs })
    }

    /// The sandbox init's filter: the default part alone (no profile
    /// names, namespaces allowed: the init creates none and must not be
    /// broken by a profile's list), mount calls denied even under gVisor.
    pub fn init() -> Result<Filter, SeccompError> {
        Filter::compile(&proto::profile::Sandbox {
            seccomp: Vec::new(),
            unpriv_user_ns: true,
            gvisor: false,
            ..Default::default()
        })
    }

    /// Install the filter on the calling thread: in the forked child, right
    /// before exec. Sets `NO_NEW_PRIVS` (already set by the capability
    /// drop). Allocates nothing.
    pub fn apply(&self) -> Result<(), Errno> {
        for program in &self.programs {
            seccompiler::apply_filter(program).map_err(|e| match e {
                seccompiler::Error::Prctl(e) | seccompiler::Error::Seccomp(e) => {
                    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EINVAL))
                }
                _ => Errno::EINVAL,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn name_tables_agree_with_libc() {
        let x: Table = x86_64;
        assert_eq!(lookup(x, "keyctl"), Some(250));
        assert_eq!(lookup(x, "bpf"), Some(321));
        assert_eq!(lookup(x, "uname"), Some(63));
        assert_eq!(lookup(x, "clone3"), Some(435));
        let a: Table = aarch64;
        assert_eq!(lookup(a, "keyctl"), Some(219));
        assert_eq!(lookup(a, "clone"), Some(220));
        assert_eq!(lookup(a, "iopl"), None);
        assert_eq!(lookup(a, "newfstatat"), Some(79));
        assert_eq!(lookup(x, "newfstatat"), Some(262));
        assert_eq!(lookup(x, "no_such_call"), None);
        #[cfg(target_arch = "x86_64")]
        for (name, nr) in [
            ("keyctl", libc::SYS_keyctl),
            ("mount", libc::SYS_mount),
            ("open_tree", libc::SYS_open_tree),
            ("setns", libc::SYS_setns),
            ("execve", libc::SYS_execve),
        ] {
            assert_eq!(lookup(x, name), Some(nr), "{name}");
        }
        #[cfg(target_arch = "aarch64")]
        for (name, nr) in [
            ("keyctl", libc::SYS_keyctl),
            ("mount", libc::SYS_mount),
            ("setns", libc::SYS_setns),
            ("execve", libc::SYS_execve),
        ] {
            assert_eq!(lookup(a, name), Some(nr), "{name}");
        }
    }

    #[test]
    fn every_listed_name_resolves_on_x86_64_and_none_twice() {
        let mut seen = HashSet::new();
        for (name, why) in DEFAULT_DENY.iter().chain(NO_USER_NS) {
            assert!(seen.insert(*name), "{name} listed twice");
            assert!(!why.is_empty(), "{name} has no reason");
            assert!(lookup(x86_64, name).is_some(), "{name}");
        }
        for name in ["clone", "clone3", "execve", "ptrace"] {
            assert!(lookup(x86_64, name).is_some(), "{name}");
        }
    }

    #[test]
    fn what_the_application_needs_is_not_denied() {
        for name in [
            "execve", "execveat", "ptrace", "clone", "clone3", "unshare", "setns",
        ] {
            assert!(!DEFAULT_DENY.iter().any(|(n, _)| *n == name), "{name}");
        }
    }

    #[test]
    fn unknown_profile_name_is_named_in_the_error() {
        let profile = proto::profile::Sandbox {
            seccomp: vec!["uname".into(), "no_such_call".into()],
            ..Default::default()
        };
        match Filter::compile(&profile) {
            Err(e @ SeccompError::UnknownSyscall { .. }) => {
                assert!(e.to_string().contains("\"no_such_call\""), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn programs_per_setting() {
        // EPERM, ENOSYS (openat2) and EAFNOSUPPORT, plus the x32 program
        // on x86_64.
        let x32 = usize::from(cfg!(target_arch = "x86_64"));
        let default = proto::profile::Sandbox::default();
        assert_eq!(
            Filter::compile(&default).map(|f| f.programs.len()).ok(),
            Some(3 + x32)
        );
        let no_userns = proto::profile::Sandbox {
            unpriv_user_ns: false,
            seccomp: vec!["clone".into(), "clone3".into()],
            ..Default::default()
        };
        assert_eq!(
            Filter::compile(&no_userns).map(|f| f.programs.len()).ok(),
            Some(3 + x32)
        );
    }

    #[test]
    fn unconditional_deny_wins_over_a_condition() {
        let mut rules = Rules::new();
        deny_always(&mut rules, 56);
        let c = SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, 1)
            .and_then(|c| SeccompRule::new(vec![c]));
        let Ok(rule) = c else { panic!("rule") };
        deny_when(&mut rules, 56, rule);
        assert_eq!(rules.get(&56).map(Vec::len), Some(0));
    }

    /// What the kernel does with a call, after every program has run.
    #[derive(Debug, PartialEq, Eq)]
    enum Verdict {
        Allow,
        Errno(i32),
        Kill,
    }

    const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;
    #[cfg(target_arch = "aarch64")]
    const NATIVE_ARCH: u32 = 183 | 0x8000_0000 | 0x4000_0000;
    #[cfg(not(target_arch = "aarch64"))]
    const NATIVE_ARCH: u32 = AUDIT_ARCH_X86_64;

    /// Run one classic BPF program over `struct seccomp_data` the way the
    /// kernel does; only the instructions seccompiler and we emit.
    fn run(program: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let word = |off: u32| -> u32 {
            match off {
                0 => nr,
                4 => arch,
                o if (16..64).contains(&o) => {
                    let arg = args[(o as usize - 16) / 8];
                    if o % 8 == 0 {
                        arg as u32
                    } else {
                        (arg >> 32) as u32
                    }
                }
                o => panic!("load at {o}"),
            }
        };
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = &program[pc];
            pc += 1;
            let jump = |taken: bool| usize::from(if taken { i.jt } else { i.jf });
            match i.code {
                0x20 => acc = word(i.k),
                0x54 => acc &= i.k,
                0x05 => pc += i.k as usize,
                0x15 => pc += jump(acc == i.k),
                0x25 => pc += jump(acc > i.k),
                0x35 => pc += jump(acc >= i.k),
                0x45 => pc += jump(acc & i.k != 0),
                0x06 => return i.k,
                c => panic!("instruction {c:#x}"),
            }
        }
    }

    /// Every program, combined as the kernel combines stacked filters (the
    /// most severe action wins).
    fn verdict(filter: &Filter, arch: u32, nr: i64, args: [u64; 6]) -> Verdict {
        let ret = filter
            .programs
            .iter()
            .rev()
            .map(|p| run(p, arch, nr as u32, args))
            .min_by_key(|r| (r & 0xffff_0000) as i32)
            .unwrap_or(libc::SECCOMP_RET_ALLOW);
        match ret & 0xffff_0000 {
            libc::SECCOMP_RET_ALLOW => Verdict::Allow,
            libc::SECCOMP_RET_ERRNO => Verdict::Errno((ret & 0xffff) as i32),
            libc::SECCOMP_RET_KILL_PROCESS => Verdict::Kill,
            other => panic!("action {other:#x}"),
        }
    }

    fn table() -> Table {
        native().map(|(_, _, t)| t).unwrap_or(x86_64)
    }

    fn nr(name: &str) -> i64 {
        lookup(table(), name).unwrap_or_else(|| panic!("{name}"))
    }

    fn call(filter: &Filter, name: &str, args: [u64; 6]) -> Verdict {
        verdict(filter, NATIVE_ARCH, nr(name), args)
    }

    fn default_filter() -> Filter {
        Filter::compile(&proto::profile::Sandbox::default()).expect("default filter")
    }

    const EPERM: Verdict = Verdict::Errno(libc::EPERM);

    #[test]
    fn every_default_name_is_denied_and_ordinary_calls_are_not() {
        let f = default_filter();
        for (name, _) in DEFAULT_DENY {
            if let Some(n) = lookup(table(), name) {
                assert_eq!(verdict(&f, NATIVE_ARCH, n, [0; 6]), EPERM, "{name}");
            }
        }
        for name in [
            "read",
            "write",
            "openat",
            "execve",
            "clone",
            "clone3",
            "unshare",
            "setns",
            "ptrace",
            "wait4",
            "mmap",
            "connect",
            "name_to_handle_at",
        ] {
            assert_eq!(call(&f, name, [0; 6]), Verdict::Allow, "{name}");
        }
    }

    #[test]
    fn io_uring_is_denied_with_eperm() {
        let f = default_filter();
        for name in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
            assert_eq!(call(&f, name, [8, 0, 0, 0, 0, 0]), EPERM, "{name}");
        }
    }

    #[test]
    fn only_namespaced_socket_families_are_allowed() {
        let f = default_filter();
        let no = Verdict::Errno(libc::EAFNOSUPPORT);
        for name in ["socket", "socketpair"] {
            for af in [
                libc::AF_UNIX,
                libc::AF_INET,
                libc::AF_INET6,
                libc::AF_NETLINK,
                libc::AF_PACKET,
            ] {
                let args = [af as u64, libc::SOCK_STREAM as u64, 0, 0, 0, 0];
                assert_eq!(call(&f, name, args), Verdict::Allow, "{name} {af}");
            }
            for af in [
                libc::AF_VSOCK,
                libc::AF_ALG,
                libc::AF_BLUETOOTH,
                libc::AF_KEY,
                libc::AF_TIPC,
                libc::AF_CAN,
                libc::AF_RDS,
                libc::AF_XDP,
                libc::AF_UNSPEC,
                46,
                255,
            ] {
                let args = [af as u64, libc::SOCK_STREAM as u64, 0, 0, 0, 0];
                assert_eq!(call(&f, name, args), no, "{name} {af}");
            }
            // The kernel reads an int: high bits change nothing, either way.
            let vsock = (1u64 << 32) | libc::AF_VSOCK as u64;
            assert_eq!(call(&f, name, [vsock, 1, 0, 0, 0, 0]), no, "{name}");
            let inet = (1u64 << 32) | libc::AF_INET as u64;
            assert_eq!(call(&f, name, [inet, 1, 0, 0, 0, 0]), Verdict::Allow);
        }
        assert_eq!(SOCKET_FAMILIES.len(), 5);
    }

    #[test]
    fn personality_allows_only_dockers_values() {
        let f = default_filter();
        for (p, _) in PERSONALITIES {
            let v = call(&f, "personality", [u64::from(*p), 0, 0, 0, 0, 0]);
            assert_eq!(v, Verdict::Allow, "{p:#x}");
        }
        for p in [
            0x0040000u64,  // ADDR_NO_RANDOMIZE
            0x0400000,     // READ_IMPLIES_EXEC
            0x0100000,     // MMAP_PAGE_ZERO
            0x0040008,     // PER_LINUX32 | ADDR_NO_RANDOMIZE
            0x0000001,     // PER_SVR4
            0x1_0004_0000, // ADDR_NO_RANDOMIZE behind a high bit
        ] {
            assert_eq!(call(&f, "personality", [p, 0, 0, 0, 0, 0]), EPERM, "{p:#x}");
        }
        // The kernel takes an unsigned int: this is the query.
        let query = 0xdead_0000_ffff_ffff;
        assert_eq!(
            call(&f, "personality", [query, 0, 0, 0, 0, 0]),
            Verdict::Allow
        );
    }

    #[test]
    fn tiocsti_and_tioclinux_are_denied_on_any_descriptor() {
        assert_eq!(libc::TIOCSTI, libc::Ioctl::from(IOCTL_DENY[0].0));
        assert_eq!(libc::TIOCLINUX, libc::Ioctl::from(IOCTL_DENY[1].0));
        let f = default_filter();
        for (req, name, _) in IOCTL_DENY {
            for fd in [0u64, 1, 2, 77] {
                let args = [fd, u64::from(*req), 0, 0, 0, 0];
                assert_eq!(call(&f, "ioctl", args), EPERM, "{name} on {fd}");
            }
            // The kernel truncates the request to 32 bits; so do we.
            let high = (0xffff_ffffu64 << 32) | u64::from(*req);
            assert_eq!(call(&f, "ioctl", [1, high, 0, 0, 0, 0]), EPERM, "{name}");
        }
        for req in [
            libc::TIOCGWINSZ,
            libc::TIOCSCTTY,
            libc::FIONREAD,
            libc::TCGETS,
        ] {
            let args = [1, req, 0, 0, 0, 0];
            assert_eq!(call(&f, "ioctl", args), Verdict::Allow, "{req:#x}");
        }
    }

    #[test]
    fn a_profile_name_wins_over_an_argument_rule() {
        let f = Filter::compile(&proto::profile::Sandbox {
            seccomp: vec!["ioctl".into()],
            ..Default::default()
        })
        .expect("filter");
        let args = [1, libc::TIOCGWINSZ, 0, 0, 0, 0];
        assert_eq!(call(&f, "ioctl", args), EPERM);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_whole_x32_abi_fails_with_enosys() {
        let f = default_filter();
        let enosys = Verdict::Errno(libc::ENOSYS);
        let x32 = i64::from(X32_SYSCALL_BIT);
        // getpid, read, an x32-only number (512: rt_sigaction), the last
        // x32-only one, numbers no kernel has, the top of the range.
        for n in [x32 | 39, x32, x32 | 512, x32 | 547, x32 | 1000, 0x7fff_ffff] {
            assert_eq!(verdict(&f, AUDIT_ARCH_X86_64, n, [0; 6]), enosys, "{n:#x}");
        }
        // Native numbers and the tracer's -1 are not x32.
        assert_eq!(verdict(&f, AUDIT_ARCH_X86_64, 39, [0; 6]), Verdict::Allow);
        assert_eq!(
            verdict(&f, AUDIT_ARCH_X86_64, 0xffff_ffff, [0; 6]),
            Verdict::Allow
        );
        // And the init's filter has it too.
        let init = Filter::init().expect("init filter");
        assert_eq!(verdict(&init, AUDIT_ARCH_X86_64, x32 | 39, [0; 6]), enosys);
    }

    #[test]
    fn another_abi_is_killed() {
        let f = default_filter();
        assert_eq!(verdict(&f, AUDIT_ARCH_I386, 20, [0; 6]), Verdict::Kill);
    }

    #[test]
    fn the_init_filter_is_the_default_whatever_the_profile() {
        let init = Filter::init().expect("init filter");
        assert_eq!(call(&init, "keyctl", [0; 6]), EPERM);
        assert_eq!(call(&init, "io_uring_setup", [0; 6]), EPERM);
        // Mounting is denied even though a gVisor profile would allow it.
        assert_eq!(call(&init, "mount", [0; 6]), EPERM);
        // What the init needs after the filter: report, close, reap, wait.
        for name in [
            "write",
            "close_range",
            "wait4",
            "rt_sigtimedwait",
            "rt_sigprocmask",
            "exit_group",
        ] {
            assert_eq!(call(&init, name, [0; 6]), Verdict::Allow, "{name}");
        }
        let vsock = [libc::AF_VSOCK as u64, 1, 0, 0, 0, 0];
        assert_eq!(
            call(&init, "socket", vsock),
            Verdict::Errno(libc::EAFNOSUPPORT)
        );
    }

    #[test]
    fn gvisor_keeps_the_argument_rules_and_loses_only_mount_calls() {
        let f = Filter::compile(&proto::profile::Sandbox {
            gvisor: true,
            ..Default::default()
        })
        .expect("filter");
        assert_eq!(call(&f, "mount", [0; 6]), Verdict::Allow);
        assert_eq!(call(&f, "io_uring_setup", [0; 6]), EPERM);
        let vsock = [libc::AF_VSOCK as u64, 1, 0, 0, 0, 0];
        assert_eq!(
            call(&f, "socket", vsock),
            Verdict::Errno(libc::EAFNOSUPPORT)
        );
        assert_eq!(call(&f, "personality", [0x40000, 0, 0, 0, 0, 0]), EPERM);
    }

    #[test]
    fn every_list_entry_has_a_reason() {
        assert!(SOCKET_FAMILIES
            .iter()
            .all(|(_, n, w)| !n.is_empty() && !w.is_empty()));
        assert!(PERSONALITIES.iter().all(|(_, w)| !w.is_empty()));
        assert!(IOCTL_DENY
            .iter()
            .all(|(_, n, w)| !n.is_empty() && !w.is_empty()));
    }
}
