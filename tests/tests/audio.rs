//! `sandbox.audio` end to end, root and rootless, against a PulseAudio
//! server the test starts (private runtime directory, a null sink): a tone
//! played with `paplay` in the sandbox is recorded from the sink's monitor
//! with an RMS far above silence (sox); recording from the sandbox is
//! refused unless the profile asks for the microphone, and so is whatever
//! acts on the server or other clients (loading a module, the default sink,
//! suspending it, its volume, listing other clients and their streams); a
//! second session cannot open the first one's relay. Under gVisor alike,
//! where the relay listens on TCP in the application's namespace.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::{pallium, staged, text, tun_usable};
use pallium_tests::{missing_program, rms, skip_unless_root, Pulse, TestUser, Testbed};

const PROGRAMS: &[&str] = &["pulseaudio", "pactl", "paplay", "parec", "sox", "python3"];

/// Play a 1.5 s tone, then try to record and to load a module.
const SCRIPT: &str = r#"sox -q -n -t wav - synth 1.5 sine 440 vol 0.5 | paplay; echo "paplay=$?"
echo "recorded=$(timeout 20 parec -d pallium_test.monitor --raw 2>/dev/null | head -c 4000 | wc -c)"
pactl load-module module-null-sink >/dev/null 2>&1 && echo module-LOADED || echo module-refused
pactl list sink-inputs >/dev/null 2>&1 && echo sink-inputs-LISTED || echo sink-inputs-refused
pactl list clients >/dev/null 2>&1 && echo clients-LISTED || echo clients-refused
pactl set-default-sink pallium_test >/dev/null 2>&1 && echo default-SET || echo default-refused
pactl suspend-sink pallium_test 1 >/dev/null 2>&1 && echo sink-SUSPENDED || echo suspend-refused
pactl set-sink-volume pallium_test 10% >/dev/null 2>&1 && echo volume-SET || echo volume-refused
pactl info >/dev/null 2>&1 && echo info-ok || echo info-FAILED
echo "host=$(pactl info 2>/dev/null | sed -n 's/^Host Name: //p')"
"#;

/// What the sandbox must be refused (and the one query it keeps), as
/// `SCRIPT` prints them.
const REFUSED: &[&str] = &[
    "module-refused",
    "sink-inputs-refused",
    "clients-refused",
    "default-refused",
    "suspend-refused",
    "volume-refused",
    "info-ok",
];

fn skip_if_missing() -> bool {
    if let Some(p) = missing_program(PROGRAMS) {
        pallium_tests::skip(&format!("{p} is not installed"));
        return true;
    }
    false
}

/// `pallium exec --one-shot PROFILE -- sh -c SCRIPT` with `PULSE_SERVER`.
fn exec(tb: &Testbed, pulse: &Pulse, rootless: bool, profile: &str, script: &str) -> Command {
    let server = format!("PULSE_SERVER={}", pulse.server());
    if rootless {
        let dir = staged();
        let bin = dir.join("pallium").display().to_string();
        tb.host_exec_as(
            TestUser::get(),
            [
                server.as_str(),
                &bin,
                "exec",
                "--one-shot",
                profile,
                "--",
                "sh",
                "-c",
                script,
            ],
        )
    } else {
        let bin = pallium().display().to_string();
        let mut c = tb.host_exec([
            bin.as_str(),
            "exec",
            "--one-shot",
            profile,
            "--",
            "sh",
            "-c",
            script,
        ]);
        c.env("PULSE_SERVER", pulse.server());
        c
    }
}

fn output(mut c: Command) -> Output {
    c.stdin(Stdio::null()).output().expect("run pallium")
}

fn recording_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("pallium-audio-{}-{name}.raw", std::process::id()))
}

