//! The command line of `agent-server chat`: [`ChatArgs`], with the flags, environment variables
//! and help text the server's binary shows, and the parsing of the values that need it.

use agent_protocol::client_frames::MAX_TOOL_CALL_ID_LEN;
use agent_protocol::json_kind;
use core_context::approval::Decision;
use core_context::{RunId, ThreadId};
use serde_json::{Map, Value};

/// The server `--server` names when it is not given.
pub(crate) const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// The exit code of a run that waits for a person's approval (`agent-server chat` with a
/// message, `--approve`, `--reject`, `--edit`): neither done (0) nor failed (1).
pub const EXIT_WAITING_FOR_APPROVAL: u8 = 3;

/// The exit code of a run that waits for its user's budget (`agent-server chat` with a
/// message, or a decision that lets the run go on to its next model call): it goes on by
/// itself on the server when the budget resets or the limit is raised; `--cancel` ends it.
pub const EXIT_WAITING_FOR_BUDGET: u8 = 4;

/// Arguments of `agent-server chat`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Without MESSAGE: a conversation in one thread. Each line typed is a \
message; one typed while an answer runs is sent at once and queued behind it; /interrupt \
MESSAGE stops the running answer and answers MESSAGE instead, /steer MESSAGE adds MESSAGE to \
the running answer (when its agent takes messages while it answers; otherwise it is queued). \
Ctrl-C cancels a running answer, Ctrl-D quits, /help lists the commands (/interrupt, /steer, \
/agent, /input, /new, /approvals, /usage, /cancel, /quit); a tool call that needs approval \
is asked about (y, n or e). A run that waits for your budget lets you type on, goes on by \
itself (and is shown) when the budget resets or your limit is raised, and /cancel ends it. \
On a terminal the answer is rendered from markdown and the steps are dimmed \
(NO_COLOR turns the colours off); from a pipe, lines are read plainly, each once the \
answers before it have ended.

With MESSAGE, a run that waits for approval prints its waiting calls and the commands that \
decide them (--approve, --reject, --edit), then exits with code 3; those commands decide, \
then follow the run like MESSAGE does. A run that waits for your budget exits with code 4 \
after saying when it goes on by itself; --cancel RUN_ID ends it. Exit codes: 0 the run \
completed (or --cancel ended it), 1 it (or the command) failed, 2 bad arguments, 3 the run \
waits for approval, 4 the run waits for your budget."
)]
pub struct ChatArgs {
    /// The server's base URL (http:// or ws://; the WebSocket is at /ws).
    #[arg(
        long,
        value_name = "URL",
        env = "AGENT_SERVER_URL",
        default_value = DEFAULT_SERVER
    )]
    pub server: String,
    /// Get a development token for this user from the server (POST /dev/token). Works only
    /// when the server generated its own secret. Takes precedence over --token.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// A JWT (HS256, `sub` = your user id) to connect with.
    #[arg(
        long,
        value_name = "JWT",
        env = "AGENT_SERVER_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// The agent to run.
    #[arg(long, value_name = "NAME", default_value = "assistant")]
    pub agent: String,
    /// Continue this thread (the thread id printed by an earlier run).
    #[arg(long, value_name = "THREAD_ID", value_parser = parse_thread)]
    pub thread: Option<ThreadId>,
    /// Agent-specific options: a JSON object handed to the agent as is.
    #[arg(long, value_name = "JSON", value_parser = parse_input)]
    pub input: Option<Map<String, Value>>,
    /// Print the raw protocol frames (one JSON object per line) instead of the timeline.
    #[arg(long)]
    pub json: bool,
    /// The message to send to the agent. Without one, a conversation starts: every line
    /// typed is a message in the same thread.
    #[arg(value_name = "MESSAGE")]
    pub message: Option<String>,
    /// Approve a tool call that waits (the run id and call id a waiting run printed), then
    /// follow the run to its end.
    #[arg(long, value_name = "RUN_ID/TOOL_CALL_ID", value_parser = parse_call,
          group = "decide", conflicts_with = "message")]
    pub approve: Option<CallRef>,
    /// Reject a tool call that waits (the agent goes on without it), then follow the run.
    #[arg(long, value_name = "RUN_ID/TOOL_CALL_ID", value_parser = parse_call,
          group = "decide", conflicts_with = "message")]
    pub reject: Option<CallRef>,
    /// With --reject: why, for the agent to read.
    #[arg(long, value_name = "TEXT", requires = "reject")]
    pub reason: Option<String>,
    /// Run a tool call that waits with other arguments (--arguments), then follow the run.
    #[arg(long, value_name = "RUN_ID/TOOL_CALL_ID", value_parser = parse_call,
          group = "decide", conflicts_with = "message", requires = "arguments")]
    pub edit: Option<CallRef>,
    /// With --edit: the tool's arguments, a JSON object such as '{"expression":"12*8"}'.
    #[arg(long, value_name = "JSON", value_parser = parse_arguments, requires = "edit")]
    pub arguments: Option<Map<String, Value>>,
    /// List the tool calls that wait for your approval, across threads, and exit.
    #[arg(long, group = "decide", conflicts_with = "message")]
    pub approvals: bool,
    /// Cancel one of your runs (a run waiting for your budget, say), then follow it to its
    /// end.
    #[arg(long, value_name = "RUN_ID", value_parser = parse_run,
          group = "decide", conflicts_with = "message")]
    pub cancel: Option<RunId>,
}

