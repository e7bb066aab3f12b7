//! The supervisor ⇄ sandboxer channel: prepare the application's namespaces
//! and file view, then spawn, signal and reap its processes.
//!
//! Legal order: `Setup` once (answered by `Ready` or `Failed`), then any number
//! of `Spawn`/`Signal`/`ListPids`, then `Shutdown`. The sandboxer enforces it:
//! anything else (a `Spawn`, `Signal` or `ListPids` before `Setup`, a second
//! `Setup`) gets one `Failed` of kind `Protocol` and ends it, after killing
//! whatever it started. Every field is re-checked as it is decoded
//! (`profile::check`): a frame that breaks a rule ends the sandboxer too.

use serde::{Deserialize, Serialize};

use crate::profile::check;
use crate::{broker::ProcEntry, error::RemoteError, wire::Fd};

/// Requests from the supervisor to the sandboxer.
#[derive(Debug, Serialize, Deserialize)]
pub enum SandboxRequest {
    /// Join the network namespace and build the sandbox around it (boxed: it
    /// carries the profile's sandbox section, far larger than the others).
    Setup(Box<Setup>),
    /// Start a process in the sandbox.
    Spawn(Spawn),
    /// Deliver a signal to a spawned process (its process group).
    Signal { id: u32, signal: i32 },
    /// Report the sandbox's processes.
    ListPids,
    /// Kill everything in the sandbox and exit.
    Shutdown,
}

/// Events from the sandboxer to the supervisor.
#[derive(Debug, Serialize, Deserialize)]
pub enum SandboxEvent {
    /// `Setup` is done; `init_pid` is the sandbox's PID 1 as the host sees
    /// it, `root` an `O_PATH` descriptor of the sandbox's root directory (for
    /// `cp`/`mv`: the init is not dumpable, so nobody without
    /// CAP_SYS_PTRACE could open its `/proc/PID/root`).
    /// `owner`: the host uid/gid the application runs as (root mode; None
    /// rootless or as the host's root), which `cp`/`mv` act as in the
    /// sandbox.
    /// `audio`: with `sandbox.audio` under gVisor, a listening TCP socket
    /// on the application namespace's 127.0.0.1 for the audio relay to
    /// serve (gVisor's host Unix sockets refuse libpulse's credentials).
    Ready {
        init_pid: i32,
        root: Fd,
        owner: Option<(u32, u32)>,
        audio: Option<Fd>,
    },
    /// A `Spawn` has started (`pid` as the host sees it).
    Spawned { id: u32, pid: i32 },
    /// A spawned process has ended.
    Exited { id: u32, status: ExitStatus },
    /// Answer to `ListPids`.
    Pids(Vec<ProcEntry>),
    /// `Setup` or a `Spawn` (with its id) failed.
    Failed { id: Option<u32>, error: RemoteError },
}

/// How the application's sandbox is built (the spine: namespaces and the
/// default file view; the rest of the sandbox keys come later).
#[derive(Debug, Serialize, Deserialize)]
pub struct Setup {
    pub netns: Fd,
    /// Rootless: the session's user namespace; the sandboxer joins it first.
    pub userns: Option<Fd>,
    /// `ChainReady::app_userns`: the user namespace owning `netns` alone,
    /// which the application's processes join.
    pub app_userns: Option<Fd>,
    /// `ChainReady::app_uid`: root mode, the host uid that is uid 0 there.
    pub app_uid: Option<u32>,
    #[serde(deserialize_with = "check::de::hostname")]
    pub hostname: String,
    pub resolv_conf: String,
    pub hosts: String,
    /// The caller's real uid/gid: rootless applications are mapped back to it.
    pub uid: u32,
    pub gid: u32,
    /// The profile's `sandbox` section (virtual user, paths, seccomp, …),
    /// validated by the supervisor; the sandboxer builds what it asks for.
    pub profile: crate::profile::Sandbox,
    /// `sandbox.gvisor`: the host path of `runsc`, found by the supervisor;
    /// the sandboxer opens it before the file view replaces the host's.
    #[serde(deserialize_with = "check::de::opt_abs_path")]
    pub runsc: Option<String>,
    /// Host directories hidden in the view unless the profile names them:
    /// pallium's runtime directory (control sockets) and the caller's
    /// `$XDG_RUNTIME_DIR` (its IPC sockets).
    #[serde(deserialize_with = "check::de::abs_paths")]
    pub hidden: Vec<String>,
    /// What the supervisor prepared for this session and the view must
    /// show: `sandbox.gui`'s X socket, Xauthority and `sandbox.audio`'s
    /// relay socket and client configuration. Bound last, over the view.
    pub binds: Vec<SessionBind>,
}

/// A host path bound into the sandbox at `target`, which must lie in the
/// sandbox's private `/tmp` (a fresh tmpfs in every view: the mount point is
/// created there, never on a host file system).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionBind {
    #[serde(deserialize_with = "check::de::abs_path")]
    pub source: String,
    #[serde(deserialize_with = "check::de::tmp_path")]
    pub target: String,
    /// A directory (else a file or socket).
    pub dir: bool,
}

/// One process to start inside the sandbox.
#[derive(Debug, Serialize, Deserialize)]
pub struct Spawn {
    /// Chosen by the supervisor, unique per session.
    pub id: u32,
    /// Not empty, no NUL.
    #[serde(deserialize_with = "check::de::argv")]
    pub argv: Vec<String>,
    /// Names without `=` or NUL, values without NUL.
    #[serde(deserialize_with = "check::de::env")]
    pub env: Vec<(String, String)>,
    /// Working directory (absolute); falls back to `/` when absent in the
    /// sandbox.
    #[serde(deserialize_with = "check::de::opt_abs_path")]
    pub cwd: Option<String>,
    /// stdin, stdout, stderr (a PTY's slave three times for terminals).
    pub stdio: [Fd; 3],
    /// stdio is a terminal: make it the controlling terminal of a new session.
    pub tty: bool,
    /// `--root`: stay uid 0 — rootless, in the sandbox's user namespace
    /// instead of mapping back to the caller's uid; as root, instead of
    /// becoming the virtual user's unprivileged uid.
    pub root: bool,
    /// `exec --namespace`: run in this network namespace (one a hop connects
    /// from) instead of the application's.
    pub netns: Option<Fd>,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The shell convention: the code, or 128 + N when killed by signal N.
    pub fn as_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}
