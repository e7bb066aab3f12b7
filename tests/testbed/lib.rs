//! The fake internet that pallium's end-to-end tests run on (README.md, Run the tests): throwaway network
//! namespaces — a *host* where pallium starts, a router, a web server that answers with the
//! client's address and an authoritative, query-logging DNS server — plus an unprivileged test
//! user and checks that pallium left nothing behind.
//!
//! ```text
//!   host 192.0.2.2 / fd00:db8::2 ──┐
//!                                  router ── web 203.0.113.10 / fd00:db8:1::10  (HTTP :80, UDP echo :7)
//!                                    │
//!                                  bridge ── dns 198.51.100.53 / fd00:db8:2::53 (dnsmasq :53)
//!                                         ├─ proxies 198.51.100.10–99 (on demand: microsocks,
//!                                         │  dante, tinyproxy, sshd; `<kind>.pallium.test`)
//!                                         ├─ openvpn 198.51.100.10–99 (on demand: UDP 1194, TCP 443)
//!                                         └─ Tor nodes 198.51.100.100– (on demand: a private
//!                                            Tor network with an onion service for the web host)
//! ```
//!
//! Every test builds its own [`Testbed`] (unique names embed the test process's pid, so tests run
//! in parallel) and it is torn down on drop, panics included; [`cleanup_stale`] removes what dead
//! test processes left. Nothing here ever sends traffic outside loopback or these namespaces.
//!
//! Most of this needs root; a test starts with [`skip_unless_root!`].
//!
//! ```no_run
//! # use pallium_tests::{skip_unless_root, Testbed};
//! skip_unless_root!();
//! let tb = Testbed::new("example");
//! let out = tb.host_exec(["curl", "-s", &tb.web4_url()]).output().unwrap();
//! assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), tb.host_v4().to_string());
//! assert!(tb.leftovers().is_empty());
//! ```

mod cmd;
mod daemon;
mod desktop;
mod dns;
mod hosts;
mod leftovers;
mod names;
mod net;
mod ocserv;
mod openvpn;
mod proxy;
mod script;
mod tor;
mod udp;
mod user;
mod web;
mod wireguard;

use std::io::Write;

pub use desktop::{missing_program, rms, wait_for, Pulse, Xvfb};
pub use dns::DnsQuery;
pub use leftovers::leftovers;
pub use names::cleanup_stale;
pub use net::{
    Resolver, Testbed, TestbedBuilder, TESTBED_ENV, WEB4_NAME, WEB6_NAME, WEB_NAME, ZONE,
};
pub use ocserv::{OcservServer, OCSERV_PORT};
pub use openvpn::{OpenvpnServer, VpnProto, OPENVPN_TCP_PORT, OPENVPN_UDP_PORT};
pub use proxy::{Auth, Proxy, Socks, SshServer};
pub use script::{unique_ifname, WgPeer, WG_CLIENT, WG_SERVER};
pub use tor::TorNetwork;
pub use user::TestUser;
pub use wireguard::{wg_keypair, WgServer, WG_PORT};

/// Environment variable naming a file that [`skip`] appends its reasons to, so that
/// `tests/run-all.sh` can list skipped tests (libtest hides a passing test's output).
pub const SKIP_LOG_ENV: &str = "PALLIUM_TEST_SKIP_LOG";

/// Whether the test process runs as root (euid 0).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Copies the executable `src` to `dst` with permission bits `mode`, in a child process
/// (`install`). Copied in this (multi-threaded) test process, the open, writable `dst` would be
/// inherited by whatever another test thread forks at that moment, and executing `dst` would
/// fail with ETXTBSY ("Text file busy") until that child execs.
pub fn copy_executable(src: &std::path::Path, dst: &std::path::Path, mode: u32) {
    let o = std::process::Command::new("install")
        .arg("-m")
        .arg(format!("{mode:o}"))
        .arg("-T")
        .arg(src)
        .arg(dst)
        .output()
        .unwrap_or_else(|e| panic!("run install: {e}"));
    assert!(
        o.status.success(),
        "install {} {}: {}",
        src.display(),
        dst.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Reports that the current test is skipped and why: prints it and appends it to the file named
/// by [`SKIP_LOG_ENV`], if set. The caller then returns.
pub fn skip(reason: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    eprintln!("SKIPPED {test}: {reason}");
    let Some(path) = std::env::var_os(SKIP_LOG_ENV) else {
        return;
    };
    // One short O_APPEND write per line keeps lines of parallel tests whole.
    let line = format!("{test}: {reason}\n");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Returns from the calling test, reporting it as skipped, unless the test runs as root.
#[macro_export]
macro_rules! skip_unless_root {
    () => {
        if !$crate::is_root() {
            $crate::skip("needs root (network namespaces, veth, dnsmasq)");
            return;
        }
    };
}
