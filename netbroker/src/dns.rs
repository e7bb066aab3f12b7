//! DNS for the empty chain: decide from the host's resolv.conf whether the
//! application can use the host's resolvers directly or needs a relay (when
//! the host names a loopback resolver such as systemd-resolved's 127.0.0.53),
//! and the relay itself: UDP and TCP on the session's host-end veth address
//! only (never a wildcard), port 53, forwarded to the loopback resolver. The
//! session's nftables table lets the sandbox reach that address and port and
//! nothing else of the host's.
//!
//! Bounds (the application is hostile and may flood it): at most
//! [`MAX_INFLIGHT`] UDP queries wait for the resolver at once — further
//! queries are dropped unanswered (the client's resolver retries) — and at
//! most [`MAX_TCP_CONNS`] TCP connections are served at once — further ones
//! are accepted and closed at once. A TCP connection lives at most
//! [`TCP_LIFETIME`], however slowly its client writes; each answer waits at
//! most [`UPSTREAM_TIMEOUT`].

#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    #[error("drop the DNS relay thread's capabilities")]
    Caps(#[source] proto::policy::PolicyError),
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
    // The relay needs no capability (its sockets are bound): its threads
    // drop every one before serving, and the per-query threads they start
    // inherit nothing (capabilities are per thread; the netbroker's main
    // thread drops its own after ChainReady).
    let (dropped_tx, dropped_rx) = std::sync::mpsc::channel();
    let spawn = |name: &str, serve: Box<dyn FnOnce() + Send>| {
        let dropped = dropped_tx.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let r = proto::policy::drop_thread_caps();
                let ok = r.is_ok();
                let _ = dropped.send(r);
                if ok {
                    serve();
                }
            })
            .map_err(RelayError::Thread)
    };
    spawn(
        "dns-udp",
        Box::new(move || serve_udp(udp, up, Arc::new(AtomicUsize::new(0)))),
    )?;
    spawn(
        "dns-tcp",
        Box::new(move || serve_tcp(tcp, up, Arc::new(AtomicUsize::new(0)))),
    )?;
    for _ in 0..2 {
        match dropped_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(RelayError::Caps(e)),
            Err(_) => return Err(RelayError::Thread(io::Error::other("the thread died"))),
        }
    }
    Ok(())
}

/// Most UDP queries answered concurrently; beyond that, queries are dropped
/// (the client retries), so a flood cannot exhaust threads.
pub const MAX_INFLIGHT: usize = 64;
/// Most TCP connections served concurrently; beyond that, a new connection is
/// closed as soon as it is accepted.
pub const MAX_TCP_CONNS: usize = 16;
/// Longest life of a relayed TCP connection, so a slow client cannot hold
/// one of the [`MAX_TCP_CONNS`] places for ever.
pub const TCP_LIFETIME: Duration = Duration::from_secs(30);
/// Longest wait for the loopback resolver's answer.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

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

fn serve_tcp(listener: TcpListener, upstream: SocketAddr, conns: Arc<AtomicUsize>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        if conns.fetch_add(1, Ordering::AcqRel) >= MAX_TCP_CONNS {
            conns.fetch_sub(1, Ordering::AcqRel);
            drop(conn);
            continue;
        }
        let conns2 = Arc::clone(&conns);
        let spawned = std::thread::Builder::new().spawn(move || {
            if let Err(e) = tcp_exchange(conn, upstream) {
                tracing::debug!("DNS relay (tcp): {e}");
            }
            conns2.fetch_sub(1, Ordering::AcqRel);
        });
        if spawned.is_err() {
            conns.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Relay length-prefixed DNS messages one at a time until either side closes
/// or [`TCP_LIFETIME`] is over.
fn tcp_exchange(mut client: TcpStream, upstream: SocketAddr) -> io::Result<()> {
    let deadline = Instant::now() + TCP_LIFETIME;
    let mut up = TcpStream::connect_timeout(&upstream, UPSTREAM_TIMEOUT)?;
    let mut buf = vec![0u8; 2 + 65535];
    while relay_message(&mut client, &mut up, &mut buf, deadline)? {
        let answer_by = deadline.min(Instant::now() + UPSTREAM_TIMEOUT);
        if !relay_message(&mut up, &mut client, &mut buf, answer_by)? {
            break;
        }
    }
    Ok(())
}

/// Copy one length-prefixed message, read by `deadline`; `false` at a clean
/// end of stream.
fn relay_message(
    from: &mut TcpStream,
    to: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
) -> io::Result<bool> {
    let mut len = [0u8; 2];
    match read_by(from, &mut len, deadline) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let n = usize::from(u16::from_be_bytes(len));
    buf[..2].copy_from_slice(&len);
    read_by(from, &mut buf[2..2 + n], deadline)?;
    to.write_all(&buf[..2 + n])?;
    Ok(true)
}

/// `read_exact` that gives up at `deadline`, not per read: a client sending a
/// byte at a time cannot stretch it.
fn read_by(s: &mut TcpStream, mut buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        s.set_read_timeout(Some(left))?;
        match s.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TCP connections beyond [`MAX_TCP_CONNS`] are closed at once; those
    /// within stay open (waiting for their query).
    #[test]
    fn tcp_connections_beyond_the_bound_are_closed() {
        let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let up = upstream.local_addr().unwrap();
        std::thread::spawn(move || serve_tcp(listener, up, Arc::new(AtomicUsize::new(0))));
        let held: Vec<TcpStream> = (0..MAX_TCP_CONNS)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        let mut extra = TcpStream::connect(addr).unwrap();
        extra
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 1];
        assert_eq!(extra.read(&mut b).unwrap(), 0, "closed at the bound");
        let mut first = &held[0];
        first
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let e = first.read(&mut b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "still served");
        drop(upstream);
    }

    /// A flood of UDP queries reaches the resolver [`MAX_INFLIGHT`] at a
    /// time; the rest are dropped.
    #[test]
    fn udp_queries_beyond_the_bound_are_dropped() {
        let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = relay.local_addr().unwrap();
        let up = upstream.local_addr().unwrap();
        std::thread::spawn(move || serve_udp(relay, up, Arc::new(AtomicUsize::new(0))));
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..(MAX_INFLIGHT as u16 + 40) {
            client.send_to(&i.to_be_bytes(), addr).unwrap();
        }
        // The silent resolver holds every forwarded query for UPSTREAM_TIMEOUT.
        upstream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut n = 0;
        let mut b = [0u8; 16];
        while upstream.recv(&mut b).is_ok() {
            n += 1;
        }
        assert_eq!(n, MAX_INFLIGHT);
    }

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
