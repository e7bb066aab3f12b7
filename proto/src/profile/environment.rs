//! The application's environment: the caller's, minus every variable that
//! names a host socket (or other host endpoint) the sandbox cannot or must not
//! reach ([`DROPPED`], one table with a reason per entry), plus what the
//! profile's `sandbox.environment` passes back or sets.
//!
//! The supervisor applies it ([`Environment::apply`]) to the first command and
//! to every `pallium exec` into the session, whose client sends its whole
//! environment: the filter runs on the trusted side. `pallium check` and the
//! README show the same table.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::locate::JsonPath;
use super::read::{string, strings, Cx, Obj, Res};

/// `sandbox.environment`: `{"pass": [NAME, …], "set": {NAME: VALUE, …}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    /// Variables kept although [`DROPPED`] names them (when the caller has them).
    pub pass: Vec<String>,
    /// Variables set to these values, over anything the caller has.
    pub set: BTreeMap<String, String>,
}

/// Which variable names a [`DROPPED`] entry covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// This one name.
    Exactly(&'static str),
    /// Every name starting with this.
    Prefix(&'static str),
}

impl Names {
    /// Does this entry cover `name`?
    pub fn covers(&self, name: &str) -> bool {
        match self {
            Names::Exactly(n) => name == *n,
            Names::Prefix(p) => name.starts_with(p),
        }
    }
}

impl std::fmt::Display for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Names::Exactly(n) => f.write_str(n),
            Names::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// Variables the application does not get from the caller unless the profile
/// passes them: each names a host socket, agent, display, session or
/// credential the sandbox's view and network do not reach (so a program would
/// only fail on it, or — through a bind or a path the view still shows —
/// reach a host service that runs commands or signs for it). Scope: the
/// caller's environment as the supervisor receives it, before the sandboxer
/// sets the virtual user's `HOME`, `USER` and `LOGNAME`.
pub const DROPPED: &[(Names, &str)] = &[
    // D-Bus: both buses start programs and units outside the sandbox.
    (Names::Exactly("DBUS_SESSION_BUS_ADDRESS"), "the host's session bus (systemd-run, portals and every desktop service run commands outside the sandbox)"),
    (Names::Exactly("DBUS_SYSTEM_BUS_ADDRESS"), "the host's system bus"),
    (Names::Exactly("DBUS_STARTER_ADDRESS"), "the bus that started the caller"),
    (Names::Exactly("AT_SPI_BUS_ADDRESS"), "the accessibility bus (reads and drives every application on the desktop)"),
    // Agents that sign or decrypt for whoever connects.
    (Names::Exactly("SSH_AUTH_SOCK"), "the ssh agent's socket: it signs with the user's keys for any client"),
    (Names::Exactly("SSH_AGENT_PID"), "the ssh agent's host pid"),
    (Names::Exactly("GPG_AGENT_INFO"), "the gpg agent's socket"),
    (Names::Exactly("GNOME_KEYRING_CONTROL"), "the keyring daemon's socket directory"),
    (Names::Exactly("KRB5CCNAME"), "the Kerberos credential cache (a host file, kernel keyring or KCM socket)"),
    // Displays and input: a display server lets its clients read keystrokes
    // and inject input into every window.
    (Names::Exactly("DISPLAY"), "the host's X display (keystrokes and input of every window); sandbox.gui will provide its own"),
    (Names::Exactly("XAUTHORITY"), "the host X display's cookie file"),
    (Names::Exactly("WAYLAND_DISPLAY"), "the host's Wayland compositor socket"),
    (Names::Exactly("WAYLAND_SOCKET"), "a Wayland connection inherited as a descriptor the sandbox does not have"),
    (Names::Exactly("SESSION_MANAGER"), "the desktop session manager's ICE socket"),
    (Names::Exactly("SWAYSOCK"), "sway's IPC socket (runs commands)"),
    (Names::Exactly("I3SOCK"), "i3's IPC socket (runs commands)"),
    (Names::Exactly("HYPRLAND_INSTANCE_SIGNATURE"), "names Hyprland's IPC socket (runs commands)"),
    (Names::Exactly("NIRI_SOCKET"), "niri's IPC socket (runs commands)"),
    // Audio: sandbox.audio will provide its own.
    (Names::Exactly("PULSE_SERVER"), "the host's PulseAudio server; sandbox.audio will provide its own"),
    (Names::Exactly("PULSE_COOKIE"), "the host PulseAudio server's cookie file"),
    (Names::Exactly("PIPEWIRE_REMOTE"), "the host's PipeWire socket"),
    (Names::Exactly("PIPEWIRE_RUNTIME_DIR"), "the directory of the host's PipeWire sockets"),
    // Container engines: their API socket is host root (or the user's every
    // container) for whoever connects.
    (Names::Exactly("DOCKER_HOST"), "the Docker API socket (host root for whoever connects)"),
    (Names::Exactly("CONTAINER_HOST"), "the Podman API socket"),
    // Terminals, multiplexers and editors whose servers run commands.
    (Names::Exactly("TMUX"), "the tmux server's socket (new windows run outside the sandbox)"),
    (Names::Exactly("TMUX_PANE"), "the caller's tmux pane"),
    (Names::Exactly("STY"), "the screen session's socket"),
    (Names::Exactly("KITTY_LISTEN_ON"), "kitty's remote-control socket (runs commands)"),
    (Names::Exactly("WEZTERM_UNIX_SOCKET"), "WezTerm's mux socket (runs commands)"),
    (Names::Exactly("NVIM"), "the parent Neovim's server socket (runs commands)"),
    (Names::Exactly("NVIM_LISTEN_ADDRESS"), "a Neovim server socket (runs commands)"),
    (Names::Exactly("VSCODE_IPC_HOOK_CLI"), "VS Code's IPC socket (opens files and runs commands)"),
    (Names::Exactly("VSCODE_GIT_IPC_HANDLE"), "VS Code's git credential socket"),
    // systemd's hand-over to the process it started: meant for the caller.
    (Names::Exactly("XDG_RUNTIME_DIR"), "the host's per-user runtime directory (bus, Wayland, audio, agents and pallium's own control sockets): the views hide it, and a program that finds it unset falls back to its defaults instead of looking for host sockets; pass it with a bind of your own"),
    (Names::Exactly("NOTIFY_SOCKET"), "systemd's notification socket for the caller's unit"),
    (Names::Exactly("LISTEN_FDS"), "systemd socket activation of the caller (descriptors the sandbox does not have)"),
    (Names::Exactly("LISTEN_PID"), "systemd socket activation of the caller"),
    (Names::Exactly("LISTEN_FDNAMES"), "systemd socket activation of the caller"),
    (Names::Exactly("WATCHDOG_PID"), "systemd's watchdog of the caller"),
    (Names::Exactly("WATCHDOG_USEC"), "systemd's watchdog of the caller"),
    (Names::Exactly("JOURNAL_STREAM"), "makes programs log to the host journal's socket"),
    (Names::Exactly("MANAGERPID"), "the host pid of the caller's systemd manager"),
    (Names::Prefix("SYSTEMD_"), "systemd's hand-over (SYSTEMD_EXEC_PID, …) and settings for the host's systemd tools"),
    // pallium's own.
    (Names::Exactly("PALLIUM_LOG"), "pallium's internal log level for its helpers"),
    (Names::Exactly("PALLIUM_SESSION_DIR"), "pallium's internal session directory (its control socket)"),
];

/// The [`DROPPED`] entry covering `name`: its reason.
pub fn dropped_by_default(name: &str) -> Option<&'static str> {
    DROPPED
        .iter()
        .find(|(n, _)| n.covers(name))
        .map(|(_, why)| *why)
}

