//! `sandbox.paths` (and the virtual user's view) as a tree of entries, then as
//! a `Vec<MountOp>`: the original's `build_mounts` (doc/PROFILE.md, sandbox.paths).
//! The host is only read through [`HostFs`], so every rule is unit-tested
//! with a fake file system and without root.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use proto::profile::{Paths, PathsMode};

use crate::plan::{self, MountOp, PrivateFiles, NEW_ROOT, OLD_ROOT};

/// The original's VIRTUSER_DEFAULT_FILE_CONFIG whitelist (`mode: append`).
pub const DEFAULT_WHITELIST: &[&str] = &[
    "/usr",
    "/bin",
    "/usr/lib",
    "/lib",
    "/usr/lib64",
    "/lib64",
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/usr/share",
    "/etc/",
];
/// … and its fresh file systems.
pub const DEFAULT_FSMOUNT: &[(&str, &str)] = &[
    ("/tmp", "tmpfs"),
    ("/run", "tmpfs"),
    ("/var/tmp", "tmpfs"),
    ("/dev/shm", "tmpfs"),
    ("/sys", "sysfs"),
    ("/dev/mqueue", "mqueue"),
    ("/dev/pts", "devpts"),
];

/// What a host path is (`lstat`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKind {
    Dir,
    /// A regular file, device, socket, … (anything a file can be bound onto).
    File,
    Symlink(PathBuf),
}

/// Read-only access to the host's file system while planning.
pub trait HostFs {
    /// `lstat` of `path`; None when it does not exist.
    fn lstat(&self, path: &Path) -> Option<HostKind>;
    /// The names in directory `path` (empty when it is not one).
    fn list(&self, path: &Path) -> Vec<OsString>;
    /// `realpath`; None when it does not exist.
    fn canonicalize(&self, path: &Path) -> Option<PathBuf>;
    /// `stat` (following symbolic links).
    fn stat(&self, path: &Path) -> Option<HostKind> {
        self.canonicalize(path).and_then(|p| self.lstat(&p))
    }
}

/// Why the paths cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathsError {
    #[error("conflicting entries for {path}: {first} and {second}")]
    Conflict {
        path: PathBuf,
        first: &'static str,
        second: &'static str,
    },
    #[error("bind source {0} does not exist")]
    MissingSource(PathBuf),
    #[error("{0} is not an absolute path without '.' or '..'")]
    BadPath(String),
}

/// Who asked for an entry; a higher rank wins on the same path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    /// Found by expanding a glob.
    Glob,
    /// The default file config, or a default-hidden path: user entries win.
    Default,
    /// Written out by the user (or the virtual user's files).
    Explicit,
}

/// What happens at one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// Bind host `src` (a whitelist has `src` = the path itself).
    Bind {
        src: PathBuf,
        kind: HostKind,
        label: &'static str,
    },
    /// Hide: an inaccessible dir/file, or a tmpfs when something below is
    /// not hidden.
    Blacklist,
    /// A fresh file system of this type.
    Fs(String),
    /// Bind a file the sandboxer wrote into its private base tmpfs.
    Private(PathBuf),
}

impl Class {
    fn label(&self) -> &'static str {
        match self {
            Class::Bind { label, .. } => label,
            Class::Blacklist => "blacklist",
            Class::Fs(_) => "fsmount",
            Class::Private(_) => "bind",
        }
    }
}

/// One node of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub class: Class,
    pub rank: Rank,
}

/// Sandbox path → entry; `BTreeMap<PathBuf>` orders parents before children.
pub type Tree = BTreeMap<PathBuf, Entry>;

