//! Where `agent-server chat` writes: the timeline or the frames on stdout, notes for the human
//! on stderr, and in a conversation a live status line on stderr (the time since the run
//! started, updated while waiting) that is cleared before anything else is written.
//!
//! What a terminal gets is decided once, by [`Caps`]: ANSI styles only when stdout is a
//! terminal and `NO_COLOR` is not set; the status line only when stderr is a terminal. Neither
//! with `TERM=dumb`. So pipes and files get plain text.
//!
//! In a conversation on a terminal the line editor shows its prompt while answers run (a line
//! typed then is sent at once), so what goes to the terminal is printed above the prompt,
//! which the editor redraws under it ([`Above`], given by `prompt`): a whole line at a time,
//! and without the status line, whose place the prompt takes.
//!
//! Agent text reaches the terminal only through [`continued`] (or [`escape_controls`]), which
//! show its control characters escaped: the timeline and the markdown renderer both use them.

use std::ffi::OsStr;
use std::io::{self, IsTerminal as _, Write as _};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use crate::error::ChatError;

/// Clears the terminal's current line and goes back to its start. In text for stdout it means
/// "what follows replaces the line being written" (a streamed answer's tail, see `markdown`).
pub(crate) const CLEAR_LINE: &str = "\r\x1b[2K";

/// Above the prompt, replaces the line printed last: up one line from the prompt's, cleared.
const REPLACE_LINE_ABOVE: &str = "\x1b[1A\r\x1b[2K";

/// The width assumed for a terminal whose size cannot be read.
const DEFAULT_COLUMNS: usize = 80;

/// The width of the terminal stdout is, in columns (at least 20); `None` when stdout is not a
/// terminal.
pub(crate) fn columns() -> Option<usize> {
    if !io::stdout().is_terminal() {
        return None;
    }
    let columns = terminal_size::terminal_size_of(io::stdout())
        .map_or(DEFAULT_COLUMNS, |(width, _)| usize::from(width.0));
    Some(columns.max(20))
}

/// How long [`Output::settle`] waits for the lines printed above the prompt to be on the
/// screen.
const SETTLE: Duration = Duration::from_secs(2);

/// Where lines go to be printed above the line editor's prompt (see `prompt`).
pub(crate) type Above = std_mpsc::Sender<Print>;

/// What is sent to be printed above the prompt.
#[derive(Debug)]
pub(crate) enum Print {
    /// Whole lines (the text ends with a newline).
    Lines(String),
    /// Answer once everything sent before is on the screen.
    Flushed(std_mpsc::SyncSender<()>),
}

