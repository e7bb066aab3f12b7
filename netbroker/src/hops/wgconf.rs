//! The wireguard hop's configuration file: wg-quick's format ([Interface]
//! PrivateKey, Address, DNS, MTU; any number of [Peer] with PublicKey, an
//! optional PresharedKey, AllowedIPs, Endpoint, PersistentKeepalive),
//! parsed into checked values. wg-quick's own keys that do not apply in a
//! namespace of ours (Table, PreUp/PostUp…, SaveConfig, ListenPort, FwMark)
//! are reported and ignored; anything else is an error.

#![forbid(unsafe_code)]

use std::net::IpAddr;

use base64::Engine as _;

/// A parsed configuration.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct WgConfig {
    pub private_key: [u8; 32],
    /// The interface's addresses with their prefix length.
    pub addresses: Vec<(IpAddr, u8)>,
    pub dns: Vec<IpAddr>,
    pub mtu: Option<u32>,
    pub peers: Vec<WgPeerConf>,
    /// Keys that were ignored, for a progress line.
    pub ignored: Vec<String>,
}

impl std::fmt::Debug for WgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgConfig")
            .field("addresses", &self.addresses)
            .field("dns", &self.dns)
            .field("mtu", &self.mtu)
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

/// One [Peer].
#[derive(Clone, PartialEq, Eq)]
pub(super) struct WgPeerConf {
    pub public_key: [u8; 32],
    pub preshared_key: Option<[u8; 32]>,
    pub allowed_ips: Vec<(IpAddr, u8)>,
    /// Host (name or address) and port, resolved later in N(i−1).
    pub endpoint: Option<(String, u16)>,
    pub keepalive: Option<u16>,
}

impl std::fmt::Debug for WgPeerConf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgPeerConf")
            .field("public_key", &short_key(&self.public_key))
            .field("allowed_ips", &self.allowed_ips)
            .field("endpoint", &self.endpoint)
            .field("keepalive", &self.keepalive)
            .finish_non_exhaustive()
    }
}

/// A public key as users see it in `wg show`, shortened: "AbCdEfGh…".
pub(super) fn short_key(key: &[u8; 32]) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(key);
    format!("{}…", &b[..8])
}

/// Keys of wg-quick that make no sense here: ignored, with a note.
const IGNORED: &[&str] = &[
    "table",
    "preup",
    "postup",
    "predown",
    "postdown",
    "saveconfig",
    "listenport",
    "fwmark",
];

