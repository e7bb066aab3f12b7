//! The capability policy of each role, as data. The spawner sets a helper's
//! bounding/ambient sets from it, the helper drops to it before reading its
//! first message, and `pallium audit` compares `/proc/PID/status` against it.
//!
//! Scope: in root mode these are capabilities in the initial user namespace;
//! in rootless mode, capabilities inside the session's user namespace (which
//! the user owns and which grants nothing on the host).

use serde::{Deserialize, Serialize};

/// A process role in a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Supervisor,
    Netbroker,
    Sandboxer,
    /// The sandbox's PID 1 (sandboxer code).
    Init,
    /// The application and everything it starts.
    App,
    /// `exec --root`: a command in the application's own user namespace
    /// (which owns its network namespace and nothing else), keeping that
    /// namespace's capabilities.
    RootCommand,
    /// A hop daemon (tor, ssh, openvpn, pasta, …).
    Hop,
    /// A packet engine (tun2socks): the netbroker's child that parses the
    /// application's packets. No capability in any set (bounding included),
    /// no_new_privs, a seccomp filter, and in root mode never uid 0.
    Engine,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Supervisor => "supervisor",
            Role::Netbroker => "netbroker",
            Role::Sandboxer => "sandboxer",
            Role::Init => "init",
            Role::App => "app",
            Role::RootCommand => "root-command",
            Role::Hop => "hop",
            Role::Engine => "engine",
        }
    }

    pub fn from_name(s: &str) -> Option<Role> {
        let base = s.split(':').next().unwrap_or(s);
        [
            Role::Supervisor,
            Role::Netbroker,
            Role::Sandboxer,
            Role::Init,
            Role::App,
            Role::RootCommand,
            Role::Hop,
            Role::Engine,
        ]
        .into_iter()
        .find(|r| r.name() == base)
    }
}

/// Capabilities each role may hold once it runs. Everything not listed is
/// dropped from the effective, permitted, inheritable, ambient and bounding sets.
pub fn allowed(role: Role) -> &'static [Cap] {
    use Cap::*;
    match role {
        // Parses untrusted input (profiles, control requests): nothing.
        Role::Supervisor => &[],
        // Namespaces and links (NET_ADMIN, SYS_ADMIN for setns/unshare), raw
        // sockets for ICMP relays, hop daemons started as another user, and
        // emptying hop daemons' bounding set before they exec (SETPCAP), so
        // not even a daemon that runs as root (ssh's default) holds anything,
        // giving a daemon's data directory to its user (CHOWN), stopping
        // daemons that run as another user (KILL), and, rootless, mapping a
        // daemon back to the caller's uid (a map covering the parent
        // namespace's root needs SETFCAP, as for the sandboxer).
        Role::Netbroker => &[
            NetAdmin,
            SysAdmin,
            NetRaw,
            Setuid,
            Setgid,
            NetBindService,
            Setpcap,
            Chown,
            Kill,
            Setfcap,
        ],
        // Mounts and pivot_root (SYS_ADMIN, SYS_CHROOT), virtual users
        // (SETUID/SETGID/CHOWN), reading the caller's files for binds
        // (DAC_OVERRIDE), emptying the application's bounding set (SETPCAP),
        // and, rootless, mapping the application back to the caller's uid (a
        // uid_map that maps the parent namespace's root needs SETFCAP).
        // Never NET_ADMIN: the sandbox cannot touch the network.
        Role::Sandboxer => &[
            SysAdmin,
            Setuid,
            Setgid,
            SysChroot,
            Chown,
            DacOverride,
            Setpcap,
            Setfcap,
        ],
        // The sandbox's PID 1 mounts /proc, then only reaps: nothing.
        Role::Init => &[],
        Role::App => &[],
        // `exec --root` (the original's `extra/scripts/wireshark`: nft,
        // tcpdump, which changes uid and is killed afterwards): the
        // application's user namespace's capabilities, which reach its
        // network namespace and processes and nothing else — but not SETFCAP
        // and FSETID: a writable bind is idmapped (what it creates there is
        // the host root's on disk), and a file capability or a set-user-ID
        // bit it kept there would be the host's root for whoever runs it
        // outside. (The seccomp filter refuses set-ID mode bits too.)
        Role::RootCommand => &[
            Chown,
            DacOverride,
            DacReadSearch,
            Fowner,
            Kill,
            Setgid,
            Setuid,
            Setpcap,
            NetBindService,
            NetBroadcast,
            NetAdmin,
            NetRaw,
            IpcLock,
            IpcOwner,
            SysChroot,
            SysPtrace,
            SysAdmin,
            SysNice,
            SysResource,
            AuditWrite,
        ],
        // Hop daemons. pasta keeps NET_BIND_SERVICE and SYS_ADMIN inside the
        // user namespace it joins (rootless: the session's own, which grants
        // nothing on the host) to bind ports and re-enter its namespaces.
        Role::Hop => &[NetBindService, SysAdmin],
        // Reads the application's packets: holds nothing, not even in its
        // bounding set (it drops every capability before its first packet).
        Role::Engine => &[],
    }
}

