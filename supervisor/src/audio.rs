//! `sandbox.audio`: a PulseAudio relay per session. The supervisor binds a
//! socket in the session's share directory (the sandbox's `/tmp/.pallium`,
//! visible to nothing else: every other view hides pallium's runtime
//! directory) and starts `pallium audio-relay` on it, as the caller, before
//! it drops its own identity. The relay connects each client to the
//! caller's server as a PulseAudio client finds it (`PULSE_SERVER`, then
//! `$XDG_RUNTIME_DIR/pulse/native`; PipeWire's pulse server alike), relays
//! whole frames and refuses what `crate::pulse` refuses; the daemon sees the
//! relay's uid. It ends when the supervisor's control channel (its stdin)
//! closes. Under gVisor, whose host Unix sockets refuse libpulse's
//! credentials, the sandboxer makes a TCP listener on the application
//! namespace's 127.0.0.1 and the supervisor hands it to the relay over that
//! channel; the application gets `PULSE_SERVER=tcp:127.0.0.1:PORT`.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use proto::Channel;
use serde::{Deserialize, Serialize};

use proto::pulse::{self, Verdict, COOKIE_LEN, DESCRIPTOR};

/// How long the server's frames may wait for a client that does not read
/// them before its connection ends.
const STALL: Duration = Duration::from_secs(10);
/// Clients served at once; more are closed at once (a browser uses a few;
/// the server's own limit is shared with every other application).
const MAX_CLIENTS: usize = 16;
/// The relay's socket, client configuration and dummy cookie in the share
/// directory (the sandbox's `/tmp/.pallium`).
pub(crate) const SOCKET: &str = "pulse-native";
pub(crate) const CLIENT_CONF: &str = "pulse-client.conf";
pub(crate) const COOKIE: &str = "pulse-cookie";

/// A byte relay cannot carry shared memory or memfd descriptors; without
/// this, clients fail with "Expected 1 memfd fd".
const CLIENT_CONF_TEXT: &str =
    "# pallium: the audio relay carries bytes only\nautospawn = no\nenable-shm = no\nenable-memfd = no\n";

/// What the supervisor tells its relay on the control channel.
#[derive(Debug, Serialize, Deserialize)]
enum Control {
    /// Serve this listening TCP socket too (`sandbox.audio` under gVisor:
    /// one on the application namespace's 127.0.0.1, made by the sandboxer).
    Listen(proto::Fd),
}

/// The running relay: it ends when this is dropped (its control channel
/// closes), and is killed too.
pub(crate) struct Relay {
    child: Child,
    control: Option<Channel<Control, Control>>,
}

impl Relay {
    /// Serve `listener`, a listening TCP socket, too; its port (on
    /// 127.0.0.1, where the sandbox reaches it).
    pub(crate) fn listen_tcp(&mut self, listener: OwnedFd) -> Result<u16> {
        let addr = std::net::TcpListener::from(listener.try_clone()?)
            .local_addr()
            .context("the audio relay's TCP listener")?;
        if !addr.ip().is_loopback() {
            bail!("the sandboxer's audio listener is on {addr}, not on the loopback");
        }
        let port = addr.port();
        self.control
            .as_ref()
            .context("the audio relay has ended")?
            .send(Control::Listen(proto::Fd(listener)))
            .context("handing the audio relay its TCP listener")?;
        Ok(port)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        drop(self.control.take());
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
/// `hostname`, `user`: the names the sandbox goes by (its host name, its
/// virtual user), which clients are told instead of the server's.
pub(crate) fn start(
    share: &Path,
    microphone: bool,
    hostname: &str,
    user: Option<&str>,
) -> Result<Relay> {
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
    cmd.arg("--hostname").arg(hostname);
    if let Some(user) = user {
        cmd.arg("--user").arg(user);
    }
    // The control channel is the relay's stdin: its end, the relay's.
    let (control, theirs) = Channel::pair().context("the audio relay's control channel")?;
    cmd.stdin(Stdio::from(theirs))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let fd: OwnedFd = listener.into();
    crate::sys::prepare_helper(&mut cmd, fd.as_raw_fd(), nix::sys::signal::Signal::SIGKILL);
    let child = cmd.spawn().context("starting the audio relay")?;
    Ok(Relay {
        child,
        control: Some(control),
    })
}

/// A listener the relay serves.
enum Listener {
    /// The share directory's socket (fd 3).
    Unix(UnixListener),
    /// `sandbox.audio` under gVisor: TCP on the application's loopback.
    Tcp(std::net::TcpListener),
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Unix(l) => l.as_fd(),
            Listener::Tcp(l) => l.as_fd(),
        }
    }
}

