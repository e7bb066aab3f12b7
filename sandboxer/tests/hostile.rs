//! The sandboxer facing a compromised supervisor (issue 10, items 4 and 5, in
//! part): requests a real supervisor would never send — a virtual user named
//! `../..`, a debugfs `fsmount` — are refused when they are decoded, before
//! anything is done on the host. Needs root; skips with a message otherwise.

use proto::profile::{FsMount, Paths, Sandbox, Virtuser, VirtuserName};
use proto::sandbox::{SandboxEvent, SandboxRequest, Setup};
use proto::Fd;

mod common;

use common::*;

/// Send `Setup` with `profile`; the sandboxer must not answer `Ready`.
fn refused(profile: Sandbox) -> String {
    let mut sb = Sandboxer::root_mode();
    sb.chan
        .send(SandboxRequest::Setup(Box::new(Setup {
            netns: Fd(new_netns()),
            userns: None,
            app_userns: None,
            app_uid: None,
            hostname: "pallium".into(),
            resolv_conf: String::new(),
            hosts: String::new(),
            uid: 0,
            gid: 0,
            runsc: None,
            profile,
            hidden: vec![],
        })))
        .unwrap();
    let answer = match sb.chan.recv() {
        Ok(SandboxEvent::Ready { .. }) => panic!("the sandboxer accepted the request"),
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("channel closed: {e}"),
    };
    let status = sb.proc.wait().unwrap();
    assert!(!status.success(), "the sandboxer carried on: {answer}");
    answer
}

#[test]
fn a_traversal_virtual_user_name_is_refused_before_anything_is_made() {
    if !root() {
        return;
    }
    // Root mode: the home would be /etc/pallium/virtuser/../../home = /etc/home.
    let target = std::path::Path::new("/etc/home");
    let existed = target.exists();
    let answer = refused(Sandbox {
        virtuser: Some(Virtuser {
            name: VirtuserName::Named("../..".into()),
            skeleton: None,
        }),
        ..Default::default()
    });
    assert_eq!(target.exists(), existed, "{answer}");
}

#[test]
fn a_debugfs_fsmount_is_refused() {
    if !root() {
        return;
    }
    refused(Sandbox {
        paths: Some(Paths {
            fsmount: vec![FsMount {
                dst: "/d".into(),
                fstype: "debugfs".into(),
            }],
            ..Default::default()
        }),
        ..Default::default()
    });
}
