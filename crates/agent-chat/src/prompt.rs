//! Where the conversation's lines come from: a line editor with history (rustyline) when stdin
//! is a terminal, plain lines when it is a pipe or a file.
//!
//! Reading blocks, so it happens on a thread of its own, and only when asked. The conversation
//! asks for its next line on a terminal at once, even while an answer runs (a line typed then
//! is sent at once); so the editor's prompt stays at the bottom of the screen, and what the
//! conversation prints goes above it through the editor's printer, on a thread of its own too
//! ([`Lines::above`]). In a pipe it asks only once the answers before have ended. The threads
//! are never joined: when the conversation ends while one reads (a Ctrl-C in a pipe), the
//! process ends with it, where a runtime's blocking task would hold the exit up until a line
//! came. On a terminal the conversation ends only once the editor has given its line back
//! ([`Lines::waiting`]), so that the terminal is never left in the editor's raw mode.

use std::io::{self, BufRead as _, IsTerminal as _, Write as _};
use std::sync::mpsc as std_mpsc;

use rustyline::error::ReadlineError;
use rustyline::{Behavior, Config, DefaultEditor, ExternalPrinter};
use tokio::sync::{mpsc, oneshot};

use crate::error::ChatError;
use crate::terminal::{Above, Print};

/// Lines the editor remembers for the up arrow.
const HISTORY: usize = 1_000;

/// What the user did at the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line {
    /// A line (without its line ending).
    Text(String),
    /// Ctrl-C: the editor cleared the line.
    Cleared,
    /// Ctrl-D, or the end of the input.
    End,
}

/// A request for one line: the prompt, and whether the line goes into the editor's history
/// (messages do; answers to a question, such as `y`, would only be in the way).
type Ask = (String, bool);

/// The conversation's source of lines.
#[derive(Debug)]
pub(crate) struct Lines {
    /// The conversation's prompt.
    prompt: &'static str,
    /// Asks the thread for one line.
    ask: std_mpsc::Sender<Ask>,
    answers: mpsc::Receiver<io::Result<Line>>,
    /// The prompt of the line asked for and not received yet.
    asked: Option<String>,
    terminal: bool,
    /// Prints above the editor's prompt (on a terminal that has one).
    above: Option<Above>,
}

impl Lines {
    /// Reads stdin with `prompt` (shown by the editor, on a terminal only) unless another is
    /// asked for ([`next_with`](Lines::next_with)).
    pub(crate) async fn open(prompt: &'static str) -> Result<Self, ChatError> {
        let terminal = io::stdin().is_terminal();
        let (ask, asks) = std_mpsc::channel();
        let (answer, answers) = mpsc::channel(1);
        let (ready, above) = oneshot::channel();
        std::thread::Builder::new()
            .name("chat-input".into())
            .spawn(move || {
                if terminal {
                    edit(&asks, &answer, ready);
                } else {
                    let _ = ready.send(None);
                    plain(&asks, &answer);
                }
            })
            .map_err(ChatError::Input)?;
        Ok(Self {
            prompt,
            ask,
            answers,
            asked: None,
            terminal,
            // A thread that ended before it said has no printer, and its error comes with the
            // first line asked for.
            above: above.await.ok().flatten(),
        })
    }

    /// Where to print above the editor's prompt, so that the prompt stays under what is
    /// printed; `None` in a pipe, or on a terminal the editor cannot print on (`TERM=dumb`).
    pub(crate) fn above(&self) -> Option<Above> {
        self.above.clone()
    }

    /// The prompt of a line asked for and not received yet: on a terminal, what the editor
    /// shows.
    pub(crate) fn waiting(&self) -> Option<&str> {
        self.asked.as_deref()
    }

    /// Whether stdin is a terminal (so Ctrl-C at the prompt reaches the editor, not the
    /// process).
    pub(crate) fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// The next line. Cancel-safe: a line asked for by a dropped call is the next call's.
    pub(crate) async fn next(&mut self) -> Result<Line, ChatError> {
        self.read((self.prompt.to_owned(), true)).await
    }

    /// The next line, read after `prompt` (on a terminal; in a pipe there is no prompt).
    /// Cancel-safe like [`next`](Lines::next): a line asked for by a dropped call is the next
    /// call's, read after the prompt it was asked with.
    pub(crate) async fn next_with(&mut self, prompt: &str) -> Result<Line, ChatError> {
        self.read((prompt.to_owned(), false)).await
    }

