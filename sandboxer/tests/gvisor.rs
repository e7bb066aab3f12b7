//! `sandbox.gvisor` through the built sandboxer, in root mode and rootless:
//! the command runs under runsc (gVisor's kernel answers), with its exit
//! code, in the prepared view; a second spawn joins the running container.
//! Needs root and runsc; skips with a message otherwise.

use std::io::Read;

use proto::profile::Sandbox;
use proto::sandbox::ExitStatus;

mod common;

use common::*;

fn runsc_present() -> bool {
    if std::path::Path::new("/usr/bin/runsc").is_file() {
        return true;
    }
    eprintln!("skipping: /usr/bin/runsc is not installed (Debian package runsc)");
    false
}

fn gvisor() -> Sandbox {
    Sandbox {
        gvisor: true,
        ..Sandbox::default()
    }
}

#[test]
fn commands_run_under_gvisor_with_their_exit_code() {
    if !root() || !runsc_present() {
        return;
    }
    let mut sb = Sandboxer::root_mode();
    sb.setup_profile(gvisor());
    let (status, out) = sb.run(1, "dmesg | head -1; cat /proc/version; exit 7");
    assert_eq!(status, ExitStatus::Code(7), "{out}");
    assert!(out.contains("Starting gVisor"), "{out}");
    // gVisor's kernel, not the host's.
    let host = std::fs::read_to_string("/proc/version").unwrap();
    assert!(!out.contains(host.trim()), "{out}");
    assert!(sb.shutdown().success());
}

#[test]
fn a_second_command_joins_the_running_container() {
    if !root() || !runsc_present() {
        return;
    }
    let mut sb = Sandboxer::root_mode();
    // `paths` in append mode: the view's /tmp is a fresh tmpfs.
    sb.setup_profile(Sandbox {
        paths: Some(Default::default()),
        ..gvisor()
    });
    // The first command is the container; it waits for a file the second
    // one writes.
    let (_, r1) = sb
        .spawn_sh(
            1,
            "while ! test -e /tmp/go; do sleep 0.05; done; echo first-saw-it",
            false,
        )
        .unwrap();
    let mut joined = String::new();
    for id in 2..200 {
        // Until the container runs, `runsc exec` fails: retry.
        let (status, out) = sb.run(id, "touch /tmp/go && echo joined");
        let done = status == ExitStatus::Code(0);
        joined = out;
        if done {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(joined.contains("joined"), "{joined}");
    let mut out = String::new();
    std::fs::File::from(r1).read_to_string(&mut out).unwrap();
    assert_eq!(sb.exited(1), ExitStatus::Code(0), "{out}");
    assert!(out.contains("first-saw-it"), "{out}");
    assert!(sb.shutdown().success());
}

#[test]
fn rootless_commands_run_under_gvisor_as_the_caller() {
    if !root() || !runsc_present() {
        return;
    }
    let (mut sb, uid, _, _) = rootless_sandboxer(Sandbox {
        paths: Some(Default::default()),
        ..gvisor()
    });
    let (status, out) = sb.run(
        1,
        "dmesg | head -1; id -u; echo x > /tmp/f && stat -c %u /tmp/f; exit 5",
    );
    assert_eq!(status, ExitStatus::Code(5), "{out}");
    assert!(out.contains("Starting gVisor"), "{out}");
    // Inside gVisor the command is gVisor's uid 0 (without capabilities)…
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[1], "0", "{out}");
    // … and what it writes belongs to the caller on the host: the file in
    // the view's /tmp, seen from a plain (non-gVisor) view of the same
    // mount namespace through the init.
    let init = sb
        .pids()
        .into_iter()
        .find(|p| p.role == "init")
        .unwrap()
        .pid;
    let meta = std::fs::metadata(format!("/proc/{init}/root/tmp/f")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.uid(), uid, "{out}");
    assert!(sb.shutdown().success());
}
