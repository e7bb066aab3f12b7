//! Landlock as a second wall behind the mount namespace: the file view's plan
//! is turned into landlock rules (pure, [`rules`]), the ruleset is created at
//! `Setup` once the view is built ([`Landlock::prepare`]), and each spawned
//! child enters it right before seccomp ([`Landlock::restrict`]).

#![forbid(unsafe_code)]

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use landlock::Access as _;
use landlock::{
    AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, RulesetError, ABI,
};
use nix::errno::Errno;

use crate::plan::{MountOp, NEW_ROOT};

/// The newest ABI this crate knows; `BestEffort` degrades to the kernel's.
const ABI_WANTED: ABI = ABI::V10;

/// What the application may do beneath one path of its view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// List directories only: the sandbox's own root tmpfs and the tmpfs
    /// that stand in for hidden directories with visible entries below.
    List,
    /// Read and execute: read-only binds, pallium's private files, sysfs.
    Read,
    /// Everything: what the view leaves writable (writable binds, where the
    /// host's permissions decide; fresh file systems; /proc).
    ReadWrite,
}

impl Access {
    fn flags(self, abi: ABI) -> BitFlags<AccessFs> {
        match self {
            Access::List => AccessFs::ReadDir.into(),
            Access::Read => AccessFs::from_read(abi),
            Access::ReadWrite => AccessFs::from_all(abi),
        }
    }
}

/// One landlock rule: `access` beneath `path` (a path inside the sandbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub path: PathBuf,
    pub access: Access,
}

/// The policy, one plan step per line: what each step makes visible, and the
/// access it grants. Steps that hide (`Hide`, a `Tmpfs` other than the root)
/// or only create mount points and links grant nothing of their own; a
/// later step at the same path replaces an earlier one's rule, as its mount
/// covers the earlier one.
fn access_of(op: &MountOp) -> Option<(PathBuf, Option<Access>)> {
    match op {
        MountOp::Tmpfs { target } if target == Path::new(NEW_ROOT) => {
            Some(("/".into(), Some(Access::List)))
        }
        MountOp::Tmpfs { target } => Some((inside(target)?, None)),
        MountOp::Hide { path, .. } => Some((path.clone(), None)),
        MountOp::Bind {
            target,
            readonly: true,
            ..
        } => Some((inside(target)?, Some(Access::Read))),
        MountOp::Bind { target, .. } => Some((inside(target)?, Some(Access::ReadWrite))),
        MountOp::Fs { target, .. } => Some((inside(target)?, Some(Access::ReadWrite))),
        MountOp::Proc { target } => Some((inside(target)?, Some(Access::ReadWrite))),
        MountOp::Sysfs { target, .. } => Some((inside(target)?, Some(Access::Read))),
        MountOp::BindInRoot { path, .. } => Some((path.clone(), Some(Access::Read))),
        _ => None,
    }
}

/// The landlock rules that mirror the file view built by `ops`.
pub fn rules(ops: &[MountOp]) -> Vec<Rule> {
    let mut out: Vec<Rule> = Vec::new();
    for (path, access) in ops.iter().filter_map(access_of) {
        out.retain(|r| r.path != path);
        if let Some(access) = access {
            out.push(Rule { path, access });
        }
    }
    out
}

/// `target` under [`NEW_ROOT`] as the sandbox will see it.
fn inside(target: &Path) -> Option<PathBuf> {
    let rel = target.strip_prefix(NEW_ROOT).ok()?;
    Some(Path::new("/").join(rel))
}

