//! Reading typed values out of the parsed JSON tree: the conversion context
//! ([`Cx`]: origin, text for positions, warnings) and small typed getters that
//! turn a wrong type into a [`ProfileError`] with path and line:column.

#![forbid(unsafe_code)]

use std::time::Duration;

use serde_json::{Map, Value};

use super::error::ProfileError;
use super::locate::{locate, JsonPath};

/// The conversion context of one `parse` call.
pub(crate) struct Cx<'t> {
    origin: &'t str,
    text: &'t str,
    pub(crate) warnings: Vec<String>,
}

pub(crate) type Res<T> = Result<T, ProfileError>;

impl<'t> Cx<'t> {
    pub(crate) fn new(origin: &'t str, text: &'t str) -> Self {
        Cx {
            origin,
            text,
            warnings: Vec::new(),
        }
    }

    /// An error about the value at `path`.
    pub(crate) fn err(&self, path: &JsonPath, message: impl Into<String>) -> ProfileError {
        let (line, column) = locate(self.text, path);
        ProfileError::Invalid {
            origin: self.origin.to_string(),
            path: path.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    /// "expected X, found Y" for the value at `path`.
    pub(crate) fn wrong_type(
        &self,
        path: &JsonPath,
        expected: &str,
        found: &Value,
    ) -> ProfileError {
        self.err(path, format!("expected {expected}, found {}", kind(found)))
    }

    /// A warning line naming the profile.
    pub(crate) fn warn(&mut self, message: impl std::fmt::Display) {
        self.warnings
            .push(format!("profile {}: {message}", self.origin));
    }
}

/// How a JSON value's type is named in messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An object being read: remembers which keys were consumed so the rest can be
/// reported as unknown.
pub(crate) struct Obj<'v> {
    pub(crate) map: &'v Map<String, Value>,
    pub(crate) path: JsonPath,
    used: Vec<String>,
}

impl<'v> Obj<'v> {
    pub(crate) fn new(cx: &Cx<'_>, v: &'v Value, path: JsonPath) -> Res<Self> {
        match v {
            Value::Object(map) => Ok(Obj {
                map,
                path,
                used: Vec::new(),
            }),
            other => Err(cx.wrong_type(&path, "an object", other)),
        }
    }

    /// The value of `key`, or None if absent or null (null means "default"
    /// everywhere, a superset of what the original accepts).
    pub(crate) fn get(&mut self, key: &str) -> Option<&'v Value> {
        self.used.push(key.to_string());
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Mark `key` as handled without reading it.
    pub(crate) fn consume(&mut self, key: &str) {
        self.used.push(key.to_string());
    }

    /// Whether `key` is present (even as null).
    pub(crate) fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub(crate) fn at(&self, key: &str) -> JsonPath {
        self.path.key(key)
    }

    /// Keys not consumed so far, in document-map order.
    pub(crate) fn rest(&self) -> impl Iterator<Item = (&'v String, &'v Value)> + '_ {
        self.map
            .iter()
            .filter(|(k, _)| !self.used.iter().any(|u| u == *k))
    }

    /// Warn about every key not consumed, suggesting the known key it is
    /// closest to (a typo such as `adress` for `address`).
    pub(crate) fn finish(self, cx: &mut Cx<'_>) {
        for (k, _) in self.rest() {
            match closest(k, &self.used) {
                Some(known) => cx.warn(format_args!(
                    "unknown key {} (ignored; did you mean {}?)",
                    self.path.key(k),
                    self.path.key(known)
                )),
                None => cx.warn(format_args!("unknown key {} (ignored)", self.path.key(k))),
            }
        }
    }

    pub(crate) fn str(&mut self, cx: &Cx<'_>, key: &str) -> Res<Option<String>> {
        self.get(key)
            .map(|v| string(cx, v, &self.at(key)))
            .transpose()
    }

    pub(crate) fn bool(&mut self, cx: &Cx<'_>, key: &str, default: bool) -> Res<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(cx.wrong_type(&self.at(key), "true or false", v)),
        }
    }

    pub(crate) fn strings(&mut self, cx: &Cx<'_>, key: &str) -> Res<Option<Vec<String>>> {
        self.get(key)
            .map(|v| strings(cx, v, &self.at(key)))
            .transpose()
    }

    pub(crate) fn secs(&mut self, cx: &Cx<'_>, key: &str, default: u64) -> Res<Duration> {
        match self.get(key) {
            None => Ok(Duration::from_secs(default)),
            Some(v) => secs(cx, v, &self.at(key)),
        }
    }

    /// A required string; `hint` completes "… needs "key" (hint)".
    pub(crate) fn need_str(
        &mut self,
        cx: &Cx<'_>,
        key: &str,
        what: &str,
        hint: &str,
    ) -> Res<String> {
        match self.str(cx, key)? {
            Some(s) => Ok(s),
            None => Err(cx.err(&self.path, format!("{what} needs \"{key}\" ({hint})"))),
        }
    }
}

pub(crate) fn string(cx: &Cx<'_>, v: &Value, path: &JsonPath) -> Res<String> {
    match v {
        Value::String(s) if s.contains('\0') => {
            Err(cx.err(path, "a NUL character is not allowed here"))
        }
        Value::String(s) => Ok(s.clone()),
        other => Err(cx.wrong_type(path, "a string", other)),
    }
}

pub(crate) fn array<'v>(cx: &Cx<'_>, v: &'v Value, path: &JsonPath) -> Res<&'v [Value]> {
    match v {
        Value::Array(a) => Ok(a),
        other => Err(cx.wrong_type(path, "an array", other)),
    }
}

pub(crate) fn strings(cx: &Cx<'_>, v: &Value, path: &JsonPath) -> Res<Vec<String>> {
    array(cx, v, path)?
        .iter()
        .enumerate()
        .map(|(i, e)| string(cx, e, &path.index(i)))
        .collect()
}

/// A non-negative number of seconds (fractions allowed).
pub(crate) fn secs(cx: &Cx<'_>, v: &Value, path: &JsonPath) -> Res<Duration> {
    let Value::Number(n) = v else {
        return Err(cx.wrong_type(path, "a number of seconds", v));
    };
    if let Some(u) = n.as_u64() {
        return Ok(Duration::from_secs(u));
    }
    match n.as_f64().and_then(|f| Duration::try_from_secs_f64(f).ok()) {
        Some(d) => Ok(d),
        None => Err(cx.err(
            path,
            format!("expected a non-negative number of seconds, found {n}"),
        )),
    }
}

/// Python truthiness, for keys where the original only asks `if value:`.
pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// The known key `unknown` is most likely a misspelling of: within a
/// Damerau–Levenshtein distance of 1 for short keys and 2 from six letters
/// on, case ignored; None if nothing is that close.
fn closest<'k>(unknown: &str, known: &'k [String]) -> Option<&'k str> {
    let limit = if unknown.chars().count() >= 6 { 2 } else { 1 };
    let lower = unknown.to_lowercase();
    known
        .iter()
        .filter(|k| k.as_str() != unknown)
        .map(|k| (strsim::damerau_levenshtein(&lower, &k.to_lowercase()), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}
