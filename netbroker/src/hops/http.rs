//! `http`: an HTTP proxy that allows CONNECT (`address`, optional basic auth
//! `username`/`password`), served into the next namespace by tun2socks.

#![forbid(unsafe_code)]

use proto::profile::HopKind;

use super::proxy::{self, Names};
use super::{HopCx, HopError, HopType, RunningHop};
use crate::tun2socks::{Protocol, ProxyConfig};

pub(super) struct HttpHop;

impl HopType for HttpHop {
    fn start(&self, cx: &mut HopCx<'_>) -> Result<Box<dyn RunningHop>, HopError> {
        let HopKind::Http(h) = &cx.hop.kind else {
            return Err(HopError::Unsupported(cx.hop.kind.name()));
        };
        let config = ProxyConfig {
            protocol: Protocol::HttpConnect,
            address: h.address.clone(),
            username: h.username.clone(),
            password: h.password.clone(),
            unix: None,
        };
        Ok(Box::new(proxy::start(cx, config, Names::REMOTE)?))
    }
}
