//! `pallium check PROFILE`: validate and print the plan without setting
//! anything up. Exit 0 when the profile is valid and runnable, 1 otherwise.
//! The profile is read by the parser and also validated against the JSON
//! Schema (`crate::schema`), whose findings are shown as warnings (the
//! parser decides; the two are tested to agree). `--schema` prints the
//! schema.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Result;
use proto::profile::{dropped_by_default, Environment, VirtuserName, ROOT_VIRTUSER_DIR};

use crate::cli::CheckArgs;
use crate::profile_source;

pub(crate) fn check(a: CheckArgs) -> Result<i32> {
    let Some(profile) = a.profile else {
        // --schema (clap requires one or the other).
        print!("{}", crate::schema::SCHEMA);
        return Ok(0);
    };
    let loaded = profile_source::load(&profile, true)?;
    let p = &loaded.profile;
    let root = nix::unistd::getuid().is_root();
    println!("profile: {}", loaded.display);
    let hops = p.network.chain.len();
    let veth = root && !p.network.force_slirp && hops == 0;
    let mode = match (root, p.network.force_slirp, hops) {
        (true, false, 0) if p.network.host_access => {
            "root: veth pair to this namespace, masqueraded; network.host_access: the host's own addresses are reachable"
        }
        (true, false, 0) => {
            "root: veth pair to this namespace, masqueraded; the host's own addresses and other sessions are not reachable (only the DNS relay)"
        }
        (true, false, _) => "root: hop 1 connects from this namespace (no veth, no NAT)",
        (true, true, _) => "root, network.force_slirp: userspace uplink (pasta or slirp4netns)",
        (false, false, 0)
            if matches!(
                p.network.uplink,
                None | Some(proto::profile::UplinkChoice::Direct)
            ) =>
        {
            "rootless: user namespace; the packet engine serves the application from this namespace (direct uplink; the host's own addresses are not reachable)"
        }
        (false, _, _) => "rootless: user namespace, userspace uplink (pasta or slirp4netns)",
    };
    println!("mode: {mode}");
    if p.network.host_access && !veth {
        println!("  note: network.host_access applies to root mode's veth uplink only (empty chain, no force_slirp); here it changes nothing");
    }
    let mut ns = vec!["this namespace".to_string()];
    ns.extend((1..=hops).map(|i| format!("hop {i}")));
    if hops == 0 {
        ns.push("application".into());
    } else if let Some(last) = ns.last_mut() {
        *last += " (application)";
    }
    println!("namespaces: {}", ns.join(" → "));
    let mut plan = p.describe();
    // Right below the environment policy: what it does to this caller's.
    if let Some(at) = plan.iter().position(|l| l.starts_with("environment:")) {
        let end = at
            + 1
            + plan[at + 1..]
                .iter()
                .take_while(|l| l.starts_with("  "))
                .count();
        plan.splice(end..end, environment(&p.sandbox.environment));
    }
    for line in plan {
        println!("  {line}");
    }
    if p.sandbox.unsafe_host_root {
        if root {
            println!("  identity: UNSAFE — the application runs as the host's real uid 0 (sandbox.unsafe_host_root): it owns the host's files; every host path is bound read-only, but what it may write it writes as root");
        } else {
            eprintln!("pallium: profile {}: sandbox.unsafe_host_root needs root; without root there is no host root to give: remove the key", loaded.display);
            return Ok(1);
        }
    } else if root && p.sandbox.virtuser.is_none() && !p.sandbox.gvisor {
        println!("  identity: as root the application is uid 0 of a user namespace of its own, an unprivileged host uid of the session's (never the host's root); `exec --root` keeps capabilities over the session's network namespace only");
        // A writable bind is the application's as its owner's: never root's.
        for b in p.sandbox.paths.iter().flat_map(|paths| &paths.bind) {
            let owner = std::fs::metadata(&b.src).map(|m| m.uid());
            if matches!(owner, Ok(0)) {
                println!(
                    "  bind {} at {}: owned by root, so not writable for the application (it writes to a bind as the bind's owner, never as root): give it to a user to make it writable",
                    b.src, b.dst
                );
            }
        }
    }
    if let (true, Some(v)) = (root, &p.sandbox.virtuser) {
        println!(
            "  identity: as root the virtual user is uid {}, which owns its home; a bind it writes to must be writable by that uid",
            root_mode_uid(&v.name)
        );
    }
    for line in exposures(p) {
        println!("  {line}");
    }
    let findings = crate::schema::findings(&loaded.text);
    if findings.is_empty() {
        println!("  schema: nothing more to say (the profile JSON Schema: pallium check --schema prints it)");
    } else {
        for f in &findings {
            eprintln!(
                "pallium: warning: profile {}: the JSON Schema says {f}",
                loaded.display
            );
        }
    }
    let missing = p.unsupported();
    if missing.is_empty() {
        println!("ok: the profile is valid and runnable");
        return Ok(0);
    }
    for m in &missing {
        eprintln!("pallium: profile {}: {m}", loaded.display);
    }
    Ok(1)
}

