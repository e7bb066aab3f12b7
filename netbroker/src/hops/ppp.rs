//! `ppp`: `pppd call <provider>` dialling out of a
//! host device, root mode and first hop only (it takes a macvlan of a host
//! device; anywhere else it is refused with one line).
//!
//! pppd runs in a namespace of its own, P, under the script hop's holder
//! ([`super::script::spawn_holder`]: uid 0 with CAP_NET_ADMIN and, for
//! PPPoE's packet socket, CAP_NET_RAW only, a pid namespace that dies with
//! the hop), on a macvlan of the `device` made
//! directly in P under the device's own name (so the peers file's
//! `plugin pppoe.so eth0` finds it). `updetach` makes pppd exit 0 once IPCP
//! is up, which the holder reports, and fail with its exit code otherwise.
//! A PPP device cannot change namespace (the kernel marks it netns-local),
//! so Ni gets a TUN served by a packet engine in direct mode dialling in P,
//! where the only route out is `ppp0`: the application reaches nothing of
//! the LAN the macvlan sits on (P's own addresses are refused), and if the
//! link drops nothing leaves. DNS: the hop's `dns` list (pppd's
//! `usepeerdns` writes the host's /etc/ppp/resolv.conf, which pallium does
//! not use), asked by the engine.
//!
//! Needs the kernel's PPP support (/dev/ppp, `ppp_generic`, and `pppoe` for
//! PPPoE): checked first, with one line saying so when it is missing.

#![forbid(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::Duration;

use proto::broker::ProcEntry;
use proto::profile::{DnsServer, HopKind, Ppp};

use super::script::{spawn_holder, Holder};
use super::{daemon, HopCx, HopError, HopType, RunningHop};
use crate::engine::{EngineProcess, Placement};
use crate::rtnl::Rtnl;
use crate::tun2socks::{self, DirectConfig};
use crate::{netns, tun};

/// Where pppd's peers files are.
const PEERS: &str = "/etc/ppp/peers";
/// How long pppd may take to bring IPCP up.
const TIMEOUT: Duration = Duration::from_secs(60);
/// The PPP device pppd makes in P.
const PPP_IF: &str = "ppp0";

pub(super) struct PppHop;

impl HopType for PppHop {
    fn start(&self, cx: &mut HopCx<'_>) -> Result<Box<dyn RunningHop>, HopError> {
        let HopKind::Ppp(ppp) = &cx.hop.kind else {
            return Err(HopError::Unsupported(cx.hop.kind.name()));
        };
        allowed(cx.rootless, cx.index)?;
        let peers = Path::new(PEERS).join(&ppp.provider);
        let text = std::fs::read_to_string(&peers).map_err(|e| {
            HopError::Failed(format!(
                "ppp provider file {}: {e}; create it (see pppd(8), \"call\") or set the hop's \"provider\"",
                peers.display()
            ))
        })?;
        let device = device(ppp, &text)?;
        let parent = Rtnl::open()
            .and_then(|mut r| r.link_index(&device))
            .map_err(|e| {
                HopError::Failed(format!(
                    "ppp device {device}: {e}; set the hop's \"device\" to a host interface"
                ))
            })?;
        kernel_support(Path::new("/dev/ppp"))?;
        let pppd = daemon::find_tool(cx, "pppd", "ppp")?;
        let mut own = netns::create().map_err(HopError::Netns)?;
        Rtnl::open()
            .and_then(|mut r| r.add_macvlan(&device, parent, own.fd.as_fd()))
            .and_then(|()| {
                let index = own.rtnl.link_index(&device)?;
                own.rtnl.set_up(index)
            })
            .map_err(|e| HopError::Failed(format!("make a macvlan of {device} for pppd: {e}")))?;
        let resolv = cx.work_dir.join("resolv.conf");
        std::fs::write(&resolv, "")
            .map_err(|e| HopError::Failed(format!("write {}: {e}", resolv.display())))?;
        let argv = pppd_argv(&pppd, &ppp.provider);
        let argv: Vec<&OsStr> = argv.iter().map(|a| a.as_os_str()).collect();
        let mut holder = spawn_holder(
            own.fd.as_raw_fd(),
            true,
            &argv,
            &Default::default(),
            &resolv,
            cx.work_dir,
            &cx.work_dir.join("pppd.log"),
            "hop:ppp",
        )?;
        (cx.progress)(format!("dialling {} on {device}", ppp.provider));
        let status = holder.wait_status(cx, TIMEOUT)?;
        if status != 0 {
            return Err(HopError::Failed(format!(
                "pppd call {} failed ({}): {}",
                ppp.provider,
                exit_meaning(status),
                holder.daemon.tail()
            )));
        }
        serve(cx, holder, own, ppp, &device)
    }
}