/// The profile's `sandbox` section: `audio` as given, under gVisor or not.
fn profile(audio: &str, gvisor: bool) -> String {
    format!(r#"{{"sandbox": {{"audio": {audio}, "gvisor": {gvisor}}}}}"#)
}

fn play_and_record(rootless: bool, name: &str, gvisor: bool) {
    let tb = Testbed::new(name);
    let user = rootless.then(TestUser::get);
    let pulse = Pulse::start(&tb, user);
    let file = recording_file(name);
    let rec = pulse.record(&file);
    let script = format!("echo \"server=$PULSE_SERVER\"\n{SCRIPT}");
    let o = output(exec(
        &tb,
        &pulse,
        rootless,
        &profile("true", gvisor),
        &script,
    ));
    Pulse::stop(rec);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("paplay=0"), "{stdout}{stderr}");
    assert!(
        stdout.contains("recorded=0"),
        "recording was not refused: {stdout}"
    );
    for want in REFUSED {
        assert!(stdout.contains(want), "{want}: {stdout}");
    }
    // The server's host name is the sandbox's, as everywhere in it.
    assert!(stdout.contains("host=pallium\n"), "{stdout}");
    // Under gVisor the relay listens on the application namespace's
    // loopback (its host Unix sockets refuse libpulse's credentials): the
    // host's 127.0.0.1 has no such port.
    let server = stdout
        .lines()
        .find_map(|l| l.strip_prefix("server="))
        .unwrap_or_default()
        .to_string();
    if gvisor {
        let port = server
            .strip_prefix("tcp:127.0.0.1:")
            .unwrap_or_else(|| panic!("not a loopback TCP server: {server:?}"));
        let probe = tb
            .host_exec([
                "python3",
                "-c",
                &format!("import socket; socket.create_connection(('127.0.0.1', {port}), 2)"),
            ])
            .output()
            .unwrap();
        assert!(
            !probe.status.success(),
            "the host reached the session's relay"
        );
    } else {
        assert!(server.starts_with("unix:"), "{server:?}");
    }
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    eprintln!("{name}: recorded {size} bytes");
    let level = rms(&file);
    let _ = std::fs::remove_file(&file);
    eprintln!("{name}: RMS of the recorded tone {level:.4} (silence: 0)");
    assert!(level > 0.02, "the tone did not arrive: RMS {level}");

    // With the microphone asked for, recording works.
    let o = output(exec(
        &tb,
        &pulse,
        rootless,
        &profile(r#"{"microphone": true}"#, gvisor),
        SCRIPT,
    ));
    let (stdout, stderr) = text(&o);
    assert!(stdout.contains("recorded=4000"), "{stdout}{stderr}");
    assert!(stdout.contains("module-refused"), "{stdout}");
    drop(pulse);
    // The netbroker finishes its teardown on its own, after pallium exits.
    common::assert_clean(&tb);
}

#[test]
fn a_tone_played_in_the_sandbox_reaches_the_callers_server_root() {
    skip_unless_root!();
    if skip_if_missing() {
        return;
    }
    play_and_record(false, "audroot", false);
}

#[test]
fn a_tone_played_in_the_sandbox_reaches_the_callers_server_rootless() {
    skip_unless_root!();
    if skip_if_missing() {
        return;
    }
    if !tun_usable() {
        pallium_tests::skip("/dev/net/tun is not world read-write");
        return;
    }
    play_and_record(true, "auduser", false);
}

#[test]
fn a_tone_played_under_gvisor_reaches_the_callers_server_root() {
    skip_unless_root!();
    if skip_if_missing() || skip_without_runsc() {
        return;
    }
    play_and_record(false, "audgvr", true);
}

#[test]
fn a_tone_played_under_gvisor_reaches_the_callers_server_rootless() {
    skip_unless_root!();
    if skip_if_missing() || skip_without_runsc() {
        return;
    }
    if !tun_usable() {
        pallium_tests::skip("/dev/net/tun is not world read-write");
        return;
    }
    play_and_record(true, "audgvu", true);
}

fn skip_without_runsc() -> bool {
    let missing = missing_program(&["runsc"]).is_some();
    if missing {
        pallium_tests::skip("runsc (gVisor) is not installed");
    }
    missing
}

/// A client that floods the relay with commands and never reads a reply.
const FLOOD: &str = r#"python3 - <<'EOF'
import os, socket, struct, time
def frame(p): return struct.pack('>IIIII', len(p), 0xffffffff, 0, 0, 0) + p
def u(v): return b'L' + struct.pack('>I', v)
s = socket.socket(socket.AF_UNIX)
s.connect(os.environ['PULSE_SERVER'][len('unix:'):])
s.sendall(frame(u(8) + u(0) + u(35) + b'x' + struct.pack('>I', 256) + bytes(256)))
s.settimeout(60)
t0, n = time.time(), 0
try:
    for tag in range(1, 200000):
        s.sendall(frame(u(22) + u(tag)))
        n += 1
    print('never-cut-off', n)
except OSError:
    print('cut-off after', n, 'commands in', round(time.time() - t0, 1), 's')
EOF
pactl info >/dev/null 2>&1 && echo info-ok || echo info-FAILED
"#;

#[test]
fn a_client_that_never_reads_its_replies_is_cut_off() {
    skip_unless_root!();
    if skip_if_missing() {
        return;
    }
    let tb = Testbed::new("audflood");
    let pulse = Pulse::start(&tb, None);
    let o = output(exec(
        &tb,
        &pulse,
        false,
        r#"{"sandbox": {"audio": true}}"#,
        FLOOD,
    ));
    let (stdout, stderr) = text(&o);
    eprintln!("{stdout}");
    // Cut off (the server's send queue does not grow without end), and
    // the next client is served.
    assert!(stdout.contains("cut-off after"), "{stdout}{stderr}");
    assert!(stdout.contains("info-ok"), "{stdout}{stderr}");
    drop(pulse);
    common::assert_clean(&tb);
}

/// The relay socket of the session whose supervisor is `pid`.
fn relay_of(pid: u32) -> Option<PathBuf> {
    for profile in std::fs::read_dir("/run/pallium").ok()?.flatten() {
        for session in std::fs::read_dir(profile.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let info =
                std::fs::read_to_string(session.path().join("info.json")).unwrap_or_default();
            if info.contains(&format!("\"supervisor_pid\":{pid}")) {
                return Some(session.path().join("share/pulse-native"));
            }
        }
    }
    None
}

#[test]
fn a_second_session_cannot_open_the_first_ones_relay() {
    skip_unless_root!();
    if skip_if_missing() {
        return;
    }
    let tb = Testbed::new("audpriv");
    let pulse = Pulse::start(&tb, None);
    let profile = r#"{"sandbox": {"audio": true}}"#;
    let mut first = exec(&tb, &pulse, false, profile, "echo up; read line")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the first session");
    let mut line = String::new();
    BufReader::new(first.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "up");
    let relay = relay_of(first.id()).expect("the first session's relay socket");
    let path = relay.display().to_string();
    // The probe works: from the host, the relay reaches the server.
    let o = pulse
        .command(&[
            "env",
            &format!("PULSE_SERVER=unix:{path}"),
            &format!(
                "PULSE_CLIENTCONFIG={}",
                relay.with_file_name("pulse-client.conf").display()
            ),
            "pactl",
            "info",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "the relay does not answer: {o:?}");

    let probe = format!(
        r#"PULSE_SERVER=unix:{path} pactl info >/dev/null 2>&1 && echo pactl-OPENED || echo pactl-refused
python3 -c 'import socket; socket.socket(socket.AF_UNIX).connect("{path}")' 2>/dev/null && echo CONNECTED || echo no-connect"#
    );
    let o = output(exec(&tb, &pulse, false, profile, &probe));
    let (stdout, stderr) = text(&o);
    assert!(stdout.contains("pactl-refused"), "{stdout}{stderr}");
    assert!(stdout.contains("no-connect"), "{stdout}{stderr}");

    writeln!(first.stdin.as_mut().unwrap(), "done").unwrap();
    assert!(first.wait().unwrap().success());
    drop(pulse);
    // The netbroker finishes its teardown on its own, after pallium exits.
    common::assert_clean(&tb);
}
