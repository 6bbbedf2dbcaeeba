//! AG-UI interrupts with the reference client (`@ag-ui/client`'s `HttpAgent`, run by node
//! from `tests/agui-client`): a run that waits for an approval ends its response with
//! `RUN_FINISHED` whose outcome is an interrupt for the tool call; the client refuses to go
//! on without answering it; a `resume` entry approves (or edits, or rejects) it and the
//! resumed run streams the call's `TOOL_CALL_RESULT` under the original `toolCallId` and the
//! answer. The decision shows on the user's socket too.

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::approvals::{approving, sqlite, store_dir};
use crate::server_support::{Client, start_server, token};

/// What the client printed, by kind.
struct Lines(Vec<Value>);

impl Lines {
    fn events(&self, key: &str) -> Vec<&Value> {
        self.0.iter().filter_map(|l| l.get(key)).collect()
    }
    fn one(&self, key: &str) -> &Value {
        self.0
            .iter()
            .find_map(|l| l.get(key))
            .unwrap_or_else(|| panic!("no {key:?} line in {:?}", self.0))
    }
}

async fn approve_with_client(addr: SocketAddr, user: &str, message: &str, payload: Value) -> Lines {
    let args = vec![
        "approve.mjs".to_owned(),
        format!("http://{addr}/agui/assistant"),
        token(user),
        format!("thread-{}", core_context::RunId::generate()),
        message.to_owned(),
        payload.to_string(),
    ];
    let (stdout, stderr) = crate::agui_client::node_script(args).await;
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert!(
        lines.iter().all(|l| l.get("failed").is_none()),
        "the client failed: {lines:?}\nstderr: {stderr}"
    );
    Lines(lines)
}

fn types<'a>(events: &[&'a Value]) -> Vec<&'a str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_client_reads_the_interrupt_and_resumes_the_run() {
    let dir = store_dir();
    let server = start_server(approving(&sqlite(&dir), &["calculator"])).await;
    let addr = server.addr();
    let mut socket = Client::user(addr, "alice").await;
    let table = [
        (json!({"approved": true}), "`12*7` = 84.", "approve"),
        (
            json!({"approved": true, "editedArgs": {"expression": "12*8"}}),
            "`12*8` = 96.",
            "edit",
        ),
        (
            json!({"approved": false, "message": "not now"}),
            "I could not use calculator: a person rejected this call: not now.",
            "reject",
        ),
    ];
    for (payload, answer, decision) in table {
        let seen = approve_with_client(addr, "alice", "What is 12*7?", payload.clone()).await;
        let first = seen.events("first");
        let end = first.last().unwrap();
        assert_eq!(end["type"], "RUN_FINISHED", "{first:?}");
        let interrupts = end["outcome"]["interrupts"].as_array().unwrap();
        assert_eq!(end["outcome"]["type"], "interrupt");
        assert_eq!(interrupts.len(), 1, "{interrupts:?}");
        let interrupt = &interrupts[0];
        assert_eq!(interrupt["reason"], "tool_call");
        let call = interrupt["toolCallId"].as_str().unwrap().to_owned();
        assert!(
            interrupt["id"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/{call}"))
        );
        assert_eq!(
            interrupt["message"],
            r#"Approve calculator({"expression":"12*7"})?"#
        );
        assert_eq!(
            interrupt["responseSchema"]["properties"]["editedArgs"]["properties"]["expression"]["type"],
            "string"
        );
        assert!(!types(&first).contains(&"TOOL_CALL_START"), "not run yet");
        assert_eq!(seen.one("pending").as_array().unwrap().len(), 1);
        assert!(
            seen.one("unanswered")
                .as_str()
                .unwrap()
                .contains("pending interrupt(s) not addressed by resume"),
            "{:?}",
            seen.one("unanswered")
        );
        let second = seen.events("second");
        let kinds = types(&second);
        assert_eq!(kinds.first(), Some(&"RUN_STARTED"), "{kinds:?}");
        assert_eq!(kinds.last(), Some(&"RUN_FINISHED"), "{kinds:?}");
        let result = second
            .iter()
            .find(|e| e["type"] == "TOOL_CALL_RESULT")
            .unwrap_or_else(|| panic!("no TOOL_CALL_RESULT in {kinds:?}"));
        assert_eq!(result["toolCallId"], call.as_str());
        let done = seen.one("done");
        assert_eq!(done["result"], answer, "{decision}");
        assert_eq!(done["pending"], json!([]));
        // The user's socket saw the decision and the end of the same run.
        let engine_run = interrupt["id"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        loop {
            let frame = socket.next().await;
            if frame["run_id"] == engine_run.as_str() && frame["type"] == "approval_resolved" {
                assert_eq!(frame["data"]["decision"], decision);
            }
            if frame["run_id"] == engine_run.as_str() && frame["type"] == "agent_completed" {
                assert_eq!(frame["data"]["result"], answer);
                break;
            }
        }
    }
    // An interrupt of another user's run reads as a missing one.
    let seen = approve_with_client(addr, "bob", "What is 1+1?", json!({"approved": true})).await;
    let first = seen.events("first");
    let interrupt_id = first.last().unwrap()["outcome"]["interrupts"][0]["id"].clone();
    let body = json!({"threadId": "t", "runId": "r", "messages": [], "tools": [], "context": [],
        "resume": [{"interruptId": interrupt_id, "status": "resolved", "payload": {"approved": true}}]});
    let response = crate::support::http_client()
        .post(format!("http://{addr}/agui/assistant"))
        .bearer_auth(token("carol"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"], "approval_not_found");
    server.shutdown().await;
}
