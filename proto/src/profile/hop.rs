//! `network.chain` entries (doc/PROFILE.md, hops): one [`HopKind`] variant per hop
//! type, the options every hop takes ([`HopOptions`]), and the registry
//! mapping the case-insensitive `type` to its parser.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::addr::{DnsServer, Endpoint, IfName};
use super::check;
use super::locate::JsonPath;
use super::network::ifname;
use super::read::{array, kind, string, strings, Cx, Obj, Res};

/// One hop of the chain: what it is and the options common to all hops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    pub kind: HopKind,
    pub options: HopOptions,
}

/// Options every hop accepts (except `script`, whose extra keys are env vars).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HopOptions {
    /// Nameservers for the next namespace's resolv.conf (overrides the hop's own).
    pub dns: Option<Vec<DnsServer>>,
    /// Suppress the hop's tool output; None = the profile's `run.quiet`.
    pub quiet: Option<bool>,
    /// `<tool>_path` keys: tool name (`tor`, `tun2socks`, …) → binary path.
    pub tool_paths: BTreeMap<String, String>,
}

/// The hop types, one variant each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HopKind {
    Socks(Socks),
    Http(Http),
    Tor(Tor),
    Openvpn(Openvpn),
    Wireguard(Wireguard),
    Ssh(Ssh),
    Socksapp(Socksapp),
    Script(Script),
    Ppp(Ppp),
    Dummy,
    Tun2socks(Tun2socks),
}

impl HopKind {
    /// Whether a rootless chain starting with this hop starts in the
    /// caller's own network namespace (no pasta), as a root one starts in
    /// the host's: its transport is the engine's dials, a daemon listening
    /// on a unix socket only the session reaches (tor), or ssh in a
    /// loopback-only namespace of its own with a connection the netbroker
    /// opened. Not `socksapp`, a program told a loopback TCP port, which
    /// any local user could use there: it keeps pasta's namespace (root: a
    /// namespace of its own), whose loopback is the session's alone. Nor
    /// `openvpn`, whose TUN the netbroker makes in N0 before moving it into
    /// N1: it may not in the caller's namespace, and as root it keeps the
    /// device off the host's. Nor `script`, whose holder makes mount and pid
    /// namespaces (which needs the session's user namespace), nor `ppp`
    /// (root mode only).
    pub fn rootless_starts_in_caller(&self) -> bool {
        !matches!(
            self,
            HopKind::Socksapp(_) | HopKind::Openvpn(_) | HopKind::Script(_) | HopKind::Ppp(_)
        )
    }
}

/// SOCKS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SocksVersion {
    V4,
    V4a,
    V5,
}

/// `socks`: tun2socks to a SOCKS proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Socks {
    pub address: Endpoint,
    pub version: SocksVersion,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// `http`: tun2socks to an HTTP CONNECT proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Http {
    pub address: Endpoint,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// `tor`: a tor client plus a SOCKS hop to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tor {
    /// Total time to get a circuit (default 300 s).
    pub timeout: Duration,
    /// Per-circuit timeout; tor gets SIGHUP when it expires (default 60 s).
    pub circuit_build_timeout: Duration,
    /// Use and expose tor's DNS port (default true).
    pub builtin_dns: bool,
    /// Local user tor runs as (root mode); None = least privileged user.
    /// Never root ([`check::hop_user`]), re-checked when decoded.
    #[serde(deserialize_with = "check::de::opt_hop_user")]
    pub user: Option<String>,
    /// Map .onion names to virtual addresses (default true).
    pub onion_support: bool,
    /// Extra tor command-line arguments.
    pub tor_args: Vec<String>,
    /// `onion_service`: publish a port of the application's namespace as
    /// an onion service of this hop's tor (a pallium addition).
    pub onion_service: Option<OnionService>,
}

/// `"onion_service": {"port": 80, "target": 8080}` on a tor hop: Tor's own
/// terms are "onion service" and `HiddenServicePort VIRTPORT TARGET`;
/// `port` is the port Tor clients connect to at the `.onion` address,
/// `target` (default: `port`) the TCP port in the application's network
/// namespace that answers them (on its loopback, 127.0.0.1 or ::1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnionService {
    pub port: u16,
    pub target: u16,
}

