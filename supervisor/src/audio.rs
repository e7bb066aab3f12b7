//! `sandbox.audio`: a PulseAudio relay per session. The supervisor binds a
//! socket in the session's share directory (the sandbox's `/tmp/.pallium`,
//! visible to nothing else: every other view hides pallium's runtime
//! directory) and starts `pallium audio-relay` on it, as the caller, before
//! it drops its own identity. The relay connects each client to the
//! caller's server as a PulseAudio client finds it (`PULSE_SERVER`, then
//! `$XDG_RUNTIME_DIR/pulse/native`; PipeWire's pulse server alike), relays
//! whole frames and refuses what `crate::pulse` refuses; the daemon sees the
//! relay's uid. It ends when the supervisor's pipe on its stdin closes.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::pulse::{self, Verdict, COOKIE_LEN, DESCRIPTOR};

/// Clients served at once; more are closed at once.
const MAX_CLIENTS: usize = 32;
/// The relay's socket, client configuration and dummy cookie in the share
/// directory (the sandbox's `/tmp/.pallium`).
pub(crate) const SOCKET: &str = "pulse-native";
pub(crate) const CLIENT_CONF: &str = "pulse-client.conf";
pub(crate) const COOKIE: &str = "pulse-cookie";

/// A byte relay cannot carry shared memory or memfd descriptors; without
/// this, clients fail with "Expected 1 memfd fd".
const CLIENT_CONF_TEXT: &str =
    "# pallium: the audio relay carries bytes only\nautospawn = no\nenable-shm = no\nenable-memfd = no\n";

/// The running relay: it ends when this is dropped (its stdin closes), and
/// is killed too.
pub(crate) struct Relay {
    child: Child,
}

