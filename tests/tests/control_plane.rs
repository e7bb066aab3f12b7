//! The control plane against a hostile application,
//! root and rootless: from inside a session, with pallium's runtime directory
//! bound into the sandbox on purpose (the supervisor's refusal must hold even
//! when the view does not hide the socket), the pallium binary itself and a
//! raw client speaking the wire protocol are refused and run nothing, while
//! the session carries on; a client facing a socket that another process
//! serves refuses to hand it its terminal; the environment the application
//! gets carries no host-socket address unless the profile passes or sets it.

mod common;

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{out, profile_dir_name, profile_file, text, tun_usable, Mode};
use pallium_tests::{skip_unless_root, TestUser, Testbed};
use proto::control::{ControlEvent, ControlRequest, Exec, Refusal};
use proto::wire::{encode, Hello};

const PY: &str = "/usr/bin/python3";
const REFUSED: &str = "pallium: refused: the request comes from inside a pallium sandbox";

/// What these tests ask of a [`Mode`] beyond the common helpers.
trait ControlMode {
    /// pallium's runtime directory for this mode's caller.
    fn run_dir(self) -> PathBuf;
    /// `env VAR=value …` the inner pallium needs to find the runtime
    /// directory (the application does not get `XDG_RUNTIME_DIR`).
    fn inner_env(self) -> String;
    /// `pallium ARGS` as this mode's caller in the testbed's host namespace,
    /// with `env` (`VAR=value`) added to its environment.
    fn pal(self, tb: &Testbed, env: &[&str], args: &[&str]) -> Command;
}

impl ControlMode for Mode {
    fn run_dir(self) -> PathBuf {
        match self {
            Mode::Root => PathBuf::from("/run/pallium"),
            Mode::Rootless => TestUser::get().runtime_dir().join("pallium"),
        }
    }

    fn inner_env(self) -> String {
        match self {
            Mode::Root => String::new(),
            Mode::Rootless => format!(
                "env XDG_RUNTIME_DIR={} ",
                TestUser::get().runtime_dir().display()
            ),
        }
    }

    fn pal(self, tb: &Testbed, env: &[&str], args: &[&str]) -> Command {
        let exe = self.pallium().display().to_string();
        let mut argv: Vec<String> = Vec::new();
        match self {
            Mode::Root => argv.push("/usr/bin/env".into()),
            Mode::Rootless => {}
        }
        argv.extend(env.iter().map(|s| s.to_string()));
        // A client that waits for a server that never answers fails the test
        // instead of hanging it.
        argv.extend(["/usr/bin/timeout", "-k", "5", "120"].map(String::from));
        argv.push(exe);
        argv.extend(args.iter().map(|s| s.to_string()));
        self.host_exec(tb, argv)
    }
}

/// Rootless tests need a usable /dev/net/tun; false (reported) when not.
fn can_run(mode: Mode) -> bool {
    if mode == Mode::Rootless && !tun_usable() {
        pallium_tests::skip(
            "/dev/net/tun is not world read-write (chmod 0666 /dev/net/tun; .ci/run does)",
        );
        return false;
    }
    true
}

/// A running session of `profile` (a `sleep infinity`) whose supervisor's
/// standard error goes to `log`; stopped on drop.
struct Session<'a> {
    tb: &'a Testbed,
    mode: Mode,
    profile: String,
    child: Child,
    log: PathBuf,
}

impl<'a> Session<'a> {
    fn start(tb: &'a Testbed, mode: Mode, profile: &Path) -> Self {
        let profile = profile.display().to_string();
        let log = profile.replace(".json", ".supervisor.log");
        let child = mode
            .pal(tb, &[], &["run", &profile])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("spawn run");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let o = out(mode.pal(tb, &[], &["exec", &profile, "--", "true"]));
            if o.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the session never became ready: {}",
                text(&o).1
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Session {
            tb,
            mode,
            profile,
            child,
            log: log.into(),
        }
    }

