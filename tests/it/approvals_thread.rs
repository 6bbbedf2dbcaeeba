//! A pending approval blocks new input into its thread: a message into a thread whose run
//! waits for a decision is refused with `thread_waiting_for_approval` (naming the run) unless
//! it says `multitask` `interrupt` (the waiting run ends `interrupted`, its calls can no longer
//! be decided, then the new run goes) or `rollback` (the waiting run ends and is erased: 404).
//! Other threads, and other users, are not affected; AG-UI takes it from `forwardedProps`.

use serde_json::{Value, json};

use crate::approvals::{approving, decide, paused_run, rest_of_run, sqlite, store_dir};
use crate::history_server::http;
use crate::server_support::{Client, start_server, token};

fn ask(message: &str, thread: &str, multitask: Option<&str>) -> Value {
    let mut payload = json!({"agent": "assistant", "message": message, "thread_id": thread});
    if let Some(multitask) = multitask {
        payload["multitask"] = json!(multitask);
    }
    json!({"type": "start_agent", "request_id": "q", "payload": payload})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_run_blocks_its_thread_until_interrupted_or_rolled_back() {
    let dir = store_dir();
    let server = start_server(approving(&sqlite(&dir), &["calculator"])).await;
    let addr = server.addr();
    let mut alice = Client::user(addr, "alice").await;

    for strategy in ["interrupt", "rollback"] {
        let (run, asked) = paused_run(&mut alice, "assistant", "What is 12*7?").await;
        let call = asked["data"]["tool_call_id"].as_str().unwrap().to_owned();
        let thread = asked["thread_id"].as_str().unwrap().to_owned();
        // Refused, whatever else the message says, and the run still waits.
        for multitask in [None, Some("reject"), Some("enqueue"), Some("steer")] {
            alice
                .send(ask("What time is it in Tokyo?", &thread, multitask))
                .await;
            let refused = alice.reply().await;
            assert_eq!(
                refused["code"], "thread_waiting_for_approval",
                "{multitask:?}: {refused}"
            );
            assert!(
                refused["message"].as_str().unwrap().contains(&run),
                "{refused}"
            );
        }
        let (_, waiting) = http(addr, "GET", &format!("/v1/runs/{run}"), Some("alice")).await;
        assert_eq!(waiting["status"], "waiting_for_approval");
        // Another thread of the same user is not blocked.
        alice
            .send(json!({"type": "start_agent", "payload": {"agent": "assistant", "message": "What time is it in Tokyo?"}}))
            .await;
        let elsewhere = alice.reply().await;
        assert_eq!(elsewhere["type"], "run_accepted", "{elsewhere}");
        rest_of_run(&mut alice, elsewhere["run_id"].as_str().unwrap()).await;

        // Now with the strategy: the waiting run ends first, then the new run goes.
        alice
            .send(ask("What time is it in Tokyo?", &thread, Some(strategy)))
            .await;
        let accepted = alice.reply().await;
        assert_eq!(accepted["type"], "run_accepted", "{strategy}: {accepted}");
        assert_eq!(accepted["thread_id"], thread.as_str());
        let ended = rest_of_run(&mut alice, &run).await;
        assert_eq!(ended.len(), 1, "{ended:?}");
        assert_eq!(ended[0]["type"], "agent_cancelled");
        let reason = if strategy == "rollback" {
            "rolled_back"
        } else {
            "interrupted"
        };
        assert_eq!(ended[0]["data"]["reason"], reason);
        let new_run = accepted["run_id"].as_str().unwrap();
        let rest = rest_of_run(&mut alice, new_run).await;
        assert_eq!(rest.last().unwrap()["type"], "agent_completed", "{rest:?}");
        let (status, _) = decide(addr, "alice", &run, &call, json!({"decision": "approve"})).await;
        let (code, detail) = http(addr, "GET", &format!("/v1/runs/{run}"), Some("alice")).await;
        if strategy == "interrupt" {
            assert_eq!(status, 409, "its calls can no longer be decided");
            assert_eq!(
                (code, detail["status"].as_str()),
                (200, Some("interrupted")),
                "{detail}"
            );
        } else {
            assert_eq!(status, 404, "erased with its calls");
            assert_eq!(code, 404, "{detail}");
        }
        let (_, listed) = http(addr, "GET", "/v1/approvals", Some("alice")).await;
        assert_eq!(listed["approvals"], json!([]));
    }

    // Over AG-UI, from forwardedProps: refused with 409 while the run waits.
    let (run, asked) = paused_run(&mut alice, "assistant", "What is 2*3?").await;
    let thread = asked["thread_id"].as_str().unwrap().to_owned();
    let body = |props: Value| {
        json!({"threadId": thread, "runId": "client-run", "tools": [], "context": [],
               "forwardedProps": props,
               "messages": [{"id": "m1", "role": "user", "content": "What time is it in Tokyo?"}]})
    };
    let post = |props: Value| {
        crate::support::http_client()
            .post(format!("http://{addr}/agui/assistant"))
            .bearer_auth(token("alice"))
            .json(&body(props))
            .send()
    };
    let refused = post(json!({})).await.unwrap();
    assert_eq!(refused.status().as_u16(), 409);
    let answer: Value = refused.json().await.unwrap();
    assert_eq!(answer["error"], "thread_waiting_for_approval");
    let bad = post(json!({"multitask": "later"})).await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let going = post(json!({"multitask": "interrupt"})).await.unwrap();
    assert_eq!(going.status().as_u16(), 200);
    let text = going.text().await.unwrap();
    assert!(text.contains("RUN_FINISHED"), "{text}");
    let (_, detail) = http(addr, "GET", &format!("/v1/runs/{run}"), Some("alice")).await;
    assert_eq!(detail["status"], "interrupted");
    // A bad strategy over the socket is named.
    alice.send(ask("hi", &thread, Some("later"))).await;
    let bad = alice.reply().await;
    assert_eq!(bad["code"], "invalid_field");
    assert!(
        bad["message"]
            .as_str()
            .unwrap()
            .contains("payload.multitask \"later\" is not a strategy")
    );
    server.shutdown().await;
}
