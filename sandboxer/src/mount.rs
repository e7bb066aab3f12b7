//! The thin executor of a [`MountOp`] plan: each op is one or two syscalls,
//! and every failure names the op and its path.

#![forbid(unsafe_code)]

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use nix::unistd::{chdir, fchdir, pivot_root};

use crate::plan::{MountOp, Propagation, INACCESSIBLE_DIR, INACCESSIBLE_FILE, NEW_ROOT, OLD_ROOT};

/// A failed step of the file view.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{step} {path}: {source}")]
    Step {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("bind mount {from} at {to}: {source}")]
    Bind {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mount a fresh {fstype} at {path}: {source}")]
    Fs {
        fstype: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("prepare the virtual user's home: {0}")]
    Copy(String),
    #[error("mount /proc in the sandbox: {0}")]
    Proc(String),
}

/// Run `ops` in order. `proc` mounts a fresh procfs at the given path (the
/// sandbox's init does it: only a process in the new PID namespace can).
/// `idmap`: root mode, the host uid the application runs as (uid 0 of its
/// user namespace), which [`MountOp::Idmap`] maps a bind's owner to.
pub fn execute(
    ops: &[MountOp],
    idmap: Option<u32>,
    proc: &mut dyn FnMut(&Path) -> Result<(), String>,
) -> Result<(), MountError> {
    for op in ops {
        tracing::debug!(?op, "file view");
        run(op, idmap, proc)?;
    }
    Ok(())
}

/// [`MountOp::Idmap`]: the bind at `target` seen through a user namespace
/// that maps its top directory's owner (and group) — and nothing else — to
/// `app`, the application's host uid: it writes there as that owner, and
/// every other id in the tree is unmapped (no capability of `exec --root`
/// reaches another user's file, no chown to anyone). A directory the host's
/// root owns is left alone: the application is never root on disk (a
/// set-user-ID root program it rewrote through `mmap` would be the host's
/// root), so it cannot write there — the profile says so in `check`.
fn idmap_bind(target: &Path, app: u32) {
    let shown = target.strip_prefix(NEW_ROOT).unwrap_or(target);
    let Ok(st) = fs::metadata(target) else {
        return;
    };
    use std::os::unix::fs::MetadataExt;
    if st.uid() == 0 {
        tracing::warn!(
            "{} is owned by root: the application (never the host's root) may not write to it; give the directory to a user to make it writable",
            Path::new("/").join(shown).display()
        );
        return;
    }
    // The owner's own group, or one named like the owner when the
    // directory's group is root's.
    let gid = if st.gid() == 0 { st.uid() } else { st.gid() };
    let result = userns_mapping(st.uid(), gid, app)
        .and_then(|userns| crate::sys::idmap_mount(target, userns.as_fd()));
    if let Err(e) = result {
        tracing::warn!(
            "cannot idmap the bind at {} ({e}): the application, an unprivileged uid on the host, may not be able to write there",
            Path::new("/").join(shown).display()
        );
    }
}

