//! Host for the tun2socks benchmark (`extra/bench/tun2socks.sh` drives it):
//! creates the TUN device in the app namespace, starts the engine with its
//! proxy connections made in the dial namespace, writes its pid to the ready
//! file, and runs until the stop file appears; then prints the engine's
//! counters. Arguments: APP_NS DIAL_NS PROTO(socks5|http) PROXY_ADDR:PORT MTU
//! READY_FILE STOP_FILE (namespaces by `ip netns` name).

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use pallium_netbroker::rtnl::Rtnl;
use pallium_netbroker::tun2socks::{self, Config, DnsConfig, Protocol, ProxyConfig};
use pallium_netbroker::{netns, tun};
use proto::profile::Endpoint;

fn ns(name: &str) -> OwnedFd {
    std::fs::File::open(format!("/run/netns/{name}"))
        .unwrap_or_else(|e| panic!("open netns {name}: {e}"))
        .into()
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.len() != 7 {
        eprintln!("usage: tun2socks APP_NS DIAL_NS PROTO PROXY MTU READY_FILE STOP_FILE (run by extra/bench/tun2socks.sh)");
        return;
    }
    let (app, dial) = (ns(&args[0]), ns(&args[1]));
    let protocol = match args[2].as_str() {
        "http" => Protocol::HttpConnect,
        "socks4" => Protocol::Socks4,
        _ => Protocol::Socks5,
    };
    let cfg = Config {
        proxy: ProxyConfig {
            protocol,
            address: Endpoint::parse(&args[3], None).expect("proxy address"),
            username: None,
            password: None,
            unix: None,
        },
        dns: DnsConfig::Virtual {
            fallback: Vec::new(),
            onion: true,
        },
        resolvers: Vec::new(),
        connect_timeout: Duration::from_secs(5),
    };
    let mtu: u32 = args[4].parse().expect("mtu");
    tun2socks::probe(dial.as_fd(), &cfg).expect("probe");
    let mut rtnl = netns::run_in(app.as_fd(), Rtnl::open)
        .expect("enter app netns")
        .expect("rtnl");
    let tun = tun::create(app.as_fd(), &mut rtnl, "t2s0", mtu).expect("create TUN");
    let engine = tun2socks::start(tun, dial, cfg).expect("start engine");
    std::fs::write(&args[5], format!("{}\n", std::process::id())).expect("ready file");
    while !Path::new(&args[6]).exists() {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(why) = engine.exited() {
            eprintln!("engine exited: {why}");
            break;
        }
    }
    println!("{:?}", engine.stats());
}
