//! The netbroker ⇄ packet-engine channel. Each proxy hop's tun2socks engine
//! runs in its own unprivileged child of the netbroker (doc/SECURITY.md), already
//! in its dial namespace and without capabilities when it starts: the
//! netbroker sends one [`EngineRequest::Start`] with the TUN descriptor, the engine confines itself and answers
//! [`EngineEvent::Ready`] or [`EngineEvent::Failed`]; later the netbroker may
//! ask for [`EngineEvent::Stats`], and the engine says [`EngineEvent::Exited`]
//! when it stops on its own. EOF on either side ends the other.
//!
//! Legal order: `Start` once, first; then any number of `Stats`.
//!
//! An engine whose proxy is a unix socket (a hop daemon's, `ProxySpec::
//! unix_path`) may not make unix sockets itself (its seccomp filter kills
//! it: seccomp cannot see which path a connect names). `Start` then brings
//! it the engine's end of a second `SOCK_SEQPACKET` socket, its *dial
//! channel* ([`StartEngine::dial`]): each [`DialRequest`] is answered by one
//! [`DialReply`], the descriptor of a stream socket the netbroker connected
//! to that one path for it, or the errno of the connect.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::{profile::Endpoint, wire::Fd};

/// Requests from the netbroker to an engine.
#[derive(Debug, Serialize, Deserialize)]
pub enum EngineRequest {
    /// Set up and serve (legal once, first). Boxed: it is sent once, and
    /// the enum stays small.
    Start(Box<StartEngine>),
    /// Report the counters ([`EngineEvent::Stats`]).
    Stats,
    /// Set up and serve in direct mode, without a proxy (legal once,
    /// first, instead of `Start`).
    StartDirect(Box<StartDirect>),
    /// Be the session's port forwarder instead ([`StartForward`]; legal
    /// once, first, instead of `Start`): the process runs in the
    /// application's network namespace and relays what reaches the host's
    /// listeners it is given.
    StartForward(Box<StartForward>),
    /// Set up and serve a userspace WireGuard device (legal once, first,
    /// instead of `Start`): the wireguard hop.
    StartWireguard(Box<StartWireguard>),
    /// Report each WireGuard peer's state ([`EngineEvent::Peers`]); only
    /// after `StartWireguard`.
    Peers,
}

/// `network.port_forwarding.local`: the listeners the netbroker bound in the
/// host's namespace, each with where its traffic goes in the application's.
#[derive(Debug, Serialize, Deserialize)]
pub struct StartForward {
    pub rules: Vec<ForwardListener>,
    /// Onion services: listening unix sockets a tor hop's tor connects to.
    pub onions: Vec<OnionListener>,
    /// RLIMIT_NOFILE for the forwarder.
    pub max_files: u64,
    /// RLIMIT_NPROC, when its uid is its own (root mode).
    pub max_tasks: Option<u64>,
}

/// One forwarding rule with its bound host socket.
#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardListener {
    /// A listening TCP socket or a bound UDP socket (blocking).
    pub socket: Fd,
    pub transport: crate::profile::Transport,
    /// The destination inside the application's namespace.
    pub guest: SocketAddr,
    /// The rule as the profile spells it, for messages.
    pub rule: String,
}

/// A WireGuard engine: it encrypts what the TUN device gives it and sends
/// it to the peers over a UDP socket it binds in its own namespace, N(i−1)
/// (where it was started), and decrypts what comes back into the TUN.
#[derive(Serialize, Deserialize)]
pub struct StartWireguard {
    /// The TUN device's packet descriptor (non-blocking), in Ni.
    pub tun: Fd,
    pub tun_name: String,
    pub mtu: u32,
    pub max_files: u64,
    pub max_tasks: Option<u64>,
    /// The interface's private key (never logged: see the Debug impl).
    pub private_key: [u8; 32],
    pub peers: Vec<WgPeer>,
}

impl std::fmt::Debug for StartWireguard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartWireguard")
            .field("tun", &self.tun)
            .field("tun_name", &self.tun_name)
            .field("mtu", &self.mtu)
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

