//! `network`: the hop chain, the root-mode bridge, split-tunnel routes, the
//! kill switch, the uplink choice and port forwarding (doc/PROFILE.md, network).

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::addr::{Cidr, IfName, PortForward};
use super::hop::Hop;
use super::locate::JsonPath;
use super::read::{array, string, strings, Cx, Obj, Res};

/// The `network` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Hops in order, closest to the host first (the application namespace
    /// after the last hop is implicit).
    pub chain: Vec<Hop>,
    /// Root only: a host-side interface whose traffic goes through the chain.
    pub bridge: Option<Bridge>,
    /// Destinations the application namespace routes through the chain;
    /// None = everything (`0.0.0.0/0`, `::/0`).
    pub routes: Option<Vec<Cidr>>,
    /// Force traffic through each hop's tunnel device (default true).
    pub kill_switch: bool,
    /// Root: leave the host through this interface only.
    pub outbound_interface: Option<IfName>,
    /// Use the rootless (userspace uplink) architecture even as root.
    pub force_slirp: bool,
    /// `uplink` (pallium's own key): which userspace uplink the empty chain
    /// gets rootless (or with `force_slirp`); None = the default (rootless:
    /// direct; `force_slirp`: pasta, else slirp4netns).
    pub uplink: Option<UplinkChoice>,
    /// `port_forwarding.local`: host → application namespace forwards.
    pub port_forwarding: Vec<PortForward>,
    /// Root, empty chain: let the application reach the host's own addresses
    /// (default false: only the internet and the DNS relay).
    pub host_access: bool,
    /// `hooks` (pallium's own key): commands run on the host, as the
    /// supervisor, around the session.
    pub hooks: Hooks,
}

/// `network.hooks`: `post_up` runs once the network is up, before the
/// application starts (a failure ends the session); `pre_down` when the
/// session ends, before the network is torn down. Each a string for
/// `/bin/sh -c` or an argv array; they see the session's `PALLIUM_*`
/// variables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hooks {
    pub post_up: Option<super::Command>,
    pub pre_down: Option<super::Command>,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            chain: Vec::new(),
            bridge: None,
            routes: None,
            kill_switch: true,
            outbound_interface: None,
            force_slirp: false,
            uplink: None,
            port_forwarding: Vec::new(),
            host_access: false,
            hooks: Hooks::default(),
        }
    }
}

/// `network.uplink`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UplinkChoice {
    /// The packet engine serving the application's TUN from the caller's
    /// own network namespace (rootless only).
    Direct,
    Pasta,
    Slirp4netns,
}

/// `network.bridge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bridge {
    /// Host-side interface name; None = generated.
    pub name: Option<IfName>,
    /// Serve DHCP on the bridge (for VMs).
    pub dhcp: bool,
    /// Host traffic to these networks is policy-routed through the chain.
    pub routes: Vec<Cidr>,
    /// Reserved ranges (RFC 1918, loopback, link-local, …) bypass the bridge.
    pub reserved_bypass: bool,
    /// Enslave host devices into a Linux bridge with the host-side veth.
    pub eth_bridge: Option<EthBridge>,
}

/// `network.bridge.eth_bridge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EthBridge {
    pub devices: Vec<IfName>,
    pub name: Option<IfName>,
}

pub(crate) fn network(cx: &mut Cx<'_>, o: &mut Obj<'_>) -> Res<Network> {
    let mut n = Network::default();
    if let Some(v) = o.get("chain") {
        n.chain = super::hop::chain(cx, v, &o.at("chain"))?;
    }
    if let Some(v) = o.get("bridge") {
        n.bridge = Some(bridge(cx, v, o.at("bridge"))?);
    }
    if let Some(v) = o.get("routes") {
        n.routes = Some(cidrs(cx, v, &o.at("routes"))?);
    }
    n.kill_switch = o.bool(cx, "kill_switch", true)?;
    if let Some(v) = o.get("outbound_interface") {
        n.outbound_interface = Some(ifname(cx, v, &o.at("outbound_interface"))?);
    }
    n.force_slirp = o.bool(cx, "force_slirp", false)?;
    if let Some(v) = o.get("uplink") {
        let path = o.at("uplink");
        n.uplink = match string(cx, v, &path)?.as_str() {
            "direct" => Some(UplinkChoice::Direct),
            "pasta" => Some(UplinkChoice::Pasta),
            "slirp4netns" => Some(UplinkChoice::Slirp4netns),
            other => {
                return Err(cx.err(
                    &path,
                    format!("uplink '{other}' is not one of direct, pasta, slirp4netns"),
                ))
            }
        };
    }
    n.host_access = o.bool(cx, "host_access", false)?;
    if let Some(v) = o.get("port_forwarding") {
        n.port_forwarding = port_forwarding(cx, v, o.at("port_forwarding"))?;
    }
    if let Some(v) = o.get("hooks") {
        let mut h = Obj::new(cx, v, o.at("hooks"))?;
        for (key, slot) in [
            ("post_up", &mut n.hooks.post_up),
            ("pre_down", &mut n.hooks.pre_down),
        ] {
            if let Some(v) = h.get(key) {
                *slot = Some(super::command(cx, v, &h.at(key), "leave the hook out")?);
            }
        }
        h.finish(cx);
    }
    Ok(n)
}

