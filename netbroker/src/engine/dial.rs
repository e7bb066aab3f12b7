//! The dial channel of an engine whose proxy is a hop daemon's unix socket
//! (tor's `SocksPort unix:`). The engine may make no unix socket at all: its
//! seccomp filter cannot see which path a `connect` names, so one allowed
//! unix socket would reach every unix socket its uid reaches (rootless the
//! caller's own: ssh-agent, gpg-agent, the session bus, X11) and the
//! abstract ones of its network namespace. The netbroker connects for it
//! and passes the descriptor ([`proto::engine::DialRequest`]).
//!
//! [`Server`], in the netbroker: at engine start, while it may still take
//! the engine's group (root mode the socket's directory is the daemon's
//! user's and the engine's group's, mode 2750, and the netbroker holds no
//! CAP_DAC_OVERRIDE), it opens an `O_PATH` descriptor of the socket
//! ([`crate::sys::open_path_as_group`]) and serves the channel on a thread
//! of its own, which drops every capability: each request gets one
//! non-blocking connect to `/proc/self/fd/N` — the socket's inode, no name
//! lookup, no directory permission needed — and its descriptor or errno.
//! Bounded: the thread holds one descriptor at a time and never blocks on
//! the engine. Its socket is non-blocking with the smallest send buffer, so
//! only a handful of replies can wait unread (a well-behaved engine waits
//! for each); when one cannot be sent, the engine is not reading them, and
//! the thread hangs up (the engine's later dials fail).
//!
//! [`Client`], in the engine: one synchronous round trip per dial, under a
//! lock (the event loop and the DNS forwarder thread both dial), with a
//! receive timeout. A malformed reply, no reply or a closed channel is a
//! dial error, and the channel is not used again after one: a late reply
//! would answer the next request.

#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::socket::{
    setsockopt, shutdown, socketpair, sockopt, AddressFamily, Shutdown, SockFlag, SockType,
    UnixAddr,
};
use proto::engine::{DialReply, DialRequest, Errno};
use proto::{Channel, Fd, WireError};

/// How long the engine waits for the netbroker's answer (it is immediate:
/// one connect to a local socket).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the dial channel could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("open the proxy's socket {path} for the packet engine: {source}")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("set up the packet engine's dial channel: {0}")]
    Channel(#[source] io::Error),
}

/// The netbroker's side: the thread that connects for one engine. Dropping
/// it ends the thread.
#[derive(Debug)]
pub struct Server {
    /// A second handle on the thread's socket, to shut it down.
    sock: OwnedFd,
    thread: Option<JoinHandle<String>>,
}