/// Build the tree: the mode's defaults, the user's entries, `extra` (the
/// virtual user's), and the default-hidden paths.
pub fn tree(
    paths: &Paths,
    extra: &[(PathBuf, Class)],
    fs: &dyn HostFs,
) -> Result<Tree, PathsError> {
    let mut t = Tree::new();
    insert(&mut t, "/".into(), Class::Blacklist, Rank::Default)?;
    if paths.mode == PathsMode::Append {
        for p in DEFAULT_WHITELIST {
            whitelist(&mut t, p, Rank::Default, fs)?;
        }
        for (p, fstype) in DEFAULT_FSMOUNT {
            insert(
                &mut t,
                p.into(),
                Class::Fs(fstype.to_string()),
                Rank::Default,
            )?;
        }
    }
    for b in &paths.bind {
        let dst = clean(&b.dst)?;
        let src = fs
            .canonicalize(Path::new(&b.src))
            .ok_or_else(|| PathsError::MissingSource(b.src.clone().into()))?;
        let kind = fs.lstat(&src).unwrap_or(HostKind::File);
        let class = Class::Bind {
            src,
            kind,
            label: "bind",
        };
        insert(&mut t, dst, class, Rank::Explicit)?;
    }
    for p in &paths.whitelist {
        whitelist(&mut t, p, Rank::Explicit, fs)?;
    }
    for p in &paths.blacklist {
        for (path, rank) in expand(p, fs)? {
            insert(&mut t, path, Class::Blacklist, rank)?;
        }
    }
    for m in &paths.fsmount {
        insert(
            &mut t,
            clean(&m.dst)?,
            Class::Fs(m.fstype.clone()),
            Rank::Explicit,
        )?;
    }
    for (path, class) in extra {
        insert(&mut t, path.clone(), class.clone(), Rank::Explicit)?;
    }
    for (h, _) in proto::hidden::HIDDEN {
        if !explicitly_exposed(&t, Path::new(h)) {
            insert(&mut t, h.into(), Class::Blacklist, Rank::Default)?;
        }
    }
    // The sandbox always gets a fresh /proc; never the host's.
    t.retain(|p, _| !p.starts_with("/proc"));
    splice(&mut t, fs);
    Ok(t)
}

/// The ops for a tree; the same frame as [`plan::default_view`].
/// `read_only`: root mode, where an application running as uid 0 would own
/// the host's files — whitelisted host paths (default, glob or explicit) and
/// pallium's generated files are bound read-only; what the profile asks to
/// be writable stays so: `bind` entries (the virtual user's home among them)
/// and fresh file systems; and device nodes (`/dev/null`, …).
pub fn view(
    tree: &Tree,
    files: &PrivateFiles,
    private: &[(PathBuf, String)],
    post: &[MountOp],
    read_only: bool,
) -> Vec<MountOp> {
    let new = Path::new(NEW_ROOT);
    let old = Path::new(OLD_ROOT);
    let mut ops = plan::prelude(files);
    for (path, contents) in private {
        ops.push(MountOp::WriteFile {
            path: path.clone(),
            contents: contents.clone(),
        });
    }
    ops.push(MountOp::Tmpfs { target: new.into() });
    for (path, e) in tree {
        let target = new.join(path.strip_prefix("/").unwrap_or(path));
        let parent = target.parent().unwrap_or(new).to_path_buf();
        match &e.class {
            Class::Blacklist if path == Path::new("/") => {}
            Class::Blacklist if has_unhidden_below(tree, path) => {
                ops.push(MountOp::MakeDirAll {
                    path: target.clone(),
                });
                ops.push(MountOp::Tmpfs { target });
            }
            Class::Blacklist => ops.push(MountOp::Hide {
                root: new.into(),
                path: path.clone(),
            }),
            Class::Bind {
                kind: HostKind::Symlink(to),
                ..
            } => {
                if host_backed_ancestor(tree, path).is_none() {
                    ops.push(MountOp::MakeDirAll { path: parent });
                    ops.push(MountOp::Symlink {
                        link: target,
                        target: to.clone(),
                    });
                }
            }
            Class::Bind { src, kind, label } => {
                let source = old.join(src.strip_prefix("/").unwrap_or(src));
                mount_point(&mut ops, &target, *kind == HostKind::Dir);
                ops.push(MountOp::Bind {
                    source,
                    target,
                    optional: false,
                    // Device nodes are written through a read-only mount
                    // anyway; landlock would deny it.
                    readonly: read_only && *label != "bind" && !path.starts_with("/dev"),
                });
            }
            Class::Private(src) => {
                mount_point(&mut ops, &target, false);
                ops.push(MountOp::Bind {
                    source: src.clone(),
                    target,
                    optional: false,
                    readonly: read_only,
                });
            }
            Class::Fs(fstype) => {
                mount_point(&mut ops, &target, true);
                ops.push(match fstype.as_str() {
                    "sysfs" => MountOp::Sysfs {
                        target,
                        fallback: old.join("sys"),
                    },
                    _ => MountOp::Fs {
                        fstype: fstype.clone(),
                        target,
                    },
                });
            }
        }
    }
    // pallium's runtime directories, `$XDG_RUNTIME_DIR` and the host's
    // sockets, unless the profile names them (or something in them): a
    // whitelisted directory that holds one does not expose it.
    for h in &files.hidden {
        if !explicitly_named(tree, h) {
            ops.push(MountOp::Hide {
                root: new.into(),
                path: h.clone(),
            });
        }
    }
    ops.extend_from_slice(post);
    ops.extend(plan::epilogue(files.masks));
    ops
}

