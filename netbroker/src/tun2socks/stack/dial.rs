//! A proxy dial driven by the engine's event loop, without a thread: a
//! non-blocking connect to the proxy (each of its addresses in turn), then
//! the proxy handshake ([`Handshake`]) fed with what the socket holds — and,
//! for SOCKS4 and a host name, first a DNS-over-TCP lookup through the proxy
//! to its fallback servers. The engine bounds it with a deadline.

#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Instant;

use super::super::dns;
use super::super::proxy::{Handshake, Progress, Proxy, Request, Target};
use super::super::stream::ProxyStream;
use super::super::{Protocol, Tun2socksError};

/// What the dial is for.
pub(super) enum Purpose {
    /// A TCP connection through the proxy to this target.
    Tcp(Target),
    /// A SOCKS5 UDP association.
    Udp,
}

/// Where a dial stands.
pub(super) enum Poll {
    Pending,
    /// The tunnel is open ([`Dial::into_stream`]); with the association's
    /// UDP socket for [`Purpose::Udp`].
    Ready(Option<UdpSocket>),
    Failed(Tun2socksError),
}

/// A SOCKS4 name lookup through the proxy, before the connection proper.
struct Lookup {
    name: String,
    port: u16,
    /// Index of the fallback server asked now.
    server: usize,
    /// The DNS reply read so far, once the tunnel to the server is open.
    reply: Option<Vec<u8>>,
    /// The (random) id of the query sent.
    id: u16,
    last: String,
}

pub(super) struct Dial {
    purpose: Purpose,
    lookup: Option<Lookup>,
    stream: ProxyStream,
    addr: usize,
    connected: bool,
    /// A new socket was opened (another address, or after the lookup): the
    /// engine registers it with its epoll set.
    pub(super) fresh: bool,
    hs: Option<Handshake>,
    udp: Option<UdpSocket>,
    out: Vec<u8>,
    pub(super) deadline: Instant,
    /// Direct mode: a connection straight to the destination, no
    /// handshake ([`Dial::direct`]).
    direct: Option<SocketAddr>,
}

impl Dial {
    /// Start a dial: the connect is in progress when this returns.
    pub(super) fn start(proxy: &Proxy, purpose: Purpose) -> Result<Dial, Tun2socksError> {
        let lookup = match (&purpose, proxy.protocol) {
            (Purpose::Tcp(Target::Name(name, port)), Protocol::Socks4) => {
                if proxy.fallback().is_empty() {
                    return Err(
                        proxy.resolve_error(name, "no DNS server is configured to ask through it")
                    );
                }
                Some(Lookup {
                    name: name.clone(),
                    port: *port,
                    server: 0,
                    reply: None,
                    id: 0,
                    last: String::new(),
                })
            }
            _ => None,
        };
        let (stream, addr) = open_from(proxy, 0)?;
        Ok(Dial {
            purpose,
            lookup,
            stream,
            addr,
            connected: false,
            fresh: true,
            hs: None,
            udp: None,
            out: Vec::new(),
            deadline: Instant::now() + proxy.timeout(),
            direct: None,
        })
    }

    /// Start a direct dial (no proxy): a non-blocking connect to `dst`
    /// itself, done once connected ([`Dial::drive_direct`]).
    pub(super) fn direct(
        dst: SocketAddr,
        timeout: std::time::Duration,
    ) -> Result<Dial, Tun2socksError> {
        let stream =
            super::direct::dial_tcp(dst).map_err(|e| super::direct::dial_error(dst, &e))?;
        Ok(Dial {
            purpose: Purpose::Tcp(super::super::proxy::Target::Ip(dst)),
            lookup: None,
            stream: ProxyStream::Tcp(stream),
            addr: 0,
            connected: false,
            fresh: true,
            hs: None,
            udp: None,
            out: Vec::new(),
            deadline: Instant::now() + timeout,
            direct: Some(dst),
        })
    }

