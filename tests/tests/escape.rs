//! The escape suite: as the sandboxed
//! application, try to get out — host files, processes, sockets (among them
//! those the environment names), mounts, modules, setuid binaries, the
//! caller's terminal, the keyring, the control plane, host root's powers,
//! kernel surfaces (io_uring, vsock, x32, personality) and the host's own
//! addresses — in four views (the default, a bind-heavy one, a virtual user,
//! gVisor), as root and as the rootless test user. Every cell must be
//! `blocked`; an attempt that did not run as intended is an `ERROR`. The
//! table is written to stderr (and appended to `PALLIUM_ESCAPE_REPORT`).
//!
//! Each (mode, view) is one session (`pallium run` of the view with
//! `sleep infinity`): one python script (`escape/attempts.py`) makes the
//! attempts from inside it, the crafted-symlink `cp`/`mv` attempts use it
//! from outside. The four views run in parallel.
#![allow(unsafe_code)] // Tests call raw syscalls to attack or inspect the sandbox.

mod common;
#[path = "escape/host.rs"]
mod host;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{text, Mode};
use host::{Host, PY, SECRET};
use pallium_tests::{skip_unless_root, TestUser, Testbed};

const ATTEMPTS_PY: &str = include_str!("escape/attempts.py");
/// The command of each view's session.
const SESSION_COMMAND: [&str; 2] = ["sleep", "infinity"];

#[derive(Clone, Copy, PartialEq, Debug)]
enum View {
    Default,
    Binds,
    Virtuser,
    Gvisor,
}

const VIEWS: [View; 4] = [View::Default, View::Binds, View::Virtuser, View::Gvisor];

impl View {
    fn name(self) -> &'static str {
        match self {
            View::Default => "default",
            View::Binds => "binds",
            View::Virtuser => "virtuser",
            View::Gvisor => "gvisor",
        }
    }

    /// The profile's `sandbox` object. The bind-heavy view binds system
    /// directories and two scratch directories of the host, never a path an
    /// attempt targets.
    fn sandbox(self, host: &Host) -> serde_json::Value {
        use serde_json::json;
        match self {
            View::Default => json!({}),
            View::Binds => json!({"paths": {
                "mode": "append",
                "whitelist": ["/usr", "/etc", "/home", "/opt", "/var/lib", "/srv"],
                "bind": [
                    ["/mnt/scratch", host.dir.join("scratch")],
                    ["/mnt/data", host.dir.join("data")],
                ],
            }}),
            View::Virtuser => json!({"virtuser": {"name": "esc"}}),
            View::Gvisor => json!({"gvisor": true}),
        }
    }
}

/// The rows: `(tag, attempt)`; the tag is what attempts.py reports.
const ROWS: &[(&str, &str)] = &[
    ("control", "0 control: the view is what it claims"),
    (
        "host-file-tmp",
        "1 read a host file outside the view (/tmp)",
    ),
    (
        "host-file-root",
        "1 read a host file outside the view (/root)",
    ),
    ("host-dir-write", "2 write into a host dir outside the view"),
    ("usr-write", "2 write into /usr"),
    ("host-proc", "3 see and signal a host process"),
    ("host-ptrace", "4 ptrace a host process"),
    ("unix-path", "5 connect to a host pathname Unix socket"),
    ("unix-abstract", "5 connect to a host abstract Unix socket"),
    ("mount", "6 mount tmpfs"),
    ("mount-userns", "6 mount tmpfs in a new user namespace"),
    ("module", "7 load a kernel module"),
    (
        "userns-denied",
        "8 user namespace with unpriv_user_ns=false",
    ),
    ("setuid", "9 gain root through a setuid-root binary"),
    ("tiocsti", "10 inject keystrokes with TIOCSTI"),
    ("keyring", "11 kernel keyring (keyctl, add_key)"),
    ("cp-out", "12 copy out through a crafted symlink"),
    ("cp-in", "12 copy in through a crafted symlink"),
    ("control-plane", "a control socket, exec --namespace 0"),
    ("core-pattern", "b write core_pattern"),
    ("shadow", "b read /etc/shadow"),
    ("raw-disk", "b read a raw disk"),
    ("host-tmp", "b create a file in the host's /tmp"),
    ("env-dbus", "c DBUS_SESSION_BUS_ADDRESS socket"),
    ("env-ssh", "c SSH_AUTH_SOCK socket"),
    ("env-x11", "c DISPLAY socket (X11)"),
    ("runuser-bus", "c /run/user/UID/bus"),
    ("busctl", "d D-Bus call on the host's bus"),
    ("systemd-run", "d systemd-run --user"),
    ("io-uring", "e io_uring_setup"),
    ("vsock", "f socket(AF_VSOCK)"),
    ("x32", "g x32 syscalls"),
    ("tioclinux", "h TIOCLINUX on the caller's terminal"),
    ("ptrace-init", "i ptrace the sandbox's init"),
    ("personality", "j personality(ADDR_NO_RANDOMIZE)"),
    ("host-addrs", "k host's own addresses (empty chain)"),
];

