//! [`pending_approvals`]: the user's tool calls that wait for a decision, from
//! `GET /v1/approvals` (`docs/protocol.md`, "Approvals"). Deciding one is a socket request,
//! [`Client::resolve_approval`](crate::Client::resolve_approval).

use agent_protocol::ErrorCode;
use agent_protocol::http::HttpError;
use core_context::{RunId, ThreadId};
use serde::Deserialize;
use serde_json::Value;

use crate::error::ClientError;
use crate::http;
use crate::url::ServerUrl;

/// A tool call that waits for the user's decision, as `GET /v1/approvals` lists it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct PendingApproval {
    /// The paused run.
    pub run_id: RunId,
    /// Its thread.
    pub thread_id: ThreadId,
    /// The run's agent.
    pub agent: String,
    /// The call (the `tool_call_id` a decision names).
    pub tool_call_id: String,
    /// The tool.
    pub tool_name: String,
    /// The arguments the agent asked for.
    pub arguments: Value,
    /// When it was asked for (Unix milliseconds).
    pub requested_ms: i64,
    /// When it is rejected as expired if nobody decides (Unix milliseconds).
    pub expires_ms: i64,
}

/// The body of `GET /v1/approvals`.
#[derive(Deserialize)]
struct Listed {
    approvals: Vec<PendingApproval>,
}

/// The tool calls waiting for a decision in the runs of the user `token` names, across
/// threads, oldest first (the server lists at most 200), from the server at `server_url`.
///
/// A refused token is [`ClientError::Refused`] with status 401; a server older than
/// approvals answers 404, also a `Refused`.
pub async fn pending_approvals(
    server_url: &str,
    token: &str,
) -> Result<Vec<PendingApproval>, ClientError> {
    let url = ServerUrl::parse(server_url)?.http("v1/approvals");
    let body = http::send(
        &url,
        |client| client.get(&url).bearer_auth(token),
        || ClientError::Refused {
            status: 404,
            error: HttpError {
                error: ErrorCode::NotFound,
                message: format!("GET {url} does not exist: the server predates approvals"),
            },
        },
    )
    .await?;
    read_list(&url, &body)
}

fn read_list(url: &str, body: &[u8]) -> Result<Vec<PendingApproval>, ClientError> {
    serde_json::from_slice::<Listed>(body)
        .map(|listed| listed.approvals)
        .map_err(|e| ClientError::Protocol(format!("GET {url} answered 200 without a list ({e})")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_list_is_read_and_a_wrong_body_named() {
        let body = json!({"approvals": [{
            "run_id": "run_01", "thread_id": "thr_01", "agent": "assistant",
            "tool_call_id": "call_1", "tool_name": "calculator",
            "arguments": {"expression": "12*7"}, "requested_ms": 1, "expires_ms": 2,
            "status": "pending", "decision": null, "decided_ms": null
        }]});
        let listed = read_list("u", body.to_string().as_bytes()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].run_id.as_str(), "run_01");
        assert_eq!(listed[0].tool_call_id, "call_1");
        assert_eq!(listed[0].arguments, json!({"expression": "12*7"}));
        assert_eq!(listed[0].expires_ms, 2);
        let err = read_list("http://h/v1/approvals", b"{\"approvals\":7}").unwrap_err();
        assert!(
            err.to_string()
                .contains("GET http://h/v1/approvals answered 200 without a list"),
            "{err}"
        );
    }
}