/// pppd's command line: the provider's peers file, `updetach` (exit 0 once
/// IPCP is up, in the background from then on; its exit code otherwise),
/// and `defaultroute`, since P's only way out must be `ppp0` (P has no
/// other default route for it to clash with).
fn pppd_argv(pppd: &Path, provider: &str) -> Vec<OsString> {
    vec![
        pppd.into(),
        "call".into(),
        provider.into(),
        "updetach".into(),
        "defaultroute".into(),
    ]
}

/// Root mode, first hop: the only place a ppp hop may be.
fn allowed(rootless: bool, index: usize) -> Result<(), HopError> {
    if rootless {
        return Err(HopError::Refused(
            "a ppp hop needs root mode (pppd dials out of a host device); run pallium as root"
                .into(),
        ));
    }
    if index != 0 {
        return Err(HopError::Refused(
            "a ppp hop must be the chain's first hop (it dials out of a host device)".into(),
        ));
    }
    Ok(())
}

/// The hop's `device`, else the peers file's (`plugin rp-pppoe.so eth0`,
/// `plugin pppoe.so nic-eth0`, a `nic-eth0` line, or user-mode PPPoE as
/// Debian's `dsl-provider` has it: `pty "/usr/sbin/pppoe -I eth0 …"`).
fn device(ppp: &Ppp, peers: &str) -> Result<String, HopError> {
    if let Some(d) = &ppp.device {
        return Ok(d.to_string());
    }
    for line in peers.lines() {
        let line = line.split('#').next().unwrap_or("");
        let words: Vec<&str> = line.split_whitespace().collect();
        let dev = match words.as_slice() {
            ["plugin", p, dev, ..] if p.ends_with("pppoe.so") => Some(*dev),
            [w] if w.starts_with("nic-") => Some(*w),
            ["pty", cmd @ ..] if cmd.iter().any(|w| w.trim_matches('"').ends_with("pppoe")) => cmd
                .windows(2)
                .find(|w| w[0].trim_matches('"') == "-I")
                .map(|w| w[1].trim_matches('"')),
            _ => None,
        };
        if let Some(d) = dev {
            return Ok(d.strip_prefix("nic-").unwrap_or(d).to_string());
        }
    }
    Err(HopError::Failed(format!(
        "no device for ppp provider {} (no \"plugin pppoe.so DEVICE\" line in its peers file); set the hop's \"device\"",
        ppp.provider
    )))
}

/// The kernel's PPP support: `/dev/ppp` must open. Missing, the node can
/// be made; ENXIO/ENODEV, the kernel has no PPP driver (`ppp_generic`).
fn kernel_support(dev: &Path) -> Result<(), HopError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map(drop)
        .map_err(|e| {
            let fix = match e.raw_os_error() {
                Some(libc::ENOENT) => format!(
                    "load the ppp_generic and pppoe modules (modprobe pppoe) and, if {} is still missing, mknod {0} c 108 0",
                    dev.display()
                ),
                _ => "load the ppp_generic and pppoe modules (modprobe pppoe) or use a kernel built with CONFIG_PPP and CONFIG_PPPOE".into(),
            };
            HopError::Failed(format!(
                "this kernel has no PPP support ({}: {e}); {fix}",
                dev.display()
            ))
        })
}

/// pppd's exit codes (pppd(8), EXIT STATUS), in words.
fn exit_meaning(code: i32) -> String {
    let what = match code {
        1 => "fatal error",
        2 => "bad options",
        3 => "not run as root",
        4 => "no kernel PPP support",
        6 => "could not lock the device",
        8 => "connect script failed",
        10 => "PPP negotiation failed",
        11 => "peer authentication failed",
        12 => "link idle",
        13 => "connect time limit",
        15 => "link terminated by the peer",
        16 => "modem hung up",
        19 => "authentication to the peer failed",
        _ if code < 0 => return format!("killed by signal {}", -code),
        _ => "see pppd(8)",
    };
    format!("exit {code}: {what}")
}

