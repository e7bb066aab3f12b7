//! The host side of the escape suite: a secret, a setuid-root binary, a
//! process to attack, listening sockets (pathname, abstract, D-Bus, ssh
//! agent, X11, `/run/user/UID/bus`, TCP) and the host's `core_pattern` —
//! all put back as they were on drop, panics included.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use pallium_tests::{TestUser, Testbed};

use crate::Mode;

pub(crate) const SECRET: &str = "pallium-escape-secret-7f3a";
pub(crate) const PY: &str = "/usr/bin/python3";
const LISTENER_PY: &str = include_str!("listener.py");
const DBUS_DAEMON: &str = "/usr/bin/dbus-daemon";
const CORE_PATTERN: &str = "/proc/sys/kernel/core_pattern";
/// TCP ports of the testbed's host namespace: one on every address, one on
/// 127.0.0.1 only.
pub(crate) const TCP_ANY: u16 = 45001;
pub(crate) const TCP_LO: u16 = 45002;

pub(crate) struct Host {
    pub(crate) mode: Mode,
    /// `<pid>-<mode>`: names everything of this run.
    pub(crate) id: String,
    /// `/tmp/pallium-escape-<id>`: the secret, profiles, scripts.
    pub(crate) dir: PathBuf,
    pub(crate) root_marker: Option<PathBuf>,
    pub(crate) suid: PathBuf,
    pub(crate) abstract_name: String,
    /// The D-Bus session bus and ssh agent the environment names.
    pub(crate) dbus: PathBuf,
    pub(crate) agent: PathBuf,
    pub(crate) display: u32,
    pub(crate) x11: PathBuf,
    pub(crate) runuser_bus: PathBuf,
    /// Real dbus-daemons serve the two buses (else the listener does).
    pub(crate) dbus_daemon: bool,
    made_run_user: Option<PathBuf>,
    log: PathBuf,
    daemons: Vec<Child>,
    victim: Child,
}

