//! The default file view as data: a pure function turns the host's top-level
//! entries and the sandbox's private files into a `Vec<MountOp>`, which
//! [`crate::mount`] executes. Nothing here touches the system, so the whole
//! recipe is unit-tested without root.

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Where the private tmpfs that holds everything during the build is mounted
/// (in the new mount namespace only; bubblewrap uses the same spot).
pub const BASE: &str = "/tmp";
/// The host's root, seen from the base tmpfs while the view is built.
pub const OLD_ROOT: &str = "/oldroot";
/// The sandbox's future root, a tmpfs on the base.
pub const NEW_ROOT: &str = "/newroot";
/// The empty mode-000 directory bound over hidden directories (base tmpfs).
pub const INACCESSIBLE_DIR: &str = "/inaccessible-dir";
/// The empty mode-000 file bound over hidden files (base tmpfs).
pub const INACCESSIBLE_FILE: &str = "/inaccessible-file";

/// One step of building the sandbox's file view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    /// Change the propagation of the mount at `target` and everything below.
    Propagation { target: PathBuf, kind: Propagation },
    /// Mount a fresh tmpfs (mode 0755, nosuid, nodev).
    Tmpfs { target: PathBuf },
    /// Create a directory (mode 0755); an existing one is fine.
    MakeDir { path: PathBuf },
    /// Create a directory and its missing parents (mode 0755).
    MakeDirAll { path: PathBuf },
    /// Create [`INACCESSIBLE_DIR`] and [`INACCESSIBLE_FILE`] (mode 000, empty)
    /// in the base tmpfs, the sources of [`MountOp::Hide`].
    MakeInaccessible,
    /// Hide `path` resolved inside `root`: bind the inaccessible directory or
    /// file over it, read-only. Skipped when it does not exist there.
    Hide { root: PathBuf, path: PathBuf },
    /// Copy the contents of directory `from` into directory `to`, reading
    /// `from` with the file-system ids `reader` when given (the caller's:
    /// what they cannot read is not copied for them).
    CopyTree {
        from: PathBuf,
        to: PathBuf,
        reader: Option<(u32, u32)>,
    },
    /// Give `path` and everything below it (symbolic links themselves, not
    /// followed) to `uid`/`gid`: a root-mode virtual user's tmpfs home.
    ChownTree { path: PathBuf, uid: u32, gid: u32 },
    /// Mount a fresh file system of type `fstype` (nosuid, nodev).
    Fs { fstype: String, target: PathBuf },
    /// Create an empty file to bind a non-directory onto (an existing one is
    /// left alone).
    MakeFile { path: PathBuf },
    /// Create a symbolic link at `link` pointing to `target`.
    Symlink { link: PathBuf, target: PathBuf },
    /// Create a file holding `contents` (mode 0644).
    WriteFile { path: PathBuf, contents: String },
    /// Recursive bind mount (`MS_BIND|MS_REC`); an `optional` one is skipped
    /// when the source does not exist; a `readonly` one is then made
    /// read-only with everything below it (bubblewrap's `--ro-bind`).
    Bind {
        source: PathBuf,
        target: PathBuf,
        optional: bool,
        readonly: bool,
    },
    /// Root mode: stack an idmapped copy of the (writable) bind at `target`
    /// on it, seen through the application's user namespace: what the host's
    /// root owns there is the application's (uid 0 inside, an unprivileged
    /// uid on the host), so the bind stays writable for it, and what it
    /// creates is root's on disk. Where the file system cannot be idmapped
    /// the bind stays as it was, with a warning.
    Idmap { target: PathBuf },
    /// A fresh sysfs, so `/sys/class/net` shows the sandbox's network
    /// namespace; where the kernel refuses (some rootless setups), bind
    /// `fallback` instead.
    Sysfs { target: PathBuf, fallback: PathBuf },
    /// A fresh procfs; mounted by the sandbox's init, which is the only
    /// process inside the new PID namespace.
    Proc { target: PathBuf },
    /// `pivot_root(new_root, put_old)`, then `chdir("/")`.
    PivotRoot { new_root: PathBuf, put_old: PathBuf },
    /// Bind `source` over `path` resolved inside `root` (symlinks are followed
    /// as if `root` were `/`). Skipped with a warning when `path` does not
    /// exist there: creating it would write to the host's file system.
    BindInRoot {
        source: PathBuf,
        root: PathBuf,
        path: PathBuf,
    },
    /// Lazily unmount (`MNT_DETACH`) the tree at `target`.
    Detach { target: PathBuf },
    /// Make `new_root` the root and detach the current root from under it
    /// (bubblewrap's second `pivot_root(".", ".")`), ending in `/`.
    EnterRoot { new_root: PathBuf },
}

