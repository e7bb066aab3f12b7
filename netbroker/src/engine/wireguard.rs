//! The wireguard hop's engine: a userspace WireGuard device (`gotatun`,
//! Mullvad's boringtun fork) in the unprivileged engine process. The
//! netbroker hands it the TUN descriptor of Ni; the engine, started in
//! N(i−1), binds its UDP socket there before its seccomp filter goes on
//! (a plain unprivileged bind; the filter then allows only I/O on it). The
//! device runs on a single-threaded tokio runtime; a control thread answers
//! Stats and Peers and stops the device on EOF.

#![forbid(unsafe_code)]

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use gotatun::device::{DeviceBuilder, Peer};
use gotatun::packet::{Ip, Packet, PacketBufPool};
use gotatun::tun::{IpRecv, IpSend, MtuWatcher};
use gotatun::udp::{UdpRecv, UdpSend, UdpTransportFactory, UdpTransportFactoryParams};
use gotatun::x25519::{PublicKey, StaticSecret};
use proto::engine::{EngineEvent, EngineRequest, EngineStats, StartWireguard, WgPeerState};
use proto::Channel;
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;

type Chan = Channel<EngineEvent, EngineRequest>;

/// Set up and serve until the netbroker goes away or the device fails;
/// the error is one line for the user (already sent as `Failed` when it
/// happened before Ready).
pub fn serve(chan: Chan, last_word: Chan, start: StartWireguard) -> Result<(), String> {
    let _ = nix::sys::prctl::set_name(c"pallium-engine");
    let set_up = (|| {
        super::child::drop_everything()?;
        super::child::limits(start.max_files, start.max_tasks)?;
        // Dual-stack, so v4 and v6 endpoints share it; v4-only where the
        // namespace has no IPv6 at all.
        let udp = std::net::UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))
            .or_else(|_| std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
            .map_err(|e| format!("bind the WireGuard UDP socket: {e}"))?;
        udp.set_nonblocking(true)
            .map_err(|e| format!("set the UDP socket non-blocking: {e}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("start the WireGuard runtime: {e}"))?;
        super::filter::install().map_err(|e| format!("install the seccomp filter: {e}"))?;
        Ok::<_, String>((udp, runtime))
    })();
    let (udp, runtime) = match set_up {
        Ok(x) => x,
        Err(why) => {
            let _ = chan.send(EngineEvent::Failed(why.clone()));
            return Err(why);
        }
    };
    let tun_fd = start.tun.into_inner();
    let mtu = start.mtu.min(u16::MAX as u32) as u16;
    let keys: Vec<PublicKey> = start
        .peers
        .iter()
        .map(|p| PublicKey::from(p.public_key))
        .collect();
    let peers: Vec<Peer> = start.peers.iter().map(peer).collect();
    let secret = StaticSecret::from(start.private_key);
    let built = runtime.block_on(async {
        let tun = Tun::new(tun_fd, mtu)?;
        let udp = Given::new(udp)?;
        DeviceBuilder::new()
            .with_udp(udp)
            .with_ip(tun)
            .with_private_key(secret)
            .with_peers(peers)
            .build()
            .await
            .map_err(|e| io::Error::other(e.to_string()))
    });
    let device = match built {
        Ok(d) => Arc::new(d),
        Err(e) => {
            let why = format!("start the WireGuard device: {e}");
            let _ = chan.send(EngineEvent::Failed(why.clone()));
            return Err(why);
        }
    };
    // Handshake at once with every peer that has an endpoint, rather than
    // on the first packet: the netbroker waits for them.
    for (key, p) in keys.iter().zip(&start.peers) {
        if p.endpoint.is_some() {
            let (device, key) = (device.clone(), *key);
            runtime.spawn(async move {
                let _ = device.force_handshake(&key).await;
            });
        }
    }
    chan.send(EngineEvent::Ready).map_err(|e| e.to_string())?;
    let stop = Arc::new(tokio::sync::Notify::new());
    let handle = runtime.handle().clone();
    {
        let (device, stop) = (device.clone(), stop.clone());
        std::thread::Builder::new()
            .name("engine-control".into())
            .spawn(move || answer(chan, &handle, &device, &keys, &stop))
            .map_err(|e| format!("start the control thread: {e}"))?;
    }
    // A device that fails (its TUN or socket gone) shows up to the
    // netbroker as a peer that stops answering (`exited` of the hop).
    runtime.block_on(stop.notified());
    drop(last_word);
    Ok(())
}

type Device = gotatun::device::Device<(Given, Tun, Tun)>;

fn peer(p: &proto::engine::WgPeer) -> Peer {
    let mut peer = Peer::new(PublicKey::from(p.public_key));
    peer.endpoint = p.endpoint;
    peer.preshared_key = p.preshared_key;
    peer.keepalive = p.keepalive;
    peer.allowed_ips = p
        .allowed_ips
        .iter()
        .filter_map(|(ip, len)| ipnetwork::IpNetwork::new(*ip, *len).ok())
        .collect();
    peer
}

/// The control thread: Stats and Peers until EOF, then stop the device.
fn answer(
    mut chan: Chan,
    rt: &tokio::runtime::Handle,
    device: &Device,
    keys: &[PublicKey],
    stop: &tokio::sync::Notify,
) {
    loop {
        let req = chan.recv();
        let reply = match req {
            Ok(EngineRequest::Stats) => {
                let states = peer_states(rt, device, keys);
                EngineEvent::Stats(EngineStats {
                    connections: 0,
                    bytes_up: states.iter().map(|s| s.tx_bytes).sum(),
                    bytes_down: states.iter().map(|s| s.rx_bytes).sum(),
                    dns_queries: 0,
                    udp_datagrams: 0,
                    refused: 0,
                })
            }
            Ok(EngineRequest::Peers) => EngineEvent::Peers(peer_states(rt, device, keys)),
            _ => break,
        };
        if chan.send(reply).is_err() {
            break;
        }
    }
    stop.notify_one();
}

/// Each configured peer's state, in `keys`' order.
fn peer_states(
    rt: &tokio::runtime::Handle,
    device: &Device,
    keys: &[PublicKey],
) -> Vec<WgPeerState> {
    // No I/O in this future (locks only): a handle may block on it while
    // the runtime's own thread drives the device.
    let stats = rt.block_on(device.peers());
    keys.iter()
        .map(|k| {
            stats
                .iter()
                .find(|s| s.peer.public_key == *k)
                .map(|s| WgPeerState {
                    handshake_age_ms: s.stats.last_handshake.map(|d| d.as_millis() as u64),
                    rx_bytes: s.stats.rx_bytes as u64,
                    tx_bytes: s.stats.tx_bytes as u64,
                })
                .unwrap_or(WgPeerState {
                    handshake_age_ms: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                })
        })
        .collect()
}

/// The TUN device of Ni, read and written through the runtime's epoll.
#[derive(Clone)]
pub(crate) struct Tun {
    fd: Arc<AsyncFd<OwnedFd>>,
    mtu: u16,
}

impl Tun {
    fn new(fd: OwnedFd, mtu: u16) -> io::Result<Self> {
        Ok(Tun {
            fd: Arc::new(crate::sys::async_fd(fd)?),
            mtu,
        })
    }
}

impl IpSend for Tun {
    async fn send(&mut self, packet: Packet<Ip>) -> io::Result<()> {
        let bytes = packet.into_bytes();
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| {
                nix::unistd::write(fd.get_ref().as_fd(), &bytes).map_err(io::Error::from)
            }) {
                Ok(r) => return r.map(drop),
                Err(_would_block) => continue,
            }
        }
    }
}

