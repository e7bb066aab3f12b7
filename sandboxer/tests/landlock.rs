//! Landlock behind the mount sandbox, through the built
//! sandboxer: the application's landlock domain mirrors its file view, so a
//! place the mount view leaves writable by file permissions but grants
//! nothing (the sandbox's root tmpfs, a stand-in tmpfs) is still denied.
//! Needs root; the landlock checks skip where the kernel has no landlock.
#![allow(unsafe_code)] // Tests call raw syscalls to attack or inspect the sandbox.

use proto::profile::PathsMode;

mod common;

use common::*;

/// Whether the running kernel has landlock (its ABI version, or an error).
fn landlock_available() -> bool {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a null attribute and size
    // 0 only returns the ABI version; nothing is read or written.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32,
        )
    };
    if v <= 0 {
        eprintln!("skipping the landlock checks: the kernel has no landlock");
    }
    v > 0
}

#[test]
fn landlock_mirrors_the_file_view() {
    if !root() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("pallium-landlock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f"), "hello\n").unwrap();
    let d = dir.to_str().unwrap();
    let mut whitelist = BASE_MIN.to_vec();
    whitelist.push(d);
    // Root mode: the whitelisted directory is read-only; bound (`bind`) at
    // a second place, it is writable.
    let script = format!(
        "cat {d}/f; \
         (echo w > {d}/w) 2>/dev/null || echo whitelist-read-only; \
         echo w > /rw/w && echo bound-dir-writable; \
         ls / >/dev/null && echo root-listable; \
         mkdir /probe 2>/dev/null || echo root-tmpfs-denied; \
         touch /tmp/probe 2>/dev/null || echo stand-in-tmpfs-denied"
    );
    let (code, out) = run_in(
        paths(PathsMode::Base, &whitelist, &[], &[("/rw", d)]),
        &script,
    );
    let written = std::fs::read_to_string(dir.join("w"));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 0, "{out}");
    // The view itself: a whitelisted file is readable, the whitelisted
    // directory read-only and the bound one writable, the root lists.
    assert!(
        out.starts_with("hello\nwhitelist-read-only\nbound-dir-writable\nroot-listable\n"),
        "{out}"
    );
    assert_eq!(written.unwrap(), "w\n");
    if !landlock_available() {
        return;
    }
    // The second wall: root owns these tmpfs (mode 0755), so only landlock
    // denies writing to them.
    assert!(out.contains("root-tmpfs-denied\n"), "{out}");
    assert!(out.contains("stand-in-tmpfs-denied\n"), "{out}");
}