/// `openvpn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Openvpn {
    /// Path of the .ovpn file.
    pub config: String,
    /// The file's text, read by the supervisor as the caller (before it
    /// drops its identity) and sent to the netbroker, which never opens a
    /// path a profile names; None until then.
    #[serde(default)]
    pub config_text: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Default 60 s.
    pub timeout: Duration,
}

/// `wireguard`: WireGuard from a wg-quick style file (userspace in a packet
/// engine, or the kernel's; netbroker/src/hops/wireguard.rs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wireguard {
    pub config: String,
}

/// `ssh`: `ssh -N -D` plus a SOCKS hop to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ssh {
    /// `[user@]host` as for ssh.
    pub destination: String,
    /// Local user to run ssh as (root mode); None = `nobody`. Never root.
    #[serde(deserialize_with = "check::de::opt_hop_user")]
    pub user: Option<String>,
    pub ssh_args: Vec<String>,
    /// Default 30 s.
    pub timeout: Duration,
}

/// `socksapp`: any program opening a SOCKS listener on `<ns_ip>:1080`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Socksapp {
    /// Never root.
    #[serde(deserialize_with = "check::de::hop_user")]
    pub user: String,
    #[serde(deserialize_with = "check::de::argv")]
    pub cmd: Vec<String>,
    /// Default 30 s.
    pub timeout: Duration,
}

/// `script`: run a program in the hop's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Script {
    /// argv (a string `path` is one program, not a shell line).
    #[serde(deserialize_with = "check::de::argv")]
    pub path: Vec<String>,
    /// Kill-switch device (default `tun0`).
    pub interface: IfName,
    /// Every other key `k` as `PALLIUM_SCRIPT_<K>` (including `interface`,
    /// `dns` and `quiet` when given, as in the original).
    pub env: BTreeMap<String, String>,
}

/// `ppp`: pppd on a macvlan of a host device (root, first hop only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ppp {
    /// `/etc/ppp/peers/<provider>` (default "provider").
    pub provider: String,
    /// None = read from the peers file.
    pub device: Option<IfName>,
}

/// `tun2socks`: the base of socks/http, with an explicit protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tun2socks {
    /// tun2socks proxy scheme: `socks5`, `socks4`, `http`, …
    pub protocol: String,
    pub address: Endpoint,
    pub username: Option<String>,
    pub password: Option<String>,
}

type ParseFn = fn(&mut Cx<'_>, &mut Obj<'_>) -> Res<HopKind>;

/// Whether the netbroker builds a hop type yet (`run` and `check` refuse the
/// others with one line). The netbroker's registry (an exhaustive match in
/// `netbroker/src/hops/mod.rs`) is held equal to this column by a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Built {
    Yes,
    NotYet,
}

/// The registry: `type` (lower case) → parser, and whether it is built.
/// Adding a hop type adds a line here and an arm in the netbroker's.
const HOP_TYPES: &[(&str, ParseFn, Built)] = &[
    ("socks", socks, Built::Yes),
    ("http", http, Built::Yes),
    ("tor", tor, Built::Yes),
    ("openvpn", openvpn, Built::Yes),
    ("wireguard", wireguard, Built::Yes),
    ("ssh", ssh, Built::Yes),
    ("socksapp", socksapp, Built::Yes),
    ("script", script, Built::Yes),
    ("ppp", ppp, Built::Yes),
    ("dummy", |_, _| Ok(HopKind::Dummy), Built::NotYet),
    ("tun2socks", tun2socks, Built::Yes),
];

/// Every hop type name with whether it is built, in the registry's order.
pub fn hop_types() -> impl Iterator<Item = (&'static str, Built)> {
    HOP_TYPES.iter().map(|(n, _, b)| (*n, *b))
}

impl HopKind {
    /// The type name as written in profiles.
    pub fn name(&self) -> &'static str {
        match self {
            HopKind::Socks(_) => "socks",
            HopKind::Http(_) => "http",
            HopKind::Tor(_) => "tor",
            HopKind::Openvpn(_) => "openvpn",
            HopKind::Wireguard(_) => "wireguard",
            HopKind::Ssh(_) => "ssh",
            HopKind::Socksapp(_) => "socksapp",
            HopKind::Script(_) => "script",
            HopKind::Ppp(_) => "ppp",
            HopKind::Dummy => "dummy",
            HopKind::Tun2socks(_) => "tun2socks",
        }
    }

    /// Whether the netbroker builds this hop type ([`HOP_TYPES`]).
    pub fn built(&self) -> bool {
        hop_types().any(|(n, b)| n == self.name() && b == Built::Yes)
    }
}

