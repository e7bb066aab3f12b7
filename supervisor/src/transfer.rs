//! `pallium cp` and `pallium mv`: copy or move a file or tree between the
//! host and a sandbox.
//!
//! The sandbox side is reached through an `O_PATH` descriptor of
//! `/proc/<init pid>/root` that the session's supervisor opened when the
//! sandbox became ready and sends over the control socket (no pid to trust or
//! see reused), and every sandbox path is resolved with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` relative to it: the
//! kernel resolves `..` and absolute symbolic links as if that directory were
//! `/`, so nothing the sandbox controls can lead to the host's files. Trees
//! are walked one name at a time (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`,
//! `O_NOFOLLOW`); symbolic links inside a tree are copied as links, never
//! followed. Files are never written through a symbolic link, and the
//! set-user-ID/set-group-ID bits are not copied.

#![forbid(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, RenameFlags, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::UnlinkatFlags;

/// Mode bits we copy: permissions and sticky, never set-user/group-ID.
const MODE_BITS: u32 = 0o1777;

/// One side of a transfer: the host, or a sandbox's root.
pub(crate) struct Side {
    /// `O_PATH` descriptor of the sandbox's root; `None` for the host.
    root: Option<OwnedFd>,
    /// Who we act as here (root mode: the application's uid 0, an
    /// unprivileged host uid; [`Side::as_app`]), which also makes what we
    /// create the application's; None: whoever we are.
    owner: Option<(u32, u32)>,
}

impl Side {
    pub(crate) fn host() -> Self {
        Side {
            root: None,
            owner: None,
        }
    }

    /// The sandbox whose root directory is open as `root` (an `O_PATH`
    /// descriptor the session's supervisor sent), whose application's files
    /// belong to `owner`.
    pub(crate) fn sandbox(root: OwnedFd, owner: Option<(u32, u32)>) -> Result<Self> {
        let st = nix::sys::stat::fstat(&root).context("the sandbox's root")?;
        if kind(&st) != Kind::Dir {
            bail!("the session sent a sandbox root that is not a directory");
        }
        Ok(Side {
            root: Some(root),
            owner,
        })
    }

    /// Run `f` — a system call on this side's files — with the file-system
    /// credentials of the application when it is another uid (root mode):
    /// what it could not open, `cp` does not open for it (a link in the
    /// sandbox to `/etc/shadow`, which the view shows read-only, stays
    /// unreadable), and what it creates is the application's.
    fn as_app<T>(&self, f: impl FnOnce() -> T) -> T {
        let Some((uid, gid)) = self.owner else {
            return f();
        };
        let g = nix::unistd::setfsgid(nix::unistd::Gid::from_raw(gid));
        let u = nix::unistd::setfsuid(nix::unistd::Uid::from_raw(uid));
        let r = f();
        nix::unistd::setfsuid(u);
        nix::unistd::setfsgid(g);
        r
    }

    /// [`child`] as the side's application.
    fn child(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        flags: i32,
        mode: u32,
    ) -> io::Result<OwnedFd> {
        self.as_app(|| child(dir, name, flags, mode))
    }

    fn place(&self) -> &'static str {
        if self.root.is_some() {
            "in the sandbox"
        } else {
            "on the host"
        }
    }

    /// Open `path`, following symbolic links — for a sandbox, inside its root.
    fn open(&self, path: &Path, flags: i32) -> io::Result<OwnedFd> {
        let path = if path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            path
        };
        match &self.root {
            Some(root) => self.as_app(|| {
                openat2(
                    Some(root.as_fd()),
                    path,
                    flags,
                    0,
                    libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
                )
            }),
            None => openat2(None, path, flags, 0, 0),
        }
    }

    /// A describing error for `path` on this side.
    fn err(&self, path: &Path, e: io::Error) -> anyhow::Error {
        match e.raw_os_error() {
            Some(libc::ENOENT) => anyhow!(
                "{}: no such file or directory {}",
                path.display(),
                self.place()
            ),
            _ => anyhow!("{} ({}): {e}", path.display(), self.place()),
        }
    }

    /// The parent directory of `path` and its last name.
    fn locate(&self, path: &Path) -> Result<Loc> {
        let name = match path.components().next_back() {
            Some(Component::Normal(n)) => n.to_os_string(),
            _ => bail!(
                "{}: the path must end in a file name {}",
                path.display(),
                self.place()
            ),
        };
        let parent = path.parent().unwrap_or(Path::new(""));
        let dir = self
            .open(parent, libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| self.err(parent, e))?;
        Ok(Loc { dir, name })
    }
}