/// What `role` still holds once its session is set up, which is what
/// `pallium audit` checks: a helper drops what only the setup needed (the
/// OpenSSH monitor's post-auth privilege drop). A subset of [`allowed`].
pub fn after_setup(role: Role) -> &'static [Cap] {
    use Cap::*;
    match role {
        // After `Setup` the sandboxer spawns, signals and reaps: it joins
        // the application's namespaces (SYS_ADMIN), changes uid for a
        // virtual user or to signal one (SETUID/SETGID), empties each
        // child's bounding set (SETPCAP) and, rootless, maps a child back
        // (SETFCAP). The file view is built: no more chown (CHOWN) or
        // pivot_root (SYS_CHROOT). DAC_OVERRIDE stays only under gVisor
        // (each spawn writes a bundle into runsc's state directory, which
        // runsc's uid owns); without gVisor the sandboxer drops it too
        // ([`SANDBOXER_GVISOR_ONLY`]).
        Role::Sandboxer => &[SysAdmin, Setuid, Setgid, DacOverride, Setpcap, Setfcap],
        // Once it has sent `ChainReady` the netbroker starts nothing: no
        // daemon, engine or namespace (no SETUID/SETGID/SETPCAP/SETFCAP,
        // SYS_ADMIN, CHOWN, NET_BIND_SERVICE, NET_RAW). It watches and, at
        // the end, tears down: deletes links and its nftables tables
        // (NET_ADMIN) and stops daemons and engines that run as other uids
        // (KILL, which also lets our death's parent-death signal reach
        // them: the kernel checks it like a kill from the dying netbroker).
        // Restoring the host's sysctls and removing the session
        // directory need root's file permissions only. Capabilities are per
        // thread: the DNS relay's threads drop every one when they start
        // ([`drop_thread_caps`]), and the main thread drops the rest after
        // `ChainReady`, so no thread holds more.
        Role::Netbroker => &[NetAdmin, Kill],
        r => allowed(r),
    }
}

/// What `role` needed for its setup only: [`allowed`] less [`after_setup`],
/// which the helper drops once set up.
pub fn setup_only(role: Role) -> Vec<Cap> {
    allowed(role)
        .iter()
        .filter(|c| !after_setup(role).contains(c))
        .copied()
        .collect()
}

/// What the sandboxer keeps after `Setup` only when the sandbox runs gVisor.
pub const SANDBOXER_GVISOR_ONLY: &[Cap] = &[Cap::DacOverride];

/// Mask of [`after_setup`].
pub fn after_setup_mask(role: Role) -> u64 {
    after_setup(role).iter().fold(0, |m, c| m | c.mask())
}

/// Linux capabilities by number (linux/capability.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Cap {
    Chown = 0,
    DacOverride = 1,
    DacReadSearch = 2,
    Fowner = 3,
    Fsetid = 4,
    Kill = 5,
    Setgid = 6,
    Setuid = 7,
    Setpcap = 8,
    LinuxImmutable = 9,
    NetBindService = 10,
    NetBroadcast = 11,
    NetAdmin = 12,
    NetRaw = 13,
    IpcLock = 14,
    IpcOwner = 15,
    SysModule = 16,
    SysRawio = 17,
    SysChroot = 18,
    SysPtrace = 19,
    SysPacct = 20,
    SysAdmin = 21,
    SysBoot = 22,
    SysNice = 23,
    SysResource = 24,
    SysTime = 25,
    SysTtyConfig = 26,
    Mknod = 27,
    Lease = 28,
    AuditWrite = 29,
    AuditControl = 30,
    Setfcap = 31,
    MacOverride = 32,
    MacAdmin = 33,
    Syslog = 34,
    WakeAlarm = 35,
    BlockSuspend = 36,
    AuditRead = 37,
    Perfmon = 38,
    Bpf = 39,
    CheckpointRestore = 40,
}

