//! `agent-server chat` without a message: a conversation in one thread.
//!
//! Each line typed is a `start_agent` in the same thread (the first run's thread, or the one
//! `--thread` names), followed like the one-shot command's run but laid out as a chat: the
//! answer as a message, the steps dimmed, a status line counting the time. The session
//! outlives what happens to one run: a refusal, a failure or a cancellation is said in plain
//! words and the prompt comes back. Only a lost server ends it (with the error), and Ctrl-D or
//! the end of the input (exit code 0).
//!
//! Ctrl-C while an answer runs cancels that run; a second one stops waiting for it. Ctrl-C at
//! the prompt clears the line (in a pipe, where there is no line to clear, it ends the input).
//! A run that asks for approval of a tool call is asked about (`ask`), one call after the
//! other, and goes on once decided. A few commands start with `/` ([`Command`]): `/help`
//! lists them.

use agent_client::{Client, ClientError, RunAccepted};
use agent_protocol::StartAgent;
use core_context::ThreadId;
use serde_json::{Map, Value};

use crate::approval::{Invocation, listing};
use crate::args::{ChatArgs, parse_input};
use crate::ask::{Asked, ask};
use crate::error::ChatError;
use crate::follow::{CtrlC, Followed, RunView, accepted_frame, cancel, follow};
use crate::prompt::{Line, Lines};
use crate::terminal::{Caps, Output};
use crate::timeline::Look;

/// The editor's prompt.
const PROMPT: &str = "> ";

/// Said once, when the conversation starts.
const WELCOME: &str = "Type a message and press Enter; Ctrl-C cancels a running answer, \
                       Ctrl-D quits, /help lists the commands.";

/// What a second Ctrl-C during a run does.
const AGAIN: &str = "stop waiting for it";

/// What `/help` says.
const HELP: &str = "\
Each line is a message to the agent, in the same thread. Commands:
  /agent NAME   talk to another agent from the next message on (/agent alone: which one)
  /input JSON   agent options for the next messages, a JSON object (/input alone: none)
  /new          start a new thread with the next message
  /approvals    list the tool calls that wait for your approval, in any thread
  /quit         end the conversation (as Ctrl-D does)
  //text        send \"/text\" as a message
A tool call that needs your approval is asked about: y runs it, n does not (you may say
why), e runs it with other arguments (one JSON object); Ctrl-C there cancels the run.";

/// One line of the conversation, read.
#[derive(Debug, PartialEq)]
enum Command<'a> {
    /// Nothing to send.
    Empty,
    /// A message for the agent.
    Say(&'a str),
    Help,
    /// `/agent NAME` (`None`: which agent is it?).
    Agent(Option<&'a str>),
    /// `/input JSON`, read (`None`: no options).
    Input(Option<Map<String, Value>>),
    NewThread,
    Approvals,
    Quit,
    /// A command that is not one, or a command's bad argument: what to tell the user.
    Wrong(String),
}

impl<'a> Command<'a> {
    fn parse(line: &'a str) -> Self {
        let line = line.trim();
        if line.is_empty() {
            return Command::Empty;
        }
        if let Some(escaped) = line.strip_prefix("//") {
            return Command::Say(&line[line.len() - escaped.len() - 1..]);
        }
        let Some(command) = line.strip_prefix('/') else {
            return Command::Say(line);
        };
        let (name, rest) = command
            .split_once(char::is_whitespace)
            .map_or((command, ""), |(name, rest)| (name, rest.trim()));
        let rest = (!rest.is_empty()).then_some(rest);
        match (name, rest) {
            ("help", None) => Command::Help,
            ("agent", name) => Command::Agent(name),
            ("input", None) => Command::Input(None),
            ("input", Some(json)) => match parse_input(json) {
                Ok(map) => Command::Input(Some(map)),
                Err(e) => Command::Wrong(format!("/input {e}")),
            },
            ("new", None) => Command::NewThread,
            ("approvals", None) => Command::Approvals,
            ("quit", None) => Command::Quit,
            ("help" | "new" | "approvals" | "quit", Some(_)) => {
                Command::Wrong(format!("/{name} takes nothing after it"))
            }
            _ => Command::Wrong(format!(
                "there is no command /{name}; /help lists them (//{name} sends it as a message)"
            )),
        }
    }
}

/// Whether the conversation goes on after a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Next,
    Quit,
}

