//! What the chat says and reads about tool calls that wait for approval, apart from IO: the
//! question the conversation asks and the answers it takes ([`Choice`]), and, for the
//! one-shot command, the waiting calls with the commands that decide them ([`Invocation`]);
//! and the one-shot command's report of a run that waits for its user's budget
//! ([`budget_wait_text`]).
//!
//! Agent text (a tool's name, its arguments) reaches the terminal only escaped, like the
//! timeline's.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use agent_client::PendingApproval;
use agent_protocol::Timestamp;
use core_context::RunId;
use core_context::approval::PendingCall;
use serde_json::Value;

use crate::args::{ChatArgs, DEFAULT_SERVER};
use crate::error::tool_calls;
use crate::terminal::escape_controls;

/// Asked after `n`.
pub(crate) const REASON_PROMPT: &str = "reason (optional, Enter for none): ";
/// Asked after `e`.
pub(crate) const ARGUMENTS_PROMPT: &str = "new arguments, one JSON object (Enter goes back): ";
/// Said when the answer to the question is none of its choices.
pub(crate) const CHOICES: &str =
    "answer y (run the tool), n (do not run it) or e (run it with other arguments)";

/// The call as the person reads it: `calculator({"expression":"12*7"})`.
pub(crate) fn call_text(tool_name: &str, arguments: &Value) -> String {
    escape_controls(&format!("{tool_name}({arguments})"))
}

/// The question the conversation asks about a waiting call.
pub(crate) fn question(call: &PendingCall) -> String {
    format!(
        "approve {}? [y]es / [n]o / [e]dit ",
        call_text(&call.tool_name, &call.arguments)
    )
}

/// An answer to the question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Choice {
    Approve,
    Reject,
    Edit,
}

impl Choice {
    /// `y`, `n`, `e` (or `yes`, `no`, `edit`, in any case); `None` for anything else.
    pub(crate) fn parse(line: &str) -> Option<Self> {
        match line.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => Some(Choice::Approve),
            "n" | "no" => Some(Choice::Reject),
            "e" | "edit" => Some(Choice::Edit),
            _ => None,
        }
    }
}

/// A call that waits, with its expiry when known.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Waiting {
    pub(crate) call: PendingCall,
    pub(crate) expires: Option<Timestamp>,
}

impl From<&PendingApproval> for Waiting {
    fn from(listed: &PendingApproval) -> Self {
        let expires = u64::try_from(listed.expires_ms)
            .ok()
            .map(|ms| Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)));
        Waiting {
            call: PendingCall {
                tool_call_id: listed.tool_call_id.clone(),
                tool_name: listed.tool_name.clone(),
                arguments: listed.arguments.clone(),
            },
            expires,
        }
    }
}

/// How the user runs `agent-server chat`, so that a printed command can be run as it is:
/// the same server and user. A token is never printed: with `--token`, the command says to
/// add it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invocation {
    /// `--server URL`, when not the default.
    server: Option<String>,
    /// `--user NAME`.
    user: Option<String>,
}

impl Invocation {
    pub(crate) fn of(args: &ChatArgs) -> Self {
        Self {
            server: (args.server != DEFAULT_SERVER).then(|| args.server.clone()),
            user: args.user.clone(),
        }
    }

    /// `agent-server chat` with the invocation's server and credentials, then `rest`.
    pub(crate) fn command(&self, rest: &[&str]) -> String {
        let mut words = vec!["agent-server".to_owned(), "chat".to_owned()];
        if let Some(server) = &self.server {
            words.extend(["--server".to_owned(), shell_word(server)]);
        }
        if let Some(user) = &self.user {
            words.extend(["--user".to_owned(), shell_word(user)]);
        }
        words.extend(rest.iter().map(|w| shell_word(w)));
        words.join(" ")
    }

    /// The server's HTTP URL of `path` (relative, like `v1/runs/run_1x`): its base URL with
    /// `ws` made `http`, and without the WebSocket's `/ws`.
    pub(crate) fn http(&self, path: &str) -> String {
        let server = self.server.as_deref().unwrap_or(DEFAULT_SERVER);
        let base = server.trim_end_matches('/');
        let base = base.strip_suffix("/ws").unwrap_or(base);
        let base = match base.split_once("://") {
            Some(("ws", rest)) => format!("http://{rest}"),
            Some(("wss", rest)) => format!("https://{rest}"),
            _ => base.to_owned(),
        };
        format!("{base}/{path}")
    }