/// A tool call that waits for approval, as `RUN_ID/TOOL_CALL_ID` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRef {
    /// The paused run.
    pub run_id: RunId,
    /// The call (its `approval_requested`'s `tool_call_id`).
    pub tool_call_id: String,
}

impl std::fmt::Display for CallRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.run_id, self.tool_call_id)
    }
}

impl ChatArgs {
    /// The decision `--approve`, `--reject` or `--edit` asks for, and the call it is about.
    pub(crate) fn decision(&self) -> Option<(&CallRef, Decision)> {
        if let Some(call) = &self.approve {
            return Some((call, Decision::Approve));
        }
        if let Some(call) = &self.reject {
            let message = self.reason.clone().filter(|r| !r.trim().is_empty());
            return Some((call, Decision::Reject { message }));
        }
        let (call, arguments) = (self.edit.as_ref()?, self.arguments.clone()?);
        Some((
            call,
            Decision::Edit {
                arguments: Value::Object(arguments),
            },
        ))
    }
}

/// Parses `--approve`, `--reject` and `--edit`: `RUN_ID/TOOL_CALL_ID`, as a waiting run
/// prints it. A run id has no `/`, so the first one separates them.
pub(crate) fn parse_call(raw: &str) -> Result<CallRef, String> {
    const SHAPE: &str = "must be RUN_ID/TOOL_CALL_ID, as a run waiting for approval prints it \
                         (such as run_01JD6QE0/call_01JD6QE0C1)";
    let Some((run, call)) = raw.split_once('/') else {
        return Err(format!("{SHAPE}; there is no '/'"));
    };
    let run_id = RunId::parse(run).map_err(|e| format!("{SHAPE}; the run id: {e}"))?;
    if call.is_empty() || call.len() > MAX_TOOL_CALL_ID_LEN {
        return Err(format!(
            "{SHAPE}; the tool call id must be 1 to {MAX_TOOL_CALL_ID_LEN} bytes"
        ));
    }
    Ok(CallRef {
        run_id,
        tool_call_id: call.to_owned(),
    })
}

/// Parses `--arguments` (and the arguments typed after `e` at an approval's question): the
/// tool's arguments, which the server takes only as a JSON object.
pub(crate) fn parse_arguments(raw: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str(raw) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!(
            "must be a JSON object of the tool's arguments such as '{{\"expression\":\"12*8\"}}', got {}",
            json_kind(&other)
        )),
        Err(e) => Err(format!("is not valid JSON: {e}")),
    }
}

/// Parses `--input` (and the conversation's `/input`): it must be a JSON object, because the
/// server hands it to the agent as its options and refuses anything else.
pub(crate) fn parse_input(raw: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str(raw) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!(
            "must be a JSON object such as '{{\"thinking\":2}}', got {}",
            json_kind(&other)
        )),
        Err(e) => Err(format!("is not valid JSON: {e}")),
    }
}

/// Parses `--cancel`: a run id as the server prints it.
fn parse_run(raw: &str) -> Result<RunId, String> {
    RunId::parse(raw).map_err(|e| e.to_string())
}