impl Host {
    pub(crate) fn new(tb: &Testbed, mode: Mode) -> Host {
        core_original();
        let id = format!("{}-{}", std::process::id(), mode.name());
        let dir = PathBuf::from(format!("/tmp/pallium-escape-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        mkdir(&dir, 0o755);
        write(&dir.join("secret"), SECRET, 0o644);
        let root_marker = (mode == Mode::Root).then(|| {
            let p = PathBuf::from(format!("/root/pallium-escape-{id}"));
            write(&p, SECRET, 0o600);
            p
        });
        // A setuid-root copy of cat where every view shows the host's /usr:
        // `suid-cat /proc/self/status` shows its own credentials.
        let suid = PathBuf::from(format!("/usr/local/bin/pallium-escape-suid-{id}"));
        pallium_tests::copy_executable(Path::new("/bin/cat"), &suid, 0o4755);
        // The sockets of the session's environment, owned by the mode's user
        // as a real bus or agent would be.
        let ipc = dir.join("ipc");
        mkdir(&ipc, 0o755);
        let (uid, gid) = match mode {
            Mode::Root => (0, 0),
            Mode::Rootless => (TestUser::get().uid(), TestUser::get().gid()),
        };
        std::os::unix::fs::chown(&ipc, Some(uid), Some(gid)).unwrap();
        let run_user = PathBuf::from(format!("/run/user/{uid}"));
        let made_run_user = (!run_user.exists()).then(|| {
            std::fs::create_dir_all(&run_user).unwrap();
            std::fs::set_permissions(&run_user, std::fs::Permissions::from_mode(0o700)).unwrap();
            run_user.clone()
        });
        let display = match mode {
            Mode::Root => 93,
            Mode::Rootless => 94,
        };
        // /tmp/.X11-unix stays (1777, as X leaves it): the other mode's
        // test may be using it.
        let xdir = Path::new("/tmp/.X11-unix");
        if !xdir.exists() {
            let _ = std::fs::create_dir(xdir);
            let _ = std::fs::set_permissions(xdir, std::fs::Permissions::from_mode(0o1777));
        }
        let x11 = xdir.join(format!("X{display}"));
        // A host process the application could signal or trace without a sandbox.
        let victim = match mode {
            Mode::Root => Command::new("sleep").arg("120").spawn().unwrap(),
            Mode::Rootless => TestUser::get().command(["sleep", "120"]).spawn().unwrap(),
        };
        let mut host = Host {
            mode,
            abstract_name: format!("pallium-escape-{id}"),
            dbus: ipc.join("bus"),
            agent: ipc.join("agent"),
            runuser_bus: run_user.join("bus"),
            log: dir.join("connections.log"),
            id,
            dir,
            root_marker,
            suid,
            display,
            x11,
            dbus_daemon: Path::new(DBUS_DAEMON).exists(),
            made_run_user,
            daemons: Vec::new(),
            victim,
        };
        for p in [&host.dbus, &host.agent, &host.x11, &host.runuser_bus] {
            let _ = std::fs::remove_file(p);
        }
        host.start_listeners(tb);
        host
    }

    fn start_listeners(&mut self, tb: &Testbed) {
        let mut unix = vec![
            ("sock", self.dir.join("sock")),
            ("agent", self.agent.clone()),
            ("x11", self.x11.clone()),
        ];
        if self.dbus_daemon {
            for bus in [self.dbus.clone(), self.runuser_bus.clone()] {
                let argv = [
                    DBUS_DAEMON.to_string(),
                    "--session".into(),
                    "--nofork".into(),
                    "--nopidfile".into(),
                    format!("--address=unix:path={}", bus.display()),
                    "--print-address=1".into(),
                ];
                let cmd = match self.mode {
                    Mode::Root => {
                        let mut c = Command::new(&argv[0]);
                        c.args(&argv[1..]);
                        c
                    }
                    Mode::Rootless => TestUser::get().command(&argv),
                };
                self.daemons.push(ready(cmd, "unix:"));
            }
        } else {
            unix.push(("dbus", self.dbus.clone()));
            unix.push(("runuser-bus", self.runuser_bus.clone()));
        }
        let x11 = self.x11.display().to_string();
        let cfg = serde_json::json!({
            "log": self.log,
            "unix": unix,
            "abstract": [["abstract", self.abstract_name], ["x11-abstract", x11]],
            "tcp": [["tcp-any", "0.0.0.0", TCP_ANY], ["tcp-lo", "127.0.0.1", TCP_LO]],
        });
        let cmd = tb.host_exec([PY, "-c", LISTENER_PY, &cfg.to_string()]);
        self.daemons.push(ready(cmd, "ready"));
    }

    pub(crate) fn victim_pid(&self) -> u32 {
        self.victim.id()
    }

    /// `(listener, tag)` of every connection the listeners saw.
    pub(crate) fn connections(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// The victim's state letter (`S` while it sleeps untouched).
    pub(crate) fn victim_state(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/stat", self.victim_pid()))
            .ok()
            .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()?.to_string()))
            .unwrap_or_else(|| "gone".into())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for c in self.daemons.iter_mut().chain([&mut self.victim]) {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        for p in [&self.suid, &self.x11, &self.runuser_bus]
            .into_iter()
            .chain(&self.root_marker)
        {
            let _ = std::fs::remove_file(p);
        }
        if let Some(d) = &self.made_run_user {
            let _ = std::fs::remove_dir_all(d);
        }
        core_restore();
    }
}

/// Spawn `cmd` and wait for its first line to start with `prefix`.
fn ready(mut cmd: Command, prefix: &str) -> Child {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with(prefix), "{cmd:?} printed {line:?}");
    child
}

fn mkdir(p: &Path, mode: u32) {
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub(crate) fn write(p: &Path, text: &str, mode: u32) {
    std::fs::write(p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The host's `core_pattern` before either test of this process ran a
/// session.
pub(crate) fn core_original() -> &'static str {
    static ORIGINAL: OnceLock<String> = OnceLock::new();
    ORIGINAL.get_or_init(|| std::fs::read_to_string(CORE_PATTERN).expect("read core_pattern"))
}

/// Put the host's `core_pattern` back if it changed; the value seen if so.
pub(crate) fn core_restore() -> Option<String> {
    let now = std::fs::read_to_string(CORE_PATTERN).ok()?;
    let orig = core_original();
    if now.trim_end() == orig.trim_end() {
        return None;
    }
    std::fs::write(CORE_PATTERN, orig).expect("restore core_pattern");
    Some(now.trim_end().to_string())
}
