//! The JSON Schema of the profile FORMAT (what users write), shipped as
//! `extra/pallium-profile.schema.json` for editors (`"$schema"` in a profile).
//!
//! The parser (`read.rs` and friends) converts JSON by hand, so these types
//! are not the parser's: they are serde-shaped mirrors that exist only to
//! derive `schemars::JsonSchema`, one per object of the format, each key with
//! its description. They are test-only: `schema_is_current` regenerates the
//! file and fails if the shipped copy differs, and `schema_agrees_with_parser`
//! runs the ready-made profiles and every profile literal of the parser's own
//! tests through both and requires the same verdict on what the schema covers
//! (keys, types, required keys, enumerations). Value rules the schema cannot
//! say (a CIDR's syntax, overlapping routes, gVisor with seccomp additions)
//! stay the parser's.
//!
//! Null is accepted for every optional key (the parser reads null as "the
//! default"); an unknown key is a schema error where the parser warns.

#![allow(dead_code)] // the fields are read by schemars' derive only

use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Value};

/// A pallium profile: the network chain, the sandbox, and what to run.
#[derive(JsonSchema)]
#[schemars(title = "pallium profile", deny_unknown_fields)]
struct Profile {
    /// Where the schema is, for editors, e.g.
    /// "/usr/share/pallium/pallium-profile.schema.json". Ignored by pallium.
    #[serde(rename = "$schema")]
    schema: Option<String>,
    /// What the profile is for: a string or an array of lines. Ignored by
    /// pallium.
    comment: Option<StringOrLines>,
    /// The network: a chain of hops between the application and the internet.
    network: Option<Network>,
    /// Shorthand for network.chain (cannot be given together with "network").
    chain: Option<Vec<Hop>>,
    /// The application's sandbox: file view, user, GUI, audio, system calls.
    sandbox: Option<Sandbox>,
    /// The command to run in the sandbox.
    run: Option<Run>,
}

/// A string, or an array of strings.
#[derive(JsonSchema)]
#[serde(untagged)]
enum StringOrLines {
    One(String),
    Lines(Vec<String>),
}

/// A command: a string run through /bin/sh -c, or a non-empty argv array
/// exec'd directly.
#[derive(JsonSchema)]
#[serde(untagged)]
enum Command {
    Shell(String),
    Argv(#[schemars(length(min = 1))] Vec<String>),
}

/// What to run.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Run {
    /// The command; left out: the caller's $SHELL (fallback /usr/bin/sh).
    command: Option<Command>,
    /// Silence helper tools (default false; --quiet overrides to true).
    quiet: Option<bool>,
}

/// The network object.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Network {
    /// Hops in order, closest to the host first (the application's namespace
    /// after the last hop is implicit).
    chain: Option<Vec<Hop>>,
    /// Root only: a host-side bridge whose traffic goes through the chain
    /// (e.g. for a VM).
    bridge: Option<Bridge>,
    /// Destinations the application's namespace routes through the chain, as
    /// CIDRs (e.g. "10.0.0.0/8"); left out: everything (0.0.0.0/0, ::/0).
    routes: Option<Vec<String>>,
    /// Force traffic through each hop's tunnel device, so nothing leaves if
    /// the tunnel goes down (default true).
    kill_switch: Option<bool>,
    /// Root: leave the host through this interface only.
    outbound_interface: Option<IfName>,
    /// Use the rootless (userspace uplink) architecture even as root
    /// (default false).
    force_slirp: Option<bool>,
    /// Which userspace uplink the empty chain gets rootless or with
    /// force_slirp (default: direct rootless; pasta with force_slirp, else
    /// slirp4netns).
    uplink: Option<Uplink>,
    /// Host to application namespace port forwards.
    port_forwarding: Option<PortForwarding>,
    /// Root, empty chain: let the application reach the host's own addresses
    /// (default false: only the internet and the DNS relay).
    host_access: Option<bool>,
    /// Commands run on the host, as the supervisor, around the session; they
    /// see the session's PALLIUM_* variables.
    hooks: Option<Hooks>,
}

/// A userspace uplink.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Uplink {
    Direct,
    Pasta,
    Slirp4netns,
}

