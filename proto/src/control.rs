//! The client ⇄ session channel: a later `pallium exec/shell/stop/list/audit`
//! talks to a running session's supervisor over its control socket. The
//! supervisor checks the peer's uid (SO_PEERCRED) before reading anything.

use serde::{Deserialize, Serialize};

use crate::{broker::ProcEntry, error::RemoteError, wire::Fd};

/// Requests from a client to a running session.
#[derive(Debug, Serialize, Deserialize)]
pub enum ControlRequest {
    /// Run a command in the session; events follow until `Exited`.
    Exec(Exec),
    /// Forward a signal to the command this connection started.
    Signal(i32),
    /// End the session and everything in it.
    Stop,
    /// List the session's processes for `pallium audit`.
    Audit,
    /// Describe the session for `pallium list`.
    Info,
}

/// Events from the session to a client.
#[derive(Debug, Serialize, Deserialize)]
pub enum ControlEvent {
    Started { pid: i32 },
    Exited(crate::sandbox::ExitStatus),
    Audit(Vec<ProcEntry>),
    Info(SessionInfo),
    Stopping,
    Failed(RemoteError),
}

/// A command to run in a session.
#[derive(Debug, Serialize, Deserialize)]
pub struct Exec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub stdio: [Fd; 3],
    pub tty: bool,
    pub root: bool,
    /// `--namespace`, Python-style (-1: the application's).
    pub namespace: i64,
}

/// What `pallium list` shows about a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionInfo {
    pub profile: String,
    pub index: u32,
    pub supervisor_pid: i32,
    pub hops: Vec<String>,
    pub started_unix: u64,
    pub links: Vec<String>,
    /// The sandbox's init process (pid in the supervisor's pid namespace):
    /// `pallium cp`/`mv` reach the sandbox's files through its root.
    pub init_pid: i32,
}