/// Rows that only apply as root: `/root`, and the root-mode empty chain.
fn applies(tag: &str, mode: Mode) -> bool {
    mode == Mode::Root || !matches!(tag, "host-file-root" | "host-addrs")
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Verdict {
    /// Not run: gVisor's runsc is not installed.
    Skipped,
    Blocked,
    Error,
    Escaped,
}

impl Verdict {
    fn parse(s: &str) -> Verdict {
        match s {
            "blocked" => Verdict::Blocked,
            "ESCAPED" => Verdict::Escaped,
            _ => Verdict::Error,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Verdict::Skipped => "skipped",
            Verdict::Blocked => "blocked",
            Verdict::Escaped => "ESCAPED",
            Verdict::Error => "ERROR",
        }
    }
}

/// One cell: the worst verdict of its parts, and what each part said.
#[derive(Clone, Debug)]
struct Cell {
    verdict: Verdict,
    details: Vec<String>,
}

/// One view's cells by tag.
#[derive(Default)]
struct Cells(BTreeMap<String, Cell>);

impl Cells {
    fn add(&mut self, tag: &str, verdict: Verdict, detail: impl Into<String>) {
        let detail = detail.into().replace('\n', " ");
        let c = self.0.entry(tag.to_string()).or_insert(Cell {
            verdict,
            details: Vec::new(),
        });
        c.verdict = c.verdict.max(verdict);
        c.details.push(detail);
    }

    /// Parse `RESULT tag verdict detail` lines; a `COVERED:<row>` verdict
    /// takes that row's verdict.
    fn parse(&mut self, out: &str) {
        let mut covered = Vec::new();
        for l in out.lines() {
            let Some(rest) = l.trim().strip_prefix("RESULT ") else {
                continue;
            };
            let mut it = rest.splitn(3, ' ');
            let (tag, word, detail) = (
                it.next().unwrap_or(""),
                it.next().unwrap_or(""),
                it.next().unwrap_or(""),
            );
            match word.strip_prefix("COVERED:") {
                Some(row) => covered.push((tag.to_string(), row.to_string(), detail.to_string())),
                None => self.add(tag, Verdict::parse(word), detail),
            }
        }
        for (tag, row, detail) in covered {
            let by = self.0.get(&row).map_or(Verdict::Error, |c| c.verdict);
            self.add(&tag, by, format!("{detail}: {row} is {}", by.word()));
        }
    }
}

/// Everything one view needs to know.
struct Run<'a> {
    tb: &'a Testbed,
    host: &'a Host,
    view: View,
    mode: Mode,
    /// `/tmp/pallium-esc-<id>-<view>`: every file the application makes in
    /// /tmp, and so what a shared /tmp would leave on the host.
    prefix: String,
    profile: PathBuf,
}