const ALL: [Cap; 41] = {
    use Cap::*;
    [
        Chown,
        DacOverride,
        DacReadSearch,
        Fowner,
        Fsetid,
        Kill,
        Setgid,
        Setuid,
        Setpcap,
        LinuxImmutable,
        NetBindService,
        NetBroadcast,
        NetAdmin,
        NetRaw,
        IpcLock,
        IpcOwner,
        SysModule,
        SysRawio,
        SysChroot,
        SysPtrace,
        SysPacct,
        SysAdmin,
        SysBoot,
        SysNice,
        SysResource,
        SysTime,
        SysTtyConfig,
        Mknod,
        Lease,
        AuditWrite,
        AuditControl,
        Setfcap,
        MacOverride,
        MacAdmin,
        Syslog,
        WakeAlarm,
        BlockSuspend,
        AuditRead,
        Perfmon,
        Bpf,
        CheckpointRestore,
    ]
};

const NAMES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

impl Cap {
    /// Every capability this table knows, by number.
    pub fn all() -> &'static [Cap] {
        &ALL
    }

    /// The capability with this number, if known.
    pub fn from_index(i: u32) -> Option<Cap> {
        ALL.get(i as usize).copied()
    }

    /// `cap_net_admin`, as `capsh` and `getpcaps` spell it.
    pub fn name(self) -> &'static str {
        NAMES[self as usize]
    }

    /// Bit mask for a `/proc/PID/status` `Cap*` field.
    pub fn mask(self) -> u64 {
        1u64 << (self as u8)
    }
}

/// Mask of the capabilities `role` may hold.
pub fn allowed_mask(role: Role) -> u64 {
    allowed(role).iter().fold(0, |m, c| m | c.mask())
}

/// Names of the capabilities set in a `/proc/PID/status` hex mask (unknown
/// bits appear as `cap_<n>`).
pub fn mask_names(mask: u64) -> Vec<String> {
    (0..64)
        .filter(|i| mask & (1u64 << i) != 0)
        .map(|i| match Cap::from_index(i) {
            Some(c) => format!("cap_{}", c.name()),
            None => format!("cap_{i}"),
        })
        .collect()
}

