//! Where `agent-server chat` writes: the timeline or the frames on stdout, notes for the human
//! on stderr, and in a conversation a live status line on stderr (the time since the run
//! started, updated while waiting) that is cleared before anything else is written.
//!
//! What a terminal gets is decided once, by [`Caps`]: ANSI styles only when stdout is a
//! terminal and `NO_COLOR` is not set; the status line only when stderr is a terminal. Neither
//! with `TERM=dumb`. So pipes and files get plain text.
//!
//! Agent text reaches the terminal only through [`continued`] (or [`escape_controls`]), which
//! show its control characters escaped: the timeline and the markdown renderer both use them.

use std::ffi::OsStr;
use std::io::{self, IsTerminal as _, Write as _};
use std::time::Duration;

use crate::error::ChatError;

/// Clears the terminal's current line and goes back to its start.
const CLEAR_LINE: &str = "\r\x1b[2K";

/// What the terminal the chat writes to can show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Caps {
    /// ANSI styles on stdout.
    pub(crate) ansi: bool,
    /// A status line, rewritten in place, on stderr.
    pub(crate) live_status: bool,
    /// Stdout is a terminal (so a line left open there is where the status line would go).
    pub(crate) stdout_tty: bool,
}

impl Caps {
    /// The capabilities of this process's stdout and stderr.
    pub(crate) fn detect() -> Self {
        Self::from(
            io::stdout().is_terminal(),
            io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
            std::env::var_os("TERM").as_deref(),
        )
    }

    /// The capabilities given whether stdout and stderr are terminals, and the `NO_COLOR`
    /// and `TERM` variables (<https://no-color.org>: set and not empty means no colour).
    fn from(
        stdout_tty: bool,
        stderr_tty: bool,
        no_color: Option<&OsStr>,
        term: Option<&OsStr>,
    ) -> Self {
        let dumb = term.is_some_and(|t| t == "dumb");
        let no_color = no_color.is_some_and(|v| !v.is_empty());
        Self {
            ansi: stdout_tty && !no_color && !dumb,
            live_status: stderr_tty && !dumb,
            stdout_tty,
        }
    }
}

/// Where the timeline or the raw frames go.
#[derive(Debug, Default)]
pub(crate) struct Output {
    /// Raw frames instead of the timeline (`--json`).
    pub(crate) json: bool,
    caps: Caps,
    /// The last text written to stdout did not end its line.
    open_line: bool,
    /// The status line is on the screen.
    status_shown: bool,
}

impl Output {
    /// Output as the one-shot command has always written it: no status line, no styles.
    pub(crate) fn plain(json: bool) -> Self {
        Self {
            json,
            ..Self::default()
        }
    }

    /// Output for a conversation on this terminal.
    pub(crate) fn terminal(json: bool, caps: Caps) -> Self {
        Self {
            json,
            caps,
            ..Self::default()
        }
    }

    /// Whether a status line can be shown at all.
    pub(crate) fn has_status(&self) -> bool {
        self.caps.live_status
    }

    /// Writes a raw frame, in `--json` mode only.
    pub(crate) fn raw(&mut self, frame: &str) -> Result<(), ChatError> {
        if self.json {
            self.text(&format!("{frame}\n"))?;
        }
        Ok(())
    }

    /// Writes text and flushes it at once: answer chunks must appear as they stream.
    pub(crate) fn text(&mut self, text: &str) -> Result<(), ChatError> {
        if text.is_empty() {
            return Ok(());
        }
        self.clear_status();
        let mut stdout = io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(ChatError::Output)?;
        self.open_line = !text.ends_with('\n');
        Ok(())
    }

    /// A line for the human, on stderr so that stdout holds only the timeline (or, with
    /// `--json`, only frames).
    pub(crate) fn note(&mut self, line: &str) {
        self.clear_status();
        eprintln!("{line}");
    }

