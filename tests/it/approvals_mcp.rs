//! Approvals of MCP tools: `--approve-tools mcp_*` holds the `llm` agent's call of the
//! reference "everything" server's `echo`; edited arguments are checked against the MCP
//! tool's own schema (a refusal names what does not fit) and the tool runs with the edit.

use llm_agent::LlmConfig;
use serde_json::json;

use crate::approvals::{approving, decide, paused_run, rest_of_run, sqlite, store_dir};
use crate::llm::{DONE, Model, Reply, content, tool_piece};
use crate::server_support::{Client, start_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_tool_waits_for_approval_and_runs_with_the_edited_arguments() {
    let model = Model::start(vec![
        Reply::Stream(vec![
            tool_piece(
                0,
                Some("call_m1"),
                Some("mcp_everything_echo"),
                r#"{"message":"from the model"}"#,
            ),
            DONE,
        ]),
        Reply::Stream(vec![content("echoed"), DONE]),
    ])
    .await;
    let dir = store_dir();
    let base = approving(&sqlite(&dir), &["mcp_*"]);
    let url = format!("http://{}/v1", model.addr);
    let server = start_server(move |config| {
        base(config);
        config.mcp_servers = vec![crate::mcp::everything()];
        config.llm = Some(LlmConfig::new(url, "test-model"));
    })
    .await;
    let addr = server.addr();
    let mut alice = Client::user(addr, "alice").await;
    let (run, asked) = paused_run(&mut alice, "llm", "echo something").await;
    assert_eq!(asked["data"]["tool_name"], "mcp_everything_echo");
    assert_eq!(
        asked["data"]["arguments"],
        json!({"message": "from the model"})
    );
    let (status, refused) = decide(
        addr,
        "alice",
        &run,
        "call_m1",
        json!({"decision": "edit", "arguments": {"message": 5}}),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("arguments do not fit mcp_everything_echo's schema"),
        "{refused}"
    );
    let (status, reply) = decide(
        addr,
        "alice",
        &run,
        "call_m1",
        json!({"decision": "edit", "arguments": {"message": "edited by a person"}}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let rest = rest_of_run(&mut alice, &run).await;
    let completed = rest
        .iter()
        .find(|f| f["type"] == "tool_completed")
        .expect("the tool ran");
    assert_eq!(completed["data"]["is_error"], false, "{completed}");
    assert!(
        completed["data"]["result"]
            .to_string()
            .contains("edited by a person"),
        "{completed}"
    );
    assert_eq!(rest.last().unwrap()["data"]["result"], "echoed");
    server.shutdown().await;
}
