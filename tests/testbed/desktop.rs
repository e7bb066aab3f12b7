//! A desktop for the GUI and audio tests, in a testbed's host namespace: an
//! Xvfb display (the "desktop" the sandbox's windows must appear on) and a
//! PulseAudio server with a null sink whose monitor records what is played.
//! Display numbers and directories embed the test process's pid; both are
//! stopped and removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::{TestUser, Testbed};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The first of `programs` not installed, if any (a test skips, naming it).
pub fn missing_program(programs: &[&str]) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    programs
        .iter()
        .find(|p| !path.split(':').any(|d| Path::new(d).join(p).exists()))
        .map(|p| p.to_string())
}

/// Wait up to `limit` for `f` (a readiness wait, never an assertion on time).
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An Xvfb display in the testbed's host namespace.
pub struct Xvfb {
    child: Child,
    number: u32,
}

impl Xvfb {
    /// Start one on a free display (500…899, from the pid) and wait for its socket.
    pub fn start(tb: &Testbed) -> Xvfb {
        let seed = std::process::id() * 7 + COUNTER.fetch_add(1, Ordering::Relaxed) * 13;
        let number = (0..400)
            .map(|i| 500 + (seed + i) % 400)
            .find(|n| {
                !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                    && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
            })
            .expect("a free display number");
        let child = tb
            .host_exec([
                "Xvfb",
                &format!(":{number}"),
                "-screen",
                "0",
                "1024x768x24",
                "-nolisten",
                "tcp",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Xvfb");
        let x = Xvfb { child, number };
        wait_for(Duration::from_secs(30), || {
            Path::new(&format!("/tmp/.X11-unix/X{number}"))
                .exists()
                .then_some(())
        })
        .expect("Xvfb's socket");
        x
    }

    /// `:N`.
    pub fn display(&self) -> String {
        format!(":{}", self.number)
    }

    /// A command run here (not in a namespace) against this display.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("DISPLAY", self.display()).env_remove("XAUTHORITY");
        c
    }

    /// The id of a window whose name contains `name`, waiting up to `limit`.
    pub fn find_window(&self, name: &str, limit: Duration) -> Option<String> {
        wait_for(limit, || {
            let o = self
                .command("xdotool")
                .args(["search", "--name", name])
                .output()
                .ok()?;
            let s = String::from_utf8_lossy(&o.stdout);
            s.lines().next().map(str::to_string)
        })
    }

    /// The number of distinct colours in a screenshot of window `id`, saved at `png`.
    pub fn colours(&self, id: &str, png: &Path) -> u64 {
        let o = self
            .command("import")
            .args(["-window", id])
            .arg(png)
            .output()
            .expect("run import");
        assert!(o.status.success(), "import: {o:?}");
        let o = Command::new("identify")
            .args(["-format", "%k"])
            .arg(png)
            .output()
            .expect("run identify");
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(format!("/tmp/.X11-unix/X{}", self.number));
        let _ = std::fs::remove_file(format!("/tmp/.X{}-lock", self.number));
    }
}

/// A PulseAudio server (as root or as the test user) with a null sink
/// `pallium_test` in a private runtime directory, in the host namespace.
pub struct Pulse {
    child: Child,
    dir: PathBuf,
    user: Option<&'static TestUser>,
    /// The testbed's host namespace and name, for later commands.
    netns: String,
    testbed: String,
}

impl Pulse {
    /// Start it; `user`: as the test user (rootless tests).
    pub fn start(tb: &Testbed, user: Option<&'static TestUser>) -> Pulse {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!("/tmp/pallium-pulse-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["", "rt", "home"] {
            let p = dir.join(d);
            std::fs::create_dir_all(&p).expect("pulse dir");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
            if let Some(u) = user {
                nix::unistd::chown(
                    &p,
                    Some(nix::unistd::Uid::from_raw(u.uid())),
                    Some(nix::unistd::Gid::from_raw(u.gid())),
                )
                .unwrap();
            }
        }
        let mut p = Pulse {
            child: Command::new("true").spawn().unwrap(),
            dir,
            user,
            netns: tb.host_netns(),
            testbed: tb.name().to_string(),
        };
        let _ = p.child.wait();
        let socket = format!("socket={}", p.socket().display());
        p.child = p
            .command(&[
                "pulseaudio",
                "-n",
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--disallow-exit",
                "--log-target=stderr",
                "-L",
                "module-null-sink sink_name=pallium_test",
                "-L",
                &format!("module-native-protocol-unix {socket}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pulseaudio");
        wait_for(Duration::from_secs(30), || {
            p.command(&["pactl", "info"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .ok()?
                .success()
                .then_some(())
        })
        .expect("pulseaudio answering");
        p
    }

    /// Its socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("rt/native")
    }

    /// `PULSE_SERVER` for it.
    pub fn server(&self) -> String {
        format!("unix:{}", self.socket().display())
    }

    /// `argv` as the server's user in the host namespace, with its
    /// `PULSE_SERVER`, `HOME` and `XDG_RUNTIME_DIR`.
    pub fn command(&self, argv: &[&str]) -> Command {
        let env = [
            format!("HOME={}", self.dir.join("home").display()),
            format!("XDG_RUNTIME_DIR={}", self.dir.join("rt").display()),
            format!("PULSE_SERVER={}", self.server()),
            format!("{}={}", crate::TESTBED_ENV, self.testbed),
        ];
        let mut inner: Vec<String> = match self.user {
            Some(u) => u
                .argv_prefix()
                .into_iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect(),
            None => vec!["/usr/bin/env".into()],
        };
        inner.extend(env);
        inner.extend(argv.iter().map(|s| s.to_string()));
        crate::cmd::netns_exec(&self.netns, inner)
    }

    /// Start recording the null sink's monitor (raw s16le, 44.1 kHz stereo) into `file`.
    pub fn record(&self, file: &Path) -> Child {
        let f = std::fs::File::create(file).expect("recording file");
        let rec = self
            .command(&[
                "parec",
                "-d",
                "pallium_test.monitor",
                "--raw",
                "--format=s16le",
                "--rate=44100",
                "--channels=2",
                "--latency-msec=20",
            ])
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(Stdio::null())
            .spawn()
            .expect("start parec");
        // Recording once bytes arrive: a tone played before would be lost.
        wait_for(Duration::from_secs(30), || {
            (std::fs::metadata(file).ok()?.len() > 0).then_some(())
        })
        .expect("parec recording");
        rec
    }

    /// Stop a recording started by [`Pulse::record`] (SIGINT: parec writes
    /// out what it holds).
    pub fn stop(mut rec: Child) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(rec.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = rec.wait();
    }
}

impl Drop for Pulse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The RMS amplitude (0…1) of a raw s16le stereo 44.1 kHz recording, as sox reports it.
pub fn rms(file: &Path) -> f64 {
    let o = Command::new("sox")
        .args([
            "-t", "raw", "-r", "44100", "-e", "signed", "-b", "16", "-c", "2",
        ])
        .arg(file)
        .args(["-n", "stat"])
        .output()
        .expect("run sox");
    let text = String::from_utf8_lossy(&o.stderr);
    text.lines()
        .find(|l| l.starts_with("RMS     amplitude"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no RMS in sox's output: {text}"))
}
