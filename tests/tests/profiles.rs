//! The ready-made profiles in `extra/profiles/`: each one passes `pallium
//! check` with no warning and says, in its `comment`, what it protects
//! against.

mod common;

use std::path::PathBuf;

use common::{run, text};

fn profiles() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../extra/profiles");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    out.sort();
    out
}

#[test]
fn every_ready_made_profile_checks_clean() {
    let all = profiles();
    assert!(all.len() >= 10, "ten ready-made profiles or more: {all:?}");
    for p in all {
        let out = run(&["check", p.to_str().unwrap()]);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{}: {stderr}", p.display());
        assert!(stderr.is_empty(), "{}: warnings: {stderr}", p.display());
        assert!(stdout.contains("ok: the profile is valid"), "{stdout}");
    }
}

#[test]
fn every_ready_made_profile_says_what_it_protects_against() {
    for p in profiles() {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let comment = match &v["comment"] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(a) => a
                .iter()
                .map(|l| l.as_str().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" "),
            other => panic!("{}: no comment ({other})", p.display()),
        };
        assert!(
            comment.contains("Protects against") || comment.contains("protects against"),
            "{}: the comment does not say what it protects against",
            p.display()
        );
    }
}