impl IpRecv for Tun {
    async fn recv<'a>(
        &'a mut self,
        pool: &mut PacketBufPool,
    ) -> io::Result<impl Iterator<Item = Packet<Ip>> + Send + 'a> {
        let mut packet = pool.get();
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| {
                nix::unistd::read(fd.get_ref().as_fd(), &mut packet).map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    packet.truncate(n);
                    return match packet.try_into_ip() {
                        Ok(p) => Ok(std::iter::once(p)),
                        Err(e) => Err(io::Error::other(e.to_string())),
                    };
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    fn mtu(&self) -> MtuWatcher {
        MtuWatcher::new(self.mtu)
    }
}

/// The UDP socket bound before the filter, given to the device once.
pub(crate) struct Given {
    sock: Option<Udp>,
}

impl Given {
    fn new(sock: std::net::UdpSocket) -> io::Result<Self> {
        let v6 = sock.local_addr()?.is_ipv6();
        Ok(Given {
            sock: Some(Udp {
                sock: Arc::new(UdpSocket::from_std(sock)?),
                v6,
            }),
        })
    }
}

impl UdpTransportFactory for Given {
    type Send = Udp;
    type Recv = Udp;

    async fn bind(&mut self, _params: &UdpTransportFactoryParams) -> io::Result<(Udp, Udp)> {
        // A second bind (a changed listen port) would need a new socket,
        // which the filter forbids: the device keeps the one it has.
        let s = self.sock.take().ok_or_else(|| {
            io::Error::other("the WireGuard UDP socket was already given to the device")
        })?;
        Ok((s.clone(), s))
    }
}

/// The device's UDP socket; v4 peers are reached through v4-mapped
/// addresses when it is dual-stack.
#[derive(Clone)]
pub(crate) struct Udp {
    sock: Arc<UdpSocket>,
    v6: bool,
}

impl UdpSend for Udp {
    type SendManyBuf = ();

    async fn send_to(&self, packet: Packet, destination: SocketAddr) -> io::Result<()> {
        let to = match (self.v6, destination.ip()) {
            (true, IpAddr::V4(ip)) => {
                SocketAddr::new(ip.to_ipv6_mapped().into(), destination.port())
            }
            _ => destination,
        };
        self.sock.send_to(&packet, to).await.map(drop)
    }

    fn local_addr(&self) -> io::Result<Option<SocketAddr>> {
        self.sock.local_addr().map(Some)
    }
}

impl UdpRecv for Udp {
    type RecvManyBuf = ();

    async fn recv_from(&mut self, pool: &mut PacketBufPool) -> io::Result<(Packet, SocketAddr)> {
        let mut packet = pool.get();
        let (n, from) = self.sock.recv_from(&mut packet).await?;
        packet.truncate(n);
        let from = match from.ip() {
            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::new(v4.into(), from.port()),
                None => from,
            },
            IpAddr::V4(_) => from,
        };
        Ok((packet, from))
    }
}