/// Why dropping to a role's policy failed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot set the {set} capability set: {source}")]
    Caps {
        set: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(#[source] nix::Error),
}

/// Drop the calling thread (call it while single-threaded, before any other
/// thread exists) to `role`'s capabilities and set `PR_SET_NO_NEW_PRIVS`.
///
/// The bounding set is trimmed when the process may do so (CAP_SETPCAP); a
/// process without any capability (a rootless helper in the host user
/// namespace) keeps its bounding set, which it can never use anyway.
pub fn drop_to(role: Role) -> Result<(), PolicyError> {
    use caps::CapSet;
    let keep: caps::CapsHashSet = allowed(role)
        .iter()
        .filter_map(|c| caps::all().into_iter().find(|k| k.index() == *c as u8))
        .collect();
    let err = |set| move |source| PolicyError::Caps { set, source };
    if caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP).unwrap_or(false) {
        for c in caps::all() {
            if !keep.contains(&c) && caps::has_cap(None, CapSet::Bounding, c).unwrap_or(false) {
                caps::drop(None, CapSet::Bounding, c).map_err(err("bounding"))?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(err("ambient"))?;
    let permitted = caps::read(None, CapSet::Permitted).map_err(err("permitted"))?;
    let keep: caps::CapsHashSet = keep.intersection(&permitted).copied().collect();
    caps::set(None, CapSet::Inheritable, &caps::CapsHashSet::new()).map_err(err("inheritable"))?;
    caps::set(None, CapSet::Effective, &keep).map_err(err("effective"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(err("permitted"))?;
    nix::sys::prctl::set_no_new_privs().map_err(PolicyError::NoNewPrivs)?;
    Ok(())
}

/// Drop `caps` from the calling thread's effective, permitted and (with
/// CAP_SETPCAP) bounding sets, for good: the helpers' post-setup drop. It
/// changes the calling thread only: other threads keep theirs.
pub fn drop_caps(drop: &[Cap]) -> Result<(), PolicyError> {
    use caps::CapSet;
    let err = |set| move |source| PolicyError::Caps { set, source };
    let drop: Vec<caps::Capability> = drop
        .iter()
        .filter_map(|c| caps::all().into_iter().find(|k| k.index() == *c as u8))
        .collect();
    if caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP).unwrap_or(false) {
        for c in &drop {
            if caps::has_cap(None, CapSet::Bounding, *c).unwrap_or(false) {
                caps::drop(None, CapSet::Bounding, *c).map_err(err("bounding"))?;
            }
        }
    }
    for c in &drop {
        caps::drop(None, CapSet::Effective, *c).map_err(err("effective"))?;
        caps::drop(None, CapSet::Permitted, *c).map_err(err("permitted"))?;
    }
    Ok(())
}

/// Drop every capability from the calling thread only (bounding set first,
/// while CAP_SETPCAP is still there): for a thread that needs none, such as
/// a relay started by a helper that still holds its setup row. Threads it
/// starts inherit the empty sets.
pub fn drop_thread_caps() -> Result<(), PolicyError> {
    drop_caps(Cap::all())
}

/// `/proc/PID/status` (or `/proc/PID/task/TID/status` with `tid`) as
/// field → value; None when the process is gone.
pub fn proc_status(
    pid: i32,
    tid: Option<i32>,
) -> Option<std::collections::BTreeMap<String, String>> {
    let path = match tid {
        Some(t) => format!("/proc/{pid}/task/{t}/status"),
        None => format!("/proc/{pid}/status"),
    };
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect(),
    )
}

/// The status of each of `pid`'s threads: capabilities are per thread, and
/// `/proc/PID/status` shows only the main thread's.
pub fn thread_statuses(pid: i32) -> Vec<std::collections::BTreeMap<String, String>> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|tid| proc_status(pid, Some(tid)))
        .collect()
}

/// A `Cap*` field of a status (hex) as a mask; 0 when absent.
pub fn status_mask(status: &std::collections::BTreeMap<String, String>, field: &str) -> u64 {
    status
        .get(field)
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_setup_is_a_subset_of_the_role() {
        for r in [
            Role::Supervisor,
            Role::Netbroker,
            Role::Sandboxer,
            Role::Hop,
        ] {
            assert_eq!(after_setup_mask(r) & !allowed_mask(r), 0, "{r:?}");
        }
        let s = after_setup_mask(Role::Sandboxer);
        assert_eq!(s & (Cap::Chown.mask() | Cap::SysChroot.mask()), 0);
        // Nothing that starts processes or makes namespaces once the chain
        // is up.
        let n = after_setup_mask(Role::Netbroker);
        for c in [
            Cap::Setuid,
            Cap::Setgid,
            Cap::Setpcap,
            Cap::SysAdmin,
            Cap::Setfcap,
        ] {
            assert_eq!(n & c.mask(), 0, "{c:?}");
        }
    }

    #[test]
    fn names_match_numbers() {
        assert_eq!(Cap::NetAdmin.name(), "net_admin");
        assert_eq!(Cap::from_index(21), Some(Cap::SysAdmin));
        assert_eq!(Cap::CheckpointRestore as u8, 40);
    }

    #[test]
    fn sandbox_roles_never_get_net_admin() {
        for r in [Role::Sandboxer, Role::Init, Role::App, Role::Supervisor] {
            assert_eq!(allowed_mask(r) & Cap::NetAdmin.mask(), 0, "{r:?}");
        }
    }

    #[test]
    fn app_and_supervisor_get_nothing() {
        assert_eq!(allowed_mask(Role::App), 0);
        assert_eq!(allowed_mask(Role::Engine), 0);
        assert_eq!(allowed_mask(Role::Supervisor), 0);
    }

    #[test]
    fn mask_names_lists_set_bits() {
        assert_eq!(mask_names(0x3000), vec!["cap_net_admin", "cap_net_raw"]);
        assert_eq!(mask_names(1 << 50), vec!["cap_50"]);
    }

    #[test]
    fn role_names_round_trip() {
        assert_eq!(Role::from_name("hop:pasta"), Some(Role::Hop));
        assert_eq!(Role::from_name("sandboxer"), Some(Role::Sandboxer));
        assert_eq!(Role::from_name("engine"), Some(Role::Engine));
        assert_eq!(Role::from_name("x"), None);
    }
}
