//! The sandbox keys through the CLI, as root and rootless: virtual users,
//! paths, seccomp and `unpriv_user_ns` (the original's sandbox and CLI tests),
//! and their bad input refused before anything is set up.

mod common;

use std::process::Output;

use common::{out, pal, pallium, profile_file, text, tun_usable, Mode};
use pallium_tests::{skip_unless_root, TestUser, Testbed};

/// `pallium exec --one-shot PROFILE -- ARGV` as `mode`'s caller in the
/// testbed's host namespace.
fn exec_as(tb: &Testbed, mode: Mode, profile: &str, argv: &[&str]) -> Output {
    let mut a = vec!["exec", "--one-shot", profile, "--"];
    a.extend_from_slice(argv);
    out(pal(tb, mode, &a))
}

/// [`exec_as`] root.
fn exec_root(tb: &Testbed, profile: &str, argv: &[&str]) -> Output {
    exec_as(tb, Mode::Root, profile, argv)
}

/// [`exec_as`] the test user, with the binaries staged where it can run them.
fn exec_user(tb: &Testbed, profile: &str, argv: &[&str]) -> Output {
    exec_as(tb, Mode::Rootless, profile, argv)
}

#[test]
fn virtual_user_whoami_and_home_rootless() {
    skip_unless_root!();
    if !tun_usable() {
        pallium_tests::skip("/dev/net/tun is not world read-write");
        return;
    }
    let tb = Testbed::new("sbxvu");
    // The original's test_virtuser, through an inline profile.
    let prof = r#"{"sandbox": {"virtuser": {"name": "johndoe", "skeleton": false}}}"#;
    let o = exec_user(&tb, prof, &["sh", "-c", "whoami; echo $HOME; pwd"]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["johndoe", "/home/johndoe", "/home/johndoe"],
        "{stderr}"
    );
    // The persistent home lives in the caller's config directory.
    assert!(TestUser::get()
        .home()
        .join(".config/pallium/virtuser/johndoe/home")
        .is_dir());
}

/// Removes a root-mode virtual user's directory on drop, panics included.
struct VirtuserDir(std::path::PathBuf);

impl Drop for VirtuserDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn persistent_virtual_user_as_root_is_an_unprivileged_uid() {
    skip_unless_root!();
    use std::os::unix::fs::MetadataExt;
    let tb = Testbed::new("sbxvuroot");
    let name = format!("ptest{}", std::process::id());
    let dir = VirtuserDir(std::path::Path::new("/etc/pallium/virtuser").join(&name));
    let home = dir.0.join("home");
    let prof = format!(r#"{{"sandbox": {{"virtuser": {{"name": "{name}", "skeleton": false}}}}}}"#);
    let script = "whoami; echo $HOME; id -u; echo kept > ~/f && echo wrote; \
                  (touch /usr/pallium-vu-probe) 2>/dev/null && echo usr-writable || echo usr-not-writable";
    let o = exec_root(&tb, &prof, &["sh", "-c", script]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], name, "{stdout}");
    assert_eq!(lines[1], format!("/home/{name}"), "{stdout}");
    let uid: u32 = lines[2].parse().unwrap();
    assert_ne!(uid, 0, "as root, the virtual user is not root");
    assert_eq!(&lines[3..], ["wrote", "usr-not-writable"], "{stdout}");
    assert!(!std::path::Path::new("/usr/pallium-vu-probe").exists());
    // Its home lives under /etc/pallium and belongs to it.
    let meta = std::fs::metadata(&home).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (uid, 0o700));
    assert_eq!(std::fs::metadata(home.join("f")).unwrap().uid(), uid);
    // Persistent: the next session is the same user with the same home.
    let o = exec_root(&tb, &prof, &["sh", "-c", "id -u; cat ~/f"]);
    assert_eq!(text(&o).0, format!("{uid}\nkept\n"), "{:?}", text(&o));
    drop(dir);
    assert_eq!(common::wait_clean(&tb), Vec::<String>::new());
}

#[test]
fn temporary_virtual_user_as_root() {
    skip_unless_root!();
    let tb = Testbed::new("sbxtmp");
    let o = exec_root(
        &tb,
        r#"{"sandbox": {"virtuser": "$tmp"}}"#,
        &["sh", "-c", "echo $HOME; ls -d /home/*"],
    );
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.lines().next(), Some("/home/tmp"), "{stdout}");
}

