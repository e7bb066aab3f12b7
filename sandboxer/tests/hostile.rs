//! The sandboxer facing a compromised supervisor:
//! the harness speaks the wire protocol itself and sends what a real
//! supervisor never would — a virtual user named `../..`, traversal paths, a
//! debugfs `fsmount`, a skeleton the caller cannot read, requests out of
//! order, oversized, truncated and garbage frames, stray descriptors — and
//! checks that each is refused (one `Failed`, a non-zero exit) with nothing
//! done on the host. Needs root; skips with a message otherwise.

use std::io::{IoSlice, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{sendmsg, setsockopt, sockopt, ControlMessage, MsgFlags};
use proto::profile::{BindMount, FsMount, Paths, Sandbox, Virtuser, VirtuserName};
use proto::sandbox::{SandboxEvent, SandboxRequest, Setup, Spawn};
use proto::{ErrorKind, Fd};

mod common;

use common::*;

fn setup_request(profile: Sandbox, (uid, gid): (u32, u32)) -> SandboxRequest {
    SandboxRequest::Setup(Box::new(Setup {
        netns: Fd(new_netns()),
        userns: None,
        app_userns: None,
        app_uid: None,
        hostname: "pallium".into(),
        resolv_conf: String::new(),
        hosts: String::new(),
        uid,
        gid,
        runsc: None,
        profile,
        hidden: vec![],
        binds: Vec::new(),
    }))
}

/// Send `Setup` with `profile`; the sandboxer must not answer `Ready`.
fn refused(profile: Sandbox) -> String {
    refused_as(profile, (0, 0))
}

/// [`refused`] with the caller's ids `ids`.
fn refused_as(profile: Sandbox, ids: (u32, u32)) -> String {
    let sb = Sandboxer::root_mode();
    sb.chan.send(setup_request(profile, ids)).unwrap();
    ends_refused(sb)
}

/// The sandboxer answers its last request with `Failed` (or hangs up), never
/// `Ready`, and exits non-zero.
fn ends_refused(mut sb: Sandboxer) -> String {
    let answer = match sb.chan.recv() {
        Ok(SandboxEvent::Ready { .. }) => panic!("the sandboxer accepted the request"),
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("channel closed: {e}"),
    };
    let status = sb.proc.wait().unwrap();
    assert!(!status.success(), "the sandboxer carried on: {answer}");
    answer
}

/// The sandboxer answered `Failed` of `kind` and ended.
fn ends_with(sb: Sandboxer, kind: ErrorKind) -> String {
    let answer = ends_refused(sb);
    assert!(
        answer.contains(&format!("kind: {kind:?}")),
        "expected a {kind:?} failure, got {answer}"
    );
    answer
}

/// One SEQPACKET message of raw bytes with `fds` attached, as a hostile
/// supervisor can send it.
fn send_raw(sb: &Sandboxer, bytes: &[u8], fds: &[RawFd]) {
    let iov = [IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(
        sb.chan.fd().as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::empty(),
        None,
    )
    .unwrap();
}

/// A pipe whose write end we hand over: reading our end sees EOF only once
/// every copy of the write end is closed — the sandboxer's too.
fn pipe() -> (std::fs::File, OwnedFd) {
    let (r, w) = nix::unistd::pipe().unwrap();
    (std::fs::File::from(r), w)
}

fn assert_closed(mut r: std::fs::File, what: &str) {
    // The channel's receive timeout does not apply here: a kept descriptor
    // would hang the test, so read from a thread with a deadline.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1];
        let _ = tx.send(r.read(&mut buf).map(|n| n == 0));
    });
    let eof = rx.recv_timeout(std::time::Duration::from_secs(20));
    assert!(
        matches!(eof, Ok(Ok(true))),
        "the sandboxer kept {what} open"
    );
}

