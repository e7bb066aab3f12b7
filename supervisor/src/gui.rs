//! `sandbox.gui`: a nested Xpra server per session and a client showing its
//! windows on the caller's display.
//!
//! Started by the supervisor once it has dropped its identity (rootless the
//! caller, root mode the session's service uid: no more privilege than the
//! caller), in the network namespace pallium started in — Xpra's sockets
//! are pathname sockets in the session's directory, and its X server
//! listens on no TCP port. The sandbox sees the X server's one pathname
//! socket, bound at `/tmp/.X11-unix/XN` (its `DISPLAY` is `:N`), and an
//! Xauthority file with the server's cookie; it cannot reach X's abstract
//! socket, which belongs to the network namespace, nor any other display.
//! Both processes get SIGTERM if the supervisor dies (Xpra then stops its X
//! server) and are stopped with the session.

#![forbid(unsafe_code)]

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::xauth;

/// Where X servers put their sockets.
const X11_DIR: &str = "/tmp/.X11-unix";
/// How long Xpra may take to bring its display up (≈ 2 s on an idle
/// machine; far more under load).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts on different displays when another server took ours first.
const ATTEMPTS: u32 = 4;

/// The caller's display, read before the supervisor drops its identity.
#[derive(Debug, Clone)]
pub(crate) struct Outer {
    /// `$DISPLAY`.
    pub(crate) display: String,
    /// The caller's Xauthority file's contents, if any (root mode: a copy the
    /// service uid can read is written for the client).
    pub(crate) xauthority: Option<Vec<u8>>,
    pub(crate) xauthority_path: Option<PathBuf>,
}

impl Outer {
    /// The caller's `$DISPLAY` and Xauthority, or why the GUI cannot start.
    pub(crate) fn read() -> Result<Outer> {
        let display = std::env::var("DISPLAY")
            .ok()
            .filter(|d| !d.is_empty())
            .ok_or_else(|| anyhow!("sandbox.gui: $DISPLAY is not set, so there is no desktop to show the sandbox's windows on (run pallium from a graphical session, or set gui to false)"))?;
        let path = std::env::var_os("XAUTHORITY")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".Xauthority")));
        let xauthority = path.as_ref().and_then(|p| std::fs::read(p).ok());
        Ok(Outer {
            display,
            xauthority,
            xauthority_path: path,
        })
    }

    /// The display number of a local `$DISPLAY` (`:N`, `:N.S`, `unix:N`).
    pub(crate) fn local_number(&self) -> Option<u32> {
        let rest = self
            .display
            .strip_prefix("unix:")
            .or_else(|| self.display.strip_prefix(':'))?;
        rest.split('.').next()?.parse().ok()
    }
}

/// A nested Xpra server on its way up.
pub(crate) struct Xpra {
    dir: PathBuf,
    display: u32,
    server: Child,
    client: Option<Child>,
    started: Instant,
    attempts: u32,
    quiet: bool,
}

/// What the sandbox gets of a running nested display.
pub(crate) struct Display {
    pub(crate) number: u32,
    /// The display's socket on the host.
    pub(crate) socket: PathBuf,
    /// The sandbox's Xauthority file's contents.
    pub(crate) xauthority: Vec<u8>,
}

