//! `pallium cp` and `pallium mv` as root: the original's test_mv flow
//! (its test suite), the PROFILE:PATH form, and symbolic links in the sandbox
//! that point at host paths, which must never lead to the host's files.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{out, pal, profile_file, text, Mode};
use pallium_tests::{skip_unless_root, Testbed};

/// `pallium ARGS`, which must succeed.
fn ok(tb: &Testbed, args: &[&str]) -> String {
    let o = out(pal(tb, Mode::Root, args));
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "pallium {args:?}: {stdout}{stderr}");
    stdout
}

/// `pallium ARGS`, which must fail; its standard error.
fn fails(tb: &Testbed, args: &[&str]) -> String {
    let o = out(pal(tb, Mode::Root, args));
    let (stdout, stderr) = text(&o);
    assert!(!o.status.success(), "pallium {args:?} succeeded: {stdout}");
    stderr
}

/// A running session of `profile` (a `sleep infinity`), stopped on drop.
struct Session<'a> {
    tb: &'a Testbed,
    profile: String,
    child: Child,
}

impl<'a> Session<'a> {
    fn start(tb: &'a Testbed, profile: &Path) -> Self {
        let profile = profile.display().to_string();
        let child = pal(tb, Mode::Root, &["run", "--quiet", &profile])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn run");
        let deadline = Instant::now() + Duration::from_secs(15);
        while !out(pal(tb, Mode::Root, &["exec", &profile, "--", "true"]))
            .status
            .success()
        {
            assert!(Instant::now() < deadline, "the session never became ready");
            std::thread::sleep(Duration::from_millis(30));
        }
        Session { tb, profile, child }
    }

    fn sh(&self, script: &str) -> String {
        ok(self.tb, &["exec", &self.profile, "--", "sh", "-c", script])
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = out(pal(self.tb, Mode::Root, &["stop", &self.profile]));
        let _ = self.child.wait();
    }
}

