//! [`agents()`]: the agents a server runs, from `GET /agents` (`docs/protocol.md`, "GET
//! /agents"), for a client that lets its user choose one or offers their example prompts.

use agent_protocol::ErrorCode;
use agent_protocol::http::HttpError;
use serde::Deserialize;

use crate::error::ClientError;
use crate::http;
use crate::url::ServerUrl;

/// One agent a `start_agent` can name, as `GET /agents` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct AgentListing {
    /// Its name.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// Whether its runs take messages sent while they run (`multitask` `steer`).
    #[serde(default)]
    pub steerable: bool,
    /// Its own run time limit, when it has one.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Messages it answers well, to offer on an empty conversation.
    #[serde(default)]
    pub examples: Vec<String>,
}

/// The agents the server at `server_url` runs, sorted by name. No token is needed.
pub async fn agents(server_url: &str) -> Result<Vec<AgentListing>, ClientError> {
    let url = ServerUrl::parse(server_url)?.http("agents");
    let body = http::send(
        &url,
        |client| client.get(&url),
        || ClientError::Refused {
            status: 404,
            error: HttpError {
                error: ErrorCode::NotFound,
                message: format!("GET {url} does not exist: this is not an agent server"),
            },
        },
    )
    .await?;
    read(&url, &body)
}

fn read(url: &str, body: &[u8]) -> Result<Vec<AgentListing>, ClientError> {
    serde_json::from_slice(body).map_err(|e| {
        ClientError::Protocol(format!(
            "GET {url} answered 200 without a list of agents ({e})"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_read_with_its_optional_fields_and_a_wrong_body_named() {
        let body = br#"[{"name":"assistant","description":"Local","steerable":false,"examples":["What is 2+2?"]},
                        {"name":"llm","description":"Model","steerable":true,"timeout_ms":5000}]"#;
        let agents = read("u", body).unwrap();
        assert_eq!(agents[0].examples, ["What is 2+2?"]);
        assert!(agents[1].steerable && agents[1].examples.is_empty());
        assert_eq!(agents[1].timeout_ms, Some(5000));
        let err = read("http://h/agents", b"{\"name\":1}").unwrap_err();
        assert!(
            err.to_string().contains("without a list of agents"),
            "{err}"
        );
    }
}
