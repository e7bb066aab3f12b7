//! `pallium audit PROFILE [-s N]`: every process of a session with its uids,
//! capability sets, no_new_privs, seccomp mode and namespaces, read from
//! `/proc/PID/status` (capabilities: of every thread, `/proc/PID/task/*`),
//! and a `!!` on anything its role's policy forbids once set up
//! (`policy::after_setup`).

use anyhow::Result;
use proto::policy::{self, Role};

use crate::cli::SessionArgs;
use crate::{exec as client, profile_source, session};

pub(crate) fn audit(a: SessionArgs) -> Result<i32> {
    let loaded = profile_source::load(&a.profile, false)?;
    let pseudo = loaded.pseudo_path.as_deref().unwrap_or_default();
    let dir = session::find(pseudo, &loaded.display, a.session)?;
    let mut entries = client::audit(&dir)?;
    entries.sort_by_key(|e| e.pid);
    entries.dedup_by_key(|e| e.pid);
    // The sandbox's own user namespace: that of its init. An application
    // process in another one (a user namespace it or gVisor's runsc made
    // inside the sandbox) holds its capabilities only there. The init is not
    // dumpable, so its links need CAP_SYS_PTRACE (rootless, we lack it): the
    // sandboxer's is the same namespace (the init is forked inside it).
    let role_userns = |role: &str| {
        entries
            .iter()
            .find(|e| e.role == role)
            .and_then(|e| userns(e.pid))
    };
    let sandbox_userns = role_userns("init").or_else(|| role_userns("sandboxer"));
    // As root: the host's user namespace, where an application must not be
    // uid 0 (only `sandbox.unsafe_host_root` puts it there).
    let own_userns = nix::unistd::getuid()
        .is_root()
        .then(|| userns(std::process::id() as i32))
        .flatten();
    let mut violations = 0;
    for e in &entries {
        let Some(st) = policy::proc_status(e.pid, None) else {
            continue;
        };
        // Capabilities are per thread: a set is what any thread holds.
        let threads = policy::thread_statuses(e.pid);
        let role = Role::from_name(&e.role).unwrap_or(Role::App);
        // What the role holds once set up (the helpers drop the rest).
        let allowed = policy::after_setup_mask(role);
        let field = |k: &str| st.get(k).cloned().unwrap_or_default();
        let mask = |k: &str| {
            threads.iter().fold(policy::status_mask(&st, k), |m, t| {
                m | policy::status_mask(t, k)
            })
        };
        let nested = matches!(role, Role::App)
            && sandbox_userns.is_some()
            && userns(e.pid) != sandbox_userns;
        println!("{} {} ({})", e.pid, e.role, field("Name"));
        if threads.len() > 1 {
            println!(
                "  {} threads: the sets below are what any of them holds",
                threads.len()
            );
        }
        if nested {
            println!("  in a user namespace nested inside the sandbox (at most the application's network namespace is its): its capabilities count only there");
        }
        // The application as the host's real root: only with the profile's
        // loud opt-in, and flagged even then.
        let host_root = matches!(role, Role::App)
            && field("Uid").split_whitespace().next() == Some("0")
            && own_userns.is_some()
            && userns(e.pid) == own_userns;
        if host_root {
            violations += 1;
            println!("  !! runs as the host's real uid 0 (sandbox.unsafe_host_root)");
        }
        // A packet engine parses the application's packets: in root mode
        // never as the host's uid 0 (it runs as the session's engine uid).
        let engine_root = matches!(role, Role::Engine)
            && field("Uid").split_whitespace().any(|u| u == "0")
            && own_userns.is_some()
            && userns(e.pid) == own_userns;
        if engine_root {
            violations += 1;
            println!("  !! a packet engine runs as the host's uid 0");
        }
        println!(
            "  uid {}  gid {}",
            field("Uid").replace('\t', " "),
            field("Gid").replace('\t', " ")
        );
        // Root mode: the supervisor parses control requests, and uid 0 owns
        // `/etc`; once the session runs it is the session's own uid
        // (crate::identity), all four of them.
        if matches!(role, Role::Supervisor) {
            let uids: Vec<String> = field("Uid").split_whitespace().map(String::from).collect();
            let as_root = nix::unistd::getuid().is_root() && uids.iter().any(|u| u == "0");
            violations += usize::from(as_root);
            println!(
                "  {}uids real/effective/saved/fs: {}{}",
                if as_root { "!! " } else { "" },
                uids.join("/"),
                if as_root {
                    " (uid 0 in root mode after setup)"
                } else {
                    ""
                }
            );
        }
        for (k, label) in [
            ("CapEff", "effective"),
            ("CapPrm", "permitted"),
            ("CapAmb", "ambient"),
            ("CapBnd", "bounding"),
        ] {
            let m = mask(k);
            // The bounding set only matters for the sandbox's processes: a
            // process outside it holds nothing it could regain.
            let checked =
                !nested && (k != "CapBnd" || matches!(role, Role::App | Role::Init | Role::Engine));
            let bad = checked && m & !allowed != 0;
            violations += usize::from(bad);
            let names = policy::mask_names(m);
            let shown = if names.len() > 12 {
                format!("{} capabilities ({m:#x})", names.len())
            } else if names.is_empty() {
                "none".into()
            } else {
                names.join(",")
            };
            println!("  {}{label}: {shown}", if bad { "!! " } else { "" });
        }
        let nnp = field("NoNewPrivs");
        let nnp_bad = nnp != "1" && !matches!(role, Role::Hop);
        violations += usize::from(nnp_bad);
        println!("  {}no_new_privs: {nnp}", if nnp_bad { "!! " } else { "" });
        let seccomp = match field("Seccomp").as_str() {
            "0" => "disabled",
            "1" => "strict",
            "2" => "filter",
            _ => "?",
        };
        // The engine's allow-list is what confines a compromised engine.
        let seccomp_bad = matches!(role, Role::Engine) && seccomp != "filter";
        violations += usize::from(seccomp_bad);
        println!(
            "  {}seccomp: {seccomp}",
            if seccomp_bad { "!! " } else { "" }
        );
        let ns = namespaces(e.pid);
        if matches!(role, Role::Init) && ns.contains('?') {
            println!("  namespaces: {ns} (not dumpable: readable with CAP_SYS_PTRACE only)");
        } else {
            println!("  namespaces: {ns}");
        }
    }
    if violations > 0 {
        println!("{violations} finding(s) marked !! exceed the role's policy");
        return Ok(1);
    }
    println!("all {} processes within policy", entries.len());
    Ok(0)
}

/// The inode of `pid`'s user namespace.
fn userns(pid: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/user"))
        .ok()
        .map(|l| l.display().to_string())
}

fn namespaces(pid: i32) -> String {
    ["user", "net", "mnt", "pid", "ipc", "uts"]
        .iter()
        .map(|n| {
            let link = std::fs::read_link(format!("/proc/{pid}/ns/{n}"))
                .map(|l| l.display().to_string())
                .unwrap_or_else(|_| "?".into());
            let ino = link
                .rsplit('[')
                .next()
                .unwrap_or("?")
                .trim_end_matches(']')
                .to_string();
            format!("{n}:{ino}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}
