//! The session's own environment variables ([`session_env`]: forwarded
//! ports, for the application and the hooks) and `network.hooks`
//! (`post_up`, `pre_down`), which run on the host as the caller.
//!
//! A root-mode supervisor stops being root before it builds the chain
//! (`crate::identity`), so the hooks run in a *hook runner* started first,
//! while we are still the caller: `pallium --hook-runner`, in a process
//! group of its own (a Ctrl-C at the terminal reaches the session, not the
//! runner), holding the profile's hooks from its first line. Afterwards it
//! takes only "run post_up / pre_down" with `PALLIUM_*` variables (other
//! names are refused: the supervisor that sends them parses untrusted
//! input), and if its pipe ends after a successful `post_up` without a
//! `pre_down` (the supervisor was killed) it runs `pre_down` itself.

#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{bail, Context, Result};
use proto::profile::{Command as Cmd, Hooks, Profile, Transport};

/// The hidden first argument that makes `pallium` a hook runner.
pub(crate) const HOOK_RUNNER_ARG: &str = "--hook-runner";

/// Variables the application (and every `exec`) gets from the session:
/// `PALLIUM_FORWARDS`, the forwarding rules as the profile gives them,
/// space-separated; `PALLIUM_FORWARD_PORTS`, the ports to listen on in the
/// sandbox, in rule order; `PALLIUM_FORWARD_TCP_PORTS`,
/// `PALLIUM_FORWARD_UDP_PORTS`, the same by protocol. None without rules.
pub(crate) fn session_env(profile: &Profile) -> Vec<(String, String)> {
    let rules = &profile.network.port_forwarding;
    if rules.is_empty() {
        return Vec::new();
    }
    let join = |f: &dyn Fn(&proto::profile::PortForward) -> Option<String>| {
        rules.iter().filter_map(f).collect::<Vec<_>>().join(" ")
    };
    let ports = |t: Transport| join(&|r| (r.transport == t).then(|| r.guest.port().to_string()));
    vec![
        ("PALLIUM_FORWARDS".into(), join(&|r| Some(r.to_string()))),
        (
            "PALLIUM_FORWARD_PORTS".into(),
            join(&|r| Some(r.guest.port().to_string())),
        ),
        ("PALLIUM_FORWARD_TCP_PORTS".into(), ports(Transport::Tcp)),
        ("PALLIUM_FORWARD_UDP_PORTS".into(), ports(Transport::Udp)),
    ]
}

/// Variables for the chain's onion services (tor hops' `onion_service`):
/// `PALLIUM_ONION_ADDRESS`, the `.onion` host name; `PALLIUM_ONION_PORT`,
/// the port Tor clients use there; `PALLIUM_ONION_TARGET`, the port in the
/// sandbox it reaches. Space-separated in chain order if several tor hops
/// have one; none without.
pub(crate) fn onion_env(onions: &[proto::broker::OnionReady]) -> Vec<(String, String)> {
    if onions.is_empty() {
        return Vec::new();
    }
    let join = |f: &dyn Fn(&proto::broker::OnionReady) -> String| {
        onions.iter().map(f).collect::<Vec<_>>().join(" ")
    };
    vec![
        ("PALLIUM_ONION_ADDRESS".into(), join(&|o| o.address.clone())),
        ("PALLIUM_ONION_PORT".into(), join(&|o| o.port.to_string())),
        (
            "PALLIUM_ONION_TARGET".into(),
            join(&|o| o.target.to_string()),
        ),
    ]
}

/// The supervisor's end of a hook runner.
#[derive(Debug)]
pub(crate) struct HookRunner {
    child: Child,
    to: Option<ChildStdin>,
    from: BufReader<ChildStdout>,
    /// post_up ran and succeeded: pre_down is owed.
    up: bool,
    env: Vec<(String, String)>,
}

impl HookRunner {
    /// Start a runner for the profile's hooks; None without hooks.
    pub(crate) fn start(hooks: &Hooks) -> Result<Option<HookRunner>> {
        if hooks.post_up.is_none() && hooks.pre_down.is_none() {
            return Ok(None);
        }
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("/proc/self/exe")
            .arg0("pallium-hooks")
            .arg(HOOK_RUNNER_ARG)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the hook runner for network.hooks")?;
        let mut to = child.stdin.take().context("hook runner stdin")?;
        let from = BufReader::new(child.stdout.take().context("hook runner stdout")?);
        writeln!(to, "{}", serde_json::to_string(hooks)?).context("hook runner")?;
        Ok(Some(HookRunner {
            child,
            to: Some(to),
            from,
            up: false,
            env: Vec::new(),
        }))
    }

    /// Run `network.hooks.post_up` (if any) and wait for it; a failure is
    /// one line naming the key.
    pub(crate) fn post_up(&mut self, env: Vec<(String, String)>) -> Result<()> {
        self.env = env;
        let code = self.ask("post_up")?;
        if code != 0 {
            bail!("network.hooks.post_up failed (exit status {code}); the session ends");
        }
        self.up = true;
        Ok(())
    }

    /// Run `network.hooks.pre_down` once, if post_up ran; a failure is
    /// reported, not fatal (the session ends anyway).
    pub(crate) fn pre_down(&mut self) {
        if !std::mem::take(&mut self.up) {
            return;
        }
        match self.ask("pre_down") {
            Ok(0) => {}
            Ok(code) => eprintln!("pallium: network.hooks.pre_down failed (exit status {code})"),
            Err(e) => eprintln!("pallium: network.hooks.pre_down: {e:#}"),
        }
    }

