//! Conversations: a follow-up in a thread reaches the `llm` agent's model with the thread's
//! earlier turns, read from the history store; a new thread starts with none. The model's
//! calls and tokens show in the metrics.

use llm_agent::LlmConfig;
use serde_json::json;

use crate::history_server::http_text;
use crate::llm::{Model, Piece, Reply, content, usage};
use crate::server_support::{Client, start_server};

/// A follow-up in a thread reaches the model with the thread's earlier turns (from the
/// history store), before the new question; a new thread starts with none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_reaches_the_model_with_the_earlier_turns() {
    let answer = |text: &'static str| {
        Reply::Stream(vec![
            content(text),
            usage(10, 2),
            Piece::Raw("data: [DONE]\n\n"),
        ])
    };
    let model = Model::start(vec![answer("84"), answer("96"), answer("hello")]).await;
    let dir =
        std::env::temp_dir().join(format!("agent-it-llm-{}", core_context::RunId::generate()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = format!("sqlite://{}", dir.join("history.db").display());
    let base = format!("http://{}/v1", model.addr);
    let server = start_server(move |config| {
        config.store = Some(store);
        config.llm = Some(LlmConfig::new(base, "test-model"));
    })
    .await;
    let mut alice = Client::user(server.addr(), "alice").await;
    let ask = |message: &str, thread: Option<&str>| {
        let mut payload = json!({"agent": "llm", "message": message});
        if let Some(thread) = thread {
            payload["thread_id"] = json!(thread);
        }
        json!({"type": "start_agent", "payload": payload})
    };
    let mut thread = None;
    for (message, continue_thread) in [("What is 12*7?", false), ("and 12*8?", true), ("hi", false)]
    {
        alice
            .send(ask(
                message,
                if continue_thread {
                    thread.as_deref()
                } else {
                    None
                },
            ))
            .await;
        let accepted = alice.reply().await;
        assert_eq!(accepted["type"], "run_accepted", "{accepted}");
        thread.get_or_insert_with(|| accepted["thread_id"].as_str().unwrap().to_owned());
        let run = accepted["run_id"].clone();
        loop {
            let frame = alice.next().await;
            if frame["run_id"] == run && frame["type"] == "agent_completed" {
                break;
            }
        }
    }
    let conversations: Vec<Vec<(String, String)>> = model
        .requests()
        .iter()
        .map(|(_, body)| {
            body["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    (
                        m["role"].as_str().unwrap().to_owned(),
                        m["content"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .collect();
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(r, c)| ((*r).to_owned(), (*c).to_owned()))
            .collect()
    };
    assert_eq!(
        conversations,
        [
            pairs(&[("user", "What is 12*7?")]),
            pairs(&[
                ("user", "What is 12*7?"),
                ("assistant", "84"),
                ("user", "and 12*8?")
            ]),
            pairs(&[("user", "hi")]),
        ]
    );
    // The model's calls and the store's writes are in the metrics.
    let (_, metrics) = http_text(server.addr(), "GET", "/metrics", None).await;
    for line in [
        "agent_server_model_requests_total 3",
        "agent_server_model_calls_total{outcome=\"answered\"} 3",
        "agent_server_model_tokens_total{kind=\"prompt\"} 30",
        "agent_server_model_tokens_total{kind=\"completion\"} 6",
        "agent_server_store_up 1",
        "agent_server_history_dropped_total{why=\"queue_full\"} 0",
        "agent_server_runs_finished_total{agent=\"llm\",outcome=\"completed\"} 3",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in\n{metrics}"
        );
    }
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
