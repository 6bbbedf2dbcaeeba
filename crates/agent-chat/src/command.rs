//! What a line typed in the conversation means ([`Command`]): a message for the agent, or one
//! of the commands that start with `/`, which `/help` lists ([`HELP`]). Apart from IO, so it
//! is tested without a terminal.

use core_context::multitask::Multitask;
use serde_json::{Map, Value};

use crate::args::parse_input;

/// What `/help` says.
pub(crate) const HELP: &str = "\
Each line is a message to the agent, in the same thread. One typed while an answer runs is
sent at once and queued: it is answered after the answers before it. Commands:
  /interrupt MESSAGE  stop the running answer and answer MESSAGE instead
  /steer MESSAGE      add MESSAGE to the running answer, when its agent takes messages
                      while it answers (otherwise MESSAGE is queued)
  /agent NAME         talk to another agent from the next message on (/agent alone: which one)
  /input JSON         agent options for the next messages, a JSON object (/input alone: none)
  /new                start a new thread with the next message
  /approvals          list the tool calls that wait for your approval, in any thread
  /usage              what your messages used this budget period, what your budget allows,
                      and when it resets
  /cancel             cancel the running answer, or, with none, the ones that wait for your
                      budget
  /quit               end the conversation (as Ctrl-D does)
  //text              send \"/text\" as a message
Ctrl-C cancels the running answer. An answer that waits for your budget lets you type on: it
goes on by itself (and is shown) when the budget resets or your limit is raised. A tool call
that needs your approval is asked about: y runs it, n does not (you may say why), e runs it
with other arguments (one JSON object); Ctrl-C there cancels the run.";

/// One line of the conversation, read.
#[derive(Debug, PartialEq)]
pub(crate) enum Command<'a> {
    /// Nothing to send.
    Empty,
    /// A message for the agent, and what it does to an answer that runs in the thread:
    /// `enqueue` for a plain line, `interrupt` for `/interrupt`, `steer` for `/steer`.
    Say(&'a str, Multitask),
    Help,
    /// `/agent NAME` (`None`: which agent is it?).
    Agent(Option<&'a str>),
    /// `/input JSON`, read (`None`: no options).
    Input(Option<Map<String, Value>>),
    NewThread,
    Approvals,
    Usage,
    /// `/cancel`: the running answer, or the runs that wait for the budget.
    Cancel,
    Quit,
    /// A command that is not one, or a command's bad argument: what to tell the user.
    Wrong(String),
}

impl<'a> Command<'a> {
    pub(crate) fn parse(line: &'a str) -> Self {
        let line = line.trim();
        if line.is_empty() {
            return Command::Empty;
        }
        if let Some(escaped) = line.strip_prefix("//") {
            return Command::Say(&line[line.len() - escaped.len() - 1..], Multitask::Enqueue);
        }
        let Some(command) = line.strip_prefix('/') else {
            return Command::Say(line, Multitask::Enqueue);
        };
        let (name, rest) = command
            .split_once(char::is_whitespace)
            .map_or((command, ""), |(name, rest)| (name, rest.trim()));
        let rest = (!rest.is_empty()).then_some(rest);
        match (name, rest) {
            ("interrupt", Some(message)) => Command::Say(message, Multitask::Interrupt),
            ("steer", Some(message)) => Command::Say(message, Multitask::Steer),
            ("interrupt" | "steer", None) => Command::Wrong(format!(
                "/{name} needs a message after it, such as /{name} Answer in French instead"
            )),
            ("help", None) => Command::Help,
            ("agent", name) => Command::Agent(name),
            ("input", None) => Command::Input(None),
            ("input", Some(json)) => match parse_input(json) {
                Ok(map) => Command::Input(Some(map)),
                Err(e) => Command::Wrong(format!("/input {e}")),
            },
            ("new", None) => Command::NewThread,
            ("approvals", None) => Command::Approvals,
            ("usage", None) => Command::Usage,
            ("cancel", None) => Command::Cancel,
            ("quit", None) => Command::Quit,
            ("help" | "new" | "approvals" | "usage" | "cancel" | "quit", Some(_)) => {
                Command::Wrong(format!("/{name} takes nothing after it"))
            }
            _ => Command::Wrong(format!(
                "there is no command /{name}; /help lists them (//{name} sends it as a message)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn lines_are_messages_or_commands() {
        let options = |v: Value| Command::Input(v.as_object().cloned());
        let say = |message| Command::Say(message, Multitask::Enqueue);
        let table: Vec<(&str, Command<'_>)> = vec![
            ("", Command::Empty),
            ("   \t", Command::Empty),
            ("What is 2+2?", say("What is 2+2?")),
            ("  padded  ", say("padded")),
            ("//etc/hosts", say("/etc/hosts")),
            ("//interrupt now", say("/interrupt now")),
            ("/help", Command::Help),
            ("/agent", Command::Agent(None)),
            ("/agent  synthetic ", Command::Agent(Some("synthetic"))),
            ("/input", Command::Input(None)),
            (r#"/input {"hang":true}"#, options(json!({"hang": true}))),
            ("/new", Command::NewThread),
            ("/approvals", Command::Approvals),
            ("/usage", Command::Usage),
            ("/cancel", Command::Cancel),
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
                "/usage today",
                Command::Wrong("/usage takes nothing after it".into()),
            ),
            (
                "/cancel run_1x",
                Command::Wrong("/cancel takes nothing after it".into()),
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

    #[test]
    fn interrupt_and_steer_carry_a_message_and_their_strategy() {
        let table: Vec<(&str, Command<'_>)> = vec![
            (
                "/interrupt Answer in French instead",
                Command::Say("Answer in French instead", Multitask::Interrupt),
            ),
            (
                "  /interrupt   stop, and say hi  ",
                Command::Say("stop, and say hi", Multitask::Interrupt),
            ),
            (
                "/steer\tand in Fahrenheit",
                Command::Say("and in Fahrenheit", Multitask::Steer),
            ),
            // The message is kept as typed, slashes and all.
            (
                "/steer /etc/hosts too",
                Command::Say("/etc/hosts too", Multitask::Steer),
            ),
            (
                "/interrupt",
                Command::Wrong(
                    "/interrupt needs a message after it, such as /interrupt Answer in French \
                     instead"
                        .into(),
                ),
            ),
            (
                "/steer   ",
                Command::Wrong(
                    "/steer needs a message after it, such as /steer Answer in French instead"
                        .into(),
                ),
            ),
            // Only the exact names: these are not commands.
            (
                "/interrupted now",
                Command::Wrong(
                    "there is no command /interrupted; /help lists them (//interrupted sends it \
                     as a message)"
                        .into(),
                ),
            ),
            (
                "/Steer x",
                Command::Wrong(
                    "there is no command /Steer; /help lists them (//Steer sends it as a message)"
                        .into(),
                ),
            ),
        ];
        for (line, expected) in table {
            assert_eq!(Command::parse(line), expected, "{line:?}");
        }
    }

    #[test]
    fn help_names_every_command() {
        for name in [
            "/interrupt",
            "/steer",
            "/agent",
            "/input",
            "/new",
            "/approvals",
            "/usage",
            "/cancel",
            "/quit",
            "//",
        ] {
            assert!(HELP.contains(&format!("  {name}")), "{name} in {HELP}");
        }
        assert!(
            HELP.lines().all(|line| line.chars().count() <= 100),
            "{HELP}"
        );
    }
}
