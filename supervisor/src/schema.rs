//! The profile JSON Schema (`extra/pallium-profile.schema.json`, derived
//! from proto's mirror types and kept current by proto's tests), built in:
//! `pallium check --schema` prints it, and `pallium check PROFILE` validates
//! the profile's JSON against it beside the parser's own verdict.

#![forbid(unsafe_code)]

use jsonschema::error::ValidationErrorKind;
use jsonschema::ValidationError;

/// The schema's text.
pub(crate) const SCHEMA: &str = include_str!("../../extra/pallium-profile.schema.json");

/// What the schema says of `text` (a profile's JSON): one line per
/// violation, "PATH: message" (PATH "/" for the top level); empty when it
/// is valid. Text that is not JSON gives nothing, nor do unknown keys: the
/// parser reports those.
pub(crate) fn findings(text: &str) -> Vec<String> {
    let Ok(instance) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let schema: serde_json::Value =
        serde_json::from_str(SCHEMA).expect("the built-in schema is JSON (proto's tests)");
    let validator =
        jsonschema::validator_for(&schema).expect("the built-in schema is valid (proto's tests)");
    let mut out = Vec::new();
    for e in validator.iter_errors(&instance) {
        flatten(&e, &mut out);
    }
    out
}

/// One line per error; an `anyOf`/`oneOf` (an optional key is "the object
/// or null", a hop is one of the hop types) is replaced by the errors of
/// the branch the value meant — the one that did not fail on its type or
/// its `"type"` tag — so the line names the key that is wrong, not the
/// whole object.
fn flatten(e: &ValidationError<'_>, out: &mut Vec<String>) {
    use ValidationErrorKind::{AdditionalProperties, AnyOf, Constant, Enum, OneOfNotValid, Type};
    // Unknown keys: the parser warns of each itself, with a "did you mean".
    if matches!(e.kind(), AdditionalProperties { .. }) {
        return;
    }
    if let AnyOf { context } | OneOfNotValid { context } = e.kind() {
        let here = e.instance_path().to_string();
        let tag = format!("{here}/type");
        let misses = |branch: &Vec<ValidationError<'static>>| {
            branch
                .iter()
                .filter(|x| {
                    let p = x.instance_path().to_string();
                    (p == here || p == tag)
                        && matches!(x.kind(), Type { .. } | Constant { .. } | Enum { .. })
                })
                .count()
        };
        if let Some(best) = context.iter().min_by_key(|b| (misses(b), b.len())) {
            let clear = context.iter().filter(|b| misses(b) == 0).count() == 1;
            if misses(best) == 0 && clear && !best.is_empty() {
                for x in best {
                    flatten(x, out);
                }
                return;
            }
        }
    }
    let path = e.instance_path().to_string();
    let path = if path.is_empty() { "/".into() } else { path };
    out.push(format!("{path}: {e}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_profile_has_no_findings_and_a_wrong_type_has_one() {
        assert!(findings(r#"{"chain": [{"type": "tor"}]}"#).is_empty());
        let f = findings(r#"{"network": {"kill_switch": "yes"}}"#);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].starts_with("/network/kill_switch: "), "{f:?}");
        assert!(findings("not json").is_empty());
        // Through the optional key's "object or null" and the hop's oneOf:
        // the key that is wrong, not the whole object.
        let f = findings(r#"{"network": {"kill_switch": 1}}"#);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].starts_with("/network/kill_switch: "), "{f:?}");
        assert!(findings(r#"{"network": {"kil_switch": true}}"#).is_empty());
        let f = findings(r#"{"chain": [{"type": "socks", "address": 5}]}"#);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].starts_with("/chain/0/address: "), "{f:?}");
    }
}