/// Ni: a TUN served by a direct-mode engine dialling in P.
fn serve(
    cx: &mut HopCx<'_>,
    holder: Holder,
    mut own: netns::Netns,
    ppp: &Ppp,
    device: &str,
) -> Result<Box<dyn RunningHop>, HopError> {
    let failed = |e: &dyn std::fmt::Display| HopError::Failed(e.to_string());
    let refused = own
        .rtnl
        .addresses()
        .map_err(|e| failed(&format!("list pppd's namespace addresses: {e}")))?
        .into_iter()
        .map(|p| p.addr)
        .collect();
    let resolvers: Vec<SocketAddr> = cx
        .hop
        .options
        .dns
        .iter()
        .flatten()
        .map(|d| match d {
            DnsServer::Udp(ip) => SocketAddr::new(*ip, 53),
            DnsServer::Tcp(sa) => *sa,
        })
        .collect();
    // Root mode only (the hop is refused rootless).
    let launched = EngineProcess::launch(
        own.fd.as_fd(),
        Placement::session_engine(cx.session_id, false),
    )
    .map_err(|e| failed(&e))?;
    let inner = cx.inner.get()?;
    let t = tun::create(inner.fd.as_fd(), &mut inner.rtnl, "tun0", 65000).map_err(HopError::Tun)?;
    let cfg = DirectConfig {
        refused,
        resolvers: resolvers.clone(),
        connect_timeout: Duration::from_secs(30),
    };
    let engine = launched.serve_direct(t, &cfg).map_err(|e| failed(&e))?;
    let resolv_conf = if resolvers.is_empty() {
        String::new()
    } else {
        format!(
            "nameserver {}\nnameserver {}\n",
            tun2socks::DNS_V4,
            tun2socks::DNS_V6
        )
    };
    Ok(Box::new(RunningPpp {
        engine,
        holder,
        _netns: own,
        resolv_conf,
        what: format!("pppd call {} on {device} → {PPP_IF}", ppp.provider),
    }))
}

#[derive(Debug)]
struct RunningPpp {
    engine: EngineProcess,
    holder: Holder,
    /// P: pppd's namespace (goes after pppd).
    _netns: netns::Netns,
    resolv_conf: String,
    what: String,
}

impl Drop for RunningPpp {
    fn drop(&mut self) {
        self.holder.stop();
    }
}

impl RunningHop for RunningPpp {
    fn resolv_conf(&self) -> String {
        self.resolv_conf.clone()
    }
    fn resolvers(&self) -> Vec<SocketAddr> {
        super::nameservers(&self.resolv_conf)
    }
    fn describe(&self) -> String {
        format!(
            "{} (holder pid {})",
            self.what,
            self.holder.daemon.child.id()
        )
    }
    fn pids(&self) -> Vec<ProcEntry> {
        vec![self.holder.daemon.proc_entry(), self.engine.proc_entry()]
    }
    fn exited(&mut self) -> Option<String> {
        if let Some(status) = self.holder.daemon.exited() {
            return Some(format!(
                "pppd is gone ({status}): {}",
                self.holder.daemon.tail()
            ));
        }
        self.engine.exited()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ppp(device: Option<&str>) -> Ppp {
        Ppp {
            provider: "dsl".into(),
            device: device.map(|d| d.to_string().try_into().unwrap()),
        }
    }

    #[test]
    fn device_comes_from_the_hop_or_the_peers_file() {
        assert_eq!(device(&ppp(Some("eth1")), "").unwrap(), "eth1");
        let peers = "# dsl\nnoipdefault\nplugin rp-pppoe.so eth0 # the modem\nuser x\n";
        assert_eq!(device(&ppp(None), peers).unwrap(), "eth0");
        assert_eq!(
            device(&ppp(None), "plugin pppoe.so nic-enp3s0\n").unwrap(),
            "enp3s0"
        );
        assert_eq!(device(&ppp(None), "nic-eth2\n").unwrap(), "eth2");
        let debian = "noipdefault\npty \"/usr/sbin/pppoe -I enp1s0 -T 80 -m 1452\"\nnoauth\n";
        assert_eq!(device(&ppp(None), debian).unwrap(), "enp1s0");
        let e = device(&ppp(None), "pty \"/usr/sbin/pppoe -T 80\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("set the hop's \"device\""), "{e}");
        let e = device(&ppp(None), "noauth\n").unwrap_err().to_string();
        assert!(e.contains("set the hop's \"device\""), "{e}");
    }

    #[test]
    fn pppd_calls_the_provider_and_detaches_once_up() {
        let argv = pppd_argv(Path::new("/usr/sbin/pppd"), "dsl-provider");
        assert_eq!(
            argv,
            [
                "/usr/sbin/pppd",
                "call",
                "dsl-provider",
                "updetach",
                "defaultroute"
            ]
            .map(OsString::from)
        );
    }

    #[test]
    fn ppp_is_root_mode_and_first_hop_only() {
        assert!(allowed(false, 0).is_ok());
        let e = allowed(true, 0).unwrap_err().to_string();
        assert!(e.contains("needs root mode"), "{e}");
        let e = allowed(false, 1).unwrap_err().to_string();
        assert!(e.contains("first hop"), "{e}");
    }

    #[test]
    fn missing_kernel_support_is_one_line() {
        let e = kernel_support(Path::new("/nonexistent/ppp"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no PPP support") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn pppd_exit_codes_are_named() {
        assert_eq!(
            exit_meaning(19),
            "exit 19: authentication to the peer failed"
        );
        assert_eq!(exit_meaning(-9), "killed by signal 9");
    }
}
