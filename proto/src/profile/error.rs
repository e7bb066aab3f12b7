//! [`ProfileError`]: one line naming the profile, the JSON path, where in the
//! text the offending value is and what to do about it.

#![forbid(unsafe_code)]

/// Why a profile was refused. `Display` is one line, ready for `Error: …`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// The text is not JSON at all.
    #[error("profile {origin}: malformed JSON at line {line}, column {column}: {message}")]
    Syntax {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// The JSON is well-formed but a value is wrong.
    #[error(
        "profile {origin}: {}{message} (line {line}, column {column})",
        path_prefix(path)
    )]
    Invalid {
        origin: String,
        /// The JSON path of the offending value (`network.chain[0].address`);
        /// empty for the document itself.
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
}

impl ProfileError {
    /// The JSON path of the offending value, if the JSON itself parsed.
    pub fn path(&self) -> Option<&str> {
        match self {
            ProfileError::Syntax { .. } => None,
            ProfileError::Invalid { path, .. } => Some(path),
        }
    }

    /// Line and column (1-based) the error refers to.
    pub fn position(&self) -> (usize, usize) {
        match self {
            ProfileError::Syntax { line, column, .. }
            | ProfileError::Invalid { line, column, .. } => (*line, *column),
        }
    }

    /// From a serde_json error on the raw text.
    pub(crate) fn syntax(origin: &str, e: &serde_json::Error) -> Self {
        // serde_json appends " at line L column C"; we say it our way.
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
        ProfileError::Syntax {
            origin: origin.to_string(),
            line: e.line(),
            column: e.column(),
            message,
        }
    }
}

fn path_prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}
