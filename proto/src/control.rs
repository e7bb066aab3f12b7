//! The client ⇄ session channel: a later `pallium exec/shell/stop/list/audit`
//! and `cp`/`mv` talk to a running session's supervisor over its control
//! socket.
//!
//! Order: the client checks who serves the socket (the recorded supervisor,
//! our uid or root, our PID namespace) before it says anything; both send a
//! `Hello`; the supervisor checks who connected (our uid or root, not inside a
//! sandbox: `SO_PEERCRED`/`SO_PEERPIDFD`) and answers with [`ControlEvent::Accepted`]
//! or [`ControlEvent::Refused`] before reading any request.

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
    /// The sandbox's root directory for `pallium cp`/`mv`: answered with
    /// [`ControlEvent::SandboxRoot`].
    SandboxRoot,
}

/// Events from the session to a client.
#[derive(Debug, Serialize, Deserialize)]
pub enum ControlEvent {
    /// The first event on every connection: the client may send requests.
    Accepted,
    /// The first event on a refused connection, which the supervisor then
    /// closes without reading anything.
    Refused(Refusal),
    Started {
        pid: i32,
    },
    Exited(crate::sandbox::ExitStatus),
    Audit(Vec<ProcEntry>),
    Info(SessionInfo),
    Stopping,
    Failed(RemoteError),
    /// An `O_PATH` descriptor of the sandbox's root directory, opened by the
    /// supervisor through its init process when the sandbox became ready
    /// (no pid the client would have to trust, none that could be reused).
    SandboxRoot {
        root: Fd,
        /// The host uid/gid the application's files belong to, which what
        /// `cp`/`mv` create in the sandbox is given (root mode: uid 0 of the
        /// application's user namespace); None: leave them the caller's.
        owner: Option<(u32, u32)>,
    },
}

/// Why the supervisor refused a control connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The client runs inside a pallium sandbox (this session's or any other
    /// PID namespace than the supervisor's), or where it runs cannot be told.
    InsideSandbox,
    /// The client runs as another user (neither the session's nor root).
    OtherUser,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::InsideSandbox => "the request comes from inside a pallium sandbox",
            Refusal::OtherUser => "the request comes from another user",
        })
    }
}

/// A command to run in a session.
#[derive(Debug, Serialize, Deserialize)]
pub struct Exec {
    pub argv: Vec<String>,
    /// The client's whole environment: the supervisor filters it with the
    /// session profile's policy ([`crate::profile::Environment::apply`]).
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
    /// The sandbox's init process (pid in the supervisor's pid namespace),
    /// shown for information; `pallium cp`/`mv` ask for
    /// [`ControlRequest::SandboxRoot`] instead of trusting it.
    pub init_pid: i32,
}
