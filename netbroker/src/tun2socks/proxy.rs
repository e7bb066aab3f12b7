//! The proxy clients of the tun2socks engine: SOCKS4, SOCKS4a, SOCKS5 (with
//! username/password and UDP ASSOCIATE) and HTTP CONNECT (with basic auth).
//! Every socket the engine opens is made here, and only ever to the proxy's
//! own address: that is what makes the kill switch structural. (A proxy on a
//! hop daemon's unix socket: the engine process gets each connection from
//! the netbroker, [`crate::engine::dial`].)
//!
//! Each protocol's handshake is written once, as a sans-I/O state machine
//! ([`Handshake`]: bytes in, bytes to send, done or an error), which the
//! engine's event loop drives on non-blocking sockets (`stack/dial.rs`) and
//! [`Proxy::check`]/[`Proxy::connect`] drive on blocking ones; it is also
//! what a fuzzer can feed a hostile proxy's replies.

#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::UnixAddr;
use proto::profile::Host;

use super::stream::ProxyStream;
use super::{dns, short_reason, Config, DnsConfig, Protocol, Tun2socksError};
use crate::engine::dial::Client as DialClient;

/// Where a proxied connection should go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Ip(SocketAddr),
    Name(String, u16),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Ip(a) => write!(f, "{a}"),
            Target::Name(n, p) => write!(f, "{n}:{p}"),
        }
    }
}

/// A proxy with its address resolved.
#[derive(Debug, Clone)]
pub struct Proxy {
    pub protocol: Protocol,
    addrs: Vec<SocketAddr>,
    display: String,
    username: Option<String>,
    password: Option<String>,
    timeout: Duration,
    /// DNS servers asked through the proxy when a SOCKS4 proxy needs an
    /// address for a name.
    fallback: Vec<SocketAddr>,
    /// The proxy's unix socket, dialled instead of `addrs`.
    unix: Option<PathBuf>,
    /// The engine process's way to it: the netbroker connects for it
    /// ([`crate::engine::dial`]; the engine may make no unix socket).
    dial_channel: Option<Arc<DialClient>>,
}

impl Proxy {
    /// Resolve the proxy's address (in the calling thread's namespace).
    pub fn resolve(cfg: &Config) -> Result<Proxy, Tun2socksError> {
        let ep = &cfg.proxy.address;
        let unix = cfg.proxy.unix.clone();
        let addrs = match &ep.host {
            _ if unix.is_some() => Vec::new(),
            Host::Ip(ip) => vec![SocketAddr::new(*ip, ep.port)],
            Host::Name(name) => {
                let ips = if cfg.resolvers.is_empty() {
                    (name.as_str(), ep.port)
                        .to_socket_addrs()
                        .map(|a| a.map(|a| a.ip()).collect::<Vec<_>>())
                } else {
                    dns::resolve_udp(&cfg.resolvers, name, cfg.connect_timeout)
                };
                let ips = ips.map_err(|e| Tun2socksError::Resolve {
                    host: name.clone(),
                    reason: short_reason(&e),
                })?;
                if ips.is_empty() {
                    return Err(Tun2socksError::Resolve {
                        host: name.clone(),
                        reason: "no address".into(),
                    });
                }
                ips.into_iter()
                    .map(|ip| SocketAddr::new(ip, ep.port))
                    .collect()
            }
        };
        let fallback = match &cfg.dns {
            DnsConfig::Virtual { fallback, .. } => fallback.clone(),
            DnsConfig::Forward(v) => v.iter().map(|(a, _)| *a).collect(),
            DnsConfig::Off => Vec::new(),
        };
        Ok(Proxy {
            protocol: cfg.proxy.protocol,
            addrs,
            display: match &unix {
                Some(path) => format!("unix:{}", path.display()),
                None => ep.to_string(),
            },
            unix,
            username: cfg.proxy.username.clone(),
            password: cfg.proxy.password.clone(),
            timeout: cfg.connect_timeout,
            fallback,
            dial_channel: None,
        })
    }

    /// Reach the unix socket through the netbroker's dial channel rather
    /// than by its path (the engine process, whose filter allows no unix
    /// socket).
    pub fn with_dial_channel(mut self, channel: Arc<DialClient>) -> Proxy {
        self.dial_channel = Some(channel);
        self
    }

    /// A non-blocking stream socket connected to the proxy's unix socket
    /// `path`: from the netbroker, or made here (an engine on a thread of
    /// the netbroker, tests and benchmarks).
    fn unix_stream(&self, path: &Path) -> io::Result<UnixStream> {
        if let Some(c) = &self.dial_channel {
            return c.dial().map(UnixStream::from);
        }
        let fd = super::stream::connect_unix(&UnixAddr::new(path)?)?;
        Ok(UnixStream::from(fd))
    }

