//! The web host's UDP echo server (port 7, both families): a thread of the test process whose
//! socket lives in the web namespace, sending every datagram back and recording who sent it, so
//! UDP-through-a-proxy tests see that a reply came back and which address the web host saw.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::net::in_netns;

/// A running echo server; stopped on drop.
#[derive(Debug)]
pub(crate) struct UdpEcho {
    socket: Arc<UdpSocket>,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    /// Binds `[::]:port` (dual-stack) in `netns` and serves it from a thread.
    pub(crate) fn start(netns: &str, port: u16) -> UdpEcho {
        let socket = in_netns(netns, move || UdpSocket::bind(("::", port)))
            .unwrap_or_else(|e| panic!("udp echo: bind [::]:{port} in {netns}: {e}"));
        let socket = Arc::new(socket);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (socket, seen, stop) = (socket.clone(), seen.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("udp-{netns}"))
                .spawn(move || echo_loop(&socket, &seen, &stop))
                .expect("spawn udp echo thread")
        };
        UdpEcho {
            socket,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Source addresses of the datagrams echoed so far, in order.
    pub(crate) fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // On Linux, shutdown() of an unconnected UDP socket fails (ENOTCONN) but still wakes a
        // blocked recvfrom(), which then returns 0 bytes.
        let _ =
            nix::sys::socket::shutdown(self.socket.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn echo_loop(socket: &UdpSocket, seen: &Mutex<Vec<String>>, stop: &AtomicBool) {
    let mut buf = [0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        seen.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(unmapped(peer));
        let _ = socket.send_to(&buf[..n], peer);
    }
}

/// The peer's address as a user would write it (IPv4 arrives as `::ffff:a.b.c.d`).
fn unmapped(peer: SocketAddr) -> String {
    match peer {
        SocketAddr::V6(v6) => v6
            .ip()
            .to_ipv4_mapped()
            .map_or_else(|| v6.ip().to_string(), |v4| v4.to_string()),
        SocketAddr::V4(v4) => v4.ip().to_string(),
    }
}
