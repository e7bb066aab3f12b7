//! A private Tor network on the testbed ([`Testbed::start_tor`]): three directory authorities,
//! three relays (two of them exits), an onion service for the web host and a client whose SOCKS
//! port the tests may use, each Debian's `tor` with `TestingTorNetwork 1` alone on its host of
//! the services LAN. Keys are made at start (`tor-gencert`, `tor --list-fingerprint`); a client
//! needs only [`TorNetwork::client_args`]. Usable some 20–35 s after start:
//! [`TorNetwork::wait_ready`] waits for that.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cmd::{self, netns_exec};
use crate::daemon::Daemon;
use crate::hosts::{Host, Pool};
use crate::net::{DNS_V4, WEB4_NAME, WEB_V4};
use crate::Testbed;

const OR_PORT: u16 = 9001;
const DIR_PORT: u16 = 9030;
const SOCKS_PORT: u16 = 9050;
/// The client's control port, on its own host's loopback only.
const CONTROL_PORT: u16 = 9051;
/// How long [`TorNetwork::wait_ready`] waits.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// What a node of the network does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Authority,
    Exit,
    Middle,
    /// Hosts the onion service whose target is the web host's port 80.
    Onion,
    /// A plain client with a SOCKS port on its host's addresses.
    Client,
}

/// The nodes, in start order: nickname (also the host's kind) and role.
const NODES: &[(&str, Role)] = &[
    ("tor-auth0", Role::Authority),
    ("tor-auth1", Role::Authority),
    ("tor-auth2", Role::Authority),
    ("tor-exit0", Role::Exit),
    ("tor-exit1", Role::Exit),
    ("tor-relay", Role::Middle),
    ("tor-onion", Role::Onion),
    ("tor-client", Role::Client),
];

/// A running private Tor network; every node is killed and its host removed on drop (or with
/// the testbed). One per testbed: tests that need it put their cases in one test function.
#[derive(Debug)]
pub struct TorNetwork {
    nodes: Vec<Node>,
    started: Instant,
    dir_authorities: Vec<String>,
}

#[derive(Debug)]
struct Node {
    role: Role,
    nick: &'static str,
    daemon: Daemon,
    host: Host,
    data_dir: PathBuf,
}