    fn proto(&self) -> &'static str {
        self.protocol.name()
    }

    fn unreachable(&self, e: &io::Error) -> Tun2socksError {
        Tun2socksError::Unreachable {
            proto: self.proto(),
            addr: self.display.clone(),
            reason: short_reason(e),
        }
    }

    fn protocol_error(&self, what: impl Into<String>) -> Tun2socksError {
        Tun2socksError::Protocol {
            proto: self.proto(),
            addr: self.display.clone(),
            what: what.into(),
        }
    }

    fn io_error(&self, e: io::Error) -> Tun2socksError {
        self.protocol_error(format!("broke off the handshake: {}", short_reason(&e)))
    }

    /// A TCP connection to the proxy itself, nothing more. This is the only
    /// place the engine makes TCP sockets.
    fn dial(&self) -> Result<ProxyStream, Tun2socksError> {
        if let Some(path) = &self.unix {
            let s = self
                .unix_stream(path)
                .and_then(|s| s.set_nonblocking(false).map(|()| s))
                .map_err(|e| self.unreachable(&e))?;
            s.set_read_timeout(Some(self.timeout))
                .and_then(|()| s.set_write_timeout(Some(self.timeout)))
                .map_err(|e| self.unreachable(&e))?;
            return Ok(ProxyStream::Unix(s));
        }
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for a in &self.addrs {
            match TcpStream::connect_timeout(a, self.timeout) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    s.set_read_timeout(Some(self.timeout))
                        .and_then(|()| s.set_write_timeout(Some(self.timeout)))
                        .map_err(|e| self.unreachable(&e))?;
                    return Ok(ProxyStream::Tcp(s));
                }
                Err(e) => last = e,
            }
        }
        Err(self.unreachable(&last))
    }

    /// Start a non-blocking connection to the proxy's address number `idx`
    /// (the engine's dials; [`Proxy::addrs`]): the connect is in progress
    /// when this returns, its outcome shows as writability and `SO_ERROR`.
    pub fn dial_nonblocking(&self, idx: usize) -> io::Result<ProxyStream> {
        if let Some(path) = &self.unix {
            return self.unix_stream(path).map(ProxyStream::Unix);
        }
        let addr = *self
            .addrs
            .get(idx)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
        super::stack::dial_tcp(addr).map(ProxyStream::Tcp)
    }

    /// How many ways [`Proxy::dial_nonblocking`] has: the proxy's addresses,
    /// or its one unix socket.
    pub fn dial_count(&self) -> usize {
        if self.unix.is_some() {
            1
        } else {
            self.addrs.len()
        }
    }

    /// The UDP socket of a SOCKS5 association made over `ctl`: bound to
    /// the address `ctl` left from, so the proxy sees both from one host.
    pub fn udp_socket_for(&self, ctl: &ProxyStream) -> io::Result<UdpSocket> {
        let local = ctl.local_addr()?;
        let udp = UdpSocket::bind(SocketAddr::new(local.ip(), 0))?;
        udp.set_nonblocking(true)?;
        Ok(udp)
    }

    /// Reach the proxy and authenticate, as far as the protocol allows
    /// without opening a connection through it.
    pub fn check(&self) -> Result<(), Tun2socksError> {
        let mut s = self.dial()?;
        match self.protocol {
            Protocol::Socks5 => self.drive(&mut s, Request::Auth).map(drop),
            Protocol::Socks4 | Protocol::Socks4a => Ok(()),
            Protocol::HttpConnect => {
                // A CONNECT to the proxy's own address: the answer to it does
                // not matter, only whether the proxy wants other credentials.
                let own = self.addrs.first().copied();
                let target = Target::Ip(own.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 1))));
                match self.drive(&mut s, Request::Connect(target)) {
                    Err(e @ Tun2socksError::BadCredentials { .. }) => Err(e),
                    Err(Tun2socksError::Protocol { what, .. })
                        if what.starts_with("broke off") || what.starts_with("requires") =>
                    {
                        Err(self.protocol_error(what))
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    /// Open a connection to `target` through the proxy; the stream is ready
    /// for data (blocking, with the handshake's timeouts cleared). The
    /// engine itself never blocks on this: it drives the same [`Handshake`]
    /// from its event loop; this is for the probe and the DNS forwarder.
    pub fn connect(&self, target: &Target) -> Result<ProxyStream, Tun2socksError> {
        let target = match (self.protocol, target) {
            (Protocol::Socks4, Target::Name(name, port)) => {
                let ip = self.resolve_through(name)?;
                Target::Ip(SocketAddr::new(ip, *port))
            }
            _ => target.clone(),
        };
        let mut s = self.dial()?;
        self.drive(&mut s, Request::Connect(target))?;
        s.set_read_timeout(None)
            .and_then(|()| s.set_write_timeout(None))
            .map_err(|e| self.io_error(e))?;
        Ok(s)
    }

    /// The handshake for `request` with this proxy's protocol and
    /// credentials, and the bytes to send first.
    pub fn handshake(&self, request: Request) -> Result<(Handshake, Vec<u8>), Tun2socksError> {
        Handshake::start(
            self.protocol,
            self.username.as_deref(),
            self.password.as_deref(),
            request,
        )
        .map_err(|e| self.handshake_error(e))
    }

    /// The one-line error of a failed handshake.
    pub fn handshake_error(&self, e: HandshakeError) -> Tun2socksError {
        match e {
            HandshakeError::BadCredentials { user } => Tun2socksError::BadCredentials {
                proto: self.proto(),
                addr: self.display.clone(),
                user,
            },
            HandshakeError::Protocol(what) => self.protocol_error(what),
        }
    }

    /// The error of a handshake the proxy broke off (EOF or an I/O error).
    pub fn broken_off(&self, e: io::Error) -> Tun2socksError {
        self.io_error(e)
    }

    /// The proxy's addresses, in the order they are tried.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// How long a dial and its handshake may take.
    pub fn timeout(&self) -> std::time::Duration {
        self.timeout
    }

    /// The servers a SOCKS4 proxy resolves names through.
    pub fn fallback(&self) -> &[SocketAddr] {
        &self.fallback
    }

    /// The error of a dial that could not reach the proxy.
    pub fn unreachable_error(&self, e: &io::Error) -> Tun2socksError {
        self.unreachable(e)
    }

    /// The error of a SOCKS4 name lookup through the proxy that failed.
    pub fn resolve_error(&self, name: &str, why: &str) -> Tun2socksError {
        self.protocol_error(format!("cannot be used to resolve {name}: {why}"))
    }

    /// Run a handshake on a blocking stream: peek at what the proxy sent,
    /// let the state machine take what belongs to the handshake, and read
    /// exactly that, so nothing of the tunnel is consumed here.
    fn drive(&self, s: &mut ProxyStream, request: Request) -> Result<Progress, Tun2socksError> {
        let (mut hs, first) = self.handshake(request)?;
        s.write_all(&first).map_err(|e| self.io_error(e))?;
        let mut buf = [0u8; 2048];
        let mut out = Vec::new();
        loop {
            let n = s.peek(&mut buf).map_err(|e| self.io_error(e))?;
            if n == 0 {
                return Err(self.io_error(io::ErrorKind::UnexpectedEof.into()));
            }
            out.clear();
            let (used, progress) = hs
                .input(&buf[..n], &mut out)
                .map_err(|e| self.handshake_error(e))?;
            s.read_exact(&mut buf[..used])
                .map_err(|e| self.io_error(e))?;
            s.write_all(&out).map_err(|e| self.io_error(e))?;
            if let Progress::Done(_) = progress {
                return Ok(progress);
            }
        }
    }

    /// Resolve `name` for a SOCKS4 proxy: DNS over TCP through the proxy to
    /// the fallback servers.
    fn resolve_through(&self, name: &str) -> Result<IpAddr, Tun2socksError> {
        let no =
            |why: String| self.protocol_error(format!("cannot be used to resolve {name}: {why}"));
        if self.fallback.is_empty() {
            return Err(no("no DNS server is configured to ask through it".into()));
        }
        let id = dns::random_id();
        let query = dns::build_query(id, name, dns::TYPE_A);
        let mut last = String::new();
        for server in &self.fallback {
            let mut s = self.dial()?;
            if let Err(e) = self.drive(&mut s, Request::Connect(Target::Ip(*server))) {
                last = e.to_string();
                continue;
            }
            match dns::tcp_exchange(&mut s, &query) {
                Ok(resp) if resp.get(..2) != Some(&id.to_be_bytes()[..]) => {
                    last = "an answer to another query".into();
                }
                Ok(resp) => {
                    if let Some(ip) = dns::answer_addrs(&resp).into_iter().find(IpAddr::is_ipv4) {
                        return Ok(ip);
                    }
                    last = "no IPv4 address".into();
                }
                Err(e) => last = short_reason(&e),
            }
        }
        Err(no(last))
    }
}

/// What a handshake asks of the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A TCP connection to the target (SOCKS CONNECT, HTTP CONNECT).
    Connect(Target),
    /// SOCKS5 UDP ASSOCIATE for datagrams from this (our) address.
    UdpAssociate(SocketAddr),
    /// The SOCKS5 greeting and authentication only (the probe).
    Auth,
}