fn run_suite(mode: Mode) {
    let started = Instant::now();
    let tb = Testbed::new(match mode {
        Mode::Root => "escroot",
        Mode::Rootless => "escuser",
    });
    let host = Host::new(&tb, mode);
    for (d, file) in [("scratch", None), ("data", Some("data\n"))] {
        let p = host.dir.join(d);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        if let Some(t) = file {
            host::write(&p.join("file"), t, 0o644);
        }
    }
    let mut results: Vec<Cells> = std::thread::scope(|s| {
        let handles: Vec<_> = VIEWS
            .iter()
            .map(|&view| {
                let (tb, host) = (&tb, &host);
                s.spawn(move || run_view(tb, host, view))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // What the host saw: connections the attempts announced, the victim.
    let mut extra: Vec<(String, Cells)> = Vec::new();
    for (listener, tag) in host.connections() {
        let row = match listener.as_str() {
            "sock" => "unix-path",
            "abstract" => "unix-abstract",
            "agent" => "env-ssh",
            "x11" | "x11-abstract" => "env-x11",
            "tcp-any" | "tcp-lo" => "host-addrs",
            "dbus" => "env-dbus",
            _ => "runuser-bus",
        };
        let at = VIEWS
            .iter()
            .position(|v| tag == format!("{}/{}", mode.name(), v.name()));
        match at {
            Some(i) => results[i].add(
                row,
                Verdict::Escaped,
                format!("the host's {listener} listener logged a connection"),
            ),
            None => {
                let mut c = Cells::default();
                for v in VIEWS {
                    c.add(
                        v.name(),
                        Verdict::Escaped,
                        format!("{listener} from {tag:?}"),
                    );
                }
                extra.push(("host listener: an unannounced connection".into(), c));
            }
        }
    }
    let state = host.victim_state();
    if state != "S" {
        let mut c = Cells::default();
        for v in VIEWS {
            c.add(v.name(), Verdict::Escaped, format!("state {state}"));
        }
        extra.push(("3/4 the host process is untouched".into(), c));
    }
    let note = format!(
        "{} mode: {:.1} s; host io_uring_disabled={}, x32 on the host: {}",
        mode.name(),
        started.elapsed().as_secs_f64(),
        std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
            .map_or("?".into(), |s| s.trim().to_string()),
        host_x32()
    );
    let bad = report(mode, &results, &extra, &note);
    drop(host);
    assert!(
        bad.is_empty(),
        "{} cells not blocked:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// The x32 ABI on the host, outside any sandbox (an x32 getpid).
fn host_x32() -> &'static str {
    // SAFETY: getpid with the x32 bit: no arguments, no memory touched.
    let r = unsafe { libc::syscall(0x4000_0000 | libc::SYS_getpid) };
    if r == -1 {
        "no (ENOSYS: the g row cannot tell a filter from the kernel here)"
    } else {
        "yes"
    }
}

fn run_view(tb: &Testbed, host: &Host, view: View) -> Cells {
    let started = Instant::now();
    let mode = host.mode;
    let run = Run {
        tb,
        host,
        view,
        mode,
        prefix: format!("/tmp/pallium-esc-{}-{}", host.id, view.name()),
        profile: host.dir.join(format!("{}.json", view.name())),
    };
    let mut cells = Cells::default();
    if view == View::Gvisor && !Path::new("/usr/bin/runsc").is_file() {
        pallium_tests::skip("runsc is not installed (Debian package runsc): no gVisor column");
        for (tag, _) in ROWS {
            cells.add(tag, Verdict::Skipped, "runsc is not installed");
        }
        return cells;
    }
    let json = serde_json::json!({
        "sandbox": view.sandbox(host),
        "run": {"command": SESSION_COMMAND},
    })
    .to_string();
    host::write(&run.profile, &json, 0o644);
    let session = Session::start(&run);
    match session.wait_ready() {
        Ok(()) => {
            batch(&run, &json, &mut cells);
            cp_mv_symlinks(&run, &mut cells);
        }
        Err(e) => cells.add("control", Verdict::Error, e),
    }
    drop(session);
    userns_denied(&run, &mut cells);
    cells.add(
        "control",
        Verdict::Blocked,
        format!("view done in {:.1} s", started.elapsed().as_secs_f64()),
    );
    // Rows that reported nothing are errors.
    for (tag, _) in ROWS {
        if applies(tag, mode) && !cells.0.contains_key(*tag) {
            cells.add(tag, Verdict::Error, "no result");
        }
    }
    cleanup_tmp(&run.prefix);
    cells
}

/// Remove what the application left in a shared /tmp.
fn cleanup_tmp(prefix: &str) {
    let name = Path::new(prefix).file_name().unwrap().to_string_lossy();
    for e in std::fs::read_dir("/tmp").into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(name.as_ref()) {
            let p = e.path();
            let _ = std::fs::remove_file(&p).or_else(|_| std::fs::remove_dir_all(&p));
        }
    }
}

/// The session's environment: a D-Bus session bus, an ssh agent and an X
/// display, all listening on the host.
fn session_env(host: &Host) -> Vec<(String, String)> {
    vec![
        (
            "DBUS_SESSION_BUS_ADDRESS".into(),
            format!("unix:path={}", host.dbus.display()),
        ),
        ("SSH_AUTH_SOCK".into(), host.agent.display().to_string()),
        ("DISPLAY".into(), format!(":{}", host.display)),
    ]
}

/// `argv` in the testbed's host namespace as the mode's user, with the
/// session's environment.
fn in_host(run: &Run<'_>, argv: Vec<String>) -> Command {
    let mut full = vec!["/usr/bin/env".to_string()];
    full.extend(
        session_env(run.host)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}")),
    );
    full.extend(argv);
    run.mode.host_exec(run.tb, full)
}

/// `pallium ARGS`, see [`in_host`].
fn pal(run: &Run<'_>, args: &[&str]) -> Command {
    let mut argv = vec![run.mode.pallium().display().to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    in_host(run, argv)
}

/// `cmd`'s output, or an error when it takes longer than `limit` (then it
/// is killed).
fn output_within(mut cmd: Command, limit: Duration) -> Result<Output, String> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {cmd:?}: {e}"))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => {
            // SAFETY: kill(2) of our own child's pid, not yet reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            Err(format!("timed out after {limit:?}"))
        }
    }
}

/// A running session of the view, stopped on drop.
struct Session<'a> {
    run: &'a Run<'a>,
    child: Child,
}