/// A network interface name: 1 to 15 bytes, no '/', whitespace or ':'.
#[derive(JsonSchema)]
#[schemars(transparent)]
struct IfName(#[schemars(length(min = 1, max = 15))] String);

/// network.port_forwarding.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct PortForwarding {
    /// Forwards from the host into the application's namespace, each
    /// "PROTO://HOST_ADDR:PORT:SANDBOX_ADDR:PORT" with PROTO tcp or udp, e.g.
    /// "tcp://127.0.0.1:8080:127.0.0.1:8000".
    local: Option<Vec<String>>,
}

/// network.hooks.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Hooks {
    /// Runs once the network is up, before the application starts (a failure
    /// ends the session).
    post_up: Option<Command>,
    /// Runs when the session ends, before the network is torn down.
    pre_down: Option<Command>,
}

/// network.bridge (root only).
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Bridge {
    /// The bridge's interface name (default: chosen per session).
    name: Option<IfName>,
    /// Serve DHCP on the bridge (default false).
    dhcp: Option<bool>,
    /// Destinations routed through the chain: CIDRs as an array or one
    /// comma-separated string (e.g. "10.0.0.0/8, 192.168.0.0/16").
    routes: Option<StringOrLines>,
    /// Let reserved (private, link-local) destinations bypass the chain
    /// (default true).
    reserved_bypass: Option<bool>,
    /// Enslave host Ethernet devices to the bridge.
    eth_bridge: Option<EthBridge>,
}

/// network.bridge.eth_bridge.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct EthBridge {
    /// Host devices to put on the bridge, e.g. ["eth0"].
    devices: Vec<IfName>,
    /// The bridge's name.
    name: Option<IfName>,
}

/// A hop of the chain, chosen by "type". Every hop but "script" also takes
/// "dns", "quiet" and "<tool>_path" keys.
#[derive(JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Hop {
    /// A SOCKS proxy.
    Socks(Socks),
    /// An HTTP CONNECT proxy.
    Http(Proxy),
    /// Tor, started for the session.
    Tor(Tor),
    /// An OpenVPN client.
    Openvpn(Openvpn),
    /// A WireGuard client (wireguard-go).
    Wireguard(Wireguard),
    /// An SSH tunnel (ssh -D) to a server.
    Ssh(Ssh),
    /// A program that offers a SOCKS proxy, run as a local user.
    Socksapp(Socksapp),
    /// A script that brings a tunnel device up (the rest of the hop's keys
    /// become PALLIUM_SCRIPT_<KEY> variables).
    Script(Script),
    /// A PPP link (pppd call <provider>).
    Ppp(Ppp),
    /// A hop that does nothing (for tests and examples).
    Dummy(Common),
    /// A tun2socks engine in front of a proxy.
    Tun2socks(Tun2socks),
}

/// Keys every hop but "script" takes.
#[derive(JsonSchema)]
#[schemars(extend("patternProperties" = {
    "^.+_path$": {
        "description": "The path of a helper program this hop runs, e.g. \"tor_path\": \"/opt/tor/bin/tor\".",
        "type": ["string", "null"]
    }
}))]
struct Common {
    /// DNS servers the application uses through this hop, e.g. ["1.1.1.1"].
    dns: Option<Vec<String>>,
    /// Silence this hop's helper program (default: run.quiet).
    quiet: Option<bool>,
}

/// A proxy with optional credentials.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Proxy {
    /// "host:port", "[v6]:port" or a bare IP (the default port).
    address: String,
    /// User name for the proxy.
    username: Option<String>,
    /// Password for the proxy.
    password: Option<String>,
    #[serde(flatten)]
    common: Common,
}

/// A SOCKS proxy.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Socks {
    /// "host:port", "[v6]:port" or a bare IP (port 1080).
    address: String,
    /// The SOCKS version: 4, "4a" or 5 (default 5).
    version: Option<SocksVersion>,
    /// User name (SOCKS5).
    username: Option<String>,
    /// Password (SOCKS5).
    password: Option<String>,
    #[serde(flatten)]
    common: Common,
}