/// How a handshake failed, as the proxy's answer said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("rejected username '{user}'")]
    BadCredentials { user: String },
    #[error("{0}")]
    Protocol(String),
}

/// Where a handshake stands after some input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More bytes from the proxy are needed.
    More,
    /// The tunnel is open (or, for [`Request::Auth`], authenticated); with
    /// the bound address of a SOCKS5 reply.
    Done(Option<SocketAddr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Socks5Method,
    Socks5Auth,
    Socks5Reply,
    Socks4Reply,
    HttpHead,
    Done,
}

/// Longest HTTP reply header accepted.
const HTTP_HEAD_MAX: usize = 16 * 1024;

/// A proxy handshake as a sans-I/O state machine: [`Handshake::start`]
/// gives the first bytes to send; [`Handshake::input`] takes bytes from the
/// proxy and says how many of them belonged to the handshake (the rest is
/// the tunnel's), what to send next and whether it is done. No I/O, no
/// clock: the engine's event loop and the blocking probe both drive it, and
/// a fuzzer can.
#[derive(Debug, Clone)]
pub struct Handshake {
    protocol: Protocol,
    user: Option<String>,
    pass: Option<String>,
    request: Request,
    stage: Stage,
    /// The bytes of the reply being read.
    buf: Vec<u8>,
}