    /// Said after commands when they lack the credentials.
    fn token_hint(&self) -> &'static str {
        if self.user.is_some() {
            ""
        } else {
            "  (each with your token: --token JWT, or AGENT_SERVER_TOKEN set)\n"
        }
    }
}

/// The one-shot command's report of a paused run: each waiting call, and the commands that
/// approve, reject or edit it.
pub(crate) fn waiting_text(run: &RunId, calls: &[Waiting], how: &Invocation) -> String {
    let mut text = format!(
        "run {run} waits for your approval of {}:\n",
        tool_calls(calls.len())
    );
    for Waiting { call, expires } in calls {
        let id = format!("{run}/{}", call.tool_call_id);
        let arguments = call.arguments.to_string();
        let _ = write!(
            text,
            "  {}  call {}",
            call_text(&call.tool_name, &call.arguments),
            escape_controls(&call.tool_call_id)
        );
        if let Some(expires) = expires {
            let _ = write!(text, ", expires {expires}");
        }
        let _ = write!(
            text,
            "\n    approve: {}\n    reject:  {}\n    edit:    {}\n",
            how.command(&["--approve", &id]),
            how.command(&["--reject", &id]),
            how.command(&["--edit", &id, "--arguments", &arguments]),
        );
    }
    text.push_str(how.token_hint());
    text
}

/// The one-shot command's report of a run that waits for its user's budget (which resets at
/// `resets`, as the chat prints times): that it goes on by itself, where to see it later, and
/// the command that cancels it.
pub(crate) fn budget_wait_text(run: &RunId, resets: &str, how: &Invocation) -> String {
    let mut text = format!(
        "run {run} waits for your budget: it goes on by itself on the server when the budget \
         resets at {resets} or your limit is raised\n  \
         see it:    GET {} (its status and events)\n  \
         cancel it: {}\n",
        how.http(&format!("v1/runs/{run}")),
        how.command(&["--cancel", run.as_str()]),
    );
    text.push_str(how.token_hint());
    text
}

/// `--approvals` and `/approvals`: the user's waiting calls, one a line, and how to decide.
pub(crate) fn listing(calls: &[PendingApproval], how: &Invocation) -> String {
    if calls.is_empty() {
        return "no tool call waits for your approval\n".to_owned();
    }
    let wait = if calls.len() == 1 { "waits" } else { "wait" };
    let mut text = format!("{} {wait} for your approval:\n", tool_calls(calls.len()));
    for listed in calls {
        let waiting = Waiting::from(listed);
        let _ = write!(
            text,
            "  {}/{}  {}  {}, thread {}",
            listed.run_id,
            escape_controls(&listed.tool_call_id),
            call_text(&listed.tool_name, &listed.arguments),
            escape_controls(&listed.agent),
            listed.thread_id,
        );
        if let Some(expires) = waiting.expires {
            let _ = write!(text, ", expires {expires}");
        }
        text.push('\n');
    }
    let _ = writeln!(
        text,
        "decide one with {} (or --reject, or --edit with --arguments JSON)",
        how.command(&["--approve", "RUN_ID/TOOL_CALL_ID"])
    );
    text.push_str(how.token_hint());
    text
}

