//! The escape suite (issue 5, item 8): as the sandboxed application, try to
//! get out — host files, host processes, host sockets, mounts, modules, user
//! namespaces, setuid binaries, the caller's terminal, the kernel keyring —
//! as root and as the rootless test user, and check that every attempt fails.
//! Each attempt prints a row `attempt | mode | result` (see `--nocapture`, or
//! the file named by `PALLIUM_ESCAPE_REPORT`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::{pallium, text};
use pallium_tests::{skip_unless_root, TestUser, Testbed};

const PY: &str = "/usr/bin/python3";

/// A file-view profile: an empty root with only the system directories.
const BASE: &str = r#"{"sandbox": {"paths": {"mode": "base", "whitelist": ["/usr", "/bin", "/lib", "/lib64", "/etc"]}}}"#;

/// Python prelude: raw syscalls with errno.
const PRELUDE: &str = r#"import ctypes, os, sys
L = ctypes.CDLL(None, use_errno=True)
L.syscall.restype = ctypes.c_long
def sc(*a):
    ctypes.set_errno(0)
    r = L.syscall(*[ctypes.c_long(x) if isinstance(x, int) else x for x in a])
    return r, ctypes.get_errno()
def res(ok, what):
    print('RESULT', 'blocked' if ok else 'ESCAPED', what)
"#;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Root,
    Rootless,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Root => "root",
            Mode::Rootless => "rootless",
        }
    }
}

/// The host side of the suite: marker files, a setuid binary, listening
/// sockets and a host process to attack, removed on drop.
struct Host {
    dir: PathBuf,
    root_marker: PathBuf,
    listener: Child,
    victim: Child,
    abstract_name: String,
}

const SECRET: &str = "pallium-escape-secret-7f3a";

