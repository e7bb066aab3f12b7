//! End to end as an ordinary user the test creates: pallium in rootless mode
//! (its own user namespace, pasta or slirp4netns as the uplink) reaches the
//! web host, maps the command back to the caller's uid, runs sessions, and
//! cleans up; missing tools give one clear line.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{profile_file, text, wait_clean};
use pallium_tests::{skip_unless_root, Resolver, TestUser, Testbed, WEB4_NAME, WEB6_NAME};

/// The binaries, staged where the test user can run them.
fn staged() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| TestUser::get().stage_binaries(&common::binaries()))
}

fn out(mut c: Command) -> Output {
    c.stdin(Stdio::null()).output().expect("run")
}

/// `pallium ARGS` as the test user in the testbed's host namespace.
fn pal(tb: &Testbed, args: &[&str]) -> Command {
    let mut argv = vec![staged().join("pallium").display().to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    tb.host_exec_as(TestUser::get(), argv)
}

fn tun_usable() -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata("/dev/net/tun").is_ok_and(|m| m.permissions().mode() & 0o006 == 0o006)
}

macro_rules! rootless_prelude {
    () => {
        skip_unless_root!();
        if !tun_usable() {
            pallium_tests::skip(
                "/dev/net/tun is not world read-write (chmod 0666 /dev/net/tun; .ci/run does)",
            );
            return;
        }
    };
}

#[test]
fn rootless_exec_reaches_the_web_host_as_the_callers_uid() {
    rootless_prelude!();
    let tb = Testbed::new("rlweb");
    let script = format!(
        "id -u; hostname; curl -sS -4 --max-time 5 http://{WEB4_NAME}/; echo; curl -sS -6 --max-time 5 http://{WEB6_NAME}/"
    );
    let o = out(pal(
        &tb,
        &["exec", "--one-shot", "default", "--", "sh", "-c", &script],
    ));
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines[0],
        TestUser::get().uid().to_string(),
        "mapped back to the caller's uid"
    );
    assert_eq!(lines[1], "pallium");
    // pasta/slirp4netns open the connections from the host namespace.
    assert_eq!(
        &lines[2..],
        [tb.host_v4().to_string(), tb.host_v6().to_string()],
        "{stderr}"
    );
    assert!(
        tb.dns_queries().iter().any(|q| q.name == WEB4_NAME),
        "{:?}",
        tb.dns_queries()
    );
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

#[test]
fn rootless_root_flag_stays_namespace_root() {
    rootless_prelude!();
    let tb = Testbed::new("rlroot");
    let o = out(pal(
        &tb,
        &["exec", "--one-shot", "--root", "default", "--", "id", "-u"],
    ));
    assert_eq!(text(&o).0.trim(), "0", "{}", text(&o).1);
}

#[test]
fn rootless_loopback_resolver_works() {
    rootless_prelude!();
    let tb = Testbed::builder("rlstub")
        .resolver(Resolver::Loopback)
        .build();
    let url = format!("http://{WEB4_NAME}/");
    let o = out(pal(
        &tb,
        &[
            "exec",
            "--one-shot",
            "default",
            "--",
            "curl",
            "-sS",
            "--max-time",
            "5",
            &url,
        ],
    ));
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), tb.host_v4().to_string());
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

#[test]
fn rootless_sessions_exit_codes_audit_and_stop() {
    rootless_prelude!();
    let tb = Testbed::new("rlsess");
    let prof = profile_file("rlsess", r#"{"run": {"command": ["sleep", "infinity"]}}"#);
    let prof = prof.to_str().unwrap();
    let mut run = pal(&tb, &["run", prof])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !out(pal(&tb, &["exec", prof, "--", "true"]))
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "session never became ready");
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(
        out(pal(&tb, &["exec", prof, "--", "sh", "-c", "exit 9"]))
            .status
            .code(),
        Some(9)
    );
    let o = out(pal(&tb, &["exec", prof, "--", "id", "-u"]));
    assert_eq!(text(&o).0.trim(), TestUser::get().uid().to_string());
    let list = text(&out(pal(&tb, &["list"]))).0;
    assert!(list.lines().any(|l| l.starts_with(prof)), "{list}");
    let o = out(pal(&tb, &["audit", prof]));
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("hop:pasta") || stdout.contains("hop:slirp4netns"),
        "{stdout}"
    );
    assert!(out(pal(&tb, &["stop", prof])).status.success());
    assert_eq!(run.wait().unwrap().code(), Some(143));
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}

#[test]
fn rootless_kill_9_of_the_supervisor_leaves_nothing() {
    rootless_prelude!();
    let tb = Testbed::new("rlkill");
    let prof = profile_file("rlkill", r#"{"run": {"command": ["sleep", "infinity"]}}"#);
    let prof = prof.to_str().unwrap();
    for delay_ms in [0u64, 5, 20, 300] {
        let mut run = pal(&tb, &["run", prof])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        // `ip netns exec` and `setpriv` exec, so this is pallium's pid.
        run.kill().unwrap();
        run.wait().unwrap();
        assert_eq!(
            wait_clean(&tb),
            Vec::<String>::new(),
            "killed after {delay_ms} ms"
        );
    }
    let o = out(pal(&tb, &["exec", "--one-shot", prof, "--", "true"]));
    assert!(o.status.success(), "{}", text(&o).1);
}

#[test]
fn rootless_without_pasta_or_slirp4netns_names_the_package() {
    rootless_prelude!();
    let tb = Testbed::new("rlnopasta");
    let p = staged().join("pallium").display().to_string();
    // A PATH without either tool.
    let o = out(tb.host_exec_as(
        TestUser::get(),
        [
            "/usr/bin/env",
            "PATH=/nonexistent",
            p.as_str(),
            "exec",
            "--one-shot",
            "default",
            "--",
            "true",
        ],
    ));
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr.contains("passt") && stderr.contains("slirp4netns"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn rootless_refuses_a_root_only_key_before_setting_anything_up() {
    rootless_prelude!();
    let tb = Testbed::new("rlbridge");
    let prof = profile_file("rlbridge", r#"{"network": {"bridge": {"name": "br0"}}}"#);
    let o = out(pal(
        &tb,
        &["exec", "--one-shot", prof.to_str().unwrap(), "--", "true"],
    ));
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr.contains("network.bridge needs root"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(wait_clean(&tb), Vec::<String>::new());
}