impl Environment {
    /// The application's environment from the caller's: [`DROPPED`] removed
    /// (except what `pass` names), then `set` applied. Order is kept; a set
    /// variable the caller lacks comes last.
    pub fn apply(
        &self,
        caller: impl IntoIterator<Item = (String, String)>,
    ) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = caller
            .into_iter()
            .filter(|(k, _)| !self.drops(k) && !self.set.contains_key(k))
            .collect();
        out.extend(self.set.iter().map(|(k, v)| (k.clone(), v.clone())));
        out
    }

    /// Is the caller's `name` withheld from the application?
    pub fn drops(&self, name: &str) -> bool {
        dropped_by_default(name).is_some() && !self.pass.iter().any(|p| p == name)
    }
}

/// Parse `sandbox.environment`.
pub(crate) fn environment(cx: &mut Cx<'_>, v: &Value, path: JsonPath) -> Res<Environment> {
    let mut o = Obj::new(cx, v, path)?;
    let mut env = Environment::default();
    if let Some(v) = o.get("pass") {
        let p = o.at("pass");
        env.pass = strings(cx, v, &p)?;
        for (i, name) in env.pass.iter().enumerate() {
            variable_name(cx, name, &p.index(i))?;
        }
    }
    if let Some(v) = o.get("set") {
        let sp = o.at("set");
        let Value::Object(map) = v else {
            return Err(cx.wrong_type(&sp, "an object of NAME: \"value\"", v));
        };
        for (name, value) in map {
            let vp = sp.key(name);
            variable_name(cx, name, &vp)?;
            env.set.insert(name.clone(), string(cx, value, &vp)?);
        }
    }
    o.finish(cx);
    Ok(env)
}

