//! An interactive `pallium shell` has a working terminal: line editing, job
//! control and window resizes, in a one-shot session and when it joins a
//! running session; ^C under gVisor, in the session's first command and in
//! one joining it. Driven through tmux, as a person at a terminal would.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{pallium, profile_file};

struct Tmux(String);

impl Tmux {
    fn start(name: &str, cmd: &str) -> Tmux {
        let t = Tmux(format!("pallium-{name}-{}", std::process::id()));
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &t.0,
                "-x",
                "100",
                "-y",
                "30",
                cmd,
            ])
            .status()
            .unwrap();
        assert!(ok.success());
        t
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.0];
        args.extend_from_slice(keys);
        assert!(Command::new("tmux").args(&args).status().unwrap().success());
    }

    fn screen(&self) -> String {
        let o = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Press `key` every half second until the screen shows `needle` (for
    /// keys that may come too early to take effect).
    fn press_until(&self, key: &str, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.screen().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{key} never brought {needle:?}:\n{}",
                self.screen()
            );
            self.keys(&[key]);
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Wait until the screen shows `needle`.
    fn expect(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.screen();
            if s.contains(needle) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "never saw {needle:?} on screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

fn have_tmux() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The prompt shows the sandbox's hostname. Line editing (C-a moves to the start of the line), job control (C-z,
/// jobs, kill %1), resize (stty size follows the window), and the exit code.
fn exercise(t: &Tmux) {
    t.expect("@pallium");
    t.keys(&["stty size; sleep 100", "Enter"]);
    t.expect("30 100");
    // ^Z stops the foreground job once `sleep` has become it; a ^Z that
    // comes before goes to the shell, which ignores it: press it again.
    t.press_until("C-z", "Stopped");
    t.keys(&["jobs; echo edited-line", "C-a", "echo ", "Enter"]);
    t.expect("edited-line");
    assert!(Command::new("tmux")
        .args(["resize-window", "-t", &t.0, "-x", "120", "-y", "40"])
        .status()
        .unwrap()
        .success());
    // The new size travels as SIGWINCH through pallium: wait for it in the
    // shell (the command line must not itself show "40 120").
    t.keys(&[
        "kill %1; for i in $(seq 100); do [ \"$(stty size | tr ' ' x)\" = 40x120 ] && break; sleep 0.05; done; stty size",
        "Enter",
    ]);
    t.expect("40 120");
    t.expect("Terminated");
    t.keys(&["exit 3", "Enter"]);
    t.expect("EXITED=3");
}

#[test]
fn an_interactive_one_shot_shell_has_a_working_terminal() {
    pallium_tests::skip_unless_root!();
    if !have_tmux() {
        pallium_tests::skip("tmux is not installed (apt-get install tmux)");
        return;
    }
    let cmd = format!(
        "env SHELL=/bin/bash {} shell --one-shot default; echo EXITED=$?; sleep 30",
        pallium().display()
    );
    let t = Tmux::start("oneshot", &cmd);
    exercise(&t);
}

#[test]
fn a_shell_joining_a_running_session_has_a_working_terminal() {
    pallium_tests::skip_unless_root!();
    if !have_tmux() {
        pallium_tests::skip("tmux is not installed (apt-get install tmux)");
        return;
    }
    let s = RunningSession::start("termsess", r#"{"run": {"command": ["sleep", "infinity"]}}"#);
    let cmd = format!(
        "env SHELL=/bin/bash {} shell {}; echo EXITED=$?; sleep 30",
        pallium().display(),
        s.profile
    );
    let t = Tmux::start("join", &cmd);
    exercise(&t);
    s.stop();
}

/// Whether tmux and runsc are there (a skip is reported otherwise).
fn tmux_and_runsc() -> bool {
    if !have_tmux() {
        pallium_tests::skip("tmux is not installed (apt-get install tmux)");
        return false;
    }
    if !std::path::Path::new("/usr/bin/runsc").is_file() {
        pallium_tests::skip("runsc is not installed (Debian package runsc)");
        return false;
    }
    true
}

/// `pallium ARGS -- sh -c SCRIPT` at a terminal, SCRIPT trapping SIGINT:
/// ^C reaches the trap and the exit code is the trap's.
///
/// A ^C in the first moments of a command joining a gVisor session can be
/// lost: `runsc exec` starts relaying signals only once the command runs.
/// So ^C is pressed again until the trap shows (the pane's own shell ignores
/// SIGINT, so a late extra ^C cannot end it).
fn ctrl_c_reaches_the_trap(name: &str, args: &str) {
    let cmd = format!(
        "trap '' INT; {} {args} -- sh -c 'trap \"echo GOT-INT; exit 7\" INT; echo READY; sleep 30 & wait'; echo EXITED=$?; sleep 30",
        pallium().display()
    );
    let t = Tmux::start(name, &cmd);
    t.expect("READY");
    t.press_until("C-c", "GOT-INT");
    t.expect("EXITED=7");
}

/// Under gVisor, ^C at the terminal of a command that joined the session
/// interrupts that command (runsc exec relays it), not the session.
#[test]
fn ctrl_c_reaches_a_command_joining_a_gvisor_session() {
    pallium_tests::skip_unless_root!();
    if !tmux_and_runsc() {
        return;
    }
    let s = RunningSession::start(
        "termgvisor",
        r#"{"sandbox": {"gvisor": true}, "run": {"command": ["sleep", "infinity"]}}"#,
    );
    ctrl_c_reaches_the_trap("gvisorint", &format!("exec {}", s.profile));
    assert!(s.exec_works(), "the session itself lives on");
    s.stop();
}

/// Under gVisor, ^C at the terminal of the session's first command reaches
/// it — a script's trap, and an interactive shell's foreground job — and the
/// session survives it.
#[test]
fn ctrl_c_reaches_the_first_command_of_a_gvisor_session() {
    pallium_tests::skip_unless_root!();
    if !tmux_and_runsc() {
        return;
    }
    const GVISOR: &str = r#"'{"sandbox": {"gvisor": true}}'"#;
    ctrl_c_reaches_the_trap("gvisorfirst", &format!("exec --one-shot {GVISOR}"));

    let cmd = format!(
        "env SHELL=/bin/bash {} shell --one-shot {GVISOR}; echo EXITED=$?; sleep 30",
        pallium().display()
    );
    let t = Tmux::start("gvisorshell", &cmd);
    t.expect("@pallium");
    // The screen shows "go2" only once the command runs, not as typed.
    t.keys(&["echo go$((1+1)); sleep 100", "Enter"]);
    t.expect("go2");
    t.keys(&["C-c"]);
    // Back at the prompt long before the sleep would end.
    t.keys(&["echo back-$((2+2))", "Enter"]);
    t.expect("back-4");
    t.keys(&["exit 3", "Enter"]);
    t.expect("EXITED=3");
}

/// A `pallium run` of a profile (written from `json`), up once `pallium exec`
/// into it works.
struct RunningSession {
    profile: String,
    run: KillOnDrop,
}

impl RunningSession {
    fn start(name: &str, json: &str) -> RunningSession {
        let profile = profile_file(name, json).to_str().unwrap().to_string();
        let run = KillOnDrop(
            Command::new(pallium())
                .args(["run", "--quiet", &profile])
                .stdin(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let s = RunningSession { profile, run };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !s.exec_works() {
            assert!(
                Instant::now() < deadline,
                "{name}: the session never came up"
            );
            std::thread::sleep(Duration::from_millis(30));
        }
        s
    }

    fn exec_works(&self) -> bool {
        Command::new(pallium())
            .args(["exec", &self.profile, "--", "true"])
            .stdin(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// `pallium stop`, then the session's supervisor ends.
    fn stop(mut self) {
        assert!(Command::new(pallium())
            .args(["stop", &self.profile])
            .status()
            .unwrap()
            .success());
        self.run.0.wait().unwrap();
    }
}

/// Ends the session's supervisor (SIGTERM: it tears down) if the test panics.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = self.0.wait();
        }
    }
}
