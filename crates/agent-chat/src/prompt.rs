//! Where the conversation's lines come from: a line editor with history (rustyline) when stdin
//! is a terminal, plain lines when it is a pipe or a file.
//!
//! Reading blocks, so it happens on a thread of its own, and only when asked: the prompt shows
//! only once the conversation is ready for the next message, and the terminal is in raw mode
//! only while it does (so a Ctrl-C during a run reaches the process as a signal). The thread is
//! never joined: when the conversation ends while it reads (a Ctrl-C in a pipe), the process
//! ends with it, where a runtime's blocking task would hold the exit up until a line came.

use std::io::{self, BufRead as _, IsTerminal as _};
use std::sync::mpsc as std_mpsc;

use rustyline::error::ReadlineError;
use rustyline::{Behavior, Config, DefaultEditor};
use tokio::sync::mpsc;

use crate::error::ChatError;

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
    /// A line was asked for and has not been received yet.
    asked: bool,
    terminal: bool,
}

impl Lines {
    /// Reads stdin with `prompt` (shown by the editor, on a terminal only) unless another is
    /// asked for ([`next_with`](Lines::next_with)).
    pub(crate) fn open(prompt: &'static str) -> Result<Self, ChatError> {
        let terminal = io::stdin().is_terminal();
        let (ask, asks) = std_mpsc::channel();
        let (answer, answers) = mpsc::channel(1);
        std::thread::Builder::new()
            .name("chat-input".into())
            .spawn(move || {
                if terminal {
                    edit(&asks, &answer);
                } else {
                    plain(&asks, &answer);
                }
            })
            .map_err(ChatError::Input)?;
        Ok(Self {
            prompt,
            ask,
            answers,
            asked: false,
            terminal,
        })
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

    async fn read(&mut self, ask: Ask) -> Result<Line, ChatError> {
        if !self.asked {
            if self.ask.send(ask).is_err() {
                return Ok(Line::End);
            }
            self.asked = true;
        }
        let line = self.answers.recv().await;
        self.asked = false;
        match line {
            Some(line) => line.map_err(ChatError::Input),
            // The thread is gone: nothing more can be read.
            None => Ok(Line::End),
        }
    }
}

/// The thread's loop on a terminal: one edited line per request, after the request's prompt.
fn edit(asks: &std_mpsc::Receiver<Ask>, answers: &mpsc::Sender<io::Result<Line>>) {
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
            let _ = answers.blocking_send(Err(io::Error::other(e)));
            return;
        }
    };
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
