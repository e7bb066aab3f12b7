//! What a profile asks for, in words: [`Profile::unsupported`] (features this
//! build cannot run yet, one table to shrink as they land; hop types come
//! from the hop registry's `Built` column) and
//! [`Profile::describe`] (the plan `pallium check` prints; never secrets).

#![forbid(unsafe_code)]

use super::{Command, Gui, HopKind, PathsMode, Profile, SocksVersion, VirtuserName, DROPPED};

/// Profile features not implemented yet: (message, does this profile use it?).
/// Delete a line when its feature lands.
#[allow(clippy::type_complexity)] // A table of plain closures reads best.
const UNSUPPORTED: &[(&str, fn(&Profile) -> bool)] = &[];

impl Profile {
    /// One line per feature this profile uses that pallium cannot run yet;
    /// empty if it can run the whole profile.
    pub fn unsupported(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for hop in &self.network.chain {
            let name = hop.kind.name();
            let line = format!("hop type '{name}' is not supported yet");
            if !hop.kind.built() && !out.contains(&line) {
                out.push(line);
            }
        }
        out.extend(
            UNSUPPORTED
                .iter()
                .filter(|(_, uses)| uses(self))
                .map(|(msg, _)| msg.to_string()),
        );
        out
    }

    /// Human-readable plan lines: hops in order with their settings, the
    /// network options, the sandbox, the command. Passwords are never shown.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        let n = &self.network;
        if n.chain.is_empty() {
            out.push("network: direct (no hops)".to_string());
        }
        for (i, hop) in n.chain.iter().enumerate() {
            let mut line = format!("hop {}: {}", i + 1, hop_line(&hop.kind));
            if let Some(dns) = &hop.options.dns {
                let list: Vec<String> = dns.iter().map(ToString::to_string).collect();
                line += &format!("; dns {}", list.join(", "));
            }
            for (tool, path) in &hop.options.tool_paths {
                line += &format!("; {tool} at {path}");
            }
            out.push(line);
        }
        let mut net = vec![format!("kill switch {}", on_off(n.kill_switch))];
        if n.force_slirp {
            net.push("userspace uplink forced".into());
        }
        if n.host_access {
            net.push("host access on (the sandbox can reach the host's own addresses)".into());
        }
        match &n.routes {
            Some(r) if r.is_empty() => {
                net.push("routes none: no network (loopback only; names do not resolve)".into())
            }
            Some(r) => {
                let list: Vec<String> = r.iter().map(ToString::to_string).collect();
                net.push(format!("routes only {}", list.join(", ")));
            }
            None => {}
        }
        if let Some(i) = &n.outbound_interface {
            net.push(format!("leave the host via {i}"));
        }
        out.push(format!("network: {}", net.join(", ")));
        if let Some(b) = &n.bridge {
            let name = b
                .name
                .as_ref()
                .map_or("(generated name)".into(), ToString::to_string);
            let routes: Vec<String> = b.routes.iter().map(ToString::to_string).collect();
            out.push(format!(
                "bridge: {name}, dhcp {}, routes [{}], reserved ranges bypass {}",
                on_off(b.dhcp),
                routes.join(", "),
                on_off(b.reserved_bypass)
            ));
        }
        for f in &n.port_forwarding {
            out.push(format!(
                "forward: host {} -> sandbox {} ({f})",
                f.host, f.guest
            ));
        }
        out.extend(self.describe_sandbox());
        out.push(match &self.run.command {
            None => "run: $SHELL".to_string(),
            Some(Command::Shell(s)) => format!("run: /bin/sh -c {s:?}"),
            Some(Command::Argv(a)) => format!("run: {a:?}"),
        });
        if self.run.quiet {
            out.push("helper output: quiet".into());
        }
        out
    }

    fn describe_sandbox(&self) -> Vec<String> {
        let s = &self.sandbox;
        let mut out = Vec::new();
        let mut line = vec![format!("hostname {}", s.hostname)];
        match &s.workdir {
            Some(w) if !w.is_empty() => line.push(format!("workdir {w}")),
            _ => {}
        }
        if let Some(v) = &s.virtuser {
            let who = match &v.name {
                VirtuserName::Temporary => "temporary virtual user (tmpfs home)".to_string(),
                VirtuserName::Named(n) => format!("virtual user {n}"),
            };
            let skel = v.skeleton.as_deref().unwrap_or("none");
            line.push(format!("{who}, skeleton {skel}"));
        }
        if s.gvisor {
            line.push("gVisor".into());
        }
        match s.gui {
            Gui::Off => {}
            Gui::Xpra => line.push("GUI via Xpra".into()),
            Gui::Expose => line.push("GUI via the host display".into()),
        }
        if s.audio {
            line.push(if s.microphone {
                "audio relay with the microphone".into()
            } else {
                "audio relay (no recording)".into()
            });
        }
        if !s.unpriv_user_ns {
            line.push("no user namespaces".into());
        }
        if s.unsafe_host_root {
            line.push(
                "UNSAFE: the application runs as the host's real root (sandbox.unsafe_host_root)"
                    .into(),
            );
        }
        if !s.seccomp.is_empty() {
            line.push(format!("deny syscalls {}", s.seccomp.join(", ")));
        }
        out.push(format!("sandbox: {}", line.join(", ")));
        out.push(match (&s.paths, &s.virtuser) {
            (None, None) => "files: the host file system in a private mount namespace".into(),
            (Some(p), _) if p.mode == PathsMode::Base => {
                "files: empty root plus the entries below".into()
            }
            _ => {
                "files: minimal system view (/usr, /etc, /dev basics) plus the entries below".into()
            }
        });
        if let Some(p) = &s.paths {
            out.extend(
                p.bind
                    .iter()
                    .map(|b| format!("  bind {} at {}", b.src, b.dst)),
            );
            out.extend(p.whitelist.iter().map(|w| format!("  show {w}")));
            out.extend(p.blacklist.iter().map(|b| format!("  hide {b}")));
            out.extend(
                p.fsmount
                    .iter()
                    .map(|m| format!("  mount {} at {}", m.fstype, m.dst)),
            );
        }
        out.push(format!(
            "environment: the caller's, minus host-socket addresses (DBUS_SESSION_BUS_ADDRESS, SSH_AUTH_SOCK, DISPLAY, XDG_RUNTIME_DIR and {} more)",
            DROPPED.len() - 4
        ));
        let e = &s.environment;
        if !e.pass.is_empty() {
            out.push(format!("  pass {}", e.pass.join(", ")));
        }
        // Values may be credentials: names only, as for script hops.
        out.extend(e.set.keys().map(|k| format!("  set {k}")));
        out
    }
}