    /// Asks for the next line now, unless one is asked for already, so that the editor shows
    /// its prompt (and takes the keys typed) while the caller does something else first. Only
    /// on a terminal: in a pipe a line asked for would be read ahead of its time.
    pub(crate) fn ask_next(&mut self) {
        if self.terminal {
            self.ask_for((self.prompt.to_owned(), true));
        }
    }

    /// Sends `ask` to the thread, unless a line is asked for already; `false` when the thread
    /// is gone.
    fn ask_for(&mut self, ask: Ask) -> bool {
        if self.asked.is_some() {
            return true;
        }
        let prompt = ask.0.clone();
        if self.ask.send(ask).is_err() {
            return false;
        }
        self.asked = Some(prompt);
        true
    }

    async fn read(&mut self, ask: Ask) -> Result<Line, ChatError> {
        if !self.ask_for(ask) {
            return Ok(Line::End);
        }
        let line = self.answers.recv().await;
        self.asked = None;
        match line {
            Some(line) => line.map_err(ChatError::Input),
            // The thread is gone: nothing more can be read.
            None => Ok(Line::End),
        }
    }
}

/// The thread's loop on a terminal: one edited line per request, after the request's prompt.
/// Says first (`ready`) where to print above the prompt, when the editor can.
fn edit(
    asks: &std_mpsc::Receiver<Ask>,
    answers: &mpsc::Sender<io::Result<Line>>,
    ready: oneshot::Sender<Option<Above>>,
) {
    // The terminal itself (/dev/tty) rather than stdout: with stdout piped (`chat | tee`), the
    // prompt and the line being typed still belong on the screen, not in the output.
    let editor = Config::builder()
        .behavior(Behavior::PreferTerm)
        .auto_add_history(false)
        .max_history_size(HISTORY)
        .map(|config| DefaultEditor::with_config(config.build()));
    let mut editor = match editor {
        Ok(Ok(editor)) => editor,
        Ok(Err(e)) | Err(e) => {
            let _ = ready.send(None);
            let _ = answers.blocking_send(Err(io::Error::other(e)));
            return;
        }
    };
    let above = editor.create_external_printer().ok().and_then(|printer| {
        let (above, prints) = std_mpsc::channel();
        std::thread::Builder::new()
            .name("chat-output".into())
            .spawn(move || print(printer, &prints))
            .ok()
            .map(|_| above)
    });
    let _ = ready.send(above);
    for (prompt, remember) in asks {
        let line = match editor.readline(&prompt) {
            Ok(line) => {
                if remember && !line.trim().is_empty() {
                    // Only a full history fails to take a line; the line is still read.
                    let _ = editor.add_history_entry(line.as_str());
                }
                Ok(Line::Text(line))
            }
            // A resize or another signal the editor gave up on: ask again, like Ctrl-C.
            Err(ReadlineError::Interrupted | ReadlineError::Signal(_)) => Ok(Line::Cleared),
            Err(ReadlineError::Eof) => Ok(Line::End),
            Err(e) => Err(io::Error::other(e)),
        };
        if answers.blocking_send(line).is_err() {
            return;
        }
    }
}

/// The thread's loop on a pipe or a file: one line per request, no prompt.
fn plain(asks: &std_mpsc::Receiver<Ask>, answers: &mpsc::Sender<io::Result<Line>>) {
    let mut lines = io::stdin().lock().lines();
    for _prompt in asks {
        let line = match lines.next() {
            Some(Ok(line)) => Ok(Line::Text(line.trim_end_matches('\r').to_owned())),
            Some(Err(e)) => Err(e),
            None => Ok(Line::End),
        };
        if answers.blocking_send(line).is_err() {
            return;
        }
    }
}

/// The printer's loop: lines printed above the editor's prompt (or, while the editor does not
/// read, just printed), in the order they come. Its own thread, because the printer waits
/// while the editor has not taken the previous lines yet, and the editor takes them only
/// while it reads, which it does when the conversation asks: waiting in the conversation's
/// task could stop it from asking.
fn print(mut printer: impl ExternalPrinter, prints: &std_mpsc::Receiver<Print>) {
    for print in prints {
        match print {
            Print::Lines(text) => {
                if printer.print(text.clone()).is_err() {
                    // The editor is gone: the lines still belong on the screen.
                    let mut stdout = io::stdout().lock();
                    let _ = stdout
                        .write_all(text.as_bytes())
                        .and_then(|()| stdout.flush());
                }
            }
            Print::Flushed(done) => {
                let _ = done.send(());
            }
        }
    }
}