fn mount_point(ops: &mut Vec<MountOp>, target: &Path, dir: bool) {
    if dir {
        ops.push(MountOp::MakeDirAll {
            path: target.into(),
        });
    } else {
        if let Some(parent) = target.parent() {
            ops.push(MountOp::MakeDirAll {
                path: parent.into(),
            });
        }
        ops.push(MountOp::MakeFile {
            path: target.into(),
        });
    }
}

/// An absolute path without `.`/`..`, normalised (`/etc/` → `/etc`).
fn clean(p: &str) -> Result<PathBuf, PathsError> {
    let path = Path::new(p);
    let ok = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !ok || p.split('/').any(|c| c == "." || c == "..") {
        return Err(PathsError::BadPath(p.into()));
    }
    Ok(path.components().collect())
}

fn insert(t: &mut Tree, path: PathBuf, class: Class, rank: Rank) -> Result<(), PathsError> {
    if let Some(old) = t.get(&path) {
        if old.rank > rank {
            return Ok(());
        }
        if old.rank == rank && rank == Rank::Explicit && old.class.label() != class.label() {
            return Err(PathsError::Conflict {
                path,
                first: old.class.label(),
                second: class.label(),
            });
        }
    }
    t.insert(path, Entry { class, rank });
    Ok(())
}

fn whitelist(t: &mut Tree, pattern: &str, rank: Rank, fs: &dyn HostFs) -> Result<(), PathsError> {
    for (path, r) in expand(pattern, fs)? {
        let Some(kind) = fs.lstat(&path) else {
            continue;
        };
        let class = Class::Bind {
            src: path.clone(),
            kind,
            label: "whitelist",
        };
        insert(t, path, class, r.min(rank))?;
    }
    Ok(())
}

/// A pattern's existing host paths: itself (at `Explicit`) when it has no
/// glob characters, else its matches (at `Glob`).
fn expand(pattern: &str, fs: &dyn HostFs) -> Result<Vec<(PathBuf, Rank)>, PathsError> {
    let path = clean(pattern)?;
    if !pattern.contains(['*', '?', '[']) {
        return Ok(fs
            .lstat(&path)
            .map(|_| (path, Rank::Explicit))
            .into_iter()
            .collect());
    }
    let parts: Vec<String> = path
        .components()
        .skip(1)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let mut out = Vec::new();
    glob_walk(fs, PathBuf::from("/"), &parts, &mut out);
    out.sort();
    out.dedup();
    Ok(out.into_iter().map(|p| (p, Rank::Glob)).collect())
}

/// Python's `glob(recursive=True)`: `*`, `?`, `[…]` within a component (a
/// leading `.` only matched literally), `**` for any number of directories.
fn glob_walk(fs: &dyn HostFs, at: PathBuf, parts: &[String], out: &mut Vec<PathBuf>) {
    let Some((first, rest)) = parts.split_first() else {
        out.push(at);
        return;
    };
    if first == "**" {
        glob_walk(fs, at.clone(), rest, out);
        for name in fs.list(&at) {
            let child = at.join(&name);
            if !name.to_string_lossy().starts_with('.') && fs.lstat(&child) == Some(HostKind::Dir) {
                glob_walk(fs, child, parts, out);
            }
        }
        return;
    }
    if !first.contains(['*', '?', '[']) {
        let child = at.join(first);
        if fs.lstat(&child).is_some() {
            glob_walk(fs, child, rest, out);
        }
        return;
    }
    let pattern = component_pattern(first);
    let mut names = fs.list(&at);
    names.sort();
    for name in names {
        let n = name.to_string_lossy();
        if n.starts_with('.') && !first.starts_with('.') {
            continue;
        }
        if matches(&pattern, &n) {
            glob_walk(fs, at.join(&name), rest, out);
        }
    }
}

