//! Starting the two privileged helpers from beside our own executable (never
//! through `$PATH`), each with its channel on fd 3 and a parent-death signal.

#![forbid(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use nix::sys::signal::Signal;
use serde::{de::DeserializeOwned, Serialize};

use proto::Channel;

/// A running helper and our end of its channel.
pub(crate) struct Helper<S, R> {
    pub(crate) child: Child,
    pub(crate) chan: Channel<S, R>,
}

/// The directory holding our executable, where the helpers are installed.
fn exe_dir() -> Result<PathBuf> {
    let exe = std::fs::read_link("/proc/self/exe").context("cannot find our own executable")?;
    Ok(exe.parent().map(PathBuf::from).unwrap_or_default())
}

/// Spawn `name` (e.g. `pallium-netbroker`) and return it before the
/// handshake, so both helpers can start in parallel.
pub(crate) fn spawn<S: Serialize, R: DeserializeOwned>(
    name: &str,
    env: &[(&str, &str)],
) -> Result<Helper<S, R>> {
    let dir = exe_dir()?;
    let path = dir.join(name);
    if !path.exists() {
        anyhow::bail!(
            "{name} is missing: pallium expects it beside its own executable in {} (reinstall pallium)",
            dir.display()
        );
    }
    let (chan, theirs): (Channel<S, R>, OwnedFd) = Channel::pair().context("socketpair")?;
    let mut cmd = Command::new(&path);
    cmd.envs(env.iter().copied());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // The netbroker ends on our channel's EOF (it restores host sysctls
    // first), so its death signal is one it ignores; everything else dies.
    let death = if name == "pallium-netbroker" {
        Signal::SIGTERM
    } else {
        Signal::SIGKILL
    };
    crate::sys::prepare_helper(&mut cmd, theirs.as_raw_fd(), death);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", path.display()))?;
    drop(theirs);
    Ok(Helper { child, chan })
}

impl<S: Serialize, R: DeserializeOwned> Helper<S, R> {
    /// Exchange hellos; a helper that died instead gets its exit status named.
    pub(crate) fn handshake(&mut self, role: &str) -> Result<()> {
        if let Err(e) = self.chan.handshake("supervisor", role) {
            let status = self.child.try_wait().ok().flatten();
            return Err(match status {
                Some(s) => anyhow::anyhow!("pallium-{role} failed to start ({s})"),
                None => anyhow::Error::new(e).context(format!("handshake with pallium-{role}")),
            });
        }
        Ok(())
    }
}
