//! What the user sees while the chain comes up.
//!
//! On a terminal: one live line per hop — `pallium: hop 2 (tor): Bootstrapped
//! 45% … 3.1 s` — redrawn in place as the netbroker reports (and every
//! quarter second, for the elapsed time), then replaced by a one-line
//! summary once the chain is up. Not on a terminal (a pipe, a log, systemd):
//! one plain line per report, as before. `--quiet`: nothing.

use std::io::{self, IsTerminal as _, Write};
use std::time::{Duration, Instant};

/// How often a live display redraws while nothing is reported.
pub(crate) const TICK: Duration = Duration::from_millis(250);

/// One hop's line.
#[derive(Debug)]
struct Line {
    kind: String,
    message: String,
    started: Option<Instant>,
    done: Option<Duration>,
}

/// The chain's progress display.
#[derive(Debug)]
pub(crate) struct Display<W: Write> {
    out: W,
    live: bool,
    quiet: bool,
    lines: Vec<Line>,
    /// Lines drawn by the last redraw (to move back over).
    drawn: usize,
    start: Instant,
}

impl Display<io::Stderr> {
    /// The display for the chain `kinds` (hop types in order) on stderr.
    pub(crate) fn stderr(kinds: &[&str], quiet: bool) -> Self {
        let live =
            io::stderr().is_terminal() && std::env::var_os("TERM").is_some_and(|t| t != "dumb");
        Self::new(io::stderr(), kinds, quiet, live)
    }
}

impl<W: Write> Display<W> {
    pub(crate) fn new(out: W, kinds: &[&str], quiet: bool, live: bool) -> Self {
        Self {
            out,
            live: live && !quiet && !kinds.is_empty(),
            quiet,
            lines: kinds
                .iter()
                .map(|k| Line {
                    kind: (*k).to_string(),
                    message: "waiting".into(),
                    started: None,
                    done: None,
                })
                .collect(),
            drawn: 0,
            start: Instant::now(),
        }
    }

    /// Whether the display wants [`Display::tick`] calls.
    pub(crate) fn is_live(&self) -> bool {
        self.live
    }

    /// A report from hop `index` (0-based).
    pub(crate) fn report(&mut self, index: usize, message: &str) {
        if self.quiet {
            return;
        }
        if !self.live {
            let kind = self.lines.get(index).map_or("?", |l| l.kind.as_str());
            let _ = writeln!(self.out, "pallium: hop {} ({kind}): {message}", index + 1);
            return;
        }
        let now = Instant::now();
        // A report from hop i means the hops before it are up.
        for l in self.lines.iter_mut().take(index) {
            if l.done.is_none() {
                l.done = Some(l.started.map_or(Duration::ZERO, |s| now - s));
                l.message = "up".into();
            }
        }
        if let Some(l) = self.lines.get_mut(index) {
            l.started.get_or_insert(now);
            l.message = one_line(message);
        }
        self.redraw();
    }

    /// Redraw (the elapsed times move).
    pub(crate) fn tick(&mut self) {
        if self.live && self.lines.iter().any(|l| l.started.is_some()) {
            self.redraw();
        }
    }

    /// The chain is up: the live lines give way to one summary line.
    pub(crate) fn finish(&mut self) {
        if !self.live {
            return;
        }
        self.erase();
        let kinds: Vec<&str> = self.lines.iter().map(|l| l.kind.as_str()).collect();
        let _ = writeln!(
            self.out,
            "pallium: chain up in {:.1} s: {}",
            self.start.elapsed().as_secs_f64(),
            kinds.join(" → ")
        );
        let _ = self.out.flush();
        self.live = false;
    }

    /// The build failed or was interrupted: leave the last state on screen
    /// (the error follows on its own line).
    pub(crate) fn abandon(&mut self) {
        self.live = false;
    }

    fn erase(&mut self) {
        if self.drawn > 0 {
            // Up to the first line, then clear to the end of the screen.
            let _ = write!(self.out, "\x1b[{}F\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }

    fn redraw(&mut self) {
        let width = terminal_width();
        self.erase();
        let now = Instant::now();
        for (i, l) in self.lines.iter().enumerate() {
            let time = match (l.done, l.started) {
                (Some(d), _) => format!(" ({:.1} s)", d.as_secs_f64()),
                (None, Some(s)) => format!(" {:.1} s", (now - s).as_secs_f64()),
                (None, None) => String::new(),
            };
            let text = format!("pallium: hop {} ({}): {}{time}", i + 1, l.kind, l.message);
            let _ = writeln!(self.out, "{}", clip(&text, width));
        }
        self.drawn = self.lines.len();
        let _ = self.out.flush();
    }
}

/// The first line of `s`.
fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_string()
}

/// `s` cut to `width` characters (a wrapped line would break the redraw).
fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn terminal_width() -> usize {
    use std::os::fd::AsFd as _;
    crate::sys::get_winsize(io::stderr().as_fd())
        .map(|w| usize::from(w.ws_col))
        .filter(|&c| c > 0)
        .unwrap_or(80)
        .clamp(20, 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(d: &Display<Vec<u8>>) -> String {
        String::from_utf8_lossy(&d.out).into_owned()
    }

    #[test]
    fn plain_lines_when_not_a_terminal() {
        let mut d = Display::new(Vec::new(), &["socks", "tor"], false, false);
        d.report(1, "Bootstrapped 45%");
        d.finish();
        assert_eq!(shown(&d), "pallium: hop 2 (tor): Bootstrapped 45%\n");
    }

    #[test]
    fn quiet_shows_nothing() {
        let mut d = Display::new(Vec::new(), &["tor"], true, true);
        d.report(0, "Bootstrapped 45%");
        d.tick();
        d.finish();
        assert_eq!(shown(&d), "");
    }

    #[test]
    fn live_lines_are_redrawn_in_place_and_replaced_by_a_summary() {
        let mut d = Display::new(Vec::new(), &["socks", "tor"], false, true);
        d.report(0, "connecting to the SOCKS proxy");
        d.report(1, "Bootstrapped 45% (loading descriptors)\nsecond line");
        let out = shown(&d);
        // The second report moved back over the two lines of the first.
        assert!(out.contains("\x1b[2F\x1b[J"), "{out:?}");
        assert!(out.contains("pallium: hop 1 (socks): up ("), "{out:?}");
        assert!(out.contains("pallium: hop 2 (tor): Bootstrapped 45% (loading descriptors) "));
        assert!(!out.contains("second line"));
        d.finish();
        let out = shown(&d);
        assert!(out.ends_with(" s: socks → tor\n"), "{out:?}");
        assert!(out.contains("pallium: chain up in "));
        // Nothing more after the summary.
        d.tick();
        assert_eq!(shown(&d), out);
    }

    #[test]
    fn long_messages_are_clipped_to_one_row() {
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }
}
