//! DNS for the empty chain: decide from the host's resolv.conf whether the
//! application can use the host's resolvers directly or needs a relay (when
//! the host names a loopback resolver such as systemd-resolved's 127.0.0.53),
//! and the relay itself: UDP and TCP on the host end of the veth, forwarded
//! to the loopback resolver.

#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How the application namespace gets DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsPlan {
    /// Use these resolv.conf lines as they are.
    Copy(String),
    /// Relay to this loopback resolver; `extra` are the search/options lines.
    Relay { upstream: IpAddr, extra: String },
    /// The host has no resolver: the application gets an empty resolv.conf.
    None,
}

/// Decide from the host's resolv.conf text (`None` if it could not be read).
pub fn plan(resolv_conf: Option<&str>) -> DnsPlan {
    let Some(text) = resolv_conf else {
        return DnsPlan::None;
    };
    let mut servers = Vec::new();
    let mut copy = String::new();
    let mut extra = String::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(tok) = words.next() {
                    if let Some(ip) = parse_server(tok) {
                        servers.push(ip);
                        copy.push_str(&format!("nameserver {tok}\n"));
                    }
                }
            }
            Some("search" | "domain" | "options") => {
                copy.push_str(line.trim());
                copy.push('\n');
                extra.push_str(line.trim());
                extra.push('\n');
            }
            _ => {}
        }
    }
    match servers.iter().find(|ip| ip.is_loopback()) {
        _ if servers.is_empty() => DnsPlan::None,
        Some(&upstream) => DnsPlan::Relay { upstream, extra },
        None => DnsPlan::Copy(copy),
    }
}

/// A nameserver address; drops a `%scope` suffix of link-local IPv6 servers.
fn parse_server(s: &str) -> Option<IpAddr> {
    s.split('%').next()?.parse().ok()
}

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("bind DNS relay on {addr} ({proto})")]
    Bind {
        addr: SocketAddr,
        proto: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("start DNS relay thread")]
    Thread(#[source] io::Error),
}

/// Listen on `listen:53` (UDP and TCP) and forward to `upstream:53`. The
/// sockets are bound before this returns; the serving threads live as long as
/// the process. Call only after all namespace work (it starts threads).
pub fn start_relay(listen: Ipv4Addr, upstream: IpAddr) -> Result<(), RelayError> {
    let addr = SocketAddr::new(listen.into(), 53);
    let up = SocketAddr::new(upstream, 53);
    let udp = UdpSocket::bind(addr).map_err(|source| RelayError::Bind {
        addr,
        proto: "udp",
        source,
    })?;
    let tcp = TcpListener::bind(addr).map_err(|source| RelayError::Bind {
        addr,
        proto: "tcp",
        source,
    })?;
    let inflight = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("dns-udp".into())
        .spawn(move || serve_udp(udp, up, inflight))
        .map_err(RelayError::Thread)?;
    std::thread::Builder::new()
        .name("dns-tcp".into())
        .spawn(move || serve_tcp(tcp, up))
        .map_err(RelayError::Thread)?;
    Ok(())
}

/// Most queries answered concurrently; beyond that, queries are dropped (the
/// client retries), so a flood cannot exhaust threads.
const MAX_INFLIGHT: usize = 64;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

fn serve_udp(sock: UdpSocket, upstream: SocketAddr, inflight: Arc<AtomicUsize>) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if inflight.fetch_add(1, Ordering::AcqRel) >= MAX_INFLIGHT {
            inflight.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let query = buf[..n].to_vec();
        let (sock, inflight2) = (Arc::clone(&sock), Arc::clone(&inflight));
        let spawned = std::thread::Builder::new().spawn(move || {
            if let Err(e) = udp_exchange(&sock, &query, client, upstream) {
                tracing::debug!("DNS relay (udp) for {client}: {e}");
            }
            inflight2.fetch_sub(1, Ordering::AcqRel);
        });
        if spawned.is_err() {
            inflight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn udp_exchange(
    sock: &UdpSocket,
    query: &[u8],
    client: SocketAddr,
    upstream: SocketAddr,
) -> io::Result<()> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::LOCALHOST, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::LOCALHOST, 0).into(),
    };
    let up = UdpSocket::bind(local)?;
    up.connect(upstream)?;
    up.set_read_timeout(Some(UPSTREAM_TIMEOUT))?;
    up.send(query)?;
    let mut buf = vec![0u8; 65536];
    let n = up.recv(&mut buf)?;
    sock.send_to(&buf[..n], client)?;
    Ok(())
}

fn serve_tcp(listener: TcpListener, upstream: SocketAddr) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let _ = std::thread::Builder::new().spawn(move || {
            if let Err(e) = tcp_exchange(conn, upstream) {
                tracing::debug!("DNS relay (tcp): {e}");
            }
        });
    }
}

/// Relay length-prefixed DNS messages one at a time until either side closes.
fn tcp_exchange(mut client: TcpStream, upstream: SocketAddr) -> io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut up = TcpStream::connect_timeout(&upstream, UPSTREAM_TIMEOUT)?;
    up.set_read_timeout(Some(UPSTREAM_TIMEOUT))?;
    let mut buf = vec![0u8; 2 + 65535];
    while relay_message(&mut client, &mut up, &mut buf)?
        && relay_message(&mut up, &mut client, &mut buf)?
    {}
    Ok(())
}

/// Copy one length-prefixed message; `false` at a clean end of stream.
fn relay_message(from: &mut TcpStream, to: &mut TcpStream, buf: &mut [u8]) -> io::Result<bool> {
    let mut len = [0u8; 2];
    match from.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let n = usize::from(u16::from_be_bytes(len));
    buf[..2].copy_from_slice(&len);
    from.read_exact(&mut buf[2..2 + n])?;
    to.write_all(&buf[..2 + n])?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_resolvers_are_copied_with_search_and_options() {
        let p = plan(Some(
            "# comment\nnameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch example.org\noptions edns0\n",
        ));
        assert_eq!(
            p,
            DnsPlan::Copy(
                "nameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch example.org\noptions edns0\n"
                    .into()
            )
        );
    }

    #[test]
    fn loopback_resolver_needs_a_relay() {
        let p = plan(Some(
            "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n",
        ));
        assert_eq!(
            p,
            DnsPlan::Relay {
                upstream: "127.0.0.53".parse().unwrap(),
                extra: "options edns0 trust-ad\nsearch .\n".into()
            }
        );
        assert!(matches!(
            plan(Some("nameserver ::1\n")),
            DnsPlan::Relay { .. }
        ));
    }

    #[test]
    fn any_loopback_server_among_others_is_relayed() {
        let p = plan(Some("nameserver 192.0.2.1\nnameserver 127.0.0.1\n"));
        assert!(
            matches!(p, DnsPlan::Relay { upstream, .. } if upstream == IpAddr::from([127, 0, 0, 1]))
        );
    }

    #[test]
    fn missing_file_or_no_nameserver_is_none() {
        assert_eq!(plan(None), DnsPlan::None);
        assert_eq!(plan(Some("search example.org\n")), DnsPlan::None);
        assert_eq!(plan(Some("nameserver not-an-ip\n")), DnsPlan::None);
    }

    #[test]
    fn scoped_ipv6_server_is_parsed() {
        assert_eq!(
            plan(Some("nameserver fe80::1%eth0\n")),
            DnsPlan::Copy("nameserver fe80::1%eth0\n".into())
        );
    }
}
