//! Errors that cross a process boundary: a serialisable cause chain.

use serde::{Deserialize, Serialize};

/// An error raised in another process, carried with its cause chain so the
/// CLI can print one clear line and, with `--loglevel debug`, the whole chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    /// The failing step, e.g. "netbroker: create veth pair".
    pub context: String,
    /// The outermost message followed by each `source()` in turn.
    pub chain: Vec<String>,
}

impl RemoteError {
    /// Capture `err` and its sources under `context`.
    pub fn new(context: impl Into<String>, err: &(dyn std::error::Error + 'static)) -> Self {
        let mut chain = vec![err.to_string()];
        let mut cur = err.source();
        while let Some(e) = cur {
            chain.push(e.to_string());
            cur = e.source();
        }
        RemoteError {
            context: context.into(),
            chain,
        }
    }

    /// An error from a plain message.
    pub fn msg(context: impl Into<String>, msg: impl Into<String>) -> Self {
        RemoteError {
            context: context.into(),
            chain: vec![msg.into()],
        }
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
