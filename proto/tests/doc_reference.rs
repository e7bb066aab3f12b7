//! Keeps `doc/PROFILE.md` true to the parser: every key the profile parser
//! reads (found in `proto/src/profile/*.rs` by the calls that read a key:
//! `o.get("…")`, `o.str(cx, "…")`, `consume("…")`, …) has a row in the
//! reference, every row names a key the parser reads, every hop type has an
//! example, and every JSON example in the reference parses without an error
//! or a warning (so do the profiles in doc/EXAMPLES.md and the README).
//! A key added to the parser without a line in the reference
//! (or a row left behind for a removed key) fails here.

use std::collections::BTreeSet;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

fn reference() -> String {
    std::fs::read_to_string(root().join("doc/PROFILE.md")).expect("read doc/PROFILE.md")
}

/// The parser's sources, without their tests and without whitespace (so a
/// call split over lines reads as one: `.need_str(cx,"user",`).
fn parser_sources() -> Vec<(String, String)> {
    let dir = root().join("proto/src/profile");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).expect("read proto/src/profile") {
        let p = e.expect("dir entry").path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        // tests.rs and schema.rs (the JSON Schema's mirror types) are test
        // code, not the parser.
        if !name.ends_with(".rs") || name == "tests.rs" || name == "schema.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&p).expect("read source");
        let squeezed: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        // A file's unit tests come last, in `#[cfg(test)] mod tests`.
        let squeezed = squeezed
            .split("#[cfg(test)]modtests")
            .next()
            .unwrap_or("")
            .to_string();
        out.push((name, squeezed));
    }
    out
}

/// The string literal that starts right after each occurrence of `prefix`.
fn literals_after(src: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find(prefix) {
        rest = &rest[i + prefix.len()..];
        if let Some(end) = rest.find('"') {
            out.push(rest[..end].to_string());
        }
    }
    out
}

/// Every key the parser reads from a profile object.
fn parser_keys() -> BTreeSet<String> {
    const CALLS: &[&str] = &[
        ".get(\"",
        ".str(cx,\"",
        ".bool(cx,\"",
        ".strings(cx,\"",
        ".secs(cx,\"",
        ".need_str(cx,\"",
        ".consume(\"",
        "argv(cx,o,\"",
    ];
    let mut keys = BTreeSet::new();
    for (_, src) in parser_sources() {
        for call in CALLS {
            keys.extend(literals_after(&src, call));
        }
        // Keys read in a loop: `for (key, slot) in [("post_up", &mut …), …]`.
        for lit in literals_after(&src, "(\"") {
            if src.contains(&format!("(\"{lit}\",&mut")) {
                keys.insert(lit);
            }
        }
    }
    keys
}

/// The hop types of the registry (`HOP_TYPES` in hop.rs).
fn hop_types() -> Vec<String> {
    let srcs = parser_sources();
    let (_, hop) = srcs.iter().find(|(n, _)| n == "hop.rs").expect("hop.rs");
    let table = hop
        .split("constHOP_TYPES:")
        .nth(1)
        .and_then(|t| t.split("];").next())
        .expect("HOP_TYPES table in hop.rs");
    literals_after(table, "(\"")
}

/// The keys the reference documents: the first cell of each table row in a
/// key table (a table whose header's first cell is `key`), in backticks.
fn documented_keys(doc: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut in_key_table = false;
    for line in doc.lines() {
        let line = line.trim();
        if !line.starts_with('|') {
            in_key_table = false;
            continue;
        }
        let first = line
            .trim_matches('|')
            .split('|')
            .next()
            .unwrap_or("")
            .trim();
        if first == "key" {
            in_key_table = true;
            continue;
        }
        if !in_key_table || first.starts_with("---") {
            continue;
        }
        // `name` or `name` (more words); several keys may share a row: `a`, `b`.
        for part in first.split(',') {
            let part = part.trim();
            if let Some(k) = part.strip_prefix('`').and_then(|p| p.split('`').next()) {
                keys.insert(k.to_string());
            }
        }
    }
    keys
}

/// The ```json blocks of the reference.
fn json_examples(doc: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in doc.lines() {
        match (&mut cur, line.trim()) {
            (None, "```json") => cur = Some(String::new()),
            (Some(text), "```") => {
                out.push(std::mem::take(text));
                cur = None;
            }
            (Some(text), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    out
}

#[test]
fn every_parser_key_is_documented_and_every_documented_key_is_read() {
    let code = parser_keys();
    // The scan must find the keys; a change in how the parser reads keys
    // that hides them from it has to show up here, not pass silently.
    for k in [
        "chain",
        "address",
        "virtuser",
        "post_up",
        "whitelist",
        "tor_args",
        "pass",
    ] {
        assert!(
            code.contains(k),
            "the scan of the parser lost key {k:?}: {code:?}"
        );
    }
    let doc = documented_keys(&reference());
    let missing: Vec<_> = code.difference(&doc).collect();
    assert!(
        missing.is_empty(),
        "doc/PROFILE.md has no row for these keys the parser reads: {missing:?}"
    );
    // `<tool>_path` stands for any tool name (read by suffix).
    let stale: Vec<_> = doc
        .iter()
        .filter(|k| !k.starts_with('<') && !code.contains(*k))
        .collect();
    assert!(
        stale.is_empty(),
        "doc/PROFILE.md documents keys the parser does not read: {stale:?}"
    );
}

#[test]
fn every_hop_type_has_an_example_that_parses() {
    let doc = reference();
    let examples = json_examples(&doc);
    for t in hop_types() {
        let needle = format!("\"type\": \"{t}\"");
        assert!(
            examples.iter().any(|e| e.contains(&needle)),
            "doc/PROFILE.md has no JSON example with {needle}"
        );
    }
}

#[test]
fn every_json_example_parses_without_warnings() {
    let doc = reference();
    let examples = json_examples(&doc);
    assert!(
        examples.len() > 20,
        "only {} JSON examples found",
        examples.len()
    );
    for (i, e) in examples.iter().enumerate() {
        match proto::profile::parse("<doc/PROFILE.md>", e) {
            Ok(p) => assert!(
                p.warnings.is_empty() || e.contains("\"files\""),
                "example {i} warns: {:?}\n{e}",
                p.warnings
            ),
            Err(err) => panic!("example {i} does not parse: {err}\n{e}"),
        }
    }
}

#[test]
fn the_json_examples_of_the_other_docs_parse_without_warnings() {
    for doc in ["doc/EXAMPLES.md", "README.md"] {
        let text = std::fs::read_to_string(root().join(doc)).expect("read doc");
        let examples = json_examples(&text);
        assert!(!examples.is_empty(), "{doc} has no JSON example");
        for (i, e) in examples.iter().enumerate() {
            match proto::profile::parse(doc, e) {
                Ok(p) => assert!(
                    p.warnings.is_empty(),
                    "{doc} example {i} warns: {:?}\n{e}",
                    p.warnings
                ),
                Err(err) => panic!("{doc} example {i} does not parse: {err}\n{e}"),
            }
        }
    }
}
