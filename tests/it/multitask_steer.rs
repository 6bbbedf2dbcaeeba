//! `multitask` `steer`: a message sent into a thread whose running run's agent takes messages
//! (the `llm` agent) joins that run before its next model call (`message_received`, and the
//! model hears it), on one node and from another node; for an agent that takes none it is
//! queued as a run of its own; and one the run never took starts a run of its own: never lost.
//! And a message queued behind a run that then pauses for approval waits for that run.

use std::time::Duration;

use agent_server::config::BrokerChoice;
use llm_agent::LlmConfig;
use serde_json::{Value, json};

use crate::llm::{DONE, Model, Piece, Reply, content};
use crate::multitask::{ask, long, one_at_a_time, started_answering, until_ended};
use crate::redis_support::RedisServer;
use crate::server_support::{Client, start_server};

/// The model's first answer streams, pauses (the steering message arrives meanwhile), and
/// ends; its second answers the added message.
fn replies() -> Vec<Reply> {
    vec![
        Reply::Stream(vec![
            content("It is 20 degrees"),
            Piece::Sleep(1_500),
            content(" Celsius."),
            DONE,
        ]),
        Reply::Stream(vec![content("That is 68 degrees Fahrenheit."), DONE]),
    ]
}

async fn llm_node(
    model: &Model,
    redis: Option<&str>,
    max_turns: u32,
) -> agent_server::server::RunningServer {
    let url = format!("http://{}/v1", model.addr);
    let redis = redis.map(str::to_owned);
    start_server(move |config| {
        let mut llm = LlmConfig::new(url, "test-model");
        llm.max_turns = max_turns;
        config.llm = Some(llm);
        config.start_rate_per_minute = 10_000;
        if let Some(redis) = redis {
            config.broker = BrokerChoice::Redis(redis);
            config.run_lease_ttl = Duration::from_secs(3);
        }
    })
    .await
}

