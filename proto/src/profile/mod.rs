//! The profile: the original pallium's JSON format (doc/PROFILE.md) as typed,
//! validated structs that also travel over the wire (bincode: no tagged,
//! untagged or flattened serde, no `serde_json::Value` inside).
//!
//! [`parse`] reads the text into a `serde_json::Value`, then converts it by
//! hand, path by path, so every error names the JSON path and the line and
//! column of the offending value, and every unknown key becomes a warning.

#![forbid(unsafe_code)]

mod addr;
pub mod check;
mod environment;
mod error;
mod hop;
mod locate;
mod network;
mod plan;
mod read;
mod sandbox;
#[cfg(test)]
mod schema;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use addr::{Cidr, DnsServer, Endpoint, Host, IfName, PortForward, Transport};
pub use environment::{dropped_by_default, Environment, Names, DROPPED};
pub use error::ProfileError;
pub use hop::{
    hop_types, Built, Hop, HopKind, HopOptions, Http, OnionService, Openvpn, Ppp, Script, Socks,
    SocksVersion, Socksapp, Ssh, Tor, Tun2socks, Wireguard,
};
pub use network::{Bridge, EthBridge, Hooks, Network, UplinkChoice};
pub use sandbox::{
    fnv1a, root_mode_uid, service_uid, session_uid, BindMount, FsMount, Gui, Paths, PathsMode,
    Sandbox, Service, Virtuser, VirtuserName, DEFAULT_SKELETON, FSMOUNT_TYPES, ROOT_MODE_UID_BASE,
    ROOT_MODE_UID_SPAN, ROOT_VIRTUSER_DIR, SERVICE_UID_BASE, SESSION_UID_BASE, SESSION_UID_BLOCK,
};

use locate::JsonPath;
use read::{string, strings, Cx, Obj, Res};

/// A whole profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub network: Network,
    pub sandbox: Sandbox,
    pub run: Run,
}

/// The `run` object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// None = the caller's `$SHELL` (fallback `/usr/bin/sh`).
    pub command: Option<Command>,
    /// Silence helper tools (`--quiet` overrides to true).
    pub quiet: bool,
}

/// `run.command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A string: run through `/bin/sh -c`.
    Shell(String),
    /// An array: exec'd directly; never empty.
    Argv(Vec<String>),
}

/// A parsed profile and the warnings to show (unknown keys, ignored keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub profile: Profile,
    /// Complete lines, each starting with `profile <origin>: `.
    pub warnings: Vec<String>,
}

/// Parse a profile. `origin` is how to name the profile in messages (a path,
/// `"<stdin>"`, `"<inline>"`).
pub fn parse(origin: &str, text: &str) -> Result<Parsed, ProfileError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ProfileError::syntax(origin, &e))?;
    let mut cx = Cx::new(origin, text);
    let profile = profile(&mut cx, &value)?;
    Ok(Parsed {
        profile,
        warnings: cx.warnings,
    })
}

fn profile(cx: &mut Cx<'_>, v: &Value) -> Res<Profile> {
    let root = JsonPath::root();
    let Value::Object(_) = v else {
        return Err(cx.err(
            &root,
            format!("a profile is a JSON object, found {}", read::kind(v)),
        ));
    };
    let mut o = Obj::new(cx, v, root)?;
    // The `chain` shorthand is `{"network": {"chain": …}}`.
    if o.has("chain") && o.has("network") {
        return Err(cx.err(
            &o.at("chain"),
            "network and chain properties cannot be specified at the same time (move \"chain\" into \"network\")",
        ));
    }
    // Notes for people: `comment` (a string or an array of lines) says
    // what a profile is for; `$schema` points an editor at the schema.
    // Neither changes anything.
    if let Some(v) = o.get("comment") {
        if !matches!(v, Value::String(_)) {
            strings(cx, v, &o.at("comment"))?;
        }
    }
    if let Some(v) = o.get("$schema") {
        string(cx, v, &o.at("$schema"))?;
    }
    let mut p = Profile::default();
    if let Some(v) = o.get("network") {
        let mut n = Obj::new(cx, v, o.at("network"))?;
        p.network = network::network(cx, &mut n)?;
        n.finish(cx);
    }
    if let Some(v) = o.get("chain") {
        p.network.chain = hop::chain(cx, v, &o.at("chain"))?;
    }
    if let Some(v) = o.get("sandbox") {
        let mut s = Obj::new(cx, v, o.at("sandbox"))?;
        p.sandbox = sandbox::sandbox(cx, &mut s)?;
        s.finish(cx);
    }
    if let Some(v) = o.get("run") {
        let mut r = Obj::new(cx, v, o.at("run"))?;
        p.run = run(cx, &mut r)?;
        r.finish(cx);
    }
    o.finish(cx);
    Ok(p)
}

/// A command: a string for `/bin/sh -c`, or a non-empty argv array.
pub(crate) fn command(cx: &Cx<'_>, v: &Value, path: &JsonPath, or: &str) -> Res<Command> {
    match v {
        Value::String(_) => Ok(Command::Shell(string(cx, v, path)?)),
        Value::Array(_) => {
            let argv = strings(cx, v, path)?;
            if argv.is_empty() {
                return Err(cx.err(
                    path,
                    format!("the command array is empty; give at least the program (or {or})"),
                ));
            }
            Ok(Command::Argv(argv))
        }
        v => Err(cx.wrong_type(path, "a string or an array of strings", v)),
    }
}

fn run(cx: &mut Cx<'_>, o: &mut Obj<'_>) -> Res<Run> {
    let path = o.at("command");
    let command = match o.get("command") {
        None => None,
        Some(v) => Some(command(cx, v, &path, "leave \"command\" out for $SHELL")?),
    };
    Ok(Run {
        command,
        quiet: o.bool(cx, "quiet", false)?,
    })
}

#[cfg(test)]
mod tests;