impl<'a> Session<'a> {
    fn start(run: &'a Run<'a>) -> Session<'a> {
        let p = run.profile.display().to_string();
        let child = pal(run, &["run", "--quiet", &p])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Session { run, child }
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(40);
        let mut last = String::new();
        while Instant::now() < deadline {
            let o = sh(self.run, "true");
            if o.status.success() {
                return Ok(());
            }
            last = text(&o).1;
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("the session never became ready: {last}"))
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let p = self.run.profile.display().to_string();
        let _ = output_within(pal(self.run, &["stop", &p]), Duration::from_secs(20));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pallium exec PROFILE -- /bin/sh -c SCRIPT` in the running session.
fn sh(run: &Run<'_>, script: &str) -> Output {
    let p = run.profile.display().to_string();
    output_within(
        pal(run, &["exec", &p, "--", "/bin/sh", "-c", script]),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(1 << 8),
        stdout: Vec::new(),
        stderr: e.into_bytes(),
    })
}

/// The host's block devices backed by hardware (not loop, zram, …): `(name,
/// "major:minor")`.
fn disks() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.path().join("device").exists() {
            if let Ok(dev) = std::fs::read_to_string(e.path().join("dev")) {
                out.push((
                    e.file_name().to_string_lossy().into_owned(),
                    dev.trim().to_string(),
                ));
            }
        }
    }
    out
}