impl Handshake {
    /// A handshake for `request`, and the bytes to send first.
    pub fn start(
        protocol: Protocol,
        user: Option<&str>,
        pass: Option<&str>,
        request: Request,
    ) -> Result<(Handshake, Vec<u8>), HandshakeError> {
        let mut hs = Handshake {
            protocol,
            user: user.map(str::to_string),
            pass: pass.map(str::to_string),
            request,
            stage: Stage::Done,
            buf: Vec::new(),
        };
        let first = match protocol {
            Protocol::Socks5 => {
                hs.stage = Stage::Socks5Method;
                if hs.user.is_some() {
                    vec![5, 2, 0x00, 0x02]
                } else {
                    vec![5, 1, 0x00]
                }
            }
            Protocol::Socks4 | Protocol::Socks4a => {
                hs.stage = Stage::Socks4Reply;
                hs.socks4_request()?
            }
            Protocol::HttpConnect => {
                hs.stage = Stage::HttpHead;
                hs.http_request()?
            }
        };
        Ok((hs, first))
    }

    /// Take bytes the proxy sent: how many belong to the handshake, and
    /// where it stands; bytes to send are appended to `out`.
    pub fn input(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(usize, Progress), HandshakeError> {
        let mut used = 0;
        loop {
            if self.stage == Stage::Done {
                return Ok((used, Progress::Done(None)));
            }
            if self.stage == Stage::HttpHead {
                while used < data.len() && !self.buf.ends_with(b"\r\n\r\n") {
                    if self.buf.len() >= HTTP_HEAD_MAX {
                        return Err(proto_err("sent an oversized reply header"));
                    }
                    self.buf.push(data[used]);
                    used += 1;
                }
                if !self.buf.ends_with(b"\r\n\r\n") {
                    return Ok((used, Progress::More));
                }
                self.http_reply()?;
                self.stage = Stage::Done;
                return Ok((used, Progress::Done(None)));
            }
            let need = self.need()?;
            if self.buf.len() < need {
                let take = (need - self.buf.len()).min(data.len() - used);
                self.buf.extend_from_slice(&data[used..used + take]);
                used += take;
                if take == 0 {
                    return Ok((used, Progress::More));
                }
                // A SOCKS5 reply's length is known only once its head is in.
                continue;
            }
            if let Some(bound) = self.message(out)? {
                self.stage = Stage::Done;
                return Ok((used, Progress::Done(bound)));
            }
            self.buf.clear();
        }
    }

    /// Bytes the current message needs in all (known so far).
    fn need(&self) -> Result<usize, HandshakeError> {
        Ok(match self.stage {
            Stage::Socks5Method | Stage::Socks5Auth => 2,
            Stage::Socks4Reply => 8,
            Stage::Socks5Reply if self.buf.len() < 4 => 4,
            // A refusal need not carry a valid address: judged on its head.
            Stage::Socks5Reply if self.buf[1] != 0 => 4,
            Stage::Socks5Reply => match self.buf[3] {
                1 => 10,
                4 => 22,
                3 if self.buf.len() < 5 => 5,
                3 => 5 + usize::from(self.buf[4]) + 2,
                _ => return Err(proto_err("sent a malformed reply")),
            },
            Stage::HttpHead | Stage::Done => 0,
        })
    }

    /// A complete message is in `buf`: Some(bound address) when the
    /// handshake is done, None when it goes on.
    fn message(&mut self, out: &mut Vec<u8>) -> Result<Option<Option<SocketAddr>>, HandshakeError> {
        match self.stage {
            Stage::Socks5Method => {
                if self.buf[0] != 5 {
                    return Err(proto_err("does not speak SOCKS5"));
                }
                match self.buf[1] {
                    0x00 => self.socks5_request(out),
                    0x02 if self.user.is_some() => {
                        let user = self.user.as_deref().unwrap_or_default();
                        let pass = self.pass.as_deref().unwrap_or_default();
                        if user.len() > 255 || pass.len() > 255 {
                            return Err(proto_err(
                                "cannot take a username or password over 255 bytes",
                            ));
                        }
                        out.extend_from_slice(&[1, user.len() as u8]);
                        out.extend_from_slice(user.as_bytes());
                        out.push(pass.len() as u8);
                        out.extend_from_slice(pass.as_bytes());
                        self.stage = Stage::Socks5Auth;
                        Ok(None)
                    }
                    0x02 => Err(proto_err(
                        "requires a username and password, and none is configured",
                    )),
                    _ if self.user.is_some() => Err(proto_err(
                        "accepts none of the offered authentication methods (none, username/password)",
                    )),
                    _ => Err(proto_err(
                        "requires authentication, and no username is configured",
                    )),
                }
            }
            Stage::Socks5Auth if self.buf[1] == 0 => self.socks5_request(out),
            Stage::Socks5Auth => Err(self.bad_credentials()),
            Stage::Socks5Reply => {
                let b = &self.buf;
                if b[1] != 0 {
                    let (what, target) = match &self.request {
                        Request::UdpAssociate(a) => ("UDP for", Target::Ip(*a)),
                        Request::Connect(t) => ("a connection to", t.clone()),
                        Request::Auth => ("a connection to", Target::Ip(([0, 0, 0, 0], 0).into())),
                    };
                    return Err(proto_err(format!(
                        "refused {what} {target}: {}",
                        socks5_reply(b[1])
                    )));
                }
                let bound = match b[3] {
                    3 => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), {
                        let p = 5 + usize::from(b[4]);
                        u16::from_be_bytes([b[p], b[p + 1]])
                    }),
                    _ => decode_socks5_addr(&b[3..])
                        .map(|(a, _)| a)
                        .ok_or_else(|| proto_err("sent a malformed reply"))?,
                };
                Ok(Some(Some(bound)))
            }
            Stage::Socks4Reply => match self.buf[1] {
                0x5a => Ok(Some(None)),
                0x5c | 0x5d => Err(self.bad_credentials()),
                _ => Err(proto_err(format!(
                    "refused a connection to {}",
                    self.target_text()
                ))),
            },
            Stage::HttpHead | Stage::Done => Ok(Some(None)),
        }
    }

    fn bad_credentials(&self) -> HandshakeError {
        HandshakeError::BadCredentials {
            user: self.user.clone().unwrap_or_default(),
        }
    }

    fn target_text(&self) -> String {
        match &self.request {
            Request::Connect(t) => t.to_string(),
            Request::UdpAssociate(a) => a.to_string(),
            Request::Auth => String::new(),
        }
    }

    /// After authentication: the SOCKS5 request (or done, for the probe).
    fn socks5_request(
        &mut self,
        out: &mut Vec<u8>,
    ) -> Result<Option<Option<SocketAddr>>, HandshakeError> {
        let (cmd, target) = match &self.request {
            Request::Auth => return Ok(Some(None)),
            Request::Connect(t) => (1, t.clone()),
            Request::UdpAssociate(a) => (3, Target::Ip(*a)),
        };
        out.extend_from_slice(&[5, cmd, 0]);
        encode_socks5_addr(out, &target).map_err(HandshakeError::Protocol)?;
        self.stage = Stage::Socks5Reply;
        Ok(None)
    }

    fn socks4_request(&self) -> Result<Vec<u8>, HandshakeError> {
        let user = self.user.as_deref().unwrap_or_default();
        let Request::Connect(target) = &self.request else {
            return Err(proto_err("does not relay UDP"));
        };
        let mut m = vec![4, 1];
        match target {
            Target::Ip(SocketAddr::V4(a)) => {
                m.extend_from_slice(&a.port().to_be_bytes());
                m.extend_from_slice(&a.ip().octets());
                m.extend_from_slice(user.as_bytes());
                m.push(0);
            }
            Target::Ip(SocketAddr::V6(_)) => {
                return Err(proto_err(format!(
                    "cannot carry the IPv6 destination {target} (SOCKS4 has no IPv6)"
                )))
            }
            Target::Name(_, _) if self.protocol == Protocol::Socks4 => {
                return Err(proto_err(format!(
                    "cannot carry the host name {target} (SOCKS4 has no names)"
                )))
            }
            Target::Name(name, port) => {
                m.extend_from_slice(&port.to_be_bytes());
                m.extend_from_slice(&[0, 0, 0, 1]);
                m.extend_from_slice(user.as_bytes());
                m.push(0);
                m.extend_from_slice(name.as_bytes());
                m.push(0);
            }
        }
        Ok(m)
    }

    fn http_request(&self) -> Result<Vec<u8>, HandshakeError> {
        let authority = match &self.request {
            Request::Connect(Target::Ip(a)) => a.to_string(),
            Request::Connect(Target::Name(n, p)) => format!("{n}:{p}"),
            _ => return Err(proto_err("does not relay UDP")),
        };
        let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some(user) = &self.user {
            let cred = format!("{user}:{}", self.pass.as_deref().unwrap_or_default());
            req.push_str(&format!(
                "Proxy-Authorization: Basic {}\r\n",
                base64(cred.as_bytes())
            ));
        }
        req.push_str("\r\n");
        Ok(req.into_bytes())
    }

    fn http_reply(&self) -> Result<(), HandshakeError> {
        let line = self.buf.split(|c| *c == b'\r').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let code = line.split_whitespace().nth(1).unwrap_or("");
        match code {
            c if c.starts_with('2') => Ok(()),
            // tinyproxy answers 401 where RFC 9110 says 407.
            "407" | "401" => match &self.user {
                Some(_) => Err(self.bad_credentials()),
                None => Err(proto_err(
                    "requires credentials, and no username is configured",
                )),
            },
            _ => Err(proto_err(format!(
                "refused a connection to {}: {}",
                self.target_text(),
                line.trim()
            ))),
        }
    }
}