/// A user namespace in which `uid`/`gid` (and nothing else) map to our
/// `outside` (uid and gid): a forked child unshares it and waits while we
/// write its maps (CAP_SETUID/CAP_SETGID over ours) and open it.
fn userns_mapping(uid: u32, gid: u32, outside: u32) -> io::Result<std::os::fd::OwnedFd> {
    use std::io::{Read, Write};
    let (ready_r, ready_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (done_r, done_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let child = match crate::sys::fork()? {
        nix::unistd::ForkResult::Child => {
            drop((ready_r, done_w));
            let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).is_ok();
            let _ = fs::File::from(ready_w).write_all(&[u8::from(ok)]);
            // Until the parent has opened our namespace (its end closes).
            let _ = fs::File::from(done_r).read(&mut [0u8]);
            crate::sys::exit_now(0)
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop((ready_w, done_r));
    let result = (|| {
        let mut b = [0u8];
        fs::File::from(ready_r).read_exact(&mut b)?;
        if b[0] != 1 {
            return Err(io::Error::other("unshare a user namespace failed"));
        }
        // The host's /proc, under the old root while the view is built.
        let proc = Path::new(OLD_ROOT).join(format!("proc/{child}"));
        fs::write(proc.join("uid_map"), format!("{uid} {outside} 1\n"))?;
        fs::write(proc.join("gid_map"), format!("{gid} {outside} 1\n"))?;
        fs::File::open(proc.join("ns/user")).map(std::os::fd::OwnedFd::from)
    })();
    drop(done_w);
    let _ = nix::sys::wait::waitpid(child, None);
    result
}

fn step<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> MountError + 'a {
    move |source| MountError::Step {
        step,
        path: path.to_path_buf(),
        source,
    }
}

fn nix_step<'a>(s: &'static str, path: &'a Path) -> impl FnOnce(nix::Error) -> MountError + 'a {
    move |e| step(s, path)(e.into())
}

const NONE: Option<&str> = None;

fn run(
    op: &MountOp,
    idmap: Option<u32>,
    proc: &mut dyn FnMut(&Path) -> Result<(), String>,
) -> Result<(), MountError> {
    match op {
        MountOp::Propagation { target, kind } => {
            let kind = match kind {
                Propagation::Slave => MsFlags::MS_SLAVE,
                Propagation::Private => MsFlags::MS_PRIVATE,
            };
            mount(NONE, target, NONE, kind | MsFlags::MS_REC, NONE)
                .map_err(nix_step("set propagation of", target))
        }
        MountOp::Tmpfs { target } => mount(
            Some("tmpfs"),
            target,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        )
        .map_err(nix_step("mount tmpfs at", target)),
        MountOp::MakeDir { path } => match fs::DirBuilder::new().mode(0o755).create(path) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                Err(step("create directory", path)(e))
            }
            _ => Ok(()),
        },
        MountOp::MakeDirAll { path } => fs::DirBuilder::new()
            .mode(0o755)
            .recursive(true)
            .create(path)
            .map_err(step("create directory", path)),
        MountOp::MakeFile { path } if fs::symlink_metadata(path).is_ok() => Ok(()),
        MountOp::MakeFile { path } => fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map(drop)
            .map_err(step("create mount point", path)),
        MountOp::Symlink { link, target } => {
            std::os::unix::fs::symlink(target, link).map_err(step("create symlink", link))
        }
        MountOp::WriteFile { path, contents } => {
            fs::write(path, contents).map_err(step("write", path))?;
            fs::set_permissions(path, fs::Permissions::from_mode(0o644))
                .map_err(step("chmod", path))
        }
        MountOp::Bind {
            source,
            target,
            optional,
            readonly,
        } => {
            if *optional && fs::symlink_metadata(source).is_err() {
                return Ok(());
            }
            bind(source, target)?;
            // Every bind is nosuid, and nodev unless it is a device node or
            // lies in /dev (a profile's bind of /dev/dri, say).
            let device = fs::metadata(target).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_char_device() || m.file_type().is_block_device()
            }) || target.starts_with(Path::new(NEW_ROOT).join("dev"));
            crate::sys::restrict_mount_recursive(target, *readonly, !device)
                .map_err(step("restrict (nosuid, nodev, read-only)", target))
        }
        MountOp::MakeInaccessible => make_inaccessible(),
        MountOp::CopyTree { from, to, reader } => crate::virtuser::copy_tree(from, to, *reader)
            .map_err(|e| MountError::Copy(e.to_string())),
        MountOp::ChownTree { path, uid, gid } => crate::virtuser::chown_tree(path, *uid, *gid)
            .map_err(|e| MountError::Copy(e.to_string())),
        MountOp::Hide { root, path } => hide(root, path),
        MountOp::Fs { fstype, target } => {
            let data = (fstype == "devpts").then_some("newinstance,ptmxmode=0666,mode=0620");
            mount(
                Some(fstype.as_str()),
                target,
                Some(fstype.as_str()),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                data,
            )
            .map_err(|e| MountError::Fs {
                fstype: fstype.clone(),
                path: target.clone(),
                source: e.into(),
            })
        }
        MountOp::Sysfs { target, fallback } => {
            // Read-only: sysfs writes are host-wide device and kernel settings.
            let flags =
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY;
            match mount(Some("sysfs"), target, Some("sysfs"), flags, NONE) {
                Ok(()) => Ok(()),
                Err(e) => {
                    tracing::warn!(
                        "cannot mount a fresh sysfs ({e}); binding the host's: \
                         /sys/class/net will show the host's interfaces"
                    );
                    bind(fallback, target)?;
                    crate::sys::restrict_mount_recursive(target, true, true)
                        .map_err(step("make read-only", target))
                }
            }
        }
        MountOp::Proc { target } => proc(target).map_err(MountError::Proc),
        MountOp::PivotRoot { new_root, put_old } => {
            pivot_root(new_root, put_old).map_err(nix_step("pivot_root into", new_root))?;
            chdir("/").map_err(nix_step("chdir", Path::new("/")))
        }
        MountOp::BindInRoot { source, root, path } => bind_in_root(source, root, path),
        MountOp::Detach { target } => {
            umount2(target, MntFlags::MNT_DETACH).map_err(nix_step("detach", target))
        }
        MountOp::EnterRoot { new_root } => enter_root(new_root),
        MountOp::Idmap { target } => {
            if let Some(app) = idmap {
                idmap_bind(target, app);
            }
            Ok(())
        }
    }
}

