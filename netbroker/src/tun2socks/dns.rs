//! DNS for the tun2socks engine: the virtual resolver (fake addresses from a
//! pool, mapped back to names when the application connects to them), the
//! small message codec it needs, and DNS over TCP / UDP exchanges used to
//! forward queries through the proxy and to resolve the proxy's own name.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

/// The question of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub id: u16,
    /// Lower-case, without the trailing dot.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// Offset of the end of the question section.
    pub end: usize,
}

/// Parse the first question of a query (None: not a query we can answer).
pub fn parse_question(msg: &[u8]) -> Option<Question> {
    if msg.len() < 12 || msg[2] & 0x80 != 0 || u16::from_be_bytes([msg[4], msg[5]]) == 0 {
        return None;
    }
    let mut i = 12;
    let mut name = String::new();
    loop {
        let l = *msg.get(i)? as usize;
        i += 1;
        if l == 0 {
            break;
        }
        if l > 63 || name.len() + l > 253 {
            return None;
        }
        let label = msg.get(i..i + l)?;
        if !name.is_empty() {
            name.push('.');
        }
        for &c in label {
            if !(c.is_ascii_alphanumeric() || c == b'-' || c == b'_') {
                return None;
            }
            name.push(c.to_ascii_lowercase() as char);
        }
        i += l;
    }
    let t = msg.get(i..i + 4)?;
    Some(Question {
        id: u16::from_be_bytes([msg[0], msg[1]]),
        name,
        qtype: u16::from_be_bytes([t[0], t[1]]),
        qclass: u16::from_be_bytes([t[2], t[3]]),
        end: i + 4,
    })
}

/// A reply to `query` (whose question is `q`) with `answer` as the only
/// record (None: no records, NOERROR) and response code `rcode`.
pub fn reply(query: &[u8], q: &Question, answer: Option<IpAddr>, rcode: u8) -> Vec<u8> {
    let mut r = Vec::with_capacity(q.end + 32);
    r.extend_from_slice(&query[..2]);
    // QR, opcode 0, RD copied; RA; rcode.
    r.push(0x80 | (query[2] & 0x01));
    r.push(0x80 | (rcode & 0x0f));
    r.extend_from_slice(&[0, 1]);
    r.extend_from_slice(&[0, u8::from(answer.is_some())]);
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(&query[12..q.end]);
    if let Some(ip) = answer {
        r.extend_from_slice(&[0xc0, 12]);
        let (t, data): (u16, Vec<u8>) = match ip {
            IpAddr::V4(a) => (TYPE_A, a.octets().to_vec()),
            IpAddr::V6(a) => (TYPE_AAAA, a.octets().to_vec()),
        };
        r.extend_from_slice(&t.to_be_bytes());
        r.extend_from_slice(&CLASS_IN.to_be_bytes());
        // A short TTL: fake addresses are recycled.
        r.extend_from_slice(&10u32.to_be_bytes());
        r.extend_from_slice(&(data.len() as u16).to_be_bytes());
        r.extend_from_slice(&data);
    }
    r
}

const RCODE_SERVFAIL: u8 = 2;
const RCODE_NXDOMAIN: u8 = 3;
const RCODE_REFUSED: u8 = 5;

/// A SERVFAIL reply to `query`, if it parses at all.
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let q = parse_question(query)?;
    Some(reply(query, &q, None, RCODE_SERVFAIL))
}

/// A REFUSED reply to `query`, if it parses at all.
pub fn refused(query: &[u8]) -> Option<Vec<u8>> {
    let q = parse_question(query)?;
    Some(reply(query, &q, None, RCODE_REFUSED))
}

/// A random query id (RFC 5452: ids the engine makes are not guessable).
pub fn random_id() -> u16 {
    let mut b = [0u8; 2];
    crate::sys::random_bytes(&mut b);
    u16::from_be_bytes(b)
}

/// Whether `name` (lower-case, no trailing dot) is a Tor onion name.
fn is_onion(name: &str) -> bool {
    name == "onion" || name.ends_with(".onion")
}

/// The fake address pool of the virtual resolver: each name gets one address
/// for as long as the pool does not wrap around. It wraps at its size or at
/// its capacity of names, whichever is smaller (the oldest name's address
/// is given to the new one), so its state stays bounded.
#[derive(Debug)]
pub struct FakePool {
    base: u32,
    size: u32,
    /// Where `next` wraps around (at most `size - 1`).
    wrap: u32,
    next: u32,
    by_name: HashMap<String, Ipv4Addr>,
    by_ip: HashMap<Ipv4Addr, String>,
    onion: bool,
}