fn bridge(cx: &mut Cx<'_>, v: &Value, path: JsonPath) -> Res<Bridge> {
    let mut o = Obj::new(cx, v, path)?;
    let name = o
        .get("name")
        .map(|v| ifname(cx, v, &o.at("name")))
        .transpose()?;
    let routes = match o.get("routes") {
        None => Vec::new(),
        // The comma-separated form: "10.0.0.0/8, 192.168.0.0/16".
        Some(Value::String(s)) => s
            .split(',')
            .filter(|r| !r.trim().is_empty())
            .map(|r| r.parse().map_err(|e: String| cx.err(&o.at("routes"), e)))
            .collect::<Res<Vec<Cidr>>>()
            .and_then(|l| no_overlap(cx, &l, &o.at("routes")).map(|()| l))?,
        Some(v) => cidrs(cx, v, &o.at("routes"))?,
    };
    let dhcp = o.bool(cx, "dhcp", false)?;
    let reserved_bypass = o.bool(cx, "reserved_bypass", true)?;
    let eth_bridge = match o.get("eth_bridge") {
        None => None,
        Some(v) => {
            let mut e = Obj::new(cx, v, o.at("eth_bridge"))?;
            let devices = match e.get("devices") {
                Some(v) => ifnames(cx, v, &e.at("devices"))?,
                None => {
                    return Err(cx.err(&e.path, "eth_bridge needs \"devices\" (e.g. [\"eth0\"])"))
                }
            };
            let name = e
                .get("name")
                .map(|v| ifname(cx, v, &e.at("name")))
                .transpose()?;
            e.finish(cx);
            Some(EthBridge { devices, name })
        }
    };
    o.finish(cx);
    Ok(Bridge {
        name,
        dhcp,
        routes,
        reserved_bypass,
        eth_bridge,
    })
}

fn port_forwarding(cx: &mut Cx<'_>, v: &Value, path: JsonPath) -> Res<Vec<PortForward>> {
    let mut o = Obj::new(cx, v, path)?;
    let rules = match o.get("local") {
        None => Vec::new(),
        Some(v) => {
            let path = o.at("local");
            array(cx, v, &path)?
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let p = path.index(i);
                    string(cx, r, &p)?
                        .parse()
                        .map_err(|e: String| cx.err(&p, e))
                })
                .collect::<Res<_>>()?
        }
    };
    o.finish(cx);
    Ok(rules)
}

fn cidrs(cx: &Cx<'_>, v: &Value, path: &JsonPath) -> Res<Vec<Cidr>> {
    let list = strings(cx, v, path)?;
    let out: Vec<Cidr> = list
        .iter()
        .enumerate()
        .map(|(i, s)| s.parse().map_err(|e: String| cx.err(&path.index(i), e)))
        .collect::<Res<_>>()?;
    no_overlap(cx, &out, path)?;
    Ok(out)
}

/// Overlapping routes would make one of them dead (the longer prefix wins)
/// and usually mean a typo: refuse them, naming both.
fn no_overlap(cx: &Cx<'_>, list: &[Cidr], path: &JsonPath) -> Res<()> {
    for (i, a) in list.iter().enumerate() {
        if let Some(j) = list[..i].iter().position(|b| b.overlaps(a)) {
            return Err(cx.err(
                &path.index(i),
                format!(
                    "route {a} overlaps route {} (entry {j}): list each network once",
                    list[j]
                ),
            ));
        }
    }
    Ok(())
}

pub(crate) fn ifname(cx: &Cx<'_>, v: &Value, path: &JsonPath) -> Res<IfName> {
    IfName::try_from(string(cx, v, path)?).map_err(|e| cx.err(path, e))
}