fn bind(source: &Path, target: &Path) -> Result<(), MountError> {
    mount(
        Some(source),
        target,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        NONE,
    )
    .map_err(|e| MountError::Bind {
        from: source.to_path_buf(),
        to: target.to_path_buf(),
        source: e.into(),
    })
}

/// Create the empty mode-000 directory and file in the base tmpfs and make
/// each a read-only bind of itself, so every bind of them is read-only too.
fn make_inaccessible() -> Result<(), MountError> {
    let (dir, file) = (Path::new(INACCESSIBLE_DIR), Path::new(INACCESSIBLE_FILE));
    fs::DirBuilder::new()
        .mode(0o000)
        .create(dir)
        .map_err(step("create directory", dir))?;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(file)
        .map_err(step("create", file))?;
    for p in [dir, file] {
        bind(p, p)?;
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount(NONE, p, NONE, ro, NONE).map_err(nix_step("make read-only", p))?;
    }
    Ok(())
}

/// Bind the inaccessible directory or file over `path` resolved in `root`.
fn hide(root: &Path, path: &Path) -> Result<(), MountError> {
    let Some(target) = open_in_root(root, path)? else {
        return Ok(());
    };
    let st = nix::sys::stat::fstat(&target).map_err(nix_step("stat", path))?;
    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    let source = Path::new(if is_dir {
        INACCESSIBLE_DIR
    } else {
        INACCESSIBLE_FILE
    });
    let via = Path::new(OLD_ROOT).join(format!("proc/self/fd/{}", target.as_raw_fd()));
    bind(source, &via).map_err(|e| match e {
        MountError::Bind { from, source, .. } => MountError::Bind {
            from,
            to: path.to_path_buf(),
            source,
        },
        other => other,
    })
}

/// `path` opened `O_PATH` inside `root` (symlinks resolved as if `root` were
/// `/`); None when it does not exist.
fn open_in_root(root: &Path, path: &Path) -> Result<Option<std::os::fd::OwnedFd>, MountError> {
    let rootfd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(nix_step("open", root))?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    match nix::fcntl::openat2(&rootfd, path, how) {
        Ok(fd) => Ok(Some(fd)),
        Err(nix::Error::ENOENT) => Ok(None),
        Err(e) => Err(nix_step("resolve", path)(e)),
    }
}

/// Resolve `path` inside `root` with `RESOLVE_IN_ROOT` (so a host
/// `/etc/resolv.conf -> /run/...` symlink lands in the sandbox's `/run`), then
/// mount over the resolved file through the host's `/proc/self/fd`.
fn bind_in_root(source: &Path, root: &Path, path: &Path) -> Result<(), MountError> {
    let Some(target) = open_in_root(root, path)? else {
        tracing::warn!(
            "{} does not exist in the sandbox; not providing pallium's version",
            path.display()
        );
        return Ok(());
    };
    let via = Path::new(OLD_ROOT).join(format!("proc/self/fd/{}", target.as_raw_fd()));
    bind(source, &via).map_err(|e| match e {
        MountError::Bind { from, source, .. } => MountError::Bind {
            from,
            to: path.to_path_buf(),
            source,
        },
        other => other,
    })
}

/// bubblewrap's second pivot: `pivot_root(".", ".")` inside `new_root` stacks
/// the old root on top of it; detaching that leaves `new_root` as `/`.
fn enter_root(new_root: &Path) -> Result<(), MountError> {
    let slash = Path::new("/");
    let old = nix::fcntl::open(
        slash,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(nix_step("open", slash))?;
    chdir(new_root).map_err(nix_step("chdir", new_root))?;
    pivot_root(".", ".").map_err(nix_step("pivot_root into", new_root))?;
    fchdir(&old).map_err(nix_step("fchdir to the old root", slash))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(nix_step("detach the old root", slash))?;
    chdir(slash).map_err(nix_step("chdir", slash))
}