/// 4, "4a" or 5.
#[derive(JsonSchema)]
#[serde(untagged)]
enum SocksVersion {
    Number(#[schemars(range(min = 4, max = 5))] u8),
    Text(#[schemars(regex(pattern = r"^(4|4[aA]|5)$"))] String),
}

/// Seconds: a non-negative number (fractions allowed).
#[derive(JsonSchema)]
#[schemars(transparent)]
struct Secs(#[schemars(range(min = 0))] f64);

/// Tor, started for the session.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Tor {
    /// Seconds to wait for Tor to bootstrap (default 300).
    timeout: Option<Secs>,
    /// Tor's CircuitBuildTimeout in seconds (default 60).
    circuit_build_timeout: Option<Secs>,
    /// Resolve names through Tor (default true).
    builtin_dns: Option<bool>,
    /// Let the application reach .onion addresses (default true).
    onion_support: Option<bool>,
    /// The local user to run tor as (never root).
    user: Option<String>,
    /// Extra arguments for tor.
    tor_args: Option<Vec<String>>,
    /// Publish the application's TCP port as an onion service of this hop's
    /// Tor, e.g. {"port": 80, "target": 8080}.
    onion_service: Option<OnionService>,
    #[serde(flatten)]
    common: Common,
}

/// A tor hop's onion_service.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct OnionService {
    /// The port Tor clients connect to.
    port: TcpPort,
    /// The application's port it reaches (default: the same as port).
    target: Option<TcpPort>,
}

/// A TCP port, 1 to 65535.
#[derive(JsonSchema)]
#[schemars(transparent)]
struct TcpPort(#[schemars(range(min = 1, max = 65535))] u16);

/// An OpenVPN client.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Openvpn {
    /// The path of an .ovpn file.
    config: String,
    /// User name for auth-user-pass.
    username: Option<String>,
    /// Password for auth-user-pass.
    password: Option<String>,
    /// Seconds to wait for the tunnel (default 60).
    timeout: Option<Secs>,
    #[serde(flatten)]
    common: Common,
}

/// A WireGuard client.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Wireguard {
    /// The path of a wg-quick style .conf file.
    config: String,
    #[serde(flatten)]
    common: Common,
}

/// An SSH tunnel.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Ssh {
    /// The server, e.g. "user@host.example".
    destination: String,
    /// Extra arguments for ssh.
    ssh_args: Option<Vec<String>>,
    /// Seconds to wait for the tunnel (default 30).
    timeout: Option<Secs>,
    /// The local user to run ssh as.
    user: Option<String>,
    #[serde(flatten)]
    common: Common,
}

/// A program path, or a non-empty argv array.
#[derive(JsonSchema)]
#[serde(untagged)]
enum Argv {
    Path(String),
    Argv(#[schemars(length(min = 1))] Vec<String>),
}

/// A program that offers a SOCKS proxy.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Socksapp {
    /// The local user to run the program as.
    user: String,
    /// The program: a path or an argv array.
    cmd: Argv,
    /// Seconds to wait for the proxy (default 30).
    timeout: Option<Secs>,
    #[serde(flatten)]
    common: Common,
}

/// A script hop: every key but "type" and "path" must be a string and becomes
/// the script's PALLIUM_SCRIPT_<KEY> variable.
#[derive(JsonSchema)]
#[schemars(extend("additionalProperties" = {"type": "string"}))]
struct Script {
    /// The script: a path or an argv array.
    path: Argv,
    /// The tunnel device the script brings up (default "tun0").
    interface: Option<String>,
    /// Other string options, passed as environment variables.
    #[serde(flatten)]
    #[schemars(skip)]
    options: BTreeMap<String, String>,
}

/// A PPP link.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Ppp {
    /// A file name in /etc/ppp/peers (default "provider").
    provider: Option<String>,
    /// The ppp device (default ppp0).
    device: Option<IfName>,
    #[serde(flatten)]
    common: Common,
}

/// A tun2socks engine in front of a proxy.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Tun2socks {
    /// The proxy protocol, e.g. "socks5" or "http".
    protocol: String,
    /// The proxy, "host:port".
    address: String,
    /// User name for the proxy.
    username: Option<String>,
    /// Password for the proxy.
    password: Option<String>,
    #[serde(flatten)]
    common: Common,
}