/// Parse the text of a configuration file; the error says which line and
/// what is wrong (never a key's value).
pub(super) fn parse(text: &str) -> Result<WgConfig, String> {
    #[derive(PartialEq)]
    enum Section {
        None,
        Interface,
        Peer,
    }
    let mut section = Section::None;
    let mut private_key = None;
    let mut addresses = Vec::new();
    let mut dns = Vec::new();
    let mut mtu = None;
    let mut peers: Vec<PeerDraft> = Vec::new();
    let mut ignored = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = |what: String| format!("line {line_no}: {what}");
        if line.starts_with('[') {
            section = match line.to_ascii_lowercase().as_str() {
                "[interface]" => Section::Interface,
                "[peer]" => {
                    peers.push(PeerDraft::default());
                    Section::Peer
                }
                _ => {
                    return Err(at(format!(
                        "unknown section {line} (use [Interface] or [Peer])"
                    )))
                }
            };
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(at("expected 'Key = Value'".into()));
        };
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim();
        let list = || value.split(',').map(str::trim).filter(|v| !v.is_empty());
        match (&section, key.as_str()) {
            (Section::None, _) => {
                return Err(at(format!("'{key}' before any [Interface] or [Peer]")))
            }
            (_, k) if IGNORED.contains(&k) => ignored.push(k.to_string()),
            (Section::Interface, "privatekey") => private_key = Some(parse_key(value).map_err(at)?),
            (Section::Interface, "address") => {
                for a in list() {
                    addresses.push(parse_prefix(a).map_err(at)?);
                }
            }
            (Section::Interface, "dns") => {
                for d in list() {
                    // wg-quick takes search domains here too; we have no
                    // use for them behind a hop.
                    match d.parse::<IpAddr>() {
                        Ok(ip) => dns.push(ip),
                        Err(_) => ignored.push(format!("dns search domain {d}")),
                    }
                }
            }
            (Section::Interface, "mtu") => {
                mtu = Some(
                    value
                        .parse::<u32>()
                        .ok()
                        .filter(|m| (1280..=65535).contains(m))
                        .ok_or_else(|| {
                            at(format!("MTU {value} is not a number from 1280 to 65535"))
                        })?,
                )
            }
            (Section::Peer, k) => {
                let p = peers.last_mut().expect("a [Peer] line pushed one");
                match k {
                    "publickey" => p.public_key = Some(parse_key(value).map_err(at)?),
                    "presharedkey" => p.preshared_key = Some(parse_key(value).map_err(at)?),
                    "allowedips" => {
                        for a in list() {
                            p.allowed_ips.push(parse_prefix(a).map_err(at)?);
                        }
                    }
                    "endpoint" => p.endpoint = Some(parse_endpoint(value).map_err(at)?),
                    "persistentkeepalive" => {
                        p.keepalive = match value {
                            "off" | "0" => None,
                            v => Some(v.parse::<u16>().map_err(|_| {
                                at(format!(
                                    "PersistentKeepalive {v} is not a number of seconds"
                                ))
                            })?),
                        }
                    }
                    _ => return Err(at(format!("unknown key '{key}' in [Peer]"))),
                }
            }
            (Section::Interface, _) => {
                return Err(at(format!("unknown key '{key}' in [Interface]")))
            }
        }
    }
    let private_key = private_key.ok_or("[Interface] has no PrivateKey")?;
    if addresses.is_empty() {
        return Err("[Interface] has no Address".into());
    }
    if peers.is_empty() {
        return Err("no [Peer]".into());
    }
    let peers = peers
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            Ok(WgPeerConf {
                public_key: p
                    .public_key
                    .ok_or_else(|| format!("[Peer] {} has no PublicKey", i + 1))?,
                preshared_key: p.preshared_key,
                allowed_ips: p.allowed_ips,
                endpoint: p.endpoint,
                keepalive: p.keepalive,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    if peers.iter().all(|p| p.endpoint.is_none()) {
        return Err("no [Peer] has an Endpoint: nothing to connect to".into());
    }
    Ok(WgConfig {
        private_key,
        addresses,
        dns,
        mtu,
        peers,
        ignored,
    })
}

#[derive(Default)]
struct PeerDraft {
    public_key: Option<[u8; 32]>,
    preshared_key: Option<[u8; 32]>,
    allowed_ips: Vec<(IpAddr, u8)>,
    endpoint: Option<(String, u16)>,
    keepalive: Option<u16>,
}

/// A base64 key of 32 bytes.
fn parse_key(v: &str) -> Result<[u8; 32], String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v)
        .map_err(|_| "a key is not base64 (make one with `wg genkey`)".to_string())?;
    bytes
        .try_into()
        .map_err(|_| "a key is not 32 bytes (make one with `wg genkey`)".to_string())
}

/// "10.0.0.2/32", "fd00::2/128", or an address alone (a host prefix).
fn parse_prefix(v: &str) -> Result<(IpAddr, u8), String> {
    let (ip, len) = match v.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (v, None),
    };
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("'{v}' is not an IP address or prefix"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("'{v}' has a bad prefix length"))?,
        None => max,
    };
    Ok((ip, len))
}

