//! Writes the seed corpora of the fuzz targets (doc/FUZZING.md) that are
//! built with the crates' own encoders and emitters: wire frames of every
//! channel, the application's packets, DNS messages. The profile seeds are
//! the JSON texts of the tests and docs, kept as files in
//! `fuzz/seeds/profile/`; they feed the messages that carry profiles here.
//!
//! `cargo run -p pallium-netbroker --example fuzz-seeds -- fuzz/seeds`

use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use pallium_netbroker::tun2socks::{dns, fuzzing, DNS_V4, DNS_V6};
use proto::broker::{
    BrokerEvent, BrokerRequest, BuildChain, ChainReady, ProcEntry, Progress, Uplink,
};
use proto::control::{ControlEvent, ControlRequest, Exec, Refusal, SessionInfo};
use proto::sandbox::{ExitStatus, SandboxEvent, SandboxRequest, Setup, Spawn};
use proto::wire::{encode, Hello};
use proto::{Fd, RemoteError};
use serde::Serialize;

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/seeds".into()),
    );
    let profiles = profiles(&out.join("profile"))?;
    let mut w = Writer { out, n: 0 };

    let hops = profiles.iter().filter(|p| !p.network.chain.is_empty());
    for (i, p) in hops.take(6).enumerate() {
        w.frame(
            "wire_broker",
            &format!("build-chain-{i}"),
            &build_chain(p.network.chain.clone()),
        );
    }
    w.frame("wire_broker", "build-chain-empty", &build_chain(vec![]));
    w.frame("wire_broker", "list-pids", &BrokerRequest::ListPids);
    w.frame("wire_broker", "shutdown", &BrokerRequest::Shutdown);
    w.frame(
        "wire_broker",
        "progress",
        &BrokerEvent::Progress(Progress {
            hop: Some(1),
            message: "tor: bootstrapped 100%".into(),
        }),
    );
    w.frame(
        "wire_broker",
        "chain-ready",
        &BrokerEvent::ChainReady(ChainReady {
            netns: fd(),
            userns: Some(fd()),
            app_userns: None,
            app_uid: Some(1000),
            resolv_conf: "nameserver 198.18.0.2\n".into(),
            links: vec!["veth-pl0 10.200.0.1/30".into()],
            outer: vec![fd()],
            onion_services: vec![proto::broker::OnionReady {
                hop: 1,
                address: format!("{}.onion", "a".repeat(56)),
                port: 80,
                target: 8080,
            }],
        }),
    );
    w.frame("wire_broker", "pids", &BrokerEvent::Pids(pids()));
    w.frame("wire_broker", "failed", &BrokerEvent::Failed(failed()));

    for (i, p) in profiles
        .iter()
        .filter(|p| p.sandbox != Default::default())
        .take(8)
        .enumerate()
    {
        w.frame(
            "wire_sandbox",
            &format!("setup-{i}"),
            &setup(p.sandbox.clone()),
        );
    }
    w.frame("wire_sandbox", "setup-default", &setup(Default::default()));
    w.frame(
        "wire_sandbox",
        "spawn",
        &SandboxRequest::Spawn(Spawn {
            id: 1,
            argv: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("TERM".into(), "xterm".into()),
            ],
            cwd: Some("/home/user".into()),
            stdio: [fd(), fd(), fd()],
            tty: true,
            root: false,
            netns: Some(fd()),
        }),
    );
    w.frame(
        "wire_sandbox",
        "signal",
        &SandboxRequest::Signal { id: 1, signal: 15 },
    );
    w.frame("wire_sandbox", "list-pids", &SandboxRequest::ListPids);
    w.frame("wire_sandbox", "shutdown", &SandboxRequest::Shutdown);
    w.frame(
        "wire_sandbox",
        "ready",
        &SandboxEvent::Ready {
            init_pid: 4242,
            root: fd(),
            owner: Some((1000, 1000)),
            audio: None,
        },
    );
    w.frame(
        "wire_sandbox",
        "spawned",
        &SandboxEvent::Spawned { id: 1, pid: 4243 },
    );
    w.frame(
        "wire_sandbox",
        "exited",
        &SandboxEvent::Exited {
            id: 1,
            status: ExitStatus::Signal(9),
        },
    );
    w.frame("wire_sandbox", "pids", &SandboxEvent::Pids(pids()));
    w.frame(
        "wire_sandbox",
        "failed",
        &SandboxEvent::Failed {
            id: Some(1),
            error: failed(),
        },
    );

    w.frame(
        "wire_control",
        "exec",
        &ControlRequest::Exec(Exec {
            argv: vec!["ls".into(), "-l".into()],
            env: vec![("HOME".into(), "/root".into())],
            cwd: None,
            stdio: [fd(), fd(), fd()],
            tty: false,
            root: true,
            namespace: -1,
        }),
    );
    w.frame("wire_control", "signal", &ControlRequest::Signal(2));
    for (name, r) in [
        ("stop", ControlRequest::Stop),
        ("audit", ControlRequest::Audit),
        ("info", ControlRequest::Info),
        ("sandbox-root", ControlRequest::SandboxRoot),
    ] {
        w.frame("wire_control", name, &r);
    }
    w.frame("wire_control", "accepted", &ControlEvent::Accepted);
    w.frame(
        "wire_control",
        "refused",
        &ControlEvent::Refused(Refusal::InsideSandbox),
    );
    w.frame(
        "wire_control",
        "started",
        &ControlEvent::Started { pid: 77 },
    );
    w.frame(
        "wire_control",
        "exited",
        &ControlEvent::Exited(ExitStatus::Code(3)),
    );
    w.frame("wire_control", "audit", &ControlEvent::Audit(pids()));
    w.frame(
        "wire_control",
        "info",
        &ControlEvent::Info(SessionInfo {
            profile: "default".into(),
            index: 0,
            supervisor_pid: 100,
            hops: vec!["tor".into()],
            started_unix: 1_700_000_000,
            links: vec![],
            init_pid: 4242,
        }),
    );
    w.frame("wire_control", "stopping", &ControlEvent::Stopping);
    w.frame(
        "wire_control",
        "sandbox-root",
        &ControlEvent::SandboxRoot {
            root: fd(),
            owner: None,
        },
    );
    w.frame(
        "wire_control",
        "hello",
        &Hello {
            version: proto::PROTOCOL_VERSION,
            role: "supervisor".into(),
        },
    );

    let app4: SocketAddr = "198.18.0.1:40000".parse().unwrap();
    let app6: SocketAddr = "[fd00:7061:6c6c::1]:40000".parse().unwrap();
    let dns4 = SocketAddr::new(DNS_V4.into(), 53);
    let dns6 = SocketAddr::new(DNS_V6.into(), 53);
    let q = dns::build_query(0x1234, "example.com", dns::TYPE_A);
    w.raw(
        "tun_packet",
        "udp4-dns-query",
        &fuzzing::udp_packet(app4, dns4, &q),
    );
    let q6 = dns::build_query(7, "www.example.org", dns::TYPE_AAAA);
    w.raw(
        "tun_packet",
        "udp6-dns-query",
        &fuzzing::udp_packet(app6, dns6, &q6),
    );
    w.raw(
        "tun_packet",
        "udp4-datagram",
        &fuzzing::udp_packet(app4, "203.0.113.7:443".parse().unwrap(), b"quic?"),
    );
    w.raw("tun_packet", "tcp4-syn", &tcp_syn_v4());
    w.raw("tun_packet", "tcp6-syn", &tcp_syn_v6());

    let mut pool = dns::FakePool::new(
        pallium_netbroker::tun2socks::FAKE_POOL.0,
        pallium_netbroker::tun2socks::FAKE_POOL.1,
    );
    for (name, qtype) in [
        ("example.com", dns::TYPE_A),
        ("example.com", dns::TYPE_AAAA),
        ("duckduck.onion", dns::TYPE_A),
    ] {
        let q = dns::build_query(1, name, qtype);
        w.raw("dns", &format!("query-{name}-{qtype}"), &q);
        if let Some(a) = pool.answer(&q) {
            w.raw("dns", &format!("answer-{name}-{qtype}"), &a);
        }
    }
    w.raw(
        "dns",
        "resolv-conf",
        b"# generated\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch example.org\n",
    );
    w.raw(
        "dns",
        "resolv-conf-v6",
        b"nameserver 192.0.2.53\nnameserver fe80::1%eth0\ndomain lan\n",
    );
    println!("{} seeds", w.n);
    Ok(())
}

