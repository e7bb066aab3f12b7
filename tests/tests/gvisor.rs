//! `sandbox.gvisor` end to end, as root and as the rootless
//! test user: the command sees gVisor's kernel, not the host's; its exit
//! code, stdin and stdout are pallium's; its network is the session's (the
//! testbed's web host answers it with the address it came from); a second
//! `pallium exec` joins the running gVisor session; output redirected to a
//! file lands where the file's offset says; without runsc, one clear line
//! names the package.

mod common;

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{pal, pallium, profile_file, text, Mode};
use pallium_tests::{skip_unless_root, Testbed};

const GVISOR: &str = r#"{"sandbox": {"gvisor": true}}"#;

fn runsc_installed() -> bool {
    if std::path::Path::new("/usr/bin/runsc").is_file() {
        return true;
    }
    pallium_tests::skip("runsc is not installed (Debian package runsc)");
    false
}

/// [`common::tun_usable`], reported as a skip when not.
fn tun_usable_or_skip() -> bool {
    let ok = common::tun_usable();
    if !ok {
        pallium_tests::skip("/dev/net/tun is not world read-write");
    }
    ok
}

/// `pallium exec --one-shot GVISOR -- sh -c SCRIPT` with `input` on stdin.
fn exec_with_input(tb: &Testbed, mode: Mode, script: &str, input: &str) -> Output {
    let mut child = pal(
        tb,
        mode,
        &["exec", "--one-shot", GVISOR, "--", "sh", "-c", script],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("run pallium");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn kernel_stdio_exit_code_and_network(mode: Mode) {
    let tb = Testbed::new(match mode {
        Mode::Root => "gvroot",
        Mode::Rootless => "gvuser",
    });
    let script = format!(
        "dmesg | head -1; uname -r; read line; echo \"stdin=$line\"; \
         curl -sS -4 --max-time 10 {}; echo; exit 42",
        tb.web4_url()
    );
    let o = exec_with_input(&tb, mode, &script, "hello gvisor\n");
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(42), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.first().is_some_and(|l| l.contains("gVisor")),
        "{stdout}{stderr}"
    );
    let host_release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_ne!(lines.get(1).copied(), Some(host_release.trim()), "{stdout}");
    assert_eq!(
        lines.get(2).copied(),
        Some("stdin=hello gvisor"),
        "{stdout}"
    );
    // The web host answers with the client's address: the session's traffic
    // left through the session's uplink, from the testbed's host.
    assert_eq!(
        lines.get(3).copied(),
        Some(tb.host_v4().to_string().as_str()),
        "{stdout}{stderr}"
    );
    assert_eq!(common::wait_clean(&tb), Vec::<String>::new());
}

#[test]
fn gvisor_as_root() {
    skip_unless_root!();
    if !runsc_installed() {
        return;
    }
    kernel_stdio_exit_code_and_network(Mode::Root);
}

#[test]
fn gvisor_rootless() {
    skip_unless_root!();
    if !runsc_installed() || !tun_usable_or_skip() {
        return;
    }
    kernel_stdio_exit_code_and_network(Mode::Rootless);
}

#[test]
fn a_relayed_signal_reaches_the_command_inside_gvisor() {
    skip_unless_root!();
    if !runsc_installed() {
        return;
    }
    use std::io::{BufRead, BufReader};
    let tb = Testbed::new("gvsig");
    let script = "trap 'echo got-term; exit 7' TERM; echo ready; sleep 60 & wait";
    let mut child = pal(
        &tb,
        Mode::Root,
        &["exec", "--one-shot", GVISOR, "--", "sh", "-c", script],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    // `ip netns exec` execs pallium: the child is pallium itself.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(rest, "got-term\n");
    assert_eq!(status.code(), Some(7));
    assert_eq!(common::wait_clean(&tb), Vec::<String>::new());
}

#[test]
fn a_terminal_stays_a_terminal_under_gvisor() {
    skip_unless_root!();
    if !runsc_installed() {
        return;
    }
    if Command::new("script").arg("--version").output().is_err() {
        pallium_tests::skip("no script(1) to give pallium a terminal");
        return;
    }
    let tb = Testbed::new("gvtty");
    // script(1) gives pallium a terminal; pallium gives the command a PTY,
    // which runsc passes into gVisor.
    let inner = format!(
        "{} exec --one-shot '{GVISOR}' -- sh -c 'test -t 0 && test -t 1 && echo is-a-tty; dmesg | head -1; exit 5'; echo rc=$?",
        pallium().display()
    );
    let o = tb
        .host_exec(["script", "-qec", &inner, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = text(&o).0;
    assert!(stdout.contains("is-a-tty"), "{stdout}");
    assert!(stdout.contains("gVisor"), "{stdout}");
    assert!(stdout.contains("rc=5"), "{stdout}");
    assert_eq!(common::wait_clean(&tb), Vec::<String>::new());
}

/// gVisor writes a regular file given as stdout from offsets of its own: the
/// command's output must still land after what was written before it.
#[test]
fn output_to_a_regular_file_follows_what_came_before() {
    skip_unless_root!();
    if !runsc_installed() {
        return;
    }
    let tb = Testbed::new("gvfile");
    let file = std::env::temp_dir().join(format!("pallium-gvfile-{}", std::process::id()));
    let script = format!(
        "(echo first; {} exec --one-shot '{GVISOR}' -- sh -c 'echo out; echo err >&2'; echo last) > {} 2>&1 < /dev/null",
        pallium().display(),
        file.display()
    );
    let o = tb.host_exec(["sh", "-c", &script]).output().unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    let written = std::fs::read_to_string(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    assert_eq!(written, "first\nout\nerr\nlast\n");
    assert_eq!(common::wait_clean(&tb), Vec::<String>::new());
}

/// gVisor runs only in the application's namespace: `--namespace` naming
/// another is one clear line, before anything starts.
#[test]
fn gvisor_refuses_another_namespace() {
    let o = common::run(&[
        "exec",
        "--one-shot",
        "--namespace",
        "0",
        r#"{"chain": [{"type": "socks", "address": "192.0.2.1:1080"}], "sandbox": {"gvisor": true}}"#,
        "--",
        "true",
    ]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--namespace 0") && stderr.contains("gvisor"),
        "{stderr}"
    );
}

/// A command that is not in the view: the same line and exit code as
/// without gVisor (not runsc's own message).
#[test]
fn a_missing_command_is_the_same_clear_line_as_without_gvisor() {
    skip_unless_root!();
    if !runsc_installed() {
        return;
    }
    let tb = Testbed::new("gvnocmd");
    for profile in [GVISOR, "default"] {
        let o = pal(
            &tb,
            Mode::Root,
            &["exec", "--one-shot", profile, "--", "no-such-cmd-pallium"],
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
        let (_, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(127), "{profile}: {stderr}");
        assert_eq!(
            stderr.trim(),
            "pallium: cannot run 'no-such-cmd-pallium': No such file or directory",
            "{profile}"
        );
    }
    assert_eq!(common::wait_clean(&tb), Vec::<String>::new());
}

/// A running gVisor session (`sleep infinity`), stopped on drop.
struct Session<'a> {
    tb: &'a Testbed,
    profile: String,
    child: Child,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = pal(self.tb, Mode::Root, &["stop", &self.profile])
            .stdin(Stdio::null())
            .output();
        let _ = self.child.wait();
    }
}

#[test]
fn exec_joins_a_running_gvisor_session() {
    skip_unless_root!();
    if !runsc_installed() {
        return;
    }
    let tb = Testbed::new("gvexec");
    let prof = profile_file(
        "gvexec",
        r#"{"sandbox": {"gvisor": true, "paths": {}}, "run": {"command": ["sh", "-c", "echo first > /tmp/mark; exec sleep infinity"]}}"#,
    );
    let p = prof.display().to_string();
    let child = pal(&tb, Mode::Root, &["run", "--quiet", &p])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let s = Session {
        tb: &tb,
        profile: p.clone(),
        child,
    };
    // Until the session is registered, exec finds none; from then on it must
    // join — waiting, if need be, for the session and its container to be
    // up — and the retries only wait for the first command to get going.
    let deadline = Instant::now() + Duration::from_secs(60);
    let out = loop {
        let o = pal(
            &tb,
            Mode::Root,
            &[
                "exec",
                &p,
                "--",
                "sh",
                "-c",
                "cat /tmp/mark; ps -e | grep -c sleep; exit 3",
            ],
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
        let (stdout, stderr) = text(&o);
        if o.status.code() == Some(3) {
            if stdout == "first\n1\n" {
                break stdout;
            }
        } else {
            assert!(
                stderr.contains("no session of profile"),
                "an exec into the starting session failed: {stdout}{stderr}"
            );
        }
        assert!(Instant::now() < deadline, "never joined: {stdout}{stderr}");
        std::thread::sleep(Duration::from_millis(10));
    };
    // The first command's file and its process, seen from inside the same
    // gVisor kernel.
    assert_eq!(out, "first\n1\n");
    // runsc's processes hold capabilities only in the user namespace runsc
    // made inside the sandbox: audit shows them and finds nothing to flag.
    let audit = pal(&tb, Mode::Root, &["audit", &p])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (a_out, a_err) = text(&audit);
    assert!(audit.status.success(), "{a_out}{a_err}");
    assert!(a_out.contains("nested inside the sandbox"), "{a_out}");
    drop(s);
    assert_eq!(common::wait_clean(&tb), Vec::<String>::new());
}

#[test]
fn missing_runsc_is_one_clear_line() {
    skip_unless_root!();
    let tb = Testbed::new("gvmissing");
    let o = tb
        .host_exec([
            "/usr/bin/env",
            "PATH=/nonexistent",
            pallium().to_str().unwrap(),
            "exec",
            "--one-shot",
            GVISOR,
            "--",
            "true",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("runsc") && stderr.contains("Debian package: runsc"),
        "{stderr}"
    );
    // Refused at check time, before anything is set up.
    let o = tb
        .host_exec([
            pallium().to_str().unwrap(),
            "exec",
            "--one-shot",
            r#"{"sandbox": {"gvisor": true, "unpriv_user_ns": false}}"#,
            "--",
            "true",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sandbox.unpriv_user_ns"), "{stderr}");
    assert_eq!(common::wait_clean(&tb), Vec::<String>::new());
}
