//! The conversation's question about a tool call that waits for approval: `y` approves, `n`
//! rejects (with an optional reason), `e` runs the tool with other arguments (typed as one
//! JSON object, asked again until they read). The decision goes to the server; a refusal of
//! the arguments (`invalid_field`, say they do not fit the tool) is said and the question
//! asked again. Ctrl-C at the question cancels the run (at the reason or the arguments it goes
//! back to the question); Ctrl-D quits, leaving the run waiting on the server.

use agent_client::{Client, ClientError};
use agent_protocol::ErrorCode;
use core_context::RunId;
use core_context::approval::{Decision, PendingCall};
use serde_json::Value;

use crate::approval::{ARGUMENTS_PROMPT, CHOICES, Choice, REASON_PROMPT, question};
use crate::args::parse_arguments;
use crate::error::ChatError;
use crate::follow::CtrlC;
use crate::prompt::{Line, Lines};
use crate::terminal::Output;

/// What became of the question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asked {
    /// A decision was sent, or the server said the call needs none any more (decided
    /// elsewhere, expired, gone): the run's events say what follows.
    Decided,
    /// Ctrl-C: cancel the run.
    Cancel,
    /// Ctrl-D, or the end of the input.
    Quit,
}

/// Asks the person about `call` of `run` until a decision is taken, the run is to be
/// cancelled, or the person quits.
pub(crate) async fn ask(
    client: &Client,
    lines: &mut Lines,
    out: &mut Output,
    run: &RunId,
    call: &PendingCall,
) -> Result<Asked, ChatError> {
    let question = question(call);
    loop {
        let answer = match read(lines, out, &question).await? {
            Line::Text(answer) => answer,
            Line::Cleared => return Ok(Asked::Cancel),
            Line::End => return Ok(Asked::Quit),
        };
        let decision = match Choice::parse(&answer) {
            None => {
                out.note(CHOICES);
                continue;
            }
            Some(Choice::Approve) => Decision::Approve,
            Some(Choice::Reject) => match read(lines, out, REASON_PROMPT).await? {
                Line::Text(reason) => Decision::Reject {
                    message: Some(reason.trim().to_owned()).filter(|r| !r.is_empty()),
                },
                Line::Cleared => continue,
                Line::End => return Ok(Asked::Quit),
            },
            Some(Choice::Edit) => match edited(lines, out).await? {
                Edited::Arguments(arguments) => Decision::Edit { arguments },
                Edited::Back => continue,
                Edited::Quit => return Ok(Asked::Quit),
            },
        };
        match client
            .resolve_approval(run, &call.tool_call_id, decision)
            .await
        {
            Ok(()) => return Ok(Asked::Decided),
            Err(ClientError::Server {
                code: ErrorCode::InvalidField,
                message,
            }) => out.note(&format!("the server refused it: {message}")),
            // Decided elsewhere, expired, or the run is gone: nothing more to decide.
            Err(ClientError::Server { code, message }) => {
                out.note(&format!("{message} ({code})"));
                return Ok(Asked::Decided);
            }
            // Not sent, or not known to have been taken: asking again is safe (a decision
            // that was taken makes the next one `approval_already_decided`).
            Err(
                e @ (ClientError::NotConnected
                | ClientError::ConnectionLost
                | ClientError::Timeout { .. }),
            ) => out.note(&format!("not sent: {e}")),
            Err(e) => return Err(e.into()),
        }
    }
}

/// What was typed after `e`.
enum Edited {
    /// The new arguments, a JSON object.
    Arguments(Value),
    /// An empty line or Ctrl-C: back to the question.
    Back,
    /// Ctrl-D, or the end of the input.
    Quit,
}

/// The new arguments, asked again until they are a JSON object.
async fn edited(lines: &mut Lines, out: &mut Output) -> Result<Edited, ChatError> {
    loop {
        let raw = match read(lines, out, ARGUMENTS_PROMPT).await? {
            Line::Text(raw) if raw.trim().is_empty() => return Ok(Edited::Back),
            Line::Text(raw) => raw,
            Line::Cleared => return Ok(Edited::Back),
            Line::End => return Ok(Edited::Quit),
        };
        match parse_arguments(raw.trim()) {
            Ok(map) => return Ok(Edited::Arguments(Value::Object(map))),
            Err(e) => out.note(&format!("the arguments {e}; type them again, on one line")),
        }
    }
}

/// One line, read after `prompt`; a Ctrl-C (on a terminal the editor's, in a pipe the
/// signal) is [`Line::Cleared`]. In a pipe, where no editor shows the prompt, the prompt and
/// the line are written out (to stderr with `--json`, whose stdout holds only frames). On a
/// terminal whose editor already shows another prompt (the conversation's, which it shows
/// while answers run), the line typed there is the answer, and `prompt` is printed above it.
async fn read(lines: &mut Lines, out: &mut Output, prompt: &str) -> Result<Line, ChatError> {
    let piped = !lines.is_terminal();
    if piped && !out.json {
        out.text(prompt)?;
    }
    if !piped && lines.waiting().is_some_and(|shown| shown != prompt) {
        out.note(prompt);
    }
    let mut ctrl_c = CtrlC::listen();
    let line = tokio::select! {
        line = lines.next_with(prompt) => line?,
        () = ctrl_c.pressed() => Line::Cleared,
    };
    if piped {
        let typed = match &line {
            Line::Text(text) => text.as_str(),
            Line::Cleared | Line::End => "",
        };
        if out.json {
            out.note(&format!("{prompt}{typed}"));
        } else {
            out.text(&format!("{typed}\n"))?;
        }
    }
    Ok(line)
}
