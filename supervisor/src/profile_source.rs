//! Finding and loading a profile: a name in the profile directory, a path, `-`
//! (standard input) or inline JSON — resolved as the original pallium does.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use proto::profile::{self, Profile};

/// A loaded, validated profile and where it came from.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) profile: Profile,
    /// How to name it to the user: the file name without `.json` inside the
    /// profile directory, else the absolute path, or `<stdin>` / `<inline>`.
    pub(crate) display: String,
    /// Stable identity for the session registry; None for stdin and inline
    /// profiles, which always make a one-shot session.
    pub(crate) pseudo_path: Option<String>,
    /// The profile's JSON text, as read.
    pub(crate) text: String,
}

impl Loaded {
    pub(crate) fn one_shot_only(&self) -> bool {
        self.pseudo_path.is_none()
    }
}

/// The built-in profile used when `default` names no file: an empty chain and
/// the default sandbox.
const BUILTIN_DEFAULT: &str = "{}";

/// The directory profile names are looked up in.
pub(crate) fn profile_dir() -> PathBuf {
    if nix::unistd::getuid().is_root() {
        PathBuf::from("/etc/pallium/profiles")
    } else {
        home().join(".config/pallium/profiles")
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Resolve and parse `arg`. `allow_stdin_inline`: `-` and inline JSON are only
/// profiles for `exec`, `shell` and `check`, as in the original.
pub(crate) fn load(arg: &str, allow_stdin_inline: bool) -> Result<Loaded> {
    let (text, display, pseudo_path) = read(arg, allow_stdin_inline)?;
    let parsed = profile::parse(&display, &text).map_err(|e| anyhow::anyhow!("{e}"))?;
    for w in &parsed.warnings {
        eprintln!("pallium: warning: {w}");
    }
    Ok(Loaded {
        profile: parsed.profile,
        display,
        pseudo_path,
        text,
    })
}

fn read(arg: &str, allow_stdin_inline: bool) -> Result<(String, String, Option<String>)> {
    if allow_stdin_inline && arg == "-" {
        let text = std::io::read_to_string(std::io::stdin())
            .context("reading the profile from standard input")?;
        reattach_stdin_to_terminal();
        return Ok((text, "<stdin>".into(), None));
    }
    if allow_stdin_inline && arg.trim_start().starts_with('{') {
        return Ok((arg.to_string(), "<inline>".into(), None));
    }
    if !arg.contains('/') {
        let dir = profile_dir();
        let path = dir.join(format!("{arg}.json"));
        return match std::fs::read_to_string(&path) {
            Ok(text) => Ok((text, arg.to_string(), Some(pseudo(&path)))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && arg == "default" => {
                Ok((BUILTIN_DEFAULT.into(), "default".into(), Some("builtin://default".into())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "profile '{arg}' not found: looked for {} (create it, or give a path such as ./{arg}.json)",
                path.display()
            ),
            Err(e) => Err(e).with_context(|| format!("cannot read profile {}", path.display())),
        };
    }
    let path = std::path::absolute(arg).with_context(|| format!("bad profile path {arg}"))?;
    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            anyhow::anyhow!("profile file {} does not exist", path.display())
        }
        _ => anyhow::Error::new(e).context(format!("cannot read profile {}", path.display())),
    })?;
    let display = path.display().to_string();
    Ok((text, display, Some(pseudo(&path))))
}

fn pseudo(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// After a profile was read from stdin, the command still wants a terminal
/// there: use the first of stdout/stderr that is one (as the original does).
fn reattach_stdin_to_terminal() {
    for fd in [std::io::stdout().as_fd_raw(), std::io::stderr().as_fd_raw()] {
        if nix::unistd::isatty(fd).unwrap_or(false) {
            crate::sys::dup_onto_stdin(fd);
            return;
        }
    }
    crate::sys::stdin_from_dev_null();
}

trait AsFdRaw {
    fn as_fd_raw(&self) -> std::os::fd::BorrowedFd<'_>;
}

impl<T: std::os::fd::AsFd> AsFdRaw for T {
    fn as_fd_raw(&self) -> std::os::fd::BorrowedFd<'_> {
        self.as_fd()
    }
}
