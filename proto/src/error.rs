//! Errors that cross a process boundary: a serialisable cause chain with a
//! kind the receiver matches on (never the message text).

use serde::{Deserialize, Serialize};

/// What sort of failure a [`RemoteError`] is, for the receiver to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// A step failed for a reason of its own (the default).
    Failed,
    /// Something named does not exist (a command, a file, a user).
    NotFound,
    /// The system refused the helper (EACCES/EPERM), e.g. a skeleton the
    /// caller cannot read.
    Permission,
    /// The helper's own rules refused the request (a hop user root, an
    /// unsupported hop type).
    Refused,
    /// The request broke the protocol: out of order or malformed. The
    /// helper ends after saying so.
    Protocol,
}

/// An error raised in another process, carried with its cause chain so the
/// CLI can print one clear line and, with `--loglevel debug`, the whole chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    pub kind: ErrorKind,
    /// The failing step, e.g. "netbroker: create veth pair".
    pub context: String,
    /// The outermost message followed by each `source()` in turn.
    pub chain: Vec<String>,
}

impl RemoteError {
    /// Capture `err` and its sources under `context`; the kind comes from
    /// the first `io::Error` of the chain (not found, permission), else
    /// [`ErrorKind::Failed`].
    pub fn new(context: impl Into<String>, err: &(dyn std::error::Error + 'static)) -> Self {
        let mut chain = Vec::new();
        let mut kind = None;
        let mut cur = Some(err);
        while let Some(e) = cur {
            chain.push(e.to_string());
            if let (None, Some(io)) = (kind, e.downcast_ref::<std::io::Error>()) {
                kind = Some(ErrorKind::of_io(io.kind()));
            }
            cur = e.source();
        }
        RemoteError {
            kind: kind.unwrap_or(ErrorKind::Failed),
            context: context.into(),
            chain,
        }
    }

    /// An error from a plain message ([`ErrorKind::Failed`]).
    pub fn msg(context: impl Into<String>, msg: impl Into<String>) -> Self {
        RemoteError {
            kind: ErrorKind::Failed,
            context: context.into(),
            chain: vec![msg.into()],
        }
    }

    /// The same error, of `kind`.
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }
}

impl ErrorKind {
    /// The kind of an I/O error.
    pub fn of_io(kind: std::io::ErrorKind) -> Self {
        match kind {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied => ErrorKind::Permission,
            _ => ErrorKind::Failed,
        }
    }

    /// The kind of an errno.
    pub fn of_errno(errno: i32) -> Self {
        Self::of_io(std::io::Error::from_raw_os_error(errno).kind())
    }
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.context)?;
        for c in &self.chain {
            write!(f, ": {c}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RemoteError {}