fn spawn_request(id: u32) -> SandboxRequest {
    let null = || Fd(std::fs::File::open("/dev/null").unwrap().into());
    SandboxRequest::Spawn(Spawn {
        id,
        argv: vec!["/bin/true".into()],
        env: vec![],
        cwd: None,
        stdio: [null(), null(), null()],
        tty: false,
        root: false,
        netns: None,
    })
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

#[test]
fn traversal_paths_are_refused_when_decoded() {
    if !root() {
        return;
    }
    let bind = Sandbox {
        paths: Some(Paths {
            bind: vec![BindMount {
                dst: "/tmp/../etc".into(),
                src: "/tmp".into(),
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let answer = refused(bind);
    assert!(answer.contains("kind: Protocol"), "{answer}");
    refused(Sandbox {
        paths: Some(Paths {
            whitelist: vec!["/home//x".into()],
            ..Default::default()
        }),
        ..Default::default()
    });
    refused(Sandbox {
        workdir: Some("../../root".into()),
        ..Default::default()
    });
}

#[test]
fn a_skeleton_the_caller_cannot_read_is_refused_before_a_home_is_made() {
    if !root() {
        return;
    }
    // Root mode with an unprivileged caller: a directory of root's (0700,
    // like /root; a small one, so that a regression copies little) is not
    // theirs to copy into a home the application reads.
    let foreign = std::env::temp_dir().join(format!("pallium-foreign-{}", std::process::id()));
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("secret"), "root's").unwrap();
    std::os::unix::fs::chown(&foreign, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(
        &foreign,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let skel = foreign.to_str().unwrap();
    let name = format!("hostile{}", std::process::id());
    let caller = nix::unistd::User::from_uid(1001.into())
        .unwrap()
        .expect("the test user pallium-test (uid 1001)");
    let home = caller.dir.join(".config/pallium/virtuser").join(&name);
    let user = |skeleton: &str| Sandbox {
        virtuser: Some(Virtuser {
            name: VirtuserName::Named(name.clone()),
            skeleton: Some(skeleton.into()),
        }),
        ..Default::default()
    };
    let sb = Sandboxer::root_mode();
    sb.chan
        .send(setup_request(user(skel), (1001, 1001)))
        .unwrap();
    let answer = ends_with(sb, ErrorKind::Permission);
    assert!(answer.contains(skel), "{answer}");
    assert!(!home.exists(), "a home was made: {answer}");
    // The temporary user's tmpfs home: refused the same way.
    let sb = Sandboxer::root_mode();
    let tmp = Sandbox {
        virtuser: Some(Virtuser {
            name: VirtuserName::Temporary,
            skeleton: Some(skel.into()),
        }),
        ..Default::default()
    };
    sb.chan.send(setup_request(tmp, (1001, 1001))).unwrap();
    ends_refused(sb);
    std::fs::remove_dir_all(&foreign).unwrap();
}

#[test]
fn requests_out_of_order_end_the_sandboxer() {
    if !root() {
        return;
    }
    let sb = Sandboxer::root_mode();
    sb.chan.send(spawn_request(1)).unwrap();
    ends_with(sb, ErrorKind::Protocol);
    let sb = Sandboxer::root_mode();
    sb.chan.send(SandboxRequest::ListPids).unwrap();
    ends_with(sb, ErrorKind::Protocol);
    let sb = Sandboxer::root_mode();
    sb.chan
        .send(SandboxRequest::Signal { id: 1, signal: 9 })
        .unwrap();
    ends_with(sb, ErrorKind::Protocol);
    // A second Setup, after a good one.
    let mut sb = Sandboxer::root_mode();
    sb.setup(new_netns(), None, 0, 0);
    sb.chan
        .send(setup_request(Sandbox::default(), (0, 0)))
        .unwrap();
    ends_with(sb, ErrorKind::Protocol);
}

#[test]
fn malformed_frames_end_the_sandboxer() {
    if !root() {
        return;
    }
    let max = proto::wire::MAX_FRAME;
    // A header that claims more than the limit.
    let mut claim = ((max as u32) * 2).to_le_bytes().to_vec();
    claim.extend_from_slice(&[0; 16]);
    // A header that claims more than the frame holds.
    let mut short = 100u32.to_le_bytes().to_vec();
    short.extend_from_slice(&[1, 2, 3]);
    // Bytes that are no request at all.
    let mut garbage = 8u32.to_le_bytes().to_vec();
    garbage.extend_from_slice(&[0xff; 8]);
    for (what, frame) in [
        ("oversized claim", claim),
        ("truncated", short),
        ("garbage", garbage),
        ("no header", vec![7]),
    ] {
        let sb = Sandboxer::root_mode();
        send_raw(&sb, &frame, &[]);
        let answer = ends_with(sb, ErrorKind::Protocol);
        eprintln!("{what}: {answer}");
    }
    // A message bigger than the codec's limit (the socket buffer raised so
    // that it can be sent at all).
    let sb = Sandboxer::root_mode();
    setsockopt(&sb.chan.fd(), sockopt::SndBufForce, &(4 * max)).unwrap();
    let mut big = ((max + 4) as u32).to_le_bytes().to_vec();
    big.resize(max + 8, 0);
    send_raw(&sb, &big, &[]);
    ends_with(sb, ErrorKind::Protocol);
}

#[test]
fn stray_descriptors_are_closed_not_kept() {
    if !root() {
        return;
    }
    // Attached to a request that takes none: answered, and the descriptor
    // closed at once.
    let mut sb = Sandboxer::root_mode();
    sb.setup(new_netns(), None, 0, 0);
    let (r, w) = pipe();
    let (frame, _) = proto::wire::encode(&SandboxRequest::ListPids).unwrap();
    send_raw(&sb, &frame, &[w.as_raw_fd()]);
    drop(w);
    match sb.chan.recv() {
        Ok(SandboxEvent::Pids(_)) => {}
        other => panic!("ListPids with a stray descriptor: {other:?}"),
    }
    assert_closed(r, "a stray descriptor");
    assert!(sb.shutdown().success());
    // More than a frame may carry: refused, every one closed.
    let sb = Sandboxer::root_mode();
    let (r, w) = pipe();
    let fds = vec![w.as_raw_fd(); proto::wire::MAX_FDS + 4];
    send_raw(&sb, &frame, &fds);
    drop(w);
    ends_with(sb, ErrorKind::Protocol);
    assert_closed(r, "descriptors past the limit");
}

#[test]
fn setup_drops_what_only_setup_needed() {
    if !root() {
        return;
    }
    use proto::policy::Cap;
    let mut sb = Sandboxer::root_mode();
    let pid = sb.proc.id();
    let status = || std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |st: &str, k: &str| {
        let v = st
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")))
            .unwrap()
            .trim()
            .to_string();
        v
    };
    let mask = |st: &str, k: &str| u64::from_str_radix(&field(st, k), 16).unwrap();
    let before = status();
    let gone = Cap::Chown.mask() | Cap::DacOverride.mask() | Cap::SysChroot.mask();
    assert_eq!(mask(&before, "CapPrm") & gone, gone, "{before}");
    sb.setup(new_netns(), None, 0, 0);
    let after = status();
    // Capabilities are per thread: the drop holds because there is one.
    assert_eq!(field(&after, "Threads"), "1");
    for k in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(mask(&after, k) & gone, 0, "{k} still holds {after}");
        assert_eq!(
            mask(&after, k) & !proto::policy::after_setup_mask(proto::policy::Role::Sandboxer),
            0,
            "{k}: {after}"
        );
    }
    // And it still spawns.
    assert_eq!(sb.run(1, "true").0, proto::sandbox::ExitStatus::Code(0));
    assert!(sb.shutdown().success());
}
