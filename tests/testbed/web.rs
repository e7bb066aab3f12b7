//! The web host's HTTP server: a thread of the test process whose listening socket lives in the
//! web namespace, answering every request with the client's address. In-process, so there is no
//! server process to start, wait for, or leave behind.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::net::in_netns;

/// A running web server; stopped on drop.
#[derive(Debug)]
pub(crate) struct WebServer {
    listener: Arc<TcpListener>,
    seen: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl WebServer {
    /// Binds `[::]:port` (dual-stack) in `netns` and serves it from a thread.
    pub(crate) fn start(netns: &str, port: u16) -> WebServer {
        let listener = in_netns(netns, move || TcpListener::bind(("::", port)))
            .unwrap_or_else(|e| panic!("web server: bind [::]:{port} in {netns}: {e}"));
        let listener = Arc::new(listener);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (listener, seen) = (listener.clone(), seen.clone());
            std::thread::Builder::new()
                .name(format!("web-{netns}"))
                .spawn(move || accept_loop(&listener, &seen))
                .expect("spawn web server thread")
        };
        WebServer {
            listener,
            seen,
            thread: Some(thread),
        }
    }

    /// Client addresses of the requests answered so far, in order.
    pub(crate) fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        // shutdown() on a listening socket makes a blocked accept() return (EINVAL) on Linux.
        let _ =
            nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, seen: &Arc<Mutex<Vec<String>>>) {
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(c) => c,
            // Shut down (EINVAL) or a broken socket: either way we are done.
            Err(e) if e.kind() != std::io::ErrorKind::Interrupted => return,
            Err(_) => continue,
        };
        let seen = seen.clone();
        // One thread per connection so a client that never sends a request blocks nobody.
        let _ = std::thread::Builder::new()
            .name("web-conn".into())
            .spawn(move || serve(stream, peer, &seen));
    }
}

fn serve(mut stream: TcpStream, peer: SocketAddr, seen: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 64 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let client = client_addr(peer).to_string();
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(client.clone());
    let body = format!("{client}\n");
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

/// The client's address as a user would write it: IPv4 clients of the dual-stack socket arrive
/// as `::ffff:a.b.c.d`.
fn client_addr(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addr_unmaps_ipv4() {
        let peer: SocketAddr = "[::ffff:192.0.2.2]:4000".parse().unwrap();
        assert_eq!(client_addr(peer).to_string(), "192.0.2.2");
        let peer: SocketAddr = "[fd00:db8::2]:4000".parse().unwrap();
        assert_eq!(client_addr(peer).to_string(), "fd00:db8::2");
    }
}