/// One WireGuard peer, its endpoint already resolved.
#[derive(Clone, Serialize, Deserialize)]
pub struct WgPeer {
    pub public_key: [u8; 32],
    pub preshared_key: Option<[u8; 32]>,
    pub endpoint: Option<SocketAddr>,
    /// (network address, prefix length).
    pub allowed_ips: Vec<(std::net::IpAddr, u8)>,
    pub keepalive: Option<u16>,
}

impl std::fmt::Debug for WgPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgPeer")
            .field("endpoint", &self.endpoint)
            .field("allowed_ips", &self.allowed_ips)
            .field("keepalive", &self.keepalive)
            .finish_non_exhaustive()
    }
}

/// One peer's state ([`EngineEvent::Peers`]), in the order of `peers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WgPeerState {
    /// Milliseconds since the last completed handshake, if any.
    pub handshake_age_ms: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// One onion service's unix socket (listening, blocking), bound by the
/// netbroker where only the hop's tor may connect; each connection is
/// relayed to `target` in the application's namespace.
#[derive(Debug, Serialize, Deserialize)]
pub struct OnionListener {
    pub socket: Fd,
    /// The TCP port on the application's loopback (127.0.0.1, else ::1).
    pub target: u16,
    /// `<address>.onion:<port>`, for messages.
    pub name: String,
}

/// An engine in direct mode: it opens the application's connections itself
/// from the namespace it runs in, refusing the host's own addresses.
#[derive(Debug, Serialize, Deserialize)]
pub struct StartDirect {
    /// The TUN device's packet descriptor (non-blocking).
    pub tun: Fd,
    pub tun_name: String,
    pub tun_index: u32,
    pub mtu: u32,
    /// RLIMIT_NOFILE for the engine.
    pub max_files: u64,
    /// RLIMIT_NPROC, when the engine's uid is its own (root mode).
    pub max_tasks: Option<u64>,
    /// The host's own addresses: never connected to.
    pub refused: Vec<std::net::IpAddr>,
    /// The host's DNS servers, where queries to the engine's DNS address go.
    pub resolvers: Vec<SocketAddr>,
    pub connect_timeout_ms: u64,
}

/// Events from an engine to the netbroker.
#[derive(Debug, Serialize, Deserialize)]
pub enum EngineEvent {
    /// Confined and serving the TUN device.
    Ready,
    /// Setup failed; one line a user can act on. The engine exits.
    Failed(String),
    /// Answer to [`EngineRequest::Stats`].
    Stats(EngineStats),
    /// The engine stopped on its own (the TUN device failed); why. It exits.
    Exited(String),
    /// Answer to [`EngineRequest::Peers`].
    Peers(Vec<WgPeerState>),
}

/// Everything an engine needs, with the descriptors it serves.
#[derive(Debug, Serialize, Deserialize)]
pub struct StartEngine {
    /// The TUN device's packet descriptor (non-blocking).
    pub tun: Fd,
    pub tun_name: String,
    pub tun_index: u32,
    pub mtu: u32,
    /// RLIMIT_NOFILE for the engine.
    pub max_files: u64,
    /// RLIMIT_NPROC (threads included) for the engine's uid, when that uid is
    /// the engine's alone (root mode).
    pub max_tasks: Option<u64>,
    pub proxy: ProxySpec,
    pub dns: DnsSpec,
    /// Nameservers of the dial namespace (to resolve a proxy host name).
    pub resolvers: Vec<SocketAddr>,
    pub connect_timeout_ms: u64,
    /// The dial channel, when `proxy.unix_path` is set (and only then): the
    /// engine's end of a `SOCK_SEQPACKET` socket the netbroker answers
    /// [`DialRequest`]s on.
    pub dial: Option<Fd>,
}

/// An engine asks for a connection to its proxy's unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialRequest;

