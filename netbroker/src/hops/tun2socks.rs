//! `tun2socks`: the original's base hop, with the proxy scheme spelled out
//! (`protocol`: `socks5`, `socks4`, `socks4a` or `http`).

#![forbid(unsafe_code)]

use proto::profile::HopKind;

use super::proxy::{self, Names};
use super::{HopCx, HopError, HopType, RunningHop};
use crate::tun2socks::{Protocol, ProxyConfig};

pub(super) struct Tun2socksHop;

/// The scheme names the original passed to its tun2socks binary.
pub(super) fn protocol(scheme: &str) -> Option<Protocol> {
    Some(match scheme.to_ascii_lowercase().as_str() {
        "socks5" | "socks5h" | "socks" => Protocol::Socks5,
        "socks4" => Protocol::Socks4,
        "socks4a" => Protocol::Socks4a,
        "http" | "https" => Protocol::HttpConnect,
        _ => return None,
    })
}

impl HopType for Tun2socksHop {
    fn start(&self, cx: &mut HopCx<'_>) -> Result<Box<dyn RunningHop>, HopError> {
        let HopKind::Tun2socks(t) = &cx.hop.kind else {
            return Err(HopError::Unsupported(cx.hop.kind.name()));
        };
        let protocol = protocol(&t.protocol).ok_or_else(|| {
            HopError::Failed(format!(
                "unknown tun2socks protocol '{}' (use socks5, socks4, socks4a or http)",
                t.protocol
            ))
        })?;
        let config = ProxyConfig {
            protocol,
            address: t.address.clone(),
            username: t.username.clone(),
            password: t.password.clone(),
            unix: None,
        };
        Ok(Box::new(proxy::start(cx, config, Names::REMOTE)?))
    }
}
