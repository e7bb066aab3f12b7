//! `sandbox.paths` and virtual users through the built sandboxer (the
//! original's virtual-user and paths tests). Needs root; skips with a message otherwise.

use std::path::Path;

use proto::profile::{Paths, PathsMode, Sandbox, Virtuser, VirtuserName};

mod common;

use common::*;

#[test]
fn base_mode_with_a_minimal_whitelist_has_no_tmp() {
    if !root() {
        return;
    }
    let (code, out) = run_in(paths(PathsMode::Base, BASE_MIN, &[], &[]), "ls /tmp");
    assert_eq!(code, 2, "{out}");
}

#[test]
fn explicit_blacklist_beats_a_glob_whitelist() {
    if !root() {
        return;
    }
    let (code, out) = run_in(
        paths(PathsMode::Base, &["/*"], &["/tmp"], &[]),
        "ls /tmp/* 2>/dev/null | head -1; test -e /etc/passwd && echo etc-ok",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "etc-ok\n");
}

#[test]
fn bound_files_are_readable_at_new_paths() {
    if !root() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("pallium-paths-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("f");
    std::fs::write(&file, "hello\n").unwrap();
    let f = file.to_str().unwrap();
    for dst in [
        "/pallium-test",
        "/doesnotexist/pallium-test",
        "/etc/pallium-test",
        "/etc/x/pallium-test",
    ] {
        let (code, out) = run_in(
            paths(PathsMode::Append, &[], &[], &[(dst, f)]),
            &format!("cat {dst}; test -e /etc/passwd && echo etc-ok"),
        );
        assert_eq!((code, out.as_str()), (0, "hello\netc-ok\n"), "{dst}");
    }
    assert!(!Path::new("/etc/x").exists() && !Path::new("/etc/pallium-test").exists());
    assert!(!Path::new("/doesnotexist").exists() && !Path::new("/pallium-test").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_file_not_whitelisted_is_invisible() {
    if !root() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("pallium-hidden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret"), "s").unwrap();
    let (code, out) = run_in(
        Sandbox {
            paths: Some(Paths::default()),
            ..Sandbox::default()
        },
        &format!("cat {}/secret", dir.display()),
    );
    assert_ne!(code, 0, "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resolver_and_bus_sockets_are_hidden_in_the_full_view() {
    if !root() {
        return;
    }
    // Whatever of these exists on the host shows up empty and read-only.
    let script = "for p in /run/nscd /run/systemd/resolve /var/run/dbus; do \
                  [ -d $p ] && [ -n \"$(ls -A $p 2>/dev/null)\" ] && echo visible $p; \
                  [ -d $p ] && touch $p/x 2>/dev/null && echo writable $p; done; \
                  s=/run/dbus/system_bus_socket; [ -S $s ] && echo socket $s; true";
    let (code, out) = run_in(Sandbox::default(), script);
    assert_eq!((code, out.as_str()), (0, ""));
}

#[test]
fn virtual_user_has_its_name_and_home() {
    if !root() {
        return;
    }
    let profile = Sandbox {
        virtuser: Some(Virtuser {
            name: VirtuserName::Temporary,
            skeleton: None,
        }),
        ..Sandbox::default()
    };
    let (code, out) = run_in(
        profile,
        "grep -c . /etc/passwd; cut -d: -f1,6 /etc/passwd; echo $HOME $USER; pwd; hostname; cat /etc/hostname",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        "1\ntmp:/home/tmp\n/home/tmp tmp\n/home/tmp\npallium\npallium\n"
    );
}
