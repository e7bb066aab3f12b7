//! pallium's network broker: creates the application's network namespace and
//! its uplink (root: veth + owner-bound nftables masquerade; rootless: pasta or
//! slirp4netns), serves it to the supervisor over fd 3, and lets the kernel
//! clean up when it exits.
//!
//! Single-threaded for all namespace work; only the DNS relay starts threads,
//! after the last fork/unshare.

pub mod bridge;
pub mod direct;
pub mod dns;
pub mod engine;
pub mod forward;
pub mod hops;
pub mod hostroute;
pub mod names;
pub mod netns;
pub mod nft;
pub mod orphan;
pub mod outbound;
pub mod pool;
pub mod root;
pub mod rootless;
pub mod rtnl;
pub mod server;
pub mod split;
pub mod sys;
#[cfg(test)]
mod testutil;
pub mod tun;
pub mod tun2socks;
pub mod wggenl;

use proto::broker::{BrokerEvent, BrokerRequest};
use proto::policy::{drop_to, PolicyError, Role};
use proto::{Channel, WireError};

/// Why the netbroker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("drop to the netbroker's capabilities")]
    Policy(#[from] PolicyError),
    #[error("adopt the supervisor channel")]
    Channel(#[source] std::io::Error),
    #[error("handshake with the supervisor")]
    Handshake(#[source] WireError),
    #[error(transparent)]
    Serve(#[from] server::ServeError),
}

/// The whole program after logging is set up.
pub fn run() -> Result<(), Error> {
    engine::cgroup::prepare_base();
    drop_to(Role::Netbroker)?;
    // Our parent-death signal is SIGTERM, and we ignore it: the supervisor's
    // death also closes our channel, and on that EOF we tear down and restore
    // the host's sysctls, which a SIGKILL would leave changed.
    sys::ignore_sigterm();
    let sock = sys::take_channel_fd().map_err(Error::Channel)?;
    let mut chan = Channel::<BrokerEvent, BrokerRequest>::new(sock);
    if let Err(e) = chan.handshake("netbroker", "supervisor") {
        // The supervisor died before it could even say hello.
        if let Some(dir) = std::env::var_os("PALLIUM_SESSION_DIR") {
            orphan::remove_dead_session(std::path::Path::new(&dir));
        }
        if matches!(e, proto::WireError::Closed) {
            tracing::info!("the supervisor went away before the handshake");
            return Ok(());
        }
        return Err(Error::Handshake(e));
    }
    let mut paths = root::HostPaths::default();
    // Test hook: integration tests keep their state out of /run/pallium.
    if let Some(dir) = std::env::var_os("PALLIUM_RUN_DIR") {
        paths.run_dir = dir.into();
    }
    server::serve(&mut chan, &paths)?;
    Ok(())
}