    /// `pallium exec PROFILE -- sh -c SCRIPT` from the host.
    fn sh(&self, env: &[&str], script: &str) -> Output {
        out(self.mode.pal(
            self.tb,
            env,
            &["exec", &self.profile, "--", "sh", "-c", script],
        ))
    }

    /// The supervisor's standard error so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn dir(&self) -> PathBuf {
        self.mode
            .run_dir()
            .join(profile_dir_name(Path::new(&self.profile)))
            .join("session_0")
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = out(self.mode.pal(self.tb, &[], &["stop", &self.profile]));
        let _ = self.child.wait();
    }
}

/// A fresh host directory anyone may write to.
fn shared_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pallium-ctl-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

/// Hex of a whole frame.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The frames a raw client sends: our hello, then an Exec of `argv` in
/// namespace 0 with descriptors 0–2 (the Python client attaches its own).
fn raw_client_frames(argv: &[&str]) -> (String, String) {
    let (hello, _) = encode(&Hello {
        version: proto::PROTOCOL_VERSION,
        role: "client".into(),
    })
    .unwrap();
    let null = || proto::Fd(File::open("/dev/null").unwrap().into());
    let (exec, fds) = encode(&ControlRequest::Exec(Exec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: None,
        stdio: [null(), null(), null()],
        tty: false,
        root: true,
        namespace: 0,
    }))
    .unwrap();
    assert_eq!(fds.len(), 3);
    (hex(&hello), hex(&exec))
}

/// A client that speaks the wire protocol by itself: connects, sends its
/// hello and an Exec at once (it does not wait to be accepted), then prints
/// every frame it gets (`FRAME <hex>`) and how the connection ended.
const RAW_CLIENT: &str = r#"
import array, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
s.settimeout(5)
frames = []
try:
    frames.append(s.recv(1 << 20))
    s.sendmsg([bytes.fromhex(sys.argv[2])])
    s.sendmsg([bytes.fromhex(sys.argv[3])],
              [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [0, 1, 2]))])
except OSError as e:
    print('SENDERR', e)
resets = 0
while True:
    try:
        f = s.recv(1 << 20)
    except ConnectionResetError as e:
        # The supervisor closed with our Exec unread: the error comes first,
        # what it sent before closing is still queued behind it.
        resets += 1
        if resets > 3:
            print('END', e)
            break
        continue
    except OSError as e:
        print('END', e)
        break
    if not f:
        print('END eof')
        break
    frames.append(f)
for f in frames:
    print('FRAME', f.hex())
"#;

