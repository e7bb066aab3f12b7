//! Root mode without root: once both helpers are up, the supervisor becomes
//! its session's own unprivileged uid and gid (`proto::profile::service_uid`,
//! outside every application's uid block and distinct from the packet
//! engine's), with no supplementary groups, no capabilities and
//! `no_new_privs`, and is not dumpable. Only what it already holds open
//! stays usable: its helper channels, the control socket, the PTY, the
//! session directory (opened to the new gid first, [`prepare`]) and the
//! descriptors it opened for later (the registry lock, `--pid-file`).
//! Rootless, the supervisor already is the caller and only drops its
//! capabilities.

#![forbid(unsafe_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use nix::unistd::{Gid, Uid};
use proto::policy::Role;
use proto::profile::Service;

/// The uid and gid a root-mode supervisor switches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServiceIds {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl ServiceIds {
    /// The supervisor's ids for session `session_id` (its gid is the number
    /// of its uid, which no group of the host's can be either).
    pub(crate) fn supervisor(session_id: &str) -> ServiceIds {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let uid = proto::profile::service_uid(session_id, Service::Supervisor, &passwd);
        ServiceIds { uid, gid: uid }
    }
}

/// Open the session directory to `ids`'s group before the switch: the
/// supervisor writes `info.json` and binds `control.sock` there afterwards,
/// and empties it at the end. Root stays its owner, so the netbroker — root
/// without CAP_DAC_OVERRIDE — still keeps the hops' directory there and
/// removes the session's directory when the session ends
/// (`netbroker/src/orphan.rs`): the supervisor may not, from root's runtime
/// directory. Mode 0770: nobody else may enter; root clients pass by their
/// capabilities.
pub(crate) fn prepare(session_dir: &Path, ids: ServiceIds) -> Result<()> {
    let step = || format!("opening {} to the session's group", session_dir.display());
    nix::unistd::chown(session_dir, None, Some(Gid::from_raw(ids.gid))).with_context(step)?;
    // We created it a moment ago, under the registry lock: no symlink.
    std::fs::set_permissions(session_dir, std::fs::Permissions::from_mode(0o770)).with_context(step)
}

/// Become `ids` for good (real, effective, saved and filesystem ids; no
/// supplementary groups), then hold no capability, set `no_new_privs` and
/// become non-dumpable. The bounding set is emptied first, while
/// CAP_SETPCAP is still ours.
pub(crate) fn become_service(ids: ServiceIds) -> Result<()> {
    caps::clear(None, caps::CapSet::Bounding).context("emptying the bounding set")?;
    nix::unistd::setgroups(&[]).context("dropping supplementary groups")?;
    let gid = Gid::from_raw(ids.gid);
    nix::unistd::setresgid(gid, gid, gid).context("setresgid")?;
    let uid = Uid::from_raw(ids.uid);
    // All three uids non-zero: the kernel clears the permitted and
    // effective sets (no SECBIT_KEEP_CAPS), and the fsuid follows the euid.
    nix::unistd::setresuid(uid, uid, uid).context("setresuid")?;
    proto::policy::drop_to(Role::Supervisor).context("dropping the supervisor's capabilities")?;
    nix::sys::prctl::set_dumpable(false).context("PR_SET_DUMPABLE")?;
    let now = nix::unistd::getresuid().context("getresuid")?;
    anyhow::ensure!(
        [now.real, now.effective, now.saved] == [uid; 3],
        "the supervisor's uid switch did not hold"
    );
    Ok(())
}