/// The conversation: what the next message is sent with, and where output goes.
struct Conversation<'a> {
    args: &'a ChatArgs,
    token: &'a str,
    agent: String,
    input: Option<Map<String, Value>>,
    thread: Option<ThreadId>,
    look: Look,
    out: Output,
}

/// Runs the conversation on `client` until Ctrl-D, the end of the input, or a lost server.
/// `token` is the one the client connected with (for `/approvals`, over HTTP).
pub(crate) async fn converse(
    client: &mut Client,
    args: &ChatArgs,
    token: &str,
) -> Result<(), ChatError> {
    let caps = Caps::detect();
    let mut chat = Conversation {
        args,
        token,
        agent: args.agent.clone(),
        input: args.input.clone(),
        thread: args.thread.clone(),
        look: Look {
            conversation: true,
            ansi: caps.ansi && !args.json,
        },
        out: Output::terminal(args.json, caps),
    };
    let mut lines = Lines::open(PROMPT)?;
    chat.out.note(WELCOME);
    loop {
        let line = match next_line(&mut lines, client).await? {
            Line::Text(line) => line,
            Line::Cleared => continue,
            Line::End => return Ok(()),
        };
        if !lines.is_terminal() && !chat.out.json && !line.trim().is_empty() {
            // The input is not on the screen: the transcript shows what was asked.
            chat.out.text(&format!("{PROMPT}{line}\n"))?;
        }
        match Command::parse(&line) {
            Command::Empty => {}
            Command::Say(message) => {
                if chat.turn(client, &mut lines, message).await? == Flow::Quit {
                    return Ok(());
                }
            }
            Command::Approvals => chat.approvals().await,
            Command::Quit => return Ok(()),
            command => chat.command(command),
        }
    }
}

/// The next line typed, while the stream goes on in the background: events of runs no longer
/// followed (and of the user's other clients) are dropped, and a stream that ends ends the
/// conversation. In a pipe at once; on a terminal when the line comes, because the editor
/// holds the terminal in raw mode until then, and the process must not end and leave it so.
async fn next_line(lines: &mut Lines, client: &mut Client) -> Result<Line, ChatError> {
    let mut lost: Option<ClientError> = None;
    // On a terminal the editor turns Ctrl-C into a cleared line; in a pipe it is the end of
    // the conversation.
    let mut ctrl_c = if lines.is_terminal() {
        CtrlC::ignore()
    } else {
        CtrlC::listen()
    };
    loop {
        tokio::select! {
            line = lines.next() => {
                let line = line?;
                return match (line, lost) {
                    (Line::End, _) => Ok(Line::End),
                    (_, Some(e)) => Err(e.into()),
                    (line, None) => Ok(line),
                };
            }
            item = client.next_item(), if lost.is_none() => match item {
                Some(Ok(_)) => {}
                Some(Err(e)) if !lines.is_terminal() => return Err(e.into()),
                Some(Err(e)) => lost = Some(e),
                None => lost = Some(ClientError::Closed),
            },
            () = ctrl_c.pressed() => return Ok(Line::End),
        }
    }
}

