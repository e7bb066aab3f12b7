//! Proxy servers for the hop tests, each alone on an extra host of the services LAN so that the
//! web host sees which one a connection left through: microsocks and dante (SOCKS5), tinyproxy
//! (HTTP CONNECT) and sshd (for `ssh -D`). Started by [`Testbed::start_socks`],
//! [`Testbed::start_http_proxy`] and [`Testbed::start_sshd`]; stopped and removed on drop.

use std::fmt::Write as _;
use std::fs::Permissions;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Deref;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd;
use crate::daemon::Daemon;
use crate::hosts::{Host, Pool};
use crate::user::{proxy_account, PROXY_PASSWORD};
use crate::{TestUser, Testbed};

const SOCKS_PORT: u16 = 1080;
const HTTP_PORT: u16 = 8080;
const SSH_PORT: u16 = 22;

/// A username and password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The username.
    pub user: String,
    /// The password.
    pub pass: String,
}

impl Auth {
    /// `user` / `pass`.
    pub fn new(user: &str, pass: &str) -> Auth {
        Auth {
            user: user.to_owned(),
            pass: pass.to_owned(),
        }
    }

    /// The same user with another password, for "wrong credentials are refused" tests.
    pub fn wrong(&self) -> Auth {
        Auth::new(&self.user, &format!("{}-wrong", self.pass))
    }
}

/// Which SOCKS5 server [`Testbed::start_socks`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Socks {
    /// microsocks without authentication (TCP only).
    Microsocks,
    /// microsocks requiring these credentials (TCP only).
    MicrosocksAuth(Auth),
    /// dante with username/password authentication and UDP ASSOCIATE. Dante checks system
    /// accounts, so the credentials are fixed: the account `pallium-proxy`, created on first
    /// use ([`Proxy::auth`] returns them).
    Dante,
    /// dante without authentication, UDP ASSOCIATE enabled.
    DanteNoAuth,
}

/// A running proxy server on its own host; the server is killed and the host removed on drop.
///
/// Every server listens on all of its host's addresses (IPv4 and IPv6) and nowhere else, and
/// connects out from them: a connection through it reaches the web host from [`Proxy::exit_v4`]
/// or [`Proxy::exit_v6`].
#[derive(Debug)]
pub struct Proxy {
    daemon: Daemon,
    host: Host,
    kind: &'static str,
    port: u16,
    auth: Option<Auth>,
    log: PathBuf,
}