/// The sandbox object.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Sandbox {
    /// Run as a virtual user: a name ("$tmp" for a throw-away one) or
    /// {"name": …, "skeleton": …}.
    virtuser: Option<Virtuser>,
    /// The file view.
    paths: Option<Paths>,
    /// Run the application under gVisor (runsc); any true value.
    #[serde(default)]
    #[schemars(schema_with = "anything")]
    gvisor: Option<Value>,
    /// GUI forwarding: true or "xpra" (a separate X server), "expose" (the
    /// host's display), false (none, the default).
    gui: Option<Gui>,
    /// Forward audio (default false): true (playback only) or
    /// {"microphone": true} (playback and recording).
    audio: Option<Audio>,
    /// Let the application create user namespaces (default true; false is
    /// not supported with gvisor).
    unpriv_user_ns: Option<bool>,
    /// Root mode: see the host's root file system as is (default false).
    unsafe_host_root: Option<bool>,
    /// The working directory in the sandbox (an absolute path).
    workdir: Option<String>,
    /// The sandbox's host name.
    hostname: Option<String>,
    /// Which environment variables the application sees.
    environment: Option<Environment>,
    /// Extra system calls to refuse, e.g. ["ptrace"] (not with gvisor).
    seccomp: Option<Vec<SyscallName>>,
}

/// sandbox.audio.
#[derive(JsonSchema)]
#[serde(untagged)]
enum Audio {
    On(bool),
    With(AudioOptions),
}

/// sandbox.audio as an object.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct AudioOptions {
    /// Let the application record from the host's microphone (default false).
    microphone: Option<bool>,
}

/// A system call name.
#[derive(JsonSchema)]
#[schemars(transparent)]
struct SyscallName(#[schemars(regex(pattern = r"^[a-z0-9_]{1,64}$"))] String);

fn anything(_: &mut SchemaGenerator) -> Schema {
    Schema::from(true)
}

/// sandbox.virtuser.
#[derive(JsonSchema)]
#[serde(untagged)]
enum Virtuser {
    Name(String),
    Full(VirtuserFull),
}

/// A virtual user with its home's skeleton.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct VirtuserFull {
    /// The user's name, or "$tmp".
    name: String,
    /// The directory the home is copied from (default /etc/skel), or false
    /// for an empty home.
    skeleton: Option<Skeleton>,
}

/// A directory path or false.
#[derive(JsonSchema)]
#[serde(untagged)]
enum Skeleton {
    Dir(String),
    None(#[schemars(schema_with = "false_only")] bool),
}

fn false_only(_: &mut SchemaGenerator) -> Schema {
    Schema::try_from(json!({"const": false})).expect("an object is a schema")
}

/// true, "xpra", "expose" or false.
#[derive(JsonSchema)]
#[serde(untagged)]
enum Gui {
    Flag(bool),
    Method(GuiMethod),
}

/// A GUI forwarding method.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum GuiMethod {
    Xpra,
    Expose,
}

/// sandbox.paths.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Paths {
    /// "append" (add to the default view, the default) or "base" (start
    /// from an empty view).
    mode: Option<PathsMode>,
    /// Bind mounts: [destination in sandbox, source on host] pairs.
    bind: Option<Vec<[String; 2]>>,
    /// Sandbox paths (globs allowed) to keep visible.
    whitelist: Option<Vec<String>>,
    /// Sandbox paths (globs allowed) to hide.
    blacklist: Option<Vec<String>>,
    /// File systems to mount: [destination, type] pairs, type one of tmpfs,
    /// ramfs, proc, sysfs, mqueue, devpts.
    fsmount: Option<Vec<(String, FsType)>>,
}

/// A file system type sandbox.paths.fsmount may mount (others would hand
/// the application a kernel or host interface).
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum FsType {
    Tmpfs,
    Ramfs,
    Proc,
    Sysfs,
    Mqueue,
    Devpts,
}

/// sandbox.paths.mode.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum PathsMode {
    Append,
    Base,
}

/// sandbox.environment.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct Environment {
    /// Variables to pass that pallium drops by default (e.g. "SSH_AUTH_SOCK").
    pass: Option<Vec<String>>,
    /// Variables to set: {"NAME": "value"}.
    set: Option<BTreeMap<String, String>>,
}

