//! The UDP side of the engine: SOCKS5 UDP ASSOCIATE flows (one per source
//! address of the application, each set up by a non-blocking dial of the
//! event loop), DNS answered in process (virtual), or forwarded through the
//! proxy over the shared UDP association (query ids rewritten to random
//! ones) or the pooled DNS-over-TCP connections of the forwarder thread.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};

use super::super::stream::ProxyStream;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use nix::sys::epoll::{EpollEvent, EpollFlags};
use smoltcp::socket::tcp;

use super::super::dns;
use super::super::proxy::{Proxy, Target};
use super::super::udp;
use super::super::{Shared, Tun2socksError};
use super::{
    token, Dial, Done, Engine, Purpose, FORWARD_QUEUE, KIND_CTL, KIND_UDP, UDP_PENDING,
    UDP_PENDING_BYTES,
};

/// Most ports per UDP flow whose fake destination is remembered (about
/// 40 KiB per flow).
const FAKE_PORTS: usize = 1024;

/// Where the answer to a forwarded DNS query goes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Reply {
    /// A UDP datagram from `server` (the virtual DNS address) to `app`.
    Udp { app: SocketAddr, server: SocketAddr },
    /// The application's DNS-over-TCP connection with this id.
    Tcp(u64),
}

/// One UDP flow of the application (by its source address).
pub(super) struct Flow {
    pub(super) app: SocketAddr,
    pub(super) pending: Vec<(Target, Vec<u8>)>,
    pub(super) ready: Option<(ProxyStream, UdpSocket)>,
    /// The fake destination the app last sent to on each port: replies
    /// from the real address are shown as coming from the fake one. A map by
    /// port with at most [`FAKE_PORTS`] entries: it was a list searched per
    /// datagram, which one socket sending to many fake (address, port) pairs
    /// grew without bound, each datagram costing a scan of all before it.
    pub(super) fake: HashMap<u16, SocketAddr>,
    /// The shared association of forwarded DNS queries (answers are matched
    /// to the application by their rewritten query id).
    pub(super) is_dns: bool,
    pub(super) last: StdInstant,
}

impl Engine {
    pub(super) fn send_udp_to_app(&mut self, from: SocketAddr, to: SocketAddr, payload: &[u8]) {
        let n = udp::emit(&mut self.scratch, from, to, payload);
        if n > 0 {
            let _ = nix::unistd::write(&self.dev.fd, &self.scratch[..n]);
        }
    }

    pub(super) fn on_udp(&mut self, src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
        match self.dns_service(dst) {
            Some(true) => return self.on_dns(src, dst, payload),
            Some(false) => return,
            None => {}
        }
        if self.direct.is_some() {
            return self.direct_udp(src, dst, payload);
        }
        if self.udp_refused
            || self
                .proxy
                .as_ref()
                .is_none_or(|p| p.protocol != super::super::Protocol::Socks5)
        {
            return;
        }
        let Some(target) = self.target_for(dst) else {
            return;
        };
        self.relay_udp(src, dst, target, payload);
    }

    /// Send a datagram from the application at `src` to `target` (shown to
    /// the application as `dst`) through the SOCKS5 relay of its flow.
    pub(super) fn relay_udp(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        target: Target,
        payload: &[u8],
    ) {
        let id = match self.flow_by_app.get(&src) {
            Some(id) => *id,
            None => match self.new_flow(src, false) {
                Some(id) => id,
                None => return,
            },
        };
        if let Some(flow) = self.flows.get_mut(&id) {
            if matches!(target, Target::Name(..)) {
                if flow.fake.len() >= FAKE_PORTS && !flow.fake.contains_key(&dst.port()) {
                    // Full: another port's entry makes room (any one).
                    let evict = flow.fake.keys().next().copied();
                    if let Some(port) = evict {
                        flow.fake.remove(&port);
                    }
                }
                flow.fake.insert(dst.port(), dst);
            }
        }
        self.send_on_flow(id, target, payload);
    }