/// `openat2(2)` (nix's): open `path` relative to `dir` (the current
/// directory when `None`) with `flags` (plus `O_CLOEXEC`) and `mode` (used
/// only when creating), resolving under the `resolve` restrictions
/// (`RESOLVE_IN_ROOT`, `RESOLVE_NO_MAGICLINKS`, …).
fn openat2(
    dir: Option<BorrowedFd<'_>>,
    path: &Path,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let mode = if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 {
        Mode::from_bits_truncate(mode)
    } else {
        Mode::empty()
    };
    let how = OpenHow::new()
        .flags(OFlag::from_bits_retain(flags | libc::O_CLOEXEC))
        .mode(mode)
        .resolve(ResolveFlag::from_bits_retain(resolve));
    Ok(nix::fcntl::openat2(
        dir.unwrap_or(nix::fcntl::AT_FDCWD),
        path,
        how,
    )?)
}

/// A name in an open directory.
struct Loc {
    dir: OwnedFd,
    name: OsString,
}

/// Open the single name `name` in `dir`: no symbolic link anywhere, nothing
/// outside `dir`.
fn child(dir: BorrowedFd<'_>, name: &OsStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    openat2(
        Some(dir),
        Path::new(name),
        flags | libc::O_NOFOLLOW,
        mode,
        libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    )
}

#[derive(PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Link,
    Other,
}

fn kind(st: &FileStat) -> Kind {
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFDIR => Kind::Dir,
        SFlag::S_IFREG => Kind::File,
        SFlag::S_IFLNK => Kind::Link,
        _ => Kind::Other,
    }
}

fn mode_of(st: &FileStat) -> Mode {
    Mode::from_bits_truncate(st.st_mode & MODE_BITS)
}

