//! The proxy clients of the tun2socks engine: SOCKS4, SOCKS4a, SOCKS5 (with
//! username/password and UDP ASSOCIATE) and HTTP CONNECT (with basic auth).
//! Every socket the engine opens is made here, and only ever to the proxy's
//! own address: that is what makes the kill switch structural.

#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use proto::profile::Host;

use super::{dns, short_reason, Config, DnsConfig, Protocol, Tun2socksError};

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
}

impl Proxy {
    /// Resolve the proxy's address (in the calling thread's namespace).
    pub fn resolve(cfg: &Config) -> Result<Proxy, Tun2socksError> {
        let ep = &cfg.proxy.address;
        let addrs = match &ep.host {
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
            display: ep.to_string(),
            username: cfg.proxy.username.clone(),
            password: cfg.proxy.password.clone(),
            timeout: cfg.connect_timeout,
            fallback,
        })
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
    fn dial(&self) -> Result<TcpStream, Tun2socksError> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for a in &self.addrs {
            match TcpStream::connect_timeout(a, self.timeout) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    s.set_read_timeout(Some(self.timeout))
                        .and_then(|()| s.set_write_timeout(Some(self.timeout)))
                        .map_err(|e| self.unreachable(&e))?;
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(self.unreachable(&last))
    }