    /// Forward a DNS query over the shared DNS association, its id rewritten
    /// so the answer finds its way back.
    pub(super) fn relay_dns(
        &mut self,
        app: SocketAddr,
        virt: SocketAddr,
        real: SocketAddr,
        query: &[u8],
    ) {
        if query.len() < 12 {
            return;
        }
        if self.dns_ids.len() >= self.limits.dns_pending {
            self.refusals.note("pending DNS queries", &self.shared);
            if let Some(r) = dns::servfail(query) {
                self.dns_reply(Reply::Udp { app, server: virt }, &r);
            }
            return;
        }
        // A random id not in use (RFC 5452): an answer cannot be forged by
        // guessing the next one.
        let mut id = dns::random_id();
        while self.dns_ids.contains_key(&id) {
            id = dns::random_id();
        }
        self.dns_ids.insert(
            id,
            (
                u16::from_be_bytes([query[0], query[1]]),
                app,
                virt,
                StdInstant::now(),
            ),
        );
        let mut q = query.to_vec();
        q[..2].copy_from_slice(&id.to_be_bytes());
        let flow = match self.dns_flow {
            Some(f) => f,
            None => match self.new_flow(SocketAddr::from(([0, 0, 0, 0], 0)), true) {
                Some(f) => {
                    self.dns_flow = Some(f);
                    f
                }
                None => {
                    self.dns_ids.remove(&id);
                    return;
                }
            },
        };
        self.send_on_flow(flow, Target::Ip(real), &q);
    }

    pub(super) fn send_on_flow(&mut self, id: u64, target: Target, payload: &[u8]) {
        let Some(flow) = self.flows.get_mut(&id) else {
            return;
        };
        flow.last = StdInstant::now();
        match &flow.ready {
            Some((_, sock)) if udp::socks5_frame(&mut self.frame, &target, payload) => {
                let _ = sock.send(&self.frame);
                self.shared
                    .counters
                    .udp_datagrams
                    .fetch_add(1, Ordering::Relaxed);
            }
            Some(_) => {}
            None if flow.pending.len() < UDP_PENDING
                && flow.pending.iter().map(|(_, p)| p.len()).sum::<usize>() + payload.len()
                    <= UDP_PENDING_BYTES =>
            {
                flow.pending.push((target, payload.to_vec()));
            }
            None => {}
        }
    }