/// Mount propagation types used by the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Receive the host's later mounts, send nothing back.
    Slave,
    Private,
}

/// What a top-level host entry is, which decides how it is reproduced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    /// A regular file or anything else that can be a bind target.
    File,
    /// A symbolic link, recreated with the same target (merged-usr `/bin`).
    Symlink(PathBuf),
}

/// One entry of the host's `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    pub name: OsString,
    pub kind: EntryKind,
}

/// The sandbox-private files that replace host ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateFiles {
    pub resolv_conf: String,
    pub hosts: String,
    /// Host paths hidden in every view unless the profile names them, besides
    /// [`proto::hidden::HIDDEN`]: pallium's runtime directory (the sessions'
    /// control sockets), the caller's `$XDG_RUNTIME_DIR`, and the pathname
    /// Unix sockets bound on the host when the sandbox was set up.
    pub hidden: Vec<PathBuf>,
    /// Mask and make read-only the kernel's interfaces in `/proc` and `/sys`
    /// ([`PROC_MASKED`], …). Off under gVisor, whose application sees
    /// gVisor's own `/proc` and `/sys`, and whose runsc mounts a procfs and a
    /// sysfs of its own — which the kernel allows in a user namespace only
    /// where they are not partly covered.
    pub masks: bool,
}

/// Device nodes of the private `/dev` (bound from the host's; a missing one
/// is skipped): the OCI runtime specification's default set.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// `/proc` entries masked in every view (an empty, inaccessible file or
/// directory bound over them), as OCI runtimes mask them: kernel memory,
/// keys of every user, timer and scheduler internals that leak host
/// activity, hardware interfaces.
pub const PROC_MASKED: &[&str] = &[
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/latency_stats",
    "/proc/acpi",
    "/proc/asound",
    "/proc/scsi",
];

/// `/proc` entries made read-only in every view: host-wide kernel settings
/// (`/proc/sys`: `core_pattern` runs a program as the host's root on the
/// next crash), the magic SysRq trigger, interrupt affinity, bus and file
/// system internals.
pub const PROC_READ_ONLY: &[&str] = &[
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/proc/irq",
    "/proc/bus",
    "/proc/fs",
];

/// `/sys` entries masked in every view: firmware tables and variables (EFI
/// variables can brick a machine), power capping (an energy side channel).
pub const SYS_MASKED: &[&str] = &["/sys/firmware", "/sys/devices/virtual/powercap"];