struct Writer {
    out: PathBuf,
    n: usize,
}

impl Writer {
    /// A frame seed: the control byte (the descriptor count, see
    /// `fuzz/src/lib.rs`), then the frame as the channel sends it.
    fn frame<T: Serialize>(&mut self, target: &str, name: &str, msg: &T) {
        let (bytes, fds) = encode(msg).expect("encode a seed");
        let mut seed = vec![fds.len() as u8];
        seed.extend_from_slice(&bytes);
        self.raw(target, name, &seed);
    }

    fn raw(&mut self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.out.join(target);
        std::fs::create_dir_all(&dir).expect("create the seed directory");
        std::fs::write(dir.join(name), bytes).expect("write a seed");
        self.n += 1;
    }
}

fn profiles(dir: &Path) -> std::io::Result<Vec<proto::profile::Profile>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    names.sort();
    Ok(names
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|text| proto::profile::parse("seed", &text).ok())
        .map(|p| p.profile)
        .collect())
}

fn fd() -> Fd {
    Fd(OwnedFd::from(
        File::open("/dev/null").expect("open /dev/null"),
    ))
}

fn build_chain(chain: Vec<proto::profile::Hop>) -> BrokerRequest {
    BrokerRequest::BuildChain(BuildChain {
        bridge: None,
        outbound_interface: None,
        session_id: "default-0".into(),
        rootless: true,
        uid: 1000,
        gid: 1000,
        uplink: Uplink::Pasta,
        chain,
        routes: Some(vec!["10.0.0.0/8".into()]),
        host_access: false,
        quiet: false,
        port_forwarding: Vec::new(),
    })
}

