//! A tunnel server for script-hop tests: wireguard-go on a host of the services LAN, with
//! forwarding and masquerading, so the web host sees the peer's address for whatever comes out
//! of the tunnel. Its interface name embeds the test process's pid and a counter
//! (wireguard-go's control sockets live in `/var/run/wireguard`, shared by every namespace);
//! it is stopped (and its socket removed) when the handle drops.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::cmd;
use crate::daemon::Daemon;
use crate::hosts::{Host, Pool};
use crate::net::Testbed;

/// The tunnel's addresses: the server's, and the one a client takes.
pub const WG_SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const WG_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
use crate::wireguard::WG_PORT;

/// A running wireguard-go server and the client's keys for it.
#[derive(Debug)]
pub struct WgPeer {
    daemon: Daemon,
    host: Host,
    ifname: String,
    public_key: String,
    client_key: PathBuf,
}

impl WgPeer {
    /// The server's public key.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// A file holding the client's private key (readable by root only).
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// `address:port` of the server on the services LAN.
    pub fn endpoint(&self) -> String {
        format!("{}:{WG_PORT}", self.host.v4)
    }

    /// The address the web host sees for traffic out of the tunnel.
    pub fn exit_v4(&self) -> Ipv4Addr {
        self.host.v4
    }

    /// The server's interface name (unique to this test process).
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Where the server last heard its client from (`address:port`), or what `wg show` said.
    pub fn client_endpoint(&self) -> Result<String, String> {
        let out = cmd::netns_exec(&self.host.netns, ["wg", "show", &self.ifname, "dump"])
            .output()
            .expect("wg show");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // dump: the interface's line, then per peer: key, psk, endpoint, …
        match text.lines().nth(1).and_then(|l| l.split('\t').nth(2)) {
            Some(ep) if out.status.success() && ep != "(none)" => Ok(ep.to_string()),
            _ => Err(format!(
                "wg show {} dump: {}: {text}{}",
                self.ifname,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    }

    /// Whether wireguard-go still runs.
    pub fn is_running(&self) -> bool {
        self.daemon.exited().is_none()
    }
}

impl Drop for WgPeer {
    fn drop(&mut self) {
        self.daemon.kill();
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.ifname));
    }
}

/// A unique interface name for this test process: `<prefix><pid><n>`, at most 15 bytes.
pub fn unique_ifname(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{}x{n}", std::process::id());
    assert!(name.len() <= 15, "interface name {name} is too long");
    name
}

fn wg_key(stdin: Option<&str>, arg: &str) -> String {
    let out = cmd::output(Command::new("wg").arg(arg), stdin);
    assert!(out.status.success(), "wg {arg}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Testbed {
    /// Starts wireguard-go on a new host (198.51.100.10 and up), listening on [`WG_PORT`] with
    /// [`WG_SERVER`], one peer (the client, [`WG_CLIENT`]) whose private key is in
    /// [`WgPeer::client_key`]; what comes out of the tunnel is masqueraded to the host's
    /// address.
    pub fn start_wireguard_peer(&self) -> WgPeer {
        let host = self.add_host("wgpeer", Pool::Proxy, false);
        let ifname = unique_ifname("pws");
        let server_key = wg_key(None, "genkey");
        let public_key = wg_key(Some(&server_key), "pubkey");
        let client_priv = wg_key(None, "genkey");
        let client_pub = wg_key(Some(&client_priv), "pubkey");
        let server_key_file = host.dir.join("server.key");
        let client_key = host.dir.join("client.key");
        std::fs::write(&server_key_file, &server_key).unwrap();
        std::fs::write(&client_key, &client_priv).unwrap();
        let log = host.dir.join("wireguard-go.log");
        let argv: Vec<String> = ["wireguard-go", "-f", &ifname]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let daemon = Daemon::spawn(&host.netns, "wireguard-go", &argv, &log);
        let sock = PathBuf::from(format!("/var/run/wireguard/{ifname}.sock"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !sock.exists() {
            assert!(
                daemon.exited().is_none() && std::time::Instant::now() < deadline,
                "wireguard-go never made {}: {}",
                sock.display(),
                daemon.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let ns = &host.netns;
        let set = cmd::netns_exec(
            ns,
            [
                "wg",
                "set",
                &ifname,
                "listen-port",
                &WG_PORT.to_string(),
                "private-key",
                &server_key_file.to_string_lossy(),
                "peer",
                &client_pub,
                "allowed-ips",
                &format!("{WG_CLIENT}/32"),
            ],
        )
        .output()
        .expect("wg set");
        assert!(set.status.success(), "wg set: {set:?}");
        cmd::ip_batch(
            Some(ns),
            &format!("addr add {WG_SERVER}/24 dev {ifname}\nlink set {ifname} up\n"),
            false,
        );
        host.masquerade_out();
        WgPeer {
            daemon,
            host,
            ifname,
            public_key,
            client_key,
        }
    }
}
