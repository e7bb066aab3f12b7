//! The two doors a profile may open to the caller's desktop, each exactly
//! one: `sandbox.gui` (a nested Xpra display, or with `"expose"` the
//! caller's own) and `sandbox.audio` (a PulseAudio relay). The session's
//! share directory (`<session>/share`, the sandbox's `/tmp/.pallium`) holds
//! the files the application gets; the sandboxer binds it and the display's
//! socket (`proto::sandbox::SessionBind`), and the application's
//! environment names them.

#![forbid(unsafe_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use proto::profile::{Gui, Sandbox};
use proto::sandbox::SessionBind;

use crate::audio::{self, Relay};
use crate::gui::{Outer, Xpra};
use crate::xauth;

/// Variables for the application.
pub(crate) type Env = Vec<(String, String)>;

/// The share directory as the sandbox sees it.
const SHARE_IN_SANDBOX: &str = "/tmp/.pallium";

/// What the session opened to the desktop.
pub(crate) struct Desktop {
    gui: Gui,
    audio: bool,
    share: PathBuf,
    xpra_dir: PathBuf,
    outer: Option<Outer>,
    xpra: Option<Xpra>,
    relay: Option<Relay>,
    root_mode: bool,
}

impl Desktop {
    /// As the caller, before the supervisor drops its identity: read the
    /// caller's display, create the share directory (root mode: handed to
    /// the service uid `owner`) and start the audio relay, which must
    /// connect as the caller.
    pub(crate) fn prepare(
        sandbox: &Sandbox,
        session_dir: &Path,
        owner: Option<(u32, u32)>,
    ) -> Result<Desktop> {
        let mut d = Desktop {
            gui: sandbox.gui,
            audio: sandbox.audio,
            share: session_dir.join("share"),
            xpra_dir: session_dir.join("xpra"),
            outer: None,
            xpra: None,
            relay: None,
            root_mode: owner.is_some(),
        };
        if d.gui == Gui::Off && !d.audio {
            return Ok(d);
        }
        if d.gui != Gui::Off {
            d.outer = Some(Outer::read()?);
        }
        // Root mode: the application is another unprivileged uid; nothing
        // but the sandbox sees this directory (the session's is 0770).
        make_dir(&d.share, 0o755, owner)?;
        if let (Gui::Xpra, Some(_)) = (d.gui, owner) {
            // Xpra's state, and the two directories it makes there: root's
            // and the service group's, so that the netbroker (root without
            // CAP_DAC_OVERRIDE) can remove them after a kill -9 of the
            // supervisor.
            for dir in [
                d.xpra_dir.clone(),
                d.xpra_dir.join("xpra"),
                d.xpra_dir.join("pulse"),
            ] {
                make_dir(&dir, 0o770, owner)?;
            }
        }
        if d.audio {
            let user = sandbox
                .virtuser
                .as_ref()
                .map(|v| v.name.as_str().to_string());
            d.relay = Some(audio::start(
                &d.share,
                sandbox.microphone,
                &sandbox.hostname,
                user.as_deref(),
            )?);
        }
        Ok(d)
    }

    /// Once the supervisor has dropped its identity: start Xpra, which
    /// comes up while the network chain is built.
    pub(crate) fn start(&mut self, quiet: bool) -> Result<()> {
        if self.gui == Gui::Xpra {
            self.xpra = Some(Xpra::start(&self.xpra_dir, quiet)?);
        }
        Ok(())
    }

    /// Wait for the display, write the application's files; the sandbox's
    /// binds and the variables its processes get.
    pub(crate) fn finish(&mut self) -> Result<(Vec<SessionBind>, Env)> {
        let mut binds = Vec::new();
        let mut env = Vec::new();
        if self.gui == Gui::Off && !self.audio {
            return Ok((binds, env));
        }
        binds.push(SessionBind {
            source: self.share.display().to_string(),
            target: SHARE_IN_SANDBOX.into(),
            dir: true,
        });
        let outer = self.outer.clone();
        let display = match (self.gui, outer, self.xpra.as_mut()) {
            (Gui::Xpra, Some(outer), Some(xpra)) => {
                let d = xpra.ready(&outer, self.root_mode)?;
                Some((d.number, d.socket, d.xauthority))
            }
            (Gui::Expose, Some(outer), _) => Some(expose(&outer)?),
            _ => None,
        };
        if let Some((number, socket, xauthority)) = display {
            let file = self.share.join("Xauthority");
            std::fs::write(&file, xauthority)
                .with_context(|| format!("writing {}", file.display()))?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
            let target = format!("/tmp/.X11-unix/X{number}");
            binds.push(SessionBind {
                source: socket.display().to_string(),
                target,
                dir: false,
            });
            env.push(("DISPLAY".into(), format!(":{number}")));
            env.push((
                "XAUTHORITY".into(),
                format!("{SHARE_IN_SANDBOX}/Xauthority"),
            ));
        }
        if self.audio {
            env.extend(audio::env(SHARE_IN_SANDBOX));
        }
        Ok((binds, env))
    }
}

impl Desktop {
    /// `sandbox.audio` under gVisor: the relay serves `listener` (TCP on
    /// the application namespace's 127.0.0.1, from the sandboxer) too; the
    /// variable that points the application at it instead of the socket.
    pub(crate) fn audio_over_tcp(&mut self, listener: std::os::fd::OwnedFd) -> Result<Env> {
        let relay = self
            .relay
            .as_mut()
            .context("the sandboxer made an audio listener, but no relay runs")?;
        let port = relay.listen_tcp(listener)?;
        Ok(vec![(
            "PULSE_SERVER".into(),
            format!("tcp:127.0.0.1:{port}"),
        )])
    }
}

/// Create `dir` with `mode`; root mode (`owner`: the service ids) root's
/// with the service group, the setgid bit and group write, so that both the
/// supervisor and root without CAP_DAC_OVERRIDE (the netbroker, which
/// removes the session's directory after a kill -9) may remove what is
/// made there.
fn make_dir(dir: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
    std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mode = match owner {
        Some((_, gid)) => {
            nix::unistd::chown(dir, None, Some(nix::unistd::Gid::from_raw(gid)))
                .with_context(|| format!("opening {} to the session's group", dir.display()))?;
            mode | 0o2070
        }
        None => mode,
    };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", dir.display()))
}

/// `gui: "expose"`: the caller's own display socket and cookie (giving up
/// display isolation: the application sees and drives every window).
fn expose(outer: &Outer) -> Result<(u32, PathBuf, Vec<u8>)> {
    let n = outer.local_number().ok_or_else(|| {
        anyhow!(
            "sandbox.gui \"expose\" needs a local display (:N), not DISPLAY={}",
            outer.display
        )
    })?;
    let socket = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
    if !socket.exists() {
        bail!(
            "sandbox.gui \"expose\": the display's socket {} is missing",
            socket.display()
        );
    }
    let auth = outer
        .xauthority
        .as_deref()
        .and_then(|f| xauth::cookie_for(f, n))
        .map(|c| xauth::wild_file(n, &c))
        .unwrap_or_default();
    Ok((n, socket, auth))
}

/// `env` with `extra` set (replacing variables of the same name).
pub(crate) fn with(
    mut env: Vec<(String, String)>,
    extra: &[(String, String)],
) -> Vec<(String, String)> {
    env.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    env.extend(extra.iter().cloned());
    env
}