/// Why the ruleset cannot be built (landlock is available but refused).
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("create the landlock ruleset: {0}")]
    Ruleset(#[from] RulesetError),
    #[error("duplicate the landlock ruleset: {0}")]
    Dup(#[source] std::io::Error),
}

/// Enter a landlock domain that handles no file access and only *scopes*
/// (ABI 6, Linux 6.12): nothing below it may signal, or connect to an
/// abstract Unix socket of, a process outside it. The sandboxer enters it
/// before it forks the sandbox's init, so the whole sandbox — init, every
/// command and gVisor's runsc — shares this one layer: its processes reach
/// each other (a `pallium exec` may `kill` what `run` started, or use its
/// session bus), never the supervisor, the helpers, hop daemons or the host.
/// (Each command's file ruleset is a layer of its own below, without scopes:
/// scoped there, two commands could not signal each other.) Returns whether
/// the kernel scopes; older kernels keep the PID and network namespaces as
/// the only walls, which already separate the host.
pub fn scope_sandbox() -> Result<bool, LandlockError> {
    use landlock::{Compatible as _, Scope};
    let created = match Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .scope(Scope::from_all(ABI_WANTED))?
        .create()
    {
        Ok(c) => c,
        // The kernel has no scopes: nothing left to handle.
        Err(RulesetError::CreateRuleset(landlock::CreateRulesetError::MissingHandledAccess)) => {
            return Ok(false)
        }
        Err(e) => return Err(e.into()),
    };
    let status = created.restrict_self()?;
    Ok(status.ruleset != landlock::RulesetStatus::NotEnforced)
}

/// The application's landlock ruleset, or nothing where the kernel has no
/// landlock.
#[derive(Debug)]
pub struct Landlock {
    ruleset: Option<RulesetCreated>,
}

impl Landlock {
    /// Create the ruleset for `rules`, opening each path in the current root
    /// (the sandbox's, after `Setup` built it). A path that cannot be opened
    /// (an optional bind that was skipped) grants nothing.
    pub fn prepare(rules: &[Rule]) -> Result<Landlock, LandlockError> {
        let mut created = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(AccessFs::from_all(ABI_WANTED))?
            .create()?;
        let probe = created.try_clone().map_err(LandlockError::Dup)?;
        if Option::<OwnedFd>::from(probe).is_none() {
            tracing::warn!("landlock unavailable: the mount sandbox alone protects the file view");
            return Ok(Landlock { ruleset: None });
        }
        for r in rules {
            let fd = match PathFd::new(&r.path) {
                Ok(fd) => fd,
                Err(e) => {
                    tracing::debug!(path = %r.path.display(), "landlock rule skipped: {e}");
                    continue;
                }
            };
            created = created.add_rule(PathBeneath::new(fd, r.access.flags(ABI_WANTED)))?;
        }
        Ok(Landlock {
            ruleset: Some(created),
        })
    }

    /// Whether spawned processes enter a landlock domain.
    pub fn enforced(&self) -> bool {
        self.ruleset.is_some()
    }

    /// In the forked child: enter the ruleset (a `dup` and
    /// `landlock_restrict_self`, no allocation). Needs NO_NEW_PRIVS, which
    /// the capability drop set.
    pub fn restrict(&self) -> Result<(), Errno> {
        let Some(ruleset) = &self.ruleset else {
            return Ok(());
        };
        let ruleset = ruleset
            .try_clone()
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
        ruleset.restrict_self().map(drop).map_err(|_| Errno::last())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::{self, HostFs, HostKind};
    use crate::plan::{self, EntryKind, HostEntry, PrivateFiles};
    use proto::profile::{Paths, PathsMode};

    fn files() -> PrivateFiles {
        PrivateFiles {
            resolv_conf: String::new(),
            hosts: String::new(),
            hidden: vec![],
            masks: true,
        }
    }

    fn rule(path: &str, access: Access) -> Rule {
        Rule {
            path: path.into(),
            access,
        }
    }

    /// A host with /usr/share/doc, /home/alice and /etc/hostname.
    struct Fake;

    impl HostFs for Fake {
        fn lstat(&self, path: &Path) -> Option<HostKind> {
            match path.to_str()? {
                "/" | "/usr" | "/usr/share" | "/usr/share/doc" | "/home" | "/home/alice" => {
                    Some(HostKind::Dir)
                }
                "/etc/hostname" => Some(HostKind::File),
                _ => None,
            }
        }
        fn list(&self, _: &Path) -> Vec<std::ffi::OsString> {
            Vec::new()
        }
        fn canonicalize(&self, path: &Path) -> Option<PathBuf> {
            self.lstat(path).map(|_| path.into())
        }
    }

    fn whitelist_view(whitelist: &[&str]) -> Vec<MountOp> {
        let p = Paths {
            mode: PathsMode::Base,
            whitelist: whitelist.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let tree = paths::tree(&p, &[], &Fake).unwrap();
        paths::view(&tree, &files(), &[], &[], false)
    }

    #[test]
    fn root_tmpfs_is_only_listable() {
        let r = rules(&whitelist_view(&["/usr/share/doc"]));
        assert_eq!(r[0], rule("/", Access::List));
    }

    #[test]
    fn whitelisted_paths_are_granted_and_nothing_else() {
        let r = rules(&whitelist_view(&["/usr/share/doc", "/etc/hostname"]));
        assert!(r.contains(&rule("/usr/share/doc", Access::ReadWrite)));
        assert!(r.contains(&rule("/etc/hostname", Access::ReadWrite)));
        assert!(r.contains(&rule("/proc", Access::ReadWrite)));
        // The private files are read-only.
        assert!(r.contains(&rule("/etc/resolv.conf", Access::Read)));
        assert!(!r.iter().any(|r| r.path.starts_with("/home")));
        // The tmpfs standing in for /usr and /usr/share grants no write.
        assert!(!r
            .iter()
            .any(|r| r.path == Path::new("/usr") || r.path == Path::new("/usr/share")));
    }

    #[test]
    fn fresh_file_systems_are_writable_and_sysfs_read_only() {
        let p = Paths {
            mode: PathsMode::Append,
            ..Default::default()
        };
        let tree = paths::tree(&p, &[], &Fake).unwrap();
        let r = rules(&paths::view(&tree, &files(), &[], &[], false));
        assert!(r.contains(&rule("/tmp", Access::ReadWrite)));
        assert!(r.contains(&rule("/dev/pts", Access::ReadWrite)));
        assert!(r.contains(&rule("/sys", Access::Read)));
    }

    #[test]
    fn a_hidden_path_loses_its_rule() {
        let r = rules(&[
            MountOp::Bind {
                source: "/oldroot/run".into(),
                target: "/newroot/run".into(),
                optional: false,
                readonly: false,
            },
            MountOp::Hide {
                root: NEW_ROOT.into(),
                path: "/run".into(),
            },
        ]);
        assert!(r.is_empty());
    }

    #[test]
    fn default_view_grants_every_top_level_entry() {
        let entries = [
            HostEntry {
                name: "usr".into(),
                kind: EntryKind::Dir,
            },
            HostEntry {
                name: "bin".into(),
                kind: EntryKind::Symlink("usr/bin".into()),
            },
        ];
        let r = rules(&plan::default_view(&entries, &files(), false));
        assert!(r.contains(&rule("/usr", Access::ReadWrite)));
        let r = rules(&plan::default_view(&entries, &files(), true));
        assert!(r.contains(&rule("/usr", Access::Read)));
        // A symbolic link grants nothing itself; its target does.
        assert!(!r.iter().any(|r| r.path == Path::new("/bin")));
        assert!(!r.iter().any(|r| r.path.starts_with("/oldroot")));
    }

    #[test]
    fn steps_outside_the_new_root_grant_nothing() {
        assert!(rules(&plan::prelude(&files())).is_empty());
    }
}