/// A protocol error; what a hostile proxy sent may be part of it, so
/// control characters are escaped and the message stays one line (fuzzing
/// found an HTTP status line with a newline in it).
fn proto_err(what: impl Into<String>) -> HandshakeError {
    let what: String = what.into();
    let what = if what.chars().any(char::is_control) {
        what.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    } else {
        what
    };
    HandshakeError::Protocol(what)
}

/// Append a SOCKS5 address (ATYP, address, port) to `m`.
pub(crate) fn encode_socks5_addr(m: &mut Vec<u8>, target: &Target) -> Result<(), String> {
    match target {
        Target::Ip(SocketAddr::V4(a)) => {
            m.push(1);
            m.extend_from_slice(&a.ip().octets());
            m.extend_from_slice(&a.port().to_be_bytes());
        }
        Target::Ip(SocketAddr::V6(a)) => {
            m.push(4);
            m.extend_from_slice(&a.ip().octets());
            m.extend_from_slice(&a.port().to_be_bytes());
        }
        Target::Name(n, p) => {
            if n.len() > 255 {
                return Err(format!("cannot take the host name {n} (over 255 bytes)"));
            }
            m.push(3);
            m.push(n.len() as u8);
            m.extend_from_slice(n.as_bytes());
            m.extend_from_slice(&p.to_be_bytes());
        }
    }
    Ok(())
}

