//! The command line of `agent-server chat`: [`ChatArgs`], with the flags, environment variables
//! and help text the server's binary shows, and the parsing of the values that need it.

use agent_protocol::json_kind;
use core_context::ThreadId;
use serde_json::{Map, Value};

/// Arguments of `agent-server chat`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Without MESSAGE: a conversation in one thread. Each line typed is a \
message; Ctrl-C cancels a running answer, Ctrl-D quits, /help lists the commands \
(/agent, /input, /new, /quit). On a terminal the answer is rendered from markdown and the \
steps are dimmed (NO_COLOR turns the colours off); from a pipe, lines are read plainly."
)]
pub struct ChatArgs {
    /// The server's base URL (http:// or ws://; the WebSocket is at /ws).
    #[arg(
        long,
        value_name = "URL",
        env = "AGENT_SERVER_URL",
        default_value = "http://127.0.0.1:8080"
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
    fn a_thread_must_be_a_valid_id() {
        assert!(parse_thread("thr_01JD6Q9V3K8Z4X2M7N5P0R1S2T").is_ok());
        let err = parse_thread("bad id").unwrap_err();
        assert!(err.contains("thread id contains ' '"), "{err}");
    }
}
