//! Running the host tools the testbed is built with (`ip`, `nft`, `useradd`): test code, so a
//! failure panics with the command line and its stderr.

use std::ffi::OsStr;
use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs `cmd`, panicking with its stderr unless it exits 0; returns its stdout.
pub(crate) fn run(cmd: &mut Command) -> String {
    let out = output(cmd, None);
    if !out.status.success() {
        panic!(
            "{:?} failed ({}): {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd` with `stdin` as its input and returns what happened, never panicking on a failure
/// of the command itself (teardown must not panic).
pub(crate) fn output(cmd: &mut Command, stdin: Option<&str>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => panic!("cannot start {cmd:?}: {e}"),
    };
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(text.as_bytes());
    }
    match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => panic!("waiting for {cmd:?}: {e}"),
    }
}

/// `ip -batch -` (optionally `-n NETNS`) with `script` as input; `-force` keeps going after a
/// failed line when `force` is set (teardown), otherwise the first failure panics.
pub(crate) fn ip_batch(netns: Option<&str>, script: &str, force: bool) -> Output {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    if force {
        cmd.arg("-force");
    }
    cmd.args(["-batch", "-"]);
    let out = output(&mut cmd, Some(script));
    if !force && !out.status.success() {
        panic!(
            "ip {}-batch failed: {}\nscript:\n{script}",
            netns.map(|n| format!("-n {n} ")).unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    out
}

/// A `Command` for `ip netns exec NETNS argv…`.
pub(crate) fn netns_exec<S: AsRef<OsStr>>(
    netns: &str,
    argv: impl IntoIterator<Item = S>,
) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns]);
    cmd.args(argv);
    cmd
}