impl Testbed {
    /// Starts a private Tor network on this testbed (hosts 198.51.100.100–107). Returns once
    /// every node runs; call [`TorNetwork::wait_ready`] before using it.
    pub fn start_tor(&self) -> TorNetwork {
        let started = Instant::now();
        let hosts: Vec<(Host, Role, &'static str)> = NODES
            .iter()
            .map(|&(nick, role)| (self.add_host(nick, Pool::Tor, false), role, nick))
            .collect();
        // Authority keys take a few seconds of RSA each: make them in parallel.
        let dir_authorities: Vec<String> = std::thread::scope(|s| {
            let jobs: Vec<_> = hosts
                .iter()
                .filter(|(_, role, _)| *role == Role::Authority)
                .map(|(host, _, nick)| s.spawn(move || authority_keys(host, nick)))
                .collect();
            jobs.into_iter()
                .map(|j| j.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        let nodes = hosts
            .into_iter()
            .map(|(host, role, nick)| {
                let data_dir = host.dir.join("data");
                let torrc = host.dir.join("torrc");
                let text = torrc_text(&host, role, nick, &data_dir, &dir_authorities);
                std::fs::write(&torrc, text)
                    .unwrap_or_else(|e| panic!("write {}: {e}", torrc.display()));
                let argv = [
                    "tor",
                    "--defaults-torrc",
                    "/dev/null",
                    "-f",
                    &torrc.to_string_lossy(),
                ]
                .map(str::to_owned);
                let daemon = Daemon::spawn(&host.netns, nick, &argv, &host.dir.join("tor.log"));
                Node {
                    role,
                    nick,
                    daemon,
                    host,
                    data_dir,
                }
            })
            .collect();
        TorNetwork {
            nodes,
            started,
            dir_authorities,
        }
    }
}

impl TorNetwork {
    /// Starts a network on `tb`; the same as [`Testbed::start_tor`].
    pub fn start(tb: &Testbed) -> TorNetwork {
        tb.start_tor()
    }

    /// What a tor client needs to use this network, as command-line options (ready for a
    /// profile's `tor_args`): `--TestingTorNetwork 1` and one `--DirAuthority …` per authority.
    pub fn client_args(&self) -> Vec<String> {
        let mut args = vec!["--TestingTorNetwork".to_owned(), "1".to_owned()];
        for line in &self.dir_authorities {
            args.push("--DirAuthority".to_owned());
            args.push(line.clone());
        }
        args
    }

    /// The `DirAuthority` lines (torrc form, without the keyword).
    pub fn dir_authorities(&self) -> &[String] {
        &self.dir_authorities
    }

    /// The onion service's address, `<56 characters>.onion`; its target is the web host's port 80,
    /// which sees the connection come from [`TorNetwork::onion_service_addr`].
    pub fn onion_hostname(&self) -> String {
        let file = self.node(Role::Onion).data_dir.join("hs").join("hostname");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(name) = std::fs::read_to_string(&file) {
                if name.trim().ends_with(".onion") {
                    return name.trim().to_owned();
                }
            }
            assert!(
                Instant::now() < deadline,
                "onion service wrote no {}:\n{}",
                file.display(),
                self.node(Role::Onion).daemon.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://<onion hostname>/`.
    pub fn onion_url(&self) -> String {
        format!("http://{}/", self.onion_hostname())
    }

    /// The address the web host sees for a request to the onion service.
    pub fn onion_service_addr(&self) -> Ipv4Addr {
        self.node(Role::Onion).host.v4
    }

    /// The exit relays' addresses: what the web host sees for a request through the network.
    pub fn exit_addrs(&self) -> Vec<Ipv4Addr> {
        self.by_role(Role::Exit).map(|n| n.host.v4).collect()
    }

    /// The network's own client's SOCKS port (reachable from the host namespace), for tests
    /// that need a working Tor without running a client of their own.
    pub fn socks_addr(&self) -> SocketAddr {
        SocketAddr::new(self.node(Role::Client).host.v4.into(), SOCKS_PORT)
    }

    /// Kills every exit relay (SIGKILL): from now on no circuit can leave the network.
    pub fn kill_exit(&self) {
        for n in self.by_role(Role::Exit) {
            n.daemon.kill();
        }
    }

    /// Kills the onion service's tor.
    pub fn kill_onion_service(&self) {
        self.node(Role::Onion).daemon.kill();
    }

    /// `(nickname, pid)` of every node's tor.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.nodes
            .iter()
            .map(|n| (n.nick, n.daemon.pid()))
            .collect()
    }

    /// The log of the node with this nickname (`tor-auth0`, `tor-exit1`, `tor-onion`, …).
    pub fn log(&self, nick: &str) -> String {
        self.nodes
            .iter()
            .find(|n| n.nick == nick)
            .map(|n| n.daemon.log())
            .unwrap_or_else(|| panic!("no tor node {nick}"))
    }

    /// Waits until the network carries traffic: the network's client fetches the web host by
    /// name through an exit, and the onion service. Panics after two minutes, naming what is
    /// missing. These requests show in [`Testbed::web_seen`] and the DNS log.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let client = self.node(Role::Client);
        let web = format!("http://{WEB4_NAME}/");
        let exits: Vec<String> = self.exit_addrs().iter().map(|a| a.to_string()).collect();
        let mut web_ok = false;
        let (mut web_err, mut onion_err) = (String::new(), String::from("not tried"));
        loop {
            for n in &self.nodes {
                if let Some(status) = n.daemon.exited() {
                    panic!("tor node {} exited ({status}):\n{}", n.nick, n.daemon.log());
                }
            }
            if !web_ok {
                match self.fetch(client, &web) {
                    Ok(seen) if exits.contains(&seen) => web_ok = true,
                    Ok(seen) => web_err = format!("web host saw {seen}, not an exit {exits:?}"),
                    Err(e) => web_err = e,
                }
            }
            if web_ok {
                let url = format!("http://{}/", self.onion_hostname());
                match self.fetch(client, &url) {
                    Ok(seen) if seen == self.onion_service_addr().to_string() => {
                        eprintln!(
                            "private Tor network ready {:.1} s after start",
                            self.started.elapsed().as_secs_f64()
                        );
                        return;
                    }
                    Ok(seen) => onion_err = format!("web host saw {seen}"),
                    Err(e) => onion_err = e,
                }
                // A lookup that came before the service had published its
                // descriptor leaves the client shunning the HSDirs it asked
                // (for 15 minutes); NEWNYM purges that state, so the next try
                // asks afresh.
                self.newnym(client);
            }
            if Instant::now() > deadline {
                panic!(
                    "private Tor network not ready after {READY_TIMEOUT:?}: client {}; {}; \
                     web via an exit: {}; onion service: {onion_err}; logs in {}",
                    bootstrap_progress(&client.daemon.log()),
                    consensus_summary(&client.data_dir),
                    if web_ok { "ok" } else { &web_err },
                    client.host.dir.parent().unwrap_or(Path::new("?")).display(),
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// `curl` of `url` (e.g. an onion service's) through the network's own client, as a Tor user
    /// elsewhere would: the body, or curl's error — after which the client forgets what it
    /// learnt of onion services (`NEWNYM`), so that a try before a service's descriptor was
    /// published does not spoil the next one.
    pub fn client_fetch(&self, url: &str) -> Result<String, String> {
        let client = self.node(Role::Client);
        let got = self.fetch(client, url);
        if got.is_err() {
            self.newnym(client);
        }
        got
    }

    /// `curl` of `url` through the network's client, run in the client's namespace; the body
    /// (the address the web host saw) or curl's error.
    fn fetch(&self, client: &Node, url: &str) -> Result<String, String> {
        let out = cmd::output(
            &mut netns_exec(
                &client.host.netns,
                [
                    "curl",
                    "-sS",
                    "--max-time",
                    "10",
                    "--socks5-hostname",
                    &format!("127.0.0.1:{SOCKS_PORT}"),
                    url,
                ],
            ),
            None,
        );
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// `SIGNAL NEWNYM` to the client over its control port (best effort).
    fn newnym(&self, client: &Node) {
        let script = format!(
            "exec 3<>/dev/tcp/127.0.0.1/{CONTROL_PORT} && \
             printf 'AUTHENTICATE\\r\\nSIGNAL NEWNYM\\r\\nQUIT\\r\\n' >&3 && timeout 2 cat <&3"
        );
        let out = cmd::output(
            &mut netns_exec(&client.host.netns, ["bash", "-c", &script]),
            None,
        );
        if !String::from_utf8_lossy(&out.stdout).contains("250 OK") {
            eprintln!(
                "tor client NEWNYM: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    fn by_role(&self, role: Role) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(move |n| n.role == role)
    }

    fn node(&self, role: Role) -> &Node {
        self.by_role(role).next().expect("every role has a node")
    }
}

/// Makes an authority's keys in `<dir>/data/keys` and returns its `DirAuthority` line.
fn authority_keys(host: &Host, nick: &str) -> String {
    let data = host.dir.join("data");
    let keys = data.join("keys");
    std::fs::create_dir_all(&keys).unwrap_or_else(|e| panic!("create {}: {e}", keys.display()));
    let key = |name: &str| keys.join(name).to_string_lossy().into_owned();
    let out = cmd::output(
        Command::new("tor-gencert").args([
            "--create-identity-key",
            "-m",
            "12",
            "-a",
            &format!("{}:{DIR_PORT}", host.v4),
            "-i",
            &key("authority_identity_key"),
            "-s",
            &key("authority_signing_key"),
            "-c",
            &key("authority_certificate"),
            "--passphrase-fd",
            "0",
        ]),
        Some("\n"),
    );
    assert!(
        out.status.success(),
        "tor-gencert for {nick}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert = std::fs::read_to_string(key("authority_certificate")).expect("read certificate");
    let v3ident = cert
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint "))
        .unwrap_or_else(|| panic!("no fingerprint in {nick}'s certificate"))
        .trim()
        .to_owned();
    // Makes the relay identity key in the data directory, where the node's tor will find it.
    let listed = cmd::run(Command::new("tor").args([
        "--defaults-torrc",
        "/dev/null",
        "-f",
        "/dev/null",
        "--ignore-missing-torrc",
        "--quiet",
        "--list-fingerprint",
        "--DataDirectory",
        &data.to_string_lossy(),
        "--ORPort",
        "1",
        "--DirAuthority",
        "placeholder 127.0.0.1:1 ffffffffffffffffffffffffffffffffffffffff",
        "--Nickname",
        &nickname(nick),
    ]));
    let fingerprint: String = listed
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{} ", nickname(nick))))
        .unwrap_or_else(|| panic!("no fingerprint for {nick} in {listed:?}"))
        .split_whitespace()
        .collect();
    format!(
        "{} orport={OR_PORT} no-v2 v3ident={v3ident} {}:{DIR_PORT} {fingerprint}",
        nickname(nick),
        host.v4
    )
}

/// Tor nicknames are alphanumeric.
fn nickname(nick: &str) -> String {
    nick.replace('-', "")
}

fn torrc_text(host: &Host, role: Role, nick: &str, data: &Path, auths: &[String]) -> String {
    let mut lines = vec![
        "TestingTorNetwork 1".to_owned(),
        format!("DataDirectory {}", data.display()),
        format!("Nickname {}", nickname(nick)),
        "Log notice stdout".to_owned(),
        "SafeLogging 0".to_owned(),
        "RunAsDaemon 0".to_owned(),
        "ShutdownWaitLength 0".to_owned(),
        // Threads for onion-skin crypto: the default (all cores) takes three times the memory.
        "NumCPUs 1".to_owned(),
        "AssumeReachable 1".to_owned(),
    ];
    lines.extend(auths.iter().map(|a| format!("DirAuthority {a}")));
    let relay = [
        format!("Address {}", host.v4),
        format!("ORPort {OR_PORT}"),
        "SocksPort 0".to_owned(),
        format!("ContactInfo {nick}@pallium.test"),
    ];
    match role {
        Role::Authority => {
            lines.extend(relay);
            lines.extend(
                [
                    &format!("DirPort {DIR_PORT}") as &str,
                    "AuthoritativeDirectory 1",
                    "V3AuthoritativeDirectory 1",
                    "ExitRelay 0",
                    "ExitPolicy reject *:*",
                    // Vote every 10 s (the floor in tor 0.4.9), from the first consensus on.
                    "V3AuthVotingInterval 10",
                    "V3AuthVoteDelay 2",
                    "V3AuthDistDelay 2",
                    "TestingV3AuthInitialVotingInterval 10",
                    "TestingV3AuthInitialVoteDelay 2",
                    "TestingV3AuthInitialDistDelay 2",
                    "TestingV3AuthVotingStartOffset 0",
                    // Flags at once instead of after hours of uptime.
                    "TestingDirAuthVoteExit *",
                    "TestingDirAuthVoteGuard *",
                    "TestingDirAuthVoteHSDir *",
                ]
                .map(str::to_owned),
            );
        }
        Role::Exit => {
            lines.extend(relay);
            lines.extend(
                [
                    "ExitRelay 1",
                    "IPv6Exit 1",
                    // Anything narrower summarises to "reject" in microdescriptors, and
                    // clients then never pick this relay as an exit.
                    "ExitPolicy accept *:*",
                    "ExitPolicyRejectPrivate 0",
                    "ExitPolicyRejectLocalInterfaces 0",
                    "ServerDNSDetectHijacking 0",
                ]
                .map(str::to_owned),
            );
            lines.push(format!(
                "ServerDNSResolvConfFile {}",
                write_resolv_conf(&host.dir).display()
            ));
        }
        Role::Middle => {
            lines.extend(relay);
            lines.extend(["ExitRelay 0", "ExitPolicy reject *:*"].map(str::to_owned));
        }
        Role::Onion => {
            lines.push("SocksPort 0".to_owned());
            lines.push(format!("HiddenServiceDir {}", data.join("hs").display()));
            lines.push(format!("HiddenServicePort 80 {WEB_V4}:80"));
            // Vanguards-lite picks its layer-2 relays once, early; started
            // before the network's microdescriptors are all known, it can
            // pick none and then never build a service circuit (seen here
            // under load). Six relays give it nothing to protect anyway.
            lines.push("VanguardsLiteEnabled 0".to_owned());
        }
        Role::Client => {
            lines.push(format!("SocksPort 0.0.0.0:{SOCKS_PORT}"));
            lines.push(format!("SocksPort [::]:{SOCKS_PORT}"));
            // No authentication: it listens on the loopback of a host of its
            // own, for wait_ready's NEWNYM.
            lines.push(format!("ControlPort 127.0.0.1:{CONTROL_PORT}"));
            // As for the onion service: its layer-2 picks happen at start.
            lines.push("VanguardsLiteEnabled 0".to_owned());
        }
    }
    lines.join("\n") + "\n"
}

/// An exit's resolver: the zone's server.
fn write_resolv_conf(dir: &Path) -> PathBuf {
    let path = dir.join("resolv.conf");
    std::fs::write(&path, format!("nameserver {DNS_V4}\n"))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// The last `Bootstrapped N% (…)` of a tor log.
fn bootstrap_progress(log: &str) -> String {
    log.lines()
        .rev()
        .find_map(|l| l.find("Bootstrapped ").map(|i| l[i..].to_owned()))
        .unwrap_or_else(|| "has not started bootstrapping".to_owned())
}

/// How many relays and exits the client's consensus lists.
fn consensus_summary(data: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(data.join("cached-microdesc-consensus")) else {
        return "client has no consensus".to_owned();
    };
    let relays = text.lines().filter(|l| l.starts_with("r ")).count();
    let exits = text
        .lines()
        .filter(|l| l.starts_with("s ") && l.split_whitespace().any(|f| f == "Exit"))
        .count();
    format!("client's consensus lists {relays} relays, {exits} with the Exit flag")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_progress_takes_the_last_line() {
        let log = "Nov 25 [notice] Bootstrapped 5% (conn): x\nNov 25 [notice] Bootstrapped 75% \
                   (enough_dirinfo): y\nNov 25 [notice] other";
        assert_eq!(
            bootstrap_progress(log),
            "Bootstrapped 75% (enough_dirinfo): y"
        );
        assert_eq!(bootstrap_progress(""), "has not started bootstrapping");
    }

    #[test]
    fn nicknames_are_alphanumeric() {
        for (nick, _) in NODES {
            assert!(nickname(nick).chars().all(|c| c.is_ascii_alphanumeric()));
        }
    }
}
