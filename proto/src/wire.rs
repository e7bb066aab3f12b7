//! The one codec: a frame is a `u32` little-endian length followed by a
//! bincode 2 (serde) payload, at most [`MAX_FRAME`] bytes, sent as one
//! `SOCK_SEQPACKET` message with its file descriptors attached by SCM_RIGHTS.
//!
//! Descriptors inside a message are [`Fd`] fields: serialising one records the
//! descriptor and writes its index; decoding takes the received descriptor with
//! that index. Decoding never panics on hostile bytes: every failure is a
//! [`WireError`], and descriptors a message does not claim are closed.

#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::io::{IoSlice, IoSliceMut};
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::PROTOCOL_VERSION;

/// Largest frame, header included.
pub const MAX_FRAME: usize = 1 << 20;
/// Most descriptors one frame may carry.
pub const MAX_FDS: usize = 16;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_FRAME>,
>;

fn config() -> Config {
    bincode::config::standard().with_limit::<MAX_FRAME>()
}

/// What can go wrong on a channel.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("peer closed the channel")]
    Closed,
    #[error("socket I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    Oversized(usize),
    #[error("truncated frame: header says {declared} bytes, got {got}")]
    Truncated { declared: usize, got: usize },
    #[error("too many file descriptors in one frame (limit {MAX_FDS})")]
    TooManyFds,
    #[error("cannot encode message: {0}")]
    Encode(String),
    #[error("malformed message: {0}")]
    Decode(String),
    #[error(
        "protocol version mismatch: this is {ours}, peer speaks {theirs} (mixed pallium installs?)"
    )]
    Version { ours: u32, theirs: u32 },
    #[error("peer is a {theirs}, expected a {expected}")]
    WrongPeer { expected: String, theirs: String },
}

impl From<nix::Error> for WireError {
    fn from(e: nix::Error) -> Self {
        WireError::Io(e.into())
    }
}

/// A file descriptor inside a message. Moves with the message; the channel
/// lifts it into SCM_RIGHTS.
#[derive(Debug)]
pub struct Fd(pub OwnedFd);

impl Fd {
    pub fn into_inner(self) -> OwnedFd {
        self.0
    }
}

impl From<OwnedFd> for Fd {
    fn from(f: OwnedFd) -> Self {
        Fd(f)
    }
}

impl AsFd for Fd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

thread_local! {
    /// Descriptors recorded while encoding one frame.
    static OUTGOING: RefCell<Vec<RawFd>> = const { RefCell::new(Vec::new()) };
    /// Descriptors received with the frame being decoded.
    static INCOMING: RefCell<Vec<Option<OwnedFd>>> = const { RefCell::new(Vec::new()) };
}

impl Serialize for Fd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let idx = OUTGOING.with(|o| {
            let mut o = o.borrow_mut();
            o.push(self.0.as_raw_fd());
            o.len() - 1
        });
        s.serialize_u32(idx as u32)
    }
}

impl<'de> Deserialize<'de> for Fd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let idx = u32::deserialize(d)? as usize;
        INCOMING
            .with(|i| i.borrow_mut().get_mut(idx).and_then(Option::take))
            .map(Fd)
            .ok_or_else(|| serde::de::Error::custom(format!("no file descriptor #{idx} in frame")))
    }
}

/// Encode `msg` into a frame; returns the bytes and the descriptors to attach.
pub fn encode<T: Serialize>(msg: &T) -> Result<(Vec<u8>, Vec<RawFd>), WireError> {
    OUTGOING.with(|o| o.borrow_mut().clear());
    let mut buf = vec![0u8; 4];
    let res = bincode::serde::encode_into_std_write(msg, &mut buf, config());
    let fds = OUTGOING.with(|o| std::mem::take(&mut *o.borrow_mut()));
    res.map_err(|e| WireError::Encode(e.to_string()))?;
    if buf.len() > MAX_FRAME {
        return Err(WireError::Oversized(buf.len()));
    }
    if fds.len() > MAX_FDS {
        return Err(WireError::TooManyFds);
    }
    let len = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&len.to_le_bytes());
    Ok((buf, fds))
}

