//! Address-like values of a profile, parsed from their string forms: proxy
//! endpoints, CIDR networks, DNS servers, port forwarding rules and interface
//! names. Each parser returns the message a user sees on failure.

#![forbid(unsafe_code)]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The host part of an [`Endpoint`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Host {
    Ip(IpAddr),
    /// A DNS name (the original only accepts IP literals; resolving is the
    /// netbroker's business). Re-checked when decoded ([`is_hostname`]).
    Name(#[serde(deserialize_with = "de_hostname")] String),
}

/// A proxy address: `192.0.2.1:1080`, `[2001:db8::1]:1080`, a bare IP (the
/// hop type's default port) or `proxy.example:1080`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub host: Host,
    /// 1–65535, re-checked when decoded.
    #[serde(deserialize_with = "de_port")]
    pub port: u16,
}

/// [`Host::Name`] as decoded from the wire: the parser's rule.
fn de_hostname<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if !is_hostname(&s) {
        return Err(serde::de::Error::custom(format!("invalid host name {s:?}")));
    }
    Ok(s)
}

/// A proxy's port as decoded from the wire: never 0, as the parser says.
fn de_port<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let p = u16::deserialize(d)?;
    if p == 0 {
        return Err(serde::de::Error::custom("port 0"));
    }
    Ok(p)
}

impl Endpoint {
    /// Parse `s`; `default_port` is used when the port is omitted (None: the
    /// port is required).
    pub fn parse(s: &str, default_port: Option<u16>) -> Result<Endpoint, String> {
        let s = s.trim();
        let bad = || {
            format!("malformed address {s:?} (expected e.g. \"192.0.2.1:1080\", \"[2001:db8::1]:1080\" or \"proxy.example:1080\")")
        };
        let need_port = || format!("address {s:?} needs a port (e.g. \"{s}:1080\")");
        if let Ok(ip) = s.parse::<IpAddr>() {
            let port = default_port.ok_or_else(need_port)?;
            return Ok(Endpoint {
                host: Host::Ip(ip),
                port,
            });
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (v6, after) = rest.split_once(']').ok_or_else(bad)?;
            let ip = v6.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(bad)?),
            };
            (Host::Ip(IpAddr::V6(ip)), port)
        } else {
            let (h, p) = match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            };
            let host = match h.parse::<Ipv4Addr>() {
                Ok(ip) => Host::Ip(IpAddr::V4(ip)),
                Err(_) if is_hostname(h) => Host::Name(h.to_ascii_lowercase()),
                Err(_) => return Err(bad()),
            };
            (host, p)
        };
        let port = match port {
            Some(p) => parse_port(p)
                .ok_or_else(|| format!("invalid port {p:?} in address {s:?} (expected 1-65535)"))?,
            None => default_port.ok_or_else(need_port)?,
        };
        Ok(Endpoint { host, port })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            Host::Ip(ip) => write!(f, "{ip}:{}", self.port),
            Host::Name(n) => write!(f, "{n}:{}", self.port),
        }
    }
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|&n| n != 0)
}

/// RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
fn is_hostname(h: &str) -> bool {
    let h = h.strip_suffix('.').unwrap_or(h);
    !h.is_empty()
        && h.len() <= 253
        && !h.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// An IP network `addr/prefix` with no host bits set; a bare address is a
/// host route (/32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || {
            format!("malformed network {s:?} (expected e.g. \"10.0.0.0/8\" or \"2001:db8::/32\")")
        };
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|&n| n <= max).ok_or_else(bad)?
            }
            Some(_) => return Err(bad()),
        };
        let cidr = Cidr { addr, prefix };
        let net = cidr.network();
        if net != addr {
            return Err(format!(
                "network {s:?} has host bits set (did you mean \"{net}/{prefix}\"?)"
            ));
        }
        Ok(cidr)
    }
}

impl Cidr {
    /// The address with the host bits cleared.
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }

    /// Whether the two networks share an address (one contains the other).
    pub fn overlaps(&self, other: &Cidr) -> bool {
        if self.addr.is_ipv4() != other.addr.is_ipv4() {
            return false;
        }
        let prefix = self.prefix.min(other.prefix);
        let cut = |addr| Cidr { addr, prefix }.network();
        cut(self.addr) == cut(other.addr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A hop's `dns` entry: a plain nameserver for resolv.conf, or `tcp://…`,
/// served through a local UDP→TCP DNS proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DnsServer {
    Udp(IpAddr),
    Tcp(SocketAddr),
}

impl FromStr for DnsServer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("tcp://") {
            let ep = Endpoint::parse(rest, Some(53))?;
            return match ep.host {
                Host::Ip(ip) => Ok(DnsServer::Tcp(SocketAddr::new(ip, ep.port))),
                Host::Name(_) => Err(format!("DNS server {s:?} must be an IP address")),
            };
        }
        s.trim().parse().map(DnsServer::Udp).map_err(|_| {
            format!("malformed DNS server {s:?} (expected an IP address like \"192.0.2.53\" or \"tcp://192.0.2.53:53\")")
        })
    }
}

