//! `pallium check PROFILE`: validate and print the plan without setting
//! anything up. Exit 0 when the profile is valid and runnable, 1 otherwise.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Result;
use proto::profile::{dropped_by_default, Environment, VirtuserName, ROOT_VIRTUSER_DIR};

use crate::cli::CheckArgs;
use crate::profile_source;

pub(crate) fn check(a: CheckArgs) -> Result<i32> {
    let loaded = profile_source::load(&a.profile, true)?;
    let p = &loaded.profile;
    let root = nix::unistd::getuid().is_root();
    println!("profile: {}", loaded.display);
    let hops = p.network.chain.len();
    let mode = match (root, p.network.force_slirp, hops) {
        (true, false, 0) => "root: veth pair to this namespace, masqueraded",
        (true, false, _) => "root: hop 1 connects from this namespace (no veth, no NAT)",
        (true, true, _) => "root, network.force_slirp: userspace uplink (pasta or slirp4netns)",
        (false, _, _) => "rootless: user namespace, userspace uplink (pasta or slirp4netns)",
    };
    println!("mode: {mode}");
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
    if let (true, Some(v)) = (root, &p.sandbox.virtuser) {
        println!(
            "  identity: as root the virtual user is uid {}, which owns its home; a bind it writes to must be writable by that uid",
            root_mode_uid(&v.name)
        );
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