impl Server {
    /// Open `path` (looked up with `group` as the file-system group, root
    /// mode) and serve a dial channel for it; returns the server and the
    /// engine's end of the channel.
    pub fn start(path: &Path, group: Option<u32>) -> Result<(Server, OwnedFd), DialError> {
        let target =
            crate::sys::open_path_as_group(path, group).map_err(|source| DialError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let chan_err = |e: nix::Error| DialError::Channel(e.into());
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(chan_err)?;
        // The kernel raises this to its minimum (a few small messages).
        setsockopt(&ours, sockopt::SndBuf, &1).map_err(chan_err)?;
        set_nonblocking(&ours).map_err(chan_err)?;
        let sock = ours.try_clone().map_err(DialError::Channel)?;
        let chan = Channel::<DialReply, DialRequest>::new(ours);
        let thread = std::thread::Builder::new()
            .name("engine-dial".into())
            .stack_size(128 * 1024)
            .spawn(move || serve(chan, target))
            .map_err(DialError::Channel)?;
        Ok((
            Server {
                sock,
                thread: Some(thread),
            },
            theirs,
        ))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Its poll wakes with EOF.
        let _ = shutdown(self.sock.as_raw_fd(), Shutdown::Both);
        if let Some(why) = self.thread.take().and_then(|t| t.join().ok()) {
            tracing::debug!("packet engine dial channel closed: {why}");
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}

/// The server thread: answer requests until the engine hangs up, the
/// server is dropped, or the engine misbehaves; then shut the channel down
/// (the engine sees EOF). Returns why it ended, which the dropping thread
/// logs: this one takes no lock but the allocator's (no logging, no
/// stdio), so the netbroker may still fork while it runs (a later hop's
/// namespace holder, [`crate::sys::fork_child`]).
fn serve(mut chan: Channel<DialReply, DialRequest>, target: OwnedFd) -> String {
    let why = match proto::policy::drop_thread_caps() {
        Ok(()) => answer(&mut chan, &target),
        Err(e) => format!("drop capabilities: {e}"),
    };
    let _ = shutdown(chan.fd().as_raw_fd(), Shutdown::Both);
    why
}

/// Answer until the end; why it ended.
fn answer(chan: &mut Channel<DialReply, DialRequest>, target: &OwnedFd) -> String {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let addr = match UnixAddr::new(format!("/proc/self/fd/{}", target.as_raw_fd()).as_str()) {
        Ok(a) => a,
        Err(e) => return format!("its address: {e}"),
    };
    loop {
        let mut fds = [PollFd::new(chan.fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return format!("poll: {e}"),
        }
        match chan.recv() {
            Ok(DialRequest) => {}
            Err(WireError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(WireError::Closed) => return "closed".into(),
            Err(e) => return format!("a malformed request: {e}"),
        }
        let reply = match crate::tun2socks::stream::connect_unix(&addr) {
            Ok(fd) => DialReply::Connected(Fd(fd)),
            Err(e) => DialReply::Failed(Errno::new(e as i32).unwrap_or(EIO)),
        };
        // The descriptor is ours until the send; closed here after it.
        if let Err(e) = chan.send(reply) {
            return format!("the engine does not read its replies: {e}");
        }
    }
}

const EIO: Errno = match Errno::new(libc::EIO) {
    Some(e) => e,
    None => unreachable!(),
};

/// The engine's side: asks the netbroker for each connection.
#[derive(Debug)]
pub struct Client {
    /// None once the channel failed.
    chan: Mutex<Option<Channel<DialRequest, DialReply>>>,
}

impl Client {
    /// The engine's end of the channel (from `StartEngine::dial`).
    pub fn new(sock: OwnedFd) -> io::Result<Client> {
        let t = nix::sys::time::TimeVal::new(REPLY_TIMEOUT.as_secs() as _, 0);
        setsockopt(&sock, sockopt::ReceiveTimeout, &t)?;
        Ok(Client {
            chan: Mutex::new(Some(Channel::new(sock))),
        })
    }

    /// A non-blocking stream socket connected to the proxy's socket.
    pub fn dial(&self) -> io::Result<OwnedFd> {
        let mut guard = self
            .chan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(chan) = guard.as_mut() else {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the netbroker's dial channel failed earlier",
            ));
        };
        match chan.send(DialRequest).and_then(|()| chan.recv()) {
            Ok(DialReply::Connected(fd)) => Ok(fd.into_inner()),
            Ok(DialReply::Failed(e)) => Err(io::Error::from_raw_os_error(e.get())),
            Err(e) => {
                *guard = None;
                Err(match e {
                    WireError::Io(e) if e.kind() == io::ErrorKind::WouldBlock => io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the netbroker did not answer the dial within {} s",
                            REPLY_TIMEOUT.as_secs()
                        ),
                    ),
                    e => io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        format!("the netbroker's dial channel: {e}"),
                    ),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::MsgFlags;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::{UnixListener, UnixStream};

    #[test]
    fn the_server_connects_and_the_client_gets_the_stream() {
        let dir = TempDir::new("serve");
        let path = dir.0.join("socks");
        let listener = UnixListener::bind(&path).unwrap();
        let (server, theirs) = Server::start(&path, None).unwrap();
        let client = Client::new(theirs).unwrap();
        for _ in 0..3 {
            let s = UnixStream::from(client.dial().unwrap());
            s.set_nonblocking(false).unwrap();
            (&s).write_all(b"hi").unwrap();
            let (mut peer, _) = listener.accept().unwrap();
            let mut buf = [0u8; 2];
            peer.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"hi");
        }
        // The daemon gone: the errno comes back, the channel stays usable.
        // (A child another test thread of this process forks holds a copy
        // of the listening socket until it execs or exits: until then a
        // connect still lands in its backlog.)
        drop(listener);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let e = loop {
            match client.dial() {
                Err(e) => break e,
                Ok(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(_) => panic!("a dial still connects after the daemon is gone"),
            }
        };
        assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED), "{e}");
        assert_eq!(
            client.dial().unwrap_err().raw_os_error(),
            Some(libc::ECONNREFUSED)
        );
        // Dropping the server ends its thread; the client sees a closed
        // channel, and says so from then on.
        drop(server);
        let e = client.dial().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe, "{e}");
        assert!(client.dial().unwrap_err().to_string().contains("earlier"));
    }

    /// A fresh directory under the temporary one, removed when dropped.
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let p =
                std::env::temp_dir().join(format!("pallium-dial-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Root mode: the socket's directory is another user's and the engine's
    /// group's (2750). The netbroker, without CAP_DAC_OVERRIDE and
    /// CAP_DAC_READ_SEARCH, looks it up only with the engine's group, and
    /// dials it after it has dropped every capability.
    #[test]
    fn without_dac_capabilities_the_socket_is_reached_with_the_engines_group() {
        use std::os::unix::fs::PermissionsExt;
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        const GROUP: u32 = 61_234;
        let dir = TempDir::new("group");
        let socks = dir.0.join("socks");
        std::fs::create_dir(&socks).unwrap();
        let path = socks.join("socks");
        let listener = UnixListener::bind(&path).unwrap();
        let mode = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        mode(&path, 0o666).unwrap();
        mode(&socks, 0o2750).unwrap();
        nix::unistd::chown(&socks, Some(65534.into()), Some(GROUP.into())).unwrap();
        let pid = crate::sys::fork_child(move || {
            use caps::{CapSet, Capability};
            for c in [
                Capability::CAP_DAC_OVERRIDE,
                Capability::CAP_DAC_READ_SEARCH,
                Capability::CAP_FOWNER,
            ] {
                for set in [CapSet::Effective, CapSet::Permitted] {
                    if caps::drop(None, set, c).is_err() {
                        return 10;
                    }
                }
            }
            // Without the group the name cannot be looked up.
            match crate::sys::open_path_as_group(&path, None) {
                Err(e) if e.raw_os_error() == Some(libc::EACCES) => {}
                _ => return 11,
            }
            let Ok((server, theirs)) = Server::start(&path, Some(GROUP)) else {
                return 12;
            };
            // Taking the group for a moment left the process dumpable (its
            // later children's /proc entries stay ours to open).
            if nix::sys::prctl::get_dumpable() != Ok(true) {
                return 16;
            }
            // The setup capabilities gone (all of them): dials still work.
            if proto::policy::drop_thread_caps().is_err() {
                return 13;
            }
            let Ok(client) = Client::new(theirs) else {
                return 14;
            };
            for _ in 0..2 {
                if client.dial().is_err() {
                    return 15;
                }
            }
            drop(server);
            0
        })
        .unwrap();
        let status = nix::sys::wait::waitpid(pid, None).unwrap();
        assert_eq!(status, nix::sys::wait::WaitStatus::Exited(pid, 0));
        // Both connections reached the daemon's socket.
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_ok() && listener.accept().is_ok());
    }

    #[test]
    fn a_malformed_reply_is_a_dial_error() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let client = Client::new(a).unwrap();
        let hostile = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            // The request, then garbage for a reply.
            let n = nix::sys::socket::recv(b.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
            assert!(n > 0);
            let mut frame = 5u32.to_le_bytes().to_vec();
            frame.extend([9, 9, 9, 9, 9]);
            nix::sys::socket::send(b.as_raw_fd(), &frame, MsgFlags::empty()).unwrap();
            b
        });
        let e = client.dial().unwrap_err();
        assert!(e.to_string().contains("dial channel"), "{e}");
        let _b = hostile.join().unwrap();
        assert!(client.dial().is_err());
    }

    #[test]
    fn an_engine_that_reads_no_reply_cannot_make_the_server_hold_more() {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let dir = TempDir::new("flood");
        let path = dir.0.join("socks");
        let _listener = UnixListener::bind(&path).unwrap();
        let (_server, theirs) = Server::start(&path, None).unwrap();
        // A hostile engine: requests, never reading a reply, until the
        // netbroker hangs up. (Non-blocking: while the netbroker's queue is
        // full it waits for room, or the hang-up.)
        let request = proto::wire::encode(&DialRequest).unwrap().0;
        let (mut sent, mut waits) = (0, 0);
        let hung_up = loop {
            match nix::sys::socket::send(
                theirs.as_raw_fd(),
                &request,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(_) => sent += 1,
                Err(nix::Error::EPIPE) => break true,
                Err(nix::Error::EAGAIN) => {
                    waits += 1;
                    let mut fds = [PollFd::new(theirs.as_fd(), PollFlags::POLLOUT)];
                    let _ = poll(&mut fds, PollTimeout::from(100u8));
                }
                Err(e) => panic!("{e}"),
            }
            if sent > 100_000 || waits > 1000 {
                break false;
            }
        };
        assert!(hung_up, "{sent} requests sent and still served");
        // What it left waiting: a few replies, far below the engine's own
        // pending-dial limit.
        let mut chan = Channel::<DialRequest, DialReply>::new(theirs);
        let mut replies = 0;
        while chan.recv().is_ok() {
            replies += 1;
        }
        assert!(replies >= 1, "no reply at all");
        assert!(
            replies <= 64,
            "{replies} replies queued for an engine that reads none"
        );
        eprintln!("{sent} requests sent, {replies} replies queued before the hang-up");
    }
}