/// Decode one whole frame with the descriptors that came with it.
pub fn decode<T: DeserializeOwned>(frame: &[u8], fds: Vec<OwnedFd>) -> Result<T, WireError> {
    if frame.len() > MAX_FRAME {
        return Err(WireError::Oversized(frame.len()));
    }
    let Some((head, body)) = frame.split_first_chunk::<4>() else {
        return Err(WireError::Truncated {
            declared: 4,
            got: frame.len(),
        });
    };
    let declared = u32::from_le_bytes(*head) as usize;
    if declared > MAX_FRAME - 4 {
        return Err(WireError::Oversized(declared));
    }
    if declared != body.len() {
        return Err(WireError::Truncated {
            declared,
            got: body.len(),
        });
    }
    INCOMING.with(|i| *i.borrow_mut() = fds.into_iter().map(Some).collect());
    let res = bincode::serde::decode_from_slice::<T, _>(body, config());
    // Whatever the message did not claim is closed here.
    INCOMING.with(|i| i.borrow_mut().clear());
    match res {
        Ok((v, used)) if used == body.len() => Ok(v),
        Ok((_, used)) => Err(WireError::Decode(format!(
            "{} trailing bytes",
            body.len() - used
        ))),
        Err(e) => Err(WireError::Decode(e.to_string())),
    }
}

/// The first frame each way: who is speaking, and which protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    pub role: String,
}

/// A typed, bidirectional endpoint: sends `S`, receives `R`.
pub struct Channel<S, R> {
    sock: OwnedFd,
    buf: Vec<u8>,
    _types: PhantomData<fn(S) -> R>,
}

impl<S, R> std::fmt::Debug for Channel<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Channel(fd {})", self.sock.as_raw_fd())
    }
}

impl<S: Serialize, R: DeserializeOwned> Channel<S, R> {
    /// Wrap a connected `SOCK_SEQPACKET` socket.
    pub fn new(sock: OwnedFd) -> Self {
        // Zeroed allocation: pages are only resident once a large frame arrives.
        Channel {
            sock,
            buf: vec![0u8; MAX_FRAME + 1],
            _types: PhantomData,
        }
    }

    /// A connected pair: this end and the peer's raw socket (to hand to a child).
    pub fn pair() -> Result<(Self, OwnedFd), WireError> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((Channel::new(a), b))
    }

    /// Exchange [`Hello`]s: check the protocol version and the peer's role.
    pub fn handshake(&mut self, me: &str, expected_peer: &str) -> Result<(), WireError> {
        let hello = Hello {
            version: PROTOCOL_VERSION,
            role: me.to_string(),
        };
        send_frame(&self.sock, &hello)?;
        let theirs: Hello = recv_frame(&self.sock, &mut self.buf)?;
        if theirs.version != PROTOCOL_VERSION {
            return Err(WireError::Version {
                ours: PROTOCOL_VERSION,
                theirs: theirs.version,
            });
        }
        if theirs.role != expected_peer {
            return Err(WireError::WrongPeer {
                expected: expected_peer.to_string(),
                theirs: theirs.role,
            });
        }
        Ok(())
    }

    /// Send one message (its [`Fd`]s travel with it and are closed here after).
    pub fn send(&self, msg: S) -> Result<(), WireError> {
        send_frame(&self.sock, &msg)
    }

    /// Receive one message; blocks.
    pub fn recv(&mut self) -> Result<R, WireError> {
        recv_frame(&self.sock, &mut self.buf)
    }

    /// The socket, to poll on.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Reinterpret the channel's direction types (e.g. after a handshake done
    /// with another message set).
    pub fn retype<S2: Serialize, R2: DeserializeOwned>(self) -> Channel<S2, R2> {
        Channel {
            sock: self.sock,
            buf: self.buf,
            _types: PhantomData,
        }
    }
}

