//! A userspace WireGuard server for the wireguard hop's tests: wireguard-go on an extra host of
//! the services LAN (`wireguard.pallium.test`, UDP 51820), configured with `wg`, keys made at
//! test time (`wg genkey`), masquerading its clients so the web host sees the server's address.
//! wireguard-go's control sockets live in /var/run/wireguard, shared by every namespace: the
//! interface name embeds the test process's pid and a counter. Stopped and removed on drop.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::cmd;
use crate::daemon::Daemon;
use crate::hosts::{Host, Pool};
use crate::Testbed;

/// The server's UDP port.
pub const WG_PORT: u16 = 51820;

/// A running wireguard-go server with one client peer.
#[derive(Debug)]
pub struct WgServer {
    daemon: Daemon,
    host: Host,
    ifname: String,
    client_private: String,
    server_public: String,
}

impl WgServer {
    /// Its name in the test zone, `wireguard.pallium.test`.
    pub fn name(&self) -> &str {
        self.host
            .fqdn
            .as_deref()
            .expect("wireguard hosts have names")
    }
    /// The address the web host sees for an IPv4 connection through the tunnel.
    pub fn exit_v4(&self) -> Ipv4Addr {
        self.host.v4
    }
    /// The address the web host sees for an IPv6 connection through the tunnel.
    pub fn exit_v6(&self) -> Ipv6Addr {
        self.host.v6
    }
    /// The server host's namespace.
    pub fn netns(&self) -> &str {
        &self.host.netns
    }
    /// The server's public key (base64).
    pub fn public_key(&self) -> &str {
        &self.server_public
    }
    /// A private key the server accepts as its client (base64).
    pub fn client_private_key(&self) -> &str {
        &self.client_private
    }
    /// A wg-quick file for the client: addresses 10.77.0.2/32 and fd77::2/128, everything
    /// through the tunnel, DNS `dns`, the endpoint by name.
    pub fn client_config(&self, dns: &str) -> String {
        format!(
            "[Interface]\nPrivateKey = {}\nAddress = 10.77.0.2/32, fd77::2/128\nDNS = {dns}\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = 0.0.0.0/0, ::/0\nEndpoint = {}:{WG_PORT}\n",
            self.client_private,
            self.server_public,
            self.name()
        )
    }
    /// Kills wireguard-go with SIGKILL (its host and addresses stay).
    pub fn kill(&self) {
        self.daemon.kill();
    }
    /// The server's interface name (unique per test process).
    pub fn ifname(&self) -> &str {
        &self.ifname
    }
    /// Its state directory.
    pub fn dir(&self) -> PathBuf {
        self.host.dir.clone()
    }
}

static COUNT: AtomicU32 = AtomicU32::new(0);

/// `wg genkey` and `wg pubkey`.
pub fn wg_keypair() -> (String, String) {
    let private = cmd::run(Command::new("wg").arg("genkey")).trim().to_owned();
    let out = cmd::output(Command::new("wg").arg("pubkey"), Some(&private));
    assert!(out.status.success(), "wg pubkey failed");
    (
        private,
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    )
}

impl Testbed {
    /// Starts wireguard-go on a new host (`wireguard.pallium.test`) with a client peer whose
    /// keys are made now, forwarding and masquerading the tunnel's addresses (IPv4 and IPv6).
    pub fn start_wireguard(&self) -> WgServer {
        let host = self.add_host("wireguard", Pool::Proxy, true);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let ifname = format!("wgs{}x{n}", std::process::id());
        let (server_private, server_public) = wg_keypair();
        let (client_private, client_public) = wg_keypair();
        let log = host.dir.join("wireguard-go.log");
        let argv: Vec<String> = ["wireguard-go", "-f", &ifname].map(String::from).to_vec();
        let daemon = Daemon::spawn(&host.netns, "wireguard-go", &argv, &log);
        let deadline = Instant::now() + Duration::from_secs(15);
        let sock = PathBuf::from(format!("/var/run/wireguard/{ifname}.sock"));
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "wireguard-go did not start: {}",
                daemon.log()
            );
            assert!(
                daemon.exited().is_none(),
                "wireguard-go exited: {}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let key = host.dir.join("server.key");
        std::fs::write(&key, &server_private).expect("write server key");
        let ns = &host.netns;
        cmd::run(&mut cmd::netns_exec(
            ns,
            [
                "wg",
                "set",
                &ifname,
                "listen-port",
                &WG_PORT.to_string(),
                "private-key",
                &key.to_string_lossy(),
                "peer",
                &client_public,
                "allowed-ips",
                "10.77.0.2/32,fd77::2/128",
            ],
        ));
        cmd::ip_batch(
            Some(ns),
            &format!(
                "addr add 10.77.0.1/24 dev {ifname}\naddr add fd77::1/64 dev {ifname} nodad\n\
                 link set {ifname} up\n"
            ),
            false,
        );
        host.masquerade_out();
        WgServer {
            daemon,
            host,
            ifname,
            client_private,
            server_public,
        }
    }
}

impl Drop for WgServer {
    fn drop(&mut self) {
        self.daemon.kill();
        // A killed wireguard-go leaves its control socket behind.
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.ifname));
    }
}