impl FakePool {
    pub fn new(net: Ipv4Addr, prefix: u8) -> FakePool {
        let size = 1u32 << (32 - u32::from(prefix.clamp(8, 30)));
        FakePool {
            base: u32::from(net) & !(size - 1),
            size,
            wrap: size - 1,
            next: 1,
            by_name: HashMap::new(),
            by_ip: HashMap::new(),
            onion: true,
        }
    }

    /// Keep at most `names` names (at least 16): past it, addresses are
    /// recycled oldest first.
    pub fn set_capacity(&mut self, names: usize) {
        let names = u32::try_from(names.max(16)).unwrap_or(u32::MAX);
        self.wrap = self.size.saturating_sub(1).min(names.saturating_add(1));
    }

    /// How many names the pool holds now.
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    /// Whether the pool holds no name.
    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    /// Whether `.onion` names get an address (the default) or NXDOMAIN.
    pub fn set_onion(&mut self, onion: bool) {
        self.onion = onion;
    }

    /// The address for `name`, assigning one if needed.
    pub fn assign(&mut self, name: &str) -> Ipv4Addr {
        if let Some(ip) = self.by_name.get(name) {
            return *ip;
        }
        let ip = Ipv4Addr::from(self.base + self.next);
        self.next += 1;
        if self.next >= self.wrap {
            self.next = 1;
        }
        if let Some(old) = self.by_ip.remove(&ip) {
            self.by_name.remove(&old);
        }
        self.by_name.insert(name.to_string(), ip);
        self.by_ip.insert(ip, name.to_string());
        ip
    }

    /// The name behind a fake address.
    pub fn name_of(&self, ip: Ipv4Addr) -> Option<&str> {
        self.by_ip.get(&ip).map(String::as_str)
    }

    /// Whether `ip` lies in the pool.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & !(self.size - 1) == self.base
    }

    /// Answer a query the virtual way: A from the pool, anything else empty.
    pub fn answer(&mut self, query: &[u8]) -> Option<Vec<u8>> {
        let q = parse_question(query)?;
        if q.qclass != CLASS_IN {
            return Some(reply(query, &q, None, 4));
        }
        if !self.onion && is_onion(&q.name) {
            return Some(reply(query, &q, None, RCODE_NXDOMAIN));
        }
        let ans = match q.qtype {
            TYPE_A if !q.name.is_empty() => Some(IpAddr::V4(self.assign(&q.name))),
            _ => None,
        };
        Some(reply(query, &q, ans, 0))
    }
}

/// A query for `name` of type `qtype` (recursion desired).
pub fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(name.len() + 18);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        m.push(label.len().min(63) as u8);
        m.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&CLASS_IN.to_be_bytes());
    m
}

fn skip_name(msg: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let l = *msg.get(i)?;
        if l & 0xc0 == 0xc0 {
            return Some(i + 2);
        }
        i += 1 + l as usize;
        if l == 0 {
            return Some(i);
        }
    }
}

/// The A and AAAA addresses in the answer section of a reply.
pub fn answer_addrs(msg: &[u8]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    (|| -> Option<()> {
        let qd = u16::from_be_bytes([*msg.get(4)?, *msg.get(5)?]);
        let an = u16::from_be_bytes([*msg.get(6)?, *msg.get(7)?]);
        let mut i = 12;
        for _ in 0..qd {
            i = skip_name(msg, i)? + 4;
        }
        for _ in 0..an {
            i = skip_name(msg, i)?;
            let h = msg.get(i..i + 10)?;
            let t = u16::from_be_bytes([h[0], h[1]]);
            let len = u16::from_be_bytes([h[8], h[9]]) as usize;
            let data = msg.get(i + 10..i + 10 + len)?;
            match (t, len) {
                (TYPE_A, 4) => out.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]).into()),
                (TYPE_AAAA, 16) => {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(data);
                    out.push(Ipv6Addr::from(a).into());
                }
                _ => {}
            }
            i += 10 + len;
        }
        Some(())
    })();
    out
}

/// One DNS-over-TCP exchange on an open stream.
pub fn tcp_exchange(s: &mut (impl Read + Write), query: &[u8]) -> io::Result<Vec<u8>> {
    let mut m = Vec::with_capacity(query.len() + 2);
    m.extend_from_slice(&(query.len() as u16).to_be_bytes());
    m.extend_from_slice(query);
    s.write_all(&m)?;
    let mut l = [0u8; 2];
    s.read_exact(&mut l)?;
    let mut resp = vec![0u8; u16::from_be_bytes(l) as usize];
    s.read_exact(&mut resp)?;
    Ok(resp)
}

