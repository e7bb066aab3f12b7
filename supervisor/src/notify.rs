//! systemd readiness (`Type=notify`): when `NOTIFY_SOCKET` is set, the
//! supervisor connects to it while it still runs as the caller (it drops to
//! a service uid before the chain is up; a datagram socket connected early
//! keeps its right to send) and sends `READY=1` once the chain, the sandbox
//! and the `post_up` hooks are up. The application never sees the variable
//! (`sandbox.environment` strips it).

use std::io;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// A connection to the service manager, if pallium runs under one.
#[derive(Debug)]
pub(crate) struct Notifier(UnixDatagram);

impl Notifier {
    /// Connect to `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
    /// namespace); None when it is unset or empty.
    pub(crate) fn from_env() -> io::Result<Option<Self>> {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        let path = path.to_string_lossy().into_owned();
        let addr = match path.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
            None => SocketAddr::from_pathname(&path)?,
        };
        let sock = UnixDatagram::unbound()?;
        sock.connect_addr(&addr)?;
        Ok(Some(Self(sock)))
    }

    /// Tell the service manager the session is up.
    pub(crate) fn ready(&self, status: &str) -> io::Result<()> {
        let msg = format!("READY=1\nSTATUS={}\n", status.replace('\n', " "));
        self.0.send(msg.as_bytes()).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_reaches_the_socket() {
        let dir = std::env::temp_dir().join(format!("pallium-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let sock = UnixDatagram::unbound().unwrap();
        sock.connect(&path).unwrap();
        Notifier(sock).ready("session 0 of work up").unwrap();
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=session 0 of work up\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
