//! Virtual users (doc/PROFILE.md, sandbox.virtuser): a persistent home under the caller's
//! `~/.config/pallium/virtuser/NAME/home` (`/etc/pallium/…` as root) or a
//! tmpfs one (`$tmp`), mounted at `/home/NAME`, with generated `/etc/passwd`,
//! `/etc/group` and `/etc/hostname`, and `HOME`/`USER`/cwd for the command.
//!
//! Identity: rootless, the virtual user is the caller's uid (the application
//! is mapped back to it). As root, it is a real unprivileged uid of its own
//! ([`VirtuserName::root_mode_uid`]), which owns its home; the application runs as that
//! uid unless `--root`, so it owns nothing of the host's.

#![forbid(unsafe_code)]

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use proto::profile::{Virtuser, VirtuserName, ROOT_VIRTUSER_DIR};

use crate::paths::{Class, HostKind};
use crate::plan::{MountOp, NEW_ROOT, OLD_ROOT};

/// A failed preparation of the virtual user's home.
#[derive(Debug, thiserror::Error)]
pub enum VirtuserError {
    #[error("{step} {path}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What the file view and the spawned commands need of a virtual user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub name: String,
    /// `/home/NAME`.
    pub home: String,
    /// Tree entries added after the user's.
    pub extra: Vec<(PathBuf, Class)>,
    /// Files written into the base tmpfs (bound by `extra`).
    pub private: Vec<(PathBuf, String)>,
    /// Ops run once the tree is mounted (the `$tmp` skeleton copy).
    pub post: Vec<MountOp>,
    /// The uid and gid the user has (and, root mode, the application runs as).
    pub uid: u32,
    pub gid: u32,
    /// The login shell its `passwd` line names.
    pub shell: String,
}

impl Prepared {
    /// Under gVisor the command runs as gVisor's uid 0 (runsc maps its own
    /// uid there): the generated `passwd` and `group` give the virtual user
    /// that id, so `whoami` names it. Files and runsc keep `uid`/`gid`.
    pub fn named_inside_as_root(&mut self) {
        let (passwd, group) = id_files(&self.name, &self.home, &self.shell, (0, 0));
        for (path, text) in &mut self.private {
            if path == Path::new(PASSWD) {
                text.clone_from(&passwd);
            } else if path == Path::new(GROUP) {
                text.clone_from(&group);
            }
        }
    }
}

/// Where the generated `/etc/passwd` and `/etc/group` are written in the
/// base tmpfs.
const PASSWD: &str = "/virtuser-passwd";
const GROUP: &str = "/virtuser-group";

/// The one-user `passwd` and `group` texts.
fn id_files(name: &str, home: &str, shell: &str, (uid, gid): (u32, u32)) -> (String, String) {
    (
        format!("{name}:x:{uid}:{gid}::{home}:{shell}\n"),
        format!("{name}:x:{gid}:\n"),
    )
}

/// The caller's home directory and shell from the host's `/etc/passwd`.
pub fn caller(passwd: &str, uid: u32) -> (Option<String>, String) {
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 7 && f[2].parse() == Ok(uid) {
            let shell = if f[6].is_empty() { "/bin/sh" } else { f[6] };
            return (
                Some(f[5].to_string()).filter(|h| !h.is_empty()),
                shell.into(),
            );
        }
    }
    (None, "/bin/sh".into())
}

