//! The command line, as the original pallium spells it (clap derive).

use clap::{Args, Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  pallium exec --one-shot default -- curl https://example.org
                                  run one command in a fresh network namespace and sandbox
  echo '{}' | pallium exec - -- ip addr
                                  a profile on standard input (always a one-shot session)
  pallium exec '{\"sandbox\":{\"hostname\":\"box\"}}' -- hostname
                                  an inline JSON profile
  pallium run work                run ~/.config/pallium/profiles/work.json (/etc/pallium/profiles as root)
  pallium run --new-session work  a second session of the same profile
  pallium shell work -s 1         a shell in session 1 of 'work'
  pallium list                    running sessions
  pallium audit work              capabilities, namespaces and seccomp of every process of a session
  pallium stop work               end session 0 and everything in it

PROFILE is a name (a file in the profile directory; 'default' is the built-in empty profile
when no such file exists), a path containing '/', '-' for standard input, or inline JSON.";

/// pallium: run programs in chained network namespaces and a sandbox.
#[derive(Debug, Parser)]
#[command(name = "pallium", version, about, after_help = EXAMPLES)]
pub(crate) struct Cli {
    /// Log level: DEBUG, INFO, WARNING, ERROR or CRITICAL (also: env PALLIUM_LOG).
    #[arg(long, global = true, value_parser = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "debug", "info", "warning", "error", "critical"])]
    pub(crate) loglevel: Option<String>,
    /// More log detail from all three processes, as timestamped records:
    /// -v info, -vv debug, -vvv trace (also: env PALLIUM_LOG).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Build the profile's chain and sandbox and run its command (default: $SHELL).
    ///
    /// Without --new-session this is session 0, and it fails if that is running.
    /// The session ends when the command exits; pallium exits with its code.
    Run(RunArgs),
    /// Run a command in a running session, or in a new one with --one-shot.
    ///
    /// Put `--` before the command. The command's exit code becomes pallium's
    /// (128+N when it is killed by signal N).
    Exec(ExecArgs),
    /// Open $SHELL in a running session (or a new one with --one-shot).
    Shell(ShellArgs),
    /// End a session and everything in it.
    Stop(SessionArgs),
    /// List running sessions: profile, index, supervisor pid, hops, uptime.
    List,
    /// Validate a profile and print the plan, without setting anything up.
    ///
    /// Exits 0 when the profile is valid and runnable, 1 otherwise.
    Check(CheckArgs),
    /// Show every process of a session with its uids, capabilities,
    /// no_new_privs, seccomp mode and namespaces, marking anything the policy
    /// does not allow.
    Audit(SessionArgs),
    /// Internal: a session's audio relay (started by its supervisor for
    /// `sandbox.audio`, its listening socket on fd 3; ends when stdin closes).
    #[command(hide = true, name = "audio-relay")]
    AudioRelay(AudioRelayArgs),
    /// Copy a file (or, with -r, a directory tree) between the host and a
    /// running session's sandbox.
    ///
    /// Exactly one side is in the sandbox: --from PROFILE (SRC is in it),
    /// --to PROFILE (DST is in it), or PROFILE:PATH on either side. A DST that
    /// is a directory receives basename(SRC); with -r, DST must not exist.
    /// Sandbox paths are resolved inside the sandbox's root: its symbolic
    /// links never lead to the host's files.
    #[command(after_help = CP_EXAMPLES)]
    Cp(CpArgs),
    /// Move a file or directory between the host and a running session's
    /// sandbox (copy, then remove the source).
    #[command(after_help = CP_EXAMPLES)]
    Mv(TransferArgs),
}

const CP_EXAMPLES: &str = "\
Examples:
  pallium cp notes.txt --to work /tmp/notes.txt     host file into session 0 of 'work'
  pallium cp -r --from work /home/me/out ./out      a directory tree out of the sandbox
  pallium cp work:/etc/hostname .                   the PROFILE:PATH form
  pallium mv report.pdf work:/tmp/ -s 1             into session 1 (then gone from the host)

A host path containing ':' before any '/' is read as PROFILE:PATH; write ./NAME.";

#[derive(Debug, Args)]
pub(crate) struct CpArgs {
    /// Copy a directory and everything below it.
    #[arg(short, long)]
    pub(crate) recursive: bool,
    #[command(flatten)]
    pub(crate) transfer: TransferArgs,
}

#[derive(Debug, Args)]
pub(crate) struct TransferArgs {
    /// Session index.
    #[arg(short, long, default_value_t = 0)]
    pub(crate) session: u32,
    /// SRC is a path in this profile's sandbox.
    #[arg(long, value_name = "PROFILE", conflicts_with = "to")]
    pub(crate) from: Option<String>,
    /// DST is a path in this profile's sandbox.
    #[arg(long, value_name = "PROFILE")]
    pub(crate) to: Option<String>,
    /// Source path (or PROFILE:PATH).
    pub(crate) src: String,
    /// Destination path (or PROFILE:PATH).
    pub(crate) dst: String,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Suppress the output of helper tools and progress lines.
    #[arg(long)]
    pub(crate) quiet: bool,
    /// Start another session if the profile is already running.
    #[arg(long)]
    pub(crate) new_session: bool,
    /// Write the sandbox's init pid to FILE once the session is ready.
    #[arg(long, value_name = "FILE")]
    pub(crate) pid_file: Option<std::path::PathBuf>,
    /// Profile name, path, or inline JSON.
    pub(crate) profile: String,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct Target {
    /// Suppress the output of helper tools and progress lines.
    #[arg(long)]
    pub(crate) quiet: bool,
    /// Session index to enter.
    #[arg(short, long, default_value_t = 0)]
    pub(crate) session: u32,
    /// Start a new session just for this command and end it afterwards.
    #[arg(long)]
    pub(crate) one_shot: bool,
    /// Stay root inside the sandbox (rootless: the namespace's root instead of
    /// your own uid; as root: root instead of the virtual user's uid).
    #[arg(short, long)]
    pub(crate) root: bool,
    /// Network namespace to run in, by Python-style index: 0 is where hop 1
    /// connects from (as root, this namespace), i where hop i+1 does, -1 the
    /// application's (the default). Other than -1 skips hops, so traffic is
    /// less protected; not with gVisor.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub(crate) namespace: i64,
    /// Write the sandbox's init pid to FILE once the session is ready.
    #[arg(long, value_name = "FILE")]
    pub(crate) pid_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    #[command(flatten)]
    pub(crate) target: Target,
    /// Profile name, path, '-' (standard input) or inline JSON.
    pub(crate) profile: String,
    /// The command and its arguments (put `--` before them).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) command: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ShellArgs {
    #[command(flatten)]
    pub(crate) target: Target,
    /// Profile name, path, '-' (standard input) or inline JSON.
    pub(crate) profile: String,
}

#[derive(Debug, Args)]
pub(crate) struct SessionArgs {
    /// Session index.
    #[arg(short, long, default_value_t = 0)]
    pub(crate) session: u32,
    /// Profile name or path.
    pub(crate) profile: String,
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Profile name, path, '-' (standard input) or inline JSON.
    #[arg(required_unless_present = "schema")]
    pub(crate) profile: Option<String>,
    /// Print the profile JSON Schema (the one check validates against; also
    /// installed as /usr/share/pallium/pallium-profile.schema.json) and exit.
    #[arg(long, conflicts_with = "profile")]
    pub(crate) schema: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn exec_takes_everything_after_double_dash() {
        let c = Cli::parse_from(["pallium", "exec", "-s", "2", "p", "--", "ls", "-la", "--x"]);
        let Command::Exec(e) = c.command else {
            panic!()
        };
        assert_eq!(e.target.session, 2);
        assert_eq!(e.command, ["ls", "-la", "--x"]);
    }

    #[test]
    fn namespace_accepts_negative_index() {
        let c = Cli::parse_from(["pallium", "shell", "--namespace", "-2", "p"]);
        let Command::Shell(s) = c.command else {
            panic!()
        };
        assert_eq!(s.target.namespace, -2);
    }

    #[test]
    fn mv_takes_options_between_paths() {
        let c = Cli::parse_from(["pallium", "mv", "a", "--to", "p", "/tmp/b", "-s", "1"]);
        let Command::Mv(m) = c.command else { panic!() };
        assert_eq!((m.src.as_str(), m.dst.as_str()), ("a", "/tmp/b"));
        assert_eq!((m.to.as_deref(), m.session), (Some("p"), 1));
        assert!(
            Cli::try_parse_from(["pallium", "cp", "--from", "p", "--to", "q", "a", "b"]).is_err()
        );
        assert!(Cli::try_parse_from(["pallium", "mv", "-r", "a", "p:b"]).is_err());
    }
}

#[derive(Debug, Args)]
pub(crate) struct AudioRelayArgs {
    /// The caller's PulseAudio server socket.
    #[arg(long)]
    pub(crate) server: std::path::PathBuf,
    /// Let clients record (the profile's `audio` asks for the microphone).
    #[arg(long)]
    pub(crate) microphone: bool,
    /// The sandbox's host name, reported to clients as the server's.
    #[arg(long)]
    pub(crate) hostname: String,
    /// The sandbox's virtual user, reported to clients as the server's.
    #[arg(long)]
    pub(crate) user: Option<String>,
}
