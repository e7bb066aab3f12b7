//! `network.port_forwarding.local`: the host's side of a forwarded port
//! listens in the namespace pallium started in, the application's side is
//! a socket made in the application's namespace (a socket keeps the
//! namespace it was made in).
//!
//! The netbroker binds every rule's host address before it builds
//! anything ([`bind_all`]: a port in use is one line naming the rule), and
//! once the chain is up starts the *forwarder* ([`start`]): a child like a
//! packet engine (same binary, same placement: no capability,
//! no_new_privs, root mode the session's engine uid, the engine's seccomp
//! allow-list plus `accept`), but placed in the
//! application's network namespace, which receives the bound sockets over
//! its control channel and relays ([`serve`]): TCP byte streams (two
//! threads per connection), UDP datagrams with a flow table per rule (one
//! socket per client, expired after [`UDP_IDLE`] without traffic). It
//! parses nothing of the traffic it relays. The same process serves root
//! and rootless sessions and every uplink; it dies with the netbroker.
//!
//! It also serves a tor hop's `onion_service`: the hop binds a unix socket
//! only its tor may connect to and publishes the service with it as the
//! target (`hops/tor.rs`); the forwarder accepts there and connects to the
//! target port on the application's loopback ([`serve_onion`]).

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::engine::{EngineEvent, EngineRequest, ForwardListener, OnionListener, StartForward};
use proto::profile::{PortForward, Transport};
use proto::{Channel, Fd};

use crate::engine::{EngineError, EngineProcess, Placement};

/// Open TCP connections per rule; one more is accepted and closed at once.
pub const MAX_CONNECTIONS: usize = 128;
/// UDP clients per rule; a datagram from one more is dropped.
pub const MAX_FLOWS: usize = 256;
/// A UDP flow without a datagram either way for this long is forgotten.
pub const UDP_IDLE: Duration = Duration::from_secs(60);
/// How long a TCP connection into the application's namespace may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a forwarded port could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("network.port_forwarding.local[{index}] ({rule}): the host address {addr} is already in use; choose a free port or stop what holds it")]
    InUse {
        index: usize,
        rule: String,
        addr: SocketAddr,
    },
    #[error("network.port_forwarding.local[{index}] ({rule}): bind the host address {addr}")]
    Bind {
        index: usize,
        rule: String,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("start the port forwarder")]
    Start(#[from] EngineError),
}

/// The rules' host sockets, bound and (TCP) listening.
#[derive(Debug, Default)]
pub struct Bound(Vec<(OwnedFd, PortForward)>);