/// The pure part: entries, generated files and post-ops for `v`, given the
/// host directory holding a persistent home (None for `$tmp`).
/// `own_home`: root mode, where the `$tmp` home (made by root) is given to
/// the user once mounted.
pub fn describe(
    v: &Virtuser,
    host_home: Option<&Path>,
    (uid, gid): (u32, u32),
    own_home: bool,
    caller: (u32, u32),
    shell: &str,
    hostname: &str,
) -> Prepared {
    let name = v.name.as_str().to_string();
    let home = format!("/home/{name}");
    let mut extra = Vec::new();
    let mut post = Vec::new();
    match host_home {
        Some(dir) => extra.push((
            PathBuf::from(&home),
            Class::Bind {
                src: dir.into(),
                kind: HostKind::Dir,
                label: "bind",
            },
        )),
        None => {
            extra.push((PathBuf::from(&home), Class::Fs("tmpfs".into())));
            let mounted = Path::new(NEW_ROOT).join(home.trim_start_matches('/'));
            if let Some(skel) = &v.skeleton {
                post.push(MountOp::CopyTree {
                    from: Path::new(OLD_ROOT).join(skel.trim_start_matches('/')),
                    to: mounted.clone(),
                    reader: own_home.then_some((caller.0, caller.1)),
                });
            }
            if own_home {
                post.push(MountOp::ChownTree {
                    path: mounted,
                    uid,
                    gid,
                });
            }
        }
    }
    let (passwd, group) = id_files(&name, &home, shell, (uid, gid));
    let private = vec![
        (PathBuf::from(PASSWD), passwd),
        (PathBuf::from(GROUP), group),
        (PathBuf::from("/virtuser-hostname"), format!("{hostname}\n")),
    ];
    for (file, private_path) in ["passwd", "group", "hostname"].iter().zip(&private) {
        extra.push((
            PathBuf::from("/etc").join(file),
            Class::Private(private_path.0.clone()),
        ));
    }
    Prepared {
        name,
        home,
        extra,
        private,
        post,
        uid,
        gid,
        shell: shell.to_string(),
    }
}

/// Create the persistent home on first use (0700, the skeleton copied) and
/// describe the user. Runs before the file view is built, as the caller
/// (rootless) or as root (`root_mode`: the user gets a uid of its own, which
/// owns the home).
pub fn prepare(
    v: &Virtuser,
    (uid, gid): (u32, u32),
    root_mode: bool,
    hostname: &str,
) -> Result<Prepared, VirtuserError> {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let (caller_home, shell) = caller(&passwd, uid);
    // Root mode: the skeleton is read as the caller, not with our
    // DAC_OVERRIDE (a compromised supervisor could name /root or /etc).
    // Rootless we are the caller already.
    let reader = root_mode.then_some((uid, gid));
    let mut id = if root_mode {
        let u = v.name.root_mode_uid(&passwd);
        (u, u)
    } else {
        (uid, gid)
    };
    let host_home = match &v.name {
        VirtuserName::Temporary => None,
        VirtuserName::Named(n) => {
            let base = match (uid, caller_home) {
                (0, _) | (_, None) => PathBuf::from(ROOT_VIRTUSER_DIR),
                (_, Some(h)) => Path::new(&h).join(".config/pallium/virtuser"),
            };
            let dir = base.join(n).join("home");
            match fs::symlink_metadata(&dir) {
                Err(_) => {
                    create_home(&dir, v.skeleton.as_deref(), reader)?;
                    if root_mode {
                        chown_tree(&dir, id.0, id.1)?;
                    }
                }
                // An existing home keeps its user; one made as root by an
                // older pallium is handed to the user now.
                Ok(m) if root_mode && m.uid() != 0 => id = (m.uid(), m.gid()),
                Ok(_) if root_mode => chown_tree(&dir, id.0, id.1)?,
                Ok(_) => {}
            }
            Some(dir)
        }
    };
    Ok(describe(
        v,
        host_home.as_deref(),
        id,
        root_mode,
        (uid, gid),
        &shell,
        hostname,
    ))
}

/// `lchown` `path` and everything below it (symbolic links are not
/// followed) to `uid`/`gid`.
pub fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<(), VirtuserError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io_step("chown", path))?;
    let meta = fs::symlink_metadata(path).map_err(io_step("stat", path))?;
    if meta.is_dir() {
        for e in fs::read_dir(path).map_err(io_step("read directory", path))? {
            let e = e.map_err(io_step("read directory", path))?;
            chown_tree(&e.path(), uid, gid)?;
        }
    }
    Ok(())
}

fn io_step<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> VirtuserError + 'a {
    move |source| VirtuserError::Io {
        step,
        path: path.into(),
        source,
    }
}

