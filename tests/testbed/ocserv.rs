//! An OpenConnect (AnyConnect protocol) server for the OpenConnect script hop's test, alone on an
//! extra host of the services LAN: Debian's `ocserv` on TCP 4443 (no DTLS), a self-signed P-256
//! certificate made now (the client pins it), one user with a password (`ocpasswd`), handing
//! out 10.89.0.0/24 and the testbed's DNS server, with NAT (masquerade on `eth0`), so the web
//! host sees the server host's address. Started by [`Testbed::start_ocserv`]; stopped and
//! removed on drop.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cmd;
use crate::daemon::Daemon;
use crate::hosts::{Host, Pool};
use crate::net::DNS_V4;
use crate::Testbed;

/// The server's TCP port.
pub const OCSERV_PORT: u16 = 4443;
const USER: &str = "ocuser";
const PASSWORD: &str = "oc secret";

/// A running ocserv on its own host; killed and removed on drop.
#[derive(Debug)]
pub struct OcservServer {
    daemon: Daemon,
    host: Host,
    dir: PathBuf,
    pin: String,
}

impl OcservServer {
    /// The address the web host sees through the VPN (the server host's).
    pub fn exit_v4(&self) -> Ipv4Addr {
        self.host.v4
    }

    /// The `destination` a client gives: `https://ADDRESS:PORT/`.
    pub fn destination(&self) -> String {
        format!("https://{}:{OCSERV_PORT}/", self.host.v4)
    }

    /// The certificate's pin for openconnect's `--servercert`.
    pub fn pin(&self) -> &str {
        &self.pin
    }

    /// The user and password the server accepts.
    pub fn user(&self) -> (&'static str, &'static str) {
        (USER, PASSWORD)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// Its working directory (configuration, certificate, password file).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

impl Testbed {
    /// Start an ocserv (see the module docs); panics with its log if it does not come up.
    pub fn start_ocserv(&self) -> OcservServer {
        let host = self.add_host("ocserv", Pool::Proxy, true);
        let dir = host.dir.clone();
        let p = |name: &str| dir.join(name).display().to_string();
        cmd::run(
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:prime256v1", "-nodes"])
                .args(["-keyout", &p("key.pem"), "-out", &p("cert.pem")])
                .args(["-days", "2", "-subj", &format!("/CN={}", host.v4)]),
        );
        let pin = cmd::run(Command::new("sh").arg("-c").arg(format!(
            "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der \
             | openssl dgst -sha256 -binary | base64",
            p("cert.pem")
        )));
        let pin = format!("pin-sha256:{}", pin.trim());
        let o = cmd::output(
            Command::new("ocpasswd").args(["-c", &p("passwd"), USER]),
            Some(&format!("{PASSWORD}\n{PASSWORD}\n")),
        );
        assert!(o.status.success(), "ocpasswd: {o:?}");
        host.masquerade_out();
        let conf = format!(
            "auth = \"plain[passwd={passwd}]\"\ntcp-port = {OCSERV_PORT}\n\
             run-as-user = nobody\nrun-as-group = nogroup\nsocket-file = {sock}\n\
             server-cert = {cert}\nserver-key = {key}\nisolate-workers = false\n\
             max-clients = 8\nkeepalive = 32400\ndpd = 90\ntry-mtu-discovery = false\n\
             device = vpns\nipv4-network = 10.89.0.0/24\ndns = {DNS_V4}\n\
             use-occtl = false\npid-file = {pid}\ncisco-client-compat = true\n",
            passwd = p("passwd"),
            sock = p("ocserv.sock"),
            cert = p("cert.pem"),
            key = p("key.pem"),
            pid = p("ocserv.pid"),
        );
        std::fs::write(dir.join("ocserv.conf"), conf).expect("write ocserv.conf");
        let argv: Vec<String> = ["ocserv", "-f", "-c", &p("ocserv.conf")]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let daemon = Daemon::spawn(&host.netns, "ocserv", &argv, &dir.join("ocserv.log"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !daemon.log().contains("listening (TCP)") {
            if let Some(status) = daemon.exited() {
                panic!("ocserv exited ({status}):\n{}", daemon.log());
            }
            assert!(
                Instant::now() < deadline,
                "ocserv not up after 20 s:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        OcservServer {
            daemon,
            host,
            dir,
            pin,
        }
    }
}
