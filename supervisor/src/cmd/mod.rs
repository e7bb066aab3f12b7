//! One file per subcommand; `run` dispatches.

#![forbid(unsafe_code)]

mod audit;
mod check;
mod cp;
mod exec;
mod list;
mod run;
mod stop;

use std::os::unix::fs::PermissionsExt;

use anyhow::{bail, Result};

use crate::cli::{Cli, Command};
use crate::profile_source::Loaded;

/// Run the parsed command line; the process exit code.
pub(crate) fn run(cli: Cli) -> Result<i32> {
    refuse_setuid()?;
    match cli.command {
        Command::Run(a) => run::run(a),
        Command::Exec(a) => exec::exec(a.target, &a.profile, a.command),
        Command::Shell(a) => exec::exec(a.target, &a.profile, vec![shell()]),
        Command::Stop(a) => stop::stop(a),
        Command::List => {
            crate::sys::default_sigpipe();
            list::list()
        }
        Command::Check(a) => {
            crate::sys::default_sigpipe();
            check::check(a)
        }
        Command::Audit(a) => {
            crate::sys::default_sigpipe();
            audit::audit(a)
        }
        Command::AudioRelay(a) => crate::audio::serve(a),
        Command::Cp(a) => cp::transfer(a.transfer, a.recursive, false),
        Command::Mv(a) => cp::transfer(a, true, true),
    }
}

/// pallium must never run with the set-user-ID or set-group-ID bit: it would
/// hand root's namespaces to whoever runs it.
fn refuse_setuid() -> Result<()> {
    use nix::unistd::{getegid, geteuid, getgid, getuid};
    let exe_mode = std::fs::metadata("/proc/self/exe")
        .map(|m| m.permissions().mode())
        .unwrap_or(0);
    if getuid() != geteuid() || getgid() != getegid() || exe_mode & 0o6000 != 0 {
        bail!("refusing to run with the setuid/setgid bit set (remove it: chmod u-s,g-s $(command -v pallium)); pallium works rootless without it")
    }
    Ok(())
}

/// `network.bridge` and `outbound_interface` name host interfaces: the
/// bridge's must not exist yet (the original failed half-way), the others
/// must. Checked in the namespace pallium starts in, where they are made.
fn host_links(loaded: &Loaded) -> Result<()> {
    let net = &loaded.profile.network;
    let exists = |n: &str| nix::net::if_::if_nametoindex(n).is_ok();
    if let Some(b) = &net.bridge {
        let eth = b.eth_bridge.as_ref();
        let new = [
            ("network.bridge.name", b.name.as_ref()),
            (
                "network.bridge.eth_bridge.name",
                eth.and_then(|e| e.name.as_ref()),
            ),
        ];
        for (key, name) in new {
            if let Some(n) = name.filter(|n| exists(n.as_str())) {
                bail!("profile {}: {key}: an interface named \"{n}\" already exists; choose another name or remove the key for a generated one", loaded.display);
            }
        }
        for (i, d) in eth.iter().flat_map(|e| &e.devices).enumerate() {
            if !exists(d.as_str()) {
                bail!("profile {}: network.bridge.eth_bridge.devices[{i}]: no interface named \"{d}\" here (see `ip link`)", loaded.display);
            }
        }
    }
    if let Some(i) = &net.outbound_interface {
        if net.force_slirp || net.uplink.is_some() {
            bail!("profile {}: network.outbound_interface routes the session's veth uplink, which network.force_slirp and network.uplink replace: remove one of them", loaded.display);
        }
        if !exists(i.as_str()) {
            bail!("profile {}: network.outbound_interface: no interface named \"{i}\" here (see `ip link`)", loaded.display);
        }
    }
    Ok(())
}

/// `$SHELL`, else `/bin/sh`, as the original.
pub(crate) fn shell() -> String {
    std::env::var("SHELL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/sh".into())
}