/// `pallium audio-relay`: serve the listener on fd 3 (and those the
/// control channel on stdin hands over) until the channel closes.
pub(crate) fn serve(args: crate::cli::AudioRelayArgs) -> Result<i32> {
    let server = args.server;
    // As the caller (root mode: uid 0), but with no capability at all.
    proto::policy::drop_to(proto::policy::Role::Supervisor)
        .context("audio relay: dropping capabilities")?;
    nix::sys::prctl::set_dumpable(false).context("audio relay: PR_SET_DUMPABLE")?;
    let mut listeners = vec![Listener::Unix(UnixListener::from(
        crate::sys::inherited_fd3(),
    ))];
    let mut control: Channel<Control, Control> = Channel::new(
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .context("audio relay: the control channel")?,
    );
    let policy = Policy {
        microphone: args.microphone,
        cookie: read_cookie().and_then(|c| c.try_into().ok()),
        user: args.user,
        hostname: args.hostname,
    };
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let mut fds: Vec<PollFd> = std::iter::once(control.fd())
            .chain(listeners.iter().map(|l| l.as_fd()))
            .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("audio relay: poll"),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            match control.recv() {
                Ok(Control::Listen(fd)) => {
                    listeners.push(Listener::Tcp(std::net::TcpListener::from(fd.0)));
                }
                // The supervisor closed it (or sent what we cannot read): end.
                Err(_) => return Ok(0),
            }
        }
        for (listener, _) in listeners.iter().zip(&ready[1..]).filter(|(_, r)| **r) {
            let client = match listener {
                Listener::Unix(l) => l.accept().map(|(c, _)| Client::Unix(c)),
                Listener::Tcp(l) => l.accept().map(|(c, _)| {
                    let _ = c.set_nodelay(true);
                    Client::Tcp(c)
                }),
            };
            let Ok(client) = client else {
                continue;
            };
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
            let slot = Slot::take(&active);
            let filter = policy.filter();
            let spawned = std::thread::Builder::new().spawn(move || {
                let _slot = slot;
                match client {
                    Client::Unix(c) => relay(c, upstream, filter),
                    Client::Tcp(c) => relay(c, upstream, filter),
                }
            });
            if let Err(e) = spawned {
                tracing::warn!("audio relay: no thread for a client: {e}");
            }
        }
    }
}

/// What every client's filter is made from.
struct Policy {
    microphone: bool,
    cookie: Option<[u8; COOKIE_LEN]>,
    user: Option<String>,
    hostname: String,
}

impl Policy {
    fn filter(&self) -> pulse::Filter {
        pulse::Filter::new(self.microphone, self.cookie)
            .with_identity(self.user.clone(), self.hostname.clone())
    }
}

