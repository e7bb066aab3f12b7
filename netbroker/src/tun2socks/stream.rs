//! A connection to the proxy: TCP, or a unix stream socket when the proxy
//! is a hop daemon of the session's listening on a path only the session can
//! reach (tor's `SocksPort unix:`, ssh's `-D PATH`; the engine process gets
//! that socket connected from the netbroker). The engine's dials,
//! relays and DNS-over-TCP pool hold a [`ProxyStream`] and never ask which.

#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};

/// One non-blocking connect to a unix stream socket: it completes at once or
/// fails (EAGAIN: the daemon's backlog is full). The netbroker's dials for
/// an engine, and an engine on a thread of the netbroker (tests, benchmarks).
pub fn connect_unix(addr: &UnixAddr) -> nix::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    connect(fd.as_raw_fd(), addr)?;
    Ok(fd)
}

/// A stream to the proxy.
#[derive(Debug)]
pub enum ProxyStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl ProxyStream {
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ProxyStream::Tcp(s) => s.peek(buf),
            // std has no stable UnixStream::peek: recv(MSG_PEEK).
            ProxyStream::Unix(s) => {
                nix::sys::socket::recv(s.as_raw_fd(), buf, nix::sys::socket::MsgFlags::MSG_PEEK)
                    .map_err(io::Error::from)
            }
        }
    }

    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            ProxyStream::Tcp(s) => s.take_error(),
            ProxyStream::Unix(s) => s.take_error(),
        }
    }

    /// Ok once a non-blocking connect has completed (ENOTCONN before).
    pub fn connected(&self) -> io::Result<()> {
        match self {
            ProxyStream::Tcp(s) => s.peer_addr().map(drop),
            ProxyStream::Unix(s) => s.peer_addr().map(drop),
        }
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            ProxyStream::Tcp(s) => s.shutdown(how),
            ProxyStream::Unix(s) => s.shutdown(how),
        }
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            ProxyStream::Tcp(s) => s.set_nonblocking(on),
            ProxyStream::Unix(s) => s.set_nonblocking(on),
        }
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            ProxyStream::Tcp(s) => s.set_read_timeout(t),
            ProxyStream::Unix(s) => s.set_read_timeout(t),
        }
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            ProxyStream::Tcp(s) => s.set_write_timeout(t),
            ProxyStream::Unix(s) => s.set_write_timeout(t),
        }
    }

    /// The peer address of a TCP stream (a SOCKS5 relay given as
    /// 0.0.0.0 is at the proxy's own address).
    pub fn peer_inet(&self) -> io::Result<SocketAddr> {
        match self {
            ProxyStream::Tcp(s) => s.peer_addr(),
            ProxyStream::Unix(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a proxy on a unix socket carries no UDP",
            )),
        }
    }

    /// The local address of a TCP stream (a SOCKS5 UDP association binds
    /// beside it); a unix-socket proxy carries no UDP.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            ProxyStream::Tcp(s) => s.local_addr(),
            ProxyStream::Unix(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a proxy on a unix socket carries no UDP",
            )),
        }
    }
}

impl Read for &ProxyStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ProxyStream::Tcp(s) => (&*s).read(buf),
            ProxyStream::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for &ProxyStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ProxyStream::Tcp(s) => (&*s).write(buf),
            ProxyStream::Unix(s) => (&*s).write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for ProxyStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for ProxyStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for ProxyStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            ProxyStream::Tcp(s) => s.as_fd(),
            ProxyStream::Unix(s) => s.as_fd(),
        }
    }
}

impl AsRawFd for ProxyStream {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unix_stream_reads_writes_and_peeks() {
        let (a, b) = UnixStream::pair().unwrap();
        let a = ProxyStream::Unix(a);
        (&a).write_all(b"hello").unwrap();
        let mut b = ProxyStream::Unix(b);
        let mut buf = [0u8; 5];
        assert_eq!(b.peek(&mut buf).unwrap(), 5);
        b.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        assert!(b.connected().is_ok());
        assert!(b.local_addr().is_err());
    }
}