pub(crate) fn chain(cx: &mut Cx<'_>, v: &Value, path: &JsonPath) -> Res<Vec<Hop>> {
    let items = array(cx, v, path)?;
    items
        .iter()
        .enumerate()
        .map(|(i, h)| hop(cx, h, path.index(i)))
        .collect()
}

fn hop(cx: &mut Cx<'_>, v: &Value, path: JsonPath) -> Res<Hop> {
    let mut o = Obj::new(cx, v, path)?;
    let known = || {
        HOP_TYPES
            .iter()
            .map(|(n, _, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(t) = o.get("type") else {
        return Err(cx.err(&o.path, format!("hop needs \"type\" (one of {})", known())));
    };
    let t = string(cx, t, &o.at("type"))?;
    let lower = t.to_lowercase();
    let Some((_, parse, _)) = HOP_TYPES.iter().find(|(n, _, _)| *n == lower) else {
        return Err(cx.err(
            &o.at("type"),
            // Escaped: the message is one line, whatever the profile holds.
            format!(
                "unknown hop type '{}' (known: {})",
                t.escape_debug(),
                known()
            ),
        ));
    };
    if lower != "tor" && o.has("onion_service") {
        return Err(cx.err(
            &o.at("onion_service"),
            format!(
                "onion_service is only for tor hops (a {lower} hop cannot publish an onion service); \
                 move it to a tor hop of the chain"
            ),
        ));
    }
    let kind = parse(cx, &mut o)?;
    let options = if matches!(kind, HopKind::Script(_)) {
        HopOptions::default()
    } else {
        options(cx, &mut o)?
    };
    o.finish(cx);
    Ok(Hop { kind, options })
}

fn options(cx: &mut Cx<'_>, o: &mut Obj<'_>) -> Res<HopOptions> {
    let dns = match o.get("dns") {
        None => None,
        Some(v) => {
            let p = o.at("dns");
            let list = strings(cx, v, &p)?;
            let servers = list
                .iter()
                .enumerate()
                .map(|(i, s)| s.parse().map_err(|e: String| cx.err(&p.index(i), e)))
                .collect::<Res<_>>()?;
            Some(servers)
        }
    };
    let quiet = match o.get("quiet") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(v) => return Err(cx.wrong_type(&o.at("quiet"), "true or false", v)),
    };
    let mut tool_paths = BTreeMap::new();
    let tools: Vec<(String, &Value)> = o
        .rest()
        .filter_map(|(k, v)| k.strip_suffix("_path").map(|t| (t.to_string(), v)))
        .filter(|(t, _)| !t.is_empty())
        .collect();
    for (tool, v) in tools {
        let key = format!("{tool}_path");
        o.consume(&key);
        if !v.is_null() {
            tool_paths.insert(tool, string(cx, v, &o.at(&key))?);
        }
    }
    Ok(HopOptions {
        dns,
        quiet,
        tool_paths,
    })
}

fn address(cx: &Cx<'_>, o: &mut Obj<'_>, what: &str, default_port: Option<u16>) -> Res<Endpoint> {
    let example = match default_port {
        Some(p) => format!("e.g. \"192.0.2.1:{p}\""),
        None => "e.g. \"192.0.2.1:1080\"; the port is required".to_string(),
    };
    let s = o.need_str(cx, "address", what, &example)?;
    Endpoint::parse(&s, default_port).map_err(|e| cx.err(&o.at("address"), e))
}

fn socks(cx: &mut Cx<'_>, o: &mut Obj<'_>) -> Res<HopKind> {
    let address = address(cx, o, "socks hop", Some(1080))?;
    let version = match o.get("version") {
        None => SocksVersion::V5,
        Some(v) => {
            let s = match v {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.to_ascii_lowercase(),
                other => return Err(cx.wrong_type(&o.at("version"), "4, \"4a\" or 5", other)),
            };
            match s.as_str() {
                "4" => SocksVersion::V4,
                "4a" => SocksVersion::V4a,
                "5" => SocksVersion::V5,
                _ => {
                    return Err(cx.err(
                        &o.at("version"),
                        format!("unknown SOCKS version {v} (expected 4, \"4a\" or 5)"),
                    ))
                }
            }
        }
    };
    Ok(HopKind::Socks(Socks {
        address,
        version,
        username: o.str(cx, "username")?,
        password: o.str(cx, "password")?,
    }))
}

fn http(cx: &mut Cx<'_>, o: &mut Obj<'_>) -> Res<HopKind> {
    Ok(HopKind::Http(Http {
        address: address(cx, o, "http hop", Some(3128))?,
        username: o.str(cx, "username")?,
        password: o.str(cx, "password")?,
    }))
}

fn tor(cx: &mut Cx<'_>, o: &mut Obj<'_>) -> Res<HopKind> {
    Ok(HopKind::Tor(Tor {
        timeout: o.secs(cx, "timeout", 300)?,
        circuit_build_timeout: o.secs(cx, "circuit_build_timeout", 60)?,
        builtin_dns: o.bool(cx, "builtin_dns", true)?,
        user: hop_user(cx, o)?,
        onion_support: o.bool(cx, "onion_support", true)?,
        tor_args: o.strings(cx, "tor_args")?.unwrap_or_default(),
        onion_service: match o.get("onion_service") {
            None => None,
            Some(v) => Some(onion_service(cx, v, o.at("onion_service"))?),
        },
    }))
}

fn onion_service(cx: &mut Cx<'_>, v: &Value, path: JsonPath) -> Res<OnionService> {
    let mut o = Obj::new(cx, v, path)?;
    let port = |cx: &Cx<'_>, o: &mut Obj<'_>, key: &str| -> Res<Option<u16>> {
        let Some(v) = o.get(key) else {
            return Ok(None);
        };
        match v.as_u64().and_then(|n| u16::try_from(n).ok()) {
            Some(n) if n != 0 => Ok(Some(n)),
            _ => Err(cx.err(
                &o.at(key),
                format!("expected a TCP port (1 to 65535), found {v}"),
            )),
        }
    };
    let Some(p) = port(cx, &mut o, "port")? else {
        return Err(cx.err(
            &o.path,
            "onion_service needs \"port\" (the port Tor clients connect to, e.g. 80)",
        ));
    };
    let target = port(cx, &mut o, "target")?.unwrap_or(p);
    o.finish(cx);
    Ok(OnionService { port: p, target })
}

fn openvpn(cx: &mut Cx<'_>, o: &mut Obj<'_>) -> Res<HopKind> {
    Ok(HopKind::Openvpn(Openvpn {
        config: o.need_str(cx, "config", "openvpn hop", "the path of an .ovpn file")?,
        config_text: None,
        username: o.str(cx, "username")?,
        password: o.str(cx, "password")?,
        timeout: o.secs(cx, "timeout", 60)?,
    }))
}

fn wireguard(cx: &mut Cx<'_>, o: &mut Obj<'_>) -> Res<HopKind> {
    Ok(HopKind::Wireguard(Wireguard {
        config: o.need_str(
            cx,
            "config",
            "wireguard hop",
            "the path of a wg-quick style .conf file",
        )?,
    }))
}

fn ssh(cx: &mut Cx<'_>, o: &mut Obj<'_>) -> Res<HopKind> {
    Ok(HopKind::Ssh(Ssh {
        destination: o.need_str(cx, "destination", "ssh hop", "e.g. \"user@host.example\"")?,
        user: hop_user(cx, o)?,
        ssh_args: o.strings(cx, "ssh_args")?.unwrap_or_default(),
        timeout: o.secs(cx, "timeout", 30)?,
    }))
}

fn socksapp(cx: &mut Cx<'_>, o: &mut Obj<'_>) -> Res<HopKind> {
    let user = o.need_str(
        cx,
        "user",
        "socksapp hop",
        "the local user to run the program as",
    )?;
    check::hop_user(&user).map_err(|e| cx.err(&o.at("user"), e))?;
    let cmd = argv(cx, o, "cmd", "socksapp hop")?;
    Ok(HopKind::Socksapp(Socksapp {
        user,
        cmd,
        timeout: o.secs(cx, "timeout", 30)?,
    }))
}

fn script(cx: &mut Cx<'_>, o: &mut Obj<'_>) -> Res<HopKind> {
    let path = argv(cx, o, "path", "script hop")?;
    let interface = match o.get("interface") {
        None => IfName::try_from("tun0".to_string()).expect("tun0 is a valid name"),
        Some(v) => ifname(cx, v, &o.at("interface"))?,
    };
    let mut env = BTreeMap::new();
    let extra: Vec<(String, &Value)> = o
        .map
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "type" | "path"))
        .map(|(k, v)| (k.clone(), v))
        .collect();
    for (k, v) in extra {
        o.consume(&k);
        let p = o.at(&k);
        if k.is_empty() || k.contains(['=', '\0']) {
            return Err(cx.err(&p, "script hop option names become environment variables and cannot be empty or contain '='"));
        }
        let Value::String(_) = v else {
            return Err(cx.err(&p, format!("expected a string (script hop options become environment variables PALLIUM_SCRIPT_<KEY>), found {}", kind(v))));
        };
        env.insert(
            format!("PALLIUM_SCRIPT_{}", k.to_uppercase()),
            string(cx, v, &p)?,
        );
    }
    Ok(HopKind::Script(Script {
        path,
        interface,
        env,
    }))
}

