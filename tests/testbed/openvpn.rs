//! An OpenVPN server for the VPN hop tests, alone on an extra host of the services LAN
//! (`openvpn.pallium.test`): one `openvpn` on UDP 1194 and one on TCP 443, both requiring a
//! client certificate *and* a username/password (checked by an `--auth-user-pass-verify`
//! script), pushing `redirect-gateway def1 ipv6`, the testbed's DNS server and an IPv6 address,
//! with NAT (masquerade on `eth0`), so the web host sees the server host's address. The PKI (a
//! CA, a server and a client certificate, P-256) is made with openssl once per test process.
//! Started by [`Testbed::start_openvpn`]; stopped and removed on drop.

use std::fs::Permissions;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::cmd;
use crate::daemon::Daemon;
use crate::hosts::{Host, Pool};
use crate::net::DNS_V4;
use crate::{Auth, Testbed};

/// The UDP server's port.
pub const OPENVPN_UDP_PORT: u16 = 1194;
/// The TCP server's port.
pub const OPENVPN_TCP_PORT: u16 = 443;

const USER: &str = "vpnuser";
const PASSWORD: &str = "vpn \"pass\\word";

/// Which of the server's transports a client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VpnProto {
    /// UDP, port 1194.
    Udp,
    /// TCP, port 443.
    Tcp,
}

/// A running OpenVPN server (UDP and TCP) on its own host; killed and removed on drop.
#[derive(Debug)]
pub struct OpenvpnServer {
    udp: Daemon,
    tcp: Daemon,
    host: Host,
    dir: PathBuf,
}

impl OpenvpnServer {
    /// The address the web host sees for IPv4 through the VPN (the server host's).
    pub fn exit_v4(&self) -> Ipv4Addr {
        self.host.v4
    }

    /// The address the web host sees for IPv6 through the VPN.
    pub fn exit_v6(&self) -> Ipv6Addr {
        self.host.v6
    }

    /// The server's transport address for `proto`.
    pub fn addr(&self, proto: VpnProto) -> SocketAddr {
        let port = match proto {
            VpnProto::Udp => OPENVPN_UDP_PORT,
            VpnProto::Tcp => OPENVPN_TCP_PORT,
        };
        SocketAddr::new(self.host.v4.into(), port)
    }

    /// The username and password the server accepts (the password has a space, a quote and a
    /// backslash, which the management interface must carry escaped).
    pub fn auth(&self) -> Auth {
        Auth::new(USER, PASSWORD)
    }

    /// A client configuration (inline CA, certificate and key; `remote` the server's IPv4
    /// address) without `auth-user-pass`.
    pub fn client_config_text(&self, proto: VpnProto) -> String {
        let pki = pki();
        let (p, port) = match proto {
            VpnProto::Udp => ("udp", OPENVPN_UDP_PORT),
            VpnProto::Tcp => ("tcp-client", OPENVPN_TCP_PORT),
        };
        format!(
            "client\ndev tun\nproto {p}\nremote {} {port}\nnobind\nremote-cert-tls server\n\
             verb 3\n<ca>\n{}</ca>\n<cert>\n{}</cert>\n<key>\n{}</key>\n",
            self.host.v4,
            read(&pki.join("ca.crt")),
            read(&pki.join("client.crt")),
            read(&pki.join("client.key")),
        )
    }

    /// [`OpenvpnServer::client_config_text`] in a file that the test user can read too.
    pub fn client_config(&self, proto: VpnProto) -> PathBuf {
        self.config_file(
            &format!("client-{proto:?}.ovpn"),
            &self.client_config_text(proto),
        )
    }

    /// Writes `text` to `name` in a directory every user may read (0644 files, 0755 path).
    pub fn config_file(&self, name: &str, text: &str) -> PathBuf {
        let dir = self.dir.join("clients");
        std::fs::create_dir_all(&dir).expect("create the client config dir");
        for d in dir
            .ancestors()
            .take_while(|d| d.starts_with(std::env::temp_dir()) && *d != std::env::temp_dir())
        {
            std::fs::set_permissions(d, Permissions::from_mode(0o755)).expect("chmod");
        }
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write the client config");
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).expect("chmod");
        path
    }

    /// The server host's namespace.
    pub fn netns(&self) -> &str {
        &self.host.netns
    }

    /// Kills both servers (SIGKILL): clients lose their tunnel; the host stays.
    pub fn kill(&self) {
        self.udp.kill();
        self.tcp.kill();
    }

    /// Both servers' logs so far (client connections show as `<ip>:<port> … Peer Connection`).
    pub fn log(&self) -> String {
        format!("{}{}", self.udp.log(), self.tcp.log())
    }
}