fn setup(profile: proto::profile::Sandbox) -> SandboxRequest {
    SandboxRequest::Setup(Box::new(Setup {
        netns: fd(),
        userns: Some(fd()),
        app_userns: None,
        app_uid: None,
        hostname: "pallium".into(),
        resolv_conf: "nameserver 198.18.0.2\n".into(),
        hosts: "127.0.0.1 localhost\n".into(),
        uid: 1000,
        gid: 1000,
        profile,
        runsc: None,
        hidden: vec!["/run/user/1000/bus".into()],
        binds: Vec::new(),
    }))
}

fn pids() -> Vec<ProcEntry> {
    vec![
        ProcEntry {
            pid: 10,
            role: "netbroker".into(),
        },
        ProcEntry {
            pid: 11,
            role: "tor".into(),
        },
    ]
}

fn failed() -> RemoteError {
    RemoteError::msg(
        "build hop 1 (socks)",
        "connect to 192.0.2.1:1080: connection refused",
    )
}

/// A SYN as Linux sends it (MSS, SACK, timestamps, window scale); checksums
/// are left zero, as the engine does not verify them.
fn tcp_syn(src_port: u16, dst_port: u16) -> Vec<u8> {
    let mut t = vec![0u8; 40];
    t[0..2].copy_from_slice(&src_port.to_be_bytes());
    t[2..4].copy_from_slice(&dst_port.to_be_bytes());
    t[4..8].copy_from_slice(&0x1000_0000u32.to_be_bytes());
    t[12] = 10 << 4;
    t[13] = 0x02;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    t[20..40].copy_from_slice(&[
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
    ]);
    t
}

fn tcp_syn_v4() -> Vec<u8> {
    let tcp = tcp_syn(40000, 80);
    let mut p = vec![
        0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 1, 203, 0, 113, 80,
    ];
    let total = (p.len() + tcp.len()) as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&tcp);
    p
}

fn tcp_syn_v6() -> Vec<u8> {
    let tcp = tcp_syn(40000, 443);
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    p.extend_from_slice(&[6, 64]);
    p.extend_from_slice(
        &"fd00:7061:6c6c::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    p.extend_from_slice(
        &"2001:db8::80"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    p.extend_from_slice(&tcp);
    p
}