    fn ask(&mut self, which: &str) -> Result<i32> {
        let to = self.to.as_mut().context("hook runner closed")?;
        let env = serde_json::to_string(&self.env)?;
        writeln!(to, "{which}\t{env}").context("hook runner")?;
        let mut line = String::new();
        self.from.read_line(&mut line).context("hook runner")?;
        line.trim()
            .parse()
            .with_context(|| format!("the hook runner did not run {which}"))
    }
}

impl Drop for HookRunner {
    fn drop(&mut self) {
        // EOF: it ends (with nothing owed, having been told pre_down).
        drop(self.to.take());
        let _ = self.child.wait();
    }
}

/// The runner process (`pallium --hook-runner`): read the hooks, then run
/// each one asked for; returns the exit code.
pub(crate) fn runner_main() -> i32 {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let Some(Ok(first)) = lines.next() else {
        return 0;
    };
    let Ok(hooks) = serde_json::from_str::<Hooks>(&first) else {
        eprintln!("pallium: hook runner: unreadable hooks");
        return 1;
    };
    let mut owed: Option<Vec<(String, String)>> = None;
    for line in lines {
        let Ok(line) = line else { break };
        let Some((which, env)) = line.split_once('\t') else {
            break;
        };
        let Ok(env) = serde_json::from_str::<Vec<(String, String)>>(env) else {
            break;
        };
        let env = allowed(env);
        let (cmd, is_up) = match which {
            "post_up" => (&hooks.post_up, true),
            "pre_down" => (&hooks.pre_down, false),
            _ => break,
        };
        let code = run_hook(which, cmd.as_ref(), &env);
        owed = (is_up && code == 0).then_some(env);
        println!("{code}");
    }
    // The supervisor is gone without asking for pre_down: run it now.
    if let Some(env) = owed {
        run_hook("pre_down", hooks.pre_down.as_ref(), &env);
    }
    0
}

/// Only the session's own names, without NUL: nothing else reaches a
/// command the caller runs.
fn allowed(env: Vec<(String, String)>) -> Vec<(String, String)> {
    env.into_iter()
        .filter(|(k, v)| {
            k.strip_prefix("PALLIUM_").is_some_and(|rest| {
                !rest.is_empty()
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            }) && !v.contains('\0')
        })
        .collect()
}

/// Run one hook with our environment plus `env`, its output on our stderr
/// (our stdout is the supervisor's pipe); its exit status (0 without one).
fn run_hook(which: &str, cmd: Option<&Cmd>, env: &[(String, String)]) -> i32 {
    let Some(cmd) = cmd else { return 0 };
    let mut c = match cmd {
        Cmd::Shell(s) => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(s);
            c
        }
        Cmd::Argv(a) => {
            let mut c = Command::new(&a[0]);
            c.args(&a[1..]);
            c
        }
    };
    c.envs(env.iter().map(|(k, v)| (k, v)))
        .env("PALLIUM_HOOK", which)
        .stdin(Stdio::null());
    if let Ok(err) = std::io::stderr().as_fd().try_clone_to_owned() {
        c.stdout(err);
    }
    match c.status() {
        Ok(s) => s.code().unwrap_or(128 + 9),
        Err(e) => {
            eprintln!("pallium: network.hooks.{which}: {e}");
            127
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pallium_names_reach_a_hook() {
        let env = allowed(vec![
            ("PALLIUM_FORWARD_PORTS".into(), "8000".into()),
            ("LD_PRELOAD".into(), "/tmp/x.so".into()),
            ("PALLIUM_".into(), "x".into()),
            ("PALLIUM_lower".into(), "x".into()),
            ("PALLIUM_X".into(), "a\0b".into()),
        ]);
        assert_eq!(env, vec![("PALLIUM_FORWARD_PORTS".into(), "8000".into())]);
    }

    #[test]
    fn forwarded_ports_are_named_in_rule_order() {
        let p = proto::profile::parse(
            "<test>",
            r#"{"network": {"port_forwarding": {"local": ["tcp://127.0.0.1:1337:127.0.0.1:8000", "udp://[::1]:53:[::1]:5353"]}}}"#,
        )
        .unwrap()
        .profile;
        let env = session_env(&p);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(
            get("PALLIUM_FORWARDS"),
            Some("tcp://127.0.0.1:1337:127.0.0.1:8000 udp://[::1]:53:[::1]:5353")
        );
        assert_eq!(get("PALLIUM_FORWARD_PORTS"), Some("8000 5353"));
        assert_eq!(get("PALLIUM_FORWARD_TCP_PORTS"), Some("8000"));
        assert_eq!(get("PALLIUM_FORWARD_UDP_PORTS"), Some("5353"));
        assert!(session_env(&Profile::default()).is_empty());
    }

    #[test]
    fn onion_services_are_named_in_chain_order() {
        let o = |hop, address: &str, port, target| proto::broker::OnionReady {
            hop,
            address: address.into(),
            port,
            target,
        };
        let env = onion_env(&[o(1, "a.onion", 80, 8080), o(3, "b.onion", 22, 22)]);
        assert_eq!(
            env,
            [
                ("PALLIUM_ONION_ADDRESS".into(), "a.onion b.onion".into()),
                ("PALLIUM_ONION_PORT".into(), "80 22".into()),
                ("PALLIUM_ONION_TARGET".into(), "8080 22".into()),
            ]
        );
        assert!(onion_env(&[]).is_empty());
        // Hooks take them.
        assert_eq!(allowed(env.clone()), env);
    }
}
