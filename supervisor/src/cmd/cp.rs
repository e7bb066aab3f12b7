//! `pallium cp` and `pallium mv`: which side is the sandbox, which session,
//! and its root (asked of the session's supervisor); the copying itself is in
//! `crate::transfer`.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::cli::TransferArgs;
use crate::transfer::{self, Side};
use crate::{exec as client, profile_source, session};

pub(crate) fn transfer(a: TransferArgs, recursive: bool, moving: bool) -> Result<i32> {
    let (profile, src_in_sandbox, src, dst) = match (a.from, a.to) {
        (Some(_), Some(_)) => bail!("--from and --to both name a sandbox; one side must be on the host"),
        (Some(p), None) => (p, true, a.src, a.dst),
        (None, Some(p)) => (p, false, a.src, a.dst),
        (None, None) => match (split(&a.src), split(&a.dst)) {
            (Some(_), Some(_)) => {
                bail!("SRC and DST both name a sandbox (PROFILE:PATH); one side must be on the host")
            }
            (Some((p, s)), None) => (p.to_string(), true, s.to_string(), a.dst.clone()),
            (None, Some((p, d))) => (p.to_string(), false, a.src.clone(), d.to_string()),
            (None, None) => bail!(
                "neither SRC nor DST is in a sandbox: use --from PROFILE, --to PROFILE or PROFILE:PATH"
            ),
        },
    };
    if src.is_empty() || dst.is_empty() {
        bail!("SRC and DST must not be empty");
    }
    let loaded = profile_source::load(&profile, false)?;
    let pseudo = loaded.pseudo_path.as_deref().unwrap_or_default();
    let dir = session::find(pseudo, &loaded.display, a.session)?;
    // From the supervisor, not from a file in the session directory the
    // sandbox might rewrite: a descriptor it opened itself.
    let root = client::sandbox_root(&dir).context("getting the sandbox's root from the session")?;
    let (root, owner) = root;
    if owner.is_some() && nix::unistd::getuid().is_root() {
        // Sandbox-side calls run with the application's fsuid/fsgid
        // (`Side::as_app`); no supplementary group of ours may add to them.
        nix::unistd::setgroups(&[]).context("dropping supplementary groups")?;
    }
    let sandbox = Side::sandbox(root, owner)?;
    let host = Side::host();
    let (from, to) = if src_in_sandbox {
        (&sandbox, &host)
    } else {
        (&host, &sandbox)
    };
    transfer::transfer(
        from,
        Path::new(&src),
        to,
        Path::new(&dst),
        recursive,
        moving,
    )?;
    Ok(0)
}

/// `PROFILE:PATH`: the first ':' whose left part is a profile name (no '/',
/// not JSON) or an existing file (a profile given by path). Anything else is
/// a host path.
fn split(arg: &str) -> Option<(&str, &str)> {
    arg.match_indices(':').map(|(i, _)| i).find_map(|i| {
        let (left, right) = (&arg[..i], &arg[i + 1..]);
        let name = !left.contains('/') && !left.starts_with('{') && !left.starts_with('-');
        (!left.is_empty() && (name || Path::new(left).is_file())).then_some((left, right))
    })
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn profile_colon_path() {
        assert_eq!(split("work:/tmp/x"), Some(("work", "/tmp/x")));
        assert_eq!(split("work:rel"), Some(("work", "rel")));
        assert_eq!(split("./a:b"), None);
        assert_eq!(split("/no/such/dir/p.json:/tmp/x"), None);
        assert_eq!(split(":x"), None);
        assert_eq!(split("plain"), None);
        assert_eq!(split("{\"a\":1}"), None);
    }
}