fn io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Copy (or, with `moving`, move) `src` on `from` to `dst` on `to`, as the
/// original: a `dst` that is a directory receives `basename(src)`; a
/// directory needs `recursive` (always allowed when moving) and its
/// destination must not exist.
pub(crate) fn transfer(
    from: &Side,
    src: &Path,
    to: &Side,
    dst: &Path,
    recursive: bool,
    moving: bool,
) -> Result<()> {
    let sloc = from.locate(src)?;
    let lst = nix::sys::stat::fstatat(
        &sloc.dir,
        sloc.name.as_os_str(),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| from.err(src, io(e)))?;
    // cp follows a link given as the source (as copyfile); mv moves the link.
    let follow = !moving && kind(&lst) == Kind::Link;
    let st = if follow {
        let fd = from.open(src, libc::O_PATH).map_err(|e| from.err(src, e))?;
        nix::sys::stat::fstat(&fd).map_err(|e| from.err(src, io(e)))?
    } else {
        lst
    };
    if kind(&st) == Kind::Dir && !recursive && !moving {
        bail!("{} is a directory (use -r)", src.display());
    }
    let (dloc, dst_shown) = match to.open(dst, libc::O_PATH | libc::O_DIRECTORY) {
        Ok(dir) => (
            Loc {
                dir,
                name: sloc.name.clone(),
            },
            dst.join(&sloc.name),
        ),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
            (to.locate(dst)?, dst.to_path_buf())
        }
        Err(e) => return Err(to.err(dst, e)),
    };
    if moving {
        // Same file system (e.g. a directory the sandbox shares with the
        // host): a rename, which never replaces anything.
        // As the sandbox side's application (one side is the host).
        let sandbox = if from.root.is_some() { from } else { to };
        let renamed = sandbox.as_app(|| {
            nix::fcntl::renameat2(
                &sloc.dir,
                sloc.name.as_os_str(),
                &dloc.dir,
                dloc.name.as_os_str(),
                RenameFlags::RENAME_NOREPLACE,
            )
        });
        if renamed.is_ok() {
            return Ok(());
        }
    }
    let s = Endpoint {
        side: from,
        path: src,
    };
    let d = Endpoint {
        side: to,
        path: &dst_shown,
    };
    match kind(&st) {
        Kind::Dir => {
            let sdir = if follow {
                from.open(src, libc::O_RDONLY | libc::O_DIRECTORY)
            } else {
                from.child(
                    sloc.dir.as_fd(),
                    &sloc.name,
                    libc::O_RDONLY | libc::O_DIRECTORY,
                    0,
                )
            }
            .map_err(|e| from.err(src, e))?;
            to.as_app(|| nix::sys::stat::mkdirat(&dloc.dir, dloc.name.as_os_str(), Mode::S_IRWXU))
                .map_err(|e| match e {
                    Errno::EEXIST => anyhow!(
                        "{} already exists {} (a directory is copied to a new path)",
                        dst_shown.display(),
                        to.place()
                    ),
                    e => to.err(&dst_shown, io(e)),
                })?;
            let ddir = to
                .child(
                    dloc.dir.as_fd(),
                    &dloc.name,
                    libc::O_RDONLY | libc::O_DIRECTORY,
                    0,
                )
                .map_err(|e| to.err(&dst_shown, e))?;
            copy_tree(&s, sdir, &d, &ddir)?;
            nix::sys::stat::fchmod(&ddir, mode_of(&st)).map_err(|e| to.err(&dst_shown, io(e)))?;
        }
        Kind::File => {
            let sfd = if follow {
                from.open(src, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY)
            } else {
                from.child(
                    sloc.dir.as_fd(),
                    &sloc.name,
                    libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
                    0,
                )
            }
            .map_err(|e| from.err(src, e))?;
            copy_file(&s, sfd, &d, dloc.dir.as_fd(), &dloc.name, false)?;
        }
        Kind::Link => {
            let target = from
                .as_app(|| nix::fcntl::readlinkat(&sloc.dir, sloc.name.as_os_str()))
                .map_err(|e| from.err(src, io(e)))?;
            to.as_app(|| {
                nix::unistd::symlinkat(target.as_os_str(), &dloc.dir, dloc.name.as_os_str())
            })
            .map_err(|e| to.err(&dst_shown, io(e)))?;
        }
        Kind::Other => bail!(
            "{}: not a regular file, directory or symbolic link",
            src.display()
        ),
    }
    if moving {
        remove(from, src, sloc.dir.as_fd(), &sloc.name, &lst)?;
    }
    Ok(())
}

/// A side and the path shown in messages.
struct Endpoint<'a> {
    side: &'a Side,
    path: &'a Path,
}

/// Copy the regular file open as `sfd` to `name` in `ddir` (created with
/// `exclusive`, else truncated if it is a regular file), with its mode.
fn copy_file(
    s: &Endpoint<'_>,
    sfd: OwnedFd,
    d: &Endpoint<'_>,
    ddir: BorrowedFd<'_>,
    name: &OsStr,
    exclusive: bool,
) -> Result<()> {
    let st = nix::sys::stat::fstat(&sfd).map_err(|e| s.side.err(s.path, io(e)))?;
    if kind(&st) != Kind::File {
        bail!(
            "{}: not a regular file, directory or symbolic link",
            s.path.display()
        );
    }
    let excl = if exclusive {
        libc::O_EXCL
    } else {
        libc::O_TRUNC
    };
    let dfd = d
        .side
        .child(
            ddir,
            name,
            libc::O_WRONLY | libc::O_CREAT | libc::O_NOCTTY | excl,
            st.st_mode & MODE_BITS & 0o777,
        )
        .map_err(|e| {
            // O_CREAT on another user's symbolic link in a sticky directory
            // (the sandbox's /tmp, whose application is another uid) is EACCES
            // before it is ELOOP: say what it is either way.
            let link = || {
                nix::sys::stat::fstatat(ddir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| kind(&st) == Kind::Link)
            };
            match e.raw_os_error() {
                Some(libc::ELOOP) => anyhow!(
                    "{} {} is a symbolic link; refusing to write through it",
                    d.path.display(),
                    d.side.place()
                ),
                Some(libc::EACCES) if link() => anyhow!(
                    "{} {} is a symbolic link; refusing to write through it",
                    d.path.display(),
                    d.side.place()
                ),
                _ => d.side.err(d.path, e),
            }
        })?;
    let dst_st = nix::sys::stat::fstat(&dfd).map_err(|e| d.side.err(d.path, io(e)))?;
    if kind(&dst_st) != Kind::File {
        bail!(
            "{} {} exists and is not a regular file",
            d.path.display(),
            d.side.place()
        );
    }
    let (mut sf, mut df) = (File::from(sfd), File::from(dfd));
    io::copy(&mut sf, &mut df)
        .with_context(|| format!("copying {} to {}", s.path.display(), d.path.display()))?;
    nix::sys::stat::fchmod(&df, mode_of(&st)).map_err(|e| d.side.err(d.path, io(e)))?;
    Ok(())
}

