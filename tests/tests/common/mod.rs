//! Shared helpers of the end-to-end tests: where the built binaries are,
//! running `pallium` as root or as the test user with a profile file, and
//! checking what it left behind. Each test binary compiles this module on its
//! own and uses part of it, hence `dead_code` is allowed.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pallium_tests::{TestUser, Testbed};

/// `target/<profile>/` of this build (the test executable lives in `deps/`).
pub(crate) fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf();
    assert!(
        dir.join("pallium").exists(),
        "{} has no pallium binary: run `cargo build --workspace` first (tests/run-all.sh does)",
        dir.display()
    );
    dir
}

/// The built `pallium` (root's; the test user runs [`staged`]'s copy).
pub(crate) fn pallium() -> PathBuf {
    bin_dir().join("pallium")
}

/// Helper binaries that must sit beside `pallium`.
pub(crate) fn binaries() -> Vec<PathBuf> {
    let d = bin_dir();
    vec![
        d.join("pallium"),
        d.join("pallium-netbroker"),
        d.join("pallium-sandboxer"),
    ]
}

/// [`binaries`], staged where the test user can run them (once per test
/// process: later calls return the same directory).
pub(crate) fn staged() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| TestUser::get().stage_binaries(&binaries()))
}

/// Who runs pallium: root, or the unprivileged test user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Root,
    Rootless,
}

impl Mode {
    /// "root" or "rootless".
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Root => "root",
            Mode::Rootless => "rootless",
        }
    }

    /// Where this mode's `pallium` and its helpers live: the build's for
    /// root, [`staged`] for the test user.
    pub(crate) fn bin_dir(self) -> PathBuf {
        match self {
            Mode::Root => bin_dir(),
            Mode::Rootless => staged().clone(),
        }
    }

    /// This mode's `pallium`.
    pub(crate) fn pallium(self) -> PathBuf {
        self.bin_dir().join("pallium")
    }

    /// `argv` in the testbed's host namespace as this mode's caller.
    pub(crate) fn host_exec<S: AsRef<OsStr>>(
        self,
        tb: &Testbed,
        argv: impl IntoIterator<Item = S>,
    ) -> Command {
        match self {
            Mode::Root => tb.host_exec(argv),
            Mode::Rootless => tb.host_exec_as(TestUser::get(), argv),
        }
    }
}

/// Whether the test user may open `/dev/net/tun` (world read-write, as
/// Debian's 0666), which rootless sessions need.
pub(crate) fn tun_usable() -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata("/dev/net/tun").is_ok_and(|m| m.permissions().mode() & 0o006 == 0o006)
}

/// Root always; rootless too where [`tun_usable`], else its skip is reported
/// as "rootless WHAT: …".
pub(crate) fn modes(what: &str) -> Vec<Mode> {
    if tun_usable() {
        vec![Mode::Root, Mode::Rootless]
    } else {
        pallium_tests::skip(&format!(
            "rootless {what}: /dev/net/tun is not world read-write"
        ));
        vec![Mode::Root]
    }
}