/// Resolve `name` (A, then AAAA) with plain UDP queries to `servers` in the
/// calling thread's namespace.
pub fn resolve_udp(
    servers: &[SocketAddr],
    name: &str,
    timeout: Duration,
) -> io::Result<Vec<IpAddr>> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no DNS server");
    for server in servers {
        let bind: SocketAddr = if server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(bind)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.connect(server)?;
        let mut found = Vec::new();
        for t in [TYPE_A, TYPE_AAAA] {
            let id = random_id();
            if let Err(e) = sock.send(&build_query(id, name, t)) {
                last = e;
                continue;
            }
            let mut buf = [0u8; 1500];
            match sock.recv(&mut buf) {
                Ok(n) if n >= 2 && buf[..2] == id.to_be_bytes() => {
                    found.extend(answer_addrs(&buf[..n]))
                }
                Ok(_) => {}
                Err(e) => last = e,
            }
        }
        if !found.is_empty() {
            return Ok(found);
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_answers_a_from_the_pool_and_aaaa_empty() {
        let mut pool = FakePool::new(Ipv4Addr::new(198, 18, 128, 0), 17);
        let q = build_query(7, "Web.Test", TYPE_A);
        let r = pool.answer(&q).unwrap();
        assert_eq!(r[..2], [0, 7]);
        let addrs = answer_addrs(&r);
        assert_eq!(addrs, vec![IpAddr::V4(Ipv4Addr::new(198, 18, 128, 1))]);
        assert_eq!(
            pool.name_of(Ipv4Addr::new(198, 18, 128, 1)),
            Some("web.test")
        );
        // The same name keeps its address.
        assert_eq!(answer_addrs(&pool.answer(&q).unwrap()), addrs);
        let r6 = pool.answer(&build_query(8, "web.test", TYPE_AAAA)).unwrap();
        assert!(answer_addrs(&r6).is_empty());
        assert_eq!(r6[3] & 0x0f, 0, "NOERROR");
        assert!(pool.contains(Ipv4Addr::new(198, 18, 200, 1)));
        assert!(!pool.contains(Ipv4Addr::new(198, 18, 0, 2)));
    }

    #[test]
    fn onion_names_get_nxdomain_only_when_onion_support_is_off() {
        let mut pool = FakePool::new(Ipv4Addr::new(198, 18, 128, 0), 17);
        let q = build_query(3, "abc.onion", TYPE_A);
        assert_eq!(answer_addrs(&pool.answer(&q).unwrap()).len(), 1);
        pool.set_onion(false);
        let r = pool.answer(&q).unwrap();
        assert!(answer_addrs(&r).is_empty());
        assert_eq!(r[3] & 0x0f, RCODE_NXDOMAIN);
        // Only the onion TLD: a name merely containing it still resolves.
        let q = build_query(4, "onion.example", TYPE_A);
        assert_eq!(answer_addrs(&pool.answer(&q).unwrap()).len(), 1);
        let r = refused(&q).unwrap();
        assert_eq!((r[..2].to_vec(), r[3] & 0x0f), (vec![0, 4], RCODE_REFUSED));
    }

    #[test]
    fn query_ids_are_random() {
        let ids: std::collections::HashSet<u16> = (0..16).map(|_| random_id()).collect();
        // 16 draws from 65536 values: all equal only if they are not random.
        assert!(ids.len() > 8, "{ids:?}");
    }

    #[test]
    fn the_pool_keeps_at_most_its_capacity_of_names() {
        let mut pool = FakePool::new(Ipv4Addr::new(198, 18, 128, 0), 17);
        pool.set_capacity(16);
        let first = pool.assign("n0.test");
        for i in 1..40 {
            pool.assign(&format!("n{i}.test"));
        }
        assert!(pool.len() <= 16, "{}", pool.len());
        assert!(pool.name_of(first).is_none_or(|n| n != "n0.test"));
        let last = pool.assign("n39.test");
        assert_eq!(pool.name_of(last), Some("n39.test"));
    }

    #[test]
    fn malformed_queries_are_ignored() {
        let mut pool = FakePool::new(Ipv4Addr::new(198, 18, 128, 0), 17);
        assert!(pool.answer(&[0u8; 5]).is_none());
        let mut q = build_query(1, "a.test", TYPE_A);
        q.truncate(q.len() - 3);
        assert!(pool.answer(&q).is_none());
    }
}