/// A fresh host directory for one test.
fn host_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pallium-cpmv-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A profile whose sandbox has a private /tmp (the host's /tmp is invisible).
fn private_tmp_profile(name: &str) -> PathBuf {
    profile_file(
        name,
        r#"{"sandbox": {"paths": {}}, "run": {"command": ["sleep", "infinity"]}}"#,
    )
}

#[test]
fn mv_and_cp_between_host_and_sandbox() {
    skip_unless_root!();
    let tb = Testbed::new("cpmv");
    let prof = profile_file("cpmv", r#"{"run": {"command": ["sleep", "infinity"]}}"#);
    let p = prof.display().to_string();
    let s = Session::start(&tb, &prof);
    let d = host_dir("flow");
    let inside = format!("/tmp/pallium-cpmv-{}-hello.txt", std::process::id());

    // mv into the sandbox: the host file is gone, the sandbox has it.
    let f = d.join("hello.txt");
    std::fs::write(&f, "Hello World\n").unwrap();
    ok(&tb, &["mv", f.to_str().unwrap(), "--to", &p, &inside]);
    assert!(!f.exists(), "the source was moved");
    assert_eq!(s.sh(&format!("cat {inside}")), "Hello World\n");

    // … and back out.
    let back = d.join("back.txt");
    ok(&tb, &["mv", "--from", &p, &inside, back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "Hello World\n");
    assert_eq!(
        s.sh(&format!("test -e {inside} && echo there || echo gone")),
        "gone\n"
    );

    // cp -r: the source stays; a directory without -r is refused.
    let tree = d.join("testdir");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/f"), "deep\n").unwrap();
    std::os::unix::fs::symlink("sub/f", tree.join("link")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tree.join("sub/f"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let tdst = format!("/tmp/pallium-cpmv-{}-testdir", std::process::id());
    let e = fails(&tb, &["cp", tree.to_str().unwrap(), "--to", &p, &tdst]);
    assert!(e.contains("use -r"), "{e}");
    ok(
        &tb,
        &["cp", "-r", tree.to_str().unwrap(), "--to", &p, &tdst],
    );
    assert!(tree.join("sub/f").exists(), "cp keeps the source");
    assert_eq!(
        s.sh(&format!(
            "cat {tdst}/sub/f; readlink {tdst}/link; stat -c %a {tdst}/sub/f"
        )),
        "deep\nsub/f\n640\n"
    );
    // Into an existing directory: DST/basename(SRC), which must not exist.
    ok(
        &tb,
        &["cp", "-r", tree.to_str().unwrap(), "--to", &p, &tdst],
    );
    assert_eq!(s.sh(&format!("cat {tdst}/testdir/sub/f")), "deep\n");
    let e = fails(
        &tb,
        &["cp", "-r", tree.to_str().unwrap(), "--to", &p, &tdst],
    );
    assert!(e.contains("already exists"), "{e}");

    // PROFILE:PATH, and a directory destination receives basename(SRC).
    let g = d.join("g.txt");
    std::fs::write(&g, "via colon\n").unwrap();
    ok(&tb, &["cp", g.to_str().unwrap(), &format!("{p}:{tdst}")]);
    assert_eq!(s.sh(&format!("cat {tdst}/g.txt")), "via colon\n");
    let out_dir = d.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    ok(
        &tb,
        &[
            "cp",
            &format!("{p}:{tdst}/g.txt"),
            out_dir.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("g.txt")).unwrap(),
        "via colon\n"
    );
    s.sh(&format!("rm -rf {tdst}"));

    // One clear line for each mistake.
    let e = fails(
        &tb,
        &["cp", "--from", &p, "/no/such/file", d.to_str().unwrap()],
    );
    assert!(
        e.contains("no such file or directory in the sandbox"),
        "{e}"
    );
    let e = fails(&tb, &["cp", "a", "b"]);
    assert!(e.contains("neither SRC nor DST"), "{e}");
    let e = fails(&tb, &["cp", &format!("{p}:/a"), &format!("{p}:/b")]);
    assert!(e.contains("both"), "{e}");
    let e = fails(&tb, &["cp", "-s", "3", "--from", &p, "/a", "b"]);
    assert!(e.contains("session 3"), "{e}");
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn sandbox_symlinks_never_reach_the_host() {
    skip_unless_root!();
    let tb = Testbed::new("cpmvesc");
    let prof = private_tmp_profile("cpmvesc");
    let p = prof.display().to_string();
    let s = Session::start(&tb, &prof);
    let d = host_dir("escape");
    // A host-only file: the sandbox's /tmp is a private tmpfs.
    let marker = d.join("marker");
    std::fs::write(&marker, "HOST SECRET\n").unwrap();
    let m = marker.display().to_string();
    assert_eq!(
        s.sh(&format!("test -e {m} && echo visible || echo hidden")),
        "hidden\n"
    );

    // Out of the sandbox through an absolute and a ..-laden link to the marker.
    s.sh(&format!(
        "ln -s {m} /tmp/evil; ln -s ../../../../../../../..{m} /tmp/evil2; ln -s {d} /tmp/evildir",
        d = d.display()
    ));
    for link in ["/tmp/evil", "/tmp/evil2", "/tmp/evildir/marker"] {
        let dst = d.join("out");
        let o = out(pal(
            &tb,
            Mode::Root,
            &["cp", "--from", &p, link, dst.to_str().unwrap()],
        ));
        let got = std::fs::read_to_string(&dst).unwrap_or_default();
        assert!(
            !got.contains("HOST SECRET"),
            "{link} leaked the host file: {:?}",
            text(&o)
        );
        assert!(!o.status.success(), "{link}: {:?}", text(&o));
        let _ = std::fs::remove_file(&dst);
    }
    // The link's target inside the sandbox is what is copied.
    s.sh(&format!("mkdir -p {}; echo sandbox > {m}", d.display()));
    let dst = d.join("out");
    ok(
        &tb,
        &["cp", "--from", &p, "/tmp/evil", dst.to_str().unwrap()],
    );
    assert_eq!(std::fs::read_to_string(&dst).unwrap(), "sandbox\n");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "HOST SECRET\n");

    // Into the sandbox through links to host paths: nothing is written on the host.
    let src = d.join("payload");
    std::fs::write(&src, "PAYLOAD\n").unwrap();
    let target = d.join("written");
    s.sh(&format!("ln -s {} /tmp/evilin", target.display()));
    let e = fails(
        &tb,
        &["cp", src.to_str().unwrap(), "--to", &p, "/tmp/evilin"],
    );
    assert!(e.contains("symbolic link"), "{e}");
    // Through a linked directory: the sandbox's own directory receives it.
    ok(
        &tb,
        &[
            "cp",
            src.to_str().unwrap(),
            "--to",
            &p,
            "/tmp/evildir/written",
        ],
    );
    assert!(!target.exists(), "cp wrote on the host");
    assert_eq!(s.sh(&format!("cat {}", target.display())), "PAYLOAD\n");
    // A ..-laden link as the destination is refused too; the host file stays.
    let e = fails(
        &tb,
        &["cp", src.to_str().unwrap(), "--to", &p, "/tmp/evil2"],
    );
    assert!(e.contains("symbolic link"), "{e}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "HOST SECRET\n");
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}

/// `pallium cp --from` acts as the application does in the sandbox: a link
/// there to a host file the view shows but the application may not read
/// (`/etc/shadow`, read-only and root's) copies nothing out; files it copies
/// in are the application's.
#[test]
fn cp_reads_and_writes_the_sandbox_as_the_application() {
    skip_unless_root!();
    let tb = Testbed::new("cpmvapp");
    let prof = profile_file("cpmvapp", r#"{"run": {"command": ["sleep", "infinity"]}}"#);
    let p = prof.display().to_string();
    let s = Session::start(&tb, &prof);
    let d = host_dir("asapp");
    assert_eq!(
        s.sh("cat /etc/shadow >/dev/null 2>&1 && echo readable || echo denied"),
        "denied\n"
    );
    s.sh("ln -s /etc/shadow /tmp/report.txt");
    let dst = d.join("report.txt");
    let e = fails(
        &tb,
        &["cp", "--from", &p, "/tmp/report.txt", dst.to_str().unwrap()],
    );
    assert!(e.contains("Permission denied"), "{e}");
    assert!(!dst.exists(), "the host's shadow was copied out");
    // In: the application owns what arrives (it reads a 0600 file).
    let src = d.join("private");
    std::fs::write(&src, "mine\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o600)).unwrap();
    ok(
        &tb,
        &["cp", src.to_str().unwrap(), "--to", &p, "/tmp/private"],
    );
    assert_eq!(
        s.sh("cat /tmp/private; stat -c %u /tmp/private"),
        "mine\n0\n"
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&d);
}
