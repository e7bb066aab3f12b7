//! One log setup for the three processes (and the packet engine).
//!
//! The level comes from `PALLIUM_LOG` (an `EnvFilter` directive; the
//! supervisor sets it for its helpers from `-v` / `--loglevel`). At the
//! default levels (`warn`, `error`) what a user sees is in one style with
//! every other message of the CLI: `pallium: warning: …` — no timestamp, no
//! level column. Asked for more (`info`, `debug`, `trace`, or any target
//! directive), every line is a structured record with its time, level and
//! source module (which names the process: `pallium_netbroker::…`), so the
//! logs of all three processes can be read together in order.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The environment variable holding the filter.
pub const ENV: &str = "PALLIUM_LOG";

/// Install the stderr logger for this process.
pub fn init() {
    let directive = std::env::var(ENV).unwrap_or_else(|_| "warn".into());
    let filter = EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if is_plain(&directive) {
        builder.event_format(Plain).init();
    } else {
        builder.with_target(true).init();
    }
}

/// Whether `directive` asks for no more than the default (warnings and
/// errors only): those are shown as plain `pallium: …` lines.
pub fn is_plain(directive: &str) -> bool {
    matches!(
        directive.trim().to_ascii_lowercase().as_str(),
        "" | "warn" | "error" | "off"
    )
}

/// The `EnvFilter` directive for a `--loglevel` value (the original's
/// Python names) or a `-v` count.
pub fn directive(loglevel: Option<&str>, verbose: u8) -> Option<String> {
    if let Some(l) = loglevel {
        return Some(
            match l.to_ascii_lowercase().as_str() {
                "debug" => "debug",
                "info" => "info",
                "warning" | "warn" => "warn",
                _ => "error",
            }
            .into(),
        );
    }
    match verbose {
        0 => None,
        1 => Some("info".into()),
        2 => Some("debug".into()),
        _ => Some("trace".into()),
    }
}

/// `pallium: warning: MESSAGE` / `pallium: MESSAGE` (errors).
struct Plain;

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = *event.metadata().level();
        w.write_str("pallium: ")?;
        if level == Level::WARN {
            w.write_str("warning: ")?;
        } else if level > Level::WARN {
            // Shown only if a directive let it through (e.g. a target's).
            write!(w, "{}: ", level.as_str().to_ascii_lowercase())?;
        }
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loglevel_names_map_to_directives() {
        assert_eq!(directive(Some("WARNING"), 0).as_deref(), Some("warn"));
        assert_eq!(directive(Some("CRITICAL"), 0).as_deref(), Some("error"));
        assert_eq!(directive(Some("debug"), 3).as_deref(), Some("debug"));
        assert_eq!(directive(None, 0), None);
        assert_eq!(directive(None, 1).as_deref(), Some("info"));
        assert_eq!(directive(None, 9).as_deref(), Some("trace"));
        assert!(is_plain("WARN") && is_plain("error") && !is_plain("info"));
        assert!(!is_plain("pallium_netbroker=debug"));
    }
}
