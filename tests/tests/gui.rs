//! `sandbox.gui` end to end, root and rootless, on an Xvfb "desktop" in the
//! testbed's host namespace: a sandboxed `xclock` appears on the desktop
//! through the session's nested Xpra display and a screenshot of it is not
//! blank; from inside, the desktop's display cannot be reached — not by its
//! socket path, not by X's abstract socket (which the test shows reachable
//! from the host namespace) — and xwd/xdotool against it fail; the nested
//! display is gone when the session ends, also after `kill -9` of pallium.
//! The original README's hardened-browser profile (gVisor, GUI, audio, a
//! virtual user) shows its window and plays a tone that reaches the
//! caller's PulseAudio server.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Stdio};
use std::time::Duration;

use common::{pallium, staged, tun_usable};
use pallium_tests::{
    missing_program, rms, skip_unless_root, wait_for, Pulse, TestUser, Testbed, Xvfb,
};

const PROGRAMS: &[&str] = &[
    "xpra", "Xvfb", "xclock", "xdotool", "xdpyinfo", "xwd", "import", "identify", "python3",
];

/// What the sandbox runs: report what it can reach, play a tone if it has
/// sound, start a clock, wait for a line on stdin.
fn script(outer: &str) -> String {
    let n = outer.trim_start_matches(':');
    format!(
        r#"echo "display=$DISPLAY"
xdpyinfo >/dev/null 2>&1 && echo own-display-ok || echo own-display-FAILED
DISPLAY={outer} xdpyinfo >/dev/null 2>&1 && echo outer-REACHABLE || echo outer-unreachable
xwd -root -silent -display {outer} >/dev/null 2>&1 && echo xwd-REACHABLE || echo xwd-unreachable
DISPLAY={outer} xdotool getmouselocation >/dev/null 2>&1 && echo xdotool-REACHABLE || echo xdotool-unreachable
test -e /tmp/.X11-unix/X{n} && echo outer-socket-VISIBLE || echo outer-socket-absent
{ABSTRACT} && echo abstract-REACHABLE || echo abstract-unreachable
if [ -n "$PULSE_SERVER" ]; then
    sox -q -n -t wav - synth 1.5 sine 440 vol 0.5 | paplay; echo "paplay=$?"
fi
xclock -title pallium-test-clock &
echo started
read line
kill $!
"#,
        ABSTRACT = abstract_probe(n)
    )
}

/// A shell command that connects to display `n`'s abstract socket.
fn abstract_probe(n: &str) -> String {
    format!(
        r#"python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.connect("\0/tmp/.X11-unix/X{n}")' 2>/dev/null"#
    )
}

fn skip_if_missing() -> bool {
    if let Some(p) = missing_program(PROGRAMS) {
        pallium_tests::skip(&format!("{p} is not installed"));
        return true;
    }
    false
}

/// `pallium exec --one-shot PROFILE -- sh -c SCRIPT`, as root or the test user.
/// `pulse`: root mode, the session's sound goes to this server.
fn start(
    tb: &Testbed,
    desktop: &Xvfb,
    rootless: bool,
    profile: &str,
    pulse: Option<&Pulse>,
) -> Child {
    let script = script(&desktop.display());
    let display = format!("DISPLAY={}", desktop.display());
    let mut cmd = if rootless {
        let dir = staged();
        let bin = dir.join("pallium").display().to_string();
        tb.host_exec_as(
            TestUser::get(),
            [
                display.as_str(),
                &bin,
                "exec",
                "--one-shot",
                profile,
                "--",
                "sh",
                "-c",
                &script,
            ],
        )
    } else {
        let mut c = tb.host_exec([
            pallium().display().to_string().as_str(),
            "exec",
            "--one-shot",
            profile,
            "--",
            "sh",
            "-c",
            &script,
        ]);
        c.env("DISPLAY", desktop.display()).env_remove("XAUTHORITY");
        if let Some(p) = pulse {
            c.env("PULSE_SERVER", p.server());
        }
        c
    };
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start pallium")
}