/// The original pallium's default view (`blacklist /`, `whitelist /*`,
/// `whitelist /.*`): a tmpfs root with every top-level host entry bound back
/// recursively, except a fresh `/proc` and `/sys` (read-only), a private
/// `/dev` ([`private_dev`]) and `/tmp`, private `/etc/resolv.conf` and
/// `/etc/hosts`, and the host's IPC sockets hidden
/// ([`proto::hidden::HIDDEN`]). Entries come sorted by name so the plan is
/// deterministic. `read_only`: root mode — every host bind is read-only.
pub fn default_view(entries: &[HostEntry], files: &PrivateFiles, read_only: bool) -> Vec<MountOp> {
    let old = Path::new(OLD_ROOT);
    let new = Path::new(NEW_ROOT);
    let mut ops = prelude(files);
    ops.push(MountOp::Tmpfs { target: new.into() });

    let mut sorted: Vec<&HostEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for e in sorted {
        let (source, target) = (old.join(&e.name), new.join(&e.name));
        match (&e.kind, e.name.to_str()) {
            // Fresh instances below; binding the host's would show the host.
            (_, Some("proc")) => {}
            (EntryKind::Dir, Some("sys")) => {
                ops.push(MountOp::MakeDir {
                    path: target.clone(),
                });
                ops.push(MountOp::Sysfs {
                    target: target.clone(),
                    fallback: source.clone(),
                });
                ops.push(MountOp::Bind {
                    source: source.join("fs/cgroup"),
                    target: target.join("fs/cgroup"),
                    optional: true,
                    readonly: true,
                });
            }
            // Private: the host's device nodes, terminals and shared memory,
            // and its /tmp (X11 sockets, ssh agents, other users' files).
            (EntryKind::Dir, Some("dev")) => ops.extend(private_dev(&target, &source)),
            (EntryKind::Dir, Some("tmp")) => {
                ops.push(MountOp::MakeDir {
                    path: target.clone(),
                });
                ops.push(MountOp::Fs {
                    fstype: "tmpfs".into(),
                    target,
                });
            }
            (EntryKind::Symlink(to), _) => ops.push(MountOp::Symlink {
                link: target,
                target: to.clone(),
            }),
            (EntryKind::Dir, _) => {
                ops.push(MountOp::MakeDir {
                    path: target.clone(),
                });
                ops.push(MountOp::Bind {
                    source,
                    target,
                    optional: false,
                    readonly: read_only,
                });
            }
            (EntryKind::File, _) => {
                ops.push(MountOp::MakeFile {
                    path: target.clone(),
                });
                ops.push(MountOp::Bind {
                    source,
                    target,
                    optional: false,
                    readonly: read_only,
                });
            }
        }
    }
    // The full view has no whitelist to expose them with.
    for h in proto::hidden::HIDDEN
        .iter()
        .map(|(h, _)| PathBuf::from(h))
        .chain(files.hidden.iter().cloned())
    {
        ops.push(MountOp::Hide {
            root: new.into(),
            path: h,
        });
    }
    ops.extend(epilogue(files.masks));
    ops
}

/// The session's own binds (`Setup::binds`: the GUI's X socket and
/// Xauthority, the audio relay's directory), each a writable bind of a host
/// path made by the supervisor for this session, at a target in the
/// sandbox's private `/tmp`. They go last, over the view, so no hidden
/// path (`/tmp/.X11-unix` is one) covers them.
pub fn session_binds(binds: &[proto::sandbox::SessionBind]) -> Vec<MountOp> {
    let (old, new) = (Path::new(OLD_ROOT), Path::new(NEW_ROOT));
    let mut ops = Vec::new();
    for b in binds {
        let target = new.join(b.target.trim_start_matches('/'));
        if let Some(parent) = target.parent() {
            ops.push(MountOp::MakeDirAll {
                path: parent.into(),
            });
        }
        ops.push(if b.dir {
            MountOp::MakeDir {
                path: target.clone(),
            }
        } else {
            MountOp::MakeFile {
                path: target.clone(),
            }
        });
        ops.push(MountOp::Bind {
            source: old.join(b.source.trim_start_matches('/')),
            target,
            optional: false,
            readonly: false,
        });
    }
    ops
}