/// attempts.py in the session, under `script` so that the caller has a
/// real terminal: stdin is a file, so pallium gives the command the
/// caller's terminal as stdout. Afterwards the outer shell reads what
/// reached the terminal (TIOCSTI).
fn batch(run: &Run<'_>, profile_json: &str, cells: &mut Cells) {
    let (host, tb, view, mode) = (run.host, run.tb, run.view, run.mode);
    let name = view.name();
    // The application may find pallium where the view shows the host's
    // binary; if not, it has downloaded one (a copy in its /tmp).
    let exe = mode.pallium().display().to_string();
    let copy = format!("{}-pallium", run.prefix);
    if !sh(run, &format!("test -x {exe}")).status.success() {
        let p = run.profile.display().to_string();
        let o = output_within(
            pal(run, &["cp", &exe, "--to", &p, &copy]),
            Duration::from_secs(60),
        );
        if !o.as_ref().is_ok_and(|o| o.status.success()) {
            cells.add(
                "control-plane",
                Verdict::Error,
                format!("pallium cp of the binary: {o:?}"),
            );
        }
    }
    let host_tmp_file = format!("{}-created", run.prefix);
    let core_marker = format!("core.pallium-esc-{}-{name}", host.id);
    let usr_file = format!("/usr/pallium-escape-{}-{name}", host.id);
    let scratch_name = format!("from-{}", host.id);
    let cfg = serde_json::json!({
        "view": name,
        "session_command": SESSION_COMMAND.join(" "),
        "host_uid": match mode {
            Mode::Root => 0,
            Mode::Rootless => TestUser::get().uid(),
        },
        "mode": mode.name(),
        "gvisor": view == View::Gvisor,
        "host_release": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap().trim(),
        "scratch_file": format!("/mnt/scratch/{scratch_name}"),
        "secret": SECRET,
        "secret_path": host.dir.join("secret"),
        "root_marker": host.root_marker,
        "host_dir": host.dir,
        "usr_file": usr_file,
        "victim_pid": host.victim_pid(),
        "sock_path": host.dir.join("sock"),
        "abstract_name": host.abstract_name,
        "suid_path": host.suid,
        "tmp_prefix": run.prefix,
        "host_tmp_file": host_tmp_file,
        "core_marker": core_marker,
        "disks": disks(),
        "dbus_path": host.dbus,
        "dbus_daemon": host.dbus_daemon,
        "ssh_path": host.agent,
        "x11_path": host.x11,
        "runuser_bus": host.runuser_bus,
        "pallium_candidates": [exe, copy],
        "profile_path": run.profile,
        "profile_json": profile_json,
        "profile_id": common::profile_dir_name(&run.profile),
        "web_url": format!("http://{}/", tb.web_v4()),
        "host_targets": (mode == Mode::Root).then(|| serde_json::json!([
            [tb.host_v4().to_string(), host::TCP_ANY],
            ["GATEWAY", host::TCP_ANY],
            ["GATEWAY", host::TCP_LO],
        ])),
    });
    let script = host.dir.join(format!("{name}-attempts.py"));
    let cfg_literal = serde_json::to_string(&cfg.to_string()).unwrap();
    host::write(
        &script,
        &format!("import json\nCFG = json.loads({cfg_literal})\n{ATTEMPTS_PY}"),
        0o644,
    );
    let outer = host.dir.join(format!("{name}-outer.sh"));
    host::write(
        &outer,
        &format!(
            "'{exe}' exec '{}' -- {PY} - < '{}'\n\
             echo \"PALLIUM_EXIT=$?\"\n\
             read -t 1 line; echo \"OUTER=[$line]\"\n",
            run.profile.display(),
            script.display()
        ),
        0o644,
    );
    let argv = [
        "script",
        "-qec",
        &format!("bash {}", outer.display()),
        "/dev/null",
    ];
    let o = match output_within(
        in_host(run, argv.iter().map(|s| s.to_string()).collect()),
        Duration::from_secs(150),
    ) {
        Ok(o) => o,
        Err(e) => {
            cells.add("control", Verdict::Error, format!("attempts.py: {e}"));
            return;
        }
    };
    let (stdout, stderr) = text(&o);
    cells.parse(&stdout);
    if !stdout.contains("ATTEMPTS DONE") {
        let tail: String = stdout
            .chars()
            .rev()
            .take(600)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        cells.add(
            "control",
            Verdict::Error,
            format!("attempts.py did not finish: {tail} {stderr}"),
        );
    }
    // The host's side of the attempts.
    let outer_line = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("OUTER=["));
    match outer_line {
        Some(l) if l.contains("NJECTED") => cells.add(
            "tiocsti",
            Verdict::Escaped,
            format!("the caller's shell read {l:?}"),
        ),
        Some(_) => {}
        None => cells.add(
            "tiocsti",
            Verdict::Error,
            "the outer shell printed no OUTER line",
        ),
    }
    if view == View::Binds {
        let p = host.dir.join("scratch").join(&scratch_name);
        if std::fs::read_to_string(&p).ok().as_deref() != Some("scratch\n") {
            cells.add(
                "control",
                Verdict::Error,
                "the scratch bind is not the host's directory",
            );
        }
        let _ = std::fs::remove_file(p);
    }
    let checks = [
        ("host-dir-write", host.dir.join(format!("written-{name}"))),
        ("usr-write", PathBuf::from(&usr_file)),
        ("host-tmp", PathBuf::from(&host_tmp_file)),
    ];
    for (tag, p) in checks {
        if p.exists() {
            let _ = std::fs::remove_file(&p);
            cells.add(
                tag,
                Verdict::Escaped,
                format!("{} appeared on the host", p.display()),
            );
        }
    }
    if let Some(seen) = host::core_restore() {
        let v = if seen == core_marker {
            Verdict::Escaped
        } else {
            Verdict::Error
        };
        cells.add(
            "core-pattern",
            v,
            format!("the host's core_pattern was {seen:?} (restored)"),
        );
    }
}