    /// Make what progress a direct dial's socket allows: ready once
    /// connected, unless it reached this host after all (its local address
    /// is its peer's).
    pub(super) fn drive_direct(&mut self) -> Poll {
        let dst = self
            .direct
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let ProxyStream::Tcp(stream) = &self.stream else {
            // A direct dial is always TCP (`Dial::direct`).
            return Poll::Failed(super::direct::dial_error(
                dst,
                &std::io::Error::other("not a TCP socket"),
            ));
        };
        match super::direct::poll_tcp(stream) {
            Ok(Some(())) => {
                self.connected = true;
                Poll::Ready(None)
            }
            Ok(None) => Poll::Pending,
            Err(e) => Poll::Failed(super::direct::dial_error(dst, &e)),
        }
    }

    /// The socket to watch.
    pub(super) fn stream(&self) -> &ProxyStream {
        &self.stream
    }

    /// The proxy connection of a dial that is [`Poll::Ready`].
    pub(super) fn into_stream(self) -> ProxyStream {
        self.stream
    }

    /// Make what progress the socket allows (call on any event of it).
    pub(super) fn drive(&mut self, proxy: &Proxy) -> Poll {
        match self.step(proxy) {
            Ok(Some(ready)) => ready,
            Ok(None) => Poll::Pending,
            Err(e) => Poll::Failed(e),
        }
    }