impl Conversation<'_> {
    /// Sends `message` and follows the run it starts until it ends, asking about the tool
    /// calls it waits on.
    async fn turn(
        &mut self,
        client: &mut Client,
        lines: &mut Lines,
        message: &str,
    ) -> Result<Flow, ChatError> {
        let request = StartAgent {
            agent: self.agent.clone(),
            message: message.to_owned(),
            thread_id: self.thread.clone(),
            input: self.input.clone(),
            multitask: None,
        };
        let accepted = match client.start(request).await {
            Ok(accepted) => accepted,
            Err(ClientError::Server { code, message }) => {
                self.out.note(&format!("not sent: {message} ({code})"));
                return Ok(Flow::Next);
            }
            Err(
                e @ (ClientError::NotConnected
                | ClientError::ConnectionLost
                | ClientError::Timeout { .. }),
            ) => {
                self.out.note(&format!("not sent: {e}"));
                return Ok(Flow::Next);
            }
            Err(e) => return Err(e.into()),
        };
        self.accepted(&accepted)?;
        let run = &accepted.run_id;
        let mut view = RunView::new(run, self.look);
        loop {
            let call = match follow(client, run, &mut view, &mut self.out, AGAIN).await {
                Ok(Followed::Paused(call)) => call,
                // The timeline said how the run ended.
                Ok(Followed::Completed)
                | Err(ChatError::RunFailed { .. } | ChatError::RunCancelled { .. }) => {
                    return Ok(Flow::Next);
                }
                Err(ChatError::Interrupted { run_id }) => {
                    self.out.note(&format!(
                        "stopped waiting for run {run_id}; it may still be running on the server"
                    ));
                    return Ok(Flow::Next);
                }
                Err(e) => return Err(e),
            };
            match ask(client, lines, &mut self.out, run, &call).await? {
                Asked::Decided => {}
                Asked::Cancel => cancel(client, run, &mut view, &mut self.out, AGAIN).await?,
                Asked::Quit => {
                    self.out.note(&format!(
                        "run {run} still waits for your approval; decide it later with {} \
                         (or --reject, or --edit with --arguments JSON)",
                        Invocation::of(self.args)
                            .command(&["--approve", &format!("{run}/{}", call.tool_call_id)])
                    ));
                    return Ok(Flow::Quit);
                }
            }
        }
    }

    /// `/approvals`: the calls that wait for the user, in any thread.
    async fn approvals(&mut self) {
        let said = match agent_client::pending_approvals(&self.args.server, self.token).await {
            Ok(all) => listing(&all, &Invocation::of(self.args)),
            Err(e) => format!("cannot list the approvals: {e}"),
        };
        self.out.note(said.trim_end());
    }

    /// The run was accepted: the frame in `--json` mode, and the thread when it is new.
    fn accepted(&mut self, accepted: &RunAccepted) -> Result<(), ChatError> {
        self.out.raw(&accepted_frame(accepted))?;
        if self.thread.as_ref() != Some(&accepted.thread_id) {
            self.out.note(&format!(
                "thread {thread}; later messages continue it (another session can with --thread {thread})",
                thread = accepted.thread_id
            ));
            self.thread = Some(accepted.thread_id.clone());
        }
        Ok(())
    }

    /// A command other than a message.
    fn command(&mut self, command: Command<'_>) {
        let said = match command {
            Command::Help => HELP.to_owned(),
            Command::Agent(None) => format!("talking to {}", self.agent),
            Command::Agent(Some(name)) => {
                self.agent = name.to_owned();
                format!("talking to {name} from the next message on")
            }
            Command::Input(None) => {
                self.input = None;
                "no agent options".to_owned()
            }
            Command::Input(Some(input)) => {
                let said = format!("agent options {}", Value::Object(input.clone()));
                self.input = Some(input);
                said
            }
            Command::NewThread => {
                self.thread = None;
                "the next message starts a new thread".to_owned()
            }
            Command::Wrong(why) => why,
            Command::Empty | Command::Say(_) | Command::Approvals | Command::Quit => return,
        };
        self.out.note(&said);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn lines_are_messages_or_commands() {
        let options = |v: Value| Command::Input(v.as_object().cloned());
        let table: Vec<(&str, Command<'_>)> = vec![
            ("", Command::Empty),
            ("   \t", Command::Empty),
            ("What is 2+2?", Command::Say("What is 2+2?")),
            ("  padded  ", Command::Say("padded")),
            ("//etc/hosts", Command::Say("/etc/hosts")),
            ("/help", Command::Help),
            ("/agent", Command::Agent(None)),
            ("/agent  synthetic ", Command::Agent(Some("synthetic"))),
            ("/input", Command::Input(None)),
            (r#"/input {"hang":true}"#, options(json!({"hang": true}))),
            ("/new", Command::NewThread),
            ("/approvals", Command::Approvals),
            ("/quit", Command::Quit),
            (
                "/input [1]",
                Command::Wrong(
                    "/input must be a JSON object such as '{\"thinking\":2}', got an array".into(),
                ),
            ),
            (
                "/new thread",
                Command::Wrong("/new takes nothing after it".into()),
            ),
            (
                "/approvals all",
                Command::Wrong("/approvals takes nothing after it".into()),
            ),
            (
                "/etc",
                Command::Wrong(
                    "there is no command /etc; /help lists them (//etc sends it as a message)"
                        .into(),
                ),
            ),
        ];
        for (line, expected) in table {
            assert_eq!(Command::parse(line), expected, "{line:?}");
        }
    }
}