/// The names in directory `dir`, without `.` and `..`.
fn names(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    let mut d = nix::dir::Dir::from_fd(dir.try_clone()?).map_err(io)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e.map_err(io)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    Ok(out)
}

/// Copy what is in `sdir` into the empty directory `ddir`.
fn copy_tree(s: &Endpoint<'_>, sdir: OwnedFd, d: &Endpoint<'_>, ddir: &OwnedFd) -> Result<()> {
    for name in names(&sdir).map_err(|e| s.side.err(s.path, e))? {
        let sp = s.path.join(&name);
        let dp = d.path.join(&name);
        let se = Endpoint {
            side: s.side,
            path: &sp,
        };
        let de = Endpoint {
            side: d.side,
            path: &dp,
        };
        let st = nix::sys::stat::fstatat(&sdir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| s.side.err(&sp, io(e)))?;
        match kind(&st) {
            Kind::Dir => {
                let sub = s
                    .side
                    .child(sdir.as_fd(), &name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                    .map_err(|e| s.side.err(&sp, e))?;
                d.side
                    .as_app(|| nix::sys::stat::mkdirat(ddir, name.as_os_str(), Mode::S_IRWXU))
                    .map_err(|e| d.side.err(&dp, io(e)))?;
                let dsub = d
                    .side
                    .child(ddir.as_fd(), &name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                    .map_err(|e| d.side.err(&dp, e))?;
                copy_tree(&se, sub, &de, &dsub)?;
                nix::sys::stat::fchmod(&dsub, mode_of(&st)).map_err(|e| d.side.err(&dp, io(e)))?;
            }
            Kind::File => {
                let sfd = s
                    .side
                    .child(
                        sdir.as_fd(),
                        &name,
                        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
                        0,
                    )
                    .map_err(|e| s.side.err(&sp, e))?;
                copy_file(&se, sfd, &de, ddir.as_fd(), &name, true)?;
            }
            Kind::Link => {
                let target = s
                    .side
                    .as_app(|| nix::fcntl::readlinkat(&sdir, name.as_os_str()))
                    .map_err(|e| s.side.err(&sp, io(e)))?;
                d.side
                    .as_app(|| nix::unistd::symlinkat(target.as_os_str(), ddir, name.as_os_str()))
                    .map_err(|e| d.side.err(&dp, io(e)))?;
            }
            Kind::Other => bail!(
                "{}: not a regular file, directory or symbolic link",
                sp.display()
            ),
        }
    }
    Ok(())
}

/// Remove the moved source `name` in `dir` (`st`: its lstat).
fn remove(
    side: &Side,
    path: &Path,
    dir: BorrowedFd<'_>,
    name: &OsStr,
    st: &FileStat,
) -> Result<()> {
    if kind(st) == Kind::Dir {
        let sub = side
            .child(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .map_err(|e| side.err(path, e))?;
        for n in names(&sub).map_err(|e| side.err(path, e))? {
            let p: PathBuf = path.join(&n);
            let st = nix::sys::stat::fstatat(&sub, n.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| side.err(&p, io(e)))?;
            remove(side, &p, sub.as_fd(), &n, &st)?;
        }
        side.as_app(|| nix::unistd::unlinkat(dir, name, UnlinkatFlags::RemoveDir))
            .map_err(|e| side.err(path, io(e)))?;
    } else {
        side.as_app(|| nix::unistd::unlinkat(dir, name, UnlinkatFlags::NoRemoveDir))
            .map_err(|e| side.err(path, io(e)))?;
    }
    Ok(())
}