impl Bound {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Bind every rule's host address in our current namespace, in order; the
/// first that fails is the error and nothing stays bound.
pub fn bind_all(rules: &[PortForward]) -> Result<Bound, ForwardError> {
    let mut out = Vec::with_capacity(rules.len());
    for (index, rule) in rules.iter().enumerate() {
        let bound = match rule.transport {
            // std sets SO_REUSEADDR: a port whose last connections linger in
            // TIME_WAIT can be taken again, one another socket holds cannot.
            Transport::Tcp => TcpListener::bind(rule.host).map(OwnedFd::from),
            Transport::Udp => UdpSocket::bind(rule.host).map(OwnedFd::from),
        };
        let fd = bound.map_err(|source| match source.kind() {
            io::ErrorKind::AddrInUse => ForwardError::InUse {
                index,
                rule: rule.to_string(),
                addr: rule.host,
            },
            _ => ForwardError::Bind {
                index,
                rule: rule.to_string(),
                addr: rule.host,
                source,
            },
        })?;
        out.push((fd, *rule));
    }
    Ok(Bound(out))
}

/// Start the forwarder for `bound` and the chain's `onions` in the
/// application's namespace `netns` (owned by `userns`, which it joins first
/// where we are not in it).
pub fn start(
    bound: Bound,
    onions: Vec<crate::hops::Onion>,
    netns: BorrowedFd<'_>,
    userns: Option<BorrowedFd<'_>>,
    placement: Placement,
) -> Result<EngineProcess, ForwardError> {
    let launched =
        EngineProcess::launch_forwarder(Path::new("/proc/self/exe"), netns, userns, placement)?;
    let rules = bound
        .0
        .into_iter()
        .map(|(fd, rule)| ForwardListener {
            socket: Fd(fd),
            transport: rule.transport,
            guest: rule.guest,
            rule: rule.to_string(),
        })
        .collect();
    let onions = onions
        .into_iter()
        .map(|o| OnionListener {
            name: format!("{}:{}", o.address, o.port),
            socket: Fd(o.listener.into()),
            target: o.target,
        })
        .collect();
    Ok(launched.serve_forward(rules, onions)?)
}

type Chan = Channel<EngineEvent, EngineRequest>;

/// The forwarder process, after `StartForward`: confine, start a thread
/// per rule, answer Ready, and serve until the netbroker hangs up.
pub fn serve(mut chan: Chan, start: StartForward) -> Result<(), String> {
    let set_up = (|| {
        crate::engine::child::drop_everything()?;
        crate::engine::child::limits(start.max_files, start.max_tasks)?;
        // Before any relay thread: all of them run under it.
        crate::engine::filter::install_forwarder()
            .map_err(|e| format!("install the forwarder's seccomp filter: {e}"))?;
        for r in start.rules {
            let fd = r.socket.into_inner();
            let rule = r.rule;
            let guest = r.guest;
            let spawned = match r.transport {
                Transport::Tcp => {
                    let l = TcpListener::from(fd);
                    std::thread::Builder::new()
                        .name("forward-tcp".into())
                        .spawn(move || serve_tcp(l, guest, &rule))
                }
                Transport::Udp => {
                    let u = UdpSocket::from(fd);
                    std::thread::Builder::new()
                        .name("forward-udp".into())
                        .spawn(move || serve_udp(u, guest, &rule))
                }
            };
            spawned.map_err(|e| format!("start a forwarding thread: {e}"))?;
        }
        for o in start.onions {
            let l = UnixListener::from(o.socket.into_inner());
            let (target, name) = (o.target, o.name);
            std::thread::Builder::new()
                .name("forward-onion".into())
                .spawn(move || serve_onion(l, target, &name))
                .map_err(|e| format!("start an onion service thread: {e}"))?;
        }
        Ok::<(), String>(())
    })();
    if let Err(why) = set_up {
        let _ = chan.send(EngineEvent::Failed(why.clone()));
        return Err(why);
    }
    chan.send(EngineEvent::Ready).map_err(|e| e.to_string())?;
    // Nothing to answer: we end when the netbroker does (EOF), the
    // relaying threads with us.
    loop {
        match chan.recv() {
            Ok(_) => continue,
            Err(_) => return Ok(()),
        }
    }
}

fn serve_tcp(listener: TcpListener, guest: SocketAddr, rule: &str) {
    let live = Arc::new(AtomicUsize::new(0));
    loop {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) => {
                // Out of descriptors or a connection reset before we took
                // it: neither ends the rule.
                tracing::debug!("forward {rule}: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if live.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            tracing::debug!("forward {rule}: {MAX_CONNECTIONS} connections open, one refused");
            continue;
        }
        live.fetch_add(1, Ordering::Relaxed);
        let count = Arc::clone(&live);
        let spawned = std::thread::Builder::new()
            .name("forward-conn".into())
            .spawn(move || {
                relay_tcp(client, guest);
                count.fetch_sub(1, Ordering::Relaxed);
            });
        if spawned.is_err() {
            live.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One connection: dial the guest, then copy both ways, passing each
/// side's end of stream on as a half-close.
fn relay_tcp(client: TcpStream, guest: SocketAddr) {
    let Ok(server) = TcpStream::connect_timeout(&guest, CONNECT_TIMEOUT) else {
        // Nothing listens there (yet): the client sees its connection end.
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    relay(client, server);
}

/// An onion service: each connection tor makes to the socket goes to
/// `target` on the application's loopback (127.0.0.1, else ::1).
fn serve_onion(listener: UnixListener, target: u16, name: &str) {
    let live = Arc::new(AtomicUsize::new(0));
    loop {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) => {
                tracing::debug!("onion service {name}: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if live.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            tracing::debug!(
                "onion service {name}: {MAX_CONNECTIONS} connections open, one refused"
            );
            continue;
        }
        live.fetch_add(1, Ordering::Relaxed);
        let count = Arc::clone(&live);
        let spawned = std::thread::Builder::new()
            .name("forward-conn".into())
            .spawn(move || {
                let v4 = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, target));
                let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, target));
                match TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT)
                    .or_else(|_| TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT))
                {
                    Ok(server) => relay(client, server),
                    Err(_) => {
                        let _ = client.shutdown(Shutdown::Both);
                    }
                }
                count.fetch_sub(1, Ordering::Relaxed);
            });
        if spawned.is_err() {
            live.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A stream socket the relay copies between.
trait Stream: Read + Write + Send + Sized + 'static {
    fn dup(&self) -> io::Result<Self>;
    fn shut(&self, how: Shutdown);
}

