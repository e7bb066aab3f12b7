//! `socks`: a SOCKS4, 4a or 5 proxy (`address`, `version`, `username`,
//! `password`), served into the next namespace by tun2socks.

#![forbid(unsafe_code)]

use proto::profile::{HopKind, SocksVersion};

use super::proxy::{self, Names};
use super::{HopCx, HopError, HopType, RunningHop};
use crate::tun2socks::{Protocol, ProxyConfig};

pub(super) struct SocksHop;

impl HopType for SocksHop {
    fn start(&self, cx: &mut HopCx<'_>) -> Result<Box<dyn RunningHop>, HopError> {
        let HopKind::Socks(s) = &cx.hop.kind else {
            return Err(HopError::Unsupported(cx.hop.kind.name()));
        };
        let protocol = match s.version {
            SocksVersion::V4 => Protocol::Socks4,
            SocksVersion::V4a => Protocol::Socks4a,
            SocksVersion::V5 => Protocol::Socks5,
        };
        let config = ProxyConfig {
            protocol,
            address: s.address.clone(),
            username: s.username.clone(),
            password: s.password.clone(),
            unix: None,
        };
        Ok(Box::new(proxy::start(cx, config, Names::REMOTE)?))
    }
}