/// `word` as a POSIX shell reads it back: as it is when it holds no special character,
/// single-quoted otherwise.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", escape_controls(&word.replace('\'', r"'\''")))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn calculator() -> PendingCall {
        PendingCall {
            tool_call_id: "call_run_1x_0".into(),
            tool_name: "calculator".into(),
            arguments: json!({"expression": "12*7"}),
        }
    }

    #[test]
    fn the_question_shows_the_call_as_compact_json() {
        assert_eq!(
            question(&calculator()),
            r#"approve calculator({"expression":"12*7"})? [y]es / [n]o / [e]dit "#
        );
        let sly = PendingCall {
            tool_name: "x\x1b[2J".into(),
            ..calculator()
        };
        assert!(
            question(&sly).starts_with(r"approve x\u{1b}[2J("),
            "{}",
            question(&sly)
        );
    }

    #[test]
    fn answers_are_y_n_or_e() {
        let table = [
            ("y", Some(Choice::Approve)),
            (" Yes ", Some(Choice::Approve)),
            ("n", Some(Choice::Reject)),
            ("NO", Some(Choice::Reject)),
            ("e", Some(Choice::Edit)),
            ("edit", Some(Choice::Edit)),
            ("", None),
            ("maybe", None),
            ("yn", None),
        ];
        for (line, expected) in table {
            assert_eq!(Choice::parse(line), expected, "{line:?}");
        }
    }

    #[test]
    fn commands_are_runnable_as_printed() {
        let how = Invocation {
            server: None,
            user: Some("alice".into()),
        };
        let run = RunId::parse("run_1x").unwrap();
        let waiting = Waiting {
            call: calculator(),
            expires: None,
        };
        assert_eq!(
            waiting_text(&run, &[waiting], &how),
            "run run_1x waits for your approval of 1 tool call:\n\
             \x20 calculator({\"expression\":\"12*7\"})  call call_run_1x_0\n\
             \x20   approve: agent-server chat --user alice --approve run_1x/call_run_1x_0\n\
             \x20   reject:  agent-server chat --user alice --reject run_1x/call_run_1x_0\n\
             \x20   edit:    agent-server chat --user alice --edit run_1x/call_run_1x_0 \
             --arguments '{\"expression\":\"12*7\"}'\n"
        );
        let elsewhere = Invocation {
            server: Some("http://h:9/x y".into()),
            user: None,
        };
        assert_eq!(
            elsewhere.command(&["--approve", "run_1x/it's"]),
            r"agent-server chat --server 'http://h:9/x y' --approve 'run_1x/it'\''s'"
        );
        assert!(waiting_text(&run, &[], &elsewhere).contains("--token JWT"));
    }

    #[test]
    fn a_budget_wait_says_where_to_see_the_run_and_how_to_cancel_it() {
        let how = Invocation {
            server: None,
            user: Some("alice".into()),
        };
        let run = RunId::parse("run_1x").unwrap();
        assert_eq!(
            budget_wait_text(&run, "2026-12-01 00:00 UTC", &how),
            "run run_1x waits for your budget: it goes on by itself on the server when the \
             budget resets at 2026-12-01 00:00 UTC or your limit is raised\n\
             \x20 see it:    GET http://127.0.0.1:8080/v1/runs/run_1x (its status and events)\n\
             \x20 cancel it: agent-server chat --user alice --cancel run_1x\n"
        );
        let table = [
            ("ws://h:9/ws", "http://h:9/v1/runs/run_1x"),
            ("wss://h/app/ws/", "https://h/app/v1/runs/run_1x"),
            ("https://h:9/app", "https://h:9/app/v1/runs/run_1x"),
        ];
        for (server, url) in table {
            let elsewhere = Invocation {
                server: Some(server.into()),
                user: None,
            };
            assert_eq!(elsewhere.http("v1/runs/run_1x"), url, "{server}");
            let text = budget_wait_text(&run, "soon", &elsewhere);
            assert!(text.contains("--cancel run_1x\n"), "{text}");
            assert!(text.contains("--token JWT"), "{text}");
        }
    }

    #[test]
    fn the_listing_names_each_call_and_how_to_decide() {
        let listed: PendingApproval = serde_json::from_value(json!({
            "run_id": "run_1x", "thread_id": "thr_1x", "agent": "assistant",
            "tool_call_id": "call_1", "tool_name": "calculator",
            "arguments": {"expression": "12*7"}, "requested_ms": 0,
            "expires_ms": 1_764_064_800_000_i64
        }))
        .unwrap();
        let how = Invocation {
            server: None,
            user: Some("alice".into()),
        };
        let text = listing(&[listed], &how);
        assert_eq!(
            text,
            "1 tool call waits for your approval:\n\
             \x20 run_1x/call_1  calculator({\"expression\":\"12*7\"})  assistant, thread thr_1x, \
             expires 2025-11-25T10:00:00.000000Z\n\
             decide one with agent-server chat --user alice --approve RUN_ID/TOOL_CALL_ID \
             (or --reject, or --edit with --arguments JSON)\n"
        );
        assert_eq!(listing(&[], &how), "no tool call waits for your approval\n");
    }
}