/// Starts an `llm` run on `first`, steers it from `second` once it streams, and checks the
/// run took the message where the issue says: `run_accepted` names the running run, the run
/// emits `message_received`, the model's next call carries the message, and the run's answer
/// covers both.
async fn steer(first: &mut Client, second: &mut Client, model: &Model) {
    first
        .send(ask("llm", "How warm is it?", json!({}), None, None))
        .await;
    let accepted = first.reply().await;
    let run = accepted["run_id"].as_str().unwrap().to_owned();
    let thread = accepted["thread_id"].as_str().unwrap().to_owned();
    let mut frames = Vec::new();
    loop {
        let frame = second.next().await;
        let chunk = frame["run_id"] == run.as_str() && frame["type"] == "agent_response_chunk";
        frames.push(frame);
        if chunk {
            break;
        }
    }
    second
        .send(ask(
            "llm",
            "In Fahrenheit, please",
            json!({}),
            Some(&thread),
            Some("steer"),
        ))
        .await;
    let steered = second.reply().await;
    assert_eq!(steered["type"], "run_accepted", "{steered}");
    assert_eq!(steered["steered"], true, "{steered}");
    assert_eq!(
        steered["run_id"],
        run.as_str(),
        "the running run takes it: {steered}"
    );
    assert!(steered.get("queued").is_none(), "{steered}");

    frames.extend(until_ended(second, &[&run]).await);
    let runs = one_at_a_time(&frames, &thread);
    assert_eq!(runs.len(), 1, "no run of its own: {runs:?}");
    let received: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == "message_received")
        .collect();
    assert_eq!(received.len(), 1, "{frames:?}");
    assert_eq!(received[0]["run_id"], run.as_str());
    assert_eq!(received[0]["data"]["message"], "In Fahrenheit, please");
    let end = &runs[0].1;
    assert_eq!(end["type"], "agent_completed", "{end}");
    let answer = end["data"]["result"].as_str().unwrap();
    assert!(answer.contains("20 degrees Celsius."), "{answer}");
    assert!(answer.contains("68 degrees Fahrenheit"), "{answer}");
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    let heard = requests[1].1["messages"].to_string();
    assert!(heard.contains("In Fahrenheit, please"), "{heard}");
    assert!(heard.contains("It is 20 degrees Celsius."), "{heard}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steer_joins_the_running_llm_run_before_its_next_model_call() {
    let model = Model::start(replies()).await;
    let server = llm_node(&model, None, 8).await;
    let mut alice = Client::user(server.addr(), "alice").await;
    let mut tab = Client::user(server.addr(), "alice").await;
    steer(&mut alice, &mut tab, &model).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steer_reaches_a_run_on_another_node() {
    let model = Model::start(replies()).await;
    let redis = RedisServer::start();
    let one = llm_node(&model, Some(&redis.url()), 8).await;
    let two = llm_node(&model, Some(&redis.url()), 8).await;
    let mut on_one = Client::user(one.addr(), "alice").await;
    let mut on_two = Client::user(two.addr(), "alice").await;
    steer(&mut on_one, &mut on_two, &model).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_for_an_agent_that_takes_none_is_queued_as_its_own_run() {
    let server = start_server(|config| config.start_rate_per_minute = 10_000).await;
    let mut alice = Client::user(server.addr(), "alice").await;
    alice
        .send(ask("synthetic", "long", long(6, 100), None, None))
        .await;
    let first = alice.reply().await;
    let a = first["run_id"].as_str().unwrap().to_owned();
    let thread = first["thread_id"].as_str().unwrap().to_owned();
    alice
        .send(ask(
            "synthetic",
            "added",
            long(1, 0),
            Some(&thread),
            Some("steer"),
        ))
        .await;
    let queued = alice.reply().await;
    assert_eq!(queued["type"], "run_accepted", "{queued}");
    assert!(queued.get("steered").is_none(), "{queued}");
    assert_eq!(queued["queued"], true, "{queued}");
    let b = queued["run_id"].as_str().unwrap().to_owned();
    assert_ne!(a, b);
    let frames = until_ended(&mut alice, &[&a, &b]).await;
    let order: Vec<String> = one_at_a_time(&frames, &thread)
        .into_iter()
        .map(|(run, _)| run)
        .collect();
    assert_eq!(order, [a, b]);
    assert!(!frames.iter().any(|f| f["type"] == "message_received"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_run_never_took_starts_a_run_of_its_own() {
    // One model call per run: the message that comes during it cannot be taken.
    let model = Model::start(replies()).await;
    let server = llm_node(&model, None, 1).await;
    let mut alice = Client::user(server.addr(), "alice").await;
    let (a, thread, mut frames) = started_answering(&mut alice, "How warm is it?").await;
    alice
        .send(ask(
            "llm",
            "In Fahrenheit, please",
            json!({}),
            Some(&thread),
            Some("steer"),
        ))
        .await;
    let steered = alice.reply().await;
    assert_eq!(steered["steered"], true, "{steered}");
    // The run ends without it; the message then runs on its own, in the same thread.
    let mut own = None;
    while own.is_none() {
        let frame = alice.next().await;
        if frame["type"] == "agent_started" && frame["run_id"] != a.as_str() {
            assert_eq!(frame["data"]["message"], "In Fahrenheit, please", "{frame}");
            assert_eq!(frame["thread_id"], thread.as_str());
            own = Some(frame["run_id"].as_str().unwrap().to_owned());
        }
        frames.push(frame);
    }
    let own = own.unwrap();
    // The first run ended before the message's own run started.
    frames.extend(until_ended(&mut alice, &[&own]).await);
    let runs = one_at_a_time(&frames, &thread);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0].0, a);
    assert_eq!(runs[1].1["type"], "agent_completed", "{}", runs[1].1);
    assert!(!frames.iter().any(|f| f["type"] == "message_received"));
}

/// A message queued behind a run that then pauses for a person's approval waits for that
/// run: it starts only after the run resumed and ended, never while the approval is pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_queued_behind_a_run_that_pauses_waits_for_it() {
    let arguments = json!({"expression": "12*7"}).to_string();
    let model = Model::start(vec![
        Reply::Stream(vec![
            content("Let me compute."),
            Piece::Sleep(1_000),
            crate::llm::tool_piece(0, Some("call_c"), Some("calculator"), &arguments),
            DONE,
        ]),
        Reply::Stream(vec![content("It is 84."), DONE]),
    ])
    .await;
    let dir = crate::approvals::store_dir();
    let base = crate::approvals::approving(&crate::approvals::sqlite(&dir), &["calculator"]);
    let url = format!("http://{}/v1", model.addr);
    let server = start_server(move |config| {
        base(config);
        config.llm = Some(LlmConfig::new(url, "test-model"));
    })
    .await;
    let addr = server.addr();
    let mut alice = Client::user(addr, "alice").await;
    let (a, thread, mut frames) = started_answering(&mut alice, "What is 12*7?").await;
    alice
        .send(ask(
            "synthetic",
            "next",
            long(1, 0),
            Some(&thread),
            Some("enqueue"),
        ))
        .await;
    let queued = alice.reply().await;
    assert_eq!(queued["queued"], true, "{queued}");
    let b = queued["run_id"].as_str().unwrap().to_owned();
    loop {
        let frame = alice.next().await;
        let asked = frame["type"] == "approval_requested";
        frames.push(frame);
        if asked {
            break;
        }
    }
    alice.pump(Duration::from_millis(600)).await;
    let (status, reply) =
        crate::approvals::decide(addr, "alice", &a, "call_c", json!({"decision": "approve"})).await;
    assert_eq!(status, 200, "{reply}");
    frames.extend(until_ended(&mut alice, &[&a, &b]).await);
    let runs = one_at_a_time(&frames, &thread);
    let order: Vec<&str> = runs.iter().map(|(run, _)| run.as_str()).collect();
    assert_eq!(
        order,
        [a.as_str(), b.as_str()],
        "the queued message ran while the run waited"
    );
    assert_eq!(runs[0].1["type"], "agent_completed", "{}", runs[0].1);
    assert_eq!(runs[1].1["type"], "agent_completed", "{}", runs[1].1);
}