impl fmt::Display for DnsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsServer::Udp(ip) => write!(f, "{ip}"),
            DnsServer::Tcp(sa) => write!(f, "tcp://{sa}"),
        }
    }
}

/// Transport of a port forwarding rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transport {
    Tcp,
    Udp,
}

/// `network.port_forwarding.local` entry:
/// `<tcp|udp>://<bind_host_ip>:<bind_host_port>:<guest_ip>:<guest_port>`,
/// an IPv6 address in brackets (`tcp://[::1]:8081:[::1]:8001`; the
/// original knows IPv4 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    pub transport: Transport,
    /// Where the host listens.
    pub host: SocketAddr,
    /// Where the connection goes inside the application namespace.
    pub guest: SocketAddr,
}

/// The original's message for a rule of the wrong shape.
const PORT_FORWARD_SHAPE: &str = "Port forwarding expected to have the following scheme: <udp|tcp>://<bind_host_ip>:<bind_host_port>:<guest_ip>:<guest_port>";

impl FromStr for PortForward {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (scheme, rest) = s.split_once("://").ok_or(PORT_FORWARD_SHAPE)?;
        let transport = match scheme.to_ascii_lowercase().as_str() {
            "tcp" => Transport::Tcp,
            "udp" => Transport::Udp,
            _ => {
                return Err(format!(
                    "The scheme of the port forwarding {scheme} is not either tcp or udp"
                ))
            }
        };
        let (host, rest) = forward_end(rest)?;
        let rest = rest.strip_prefix(':').ok_or(PORT_FORWARD_SHAPE)?;
        let (guest, rest) = forward_end(rest)?;
        if !rest.is_empty() {
            return Err(PORT_FORWARD_SHAPE.to_string());
        }
        Ok(PortForward {
            transport,
            host,
            guest,
        })
    }
}

/// One `IP:PORT` of a forwarding rule (`[IPv6]:PORT`), and what follows it.
fn forward_end(s: &str) -> Result<(SocketAddr, &str), String> {
    let (ip, rest) = match s.strip_prefix('[') {
        Some(v6) => {
            let (ip, rest) = v6.split_once(']').ok_or(PORT_FORWARD_SHAPE)?;
            let ip = ip
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("{ip:?} is not an IPv6 address ({PORT_FORWARD_SHAPE})"))?;
            (IpAddr::V6(ip), rest)
        }
        None => {
            let (ip, rest) = s.split_at(s.find(':').ok_or(PORT_FORWARD_SHAPE)?);
            let ip = ip
                .parse::<Ipv4Addr>()
                .map_err(|_| format!("{ip:?} is not an IPv4 address ({PORT_FORWARD_SHAPE})"))?;
            (IpAddr::V4(ip), rest)
        }
    };
    let rest = rest.strip_prefix(':').ok_or(PORT_FORWARD_SHAPE)?;
    let (port, rest) = rest.split_at(rest.find(':').unwrap_or(rest.len()));
    let port = parse_port(port)
        .ok_or_else(|| format!("{port:?} is not a port number 1-65535 ({PORT_FORWARD_SHAPE})"))?;
    Ok((SocketAddr::new(ip, port), rest))
}

impl fmt::Display for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = match self.transport {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        };
        write!(f, "{t}://{}:{}", self.host, self.guest)
    }
}

/// A Linux network interface name: 1-15 bytes, no `/`, `:`, whitespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct IfName(String);

impl IfName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IfName {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 15
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
        if ok {
            Ok(IfName(s))
        } else {
            Err(format!(
                "invalid interface name {s:?} (1-15 characters, no '/', ':' or spaces)"
            ))
        }
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Result<Endpoint, String> {
        Endpoint::parse(s, Some(1080))
    }

    #[test]
    fn endpoint_accepts_all_documented_forms() {
        assert_eq!(ep("10.8.0.3:1080").unwrap().to_string(), "10.8.0.3:1080");
        assert_eq!(ep("10.8.0.3").unwrap().to_string(), "10.8.0.3:1080");
        assert_eq!(
            ep("[2001:db8::1]:9050").unwrap().to_string(),
            "[2001:db8::1]:9050"
        );
        assert_eq!(
            ep("[2001:db8::1]").unwrap().to_string(),
            "[2001:db8::1]:1080"
        );
        assert_eq!(ep("2001:db8::1").unwrap().to_string(), "[2001:db8::1]:1080");
        assert_eq!(
            ep(" Proxy.Example:3128 ").unwrap().to_string(),
            "proxy.example:3128"
        );
        assert_eq!(Endpoint::parse("192.0.2.1", Some(3128)).unwrap().port, 3128);
    }