impl Testbed {
    /// Starts the OpenVPN server host (UDP 1194 and TCP 443) and waits until both are up.
    pub fn start_openvpn(&self) -> OpenvpnServer {
        let host = self.add_host("openvpn", Pool::Proxy, true);
        let dir = host.dir.clone();
        let pki = pki();
        let verify = dir.join("verify.sh");
        std::fs::write(
            &verify,
            format!(
                "#!/bin/sh\n[ \"$(sed -n 1p \"$1\")\" = '{USER}' ] && \
                 [ \"$(sed -n 2p \"$1\")\" = '{}' ]\n",
                PASSWORD.replace('\'', "'\\''")
            ),
        )
        .expect("write verify.sh");
        std::fs::set_permissions(&verify, Permissions::from_mode(0o755)).expect("chmod");
        host.masquerade_out();
        let start = |proto: &str, port: u16, dev: &str, net: u8| {
            let conf = dir.join(format!("server-{dev}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "dev {dev}\ndev-type tun\nproto {proto}\nport {port}\ntopology subnet\n\
                     server 10.{net}.0.0 255.255.255.0\nserver-ipv6 fd00:{net}::/64\n\
                     ca {0}/ca.crt\ncert {0}/server.crt\nkey {0}/server.key\ndh none\n\
                     keepalive 1 4\npush \"redirect-gateway def1 ipv6\"\n\
                     push \"dhcp-option DNS {DNS_V4}\"\nscript-security 2\n\
                     auth-user-pass-verify {1} via-file\ntmp-dir {2}\nverb 3\n",
                    pki.display(),
                    verify.display(),
                    dir.display()
                ),
            )
            .expect("write the server config");
            let log = dir.join(format!("{dev}.log"));
            let argv = vec![
                "openvpn".to_owned(),
                "--config".to_owned(),
                conf.display().to_string(),
            ];
            Daemon::spawn(&host.netns, &format!("openvpn ({proto})"), &argv, &log)
        };
        let udp = start("udp4", OPENVPN_UDP_PORT, "tunu", 8);
        let tcp = start("tcp4-server", OPENVPN_TCP_PORT, "tunt", 9);
        for d in [&udp, &tcp] {
            wait_ready(d);
        }
        OpenvpnServer {
            udp,
            tcp,
            host,
            dir,
        }
    }
}

/// Waits until an openvpn server says it is up; panics with its log otherwise.
fn wait_ready(d: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if d.log().contains("Initialization Sequence Completed") {
            return;
        }
        if let Some(status) = d.exited() {
            panic!("openvpn server exited ({status}):\n{}", d.log());
        }
        assert!(
            Instant::now() < deadline,
            "openvpn server not up after 20 s:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The test process's PKI: `ca.crt`, `server.{crt,key}`, `client.{crt,key}`, made once (in
/// the state root, named for this process so that stale ones are removed).
fn pki() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = crate::names::state_root().join(format!("pt{}-openvpn-pki", std::process::id()));
        let tmp = dir.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).expect("create the PKI dir");
        let p = |name: &str| tmp.join(name).display().to_string();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        cmd::run(
            Command::new("openssl")
                .args(["req", "-x509"])
                .args(ec)
                .args(["-keyout", &p("ca.key"), "-out", &p("ca.crt")])
                .args(["-days", "3", "-subj", "/CN=pallium test CA"]),
        );
        for (name, eku) in [("server", "serverAuth"), ("client", "clientAuth")] {
            let ext = p(&format!("{name}.ext"));
            std::fs::write(
                &ext,
                format!(
                    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyAgreement\n\
                     extendedKeyUsage={eku}\n"
                ),
            )
            .expect("write ext");
            let (key, csr, crt) = (
                p(&format!("{name}.key")),
                p(&format!("{name}.csr")),
                p(&format!("{name}.crt")),
            );
            cmd::run(
                Command::new("openssl")
                    .arg("req")
                    .args(ec)
                    .args(["-keyout", &key, "-out", &csr, "-subj"])
                    .arg(format!("/CN={name}")),
            );
            cmd::run(Command::new("openssl").args([
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &p("ca.crt"),
                "-CAkey",
                &p("ca.key"),
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "3",
                "-extfile",
                &ext,
            ]));
        }
        // Another test thread may have finished first: either copy is good.
        if std::fs::rename(&tmp, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        dir
    })
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