#[test]
fn paths_base_mode_and_binds() {
    skip_unless_root!();
    let tb = Testbed::new("sbxpaths");
    // As in the original: base mode with a minimal whitelist has no /tmp.
    let base = r#"{"sandbox": {"paths": {"mode": "base", "whitelist": ["/usr", "/bin", "/lib64", "/lib", "/dev/null"]}}}"#;
    let o = exec_root(&tb, base, &["ls", "/tmp"]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    // A host file bound at a path that does not exist on the host.
    let host_file = profile_file("sbx-bound", "{}");
    let bind = format!(
        r#"{{"sandbox": {{"paths": {{"bind": [["/doesnotexist/pallium-test", "{}"]]}}}}}}"#,
        host_file.display()
    );
    let o = exec_root(&tb, &bind, &["cat", "/doesnotexist/pallium-test"]);
    assert_eq!(text(&o).0.trim(), "{}", "{:?}", text(&o));
    assert!(
        !std::path::Path::new("/doesnotexist").exists(),
        "the host is unchanged"
    );
}

#[test]
fn seccomp_and_unpriv_user_ns() {
    skip_unless_root!();
    let tb = Testbed::new("sbxsec");
    let o = exec_root(&tb, "{}", &["sh", "-c", "grep Seccomp: /proc/self/status"]);
    assert!(text(&o).0.contains("2"), "{:?}", text(&o));
    let o = exec_root(&tb, r#"{"sandbox": {"seccomp": ["uname"]}}"#, &["uname"]);
    assert_ne!(o.status.code(), Some(0), "{:?}", text(&o));
    let o = exec_root(
        &tb,
        r#"{"sandbox": {"unpriv_user_ns": false}}"#,
        &["unshare", "-U", "true"],
    );
    assert_ne!(o.status.code(), Some(0), "{:?}", text(&o));
    let o = exec_root(&tb, "{}", &["unshare", "-U", "true"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "by default nested user namespaces work: {:?}",
        text(&o)
    );
}

#[test]
fn bad_sandbox_input_is_refused_before_anything_is_set_up() {
    skip_unless_root!();
    let tb = Testbed::new("sbxbad");
    let cases = [
        (
            r#"{"sandbox": {"paths": {"bind": [["/x", "/no/such/source"]]}}}"#,
            "sandbox.paths.bind[0]",
        ),
        (
            r#"{"sandbox": {"paths": {"whitelist": ["relative/path"]}}}"#,
            "sandbox.paths.whitelist[0]",
        ),
        (
            r#"{"sandbox": {"paths": {"whitelist": ["/usr/../etc"]}}}"#,
            "sandbox.paths.whitelist[0]",
        ),
        (
            r#"{"sandbox": {"virtuser": "Bad Name"}}"#,
            "sandbox.virtuser",
        ),
    ];
    for (prof, key) in cases {
        let o = exec_root(&tb, prof, &["true"]);
        let (_, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{prof}: {stderr}");
        assert!(stderr.contains(key), "{prof}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    assert_eq!(common::wait_clean(&tb), Vec::<String>::new());
}

/// The original README's "hardened browser" profile (doc/EXAMPLES.md) with a
/// shell in place of the browser (its `gui` is tested in tests/tests/gui.rs):
/// under gVisor, as a virtual user with a persistent home, the Downloads bind
/// the only way out to the host. As root, the Downloads directory is given
/// to the uid `pallium check` names, as the user would.
#[test]
fn hardened_browser_profile_with_a_shell_for_the_browser() {
    skip_unless_root!();
    use std::os::unix::fs::MetadataExt;
    if !std::path::Path::new("/usr/bin/runsc").is_file() {
        pallium_tests::skip("runsc is not installed (Debian package runsc)");
        return;
    }
    let rootless = tun_usable();
    if !rootless {
        pallium_tests::skip("rootless half: /dev/net/tun is not world read-write");
    }
    let tb = Testbed::new("sbxbrowser");
    let name = format!("browser{}", std::process::id());
    let user = TestUser::get();
    let _homes = [
        VirtuserDir(std::path::Path::new("/etc/pallium/virtuser").join(&name)),
        VirtuserDir(user.home().join(".config/pallium/virtuser").join(&name)),
    ];
    let base = std::env::temp_dir().join(format!("pallium-browser-{}", std::process::id()));
    let _base = VirtuserDir(base.clone());
    let browse = "dmesg | head -1; whoami; echo $HOME; \
                  echo page > /home/browser/Downloads/page.html && echo saved; \
                  echo visited >> $HOME/history && echo remembered";
    for root in [true, false] {
        if !root && !rootless {
            continue;
        }
        let dl = base.join(if root { "root" } else { "user" });
        std::fs::create_dir_all(&dl).unwrap();
        let prof = format!(
            r#"{{"sandbox": {{"gvisor": true, "virtuser": "{name}", "paths": {{"bind": [["/home/browser/Downloads", "{}"]]}}}}, "run": {{"command": "chromium"}}}}"#,
            dl.display()
        );
        let owner = if root {
            let o = out(tb.host_exec([
                pallium().display().to_string(),
                "check".into(),
                prof.clone(),
            ]));
            let (stdout, stderr) = text(&o);
            assert!(o.status.success(), "{stdout}{stderr}");
            let uid: u32 = stdout
                .lines()
                .find_map(|l| l.split("virtual user is uid ").nth(1))
                .and_then(|r| r.split(',').next()?.parse().ok())
                .unwrap_or_else(|| panic!("no uid in: {stdout}"));
            assert_ne!(uid, 0);
            uid
        } else {
            std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            user.uid()
        };
        nix::unistd::chown(&dl, Some(owner.into()), None).unwrap();
        let run = |script: &str| {
            let argv = ["sh", "-c", script];
            if root {
                exec_root(&tb, &prof, &argv)
            } else {
                exec_user(&tb, &prof, &argv)
            }
        };
        let o = run(browse);
        let (stdout, stderr) = text(&o);
        assert!(o.status.success(), "root {root}: {stdout}{stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert!(lines[0].contains("gVisor"), "root {root}: {stdout}");
        assert_eq!(
            &lines[1..],
            [
                name.as_str(),
                format!("/home/{name}").as_str(),
                "saved",
                "remembered"
            ],
            "root {root}: {stderr}"
        );
        // The download is on the host, the virtual user's.
        let page = dl.join("page.html");
        assert_eq!(std::fs::read_to_string(&page).unwrap(), "page\n");
        assert_eq!(
            std::fs::metadata(&page).unwrap().uid(),
            owner,
            "root {root}"
        );
        // The home persists into the next session.
        let o = run("cat $HOME/history");
        assert_eq!(text(&o).0, "visited\n", "root {root}: {:?}", text(&o));
    }
    assert_eq!(common::wait_clean(&tb), Vec::<String>::new());
}