/// `fnmatch` of one component, by the `glob` crate: `*`, `?`, `[…]`, `[!…]`
/// (a pattern the crate cannot compile, such as an unclosed `[`, matches
/// itself literally, as Python's `fnmatch` does).
fn component_pattern(p: &str) -> glob::Pattern {
    // Within a component `**` is `*` (the crate refuses it there).
    let mut p = p.to_string();
    while p.contains("**") {
        p = p.replace("**", "*");
    }
    let p = p.as_str();
    glob::Pattern::new(p)
        .or_else(|_| glob::Pattern::new(&glob::Pattern::escape(p)))
        .expect("an escaped pattern compiles")
}

/// Whether `name` matches one component's pattern.
fn matches(p: &glob::Pattern, name: &str) -> bool {
    p.matches_with(
        name,
        glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        },
    )
}

/// A default-hidden path stays visible when the user whitelisted or bound it
/// (or something in it, or a specific directory holding it) by name
/// ([`proto::hidden::exposes`], the rule `pallium check` reports by).
fn explicitly_exposed(t: &Tree, hidden: &Path) -> bool {
    t.iter().any(|(p, e)| {
        e.rank == Rank::Explicit
            && matches!(e.class, Class::Bind { .. })
            && proto::hidden::exposes(p, hidden)
    })
}

/// The user whitelisted or bound `hidden` itself or something in it.
fn explicitly_named(t: &Tree, hidden: &Path) -> bool {
    t.iter().any(|(p, e)| {
        e.rank == Rank::Explicit && matches!(e.class, Class::Bind { .. }) && p.starts_with(hidden)
    })
}

fn has_unhidden_below(t: &Tree, path: &Path) -> bool {
    t.range(path.to_path_buf()..)
        .skip(1)
        .take_while(|(p, _)| p.starts_with(path))
        .any(|(_, e)| e.class != Class::Blacklist)
}

/// The nearest ancestor that is a bind of a host directory: (its path, source).
fn host_backed_ancestor<'a>(t: &'a Tree, path: &'a Path) -> Option<(&'a Path, &'a Path)> {
    path.ancestors()
        .skip(1)
        .find_map(|a| match t.get(a) {
            Some(Entry {
                class:
                    Class::Bind {
                        src,
                        kind: HostKind::Dir,
                        ..
                    },
                ..
            }) => Some((a, src.as_path())),
            Some(Entry {
                class: Class::Blacklist,
                ..
            }) if !has_unhidden_below(t, a) => None,
            Some(_) => Some((a, Path::new(""))),
            None => None,
        })
        .filter(|(_, src)| !src.as_os_str().is_empty())
}