fn refused_from_inside(mode: Mode) {
    if !can_run(mode) {
        return;
    }
    let tag = match mode {
        Mode::Root => "ctlroot",
        Mode::Rootless => "ctlrl",
    };
    let tb = Testbed::new(tag);
    // The runtime directory exists before the profile names it as a bind.
    assert!(out(mode.pal(&tb, &[], &["list"])).status.success());
    let shared = shared_dir(tag);
    let bin = mode.bin_dir().display().to_string();
    let run = mode.run_dir().display().to_string();
    let sh = shared.display().to_string();
    let pdir = std::env::temp_dir()
        .join(format!("pallium-tests-{}", std::process::id()))
        .display()
        .to_string();
    // Everything the attack needs is bound in on purpose: the refusal under
    // test is the supervisor's, whatever the view hides. As root the
    // application would not even pass root's session directory (0770, it is
    // an unprivileged uid): the test makes it the host's root, the
    // strongest client the supervisor's namespace check must still refuse.
    let unsafe_root = match mode {
        Mode::Root => r#", "unsafe_host_root": true"#,
        Mode::Rootless => "",
    };
    let profile = profile_file(
        tag,
        &format!(
            r#"{{"sandbox": {{"paths": {{"bind": [["{run}", "{run}"], ["{bin}", "{bin}"], ["{pdir}", "{pdir}"], ["{sh}", "{sh}"]]}}{unsafe_root}}},
               "run": {{"command": ["sleep", "infinity"]}}}}"#
        ),
    );
    let p = profile.display().to_string();
    let s = Session::start(&tb, mode, &profile);
    let sock = s.dir().join("control.sock").display().to_string();

    // 1. The pallium binary itself, from inside: one line, nothing runs.
    let marker = shared.join("ran-pallium");
    let attack = format!(
        "{}{bin}/pallium exec {p} --namespace 0 -- sh -c 'echo ran > {}'",
        mode.inner_env(),
        marker.display()
    );
    let o = s.sh(&[], &attack);
    let (stdout, stderr) = text(&o);
    assert!(
        !o.status.success(),
        "the inner exec succeeded: {stdout}{stderr}"
    );
    assert_eq!(stderr.trim(), REFUSED, "stdout: {stdout}");
    assert!(!marker.exists(), "the refused command ran");

    // 2. A raw client that does not wait to be accepted.
    let marker = shared.join("ran-raw");
    let (hello, exec) =
        raw_client_frames(&["sh", "-c", &format!("echo ran > {}", marker.display())]);
    let o = out(mode.pal(
        &tb,
        &[],
        &["exec", &p, "--", PY, "-c", RAW_CLIENT, &sock, &hello, &exec],
    ));
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    let frames: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("FRAME "))
        .collect();
    let (refused, _) = encode(&ControlEvent::Refused(Refusal::InsideSandbox)).unwrap();
    assert_eq!(
        frames.len(),
        2,
        "the supervisor's hello and its refusal: {stdout}"
    );
    assert_eq!(frames[1], hex(&refused), "{stdout}");
    assert!(stdout.contains("END"), "{stdout}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!marker.exists(), "the raw client's command ran");

    // The session is unaffected: still running, a legitimate exec works, and
    // the user's terminal got one warning at most.
    let o = s.sh(&[], "echo still here");
    assert_eq!(text(&o).0, "still here\n", "{}", text(&o).1);
    // One warning for the first refusal, none for the next.
    let log = s.log();
    assert_eq!(
        log.lines().filter(|l| l.contains("refused")).count(),
        1,
        "{log}"
    );
}

#[test]
fn root_control_clients_inside_the_sandbox_are_refused() {
    skip_unless_root!();
    refused_from_inside(Mode::Root);
}

#[test]
fn rootless_control_clients_inside_the_sandbox_are_refused() {
    skip_unless_root!();
    refused_from_inside(Mode::Rootless);
}

/// A server that records what its one client sends (`MSG <bytes> <cmsgs>`
/// lines, then `DONE`) into argv[2].
const FAKE_SERVER: &str = r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.bind(sys.argv[1])
s.listen(1)
open(sys.argv[2] + '.ready', 'w').close()
c, _ = s.accept()
c.settimeout(5)
got = []
while True:
    try:
        data, anc, flags, addr = c.recvmsg(1 << 20, socket.CMSG_SPACE(64 * 4))
    except OSError as e:
        got.append('ERR %s' % e)
        break
    if not data and not anc:
        break
    got.append('MSG %d %d' % (len(data), len(anc)))
open(sys.argv[2], 'w').write(''.join(l + '\n' for l in got) + 'DONE\n')
"#;