/// Parse a SOCKS5 address at the start of `b`: the address and its length.
pub(crate) fn decode_socks5_addr(b: &[u8]) -> Option<(SocketAddr, usize)> {
    match *b.first()? {
        1 if b.len() >= 7 => {
            let ip = Ipv4Addr::new(b[1], b[2], b[3], b[4]);
            Some((
                SocketAddr::new(ip.into(), u16::from_be_bytes([b[5], b[6]])),
                7,
            ))
        }
        4 if b.len() >= 19 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[1..17]);
            let port = u16::from_be_bytes([b[17], b[18]]);
            Some((SocketAddr::new(Ipv6Addr::from(a).into(), port), 19))
        }
        _ => None,
    }
}

fn socks5_reply(code: u8) -> &'static str {
    match code {
        1 => "general failure",
        2 => "not allowed by its rules",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown error",
    }
}

/// Standard base64 with padding (for HTTP basic auth).
fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_proxy_reply_with_a_newline_stays_one_line_in_the_error() {
        let target = Target::Ip("203.0.113.10:80".parse().unwrap());
        let (mut hs, _) =
            Handshake::start(Protocol::HttpConnect, None, None, Request::Connect(target)).unwrap();
        let mut out = Vec::new();
        let e = hs
            .input(b"vH 500 bad\nforged line\r\n\r\n", &mut out)
            .unwrap_err();
        assert!(!e.to_string().contains('\n'), "{e}");
        assert!(e.to_string().contains("\\n"), "{e}");
    }

    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"alice:s3cret"), "YWxpY2U6czNjcmV0");
    }

    /// Feed `data` one byte at a time: what was used, and the progress.
    fn feed_bytes(hs: &mut Handshake, data: &[u8], out: &mut Vec<u8>) -> (usize, Progress) {
        let mut used = 0;
        for i in 0..data.len() {
            let (u, p) = hs.input(&data[i..=i], out).unwrap();
            used += u;
            if p != Progress::More {
                return (used, p);
            }
        }
        (used, Progress::More)
    }

    #[test]
    fn socks5_connect_takes_only_its_reply_in_any_chunking() {
        let target = Target::Ip("203.0.113.80:80".parse().unwrap());
        let mut reply = vec![5, 0];
        reply.extend_from_slice(&[5, 0, 0, 1, 10, 0, 0, 1, 0x1f, 0x90]);
        reply.extend_from_slice(b"tunnel data");
        for bytewise in [false, true] {
            let (mut hs, first) = Handshake::start(
                Protocol::Socks5,
                None,
                None,
                Request::Connect(target.clone()),
            )
            .unwrap();
            assert_eq!(first, [5, 1, 0]);
            let mut out = Vec::new();
            let (used, p) = if bytewise {
                feed_bytes(&mut hs, &reply, &mut out)
            } else {
                hs.input(&reply, &mut out).unwrap()
            };
            assert_eq!(used, 12, "the tunnel's bytes are left alone");
            assert_eq!(p, Progress::Done(Some("10.0.0.1:8080".parse().unwrap())));
            assert_eq!(out, [5, 1, 0, 1, 203, 0, 113, 80, 0, 80]);
        }
    }

    #[test]
    fn socks5_rejected_credentials_and_refusals_are_told_apart() {
        let t = Request::Connect(Target::Name("web.test".into(), 443));
        let (mut hs, first) =
            Handshake::start(Protocol::Socks5, Some("alice"), Some("pw"), t.clone()).unwrap();
        assert_eq!(first, [5, 2, 0, 2]);
        let mut out = Vec::new();
        assert_eq!(hs.input(&[5, 2], &mut out).unwrap(), (2, Progress::More));
        assert_eq!(out, b"\x01\x05alice\x02pw");
        assert_eq!(
            hs.input(&[1, 1], &mut out).unwrap_err(),
            HandshakeError::BadCredentials {
                user: "alice".into()
            }
        );
        let (mut hs, _) = Handshake::start(Protocol::Socks5, None, None, t).unwrap();
        hs.input(&[5, 0], &mut out).unwrap();
        let e = hs.input(&[5, 5, 0, 0], &mut out).unwrap_err();
        assert_eq!(
            e.to_string(),
            "refused a connection to web.test:443: connection refused"
        );
        let (mut hs, _) = Handshake::start(Protocol::Socks5, None, None, Request::Auth).unwrap();
        assert_eq!(
            hs.input(&[4, 0], &mut out).unwrap_err().to_string(),
            "does not speak SOCKS5"
        );
    }

    #[test]
    fn http_connect_ends_at_the_blank_line() {
        let t = Request::Connect(Target::Ip("192.0.2.1:443".parse().unwrap()));
        let (mut hs, first) =
            Handshake::start(Protocol::HttpConnect, Some("u"), Some("p"), t.clone()).unwrap();
        let first = String::from_utf8(first).unwrap();
        assert!(
            first.starts_with("CONNECT 192.0.2.1:443 HTTP/1.1\r\n"),
            "{first}"
        );
        assert!(
            first.contains("Proxy-Authorization: Basic dTpw\r\n"),
            "{first}"
        );
        let reply = b"HTTP/1.1 200 Connection established\r\nX: y\r\n\r\nSSH-2.0";
        let mut out = Vec::new();
        let (used, p) = feed_bytes(&mut hs, reply, &mut out);
        assert_eq!((used, p), (reply.len() - 7, Progress::Done(None)));

        let (mut hs, _) =
            Handshake::start(Protocol::HttpConnect, Some("u"), None, t.clone()).unwrap();
        let e = hs
            .input(b"HTTP/1.0 407 Auth\r\n\r\n", &mut out)
            .unwrap_err();
        assert_eq!(e, HandshakeError::BadCredentials { user: "u".into() });

        let (mut hs, _) = Handshake::start(Protocol::HttpConnect, None, None, t).unwrap();
        let e = hs.input(&[b'a'; 20_000], &mut out).unwrap_err();
        assert_eq!(e.to_string(), "sent an oversized reply header");
    }

    #[test]
    fn socks4_and_4a_requests_and_replies() {
        let ip = Request::Connect(Target::Ip("192.0.2.1:80".parse().unwrap()));
        let (mut hs, first) = Handshake::start(Protocol::Socks4, Some("u"), None, ip).unwrap();
        assert_eq!(first, [4, 1, 0, 80, 192, 0, 2, 1, b'u', 0]);
        let mut out = Vec::new();
        assert_eq!(
            hs.input(&[0, 0x5a, 0, 0, 0, 0, 0, 0, 9], &mut out).unwrap(),
            (8, Progress::Done(None))
        );
        let name = Request::Connect(Target::Name("a.test".into(), 80));
        assert!(Handshake::start(Protocol::Socks4, None, None, name.clone()).is_err());
        let (mut hs, first) = Handshake::start(Protocol::Socks4a, None, None, name).unwrap();
        assert_eq!(first, b"\x04\x01\x00\x50\x00\x00\x00\x01\x00a.test\x00");
        let e = hs
            .input(&[0, 0x5b, 0, 0, 0, 0, 0, 0], &mut out)
            .unwrap_err();
        assert_eq!(e.to_string(), "refused a connection to a.test:80");
    }

    #[test]
    fn udp_associate_returns_the_relay_address() {
        let (mut hs, _) = Handshake::start(
            Protocol::Socks5,
            None,
            None,
            Request::UdpAssociate("127.0.0.1:5000".parse().unwrap()),
        )
        .unwrap();
        let mut out = Vec::new();
        hs.input(&[5, 0], &mut out).unwrap();
        assert_eq!(out, [5, 3, 0, 1, 127, 0, 0, 1, 0x13, 0x88]);
        let mut r = vec![5, 0, 0, 4];
        r.extend_from_slice(&[0; 16]);
        r.extend_from_slice(&[0x10, 0]);
        assert_eq!(
            hs.input(&r, &mut out).unwrap(),
            (22, Progress::Done(Some("[::]:4096".parse().unwrap())))
        );
    }

    #[test]
    fn hostile_replies_end_in_an_error_or_done_never_a_panic() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let requests = [
            Request::Auth,
            Request::Connect(Target::Name("a.test".into(), 1)),
            Request::UdpAssociate("[::1]:9".parse().unwrap()),
        ];
        for round in 0..3000 {
            let protocol = [Protocol::Socks5, Protocol::Socks4a, Protocol::HttpConnect][round % 3];
            let request = requests[round % requests.len()].clone();
            let Ok((mut hs, _)) = Handshake::start(protocol, Some("u"), Some("p"), request) else {
                continue;
            };
            let mut out = Vec::new();
            for _ in 0..8 {
                // Mostly small, plausible bytes, so the state machine gets far.
                let data: Vec<u8> = (0..next() % 40)
                    .map(|_| match next() % 4 {
                        0 => 0,
                        1 => 5,
                        2 => (next() % 8) as u8,
                        _ => next() as u8,
                    })
                    .collect();
                match hs.input(&data, &mut out) {
                    Ok((used, _)) => assert!(used <= data.len()),
                    Err(_) => break,
                }
            }
        }
    }

    #[test]
    fn socks5_addresses_round_trip() {
        for a in ["192.0.2.1:53", "[2001:db8::1]:443"] {
            let a: SocketAddr = a.parse().unwrap();
            let mut m = Vec::new();
            encode_socks5_addr(&mut m, &Target::Ip(a)).unwrap();
            assert_eq!(decode_socks5_addr(&m), Some((a, m.len())));
        }
        let mut m = Vec::new();
        encode_socks5_addr(&mut m, &Target::Name("web.test".into(), 80)).unwrap();
        assert_eq!(m[..2], [3, 8]);
    }
}
