//! Profile types (placeholder until the parser lands).
use serde::{Deserialize, Serialize};

/// One hop of `network.chain`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hop {
    pub kind: String,
}