/// 8: `unpriv_user_ns: false` added to the view, in a one-shot session.
fn userns_denied(run: &Run<'_>, cells: &mut Cells) {
    let mut sandbox = run.view.sandbox(run.host);
    sandbox["unpriv_user_ns"] = false.into();
    let prof = serde_json::json!({ "sandbox": sandbox }).to_string();
    let code = "import ctypes, os\n\
        L = ctypes.CDLL(None, use_errno=True)\n\
        r = L.unshare(0x10000000); e = ctypes.get_errno()\n\
        print('RESULT userns-denied', 'blocked' if r else 'ESCAPED', 'unshare(CLONE_NEWUSER):', os.strerror(e) if r else 'ok')\n";
    let o = output_within(
        pal(run, &["exec", "--one-shot", &prof, "--", PY, "-c", code]),
        Duration::from_secs(60),
    );
    let o = match o {
        Ok(o) => o,
        Err(e) => return cells.add("userns-denied", Verdict::Error, e),
    };
    let (stdout, stderr) = text(&o);
    if run.view == View::Gvisor && stderr.contains("not supported with sandbox.gvisor") {
        let line = stderr.lines().last().unwrap_or_default().to_string();
        return cells.add(
            "userns-denied",
            Verdict::Blocked,
            format!("pallium refuses the profile: {line}"),
        );
    }
    if !stdout.contains("RESULT ") {
        return cells.add(
            "userns-denied",
            Verdict::Error,
            format!("no result: {stdout} {stderr}"),
        );
    }
    cells.parse(&stdout);
}