impl Xpra {
    /// Start the server in `dir` (the session's private Xpra directory,
    /// created here). Returns at once; [`Xpra::ready`] waits.
    pub(crate) fn start(dir: &Path, quiet: bool) -> Result<Xpra> {
        if proto::runtime::find_program("xpra").is_none() {
            bail!("sandbox.gui needs xpra, which is not installed: apt-get install xpra python3-pil python3-gi-cairo");
        }
        // Root mode: prepared by crate::desktop (root's, our group's).
        if !dir.exists() {
            std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let display = free_display(std::process::id())
            .ok_or_else(|| anyhow!("sandbox.gui: no free X display number between 100 and 999"))?;
        let server = spawn_server(dir, display, quiet)?;
        Ok(Xpra {
            dir: dir.into(),
            display,
            server,
            client: None,
            started: Instant::now(),
            attempts: 1,
            quiet,
        })
    }

    /// Wait until the server's display is up (its socket, its cookie and
    /// Xpra's own socket), then attach the client to the caller's display.
    pub(crate) fn ready(&mut self, outer: &Outer, root_mode: bool) -> Result<Display> {
        let display = self.wait_display()?;
        let outer_auth = match (&outer.xauthority, root_mode) {
            // Root mode: the caller's file may be closed to our service uid.
            (Some(bytes), true) => {
                let p = self.dir.join("outer.Xauthority");
                write_private(&p, bytes)?;
                Some(p)
            }
            _ => outer.xauthority_path.clone(),
        };
        let mut cmd = xpra(&self.dir, "attach", self.display);
        cmd.args(CLIENT_OPTIONS).env("DISPLAY", &outer.display);
        if let Some(p) = outer_auth {
            cmd.env("XAUTHORITY", p);
        }
        self.client = Some(spawn(cmd, &self.dir.join("client.log"), self.quiet)?);
        Ok(display)
    }

    fn wait_display(&mut self) -> Result<Display> {
        let auth = self.dir.join("Xauthority");
        loop {
            if let Some(status) = self.server.try_wait()? {
                if self.attempts >= ATTEMPTS {
                    bail!(
                        "sandbox.gui: xpra ended ({status}) before its display :{} was up{}",
                        self.display,
                        log_tail(&self.dir.join("server.log"))
                    );
                }
                // Most likely another X server took the display first.
                tracing::debug!(
                    "xpra on :{} ended ({status}); trying another display",
                    self.display
                );
                self.attempts += 1;
                self.display = free_display(std::process::id() + self.attempts * 97)
                    .ok_or_else(|| anyhow!("sandbox.gui: no free X display number"))?;
                let _ = std::fs::remove_file(&auth);
                self.server = spawn_server(&self.dir, self.display, self.quiet)?;
            }
            let socket = Path::new(X11_DIR).join(format!("X{}", self.display));
            let cookie = std::fs::read(&auth)
                .ok()
                .and_then(|f| xauth::cookie_for(&f, self.display));
            if let (true, Some(cookie), true) = (our_socket(&socket), cookie, self.xpra_socket()) {
                return Ok(Display {
                    number: self.display,
                    socket,
                    xauthority: xauth::wild_file(self.display, &cookie),
                });
            }
            if self.started.elapsed() > START_TIMEOUT {
                bail!(
                    "sandbox.gui: xpra's display :{} was not up after {} s{}",
                    self.display,
                    START_TIMEOUT.as_secs(),
                    log_tail(&self.dir.join("server.log"))
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Xpra's own socket (for the client) is there.
    fn xpra_socket(&self) -> bool {
        let suffix = format!("-{}", self.display);
        std::fs::read_dir(&self.dir).is_ok_and(|d| {
            d.flatten().any(|e| {
                e.file_name().to_string_lossy().ends_with(&suffix)
                    && e.file_type().is_ok_and(|t| t.is_socket())
            })
        })
    }
}

impl Drop for Xpra {
    /// SIGTERM to both (Xpra stops its X server), up to 3 s for the server,
    /// then SIGKILL to what is left, the X server included.
    fn drop(&mut self) {
        let xvfb = std::fs::read_to_string(format!("/tmp/.X{}-lock", self.display))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        for c in self.client.iter().chain([&self.server]) {
            let _ = killpg(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.server.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for c in self.client.iter_mut().chain([&mut self.server]) {
            let _ = killpg(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
            let _ = c.wait();
        }
        // Xpra's X server runs in a session of its own.
        if let Some(pid) = xvfb.filter(|p| *p > 0) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if comm.starts_with("Xvfb") && comm.contains(&format!(":{}", self.display)) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// Server options: no network listener, no session bus, no sound, no
/// printing, file transfer, URL or file opening on the host, no systemd.
const SERVER_OPTIONS: &[&str] = &[
    "--daemon=no",
    "--attach=no",
    "--mdns=no",
    "--html=off",
    "--dbus-launch=no",
    "--dbus-control=no",
    "--dbus-proxy=no",
    "--systemd-run=no",
    "--start-via-proxy=no",
    "--pulseaudio=no",
    "--speaker=off",
    "--microphone=off",
    "--webcam=no",
    "--printing=no",
    "--file-transfer=no",
    "--open-files=no",
    "--open-url=no",
    "--forward-xdg-open=no",
    "--notifications=no",
    "--system-tray=no",
    "--exit-with-children=no",
];

/// The X server Xpra starts (`:N` is appended), via `setpriv` for a
/// parent-death signal.
const XVFB: &str = "setpriv --pdeathsig TERM -- Xvfb +extension GLX +extension Composite -screen 0 5760x2560x24+32 -dpi 96 -nolisten tcp -noreset -auth $XAUTHORITY";

/// Client options: the window titles say where a window comes from.
const CLIENT_OPTIONS: &[&str] = &[
    "--mdns=no",
    "--tray=no",
    "--notifications=no",
    "--speaker=off",
    "--microphone=off",
    "--webcam=no",
    "--printing=no",
    "--file-transfer=no",
    "--open-files=no",
    "--open-url=no",
    "--opengl=no",
    "--title=@title@ (pallium)",
];

/// `xpra SUBCOMMAND :display` with its state in `dir`: sockets, logs, home
/// and runtime directory (nothing of the caller's `~/.xpra`), no session
/// bus.
fn xpra(dir: &Path, subcommand: &str, display: u32) -> Command {
    let d = dir.display();
    let mut cmd = Command::new("xpra");
    cmd.arg(subcommand)
        .arg(format!(":{display}"))
        .arg(format!("--socket-dir={d}"))
        .arg(format!("--socket-dirs={d}"))
        // Xpra's built-in defaults and our options, no configuration
        // files: Debian's runs `/etc/X11/Xsession true` on the nested
        // display (the caller's session scripts, outside the sandbox).
        .env("XPRA_SYSTEM_CONF_DIRS", dir)
        .env("XPRA_USER_CONF_DIRS", dir)
        .env("HOME", dir)
        .env("XDG_RUNTIME_DIR", dir)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("DISPLAY")
        .env_remove("XAUTHORITY");
    let uid = nix::unistd::getuid();
    if !matches!(nix::unistd::User::from_uid(uid), Ok(Some(_))) {
        // Root mode's service uid has no passwd entry; Python's
        // getpass.getuser(), which Xpra asks for every connection, takes
        // these first.
        let name = format!("pallium-{uid}");
        cmd.env("USER", &name).env("LOGNAME", &name);
    }
    cmd
}

fn spawn_server(dir: &Path, display: u32, quiet: bool) -> Result<Child> {
    let auth = dir.join("Xauthority");
    // Xpra writes the display's cookie into the file XAUTHORITY names if it
    // exists: ours, not the caller's ~/.Xauthority.
    write_private(&auth, b"")?;
    let mut cmd = xpra(dir, "start", display);
    cmd.args(SERVER_OPTIONS)
        .arg(format!("--log-dir={}", dir.display()))
        // Xpra's own X server command (Debian's), but dying with Xpra:
        // after a kill -9 of pallium, Xpra gets SIGTERM yet may end without
        // stopping its X server, which runs in a session of its own.
        .arg(format!("--xvfb={XVFB}"))
        .env("XAUTHORITY", &auth);
    spawn(cmd, &dir.join("server.log"), quiet)
}

fn spawn(mut cmd: Command, log: &Path, quiet: bool) -> Result<Child> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let _ = quiet; // Xpra's output goes to its log either way; errors quote it.
    crate::sys::prepare_desktop_child(&mut cmd);
    cmd.spawn().context("starting xpra")
}

/// A display number in 100…999 with neither a socket, a lock file nor an
/// abstract socket in our network namespace, starting from `seed`.
fn free_display(seed: u32) -> Option<u32> {
    let abstract_sockets = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    (0..900).map(|i| 100 + (seed + i) % 900).find(|n| {
        !Path::new(X11_DIR).join(format!("X{n}")).exists()
            && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
            && !abstract_sockets.contains(&format!("@{X11_DIR}/X{n}\n"))
    })
}

/// `path` is a socket we own (the X server runs as us; `/tmp/.X11-unix` is
/// sticky, so nobody else can replace it once it is there).
fn our_socket(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .is_ok_and(|m| m.file_type().is_socket() && m.uid() == nix::unistd::geteuid().as_raw())
}

/// Write `bytes` to a new file only we may read.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// The last lines of xpra's log, for an error message.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail: Vec<&str> = lines.into_iter().rev().collect();
    format!("; xpra said: {}", tail.join(" / "))
}