/// Root mode, the application in a user namespace of its own: every
/// writable bind of a host path (the profile's `paths.bind`) gets an
/// [`MountOp::Idmap`] right after it, so the application may write where the
/// host's root could. Device nodes and `/dev` are left alone.
pub fn idmap_writable_binds(ops: Vec<MountOp>) -> Vec<MountOp> {
    let (old, dev) = (Path::new(OLD_ROOT), Path::new(NEW_ROOT).join("dev"));
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        let idmap = match &op {
            MountOp::Bind {
                source,
                target,
                readonly: false,
                ..
            } if source.starts_with(old) && !target.starts_with(&dev) => Some(target.clone()),
            _ => None,
        };
        out.push(op);
        if let Some(target) = idmap {
            out.push(MountOp::Idmap { target });
        }
    }
    out
}

/// A private `/dev` at `target` (bubblewrap's `--dev`): a tmpfs with the
/// host's [`DEVICES`] bound in from `host_dev`, a new devpts instance with
/// `ptmx` pointing into it, a fresh `shm` (tmpfs, mode 1777) and `mqueue`,
/// and the usual `fd`/`stdin`/`stdout`/`stderr` links. No disk, no raw
/// device, no other user's terminal.
pub fn private_dev(target: &Path, host_dev: &Path) -> Vec<MountOp> {
    let mut ops = vec![
        MountOp::MakeDirAll {
            path: target.into(),
        },
        MountOp::Tmpfs {
            target: target.into(),
        },
    ];
    for d in DEVICES {
        ops.push(MountOp::MakeFile {
            path: target.join(d),
        });
        ops.push(MountOp::Bind {
            source: host_dev.join(d),
            target: target.join(d),
            optional: true,
            readonly: false,
        });
    }
    for (dir, fstype) in [("pts", "devpts"), ("shm", "tmpfs"), ("mqueue", "mqueue")] {
        ops.push(MountOp::MakeDir {
            path: target.join(dir),
        });
        ops.push(MountOp::Fs {
            fstype: fstype.into(),
            target: target.join(dir),
        });
    }
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ops.push(MountOp::Symlink {
            link: target.join(link),
            target: to.into(),
        });
    }
    ops
}

/// The common start of every view: a private base tmpfs we pivot into (the
/// host's root at [`OLD_ROOT`]), the private files and the inaccessible
/// sources written into it.
pub fn prelude(files: &PrivateFiles) -> Vec<MountOp> {
    let base = Path::new(BASE);
    let rel = |p: &str| p.trim_start_matches('/').to_string();
    vec![
        MountOp::Propagation {
            target: "/".into(),
            kind: Propagation::Slave,
        },
        MountOp::Tmpfs {
            target: base.into(),
        },
        MountOp::Propagation {
            target: base.into(),
            kind: Propagation::Private,
        },
        MountOp::MakeDir {
            path: base.join(rel(OLD_ROOT)),
        },
        MountOp::MakeDir {
            path: base.join(rel(NEW_ROOT)),
        },
        MountOp::PivotRoot {
            new_root: base.into(),
            put_old: base.join(rel(OLD_ROOT)),
        },
        MountOp::WriteFile {
            path: "/resolv.conf".into(),
            contents: files.resolv_conf.clone(),
        },
        MountOp::WriteFile {
            path: "/hosts".into(),
            contents: files.hosts.clone(),
        },
        MountOp::MakeInaccessible,
    ]
}