/// `pallium ARGS` in the testbed's host namespace as `mode`'s caller.
pub(crate) fn pal(tb: &Testbed, mode: Mode, args: &[&str]) -> Command {
    let mut argv = vec![mode.pallium().display().to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    mode.host_exec(tb, argv)
}

/// Run `c` to its end with standard input from /dev/null: its output.
pub(crate) fn out(mut c: Command) -> Output {
    c.stdin(Stdio::null()).output().expect("run")
}

/// Run `c` (as [`out`]), which must succeed: its standard output.
pub(crate) fn ok(c: Command) -> String {
    let o = out(c);
    let (so, se) = text(&o);
    assert!(o.status.success(), "{so}{se}");
    so
}

/// `pallium exec --one-shot PROFILE -- sh -c SCRIPT` as `mode`'s caller in
/// the testbed's host namespace: its output.
pub(crate) fn one_shot_output(tb: &Testbed, mode: Mode, profile: &str, script: &str) -> Output {
    out(pal(
        tb,
        mode,
        &["exec", "--one-shot", profile, "--", "sh", "-c", script],
    ))
}

/// [`one_shot_output`] as (succeeded, stdout, stderr).
pub(crate) fn one_shot(
    tb: &Testbed,
    mode: Mode,
    profile: &str,
    script: &str,
) -> (bool, String, String) {
    let o = one_shot_output(tb, mode, profile, script);
    let (stdout, stderr) = text(&o);
    (o.status.success(), stdout, stderr)
}

/// [`one_shot`] of a fresh profile file `name` holding `json`
/// ([`profile_file`]).
pub(crate) fn one_shot_json(
    tb: &Testbed,
    mode: Mode,
    name: &str,
    json: &str,
    script: &str,
) -> (bool, String, String) {
    let prof = profile_file(name, json);
    one_shot(tb, mode, &prof.display().to_string(), script)
}

/// Shell: `curl URL` (10 s at the most), then a newline.
pub(crate) fn curl(url: &str) -> String {
    format!("curl -sS --max-time 10 {url}; echo")
}

/// The lines of `s` that are not blank, trimmed.
pub(crate) fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Retry `curl URL` in the running session of `profile` until it works (the
/// session is still coming up before that), for `limit` at the most: its
/// output.
pub(crate) fn wait_up(
    tb: &Testbed,
    mode: Mode,
    profile: &str,
    url: &str,
    limit: Duration,
) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let o = out(pal(
            tb,
            mode,
            &["exec", profile, "--", "sh", "-c", &curl(url)],
        ));
        if o.status.success() {
            return text(&o).0;
        }
        assert!(
            Instant::now() < deadline,
            "{mode:?}: the session never came up: {:?}",
            text(&o)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The pid `pallium audit` shows for `role` in `mode`'s running session of
/// `profile`.
pub(crate) fn audit_pid(tb: &Testbed, mode: Mode, profile: &str, role: &str) -> i32 {
    let audit = text(&out(pal(tb, mode, &["audit", profile]))).0;
    audit
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(role))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{mode:?}: no {role} process in the audit: {audit}"))
}

/// Write `json` to a fresh profile file and return its path.
pub(crate) fn profile_file(name: &str, json: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pallium-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{name}.json"));
    std::fs::write(&p, json).unwrap();
    p
}

/// [`profile_file`], copied into a directory of this test process that the
/// test user can read too (apart from the profile files root runs: a session
/// is named by its profile's path).
pub(crate) fn readable_profile(name: &str, json: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = profile_file(name, json);
    let dir =
        std::env::temp_dir().join(format!("pallium-readable-profiles-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dst = dir.join(p.file_name().unwrap());
    std::fs::copy(&p, &dst).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o644)).unwrap();
    dst.display().to_string()
}

/// An output's (stdout, stderr) as text.
pub(crate) fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Run `pallium ARGS` here (no namespace) and return its output.
pub(crate) fn run(args: &[&str]) -> Output {
    Command::new(pallium())
        .args(args)
        .output()
        .expect("run pallium")
}

/// Run `pallium ARGS` here with `stdin` piped in.
pub(crate) fn run_with_stdin(args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(pallium())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn pallium");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The supervisor's profile id for a profile file (FNV-1a of its pseudo path),
/// which names its directory under the runtime dir.
pub(crate) fn profile_dir_name(path: &std::path::Path) -> String {
    let pseudo = format!("file://{}", path.display());
    format!("profile_{}", proto::runtime::profile_id(&pseudo))
}

/// Poll until the testbed's host namespace is as it was (the kernel removes
/// a dead namespace's links asynchronously); the findings if it never is.
#[must_use = "assert that nothing was left behind"]
pub(crate) fn wait_clean(tb: &pallium_tests::Testbed) -> Vec<String> {
    wait_clean_except(tb, |_| false)
}

/// [`wait_clean`] finds nothing left behind.
pub(crate) fn assert_clean(tb: &Testbed) {
    assert_eq!(wait_clean(tb), Vec::<String>::new(), "left behind");
}

/// Like [`wait_clean`], but returns as soon as only `allowed` findings remain.
#[must_use = "assert that nothing else was left behind"]
pub(crate) fn wait_clean_except(
    tb: &pallium_tests::Testbed,
    allowed: fn(&String) -> bool,
) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left = tb.leftovers();
        if left.iter().all(allowed) || std::time::Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `/proc/PID/status` as field → value (empty once the process is gone).
pub(crate) fn proc_status(pid: i32) -> std::collections::BTreeMap<String, String> {
    proto::policy::proc_status(pid, None).unwrap_or_default()
}

/// Assert that no thread of `pid` holds, in its effective or permitted set,
/// a capability its `role` drops once set up, and that its main thread's
/// effective and bounding sets are exactly what the role keeps (`bounding`:
/// where the helper could trim it, i.e. held CAP_SETPCAP). Capabilities are
/// per thread: `/proc/PID/status` alone shows the main thread's only.
pub(crate) fn assert_holds_after_setup(pid: i32, role: proto::policy::Role, bounding: bool) {
    use proto::policy::{after_setup_mask, mask_names, status_mask, thread_statuses};
    let keep = after_setup_mask(role);
    let threads = thread_statuses(pid);
    assert!(!threads.is_empty(), "{role:?} {pid} is gone");
    for t in &threads {
        for set in ["CapEff", "CapPrm"] {
            let extra = status_mask(t, set) & !keep;
            assert_eq!(
                extra,
                0,
                "{role:?} {pid}, thread {} ({}): {set} holds {:?} beyond its after-setup row",
                t["Pid"],
                t["Name"],
                mask_names(extra)
            );
        }
    }
    let main = proc_status(pid);
    assert_eq!(
        mask_names(status_mask(&main, "CapEff")),
        mask_names(keep),
        "{role:?} {pid}: effective set"
    );
    if bounding {
        assert_eq!(
            mask_names(status_mask(&main, "CapBnd")),
            mask_names(keep),
            "{role:?} {pid}: bounding set"
        );
    }
}