    /// Reach the proxy and authenticate, as far as the protocol allows
    /// without opening a connection through it.
    pub fn check(&self) -> Result<(), Tun2socksError> {
        let mut s = self.dial()?;
        match self.protocol {
            Protocol::Socks5 => self.socks5_auth(&mut s),
            Protocol::Socks4 | Protocol::Socks4a => Ok(()),
            Protocol::HttpConnect => {
                // A CONNECT to the proxy's own address: the answer to it does
                // not matter, only whether the proxy wants other credentials.
                let target = Target::Ip(self.addrs[0]);
                match self.http_connect(&mut s, &target) {
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
    /// for data (blocking, with the handshake's timeouts cleared).
    pub fn connect(&self, target: &Target) -> Result<TcpStream, Tun2socksError> {
        let target = match (self.protocol, target) {
            (Protocol::Socks4, Target::Name(name, port)) => {
                let ip = self.resolve_through(name)?;
                Target::Ip(SocketAddr::new(ip, *port))
            }
            _ => target.clone(),
        };
        let mut s = self.dial()?;
        match self.protocol {
            Protocol::Socks5 => {
                self.socks5_auth(&mut s)?;
                self.socks5_request(&mut s, 1, &target)?;
            }
            Protocol::Socks4 | Protocol::Socks4a => self.socks4(&mut s, &target)?,
            Protocol::HttpConnect => self.http_connect(&mut s, &target)?,
        }
        s.set_read_timeout(None)
            .and_then(|()| s.set_write_timeout(None))
            .map_err(|e| self.io_error(e))?;
        Ok(s)
    }

    /// SOCKS5 UDP ASSOCIATE: the control connection (the association lives
    /// as long as it does) and a UDP socket connected to the relay.
    pub fn udp_associate(&self) -> Result<(TcpStream, UdpSocket), Tun2socksError> {
        if self.protocol != Protocol::Socks5 {
            return Err(self.protocol_error("does not relay UDP"));
        }
        let mut s = self.dial()?;
        self.socks5_auth(&mut s)?;
        let local = s.local_addr().map_err(|e| self.io_error(e))?;
        let udp = UdpSocket::bind(SocketAddr::new(local.ip(), 0)).map_err(|e| self.io_error(e))?;
        let bound = udp.local_addr().map_err(|e| self.io_error(e))?;
        let relay = self.socks5_request(&mut s, 3, &Target::Ip(bound))?;
        let relay = if relay.ip().is_unspecified() {
            SocketAddr::new(
                s.peer_addr().map_err(|e| self.io_error(e))?.ip(),
                relay.port(),
            )
        } else {
            relay
        };
        udp.connect(relay).map_err(|e| self.io_error(e))?;
        s.set_read_timeout(None).map_err(|e| self.io_error(e))?;
        Ok((s, udp))
    }

    fn socks5_auth(&self, s: &mut TcpStream) -> Result<(), Tun2socksError> {
        let methods: &[u8] = if self.username.is_some() {
            &[0x00, 0x02]
        } else {
            &[0x00]
        };
        let mut hello = vec![5, methods.len() as u8];
        hello.extend_from_slice(methods);
        s.write_all(&hello).map_err(|e| self.io_error(e))?;
        let mut reply = [0u8; 2];
        s.read_exact(&mut reply).map_err(|e| self.io_error(e))?;
        if reply[0] != 5 {
            return Err(self.protocol_error("does not speak SOCKS5"));
        }
        match reply[1] {
            0x00 => Ok(()),
            0x02 if self.username.is_some() => {
                let user = self.username.as_deref().unwrap_or_default();
                let pass = self.password.as_deref().unwrap_or_default();
                if user.len() > 255 || pass.len() > 255 {
                    return Err(
                        self.protocol_error("cannot take a username or password over 255 bytes")
                    );
                }
                let mut m = vec![1, user.len() as u8];
                m.extend_from_slice(user.as_bytes());
                m.push(pass.len() as u8);
                m.extend_from_slice(pass.as_bytes());
                s.write_all(&m).map_err(|e| self.io_error(e))?;
                let mut r = [0u8; 2];
                match s.read_exact(&mut r) {
                    Ok(()) if r[1] == 0 => Ok(()),
                    // Some servers close the connection instead of answering.
                    Ok(()) | Err(_) => Err(Tun2socksError::BadCredentials {
                        proto: self.proto(),
                        addr: self.display.clone(),
                        user: user.to_string(),
                    }),
                }
            }
            0x02 => {
                Err(self.protocol_error("requires a username and password, and none is configured"))
            }
            _ if self.username.is_some() => Err(self.protocol_error(
                "accepts none of the offered authentication methods (none, username/password)",
            )),
            _ => Err(self.protocol_error("requires authentication, and no username is configured")),
        }
    }

    /// Send a SOCKS5 request (`cmd` 1 CONNECT, 3 UDP ASSOCIATE) and return
    /// the bound address of the reply.
    fn socks5_request(
        &self,
        s: &mut TcpStream,
        cmd: u8,
        target: &Target,
    ) -> Result<SocketAddr, Tun2socksError> {
        let mut m = vec![5, cmd, 0];
        encode_socks5_addr(&mut m, target).map_err(|w| self.protocol_error(w))?;
        s.write_all(&m).map_err(|e| self.io_error(e))?;
        self.socks5_reply(s, cmd, target)
    }

    /// Read the reply to a SOCKS5 request; the bound address.
    fn socks5_reply(
        &self,
        s: &mut TcpStream,
        cmd: u8,
        target: &Target,
    ) -> Result<SocketAddr, Tun2socksError> {
        let mut head = [0u8; 4];
        s.read_exact(&mut head).map_err(|e| self.io_error(e))?;
        if head[1] != 0 {
            return Err(self.protocol_error(format!(
                "refused {} {target}: {}",
                if cmd == 3 {
                    "UDP for"
                } else {
                    "a connection to"
                },
                socks5_reply(head[1])
            )));
        }
        let ip: IpAddr = match head[3] {
            1 => {
                let mut a = [0u8; 4];
                s.read_exact(&mut a).map_err(|e| self.io_error(e))?;
                Ipv4Addr::from(a).into()
            }
            4 => {
                let mut a = [0u8; 16];
                s.read_exact(&mut a).map_err(|e| self.io_error(e))?;
                Ipv6Addr::from(a).into()
            }
            3 => {
                let mut l = [0u8; 1];
                s.read_exact(&mut l).map_err(|e| self.io_error(e))?;
                let mut n = vec![0u8; l[0] as usize];
                s.read_exact(&mut n).map_err(|e| self.io_error(e))?;
                Ipv4Addr::UNSPECIFIED.into()
            }
            _ => return Err(self.protocol_error("sent a malformed reply")),
        };
        let mut p = [0u8; 2];
        s.read_exact(&mut p).map_err(|e| self.io_error(e))?;
        Ok(SocketAddr::new(ip, u16::from_be_bytes(p)))
    }

    fn socks4(&self, s: &mut TcpStream, target: &Target) -> Result<(), Tun2socksError> {
        let user = self.username.as_deref().unwrap_or_default();
        let mut m = vec![4, 1];
        match target {
            Target::Ip(SocketAddr::V4(a)) => {
                m.extend_from_slice(&a.port().to_be_bytes());
                m.extend_from_slice(&a.ip().octets());
                m.extend_from_slice(user.as_bytes());
                m.push(0);
            }
            Target::Ip(SocketAddr::V6(_)) => {
                return Err(self.protocol_error(format!(
                    "cannot carry the IPv6 destination {target} (SOCKS4 has no IPv6)"
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
        s.write_all(&m).map_err(|e| self.io_error(e))?;
        let mut r = [0u8; 8];
        s.read_exact(&mut r).map_err(|e| self.io_error(e))?;
        match r[1] {
            0x5a => Ok(()),
            0x5c | 0x5d => Err(Tun2socksError::BadCredentials {
                proto: self.proto(),
                addr: self.display.clone(),
                user: user.to_string(),
            }),
            _ => Err(self.protocol_error(format!("refused a connection to {target}"))),
        }
    }

    fn http_connect(&self, s: &mut TcpStream, target: &Target) -> Result<(), Tun2socksError> {
        let authority = match target {
            Target::Ip(a) => a.to_string(),
            Target::Name(n, p) => format!("{n}:{p}"),
        };
        let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some(user) = &self.username {
            let cred = format!("{user}:{}", self.password.as_deref().unwrap_or_default());
            req.push_str(&format!(
                "Proxy-Authorization: Basic {}\r\n",
                base64(cred.as_bytes())
            ));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).map_err(|e| self.io_error(e))?;
        // Byte by byte: whatever follows the header belongs to the tunnel.
        let mut head = Vec::with_capacity(256);
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() > 16 * 1024 {
                return Err(self.protocol_error("sent an oversized reply header"));
            }
            match s.read(&mut b) {
                Ok(0) => {
                    return Err(self.io_error(io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(_) => head.push(b[0]),
                Err(e) => return Err(self.io_error(e)),
            }
        }
        let line = head.split(|c| *c == b'\r').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let code = line.split_whitespace().nth(1).unwrap_or("");
        match code {
            c if c.starts_with('2') => Ok(()),
            // tinyproxy answers 401 where RFC 9110 says 407.
            "407" | "401" => match &self.username {
                Some(user) => Err(Tun2socksError::BadCredentials {
                    proto: self.proto(),
                    addr: self.display.clone(),
                    user: user.clone(),
                }),
                None => {
                    Err(self.protocol_error("requires credentials, and no username is configured"))
                }
            },
            _ => {
                Err(self
                    .protocol_error(format!("refused a connection to {target}: {}", line.trim())))
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
        let query = dns::build_query(0x5053, name, dns::TYPE_A);
        let mut last = String::new();
        for server in &self.fallback {
            let mut s = self.dial()?;
            if let Err(e) = self.socks4(&mut s, &Target::Ip(*server)) {
                last = e.to_string();
                continue;
            }
            match dns::tcp_exchange(&mut s, &query) {
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
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"alice:s3cret"), "YWxpY2U6czNjcmV0");
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