fn create_home(
    dir: &Path,
    skeleton: Option<&str>,
    reader: Option<(u32, u32)>,
) -> Result<(), VirtuserError> {
    // A skeleton the caller cannot read is refused before anything is made.
    let skeleton = match skeleton {
        Some(skel) => match as_reader(reader, || fs::read_dir(skel)) {
            Ok(_) => Some(skel),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(io_step("read skeleton", Path::new(skel))(e))
            }
            Err(_) => {
                tracing::error!("virtual user skeleton {skel} is not a directory; home left empty");
                None
            }
        },
        None => None,
    };
    if let Some(parent) = dir.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io_step("create directory", parent))?;
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(io_step("create directory", dir))?;
    let Some(skel) = skeleton else {
        return Ok(());
    };
    let copied = copy_tree(Path::new(skel), dir, reader);
    if copied.is_err() {
        // Half a home is no home: the next start tries again.
        let _ = fs::remove_dir_all(dir);
    }
    copied
}

/// Copy the contents of `from` into the existing directory `to`: files,
/// directories and symbolic links, with their permission bits. `from` is
/// read with the file-system ids `reader` when given; `to` is written with
/// ours.
pub fn copy_tree(from: &Path, to: &Path, reader: Option<(u32, u32)>) -> Result<(), VirtuserError> {
    let entries =
        as_reader(reader, || fs::read_dir(from)).map_err(io_step("read directory", from))?;
    for e in entries {
        let e = e.map_err(io_step("read directory", from))?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let meta =
            as_reader(reader, || fs::symlink_metadata(&src)).map_err(io_step("stat", &src))?;
        if meta.is_symlink() {
            let target =
                as_reader(reader, || fs::read_link(&src)).map_err(io_step("read link", &src))?;
            std::os::unix::fs::symlink(target, &dst).map_err(io_step("create symlink", &dst))?;
        } else if meta.is_dir() {
            fs::create_dir(&dst).map_err(io_step("create directory", &dst))?;
            copy_tree(&src, &dst, reader)?;
            fs::set_permissions(&dst, meta.permissions()).map_err(io_step("chmod", &dst))?;
        } else if meta.is_file() {
            let mut input =
                as_reader(reader, || fs::File::open(&src)).map_err(io_step("open", &src))?;
            let mut output = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&dst)
                .map_err(io_step("create", &dst))?;
            io::copy(&mut input, &mut output).map_err(io_step("copy to", &dst))?;
            let mode = meta.permissions().mode() & 0o7777;
            fs::set_permissions(&dst, fs::Permissions::from_mode(mode))
                .map_err(io_step("chmod", &dst))?;
        }
    }
    Ok(())
}

/// Run `f` with the file-system uid and gid `reader` when given (and ours
/// back after): the kernel checks its file accesses against them, without
/// our DAC_OVERRIDE (a non-zero fsuid clears the effective file
/// capabilities; fsuid 0 again restores them).
fn as_reader<T>(reader: Option<(u32, u32)>, f: impl FnOnce() -> T) -> T {
    let Some((uid, gid)) = reader else {
        return f();
    };
    let g = nix::unistd::setfsgid(nix::unistd::Gid::from_raw(gid));
    let u = nix::unistd::setfsuid(nix::unistd::Uid::from_raw(uid));
    let r = f();
    nix::unistd::setfsuid(u);
    nix::unistd::setfsgid(g);
    r
}