fn ppp(cx: &mut Cx<'_>, o: &mut Obj<'_>) -> Res<HopKind> {
    let provider = o.str(cx, "provider")?.unwrap_or_else(|| "provider".into());
    if provider.is_empty() || provider.contains('/') || provider == "." || provider == ".." {
        return Err(cx.err(
            &o.at("provider"),
            format!("invalid ppp provider {provider:?} (a file name in /etc/ppp/peers, no '/')"),
        ));
    }
    let device = o
        .get("device")
        .map(|v| ifname(cx, v, &o.at("device")))
        .transpose()?;
    Ok(HopKind::Ppp(Ppp { provider, device }))
}

fn tun2socks(cx: &mut Cx<'_>, o: &mut Obj<'_>) -> Res<HopKind> {
    let protocol = o.need_str(
        cx,
        "protocol",
        "tun2socks hop",
        "e.g. \"socks5\" or \"http\"",
    )?;
    if protocol.is_empty() || !protocol.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(cx.err(
            &o.at("protocol"),
            format!("invalid tun2socks protocol {protocol:?} (e.g. \"socks5\" or \"http\")"),
        ));
    }
    Ok(HopKind::Tun2socks(Tun2socks {
        protocol,
        address: address(cx, o, "tun2socks hop", None)?,
        username: o.str(cx, "username")?,
        password: o.str(cx, "password")?,
    }))
}