/// The schema as shipped: pretty JSON with a trailing newline.
pub(crate) fn schema_text() -> String {
    let schema = schemars::schema_for!(Profile);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// The shipped file is what the code generates. To update it:
    /// `PALLIUM_BLESS=1 cargo test -p pallium-proto schema_is_current`.
    #[test]
    fn schema_is_current() {
        let path = repo().join("extra/pallium-profile.schema.json");
        let want = schema_text();
        if std::env::var_os("PALLIUM_BLESS").is_some() {
            std::fs::write(&path, &want).expect("write the schema");
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} is not what proto/src/profile/schema.rs generates; run PALLIUM_BLESS=1 cargo test -p pallium-proto schema_is_current",
            path.display()
        );
    }

    #[test]
    fn fsmount_types_match_the_parser() {
        let schema: Value = serde_json::from_str(&schema_text()).expect("schema JSON");
        let listed: Vec<&str> = schema["$defs"]["FsType"]["enum"]
            .as_array()
            .expect("FsType is an enum")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(listed, super::super::FSMOUNT_TYPES);
    }

    /// Every raw string literal starting with `{` in the parser's sources:
    /// the profiles its tests accept and refuse.
    fn literals(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find("r#\"") {
            rest = &rest[i + 3..];
            let Some(end) = rest.find("\"#") else { break };
            let lit = &rest[..end];
            if lit.trim_start().starts_with('{') {
                out.push(lit.to_string());
            }
            rest = &rest[end + 2..];
        }
        out
    }

    /// A parser error about structure, which the schema must also refuse:
    /// a wrong type, a missing key, an unknown hop type or enumeration value.
    fn structural(message: &str) -> bool {
        (message.contains(": expected ") && message.contains(", found "))
            || [
                " needs \"",
                "unknown hop type",
                "is not one of",
                "invalid GUI forwarding method",
                "invalid mode",
                "cannot be specified at the same time",
                "is empty",
                "unknown SOCKS version",
                "is not a system call name",
                "is not allowed (one of",
            ]
            .iter()
            .any(|m| message.contains(m))
    }

    /// Whether some hop's "type" has an upper-case letter.
    fn upper_case_type(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.iter().any(|(k, v)| {
                (k == "type"
                    && v.as_str()
                        .is_some_and(|t| t.chars().any(char::is_uppercase)))
                    || upper_case_type(v)
            }),
            Value::Array(a) => a.iter().any(upper_case_type),
            _ => false,
        }
    }

    #[test]
    fn schema_agrees_with_parser() {
        let schema: Value = serde_json::from_str(&schema_text()).expect("schema JSON");
        let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
        let mut corpus: Vec<(String, String)> = Vec::new();
        let profiles = repo().join("extra/profiles");
        for e in std::fs::read_dir(&profiles).expect("extra/profiles") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "json") {
                let text = std::fs::read_to_string(&p).expect("read profile");
                corpus.push((p.display().to_string(), text));
            }
        }
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/profile");
        for e in std::fs::read_dir(&src).expect("src/profile") {
            let p = e.expect("entry").path();
            let text = std::fs::read_to_string(&p).expect("read source");
            for (i, lit) in literals(&text).into_iter().enumerate() {
                corpus.push((format!("{}#{i}", p.display()), lit));
            }
        }
        let (mut valid, mut invalid, mut semantic) = (0, 0, 0);
        for (name, text) in &corpus {
            let Ok(value) = serde_json::from_str::<Value>(text) else {
                continue; // a syntax error: no tree to validate
            };
            let schema_errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            match super::super::parse("<corpus>", text) {
                // The one deliberate difference: the parser takes a hop type
                // in any case ("TOR"), the schema only the documented
                // lower case, so editors complete and check one spelling.
                Ok(_) if upper_case_type(&value) => {}
                Ok(p) if p.warnings.is_empty() => {
                    assert!(
                        schema_errors.is_empty(),
                        "{name}: the parser accepts it, the schema refuses it: {schema_errors:?}\n{text}"
                    );
                    valid += 1;
                }
                Ok(p) => {
                    // Unknown keys: warnings for the parser, errors for the schema.
                    assert!(
                        !schema_errors.is_empty(),
                        "{name}: the parser warns {:?}, the schema accepts it\n{text}",
                        p.warnings
                    );
                    invalid += 1;
                }
                Err(e) => {
                    let message = e.to_string();
                    if structural(&message) {
                        assert!(
                            !schema_errors.is_empty(),
                            "{name}: the parser refuses it ({message}), the schema accepts it\n{text}"
                        );
                        invalid += 1;
                    } else {
                        semantic += 1; // a value rule the schema does not say
                    }
                }
            }
        }
        eprintln!("schema vs parser: {valid} valid, {invalid} refused by both, {semantic} value-rule errors");
        assert!(
            valid >= 20 && invalid >= 20,
            "the corpus shrank: {valid} valid, {invalid} invalid"
        );
    }
}