/// The sandbox's report, up to its "started" line.
fn report(out: &mut BufReader<ChildStdout>) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        if out.read_line(&mut l).unwrap_or(0) == 0 {
            panic!("pallium ended before the clock started; it said: {lines:?}");
        }
        let l = l.trim().to_string();
        if l == "started" {
            return lines;
        }
        lines.push(l);
    }
}

fn nested_display(lines: &[String]) -> u32 {
    lines
        .iter()
        .find_map(|l| l.strip_prefix("display=:"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no nested display in {lines:?}"))
}

fn check_isolation(tb: &Testbed, desktop: &Xvfb, lines: &[String]) {
    for want in [
        "own-display-ok",
        "outer-unreachable",
        "xwd-unreachable",
        "xdotool-unreachable",
        "outer-socket-absent",
        "abstract-unreachable",
    ] {
        assert!(lines.iter().any(|l| l == want), "{want} not in {lines:?}");
    }
    // The probe works: from the host namespace the abstract socket answers.
    let n = desktop.display().trim_start_matches(':').to_string();
    let o = tb
        .host_exec(["sh", "-c", &abstract_probe(&n)])
        .status()
        .expect("abstract probe");
    assert!(
        o.success(),
        "the abstract-socket probe fails even from the host namespace"
    );
}

/// Nothing of nested display `n` is left: no lock, no socket, no xpra.
fn display_gone(n: u32) -> bool {
    let lock = format!("/tmp/.X{n}-lock");
    let socket = format!("/tmp/.X11-unix/X{n}");
    let xpra_left = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            cmd.contains("xpra") && cmd.contains(&format!(":{n}\0"))
        });
    !Path::new(&lock).exists() && !Path::new(&socket).exists() && !xpra_left
}

fn gui_session(rootless: bool, name: &str) {
    let tb = Testbed::new(name);
    let desktop = Xvfb::start(&tb);
    let mut child = start(
        &tb,
        &desktop,
        rootless,
        r#"{"sandbox": {"gui": true}}"#,
        None,
    );
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let lines = report(&mut out);
    let n = nested_display(&lines);
    check_isolation(&tb, &desktop, &lines);

    let id = desktop
        .find_window("pallium-test-clock", Duration::from_secs(90))
        .expect("the sandbox's clock on the desktop");
    let png = std::env::temp_dir().join(format!("pallium-gui-{}-{name}.png", std::process::id()));
    // Mapped before painted: wait for the first frame.
    let colours = wait_for(Duration::from_secs(30), || {
        Some(desktop.colours(&id, &png)).filter(|c| *c > 1)
    });
    let _ = std::fs::remove_file(&png);
    assert!(
        colours.is_some(),
        "the clock's screenshot stays blank (1 colour)"
    );

    writeln!(child.stdin.as_mut().unwrap(), "done").unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "pallium: {status}");
    assert!(display_gone(n), "nested display :{n} left behind");
    // The desktop runs in the host namespace: it would count as left over.
    drop(desktop);
    // Xpra's client may still be on its way out.
    // The netbroker finishes its teardown on its own, after pallium exits.
    common::assert_clean(&tb);
}

#[test]
fn a_sandboxed_window_appears_on_the_desktop_and_nothing_else_is_reachable_root() {
    skip_unless_root!();
    if skip_if_missing() {
        return;
    }
    gui_session(false, "guiroot");
}

#[test]
fn a_sandboxed_window_appears_on_the_desktop_and_nothing_else_is_reachable_rootless() {
    skip_unless_root!();
    if skip_if_missing() {
        return;
    }
    if !tun_usable() {
        pallium_tests::skip("/dev/net/tun is not world read-write");
        return;
    }
    gui_session(true, "guiuser");
}