/// The netbroker's answer to one [`DialRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum DialReply {
    /// A non-blocking stream socket connected to the proxy's socket.
    Connected(Fd),
    /// The connect failed with this errno (`EAGAIN`: the daemon's backlog
    /// is full; `ECONNREFUSED`: it stopped listening).
    Failed(Errno),
}

/// An errno from the peer: a positive number below 4096 (the kernel's
/// range), checked when decoded, so a malformed reply is a decoding error
/// rather than a strange `io::Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Errno(i32);

impl Errno {
    /// The largest errno the kernel returns (`MAX_ERRNO`).
    pub const MAX: i32 = 4095;

    /// `n` if it is an errno number.
    pub const fn new(n: i32) -> Option<Errno> {
        if n >= 1 && n <= Self::MAX {
            Some(Errno(n))
        } else {
            None
        }
    }

    pub const fn get(self) -> i32 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Errno {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i32::deserialize(d)?;
        Errno::new(n).ok_or_else(|| serde::de::Error::custom(format!("{n} is no errno")))
    }
}

/// A proxy protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProxyProtocol {
    Socks4,
    Socks4a,
    Socks5,
    HttpConnect,
}

/// Where and how to reach the proxy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxySpec {
    pub protocol: ProxyProtocol,
    pub address: Endpoint,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A hop daemon's SOCKS listener on a unix stream socket, dialled
    /// instead of `address` (which then only names it).
    pub unix_path: Option<String>,
}

/// How the application's DNS queries are answered (the netbroker's
/// `tun2socks::DnsConfig`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DnsSpec {
    Virtual {
        fallback: Vec<SocketAddr>,
        onion: bool,
    },
    /// Servers and whether each is asked over TCP.
    Forward(Vec<(SocketAddr, bool)>),
    Off,
}

/// An engine's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStats {
    pub connections: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub dns_queries: u64,
    pub udp_datagrams: u64,
    /// Connections, flows and DNS queries refused at the engine's caps.
    pub refused: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode, encode};

    #[test]
    fn stats_round_trip() {
        let s = EngineStats {
            connections: 3,
            bytes_up: 1 << 40,
            ..Default::default()
        };
        let (frame, fds) = encode(&EngineEvent::Stats(s)).unwrap();
        assert!(fds.is_empty());
        match decode::<EngineEvent>(&frame, Vec::new()).unwrap() {
            EngineEvent::Stats(got) => assert_eq!(got, s),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_dial_reply_carries_its_descriptor_or_a_valid_errno() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (frame, fds) = encode(&DialReply::Connected(Fd(a.into()))).unwrap();
        assert_eq!(fds.len(), 1);
        // Without the descriptor the reply does not decode.
        assert!(decode::<DialReply>(&frame, Vec::new()).is_err());
        let failed = DialReply::Failed(Errno::new(libc::EAGAIN).unwrap());
        let (frame, _) = encode(&failed).unwrap();
        match decode::<DialReply>(&frame, Vec::new()).unwrap() {
            DialReply::Failed(e) => assert_eq!(e.get(), libc::EAGAIN),
            other => panic!("{other:?}"),
        }
        // An errno out of the kernel's range is a malformed reply.
        for bad in [0, -1, 4096, i32::MAX] {
            let (frame, _) = encode(&DialReply::Failed(Errno(bad))).unwrap();
            assert!(decode::<DialReply>(&frame, Vec::new()).is_err(), "{bad}");
        }
        assert!(Errno::new(0).is_none() && Errno::new(4096).is_none());
    }

    #[test]
    fn start_without_its_descriptors_is_refused() {
        let (frame, _) = encode(&EngineRequest::Stats).unwrap();
        assert!(decode::<EngineRequest>(&frame, Vec::new()).is_ok());
        // A Start frame names fds #0 and #1; without them decoding fails.
        let mut body = vec![0u8]; // variant Start
        body.extend([0u8, 0]); // tun fd #0 … then truncated
        let mut f = (body.len() as u32).to_le_bytes().to_vec();
        f.extend(body);
        assert!(decode::<EngineRequest>(&f, Vec::new()).is_err());
    }
}
