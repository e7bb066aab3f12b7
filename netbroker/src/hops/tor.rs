//! `tor`: Debian's `tor` started in N(i−1) with its own data directory (as an
//! unprivileged user in root mode), watched through its control socket until
//! it has a circuit (bootstrap percentage reported as progress), then served
//! into Ni by tun2socks as a SOCKS5 proxy. Names are resolved by Tor (virtual
//! DNS, SOCKS5 host names), so `.onion` addresses work; `onion_support:
//! false` answers `.onion` names with NXDOMAIN, and `builtin_dns: false`
//! leaves the application without DNS (the original's behaviour) unless the
//! hop has a `dns` list, which then goes through Tor over TCP.
//!
//! The control connection is one end of a socketpair handed to tor as
//! `__OwningControllerFD`: already authenticated (no cookie file or password
//! that tor's user would own and the netbroker could not read), private to
//! the two processes, and tor exits when it closes — so the hop stops tor by
//! `SIGNAL HALT`, or simply by going away.

#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use proto::broker::ProcEntry;
use proto::profile::{HopKind, Tor};

use super::daemon::{self, Daemon, Halt};
use super::proxy::Names;
use super::{HopCx, HopError, HopType, RunningHop};

pub(super) struct TorHop;

impl HopType for TorHop {
    fn start(&self, cx: &mut HopCx<'_>) -> Result<Box<dyn RunningHop>, HopError> {
        let HopKind::Tor(tor) = &cx.hop.kind else {
            return Err(HopError::Unsupported(cx.hop.kind.name()));
        };
        let tor = tor.clone();
        let exe = daemon::find_tool(cx, "tor", "tor")?;
        let fallback = if nix::unistd::User::from_name("debian-tor")
            .ok()
            .flatten()
            .is_some()
        {
            "debian-tor"
        } else {
            "nobody"
        };
        let place = daemon::placement(cx, tor.user.as_deref(), fallback, false)?;
        let data = cx.work_dir.join("tor");
        private_dir(cx.work_dir, &data, place.user)?;
        // Its SOCKS port: a unix socket only the hop's engine may reach.
        let path = daemon::socket_dir(cx, place.user)?.join("socks");
        let socks = daemon::Listener::Unix(path.clone());
        let (ours, theirs) = UnixStream::pair()
            .map_err(|e| HopError::Failed(format!("create tor's control socketpair: {e}")))?;
        let tor_user = place.user;
        let mut place = place;
        place.inherit = Some((theirs.as_raw_fd(), CONTROL_FD));
        let mut cmd = Command::new(&exe);
        cmd.args(tor_args(&data, &path, place.user.is_some(), &tor));
        (cx.progress)(format!("starting tor ({})", exe.display()));
        let spawned = daemon::spawn(cmd, place, &cx.work_dir.join("tor.log"), "hop:tor");
        drop(theirs);
        let mut daemon = spawned?;
        let control = Control::new(ours)
            .map_err(|e| HopError::Failed(format!("tor's control socket: {e}")))?;
        let mut control = wait_circuit(cx, &mut daemon, control, &tor)?;
        // Root mode the netbroker may not even look up the socket's name
        // (its directory is tor's and the engine's): tor says it listens.
        let listeners = control.getinfo("net/listeners/socks").unwrap_or_default();
        if !listeners.contains(&path.display().to_string()) {
            return Err(HopError::Failed(format!(
                "tor did not open its SOCKS socket {socks} (it lists {listeners:?}): {}",
                daemon.tail()
            )));
        }
        let names = if tor.builtin_dns {
            Names::Remote {
                onion: tor.onion_support,
            }
        } else {
            if cx.hop.options.dns.as_ref().is_none_or(Vec::is_empty) {
                (cx.progress)(
                    "builtin_dns is off and the hop has no \"dns\" list: \
                     the application gets no DNS (names do not resolve)"
                        .into(),
                );
            }
            Names::Off
        };
        // Before the engine: its socket is bound and the service's
        // descriptor published when the chain is ready, so the address
        // pallium shows answers.
        let onion = match tor.onion_service {
            Some(service) => Some(onion::publish(
                cx,
                &mut control,
                service,
                tor_user,
                &daemon,
                tor.timeout,
            )?),
            None => None,
        };
        let mut hop = daemon::serve(cx, daemon, &socks, "tor".into(), names)?;
        let mut control = control;
        // Exit at once (SHUTDOWN would wait for ShutdownWaitLength). The
        // onion service goes with this connection, or with tor.
        hop.halt = Some(Halt(Box::new(move || {
            let _ = control.command("SIGNAL HALT");
        })));
        Ok(Box::new(TorRunning { hop, onion }))
    }
}