impl Host {
    fn new(tb: &Testbed, mode: Mode) -> Host {
        let id = format!("{}-{}", std::process::id(), mode.name());
        let dir = PathBuf::from(format!("/tmp/pallium-escape-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, SECRET).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let root_marker = PathBuf::from(format!("/root/pallium-escape-{id}"));
        std::fs::write(&root_marker, SECRET).unwrap();
        // A setuid-root copy of cat: `suid-cat /proc/self/status` shows its own credentials.
        let suid = dir.join("suid-cat");
        pallium_tests::copy_executable(Path::new("/bin/cat"), &suid, 0o4755);
        // A listening pathname socket (anyone may connect on the host) and an
        // abstract one in the testbed's host network namespace.
        let abstract_name = format!("pallium-escape-{id}");
        let sock = dir.join("sock");
        let script = format!(
            "import socket, os, sys\n\
             a = socket.socket(socket.AF_UNIX); a.bind('\\0{abstract_name}'); a.listen(8)\n\
             p = socket.socket(socket.AF_UNIX); p.bind('{sock}'); os.chmod('{sock}', 0o777); p.listen(8)\n\
             print('ready', flush=True)\n\
             import select\n\
             while True:\n\
             \x20   r, _, _ = select.select([a, p], [], [])\n\
             \x20   for s in r:\n\
             \x20       c, _ = s.accept(); open('{dir}/connected', 'a').write('x'); c.close()\n",
            sock = sock.display(),
            dir = dir.display(),
        );
        let mut listener = tb
            .host_exec([PY, "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(listener.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        // A host process the application could signal or trace without a sandbox.
        let sleep = ["sleep", "120"];
        let victim = match mode {
            Mode::Root => Command::new(sleep[0]).arg(sleep[1]).spawn().unwrap(),
            Mode::Rootless => TestUser::get().command(sleep).spawn().unwrap(),
        };
        Host {
            dir,
            root_marker,
            listener,
            victim,
            abstract_name,
        }
    }

    fn victim_pid(&self) -> u32 {
        self.victim.id()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.listener.kill();
        let _ = self.listener.wait();
        let _ = self.victim.kill();
        let _ = self.victim.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(&self.root_marker);
    }
}

fn pallium_path(mode: Mode) -> String {
    match mode {
        Mode::Root => pallium().display().to_string(),
        Mode::Rootless => TestUser::get()
            .stage_binaries(&common::binaries())
            .join("pallium")
            .display()
            .to_string(),
    }
}

/// `argv` in the testbed's host namespace as root or as the test user.
fn in_host(tb: &Testbed, mode: Mode, argv: Vec<String>) -> Command {
    match mode {
        Mode::Root => tb.host_exec(argv),
        Mode::Rootless => tb.host_exec_as(TestUser::get(), argv),
    }
}

/// `pallium exec --one-shot PROFILE -- sh -c SCRIPT`.
fn attempt(tb: &Testbed, mode: Mode, profile: &str, script: &str) -> Output {
    let argv = vec![
        pallium_path(mode),
        "exec".into(),
        "--one-shot".into(),
        profile.into(),
        "--".into(),
        "/bin/sh".into(),
        "-c".into(),
        script.into(),
    ];
    in_host(tb, mode, argv)
        .stdin(Stdio::null())
        .output()
        .expect("run pallium")
}

/// A python script for `sh -c`, with the prelude.
fn py(body: &str) -> String {
    let code = format!("{PRELUDE}{body}");
    format!("{PY} -c '{}'", code.replace('\'', r#"'"'"'"#))
}

/// The verdict from the application's `RESULT` line: `Some(true)` blocked,
/// `Some(false)` escaped, `None` when the attempt did not run as intended.
fn verdict(o: &Output) -> (Option<bool>, String) {
    let (stdout, stderr) = text(o);
    let mut v = None;
    let mut detail = String::new();
    for l in stdout.lines() {
        if let Some(rest) = l.strip_prefix("RESULT ") {
            let (word, what) = rest.split_once(' ').unwrap_or((rest, ""));
            let blocked = word == "blocked";
            v = Some(v.unwrap_or(true) && blocked);
            if !detail.is_empty() {
                detail.push_str("; ");
            }
            detail.push_str(what);
        }
    }
    if v.is_none() {
        detail = format!(
            "no RESULT (exit {:?}): {} {}",
            o.status.code(),
            stdout.trim(),
            stderr.trim()
        );
    }
    (v, detail)
}

struct Row {
    attempt: String,
    mode: Mode,
    blocked: Option<bool>,
    detail: String,
}

fn row(attempt: &str, mode: Mode, blocked: Option<bool>, detail: String) -> Row {
    Row {
        attempt: attempt.into(),
        mode,
        blocked,
        detail: detail.replace('\n', " "),
    }
}

fn report(rows: &[Row], note: &str) {
    let mut s = String::from("attempt | mode | result\n");
    for r in rows {
        let res = match r.blocked {
            Some(true) => "blocked",
            Some(false) => "ESCAPED",
            None => "ERROR",
        };
        s.push_str(&format!(
            "{} | {} | {res} ({})\n",
            r.attempt,
            r.mode.name(),
            r.detail
        ));
    }
    s.push_str(note);
    println!("{s}");
    if let Some(p) = std::env::var_os("PALLIUM_ESCAPE_REPORT") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap();
        f.write_all(s.as_bytes()).unwrap();
    }
}

fn run_suite(mode: Mode) {
    let tb = Testbed::new(match mode {
        Mode::Root => "escroot",
        Mode::Rootless => "escuser",
    });
    let host = Host::new(&tb, mode);
    let dir = host.dir.display().to_string();
    let secret = format!("{dir}/secret");
    let pid = host.victim_pid();
    let mut rows = Vec::new();

    // Each case: name, profile, script; some get a host-side check below.
    let mut cases: Vec<(&str, &str, String)> = vec![
        (
            "1 read a host file outside the view (/tmp)",
            BASE,
            format!(
                "if cat {secret} 2>/dev/null; then echo; echo RESULT ESCAPED read; \
                 else echo \"RESULT blocked $(cat {secret} 2>&1)\"; fi"
            ),
        ),
        (
            "2 write into a host dir outside the view",
            BASE,
            format!(
                "mkdir -p {dir} 2>/dev/null; if echo x 2>/dev/null > {dir}/written; \
                 then echo 'RESULT blocked written inside the sandbox only (host checked)'; \
                 else echo RESULT blocked not writable; fi"
            ),
        ),
        (
            "2 write into /usr (whitelisted)",
            BASE,
            format!(
                "if (echo x > /usr/pallium-escape-{}) 2>/dev/null; then echo RESULT ESCAPED wrote /usr; \
                 else echo \"RESULT blocked $( (echo x > /usr/pallium-escape-{}) 2>&1)\"; fi",
                std::process::id(),
                std::process::id()
            ),
        ),
        (
            "3 see and signal a host process",
            "{}",
            format!(
                "n=$(ls /proc | grep -c '^[0-9]'); \
                 if [ -e /proc/{pid} ]; then echo RESULT ESCAPED /proc/{pid} visible; \
                 elif kill -0 {pid} 2>/dev/null; then echo RESULT ESCAPED kill -0 {pid} worked; \
                 else kill -9 {pid} 2>/dev/null; echo \"RESULT blocked $n pids in /proc, kill -0 {pid}: $(kill -0 {pid} 2>&1)\"; fi"
            ),
        ),
        (
            "4 ptrace a host process",
            "{}",
            py(&format!(
                "r = L.ptrace(ctypes.c_long(16), ctypes.c_long({pid}), None, None); e = ctypes.get_errno()\n\
                 res(r == -1, 'PTRACE_ATTACH: ' + os.strerror(e))\n"
            )),
        ),
        (
            "5 connect to a host pathname Unix socket outside the view",
            BASE,
            py(&format!(
                "import socket\n\
                 s = socket.socket(socket.AF_UNIX)\n\
                 try:\n    s.connect('{dir}/sock'); res(False, 'connected')\n\
                 except OSError as e:\n    res(True, str(e))\n"
            )),
        ),
        (
            "5 connect to a host abstract Unix socket",
            "{}",
            py(&format!(
                "import socket\n\
                 s = socket.socket(socket.AF_UNIX)\n\
                 try:\n    s.connect('\\0{}'); res(False, 'connected')\n\
                 except OSError as e:\n    res(True, str(e))\n",
                host.abstract_name
            )),
        ),
        (
            "6 mount tmpfs",
            "{}",
            "if mount -t tmpfs none /mnt 2>/dev/null; then echo RESULT ESCAPED mounted; \
             else echo \"RESULT blocked $(mount -t tmpfs none /mnt 2>&1)\"; fi"
                .into(),
        ),
        (
            "6 mount tmpfs after unshare -Ur",
            "{}",
            "if unshare -Ur mount -t tmpfs none /mnt 2>/dev/null; then echo RESULT ESCAPED mounted; \
             else echo \"RESULT blocked $(unshare -Ur mount -t tmpfs none /mnt 2>&1)\"; fi"
                .into(),
        ),
        (
            "7 load a kernel module (init_module, finit_module)",
            "{}",
            py("b = ctypes.create_string_buffer(b'\\x7fELF' + bytes(60))\n\
                r, e = sc(175, b, 64, b'')\n\
                res(r == -1 and e in (1, 13, 38), 'init_module: ' + os.strerror(e))\n\
                fd = os.open('/bin/sh', os.O_RDONLY)\n\
                r, e = sc(313, fd, b'', 0)\n\
                res(r == -1 and e in (1, 13, 38), 'finit_module: ' + os.strerror(e))\n"),
        ),
        (
            "8 create a user namespace with unpriv_user_ns=false",
            r#"{"sandbox": {"unpriv_user_ns": false}}"#,
            "if unshare -U true 2>/dev/null; then echo RESULT ESCAPED unshare -U worked; \
             else echo \"RESULT blocked $(unshare -U true 2>&1)\"; fi"
                .into(),
        ),
        (
            "9 gain root through a setuid-root binary",
            "{}",
            format!(
                "s=$({dir}/suid-cat /proc/self/status); \
                 eu=$(echo \"$s\" | awk '/^Uid:/ {{print $3}}'); ce=$(echo \"$s\" | awk '/^CapEff:/ {{print $2}}'); \
                 me=$(id -u); \
                 if [ -z \"$eu\" ]; then echo RESULT ERROR no status; \
                 elif [ \"$eu\" != \"$me\" ] || [ \"$ce\" != 0000000000000000 ]; then echo \"RESULT ESCAPED euid $eu CapEff $ce\"; \
                 else echo \"RESULT blocked setuid cat: euid $eu (uid $me), CapEff $ce\"; fi; \
                 o=$(su -c 'grep CapEff /proc/self/status' root 2>&1 </dev/null); \
                 case \"$o\" in *'CapEff:	0000000000000000'*) echo \"RESULT blocked su ran, $o\";; \
                 *CapEff*) echo \"RESULT ESCAPED su: $o\";; *) echo \"RESULT blocked su: $o\";; esac"
            ),
        ),
        (
            "11 kernel keyring (keyctl, add_key)",
            "{}",
            py("r, e = sc(250, 0, -3, 1)\n\
                res(r == -1, 'keyctl(GET_KEYRING_ID): ' + (os.strerror(e) if r == -1 else str(r)))\n\
                r, e = sc(248, b'user', b'pallium-escape', b'x', 1, -3)\n\
                res(r == -1, 'add_key: ' + (os.strerror(e) if r == -1 else str(r)))\n"),
        ),
    ];
    if mode == Mode::Root {
        cases.insert(
            1,
            (
                "1 read a host file outside the view (/root)",
                BASE,
                format!(
                    "if cat {m} 2>/dev/null; then echo; echo RESULT ESCAPED read; \
                     else echo \"RESULT blocked $(cat {m} 2>&1)\"; fi",
                    m = host.root_marker.display()
                ),
            ),
        );
    }

    let outputs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .map(|(_, prof, script)| {
                let tb = &tb;
                s.spawn(move || attempt(tb, mode, prof, script))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((name, _, _), o) in cases.iter().zip(&outputs) {
        let (mut v, mut detail) = verdict(o);
        if text(o).0.contains(SECRET) {
            v = Some(false);
            detail = format!("secret read: {detail}");
        }
        if name.starts_with("2 write into a host dir") && Path::new(&dir).join("written").exists() {
            v = Some(false);
            detail = format!("file appeared on the host: {detail}");
        }
        if name.starts_with("2 write into /usr") {
            let p = format!("/usr/pallium-escape-{}", std::process::id());
            if Path::new(&p).exists() {
                let _ = std::fs::remove_file(&p);
                v = Some(false);
                detail = format!("{p} appeared on the host: {detail}");
            }
        }
        rows.push(row(name, mode, v, detail));
    }
    // The victim survived the attempts to kill and trace it.
    let mut victim_state = String::from("gone");
    if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        victim_state = s.split_whitespace().nth(2).unwrap_or("?").to_string();
    }
    if victim_state != "S" {
        rows.push(row(
            "3/4 host process untouched",
            mode,
            Some(false),
            format!("state {victim_state}"),
        ));
    }
    if Path::new(&dir).join("connected").exists() {
        rows.push(row(
            "5 host sockets saw no connection",
            mode,
            Some(false),
            "a connection reached the host listener".into(),
        ));
    }
    rows.push(tiocsti(&tb, mode));
    rows.extend(cp_mv_symlinks(&tb, mode, &host));
    report(&rows, "");
    drop(host);
    let bad: Vec<&Row> = rows.iter().filter(|r| r.blocked != Some(true)).collect();
    assert!(
        bad.is_empty(),
        "{:?}",
        bad.iter()
            .map(|r| format!("{}: {:?} {}", r.attempt, r.blocked, r.detail))
            .collect::<Vec<_>>()
    );
}

/// `pallium ARGS` in the host namespace as root or the test user.
fn pal(tb: &Testbed, mode: Mode, args: &[&str]) -> Command {
    let mut argv = vec![pallium_path(mode)];
    argv.extend(args.iter().map(|s| s.to_string()));
    in_host(tb, mode, argv)
}

/// A running session of a profile with a private /tmp, stopped on drop.
struct CpSession<'a> {
    tb: &'a Testbed,
    mode: Mode,
    profile: String,
    child: Child,
}

impl Drop for CpSession<'_> {
    fn drop(&mut self) {
        let _ = pal(self.tb, self.mode, &["stop", &self.profile])
            .stdin(Stdio::null())
            .output();
        let _ = self.child.wait();
    }
}

/// 12: symbolic links made inside the sandbox that point at host paths,
/// used as `pallium cp`/`mv` sources and destinations. The host's secret
/// must never come out, and nothing may be written on the host through
/// them. A plain copy through a link to a sandbox file is the control: if
/// it fails, the rows are errors, not passes.
fn cp_mv_symlinks(tb: &Testbed, mode: Mode, host: &Host) -> Vec<Row> {
    let out_name = "12 copy out through a crafted symlink (cp/mv --from)";
    let in_name = "12 copy in through a crafted symlink (cp --to)";
    let dir = host.dir.display().to_string();
    let secret = format!("{dir}/secret");
    let outdir = host.dir.join("cpout");
    std::fs::create_dir_all(&outdir).unwrap();
    std::fs::set_permissions(&outdir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let prof = host.dir.join("cp.json");
    std::fs::write(
        &prof,
        r#"{"sandbox": {"paths": {}}, "run": {"command": ["sleep", "infinity"]}}"#,
    )
    .unwrap();
    std::fs::set_permissions(&prof, std::fs::Permissions::from_mode(0o644)).unwrap();
    let p = prof.display().to_string();
    let child = pal(tb, mode, &["run", "--quiet", &p])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _session = CpSession {
        tb,
        mode,
        profile: p.clone(),
        child,
    };
    let sh = |script: &str| {
        pal(tb, mode, &["exec", &p, "--", "/bin/sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let mut ready = false;
    for _ in 0..500 {
        if sh("true").status.success() {
            ready = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    if !ready {
        let e = "the session never became ready".to_string();
        return vec![
            row(out_name, mode, None, e.clone()),
            row(in_name, mode, None, e),
        ];
    }
    // Links to the host's secret (absolute, ..-laden), to its directory, and
    // one to a file of the sandbox's own (the control).
    let links = sh(&format!(
        "ln -s {secret} /tmp/evil && ln -s ../../../../../../..{secret} /tmp/evil2 && \
         ln -s {dir} /tmp/evildir && ln -s {dir}/written-in /tmp/evilin && \
         echo mine > /tmp/mine && ln -s /tmp/mine /tmp/good && echo linked"
    ));
    if !text(&links).0.contains("linked") {
        let e = format!("could not make the links: {:?}", text(&links));
        return vec![
            row(out_name, mode, None, e.clone()),
            row(in_name, mode, None, e),
        ];
    }
    let copy_out = |verb: &str, link: &str, n: usize| {
        let dst = outdir.join(format!("{verb}-{n}"));
        let o = pal(tb, mode, &[verb, "--from", &p, link, dst.to_str().unwrap()])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        // `mv` moves a link itself: a symbolic link on the host reveals
        // nothing to the sandbox; only a regular file with the secret would.
        let is_link = std::fs::symlink_metadata(&dst).is_ok_and(|m| m.file_type().is_symlink());
        let got = if is_link {
            format!("(the link itself: -> {:?})", std::fs::read_link(&dst).ok())
        } else {
            std::fs::read_to_string(&dst).unwrap_or_default()
        };
        (o, got)
    };
    // The control: a link to a sandbox file copies that file.
    let (o, got) = copy_out("cp", "/tmp/good", 0);
    let out_row = if got != "mine\n" {
        row(
            out_name,
            mode,
            None,
            format!("control copy failed: {:?}", text(&o)),
        )
    } else {
        let mut leaked = Vec::new();
        let mut refused = Vec::new();
        for (n, link) in ["/tmp/evil", "/tmp/evil2", "/tmp/evildir/secret"]
            .iter()
            .enumerate()
        {
            for verb in ["cp", "mv"] {
                let (o, got) = copy_out(verb, link, n + 1);
                if got.contains(SECRET) {
                    leaked.push(format!("{verb} {link}"));
                } else if got.starts_with("(the link itself") {
                    refused.push(format!("{verb} {link}: moved {got}"));
                } else {
                    let e = text(&o).1;
                    refused.push(format!(
                        "{verb} {link}: {}",
                        e.lines().last().unwrap_or("no output")
                    ));
                }
            }
        }
        let intact = std::fs::read_to_string(&secret).is_ok_and(|s| s == SECRET);
        if leaked.is_empty() && intact {
            row(out_name, mode, Some(true), refused.join("; "))
        } else {
            row(
                out_name,
                mode,
                Some(false),
                format!("host secret copied or moved through {leaked:?} (secret intact: {intact})"),
            )
        }
    };
    let payload = outdir.join("payload");
    std::fs::write(&payload, "PAYLOAD\n").unwrap();
    std::fs::set_permissions(&payload, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut details = Vec::new();
    for dst in ["/tmp/evilin", "/tmp/evildir/written-in", "/tmp/evil"] {
        let o = pal(
            tb,
            mode,
            &["cp", payload.to_str().unwrap(), "--to", &p, dst],
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
        let e = text(&o).1;
        details.push(format!(
            "cp --to {dst}: {}",
            if o.status.success() {
                "copied inside the sandbox"
            } else {
                e.lines().last().unwrap_or("failed")
            }
        ));
    }
    let written = host.dir.join("written-in").exists();
    let intact = std::fs::read_to_string(&secret).is_ok_and(|s| s == SECRET);
    let in_row = row(
        in_name,
        mode,
        Some(!written && intact),
        format!(
            "host file written: {written}, secret intact: {intact}; {}",
            details.join("; ")
        ),
    );
    vec![out_row, in_row]
}

/// 10: TIOCSTI into the terminal pallium was started from (`script` gives it
/// one); after pallium exits, the outer shell reads what reached its terminal.
fn tiocsti(tb: &Testbed, mode: Mode) -> Row {
    let name = "10 inject keystrokes with TIOCSTI";
    if Command::new("script").arg("--version").output().is_err() {
        return row(name, mode, Some(true), "skipped: no script(1)".into());
    }
    // A refused TIOCSTI (the filter's EPERM) prints its result where the
    // pty's echo (^@) may already stand: on a line of its own.
    let app = py("import fcntl, termios\n\
        n = 0\n\
        try:\n    \
            for c in b'INJECTED\\n':\n        fcntl.ioctl(0, termios.TIOCSTI, bytes([c])); n += 1\n    \
            st = os.fstat(0)\n    \
            print('RESULT blocked ioctl accepted on', os.ttyname(0), '(checked outside)')\n    \
            print('APPTTY', st.st_dev, st.st_rdev)\n\
        except OSError as e:\n    print('\\nRESULT blocked', e)\n");
    let app_q = app.replace('\'', r#"'"'"'"#);
    let inner = format!(
        "{} exec --one-shot {{}} -- /bin/sh -c '{app_q}'; read -t 1 line; echo \"OUTER=[$line]\"; \
         {PY} -c 'import os; st = os.fstat(0); print(\"OUTERTTY\", st.st_dev, st.st_rdev)'",
        pallium_path(mode)
    );
    let o = in_host(
        tb,
        mode,
        vec!["script".into(), "-qec".into(), inner, "/dev/null".into()],
    )
    .stdin(Stdio::null())
    .output()
    .expect("run script");
    let (mut v, mut detail) = verdict(&o);
    let stdout = text(&o).0;
    let tty = |tag: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(tag).map(|r| r.trim().to_string()))
    };
    if let (Some(app), Some(outer)) = (tty("APPTTY "), tty("OUTERTTY ")) {
        if app == outer {
            v = Some(false);
            detail = format!("the app's terminal is the caller's ({app}): {detail}");
        } else {
            detail = format!("{detail}; app tty (dev rdev) {app} vs caller's {outer}");
        }
    }
    if stdout.contains("OUTER=[INJECTED") || stdout.contains("OUTER=[NJECTED") {
        v = Some(false);
        detail = format!("reached the outer terminal: {detail}");
    } else if !stdout.contains("OUTER=[") {
        v = None;
        detail = format!("no OUTER line: {detail} {stdout}");
    }
    row(name, mode, v, detail)
}

#[test]
fn escape_attempts_as_root_fail() {
    skip_unless_root!();
    run_suite(Mode::Root);
}

#[test]
fn escape_attempts_rootless_fail() {
    skip_unless_root!();
    use std::os::unix::fs::PermissionsExt as _;
    let tun_ok =
        std::fs::metadata("/dev/net/tun").is_ok_and(|m| m.permissions().mode() & 0o006 == 0o006);
    if !tun_ok {
        pallium_tests::skip("/dev/net/tun is not world read-write");
        return;
    }
    run_suite(Mode::Rootless);
}