/// Parses `--thread`: a thread id as the server prints it.
fn parse_thread(raw: &str) -> Result<ThreadId, String> {
    ThreadId::parse(raw).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn input_must_be_a_json_object() {
        let table: &[(&str, Result<Value, &str>)] = &[
            (r#"{"thinking":2}"#, Ok(json!({"thinking":2}))),
            ("{}", Ok(json!({}))),
            (
                "[1]",
                Err("must be a JSON object such as '{\"thinking\":2}', got an array"),
            ),
            ("\"x\"", Err("got a string")),
            ("{oops", Err("is not valid JSON")),
        ];
        for (raw, expected) in table {
            match (parse_input(raw), expected) {
                (Ok(map), Ok(value)) => assert_eq!(&Value::Object(map), value, "{raw}"),
                (Err(e), Err(fragment)) => assert!(e.contains(fragment), "{raw}: {e}"),
                (got, _) => panic!("{raw}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn a_call_is_a_run_id_and_a_tool_call_id() {
        // (raw, Ok((run id, call id)) or Err(a fragment of the message))
        type Case<'a> = (&'a str, Result<(&'a str, &'a str), &'a str>);
        let table: &[Case<'_>] = &[
            ("run_01ABC/call_01ABC_0", Ok(("run_01ABC", "call_01ABC_0"))),
            // A call id may hold a '/': only the first one separates.
            ("run_1x/toolu/7", Ok(("run_1x", "toolu/7"))),
            (
                "run_01ABC",
                Err("must be RUN_ID/TOOL_CALL_ID, as a run waiting"),
            ),
            ("run_01ABC", Err("there is no '/'")),
            ("/call_1", Err("the run id: run id must not be empty")),
            ("run 1/call_1", Err("the run id: run id contains ' '")),
            ("run_1x/", Err("the tool call id must be 1 to 128 bytes")),
        ];
        for (raw, expected) in table {
            match (parse_call(raw), expected) {
                (Ok(call), Ok((run, id))) => {
                    assert_eq!(
                        (call.run_id.as_str(), call.tool_call_id.as_str()),
                        (*run, *id)
                    );
                    assert_eq!(call.to_string(), *raw);
                }
                (Err(e), Err(fragment)) => assert!(e.contains(fragment), "{raw}: {e}"),
                (got, _) => panic!("{raw}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn arguments_must_be_a_json_object() {
        assert_eq!(
            parse_arguments(r#"{"expression":"12*8"}"#).map(Value::Object),
            Ok(json!({"expression": "12*8"}))
        );
        let err = parse_arguments("[1]").unwrap_err();
        assert!(
            err.contains("must be a JSON object of the tool's arguments"),
            "{err}"
        );
        assert!(err.ends_with("got an array"), "{err}");
        let err = parse_arguments("{\"expression\":").unwrap_err();
        assert!(err.starts_with("is not valid JSON: EOF"), "{err}");
    }

    /// The command line as clap reads it, after `chat`.
    fn parse(argv: &[&str]) -> Result<ChatArgs, String> {
        use clap::{Args as _, FromArgMatches as _};
        let command = ChatArgs::augment_args(clap::Command::new("chat"));
        command.clone().debug_assert();
        let matches = command
            .try_get_matches_from(std::iter::once("chat").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())?;
        ChatArgs::from_arg_matches(&matches).map_err(|e| e.to_string())
    }

    #[test]
    fn one_decision_with_what_it_needs() {
        let decided = |argv: &[&str]| {
            let args = parse(argv).unwrap();
            args.decision().map(|(call, d)| (call.to_string(), d))
        };
        assert_eq!(
            decided(&["--approve", "run_1x/c1"]),
            Some(("run_1x/c1".into(), Decision::Approve))
        );
        assert_eq!(
            decided(&["--reject", "run_1x/c1", "--reason", "not now"]),
            Some((
                "run_1x/c1".into(),
                Decision::Reject {
                    message: Some("not now".into())
                }
            ))
        );
        assert_eq!(
            decided(&["--reject", "run_1x/c1"]),
            Some(("run_1x/c1".into(), Decision::Reject { message: None }))
        );
        assert_eq!(
            decided(&[
                "--edit",
                "run_1x/c1",
                "--arguments",
                r#"{"expression":"1"}"#
            ]),
            Some((
                "run_1x/c1".into(),
                Decision::Edit {
                    arguments: json!({"expression": "1"})
                }
            ))
        );
        assert_eq!(decided(&["hello"]), None);
        assert!(parse(&["--approvals"]).unwrap().approvals);
        let cancel = parse(&["--cancel", "run_1x"]).unwrap();
        assert_eq!(cancel.cancel.as_ref().map(RunId::as_str), Some("run_1x"));
        assert!(cancel.decision().is_none());
        let refused: &[(&[&str], &str)] = &[
            (&["--approve", "run_1x"], "there is no '/'"),
            (&["--edit", "run_1x/c1"], "--arguments <JSON>"),
            (
                &["--edit", "run_1x/c1", "--arguments", "[1]"],
                "got an array",
            ),
            (
                &["--edit", "run_1x/c1", "--arguments", "{"],
                "is not valid JSON",
            ),
            (&["--arguments", "{}"], "--edit <RUN_ID/TOOL_CALL_ID>"),
            (&["--reason", "no"], "--reject <RUN_ID/TOOL_CALL_ID>"),
            (
                &["--approve", "run_1x/c1", "--reject", "run_1x/c2"],
                "cannot be used with",
            ),
            (&["--approve", "run_1x/c1", "hello"], "cannot be used with"),
            (&["--approvals", "hello"], "cannot be used with"),
            (&["--cancel", "run_1x", "hello"], "cannot be used with"),
            (
                &["--cancel", "run_1x", "--approve", "run_1x/c1"],
                "cannot be used with",
            ),
            (&["--cancel", "run 1"], "run id contains ' '"),
        ];
        for (argv, fragment) in refused {
            let err = parse(argv).map(|_| ()).unwrap_err();
            assert!(err.contains(fragment), "{argv:?}: {err}");
        }
    }

    #[test]
    fn a_thread_must_be_a_valid_id() {
        assert!(parse_thread("thr_01JD6Q9V3K8Z4X2M7N5P0R1S2T").is_ok());
        let err = parse_thread("bad id").unwrap_err();
        assert!(err.contains("thread id contains ' '"), "{err}");
    }
}