impl Stream for TcpStream {
    fn dup(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn shut(&self, how: Shutdown) {
        let _ = self.shutdown(how);
    }
}

impl Stream for UnixStream {
    fn dup(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn shut(&self, how: Shutdown) {
        let _ = self.shutdown(how);
    }
}

/// Copy both ways until both sides have ended.
fn relay<C: Stream, S: Stream>(client: C, server: S) {
    let (Ok(c2), Ok(s2)) = (client.dup(), server.dup()) else {
        return;
    };
    let up = std::thread::Builder::new()
        .name("forward-up".into())
        .spawn(move || copy_half(c2, s2));
    copy_half(server, client);
    if let Ok(t) = up {
        let _ = t.join();
    }
}

fn copy_half<F: Stream, T: Stream>(mut from: F, mut to: T) {
    let _ = io::copy(&mut from, &mut to);
    to.shut(Shutdown::Write);
    from.shut(Shutdown::Read);
}

type Flows = Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>;

fn serve_udp(host: UdpSocket, guest: SocketAddr, rule: &str) {
    let flows: Flows = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, client) = match host.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("forward {rule}: receive: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let Some(flow) = flow_for(&flows, &host, client, guest) else {
            continue;
        };
        // A refused datagram (nothing listens yet) is the client's loss,
        // as it would be on a direct path.
        let _ = flow.send(&buf[..n]);
    }
}

/// The client's socket into the application's namespace, made (with the
/// thread carrying replies back) on its first datagram.
fn flow_for(
    flows: &Flows,
    host: &UdpSocket,
    client: SocketAddr,
    guest: SocketAddr,
) -> Option<Arc<UdpSocket>> {
    let mut table = flows.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = table.get(&client) {
        return Some(Arc::clone(f));
    }
    if table.len() >= MAX_FLOWS {
        return None;
    }
    let any: SocketAddr = match guest {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(any).ok()?;
    sock.connect(guest).ok()?;
    sock.set_read_timeout(Some(UDP_IDLE)).ok()?;
    let sock = Arc::new(sock);
    let back = host.try_clone().ok()?;
    let (theirs, table_ref) = (Arc::clone(&sock), Arc::clone(flows));
    std::thread::Builder::new()
        .name("forward-udp-back".into())
        .spawn(move || udp_back(&theirs, &back, client, &table_ref))
        .ok()?;
    table.insert(client, Arc::clone(&sock));
    Some(sock)
}

/// Replies from the guest to one client, until the flow is idle.
fn udp_back(flow: &UdpSocket, host: &UdpSocket, client: SocketAddr, flows: &Flows) {
    let mut buf = vec![0u8; 65536];
    loop {
        match flow.recv(&mut buf) {
            Ok(n) => {
                let _ = host.send_to(&buf[..n], client);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            // ECONNREFUSED from an earlier datagram: the flow lives on.
            Err(_) => continue,
        }
    }
    flows
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&client);
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    fn rule(transport: Transport, host: &str, guest: &str) -> PortForward {
        PortForward {
            transport,
            host: host.parse().unwrap(),
            guest: guest.parse().unwrap(),
        }
    }

    #[test]
    fn a_port_in_use_names_the_rule() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let rules = vec![
            rule(Transport::Udp, "127.0.0.1:0", "127.0.0.1:53"),
            rule(Transport::Tcp, &format!("127.0.0.1:{port}"), "127.0.0.1:80"),
        ];
        let e = bind_all(&rules).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("network.port_forwarding.local[1] (tcp://127.0.0.1:{port}:127.0.0.1:80): the host address 127.0.0.1:{port} is already in use; choose a free port or stop what holds it")
        );
    }

    #[test]
    fn free_ports_bind_in_order() {
        let rules = vec![
            rule(Transport::Tcp, "127.0.0.1:0", "127.0.0.1:80"),
            rule(Transport::Udp, "[::1]:0", "[::1]:53"),
        ];
        let b = bind_all(&rules).unwrap();
        assert_eq!(b.0.len(), 2);
        let fd: &OwnedFd = &b.0[1].0;
        let u = UdpSocket::from(fd.as_fd().try_clone_to_owned().unwrap());
        assert!(u.local_addr().unwrap().is_ipv6());
    }
}