/// What the terminal the chat writes to can show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Caps {
    /// ANSI styles on stdout.
    pub(crate) ansi: bool,
    /// A status line, rewritten in place, on stderr.
    pub(crate) live_status: bool,
    /// Stdout is a terminal (so a line left open there is where the status line would go).
    pub(crate) stdout_tty: bool,
    /// Stderr is a terminal (so its notes are printed above the prompt, when there is one).
    pub(crate) stderr_tty: bool,
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
            stderr_tty,
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
    /// The line editor's prompt is on the terminal: lines for the terminal go above it.
    above: Option<Above>,
    /// Text for stdout above the prompt whose line is not complete yet.
    partial: String,
    /// Above the prompt: `partial` is on the screen as the line above the prompt, which the
    /// next text replaces.
    tail_shown: bool,
    /// The terminal's width, where `partial` is wrapped above the prompt (0: unknown).
    width: usize,
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
            width: columns().unwrap_or(0),
            ..Self::default()
        }
    }

    /// From now on, lines for the terminal go `above` the line editor's prompt (`None`: no
    /// editor shows a prompt while answers run, so they are written as they come).
    pub(crate) fn set_above(&mut self, above: Option<Above>) {
        self.above = above;
    }

    /// Whether a status line can be shown at all: not where the prompt takes its place.
    pub(crate) fn has_status(&self) -> bool {
        self.caps.live_status && self.above.is_none()
    }

    /// Writes a raw frame, in `--json` mode only.
    pub(crate) fn raw(&mut self, frame: &str) -> Result<(), ChatError> {
        if self.json {
            self.text(&format!("{frame}\n"))?;
        }
        Ok(())
    }

    /// Writes text and flushes it at once: answer chunks must appear as they stream. Above
    /// the prompt, where only whole lines can be printed, the line being written is printed
    /// as the line above the prompt and replaced as it grows (wrapped at the terminal's
    /// width, so it stays one screen line).
    pub(crate) fn text(&mut self, text: &str) -> Result<(), ChatError> {
        if text.is_empty() {
            return Ok(());
        }
        if self.caps.stdout_tty && self.above.is_some() {
            return self.text_above(text);
        }
        self.clear_status();
        self.open_line = !text.ends_with('\n');
        write_stdout(text)
    }

    /// [`text`](Self::text) above the prompt.
    fn text_above(&mut self, text: &str) -> Result<(), ChatError> {
        // A CLEAR_LINE starts the line being written again (a rendered tail replaced).
        for (i, piece) in text.split(CLEAR_LINE).enumerate() {
            if i > 0 {
                let done = self.partial.rfind('\n').map_or(0, |end| end + 1);
                self.partial.truncate(done);
            }
            self.partial.push_str(piece);
        }
        let done = self.partial.rfind('\n').map_or(0, |end| end + 1);
        let mut tail = self.partial.split_off(done);
        let mut lines = std::mem::take(&mut self.partial);
        while let Some(at) = wrap_at(&tail, self.width) {
            let rest = tail.split_off(at);
            lines.push_str(tail.trim_end());
            lines.push('\n');
            tail = rest.trim_start().to_owned();
        }
        let mut print = String::new();
        if std::mem::take(&mut self.tail_shown) {
            print.push_str(REPLACE_LINE_ABOVE);
        }
        print.push_str(&lines);
        if !tail.is_empty() {
            print.push_str(&tail);
            print.push('\n');
            self.tail_shown = true;
        }
        self.open_line = !tail.is_empty();
        self.partial = tail;
        if print.is_empty() {
            return Ok(());
        }
        match self.print_above(print) {
            None => Ok(()),
            Some(print) => write_stdout(&print),
        }
    }

    /// A line for the human, on stderr so that stdout holds only the timeline (or, with
    /// `--json`, only frames).
    pub(crate) fn note(&mut self, line: &str) {
        if self.caps.stderr_tty && self.above.is_some() {
            // The open line, already on the screen above the prompt, ends here: the note
            // cannot go in the middle of it.
            self.end_tail();
            if self.print_above(format!("{line}\n")).is_none() {
                return;
            }
        }
        self.clear_status();
        eprintln!("{line}");
    }

    /// Leaves the line being written above the prompt as it is on the screen, as a line of
    /// its own: what comes next goes under it.
    fn end_tail(&mut self) {
        self.partial.clear();
        self.tail_shown = false;
        self.open_line = false;
    }

    /// Hands `lines` to be printed above the prompt; gives them back when that is no longer
    /// possible (the editor is gone), for the caller to write itself, as it does from then on.
    fn print_above(&mut self, lines: String) -> Option<String> {
        let above = self.above.as_ref()?;
        match above.send(Print::Lines(lines)) {
            Ok(()) => None,
            Err(std_mpsc::SendError(Print::Lines(lines))) => {
                self.above = None;
                Some(lines)
            }
            Err(_) => None,
        }
    }

    /// Waits (briefly) until what was printed above the prompt is on the screen, so that what
    /// the process writes next, on its way out, comes after it.
    pub(crate) fn settle(&mut self) {
        self.end_tail();
        let Some(above) = &self.above else {
            return;
        };
        let (done, flushed) = std_mpsc::sync_channel(1);
        if above.send(Print::Flushed(done)).is_ok() {
            let _ = flushed.recv_timeout(SETTLE);
        }
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

/// Where to wrap the line `text` so that it fits in `width` columns: at its last space that
/// fits (ANSI styles take no room), or where it stops fitting when it has no such space.
/// `None` when it fits, or the width is unknown (0).
fn wrap_at(text: &str, width: usize) -> Option<usize> {
    use unicode_width::UnicodeWidthChar as _;
    if width == 0 {
        return None;
    }
    let (mut used, mut space, mut in_escape) = (0, None, false);
    for (at, c) in text.char_indices() {
        match c {
            '\x1b' => in_escape = true,
            c if in_escape => in_escape = !c.is_ascii_alphabetic(),
            c => {
                used += c.width().unwrap_or(0);
                if used >= width {
                    return Some(space.unwrap_or(at));
                }
                if c == ' ' && at > 0 {
                    space = Some(at);
                }
            }
        }
    }
    None
}

/// Writes `text` to stdout and flushes it.
fn write_stdout(text: &str) -> Result<(), ChatError> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(ChatError::Output)
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

    /// Above the prompt, where only whole lines can be printed, the open line shows at once
    /// as the line above the prompt and replaces itself as it grows, wrapped at the width; a
    /// note leaves it as it is; a [`CLEAR_LINE`] (a rendered tail) replaces it.
    #[test]
    fn above_the_prompt_the_open_line_shows_and_replaces_itself() {
        let caps = Caps::from(true, true, None, Some(OsStr::new("xterm")));
        let mut out = Output::terminal(false, caps);
        out.width = 20;
        assert!(out.has_status());
        let (above, printed) = std_mpsc::channel();
        out.set_above(Some(above));
        assert!(
            !out.has_status(),
            "the prompt takes the status line's place"
        );
        let next = || match printed.try_recv() {
            Ok(Print::Lines(text)) => Some(text.replace(REPLACE_LINE_ABOVE, "<replace>")),
            Ok(Print::Flushed(_)) => Some("flushed".into()),
            Err(_) => None,
        };
        let steps: &[(&str, &str)] = &[
            ("chunk 1 ", "chunk 1 \n"),
            ("chunk 2", "<replace>chunk 1 chunk 2\n"),
            (
                " and more words",
                "<replace>chunk 1 chunk 2\nand more words\n",
            ),
            ("\nline 2\n", "<replace>and more words\nline 2\n"),
            ("line", "line\n"),
        ];
        for (text, expected) in steps {
            out.text(text).unwrap();
            assert_eq!(next().as_deref(), Some(*expected), "{text:?}");
        }
        out.note("queued (#1): hi");
        assert_eq!(
            next().as_deref(),
            Some("queued (#1): hi\n"),
            "the open line stays"
        );
        out.text(" 3\n").unwrap();
        assert_eq!(next().as_deref(), Some(" 3\n"));
        out.text("draft").unwrap();
        assert_eq!(next().as_deref(), Some("draft\n"));
        out.text(&format!("{CLEAR_LINE}final\n")).unwrap();
        assert_eq!(next().as_deref(), Some("<replace>final\n"));
        assert_eq!(next(), None);
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