/// One of the [`MAX_CLIENTS`] places, given back when dropped (also when
/// the client's thread could not start, or panicked).
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(active: &Arc<AtomicUsize>) -> Slot {
        active.fetch_add(1, Ordering::SeqCst);
        Slot(active.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An accepted client.
enum Client {
    Unix(UnixStream),
    Tcp(std::net::TcpStream),
}

/// A client's connection, either kind.
trait Conn: Read + Write + Send + Sized + 'static {
    fn dup(&self) -> std::io::Result<Self>;
    fn end(&self);
    /// Writes to it fail after `d` without progress.
    fn stall_after(&self, d: Duration) -> std::io::Result<()>;
}

impl Conn for UnixStream {
    fn dup(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
    fn end(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
    fn stall_after(&self, d: Duration) -> std::io::Result<()> {
        self.set_write_timeout(Some(d))
    }
}

impl Conn for std::net::TcpStream {
    fn dup(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
    fn end(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
    fn stall_after(&self, d: Duration) -> std::io::Result<()> {
        self.set_write_timeout(Some(d))
    }
}

/// One client: frames both ways until either side ends. The server's
/// frames are shown to the client's [`pulse::Filter`] before the client
/// sees them, so it knows the client's streams before the client does.
fn relay<C: Conn>(client: C, upstream: UnixStream, filter: pulse::Filter) {
    let (Ok(client_r), Ok(closer), Ok(upstream_r)) =
        (client.dup(), client.dup(), upstream.try_clone())
    else {
        return;
    };
    if client.stall_after(STALL).is_err() {
        return;
    }
    // While a write to the client is under way: when it began (ms since
    // `start`, plus one); 0 when none is.
    let start = Instant::now();
    let writing = Arc::new(AtomicU64::new(0));
    let filter = Arc::new(Mutex::new(filter));
    let to_client = Arc::new(Mutex::new(client));
    let down = {
        let to_client = to_client.clone();
        let filter = filter.clone();
        let writing = writing.clone();
        std::thread::Builder::new().spawn(move || {
            let mut from = upstream_r;
            while let Some(mut frame) = read_frame(&mut from) {
                let channel = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
                let changed = filter
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .server(channel, &frame[DESCRIPTOR..]);
                if let Some(payload) = changed {
                    frame = pulse::frame(channel, &payload);
                }
                let mut w = to_client.lock().unwrap_or_else(|e| e.into_inner());
                writing.store(millis_since(start) + 1, Ordering::Relaxed);
                let sent = w.write_all(&frame);
                writing.store(0, Ordering::Relaxed);
                if sent.is_err() {
                    break;
                }
            }
            to_client.lock().unwrap_or_else(|e| e.into_inner()).end();
        })
    };
    let Ok(down) = down else {
        return;
    };
    let mut from = client_r;
    let mut up = upstream;
    while let Some(mut frame) = read_frame(&mut from) {
        if !keeps_up(&writing, start, &down) {
            break;
        }
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
            Verdict::Close => {
                tracing::warn!("audio relay: a client left too many commands unanswered; closed");
                break;
            }
        };
        if out.is_err() {
            break;
        }
    }
    closer.end();
    let _ = up.shutdown(std::net::Shutdown::Both);
    let _ = down.join();
}

/// Milliseconds since `start`.
fn millis_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
}

/// Whether the client reads what the server sends it: false once a write
/// to it has stalled until the connection ended ([`STALL`]). While a write
/// is stalled the client's own frames wait here, so a client that never
/// reads cannot have the server queue answers and notices without end.
fn keeps_up(writing: &AtomicU64, start: Instant, down: &std::thread::JoinHandle<()>) -> bool {
    loop {
        let since = writing.load(Ordering::Relaxed);
        if since == 0 || millis_since(start) + 1 < since + 50 {
            return true;
        }
        if down.is_finished() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
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
fn read_frame(from: &mut impl Read) -> Option<Vec<u8>> {
    let mut d = [0u8; DESCRIPTOR];
    from.read_exact(&mut d).ok()?;
    let desc = pulse::descriptor(&d)?;
    // Grown as bytes arrive: a length alone commits no memory.
    let mut frame = Vec::with_capacity(DESCRIPTOR + desc.length.min(64 << 10));
    frame.extend_from_slice(&d);
    let want = DESCRIPTOR + desc.length;
    from.take(desc.length as u64).read_to_end(&mut frame).ok()?;
    (frame.len() == want).then_some(frame)
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