fn hop_line(k: &HopKind) -> String {
    let creds = |u: &Option<String>, p: &Option<String>| match (u, p) {
        (Some(u), Some(_)) => format!(" as {u} (password set)"),
        (Some(u), None) => format!(" as {u}"),
        (None, Some(_)) => " (password set)".into(),
        (None, None) => String::new(),
    };
    let secs = |d: &std::time::Duration| format!("{}s", d.as_secs_f64());
    match k {
        HopKind::Socks(s) => {
            let v = match s.version {
                SocksVersion::V4 => "4",
                SocksVersion::V4a => "4a",
                SocksVersion::V5 => "5",
            };
            format!(
                "socks{v} proxy {}{}",
                s.address,
                creds(&s.username, &s.password)
            )
        }
        HopKind::Http(h) => format!(
            "http proxy {}{}",
            h.address,
            creds(&h.username, &h.password)
        ),
        HopKind::Tor(t) => {
            let mut l = format!(
                "tor (timeout {}, circuit build timeout {}",
                secs(&t.timeout),
                secs(&t.circuit_build_timeout)
            );
            l += &format!(
                ", builtin DNS {}, onion support {}",
                on_off(t.builtin_dns),
                on_off(t.onion_support)
            );
            if let Some(u) = &t.user {
                l += &format!(", as user {u}");
            }
            if let Some(o) = &t.onion_service {
                l += &format!(
                    ", onion service port {} → port {} in the sandbox",
                    o.port, o.target
                );
            }
            if !t.tor_args.is_empty() {
                l += &format!(", args {:?}", t.tor_args);
            }
            l + ")"
        }
        HopKind::Openvpn(o) => format!(
            "openvpn {}{} (timeout {})",
            o.config,
            creds(&o.username, &o.password),
            secs(&o.timeout)
        ),
        HopKind::Wireguard(w) => format!("wireguard {}", w.config),
        HopKind::Ssh(s) => {
            let user = s
                .user
                .as_ref()
                .map_or(String::new(), |u| format!(" as local user {u}"));
            format!(
                "ssh to {}{user} args {:?} (timeout {})",
                s.destination,
                s.ssh_args,
                secs(&s.timeout)
            )
        }
        HopKind::Socksapp(s) => format!(
            "socks app {:?} as {} (timeout {})",
            s.cmd,
            s.user,
            secs(&s.timeout)
        ),
        HopKind::Script(s) => {
            // Env values may hold credentials: show the names only.
            let env: Vec<&str> = s.env.keys().map(String::as_str).collect();
            format!(
                "script {:?}, device {}, env {}",
                s.path,
                s.interface,
                env.join(" ")
            )
        }
        HopKind::Ppp(p) => {
            let dev = p
                .device
                .as_ref()
                .map_or("(from the peers file)".into(), ToString::to_string);
            format!("ppp provider {} on {dev}", p.provider)
        }
        HopKind::Dummy => "plain namespace".into(),
        HopKind::Tun2socks(t) => format!(
            "tun2socks {}://{}{}",
            t.protocol,
            t.address,
            creds(&t.username, &t.password)
        ),
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}