    /// A new flow and the dial of its association; None past a cap (its
    /// datagrams are dropped) or if the proxy cannot be dialled at all.
    pub(super) fn new_flow(&mut self, app: SocketAddr, is_dns: bool) -> Option<u64> {
        if self.flows.len() >= self.limits.udp_flows {
            self.refusals.note("UDP flows", &self.shared);
            return None;
        }
        if self.dials.len() >= self.limits.pending_dials {
            self.refusals.note("pending proxy dials", &self.shared);
            return None;
        }
        let proxy = self.proxy.as_ref()?;
        let dial = match Dial::start(proxy, Purpose::Udp) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!("tun2socks: UDP association failed: {e}");
                return None;
            }
        };
        let id = self.next_id;
        if !self.watch_dial(id, dial) {
            return None;
        }
        self.next_id += 1;
        self.trimmed = false;
        self.flows.insert(
            id,
            Flow {
                app,
                pending: Vec::new(),
                ready: None,
                fake: HashMap::new(),
                is_dns,
                last: StdInstant::now(),
            },
        );
        if !is_dns {
            self.flow_by_app.insert(app, id);
        }
        Some(id)
    }

    pub(super) fn finish_udp(
        &mut self,
        id: u64,
        r: Result<(ProxyStream, UdpSocket), Option<Tun2socksError>>,
    ) {
        let Some(flow) = self.flows.get_mut(&id) else {
            return;
        };
        match r {
            Ok((ctl, sock)) => {
                // The dial's registration of `ctl` is gone with its token.
                let _ = self.epoll.delete(ctl.as_fd());
                let ok = ctl.set_nonblocking(true).is_ok()
                    && sock.set_nonblocking(true).is_ok()
                    && self
                        .epoll
                        .add(
                            sock.as_fd(),
                            EpollEvent::new(EpollFlags::EPOLLIN, token(id, KIND_UDP)),
                        )
                        .is_ok()
                    && self
                        .epoll
                        .add(
                            ctl.as_fd(),
                            EpollEvent::new(
                                EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP,
                                token(id, KIND_CTL),
                            ),
                        )
                        .is_ok();
                if !ok {
                    self.drop_flow(id);
                    return;
                }
                for (target, payload) in std::mem::take(&mut flow.pending) {
                    if udp::socks5_frame(&mut self.frame, &target, &payload) {
                        let _ = sock.send(&self.frame);
                        self.shared
                            .counters
                            .udp_datagrams
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                flow.ready = Some((ctl, sock));
            }
            Err(e) => {
                // A proxy that answers but will not associate (refuses, or
                // hangs up on the request) does not relay UDP; one that
                // cannot be reached may do so later.
                match &e {
                    Some(e @ Tun2socksError::Unreachable { .. }) => {
                        tracing::debug!("tun2socks: UDP association failed: {e}");
                    }
                    // Said once: every flow pending when the proxy refuses
                    // fails alike, and the application makes the flows.
                    Some(e) if !self.udp_refused => {
                        tracing::warn!("tun2socks: {e}; UDP other than DNS is dropped");
                        self.udp_refused = true;
                    }
                    Some(e) => tracing::debug!("tun2socks: {e}"),
                    None => tracing::debug!("tun2socks: UDP association failed"),
                }
                // DNS queries that waited for the association go over TCP.
                let pending = if flow.is_dns {
                    std::mem::take(&mut flow.pending)
                } else {
                    Vec::new()
                };
                self.drop_flow(id);
                for (_, mut q) in pending {
                    let Some((orig, app, server, _)) =
                        self.dns_ids.remove(&u16::from_be_bytes([q[0], q[1]]))
                    else {
                        continue;
                    };
                    q[..2].copy_from_slice(&orig.to_be_bytes());
                    self.dns_query(Reply::Udp { app, server }, &q);
                }
            }
        }
    }

    pub(super) fn drop_flow(&mut self, id: u64) {
        if let Some(f) = self.flows.remove(&id) {
            if f.is_dns {
                self.dns_flow = None;
            } else {
                self.flow_by_app.remove(&f.app);
            }
        }
    }

    pub(super) fn udp_from_relay(&mut self, id: u64) {
        let mut buf = std::mem::take(&mut self.frame);
        buf.resize(65536 + 300, 0);
        while let Some(flow) = self.flows.get_mut(&id) {
            let Some((_, sock)) = &flow.ready else {
                break;
            };
            let n = match sock.recv(&mut buf) {
                Ok(n) => n,
                Err(_) => break,
            };
            let Some((from, off)) = udp::socks5_unframe(&buf[..n]) else {
                continue;
            };
            flow.last = StdInstant::now();
            // Replies to a fake address come back from the real one.
            let shown = flow.fake.get(&from.port()).copied().unwrap_or(from);
            if flow.is_dns {
                let data = &mut buf[off..n];
                if data.len() < 12 {
                    continue;
                }
                let Some((orig, app, virt, _)) =
                    self.dns_ids.remove(&u16::from_be_bytes([data[0], data[1]]))
                else {
                    continue;
                };
                data[..2].copy_from_slice(&orig.to_be_bytes());
                self.dns_reply(Reply::Udp { app, server: virt }, &buf[off..n]);
                continue;
            }
            let app = flow.app;
            self.shared
                .counters
                .udp_datagrams
                .fetch_add(1, Ordering::Relaxed);
            self.send_udp_to_app(shown, app, &buf[off..n]);
        }
        buf.clear();
        self.frame = buf;
    }

    pub(super) fn on_dns(&mut self, app: SocketAddr, server: SocketAddr, query: &[u8]) {
        match self.udp_dns {
            Some(real) if !self.udp_refused => self.relay_dns(app, server, real, query),
            _ => self.dns_query(Reply::Udp { app, server }, query),
        }
    }

    /// Answer a query: at once from the virtual pool, or later through the
    /// forwarder; with neither (DNS off), at once with REFUSED.
    pub(super) fn dns_query(&mut self, to: Reply, query: &[u8]) {
        if self.direct.is_some() {
            self.direct_dns(to, query);
        } else if let Some(pool) = &mut self.pool {
            if let Some(reply) = pool.answer(query) {
                self.dns_reply(to, &reply);
            }
        } else if let Some(fw) = &self.forwarder {
            match fw.try_send((to, query.to_vec())) {
                Ok(()) => {}
                Err(TrySendError::Full((to, q))) => {
                    self.refusals.note("pending DNS queries", &self.shared);
                    if let Some(reply) = dns::servfail(&q) {
                        self.dns_reply(to, &reply);
                    }
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        } else if let Some(reply) = dns::refused(query) {
            self.dns_reply(to, &reply);
        }
    }

    pub(super) fn dns_reply(&mut self, to: Reply, reply: &[u8]) {
        self.shared
            .counters
            .dns_queries
            .fetch_add(1, Ordering::Relaxed);
        match to {
            Reply::Udp { app, server } => self.send_udp_to_app(server, app, reply),
            Reply::Tcp(id) => {
                let Some(handle) = self.conns.get(&id).and_then(|c| c.handle) else {
                    return;
                };
                let sock = self.sockets.get_mut::<tcp::Socket>(handle);
                if sock.send_capacity() - sock.send_queue() >= reply.len() + 2 {
                    let _ = sock.send_slice(&(reply.len() as u16).to_be_bytes());
                    let _ = sock.send_slice(reply);
                }
            }
        }
    }
}

/// The DNS forwarder: queries go to the configured servers as DNS over TCP
/// through the proxy, over one pooled connection per server.
pub(super) fn spawn_forwarder(
    proxy: Arc<Proxy>,
    servers: Vec<SocketAddr>,
    timeout: Duration,
    done: SyncSender<Done>,
    shared: Arc<Shared>,
) -> Result<SyncSender<(Reply, Vec<u8>)>, Tun2socksError> {
    let (tx, rx) = sync_channel::<(Reply, Vec<u8>)>(FORWARD_QUEUE);
    std::thread::Builder::new()
        .name("tun2socks-dns".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let mut pool: HashMap<SocketAddr, ProxyStream> = HashMap::new();
            while let Ok((to, query)) = rx.recv() {
                let mut reply = None;
                'servers: for server in &servers {
                    for _attempt in 0..2 {
                        let s = match pool.remove(server) {
                            Some(s) => s,
                            None => match proxy.connect(&Target::Ip(*server)) {
                                Ok(s) => s,
                                Err(e) => {
                                    tracing::debug!("tun2socks: DNS server {server}: {e}");
                                    continue 'servers;
                                }
                            },
                        };
                        let mut s = s;
                        let _ = s.set_read_timeout(Some(timeout));
                        match dns::tcp_exchange(&mut s, &query) {
                            Ok(r) => {
                                pool.insert(*server, s);
                                reply = Some(r);
                                break 'servers;
                            }
                            // A pooled connection the server closed: once more.
                            Err(_) => continue,
                        }
                    }
                }
                let Some(reply) = reply.or_else(|| dns::servfail(&query)) else {
                    continue;
                };
                if done.send(Done::Dns(to, reply)).is_err() {
                    break;
                }
                let _ = shared.wake.write(1);
            }
        })
        .map_err(|source| Tun2socksError::Io {
            what: "spawn the DNS forwarder",
            source,
        })?;
    Ok(tx)
}
