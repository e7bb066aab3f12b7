//! `pallium exec` and `pallium shell`: a command in a running session, or in a
//! one-shot session of its own.

use anyhow::{bail, Result};

use crate::cli::Target;
use crate::{exec as client, profile_source, session, supervise};

pub(crate) fn exec(t: Target, profile: &str, command: Vec<String>) -> Result<i32> {
    if command.is_empty() {
        bail!("a command is required: pallium exec PROFILE -- COMMAND [ARGS…]");
    }
    let loaded = profile_source::load(profile, true)?;
    let note = super::check_namespace_index(t.namespace, &loaded.profile)?;
    let quiet = t.quiet || loaded.profile.run.quiet;
    let say_note = || {
        if let (Some(n), false) = (&note, quiet) {
            eprintln!("{n}");
        }
    };
    if t.one_shot || loaded.one_shot_only() {
        super::ensure_runnable(&loaded)?;
        let pseudo = match &loaded.pseudo_path {
            Some(p) => p.clone(),
            None => format!("mem://{}", std::process::id()),
        };
        let (session, broker) = session::create(&pseudo, true, supervise::spawn_broker)?;
        say_note();
        return supervise::run(supervise::Plan {
            broker,
            loaded,
            session,
            argv: command,
            quiet,
            root: t.root,
            pid_file: t.pid_file,
            namespace: t.namespace,
        });
    }
    let pseudo = loaded.pseudo_path.as_deref().unwrap_or_default();
    let dir = session::find(pseudo, &loaded.display, t.session)?;
    say_note();
    client::exec(
        &dir,
        command,
        t.root,
        t.pid_file.as_deref(),
        loaded.profile.sandbox.gvisor,
        t.namespace,
    )
}