    /// Shows `text` as the status line, in place of the previous one. Not while a line on a
    /// terminal's stdout is open: the status would land in the middle of it.
    pub(crate) fn show_status(&mut self, text: &str) {
        if !self.caps.live_status || (self.open_line && self.caps.stdout_tty) {
            return;
        }
        let mut stderr = io::stderr().lock();
        // A status line that cannot be written is only a missed refresh.
        let _ = write!(stderr, "{CLEAR_LINE}{text}").and_then(|()| stderr.flush());
        self.status_shown = true;
    }

    /// Removes the status line, if shown, so the next output starts on a clean line.
    pub(crate) fn clear_status(&mut self) {
        if self.status_shown {
            let mut stderr = io::stderr().lock();
            let _ = write!(stderr, "{CLEAR_LINE}").and_then(|()| stderr.flush());
            self.status_shown = false;
        }
    }
}

/// The status line's text while a run is followed: a spinner, the time since the run was
/// accepted, and what Ctrl-C does now.
pub(crate) fn status_text(elapsed: Duration, cancelling: bool, ansi: bool) -> String {
    const SPINNER: [char; 4] = ['|', '/', '-', '\\'];
    let spin = SPINNER[(elapsed.as_millis() / 250 % 4) as usize];
    let hint = if cancelling {
        "cancelling; Ctrl-C again stops waiting"
    } else {
        "Ctrl-C cancels"
    };
    let text = format!(
        "{spin} +{}.{}s  {hint}",
        elapsed.as_secs(),
        elapsed.subsec_millis() / 100
    );
    if ansi {
        format!("\x1b[2m{text}\x1b[22m")
    } else {
        text
    }
}

/// `text` made safe for a terminal: control characters shown escaped, newlines and tabs kept.
pub(crate) fn escape_controls(text: &str) -> String {
    continued(text, "")
}

/// `text` made safe for a terminal, with continuation lines indented by `pad`.
///
/// Agent output is untrusted: control characters (ANSI escapes among them) could rewrite the
/// user's terminal, so they are printed escaped. Newlines stay, aligned under the first line.
pub(crate) fn continued(text: &str, pad: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => {
                out.push('\n');
                out.push_str(pad);
            }
            '\t' => out.push(c),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn styles_and_status_only_where_a_terminal_takes_them() {
        let yes = Some(OsStr::new("1"));
        let empty = Some(OsStr::new(""));
        let xterm = Some(OsStr::new("xterm-256color"));
        let dumb = Some(OsStr::new("dumb"));
        // (stdout tty, stderr tty, NO_COLOR, TERM) -> (ansi, live status)
        type Case<'a> = (
            (bool, bool, Option<&'a OsStr>, Option<&'a OsStr>),
            (bool, bool),
        );
        let table: &[Case<'_>] = &[
            ((true, true, None, xterm), (true, true)),
            ((true, true, None, None), (true, true)),
            ((false, true, None, xterm), (false, true)),
            ((true, false, None, xterm), (true, false)),
            ((false, false, None, xterm), (false, false)),
            ((true, true, yes, xterm), (false, true)),
            ((true, true, empty, xterm), (true, true)),
            ((true, true, None, dumb), (false, false)),
        ];
        for ((out, err, no_color, term), expected) in table {
            let caps = Caps::from(*out, *err, *no_color, *term);
            assert_eq!(
                (caps.ansi, caps.live_status),
                *expected,
                "{out} {err} {no_color:?} {term:?}"
            );
        }
    }

    #[test]
    fn the_status_line_moves_with_the_run() {
        let table: &[(u64, bool, bool, &str)] = &[
            (0, false, false, "| +0.0s  Ctrl-C cancels"),
            (1_260, false, false, "/ +1.2s  Ctrl-C cancels"),
            (
                61_500,
                true,
                false,
                "- +61.5s  cancelling; Ctrl-C again stops waiting",
            ),
            (750, false, true, "\x1b[2m\\ +0.7s  Ctrl-C cancels\x1b[22m"),
        ];
        for (ms, cancelling, ansi, expected) in table {
            let got = status_text(Duration::from_millis(*ms), *cancelling, *ansi);
            assert_eq!(got, *expected, "{ms}");
        }
    }
}