fn send_frame<T: Serialize>(sock: &OwnedFd, msg: &T) -> Result<(), WireError> {
    let (buf, fds) = encode(msg)?;
    let iov = [IoSlice::new(&buf)];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(nix::Error::EINTR) => continue,
            Err(nix::Error::EPIPE) | Err(nix::Error::ECONNRESET) => return Err(WireError::Closed),
            Err(e) => return Err(e.into()),
        }
    }
}

fn recv_frame<T: DeserializeOwned>(sock: &OwnedFd, buf: &mut [u8]) -> Result<T, WireError> {
    let mut cspace = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (n, fds, truncated) = loop {
        let mut iov = [IoSliceMut::new(buf)];
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cspace),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut fds = Vec::new();
                for c in msg.cmsgs()? {
                    if let ControlMessageOwned::ScmRights(raw) = c {
                        fds.extend(raw.into_iter().map(crate::sys::owned_from_received));
                    }
                }
                let truncated = msg
                    .flags
                    .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
                break (msg.bytes, fds, truncated);
            }
            Err(nix::Error::EINTR) => continue,
            Err(nix::Error::ECONNRESET) => return Err(WireError::Closed),
            Err(e) => return Err(e.into()),
        }
    };
    if n == 0 {
        return Err(WireError::Closed);
    }
    if truncated {
        return Err(if n >= buf.len() {
            WireError::Oversized(n)
        } else {
            WireError::TooManyFds
        });
    }
    decode(&buf[..n], fds)
}