/// A running tor hop: the daemon hop, and its onion service until the
/// netbroker takes the socket for the forwarder.
#[derive(Debug)]
struct TorRunning {
    hop: daemon::DaemonHop,
    onion: Option<onion::Published>,
}

impl RunningHop for TorRunning {
    fn resolv_conf(&self) -> String {
        self.hop.resolv_conf()
    }
    fn resolvers(&self) -> Vec<std::net::SocketAddr> {
        self.hop.resolvers()
    }
    fn describe(&self) -> String {
        match &self.onion {
            Some(o) => format!("{}; onion service {}", self.hop.describe(), o.describe()),
            None => self.hop.describe(),
        }
    }
    fn pids(&self) -> Vec<ProcEntry> {
        self.hop.pids()
    }
    fn exited(&mut self) -> Option<String> {
        self.hop.exited()
    }
    fn onion(&mut self) -> Option<super::Onion> {
        self.onion.as_mut().and_then(onion::Published::take)
    }
}

/// The descriptor number tor gets its control connection on.
const CONTROL_FD: i32 = 3;

/// tor's command line: no torrc at all (neither the system's nor Debian's
/// defaults), everything explicit, the user's `tor_args` last so they win.
/// `socks`: its SOCKS socket's path; `shared`: root mode, where tor's user
/// and the engine's differ: the socket is made 0666 (`WorldWritable`, with
/// which tor also skips its own check of the directory, which would insist
/// on a group of tor's) and its directory (tor's user, the engine's group,
/// mode 2750) keeps everyone else out.
fn tor_args(data: &Path, socks: &Path, shared: bool, tor: &Tor) -> Vec<String> {
    let none = data.join("no-torrc").display().to_string();
    let d = data.display().to_string();
    let flags = if shared { " WorldWritable" } else { "" };
    let socks = format!("unix:\"{}\"{flags}", socks.display());
    let mut args: Vec<String> = [
        "-f",
        &none,
        "--defaults-torrc",
        &none,
        "--ignore-missing-torrc",
        "--DataDirectory",
        &d,
        "--__OwningControllerFD",
        &CONTROL_FD.to_string(),
        "--SocksPort",
        &socks,
        "--CircuitBuildTimeout",
        &tor.circuit_build_timeout.as_secs().max(10).to_string(),
        "--Log",
        "notice stdout",
        "--RunAsDaemon",
        "0",
        "--AvoidDiskWrites",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(tor.tor_args.iter().cloned());
    args
}

/// The data directory: 0700, owned by tor's user; its parent traversable.
fn private_dir(parent: &Path, dir: &Path, owner: Option<(u32, u32)>) -> Result<(), HopError> {
    let fail = |e: std::io::Error| HopError::Failed(format!("prepare {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(fail)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
    if let Some((uid, gid)) = owner {
        // tor's user must reach its directory: the path down to it becomes
        // traversable (never listable) by others; the session directory
        // keeps its mode otherwise (0700, root mode 0770: the supervisor's
        // group writes there).
        for dir in parent.ancestors().take(3) {
            let mode = std::fs::metadata(dir).map_err(fail)?.permissions().mode();
            let traversable = std::fs::Permissions::from_mode(mode & 0o7777 | 0o011);
            std::fs::set_permissions(dir, traversable).map_err(fail)?;
        }
        nix::unistd::chown(dir, Some(uid.into()), Some(gid.into())).map_err(|e| fail(e.into()))?;
    }
    Ok(())
}

/// Poll tor's control connection until a circuit is established, reporting bootstrap progress; SIGHUP-equivalent
/// (`SIGNAL HUP`) every `circuit_build_timeout`, give up after `timeout`.
fn wait_circuit(
    cx: &mut HopCx<'_>,
    daemon: &mut Daemon,
    control: Control,
    tor: &Tor,
) -> Result<Control, HopError> {
    let start = Instant::now();
    let deadline = start + tor.timeout;
    let mut control = Some(control);
    let mut last_pct = None;
    let mut phase = String::from("not started");
    let mut last_hup = Instant::now();
    loop {
        cx.check_cancelled()?;
        if let Some(status) = daemon.exited() {
            return Err(HopError::Failed(format!(
                "tor exited ({status}) while bootstrapping: {}",
                daemon.tail()
            )));
        }
        if let Some(c) = &mut control {
            match c.getinfo("status/bootstrap-phase") {
                Ok(line) => {
                    let (pct, summary) = bootstrap(&line);
                    if pct.is_some() && pct != last_pct {
                        (cx.progress)(format!(
                            "tor: bootstrapped {}% ({summary})",
                            pct.unwrap_or(0)
                        ));
                        last_pct = pct;
                    }
                    phase = format!("{}% ({summary})", pct.unwrap_or(0));
                }
                Err(_) => control = None,
            }
        }
        if let Some(c) = &mut control {
            if c.getinfo("status/circuit-established").ok().as_deref() == Some("1") {
                // tor may have finished bootstrapping since the phase above
                // was read: show where it ended (100%, "Done").
                if let Ok(line) = c.getinfo("status/bootstrap-phase") {
                    let (pct, summary) = bootstrap(&line);
                    if pct.is_some() && pct != last_pct {
                        (cx.progress)(format!(
                            "tor: bootstrapped {}% ({summary})",
                            pct.unwrap_or(0)
                        ));
                    }
                }
                (cx.progress)("tor: circuit established".into());
                return Ok(control.take().expect("checked above"));
            }
            if last_hup.elapsed() >= tor.circuit_build_timeout {
                let _ = c.command("SIGNAL HUP");
                last_hup = Instant::now();
            }
        }
        if Instant::now() >= deadline {
            return Err(HopError::Failed(format!(
                "tor did not build a circuit within {} s (\"timeout\"); it got to {phase}: {}",
                tor.timeout.as_secs(),
                daemon.tail()
            )));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// "NOTICE BOOTSTRAP PROGRESS=45 TAG=… SUMMARY=\"Asking for …\"" → (45, summary).
fn bootstrap(line: &str) -> (Option<u8>, String) {
    let pct = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("PROGRESS="))
        .and_then(|p| p.parse().ok());
    let summary = line
        .split_once("SUMMARY=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(s, _)| s.to_string())
        .unwrap_or_default();
    (pct, summary)
}

/// tor's control protocol on the owning controller connection.
#[derive(Debug)]
struct Control {
    reader: BufReader<UnixStream>,
}

impl Control {
    fn new(stream: UnixStream) -> std::io::Result<Control> {
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Control {
            reader: BufReader::new(stream),
        })
    }

    /// Send one command; the reply's lines (without codes) if it is 250.
    fn command(&mut self, line: &str) -> std::io::Result<Vec<String>> {
        let stream = self.reader.get_mut();
        stream.write_all(format!("{line}\r\n").as_bytes())?;
        let mut out = Vec::new();
        loop {
            let mut l = String::new();
            if self.reader.read_line(&mut l)? == 0 {
                return Err(std::io::Error::other("tor closed the control socket"));
            }
            let l = l.trim_end().to_string();
            let (code, rest) = l.split_at(l.len().min(3));
            let sep = rest.chars().next();
            // An asynchronous event (HS_DESC while it was asked for) is
            // not this command's reply.
            if code == "650" {
                continue;
            }
            if code != "250" {
                return Err(std::io::Error::other(format!("tor control: {l}")));
            }
            out.push(rest.get(1..).unwrap_or_default().to_string());
            if sep == Some(' ') {
                return Ok(out);
            }
        }
    }

    /// The next asynchronous event line (`650 …`, without the code), None
    /// when none came within the read timeout; replies are skipped.
    fn event(&mut self) -> std::io::Result<Option<String>> {
        let mut l = String::new();
        match self.reader.read_line(&mut l) {
            Ok(0) => Err(std::io::Error::other("tor closed the control socket")),
            Ok(_) => Ok(l.trim_end().strip_prefix("650 ").map(str::to_string)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// `GETINFO key` → its value.
    fn getinfo(&mut self, key: &str) -> std::io::Result<String> {
        let lines = self.command(&format!("GETINFO {key}"))?;
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .ok_or_else(|| std::io::Error::other(format!("tor control: no {key} in reply")))
    }
}

/// `onion_service`: the unix socket tor's service connects to, and the
/// `ADD_ONION` that makes the service.
mod onion {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;
    use std::path::Path;

    use proto::profile::OnionService;

    use super::super::daemon::Daemon;
    use super::super::{HopCx, HopError, Onion};
    use super::Control;

    /// A service tor announced, with its socket until it is taken.
    #[derive(Debug)]
    pub(super) struct Published {
        address: String,
        service: OnionService,
        listener: Option<UnixListener>,
    }

    impl Published {
        pub(super) fn describe(&self) -> String {
            format!(
                "{}:{} → port {} in the sandbox",
                self.address, self.service.port, self.service.target
            )
        }

        /// The netbroker's share, once: the socket goes to the forwarder.
        pub(super) fn take(&mut self) -> Option<Onion> {
            Some(Onion {
                address: self.address.clone(),
                port: self.service.port,
                target: self.service.target,
                listener: self.listener.take()?,
            })
        }
    }

    /// Bind the service's socket in a directory of the hop's (root mode:
    /// ours, tor's group, 0710; the socket tor's user's, 0600: only tor may
    /// connect, no one else may even look it up), then `ADD_ONION` with a new key that tor
    /// forgets (`DiscardPK`: a new address each session, nothing on disk).
    /// The service lives as long as the control connection.
    pub(super) fn publish(
        cx: &mut HopCx<'_>,
        control: &mut Control,
        service: OnionService,
        tor_user: Option<(u32, u32)>,
        daemon: &Daemon,
        timeout: std::time::Duration,
    ) -> Result<Published, HopError> {
        let dir = cx.work_dir.join("onion");
        let path = dir.join("s");
        let fail = |what: &str, e: std::io::Error| {
            HopError::Failed(format!("{what} {}: {e}", path.display()))
        };
        // tor reads the path as a bare word of its control protocol.
        if path.to_str().is_none_or(|p| {
            p.chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '\\')
        }) {
            return Err(HopError::Failed(format!(
                "onion_service: the hop's directory {} has a space or quote in its path, which tor cannot take",
                dir.display()
            )));
        }
        std::fs::create_dir_all(&dir).map_err(|e| fail("create the directory of", e))?;
        let mode = if tor_user.is_some() { 0o710 } else { 0o700 };
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
            .map_err(|e| fail("set the mode of the directory of", e))?;
        let listener = UnixListener::bind(&path).map_err(|e| fail("bind", e))?;
        // The mode while the socket is still ours (no CAP_FOWNER after the
        // chown).
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| fail("set the mode of", e))?;
        if let Some((uid, gid)) = tor_user {
            // The directory stays ours (we remove it at the end) for tor's
            // group to pass through; the socket becomes tor's user's alone
            // (a group such as nogroup may be shared).
            nix::unistd::chown(&dir, None, Some(gid.into()))
                .map_err(|e| fail("give tor's group the directory of", e.into()))?;
            nix::unistd::chown(&path, Some(uid.into()), Some(gid.into()))
                .map_err(|e| fail("give tor's user", e.into()))?;
        }
        // Told when the descriptor is out (HS_DESC UPLOADED).
        control
            .command("SETEVENTS HS_DESC")
            .map_err(|e| HopError::Failed(format!("onion_service: tor control: {e}")))?;
        let line = add_onion(&path, service);
        let reply = control.command(&line).map_err(|e| {
            HopError::Failed(format!(
                "onion_service: tor refused the onion service ({e}): {}",
                daemon.tail()
            ))
        })?;
        let address = service_id(&reply).ok_or_else(|| {
            HopError::Failed(format!(
                "onion_service: tor's reply named no service: {reply:?}"
            ))
        })?;
        wait_uploaded(cx, control, &address, timeout, daemon)?;
        // The supervisor shows the address once the chain is ready.
        Ok(Published {
            address: format!("{address}.onion"),
            service,
            listener: Some(listener),
        })
    }

    /// Wait until tor uploaded the service's descriptor to a directory
    /// (`650 HS_DESC UPLOADED <id> …`), so that the address pallium shows
    /// answers when it is shown; then no more events.
    fn wait_uploaded(
        cx: &mut HopCx<'_>,
        control: &mut Control,
        id: &str,
        timeout: std::time::Duration,
        daemon: &Daemon,
    ) -> Result<(), HopError> {
        (cx.progress)("publishing the onion service's descriptor".into());
        let deadline = std::time::Instant::now() + timeout;
        loop {
            cx.check_cancelled()?;
            let event = control.event().map_err(|e| {
                HopError::Failed(format!(
                    "onion_service: tor control: {e}: {}",
                    daemon.tail()
                ))
            })?;
            if event.as_deref().is_some_and(|e| uploaded(e, id)) {
                break;
            }
            if std::time::Instant::now() >= deadline {
                return Err(HopError::Failed(format!(
                    "onion_service: tor did not publish the service's descriptor within {} s (the hop's \"timeout\"): {}",
                    timeout.as_secs(),
                    daemon.tail()
                )));
            }
        }
        control
            .command("SETEVENTS")
            .map(drop)
            .map_err(|e| HopError::Failed(format!("onion_service: tor control: {e}")))
    }

    /// Whether an event line (without `650 `) says `id`'s descriptor was
    /// uploaded: "HS_DESC UPLOADED <id> UNKNOWN <hsdir> …".
    pub(super) fn uploaded(event: &str, id: &str) -> bool {
        let mut w = event.split_whitespace();
        w.next() == Some("HS_DESC") && w.next() == Some("UPLOADED") && w.next() == Some(id)
    }

    /// The `ADD_ONION` command for `service` served on `socket`.
    pub(super) fn add_onion(socket: &Path, service: OnionService) -> String {
        format!(
            "ADD_ONION NEW:ED25519-V3 Flags=DiscardPK Port={},unix:{}",
            service.port,
            socket.display()
        )
    }

    /// The `ServiceID=` of an `ADD_ONION` reply: 56 base32 characters.
    pub(super) fn service_id(reply: &[String]) -> Option<String> {
        reply
            .iter()
            .find_map(|l| l.strip_prefix("ServiceID="))
            .filter(|id| {
                id.len() == 56 && id.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'))
            })
            .map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_phase_is_parsed() {
        let (p, s) = bootstrap(
            "NOTICE BOOTSTRAP PROGRESS=45 TAG=requesting_descriptors SUMMARY=\"Asking for relay descriptors\"",
        );
        assert_eq!(p, Some(45));
        assert_eq!(s, "Asking for relay descriptors");
    }

    #[test]
    fn user_args_come_last() {
        let t = Tor {
            timeout: Duration::from_secs(300),
            circuit_build_timeout: Duration::from_secs(60),
            builtin_dns: true,
            user: None,
            onion_support: true,
            tor_args: vec!["--TestingTorNetwork".into(), "1".into()],
            onion_service: None,
        };
        let a = tor_args(Path::new("/x"), Path::new("/x/socks"), false, &t);
        assert_eq!(&a[a.len() - 2..], &["--TestingTorNetwork", "1"]);
        assert!(a
            .windows(2)
            .any(|w| w == ["--SocksPort", "unix:\"/x/socks\""]));
    }

    #[test]
    fn add_onion_names_the_port_and_socket() {
        let s = proto::profile::OnionService {
            port: 80,
            target: 8080,
        };
        assert_eq!(
            onion::add_onion(Path::new("/run/p/hop1/onion/s"), s),
            "ADD_ONION NEW:ED25519-V3 Flags=DiscardPK Port=80,unix:/run/p/hop1/onion/s"
        );
    }

    #[test]
    fn service_id_is_checked() {
        let id = "wl57oglo276z5jc3kett2oikmnsavxk7jbbc3v25jadnxutwxgpoo2ad";
        let reply = vec![format!("ServiceID={id}"), "OK".to_string()];
        assert_eq!(onion::service_id(&reply).as_deref(), Some(id));
        assert_eq!(onion::service_id(&["ServiceID=../x".into()]), None);
        assert_eq!(onion::service_id(&["OK".into()]), None);
        assert!(onion::uploaded(
            &format!("HS_DESC UPLOADED {id} UNKNOWN $AAAA~relay DESCRIPTOR_ID=x"),
            id
        ));
        assert!(!onion::uploaded(
            &format!("HS_DESC UPLOAD {id} UNKNOWN $AAAA~relay"),
            id
        ));
        assert!(!onion::uploaded(
            "HS_DESC UPLOADED other UNKNOWN $AAAA~relay",
            id
        ));
    }
}
