//! Shared helpers of the end-to-end tests: where the built binaries are, and
//! running `pallium` with a profile file.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// `target/<profile>/` of this build (the test executable lives in `deps/`).
pub(crate) fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf();
    assert!(
        dir.join("pallium").exists(),
        "{} has no pallium binary: run `cargo build --workspace` first (tests/run-all.sh does)",
        dir.display()
    );
    dir
}

pub(crate) fn pallium() -> PathBuf {
    bin_dir().join("pallium")
}

/// Helper binaries that must sit beside `pallium`.
pub(crate) fn binaries() -> Vec<PathBuf> {
    let d = bin_dir();
    vec![
        d.join("pallium"),
        d.join("pallium-netbroker"),
        d.join("pallium-sandboxer"),
    ]
}

/// Write `json` to a fresh profile file and return its path.
pub(crate) fn profile_file(name: &str, json: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pallium-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{name}.json"));
    std::fs::write(&p, json).unwrap();
    p
}

pub(crate) fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Run `pallium ARGS` here (no namespace) and return its output.
pub(crate) fn run(args: &[&str]) -> Output {
    Command::new(pallium())
        .args(args)
        .output()
        .expect("run pallium")
}