/// A mount point missing from a bound host directory cannot be created
/// without writing to the host: replace that bind by a tmpfs holding binds of
/// each of the directory's entries (recursively, until the point exists).
fn splice(t: &mut Tree, fs: &dyn HostFs) {
    loop {
        let missing = t.iter().find_map(|(path, e)| {
            let needs_point = match &e.class {
                Class::Blacklist => has_unhidden_below(t, path),
                Class::Bind {
                    kind: HostKind::Symlink(_),
                    ..
                } => false,
                _ => true,
            };
            let (anc, src) = host_backed_ancestor(t, path)?;
            let inside = src.join(path.strip_prefix(anc).ok()?);
            (needs_point && fs.stat(&inside).is_none()).then(|| (anc.to_path_buf(), src.into()))
        });
        let Some((anc, src)) = missing else {
            return;
        };
        let src: PathBuf = src;
        let rank = t[&anc].rank;
        // A blacklist with entries below is a tmpfs (mode 0755).
        t.insert(
            anc.clone(),
            Entry {
                class: Class::Blacklist,
                rank,
            },
        );
        for name in fs.list(&src) {
            let (from, to) = (src.join(&name), anc.join(&name));
            if t.contains_key(&to) {
                continue;
            }
            if let Some(kind) = fs.lstat(&from) {
                let class = Class::Bind {
                    src: from,
                    kind,
                    label: "whitelist",
                };
                t.insert(to, Entry { class, rank });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proto::profile::{BindMount, FsMount};

    use super::*;

    /// A fake host: path → kind.
    struct Fake(BTreeMap<PathBuf, HostKind>);

    impl HostFs for Fake {
        fn lstat(&self, p: &Path) -> Option<HostKind> {
            self.0.get(p).cloned()
        }
        fn list(&self, p: &Path) -> Vec<OsString> {
            self.0
                .keys()
                .filter(|k| k.parent() == Some(p))
                .map(|k| k.file_name().unwrap().into())
                .collect()
        }
        fn canonicalize(&self, p: &Path) -> Option<PathBuf> {
            match self.0.get(p)? {
                HostKind::Symlink(t) => Some(p.parent()?.join(t)),
                _ => Some(p.into()),
            }
        }
    }

    fn host() -> Fake {
        let mut m = BTreeMap::new();
        for d in [
            "/",
            "/usr",
            "/usr/lib",
            "/usr/share",
            "/etc",
            "/etc/ssl",
            "/home",
            "/home/me",
            "/home/me/docs",
            "/tmp",
            "/run",
            "/run/nscd",
            "/run/systemd",
            "/run/systemd/resolve",
            "/proc",
            "/dev",
        ] {
            m.insert(PathBuf::from(d), HostKind::Dir);
        }
        for f in [
            "/etc/passwd",
            "/etc/shadow",
            "/etc/hostname",
            "/home/me/a.txt",
            "/home/me/docs/b.txt",
            "/home/me/.secret",
            "/dev/null",
            "/.dockerenv",
        ] {
            m.insert(PathBuf::from(f), HostKind::File);
        }
        m.insert("/bin".into(), HostKind::Symlink("usr/bin".into()));
        Fake(m)
    }

    fn base() -> Paths {
        Paths {
            mode: PathsMode::Base,
            ..Paths::default()
        }
    }

    fn class(t: &Tree, p: &str) -> Option<Class> {
        t.get(Path::new(p)).map(|e| e.class.clone())
    }

    fn wl(p: &str) -> Class {
        Class::Bind {
            src: p.into(),
            kind: host().lstat(Path::new(p)).unwrap(),
            label: "whitelist",
        }
    }

    #[test]
    fn base_mode_starts_from_an_empty_root() {
        let t = tree(&base(), &[], &host()).unwrap();
        assert_eq!(class(&t, "/"), Some(Class::Blacklist));
        assert!(t
            .keys()
            .all(|p| p == Path::new("/")
                || proto::hidden::HIDDEN.iter().any(|(h, _)| p == Path::new(h))));
    }

    #[test]
    fn append_mode_has_the_default_virtuser_config() {
        let t = tree(&Paths::default(), &[], &host()).unwrap();
        assert_eq!(class(&t, "/usr"), Some(wl("/usr")));
        assert_eq!(class(&t, "/etc"), Some(wl("/etc")));
        assert_eq!(class(&t, "/dev/null"), Some(wl("/dev/null")));
        assert_eq!(class(&t, "/tmp"), Some(Class::Fs("tmpfs".into())));
        assert_eq!(class(&t, "/sys"), Some(Class::Fs("sysfs".into())));
        assert_eq!(class(&t, "/dev/pts"), Some(Class::Fs("devpts".into())));
        // Missing on this host: skipped, not an error.
        assert_eq!(class(&t, "/lib64"), None);
        assert!(matches!(
            class(&t, "/bin"),
            Some(Class::Bind {
                kind: HostKind::Symlink(_),
                ..
            })
        ));
    }

    #[test]
    fn user_entries_override_defaults() {
        let p = Paths {
            whitelist: vec!["/tmp".into()],
            ..Paths::default()
        };
        let t = tree(&p, &[], &host()).unwrap();
        assert_eq!(class(&t, "/tmp"), Some(wl("/tmp")));
    }

    #[test]
    fn glob_derived_entries_lose_to_explicit_ones() {
        let p = Paths {
            whitelist: vec!["/*".into()],
            blacklist: vec!["/tmp".into()],
            ..base()
        };
        let t = tree(&p, &[], &host()).unwrap();
        assert_eq!(class(&t, "/tmp"), Some(Class::Blacklist));
        assert_eq!(class(&t, "/etc"), Some(wl("/etc")));
        // `*` skips dot files; /proc is always fresh.
        assert_eq!(class(&t, "/.dockerenv"), None);
        assert_eq!(class(&t, "/proc"), None);
    }

    #[test]
    fn explicit_entries_of_different_classes_conflict() {
        let p = Paths {
            whitelist: vec!["/etc".into()],
            blacklist: vec!["/etc".into()],
            ..base()
        };
        let e = tree(&p, &[], &host()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "conflicting entries for /etc: whitelist and blacklist"
        );
    }

    #[test]
    fn same_class_last_wins() {
        let p = Paths {
            fsmount: vec![
                FsMount {
                    dst: "/x".into(),
                    fstype: "tmpfs".into(),
                },
                FsMount {
                    dst: "/x".into(),
                    fstype: "mqueue".into(),
                },
            ],
            ..base()
        };
        let t = tree(&p, &[], &host()).unwrap();
        assert_eq!(class(&t, "/x"), Some(Class::Fs("mqueue".into())));
    }

    #[test]
    fn recursive_globs_and_character_classes() {
        let p = Paths {
            whitelist: vec!["/home/**/*.txt".into(), "/etc/[ps]*".into()],
            ..base()
        };
        let t = tree(&p, &[], &host()).unwrap();
        for f in [
            "/home/me/a.txt",
            "/home/me/docs/b.txt",
            "/etc/passwd",
            "/etc/shadow",
            "/etc/ssl",
        ] {
            assert!(t.contains_key(Path::new(f)), "{f}");
        }
        assert!(!t.contains_key(Path::new("/etc/hostname")));
        assert!(!t.contains_key(Path::new("/home/me/.secret")));
        assert!(t.values().filter(|e| e.rank == Rank::Glob).count() == 5);
    }

    #[test]
    fn fnmatch() {
        let m = |p: &str, s: &str| matches(&component_pattern(p), s);
        assert!(m("a*c", "abbc"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("[!x]y", "zy"));
        assert!(m("[a-c]", "b"));
        assert!(!m("[a-c]", "d"));
        assert!(m("a[b", "a[b"), "an unclosed [ is literal");
        assert!(!m("a[b", "ab"));
        assert!(m(".*rc", ".bashrc"));
        assert!(m("a**c", "abbc"), "** inside a component is *");
    }

    #[test]
    fn nonexistent_blacklist_is_skipped_and_bad_bind_source_fails() {
        let p = Paths {
            blacklist: vec!["/nope".into()],
            ..base()
        };
        assert!(!tree(&p, &[], &host())
            .unwrap()
            .contains_key(Path::new("/nope")));
        let p = Paths {
            bind: vec![BindMount {
                dst: "/x".into(),
                src: "/nope".into(),
            }],
            ..base()
        };
        assert_eq!(
            tree(&p, &[], &host()).unwrap_err(),
            PathsError::MissingSource("/nope".into())
        );
    }

    #[test]
    fn blacklist_with_whitelisted_children_becomes_a_tmpfs() {
        let p = Paths {
            whitelist: vec!["/home".into(), "/home/me/docs".into()],
            blacklist: vec!["/home/me".into(), "/etc/shadow".into()],
            ..base()
        };
        let t = tree(&p, &[], &host()).unwrap();
        let ops = view(&t, &files(), &[], &[], false);
        assert!(ops.contains(&MountOp::Tmpfs {
            target: "/newroot/home/me".into()
        }));
        assert!(ops.contains(&MountOp::Bind {
            source: "/oldroot/home/me/docs".into(),
            target: "/newroot/home/me/docs".into(),
            optional: false,
            readonly: false
        }));
        assert!(ops.contains(&MountOp::Hide {
            root: "/newroot".into(),
            path: "/etc/shadow".into()
        }));
    }

    fn files() -> PrivateFiles {
        PrivateFiles {
            resolv_conf: String::new(),
            hosts: String::new(),
            hidden: vec![],
            masks: true,
        }
    }

    fn bind(dst: &str, src: &str) -> BindMount {
        BindMount {
            dst: dst.into(),
            src: src.into(),
        }
    }

    #[test]
    fn mount_points_are_created_in_the_tmpfs_root() {
        let p = Paths {
            bind: vec![bind("/doesnotexist/x", "/home/me/a.txt")],
            ..base()
        };
        let ops = view(&tree(&p, &[], &host()).unwrap(), &files(), &[], &[], false);
        let mk = ops
            .iter()
            .position(|o| {
                *o == MountOp::MakeDirAll {
                    path: "/newroot/doesnotexist".into(),
                }
            })
            .unwrap();
        let file = ops
            .iter()
            .position(|o| {
                *o == MountOp::MakeFile {
                    path: "/newroot/doesnotexist/x".into(),
                }
            })
            .unwrap();
        let b = ops
            .iter()
            .position(|o| matches!(o, MountOp::Bind { target, .. } if target == Path::new("/newroot/doesnotexist/x")))
            .unwrap();
        assert!(mk < file && file < b);
    }

    #[test]
    fn a_missing_mount_point_in_a_bound_host_directory_splices_it() {
        // /etc/x does not exist on the host: /etc becomes a tmpfs with each
        // host entry bound back, so nothing is created on the host.
        let p = Paths {
            bind: vec![bind("/etc/x/t", "/home/me/a.txt")],
            whitelist: vec!["/etc".into()],
            ..base()
        };
        let t = tree(&p, &[], &host()).unwrap();
        assert_eq!(class(&t, "/etc"), Some(Class::Blacklist));
        assert_eq!(class(&t, "/etc/passwd"), Some(wl("/etc/passwd")));
        assert_eq!(class(&t, "/etc/ssl"), Some(wl("/etc/ssl")));
        let ops = view(&t, &files(), &[], &[], false);
        assert!(ops.contains(&MountOp::Tmpfs {
            target: "/newroot/etc".into()
        }));
        // An existing mount point needs no splice.
        let p = Paths {
            bind: vec![bind("/etc/passwd", "/home/me/a.txt")],
            whitelist: vec!["/etc".into()],
            ..base()
        };
        let t = tree(&p, &[], &host()).unwrap();
        assert_eq!(class(&t, "/etc"), Some(wl("/etc")));
    }

    #[test]
    fn resolver_and_bus_paths_are_hidden_unless_whitelisted_explicitly() {
        let p = Paths {
            whitelist: vec!["/run/*".into()],
            ..base()
        };
        let t = tree(&p, &[], &host()).unwrap();
        assert_eq!(class(&t, "/run/nscd"), Some(Class::Blacklist));
        let ops = view(&t, &files(), &[], &[], false);
        assert!(ops.contains(&MountOp::Hide {
            root: "/newroot".into(),
            path: "/run/systemd/resolve".into()
        }));
        let p = Paths {
            whitelist: vec!["/run/nscd".into()],
            ..base()
        };
        let t = tree(&p, &[], &host()).unwrap();
        assert_eq!(class(&t, "/run/nscd"), Some(wl("/run/nscd")));
    }

    #[test]
    fn extra_entries_and_post_ops_are_placed() {
        let extra = [(PathBuf::from("/etc/passwd"), Class::Private("/vp".into()))];
        let t = tree(&Paths::default(), &extra, &host()).unwrap();
        let post = [MountOp::CopyTree {
            from: "/a".into(),
            to: "/b".into(),
            reader: None,
        }];
        let ops = view(&t, &files(), &[("/vp".into(), "x".into())], &post, false);
        assert!(ops.contains(&MountOp::Bind {
            source: "/vp".into(),
            target: "/newroot/etc/passwd".into(),
            optional: false,
            readonly: false
        }));
        let copy = ops.iter().position(|o| *o == post[0]).unwrap();
        let proc = ops
            .iter()
            .position(|o| matches!(o, MountOp::Proc { .. }))
            .unwrap();
        assert!(copy < proc);
        assert!(matches!(ops.last(), Some(MountOp::EnterRoot { .. })));
    }

    #[test]
    fn root_mode_binds_whitelists_read_only_and_binds_writable() {
        let p = Paths {
            whitelist: vec!["/home/me/docs".into()],
            bind: vec![bind("/data", "/home/me")],
            ..Paths::default()
        };
        let t = tree(&p, &[], &host()).unwrap();
        let ops = view(&t, &files(), &[], &[], true);
        let ro = |target: &str| {
            ops.iter().find_map(|o| match o {
                MountOp::Bind {
                    target: t,
                    readonly,
                    ..
                } if t == Path::new(target) => Some(*readonly),
                _ => None,
            })
        };
        // Default whitelist, explicit whitelist: read-only; `bind`: writable.
        assert_eq!(ro("/newroot/usr"), Some(true));
        assert_eq!(ro("/newroot/home/me/docs"), Some(true));
        assert_eq!(ro("/newroot/data"), Some(false));
    }

    #[test]
    fn bad_paths_are_refused() {
        assert!(clean("rel").is_err());
        assert!(clean("/a/../b").is_err());
        assert_eq!(clean("/etc/").unwrap(), PathBuf::from("/etc"));
    }
}
