//! Shared helpers of the end-to-end tests: where the built binaries are, and
//! running `pallium` with a profile file.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

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

/// Write `json` to a fresh profile file and return its path.
pub(crate) fn profile_file(name: &str, json: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pallium-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{name}.json"));
    std::fs::write(&p, json).unwrap();
    p
}

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

/// Like [`wait_clean`], but returns as soon as only `allowed` findings remain.
#[must_use = "assert that nothing else was left behind"]
pub(crate) fn wait_clean_except(
    tb: &pallium_tests::Testbed,
    allowed: fn(&String) -> bool,
) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
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