#[test]
fn a_client_refuses_a_control_socket_another_process_serves() {
    skip_unless_root!();
    let tb = Testbed::new("ctlfake");
    let profile = profile_file("ctlfake", r#"{"run": {"command": ["sleep", "infinity"]}}"#);
    let p = profile.display().to_string();
    let s = Session::start(&tb, Mode::Root, &profile);
    let sock = s.dir().join("control.sock");
    let real = s.dir().join("control.sock.real");
    // The real socket steps aside (renaming keeps it bound), a fake takes
    // its place.
    std::fs::rename(&sock, &real).unwrap();
    let log = shared_dir("fake").join("log");
    let mut fake = Command::new(PY)
        .args(["-c", FAKE_SERVER])
        .arg(&sock)
        .arg(&log)
        .spawn()
        .unwrap();
    let ready = PathBuf::from(format!("{}.ready", log.display()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "the fake server never listened");
        std::thread::sleep(Duration::from_millis(20));
    }

    let o = out(Mode::Root.pal(&tb, &[], &["exec", &p, "--", "echo", "leaked"]));
    let (stdout, stderr) = text(&o);
    assert!(!o.status.success(), "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("not using the control socket")
            && stderr.contains(&format!("it is served by pid {}", fake.id())),
        "{stderr}"
    );
    let _ = fake.wait();
    let got = std::fs::read_to_string(&log).unwrap();
    assert_eq!(got, "DONE\n", "the client sent something: {got}");

    // The real supervisor, back in place, still serves.
    std::fs::remove_file(&sock).unwrap();
    std::fs::rename(&real, &sock).unwrap();
    let o = s.sh(&[], "echo back");
    assert_eq!(text(&o).0, "back\n", "{}", text(&o).1);
}

/// The caller's variables that name host sockets.
const HOST_SOCKETS: [&str; 4] = [
    "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/0/bus",
    "SSH_AUTH_SOCK=/tmp/ssh-pallium/agent.1",
    "DISPLAY=:7",
    "XDG_RUNTIME_DIR=/run/user/4242",
];

/// `NAME=` lines of `env` output.
fn names(env: &str) -> Vec<&str> {
    env.lines().filter_map(|l| l.split('=').next()).collect()
}

fn environment_is_filtered(mode: Mode) {
    if !can_run(mode) {
        return;
    }
    let tag = match mode {
        Mode::Root => "ctlenv",
        Mode::Rootless => "ctlenvrl",
    };
    let tb = Testbed::new(tag);
    let mut env: Vec<&str> = HOST_SOCKETS.to_vec();
    env.push("PALLIUM_CTL_KEEP=kept");

    // Default: every host-socket variable is withheld, others kept.
    let plain = profile_file(&format!("{tag}-plain"), "{}");
    let o = out(mode.pal(
        &tb,
        &env,
        &["exec", "--one-shot", plain.to_str().unwrap(), "--", "env"],
    ));
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    let got = names(&stdout);
    for v in [
        "DBUS_SESSION_BUS_ADDRESS",
        "SSH_AUTH_SOCK",
        "DISPLAY",
        "XDG_RUNTIME_DIR",
        "PALLIUM_LOG",
    ] {
        assert!(!got.contains(&v), "{v} reached the application: {stdout}");
    }
    assert!(stdout.contains("PALLIUM_CTL_KEEP=kept\n"), "{stdout}");

    // pass and set, in a running session: the exec client sends its whole
    // environment, the supervisor filters it.
    let profile = profile_file(
        tag,
        r#"{"sandbox": {"environment": {"pass": ["DISPLAY", "NOT_SET_ANYWHERE"], "set": {"PALLIUM_CTL_SET": "a b=c", "SSH_AUTH_SOCK": "/nowhere"}}},
            "run": {"command": ["sleep", "infinity"]}}"#,
    );
    let s = Session::start(&tb, mode, &profile);
    // (Rootless, XDG_RUNTIME_DIR is where the client finds the session: the
    // test user's own, still withheld from the application.)
    env.retain(|v| !v.starts_with("XDG_RUNTIME_DIR="));
    let o = s.sh(&env, "env");
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    let got = names(&stdout);
    assert!(stdout.contains("DISPLAY=:7\n"), "passed: {stdout}");
    assert!(stdout.contains("PALLIUM_CTL_SET=a b=c\n"), "set: {stdout}");
    assert!(
        stdout.contains("SSH_AUTH_SOCK=/nowhere\n"),
        "set wins: {stdout}"
    );
    assert!(!stdout.contains("agent.1"), "{stdout}");
    assert!(!got.contains(&"DBUS_SESSION_BUS_ADDRESS"), "{stdout}");
    assert!(!got.contains(&"XDG_RUNTIME_DIR"), "{stdout}");
    assert!(!got.contains(&"NOT_SET_ANYWHERE"), "{stdout}");
}

#[test]
fn root_environment_carries_no_host_socket_address() {
    skip_unless_root!();
    environment_is_filtered(Mode::Root);
}

#[test]
fn rootless_environment_carries_no_host_socket_address() {
    skip_unless_root!();
    environment_is_filtered(Mode::Rootless);
}