impl Proxy {
    /// The server's IPv4 address and port, e.g. `198.51.100.10:1080`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host.v4.into(), self.port)
    }

    /// The server's IPv6 address and port, e.g. `[fd00:db8:2::10]:1080`.
    pub fn addr_v6(&self) -> SocketAddr {
        SocketAddr::new(self.host.v6.into(), self.port)
    }

    /// The port the server listens on (1080 SOCKS, 8080 HTTP, 22 SSH).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its DNS name in the test zone (A and AAAA), e.g. `microsocks.pallium.test`,
    /// `dante2.pallium.test`, `tinyproxy.pallium.test`, `sshd.pallium.test`.
    pub fn name(&self) -> &str {
        self.host.fqdn.as_deref().expect("proxy hosts have names")
    }

    /// The address the web host sees for an IPv4 connection through this server.
    pub fn exit_v4(&self) -> Ipv4Addr {
        self.host.v4
    }

    /// The address the web host sees for an IPv6 connection through this server.
    pub fn exit_v6(&self) -> Ipv6Addr {
        self.host.v6
    }

    /// The credentials the server requires, if any.
    pub fn auth(&self) -> Option<&Auth> {
        self.auth.as_ref()
    }

    /// The server host's namespace.
    pub fn netns(&self) -> &str {
        &self.host.netns
    }

    /// A proxy URL for curl's `-x` / `ALL_PROXY`: `socks5h://user:pass@198.51.100.10:1080`
    /// (names resolved by the proxy) or `http://user:pass@198.51.100.12:8080`; `None` for sshd.
    pub fn url(&self) -> Option<String> {
        let scheme = match self.kind {
            "microsocks" | "dante" => "socks5h",
            "tinyproxy" => "http",
            _ => return None,
        };
        let creds = self
            .auth
            .as_ref()
            .map(|a| format!("{}:{}@", a.user, a.pass))
            .unwrap_or_default();
        Some(format!("{scheme}://{creds}{}", self.addr()))
    }

    /// Kills the server (and its workers) with SIGKILL, as a kill-switch test needs: its host
    /// and addresses stay, so connections to it are refused from now on.
    pub fn kill(&self) {
        self.daemon.kill();
    }

    /// Whether the server still runs.
    pub fn is_running(&self) -> bool {
        self.daemon.exited().is_none()
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// The server's log so far (its stdout and stderr, or its own log file).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A running sshd on its own host that lets [`SshServer::user`] in with
/// [`SshServer::client_key`] only (no password, no keyboard-interactive); TCP forwarding (`-D`,
/// `-L`) allowed. Dereferences to its [`Proxy`] for the address, name, exit addresses and kill.
#[derive(Debug)]
pub struct SshServer {
    proxy: Proxy,
    client_key: PathBuf,
    known_hosts: PathBuf,
}

impl SshServer {
    /// The private key the server accepts: ed25519, no passphrase, made at test time, owned by
    /// the test user [`TestUser`] with mode 0600, so that both root and that user can use it
    /// (ssh refuses a key of its own user that others can read).
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// A known_hosts file (world-readable) with the server's host key under its name, IPv4 and
    /// IPv6 address, for `-o UserKnownHostsFile=… -o StrictHostKeyChecking=yes`.
    pub fn known_hosts(&self) -> &Path {
        &self.known_hosts
    }

    /// The account to log in as, `pallium-proxy`.
    pub fn user(&self) -> &str {
        crate::user::PROXY_USER
    }

    /// ssh client options that log in without any prompt: the key, the known hosts, BatchMode.
    pub fn ssh_options(&self) -> Vec<String> {
        [
            "BatchMode=yes".to_owned(),
            "IdentitiesOnly=yes".to_owned(),
            format!("IdentityFile={}", self.client_key.display()),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "GlobalKnownHostsFile=/dev/null".to_owned(),
            "StrictHostKeyChecking=yes".to_owned(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_owned(), o])
        .collect()
    }
}

impl Deref for SshServer {
    type Target = Proxy;

    fn deref(&self) -> &Proxy {
        &self.proxy
    }
}

impl Testbed {
    /// Starts a SOCKS5 server on a new host (198.51.100.10 and up) and waits until it listens
    /// on port 1080.
    pub fn start_socks(&self, which: Socks) -> Proxy {
        match which {
            Socks::Microsocks => self.microsocks(None),
            Socks::MicrosocksAuth(auth) => self.microsocks(Some(auth)),
            Socks::Dante => {
                let user = proxy_account();
                self.dante(Some(Auth::new(user, PROXY_PASSWORD)))
            }
            Socks::DanteNoAuth => self.dante(None),
        }
    }

    /// [`Socks::Microsocks`]: no authentication.
    pub fn start_microsocks(&self) -> Proxy {
        self.start_socks(Socks::Microsocks)
    }

    /// [`Socks::Dante`]: username/password (see [`Proxy::auth`]) and UDP ASSOCIATE.
    pub fn start_dante(&self) -> Proxy {
        self.start_socks(Socks::Dante)
    }

    /// Starts tinyproxy on a new host: CONNECT to any port and plain HTTP proxying, with HTTP
    /// basic authentication if `auth` is given; port 8080.
    pub fn start_http_proxy(&self, auth: Option<Auth>) -> Proxy {
        let host = self.add_host("tinyproxy", Pool::Proxy, true);
        let log = host.dir.join("tinyproxy.log");
        let conf = host.dir.join("tinyproxy.conf");
        // No ConnectPort line: CONNECT to every port. No Listen/Allow: all of the host's
        // addresses, every client.
        let mut text = format!(
            "Port {HTTP_PORT}\nTimeout 600\nMaxClients 200\nDisableViaHeader Yes\n\
             LogLevel Info\nLogFile \"{}\"\n",
            log.display()
        );
        if let Some(a) = &auth {
            let _ = writeln!(text, "BasicAuth {} {}", a.user, a.pass);
        }
        write(&conf, &text);
        let argv = strings(&["tinyproxy", "-d", "-c", &conf.to_string_lossy()]);
        self.run_proxy(host, "tinyproxy", HTTP_PORT, auth, &argv, log)
    }

    /// Starts sshd on a new host (port 22) with a host key and a client key made now.
    pub fn start_sshd(&self) -> SshServer {
        let user = proxy_account();
        let host = self.add_host("sshd", Pool::Proxy, true);
        let dir = host.dir.clone();
        let host_key = dir.join("ssh_host_ed25519_key");
        let client_key = dir.join("client_key");
        for (key, comment) in [(&host_key, "sshd"), (&client_key, "client")] {
            cmd::run(Command::new("ssh-keygen").args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                comment,
                "-f",
                &key.to_string_lossy(),
            ]));
        }
        let authorized = dir.join("authorized_keys");
        std::fs::copy(client_key.with_extension("pub"), &authorized).expect("authorized_keys");
        let host_pub = read(&host_key.with_extension("pub"));
        let known_hosts = dir.join("known_hosts");
        write(
            &known_hosts,
            &format!("{},{},{} {host_pub}", self_name(&host), host.v4, host.v6),
        );
        // The test user must reach the key: every directory on the way is world-searchable.
        let tu = TestUser::get();
        nix::unistd::chown(&client_key, Some(tu.uid().into()), Some(tu.gid().into()))
            .expect("chown client key");
        for d in dir
            .ancestors()
            .take_while(|d| d.starts_with(std::env::temp_dir()))
        {
            if d != std::env::temp_dir() {
                std::fs::set_permissions(d, Permissions::from_mode(0o755)).expect("chmod");
            }
        }
        // The privilege separation directory sshd insists on.
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let log = dir.join("sshd.log");
        let conf = dir.join("sshd_config");
        write(
            &conf,
            &format!(
                "ListenAddress 0.0.0.0\nListenAddress ::\nPort {SSH_PORT}\nHostKey {}\n\
                 PidFile none\nAuthorizedKeysFile {}\nPubkeyAuthentication yes\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nAllowTcpForwarding yes\nPermitRootLogin no\nAllowUsers {user}\n\
                 LogLevel VERBOSE\n",
                host_key.display(),
                authorized.display()
            ),
        );
        let argv = strings(&["/usr/sbin/sshd", "-D", "-e", "-f", &conf.to_string_lossy()]);
        let proxy = self.run_proxy(host, "sshd", SSH_PORT, None, &argv, log);
        SshServer {
            proxy,
            client_key,
            known_hosts,
        }
    }

    fn microsocks(&self, auth: Option<Auth>) -> Proxy {
        let host = self.add_host("microsocks", Pool::Proxy, true);
        let log = host.dir.join("microsocks.log");
        let mut argv = strings(&["microsocks", "-i", "::", "-p", &SOCKS_PORT.to_string()]);
        if let Some(a) = &auth {
            argv.extend(strings(&["-u", &a.user, "-P", &a.pass]));
        }
        self.run_proxy(host, "microsocks", SOCKS_PORT, auth, &argv, log)
    }

    fn dante(&self, auth: Option<Auth>) -> Proxy {
        let host = self.add_host("dante", Pool::Proxy, true);
        let log = host.dir.join("danted.log");
        let conf = host.dir.join("danted.conf");
        let method = if auth.is_some() { "username" } else { "none" };
        // `0/0` matches both families, so IPv4 clients may reach IPv6 targets and back.
        let text = format!(
            "logoutput: stderr\n\
             internal: 0.0.0.0 port = {SOCKS_PORT}\ninternal: :: port = {SOCKS_PORT}\n\
             external: eth0\n\
             socksmethod: {method}\nclientmethod: none\n\
             user.privileged: root\nuser.unprivileged: nobody\n\
             client pass {{\n  from: 0/0 to: 0/0\n}}\n\
             socks pass {{\n  from: 0/0 to: 0/0\n  \
             command: bind connect udpassociate bindreply udpreply\n  log: error connect\n}}\n"
        );
        write(&conf, &text);
        let argv = strings(&["danted", "-f", &conf.to_string_lossy()]);
        self.run_proxy(host, "dante", SOCKS_PORT, auth, &argv, log)
    }

    fn run_proxy(
        &self,
        host: Host,
        kind: &'static str,
        port: u16,
        auth: Option<Auth>,
        argv: &[String],
        log: PathBuf,
    ) -> Proxy {
        let daemon = Daemon::spawn(&host.netns, kind, argv, &log);
        daemon.wait_listening(SocketAddr::new(host.v4.into(), port));
        daemon.wait_listening(SocketAddr::new(host.v6.into(), port));
        Proxy {
            daemon,
            host,
            kind,
            port,
            auth,
            log,
        }
    }
}

fn self_name(host: &Host) -> &str {
    host.fqdn.as_deref().unwrap_or(&host.label)
}

fn strings(argv: &[&str]) -> Vec<String> {
    argv.iter().map(|s| s.to_string()).collect()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
