//! pallium is MIT-licensed: every dependency in Cargo.lock must carry a
//! licence compatible with that (no GPL). The allow-list mirrors deny.toml,
//! for machines without cargo-deny.

use std::process::Command;

/// SPDX identifiers we accept, alone or in an OR/AND expression.
const ALLOWED: &[&str] = &[
    "MIT",
    "MIT-0", // MIT without the attribution clause (borrow-or-share, via jsonschema)
    "Apache-2.0",
    "Apache-2.0 WITH LLVM-exception",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "ISC",
    "Unicode-3.0",
    "Unicode-DFS-2016",
    "Zlib",
    "0BSD",
    "CC0-1.0",
    "Unlicense",
    "MPL-2.0",
    "BSL-1.0",
];

/// Whether an SPDX expression is satisfiable with allowed licences: an OR
/// needs one allowed side, an AND needs all (no parentheses in our tree;
/// a `/` is the old spelling of OR).
fn acceptable(expr: &str) -> bool {
    let expr = expr.replace('/', " OR ").replace(['(', ')'], "");
    expr.split(" OR ")
        .any(|alt| alt.split(" AND ").all(|l| ALLOWED.contains(&l.trim())))
}

#[test]
fn every_dependency_has_an_mit_compatible_licence() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Only what builds here (other platforms' crates are never compiled).
    let rustc = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("host triple");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--offline",
            "--filter-platform",
            &host,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut bad = Vec::new();
    for p in meta["packages"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        match p["license"].as_str() {
            Some(l) if acceptable(l) => {}
            other => bad.push(format!("{name} {}: {other:?}", p["version"])),
        }
    }
    assert!(
        bad.is_empty(),
        "dependencies with a licence outside the allow-list:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_licence_rule_reads_spdx_expressions() {
    assert!(acceptable("MIT OR Apache-2.0"));
    assert!(acceptable("Apache-2.0/MIT"));
    assert!(acceptable("(MIT OR Apache-2.0) AND Unicode-3.0"));
    assert!(!acceptable("GPL-3.0-or-later"));
    assert!(!acceptable("MIT AND GPL-2.0"));
}