/// The common end: a fresh `/proc` (while the host's is still attached)
/// with [`PROC_MASKED`] masked and [`PROC_READ_ONLY`] read-only,
/// [`SYS_MASKED`] masked, pallium's resolv.conf and hosts, then the host's
/// root detached.
pub fn epilogue(masks: bool) -> Vec<MountOp> {
    let old = Path::new(OLD_ROOT);
    let new = Path::new(NEW_ROOT);
    let mut ops = vec![
        MountOp::MakeDir {
            path: new.join("proc"),
        },
        MountOp::Proc {
            target: new.join("proc"),
        },
    ];
    for p in PROC_MASKED.iter().chain(SYS_MASKED).filter(|_| masks) {
        ops.push(MountOp::Hide {
            root: new.into(),
            path: p.into(),
        });
    }
    for p in PROC_READ_ONLY.iter().filter(|_| masks) {
        let at = new.join(p.trim_start_matches('/'));
        ops.push(MountOp::Bind {
            source: at.clone(),
            target: at,
            optional: true,
            readonly: true,
        });
    }
    ops.extend([
        MountOp::BindInRoot {
            source: "/resolv.conf".into(),
            root: new.into(),
            path: "/etc/resolv.conf".into(),
        },
        MountOp::BindInRoot {
            source: "/hosts".into(),
            root: new.into(),
            path: "/etc/hosts".into(),
        },
        MountOp::Propagation {
            target: old.into(),
            kind: Propagation::Private,
        },
        MountOp::Detach { target: old.into() },
        MountOp::EnterRoot {
            new_root: new.into(),
        },
    ]);
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, kind: EntryKind) -> HostEntry {
        HostEntry {
            name: name.into(),
            kind,
        }
    }

    fn files() -> PrivateFiles {
        PrivateFiles {
            resolv_conf: "nameserver 192.0.2.53\n".into(),
            hosts: "127.0.0.1 localhost\n".into(),
            hidden: vec![],
            masks: true,
        }
    }

    fn host() -> Vec<HostEntry> {
        vec![
            entry("usr", EntryKind::Dir),
            entry("bin", EntryKind::Symlink("usr/bin".into())),
            entry("proc", EntryKind::Dir),
            entry("sys", EntryKind::Dir),
            entry(".dockerenv", EntryKind::File),
            entry("etc", EntryKind::Dir),
        ]
    }

    fn position(ops: &[MountOp], pred: impl Fn(&MountOp) -> bool) -> usize {
        ops.iter().position(pred).expect("op missing from plan")
    }

    #[test]
    fn every_directory_is_bound_back_recursively() {
        let ops = default_view(&host(), &files(), false);
        for name in ["usr", "etc"] {
            assert!(ops.contains(&MountOp::Bind {
                source: Path::new("/oldroot").join(name),
                target: Path::new("/newroot").join(name),
                optional: false,
                readonly: false,
            }));
        }
    }

    #[test]
    fn read_only_view_binds_every_host_entry_read_only() {
        let mut h = host();
        h.push(entry("dev", EntryKind::Dir));
        h.push(entry("tmp", EntryKind::Dir));
        let ops = default_view(&h, &files(), true);
        let ro = |name: &str| {
            ops.iter().find_map(|o| match o {
                MountOp::Bind {
                    target, readonly, ..
                } if target == &Path::new("/newroot").join(name) => Some(*readonly),
                _ => None,
            })
        };
        assert_eq!(ro("usr"), Some(true));
        assert_eq!(ro("etc"), Some(true));
        assert_eq!(ro(".dockerenv"), Some(true));
        // Private, not bound: a fresh /dev and /tmp.
        assert_eq!(ro("dev"), None);
        assert_eq!(ro("tmp"), None);
    }

    #[test]
    fn only_writable_host_binds_are_idmapped() {
        let bind = |source: &str, target: &str, readonly| MountOp::Bind {
            source: source.into(),
            target: target.into(),
            optional: false,
            readonly,
        };
        let ops = idmap_writable_binds(vec![
            bind("/oldroot/srv/data", "/newroot/data", false),
            bind("/oldroot/usr", "/newroot/usr", true),
            bind("/oldroot/dev/null", "/newroot/dev/null", false),
            bind("/home.tmp", "/newroot/home/u", false),
        ]);
        assert_eq!(
            ops.iter()
                .filter_map(|o| match o {
                    MountOp::Idmap { target } => Some(target.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            [PathBuf::from("/newroot/data")]
        );
        assert!(matches!(ops[1], MountOp::Idmap { .. }));
    }

    #[test]
    fn dev_tmp_and_shm_are_private() {
        let mut h = host();
        h.push(entry("dev", EntryKind::Dir));
        h.push(entry("tmp", EntryKind::Dir));
        let ops = default_view(&h, &files(), false);
        assert!(ops.contains(&MountOp::Tmpfs {
            target: "/newroot/dev".into()
        }));
        assert!(ops.contains(&MountOp::Fs {
            fstype: "tmpfs".into(),
            target: "/newroot/tmp".into()
        }));
        assert!(ops.contains(&MountOp::Fs {
            fstype: "tmpfs".into(),
            target: "/newroot/dev/shm".into()
        }));
        assert!(ops.contains(&MountOp::Fs {
            fstype: "devpts".into(),
            target: "/newroot/dev/pts".into()
        }));
        // Only the listed device nodes come from the host's /dev.
        let from_dev: Vec<_> = ops
            .iter()
            .filter_map(|o| match o {
                MountOp::Bind { source, .. } if source.starts_with("/oldroot/dev") => {
                    source.file_name().map(|n| n.to_string_lossy().into_owned())
                }
                _ => None,
            })
            .collect();
        assert_eq!(from_dev, DEVICES);
        assert!(!ops.iter().any(
            |o| matches!(o, MountOp::Bind { source, .. } if source == Path::new("/oldroot/tmp"))
        ));
    }

    #[test]
    fn proc_and_sys_are_masked_after_proc_is_mounted() {
        let ops = default_view(&host(), &files(), false);
        let proc = position(&ops, |o| matches!(o, MountOp::Proc { .. }));
        for p in ["/proc/kcore", "/proc/keys", "/sys/firmware"] {
            let at = position(
                &ops,
                |o| matches!(o, MountOp::Hide { path, .. } if path == Path::new(p)),
            );
            assert!(proc < at, "{p}");
        }
        let sys = position(&ops, |o| {
            matches!(o, MountOp::Bind { target, readonly: true, .. }
                if target == Path::new("/newroot/proc/sys"))
        });
        assert!(proc < sys);
    }

    #[test]
    fn session_binds_make_their_mount_points_in_the_new_root() {
        let binds = [proto::sandbox::SessionBind {
            source: "/tmp/.X11-unix/X42".into(),
            target: "/tmp/.X11-unix/X42".into(),
            dir: false,
        }];
        assert_eq!(
            session_binds(&binds),
            vec![
                MountOp::MakeDirAll {
                    path: "/newroot/tmp/.X11-unix".into()
                },
                MountOp::MakeFile {
                    path: "/newroot/tmp/.X11-unix/X42".into()
                },
                MountOp::Bind {
                    source: "/oldroot/tmp/.X11-unix/X42".into(),
                    target: "/newroot/tmp/.X11-unix/X42".into(),
                    optional: false,
                    readonly: false,
                },
            ]
        );
    }

    #[test]
    fn runtime_dirs_and_host_ipc_are_hidden() {
        let mut f = files();
        f.hidden = vec!["/run/user/1000".into()];
        let ops = default_view(&host(), &f, false);
        for p in ["/run/user/1000", "/run/pallium", "/run/user", "/run/dbus"] {
            assert!(
                ops.contains(&MountOp::Hide {
                    root: "/newroot".into(),
                    path: p.into()
                }),
                "{p}"
            );
        }
    }

    #[test]
    fn dot_files_are_bound_onto_created_files() {
        let ops = default_view(&host(), &files(), false);
        let mk = position(&ops, |o| {
            *o == MountOp::MakeFile {
                path: "/newroot/.dockerenv".into(),
            }
        });
        let bind = position(
            &ops,
            |o| matches!(o, MountOp::Bind { target, .. } if target == Path::new("/newroot/.dockerenv")),
        );
        assert!(mk < bind);
    }

    #[test]
    fn symlinks_are_recreated_not_bound() {
        let ops = default_view(&host(), &files(), false);
        assert!(ops.contains(&MountOp::Symlink {
            link: "/newroot/bin".into(),
            target: "usr/bin".into(),
        }));
        assert!(!ops.iter().any(
            |o| matches!(o, MountOp::Bind { source, .. } if source == Path::new("/oldroot/bin"))
        ));
    }

    #[test]
    fn host_proc_is_never_bound_and_a_fresh_one_is_mounted() {
        let ops = default_view(&host(), &files(), false);
        assert!(!ops.iter().any(
            |o| matches!(o, MountOp::Bind { source, .. } if source.starts_with("/oldroot/proc"))
        ));
        assert!(ops.contains(&MountOp::Proc {
            target: "/newroot/proc".into()
        }));
    }

    #[test]
    fn proc_is_mounted_while_the_host_proc_is_still_visible() {
        // Mounting procfs inside a user namespace needs a fully visible procfs
        // in the mount namespace: the old root must still be attached.
        let ops = default_view(&host(), &files(), false);
        let proc = position(&ops, |o| matches!(o, MountOp::Proc { .. }));
        let detach = position(&ops, |o| matches!(o, MountOp::Detach { .. }));
        assert!(proc < detach);
    }

    #[test]
    fn sys_is_fresh_with_a_fallback_to_the_host_one() {
        let ops = default_view(&host(), &files(), false);
        assert!(ops.contains(&MountOp::Sysfs {
            target: "/newroot/sys".into(),
            fallback: "/oldroot/sys".into(),
        }));
    }

    #[test]
    fn resolv_conf_and_hosts_come_from_the_private_tmpfs() {
        let ops = default_view(&host(), &files(), false);
        let write = position(&ops, |o| {
            *o == MountOp::WriteFile {
                path: "/resolv.conf".into(),
                contents: "nameserver 192.0.2.53\n".into(),
            }
        });
        let pivot = position(&ops, |o| matches!(o, MountOp::PivotRoot { .. }));
        let bind = position(
            &ops,
            |o| matches!(o, MountOp::BindInRoot { path, .. } if path == Path::new("/etc/resolv.conf")),
        );
        // Written after the first pivot: into the base tmpfs, never the host.
        assert!(pivot < write && write < bind);
        assert!(ops.iter().any(
            |o| matches!(o, MountOp::BindInRoot { path, .. } if path == Path::new("/etc/hosts"))
        ));
    }

    #[test]
    fn private_files_are_bound_after_etc() {
        let ops = default_view(&host(), &files(), false);
        let etc = position(
            &ops,
            |o| matches!(o, MountOp::Bind { target, .. } if target == Path::new("/newroot/etc")),
        );
        let resolv = position(&ops, |o| matches!(o, MountOp::BindInRoot { .. }));
        assert!(etc < resolv);
    }

    #[test]
    fn plan_starts_slave_and_pivots_into_the_base_tmpfs() {
        let ops = default_view(&[], &files(), false);
        assert_eq!(
            ops[0],
            MountOp::Propagation {
                target: "/".into(),
                kind: Propagation::Slave
            }
        );
        assert!(ops.contains(&MountOp::PivotRoot {
            new_root: "/tmp".into(),
            put_old: "/tmp/oldroot".into(),
        }));
        assert_eq!(
            ops.last(),
            Some(&MountOp::EnterRoot {
                new_root: "/newroot".into()
            })
        );
    }

    #[test]
    fn binds_come_sorted_by_name() {
        let ops = default_view(&host(), &files(), false);
        let targets: Vec<_> = ops
            .iter()
            .filter_map(|o| match o {
                MountOp::Bind {
                    target,
                    optional: false,
                    ..
                } => Some(target.clone()),
                _ => None,
            })
            .collect();
        let mut sorted = targets.clone();
        sorted.sort();
        assert_eq!(targets, sorted);
    }
}