#[test]
fn the_nested_display_ends_after_kill_9_of_pallium() {
    skip_unless_root!();
    if skip_if_missing() {
        return;
    }
    let tb = Testbed::new("guikill");
    let desktop = Xvfb::start(&tb);
    let mut child = start(&tb, &desktop, false, r#"{"sandbox": {"gui": true}}"#, None);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let n = nested_display(&report(&mut out));
    desktop
        .find_window("pallium-test-clock", Duration::from_secs(90))
        .expect("the sandbox's clock on the desktop");
    // `ip netns exec` execs pallium: the child is the supervisor.
    let pid = child.id();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
    assert!(
        wait_for(Duration::from_secs(30), || display_gone(n).then_some(())).is_some(),
        "nested display :{n} still there 30 s after kill -9"
    );
    assert!(
        desktop
            .find_window("pallium-test-clock", Duration::from_secs(0))
            .is_none(),
        "the clock's window outlived the session"
    );
    // Root mode: the netbroker (root without CAP_DAC_OVERRIDE) removes the
    // session's directory, Xpra's files in it included.
    assert!(
        wait_for(Duration::from_secs(30), || session_dir_of(pid)
            .is_none()
            .then_some(()))
        .is_some(),
        "the session directory {:?} is left after kill -9",
        session_dir_of(pid)
    );
    drop(desktop);
    // The netbroker finishes its teardown on its own, after pallium exits.
    common::assert_clean(&tb);
}

#[test]
fn the_hardened_browser_profile_shows_its_window_under_gvisor() {
    skip_unless_root!();
    if skip_if_missing() {
        return;
    }
    if let Some(p) = missing_program(&["runsc", "pulseaudio", "paplay", "parec", "sox"]) {
        pallium_tests::skip(&format!("{p} is not installed"));
        return;
    }
    // The original README's hardened browser, an X client and a tone in
    // place of the browser.
    let downloads = std::env::temp_dir().join(format!("pallium-gui-dl-{}", std::process::id()));
    std::fs::create_dir_all(&downloads).unwrap();
    let profile = format!(
        r#"{{"sandbox": {{"gvisor": true, "gui": true, "audio": true, "virtuser": "browser",
            "paths": {{"bind": [["/home/browser/Downloads", "{}"]]}}}}}}"#,
        downloads.display()
    );
    let tb = Testbed::new("guigvisor");
    let desktop = Xvfb::start(&tb);
    let pulse = Pulse::start(&tb, None);
    let tone = std::env::temp_dir().join(format!("pallium-gui-{}-tone.raw", std::process::id()));
    let rec = pulse.record(&tone);
    let mut child = start(&tb, &desktop, false, &profile, Some(&pulse));
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let lines = report(&mut out);
    Pulse::stop(rec);
    assert!(lines.iter().any(|l| l == "paplay=0"), "{lines:?}");
    let level = rms(&tone);
    let _ = std::fs::remove_file(&tone);
    assert!(level > 0.02, "the tone did not arrive: RMS {level}");
    let n = nested_display(&lines);
    check_isolation(&tb, &desktop, &lines);
    let id = desktop
        .find_window("pallium-test-clock", Duration::from_secs(90))
        .expect("the sandbox's clock on the desktop");
    let png = std::env::temp_dir().join(format!("pallium-gui-{}-gvisor.png", std::process::id()));
    let colours = wait_for(Duration::from_secs(30), || {
        Some(desktop.colours(&id, &png)).filter(|c| *c > 1)
    });
    let _ = std::fs::remove_file(&png);
    assert!(colours.is_some(), "the clock's screenshot stays blank");
    writeln!(child.stdin.as_mut().unwrap(), "done").unwrap();
    let status = child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&downloads);
    assert!(status.success(), "pallium: {status}");
    assert!(display_gone(n), "nested display :{n} left behind");
}

/// The session directory whose supervisor was `pid`, if it is still there.
fn session_dir_of(pid: u32) -> Option<std::path::PathBuf> {
    std::fs::read_dir("/run/pallium")
        .ok()?
        .flatten()
        .find_map(|p| {
            std::fs::read_dir(p.path()).ok()?.flatten().find_map(|s| {
                let recorded = std::fs::read_to_string(s.path().join("supervisor.pid")).ok()?;
                (recorded.trim() == pid.to_string()).then(|| s.path())
            })
        })
}