/// Refuse, before anything is set up, a profile using what is not built yet.
pub(crate) fn ensure_runnable(loaded: &Loaded) -> Result<()> {
    let net = &loaded.profile.network;
    if !nix::unistd::getuid().is_root() {
        let root_only = [
            (net.bridge.is_some(), "network.bridge"),
            (
                net.outbound_interface.is_some(),
                "network.outbound_interface",
            ),
        ];
        if loaded.profile.sandbox.unsafe_host_root {
            bail!("profile {}: sandbox.unsafe_host_root needs root (it runs the application as the host's real uid 0); without root there is no host root to give: remove the key", loaded.display);
        }
        if let Some((_, key)) = root_only.iter().find(|(used, _)| *used) {
            bail!("profile {}: {key} needs root (it changes the host's links and routes); run pallium as root or remove the key", loaded.display);
        }
    }
    host_links(loaded)?;
    // A bind source that does not exist is reported before anything starts.
    if let Some(paths) = &loaded.profile.sandbox.paths {
        for (i, b) in paths.bind.iter().enumerate() {
            if std::fs::symlink_metadata(&b.src).is_err() {
                bail!(
                    "profile {}: sandbox.paths.bind[{i}]: source {} does not exist (a bind is [destination in the sandbox, source on the host])",
                    loaded.display,
                    b.src
                );
            }
        }
    }
    // So is a missing runsc.
    if loaded.profile.sandbox.gvisor && find_runsc().is_none() {
        bail!(
            "profile {}: sandbox.gvisor needs gVisor's runsc, which is not in PATH (Debian package: runsc)",
            loaded.display
        );
    }
    // A missing uplink tool is reported before anything starts.
    crate::supervise::choose_uplink(!nix::unistd::getuid().is_root(), net)?;
    let missing = loaded.profile.unsupported();
    if let Some(first) = missing.first() {
        let more = if missing.len() > 1 {
            format!(" (and {} more; see `pallium check`)", missing.len() - 1)
        } else {
            String::new()
        };
        bail!("profile {}: {first}{more}", loaded.display);
    }
    Ok(())
}

/// gVisor's `runsc` in the caller's `PATH` (`proto::runtime::find_program`).
pub(crate) fn find_runsc() -> Option<std::path::PathBuf> {
    proto::runtime::find_program("runsc")
}

/// Check `--namespace` (Python-style) against the profile's chain: k hops
/// give k+1 namespaces, N0 (where hop 1 connects from: this very namespace;
/// rootless, pallium cannot run a command there, except pasta's before a
/// `socksapp` or `ssh` hop 1) to Nk (the application's, -1); the empty
/// chain has only the application's. Anything but the application's skips
/// hops: the note to show once the command is about to run says which.
/// gVisor runs only in the application's.
pub(crate) fn check_namespace_index(
    index: i64,
    profile: &proto::profile::Profile,
) -> Result<Option<String>> {
    let hops = profile.network.chain.len();
    let n = hops as i64 + 1;
    if index >= n {
        bail!(
            "the network namespace index cannot be greater than {}",
            n - 1
        );
    }
    if index < -n {
        bail!("the network namespace index cannot be smaller than -{n}");
    }
    let j = if index < 0 { index + n } else { index };
    if j == n - 1 {
        return Ok(None);
    }
    if profile.sandbox.gvisor {
        bail!("--namespace {index}: sandbox.gvisor runs commands only in the application's namespace (-1)");
    }
    let pasta_first = profile
        .network
        .chain
        .first()
        .is_some_and(|h| !h.kind.rootless_starts_in_caller());
    let place = match j {
        0 if nix::unistd::getuid().is_root() => "this namespace (where pallium runs)".to_string(),
        0 if pasta_first => "the rootless uplink's namespace".to_string(),
        // Rootless, hop 1 connects from the caller's own namespace, which
        // the session's user namespace has no say over.
        0 => bail!(
            "--namespace {index}: namespace 0 is your own network namespace (a rootless chain's hop 1 connects from where pallium runs): run the command without pallium, or choose 1…{}",
            n - 1
        ),
        _ => format!("hop {j}'s namespace"),
    };
    let first = j + 1;
    let skipped = if first == hops as i64 {
        format!("hop {first}")
    } else {
        format!("hops {first}–{hops}")
    };
    Ok(Some(format!(
        "pallium: --namespace {index}: in {place}, where hop {first} connects from; traffic skips {skipped}"
    )))
}