/// `HOME`, `USER` and the working directory of a spawned command:
/// `workdir` if set (`""` = the caller's), else the virtual user's home,
/// else the caller's.
pub fn apply(
    user: Option<&Prepared>,
    workdir: Option<&str>,
    env: &mut Vec<(String, String)>,
    cwd: &mut Option<String>,
) {
    if let Some(u) = user {
        env.retain(|(k, _)| k != "HOME" && k != "USER" && k != "LOGNAME");
        env.push(("HOME".into(), u.home.clone()));
        env.push(("USER".into(), u.name.clone()));
        env.push(("LOGNAME".into(), u.name.clone()));
    }
    match (workdir, user) {
        (Some(""), _) => {}
        (Some(w), _) => *cwd = Some(w.into()),
        (None, Some(u)) => *cwd = Some(u.home.clone()),
        (None, None) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(skel: Option<&str>) -> Virtuser {
        Virtuser {
            name: VirtuserName::Named("johndoe".into()),
            skeleton: skel.map(Into::into),
        }
    }

    #[test]
    fn caller_home_and_shell_come_from_passwd() {
        let pw = "root:x:0:0:root:/root:/bin/bash\nme:x:1000:1000::/home/me:/bin/zsh\n";
        assert_eq!(
            caller(pw, 1000),
            (Some("/home/me".into()), "/bin/zsh".into())
        );
        assert_eq!(caller(pw, 5), (None, "/bin/sh".into()));
    }

    #[test]
    fn named_user_binds_its_host_home_and_generated_files() {
        let p = describe(
            &named(Some("/etc/skel")),
            Some(Path::new("/h/.config/pallium/virtuser/johndoe/home")),
            (1000, 100),
            false,
            (1000, 100),
            "/bin/bash",
            "box",
        );
        assert_eq!(p.home, "/home/johndoe");
        assert!(p.post.is_empty());
        assert_eq!(
            p.extra[0].1,
            Class::Bind {
                src: "/h/.config/pallium/virtuser/johndoe/home".into(),
                kind: HostKind::Dir,
                label: "bind"
            }
        );
        assert_eq!(
            p.private[0].1,
            "johndoe:x:1000:100::/home/johndoe:/bin/bash\n"
        );
        assert_eq!(p.private[1].1, "johndoe:x:100:\n");
        assert_eq!(p.private[2].1, "box\n");
        assert!(p.extra.contains(&(
            "/etc/passwd".into(),
            Class::Private("/virtuser-passwd".into())
        )));
    }

    #[test]
    fn temporary_user_gets_a_tmpfs_home_with_the_skeleton() {
        let v = Virtuser {
            name: VirtuserName::Temporary,
            skeleton: Some("/etc/skel".into()),
        };
        let p = describe(&v, None, (0, 0), false, (0, 0), "/bin/sh", "pallium");
        assert_eq!(p.extra[0], ("/home/tmp".into(), Class::Fs("tmpfs".into())));
        assert_eq!(
            p.post,
            [MountOp::CopyTree {
                from: "/oldroot/etc/skel".into(),
                to: "/newroot/home/tmp".into(),
                reader: None,
            }]
        );
        let v = Virtuser {
            skeleton: None,
            ..v
        };
        assert!(describe(&v, None, (0, 0), false, (0, 0), "/bin/sh", "p")
            .post
            .is_empty());
        // Root mode: the tmpfs home is given to the user's own uid.
        let p = describe(&v, None, (7, 8), true, (0, 0), "/bin/sh", "p");
        assert_eq!(
            p.post,
            [MountOp::ChownTree {
                path: "/newroot/home/tmp".into(),
                uid: 7,
                gid: 8
            }]
        );
        assert_eq!(p.private[0].1, "tmp:x:7:8::/home/tmp:/bin/sh\n");
        // Under gVisor the command is uid 0 inside: that id gets the name,
        // while the home stays the real uid's.
        let mut g = p.clone();
        g.named_inside_as_root();
        assert_eq!(g.private[0].1, "tmp:x:0:0::/home/tmp:/bin/sh\n");
        assert_eq!(g.private[1].1, "tmp:x:0:\n");
        assert_eq!((g.uid, g.gid, &g.post), (7, 8, &p.post));
    }

    #[test]
    fn environment_and_working_directory() {
        let p = describe(
            &named(None),
            Some(Path::new("/x")),
            (1, 1),
            false,
            (1, 1),
            "/bin/sh",
            "h",
        );
        let mut env = vec![("HOME".into(), "/root".into()), ("A".into(), "b".into())];
        let mut cwd = Some("/caller".to_string());
        apply(Some(&p), None, &mut env, &mut cwd);
        assert!(env.contains(&("HOME".into(), "/home/johndoe".into())));
        assert!(env.contains(&("USER".into(), "johndoe".into())));
        assert!(!env.contains(&("HOME".into(), "/root".into())));
        assert_eq!(cwd.as_deref(), Some("/home/johndoe"));
        let mut cwd = Some("/caller".to_string());
        apply(Some(&p), Some(""), &mut env, &mut cwd);
        assert_eq!(cwd.as_deref(), Some("/caller"));
        apply(None, Some("/srv"), &mut env, &mut cwd);
        assert_eq!(cwd.as_deref(), Some("/srv"));
    }
}