    #[test]
    fn endpoint_rejects_malformed() {
        for bad in [
            "",
            ":1080",
            "10.0.0.1:",
            "10.0.0.1:0",
            "10.0.0.1:65536",
            "10.0.0.1:x",
            "[::1",
            "[::1]x",
            "[zz]:1",
            "a b:1",
            "-a.example:1",
            "1.2.3.4.5:1",
            "999.1.1.1:80",
        ] {
            assert!(ep(bad).is_err(), "{bad:?} accepted");
        }
        let e = Endpoint::parse("10.0.0.1", None).unwrap_err();
        assert!(e.contains("needs a port"), "{e}");
    }

    #[test]
    fn cidr_parses_and_rejects_host_bits() {
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!("192.0.2.7".parse::<Cidr>().unwrap().prefix, 32);
        assert_eq!("::/0".parse::<Cidr>().unwrap().to_string(), "::/0");
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().prefix, 0);
        let e = "10.0.0.1/8".parse::<Cidr>().unwrap_err();
        assert!(e.contains("did you mean \"10.0.0.0/8\""), "{e}");
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/",
            "10/8",
            "x",
            "::/129",
            "10.0.0.0/+8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn dns_server_forms() {
        assert_eq!(
            "1.1.1.1".parse::<DnsServer>().unwrap(),
            DnsServer::Udp("1.1.1.1".parse().unwrap())
        );
        assert_eq!(
            "tcp://1.1.1.1".parse::<DnsServer>().unwrap().to_string(),
            "tcp://1.1.1.1:53"
        );
        assert_eq!(
            "tcp://[::1]:5353".parse::<DnsServer>().unwrap().to_string(),
            "tcp://[::1]:5353"
        );
        assert!("dns.example".parse::<DnsServer>().is_err());
        assert!("tcp://dns.example".parse::<DnsServer>().is_err());
    }

    #[test]
    fn port_forward_parses_rules() {
        let r: PortForward = "TCP://127.0.0.1:8080:10.0.0.2:80".parse().unwrap();
        assert_eq!(r.transport, Transport::Tcp);
        assert_eq!(r.host, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(r.guest, "10.0.0.2:80".parse().unwrap());
        assert_eq!(r.to_string(), "tcp://127.0.0.1:8080:10.0.0.2:80");
        let u: PortForward = "udp://0.0.0.0:53:127.0.0.1:53".parse().unwrap();
        assert_eq!(u.transport, Transport::Udp);
        let v6: PortForward = "tcp://[::1]:8081:[::1]:8001".parse().unwrap();
        assert_eq!(v6.host, "[::1]:8081".parse().unwrap());
        assert_eq!(v6.guest, "[::1]:8001".parse().unwrap());
        assert_eq!(v6.to_string(), "tcp://[::1]:8081:[::1]:8001");
        let mixed: PortForward = "udp://127.0.0.1:53:[fd00::1]:53".parse().unwrap();
        assert_eq!(mixed.guest, "[fd00::1]:53".parse().unwrap());
    }

    #[test]
    fn port_forward_errors_use_the_originals_messages() {
        assert_eq!(
            "sctp://1.2.3.4:1:5.6.7.8:2"
                .parse::<PortForward>()
                .unwrap_err(),
            "The scheme of the port forwarding sctp is not either tcp or udp"
        );
        for bad in [
            "tcp://1.2.3.4:1:5.6.7.8",
            "1.2.3.4:1:5.6.7.8:2",
            "tcp://[::1]:1:[::1]",
            "tcp://1.2.3.4:1:5.6.7.8:2:3",
        ] {
            assert_eq!(
                bad.parse::<PortForward>().unwrap_err(),
                PORT_FORWARD_SHAPE,
                "{bad}"
            );
        }
        let e = "tcp://1.2.3.4:99999:5.6.7.8:2"
            .parse::<PortForward>()
            .unwrap_err();
        assert!(e.starts_with("\"99999\" is not a port number"), "{e}");
        let e = "tcp://host:1:5.6.7.8:2".parse::<PortForward>().unwrap_err();
        assert!(e.starts_with("\"host\" is not an IPv4 address"), "{e}");
        let e = "tcp://[x]:1:5.6.7.8:2".parse::<PortForward>().unwrap_err();
        assert!(e.starts_with("\"x\" is not an IPv6 address"), "{e}");
    }

    #[test]
    fn ifname_validation() {
        assert!(IfName::try_from("torbr".to_string()).is_ok());
        assert!(IfName::try_from("eth0.100".to_string()).is_ok());
        for bad in ["", "a/b", "a b", "abcdefghijklmnop", "..", "wg:0"] {
            assert!(IfName::try_from(bad.to_string()).is_err(), "{bad:?}");
        }
    }
}