/// 12: symbolic links made inside the sandbox that point at host paths,
/// used as `pallium cp`/`mv` sources and destinations. The host's secret
/// must never come out, and nothing may be written on the host through
/// them. A plain copy through a link to a sandbox file is the control: if
/// it fails, the rows are errors, not passes.
fn cp_mv_symlinks(run: &Run<'_>, cells: &mut Cells) {
    let name = run.view.name();
    // A secret of the view's own: a view whose `mv` moves it does not spoil
    // the others'.
    let hostdir = run.host.dir.join(format!("cp-{name}"));
    std::fs::create_dir_all(&hostdir).unwrap();
    let dir = hostdir.display().to_string();
    let secret = format!("{dir}/secret");
    host::write(Path::new(&secret), SECRET, 0o644);
    let outdir = run.host.dir.join(format!("cpout-{name}"));
    std::fs::create_dir_all(&outdir).unwrap();
    std::fs::set_permissions(&outdir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let p = run.profile.display().to_string();
    let t = &run.prefix;
    let written_in = format!("written-in-{name}");
    // Links to the host's secret (absolute, ..-laden), to its directory, and
    // one to a file of the sandbox's own (the control).
    let links = sh(
        run,
        &format!(
            "ln -s {secret} {t}-evil && ln -s ../../../../../../..{secret} {t}-evil2 && \
             ln -s {dir} {t}-evildir && ln -s {dir}/{written_in} {t}-evilin && \
             echo mine > {t}-mine && ln -s {t}-mine {t}-good && echo linked"
        ),
    );
    if !text(&links).0.contains("linked") {
        let e = format!("could not make the links: {:?}", text(&links));
        cells.add("cp-out", Verdict::Error, e.clone());
        cells.add("cp-in", Verdict::Error, e);
        return;
    }
    let copy_out = |verb: &str, link: &str, n: usize| {
        let dst = outdir.join(format!("{verb}-{n}"));
        let o = output_within(
            pal(run, &[verb, "--from", &p, link, dst.to_str().unwrap()]),
            Duration::from_secs(30),
        );
        // `mv` moves a link itself: a symbolic link on the host reveals
        // nothing to the sandbox; only a regular file with the secret would.
        let is_link = std::fs::symlink_metadata(&dst).is_ok_and(|m| m.file_type().is_symlink());
        let got = if is_link {
            format!("(the link itself: -> {:?})", std::fs::read_link(&dst).ok())
        } else {
            std::fs::read_to_string(&dst).unwrap_or_default()
        };
        let err = match o {
            Ok(o) => text(&o).1,
            Err(e) => e,
        };
        (err, got)
    };
    let (err, got) = copy_out("cp", &format!("{t}-good"), 0);
    if got != "mine\n" {
        cells.add(
            "cp-out",
            Verdict::Error,
            format!("control copy failed: {err}"),
        );
    } else {
        let mut leaked = Vec::new();
        let mut refused = Vec::new();
        let links = [
            format!("{t}-evil"),
            format!("{t}-evil2"),
            format!("{t}-evildir/secret"),
        ];
        for (n, link) in links.iter().enumerate() {
            for verb in ["cp", "mv"] {
                let (err, got) = copy_out(verb, link, n + 1);
                if got.contains(SECRET) {
                    leaked.push(format!("{verb} {link}"));
                } else if got.starts_with("(the link itself") {
                    refused.push(format!("{verb} {link}: moved {got}"));
                } else {
                    refused.push(format!(
                        "{verb} {link}: {}",
                        err.lines().last().unwrap_or("no output")
                    ));
                }
            }
        }
        let intact = std::fs::read_to_string(&secret).is_ok_and(|s| s == SECRET);
        if leaked.is_empty() && intact {
            cells.add("cp-out", Verdict::Blocked, refused.join("; "));
        } else {
            cells.add(
                "cp-out",
                Verdict::Escaped,
                format!("host secret copied or moved through {leaked:?} (secret intact: {intact})"),
            );
        }
    }
    let payload = outdir.join("payload");
    host::write(&payload, "PAYLOAD\n", 0o644);
    let mut details = Vec::new();
    for dst in [
        format!("{t}-evilin"),
        format!("{t}-evildir/{written_in}"),
        format!("{t}-evil"),
    ] {
        let o = output_within(
            pal(run, &["cp", payload.to_str().unwrap(), "--to", &p, &dst]),
            Duration::from_secs(30),
        );
        let said = match &o {
            Ok(o) if o.status.success() => "copied inside the sandbox".to_string(),
            Ok(o) => text(o).1.lines().last().unwrap_or("failed").to_string(),
            Err(e) => e.clone(),
        };
        details.push(format!("cp --to {dst}: {said}"));
    }
    let written = hostdir.join(&written_in).exists();
    let intact = std::fs::read_to_string(&secret).is_ok_and(|s| s == SECRET);
    cells.add(
        "cp-in",
        if !written && intact {
            Verdict::Blocked
        } else {
            Verdict::Escaped
        },
        format!(
            "host file written: {written}, secret intact: {intact}; {}",
            details.join("; ")
        ),
    );
}

/// The table (a column per view) and the details, to stderr (which the
/// test harness does not capture, so CI logs show it) and to
/// `PALLIUM_ESCAPE_REPORT`; returns the cells that are not blocked.
fn report(mode: Mode, results: &[Cells], extra: &[(String, Cells)], note: &str) -> Vec<String> {
    let width = ROWS.iter().map(|(_, a)| a.len()).max().unwrap_or(0).max(40);
    let mut s = format!(
        "{:width$} | {:8} | {:8} | {:8} | {:8} | {:8}\n",
        "attempt", "mode", "default", "binds", "virtuser", "gvisor"
    );
    let mut details = String::new();
    let mut bad = Vec::new();
    let mut line = |attempt: &str, tag: &str, cells: &dyn Fn(usize) -> Option<Cell>| {
        s.push_str(&format!("{attempt:width$} | {:8}", mode.name()));
        for (i, v) in VIEWS.iter().enumerate() {
            let c = cells(i).unwrap_or(Cell {
                verdict: Verdict::Error,
                details: vec!["no result".into()],
            });
            let word = if tag == "control" && c.verdict == Verdict::Blocked {
                "ok"
            } else {
                c.verdict.word()
            };
            s.push_str(&format!(" | {word:8}"));
            let d = format!(
                "{tag} | {} | {}: {word}: {}\n",
                mode.name(),
                v.name(),
                c.details.join("; ")
            );
            if c.verdict > Verdict::Blocked {
                bad.push(d.trim_end().to_string());
            }
            details.push_str(&d);
        }
        s.push('\n');
    };
    for (tag, attempt) in ROWS.iter().filter(|(t, _)| applies(t, mode)) {
        line(attempt, tag, &|i| results[i].0.get(*tag).cloned());
    }
    for (attempt, c) in extra {
        line(attempt, "host", &|i| c.0.get(VIEWS[i].name()).cloned());
    }
    let full = format!("{s}\ndetails (tag | mode | view: result: detail):\n{details}{note}\n");
    let _ = std::io::stderr().lock().write_all(full.as_bytes());
    if let Some(p) = std::env::var_os("PALLIUM_ESCAPE_REPORT") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap();
        f.write_all(full.as_bytes()).unwrap();
    }
    bad
}

#[test]
fn escape_attempts_as_root_fail() {
    skip_unless_root!();
    run_suite(Mode::Root);
}

#[test]
fn escape_attempts_rootless_fail() {
    skip_unless_root!();
    let tun_ok =
        std::fs::metadata("/dev/net/tun").is_ok_and(|m| m.permissions().mode() & 0o006 == 0o006);
    if !tun_ok {
        pallium_tests::skip("/dev/net/tun is not world read-write");
        return;
    }
    run_suite(Mode::Rootless);
}