/// A hop's optional `user` ([`check::hop_user`]: never root).
fn hop_user(cx: &Cx<'_>, o: &mut Obj<'_>) -> Res<Option<String>> {
    let user = o.str(cx, "user")?;
    if let Some(u) = &user {
        check::hop_user(u).map_err(|e| cx.err(&o.at("user"), e))?;
    }
    Ok(user)
}

/// A required program: a string (one program path) or a non-empty argv array.
fn argv(cx: &Cx<'_>, o: &mut Obj<'_>, key: &str, what: &str) -> Res<Vec<String>> {
    let p = o.at(key);
    match o.get(key) {
        None => Err(cx.err(
            &o.path,
            format!("{what} needs \"{key}\" (a program path or an argv array)"),
        )),
        Some(v @ Value::String(_)) => Ok(vec![string(cx, v, &p)?]),
        Some(v @ Value::Array(_)) => {
            let list = strings(cx, v, &p)?;
            if list.is_empty() {
                return Err(cx.err(&p, "the argv array is empty; give at least the program"));
            }
            for (i, a) in list.iter().enumerate() {
                check::text(a).map_err(|e| cx.err(&p.index(i), e))?;
            }
            Ok(list)
        }
        Some(v) => Err(cx.wrong_type(&p, "a program path or an argv array", v)),
    }
}
