//! `pallium run PROFILE`: a session running the profile's command.

use anyhow::Result;
use proto::profile::Command as RunCommand;

use crate::cli::RunArgs;
use crate::{profile_source, session, supervise};

pub(crate) fn run(a: RunArgs) -> Result<i32> {
    let loaded = profile_source::load(&a.profile, false)?;
    super::ensure_runnable(&loaded)?;
    let argv = match &loaded.profile.run.command {
        Some(RunCommand::Argv(v)) if !v.is_empty() => v.clone(),
        Some(RunCommand::Shell(s)) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        _ => vec![super::shell()],
    };
    let pseudo = loaded
        .pseudo_path
        .clone()
        .unwrap_or_else(|| format!("mem://{}", std::process::id()));
    let (session, broker) = session::create(&pseudo, a.new_session, supervise::spawn_broker)?;
    let quiet = a.quiet || loaded.profile.run.quiet;
    supervise::run(supervise::Plan {
        broker,
        loaded,
        session,
        argv,
        quiet,
        root: false,
        pid_file: a.pid_file,
        namespace: -1,
    })
}
