//! The application's seccomp filter: which system calls fail, as data.
//!
//! Scope: every process `Spawn` starts (the application, `--root` ones too;
//! under gVisor, `runsc`: see [`GVISOR_NEEDS`]); not the sandboxer or the
//! sandbox's init. Everything not listed here is
//! allowed — a deny list of kernel attack surface an application has no
//! business with, not an allow list. Denied calls fail with an errno rather
//! than killing the caller, so programs that probe for a feature degrade
//! gracefully.
//!
//! The filter is [`Filter::compile`]d once, in the sandboxer, when `Setup`
//! arrives; the forked child only [`Filter::apply`]s the prebuilt programs
//! (no allocation after fork) as its last step before exec, after
//! `NO_NEW_PRIVS`, so no capability is needed.
//!
//! Three sources, merged:
//! * [`DEFAULT_DENY`], always (EPERM);
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
//! x86_64's x32 ABI shares the arch value and numbers but sets bit 30, so
//! each denied x86_64 number is also denied with that bit.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use nix::errno::Errno;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

mod aarch64;
mod x86_64;

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
/// profile is read.
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
const X32_SYSCALL_BIT: i64 = 0x4000_0000;

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

/// System call numbers by name, sorted by name.
type Table = &'static [(&'static str, i64)];

/// The running architecture: its name, seccompiler's arch and its table.
fn native() -> Result<(&'static str, TargetArch, Table), SeccompError> {
    if cfg!(target_arch = "x86_64") {
        Ok(("x86_64", TargetArch::x86_64, x86_64::SYSCALLS))
    } else if cfg!(target_arch = "aarch64") {
        Ok(("aarch64", TargetArch::aarch64, aarch64::SYSCALLS))
    } else {
        Err(SeccompError::UnsupportedArch(std::env::consts::ARCH))
    }
}

/// The number of system call `name` in `table` (sorted by name).
pub fn lookup(table: &[(&str, i64)], name: &str) -> Option<i64> {
    table
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|i| table[i].1)
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

impl Filter {
    /// Build the filter the profile's sandbox section asks for.
    pub fn compile(profile: &proto::profile::Sandbox) -> Result<Filter, SeccompError> {
        let (arch_name, arch, table) = native()?;
        let x32 = matches!(arch, TargetArch::x86_64);
        let mut eperm = Rules::new();
        let mut enosys = Rules::new();
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
        if x32 {
            for rules in [&mut eperm, &mut enosys] {
                let extra: Vec<_> = rules
                    .iter()
                    .map(|(nr, r)| (nr | X32_SYSCALL_BIT, r.clone()))
                    .collect();
                rules.extend(extra);
            }
        }
        let mut programs = Vec::with_capacity(2);
        for (rules, errno) in [(eperm, libc::EPERM), (enosys, libc::ENOSYS)] {
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
        Ok(Filter { programs })
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

    fn sorted_unique(table: &[(&str, i64)]) -> bool {
        table.windows(2).all(|w| w[0].0 < w[1].0)
    }

    #[test]
    fn name_tables_are_sorted_for_binary_search() {
        assert!(sorted_unique(x86_64::SYSCALLS));
        assert!(sorted_unique(aarch64::SYSCALLS));
    }

    #[test]
    fn name_tables_agree_with_libc() {
        let x = x86_64::SYSCALLS;
        assert_eq!(lookup(x, "keyctl"), Some(250));
        assert_eq!(lookup(x, "bpf"), Some(321));
        assert_eq!(lookup(x, "uname"), Some(63));
        assert_eq!(lookup(x, "clone3"), Some(435));
        let a = aarch64::SYSCALLS;
        assert_eq!(lookup(a, "keyctl"), Some(219));
        assert_eq!(lookup(a, "clone"), Some(220));
        assert_eq!(lookup(a, "iopl"), None);
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
            assert!(lookup(x86_64::SYSCALLS, name).is_some(), "{name}");
        }
        for name in ["clone", "clone3", "execve", "ptrace"] {
            assert!(lookup(x86_64::SYSCALLS, name).is_some(), "{name}");
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
        let default = proto::profile::Sandbox::default();
        assert_eq!(
            Filter::compile(&default).map(|f| f.programs.len()).ok(),
            Some(1)
        );
        let no_userns = proto::profile::Sandbox {
            unpriv_user_ns: false,
            seccomp: vec!["clone".into(), "clone3".into()],
            ..Default::default()
        };
        assert_eq!(
            Filter::compile(&no_userns).map(|f| f.programs.len()).ok(),
            Some(2)
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
}