impl Drop for Relay {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The caller's PulseAudio server socket, found as libpulse finds it.
pub(crate) fn find_server() -> Result<PathBuf> {
    if let Ok(s) = std::env::var("PULSE_SERVER") {
        // A list of servers, each perhaps prefixed by "{machine-id}".
        for entry in s.split_whitespace() {
            let entry = entry.rsplit_once('}').map_or(entry, |(_, e)| e);
            let path = entry.strip_prefix("unix:").unwrap_or(entry);
            if path.starts_with('/') {
                return Ok(path.into());
            }
        }
        bail!("sandbox.audio: PULSE_SERVER={s:?} names no Unix socket, and the relay reaches the server through one only (unset it or name the socket, e.g. unix:/run/user/1000/pulse/native)");
    }
    let runtime = std::env::var("XDG_RUNTIME_DIR")
        .unwrap_or_else(|_| format!("/run/user/{}", nix::unistd::getuid()));
    Ok(Path::new(&runtime).join("pulse/native"))
}

/// The caller's cookie (`PULSE_COOKIE`, `~/.config/pulse/cookie`,
/// `~/.pulse-cookie`), if any.
fn read_cookie() -> Option<Vec<u8>> {
    let home = std::env::var("HOME").unwrap_or_default();
    let candidates = [
        std::env::var("PULSE_COOKIE").ok(),
        Some(format!("{home}/.config/pulse/cookie")),
        Some(format!("{home}/.pulse-cookie")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find_map(|p| std::fs::read(p).ok())
        .filter(|c| c.len() == COOKIE_LEN)
}

/// Prepare the share directory's audio files and start the relay on its
/// socket (run as the caller, before the supervisor drops its identity).
pub(crate) fn start(share: &Path, microphone: bool) -> Result<Relay> {
    use std::os::unix::fs::PermissionsExt;
    let server = find_server()?;
    let is_socket = {
        use std::os::unix::fs::FileTypeExt;
        std::fs::metadata(&server).is_ok_and(|m| m.file_type().is_socket())
    };
    if !is_socket {
        bail!(
            "sandbox.audio: no PulseAudio server at {} (start pulseaudio or pipewire-pulse, or set PULSE_SERVER)",
            server.display()
        );
    }
    let conf = share.join(CLIENT_CONF);
    std::fs::write(&conf, CLIENT_CONF_TEXT)
        .with_context(|| format!("writing {}", conf.display()))?;
    // The application's own cookie is a dummy: the relay puts the caller's
    // into AUTH, so the sandbox never holds it.
    let cookie = share.join(COOKIE);
    std::fs::write(&cookie, [0u8; COOKIE_LEN])
        .with_context(|| format!("writing {}", cookie.display()))?;
    for f in [&conf, &cookie] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644))?;
    }
    let path = share.join(SOCKET);
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    // Root mode: the application is another uid. Only the sandbox sees the
    // directory.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
    let exe = std::fs::read_link("/proc/self/exe").context("finding our own executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("audio-relay").arg("--server").arg(&server);
    if microphone {
        cmd.arg("--microphone");
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let fd: OwnedFd = listener.into();
    crate::sys::prepare_helper(&mut cmd, fd.as_raw_fd(), nix::sys::signal::Signal::SIGKILL);
    let child = cmd.spawn().context("starting the audio relay")?;
    Ok(Relay { child })
}

/// `pallium audio-relay`: serve the listener on fd 3 until stdin closes.
pub(crate) fn serve(server: PathBuf, microphone: bool) -> Result<i32> {
    // As the caller (root mode: uid 0), but with no capability at all.
    proto::policy::drop_to(proto::policy::Role::Supervisor)
        .context("audio relay: dropping capabilities")?;
    nix::sys::prctl::set_dumpable(false).context("audio relay: PR_SET_DUMPABLE")?;
    let listener = UnixListener::from(crate::sys::inherited_fd3());
    let cookie: Option<[u8; COOKIE_LEN]> = read_cookie().and_then(|c| c.try_into().ok());
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stdin = std::io::stdin();
    loop {
        let mut fds = [
            PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("audio relay: poll"),
        }
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            // The supervisor's pipe: EOF (or anything) ends us.
            return Ok(0);
        }
        if fds[1].revents().is_none_or(|r| r.is_empty()) {
            continue;
        }
        let Ok((client, _)) = listener.accept() else {
            continue;
        };
        use std::sync::atomic::Ordering;
        if active.load(Ordering::SeqCst) >= MAX_CLIENTS {
            tracing::warn!("audio relay: {MAX_CLIENTS} clients already; refusing another");
            continue;
        }
        let upstream = match UnixStream::connect(&server) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("audio relay: connecting to {}: {e}", server.display());
                continue;
            }
        };
        active.fetch_add(1, Ordering::SeqCst);
        let active = active.clone();
        std::thread::spawn(move || {
            relay(client, upstream, microphone, cookie);
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// One client: frames both ways until either side ends. The server's
/// frames are shown to the client's [`pulse::Filter`] before the client
/// sees them, so it knows the client's streams before the client does.
fn relay(
    client: UnixStream,
    upstream: UnixStream,
    microphone: bool,
    cookie: Option<[u8; COOKIE_LEN]>,
) {
    let (Ok(client_r), Ok(upstream_r)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let filter = Arc::new(Mutex::new(pulse::Filter::new(microphone, cookie)));
    let to_client = Arc::new(Mutex::new(client));
    let down = {
        let to_client = to_client.clone();
        let filter = filter.clone();
        std::thread::spawn(move || {
            let mut from = upstream_r;
            while let Some(frame) = read_frame(&mut from) {
                let channel = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
                filter
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .server(channel, &frame[DESCRIPTOR..]);
                let mut w = to_client.lock().unwrap_or_else(|e| e.into_inner());
                if w.write_all(&frame).is_err() {
                    break;
                }
            }
            let w = to_client.lock().unwrap_or_else(|e| e.into_inner());
            let _ = w.shutdown(std::net::Shutdown::Both);
        })
    };
    let mut from = client_r;
    let mut up = upstream;
    while let Some(mut frame) = read_frame(&mut from) {
        let channel = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let verdict = filter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .client(channel, &mut frame[DESCRIPTOR..]);
        let out = match verdict {
            Verdict::Forward => up.write_all(&frame),
            Verdict::Authenticate => send_with_credentials(&mut up, &frame),
            Verdict::Refuse(reply) => {
                tracing::info!("audio relay: refused a command from the sandbox");
                let mut w = to_client.lock().unwrap_or_else(|e| e.into_inner());
                w.write_all(&reply)
            }
        };
        if out.is_err() {
            break;
        }
    }
    let _ = up.shutdown(std::net::Shutdown::Both);
    let _ = down.join();
}

/// `frame` to the server, its first bytes carrying our credentials
/// (`SCM_CREDENTIALS`).
fn send_with_credentials(up: &mut UnixStream, frame: &[u8]) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr, UnixCredentials};
    let creds = UnixCredentials::new();
    let sent = sendmsg::<UnixAddr>(
        up.as_raw_fd(),
        &[std::io::IoSlice::new(frame)],
        &[ControlMessage::ScmCredentials(&creds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(std::io::Error::from)?;
    up.write_all(&frame[sent..])
}

/// One whole frame (descriptor and payload); None at EOF, on an error or a
/// frame over the size limit.
fn read_frame(from: &mut UnixStream) -> Option<Vec<u8>> {
    let mut d = [0u8; DESCRIPTOR];
    from.read_exact(&mut d).ok()?;
    let desc = pulse::descriptor(&d)?;
    let mut frame = Vec::with_capacity(DESCRIPTOR + desc.length);
    frame.extend_from_slice(&d);
    frame.resize(DESCRIPTOR + desc.length, 0);
    from.read_exact(&mut frame[DESCRIPTOR..]).ok()?;
    Some(frame)
}

/// The environment the application gets for the relay (paths in the
/// sandbox, below `share_in_sandbox`).
pub(crate) fn env(share_in_sandbox: &str) -> Vec<(String, String)> {
    vec![
        (
            "PULSE_SERVER".into(),
            format!("unix:{share_in_sandbox}/{SOCKET}"),
        ),
        (
            "PULSE_CLIENTCONFIG".into(),
            format!("{share_in_sandbox}/{CLIENT_CONF}"),
        ),
        (
            "PULSE_COOKIE".into(),
            format!("{share_in_sandbox}/{COOKIE}"),
        ),
    ]
}