/// What the profile's binds and whitelist entries expose of what every view
/// hides (`proto::hidden`, pallium's runtime directory, `$XDG_RUNTIME_DIR`):
/// one line each, "exposes PATH (why) through ENTRY".
fn exposures(p: &proto::profile::Profile) -> Vec<String> {
    let Some(paths) = &p.sandbox.paths else {
        return Vec::new();
    };
    let dirs = crate::runtime::hidden_dirs();
    let extra: Vec<(String, &str)> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let why = if i == 0 {
                "pallium's sessions and their control sockets"
            } else {
                "your session's IPC sockets ($XDG_RUNTIME_DIR)"
            };
            (d.clone(), why)
        })
        .collect();
    let entries = paths
        .bind
        .iter()
        .map(|b| (b.src.as_str(), format!("bind {} at {}", b.src, b.dst)))
        .chain(
            paths
                .whitelist
                .iter()
                .map(|w| (w.as_str(), format!("whitelist {w}"))),
        );
    let mut out = Vec::new();
    for (path, entry) in entries {
        // A glob's literal prefix is what it can reach at most.
        let literal: String = path
            .split('/')
            .take_while(|c| !c.contains(['*', '?', '[']))
            .collect::<Vec<_>>()
            .join("/");
        let mut seen = Vec::new();
        for (hidden, why) in proto::hidden::exposed_by(Path::new(&literal), &extra) {
            if seen.contains(&hidden) {
                continue;
            }
            out.push(format!(
                "exposes {hidden} ({why}) through {entry}: every view hides it otherwise"
            ));
            seen.push(hidden);
        }
    }
    out
}

/// What the policy does to this caller's environment now: the variables it
/// withholds and those it lets through only because the profile passes them
/// (the policy itself is among the plan's lines).
fn environment(policy: &Environment) -> Vec<String> {
    let mut dropped = Vec::new();
    let mut passed = Vec::new();
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        // PALLIUM_LOG is pallium's own (main sets it for the helpers).
        let ours = name.starts_with("PALLIUM_");
        if ours || dropped_by_default(&name).is_none() || policy.set.contains_key(&name) {
            continue;
        }
        if policy.drops(&name) {
            dropped.push(name);
        } else {
            passed.push(name);
        }
    }
    dropped.sort();
    passed.sort();
    let mut out = Vec::new();
    if !dropped.is_empty() {
        out.push(format!(
            "  withheld from your environment now: {}",
            dropped.join(", ")
        ));
    }
    if !passed.is_empty() {
        out.push(format!(
            "  passed from your environment now: {}",
            passed.join(", ")
        ));
    }
    out
}

/// The uid a root-mode session gives virtual user `name`: its persistent
/// home's owner once it has one, else the one it will be given.
fn root_mode_uid(name: &VirtuserName) -> u32 {
    if let VirtuserName::Named(n) = name {
        let home = Path::new(ROOT_VIRTUSER_DIR).join(n).join("home");
        if let Ok(m) = std::fs::metadata(home) {
            if m.uid() != 0 {
                return m.uid();
            }
        }
    }
    name.root_mode_uid(&std::fs::read_to_string("/etc/passwd").unwrap_or_default())
}