    fn step(&mut self, proxy: &Proxy) -> Result<Option<Poll>, Tun2socksError> {
        let mut buf = [0u8; 2048];
        loop {
            if !self.connected {
                let err = match self.stream.take_error() {
                    Ok(None) => match self.stream.connected() {
                        Ok(_) => None,
                        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => return Ok(None),
                        Err(e) => Some(e),
                    },
                    Ok(Some(e)) | Err(e) => Some(e),
                };
                if let Some(e) = err {
                    // The next address of the proxy, if it has one.
                    let (s, a) =
                        open_from(proxy, self.addr + 1).map_err(|_| proxy.unreachable_error(&e))?;
                    self.stream = s;
                    self.addr = a;
                    self.fresh = true;
                    continue;
                }
                self.connected = true;
                self.begin(proxy)?;
            }
            while !self.out.is_empty() {
                match (&self.stream).write(&self.out) {
                    Ok(n) => {
                        self.out.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(proxy.broken_off(e)),
                }
            }
            let n = match self.stream.peek(&mut buf) {
                Ok(0) => return Err(proxy.broken_off(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(proxy.broken_off(e)),
            };
            // The lookup's DNS reply: two length bytes, then the message.
            if let Some(reply) = self.lookup.as_mut().and_then(|l| l.reply.as_mut()) {
                let want = if reply.len() < 2 {
                    2 - reply.len()
                } else {
                    2 + usize::from(u16::from_be_bytes([reply[0], reply[1]])) - reply.len()
                };
                let used = want.min(n);
                reply.extend_from_slice(&buf[..used]);
                let done = reply.len() >= 2
                    && reply.len() == 2 + usize::from(u16::from_be_bytes([reply[0], reply[1]]));
                consume(&self.stream, used, &mut buf, proxy)?;
                if done {
                    self.looked_up(proxy)?;
                }
                continue;
            }
            let Some(hs) = self.hs.as_mut() else {
                return Ok(None);
            };
            let (used, progress) = match hs.input(&buf[..n], &mut self.out) {
                Ok(r) => r,
                Err(e) => return self.handshake_failed(proxy, proxy.handshake_error(e)),
            };
            consume(&self.stream, used, &mut buf, proxy)?;
            if let Progress::Done(bound) = progress {
                self.hs = None;
                if let Some(ready) = self.handshake_done(proxy, bound)? {
                    return Ok(Some(ready));
                }
            }
        }
    }

    /// Connected to the proxy: the handshake for what this dial does now.
    fn begin(&mut self, proxy: &Proxy) -> Result<(), Tun2socksError> {
        let request = match (&self.lookup, &self.purpose) {
            (Some(l), _) => Request::Connect(Target::Ip(proxy.fallback()[l.server])),
            (None, Purpose::Tcp(t)) => Request::Connect(t.clone()),
            (None, Purpose::Udp) => {
                let udp = proxy
                    .udp_socket_for(&self.stream)
                    .map_err(|e| proxy.broken_off(e))?;
                let bound = udp.local_addr().map_err(|e| proxy.broken_off(e))?;
                self.udp = Some(udp);
                Request::UdpAssociate(bound)
            }
        };
        let (hs, first) = proxy.handshake(request)?;
        self.hs = Some(hs);
        self.out = first;
        Ok(())
    }

    fn handshake_failed(
        &mut self,
        proxy: &Proxy,
        e: Tun2socksError,
    ) -> Result<Option<Poll>, Tun2socksError> {
        match self.lookup.as_mut() {
            // The lookup's server refused: the next one.
            Some(l) => {
                l.last = e.to_string();
                self.next_server(proxy)?;
                Ok(None)
            }
            None => Err(e),
        }
    }

    fn handshake_done(
        &mut self,
        proxy: &Proxy,
        bound: Option<SocketAddr>,
    ) -> Result<Option<Poll>, Tun2socksError> {
        if let Some(l) = self.lookup.as_mut() {
            l.id = dns::random_id();
            let query = dns::build_query(l.id, &l.name, dns::TYPE_A);
            self.out
                .extend_from_slice(&(query.len() as u16).to_be_bytes());
            self.out.extend_from_slice(&query);
            l.reply = Some(Vec::new());
            return Ok(None);
        }
        match self.purpose {
            Purpose::Tcp(_) => Ok(Some(Poll::Ready(None))),
            Purpose::Udp => {
                let relay = bound.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                let relay = if relay.ip().is_unspecified() {
                    let peer = self.stream.peer_inet().map_err(|e| proxy.broken_off(e))?;
                    SocketAddr::new(peer.ip(), relay.port())
                } else {
                    relay
                };
                let udp = self
                    .udp
                    .take()
                    .ok_or_else(|| proxy.broken_off(io::Error::other("no UDP socket")))?;
                udp.connect(relay).map_err(|e| proxy.broken_off(e))?;
                Ok(Some(Poll::Ready(Some(udp))))
            }
        }
    }

    /// The lookup's reply is in: connect to the address it gave, or ask
    /// the next server.
    fn looked_up(&mut self, proxy: &Proxy) -> Result<(), Tun2socksError> {
        let Some(l) = self.lookup.as_mut() else {
            return Ok(());
        };
        let reply = l.reply.take().unwrap_or_default();
        let msg = reply.get(2..).unwrap_or_default();
        // An answer to another query than ours is no answer.
        let ip = if msg.get(..2) == Some(&l.id.to_be_bytes()[..]) {
            dns::answer_addrs(msg).into_iter().find(IpAddr::is_ipv4)
        } else {
            None
        };
        match ip {
            Some(ip) => {
                self.purpose = Purpose::Tcp(Target::Ip(SocketAddr::new(ip, l.port)));
                self.lookup = None;
                self.reopen(proxy)
            }
            None => {
                l.last = "no IPv4 address".into();
                self.next_server(proxy)
            }
        }
    }

    fn next_server(&mut self, proxy: &Proxy) -> Result<(), Tun2socksError> {
        let Some(l) = self.lookup.as_mut() else {
            return Ok(());
        };
        l.server += 1;
        l.reply = None;
        if l.server >= proxy.fallback().len() {
            return Err(proxy.resolve_error(&l.name, &l.last));
        }
        self.reopen(proxy)
    }

    /// A new connection to the proxy for the next step.
    fn reopen(&mut self, proxy: &Proxy) -> Result<(), Tun2socksError> {
        let (s, a) = open_from(proxy, 0)?;
        self.stream = s;
        self.addr = a;
        self.connected = false;
        self.fresh = true;
        self.hs = None;
        self.out.clear();
        Ok(())
    }
}

/// Open a non-blocking connection to the proxy's first address from `idx`
/// on that does not fail at once.
fn open_from(proxy: &Proxy, idx: usize) -> Result<(ProxyStream, usize), Tun2socksError> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for i in idx..proxy.dial_count() {
        match proxy.dial_nonblocking(i) {
            Ok(s) => return Ok((s, i)),
            Err(e) => last = e,
        }
    }
    Err(proxy.unreachable_error(&last))
}

/// Read `n` bytes already seen with peek (they are there: no wait).
fn consume(
    stream: &ProxyStream,
    n: usize,
    buf: &mut [u8],
    proxy: &Proxy,
) -> Result<(), Tun2socksError> {
    if n > 0 {
        let mut s = stream;
        s.read_exact(&mut buf[..n])
            .map_err(|e| proxy.broken_off(e))?;
    }
    Ok(())
}