/// Marker used by tests and fuzzing: decode arbitrary bytes as `T`.
pub fn decode_untrusted<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    decode(bytes, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{BrokerEvent, BrokerRequest, BuildChain, Uplink};
    use crate::control::ControlRequest;
    use crate::sandbox::{ExitStatus, SandboxEvent};
    use proptest::prelude::*;

    fn build() -> BrokerRequest {
        BrokerRequest::BuildChain(BuildChain {
            bridge: None,
            outbound_interface: None,
            session_id: "abc-0".into(),
            rootless: true,
            uid: 1000,
            gid: 1000,
            uplink: Uplink::Pasta,
            chain: vec![],
            routes: Some(vec!["10.0.0.0/8".into()]),
            host_access: true,
            quiet: false,
            port_forwarding: Vec::new(),
        })
    }

    #[test]
    fn round_trip_without_fds() {
        let (buf, fds) = encode(&build()).unwrap();
        assert!(fds.is_empty());
        let back: BrokerRequest = decode(&buf, vec![]).unwrap();
        assert!(
            matches!(back, BrokerRequest::BuildChain(b) if b.uid == 1000 && b.session_id == "abc-0")
        );
    }

    #[test]
    fn round_trip_over_socket_with_fds() {
        let (a, b) = Channel::<BrokerEvent, BrokerEvent>::pair().unwrap();
        let mut b = Channel::<BrokerEvent, BrokerEvent>::new(b);
        let (r, w) = nix::unistd::pipe().unwrap();
        let (r2, w2) = nix::unistd::pipe().unwrap();
        let ev = BrokerEvent::ChainReady(crate::broker::ChainReady {
            netns: Fd(r),
            userns: None,
            app_userns: None,
            app_uid: None,
            resolv_conf: "nameserver 192.0.2.53\n".into(),
            links: vec![],
            outer: vec![Fd(r2)],
            onion_services: vec![],
        });
        a.send(ev).unwrap();
        let BrokerEvent::ChainReady(got) = b.recv().unwrap() else {
            panic!("wrong variant")
        };
        nix::unistd::write(&w, b"x").unwrap();
        nix::unistd::write(&w2, b"y").unwrap();
        let mut byte = [0u8; 1];
        nix::unistd::read(&got.netns, &mut byte).unwrap();
        assert_eq!(&byte, b"x");
        // Descriptors in a list travel too, each to its place.
        nix::unistd::read(&got.outer[0], &mut byte).unwrap();
        assert_eq!(&byte, b"y");
    }

    #[test]
    fn handshake_rejects_wrong_role() {
        let (mut a, b) = Channel::<ControlRequest, ControlRequest>::pair().unwrap();
        let mut b = Channel::<ControlRequest, ControlRequest>::new(b);
        let t = std::thread::spawn(move || b.handshake("sandboxer", "supervisor"));
        let err = a.handshake("supervisor", "netbroker").unwrap_err();
        assert!(matches!(err, WireError::WrongPeer { .. }), "{err}");
        t.join().unwrap().unwrap();
    }

    #[test]
    fn decode_rejects_truncated_frame() {
        let (buf, _) = encode(&SandboxEvent::Exited {
            id: 3,
            status: ExitStatus::Signal(9),
        })
        .unwrap();
        let err = decode::<SandboxEvent>(&buf[..buf.len() - 1], vec![]).unwrap_err();
        assert!(matches!(err, WireError::Truncated { .. }));
    }

    #[test]
    fn decode_rejects_oversized_declared_length() {
        let mut buf = vec![0u8; 8];
        buf[..4].copy_from_slice(&(u32::MAX).to_le_bytes());
        assert!(matches!(
            decode::<BrokerRequest>(&buf, vec![]),
            Err(WireError::Oversized(_))
        ));
    }

    #[test]
    fn decode_rejects_missing_fd() {
        let (r, _w) = nix::unistd::pipe().unwrap();
        let (buf, fds) = encode(&crate::broker::ChainReady {
            netns: Fd(r),
            userns: None,
            app_userns: None,
            app_uid: None,
            resolv_conf: String::new(),
            links: vec![],
            outer: vec![],
            onion_services: vec![],
        })
        .unwrap();
        assert_eq!(fds.len(), 1);
        let err = decode::<crate::broker::ChainReady>(&buf, vec![]).unwrap_err();
        assert!(matches!(err, WireError::Decode(_)), "{err}");
    }

    #[test]
    fn decode_rejects_trailing_bytes() {
        let (mut buf, _) = encode(&BrokerRequest::Shutdown).unwrap();
        buf.push(0);
        let len = (buf.len() - 4) as u32;
        buf[..4].copy_from_slice(&len.to_le_bytes());
        assert!(decode::<BrokerRequest>(&buf, vec![]).is_err());
    }

    #[test]
    fn oversized_send_is_refused() {
        let big = BrokerEvent::Progress(crate::broker::Progress {
            hop: None,
            message: "x".repeat(MAX_FRAME),
        });
        assert!(matches!(encode(&big), Err(WireError::Oversized(_))));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_untrusted::<BrokerRequest>(&bytes);
            let _ = decode_untrusted::<BrokerEvent>(&bytes);
            let _ = decode_untrusted::<SandboxEvent>(&bytes);
            let _ = decode_untrusted::<ControlRequest>(&bytes);
        }

        #[test]
        fn framed_garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut frame = (body.len() as u32).to_le_bytes().to_vec();
            frame.extend_from_slice(&body);
            let _ = decode_untrusted::<crate::sandbox::SandboxRequest>(&frame);
            let _ = decode_untrusted::<crate::control::ControlEvent>(&frame);
        }

        #[test]
        fn progress_round_trips(msg in ".{0,200}", hop in proptest::option::of(0usize..10)) {
            let ev = crate::broker::Progress { hop, message: msg.clone() };
            let (buf, _) = encode(&ev).unwrap();
            let back: crate::broker::Progress = decode(&buf, vec![]).unwrap();
            prop_assert_eq!(back.message, msg);
            prop_assert_eq!(back.hop, hop);
        }
    }
}