/// "host:port" or "[v6]:port".
fn parse_endpoint(v: &str) -> Result<(String, u16), String> {
    let bad = || format!("Endpoint '{v}' is not host:port");
    let (host, port) = if let Some(rest) = v.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        (h, p)
    } else {
        v.rsplit_once(':').ok_or_else(bad)?
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(bad)?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "YNqHbfBQKaGvzefSSuufuGBnYvq3DXRzpRcDQ3jqZ0E=";
    const K2: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    fn conf(peers: &str) -> String {
        format!(
            "[Interface]\nPrivateKey = {K1}\nAddress = 10.9.0.2/32, fd09::2/128\nDNS = 10.9.0.1, example.org\nMTU = 1420\n\n{peers}"
        )
    }

    #[test]
    fn a_wg_quick_file_with_two_peers_parses() {
        let text = conf(&format!(
            "[Peer]\nPublicKey = {K2}\nAllowedIPs = 0.0.0.0/0, ::/0\nEndpoint = vpn.example:51820 # home\nPersistentKeepalive = 25\n\n[Peer]\nPublicKey = {K1}\nPresharedKey = {K2}\nAllowedIPs = 10.10.0.0/16\nEndpoint = [fd00::1]:4000\n"
        ));
        let c = parse(&text).unwrap();
        assert_eq!(
            c.addresses,
            vec![
                ("10.9.0.2".parse().unwrap(), 32),
                ("fd09::2".parse().unwrap(), 128)
            ]
        );
        assert_eq!(c.dns, vec!["10.9.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.mtu, Some(1420));
        assert_eq!(c.peers.len(), 2);
        assert_eq!(c.peers[0].endpoint, Some(("vpn.example".into(), 51820)));
        assert_eq!(c.peers[0].keepalive, Some(25));
        assert_eq!(c.peers[0].preshared_key, None);
        assert!(c.peers[1].preshared_key.is_some());
        assert_eq!(c.peers[1].endpoint, Some(("fd00::1".into(), 4000)));
    }

    #[test]
    fn preshared_key_is_optional() {
        let text = conf(&format!("[Peer]\nPublicKey = {K2}\nEndpoint = 1.2.3.4:1\n"));
        assert_eq!(parse(&text).unwrap().peers[0].preshared_key, None);
    }

    #[test]
    fn a_missing_private_key_is_named() {
        let text =
            format!("[Interface]\nAddress = 10.0.0.2\n[Peer]\nPublicKey = {K2}\nEndpoint = a:1\n");
        assert_eq!(parse(&text).unwrap_err(), "[Interface] has no PrivateKey");
    }

    #[test]
    fn a_bad_key_names_its_line_not_its_value() {
        let text = conf("[Peer]\nPublicKey = c2VjcmV0\nEndpoint = a:1\n");
        let e = parse(&text).unwrap_err();
        assert!(e.starts_with("line 8: a key is not 32 bytes"), "{e}");
        assert!(!e.contains("c2VjcmV0"), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors_and_wg_quick_keys_are_ignored() {
        let text = conf(&format!(
            "[Peer]\nPublicKey = {K2}\nEndpoint = a:1\nFoo = 1\n"
        ));
        assert!(parse(&text)
            .unwrap_err()
            .contains("unknown key 'foo' in [Peer]"));
        let text = conf(&format!(
            "PostUp = iptables -A x\n[Peer]\nPublicKey = {K2}\nEndpoint = a:1\n"
        ));
        assert_eq!(
            parse(&text).unwrap().ignored,
            vec!["dns search domain example.org", "postup"]
        );
    }

    #[test]
    fn a_peer_needs_a_key_and_some_peer_an_endpoint() {
        let e = parse(&conf("[Peer]\nEndpoint = a:1\n")).unwrap_err();
        assert_eq!(e, "[Peer] 1 has no PublicKey");
        let e = parse(&conf(&format!("[Peer]\nPublicKey = {K2}\n"))).unwrap_err();
        assert!(e.contains("no [Peer] has an Endpoint"), "{e}");
    }

    #[test]
    fn endpoints_need_a_port() {
        assert!(parse_endpoint("host").is_err());
        assert!(parse_endpoint("[::1]").is_err());
        assert!(parse_endpoint("h:0").is_err());
        assert_eq!(parse_endpoint("h:5").unwrap(), ("h".into(), 5));
    }
}