fn ifnames(cx: &Cx<'_>, v: &Value, path: &JsonPath) -> Res<Vec<IfName>> {
    array(cx, v, path)?
        .iter()
        .enumerate()
        .map(|(i, d)| ifname(cx, d, &path.index(i)))
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::profile::{parse, Profile};

    fn ok(text: &str) -> Profile {
        parse("p.json", text).unwrap().profile
    }

    fn err(text: &str) -> String {
        parse("p.json", text).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let n = ok("{}").network;
        assert!(n.kill_switch && !n.force_slirp);
        assert!(n.chain.is_empty() && n.bridge.is_none() && n.routes.is_none());
        assert!(n.port_forwarding.is_empty());
        assert!(!n.host_access);
    }

    #[test]
    fn overlapping_routes_are_refused_naming_the_key() {
        let e = err(r#"{"network": {"routes": ["10.0.0.0/8", "192.0.2.0/24", "10.1.0.0/16"]}}"#);
        assert!(e.contains("network.routes[2]"), "{e}");
        assert!(e.contains("overlaps route 10.0.0.0/8"), "{e}");
        let e = err(r#"{"network": {"bridge": {"routes": "2001:db8::/32, 2001:db8:1::/48"}}}"#);
        assert!(e.contains("network.bridge.routes"), "{e}");
        // Different families and disjoint networks are fine.
        let n = ok(r#"{"network": {"routes": ["0.0.0.0/1", "128.0.0.0/1", "::/0"]}}"#).network;
        assert_eq!(n.routes.unwrap().len(), 3);
    }

    #[test]
    fn host_access_is_a_boolean() {
        assert!(
            ok(r#"{"network": {"host_access": true}}"#)
                .network
                .host_access
        );
        assert!(
            !ok(r#"{"network": {"host_access": null}}"#)
                .network
                .host_access
        );
        let e = err(r#"{"network": {"host_access": "yes"}}"#);
        assert!(
            e.contains(
                "network.host_access: expected true or false, found a string (line 1, column 29)"
            ),
            "{e}"
        );
    }

    #[test]
    fn routes_and_flags() {
        let n = ok(r#"{"network": {"uplink": "slirp4netns"}}"#).network;
        assert_eq!(n.uplink, Some(super::UplinkChoice::Slirp4netns));
        assert!(ok(r#"{"network": {}}"#).network.uplink.is_none());
        assert!(err(r#"{"network": {"uplink": "vpn"}}"#).contains("not one of direct"));
        let n = ok(r#"{"network": {"routes": ["10.0.0.0/8", "2001:db8::/32"], "kill_switch": false, "force_slirp": true, "outbound_interface": "eth0"}}"#).network;
        assert_eq!(n.routes.unwrap().len(), 2);
        assert!(!n.kill_switch && n.force_slirp);
        assert_eq!(n.outbound_interface.unwrap().as_str(), "eth0");
    }

    #[test]
    fn bad_route_names_index_and_position() {
        let e = err("{\"network\": {\"routes\": [\"10.0.0.0/8\",\n \"10.0.0.1/8\"]}}");
        assert!(
            e.contains("network.routes[1]: network \"10.0.0.1/8\" has host bits set"),
            "{e}"
        );
        assert!(e.ends_with("(line 2, column 2)"), "{e}");
    }

    #[test]
    fn bridge_with_all_keys_and_comma_routes() {
        let b = ok(r#"{"network": {"bridge": {"name": "torbr", "dhcp": true, "routes": "10.0.0.0/8, 192.168.0.0/16", "reserved_bypass": false, "eth_bridge": {"devices": ["eth0"], "name": "br0"}}}}"#)
            .network
            .bridge
            .unwrap();
        assert_eq!(b.name.unwrap().as_str(), "torbr");
        assert!(b.dhcp && !b.reserved_bypass);
        assert_eq!(b.routes.len(), 2);
        assert_eq!(b.eth_bridge.unwrap().devices[0].as_str(), "eth0");
    }

    #[test]
    fn bridge_name_too_long_is_an_error() {
        let e = err(r#"{"network": {"bridge": {"name": "averyveryverylongname"}}}"#);
        assert!(
            e.contains("network.bridge.name: invalid interface name"),
            "{e}"
        );
    }

    #[test]
    fn port_forwarding_rules_and_errors() {
        let n = ok(
            r#"{"network": {"port_forwarding": {"local": ["tcp://127.0.0.1:8080:127.0.0.1:80"]}}}"#,
        )
        .network;
        assert_eq!(
            n.port_forwarding[0].to_string(),
            "tcp://127.0.0.1:8080:127.0.0.1:80"
        );
        let e =
            err(r#"{"network": {"port_forwarding": {"local": ["icmp://1.2.3.4:1:5.6.7.8:2"]}}}"#);
        assert!(e.contains("network.port_forwarding.local[0]: The scheme of the port forwarding icmp is not either tcp or udp (line 1, column 44)"), "{e}");
        let e = err(r#"{"network": {"port_forwarding": {"local": ["tcp://1.2.3.4:1"]}}}"#);
        assert!(
            e.contains("Port forwarding expected to have the following scheme"),
            "{e}"
        );
        let e = err(r#"{"network": {"port_forwarding": {"local": "tcp://1.2.3.4:1:5.6.7.8:2"}}}"#);
        assert!(
            e.contains("network.port_forwarding.local: expected an array, found a string"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_are_errors() {
        let e = err(r#"{"network": {"kill_switch": "yes"}}"#);
        assert!(
            e.contains(
                "network.kill_switch: expected true or false, found a string (line 1, column 29)"
            ),
            "{e}"
        );
        let e = err(r#"{"network": []}"#);
        assert!(
            e.contains("network: expected an object, found an array"),
            "{e}"
        );
    }
}