/// A variable name: not empty, no `=`, no NUL.
fn variable_name(cx: &Cx<'_>, name: &str, path: &JsonPath) -> Res<()> {
    let why = if name.is_empty() {
        "an environment variable name must not be empty"
    } else if name.contains('=') {
        "an environment variable name must not contain '='"
    } else if name.contains('\0') {
        "an environment variable name must not contain a NUL character"
    } else {
        return Ok(());
    };
    Err(cx.err(path, format!("{name:?}: {why}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::parse;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn env_of(text: &str) -> Environment {
        parse("p.json", text).unwrap().profile.sandbox.environment
    }

    fn err(text: &str) -> String {
        parse("p.json", text).unwrap_err().to_string()
    }

    #[test]
    fn host_socket_addresses_are_dropped_by_default() {
        let caller = vars(&[
            ("PATH", "/usr/bin"),
            ("DBUS_SESSION_BUS_ADDRESS", "unix:path=/run/user/1000/bus"),
            ("SSH_AUTH_SOCK", "/tmp/ssh-x/agent.1"),
            ("DISPLAY", ":0"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ("SYSTEMD_EXEC_PID", "12"),
            ("PALLIUM_LOG", "warn"),
            ("LANG", "C.UTF-8"),
        ]);
        let out = Environment::default().apply(caller);
        assert_eq!(out, vars(&[("PATH", "/usr/bin"), ("LANG", "C.UTF-8")]));
    }

    #[test]
    fn pass_keeps_a_dropped_variable_and_set_overrides() {
        let env = Environment {
            pass: vec!["DISPLAY".into(), "ABSENT".into()],
            set: [
                ("LANG".to_string(), "de_DE.UTF-8".to_string()),
                ("NEW".into(), "1".into()),
            ]
            .into(),
        };
        let out = env.apply(vars(&[
            ("DISPLAY", ":0"),
            ("LANG", "C"),
            ("TMUX", "/tmp/t"),
        ]));
        assert_eq!(
            out,
            vars(&[("DISPLAY", ":0"), ("LANG", "de_DE.UTF-8"), ("NEW", "1")])
        );
    }

    #[test]
    fn every_table_entry_has_a_reason_and_covers_its_own_name() {
        for (names, why) in DROPPED {
            assert!(!why.is_empty(), "{names}");
            let example = match names {
                Names::Exactly(n) => n.to_string(),
                Names::Prefix(p) => format!("{p}X"),
            };
            assert_eq!(dropped_by_default(&example), Some(*why), "{names}");
        }
        assert_eq!(dropped_by_default("PATH"), None);
        assert_eq!(dropped_by_default("HOME"), None);
        // A prefix entry covers only its prefix.
        assert_eq!(dropped_by_default("MY_SYSTEMD_X"), None);
    }

    #[test]
    fn environment_key_parses() {
        let e = env_of(
            r#"{"sandbox": {"environment": {"pass": ["DISPLAY"], "set": {"A": "1", "B": ""}}}}"#,
        );
        assert_eq!(e.pass, ["DISPLAY"]);
        assert_eq!(e.set["A"], "1");
        assert_eq!(e.set["B"], "");
        assert_eq!(env_of("{}"), Environment::default());
        assert_eq!(
            env_of(r#"{"sandbox": {"environment": null}}"#),
            Environment::default()
        );
    }

    #[test]
    fn environment_key_errors_name_the_path() {
        let e = err(r#"{"sandbox": {"environment": {"pass": "DISPLAY"}}}"#);
        assert!(
            e.contains("sandbox.environment.pass: expected an array, found a string"),
            "{e}"
        );
        let e = err(r#"{"sandbox": {"environment": {"pass": ["A=B"]}}}"#);
        assert!(e.contains("sandbox.environment.pass[0]:"), "{e}");
        assert!(e.contains("must not contain '='"), "{e}");
        let e = err(r#"{"sandbox": {"environment": {"pass": [""]}}}"#);
        assert!(e.contains("must not be empty"), "{e}");
        let e = err(r#"{"sandbox": {"environment": {"set": {"A": 1}}}}"#);
        assert!(
            e.contains("sandbox.environment.set.A: expected a string, found an integer"),
            "{e}"
        );
        let e = err(r#"{"sandbox": {"environment": {"set": {"A\u0000B": "x"}}}}"#);
        assert!(e.contains("NUL"), "{e}");
        let e = err(r#"{"sandbox": {"environment": {"set": {"": "x"}}}}"#);
        assert!(e.contains("must not be empty"), "{e}");
        let e = err(r#"{"sandbox": {"environment": {"set": ["A"]}}}"#);
        assert!(
            e.contains("sandbox.environment.set: expected an object"),
            "{e}"
        );
        let e = err(r#"{"sandbox": {"environment": "none"}}"#);
        assert!(
            e.contains("sandbox.environment: expected an object, found a string"),
            "{e}"
        );
    }

    #[test]
    fn environment_unknown_key_warns() {
        let p = parse("p.json", r#"{"sandbox": {"environment": {"keep": ["X"]}}}"#).unwrap();
        assert_eq!(
            p.warnings,
            ["profile p.json: unknown key sandbox.environment.keep (ignored)"]
        );
    }
}
