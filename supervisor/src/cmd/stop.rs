//! `pallium stop PROFILE [-s N]`: end a session and everything in it.

use anyhow::Result;

use crate::cli::SessionArgs;
use crate::{exec as client, profile_source, session};

pub(crate) fn stop(a: SessionArgs) -> Result<i32> {
    let loaded = profile_source::load(&a.profile, false)?;
    let pseudo = loaded.pseudo_path.as_deref().unwrap_or_default();
    let dir = session::find(pseudo, &loaded.display, a.session)?;
    client::stop(&dir)?;
    Ok(0)
}
